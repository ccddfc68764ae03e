"""Self-test of the fake x402 upstream and the test-support builders."""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from . import certs, upstream, x402_wire as w


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    ca = certs.make_ca(d)
    cert, key = certs.make_server_cert(d, ca)
    ctx = ssl.create_default_context(cafile=ca[0])
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return {"ca": ca, "cert": cert, "key": key, "ctx": ctx}


@pytest.fixture(scope="module")
def server(tls):
    srv, port = upstream.start_upstream(0, tls["cert"], tls["key"])
    yield srv, port
    srv.shutdown()


@pytest.fixture()
def client(server, tls):
    _, port = server
    with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=tls["ctx"], timeout=10) as c:
        yield c


def chat_body(text="hello there", **kw):
    return {"model": "m-1", "messages": [{"role": "system", "content": "be brief"},
                                         {"role": "user", "content": text}], **kw}


def paid_header(accepted, value=None):
    now = int(time.time())
    return w.b64json(w.payment_v2_eip3009(
        accepted, w.random_address(), int(accepted["amount"]) if value is None else value,
        w.random_nonce_hex(), now - 60, now + 300, w.random_signature(), payment_identifier="pid-" + uuid.uuid4().hex))


def test_wire_roundtrip():
    chal = w.challenge_v2(upstream.PAY_TO, upstream.ASSET, 5)
    assert w.unb64json(w.b64json(chal)) == chal
    assert w.b64json({"a": 1}) == "eyJhIjoxfQ=="  # compact JSON, padded standard base64
    assert w.unb64json(w.b64json({"k": "é"})) == {"k": "é"}
    assert len(w.random_signature()) == 132 and len(w.random_tx_hash()) == 66
    assert len(w.random_address()) == 42 and len(w.random_nonce_hex()) == 66
    p2 = w.payment_v2_permit2(chal["accepts"][0], "0xabc", 7, 2**200, 99, 1, "0xsig", "0xspender", facilitator="0xf")
    auth = p2["payload"]["permit2Authorization"]
    assert auth["nonce"] == str(2**200) and auth["witness"] == {"to": upstream.PAY_TO, "facilitator": "0xf", "validAfter": "1"}
    assert auth["permitted"] == {"token": upstream.ASSET, "amount": "7"}
    v1 = w.challenge_v1(upstream.PAY_TO, upstream.ASSET, 5)
    pay1 = w.payment_v1_eip3009(v1["accepts"][0], "0xabc", 5, "0x" + "00" * 32, 0, 10, "0xsig")
    assert pay1["network"] == "base" and pay1["payload"]["authorization"]["to"] == upstream.PAY_TO
    s = w.settlement("0x1", "0x2", "base")
    assert s == {"success": True, "transaction": "0x1", "network": "base", "payer": "0x2"}
    with pytest.raises(ValueError):
        w.unb64json("not base64 json!")


def test_health_and_404(client):
    r = client.get("/health")
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert r.headers["content-length"] == str(len(r.content))
    assert client.post("/v1/nope", json={}).status_code == 404


def test_v2_flow(client):
    body = chat_body("what is 2+2")
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 402 and r.json() == {}
    chal = w.unb64json(r.headers["payment-required"])
    assert chal["x402Version"] == 2
    acc = chal["accepts"][0]
    assert acc["amount"] == str(upstream.AMOUNT) and acc["payTo"] == upstream.PAY_TO
    assert acc["asset"] == upstream.ASSET and acc["network"] == upstream.NETWORK
    assert chal["resource"]["url"].endswith("/v1/chat/completions")

    hdr = paid_header(acc)
    payer = w.unb64json(hdr)["payload"]["authorization"]["from"]
    r = client.post("/v1/chat/completions", json=body, headers={"PAYMENT-SIGNATURE": hdr})
    assert r.status_code == 200
    j = r.json()
    assert j["object"] == "chat.completion" and j["model"] == "m-1"
    assert j["choices"][0]["message"]["content"] == "echo: what is 2+2"
    u = j["usage"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] > 0
    assert j["id"].startswith("chatcmpl-")
    assert r.headers["x-request-id"].startswith("req_")
    st = w.unb64json(r.headers["payment-response"])
    assert st == {"success": True, "network": upstream.NETWORK, "payer": payer,
                  "transaction": "0x" + hashlib.sha256(hdr.encode()).hexdigest()}

    # deterministic id; X-PAYMENT accepted on v2 too (lower-case header name)
    r2 = client.post("/v1/chat/completions", content=r.request.content,
                     headers={"x-payment": hdr, "content-type": "application/json"})
    assert r2.status_code == 200 and r2.json()["id"] == j["id"]

    r3 = client.post("/v1/chat/completions", json=body, headers={"PAYMENT-SIGNATURE": "%%%garbage"})
    assert r3.status_code == 400 and r3.json() == {"error": "invalid payment"}

    seen = client.get("/_seen").json()
    last = seen[-1]
    assert last["method"] == "POST" and last["path"] == "/v1/chat/completions"
    assert last["headers"]["payment-signature"] == "%%%garbage"
    assert not any(e["path"].startswith("/_") for e in seen)


def test_v1_flow(client):
    body = chat_body("legacy")
    r = client.post("/v1/legacy/chat/completions", json=body)
    assert r.status_code == 402
    assert r.headers["content-type"].startswith("application/json")
    chal = r.json()
    assert chal["x402Version"] == 1 and chal["error"] == "X-PAYMENT header is required"
    acc = chal["accepts"][0]
    assert acc["maxAmountRequired"] == str(upstream.AMOUNT) and acc["network"] == "base"
    now = int(time.time())
    payer = w.random_address()
    hdr = w.b64json(w.payment_v1_eip3009(acc, payer, upstream.AMOUNT, w.random_nonce_hex(),
                                         now, now + 60, w.random_signature()))
    # PAYMENT-SIGNATURE is not a v1 header
    assert client.post("/v1/legacy/chat/completions", json=body,
                       headers={"PAYMENT-SIGNATURE": hdr}).status_code == 402
    r = client.post("/v1/legacy/chat/completions", json=body, headers={"X-PAYMENT": hdr})
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "echo: legacy"
    st = w.unb64json(r.headers["x-payment-response"])
    assert st["payer"] == payer and st["network"] == "base"
    assert st["transaction"] == "0x" + hashlib.sha256(hdr.encode()).hexdigest()
    assert "payment-response" not in r.headers


def test_jobid_flow(client):
    body = chat_body("job")
    r = client.post("/v1/jobid/chat/completions", json=body)
    assert r.status_code == 402
    acc = w.unb64json(r.headers["payment-required"])["accepts"][0]
    r = client.post("/v1/jobid/chat/completions", json=body, headers={"PAYMENT-SIGNATURE": paid_header(acc)})
    assert r.status_code == 200
    tx = w.unb64json(r.headers["payment-response"])["transaction"]
    assert tx.startswith("payment-")
    uuid.UUID(tx[len("payment-"):])


def test_free_embeddings_messages(client):
    r = client.post("/v1/free/chat/completions", json=chat_body("free"))
    assert r.status_code == 200 and "payment-response" not in r.headers
    assert r.json()["choices"][0]["message"]["content"] == "echo: free"
    r = client.post("/v1/embeddings", json={"model": "e", "input": "x"})
    assert r.json()["data"][0]["embedding"] == [0.1, 0.2] and r.json()["usage"]["prompt_tokens"] == 3
    r = client.post("/v1/messages", json={"model": "claude-x", "messages": []})
    j = r.json()
    assert j["id"].startswith("msg_") and j["type"] == "message" and j["model"] == "claude-x"
    assert j["usage"] == {"input_tokens": 7, "output_tokens": 3}


def test_stream(client):
    key = uuid.uuid4().hex
    body = chat_body("stream me please", stream=True, n_chunks=3, chunk_delay=0.2, stream_key=key)
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 402
    acc = w.unb64json(r.headers["payment-required"])["accepts"][0]
    events = []
    with client.stream("POST", "/v1/chat/completions", json=body,
                       headers={"PAYMENT-SIGNATURE": paid_header(acc)}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert "content-length" not in r.headers
        assert r.headers["transfer-encoding"] == "chunked"
        assert "payment-response" in r.headers
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[len("data: "):])
    assert events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    assert len(parsed) == 4
    text = "".join(p["choices"][0]["delta"]["content"] for p in parsed[:3])
    assert text == "echo: stream me please"
    final = parsed[-1]
    assert final["choices"] == [] and final["usage"]["total_tokens"] > 0
    assert len(final["tee_request_hash"]) == 66 and len(final["tee_id"]) == 66
    assert len(final["tee_output_hash"]) == 66 and isinstance(final["tee_timestamp"], int)
    import base64
    assert len(base64.b64decode(final["tee_signature"])) == 256
    t = client.get(f"/_stream_times/{key}").json()
    assert t["last"] - t["first"] >= 0.35
    assert abs(t["last"] - time.time()) < 30
    assert client.get("/_stream_times/nope").status_code == 404
    # the connection is still usable after a chunked response
    assert client.get("/health").status_code == 200


def test_injected_status(client):
    body = chat_body("boom")
    r = client.post("/v1/chat/completions", json=body, headers={"X-Test-Status": "500"})
    assert r.status_code == 402  # payment handling comes first
    acc = w.unb64json(r.headers["payment-required"])["accepts"][0]
    r = client.post("/v1/chat/completions", json=body,
                    headers={"X-Test-Status": "500", "PAYMENT-SIGNATURE": paid_header(acc)})
    assert r.status_code == 500 and r.json() == {"error": "injected"}
    assert "payment-response" not in r.headers
    r = client.post("/v1/free/chat/completions", json=body, headers={"X-Test-Status": "503"})
    assert r.status_code == 503


def test_script_mode(tls):
    script = os.path.join(os.path.dirname(upstream.__file__), "upstream.py")
    p = subprocess.Popen([sys.executable, script, "--port", "0", "--cert", tls["cert"], "--key", tls["key"]],
                         stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline().split()
        assert line[0] == "READY"
        port = int(line[1])
        r = httpx.get(f"https://localhost:{port}/health", verify=tls["ctx"], timeout=10)
        assert r.json() == {"ok": True}
    finally:
        p.terminate()
        assert p.wait(timeout=10) == 0
