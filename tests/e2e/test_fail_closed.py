"""Fail closed, end to end: a real `receipts proxy`, a raw HTTP client sending bytes no library would, and
the local fake x402 upstream over plain HTTP. A paid exchange is never passed on unless its events are in
the journal; what cannot be recorded is refused (503), and nothing gets a receipt id it does not have."""
import base64
import json
import os
import shutil
import time
import uuid

import pytest

from support import rawhttp
from support import upstream as U
from support import x402_wire as W
from support.proc import ProxyProcess, receipts_cli, wait_for


@pytest.fixture(scope="module")
def plain():
    server, port = U.start_upstream(0)
    yield server, f"http://127.0.0.1:{port}"
    server.shutdown()


@pytest.fixture
def proxy(tmp_path):
    with ProxyProcess(tmp_path / "data", "--seal-interval", "0.1") as p:
        yield p


def payment() -> bytes:
    accepted = W.challenge_v2(U.PAY_TO, U.ASSET, U.AMOUNT)["accepts"][0]
    pay = W.payment_v2_eip3009(accepted, W.random_address(), U.AMOUNT, W.random_nonce_hex(), 0, 2**31,
                               W.random_signature())
    return W.b64json(pay).encode()


def chat() -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": str(uuid.uuid4())}]}).encode()


def sql(proxy, query):
    out = receipts_cli("sql", "--json", query, data=proxy.data)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def call_row(proxy, rid):
    return wait_for(lambda: sql(proxy, f"SELECT * FROM calls WHERE receipt_id = '{rid}'"))[0]


def request_event(proxy, rid):
    """The request's event, once sealed (a seal interval after the answer, at most)."""
    rows = wait_for(lambda: sql(proxy, f"SELECT data FROM events WHERE type = 'request' AND receipt_id = '{rid}'"))
    return json.loads(rows[0]["data"])


def test_a_paid_call_with_a_non_utf8_request_header_is_recorded_byte_for_byte(proxy, plain):
    server, base = plain
    ua = b"agent\xe9/1.0"
    answer = rawhttp.request(proxy.port, f"{base}/v1/chat/completions", [
        (b"User-Agent", ua), (b"PAYMENT-SIGNATURE", payment()), (b"X-Odd", b"\xfe\xfd")], chat())
    assert answer.status == 200 and "x-receipt-id" in answer.headers
    rid = answer.headers["x-receipt-id"]
    row = call_row(proxy, rid)
    assert row["paid"] and row["app"] == "agent\ufffd/1.0"
    data = request_event(proxy, rid)
    assert base64.b64decode(data["raw_b64"]["user-agent"][0]) == ua, "the exact bytes are kept"
    assert base64.b64decode(data["raw_b64"]["x-odd"][0]) == b"\xfe\xfd"
    assert "Traceback" not in proxy.output()


def test_a_payment_header_with_non_utf8_bytes_is_recorded_or_refused_never_passed_unrecorded(proxy, plain):
    server, base = plain
    server.clear()
    bad = payment()[:20] + b"\xc3\x28\xff" + payment()[20:]
    answer = rawhttp.request(proxy.port, f"{base}/v1/chat/completions",
                             [(b"PAYMENT-SIGNATURE", bad), (b"X-Request-Id", b"bad-payment-1")], chat())
    assert answer is not None
    if answer.status == 503:
        assert answer.headers["x-receipts-error"] and not server.seen_list()
    else:
        rid = answer.headers["x-receipt-id"]
        data = request_event(proxy, rid)
        assert data["payment"]["errors"], "the undecodable payment is a parse error, not a crash"
    assert "Traceback" not in proxy.output()


def test_a_non_utf8_response_header_keeps_the_settlement(proxy, plain):
    server, base = plain
    extra = rawhttp.raw_header_lines([(b"X-Server-Note", b"caf\xe9"), (b"X-Bin", b"\x80\x81")])
    answer = rawhttp.request(proxy.port, f"{base}/v1/chat/completions",
                             [(b"PAYMENT-SIGNATURE", payment()), (b"X-Test-Raw-Headers", extra)], chat())
    assert answer.status == 200
    tx = W.unb64json(answer.headers["payment-response"])["transaction"]
    rid = answer.headers["x-receipt-id"]
    row = wait_for(lambda: sql(proxy, f"SELECT * FROM receipts WHERE list_contains(ids, '{rid}')"))[0]
    assert row["payment_hash"] == tx.lower(), "the settlement was recorded despite the odd header"
    resp = json.loads(sql(proxy, f"SELECT data FROM events WHERE type = 'response' AND receipt_id = '{rid}'")[0]["data"])
    assert base64.b64decode(resp["raw_b64"]["x-server-note"][0]) == b"caf\xe9"
    assert resp["headers"]["x-server-note"] == "caf\ufffd"


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_removed_data_directory_refuses_paid_calls_until_it_is_back(proxy, plain, fault_report):
    server, base = plain
    url = f"{base}/v1/chat/completions"
    before = rawhttp.request(proxy.port, url, [(b"PAYMENT-SIGNATURE", payment())], chat())
    assert before.status == 200
    shutil.rmtree(proxy.data)
    server.clear()
    cpu0, t0 = _cpu_seconds(proxy.proc.pid), time.monotonic()
    refused = [rawhttp.request(proxy.port, url, [(b"PAYMENT-SIGNATURE", payment()),
                                                 (b"X-Request-Id", f"gone-{i}".encode())], chat()) for i in range(10)]
    answers = [None if a is None else (a.status, a.headers.get("x-receipts-error")) for a in refused]
    # (None: the connection closed without an answer. Seen once in CI, not reproduced in 37 runs under load:
    # the proxy's last lines go with the failure, to say why)
    assert answers == [(503, "journal-unavailable")] * 10, (answers, proxy.lines[-40:])
    assert not [s for s in server.seen_list() if s["headers"].get("x-request-id", "").startswith("gone-")], \
        "no refused paid request reached the upstream"
    free = rawhttp.request(proxy.port, f"{base}/v1/free/chat/completions", [], chat())
    assert free.status == 200 and "x-receipt-id" not in free.headers, "no receipt id for a record that does not exist"
    time.sleep(3)
    cpu = (_cpu_seconds(proxy.proc.pid) - cpu0) / (time.monotonic() - t0)
    assert cpu < 0.3, f"the proxy spins while the directory is gone ({cpu:.0%} of a core)"
    errors = [line for line in proxy.lines if "journal" in line and ("broken" in line or "FAILED" in line)]
    assert len(errors) <= 8, f"errors are rate-limited, not one per attempt: {len(errors)} lines"

    proxy.data.mkdir()
    t_back = time.monotonic()
    back = wait_for(lambda: (a := rawhttp.request(proxy.port, url, [(b"PAYMENT-SIGNATURE", payment())], chat()))
                    and a.status == 200 and a, timeout=15)
    rid = back.headers["x-receipt-id"]
    assert call_row(proxy, rid)["paid"], "recording resumed by itself in the recreated directory"
    fault_report("data directory removed", paid_refused=sum(a.status == 503 for a in refused), paid_reached_upstream=0,
                 cpu_while_gone=f"{cpu:.0%}", error_lines=len(errors), recovered_after_s=round(time.monotonic() - t_back, 1))


def test_what_a_killed_fold_left_is_removed_at_start(tmp_path):
    data = tmp_path / "data"
    with ProxyProcess(data):
        pass
    table = data / "tables" / "requests"
    table.mkdir(parents=True, exist_ok=True)
    orphans = [table / ".00000009-019aef00-0000-7000-8000-000000000000.parquet.tmp",  # a fold killed mid-write
               table / "00000009-019aef00-0000-7000-8000-000000000001.parquet"]      # ... or before its commit
    old = data / "journal" / "parquet" / "date=2026-12-04"
    old.mkdir(parents=True)
    orphans.append(old / ".proxy-019aef00-0000-7000-8000-000000000000.parquet.tmp")  # an old compaction's
    for orphan in orphans:
        orphan.write_bytes(b"PAR1 half written")
    with ProxyProcess(data):
        deadline = time.monotonic() + 10
        while any(o.exists() for o in orphans) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(o.exists() for o in orphans)
