"""Benchmark of `receipts verify --once` on x402 payment-channel (`batch-settlement`) receipts against a naive
loop (one RPC round trip per receipt and question), same run.

The chain is anvil with the test bed's channel contracts at the SDK's addresses (testbed/channels.py) and
its TestUSDC. One payer opens N / 10 channels (distinct salts, so distinct ids; `--per-channel`), each with
a real deposit: the payer's ERC-3009 ReceiveWithAuthorization made by the SDK client's own payload builder,
sent by the facilitator as `deposit(config, amount, collector, collectorData)` through the ERC-3009 deposit
collector, as the SDK facilitator sends it. Each channel then pays its calls with cumulative vouchers signed
by the payer (EIP-712), each call charged at most the price; then the receiver authorizer's claim batch
(the SDK's `sign_claim_batch`) claims what every channel was charged, 20 channels per `claimWithSignature`
transaction (`--claim-batch`; the SDK's channel manager puts up to 100 in one). The calls are recorded
through the recorder's own capture code, each a PAYMENT-SIGNATURE and a PAYMENT-RESPONSE in the SDK's wire
shape (/work/notes/channel-wire.md), the channels' calls interleaved in time. Then:
- `receipts verify --once`: receipts/s and peak RSS at N/4 and N (memory flat: the ratio of the two), the
  median of 3 runs, each on a fresh copy of the recorded data; after each run every receipt must be
  `passed`, its payment hash the claim transaction of its channel (else the bench fails);
- the naive loop, a process of its own (web3, one request at a time): the head once, then for each receipt
  an `eth_call channels(id)` at the confirmed block, the `eth_getTransactionReceipt` of its deposit, an
  `eth_getLogs` of its channel's `Claimed` events and the `eth_getTransactionByHash` of each claim, judged
  as the verifier judges (verifier/channels.py `claims_in`, `call_checks`, `verdict`); the median of 3.
Prints a markdown table. Talks only to 127.0.0.1.
"""
from __future__ import annotations

import argparse
import json
import os
import random
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
CHAIN = 8453
NETWORK = f"eip155:{CHAIN}"
PRICE = 10_000        # the most one call may cost (each voucher raises the signed cap by it)
PER_CHANNEL = 10      # calls per channel (default)
CLAIM_BATCH = 20      # channels per claimWithSignature transaction (default; the SDK's channel manager: up to 100)
RESOURCE = {"url": "http://127.0.0.1:8000/v1/chat/completions", "description": "Chat completion (bench)",
            "mimeType": "application/json"}


def say(msg: str) -> None:
    print(f"bench-channels: {msg}", file=sys.stderr, flush=True)


# ---- the channels: payloads signed by the payer (SDK builders, EIP-712 vouchers) -----------------------
def requirements(token: str):
    from x402.schemas import PaymentRequirements

    from testbed.channels import AUTHORIZER, WITHDRAW_DELAY
    from testbed.chain import PAYEE

    return PaymentRequirements(scheme="batch-settlement", network=NETWORK, asset=token, amount=str(PRICE),
                               pay_to=PAYEE.address, max_timeout_seconds=300,
                               extra={"name": "USD Coin", "version": "2", "receiverAuthorizer": AUTHORIZER.address,
                                      "withdrawDelay": WITHDRAW_DELAY, "minDeposit": str(10 * PRICE)})


def sign_channels(token: str, count: int, per_channel: int, seed: int = 1) -> list[dict]:
    """`count` channels of the test bed's payer: each its SDK deposit payload (enough for every call at the
    price) and `per_channel` calls (charge, voucher) with cumulative caps (the charged amount before the call
    + the price)."""
    from eth_account import Account
    from x402.mechanisms.evm.batch_settlement.client.eip3009 import create_batch_settlement_eip3009_deposit_payload
    from x402.mechanisms.evm.batch_settlement.types import ChannelConfig
    from x402.mechanisms.evm.signers import EthAccountSigner

    from receipts.storage import channels
    from testbed.channels import AUTHORIZER, WITHDRAW_DELAY
    from testbed.chain import PAYEE, PAYER

    payer, rng, req = Account.from_key(PAYER.private_key), random.Random(seed), requirements(token)
    out = []
    for c in range(count):
        config = ChannelConfig(payer=PAYER.address, payer_authorizer=PAYER.address, receiver=PAYEE.address,
                               receiver_authorizer=AUTHORIZER.address, token=token, withdraw_delay=WITHDRAW_DELAY,
                               salt="0x" + (c + 1).to_bytes(32, "big").hex())
        deposit = create_batch_settlement_eip3009_deposit_payload(EthAccountSigner(payer), req, config,
                                                                  per_channel * PRICE, PRICE)
        cid, charged, calls = deposit.voucher.channel_id.lower(), 0, []
        for k in range(per_channel):
            cap, charge = charged + PRICE, rng.randint(PRICE // 10, PRICE)
            signature = deposit.voucher.signature if k == 0 else (  # (the deposit's own voucher is the SDK's)
                "0x" + payer.unsafe_sign_hash(channels.voucher_digest(CHAIN, cid, cap)).signature.hex())
            charged += charge
            calls.append({"charge": charge, "charged": charged, "voucher": {
                "channelId": cid, "maxClaimableAmount": str(cap), "signature": signature}})
        out.append({"id": cid, "config": config, "deposit": deposit, "calls": calls})
    return out


# ---- the chain: real deposits and claims, sent in batches ----------------------------------------------
def send_all(w3, sender, txs: list[dict], timeout: float = 120.0) -> list[str]:
    """Sign `txs` (to, data, gas) from `sender`, send them in one JSON-RPC batch (anvil mines each as it
    comes), then wait for every receipt; each must have succeeded. Returns the tx hashes."""
    from eth_account import Account

    nonce, price = w3.eth.get_transaction_count(sender.address, "pending"), w3.eth.gas_price * 2
    raws = [Account.sign_transaction({**tx, "nonce": nonce + i, "gasPrice": price, "chainId": CHAIN, "value": 0},
                                     sender.private_key).raw_transaction for i, tx in enumerate(txs)]
    hashes = [a["result"] for a in _batch(w3, [("eth_sendRawTransaction", ["0x" + raw.hex()]) for raw in raws])]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        receipts = [a["result"] for a in _batch(w3, [("eth_getTransactionReceipt", [h]) for h in hashes])]
        if None in receipts:
            time.sleep(0.1)
            continue
        failed = [h for h, r in zip(hashes, receipts) if int(r["status"], 16) != 1]
        if failed:
            raise SystemExit(f"bench-channels: {len(failed)} transactions reverted, e.g. {failed[0]}")
        return hashes
    raise SystemExit(f"bench-channels: {len(hashes)} transactions not mined within {timeout:.0f} s")


def _batch(w3, calls: list[tuple[str, list]]) -> list[dict]:
    """One JSON-RPC batch through web3's provider (raw answers); a refused call fails the bench."""
    answers = w3.provider.make_batch_request(calls)
    if any("error" in a for a in answers):
        raise SystemExit(f"bench-channels: anvil refused a call: {next(a['error'] for a in answers if 'error' in a)}")
    return answers


def deposit_all(w3, chans: list[dict]) -> None:
    """Each channel's deposit, as the SDK facilitator sends it (ERC-3009 through the deposit collector)."""
    from x402.mechanisms.evm.batch_settlement.facilitator.deposit_eip3009 import (
        build_eip3009_deposit_collector_data, get_eip3009_deposit_collector_address)
    from x402.mechanisms.evm.batch_settlement.facilitator.utils import to_contract_channel_config

    from testbed.channels import BATCH_SETTLEMENT, channel_abi
    from testbed.chain import FACILITATOR

    contract = w3.eth.contract(address=BATCH_SETTLEMENT, abi=channel_abi())
    txs = [{"to": BATCH_SETTLEMENT, "data": contract.encode_abi("deposit", [
        to_contract_channel_config(c["config"]), int(c["deposit"].deposit.amount),
        get_eip3009_deposit_collector_address(), build_eip3009_deposit_collector_data(c["deposit"])])}
        for c in chans]
    gas = int(w3.eth.estimate_gas({**txs[0], "from": FACILITATOR.address}) * 1.3)
    for c, h in zip(chans, send_all(w3, FACILITATOR, [{**t, "gas": gas} for t in txs])):
        c["deposit_tx"] = h


def claim_all(w3, chans: list[dict], per_tx: int) -> None:
    """Claim what each channel was charged, up to its last voucher: `claimWithSignature`, `per_tx`
    channels a transaction, signed by the receiver authorizer (the SDK's own claim batch)."""
    from x402.mechanisms.evm.batch_settlement.authorizer_signer import LocalAuthorizerSigner, sign_claim_batch
    from x402.mechanisms.evm.batch_settlement.facilitator.claim import build_voucher_claim_args
    from x402.mechanisms.evm.batch_settlement.types import VoucherClaim

    from testbed.channels import AUTHORIZER, BATCH_SETTLEMENT, channel_abi
    from testbed.chain import FACILITATOR

    contract = w3.eth.contract(address=BATCH_SETTLEMENT, abi=channel_abi())
    authorizer, txs = LocalAuthorizerSigner(AUTHORIZER.private_key), []
    for lo in range(0, len(chans), per_tx):
        lasts = [c["calls"][-1] for c in chans[lo:lo + per_tx]]
        claims = [VoucherClaim(channel=c["config"], max_claimable_amount=last["voucher"]["maxClaimableAmount"],
                               signature=last["voucher"]["signature"], total_claimed=str(last["charged"]))
                  for c, last in zip(chans[lo:lo + per_tx], lasts)]
        sig = bytes.fromhex(sign_claim_batch(authorizer, claims, NETWORK).removeprefix("0x"))
        tx = {"to": BATCH_SETTLEMENT, "data": contract.encode_abi("claimWithSignature",
                                                                  [build_voucher_claim_args(claims), sig])}
        txs.append({**tx, "gas": int(w3.eth.estimate_gas({**tx, "from": FACILITATOR.address}) * 1.3)})
    for i, h in enumerate(send_all(w3, FACILITATOR, txs)):
        for c in chans[i * per_tx:(i + 1) * per_tx]:
            c["claim_tx"] = h


def open_channels(anvil, count: int, per_channel: int, claim_batch: int) -> tuple[str, list[dict]]:
    from testbed import chain
    from testbed.channels import install_contracts

    install_contracts(anvil.url)
    token = chain.deploy_token(anvil.url)
    chain.mint(anvil.url, token, chain.PAYER.address, count * per_channel * PRICE)
    chans = sign_channels(token, count, per_channel)
    w3 = chain.make_web3(anvil.url)
    deposit_all(w3, chans)
    claim_all(w3, chans, claim_batch)
    return token, chans


# ---- recording: the recorder's own capture code, the SDK's wire -----------------------------------------
def in_time_order(chans: list[dict]):
    """(k, channel, call): the k-th call of every channel, then the (k+1)-th (a channel's calls in order;
    channels interleaved), as they are recorded."""
    for k in range(max(len(c["calls"]) for c in chans)):
        for c in chans:
            if k < len(c["calls"]):
                yield k, c, c["calls"][k]


def wire(token: str, chans: list[dict]) -> list[tuple[str, str]]:
    """(PAYMENT-SIGNATURE, PAYMENT-RESPONSE) of every call, in time order."""
    from tests.support import x402_wire as W
    from testbed.chain import PAYER

    accepted = requirements(token).model_dump(by_alias=True)
    out = []
    for k, c, call in in_time_order(chans):
        deposit, balance = k == 0, c["deposit"].deposit.amount
        payload = {"type": "deposit" if deposit else "voucher", "channelConfig": c["config"].to_dict(),
                   "voucher": call["voucher"]}
        if deposit:
            payload["deposit"] = c["deposit"].to_dict()["deposit"]
        state = {"channelId": c["id"], "balance": balance, "totalClaimed": "0", "withdrawRequestedAt": 0,
                 "refundNonce": "0", "chargedCumulativeAmount": str(call["charged"])}
        answer = {"success": True, "payer": PAYER.address if deposit else PAYER.address.lower(),  # (as the SDK says)
                  "transaction": c["deposit_tx"] if deposit else "", "network": NETWORK,
                  "amount": balance if deposit else "",
                  "extra": {"channelState": state, "chargedAmount": str(call["charge"])}}
        out.append((W.b64json({"x402Version": 2, "payload": payload, "accepted": accepted, "resource": RESOURCE}),
                    W.b64json(answer)))
    return out


def record(data: Path, token: str, chans: list[dict]) -> None:
    from receipts.storage import config as cfg
    from testbed.bulk import record_paid_calls

    record_paid_calls(data, wire(token, chans), cfg.load(None))


def naive_rows(token: str, chans: list[dict]) -> list[dict]:
    """Each call as the verifier's query reads it (verifier/channels.py EXCHANGES), the signer as capture
    recovered it, in the same time order as recorded."""
    from receipts.addon import eip712
    from receipts.storage import channels
    from testbed.chain import PAYEE, PAYER

    rows = []
    for k, c, call in in_time_order(chans):
        v, rid, deposit = call["voucher"], f"{len(rows):08d}", int(c["deposit"].deposit.amount) if k == 0 else None
        rows.append({
            "receipt_id": rid, "logical_id": rid, "paid_at": len(rows) * 0.001,
            "kind": "channel_deposit" if k == 0 else "channel_voucher", "channel_id": c["id"], "network": NETWORK,
            "payer": PAYER.address, "pay_to": PAYEE.address, "asset": token, "payer_authorizer": PAYER.address,
            "signer": eip712.recover(channels.voucher_digest(CHAIN, c["id"], v["maxClaimableAmount"]), v["signature"]),
            "signer_error": None, "voucher_amount": int(v["maxClaimableAmount"]), "deposit_amount": deposit,
            "refund_amount": None, "success": True, "charged": call["charge"], "charged_cumulative": call["charged"],
            "channel_tx": c["deposit_tx"] if k == 0 else None, "channel_amount": deposit, "error_reason": None,
            "status": 200, "in_part": True})
    return rows


# ---- the naive loop: its own process, one request per receipt and question ------------------------------
def naive_loop(config: Path, rows_file: Path) -> int:
    """The verifier's judgment, each receipt on its own: the number that pass."""
    from receipts.storage import config as cfg
    from receipts.verifier import channels as V
    from testbed.chain import make_web3
    from testbed.channels import event_topics

    settings = cfg.load(str(config))
    net, rows = settings.network(NETWORK), json.loads(rows_file.read_text())
    w3, claimed_topic = make_web3(net.rpc), event_topics()["Claimed"]

    def call(method: str, params: list):
        answer = w3.provider.make_request(method, params)
        if "error" in answer:
            raise SystemExit(f"naive loop: {method}: {answer['error']}")
        return answer["result"]

    by_channel: dict[str, list[dict]] = {}
    for x in rows:
        by_channel.setdefault(x["channel_id"], []).append(x)
    for xs in by_channel.values():  # (rows come in the verifier's order: by channel, then time)
        V._running(xs)
    head = int(call("eth_blockNumber", []), 16)  # once: the loop's questions are per receipt
    passed = 0
    for x in rows:
        cid, xs = x["channel_id"], by_channel[x["channel_id"]]
        chain = read_one(call, x, head, net, claimed_topic)
        facts = V._channel_facts(xs)
        status, resolution, _ = V.verdict(V.call_checks(x, xs, facts, chain, settings), facts, chain.claimed[cid])
        passed += status == "passed" and resolution is None
    return passed


def read_one(call, x: dict, head: int, net, claimed_topic: str):
    """What the node says of one receipt's channel, a request per question (verifier/channels.py `Chain`)."""
    from receipts.verifier import channels as V

    cid = x["channel_id"]
    chain = V.Chain(head=head, confirmed=max(0, head - max(1, net.confirmations) + 1))
    state = call("eth_call", [{"to": V.CONTRACT, "data": "0x" + (V.CHANNELS + bytes.fromhex(cid[2:])).hex()},
                              hex(chain.confirmed)])
    chain.claimed[cid] = int(state[66:130] or "0", 16)  # (balance, totalClaimed)
    if x["channel_tx"]:
        chain.receipts[x["channel_tx"]] = call("eth_getTransactionReceipt", [x["channel_tx"]])
    logs = call("eth_getLogs", [{"address": V.CONTRACT, "fromBlock": hex(max(0, head - net.scan_blocks)),
                                 "toBlock": hex(chain.confirmed), "topics": [claimed_topic, cid]}])
    for tx, block in sorted({(lg["transactionHash"], int(lg["blockNumber"], 16)) for lg in logs}, key=lambda t: t[1]):
        body = call("eth_getTransactionByHash", [tx])
        chain.claims.setdefault(cid, []).extend(
            (block, tx, total) for c, total in V.claims_in(bytes.fromhex(body["input"][2:]), CHAIN) if c == cid)
    return chain


# ---- timing ----------------------------------------------------------------------------------------------
def timed(cmd: list[str], env: dict) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (MiB) and stdout of a command run to completion."""
    t = time.monotonic()
    out = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True, timeout=1800, env=env)
    wall = time.monotonic() - t
    if out.returncode != 0:
        raise SystemExit(f"bench-channels: {cmd[:3]} failed:\n{out.stderr[-2000:]}")
    return wall, int(out.stderr.strip().splitlines()[-1]) // 1024, out.stdout


def verdicts(data: Path, env: dict) -> list[dict]:
    out = subprocess.run([str(BIN / "receipts"), "sql", "--json", "--data", str(data),
                          "SELECT proof_status, count(*) AS n, count(payment_hash) AS hashed, "
                          "list(DISTINCT channel_id || ' ' || payment_hash) AS pairs FROM receipts GROUP BY ALL"],
                         capture_output=True, text=True, timeout=600, env=env)
    if out.returncode != 0:
        raise SystemExit(f"bench-channels: receipts sql failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)


def check_passed(data: Path, chans: list[dict], n: int, env: dict) -> None:
    """Every receipt `passed`, its payment hash the claim that covered its channel; else fail loudly."""
    rows = verdicts(data, env)
    counts = {r["proof_status"]: r["n"] for r in rows}
    if counts != {"passed": n}:
        raise SystemExit(f"bench-channels: after `receipts verify --once`, {n:,} receipts are {counts}, not all passed")
    pairs, want = set(rows[0]["pairs"]), {f"{c['id']} {c['claim_tx']}" for c in chans}
    if rows[0]["hashed"] != n or pairs != want:
        raise SystemExit(f"bench-channels: {n - rows[0]['hashed']} receipts without a payment hash, "
                         f"{len(pairs ^ want)} (channel, claim) pairs not the channels' claims")


def verify_runs(data: Path, config: Path, chans: list[dict], n: int, runs: int, work: Path,
                env: dict) -> tuple[float, int]:
    """Median wall seconds and peak RSS of `receipts verify --once`, each run on a fresh copy."""
    walls, rss = [], []
    for k in range(runs):
        copy = work / f"run{k}"
        shutil.copytree(data, copy)
        wall, peak, _ = timed([str(BIN / "receipts"), "verify", "--once", "--config", str(config),
                               "--data", str(copy)], env)
        walls.append(wall)
        rss.append(peak)
        check_passed(copy, chans, n, env)
        shutil.rmtree(copy)
    return statistics.median(walls), statistics.median(rss)


def measure(n: int, token: str, chans: list[dict], config: Path, args, work: Path, env: dict) -> tuple:
    """(wall, rss, naive wall) at n receipts: those of the first n / per_channel channels."""
    subset = chans[:n // args.per_channel]
    data = work / f"data{n}"
    record(data, token, subset)
    say(f"{n:,} receipts: verify ×{args.runs}")
    wall, rss = verify_runs(data, config, subset, n, args.runs, work, env)
    rows_file = work / "rows.json"
    rows_file.write_text(json.dumps(naive_rows(token, subset)))
    say(f"{n:,} receipts: the naive loop ×{args.runs}")
    naive = []
    for _ in range(args.runs):
        t, _, out = timed([sys.executable, __file__, "--naive", str(config), str(rows_file)], env)
        if int(out.split()[-1]) != n:
            raise SystemExit(f"bench-channels: the naive loop passed {out.split()[-1]} of {n}")
        naive.append(t)
    shutil.rmtree(data)
    return wall, rss, statistics.median(naive)


def table(args, token: str, chans: list[dict], config: Path, work: Path, env: dict) -> list[str]:
    lines = ["| receipts | channels | `receipts verify --once` | receipts/s | peak RSS | naive loop | receipts/s "
             "| speed-up |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rss_at = {}
    for n in (args.calls // 4, args.calls):
        wall, rss, naive = measure(n, token, chans, config, args, work, env)
        rss_at[n] = rss
        lines.append(f"| {n:,} | {n // args.per_channel:,} | {wall:.2f} s | {n / wall:,.0f} | {rss} MiB "
                     f"| {naive:.2f} s | {n / naive:,.0f} | {naive / wall:.1f}× |")
    small, big = sorted(rss_at)
    return lines + ["", f"Memory flat: peak RSS at {big:,} receipts is {rss_at[big] / rss_at[small]:.2f}× that at "
                        f"{small:,}. Every receipt `passed` after each run, its payment hash its channel's claim."]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=2000, help="receipts (a multiple of 4 x --per-channel)")
    p.add_argument("--per-channel", type=int, default=PER_CHANNEL, help="calls per channel")
    p.add_argument("--claim-batch", type=int, default=CLAIM_BATCH, help="channels per claim transaction")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--naive", nargs=2, metavar=("CONFIG", "ROWS"), help=argparse.SUPPRESS)  # (its own process)
    args = p.parse_args(argv)
    if args.naive:
        print(naive_loop(Path(args.naive[0]), Path(args.naive[1])))
        return 0
    if args.per_channel <= 0 or args.claim_batch <= 0 or args.calls <= 0 or args.calls % (args.per_channel * 4):
        p.error("--calls must be a positive multiple of 4 x --per-channel")
    from testbed.node import start_anvil

    started, load, work = time.monotonic(), os.getloadavg()[0], Path(tempfile.mkdtemp(prefix="bench-channels-"))
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    try:
        with start_anvil(CHAIN) as anvil:
            count = args.calls // args.per_channel
            say(f"opening {count:,} channels of {args.per_channel} calls on anvil (deposits, then claims)")
            token, chans = open_channels(anvil, count, args.per_channel, args.claim_batch)
            say(f"channels open and claimed in {time.monotonic() - started:.1f} s")
            config = work / "receipts.yaml"
            config.write_text(json.dumps({"networks": {NETWORK: {"rpc": anvil.url, "confirmations": 1}}}))
            lines = table(args, token, chans, config, work, env)
        print("\n".join(lines + [f"Total {time.monotonic() - started:.0f} s ({args.claim_batch} channels per claim "
                                 f"transaction); load average (1 min) at start {load:.2f}, at the end "
                                 f"{os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs."]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
