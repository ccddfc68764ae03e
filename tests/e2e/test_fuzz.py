"""A bounded mutation fuzzer through the live `receipts proxy`: x402 request and response headers, bodies,
encodings and bytes that are not UTF-8, from a seeded generator (RECEIPTS_FUZZ_N requests, default 2,000;
RECEIPTS_FUZZ_SEED). What must hold, whatever arrives:
- no addon traceback, and no internal error caught by the hooks' catch-all nor by the decoders' (the notes);
- every response that carries an `X-Receipt-Id` has its row in `calls`;
- every paid request has its `request` event, or was refused with a 503; none reached the upstream unrecorded.
"""
import base64
import gzip
import json
import os
import random
import zlib

import brotli
import pytest

from support import rawhttp
from support import upstream as U
from support import x402_wire as W
from support.proc import ProxyProcess, receipts_cli, wait_for

N = int(os.environ.get("RECEIPTS_FUZZ_N", "2000"))
SEED = int(os.environ.get("RECEIPTS_FUZZ_SEED", "402"))
ROUTES = ["/v1/chat/completions", "/v1/legacy/chat/completions", "/v1/jobid/chat/completions",
          "/v1/free/chat/completions", "/v1/messages", "/v1/embeddings"]
TEXT_BYTES = bytes([9, *range(0x20, 0x7F), *range(0x80, 0x100)])  # what a header value may carry on the wire


class Fuzzer:
    def __init__(self, seed: int):
        self.r = random.Random(seed)

    def text(self, n: int) -> bytes:
        return bytes(self.r.choice(TEXT_BYTES) for _ in range(n)).strip(b" \t") or b"x"

    def mutate(self, data: bytes, flips: int = 3) -> bytes:
        out = bytearray(data)
        for _ in range(self.r.randint(1, flips)):
            op = self.r.random()
            pos = self.r.randrange(len(out) + 1)
            if op < 0.4 and out:
                out[min(pos, len(out) - 1)] = self.r.choice(TEXT_BYTES)
            elif op < 0.7:
                out[pos:pos] = self.text(self.r.randint(1, 8))
            elif out:
                del out[pos:pos + self.r.randint(1, 8)]
        return bytes(out)

    def payment(self) -> bytes:
        accepted = W.challenge_v2(U.PAY_TO, U.ASSET, U.AMOUNT)["accepts"][0]
        if self.r.random() < 0.2:
            accepted = {**accepted, "network": self.r.choice(["base", "solana:5eykt4", "eip155:x", "", None])}
        pay = W.payment_v2_eip3009(accepted, W.random_address(), self.r.choice([U.AMOUNT, 0, -1, 2**300, "1e9"]),
                                   W.random_nonce_hex(), 0, 2**31, W.random_signature())
        raw = W.b64json(pay).encode()
        choice = self.r.random()
        if choice < 0.3:
            return self.mutate(raw, 6)
        if choice < 0.4:
            return base64.b64encode(self.mutate(json.dumps(pay).encode(), 6))
        if choice < 0.45:
            return self.text(self.r.randint(1, 40))
        if choice < 0.5:
            return raw * 20  # a big value
        return raw

    def body(self, route: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        doc = {"model": self.text(6).decode("latin-1"), "messages": [{"role": "user", "content": str(self.r.random())}]}
        if self.r.random() < 0.2:
            doc["stream"] = True
        raw = json.dumps(doc).encode()
        choice, headers = self.r.random(), [(b"Content-Type", b"application/json")]
        if choice < 0.15:
            raw = self.mutate(raw, 8)
        elif choice < 0.3:
            enc = self.r.choice([b"gzip", b"br", b"deflate", b"gzip, br", b"zstd", b"compress", b"x-unknown"])
            raw = {b"gzip": gzip.compress, b"br": brotli.compress, b"deflate": zlib.compress}.get(enc, lambda b: b)(raw)
            if self.r.random() < 0.3:
                raw = self.mutate(raw)
            headers.append((b"Content-Encoding", enc))
        elif choice < 0.35:
            raw = self.r.randbytes(self.r.randint(0, 300))
        return raw, headers

    def answer_headers(self) -> list[tuple[bytes, bytes]]:
        """Header lines the upstream adds to its answer, byte for byte."""
        out = []
        for _ in range(self.r.randint(0, 3)):
            name = self.r.choice([b"PAYMENT-RESPONSE", b"X-PAYMENT-RESPONSE", b"PAYMENT-REQUIRED", b"X-TEE-ID",
                                  b"X-TEE-Timestamp", b"X-Request-Id", b"X-Upto-Session", b"X-Settlement-Tx-Hash",
                                  b"X-Note"])
            value = W.b64json(W.settlement(W.random_tx_hash(), W.random_address(), "eip155:8453")).encode()
            out.append((name, self.mutate(value, 4) if self.r.random() < 0.7 else self.text(12)))
        return out

    def request(self, i: int, base: str) -> tuple[str, list, bytes, bool]:
        route = self.r.choice(ROUTES)
        body, headers = self.body(route)
        headers.append((b"X-Request-Id", f"fuzz-{i}".encode()))
        paid = self.r.random() < 0.6
        if paid:
            name = self.r.choice([b"PAYMENT-SIGNATURE", b"X-PAYMENT", b"X-Upto-Session"])
            headers.append((name, self.payment() if name != b"X-Upto-Session" else self.text(20)))
            if self.r.random() < 0.1:
                headers.append((name, self.payment()))  # sent twice
        for name in (b"User-Agent", b"Idempotency-Key", b"X-Settlement-Type"):
            if self.r.random() < 0.3:
                headers.append((name, self.text(self.r.randint(1, 30))))
        if self.r.random() < 0.5:
            headers.append((b"X-Test-Raw-Headers", rawhttp.raw_header_lines(self.answer_headers())))
        if self.r.random() < 0.05:
            headers.append((b"X-Test-Status", self.r.choice([b"500", b"502", b"402", b"200", b"abc"])))
        if self.r.random() < 0.02:
            headers.append((b"X-Test-Body", b"gzip-bomb:67108864"))
        return f"{base}{route}", headers, body, paid


@pytest.fixture(scope="module")
def plain():
    server, port = U.start_upstream(0)
    yield server, f"http://127.0.0.1:{port}"
    server.shutdown()


def test_fuzzed_exchanges_never_crash_the_recorder_nor_pass_a_paid_one_unrecorded(tmp_path, plain, fault_report):
    server, base = plain
    server.clear()
    fuzz, sent = Fuzzer(SEED), []
    with ProxyProcess(tmp_path / "data", "--seal-interval", "0.1") as proxy:
        for i in range(N):
            url, headers, body, paid = fuzz.request(i, base)
            sent.append((i, paid, rawhttp.request(proxy.port, url, headers, body, timeout=20)))
        calls = _calls_when_settled(proxy, sent)
        log = proxy.output()
    assert "Traceback" not in log, log[log.find("Traceback") - 500:log.find("Traceback") + 3000]
    assert "internal error in the" not in log, [ln for ln in log.splitlines() if "internal error" in ln][:5]
    # the decoders catch their own exceptions and say so in the call's notes ("internal error: …", base64
    # JSON's "cannot decode: …"): none may have been caught
    caught = [(c["client_request_id"], e) for c in calls for e in c["parse_errors"] or []
              if "internal error" in e or "cannot decode:" in e]
    assert caught == [], caught[:5]

    by_receipt = {c["receipt_id"] for c in calls}
    by_request = {c["client_request_id"] for c in calls}
    stamped = [(i, a.headers["x-receipt-id"]) for i, _, a in sent if a and "x-receipt-id" in a.headers]
    assert len(stamped) > N // 3, "the fuzzer reaches the recorder"
    assert [i for i, rid in stamped if rid not in by_receipt] == [], "every stamped receipt id has its calls row"
    unrecorded = [i for i, paid, a in sent if paid and f"fuzz-{i}" not in by_request
                  and not (a and a.status == 503 and a.headers.get("x-receipts-error"))]
    assert unrecorded == [], "every paid request is recorded or refused"
    upstream_saw = {s["headers"].get("x-request-id") for s in server.seen_list()}
    paid_ids = {f"fuzz-{i}" for i, paid, _ in sent if paid}
    assert (upstream_saw & paid_ids) - by_request == set(), "no paid request reached the upstream unrecorded"
    fault_report("fuzzed exchanges", requests=N, seed=SEED, paid=len(paid_ids), stamped=len(stamped),
                 refused_503=sum(1 for _, _, a in sent if a and a.status == 503), tracebacks=0, unrecorded_paid=0)


def _calls_when_settled(proxy, sent) -> list[dict]:
    want = sum(1 for _, _, a in sent if a and "x-receipt-id" in a.headers)

    def rows():
        out = receipts_cli("sql", "--json", "SELECT receipt_id, client_request_id, parse_errors FROM calls", data=proxy.data)
        assert out.returncode == 0, out.stderr
        found = json.loads(out.stdout)
        return len(found) >= want and found
    return wait_for(rows, timeout=30)
