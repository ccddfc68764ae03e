"""Benchmark of `receipts verify --once` against a naive one-call-per-receipt web3 loop, same run.

N real EIP-3009 settlements on anvil (signed authorizations, sent as `transferWithAuthorization` by the
facilitator account), recorded as receipts through the recorder's own capture code (the payment
header and the PAYMENT-RESPONSE of each call), then:
- `receipts verify --once` (batched JSON-RPC, chunked): receipts/s and peak RSS, at N/10, N/2 and N;
- a naive loop: one web3 `get_transaction_receipt` per receipt (the head once), the same matching.
Prints a markdown table. Talks only to 127.0.0.1.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eth_abi import encode  # noqa: E402
from eth_hash.auto import keccak  # noqa: E402

from addon import eip712  # noqa: E402
from addon import exchange as X  # noqa: E402
from storage import config as cfg  # noqa: E402
from storage.journal import Journal  # noqa: E402
from storage.records import Event, uuid7  # noqa: E402
from testbed.chain import FACILITATOR, PAYEE, PAYER, deploy_token, fund  # noqa: E402
from testbed.node import start_anvil  # noqa: E402
from verifier.evidence import settlement  # noqa: E402

SELECTOR = keccak(b"transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)")[:4]
BIN = Path(sys.executable).parent


def say(msg: str) -> None:
    print(f"bench-verify: {msg}", file=sys.stderr, flush=True)


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
        raise SystemExit(f"anvil refused a call: {next(a['error'] for a in answers if 'error' in a)}")
    return [a["result"] for a in answers]


def record(data: Path, token: str, chain: int, payments: list[dict], settings: cfg.Settings) -> None:
    """The events live capture writes for each paid call (the same pure translation)."""
    from tests.support import x402_wire as W

    accepted = {"scheme": "exact", "network": f"eip155:{chain}", "asset": token, "amount": "100",
                "payTo": PAYEE.address, "maxTimeoutSeconds": 60, "extra": {"name": "USD Coin", "version": "2"}}
    events, t0 = [], time.time() - 60
    for i, p in enumerate(payments):
        header = W.b64json({"x402Version": 2, "accepted": accepted, "payload": {
            "signature": p["signature"], "authorization": {**p["auth"], "value": "100", "validAfter": "0",
                                                          "validBefore": str(2**40)}}})
        req = X.Req("POST", "http", "127.0.0.1", 8000, "/v1/chat/completions",
                    [("PAYMENT-SIGNATURE", header), ("content-type", "application/json")], b'{"model":"m"}',
                    t0 + i * 0.001, client="127.0.0.1")
        resp = X.Resp(200, [("PAYMENT-RESPONSE", W.b64json(W.settlement(p["tx"], PAYER.address, accepted["network"]))),
                            ("content-type", "application/json")], b'{"id":"x","usage":{"total_tokens":3}}',
                      req.ts + 0.0005, req.ts + 0.0006)
        rid = uuid7(req.ts)
        events.append(Event("request", rid, X.request_data(req, settings, logical_id=rid, match="x402", source="bench"),
                            ts=req.ts))
        events.append(Event("response", rid, X.response_data(resp, req.ts, settings), ts=resp.ts_end))
    with Journal(data, "bench", durability="relaxed") as journal:
        for start in range(0, len(events), 2000):
            journal.write(events[start:start + 2000])


def timed_verify(data: Path, config: Path) -> tuple[float, int, str]:
    """Seconds, peak RSS (KiB) of a `receipts verify --once` process, and what it printed."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "out = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
             "out.stdout.strip().replace(chr(10), ' '), sep='|')")
    res = subprocess.run([sys.executable, "-c", probe, str(BIN / "receipts"), "verify", "--once", "--config",
                          str(config), "--data", str(data)], capture_output=True, text=True, timeout=1800)
    seconds, rss, text = res.stdout.strip().split("|", 2)
    return float(seconds), int(rss), text


def naive(url: str, data: Path, required: int) -> tuple[float, int]:
    """One web3 call per receipt (and the head once), the same evidence matching; (seconds, passed)."""
    from storage import db
    from web3 import Web3

    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"proxies": {"http": None, "https": None}}))
    with db.connect(data) as con:
        rows = con.execute("SELECT payment_hash, payer, pay_to, asset, signed_amount, scheme, kind, nonce "
                           "FROM receipts WHERE payment_hash IS NOT NULL").fetchall()
    t = time.perf_counter()
    passed = 0
    head = w3.eth.block_number  # once: the loop makes one call per receipt
    for tx, payer, pay_to, asset, amount, scheme, kind, nonce in rows:
        rc = w3.eth.get_transaction_receipt(tx)
        raw = {"status": hex(rc["status"]), "blockNumber": hex(rc["blockNumber"]), "from": rc["from"],
               "logs": [{"address": lg["address"], "topics": [Web3.to_hex(t) for t in lg["topics"]],
                         "data": Web3.to_hex(lg["data"]), "logIndex": hex(lg["logIndex"])} for lg in rc["logs"]]}
        check = settlement({"asset": asset, "payer": payer, "pay_to": pay_to, "amount": amount, "scheme": scheme,
                            "kind": kind, "nonce": nonce}, tx, raw, head, required)
        passed += check.result == "pass"
    return time.perf_counter() - t, passed


def large_journals(counts: list[int], work: Path) -> list[str]:
    """Table lines: one pass over synthetic journals of `counts` calls compacted in Parquet, every kind of
    call (x402, OpenGradient, unpaid) and a check history; no node configured, so nothing is settled."""
    if not counts:
        return []
    from testbed.synthetic import generate

    config = work / "no-nodes.yaml"
    config.write_text(json.dumps({"networks": {}}))
    lines = ["", "A pass at scale (both passes; no node configured: the cost of reading and deciding):", "",
             "| synthetic journal | receipts checked | seconds | peak RSS (MiB) |", "|---|---:|---:|---:|"]
    for calls in counts:
        data = work / f"synthetic-{calls}"
        say(f"receipts verify --once over a synthetic journal of {calls:,} calls…")
        generate(data, calls, seed=1)
        seconds, rss, text = timed_verify(data, config)
        seen = int(text.split(" receipts checked", 1)[0].rsplit(" ", 1)[-1])
        lines.append(f"| {calls:,} calls in Parquet | {seen:,} | {seconds:.2f} | {rss / 1024:.0f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--receipts", type=int, default=10_000)
    ap.add_argument("--large", default="100000,300000",
                    help="synthetic journals (calls, comma-separated) for the pass at scale; empty: none")
    ap.add_argument("--markdown-out")
    args = ap.parse_args(argv)
    n, small, half = args.receipts, max(1, args.receipts // 10), max(1, args.receipts // 2)
    work = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    with start_anvil(chain_id=8453) as anvil:
        token = deploy_token(anvil.url)
        fund(anvil.url, token, amount=10**12)
        say(f"settling {n} payments on anvil…")
        t = time.perf_counter()
        payments = settle_many(anvil, token, n)
        say(f"settled in {time.perf_counter() - t:.1f} s; recording them…")
        config = work / "bench.yaml"
        config.write_text(json.dumps({"networks": {"eip155:8453": {"rpc": anvil.url, "confirmations": 1}},
                                      "assets": [{"network": "eip155:8453", "address": token, "symbol": "tUSDC",
                                                  "decimals": 6}]}))
        settings = cfg.load(str(config))
        rows = []
        for count in (small, half, n):
            data = work / f"data-{count}"
            record(data, token, anvil.chain_id, payments[:count], settings)
            say(f"receipts verify --once over {count} receipts…")
            seconds, rss, text = timed_verify(data, config)
            rows.append((count, seconds, rss, text))
        say(f"naive web3 loop over {n} receipts…")
        naive_s, naive_passed = naive(anvil.url, work / f"data-{n}", 1)
    (_, _, rss_small, _), (_, _, rss_half, _), (_, s_big, rss_big, text_big) = rows
    ours, base = n / s_big, n / naive_s
    table = "\n".join([
        "| path | receipts | seconds | receipts/s | peak RSS (MiB) |",
        "|---|---:|---:|---:|---:|",
        *[f"| `receipts verify --once` | {count:,} | {sec:.2f} | {count / sec:,.0f} | {rss / 1024:.0f} |"
          for count, sec, rss, _ in rows],
        f"| naive web3 loop (one call per receipt) | {n:,} | {naive_s:.2f} | {base:,.0f} | – |",
        "",
        "| comparison | value | goal | verdict |",
        "|---|---|---|---|",
        f"| speed-up over the naive loop | {ours / base:.1f}× | ≥ 20× | {'goal met' if ours / base >= 20 else 'goal missed'} |",
        f"| peak RSS at {n:,} vs {small:,} receipts | {rss_big / 1024:.0f} vs {rss_small / 1024:.0f} MiB "
        f"({rss_big / rss_small:.2f}×) | does not grow with the count | "
        f"{'goal met' if rss_big / rss_small < 1.25 else 'goal missed'} |",
        f"| peak RSS at {n:,} vs {half:,} receipts | {rss_big / 1024:.0f} vs {rss_half / 1024:.0f} MiB "
        f"({rss_big / rss_half:.2f}×) | (the trend) | – |",
        "",
        f"- verify printed: `{text_big}`; the naive loop found {naive_passed:,} settlements passing",
        *large_journals([int(c) for c in args.large.split(",") if c], work),
    ])
    print(table)
    if args.markdown_out:
        Path(args.markdown_out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
