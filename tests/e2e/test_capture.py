"""End to end: a real `receipts proxy` subprocess, real clients (httpx, curl) through HTTPS_PROXY with the
proxy's CA, and a local HTTPS upstream that speaks x402 v1 and v2."""
import hashlib
import json
import ssl
import subprocess
import time
import uuid

import httpx
import pytest

from support import upstream as U
from support import x402_wire as W
from support import proc
from support.proc import ProxyProcess, receipts_cli, wait_for


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, tls):
    with ProxyProcess(tmp_path_factory.mktemp("data"), "--seal-interval", "0.2", upstream_ca=tls["ca"]) as p:
        yield p


@pytest.fixture
def client(proxy, monkeypatch):
    """httpx as an app would use it: proxy and CA from the environment only."""
    for k, v in proxy.client_env().items():
        monkeypatch.setenv(k, v)
    with httpx.Client(trust_env=True, timeout=30) as c:
        yield c


def sql(proxy, query):
    out = receipts_cli("sql", "--json", query, data=proxy.data)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def receipt_where(proxy, cond, count=1):
    return wait_for(lambda: (rows := sql(proxy, f"SELECT * FROM receipts WHERE {cond}")) and len(rows) >= count and rows)


def chat(text, **extra):
    return {"model": "fake-model", "messages": [{"role": "user", "content": text}], **extra}


def test_x402_v2_is_one_receipt_found_by_tx_hash_and_receipt_id(proxy, client, upstream):
    body = chat(f"v2 {uuid.uuid4()}")
    first = client.post(f"{upstream}/v1/chat/completions", json=body)
    assert first.status_code == 402
    accepted = W.unb64json(first.headers["payment-required"])["accepts"][0]
    payer = W.random_address()
    pay = W.payment_v2_eip3009(accepted, payer, U.AMOUNT, W.random_nonce_hex(), 0, 2**31, W.random_signature())
    paid = client.post(f"{upstream}/v1/chat/completions", json=body,
                       headers={"PAYMENT-SIGNATURE": W.b64json(pay), "X-Request-Id": "client-req-v2"})
    assert paid.status_code == 200
    tx = W.unb64json(paid.headers["payment-response"])["transaction"]
    rid = paid.headers["x-receipt-id"]

    (r,) = receipt_where(proxy, f"payer = '{payer}'")
    assert r["attempts"] == 2 and r["status"] == 200
    assert (r["pay_to"], r["asset"], r["network"], r["scheme"]) == (U.PAY_TO, U.ASSET, U.NETWORK, "exact")
    assert int(r["amount"]) == U.AMOUNT and r["decimals"] == 6
    assert r["payment_hash"] == tx.lower()
    assert r["request_id"] == "client-req-v2"
    assert r["proof_status"] == "pending" and r["receipt_id"] == first.headers["x-receipt-id"]
    assert r["total_tokens"] > 0 and r["model"] == "fake-model"

    for ident in (tx, rid, tx.upper().replace("0X", "0x"), payer):
        shown = receipts_cli("show", "--json", ident, data=proxy.data)
        assert shown.returncode == 0, shown.stderr
        doc = json.loads(shown.stdout)
        assert doc["receipt"]["receipt_id"] == r["receipt_id"]
        assert [c["status"] for c in doc["calls"]] == [402, 200]
    text = receipts_cli("show", tx, data=proxy.data).stdout
    assert "0.01 USDC (atomic 10000, 6 decimals)" in text and payer in text and U.PAY_TO in text


def curl(proxy, *args):
    """Run curl with only the environment pointing it at the proxy; (status, headers, body)."""
    out = subprocess.run(["curl", "-sS", "-D", "-", *args], capture_output=True, text=True,
                         env=proxy.client_env(), timeout=30)
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.rpartition("\n\n")  # text mode turned CRLF into LF
    block = [b for b in head.split("\n\n") if b.startswith("HTTP/")][-1].splitlines()
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in block[1:])}
    return int(block[0].split()[1]), headers, body


def test_x402_v1_with_curl_is_one_receipt(proxy, upstream):
    body = json.dumps(chat(f"v1 {uuid.uuid4()}"))
    request = ["-X", "POST", f"{upstream}/v1/legacy/chat/completions", "-H", "content-type: application/json", "-d", body]
    status, _, text = curl(proxy, *request)
    assert status == 402
    accepted = json.loads(text)["accepts"][0]
    payer = W.random_address()
    pay = W.payment_v1_eip3009(accepted, payer, U.AMOUNT, W.random_nonce_hex(), 0, 2**31, W.random_signature())
    status, headers, _ = curl(proxy, *request, "-H", f"X-PAYMENT: {W.b64json(pay)}")
    assert status == 200
    tx = W.unb64json(headers["x-payment-response"])["transaction"]

    (r,) = receipt_where(proxy, f"payer = '{payer}'")
    assert r["attempts"] == 2 and r["status"] == 200
    assert r["asset"] == U.ASSET, "a v1 payment's asset comes from its challenge"
    assert (r["pay_to"], r["network"], int(r["amount"]), r["payment_hash"]) == (U.PAY_TO, U.NETWORK, U.AMOUNT, tx)
    assert receipts_cli("show", headers["x-receipt-id"], data=proxy.data).returncode == 0


def test_job_id_is_not_a_tx_hash(proxy, client, upstream):
    body = chat(f"job {uuid.uuid4()}")
    accepted = W.unb64json(client.post(f"{upstream}/v1/jobid/chat/completions", json=body)
                           .headers["payment-required"])["accepts"][0]
    payer = W.random_address()
    pay = W.payment_v2_eip3009(accepted, payer, U.AMOUNT, W.random_nonce_hex(), 0, 2**31, W.random_signature())
    paid = client.post(f"{upstream}/v1/jobid/chat/completions", json=body, headers={"X-PAYMENT": W.b64json(pay)})
    job = W.unb64json(paid.headers["payment-response"])["transaction"]
    (r,) = receipt_where(proxy, f"payer = '{payer}'")
    assert r["payment_hash"] is None and r["settlement_job_id"] == job and job.startswith("payment-")
    assert receipts_cli("show", job, data=proxy.data).returncode == 0


def test_stream_passes_chunk_by_chunk_and_records_final_event(proxy, client, upstream):
    key = str(uuid.uuid4())
    body = chat("stream please", stream=True, n_chunks=4, chunk_delay=0.3, stream_key=key)
    with client.stream("POST", f"{upstream}/v1/free/chat/completions", json=body) as resp:
        rid = resp.headers["x-receipt-id"]
        lines = resp.iter_lines()
        first_data = next(l for l in lines if l.startswith("data:"))
        first_at = time.time()
        rest = [l for l in lines if l.startswith("data:")]
    assert json.loads(first_data[5:])["choices"][0]["delta"]["content"]
    times = httpx.get(f"{upstream}/_stream_times/{key}", verify=False).json()
    # the client had the first event while the upstream was still 0.9 s away from sending the last one
    assert first_at < times["last"] - 0.5, (first_at, times)
    assert rest[-1] == "data: [DONE]"
    final = json.loads(rest[-2][5:])

    (c,) = wait_for(lambda: sql(proxy, f"SELECT * FROM calls WHERE receipt_id = '{rid}' AND total_tokens IS NOT NULL"))
    assert c["stream"] is True and c["usage_source"] == "provider" and c["error"] is None
    assert c["total_tokens"] == final["usage"]["total_tokens"]
    assert c["prompt_tokens"] == final["usage"]["prompt_tokens"]
    assert (c["tee_id"], c["tee_request_hash"], c["tee_output_hash"], c["tee_timestamp"]) == (
        final["tee_id"], final["tee_request_hash"], final["tee_output_hash"], final["tee_timestamp"])


def test_unrelated_traffic_is_not_recorded_or_stamped(proxy, client, upstream):
    probe = uuid.uuid4().hex
    resp = client.get(f"{upstream}/health?probe={probe}", headers={"X-Request-Id": f"unrelated-{probe}"})
    assert resp.status_code == 200 and "x-receipt-id" not in resp.headers
    related = client.post(f"{upstream}/v1/free/chat/completions", json=chat("related"),
                          headers={"X-Request-Id": f"related-{probe}"})
    rid = related.headers["x-receipt-id"]
    # the related call, sent after the unrelated one, is in the journal: the unrelated one would be too by now
    wait_for(lambda: sql(proxy, f"SELECT 1 FROM calls WHERE client_request_id = 'related-{probe}'"))
    found = sql(proxy, f"SELECT DISTINCT receipt_id FROM events WHERE data::VARCHAR LIKE '%{probe}%'")
    assert [r["receipt_id"] for r in found] == [rid], "only the related call's events name the probe"
    assert sql(proxy, f"SELECT * FROM calls WHERE client_request_id = 'unrelated-{probe}' OR path LIKE '/health%'") == []


def test_missing_usage_is_unknown_not_zero(proxy, client, upstream):
    resp = client.post(f"{upstream}/v1/free/chat/completions", json=chat("err"), headers={"X-Test-Status": "500"})
    rid = resp.headers["x-receipt-id"]
    (c,) = wait_for(lambda: sql(proxy, f"SELECT * FROM calls WHERE receipt_id = '{rid}'"))
    assert c["status"] == 500 and c["usage_source"] == "missing" and c["total_tokens"] is None


def test_upstream_refused_is_an_error_event(proxy, client):
    # plain HTTP, so the proxy sees the request itself (for HTTPS, the CONNECT already fails)
    resp = client.post("http://127.0.0.1:1/v1/chat/completions", json=chat("nobody home"))
    assert resp.status_code == 502
    rows = wait_for(lambda: sql(proxy, "SELECT * FROM calls WHERE port = 1 AND error IS NOT NULL"))
    assert rows[0]["error"].startswith("upstream_refused: ")



def test_bad_input_is_recorded_with_parse_errors_and_traffic_is_unaffected(proxy, upstream):
    garbage = b"\xff\xfe\x00binary\x80" * 50
    headers = [("content-type", "application/octet-stream"), ("X-PAYMENT", "%%%not-base64%%%"),
               ("X-Request-Id", "bad-1"), ("X-Request-Id", "bad-2"), ("X-Big", "b" * 20000)]
    with httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=proxy.ca), timeout=30) as c:
        resp = c.post(f"{upstream}/v1/legacy/chat/completions", content=garbage, headers=headers)
        seen = httpx.get(f"{upstream}/_seen", verify=False).json()[-1]
    assert resp.status_code == 400, "the upstream got the request as sent and answered it"
    assert seen["body_sha256"] == hashlib.sha256(garbage).hexdigest() and seen["headers"]["x-payment"] == "%%%not-base64%%%"
    rid = resp.headers["x-receipt-id"]
    (c,) = wait_for(lambda: sql(proxy, f"SELECT * FROM calls WHERE receipt_id = '{rid}'"))
    errors = " | ".join(c["parse_errors"])
    assert "x-payment:" in errors and "x-big is 20000 bytes" in errors, errors
    assert c["status"] == 400 and c["request_bytes"] == len(garbage) and c["paid"] is True


def test_broken_sse_is_recorded_as_incomplete(proxy, client, upstream):
    # the client hangs up after the first event: the stream never reaches [DONE]
    body = chat("cut short", stream=True, n_chunks=20, chunk_delay=0.1)
    with client.stream("POST", f"{upstream}/v1/free/chat/completions", json=body) as resp:
        rid = resp.headers["x-receipt-id"]
        next(l for l in resp.iter_lines() if l.startswith("data:"))
    (c,) = wait_for(lambda: sql(proxy, f"SELECT * FROM calls WHERE receipt_id = '{rid}' AND error IS NOT NULL"), timeout=20)
    assert c["stream"] is True and c["usage_source"] == "missing" and c["total_tokens"] is None
    assert c["error"].split(":")[0] in ("client_disconnected", "connection_closed", "stream_incomplete", "connection_killed")


def test_tail_prints_new_calls_live(proxy, client, upstream):
    before = client.post(f"{upstream}/v1/embeddings", json={"model": "tail-model", "input": "before"})
    old = before.headers["x-receipt-id"]
    wait_for(lambda: sql(proxy, f"SELECT 1 FROM calls WHERE receipt_id = '{old}'"))  # recorded before tail starts
    tail = subprocess.Popen([str(proc.BIN / "receipts"), "tail", "--interval", "0.2", "--seconds", "6",
                             "--data", str(proxy.data)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    header = tail.stdout.readline()  # printed once tail has fixed the time it follows from (or "" when it ends)
    assert header.split()[:3] == ["started", "(UTC)", "receipt"], header
    rid = client.post(f"{upstream}/v1/embeddings", json={"model": "tail-model", "input": "x"}).headers["x-receipt-id"]
    out, _ = tail.communicate(timeout=20)
    line = next(l for l in out.splitlines() if rid in l)
    assert "/v1/embeddings" in line and "tail-model" in line and " 200 " in f" {line} "
    assert old not in out, "live: a call recorded before tail started is not printed"


def test_invisible_audit_leaves_responses_unchanged(tmp_path, tls, upstream):
    with ProxyProcess(tmp_path / "data", "--no-stamp", "--seal-interval", "0.1", upstream_ca=tls["ca"]) as p:
        with httpx.Client(proxy=p.url, verify=ssl.create_default_context(cafile=p.ca), timeout=10) as c:
            resp = c.post(f"{upstream}/v1/free/chat/completions", json=chat("quiet"), headers={"X-Request-Id": "quiet-1"})
        assert resp.status_code == 200 and "x-receipt-id" not in resp.headers
        assert wait_for(lambda: sql(p, "SELECT * FROM calls WHERE client_request_id = 'quiet-1'"))


def test_upstream_tls_failure_is_an_error_event(tmp_path, upstream):
    # this proxy does not trust the upstream's private CA: the upstream handshake fails
    with ProxyProcess(tmp_path / "data", "--seal-interval", "0.1") as p:
        status, _, _ = curl(p, "-X", "POST", f"{upstream}/v1/chat/completions", "-d", "{}")
        assert status == 502
        (c,) = wait_for(lambda: sql(p, "SELECT * FROM calls WHERE error IS NOT NULL"))
    assert c["error"].startswith("tls_failed: Certificate verify failed") and c["path"] == "/v1/chat/completions"


def test_app_attribution_and_secrets_sent_in_clear(proxy):
    """curl through the proxy: the call names its process; a key sent over plain HTTP is flagged by name."""
    plain, port = U.start_upstream(0)  # no TLS
    try:
        marker = f"attr {uuid.uuid4()}"
        status, _, _ = curl(proxy, "-X", "POST", f"http://127.0.0.1:{port}/v1/free/chat/completions?api_key=k1",
                            "-H", "Authorization: Bearer sk-clear-text", "-H", "content-type: application/json",
                            "-d", json.dumps(chat(marker)))
        assert status == 200
        (c,) = wait_for(lambda: sql(proxy, f"SELECT * FROM calls WHERE port = {port}"))
    finally:
        plain.shutdown()
    assert c["client_exe"].endswith("/curl") and c["app_name"] == "curl" and c["client_pid"] > 0
    assert c["client_cmdline"].startswith("curl -sS")  # its command line, with the secrets it carries redacted
    assert "sk-clear-text" not in c["client_cmdline"] and "-H Authorization: [redacted sha256:" in c["client_cmdline"]
    assert "/chat/completions?api_key=[redacted sha256:" in c["client_cmdline"] and marker in c["client_cmdline"]
    assert c["secrets_in_clear"] == ["authorization", "?api_key"]
