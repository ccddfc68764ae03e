"""Bounded inputs at capture, end to end through a real `receipts proxy`: compression bombs, huge bodies
and slow clients cannot take the proxy's memory or its connections; every body is still forwarded byte
for byte and every recorded call still gets its row."""
import hashlib
import json
import socket
import time
import uuid
import zlib

import pytest

from support import rawhttp
from support import upstream as U
from support import x402_wire as W
from support.proc import ProxyProcess, receipts_cli, wait_for

RSS_BOUND_MB = 300  # the bound README "Faults and limits" states
GIB = 1 << 30


@pytest.fixture(scope="module")
def plain():
    server, port = U.start_upstream(0)
    yield server, f"http://127.0.0.1:{port}"
    server.shutdown()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    with ProxyProcess(tmp_path_factory.mktemp("bounded") / "data", "--seal-interval", "0.1") as p:
        yield p


def payment() -> bytes:
    accepted = W.challenge_v2(U.PAY_TO, U.ASSET, U.AMOUNT)["accepts"][0]
    return W.b64json(W.payment_v2_eip3009(accepted, W.random_address(), U.AMOUNT, W.random_nonce_hex(), 0, 2**31,
                                          W.random_signature())).encode()


def peak_rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def call(proxy, rid, done="status IS NOT NULL"):
    """The exchange's row once what `done` says is recorded too (its events are sealed one by one: the
    request's, the answer's head, and the end of a long body)."""
    def row():
        out = receipts_cli("sql", "--json", f"SELECT * FROM calls WHERE receipt_id = '{rid}' AND {done}",
                           data=proxy.data)
        return out.returncode == 0 and json.loads(out.stdout)
    return wait_for(row)[0]


def gzip_zeros(n: int) -> bytes:
    z, zeros, parts = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS), bytes(1 << 20), []
    for start in range(0, n, len(zeros)):
        parts.append(z.compress(zeros[:min(len(zeros), n - start)]))
    return b"".join(parts) + z.flush()


def test_bombs_and_huge_bodies_stay_within_the_memory_bound(proxy, plain, fault_report):
    server, base = plain
    url = f"{base}/v1/chat/completions"
    bomb = gzip_zeros(GIB)
    assert len(bomb) < 2 << 20

    # a request bomb: 1 GiB of zeros in about 1 MB of gzip, paid, forwarded as sent
    server.clear()
    sent = rawhttp.request(proxy.port, url, [(b"PAYMENT-SIGNATURE", payment()), (b"Content-Encoding", b"gzip"),
                                             (b"Content-Type", b"application/json")], bomb)
    assert sent is not None and "x-receipt-id" in sent.headers
    assert server.seen_list()[-1]["body_sha256"] == hashlib.sha256(bomb).hexdigest(), "forwarded byte for byte"
    row = call(proxy, sent.headers["x-receipt-id"])
    assert any(e.startswith("body_too_large") for e in row["parse_errors"])
    assert row["request_bytes"] == len(bomb) and row["request_sha256"] == hashlib.sha256(bomb).hexdigest()

    # a response bomb
    got = rawhttp.request(proxy.port, url, [(b"PAYMENT-SIGNATURE", payment()),
                                            (b"X-Test-Body", f"gzip-bomb:{GIB}".encode())], b"{}")
    assert got.status == 200 and got.body == bomb, "the answer reaches the client as sent"
    row = call(proxy, got.headers["x-receipt-id"])
    assert any(e.startswith("body_too_large") for e in row["parse_errors"])

    # 100 MB answers, with a length and chunked, and a 50 MB upload
    for spec in (b"big:104857600", b"chunked:104857600"):
        got = rawhttp.request(proxy.port, url, [(b"PAYMENT-SIGNATURE", payment()), (b"X-Test-Body", spec)], b"{}")
        assert got.status == 200 and len(got.body) == 100 << 20
        row = call(proxy, got.headers["x-receipt-id"], "response_bytes IS NOT NULL")
        assert row["response_bytes"] == 100 << 20 and row["response_sha256"] == hashlib.sha256(got.body).hexdigest()
    upload = b'{"model": "m", "pad": "' + b"u" * (50 << 20) + b'"}'
    server.clear()
    sent = rawhttp.request(proxy.port, url, [(b"PAYMENT-SIGNATURE", payment())], upload)
    assert sent.status == 200
    assert server.seen_list()[-1]["body_sha256"] == hashlib.sha256(upload).hexdigest()
    row = call(proxy, sent.headers["x-receipt-id"])
    assert row["request_bytes"] == len(upload) and row["request_sha256"] == hashlib.sha256(upload).hexdigest()

    peak = peak_rss_mb(proxy.proc.pid)
    assert peak < RSS_BOUND_MB, f"peak RSS {peak:.0f} MB"
    fault_report("compression bombs and huge bodies", peak_rss_mb=round(peak), bound_mb=RSS_BOUND_MB,
                 request_bomb="1 GiB in %d KB of gzip" % (len(bomb) // 1024), response_bomb="1 GiB",
                 plain_answers="100 MB (length, chunked)", upload="50 MB", forwarded_byte_for_byte="all")
    assert "Traceback" not in proxy.output()


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1024) == b""
    except socket.timeout:
        return False
    except ConnectionError:
        return True


def test_slow_clients_are_cut_off_and_the_proxy_keeps_serving(tmp_path, plain, fault_report):
    server, base = plain
    with ProxyProcess(tmp_path / "data", "--max-client-connections", "20", "--header-timeout", "1",
                      "--idle-timeout", "2") as proxy:
        slow = []
        for _ in range(30):  # slowloris: headers begun, never finished
            s = socket.create_connection(("127.0.0.1", proxy.port))
            s.sendall(f"POST {base}/v1/chat/completions HTTP/1.1\r\nHost: x\r\n".encode())
            slow.append(s)
        refused = sum(_closed_within(s, 0.5) for s in slow[20:])
        assert refused == 10, "connections past the per-client limit are closed at once"
        t0 = time.monotonic()
        cut = sum(_closed_within(s, 6) for s in slow[:20])
        cut_after = time.monotonic() - t0
        assert cut == 20 and cut_after < 6, "half-open connections are closed at the header timeout"

        keep = socket.create_connection(("127.0.0.1", proxy.port))
        keep.sendall(f"GET {base}/health HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert b"200" in keep.recv(4096).split(b"\r\n")[0]
        assert not _closed_within(keep, 1.0), "an idle kept-alive connection is not cut at the header timeout"
        assert _closed_within(keep, 4.0), "but at the idle timeout"

        answer = rawhttp.request(proxy.port, f"{base}/v1/free/chat/completions", [],
                                 json.dumps({"model": "m", "messages": [{"role": "user", "content": str(uuid.uuid4())}]}).encode())
        assert answer.status == 200 and "x-receipt-id" in answer.headers, "the proxy keeps serving"
        for s in slow + [keep]:
            s.close()
    fault_report("slowloris", half_open=30, refused_over_limit=refused, cut_at_header_timeout=cut,
                 cut_within_s=round(cut_after + 0.5, 1), limits="20 connections, 1 s headers, 2 s idle (test settings)")
