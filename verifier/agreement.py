"""Agreement of several JSON-RPC endpoints on one settlement (pure; no I/O).

Each endpoint's evidence is judged on its own first (`evidence.canonical_settlement`: its receipt, its
canonical block, its confirming block). `agree` then groups the endpoints whose evidence is identical:
the same result and reason, transaction, block number, block hash (claimed and canonical), sender,
digest of the payment's logs and problems found. The one group of at least `quorum` endpoints decides;
if there is none (or two), the settlement is `pending` (`nodes_disagree`, `quorum_not_reached`) and
never `passed`. Within the deciding group a settlement passes only if `quorum` of its endpoints also
serve the confirming block (a node that is merely behind says `awaiting_confirmations` about the same
evidence, and does not count as dissent).

The check that comes out names its trust: `single-node` when it rests on one endpoint's word,
`quorum-N` when N endpoints gave the same evidence.
"""

from __future__ import annotations

from receipts.storage.records import Check

SETTLED = {("pass", None), ("pending", "awaiting_confirmations")}  # the same evidence, final or not yet


def trust(agreed: int) -> str:
    return "single-node" if agreed == 1 else f"quorum-{agreed}"


def evidence_key(c: Check) -> tuple:
    """What endpoints must agree on for their checks to count as one answer."""
    d, settled = c.detail, (c.result, c.reason) in SETTLED
    return (
        "settled" if settled else c.result,
        None if settled else c.reason,
        d.get("tx_hash"),
        c.block,
        d.get("block_hash"),
        d.get("canonical_hash"),
        d.get("sender"),
        d.get("logs"),
        tuple(d.get("problems") or ()),
    )


def agree(checks: list[Check], quorum: int) -> Check:
    """One settlement check from the endpoints' own (one each, from those that answered)."""
    if len(checks) == 1 and quorum == 1:  # one endpoint: its word (the detail is the check's own dict)
        checks[0].detail.update(trust=trust(1), endpoints=1)
        return checks[0]
    groups: dict[tuple, list[Check]] = {}
    for c in checks:
        groups.setdefault(evidence_key(c), []).append(c)
    deciding = [g for g in groups.values() if len(g) >= quorum]
    if len(deciding) != 1:
        reason = "quorum_not_reached" if len(groups) == 1 else "nodes_disagree"
        return Check(
            "settlement_tx",
            "pending",
            reason,
            {"trust": None, "quorum": quorum, "endpoints": len(checks), "answers": _answers(groups)},
        )
    group = deciding[0]
    final = [c for c in group if c.result == "pass"]
    chosen, agreed = (final[0], len(final)) if len(final) >= quorum else (_unfinal(group), len(group))
    detail = {**chosen.detail, "trust": trust(agreed), "endpoints": len(checks)}
    return Check(chosen.name, chosen.result, chosen.reason, detail, chosen.block)


def _unfinal(group: list[Check]) -> Check:
    return next((c for c in group if c.result != "pass"), group[0])


def _answers(groups: dict) -> list[dict]:
    """What each group of endpoints said, shortly (the detail of a disagreement)."""
    return [
        {
            "result": g[0].result,
            "reason": g[0].reason,
            "block": g[0].block,
            "block_hash": g[0].detail.get("block_hash"),
            "endpoints": len(g),
        }
        for g in groups.values()
    ]


def agreed_transfers(seen: list[list[dict]], quorum: int) -> list[dict]:
    """The transfers (refunds) that at least `quorum` endpoints reported, in the order first seen."""
    counts: dict[tuple, int] = {}
    first: dict[tuple, dict] = {}
    for transfers in seen:
        for t in transfers:
            first.setdefault(_transfer_key(t), t)
        for key in {_transfer_key(t) for t in transfers}:
            counts[key] = counts.get(key, 0) + 1
    return [t for key, t in first.items() if counts[key] >= quorum]


def _transfer_key(t: dict) -> tuple:
    return t["tx"], t["token"], t["from"], t["to"], t["value"], t["block"]
