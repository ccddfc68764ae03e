"""Benchmark of `receipts verify --once` on Solana receipts against a naive loop (one RPC call per receipt
and question), same run.

N x402 `exact` SVM payments land on a local SVM (testbed/solana_node.py, in a process of its own): each a
v0 transaction (compute budget, TransferChecked, a memo) the payer signs and the fee payer co-signs, as
the x402 client and facilitator build it. They are recorded as receipts through the recorder's own
capture code (the PAYMENT-SIGNATURE carrying the partly signed transaction, the PAYMENT-RESPONSE its
signature), all finalized. Then:
- `receipts verify --once`: receipts/s and peak RSS at N/4 and N (memory flat: the ratio of the two), the
  median of 3 runs, each on a fresh copy of the recorded data;
- the naive loop, a process of its own: for each receipt one `getSignatureStatuses` and one
  `getTransaction` call, and the same judgment (verifier/solana.py `mismatches`); the median of 3.
Prints a markdown table. Talks only to 127.0.0.1.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
NETWORK = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"  # (devnet's id; the RPC URL points at the local node)
PRICE = 1000


def say(msg: str) -> None:
    print(f"bench-solana: {msg}", file=sys.stderr, flush=True)


# ---- the chain: a child process that lands N payments and serves JSON-RPC until it is stopped ----------
def serve(n: int, out: Path) -> None:
    from solders.hash import Hash
    from solders.instruction import AccountMeta, Instruction
    from solders.keypair import Keypair
    from solders.message import MessageV0, to_bytes_versioned
    from solders.pubkey import Pubkey
    from solders.signature import Signature
    from solders.transaction import VersionedTransaction

    from testbed.solana_node import MEMO_PROGRAM, TOKEN_PROGRAM, SolanaNode, ata_address

    budget = Pubkey.from_string("ComputeBudget111111111111111111111111111111")
    node = SolanaNode().start()
    fee_payer, payer, payee, authority = Keypair(), Keypair(), Keypair().pubkey(), Keypair()
    node.airdrop(fee_payer.pubkey(), 10**12)
    mint = node.create_mint(authority.pubkey())
    node.mint_to(mint, authority, payer.pubkey(), PRICE * n * 2)
    node.create_ata(payee, mint)
    source, destination = ata_address(payer.pubkey(), mint, TOKEN_PROGRAM), ata_address(payee, mint, TOKEN_PROGRAM)
    payments = []
    for i in range(n):
        ixs = [Instruction(budget, bytes([2]) + (20_000).to_bytes(4, "little"), []),
               Instruction(budget, bytes([3]) + (1).to_bytes(8, "little"), []),
               Instruction(TOKEN_PROGRAM, bytes([12]) + PRICE.to_bytes(8, "little") + bytes([6]),
                           [AccountMeta(source, False, True), AccountMeta(mint, False, False),
                            AccountMeta(destination, False, True), AccountMeta(payer.pubkey(), True, False)]),
               Instruction(MEMO_PROGRAM, f"bench-{i:08d}".encode(), [])]
        message = MessageV0.try_compile(fee_payer.pubkey(), ixs, [], Hash.from_string(str(node.svm.latest_blockhash())))
        signed = to_bytes_versioned(message)
        mine = payer.sign_message(signed)
        partial = VersionedTransaction.populate(message, [Signature.default(), mine])
        full = VersionedTransaction.populate(message, [fee_payer.sign_message(signed), mine])
        if node.submit(full) is None:
            raise SystemExit(f"payment {i} did not land")
        payments.append({"transaction": base64.b64encode(bytes(partial)).decode(), "signature": str(full.signatures[0]),
                         "payer": str(payer.pubkey())})
        if i % 500 == 499:
            node.advance(1)
    node.advance(64)  # every one finalized
    out.write_text(json.dumps({"url": node.url, "mint": str(mint), "pay_to": str(payee),
                               "fee_payer": str(fee_payer.pubkey()), "payments": payments}))
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        node.stop()


# ---- recording: the recorder's own capture code ------------------------------------------------------
def record(data: Path, chain: dict, payments: list[dict]) -> None:
    from receipts.storage import config as cfg
    from testbed.bulk import record_paid_calls
    from tests.support import x402_wire as W

    accepted = {"scheme": "exact", "network": NETWORK, "asset": chain["mint"], "amount": str(PRICE),
                "payTo": chain["pay_to"], "maxTimeoutSeconds": 60, "extra": {"feePayer": chain["fee_payer"]}}
    record_paid_calls(data, [(W.b64json({"x402Version": 2, "accepted": accepted, "payload": {"transaction": p["transaction"]}}),
                              W.b64json(W.settlement(p["signature"], p["payer"], NETWORK))) for p in payments],
                      cfg.load(None))


# ---- the two ways to verify --------------------------------------------------------------------------
NAIVE = """
import json, sys, time, urllib.request
from receipts.verifier import solana as V
chain = json.load(open(sys.argv[1])); rows = json.load(open(sys.argv[2]))
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def call(method, params):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    req = urllib.request.Request(chain["url"], body, {"Content-Type": "application/json"})
    return json.loads(opener.open(req, timeout=30).read())["result"]
passed = 0
for r in rows:
    status = call("getSignatureStatuses", [[r["payment_hash"]], {"searchTransactionHistory": True}])["value"][0]
    tx = call("getTransaction", [r["payment_hash"], {"encoding": "jsonParsed", "commitment": "confirmed",
                                                      "maxSupportedTransactionVersion": 0}])
    ok = status and status.get("confirmationStatus") == "finalized" and not V.mismatches(r, tx, (chain["fee_payer"],))
    passed += bool(ok)
assert passed == len(rows), (passed, len(rows))
"""


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (MiB) of a command run to completion."""
    t = time.monotonic()
    out = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True, timeout=3600, env=env)
    wall = time.monotonic() - t
    if out.returncode != 0:
        raise SystemExit(f"bench-solana: {cmd[:3]} failed:\n{out.stderr[-2000:]}")
    return wall, int(out.stderr.strip().splitlines()[-1]) // 1024


def verify_runs(data: Path, config: Path, runs: int, work: Path) -> tuple[float, int, int]:
    """Median wall seconds and peak RSS of `receipts verify --once`, and how many receipts it passed."""
    walls, rss = [], []
    for k in range(runs):
        copy = work / f"run{k}"
        shutil.copytree(data, copy)
        wall, peak = timed([str(BIN / "receipts"), "verify", "--once", "--config", str(config), "--data", str(copy)])
        walls.append(wall)
        rss.append(peak)
        if k < runs - 1:
            shutil.rmtree(copy)
    out = subprocess.run([str(BIN / "receipts"), "sql", "--csv", "--data", str(copy),
                          "SELECT count(*) AS n FROM receipts WHERE proof_status = 'passed'"],
                         capture_output=True, text=True, check=True, timeout=600)
    shutil.rmtree(copy)
    return statistics.median(walls), statistics.median(rss), int(out.stdout.split()[1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--receipts", type=int, default=2000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--serve", nargs=2, metavar=("N", "OUT"), help=argparse.SUPPRESS)  # (the chain's process)
    args = p.parse_args(argv)
    if args.serve:
        serve(int(args.serve[0]), Path(args.serve[1]))
        return 0
    from receipts.addon import solana as sol

    work = Path(tempfile.mkdtemp(prefix="bench-solana-"))
    info = work / "chain.json"
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    say(f"landing {args.receipts:,} payments on the local SVM")
    chain_proc = subprocess.Popen([sys.executable, __file__, "--serve", str(args.receipts), str(info)], cwd=ROOT, env=env)
    try:
        for _ in range(3600):
            if info.exists() and info.stat().st_size:
                break
            if chain_proc.poll() is not None:
                raise SystemExit("bench-solana: the chain's process exited")
            time.sleep(0.5)
        chain = json.loads(info.read_text())
        config = work / "receipts.yaml"
        config.write_text(json.dumps({"networks": {NETWORK: {"rpc": chain["url"], "facilitators": [chain["fee_payer"]]}}}))
        lines = ["| receipts | `receipts verify --once` | receipts/s | peak RSS | naive loop | speed-up |",
                 "|---:|---:|---:|---:|---:|---:|"]
        rss_at = {}
        for n in (args.receipts // 4, args.receipts):
            data = work / f"data{n}"
            record(data, chain, chain["payments"][:n])
            say(f"{n:,} receipts: verify ×{args.runs}")
            wall, rss, passed = verify_runs(data, config, args.runs, work)
            if passed != n:
                raise SystemExit(f"bench-solana: verify passed {passed} of {n}")
            payee = sol.ata_address(chain["pay_to"], chain["mint"], sol.TOKEN_PROGRAM)
            rows = [{"receipt_id": str(i), "payer": p["payer"], "pay_to": chain["pay_to"], "asset": chain["mint"],
                     "signed_amount": PRICE, "memo": f"bench-{i:08d}", "payment_hash": p["signature"],
                     "payee_token_account": payee} for i, p in enumerate(chain["payments"][:n])]
            rows_file = work / "rows.json"
            rows_file.write_text(json.dumps(rows))
            say(f"{n:,} receipts: the naive loop ×{args.runs}")
            naive = statistics.median(timed([sys.executable, "-c", NAIVE, str(info), str(rows_file)], env)[0]
                                      for _ in range(args.runs))
            rss_at[n] = rss
            lines.append(f"| {n:,} | {wall:.2f} s | {n / wall:,.0f} | {rss} MiB | {naive:.2f} s | {naive / wall:.1f}× |")
            shutil.rmtree(data)
        small, big = sorted(rss_at)
        lines += ["", f"Memory flat: peak RSS at {big:,} receipts is {rss_at[big] / rss_at[small]:.2f}× that at {small:,}."]
        print("\n".join(lines))
    finally:
        chain_proc.terminate()
        chain_proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
