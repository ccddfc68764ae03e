"""The addon inside a user's own mitmdump (`-s addon/script.py`), HTTP/2 clients, and `receipts ingest`:
a HAR (and a flow file) of the same exchanges yields the same receipts as the live capture."""
import ssl
import json
import subprocess
import uuid

import duckdb
import httpx

from support import upstream as U
from support import x402_wire as W
from support.proc import ProxyProcess, receipts_cli

COMPARED = ("request_id", "payment_hash", "payer", "pay_to", "asset", "amount", "decimals", "network", "scheme",
            "nonce", "session_id", "model", "total_tokens", "status", "attempts", "proof_status", "settlement_job_id",
            "host", "path")


def paid_flow(c, url, header_name, v1=False):
    body = {"model": "fake-model", "messages": [{"role": "user", "content": str(uuid.uuid4())}]}
    first = c.post(url, json=body)
    accepted = first.json()["accepts"][0] if v1 else W.unb64json(first.headers["payment-required"])["accepts"][0]
    build = W.payment_v1_eip3009 if v1 else W.payment_v2_eip3009
    pay = build(accepted, W.random_address(), U.AMOUNT, W.random_nonce_hex(), 0, 2**31, W.random_signature())
    assert c.post(url, json=body, headers={header_name: W.b64json(pay)}).status_code == 200


def receipts(data):
    con = duckdb.connect(str(data / "receipts.duckdb"), read_only=True)
    cur = con.execute(f"SELECT {', '.join(COMPARED)} FROM receipts ORDER BY first_seen")
    return [dict(zip(COMPARED, row)) for row in cur.fetchall()]


def test_har_and_flow_file_ingest_equal_live_capture(tmp_path, tls, upstream):
    live, har, flows = tmp_path / "live", tmp_path / "traffic.har", tmp_path / "traffic.mitm"
    proxy = ProxyProcess(live, "--set", f"hardump={har}", "-w", str(flows), "--set", "receipts_seal_interval=0.1",
                         "--set", "connection_strategy=lazy", upstream_ca=tls["ca"], mitmdump=True)
    with proxy:
        with httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=proxy.ca), timeout=10) as c:
            paid_flow(c, f"{upstream}/v1/chat/completions", "PAYMENT-SIGNATURE")
            paid_flow(c, f"{upstream}/v1/legacy/chat/completions", "X-PAYMENT", v1=True)
            paid_flow(c, f"{upstream}/v1/jobid/chat/completions", "X-PAYMENT")
            c.post(f"{upstream}/v1/embeddings", json={"model": "embed-fake", "input": "hi"})
            c.get(f"{upstream}/health")
        # an HTTP/2 client (curl): the proxy speaks h2 to it and HTTP/1.1 upstream
        h2 = subprocess.run(["curl", "-sS", "--http2", "-o", "/dev/null", "-w", "%{http_version}", "-X", "POST",
                             f"{upstream}/v1/messages", "-H", "content-type: application/json",
                             "-d", json.dumps({"model": "claude-fake", "messages": []})],
                            capture_output=True, text=True, env=proxy.client_env(), timeout=30)
        assert h2.stdout == "2", h2.stdout + h2.stderr
    live_rows = receipts(live)
    assert len(live_rows) == 5 and sum(r["attempts"] for r in live_rows) == 8
    h2_call = duckdb.connect(str(live / "receipts.duckdb"), read_only=True).execute(
        "SELECT data->>'$.http_version', (SELECT total_tokens FROM calls WHERE model = 'claude-fake') "
        "FROM events WHERE type = 'request' AND (data->>'$.model') = 'claude-fake'").fetchone()
    assert h2_call == ("HTTP/2.0", 10)

    for source, name in ((har, "from_har"), (flows, "from_flows")):
        data = tmp_path / name
        first = receipts_cli("ingest", str(source), data=data)
        again = receipts_cli("ingest", str(source), data=data)  # the same file twice adds nothing
        assert "recorded 8 new calls (0 already recorded, 1 exchanges were not AI calls)" in first.stdout, first
        assert "recorded 0 new calls (8 already recorded" in again.stdout, again
        assert receipts(data) == live_rows, name


def test_ingest_rejects_what_it_cannot_read(tmp_path):
    bad = tmp_path / "bad.har"
    bad.write_text('{"not": "a har"}')
    out = receipts_cli("ingest", str(bad), data=tmp_path / "d")
    assert out.returncode == 1 and out.stderr.startswith("Error: ") and "HAR" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    missing = receipts_cli("ingest", str(tmp_path / "nope.har"), data=tmp_path / "d")
    assert missing.returncode == 1 and "cannot read" in missing.stderr
