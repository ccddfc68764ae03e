"""OpenGradient receipts: session payments on Base, TEE proofs, and their anchors on the OpenGradient chain.

Every logical call that ran under an upto session or carries a TEE proof is verified here (the x402
pass in verify.py leaves them alone), one `check` event per receipt and pass, only on change:
- `signature` / `terms`: the session's Permit2 payment (as in verify.py);
- `session_settlement`: the one Base settlement of the session, found by log scan (the token's
  Transfer payer → payee in a transaction of the upto proxy that emitted `Settled()`, whose calldata
  carries the session permit's nonce; the Permit2 nonce bit is set; amount ≤ cap). The session total
  is exact; a call's share of it is unknown. Not settled by the permit deadline: `risky`;
- `tee_request_hash` / `tee_output_hash`: the hashes the TEE signed equal those of what the recorder
  saw (each known canonical request form is tried; the one that matched is recorded);
- `tee_signature`: RSA-PSS with the registry's key for `tee_id` (keccak of the key = tee_id), TEE enabled;
- `anchor`: `individual` — the relay's IndividualSettlement in the given tx carries the same fields;
  `batch` — the call's leaf proves up to a BatchSettlement root (tree fetched from the blob store);
  `private` — nothing is anchored, no check.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any, TypedDict, cast

import orjson
from eth_abi import decode
from eth_hash.auto import keccak

from receipts.storage.config import Settings
from receipts.storage.journal import Journal
from receipts.storage.records import Check, Event, Verdict
from receipts.storage.registry import Registry
from receipts.storage.rpc import Rpc, RpcError

from . import tee
from .evidence import TRANSFER
from .verify import Summary, changes, in_part, parts, signature_check, terms_check

log = logging.getLogger("receipts.verify")

UPTO_PROXY = "0x4020a4f3b7b90cca423b9fabcc0ce57c6c240002"
PERMIT2 = "0x000000000022d473030f116ddee9f6b43ac78ba3"
SETTLED = "0x" + keccak(b"Settled()").hex()
SETTLE_ARGS = ["((address,uint256),uint256,uint256)", "uint256", "address", "(address,address,uint256)", "bytes"]
SETTLE = (
    "0x"
    + keccak(b"settle(((address,uint256),uint256,uint256),uint256,address,(address,address,uint256),bytes)").hex()[:8]
)
NONCE_BITMAP = keccak(b"nonceBitmap(address,uint256)")[:4]
INDIVIDUAL = "0x" + keccak(b"IndividualSettlement(bytes32,address,bytes32,bytes32,uint256,bytes,bytes)").hex()
BATCH = "0x" + keccak(b"BatchSettlement(bytes32,uint256,bytes)").hex()

# The OpenGradient calls of one part of the pass (`{part}`: a range of the logical ids of the pass's table
# og_calls, verify.OG_CALLS), read from the folded tables (storage/fold.sql), only the fields used here,
# only the rows of those calls and of the sessions they are in. Each field means what the views in
# storage/views.sql say: `calls` (an exchange's request with its latest answer and stream end),
# `sessions`, `challenges`, `checks`; tests/support/verifier_views.py holds this query over those views,
# and tests/verifier/test_read.py asserts that both give the same rows, read in parts.
TO_VERIFY = """
WITH part AS MATERIALIZED (  -- the part's calls
    SELECT logical_id FROM og_calls WHERE {part}
), own AS MATERIALIZED (
    SELECT receipt_id, upto_session FROM folded.requests WHERE logical_id IN (SELECT logical_id FROM part)
), named AS MATERIALIZED (  -- the sessions they are in, named by a request or by an answer
    SELECT upto_session AS session FROM own WHERE upto_session IS NOT NULL
    UNION SELECT og_upto_session FROM folded.responses
    WHERE receipt_id IN (SELECT receipt_id FROM own) AND og_upto_session IS NOT NULL
), req AS MATERIALIZED (  -- every exchange of these calls (their 402s too), and those of their sessions: a
                         -- session's row is its first payment, whichever call of the session sent it
    SELECT receipt_id, logical_id, ts AS started_at, upto_session, settlement_type, tee_request_hashes
    FROM folded.requests WHERE logical_id IN (SELECT logical_id FROM part) OR upto_session IN (SELECT session FROM named)
       OR receipt_id IN (SELECT receipt_id FROM folded.responses WHERE og_upto_session IN (SELECT session FROM named))
), resp AS (  -- each exchange's latest answer
    SELECT receipt_id, arg_max({'og_upto_session': og_upto_session, 'tee_id': tee_id, 'tee_timestamp': tee_timestamp,
                                'tee_request_hash': tee_request_hash, 'tee_output_hash': tee_output_hash,
                                'tee_signature': tee_signature, 'tee_output_seen': tee_output_seen,
                                'og_settlement_tx_hash': og_settlement_tx_hash}, ts) AS p
    FROM folded.responses WHERE receipt_id IN (SELECT receipt_id FROM req) GROUP BY receipt_id
), fin AS (  -- and its latest stream end
    SELECT receipt_id, arg_max({'tee_id': tee_id, 'tee_timestamp': tee_timestamp, 'tee_request_hash': tee_request_hash,
                                'tee_output_hash': tee_output_hash, 'tee_signature': tee_signature,
                                'tee_output_seen': tee_output_seen, 'og_settlement_tx_hash': og_settlement_tx_hash}, ts) AS f
    FROM folded.stream_ends WHERE receipt_id IN (SELECT receipt_id FROM req) GROUP BY receipt_id
), calls AS (  -- the calls view's fields used here
    SELECT r.receipt_id, r.logical_id, r.started_at, r.settlement_type, r.tee_request_hashes,
           coalesce(r.upto_session, resp.p.og_upto_session) AS upto_session,
           coalesce(fin.f.tee_id, resp.p.tee_id) AS tee_id,
           coalesce(fin.f.tee_timestamp, resp.p.tee_timestamp) AS tee_timestamp,
           coalesce(fin.f.tee_request_hash, resp.p.tee_request_hash) AS tee_request_hash,
           coalesce(fin.f.tee_output_hash, resp.p.tee_output_hash) AS tee_output_hash,
           coalesce(fin.f.tee_signature, resp.p.tee_signature) AS tee_signature,
           coalesce(fin.f.tee_output_seen, resp.p.tee_output_seen) AS tee_output_seen,
           coalesce(fin.f.og_settlement_tx_hash, resp.p.og_settlement_tx_hash) AS og_settlement_tx_hash
    FROM req r LEFT JOIN resp USING (receipt_id) LEFT JOIN fin USING (receipt_id)
), og AS (  -- each call's latest exchange with a session or a TEE proof
    SELECT logical_id, arg_max({'session_id': upto_session, 'settlement_type': settlement_type, 'tee_id': tee_id,
                                'tee_timestamp': tee_timestamp, 'tee_request_hash': tee_request_hash,
                                'tee_output_hash': tee_output_hash, 'tee_signature': tee_signature,
                                'request_hashes': tee_request_hashes, 'output_seen': tee_output_seen,
                                'anchor_tx': og_settlement_tx_hash}, started_at) AS x,
           max(upto_session) AS any_session
    FROM calls WHERE (upto_session IS NOT NULL OR tee_id IS NOT NULL) AND logical_id IN (SELECT logical_id FROM part)
    GROUP BY logical_id
), sessions AS (  -- the sessions view: the payment that opened each session (the first one of its calls)
    SELECT m.upto_session AS session_id,
           arg_min({'opened_by': m.logical_id, 'opened_at': p.sent_at, 'payer': p.payer, 'pay_to': p.pay_to,
                    'asset': p.asset, 'network': p.network, 'amount_cap': p.amount::HUGEINT, 'nonce': p.nonce,
                    'deadline': coalesce(p.deadline, p.valid_before), 'valid_after': p.valid_after,
                    'signer': p.signer}, p.sent_at) AS o
    FROM calls m JOIN folded.payments p USING (receipt_id) WHERE m.upto_session IS NOT NULL
    GROUP BY m.upto_session
), verdict AS (  -- each call's latest verdict
    SELECT receipt_id AS logical_id,
           arg_max({'proof_status': proof_status, 'resolution': resolution, 'reason': reason}, observed_at) AS v
    FROM folded.checks WHERE "check" = 'verdict' AND {part_checks} GROUP BY receipt_id
), chal AS (  -- the offer that applies: of the call's latest 402, the first `accepts` entry
    SELECT r.logical_id, arg_max({'amount': o.amount::HUGEINT, 'pay_to': o.pay_to, 'asset': o.asset,
                                  'network': o.network}, {'seen_at': o.seen_at, 'first': -o.item}) AS c
    FROM folded.offers o JOIN req r USING (receipt_id) GROUP BY r.logical_id
)
SELECT og.logical_id AS receipt_id, x.* EXCLUDE (session_id), coalesce(x.session_id, any_session) AS session,
       o.payer, o.pay_to, o.asset, o.network, o.amount_cap, o.nonce, o.deadline, o.valid_after, o.signer,
       epoch(o.opened_at) AS paid_at, o.opened_by,
       CASE WHEN o.opened_by = og.logical_id THEN c.amount END AS max_amount_required,
       CASE WHEN o.opened_by = og.logical_id THEN c.pay_to END AS challenge_pay_to,
       CASE WHEN o.opened_by = og.logical_id THEN c.asset END AS challenge_asset,
       CASE WHEN o.opened_by = og.logical_id THEN c.network END AS challenge_network,
       v.proof_status AS last_status, v.resolution AS last_resolution, v.reason AS last_reason
FROM og
LEFT JOIN sessions ON sessions.session_id = coalesce(x.session_id, og.any_session)
LEFT JOIN chal ON chal.logical_id = og.logical_id
LEFT JOIN verdict ON verdict.logical_id = og.logical_id
WHERE coalesce(v.proof_status, 'pending') IN ('pending', 'passed')
ORDER BY og.logical_id
"""
LAST_CHECKS = """
SELECT receipt_id, "check", arg_max({'result': result, 'reason': reason}, observed_at) AS l
FROM folded.checks WHERE {part_checks} AND receipt_id IN (SELECT logical_id FROM og_calls WHERE {part}) GROUP BY ALL
"""
PART = 2500  # calls per part: the pass holds one part's rows (and what the chains said of them) at a time


@dataclass
class Facts:
    """What one pass learned from the chains and the blob store (shared by all receipts of the pass;
    gathered a part at a time, each thing once)."""

    tee_keys: dict = field(default_factory=dict)  # tee_id -> TeeKey | None
    registry_error: str | None = None
    registry_fault: bool = False  # registry_error is a node fault, not missing settings
    sessions: dict = field(default_factory=dict)  # (payer, nonce) -> settlement evidence
    scanned: set = field(default_factory=set)  # (payer, nonce) of the sessions looked for
    session_error: dict = field(default_factory=dict)  # network -> (reason, why): no_rpc_configured or rpc_unavailable
    base_head: dict = field(default_factory=dict)  # network -> (block, timestamp)
    anchors: dict = field(default_factory=dict)  # individual tx -> receipt or None (this part's)
    leaves: dict | None = None  # leaf hash -> batch evidence (None: not read yet)
    og_head: tuple[int, int] | None = None  # (block, timestamp) of the OpenGradient chain
    og_error: tuple[str, str] | None = None  # (reason, why): no_rpc_configured or rpc_unavailable


def verify_pass(con, settings: Settings, journal: Journal, summary: Summary, part: int = PART) -> Summary:
    """One pass over the OpenGradient receipts, on the x402 pass's connection `con` (its table og_calls,
    verify.OG_CALLS: the calls with an upto session or a TEE proof), `part` calls at a time: each part is
    read, its evidence gathered, decided, and its events written before the next (memory follows a part,
    not the journal)."""
    facts = Facts()
    for lo, hi in parts(con, "og_calls", part):
        rows, last = read(con, lo, hi)
        gather(rows, settings, facts)
        events = []
        for r in rows:
            summary.seen += 1
            checks = receipt_checks(r, facts, settings)
            if any(c.result == "pending" and c.reason in NODE_FAULTS for c in checks):
                summary.skipped += 1  # a node fault decides nothing: the receipt stays as it was
                continue
            events += _changes(r, checks, last, summary, facts)
        if events:
            journal.write(events)
    summary.faults += [why for _, why in facts.session_error.values()]
    summary.faults += [e for e in (facts.registry_error, facts.og_error and facts.og_error[1]) if e]
    return summary


NODE_FAULTS = ("rpc_unavailable", "registry_unreadable")  # pending for a fault, not for what the chain says


class OgCall(TypedDict):
    """A row of TO_VERIFY: one OpenGradient call, its session's payment and offer, its TEE proof and anchor,
    and what the last pass decided (request_hashes decoded by _row; tests/verifier/test_rows.py)."""

    receipt_id: str
    settlement_type: str | None
    tee_id: str | None
    tee_timestamp: int | None
    tee_request_hash: str | None
    tee_output_hash: str | None
    tee_signature: str | None
    request_hashes: Any  # JSON text from the query; _row decodes it to a dict
    output_seen: str | None
    anchor_tx: str | None
    session: str | None
    payer: str | None
    pay_to: str | None
    asset: str | None
    network: str | None
    amount_cap: int | None
    nonce: str | None
    deadline: int | None
    valid_after: int | None
    signer: str | None
    paid_at: float | None
    opened_by: str | None
    max_amount_required: int | None
    challenge_pay_to: str | None
    challenge_asset: str | None
    challenge_network: str | None
    last_status: str | None
    last_resolution: str | None
    last_reason: str | None


def read(con, lo: str | None, hi: str | None) -> tuple[list[OgCall], dict]:
    """The receipts of the OpenGradient calls (the table og_calls of `con`) whose logical id is in
    [lo, hi) that are not final yet (TO_VERIFY), and the latest result and reason of each of their
    checks, by (receipt id, check)."""

    def sql(template: str) -> str:
        return template.replace("{part}", in_part(lo, hi)).replace("{part_checks}", in_part(lo, hi, "receipt_id"))

    cur = con.execute(sql(TO_VERIFY))
    cols = [d[0] for d in cur.description]
    rows = [_row(cast(OgCall, dict(zip(cols, r)))) for r in cur.fetchall()]
    if not rows:
        return [], {}
    last = {(rid, name): (v["result"], v["reason"]) for rid, name, v in con.execute(sql(LAST_CHECKS)).fetchall()}
    return rows, last


def _row(r: OgCall) -> OgCall:
    r["request_hashes"] = (
        json.loads(r["request_hashes"]) if isinstance(r.get("request_hashes"), str) else (r.get("request_hashes") or {})
    )
    return r


# ---- gathering: few batched reads for the whole pass ---------------------------------------------
def gather(rows: list[OgCall], settings: Settings, facts: Facts | None = None) -> Facts:
    """What the chains say of these receipts, added to `facts` (what earlier parts gathered is not asked
    again)."""
    facts = facts or Facts()
    _registry_keys(rows, settings, facts)
    _session_settlements(rows, settings, facts)
    _anchors(rows, settings, facts)
    return facts


def _rpc(settings: Settings, caip2: str | None) -> Rpc | None:
    net = settings.network(caip2)
    if not net or not net.rpc:
        return None
    chain_id = int(cast(str, caip2).split(":")[1])  # (a network is found only by its caip2)
    return Rpc(net.rpc, timeout=net.rpc_timeout, chain_id=chain_id, max_bytes=net.rpc_max_bytes)


def _registry_keys(rows: list[OgCall], settings: Settings, facts: Facts) -> None:
    ids = sorted({tee_id.lower() for r in rows if (tee_id := r.get("tee_id"))} - set(facts.tee_keys))
    if not ids or facts.registry_error:
        return
    rpc = _rpc(settings, settings.og_network)
    if not settings.og_registry or rpc is None:
        facts.registry_error = "no TEE registry configured (opengradient.registry and its network's rpc)"
        return
    try:
        facts.tee_keys.update(Registry(rpc, settings.og_registry).keys(ids))
    except RpcError as exc:
        facts.registry_error, facts.registry_fault = f"{settings.og_network} registry: {exc}", True


def _session_settlements(rows: list[OgCall], settings: Settings, facts: Facts) -> None:
    """The settlement of each session: candidate transfers payer → payee, then their transactions."""
    wanted: dict[str | None, dict[tuple[str, str], OgCall]] = {}
    for r in rows:
        key = (r.get("payer") or "").lower(), str(r.get("nonce"))
        if r.get("session") and r.get("payer") and r.get("nonce") is not None and key not in facts.scanned:
            wanted.setdefault(r.get("network"), {})[key] = r
    for network, sessions in wanted.items():
        facts.scanned.update(sessions)
        if network in facts.session_error:  # (said once per pass)
            continue
        rpc, net = _rpc(settings, network), settings.network(network)
        if rpc is None:
            facts.session_error[network] = (
                "no_rpc_configured",
                f"{network}: no RPC configured, session settlements cannot be checked",
            )
            continue
        try:
            _scan_sessions(rpc, net, sessions, facts)
        except RpcError as exc:
            facts.session_error[network] = ("rpc_unavailable", f"{network}: {exc}")
            log.error("receipts verify: %s: %s — sessions on it stay undecided", network, exc)


def _topic(address: str) -> str:
    return "0x" + address.lower().removeprefix("0x").rjust(64, "0")


def _scan_sessions(rpc: Rpc, net, sessions: dict, facts: Facts, step: int = 2000) -> None:
    block = rpc.call("eth_getBlockByNumber", ["latest", False])
    head = int(block["number"], 16)
    facts.base_head[net.caip2] = (head, int(block["timestamp"], 16))
    by_token: dict = {}
    for (payer, _), r in sessions.items():
        by_token.setdefault((r.get("asset") or "").lower(), set()).add((payer, (r.get("pay_to") or "").lower()))
    calls = []
    for token, pairs in by_token.items():
        payers, payees = sorted({_topic(p) for p, _ in pairs}), sorted({_topic(q) for _, q in pairs if q})
        for lo in range(max(0, head - net.scan_blocks), head + 1, step):
            calls.append(
                (
                    "eth_getLogs",
                    [
                        {
                            "address": token,
                            "fromBlock": hex(lo),
                            "toBlock": hex(min(lo + step - 1, head)),
                            "topics": [TRANSFER, payers, payees],
                        }
                    ],
                )
            )
    txs = sorted({lg["transactionHash"].lower() for logs in rpc.batch(calls) for lg in logs or []})
    if not txs:
        return
    answers = rpc.batch([(m, [h]) for h in txs for m in ("eth_getTransactionByHash", "eth_getTransactionReceipt")])
    for i, tx_hash in enumerate(txs):
        tx, receipt = answers[2 * i], answers[2 * i + 1]
        found = _session_evidence(tx_hash, tx, receipt, head)
        if found and (found["payer"], found["nonce"]) in sessions:
            facts.sessions[(found["payer"], found["nonce"])] = found
    bits = [(key, int(key[1])) for key in facts.sessions]
    answers = rpc.batch(
        [
            (
                "eth_call",
                [
                    {
                        "to": PERMIT2,
                        "data": "0x"
                        + (NONCE_BITMAP + bytes.fromhex(_topic(payer)[2:]) + (nonce >> 8).to_bytes(32, "big")).hex(),
                    },
                    "latest",
                ],
            )
            for (payer, _), nonce in bits
        ]
    )
    for (key, nonce), word in zip(bits, answers):
        facts.sessions[key]["nonce_bit_set"] = bool(int(word or "0x0", 16) >> (nonce & 0xFF) & 1)


def _session_evidence(tx_hash: str, tx: dict | None, receipt: dict | None, head: int) -> dict | None:
    """A settlement through the upto proxy: who, to whom, how much, which permit nonce."""
    if not tx or not receipt or (tx.get("to") or "").lower() != UPTO_PROXY:
        return None
    data = tx.get("input") or "0x"
    if data[:10].lower() != SETTLE:
        return None
    try:
        ((token, cap), nonce, deadline), amount, owner, (to, facilitator, valid_after), _sig = decode(
            SETTLE_ARGS, bytes.fromhex(data[10:])
        )
    except Exception:  # not the calldata we know: not evidence
        return None
    logs = receipt.get("logs") or []
    moved = [
        lg
        for lg in logs
        if (lg.get("topics") or [""])[0].lower() == TRANSFER
        and lg["address"].lower() == token.lower()
        and len(lg["topics"]) == 3
        and lg["topics"][1].lower() == _topic(owner)
        and lg["topics"][2].lower() == _topic(to)
    ]
    block = int(receipt["blockNumber"], 16) if receipt.get("blockNumber") else None
    return {
        "tx": tx_hash,
        "payer": owner.lower(),
        "nonce": str(nonce),
        "token": token.lower(),
        "cap": cap,
        "amount": amount,
        "pay_to": to.lower(),
        "facilitator": facilitator.lower(),
        "sender": (tx.get("from") or "").lower(),
        "deadline": deadline,
        "valid_after": valid_after,
        "status": int(receipt.get("status") or "0x0", 16),
        "block": block,
        "confirmations": head - block + 1 if block is not None else 0,
        "settled_event": any(
            (lg.get("topics") or [""])[0].lower() == SETTLED and lg["address"].lower() == UPTO_PROXY for lg in logs
        ),
        "transferred": sum(int(lg.get("data") or "0x0", 16) for lg in moved),
    }


def _anchors(rows: list[OgCall], settings: Settings, facts: Facts) -> None:
    individual = sorted(
        {tx.lower() for r in rows if r.get("settlement_type") == "individual" and (tx := r.get("anchor_tx"))}
    )
    batch = [r for r in rows if r.get("settlement_type") == "batch" and r.get("tee_id")]
    facts.anchors = {}  # (this part's)
    if not individual and not batch or facts.og_error:
        return
    rpc = _rpc(settings, settings.og_network)
    if rpc is None:
        facts.og_error = (
            "no_rpc_configured",
            f"{settings.og_network}: no RPC configured, proof anchors cannot be checked",
        )
        return
    try:
        if facts.og_head is None:  # (the pass's first: every part is decided against the same head)
            block = rpc.call("eth_getBlockByNumber", ["latest", False])
            facts.og_head = (int(block["number"], 16), int(block["timestamp"], 16))
        if individual:
            facts.anchors = dict(zip(individual, rpc.batch([("eth_getTransactionReceipt", [h]) for h in individual])))
        if batch and settings.og_relay and facts.leaves is None:
            facts.leaves = {}
            _batch_leaves(rpc, settings, facts)
    except RpcError as exc:
        facts.og_error = ("rpc_unavailable", f"{settings.og_network}: {exc}")


def _batch_leaves(rpc: Rpc, settings: Settings, facts: Facts, step: int = 5000) -> None:
    """Every leaf of every batch the relay anchored recently, indexed by leaf hash: one blob fetch per
    batch per pass, then each receipt is a dictionary lookup and a proof of a few hashes."""
    net = settings.network(settings.og_network)
    # (the caller sets the head and the leaves first, and has an RPC only for a configured network)
    assert facts.og_head is not None and facts.leaves is not None and net is not None
    head = facts.og_head[0]
    calls = [
        (
            "eth_getLogs",
            [
                {
                    "address": settings.og_relay,
                    "topics": [BATCH],
                    "fromBlock": hex(lo),
                    "toBlock": hex(min(lo + step - 1, head)),
                }
            ],
        )
        for lo in range(max(0, head - net.scan_blocks), head + 1, step)
    ]
    for logs in rpc.batch(calls):
        for lg in logs or []:
            root = bytes.fromhex(lg["topics"][1][2:])
            _size, blob_id = decode(["uint256", "bytes"], bytes.fromhex(lg["data"][2:]))
            blob_id = blob_id.decode("utf-8", "replace")
            dump = _blob(settings.og_blob_url, blob_id)
            tree = tee.tree_index(dump) if dump else {}
            for leaf, proof in tree.items():
                facts.leaves[leaf] = {
                    "root": "0x" + root.hex(),
                    "tx": lg["transactionHash"].lower(),
                    "block": int(lg["blockNumber"], 16),
                    "blob_id": blob_id,
                    "proof": proof,
                }


def _blob(base: str | None, blob_id: str) -> dict | None:
    if not base:
        return None
    try:
        with urllib.request.urlopen(f"{base}/v1/blobs/{blob_id}", timeout=10) as resp:
            return orjson.loads(resp.read(16 << 20))
    except (OSError, ValueError) as exc:
        log.warning("receipts verify: blob %s: %s", blob_id, exc)
        return None


# ---- per receipt -----------------------------------------------------------------------------
def receipt_checks(r: OgCall, facts: Facts, settings: Settings) -> list[Check]:
    checks = []
    if r.get("payer"):
        checks.append(signature_check(r))
        if r.get("opened_by") == r["receipt_id"]:
            checks.append(terms_check(r))
        checks.append(session_check(r, facts, settings))
    if r.get("tee_id"):
        checks += tee_checks(r, facts)
        anchor = anchor_check(r, facts, settings)
        if anchor:
            checks.append(anchor)
    return checks


def session_check(r: OgCall, facts: Facts, settings: Settings) -> Check:
    network = r.get("network")
    if network in facts.session_error:
        reason, why = facts.session_error[network]
        return Check("session_settlement", "pending", reason, {"why": why})
    found = facts.sessions.get(((r.get("payer") or "").lower(), str(r.get("nonce"))))
    head = facts.base_head.get(network, (None, time.time()))
    if found is None:
        detail = {"session": r.get("session"), "deadline": r.get("deadline"), "chain_time": head[1]}
        return Check("session_settlement", "pending", "session_not_settled", detail)
    net = settings.network(network)
    problems = []
    if found["status"] != 1:
        problems.append("settlement_reverted")
    if not found["settled_event"]:
        problems.append("no_settled_event")
    if found["pay_to"] != (r.get("pay_to") or "").lower() or found["transferred"] != found["amount"]:
        problems.append("logs_mismatch")
    if found["token"] != (r.get("asset") or "").lower():
        problems.append("wrong_asset")
    if (cap := r.get("amount_cap")) is not None and found["amount"] > int(cap):
        problems.append("overcharged")
    if not found.get("nonce_bit_set"):
        problems.append("nonce_not_used")
    if found["sender"] != found["facilitator"] or (
        net and net.facilitators and found["sender"] not in net.facilitators
    ):
        problems.append("unexpected_sender")
    detail = {
        k: found[k]
        for k in ("tx", "amount", "cap", "pay_to", "facilitator", "sender", "block", "confirmations", "nonce_bit_set")
    }
    detail.update(
        amount=str(found["amount"]),
        cap=str(found["cap"]),
        required=net.confirmations if net else 1,
        share="unknown: only the session total is on chain",
        trust="single-node",  # read from the network's first endpoint only (not its quorum)
    )
    if problems:
        return Check("session_settlement", "fail", problems[0], {**detail, "problems": problems}, found["block"])
    if found["confirmations"] < (net.confirmations if net else 1):
        return Check("session_settlement", "pending", "awaiting_confirmations", detail, found["block"])
    return Check("session_settlement", "pass", None, detail, found["block"])


def tee_checks(r: OgCall, facts: Facts) -> list[Check]:
    out = []
    reported_req = (r.get("tee_request_hash") or "").lower()
    forms = {name: h for name, h in (r.get("request_hashes") or {}).items()}
    match = next((name for name, h in forms.items() if _same(h, reported_req)), None)
    if not forms:
        out.append(
            Check(
                "tee_request_hash",
                "pending",
                "request_not_captured",
                {"why": "the recorder kept no canonical hashes of this request"},
            )
        )
    elif match:
        out.append(Check("tee_request_hash", "pass", None, {"form": match, "hash": reported_req}))
    else:
        out.append(Check("tee_request_hash", "fail", "request_hash_mismatch", {"signed": reported_req, "seen": forms}))
    seen = r.get("output_seen")
    if not seen:
        out.append(Check("tee_output_hash", "pending", "output_not_captured", {}))
    elif _same(seen, r.get("tee_output_hash")):
        out.append(Check("tee_output_hash", "pass", None, {"hash": seen}))
    else:
        out.append(
            Check("tee_output_hash", "fail", "output_hash_mismatch", {"signed": r.get("tee_output_hash"), "seen": seen})
        )
    out.append(signature_of(r, facts))
    return out


def signature_of(r: OgCall, facts: Facts) -> Check:
    tee_id = (r.get("tee_id") or "").lower()
    if facts.registry_error:
        reason = "registry_unreadable" if facts.registry_fault else "registry_unavailable"
        return Check("tee_signature", "pending", reason, {"why": facts.registry_error})
    key = facts.tee_keys.get(tee_id)
    if key is None:
        return Check("tee_signature", "fail", "tee_not_registered", {"tee_id": tee_id})
    detail = {"tee_id": tee_id, "key_sha256": hashlib.sha256(key.public_key).hexdigest()}
    if tee.tee_id_of(key.public_key) != tee_id:
        return Check("tee_signature", "fail", "tee_id_not_key_hash", detail)
    if not key.enabled:
        return Check("tee_signature", "fail", "tee_disabled", detail)
    req, out, sig = (
        tee.hex32(r.get("tee_request_hash")),
        tee.hex32(r.get("tee_output_hash")),
        tee.b64(r.get("tee_signature")),
    )
    signed_at = r.get("tee_timestamp")
    if req is None or out is None or sig is None or signed_at is None:
        return Check("tee_signature", "fail", "proof_fields_malformed", detail)
    if not tee.signature_valid(key.public_key, sig, tee.signed_message(req, out, int(signed_at))):
        return Check("tee_signature", "fail", "bad_signature", detail)
    return Check("tee_signature", "pass", None, detail)


def anchor_check(r: OgCall, facts: Facts, settings: Settings) -> Check | None:
    kind = r.get("settlement_type")
    if kind not in ("individual", "batch"):
        return None  # private (or unknown): nothing is anchored on chain
    if facts.og_error:
        return Check("anchor", "pending", facts.og_error[0], {"why": facts.og_error[1]})
    now = facts.og_head[1] if facts.og_head else time.time()
    deadline = int(r.get("tee_timestamp") or 0) + settings.og_anchor_deadline
    if kind == "individual":
        return _individual(r, facts, settings.og_relay, now, deadline)
    leaf = _leaf(r)
    found = (facts.leaves or {}).get(leaf) if leaf else None
    if found and leaf:  # (found only by a leaf)
        ok = tee.root_from_proof(leaf, found["proof"]).hex() == found["root"][2:]
        detail = {**{k: found[k] for k in ("root", "tx", "blob_id")}, "proof_length": len(found["proof"])}
        return Check(
            "anchor", "pass" if ok else "fail", None if ok else "proof_does_not_reach_root", detail, found["block"]
        )
    detail = {"settlement_type": "batch", "deadline": deadline, "chain_time": now}
    if not settings.og_relay:
        return Check("anchor", "pending", "no_relay_configured", detail)
    if now > deadline:
        return Check("anchor", "fail", "leaf_not_in_any_batch", detail)
    return Check("anchor", "pending", "batch_pending", detail)


def _individual(r: OgCall, facts: Facts, relay: str | None, now: float, deadline: float) -> Check:
    tx = (r.get("anchor_tx") or "").lower()
    receipt = facts.anchors.get(tx) if tx else None
    detail = {"settlement_type": "individual", "tx": tx or None, "deadline": deadline, "chain_time": now}
    if receipt is None:
        reason = "anchor_never_landed" if now > deadline else "anchor_pending"
        return Check("anchor", "fail" if now > deadline else "pending", reason, detail)
    block = int(receipt["blockNumber"], 16)
    if int(receipt.get("status") or "0x0", 16) != 1:
        return Check("anchor", "fail", "anchor_reverted", detail, block)
    for lg in receipt.get("logs") or []:
        topics = [t.lower() for t in lg.get("topics") or []]
        if topics[:1] != [INDIVIDUAL] or len(topics) < 2 or (relay and lg["address"].lower() != relay.lower()):
            continue
        input_hash, output_hash, timestamp, _blob_id, _sig = decode(
            ["bytes32", "bytes32", "uint256", "bytes", "bytes"], bytes.fromhex(lg["data"][2:])
        )
        same = (
            topics[1] == "0x" + (tee.hex32(r["tee_id"]) or b"").hex()
            and _same("0x" + input_hash.hex(), r.get("tee_request_hash"))
            and _same("0x" + output_hash.hex(), r.get("tee_output_hash"))
            and timestamp == int(r.get("tee_timestamp") or -1)
        )
        return Check(
            "anchor",
            "pass" if same else "fail",
            None if same else "anchor_mismatch",
            {**detail, "relay": lg["address"].lower()},
            block,
        )
    return Check("anchor", "fail", "no_individual_settlement_event", detail, block)


def _leaf(r: OgCall) -> bytes | None:
    tee_id, req, out, sig = (
        tee.hex32(r.get("tee_id")),
        tee.hex32(r.get("tee_request_hash")),
        tee.hex32(r.get("tee_output_hash")),
        tee.b64(r.get("tee_signature")),
    )
    signed_at = r.get("tee_timestamp")
    if tee_id is None or req is None or out is None or sig is None or signed_at is None:
        return None
    return tee.leaf_hash(tee_id, req, out, sig, int(signed_at))


def _same(a: str | None, b: str | None) -> bool:
    return bool(a and b and a.lower().removeprefix("0x") == b.lower().removeprefix("0x"))


# ---- verdict and events ----------------------------------------------------------------------
def verdict(r: OgCall, checks: list[Check], facts: Facts) -> Verdict:
    failed = [c for c in checks if c.result == "fail"]
    pending = [c for c in checks if c.result == "pending"]
    status = "failed" if failed else "pending" if pending else "passed"
    first = failed[0] if failed else pending[0] if pending else None
    reason = first.reason if first else None
    session = next((c for c in checks if c.name == "session_settlement"), None)
    if session and session.reason == "session_not_settled":
        now, deadline = session.detail.get("chain_time"), r.get("deadline")
        if deadline and now and now > deadline:
            return Verdict(status, "risky", "session_unsettled_past_deadline")
    if session and session.reason == "overcharged":
        return Verdict(status, "risky", "overcharged")
    return Verdict(status, None, reason)


def _changes(r: OgCall, checks: list[Check], last: dict, summary: Summary, facts: Facts) -> list[Event]:
    session = next((c for c in checks if c.name == "session_settlement" and c.result == "pass"), None)
    return changes(
        r,
        checks,
        last,
        summary,
        verdict(r, checks, facts),
        tx=session.detail["tx"] if session else None,
        session_amount=session.detail["amount"] if session else None,
    )
