"""`receipts verify`: prove receipts against the chain and append what was found as `check` events.

It reads receipts through storage (read-only), asks each network's node in batches, and writes only
its own events, and only when something changed: verifying twice, or restarting the verifier, adds
nothing to what was already decided. History is never edited: a settlement that disappears in a
reorg gets a new `pending` verdict after its `passed` one.

Checks per paid receipt (each recorded with its result, reason and evidence):
- `signature`: the payment's EIP-712 signature recovers to the payer (recovered at capture time);
- `terms`: the payment matches the challenge (asset, pay_to, amount ≤ the price, network);
- `settlement_tx`: the settlement transaction exists, succeeded, its logs match, it is in the canonical
  block at its height, and the block that makes it final exists (evidence.canonical_settlement), as
  `quorum` of the network's endpoints agree (agreement.py; the check names its trust).
The verdict (check `verdict`) is `failed` if a check failed, `pending` while one is pending, else
`passed`; `resolution` adds `risky` (money moved, outcome bad) where it applies. A node fault decides
nothing: that network's receipts get no event in that pass.

How a pass runs (its memory does not grow with the journal; scripts/bench_verify.py measures it):
it reads the folded tables (storage/fold.sql), only the columns it needs. One query makes its own
table (OG_CALLS: the calls verifier/og.py verifies); the receipts to verify, with each one's latest
verdict and the latest result of each of its checks, are then queried a part (PART) at a time
(TO_VERIFY) and decided a round (CHUNK) at a time; while one round is decided, a thread reads the next round's chain evidence
(ChainView), another queries the next part, and a third appends the check events. Then, on the same
connection, verifier/og.py verifies the OG_CALLS a part at a time.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import logging
import re
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict, cast

import orjson

from receipts.storage import authcapture, db
from receipts.storage.config import Settings
from receipts.storage.journal import Journal
from receipts.storage.records import (
    DELEGATION,
    SIGNED_TX,
    SMART_WALLET,
    Check,
    CheckEntry,
    Event,
    Verdict,
    VerdictEntry,
    check_event,
)
from receipts.storage.rpc import Rpc, RpcError, warm_up

from . import solana
from .agreement import agree, agreed_transfers
from .evidence import AUTHORIZATION_USED, TRANSFER, block_of, canonical_settlement, logs_digest, refund_matters

log = logging.getLogger("receipts.verify")

# One pass reads the folded tables (storage/fold.sql defines every field; storage/db.py binds
# `folded.<table>`), only the columns the checks below use. Each field means exactly what the views in
# storage/views.sql say (payments, settlements, challenges, checks, calls.status):
# tests/support/verifier_views.py holds the same query over those views, and tests/e2e/test_verify.py
# and tests/verifier/test_read.py assert that both give the same rows.
#
# The tables below live in the pass's own in-memory database; not TEMP, so that the cursors that query
# the parts (_rounds) see them.
OG_CALLS = """
CREATE TABLE og_calls AS  -- calls with an upto session or a TEE proof (calls.upto_session or calls.tee_id):
SELECT DISTINCT logical_id FROM folded.requests  -- verifier/og.py verifies them. The request's session, or
WHERE upto_session IS NOT NULL OR receipt_id IN (  -- that of the exchange's latest answer or stream end
    SELECT receipt_id FROM folded.responses  -- (of the exchanges that had any: the others can't)
    WHERE receipt_id IN (SELECT receipt_id FROM folded.responses WHERE og_upto_session IS NOT NULL OR tee_id IS NOT NULL)
    GROUP BY receipt_id HAVING arg_max(og_upto_session IS NOT NULL OR tee_id IS NOT NULL, ts)
    UNION ALL
    SELECT receipt_id FROM folded.stream_ends
    WHERE receipt_id IN (SELECT receipt_id FROM folded.stream_ends WHERE tee_id IS NOT NULL)
    GROUP BY receipt_id HAVING arg_max(tee_id IS NOT NULL, ts))
"""
CHANNEL_CALLS = """
CREATE TABLE channel_calls AS  -- calls paid from a payment channel (payments.channel_id): verifier/channels.py
SELECT DISTINCT r.logical_id FROM folded.payments p JOIN folded.requests r USING (receipt_id)  -- verifies them
WHERE p.channel_id IS NOT NULL AND p.kind LIKE 'channel_%'
"""
# Per call of a part: the latest result of each of its checks, and its latest verdict. (The checks' files
# are sorted by receipt_id, the logical id here: a part reads its own row groups.)
HISTORIES = """
SELECT receipt_id AS logical_id,
       list({'check': "check", 'result': last.result, 'reason': last.reason, 'ever_passed': ever_passed}) AS history,
       any_value(last) FILTER (WHERE "check" = 'verdict') AS verdict
FROM (SELECT receipt_id, "check", bool_or(result = 'pass') AS ever_passed,
             arg_max({'result': result, 'reason': reason, 'proof_status': proof_status, 'resolution': resolution},
                     observed_at) AS last  -- (packed: arg_max would skip a NULL reason)
      FROM folded.checks WHERE {part_checks} GROUP BY receipt_id, "check")
GROUP BY receipt_id"""
TO_VERIFY = (
    """
WITH req AS MATERIALIZED (  -- the exchanges of one part's calls (materialized: a few thousand rows, read many times)
    SELECT receipt_id, logical_id, ts FROM folded.requests WHERE {part}
), histories AS ("""
    + HISTORIES
    + """
), pay AS (  -- each call's latest payment, and how many it sent (payments: one per paid request)
    SELECT r.logical_id, count(*) AS payment_count,
           arg_max({'payer': p.payer, 'pay_to': p.pay_to, 'asset': p.asset, 'amount': p.amount::HUGEINT,
                    'scheme': p.scheme, 'kind': p.kind, 'nonce': p.nonce, 'network': p.network,
                    'valid_after': p.valid_after, 'valid_before': p.valid_before, 'signer': p.signer,
                    'signer_error': p.signer_error, 'paid_at': epoch(p.sent_at), 'memo': p.memo,
                    'token_account': p.token_account, 'recent_blockhash': p.recent_blockhash,
                    'payee_token_account': p.payee_token_account, 'signature_sha256': p.signature_sha256,
                    'payment_tx': p.payment_tx, 'spender': p.spender, 'channel_id': p.channel_id},
                   p.sent_at) AS p
    FROM folded.payments p JOIN req r USING (receipt_id) GROUP BY r.logical_id
), settle AS (  -- each call's settlements (PAYMENT-RESPONSE): the latest tx hash and job id, how many
    SELECT r.logical_id, arg_max(s.tx_hash, s.seen_at) FILTER (WHERE s.tx_hash IS NOT NULL) AS payment_hash,
           arg_max(s.job_id, s.seen_at) FILTER (WHERE s.job_id IS NOT NULL) AS settlement_job_id,
           count(DISTINCT s.tx_hash) AS settlement_count,
           arg_max(s.amount::HUGEINT, s.seen_at) FILTER (WHERE s.amount IS NOT NULL) AS settled_amount,
           arg_max(s.seller_receipt, s.seen_at) FILTER (WHERE s.seller_receipt IS NOT NULL) AS seller_receipt
    FROM folded.settlements s JOIN req r USING (receipt_id) GROUP BY r.logical_id
), answer AS (  -- the HTTP status of each call's last attempt (calls.status: its latest answer; NULL: none)
    SELECT r.logical_id, arg_max({'status': a.status}, r.ts).status AS status
    FROM req r LEFT JOIN (
        SELECT receipt_id, arg_max({'status': status}, ts).status AS status
        FROM folded.responses WHERE receipt_id IN (SELECT receipt_id FROM req) GROUP BY receipt_id) a USING (receipt_id)
    GROUP BY r.logical_id
), chal AS (  -- the offer the payment answers, as the receipts view (storage/views.sql `chal`) picks it: of
             -- the call's latest 402, the last entry for the payment's asset and network, else the first
    SELECT r.logical_id, arg_max({'amount': o.amount::HUGEINT, 'pay_to': o.pay_to, 'asset': o.asset,
                                  'network': o.network},
                                 {'seen_at': o.seen_at, 'rid': o.receipt_id, 'match': m.match,
                                  'pos': CASE WHEN m.match THEN o.item ELSE -o.item END}) AS c
    FROM folded.offers o JOIN req r USING (receipt_id) LEFT JOIN pay USING (logical_id),
         LATERAL (SELECT coalesce(lower(o.asset) = lower(pay.p.asset) AND o.network = pay.p.network, false) AS match) m
    GROUP BY r.logical_id
)
SELECT pay.logical_id AS receipt_id, p.payer, p.pay_to, p.asset, p.scheme, p.kind, p.nonce,
       coalesce(p.network, c.network) AS network, p.valid_after, p.valid_before, p.paid_at, p.signer, p.signer_error,
       p.memo, p.token_account, p.recent_blockhash, p.payee_token_account, p.signature_sha256, p.payment_tx,
       p.spender, p.channel_id,
       CASE WHEN p.scheme IN ('exact', 'mpp', 'auth-capture') THEN p.amount END AS signed_amount,
       CASE WHEN p.scheme = 'upto' THEN p.amount END AS amount_cap,
       c.amount AS max_amount_required, c.pay_to AS challenge_pay_to, c.asset AS challenge_asset,
       c.network AS challenge_network, settle.payment_hash, settle.settlement_job_id, settle.seller_receipt,
       settle.settled_amount,
       coalesce(settle.settlement_count, 0) AS settlement_count, payment_count, answer.status,
       h.verdict.proof_status AS last_status, h.verdict.resolution AS last_resolution,
       h.verdict.reason AS last_reason, h.history
FROM pay
LEFT JOIN settle USING (logical_id)
LEFT JOIN chal USING (logical_id)
LEFT JOIN answer USING (logical_id)
LEFT JOIN histories h USING (logical_id)
WHERE coalesce(h.verdict.proof_status, 'pending') IN ('pending', 'passed')
  AND pay.logical_id NOT IN (SELECT logical_id FROM og_calls)
  AND pay.logical_id NOT IN (SELECT logical_id FROM channel_calls) AND {shard}
"""
)


class PaidCall(TypedDict):
    """A row of TO_VERIFY: one paid call, its latest payment, settlement, offer and answer, and what the last
    pass decided (tests/verifier/test_rows.py holds it to the query's columns)."""

    receipt_id: str  # (the logical id: the receipt of the whole call)
    payer: str | None
    pay_to: str | None
    asset: str | None
    scheme: str | None
    kind: str | None
    nonce: str | None
    network: str | None
    valid_after: int | None
    valid_before: int | None
    paid_at: float | None  # seconds since the epoch
    signer: str | None
    signer_error: str | None
    memo: str | None
    token_account: str | None
    recent_blockhash: str | None
    payee_token_account: str | None
    signature_sha256: str | None
    payment_tx: str | None
    spender: str | None
    channel_id: str | None
    signed_amount: int | None
    amount_cap: int | None
    max_amount_required: int | None
    challenge_pay_to: str | None
    challenge_asset: str | None
    challenge_network: str | None
    payment_hash: str | None
    settlement_job_id: str | None
    seller_receipt: str | None  # JSON text
    settled_amount: int | None
    settlement_count: int
    payment_count: int
    status: int | None
    last_status: str | None
    last_resolution: str | None
    last_reason: str | None
    history: list[dict] | None
    settlement_ever_passed: NotRequired[bool]  # (set here: a settlement check of an earlier pass passed)


@dataclass
class Summary:
    seen: int = 0
    changed: int = 0
    statuses: dict = field(default_factory=dict)
    faults: list = field(default_factory=list)
    skipped: int = 0  # receipts of networks whose nodes were at fault: left as they were
    og_calls: int = 0  # the calls with an upto session or a TEE proof: verifier/og.py's pass
    channel_calls: int = 0  # the calls paid from a payment channel: verifier/channels.py's pass


def signature_check(r: Mapping[str, Any]) -> Check:  # (also an OpenGradient call's row: verifier/og.py)
    """The payment's signature: recovered at capture to the payer (an EOA); a contract wallet's (ERC-1271,
    ERC-6492) or an ERC-7710 delegation's is checked on chain when it settles (`by_settlement`), since the
    signature itself is never stored."""
    if (r.get("signer_error") or "").startswith((SMART_WALLET, DELEGATION, SIGNED_TX)):
        return Check("signature", "pending", "smart_wallet_signature", {"why": r["signer_error"]})
    if signer := r.get("signer"):
        ok = signer.lower() == (r.get("payer") or "").lower()
        return Check(
            "signature",
            "pass" if ok else "fail",
            None if ok else "signature_mismatch",
            {"signer": signer, "payer": r.get("payer")},
        )
    return Check("signature", "pending", "signature_unverifiable", {"why": r.get("signer_error")})


def by_settlement(signature: Check, settlement: Check) -> Check:
    """A contract wallet's signature, proved by the settlement that passed: the token (EIP-3009's
    `AuthorizationUsed` of the payer and nonce, or Permit2's transfer) accepted it on chain, asking the
    wallet's isValidSignature (ERC-1271) or deploying it first (ERC-6492)."""
    return Check(
        "signature", "pass", None, {**signature.detail, "by": "settlement", "tx": settlement.detail.get("tx_hash")}
    )


def terms_check(r: Mapping[str, Any]) -> Check:  # (also an OpenGradient call's row)
    problems = []
    if (offered_to := r.get("challenge_pay_to")) and (r.get("pay_to") or "").lower() != offered_to.lower():
        problems.append(("unexpected_pay_to", f"paid to {r.get('pay_to')}, the challenge said {offered_to}"))
    if (offered_asset := r.get("challenge_asset")) and (r.get("asset") or "").lower() != offered_asset.lower():
        problems.append(("unexpected_asset", f"asset {r.get('asset')}, the challenge said {offered_asset}"))
    signed = r.get("signed_amount") if r.get("signed_amount") is not None else r.get("amount_cap")
    asked = r.get("max_amount_required")
    if asked is not None and signed is not None and signed > asked:
        problems.append(("overcharged", f"signed {signed}, the challenge asked {asked}"))
    if (own := r.get("payment_tx")) and (named := r.get("payment_hash")) and own != named.lower():
        problems.append(
            (
                "reference_mismatch",
                f"the receipt names {named}, the payment's own transaction is {own}",
            )
        )
    if r.get("challenge_network") and r.get("network") and r["challenge_network"] != r["network"]:
        problems.append(("unexpected_network", f"paid on {r['network']}, the challenge said {r['challenge_network']}"))
    paid_at = r.get("paid_at")  # seconds since the epoch
    if paid_at and ((r.get("valid_after") or 0) > paid_at + 60 or (r.get("valid_before") or paid_at) < paid_at - 60):
        problems.append(
            (
                "outside_time_window",
                f"sent at {int(paid_at)}, valid from {r.get('valid_after')} to {r.get('valid_before')}",
            )
        )
    if not problems:
        return Check("terms", "pass", None, {"challenge_checked": r.get("max_amount_required") is not None})
    return Check("terms", "fail", problems[0][0], {"problems": [p for _, p in problems]})


def seller_receipt_check(r: PaidCall) -> Check | None:
    """The seller's signed receipt (the `offer-receipt` extension), when the server sent one: signed by
    `pay_to` (the spec's simplest authorization; any other signer is not the seller's), and saying what
    was paid (payer, network, and the settlement transaction when it names one). None: no receipt."""
    raw = r.get("seller_receipt")
    if not raw:
        return None
    doc = orjson.loads(raw) if isinstance(raw, (str, bytes)) else raw
    payload = doc.get("payload") if isinstance(doc.get("payload"), dict) else {}
    detail = {"format": doc.get("format"), "payload": payload, "signer": doc.get("signer")}
    if not doc.get("signer"):
        return Check(
            "seller_receipt", "fail", "seller_receipt_unverifiable", {**detail, "why": doc.get("signer_error")}
        )
    if doc["signer"].lower() != (r.get("pay_to") or "").lower():
        return Check("seller_receipt", "fail", "seller_receipt_invalid", {**detail, "why": "not signed by pay_to"})
    said = {
        "payer": payload.get("payer"),
        "network": payload.get("network"),
        "transaction": payload.get("transaction") or None,
    }
    paid = {"payer": r.get("payer"), "network": r.get("network"), "transaction": r.get("payment_hash")}
    wrong = [k for k, v in said.items() if v is not None and str(v).lower() != str(paid[k] or "").lower()]
    if wrong:
        return Check("seller_receipt", "fail", "seller_receipt_disagrees", {**detail, "differs": wrong})
    return Check("seller_receipt", "pass", None, detail)


ON_CHAIN = ("eip155:", "solana:")  # the networks whose settlements a chain holds


def preimage_check(r: PaidCall) -> Check:
    """L402: the preimage (its SHA-256, taken at capture; the preimage itself is never kept) is the payment
    hash the macaroon names: the proof that the Lightning invoice was paid (addon/l402.py)."""
    ok = bool(r.get("nonce")) and r.get("signature_sha256") == r["nonce"]
    return Check(
        "preimage",
        "pass" if ok else "fail",
        None if ok else "bad_preimage",
        {"payment_hash": r.get("nonce"), "preimage_sha256": r.get("signature_sha256"), "trust": "offline"},
    )


def payment_check(r: PaidCall) -> Check:
    """A paid call whose payment names no payer: one settled off chain (its network is no chain: a
    provider's own settlement, whose id is kept), or a shape this verifier cannot read (its decode errors
    are in `payments.errors`): said once, not left `not_verified`."""
    network = r.get("network") or ""
    if network and not network.startswith(ON_CHAIN):
        return Check(
            "settlement_tx",
            "off_chain",
            "off_chain",
            {"network": network, "settlement_id": r.get("payment_hash") or r.get("settlement_job_id")},
        )
    return Check(
        "payment",
        "pending",
        "unsupported_payment",
        {"scheme": r.get("scheme"), "kind": r.get("kind"), "network": network or None},
    )


def verdict(checks: list[Check], r: PaidCall, now: float, grace: float = 600.0) -> Verdict:
    """(proof_status, resolution, reason) from the checks of one receipt."""
    if any(c.result == "off_chain" for c in checks):
        return Verdict("off_chain", None, "off_chain")
    failed: list[Check] = []
    pending: list[Check] = []
    settled = False
    seller: list[str | None] = []
    for c in checks:
        if c.name == "seller_receipt":  # the seller's word: one that disagrees makes the receipt risky, not failed
            seller += [c.reason] if c.result == "fail" else []
        elif c.result == "fail":
            failed.append(c)
        elif c.result == "pending":
            pending.append(c)
        elif c.name == "settlement_tx":
            settled = True
    status = "failed" if failed else "pending" if pending else "passed"
    pending.sort(key=lambda c: c.reason == "smart_wallet_signature")  # (it waits on the settlement: say why that waits)
    first = failed[0] if failed else pending[0] if pending else None
    reason = first.reason if first else None
    risks: list[str | None] = []
    if settled and ((r.get("status") or 0) >= 500 or r.get("status") is None):
        risks.append("paid_but_server_error")
    if (r.get("settlement_count") or 0) > 1:
        risks.append("double_settlement")
    risks += [c.reason for c in failed if c.reason in ("unexpected_pay_to", "overcharged")]
    unsettled = any(c.name == "settlement_tx" and c.reason in UNSETTLED for c in pending)
    if unsettled and (valid_before := r.get("valid_before")) and now > valid_before + grace:
        if r.get("settlement_ever_passed"):  # it was on chain, a reorg took it, it never came back
            return Verdict("failed", None, "settlement_disappeared")
        risks.append("pending_past_deadline")
    risks += seller  # (after the payment's own risks)
    if (risks or failed) and any(c.name == "refund" and c.result == "pass" for c in checks):
        return Verdict(status, "refunded", (risks or [reason])[0])
    if risks:
        return Verdict(status, "risky", risks[0])
    if status == "passed" and (r.get("payment_count") or 0) > 1:
        return Verdict(status, "retried", None)
    return Verdict(status, None, reason)


# A pending settlement in one of these states is not on the canonical chain (a deadline makes it risky,
# and one that had passed, failed: it disappeared).
UNSETTLED = ("tx_not_found", "no_tx_hash", "tx_not_in_block", "block_hash_mismatch")
# A settlement that passed is not demoted for these: they say that a node is behind (it has not
# served the block, or the block that confirms it), not that the settlement is gone.
BEHIND = ("awaiting_confirmations", "block_not_found")


CHUNK = 500  # receipts per round: memory stays flat however many there are


@contextlib.contextmanager
def _rare_collections(allocations: int = 50_000):
    """A pass allocates a few short-lived objects per receipt and keeps a round's worth: the cyclic
    garbage collector, run every 700 allocations by default, would spend ~15% of the pass scanning them."""
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], allocations), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def verify_once(
    data_dir, settings: Settings, journal: Journal, chunk: int = CHUNK, shard: tuple[int, int] | None = None
) -> Summary:
    """One pass over every receipt that is not final yet: the x402 receipts `chunk` at a time, then the
    OpenGradient ones (verifier/og.py). `data_dir` may be a lake (storage/db.py `Lake`). With `shard`
    (k, K), only the x402 receipts of shard k (`in_shard`), and the OpenGradient ones in shard 1 only."""
    summary = Summary()
    readers: dict[tuple[str, str], _Reader] = {}
    written: list[Future] = []
    with (
        _rare_collections(),
        ThreadPoolExecutor(1, thread_name_prefix="verify-chain") as chain_reader,
        ThreadPoolExecutor(1, thread_name_prefix="verify-write") as writer,
    ):  # appends wait on the journal's lock
        chain_reader.submit(warm_up)  # while the tables are read
        # Every DuckDB call of the pass runs on `querier`, one thread: DuckDB's allocator then reuses the
        # memory of one query for the next (queried from another thread, the peak is ~20 MB more).
        # (a second thread buys little here and costs CPU and memory)
        with (
            db.connect(data_dir, views=False, settings={"threads": 1}) as con,
            ThreadPoolExecutor(1, thread_name_prefix="verify-query") as querier,
        ):  # done before `con` closes
            summary.og_calls, summary.channel_calls = querier.submit(_prepare, con).result()
            # the next rounds: their receipts, and their chain views being read
            ahead: collections.deque[tuple[dict, Future]] = collections.deque()
            for batch, cols in _rounds(con, chunk, querier, shard=shard):
                ahead.append(_read_chain(batch, cols, settings, readers, chain_reader))
                if len(ahead) > DEPTH:
                    _decide_round(ahead.popleft(), settings, summary, journal, writer, written)
            while ahead:
                _decide_round(ahead.popleft(), settings, summary, journal, writer, written)
            first_shard = shard is None or shard[0] == 1
            # the OpenGradient pass (and its heavier imports) only where it has work, on the same connection
            # and thread: the memory of one pass serves both
            if summary.og_calls and first_shard:
                from . import og

                querier.submit(og.verify_pass, con, settings, journal, summary).result()
            # the payment channels' pass (on one shard: a channel is judged whole)
            if summary.channel_calls and first_shard:
                from . import channels

                querier.submit(channels.verify_pass, con, settings, journal, summary).result()
    for done in written:  # every check event is durable before the pass returns
        done.result().result(30.0)
    return summary


def _prepare(con) -> tuple[int, int]:
    """The pass's tables OG_CALLS and CHANNEL_CALLS; returns how many calls each holds."""
    con.execute(OG_CALLS)
    con.execute(CHANNEL_CALLS)
    return tuple(con.execute("SELECT (SELECT count(*) FROM og_calls), (SELECT count(*) FROM channel_calls)").fetchone())


PART = 2500  # receipts per query: DuckDB's working memory follows the receipts it aggregates at once
PARTS = """
SELECT id FROM (SELECT DISTINCT logical_id AS id FROM {calls} WHERE logical_id IS NOT NULL)
QUALIFY (row_number() OVER (ORDER BY id) - 1) % $part = 0 ORDER BY id
"""
PAID_CALLS = "(SELECT logical_id FROM folded.requests WHERE paid)"  # the x402 pass's calls


def parts(con, calls: str, part: int) -> list[tuple[str | None, str | None]]:
    """The logical ids of `calls` (a relation with a `logical_id`) cut in ranges [lo, hi) of `part` calls
    each (None: unbounded), in order."""
    firsts = con.execute(db.inline(PARTS.replace("{calls}", calls), {"part": part})).fetchall()
    starts = [None] + [lo for (lo,) in firsts[1:]]
    return list(zip(starts, starts[1:] + [None]))


def in_part(lo: str | None, hi: str | None, column: str = "logical_id") -> str:
    """SQL: `column` is in [lo, hi) (None: unbounded; the first part also takes NULL)."""
    where = {
        (False, False): "true",
        (False, True): f"{column} IS NULL OR {column} < $hi",
        (True, False): f"{column} >= $lo",
        (True, True): f"{column} >= $lo AND {column} < $hi",
    }
    return "(" + db.inline(where[lo is not None, hi is not None], {"lo": lo, "hi": hi}) + ")"


def to_verify(lo: str | None, hi: str | None, shard: tuple[int, int] | None = None) -> str:
    """TO_VERIFY for the calls whose logical id is in [lo, hi) (`in_part`), of one shard."""
    return (
        TO_VERIFY.replace("{part}", in_part(lo, hi))
        .replace("{part_checks}", in_part(lo, hi, "receipt_id"))
        .replace("{shard}", in_shard(shard))
    )


def in_shard(shard: tuple[int, int] | None) -> str:
    """SQL: the receipt is shard k of K (`shard` = (k, K), k from 1): by its network and payer, so that each
    shard reads the chain for its own payers. None: every receipt."""
    if shard is None:
        return "true"
    k, total = shard
    return f"hash(coalesce(p.network, c.network, ''), lower(coalesce(p.payer, ''))) % {int(total)} = {int(k) - 1}"


def _rounds(con, chunk: int, pool: ThreadPoolExecutor, part: int | None = None, shard: tuple[int, int] | None = None):
    """The receipts to verify, `chunk` at a time (and their column names), queried a part (`part`
    receipts, default PART) at a time in `pool`: the next part's query runs while this part's rounds
    are decided (DuckDB works without holding the GIL), on a cursor of its own (a DuckDB connection
    holds one result at a time). A part is fetched whole before the next query starts: DuckDB keeps a
    query's working memory until then."""
    parts_ = pool.submit(parts, con, PAID_CALLS, part or PART).result()

    def query(lo, hi):
        return con.cursor().execute(to_verify(lo, hi, shard) + " ORDER BY network, receipt_id")

    ahead = pool.submit(query, *parts_[0])
    for i in range(len(parts_)):
        with ahead.result() as cur:
            rows, cols = cur.fetchall(), [d[0] for d in cur.description]
        if i + 1 < len(parts_):
            ahead = pool.submit(query, *parts_[i + 1])
        for start in range(0, len(rows), chunk):
            yield rows[start : start + chunk], cols


DEPTH = 1  # rounds whose chain views are read while one is decided


def _decide_round(
    round_: tuple[dict, Future], settings: Settings, summary: Summary, journal: Journal, writer, written: list
) -> None:
    events = _decide(*round_, settings, summary)
    if events:
        written.append(writer.submit(journal.append, events))


def _read_chain(batch: list[tuple], cols: list[str], settings: Settings, readers: dict, pool) -> tuple[dict, Future]:
    """A round's receipts by network, and (in the background) what the nodes say about them."""
    groups: dict[str, list[PaidCall]] = {}
    for row in batch:
        r = cast(PaidCall, dict(zip(cols, row)))
        groups.setdefault(r.get("network") or "unknown", []).append(r)
    return groups, pool.submit(_chain_views, groups, settings, readers)


@dataclass
class _Reader:
    """One network's node during a pass, and where the last round's settlements were."""

    rpc: Rpc
    near: tuple[int, int] | None = None  # first and last block of the last round's settlements
    carry: dict = field(default_factory=dict)  # receipts the last round read but did not want, of
    carry_for: dict | None = None  # these payers (by token),
    read_to: int = -1  # and the last block it read
    head: int | None = None  # the last head seen
    blocks: dict = field(default_factory=dict)  # the last round's canonical blocks by height
    genesis: str | None = None  # a Solana node's genesis hash, once checked against the network id

    def next_blocks(self, tokens: dict, head: int, step: int) -> tuple[int, int] | None:
        """The blocks after those last read for these payers, as many as the last round's settlements
        spanned (up to `head`); None before the first round."""
        if not self.near:
            return None
        first, last = self.near
        start = self.read_to + 1 if self.carry_for == tokens else last
        return (start, min(head, start + min(max(1, last - first), step) - 1)) if start <= head else None


def _chain_views(groups: dict, settings: Settings, readers: dict) -> tuple[dict, list[str]]:
    """Per network of the round: its endpoints' views (None: a fault, nothing is decided)."""
    views: dict[str, list[ChainView | solana.SolanaView] | None] = {}
    faults: list[str] = []
    for network, rows in groups.items():
        net, rows = settings.network(network), [r for r in rows if r.get("payer")]  # (the others: payment_check)
        if net and net.endpoints and rows:
            views[network] = _network_views(net, rows, faults, readers)
    return views, faults


def _decide(groups: dict, chain: Future, settings: Settings, summary: Summary) -> list[Event]:
    last = _history(r for group in groups.values() for r in group)
    views, faults = chain.result()
    summary.faults += faults
    events: list[Event] = []
    for network in sorted(groups):
        if network in views and views[network] is None:  # a node fault: its receipts stay as they were
            summary.skipped += len(groups[network])
            continue
        events += _verify_network(network, groups[network], settings, last, summary, views.get(network))
    return events


def _history(rows) -> dict:
    """The latest result of each check of these receipts; marks those whose settlement once passed."""
    last = {}
    for r in rows:
        for h in r.pop("history") or ():
            last[(r["receipt_id"], h["check"])] = (h["result"], h["reason"])
            if h["ever_passed"] and h["check"] == "settlement_tx":
                r["settlement_ever_passed"] = True
    return last


@dataclass
class ChainView:
    """What one pass learned from a node: head, receipts by tx hash, and the tokens' recent logs."""

    head: int
    head_time: float | None = None  # the head block's timestamp: deadlines are chain time
    receipts: dict = field(default_factory=dict)
    transfers: list = field(default_factory=list)  # decoded Transfer logs, with block and tx
    authorizations: dict = field(default_factory=dict)  # (token, authorizer, nonce) -> tx hash
    blocks: dict = field(default_factory=dict)  # height -> its canonical Block (None: none there)
    escrow: dict = field(default_factory=dict)  # auth-capture payment id -> its escrow events since

    def settlement_tx(self, r: PaidCall) -> tuple[str | None, str]:
        """The tx hash the server gave, else the one a log scan found (AuthorizationUsed of the nonce)."""
        if r.get("payment_hash"):
            return r["payment_hash"], "response"
        key = ((r.get("asset") or "").lower(), (r.get("payer") or "").lower(), (r.get("nonce") or "").lower())
        return self.authorizations.get(key), "log_scan"

    def refunds(self, r: PaidCall, since_block: int) -> list[dict]:
        if not self.transfers:  # no refund scan this round
            return []
        token, payer, pay_to = ((r.get("asset") or ""), (r.get("payer") or ""), (r.get("pay_to") or ""))
        token, payer, pay_to = token.lower(), payer.lower(), pay_to.lower()
        return [
            t
            for t in self.transfers
            if t["token"] == token and t["from"] == pay_to and t["to"] == payer and t["block"] >= since_block
        ]


def _verify_network(
    network: str, rows: list[PaidCall], settings: Settings, last: dict, summary: Summary, views: list | None
) -> list[Event]:
    """The checks of one network's receipts of a round, given each endpoint's view of the chain (None:
    no endpoint is configured)."""
    net = settings.network(network)
    events, grace = [], net.deadline_grace if net else 600.0
    # deadlines are judged in chain time: the earliest head any endpoint gave (a late one never hastens a verdict)
    chain_now = min((v.head_time for v in views or () if v.head_time), default=None)
    for r in rows:
        summary.seen += 1
        if r.get("scheme") == "l402":  # proved offline, by its preimage: the payment hash is its reference
            checks = [preimage_check(r)]
            events += changes(
                r, checks, last, summary, verdict(checks, r, chain_now or time.time(), grace), tx=r.get("nonce")
            )
            continue
        if not r.get("payer") or "_session_" in (r.get("kind") or ""):  # (MPP session steps: not verified yet)
            events += _changes(r, [payment_check(r)], last, summary, grace, chain_now or time.time())
            continue
        checks = [signature_check(r), terms_check(r)] + [c for c in [seller_receipt_check(r)] if c]
        if not views:
            checks.append(Check("settlement_tx", "pending", "no_rpc_configured", {"network": network}))
        else:
            settled = (
                solana.settlement_checks(r, views, net, time.time())
                if solana.is_solana(network)
                else _settlement_checks(r, views, net)
            )
            if _held(r, settled[0], last):
                summary.statuses["passed"] = summary.statuses.get("passed", 0) + 1
                continue
            checks += settled
            if settled[0].result == "pass" and checks[0].reason == "smart_wallet_signature":
                checks[0] = by_settlement(checks[0], settled[0])
            if r.get("kind") == "auth_capture" and settled[0].result == "pass":
                checks.append(capture_check(r, views))
        captured = next((c for c in checks if c.name == "capture" and c.result == "pass"), None)
        if captured:  # (the call's charge: what was captured; its tx, the capture's)
            events += changes(
                r,
                checks,
                last,
                summary,
                verdict(checks, r, chain_now or time.time(), grace),
                tx=captured.detail["tx"],
                session_amount=captured.detail["captured"],
            )
            continue
        events += _changes(r, checks, last, summary, grace, chain_now or time.time())
    return events


def _held(r: PaidCall, check: Check, last: dict) -> bool:
    """A settlement that passed stays passed while the nodes only seem behind (BEHIND)."""
    return (
        check.result == "pending"
        and check.reason in BEHIND
        and last.get((r["receipt_id"], "settlement_tx")) == ("pass", None)
        and r.get("last_status") == "passed"
    )


def _settlement_checks(r: PaidCall, views: list, net) -> list[Check]:
    """The settlement check the endpoints agree on (agreement.py), and any refund a quorum of them saw."""
    check = agree([_endpoint_check(r, view, net) for view in views], net.quorum_size)
    out = [check]
    if check.block is not None:
        back = agreed_transfers([view.refunds(r, check.block) for view in views], net.quorum_size)
        if back:
            out.append(Check("refund", "pass", None, {"transfers": back}, back[-1]["block"]))
    return out


def _endpoint_check(r: PaidCall, view: ChainView, net) -> Check:
    """The settlement check from one endpoint's evidence alone."""
    tx, found_by = view.settlement_tx(r)
    if tx is None:
        return Check(
            "settlement_tx",
            "pending",
            "no_tx_hash" if not r.get("payment_hash") else "tx_not_found",
            {"job_id": r.get("settlement_job_id"), "scanned_from_block": max(0, view.head - net.scan_blocks)},
        )
    payment, receipt = _payment(r), view.receipts.get(tx)
    check = canonical_settlement(
        payment,
        tx,
        receipt,
        view.blocks,
        view.head,
        net.confirmations,
        net.facilitators[0] if len(net.facilitators) == 1 else None,
    )
    check.detail["found_by"] = found_by  # the detail is a new dict of this check's
    if receipt and len(net.endpoints) > 1:  # what the endpoints' logs must agree on (one has no one to agree with)
        check.detail["logs"] = logs_digest(payment, receipt.get("logs") or [])
    return check


def _network_views(
    net, rows: list[PaidCall], faults: list[str], readers: dict
) -> list[ChainView | solana.SolanaView] | None:
    """Each endpoint's view of one round; None (a fault: nothing about this network is decided this
    pass, no receipt of it changes) when fewer than `quorum` endpoints answered."""
    views, errors = [], []
    if net.quorum_size > len(net.endpoints):
        faults.append(f"{net.caip2}: quorum_not_reached: quorum {net.quorum_size} but {len(net.endpoints)} rpc URL(s)")
        return None
    for url in net.endpoints:
        key = (net.caip2, url)
        if key not in readers:
            chain_id = None if solana.is_solana(net.caip2) else int(net.caip2.split(":")[1])
            readers[key] = _Reader(Rpc(url, timeout=net.rpc_timeout, chain_id=chain_id, max_bytes=net.rpc_max_bytes))
        try:
            views.append((solana.read_view if solana.is_solana(net.caip2) else _chain_view)(net, rows, readers[key]))
        except (RpcError, TypeError, KeyError, ValueError, AttributeError, IndexError) as exc:
            readers[key] = _Reader(readers[key].rpc)  # what it read before is not to be built on
            errors.append(
                str(exc)
                if isinstance(exc, RpcError)
                else f"bad_response: {url} answered data of the wrong shape ({type(exc).__name__}: {str(exc)[:100]})"
            )
    if len(views) >= net.quorum_size:
        for e in errors:  # the others agree without it
            log.warning("receipts verify: %s: %s — decided by the endpoints that answered", net.caip2, e)
        return views
    fault = (
        errors[0]
        if len(net.endpoints) == 1
        else (
            f"quorum_not_reached: {len(views)} of {len(net.endpoints)} endpoints answered, {net.quorum_size} must "
            f"agree ({'; '.join(errors)})"
        )
    )
    faults.append(f"{net.caip2}: {fault}")
    log.error("receipts verify: %s: %s — nothing about this network is decided until it answers", net.caip2, fault)
    return None


def _chain_view(net, rows: list[PaidCall], reader: _Reader) -> ChainView:
    """One round's facts from one endpoint, in few batched calls; raises RpcError on a fault."""
    rpc = reader.rpc
    ahead = None  # the next blocks' logs, asked for with the head (blocks up to the last head seen exist)
    if len(rows) > BULK and reader.head is not None:
        tokens = _payer_topics(rows)
        blocks = reader.next_blocks(tokens, reader.head, LOG_STEP)
        ahead = (tokens, blocks, _payer_log_calls(tokens, [blocks])) if blocks else None
    block, *logs = rpc.batch([("eth_getBlockByNumber", ["latest", False])] + (ahead[2] if ahead else []))
    view = ChainView(head=int(block["number"], 16), head_time=float(int(block["timestamp"], 16)))
    reader.head = view.head
    _scan_logs(rpc, view, rows, net.scan_blocks)
    hashes = sorted({h for r in rows if (h := view.settlement_tx(r)[0])})
    if len(hashes) > BULK:
        view.receipts.update(
            _receipts_from_logs(
                reader, view.head, rows, set(hashes), net, (ahead[0], ahead[1], logs) if ahead else None
            )
        )
    rest = [h for h in hashes if h not in view.receipts]
    for start in range(0, len(rest), 500):
        part = rest[start : start + 500]
        view.receipts.update(zip(part, rpc.batch([("eth_getTransactionReceipt", [h]) for h in part])))
    _read_blocks(reader, view, net)
    _scan_escrow(rpc, view, rows, net.scan_blocks)
    return view


def _scan_escrow(rpc: Rpc, view: ChainView, rows: list[PaidCall], blocks: int, step: int = 2000) -> None:
    """The escrow's capture, void, reclaim and refund events of this round's auth-capture payments (by the
    payment's id, topic 1), from the known escrow deployments, over the last `blocks` blocks."""
    ids = sorted({cid.lower() for r in rows if r.get("kind") == "auth_capture" and (cid := r.get("channel_id"))})
    calls = [
        (
            "eth_getLogs",
            [
                {
                    "address": list(authcapture.ESCROWS),
                    "fromBlock": hex(lo),
                    "toBlock": hex(min(lo + step - 1, view.head)),
                    "topics": [list(authcapture.AFTER), ids[start : start + 500]],
                }
            ],
        )
        for start in range(0, len(ids), 500)
        for lo in range(max(0, view.head - blocks), view.head + 1, step)
    ]
    for logs in rpc.batch(calls) if calls else []:
        for lg in logs or []:
            topics = [t.lower() for t in lg.get("topics") or []]
            if len(topics) >= 2 and topics[0] in authcapture.AFTER:
                view.escrow.setdefault(topics[1], []).append(
                    {
                        "event": authcapture.AFTER[topics[0]],
                        "amount": int((lg.get("data") or "0x")[2:66] or "0", 16),
                        "tx": lg["transactionHash"].lower(),
                        "block": int(lg["blockNumber"], 16),
                    }
                )


def _read_blocks(reader: _Reader, view: ChainView, net) -> None:
    """The canonical blocks this round's settlements need, each asked for once (a block's many
    settlements share it, and the last round's blocks are kept): the block at each settlement's
    height, and the block `confirmations - 1` above it, whose existence makes it final. Where a
    receipt read from logs lacks its sender and a facilitator is configured, its block comes with
    the transactions in full."""
    full, heights = set(), set()
    for rc in view.receipts.values():
        if rc:
            height = int(rc["blockNumber"], 16)
            heights |= {height, height + max(1, net.confirmations) - 1}
            if rc.get("from") is None and net.facilitators:
                full.add(height)
    known = {h: b for h, b in reader.blocks.items() if h in heights and h not in full}
    light = sorted(heights - known.keys() - full)
    for size, wanted, whole in ((500, light, False), (20, sorted(full), True)):
        for start in range(0, len(wanted), size):
            part = wanted[start : start + size]
            for height, answer in zip(
                part, reader.rpc.batch([("eth_getBlockByNumber", [hex(h), whole]) for h in part])
            ):
                known[height] = block_of(answer)
                if whole:
                    _senders(answer, view.receipts)
    view.blocks = reader.blocks = known


def _senders(block: dict | None, receipts: dict) -> None:
    """The `from` of the receipts (read from logs) whose transactions are in this full block."""
    for tx in (block or {}).get("transactions") or []:
        rc = receipts.get(tx["hash"].lower())
        if rc is not None and rc.get("from") is None:
            rc["from"] = tx["from"]


BULK = 50  # above this many settlements in a round, read them from the token's logs, not one by one


def _topic(value: str) -> str:
    return "0x" + value.lower().removeprefix("0x").rjust(64, "0")


_WORD = re.compile(r"0[xX][0-9a-fA-F]{64}")  # a 32-byte topic (nodes reject malformed ones)


LOG_STEP = 2000  # blocks per eth_getLogs call


def _receipts_from_logs(
    reader: _Reader,
    head: int,
    rows: list[PaidCall],
    wanted: set[str],
    net,
    ahead: tuple | None = None,
    step: int = LOG_STEP,
) -> dict:
    """Receipts of many settlements at once, from the tokens' Transfer and AuthorizationUsed logs whose
    first topic is one of the payers (a log exists only if its transaction succeeded, and carries the
    block), read a whole block at a time for just the blocks that hold this round's settlements.
    Rounds follow the receipts' time, so those usually come right after the blocks the last round
    read (whose other receipts it kept): the next blocks are read first, as many as the last round's
    settlements spanned (`ahead`: the first such read, already asked for with the head). The
    AuthorizationUsed logs of the payers' nonces locate the rest. Transactions not found this way are
    looked up one by one by the caller."""
    tokens = _payer_topics(rows)
    found: dict[str, dict] = {}
    carried = reader.carry_for == tokens
    unclaimed: dict[str, dict] = reader.carry if carried else {}  # read, not wanted yet: kept for later rounds
    for tx in wanted & unclaimed.keys():
        found[tx] = unclaimed.pop(tx)
    reader.carry, reader.carry_for = {}, (tokens if carried else None)
    read_to = reader.read_to if carried else None
    for n in range(2):
        blocks = reader.next_blocks(tokens, head, step)
        if not blocks or not wanted - found.keys():
            break
        answers = (
            ahead[2]
            if n == 0 and ahead and ahead[:2] == (tokens, blocks)
            else reader.rpc.batch(_payer_log_calls(tokens, [blocks]))
        )
        unclaimed.update(_gather(answers, wanted, found))
        read_to, reader.read_to, reader.carry_for = blocks[1], blocks[1], tokens  # the next read goes on from here
    missing = wanted - found.keys()
    if missing:
        nonces: dict[str, set] = {}
        for r in rows:
            nonce, asset = r.get("nonce") or "", r.get("asset")
            if (
                r.get("kind") == "eip3009"
                and _WORD.fullmatch(nonce)
                and asset
                and (r.get("payment_hash") or "").lower() in missing
            ):
                nonces.setdefault(asset.lower(), set()).add(nonce.lower())
        first = max(0, head - net.scan_blocks)
        windows = [(lo, min(lo + step - 1, head)) for lo in range(first, head + 1, step)]
        calls = []
        for token, payers in tokens.items():
            some = sorted(nonces.get(token, ()))
            for i in range(0, len(payers), 100):
                for j in range(0, len(some), 500):  # nodes cap the alternatives per topic (geth: 1000)
                    calls += [
                        (
                            "eth_getLogs",
                            [
                                {
                                    "address": token,
                                    "fromBlock": hex(lo),
                                    "toBlock": hex(hi),
                                    "topics": [AUTHORIZATION_USED, payers[i : i + 100], some[j : j + 500]],
                                }
                            ],
                        )
                        for lo, hi in windows
                    ]
        heights = {
            int(lg["blockNumber"], 16)
            for logs in reader.rpc.batch(calls)
            for lg in logs or []
            if lg["transactionHash"].lower() in missing
        }
        runs = _runs(heights, step)
        unclaimed.update(_gather(reader.rpc.batch(_payer_log_calls(tokens, runs)), wanted, found))
        read_to = max([read_to if read_to is not None else -1] + [hi for _, hi in runs])
    if found:
        at = [int(r["blockNumber"], 16) for r in found.values()]
        reader.near = (min(at), max(at))
    if read_to is not None and len(unclaimed) <= 4 * len(wanted):  # for the next round
        reader.carry, reader.carry_for, reader.read_to = unclaimed, tokens, read_to
    else:
        reader.carry_for = None
    return found  # their senders and blocks: _read_blocks


def _payer_topics(rows: list[PaidCall]) -> dict[str, list[str]]:
    """The payers (as log topics) of each token of these receipts."""
    tokens: dict[str, set] = {}
    for r in rows:
        token, payer = (r.get("asset") or "").lower(), r.get("payer")
        if token and payer:
            tokens.setdefault(token, set()).add(payer)
    return {token: sorted({_topic(p) for p in payers}) for token, payers in sorted(tokens.items())}


def _payer_log_calls(tokens: dict, ranges: list[tuple[int, int]]) -> list[tuple[str, list]]:
    """eth_getLogs calls for the payers' Transfer and AuthorizationUsed logs in `ranges`."""
    return [
        (
            "eth_getLogs",
            [
                {
                    "address": token,
                    "fromBlock": hex(lo),
                    "toBlock": hex(hi),
                    "topics": [[TRANSFER, AUTHORIZATION_USED], payers[i : i + 100]],
                }
            ],
        )
        for token, payers in tokens.items()
        for i in range(0, len(payers), 100)
        for lo, hi in ranges
    ]


def _gather(answers: list, wanted: set[str], found: dict) -> dict:
    """Logs gathered into receipts: of `wanted` transactions into `found`; the others' are returned."""
    others: dict[str, dict] = {}
    for logs in answers:
        for lg in logs or []:
            tx = lg["transactionHash"].lower()
            into = found if tx in wanted else others
            if tx not in into:
                into[tx] = {
                    "status": "0x1",
                    "blockNumber": lg["blockNumber"],
                    "blockHash": lg.get("blockHash"),
                    "from": None,
                    "logs": [],
                }
            elif into[tx]["blockHash"] != lg.get("blockHash"):  # one transaction, two blocks: not canonical
                into[tx]["blockHash"] = None
            into[tx]["logs"].append(
                {
                    "address": lg["address"],
                    "topics": lg["topics"],
                    "data": lg.get("data"),
                    "logIndex": lg.get("logIndex"),
                }
            )
    return others


def _runs(blocks, step: int, gap: int = 100) -> list[tuple[int, int]]:
    """Block ranges covering `blocks` (runs closer than `gap` merged), each at most `step` long."""
    out: list[list[int]] = []
    for b in sorted(blocks):
        if out and b - out[-1][1] <= gap and b - out[-1][0] < step:
            out[-1][1] = b
        else:
            out.append([b, b])
    return [(lo, hi) for lo, hi in out]


def _scan_logs(rpc: Rpc, view: ChainView, rows: list[PaidCall], blocks: int, step: int = 2000) -> None:
    """Targeted log scans of the last `blocks` blocks, in one batch: AuthorizationUsed of payers whose
    settlement hash is unknown, and Transfers back from payee to payer where a refund may matter."""
    lost: dict[str, set] = {}
    back: dict[str, tuple[set, set]] = {}
    for r in rows:
        token, payer = (r.get("asset") or "").lower(), r.get("payer")
        if not token or not payer:
            continue
        if not r.get("payment_hash"):
            lost.setdefault(token, set()).add(_topic(payer))
        if (pay_to := r.get("pay_to")) and refund_matters(r):
            to, by = back.setdefault(token, (set(), set()))
            to.add(_topic(pay_to))
            by.add(_topic(payer))
    filters = []
    for token in sorted(lost.keys() | back.keys()):
        if token in lost:
            filters.append({"address": token, "topics": [AUTHORIZATION_USED, sorted(lost[token])]})
        if token in back:
            filters.append({"address": token, "topics": [TRANSFER, sorted(back[token][0]), sorted(back[token][1])]})
    first = max(0, view.head - blocks)
    calls = [
        ("eth_getLogs", [{**f, "fromBlock": hex(lo), "toBlock": hex(min(lo + step - 1, view.head))}])
        for f in filters
        for lo in range(first, view.head + 1, step)
    ]
    for logs in rpc.batch(calls):
        for lg in logs or []:
            topics = [t.lower() for t in lg.get("topics") or []]
            token, block, tx = lg["address"].lower(), int(lg["blockNumber"], 16), lg["transactionHash"].lower()
            if topics[0] == TRANSFER and len(topics) == 3:
                view.transfers.append(
                    {
                        "token": token,
                        "from": "0x" + topics[1][-40:],
                        "to": "0x" + topics[2][-40:],
                        "value": int(lg.get("data") or "0x0", 16),
                        "block": block,
                        "tx": tx,
                    }
                )
            elif topics[0] == AUTHORIZATION_USED and len(topics) == 3:
                view.authorizations[(token, "0x" + topics[1][-40:], topics[2])] = tx


def _payment(r: PaidCall) -> dict:
    """What the settlement transaction must show: the payer's transfer to pay_to (for an auth-capture payment,
    to the escrow's collector, `spender`: the merchant is paid when the operator captures)."""
    amount = r.get("signed_amount") if r.get("signed_amount") is not None else r.get("amount_cap")
    pay_to = r.get("spender") if r.get("kind") == "auth_capture" else r.get("pay_to")
    return {
        "asset": r.get("asset"),
        "payer": r.get("payer"),
        "pay_to": pay_to,
        "amount": amount,
        "scheme": r.get("scheme"),
        "kind": r.get("kind"),
        "nonce": r.get("nonce"),
    }


def capture_check(r: PaidCall, views: list) -> Check:
    """An auth-capture payment once its hold is settled: what the escrow's events for its id say since
    (storage/authcapture.py): captured (the merchant was paid: pass, with the amount), voided or reclaimed with
    nothing captured (fail: the payer got it back), or nothing yet (pending: awaiting_capture). Read from
    the first endpoint's scan (trust `single-node`)."""
    events = views[0].escrow.get((r.get("channel_id") or "").lower(), []) if views else []
    sums = {
        kind: sum(e["amount"] for e in events if e["event"] == kind)
        for kind in ("captured", "voided", "reclaimed", "refunded")
    }
    detail = {
        "payment_id": r.get("channel_id"),
        **{k: str(v) for k, v in sums.items()},
        "trust": "single-node",
        "txs": [e["tx"] for e in events],
    }
    if sums["captured"]:
        last = [e for e in events if e["event"] == "captured"][-1]
        return Check("capture", "pass", None, {**detail, "tx": last["tx"]}, last["block"])
    if sums["voided"] or sums["reclaimed"]:
        return Check("capture", "fail", "voided" if sums["voided"] else "reclaimed", detail)
    return Check("capture", "pending", "awaiting_capture", detail)


def _changes(
    r: PaidCall, checks: list[Check], last: dict, summary: Summary, grace: float, chain_now: float
) -> list[Event]:
    return changes(r, checks, last, summary, verdict(checks, r, chain_now, grace))


def changes(
    r: Mapping[str, Any], checks: list[Check], last: dict, summary: Summary, decided: Verdict, **evidence
) -> list[Event]:
    """One `check` event holding the checks whose result changed (`last`: each check's latest result and
    reason), and the verdict `decided` if it changed, with `evidence` (the transaction that proves it:
    `tx`, `session_amount`)."""
    rid = r["receipt_id"]
    changed: list[CheckEntry | VerdictEntry] = [
        c.entry() for c in checks if last.get((rid, c.name)) != (c.result, c.reason)
    ]
    summary.statuses[decided.status] = summary.statuses.get(decided.status, 0) + 1
    if (r.get("last_status"), r.get("last_resolution"), r.get("last_reason")) != decided:
        summary.changed += 1
        changed.append(decided.entry(checks, **evidence))
    return [check_event(rid, changed)] if changed else []
