"""Benchmark of `receipts verify --once` against a naive one-call-per-receipt web3 loop, same run.

N real EIP-3009 settlements on anvil (signed authorizations, sent as `transferWithAuthorization` by the
facilitator account), recorded as receipts through the recorder's own capture code (the payment
header and the PAYMENT-RESPONSE of each call) and folded into the tables, as a running recorder keeps
them (its fold runs every 2 s: the pass reads the tables and a tail of the last seconds), then:
- `receipts verify --once` (batched JSON-RPC, chunked): receipts/s and peak RSS, at N/10, N/2 and N
  (the median of 3 runs, each on a fresh copy of the recorded data: a pass writes its checks); for
  information, also once at N before the fold (every event in the tail, folded by the pass's connection:
  its memory grows with the journal, which the fold keeps short);
- a naive loop: one web3 `get_transaction_receipt` per receipt (the head once), the same matching, also
  timed as a process of its own from start to exit (importing web3, reading the receipts), median of 3.
Prints a markdown table. Talks only to 127.0.0.1.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from receipts.storage import config as cfg
from receipts.storage import fold
from testbed.bulk import record, settle_many
from testbed.chain import deploy_token, fund
from testbed.node import start_anvil
from receipts.verifier.evidence import settlement

BIN = Path(sys.executable).parent


def say(msg: str) -> None:
    print(f"bench-verify: {msg}", file=sys.stderr, flush=True)


RUNS = 3  # each timing is the median of this many runs (a pass changes its data: each run gets a fresh copy)


def median_verify(data: Path, config: Path, runs: int = RUNS) -> tuple[float, int, str]:
    """timed_verify() of `runs` fresh copies of `data`: the median seconds, the largest peak RSS, and what
    the last run printed."""
    results = []
    for i in range(runs):
        copy = data.with_name(f"{data.name}-run{i}")
        shutil.copytree(data, copy)
        results.append(timed_verify(copy, config))
        shutil.rmtree(copy)
    return statistics.median(r[0] for r in results), max(r[1] for r in results), results[-1][2]


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


def naive(url: str, data: Path, required: int, runs: int = RUNS) -> tuple[float, int]:
    """The naive loop as a process of its own, start to exit, as `receipts verify --once` is timed:
    (median seconds of `runs`, settlements it found passing)."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--naive", url, str(data), str(required)], capture_output=True,
                             text=True, timeout=3600, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times), int(out.stdout.split()[-1])


def naive_loop(url: str, data: Path, required: int) -> int:
    """One web3 call per receipt (and the head once), the same evidence matching; the number passed."""
    from receipts.storage import db
    from web3 import Web3

    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"proxies": {"http": None, "https": None}}))
    with db.connect(data) as con:
        rows = con.execute("SELECT payment_hash, payer, pay_to, asset, signed_amount, scheme, kind, nonce "
                           "FROM receipts WHERE payment_hash IS NOT NULL").fetchall()
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
    return passed


def large_journals(counts: list[int], work: Path) -> list[str]:
    """Table lines: one pass over synthetic journals of `counts` calls folded into the tables, every kind
    of call (x402, OpenGradient, unpaid) and a check history; no node configured, so nothing is settled."""
    if not counts:
        return []
    from testbed.synthetic import generate

    config = work / "no-nodes.yaml"
    config.write_text(json.dumps({"networks": {}}))
    lines = ["", "A pass at scale (both passes; no node configured: the cost of reading and deciding):", "",
             "| synthetic journal | receipts checked | seconds | peak RSS (MiB) |", "|---|---:|---:|---:|"]
    peaks = []
    for calls in counts:
        data = work / f"synthetic-{calls}"
        say(f"receipts verify --once over a synthetic journal of {calls:,} calls…")
        generate(data, calls, seed=1)
        fold.fold(data, wait=True)  # as a running recorder keeps it: the pass reads the tables, not the journal
        seconds, rss, text = median_verify(data, config)
        seen = int(text.split(" receipts checked", 1)[0].rsplit(" ", 1)[-1])
        peaks.append(rss)
        lines.append(f"| {calls:,} calls, folded | {seen:,} | {seconds:.2f} | {rss / 1024:.0f} |")
    if len(counts) > 1:
        ratio = peaks[-1] / peaks[0]
        lines += ["", f"- peak RSS at {counts[-1]:,} vs {counts[0]:,} calls: {ratio:.2f}× (goal ≤ 1.25×: "
                      f"{'goal met' if ratio <= 1.25 else 'goal missed'}). Under ~16,000 rows a table is one row "
                      "group, read whole by each part's query: flatness shows from there on."]
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--naive"]:  # (the naive loop's own process)
        print(naive_loop(argv[1], Path(argv[2]), int(argv[3])))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--receipts", type=int, default=10_000)
    ap.add_argument("--large", default="30000,300000",
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
            if count == n:  # for information: every event still in the journal, folded by the pass's connection
                say(f"receipts verify --once over {count} receipts, the journal not folded…")
                unfolded = median_verify(data, config, runs=1)
            fold.fold(data, wait=True)  # as a running recorder keeps it: the pass reads the tables and a short tail
            say(f"receipts verify --once over {count} receipts…")
            seconds, rss, text = median_verify(data, config)
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
        f"| naive web3 loop (one call per receipt; a process, start to exit) | {n:,} | {naive_s:.2f} | {base:,.0f} | – |",
        f"| (for information) `receipts verify --once`, no fold yet: every event in the tail | {n:,} | "
        f"{unfolded[0]:.2f} | {n / unfolded[0]:,.0f} | {unfolded[1] / 1024:.0f} |",
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
