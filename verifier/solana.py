"""Settlements of x402 `exact` payments on Solana, checked over Solana JSON-RPC.

The payment (addon/solana.py decoded it at capture) is a transaction the payer signed and the facilitator,
its fee payer, co-signs and sends; the settlement's `transaction` is that transaction's signature, which
is the receipt's `payment_hash`. One round's facts come from each endpoint in a few batched calls:

    getSignatureStatuses   the commitment of each signature: processed, confirmed or finalized, and its error
    getTransaction         (jsonParsed, confirmed) the transfer it made: the parsed `transferChecked`
    getSignaturesForAddress  for a payment whose server gave no signature: the payee's token account's
                           recent signatures, whose memo finds the payment's
    isBlockhashValid       for a payment not landed: is its transaction's blockhash still alive?
    getGenesisHash         once per endpoint and pass: a node of another chain is a fault, as on EVM
    (and, where a refund matters, getSignaturesForAddress of the payer's token account: a later transfer
    back from pay_to makes the receipt `refunded`, as on EVM)

and `settlement_check` judges each receipt on one endpoint's facts alone (verifier/agreement.py makes the
endpoints agree):

- `pass` only when the transaction is **finalized**, did not fail, and transferred exactly the signed
  amount of the signed mint from the payer (the authority) to the payee's token account (the associated
  token account of `pay_to`, SPL Token or Token-2022, derived at capture), with the payment's memo, and its fee payer is a
  facilitator the config names (when it names any);
- `pending (awaiting_finalization)` while it is processed or confirmed; `pending (tx_not_found)` while no
  endpoint has it;
- `fail (expired)` when it has not landed and its blockhash is no longer valid (it lives 150 slots, 60–90
  s), after which it can never land; without a blockhash, `EXPIRY` seconds after the payment was sent;
- `fail (tx_failed)` when it landed with an error, and `fail (<mismatch>)` when it moved something else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from receipts.storage.records import Check
from receipts.storage.rpc import RpcError

from .agreement import agree, agreed_transfers
from .evidence import refund_matters

EXPIRY = 150.0  # seconds after the payment was sent: by then its blockhash has expired (none recorded)
SEARCH_LIMIT = 1000  # signatures of a token account searched for a memo (newest first)
STATUS_BATCH = 256  # signatures per getSignatureStatuses call (the node's limit)
TX_BATCH = 100  # getTransaction calls per JSON-RPC batch
TOKEN_PROGRAMS = ("spl-token", "spl-token-2022")


def is_solana(network: str | None) -> bool:
    return bool(network and network.startswith("solana:"))


@dataclass
class SolanaView:
    """What one pass learned from one endpoint."""

    statuses: dict = field(default_factory=dict)  # signature -> its status (None: unknown to the node)
    transactions: dict = field(default_factory=dict)  # signature -> getTransaction's answer (None: none yet)
    found: dict = field(default_factory=dict)  # receipt id -> the signature its memo found
    dead: set = field(default_factory=set)  # blockhashes of unlanded payments the node says expired
    refunds: dict = field(default_factory=dict)  # receipt id -> transfers back from pay_to to the payer
    head_time: float | None = None  # (no chain time is read: deadlines use this machine's clock)


def read_view(net, rows: Sequence[Mapping[str, Any]], reader) -> SolanaView:
    """One round's facts from one endpoint (raises RpcError on a fault: a node of another chain is one)."""
    rpc, view = reader.rpc, SolanaView()
    if reader.genesis is None:
        reader.genesis = check_genesis(rpc, net.caip2)
    view.found = _search_by_memo(rpc, [r for r in rows if not r.get("payment_hash")])
    signatures = sorted({s for r in rows if (s := _signature(r, view))})
    for start in range(0, len(signatures), STATUS_BATCH):
        part = signatures[start : start + STATUS_BATCH]
        answer = rpc.call("getSignatureStatuses", [part, {"searchTransactionHistory": True}])
        view.statuses.update(zip(part, answer["value"]))
    landed = [s for s in signatures if view.statuses.get(s)]
    options = {"encoding": "jsonParsed", "commitment": "confirmed", "maxSupportedTransactionVersion": 0}
    for start in range(0, len(landed), TX_BATCH):
        part = landed[start : start + TX_BATCH]
        view.transactions.update(zip(part, rpc.batch([("getTransaction", [s, options]) for s in part])))
    _search_refunds(rpc, rows, view, options)
    unlanded = sorted(
        {
            r["recent_blockhash"]
            for r in rows
            if r.get("recent_blockhash") and not view.statuses.get(_signature(r, view))
        }
    )
    for start in range(0, len(unlanded), TX_BATCH):
        part = unlanded[start : start + TX_BATCH]
        answers = rpc.batch([("isBlockhashValid", [h, {"commitment": "processed"}]) for h in part])
        view.dead |= {h for h, a in zip(part, answers) if a["value"] is False}
    return view


def check_genesis(rpc, network: str) -> str:
    """The node's genesis hash, if it is the chain `network` names (a Solana CAIP-2 id is the first 32
    characters of the genesis hash); else RpcError("wrong_chain"), as for an EVM node's chain id."""
    genesis = rpc.call("getGenesisHash", [])
    if not isinstance(genesis, str) or genesis[:32] != network.split(":", 1)[1]:
        raise RpcError("wrong_chain", f"{rpc.url} serves the chain whose genesis is {str(genesis)[:60]}, not {network}")
    return genesis


def _signature(r: Mapping[str, Any], view: SolanaView) -> str | None:
    """The payment's transaction: the one its server named, else the one its memo found."""
    return r.get("payment_hash") or view.found.get(r["receipt_id"])


def _search_by_memo(rpc, rows: Sequence[Mapping[str, Any]]) -> dict:
    """The signatures of payments whose server gave none, found by their memo among the recent
    signatures of the token account they pay (one call per account)."""
    found: dict[str, str] = {}
    wanted: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        if r.get("token_account") and r.get("memo"):
            wanted.setdefault(r["token_account"], []).append(r)
    for account, mine in sorted(wanted.items()):
        entries = rpc.call("getSignaturesForAddress", [account, {"limit": SEARCH_LIMIT, "commitment": "confirmed"}])
        for r in mine:
            hit = next((e["signature"] for e in entries if _memo_matches(e.get("memo"), r["memo"])), None)
            if hit:
                found[r["receipt_id"]] = hit
    return found


def _search_refunds(rpc, rows: Sequence[Mapping[str, Any]], view: SolanaView, options: dict) -> None:
    """Where a refund matters (evidence.refund_matters), transfers back after the settlement: the recent
    signatures of the token account the payer paid from (read from the settlement), their transactions'
    `transferChecked` of the mint by `pay_to` into that account (one search per account)."""
    wanted: dict[str, list[tuple[Mapping[str, Any], int]]] = {}
    for r in rows:
        status = view.statuses.get(_signature(r, view) or "")
        tx = view.transactions.get(_signature(r, view) or "")
        source = (
            next(
                (
                    t.get("source")
                    for t in transfers(tx)
                    if t.get("authority") == r.get("payer") and t.get("mint") == r.get("asset")
                ),
                None,
            )
            if tx and refund_matters(r)
            else None
        )
        if source:
            assert status is not None  # a transaction is fetched only for a signature with a status
            wanted.setdefault(source, []).append((r, status.get("slot") or 0))
    for account, mine in sorted(wanted.items(), key=lambda kv: kv[0]):
        entries = rpc.call("getSignaturesForAddress", [account, {"limit": SEARCH_LIMIT, "commitment": "confirmed"}])
        since = min(slot for _, slot in mine)
        later = [e["signature"] for e in entries if (e.get("slot") or 0) > since and e.get("err") is None][:TX_BATCH]
        for signature, tx in zip(later, rpc.batch([("getTransaction", [s, options]) for s in later])):
            for t in transfers(tx or {}):
                for r, slot in mine:
                    if (t.get("destination"), t.get("mint"), t.get("authority")) == (
                        account,
                        r.get("asset"),
                        r.get("pay_to"),
                    ) and (tx.get("slot") or 0) > slot:
                        view.refunds.setdefault(r["receipt_id"], []).append(
                            {
                                "token": r["asset"],
                                "from": t.get("source"),
                                "to": account,
                                "value": _amount(t),
                                "block": tx.get("slot"),
                                "tx": signature,
                            }
                        )


def settlement_checks(r: Mapping[str, Any], views: list[SolanaView], net, now: float) -> list[Check]:
    """The settlement check the endpoints agree on, and any refund a quorum of them saw."""
    check = agree([settlement_check(r, v, net.facilitators, now) for v in views], net.quorum_size)
    back = agreed_transfers([v.refunds.get(r["receipt_id"], []) for v in views], net.quorum_size)
    return [check] + ([Check("refund", "pass", None, {"transfers": back}, back[-1]["block"])] if back else [])


def _memo_matches(listed: str | None, memo: str) -> bool:
    """A node lists a transaction's memos as `[<length>] <text>`, several joined by `; `."""
    return bool(listed and any(m == memo or m.endswith(f"] {memo}") for m in listed.split("; ")))


def settlement_check(r: Mapping[str, Any], view: SolanaView, facilitators: tuple[str, ...], now: float) -> Check:
    """Does a finalized transaction on this endpoint settle this payment?"""
    signature = _signature(r, view)
    found_by = "response" if r.get("payment_hash") else "memo_search"
    detail = {"signature": signature, "found_by": found_by}
    status = view.statuses.get(signature) if signature else None
    if status is None:
        if r.get("recent_blockhash") in view.dead or (
            not r.get("recent_blockhash") and r.get("paid_at") is not None and now > r["paid_at"] + EXPIRY
        ):
            return Check("settlement_tx", "fail", "expired", {**detail, "recent_blockhash": r.get("recent_blockhash")})
        return Check("settlement_tx", "pending", "tx_not_found" if signature else "no_tx_hash", detail)
    slot, tx = status.get("slot"), view.transactions.get(signature)
    detail.update(slot=slot, commitment=status.get("confirmationStatus"))
    if status.get("err") is not None:
        return Check("settlement_tx", "fail", "tx_failed", {**detail, "error": status["err"]}, slot)
    if tx is None:
        return Check("settlement_tx", "pending", "tx_not_found", detail, slot)
    detail["fee_payer"] = fee_payer(tx)
    problems = mismatches(r, tx, facilitators)
    if problems:
        return Check("settlement_tx", "fail", problems[0][0], {**detail, "problems": [p for _, p in problems]}, slot)
    if status.get("confirmationStatus") != "finalized":
        return Check("settlement_tx", "pending", "awaiting_finalization", detail, slot)
    return Check("settlement_tx", "pass", None, detail, slot)


def fee_payer(tx: dict) -> str | None:
    keys = (((tx.get("transaction") or {}).get("message") or {}).get("accountKeys")) or []
    first = keys[0] if keys else None
    return first.get("pubkey") if isinstance(first, dict) else first


def transfers(tx: dict) -> list[dict]:
    """The parsed `transferChecked` instructions of a transaction, top level and inner."""
    message = (tx.get("transaction") or {}).get("message") or {}
    inner = [
        i for group in ((tx.get("meta") or {}).get("innerInstructions") or []) for i in group.get("instructions") or []
    ]
    return [
        i["parsed"]["info"]
        for i in (message.get("instructions") or []) + inner
        if i.get("program") in TOKEN_PROGRAMS
        and isinstance(i.get("parsed"), dict)
        and i["parsed"].get("type") == "transferChecked"
    ]


def memos(tx: dict) -> list[str]:
    message = (tx.get("transaction") or {}).get("message") or {}
    return [
        i["parsed"]
        for i in message.get("instructions") or []
        if i.get("program") == "spl-memo" and isinstance(i.get("parsed"), str)
    ]


def mismatches(r: Mapping[str, Any], tx: dict, facilitators: tuple[str, ...]) -> list[tuple[str, str]]:
    """(reason, what) for each way the transaction differs from the payment (empty: it settles it)."""
    if (tx.get("meta") or {}).get("err") is not None:
        return [("tx_failed", f"the transaction failed: {tx['meta']['err']}")]
    if r.get("kind") == "svm_upto":
        return _upto_mismatches(r, tx, facilitators)
    problems = []
    payer, mint, amount = r.get("payer"), r.get("asset"), r.get("signed_amount")
    payee = r.get("payee_token_account")  # (pay_to's associated token account, derived at capture)
    mine = [t for t in transfers(tx) if t.get("authority") == payer and t.get("mint") == mint]
    if not mine:
        problems.append(("no_transfer", f"no transferChecked of {mint} by {payer}"))
    elif not any(t.get("destination") == payee for t in mine):
        problems.append(
            ("unexpected_pay_to", f"paid to token account {mine[0].get('destination')}, not that of {r.get('pay_to')}")
        )
    elif amount is not None and not any(_amount(t) == int(amount) for t in mine if t.get("destination") == payee):
        problems.append(("amount_mismatch", f"transferred {_amount(mine[0])}, the payment signed {amount}"))
    if r.get("memo") and r["memo"] not in memos(tx):
        problems.append(("memo_mismatch", f"memo {memos(tx)}, the payment's was {r['memo']!r}"))
    if facilitators and fee_payer(tx) not in facilitators:
        problems.append(("unexpected_fee_payer", f"fee payer {fee_payer(tx)}, not a known facilitator"))
    return problems


def _upto_mismatches(r: Mapping[str, Any], tx: dict, facilitators: tuple[str, ...]) -> list[tuple[str, str]]:
    """`upto` on Solana: the settlement is the facilitator's claim on the payer's channel, which pays the
    charge out of the escrow (the channel's authority, not the payer's). What it must show: pay_to's token
    account of the mint gained exactly the charge the server reported, which is at most the cap; read from
    the transaction's token balances (the real program may batch its payouts in one instruction)."""
    problems = []
    gained = balance_change(tx, r.get("payee_token_account"), r.get("asset"))
    charged, cap = r.get("settled_amount"), r.get("amount_cap")
    if gained is None or gained <= 0 and (charged or 0) > 0:
        problems.append(("no_transfer", f"no {r.get('asset')} reached the token account of {r.get('pay_to')}"))
    elif charged is not None and gained != int(charged):
        problems.append(("amount_mismatch", f"pay_to gained {gained}, the server reported {charged}"))
    elif cap is not None and gained > int(cap):
        problems.append(("overcharged", f"pay_to gained {gained}, more than the cap {cap}"))
    if facilitators and fee_payer(tx) not in facilitators:
        problems.append(("unexpected_fee_payer", f"fee payer {fee_payer(tx)}, not a known facilitator"))
    return problems


def balance_change(tx: dict, account: str | None, mint: str | None) -> int | None:
    """How much of `mint` the token account `account` gained in the transaction (None: not in it)."""
    meta, keys = tx.get("meta") or {}, (((tx.get("transaction") or {}).get("message") or {}).get("accountKeys")) or []
    names = [k.get("pubkey") if isinstance(k, dict) else k for k in keys]
    if account not in names:
        return None
    index = names.index(account)

    def held(entries) -> int:
        return sum(
            int((e.get("uiTokenAmount") or {}).get("amount") or 0)
            for e in entries or []
            if e.get("accountIndex") == index and e.get("mint") == mint
        )

    return held(meta.get("postTokenBalances")) - held(meta.get("preTokenBalances"))


def _amount(transfer: dict) -> int | None:
    value = (transfer.get("tokenAmount") or {}).get("amount")
    return int(value) if isinstance(value, str) and value.isdigit() else None
