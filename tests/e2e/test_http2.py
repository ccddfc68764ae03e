"""HTTP/2 to clients: a client that asks for HTTP/2 (curl --http2) gets it from `receipts proxy`, although
the upstream speaks HTTP/1.1 only (mitmproxy translates), and the call is recorded and stamped as any
other, streamed answers included. (httpx offers http/1.1 before h2 over a proxy tunnel, and the proxy
honours the client's order: it gets HTTP/1.1.)"""
import json
import subprocess

from support.proc import ProxyProcess, receipts_cli, wait_for


def _curl(proxy, url: str, body: dict) -> tuple[str, dict, str]:
    out = subprocess.run(["curl", "-sS", "-N", "--http2", "-x", proxy.url, "--cacert", proxy.ca, "-D", "-",
                          "-w", "\n%{http_version}", "-H", "content-type: application/json",
                          "-d", json.dumps(body), url], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    blocks = out.stdout.split("\n\n")  # (text mode: CRLF read as LF) the CONNECT answer's headers, the answer's
    last = max(i for i, b in enumerate(blocks) if b.startswith("HTTP/"))
    head, rest = blocks[last], "\n\n".join(blocks[last + 1:])
    headers = dict(line.lower().split(": ", 1) for line in head.splitlines()[1:])
    text, _, version = rest.rpartition("\n")
    return version, headers, text


def test_a_client_asking_for_http2_gets_it_whatever_the_upstream_speaks(tmp_path, tls, upstream):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    url = f"{upstream}/v1/free/chat/completions"
    with ProxyProcess(tmp_path / "data", "--seal-interval", "0.1", upstream_ca=tls["ca"]) as proxy:
        version, headers, _ = _curl(proxy, url, body)
        s_version, s_headers, s_text = _curl(proxy, url, {**body, "stream": True,
                                                          "stream_options": {"include_usage": True}})
        direct = subprocess.run(["curl", "-sS", "--http2", "--cacert", tls["ca"], "-o", "/dev/null", "-w",
                                 "%{http_version}", "-H", "content-type: application/json", "-d", json.dumps(body),
                                 url], capture_output=True, text=True, timeout=60)

        def recorded():
            out = receipts_cli("sql", "--json", "SELECT receipt_id, stream, total_tokens, cost FROM calls ORDER BY stream",
                               data=proxy.data)
            rows = json.loads(out.stdout) if out.returncode == 0 else []
            return rows if len(rows) == 2 else None

        rows = wait_for(recorded, timeout=30)
    assert direct.stdout == "1.1"  # the upstream itself: HTTP/1.1 only
    assert version == s_version == "2"
    assert s_text.count("data:") > 2 and s_headers["content-type"].startswith("text/event-stream")
    assert [r["receipt_id"] for r in rows] == [headers["x-receipt-id"], s_headers["x-receipt-id"]]
    assert [r["stream"] for r in rows] == [False, True] and all(r["total_tokens"] for r in rows)
    assert all(float(r["cost"]) > 0 for r in rows)  # curl's calls are priced as any other
