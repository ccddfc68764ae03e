"""The official `openai` and `anthropic` Python SDKs, aiohttp, httpx and requests, unchanged, through a real `receipts
proxy` process to the local HTTPS upstream, in a shell set up by the pasted line `eval "$(receipts
env)"` and nothing else: every usage shape they produce is recorded with its model, token split and
response id, streamed or not."""
import json
import os
import subprocess
import sys

from support.proc import BIN, ProxyProcess, receipts_cli, wait_for

# An app: each call, by the SDK's own public API, with an X-Call header naming it (the tests find the
# recorded call by it). It knows nothing of the proxy: the environment routes it.
APP = r"""
import asyncio, json, sys, time
import aiohttp, anthropic, httpx, openai, requests
base = sys.argv[1]
oa = openai.OpenAI(api_key="sk-test-not-a-secret", base_url=base + "/v1", max_retries=0)
free = openai.OpenAI(api_key="sk-test-not-a-secret", base_url=base + "/v1/free", max_retries=0)
an = anthropic.Anthropic(api_key="sk-ant-test", base_url=base, max_retries=0)
h = lambda name: {"extra_headers": {"X-Call": name}}
msgs = [{"role": "user", "content": "hello there"}]
slow = {"chunk_delay": 0.3}  # the upstream pauses between chunks: a stream's first chunk must come at once
seen, ttfb = {}, {}


def first(name, chunks):
    # the time from the call to its first chunk, in ms; the rest is read to the end
    t0 = time.perf_counter()
    for _ in chunks:
        ttfb.setdefault(name, (time.perf_counter() - t0) * 1000)


seen["chat"] = free.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=msgs,
                                                              **h("chat")).headers.get("x-receipt-id")
first("openai", free.chat.completions.create(model="gpt-4o-mini", messages=msgs, stream=True, extra_body=slow,
                                             stream_options={"include_usage": True}, **h("chat-stream")))
oa.completions.create(model="gpt-3.5-turbo-instruct", prompt="say hi", **h("completions"))
list(oa.completions.create(model="gpt-3.5-turbo-instruct", prompt="say hi", stream=True, **h("completions-stream")))
oa.embeddings.create(model="text-embedding-3-small", input="hello", **h("embeddings"))
oa.responses.create(model="gpt-4.1-mini", input="tell me a joke", **h("responses"))
with oa.responses.stream(model="gpt-4.1-mini", input="tell me a joke", **h("responses-stream")) as s:
    s.until_done()
seen["messages"] = an.messages.with_raw_response.create(model="claude-sonnet-4", max_tokens=50, messages=msgs,
                                                        **h("messages")).headers.get("x-receipt-id")
with an.messages.stream(model="claude-sonnet-4", max_tokens=50, messages=msgs, extra_body=slow,
                        **h("messages-stream")) as s:
    first("anthropic", s)
url, body = base + "/v1/free/chat/completions", {"model": "gpt-4o-mini", "messages": msgs}
streamed = {**body, "stream": True, "stream_options": {"include_usage": True}, **slow}


async def with_aiohttp():  # aiohttp reads HTTPS_PROXY only with trust_env=True (README)
    async with aiohttp.ClientSession(trust_env=True) as session:
        async with session.post(url, headers={"X-Call": "aiohttp"}, json=body) as r:
            seen["aiohttp"] = r.headers.get("x-receipt-id")
        t0 = time.perf_counter()
        async with session.post(url, headers={"X-Call": "aiohttp-stream"}, json=streamed) as r:
            async for _ in r.content:
                ttfb.setdefault("aiohttp", (time.perf_counter() - t0) * 1000)
asyncio.run(with_aiohttp())
with httpx.Client(timeout=30) as hc:  # httpx and requests read HTTPS_PROXY and the CA variables themselves
    seen["httpx"] = hc.post(url, headers={"X-Call": "httpx"}, json=body).headers.get("x-receipt-id")
    t0 = time.perf_counter()
    with hc.stream("POST", url, headers={"X-Call": "httpx-stream"}, json=streamed) as r:
        for _ in r.iter_lines():
            ttfb.setdefault("httpx", (time.perf_counter() - t0) * 1000)
with requests.Session() as rs:  # (each client streams on a connection it has used: the connection's own
    seen["requests"] = rs.post(url, headers={"X-Call": "requests"}, json=body,  # setup is not the stream's)
                               timeout=30).headers.get("x-receipt-id")
    t0 = time.perf_counter()
    with rs.post(url, headers={"X-Call": "requests-stream"}, json=streamed, stream=True, timeout=30) as r:
        for _ in r.iter_lines():
            ttfb.setdefault("requests", (time.perf_counter() - t0) * 1000)
print(json.dumps({"seen": seen, "ttfb": ttfb}))
"""

CALLS = {  # X-Call -> (path, model, prompt tokens known, completion tokens known, response id prefix)
    "chat": ("/v1/free/chat/completions", "gpt-4o-mini", True, True, "chatcmpl-"),
    "chat-stream": ("/v1/free/chat/completions", "gpt-4o-mini", True, True, "chatcmpl-"),
    "completions": ("/v1/completions", "gpt-3.5-turbo-instruct", True, True, "cmpl-"),
    "completions-stream": ("/v1/completions", "gpt-3.5-turbo-instruct", True, True, "cmpl-"),
    "embeddings": ("/v1/embeddings", "text-embedding-3-small", True, False, None),
    "responses": ("/v1/responses", "gpt-4.1-mini", True, True, "resp_"),
    "responses-stream": ("/v1/responses", "gpt-4.1-mini", True, True, "resp_"),
    "messages": ("/v1/messages", "claude-sonnet-4", True, True, "msg_"),
    "messages-stream": ("/v1/messages", "claude-sonnet-4", True, True, "msg_"),
    "aiohttp": ("/v1/free/chat/completions", "gpt-4o-mini", True, True, "chatcmpl-"),
    "aiohttp-stream": ("/v1/free/chat/completions", "gpt-4o-mini", True, True, "chatcmpl-"),
    "httpx": ("/v1/free/chat/completions", "gpt-4o-mini", True, True, "chatcmpl-"),
    "httpx-stream": ("/v1/free/chat/completions", "gpt-4o-mini", True, True, "chatcmpl-"),
    "requests": ("/v1/free/chat/completions", "gpt-4o-mini", True, True, "chatcmpl-"),
    "requests-stream": ("/v1/free/chat/completions", "gpt-4o-mini", True, True, "chatcmpl-"),
}
CLIENTS = ("openai", "anthropic", "aiohttp", "httpx", "requests")  # each streams once (time to first chunk)


# the models the price table (genai-prices) does not know: their cost is unknown, never 0
UNPRICED = {"text-embedding-3-small"}


def test_every_usage_shape_of_the_real_sdks_is_recorded(tmp_path, tls, upstream):
    # the same app directly first (trusting the upstream's CA), for the time to the first chunk without the proxy
    direct_env = {k: v for k, v in os.environ.items() if "PROXY" not in k.upper()}
    direct = subprocess.run([sys.executable, "-c", APP, upstream], env={**direct_env, "SSL_CERT_FILE": tls["ca"], "REQUESTS_CA_BUNDLE": tls["ca"]},
                            capture_output=True, text=True, timeout=120)
    assert direct.returncode == 0, direct.stderr[-3000:]
    direct_ttfb = json.loads(direct.stdout)["ttfb"]
    with ProxyProcess(tmp_path / "data", "--seal-interval", "0.1", "--bodies", "full", upstream_ca=tls["ca"]) as proxy:
        # a shell with none of the proxy's variables, set up by the one line the README gives
        env = {k: v for k, v in os.environ.items() if k not in proxy.client_env()}
        shell = (f'eval "$({BIN / "receipts"} env --data {proxy.data} --listen-port {proxy.port})" && '
                 f'exec {sys.executable} -c "$APP" {upstream}')
        app = subprocess.run(["bash", "-c", shell], env={**env, "APP": APP}, capture_output=True, text=True,
                             timeout=120)
        assert app.returncode == 0, app.stderr[-3000:]
        out = json.loads(app.stdout)
        query = ("SELECT c.path, c.model, c.prompt_tokens, c.completion_tokens, c.total_tokens, c.usage_source, "
                 "c.stream, c.response_id, c.status, c.receipt_id, c.cost, c.cost_currency, c.price_table, "
                 "json_extract_string(e.data, '$.headers.\"x-call\"') AS call "
                 "FROM calls c JOIN events e ON e.receipt_id = c.receipt_id AND e.type = 'request'")

        def recorded():
            out = receipts_cli("sql", "--json", query, data=proxy.data)
            rows = json.loads(out.stdout) if out.returncode == 0 else []
            return rows if len(rows) >= len(CALLS) else None

        rows = {r["call"]: r for r in wait_for(recorded, timeout=30)}
    assert set(rows) == set(CALLS)
    for name, (path, model, prompt, completion, rid) in CALLS.items():
        r = rows[name]
        assert (r["path"], r["model"], r["status"]) == (path, model, 200), (name, r)
        assert r["stream"] == name.endswith("-stream"), (name, r)
        assert r["usage_source"] == "provider", (name, r)
        assert (r["prompt_tokens"] is not None) == prompt and r["prompt_tokens"] != 0, (name, r)
        assert (r["completion_tokens"] is not None) == completion, (name, r)
        assert r["total_tokens"] and r["total_tokens"] >= (r["prompt_tokens"] or 0) + (r["completion_tokens"] or 0)
        assert (r["response_id"] or "").startswith(rid) if rid else r["response_id"] is None, (name, r)
        if model in UNPRICED:
            assert r["cost"] is None, (name, r)
        else:
            assert float(r["cost"]) > 0 and r["cost_currency"] == "USD", (name, r)
            assert r["price_table"].startswith("genai-prices "), (name, r)
    # each client saw its receipt id; the stream stayed a stream through the proxy
    assert {name: rows[name]["receipt_id"] for name in out["seen"]} == out["seen"]
    assert set(out["ttfb"]) == set(direct_ttfb) == set(CLIENTS)
    for client in CLIENTS:  # through the proxy, the first chunk comes within 50 ms of when it comes directly
        assert out["ttfb"][client] < direct_ttfb[client] + 50, (client, out["ttfb"], direct_ttfb)
        assert out["ttfb"][client] < 250, "the first chunk came after the upstream's first pause: buffered"


def test_the_trust_bundle_is_the_system_roots_and_the_proxy_ca(tmp_path):
    # SSL_CERT_FILE and its kin replace a client's roots: the bundle keeps the system's, and adds the CA
    from receipts import env

    with ProxyProcess(tmp_path / "data") as proxy:
        out = receipts_cli("env", "--listen-port", str(proxy.port), data=proxy.data)
    assert out.returncode == 0, out.stderr
    lines = dict(line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines())
    bundle = lines["SSL_CERT_FILE"]
    assert lines["REQUESTS_CA_BUNDLE"] == lines["CURL_CA_BUNDLE"] == bundle
    assert lines["HTTPS_PROXY"] == lines["HTTP_PROXY"] == f"http://127.0.0.1:{proxy.port}"
    assert lines["NODE_EXTRA_CA_CERTS"] == str(proxy.data.resolve() / "ca" / "mitmproxy-ca-cert.pem")
    assert lines["NODE_USE_ENV_PROXY"] == "1"
    text = open(bundle, "rb").read()
    roots = env.system_roots().read_bytes()
    ca = (proxy.data / "ca" / "mitmproxy-ca-cert.pem").read_bytes()
    assert text.startswith(roots.rstrip(b"\n")) and text.endswith(ca) and b"PRIVATE KEY" not in text
    assert text.count(b"BEGIN CERTIFICATE") == roots.count(b"BEGIN CERTIFICATE") + 1 > 100
    assert oct(os.stat(bundle).st_mode & 0o777) == "0o600"
    none = receipts_cli("env", data=tmp_path / "elsewhere")
    assert none.returncode == 1 and "there is no proxy CA" in none.stderr
