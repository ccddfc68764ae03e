"""Payment channels (x402 `batch-settlement`): deposits, vouchers, claims and refunds, against the chain.

A channel is opened by a deposit into the channel contract (storage/channels.py); each call then sends a
cumulative voucher signed by the payer, and its answer says what the call was charged (`chargedAmount`)
and what the channel has been charged so far (`chargedCumulativeAmount`). Later, the payee claims on
chain up to a voucher (the contract books the channel's `totalClaimed`), and the payer gets back what
is left. Every call paid from a channel is verified here (the x402 pass in verify.py leaves them alone),
one `check` event per receipt and pass, only on change:
- `signature`: the voucher recovers (at capture) to the payer, or to the payerAuthorizer it named;
- `voucher`: no voucher of the channel promises less than an earlier one did (a refund's excepted), nor
  less than the channel had been charged before it (`voucher_backwards`);
- `charge`: the server took the voucher and said what the call cost (else `payment_refused`, or
  `not_charged` when it answered without taking it);
- `deposit` (a deposit call): its transaction succeeded and moved the deposited amount of the token
  into the channel contract (the token's own `Transfer` log);
- `channel_claim`: the channel's `totalClaimed` (`channels(id)` read at the newest block with the
  network's confirmations) covers what the channel had been charged up to and including this call. The
  claim transaction that first covered it (the contract's logs naming the channel, their calldata
  decoded with the SDK's ABI) is the receipt's `payment_hash`. Not claimed yet: `pending (channel_open)`;
- `refund` (a refund call): its transaction moved back to the payer what was deposited less what was
  claimed (or the amount the refund asked for).
The verdict is `failed` if a check failed, `pending` while one is pending, else `passed`; it is `risky`
when the chain shows the payee claimed more than any voucher the recorder saw (`claim_above_vouchers`:
one was signed outside the proxy) or more than the answers charged (`claim_above_charges`).
Read from the network's first endpoint (trust `single-node`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import NotRequired, TypedDict, cast

from eth_abi import decode
from eth_hash.auto import keccak

from receipts.storage import channels
from receipts.storage.config import Settings
from receipts.storage.journal import Journal
from receipts.storage.records import Check, Verdict
from receipts.storage.rpc import Rpc, RpcError

from .evidence import TRANSFER
from .verify import Summary, changes, in_part, parts

log = logging.getLogger("receipts.verify")

CONTRACT = channels.BATCH_SETTLEMENT
_CONFIG = "(address,address,address,address,address,uint40,bytes32)"
_CLAIMS = f"(({_CONFIG},uint128),bytes,uint128)[]"
CLAIM = keccak(f"claim({_CLAIMS})".encode())[:4]
CLAIM_WITH_SIGNATURE = keccak(f"claimWithSignature({_CLAIMS},bytes)".encode())[:4]
MULTICALL = keccak(b"multicall(bytes[])")[:4]
CHANNELS = keccak(b"channels(bytes32)")[:4]
ZERO = "0x" + "00" * 20

# Every paid exchange of the channels that the calls of one part (`{part}`) paid from, with its answer's
# settlement: a call is judged against the whole channel. Fields as the views `payments` and
# `settlements` say (storage/views.sql).
EXCHANGES = """
WITH part AS MATERIALIZED (SELECT logical_id FROM channel_calls WHERE {part}),
chan AS MATERIALIZED (
    SELECT DISTINCT p.channel_id FROM folded.payments p JOIN folded.requests r USING (receipt_id)
    WHERE r.logical_id IN (SELECT logical_id FROM part) AND p.channel_id IS NOT NULL AND p.kind LIKE 'channel_%'
), ex AS (
    SELECT p.receipt_id, r.logical_id, epoch(p.sent_at) AS paid_at, p.kind, p.channel_id, p.network, p.payer,
           p.pay_to, p.asset, p.spender AS payer_authorizer, p.signer, p.signer_error,
           p.voucher_amount::HUGEINT AS voucher_amount, p.deposit_amount::HUGEINT AS deposit_amount,
           p.refund_amount::HUGEINT AS refund_amount
    FROM folded.payments p JOIN folded.requests r USING (receipt_id)
    WHERE p.channel_id IN (SELECT channel_id FROM chan)
), st AS (
    SELECT receipt_id, arg_max({'success': success, 'charged': amount::HUGEINT,
                                'charged_cumulative': charged_cumulative::HUGEINT, 'channel_tx': channel_tx,
                                'channel_amount': channel_amount::HUGEINT, 'error_reason': error_reason}, seen_at) AS s
    FROM folded.settlements WHERE receipt_id IN (SELECT receipt_id FROM ex) GROUP BY receipt_id
), answer AS (
    SELECT receipt_id, arg_max(status, ts) AS status
    FROM folded.responses WHERE receipt_id IN (SELECT receipt_id FROM ex) GROUP BY receipt_id
)
SELECT ex.*, st.s.success, st.s.charged, st.s.charged_cumulative, st.s.channel_tx, st.s.channel_amount,
       st.s.error_reason, answer.status, ex.logical_id IN (SELECT logical_id FROM part) AS in_part
FROM ex LEFT JOIN st USING (receipt_id) LEFT JOIN answer USING (receipt_id)
ORDER BY ex.channel_id, ex.paid_at, ex.receipt_id
"""
LAST_CHECKS = """
SELECT receipt_id, "check", arg_max({'result': result, 'reason': reason, 'status': proof_status,
                                     'resolution': resolution}, observed_at) AS l
FROM folded.checks WHERE {part_checks} AND receipt_id IN (SELECT logical_id FROM channel_calls WHERE {part}) GROUP BY ALL
"""
PART = 2500  # calls per part


@dataclass
class Chain:
    """What one network's node said of these channels (gathered a part at a time, each channel once)."""

    head: int = 0
    confirmed: int = 0  # the newest block with the network's confirmations
    claimed: dict = field(default_factory=dict)  # channel id -> totalClaimed at `confirmed`
    claims: dict = field(default_factory=dict)  # channel id -> [(block, tx, totalClaimed)], in order
    receipts: dict = field(default_factory=dict)  # deposit or refund tx -> its receipt (None: not found)
    error: str | None = None  # the node failed: nothing of this network is decided
    unread: str | None = None  # why the chain is not read (no RPC configured)


def verify_pass(con, settings: Settings, journal: Journal, summary: Summary, part: int = PART) -> Summary:
    """One pass over the channel calls (the table channel_calls of `con`, verify.CHANNEL_CALLS), `part`
    calls at a time."""
    chains: dict[str, Chain] = {}
    for lo, hi in parts(con, "channel_calls", part):
        exchanges, last = read(con, lo, hi)
        gather(exchanges, settings, chains)
        events = []
        for r in decide(exchanges, last, settings, chains, summary):
            events += r
        if events:
            journal.write(events)
    summary.faults += [f"{n}: {c.error}" for n, c in chains.items() if c.error]
    return summary


class ChannelExchange(TypedDict):
    """A row of EXCHANGES: one paid exchange of a channel, its settlement and answer, and whether its call is
    in the part being decided (tests/verifier/test_rows.py)."""

    receipt_id: str
    logical_id: str | None
    paid_at: float | None
    kind: str | None
    channel_id: str  # (never NULL: the query selects by it)
    network: str | None
    payer: str | None
    pay_to: str | None
    asset: str | None
    payer_authorizer: str | None
    signer: str | None
    signer_error: str | None
    voucher_amount: int | None
    deposit_amount: int | None
    refund_amount: int | None
    success: bool | None
    charged: int | None
    charged_cumulative: int | None
    channel_tx: str | None
    channel_amount: int | None
    error_reason: str | None
    status: int | None
    in_part: bool | None
    before: NotRequired[tuple[int, int]]  # set by _running: the channel's promise and charge before it


def read(con, lo: str | None, hi: str | None) -> tuple[list[ChannelExchange], dict]:
    """Every paid exchange of the channels the part's calls paid from, and the part's latest checks
    ((receipt id, check) -> (result, reason); the verdict's with its status and resolution)."""

    def sql(template: str) -> str:
        return template.replace("{part}", in_part(lo, hi)).replace("{part_checks}", in_part(lo, hi, "receipt_id"))

    cur = con.execute(sql(EXCHANGES))
    cols = [d[0] for d in cur.description]
    rows = [cast(ChannelExchange, dict(zip(cols, row))) for row in cur.fetchall()]
    last = {}
    for rid, name, v in con.execute(sql(LAST_CHECKS)).fetchall():
        last[(rid, name)] = (
            (v["result"], v["reason"]) if name != "verdict" else (v["status"], v["resolution"], v["reason"])
        )
    return rows, last


# ---- the chain ---------------------------------------------------------------------------------
def gather(exchanges: list[ChannelExchange], settings: Settings, chains: dict[str, Chain]) -> None:
    """What each network's node says of the channels of these exchanges (not asked again in a pass)."""
    by_network: dict[str, dict[str, list[ChannelExchange]]] = {}
    for x in exchanges:
        by_network.setdefault(x["network"] or "", {}).setdefault(x["channel_id"], []).append(x)
    for network, chans in by_network.items():
        chain = chains.setdefault(network, Chain())
        todo = {cid: xs for cid, xs in chans.items() if cid not in chain.claimed}
        net = settings.network(network)
        if not todo or chain.error or chain.unread:
            continue
        if not net or not net.rpc or not network.startswith("eip155:"):
            chain.unread = f"no RPC configured for {network or 'an unknown network'}"
            continue
        try:
            _read_channels(
                Rpc(net.rpc, timeout=net.rpc_timeout, chain_id=int(network.split(":")[1]), max_bytes=net.rpc_max_bytes),
                net,
                todo,
                chain,
            )
        except RpcError as exc:
            chain.error = str(exc)
            log.error("receipts verify: %s: %s — its channels stay undecided", network, exc)


BATCH = 500  # JSON-RPC calls (or channel ids in one log filter) per request: hosted nodes cap batches


def _batched(rpc: Rpc, calls: list[tuple[str, list]]) -> list:
    return [answer for start in range(0, len(calls), BATCH) for answer in rpc.batch(calls[start : start + BATCH])]


def _read_channels(rpc: Rpc, net, chans: dict[str, list[ChannelExchange]], chain: Chain, step: int = 2000) -> None:
    chain.head = int(rpc.call("eth_blockNumber", []), 16)
    chain.confirmed = max(0, chain.head - max(1, net.confirmations) + 1)
    ids = sorted(chans)
    at = hex(chain.confirmed)
    states = _batched(
        rpc, [("eth_call", [{"to": CONTRACT, "data": "0x" + (CHANNELS + bytes.fromhex(i[2:])).hex()}, at]) for i in ids]
    )
    for cid, state in zip(ids, states):
        chain.claimed[cid] = int((state or "0x")[66:130] or "0", 16)  # (balance, totalClaimed)
    txs = sorted({tx for xs in chans.values() for x in xs if (tx := x.get("channel_tx"))} - set(chain.receipts))
    chain.receipts.update(zip(txs, _batched(rpc, [("eth_getTransactionReceipt", [t]) for t in txs])))
    claimed = [cid for cid in ids if chain.claimed[cid]]
    deposits = {
        x["channel_tx"] for xs in chans.values() for x in xs if x["kind"] == "channel_deposit" and x.get("channel_tx")
    }
    calls = [
        (
            "eth_getLogs",
            [
                {
                    "address": CONTRACT,
                    "fromBlock": hex(lo),
                    "toBlock": hex(min(lo + step - 1, chain.confirmed)),
                    "topics": [None, claimed[start : start + BATCH]],
                }
            ],
        )
        for start in range(0, len(claimed), BATCH)
        for lo in range(max(0, chain.head - net.scan_blocks), chain.confirmed + 1, step)
    ]
    found = {
        (lg["transactionHash"].lower(), int(lg["blockNumber"], 16))
        for logs in _batched(rpc, calls)
        for lg in logs or []
    }
    ordered = sorted(
        ((tx, b) for tx, b in found if tx not in deposits), key=lambda t: t[1]
    )  # (a deposit claims nothing)
    bodies = _batched(rpc, [("eth_getTransactionByHash", [tx]) for tx, _ in ordered])
    chain_id = int(net.caip2.split(":")[1])
    for (tx, block), body in zip(ordered, bodies):
        for cid, total in claims_in(bytes.fromhex(((body or {}).get("input") or "0x")[2:]), chain_id):
            if cid in chans:  # (this part's channels: an earlier part's have their claims already)
                chain.claims.setdefault(cid, []).append((block, tx, total))


def claims_in(data: bytes, chain_id: int) -> list[tuple[str, int]]:
    """(channel id, totalClaimed) of every voucher claim a call of the channel contract makes (claim,
    claimWithSignature, or either inside multicall); [] for any other call."""
    try:
        if data[:4] == MULTICALL:
            return [c for inner in decode(["bytes[]"], data[4:])[0] for c in claims_in(inner, chain_id)]
        if data[:4] in (CLAIM, CLAIM_WITH_SIGNATURE):
            entries = decode([_CLAIMS] if data[:4] == CLAIM else [_CLAIMS, "bytes"], data[4:])[0]
            return [
                (channels.channel_id(chain_id, dict(zip(channels.CONFIG_FIELDS, config))), int(total))
                for (config, _), _, total in entries
            ]
    except Exception:  # (calldata is anyone's: what does not decode is no claim)
        return []
    return []


# ---- deciding -----------------------------------------------------------------------------------
def decide(
    exchanges: list[ChannelExchange], last: dict, settings: Settings, chains: dict[str, Chain], summary: Summary
):
    """The events of the part's calls: each call judged on its latest paid exchange, against its channel."""
    by_channel: dict[str, list[ChannelExchange]] = {}
    for x in exchanges:
        by_channel.setdefault(x["channel_id"], []).append(x)
    for cid, xs in by_channel.items():
        facts = _channel_facts(xs)
        _running(xs)
        latest = {x["logical_id"]: x for x in xs if x["in_part"]}  # (ordered by time: the last one wins)
        for logical_id, x in latest.items():
            prior = last.get((logical_id, "verdict"))
            if prior and prior[0] not in ("pending", "passed"):
                continue  # final
            chain = chains.get(x["network"] or "") or Chain(error="no network")
            summary.seen += 1
            if chain.error:
                summary.skipped += 1
                continue
            r = {
                "receipt_id": logical_id,
                "last_status": prior[0] if prior else None,
                "last_resolution": prior[1] if prior else None,
                "last_reason": prior[2] if prior else None,
            }
            checks = call_checks(x, xs, facts, chain, settings)
            claim = next((c for c in checks if c.name == "channel_claim" and c.result == "pass"), None)
            yield changes(
                r,
                checks,
                last,
                summary,
                verdict(checks, facts, chain.claimed.get(cid)),
                tx=claim.detail.get("tx") if claim else None,
            )


def _running(xs: list[ChannelExchange]) -> None:
    """Each exchange's `before`: the largest voucher (a refund's aside) and charge of the channel's earlier
    exchanges (`xs` is in time order: one pass, whatever the channel's length)."""
    promised = charged = 0
    for x in xs:
        x["before"] = (promised, charged)
        if x["kind"] != "channel_refund":
            promised = max(promised, x["voucher_amount"] or 0)
        if x.get("success"):
            charged = max(charged, x["charged_cumulative"] or 0)


def _channel_facts(xs: list[ChannelExchange]) -> dict:
    taken = [x for x in xs if x.get("success")]
    return {
        "max_voucher": max((x["voucher_amount"] or 0 for x in xs), default=0),
        "charged": max((x["charged_cumulative"] or 0 for x in taken), default=0),
        "deposited": sum(x["deposit_amount"] or 0 for x in taken if x["kind"] == "channel_deposit"),
    }


def call_checks(
    x: ChannelExchange, xs: list[ChannelExchange], facts: dict, chain: Chain, settings: Settings
) -> list[Check]:
    checks = [signature_check(x), voucher_check(x), charge_check(x)]
    if chain.unread:  # (not a fault: said, and pending, so that no receipt stays unverified)
        return checks + [Check("channel_claim", "pending", "no_rpc_configured", {"why": chain.unread})]
    if x["kind"] == "channel_deposit" and x.get("success"):
        checks.append(deposit_check(x, chain))
    if x["kind"] == "channel_refund":
        if x.get("success"):
            checks.append(refund_check(x, facts, chain))
    elif x.get("success"):
        checks.append(claim_check(x, facts, chain))
    return checks


def signature_check(x: ChannelExchange) -> Check:
    authorizer = (x.get("payer_authorizer") or "").lower()
    allowed = {(x.get("payer") or "").lower()} | ({authorizer} if authorizer and authorizer != ZERO else set())
    signer = x.get("signer")
    if not signer:
        return Check("signature", "pending", "signature_unverifiable", {"why": x.get("signer_error")})
    ok = signer.lower() in allowed
    return Check(
        "signature",
        "pass" if ok else "fail",
        None if ok else "signature_mismatch",
        {"signer": x["signer"], "payer": x.get("payer"), "payer_authorizer": x.get("payer_authorizer")},
    )


def voucher_check(x: ChannelExchange) -> Check:
    """Vouchers are cumulative: none promises less than an earlier one of the channel (a refund's, which
    settles what was charged, excepted), nor less than the channel had been charged before it
    (`x["before"]`: _running)."""
    promised, charged = x["before"]
    amount = x["voucher_amount"]
    detail = {"voucher": str(amount), "earlier_voucher": str(promised), "charged_before": str(charged)}
    if amount is None:
        return Check("voucher", "fail", "no_voucher", detail)
    if amount < charged or (x["kind"] != "channel_refund" and amount < promised):
        return Check("voucher", "fail", "voucher_backwards", detail)
    return Check("voucher", "pass", None, detail)


def charge_check(x: ChannelExchange) -> Check:
    if x.get("success"):
        return Check(
            "charge",
            "pass",
            None,
            {"charged": _text(x.get("charged")), "charged_cumulative": _text(x.get("charged_cumulative"))},
        )
    if x.get("success") is False:
        return Check("charge", "fail", "payment_refused", {"error_reason": x.get("error_reason")})
    if x.get("status") is not None:
        return Check("charge", "fail", "not_charged", {"status": x["status"]})
    return Check("charge", "pending", "no_answer", {})


def _moved(receipt: dict, token: str, to: str, sender: str | None = None) -> int:
    """What the token's Transfer logs of a transaction moved to `to` (from `sender`, if given)."""
    total = 0
    for lg in receipt.get("logs") or []:
        topics = lg.get("topics") or []
        if (lg.get("address") or "").lower() != token or len(topics) != 3 or topics[0] != TRANSFER:
            continue
        if "0x" + topics[2][-40:] == to and (sender is None or "0x" + topics[1][-40:] == sender):
            total += int(lg.get("data") or "0x0", 16)
    return total


def _tx_check(name: str, tx: str | None, chain: Chain) -> tuple[dict | None, Check | None]:
    """The transaction's receipt, or the check that says why there is none to judge."""
    if not tx:
        return None, Check(name, "fail", "no_tx_hash", {})
    receipt = chain.receipts.get(tx)
    if not receipt:
        return None, Check(name, "pending", "tx_not_found", {"tx": tx})
    block = int(receipt["blockNumber"], 16)
    if int(receipt.get("status") or "0x0", 16) != 1:
        return None, Check(name, "fail", "tx_reverted", {"tx": tx}, block)
    if block > chain.confirmed:
        return None, Check(name, "pending", "awaiting_confirmations", {"tx": tx}, block)
    return receipt, None


def deposit_check(x: ChannelExchange, chain: Chain) -> Check:
    receipt, early = _tx_check("deposit", x.get("channel_tx"), chain)
    if early:
        return early
    assert receipt is not None  # (_tx_check gives a receipt or the check that says why not)
    moved = _moved(receipt, (x["asset"] or "").lower(), CONTRACT)
    detail = {"tx": x["channel_tx"], "deposit": str(x["deposit_amount"]), "moved": str(moved), "trust": "single-node"}
    block = int(receipt["blockNumber"], 16)
    if moved != x["deposit_amount"]:
        return Check("deposit", "fail", "deposit_mismatch", detail, block)
    return Check("deposit", "pass", None, detail, block)


def claim_check(x: ChannelExchange, facts: dict, chain: Chain) -> Check:
    owed, claimed = x.get("charged_cumulative"), chain.claimed.get(x["channel_id"], 0)
    detail = {
        "channel": x["channel_id"],
        "owed": _text(owed),
        "claimed": str(claimed),
        "block": chain.confirmed,
        "max_voucher": str(facts["max_voucher"]),
        "charged": str(facts["charged"]),
        "trust": "single-node",
    }
    if owed is None:
        return Check("channel_claim", "pending", "charge_unknown", detail)
    if claimed < owed:
        return Check("channel_claim", "pending", "channel_open", detail)
    first = next(((b, tx) for b, tx, total in chain.claims.get(x["channel_id"], ()) if total >= owed), (None, None))
    return Check("channel_claim", "pass", None, {**detail, "tx": first[1]}, first[0])


def refund_check(x: ChannelExchange, facts: dict, chain: Chain) -> Check:
    """The payer got back what was deposited less what was claimed (or what the refund asked for)."""
    receipt, early = _tx_check("refund", x.get("channel_tx"), chain)
    if early:
        return early
    assert receipt is not None  # (_tx_check gives a receipt or the check that says why not)
    back = _moved(receipt, (x["asset"] or "").lower(), (x["payer"] or "").lower(), CONTRACT)
    claimed = chain.claimed.get(x["channel_id"], 0)
    asked = x.get("refund_amount")
    due = asked if asked is not None else facts["deposited"] - claimed
    detail = {
        "tx": x["channel_tx"],
        "refunded": str(back),
        "deposited": str(facts["deposited"]),
        "claimed": str(claimed),
        "due": str(due),
        "trust": "single-node",
    }
    block = int(receipt["blockNumber"], 16)
    if back != due:
        return Check("refund", "fail", "refund_short" if back < due else "refund_over", detail, block)
    return Check("refund", "pass", None, detail, block)


def verdict(checks: list[Check], facts: dict, claimed: int | None) -> Verdict:
    failed = [c for c in checks if c.result == "fail"]
    pending = [c for c in checks if c.result == "pending"]
    status = "failed" if failed else "pending" if pending else "passed"
    first = failed[0] if failed else pending[0] if pending else None
    reason = first.reason if first else None
    if claimed is not None and claimed > facts["max_voucher"]:
        return Verdict(status, "risky", "claim_above_vouchers")
    if claimed is not None and claimed > facts["charged"]:
        return Verdict(status, "risky", "claim_above_charges")
    return Verdict(status, None, reason)


def _text(value) -> str | None:
    return None if value is None else str(value)
