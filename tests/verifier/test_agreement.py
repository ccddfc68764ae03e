"""Several endpoints' evidence of one settlement, and the trust the result rests on (pure)."""
from receipts.verifier.agreement import agree, agreed_transfers
from receipts.storage.records import Check

HASH, OTHER = "0x" + "b" * 64, "0x" + "d" * 64


def seen(result="pass", reason=None, block_hash=HASH, logs="abc", block=100):
    return Check("settlement_tx", result, reason, {"tx_hash": "0xt", "block_hash": block_hash, "logs": logs,
                                                    "sender": "0xfac"}, block)


def test_one_endpoint_is_single_node_trust():
    c = agree([seen()], 1)
    assert (c.result, c.detail["trust"], c.detail["endpoints"]) == ("pass", "single-node", 1)


def test_a_quorum_of_identical_evidence_passes_and_says_how_many_agreed():
    c = agree([seen(), seen()], 2)
    assert (c.result, c.detail["trust"]) == ("pass", "quorum-2")
    c = agree([seen(), seen(), seen(block_hash=OTHER)], 2)
    assert (c.result, c.detail["trust"], c.detail["endpoints"]) == ("pass", "quorum-2", 3)


def test_anything_a_liar_forges_is_disagreement_never_passed():
    honest = seen("pending", "tx_not_found", block_hash=None, logs=None, block=None)
    for forged in (seen(), seen(block_hash=OTHER), seen(logs="forged"), seen(block=101)):
        c = agree([honest, forged], 2)
        assert (c.result, c.reason, c.detail["trust"]) == ("pending", "nodes_disagree", None), forged
        assert sorted(a["result"] for a in c.detail["answers"]) == ["pass", "pending"]
    c = agree([seen(), seen(block_hash=OTHER)], 1)
    assert (c.result, c.reason) == ("pending", "nodes_disagree"), "two answers each 'reach' a quorum of one"


def test_a_node_that_is_behind_is_not_dissent_but_is_not_final_either():
    behind = seen("pending", "awaiting_confirmations")
    c = agree([seen(), behind], 2)
    assert (c.result, c.reason, c.detail["trust"]) == ("pending", "awaiting_confirmations", "quorum-2")
    c = agree([seen(), seen(), behind], 2)
    assert (c.result, c.detail["trust"]) == ("pass", "quorum-2")


def test_agreed_failures_and_too_few_answers():
    reverted = seen("fail", "tx_reverted")
    assert agree([reverted, reverted], 2).result == "fail"
    assert agree([reverted, seen()], 2).reason == "nodes_disagree"
    c = agree([seen()], 2)
    assert (c.result, c.reason) == ("pending", "quorum_not_reached")


def test_refunds_count_where_a_quorum_saw_them():
    t1 = {"tx": "0x1", "token": "0xa", "from": "0xp", "to": "0xq", "value": 5, "block": 7}
    t2 = {**t1, "tx": "0x2"}
    assert agreed_transfers([[t1, t2], [t2]], 2) == [t2]
    assert agreed_transfers([[t1], [t2]], 1) == [t1, t2]
    assert agreed_transfers([[t1, t1], []], 2) == [], "one endpoint saying it twice is one endpoint"
