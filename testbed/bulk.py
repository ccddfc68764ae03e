"""Many real settlements at once, for benchmarks and tests: EIP-3009 authorizations signed by the test
bed's payer and settled on anvil in a few blocks (settle_many), and the events live capture writes for
each such paid call, written straight into a journal through the recorder's own pure translation
(record). scripts/bench_verify.py and tests/e2e/test_verify.py use them.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from eth_abi import encode
from eth_hash.auto import keccak

from receipts.addon import eip712
from receipts.addon import exchange as X
from receipts.storage import config as cfg
from receipts.storage.journal import Journal
from receipts.storage.records import Event, uuid7

from .chain import FACILITATOR, PAYEE, PAYER

SELECTOR = keccak(b"transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)")[:4]


def settle_many(anvil, token: str, n: int) -> list[dict]:
    """n signed authorizations, settled on chain; returns the payments with their tx hashes."""
    from coincurve import PrivateKey

    key = PrivateKey(bytes.fromhex(PAYER.private_key.removeprefix("0x")))
    domain = eip712.domain_separator("USD Coin", "2", anvil.chain_id, token)
    payments, calls = [], []
    for i in range(n):
        auth = {"from": PAYER.address, "to": PAYEE.address, "value": 100, "validAfter": 0,
                "validBefore": 2**40, "nonce": "0x" + os.urandom(32).hex()}
        sig = key.sign_recoverable(eip712.eip3009_digest(domain, auth), hasher=None)
        r, s, v = sig[:32], sig[32:64], sig[64] + 27
        data = SELECTOR + encode(["address", "address", "uint256", "uint256", "uint256", "bytes32", "uint8", "bytes32",
                                  "bytes32"], [auth["from"], auth["to"], 100, 0, 2**40, bytes.fromhex(auth["nonce"][2:]),
                                               v, r, s])
        calls.append({"from": FACILITATOR.address, "to": token, "data": "0x" + data.hex(), "gas": hex(120_000)})
        payments.append({"auth": auth, "signature": "0x" + (r + s + bytes([v])).hex()})
    nonce = int(_batch(anvil.url, [("eth_getTransactionCount", [FACILITATOR.address, "pending"])])[0], 16)
    for i, c in enumerate(calls):
        c["nonce"] = hex(nonce + i)
    anvil.set_automine(False)
    hashes = []
    for start in range(0, n, 400):
        hashes += _batch(anvil.url, [("eth_sendTransaction", [c]) for c in calls[start:start + 400]])
        anvil.mine(1)
    anvil.set_automine(True)
    for p, h in zip(payments, hashes):
        p["tx"] = h
    return payments


def _batch(url: str, calls: list) -> list:
    import urllib.request

    body = json.dumps([{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)])
    with urllib.request.urlopen(urllib.request.Request(url, body.encode(), {"content-type": "application/json"}),
                                timeout=120) as resp:
        answers = sorted(json.loads(resp.read()), key=lambda a: a["id"])
    if any("error" in a for a in answers):
        raise RuntimeError(f"anvil refused a call: {next(a['error'] for a in answers if 'error' in a)}")
    return [a["result"] for a in answers]


def record(data: Path, token: str, chain: int, payments: list[dict], settings: cfg.Settings) -> None:
    """The events live capture writes for each paid call (the same pure translation)."""
    from tests.support import x402_wire as W

    accepted = {"scheme": "exact", "network": f"eip155:{chain}", "asset": token, "amount": "100",
                "payTo": PAYEE.address, "maxTimeoutSeconds": 60, "extra": {"name": "USD Coin", "version": "2"}}
    record_paid_calls(data, [(
        W.b64json({"x402Version": 2, "accepted": accepted, "payload": {
            "signature": p["signature"], "authorization": {**p["auth"], "value": "100", "validAfter": "0",
                                                          "validBefore": str(2**40)}}}),
        W.b64json(W.settlement(p["tx"], PAYER.address, accepted["network"]))) for p in payments], settings)


def record_paid_calls(data: Path, calls: list[tuple[str, str]], settings: cfg.Settings) -> None:
    """Record paid calls as live capture would, through the recorder's own translation: each a
    (PAYMENT-SIGNATURE, PAYMENT-RESPONSE) pair of header values, a millisecond apart, a minute ago."""
    events, t0 = [], time.time() - 60
    for i, (payment, settlement) in enumerate(calls):
        req = X.Req("POST", "http", "127.0.0.1", 8000, "/v1/chat/completions",
                    [("PAYMENT-SIGNATURE", payment), ("content-type", "application/json")], b'{"model":"m"}',
                    t0 + i * 0.001, client="127.0.0.1")
        resp = X.Resp(200, [("PAYMENT-RESPONSE", settlement), ("content-type", "application/json")],
                      b'{"id":"x","usage":{"total_tokens":3}}', req.ts + 0.0005, req.ts + 0.0006)
        rid = uuid7(req.ts)
        events.append(Event("request", rid, X.request_data(req, settings, logical_id=rid, match="x402", source="bench"),
                            ts=req.ts))
        events.append(Event("response", rid, X.response_data(resp, req.ts, settings), ts=resp.ts_end))
    with Journal(data, "bench", durability="relaxed") as journal:
        for start in range(0, len(events), 2000):
            journal.write(events[start:start + 2000])
