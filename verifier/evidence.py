"""What settlement leaves on chain, and whether it matches a captured payment (pure; no I/O).

PROTOCOL.md §2: an exact/EIP-3009 settlement is a token transaction with `Transfer(from, to, value)`
and `AuthorizationUsed(authorizer, nonce)` logs; Permit2 settlements leave the `Transfer` (and the
proxy's `Settled()`). Every function here takes JSON-RPC shaped dicts (hex strings) and returns a
`Check` with a result (`pass`, `fail`, `pending`), a stable reason code and the evidence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from receipts.storage.records import Check

TRANSFER = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
AUTHORIZATION_USED = "0x98de503528ee59b575ef0c0a2576a82497bfc029a5685b209e9ec333479b10a5"


def _addr_topic(address: str) -> str:
    return "0x" + address.lower().removeprefix("0x").rjust(64, "0")


def _word(hexstr: str | None) -> int:
    return int(hexstr, 16) if hexstr not in (None, "0x", "") else 0


def token_logs(logs: list[dict], token: str) -> tuple[list[dict], set[tuple[str, str]]]:
    """The token's logs in one pass: its Transfers decoded ({from, to, value}), and the
    (authorizer, nonce) topic pairs of its AuthorizationUsed logs."""
    moved, used, token = [], set(), token.lower()
    for log in logs:
        topics: Sequence[str] = log.get("topics") or ()
        if len(topics) != 3 or (log.get("address") or "").lower() != token:
            continue
        kind = topics[0].lower()
        if kind == TRANSFER:
            moved.append(
                {
                    "from": "0x" + topics[1][-40:].lower(),
                    "to": "0x" + topics[2][-40:].lower(),
                    "value": _word(log.get("data")),
                }
            )
        elif kind == AUTHORIZATION_USED:
            used.add((topics[1].lower(), topics[2].lower()))
    return moved, used


def settlement(
    payment: dict, tx_hash: str, receipt: dict | None, head: int, required: int, facilitator: str | None = None
) -> Check:
    """Does this transaction settle this payment, and is it final, as far as the receipt says (its
    confirmations counted from `head`)? The verifier asks more: `canonical_settlement`."""
    if receipt is None:
        return Check("settlement_tx", "pending", "tx_not_found", {"tx_hash": tx_hash})
    block = _word(receipt["blockNumber"])
    confirmations = max(0, head - block + 1)
    return _judge(payment, tx_hash, receipt, confirmations, confirmations >= required, required, facilitator)


@dataclass(frozen=True, slots=True)
class Block:
    """The canonical block at a height, as one node gave it (`eth_getBlockByNumber`)."""

    number: int
    hash: str  # lower-case
    transactions: frozenset[str]  # the hashes of its transactions, lower-case


def block_of(answer: dict | None) -> Block | None:
    """A `Block` from an `eth_getBlockByNumber` answer (transactions as hashes or as objects)."""
    if not answer:
        return None
    txs = answer.get("transactions") or ()
    hashes = frozenset((t["hash"] if isinstance(t, dict) else t).lower() for t in txs)
    return Block(_word(answer["number"]), (answer.get("hash") or "").lower(), hashes)


def canonical_settlement(
    payment: dict,
    tx_hash: str,
    receipt: dict | None,
    blocks: dict,
    head: int,
    required: int,
    facilitator: str | None = None,
) -> Check:
    """Does this transaction settle this payment, on the canonical chain, finally?

    `blocks` holds the canonical blocks one node gave, by height (None: it has no block there). The
    receipt counts only if the block at its height has the receipt's block hash and lists the
    transaction (else: `block_not_found`, `block_hash_mismatch`, `tx_not_in_block`, all pending: what
    a reorg under way looks like too). It is final only if the block at height
    `block + required - 1` exists: a head the node reports is never enough on its own."""
    if receipt is None:
        return Check("settlement_tx", "pending", "tx_not_found", {"tx_hash": tx_hash})
    number, claimed = _word(receipt["blockNumber"]), (receipt.get("blockHash") or "").lower()
    canonical = blocks.get(number)
    detail = {"tx_hash": tx_hash, "block": number, "block_hash": claimed or None, "sender": receipt.get("from")}
    if canonical is None or canonical.number != number:
        return Check("settlement_tx", "pending", "block_not_found", detail, number)
    if not claimed or canonical.hash != claimed:
        return Check(
            "settlement_tx", "pending", "block_hash_mismatch", {**detail, "canonical_hash": canonical.hash}, number
        )
    if tx_hash.lower() not in canonical.transactions:
        return Check("settlement_tx", "pending", "tx_not_in_block", detail, number)
    final = blocks.get(number + max(1, required) - 1) is not None
    seen = max(0, head - number + 1)  # what the head says, bounded by what the blocks show
    confirmations = max(seen, required) if final else min(seen, max(0, required - 1))
    check = _judge(payment, tx_hash, receipt, confirmations, final, required, facilitator)
    check.detail["block_hash"] = claimed
    return check


def logs_digest(payment: dict, logs: list[dict]) -> str:
    """A short digest of the payment's logs in the transaction (the token's Transfer and
    AuthorizationUsed logs whose first argument is the payer): what endpoints must agree on."""
    token, payer = (payment.get("asset") or "").lower(), _addr_topic(payment.get("payer") or "")
    mine = sorted(
        (_word(lg.get("logIndex")), [t.lower() for t in lg.get("topics") or ()], (lg.get("data") or "").lower())
        for lg in logs
        if (lg.get("address") or "").lower() == token
        and len(lg.get("topics") or ()) >= 2
        and lg["topics"][0].lower() in (TRANSFER, AUTHORIZATION_USED)
        and lg["topics"][1].lower() == payer
    )
    return hashlib.sha256(orjson.dumps(mine)).hexdigest()[:16]


def _judge(
    payment: dict, tx_hash: str, receipt: dict, confirmations: int, final: bool, required: int, facilitator: str | None
) -> Check:
    name, block = "settlement_tx", _word(receipt["blockNumber"])
    detail = {
        "tx_hash": tx_hash,
        "block": block,
        "confirmations": confirmations,
        "required": required,
        "sender": receipt.get("from"),
    }
    if _word(receipt.get("status", "0x0")) != 1:
        return Check(name, "fail", "tx_reverted", detail, block)
    problems = mismatches(payment, receipt.get("logs") or [])
    if facilitator and (receipt.get("from") or "").lower() != facilitator.lower():
        problems.append(f"sent by {receipt.get('from')}, not the known facilitator {facilitator}")
    if problems:
        return Check(name, "fail", "logs_mismatch", {**detail, "problems": problems}, block)
    if not final:
        return Check(name, "pending", "awaiting_confirmations", detail, block)
    return Check(name, "pass", None, detail, block)


def mismatches(payment: dict, logs: list[dict]) -> list[str]:
    """What in the logs does not match the signed payment (empty: they match)."""
    token, payer, pay_to = payment.get("asset") or "", payment.get("payer") or "", payment.get("pay_to") or ""
    moved, used = token_logs(logs, token)
    if not moved:
        return [f"no Transfer of token {token} in the transaction"]
    payer_l, pay_to_l = payer.lower(), pay_to.lower()
    ours = [t for t in moved if t["from"] == payer_l and t["to"] == pay_to_l]
    if not ours:
        return [f"no Transfer from {payer} to {pay_to}; saw " + ", ".join(f"{t['from']}→{t['to']}" for t in moved)]
    value, amount = sum(t["value"] for t in ours), int(payment.get("amount") or 0)
    problems = []
    if payment.get("scheme") == "upto":
        if value > amount:
            problems.append(f"transferred {value}, more than the signed cap {amount}")
    elif value != amount:
        problems.append(f"transferred {value}, signed {amount}")
    if (
        payment.get("kind") in ("eip3009", "auth_capture")
        and (_addr_topic(payer), (payment.get("nonce") or "").lower()) not in used
    ):
        problems.append("no AuthorizationUsed log for the payer and nonce")
    return problems


def refund_matters(r: Mapping[str, Any]) -> bool:
    """Refunds matter where money moved and the outcome is bad or unclear: the server answered 5xx or
    nothing, it settled twice, or the receipt was verified and did not pass."""
    return (
        (r.get("status") or 0) >= 500
        or r.get("status") is None
        or (r.get("settlement_count") or 0) > 1
        or (r.get("last_status") or "pending") != "passed"
        and r.get("last_status") is not None
    )
