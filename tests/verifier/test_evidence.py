"""Matching captured payments against settlement receipts (pure; the chain tests are end to end)."""
from receipts.verifier.evidence import AUTHORIZATION_USED, TRANSFER, settlement

TOKEN = "0x" + "a" * 40
PAYER = "0x" + "1" * 40
PAYEE = "0x" + "2" * 40
NONCE = "0x" + "9" * 64
PAYMENT = {"asset": TOKEN, "payer": PAYER, "pay_to": PAYEE, "amount": "10000", "scheme": "exact",
           "kind": "eip3009", "nonce": NONCE}


def topic(addr):
    return "0x" + addr[2:].rjust(64, "0")


def receipt(status=1, value=10000, to=PAYEE, used=True, block=100, sender="0xfac"):
    logs = [{"address": TOKEN, "topics": [TRANSFER, topic(PAYER), topic(to)], "data": hex(value), "logIndex": "0x0"}]
    if used:
        logs.append({"address": TOKEN, "topics": [AUTHORIZATION_USED, topic(PAYER), NONCE], "data": "0x", "logIndex": "0x1"})
    return {"status": hex(status), "blockNumber": hex(block), "logs": logs, "from": sender}


def test_passed_pending_and_failed():
    assert settlement(PAYMENT, "0xt", receipt(), head=102, required=3).result == "pass"
    short = settlement(PAYMENT, "0xt", receipt(), head=100, required=3)
    assert (short.result, short.reason, short.detail["confirmations"]) == ("pending", "awaiting_confirmations", 1)
    assert settlement(PAYMENT, "0xt", None, head=100, required=1).reason == "tx_not_found"
    assert settlement(PAYMENT, "0xt", receipt(status=0), head=200, required=1).reason == "tx_reverted"


def test_logs_that_do_not_match_fail_with_what_differs():
    wrong_value = settlement(PAYMENT, "0xt", receipt(value=9999), head=200, required=1)
    assert wrong_value.reason == "logs_mismatch" and "transferred 9999, signed 10000" in wrong_value.detail["problems"]
    wrong_payee = settlement(PAYMENT, "0xt", receipt(to="0x" + "3" * 40), head=200, required=1)
    assert wrong_payee.result == "fail" and "no Transfer from" in wrong_payee.detail["problems"][0]
    no_nonce = settlement(PAYMENT, "0xt", receipt(used=False), head=200, required=1)
    assert "no AuthorizationUsed log for the payer and nonce" in no_nonce.detail["problems"]
    other_sender = settlement(PAYMENT, "0xt", receipt(), head=200, required=1, facilitator="0xknown")
    assert other_sender.result == "fail" and "not the known facilitator" in other_sender.detail["problems"][0]


def test_upto_allows_less_than_the_cap_but_not_more():
    upto = {**PAYMENT, "scheme": "upto", "kind": "permit2"}
    assert settlement(upto, "0xt", receipt(value=4000, used=False), head=200, required=1).result == "pass"
    over = settlement(upto, "0xt", receipt(value=20000, used=False), head=200, required=1)
    assert over.result == "fail" and "more than the signed cap" in over.detail["problems"][0]


# ---- held against the canonical chain (canonical_settlement) ----------------------------------------------------
from receipts.verifier.evidence import Block, block_of, canonical_settlement, logs_digest

HASH = "0x" + "b" * 64
TX = "0x" + "c" * 64


def on_chain(block=100, block_hash=HASH, **kw):
    return {**receipt(block=block, **kw), "blockHash": block_hash}


def chain(*heights, block_hash=HASH, txs=(TX,)):
    """Canonical blocks at these heights (the first holds the settlement)."""
    return {h: Block(h, block_hash if h == heights[0] else "0x" + f"{h:064x}", frozenset(txs)) for h in heights}


def test_passed_needs_the_canonical_block_and_the_block_that_confirms_it():
    ok = canonical_settlement(PAYMENT, TX, on_chain(), chain(100, 102), head=102, required=3)
    assert (ok.result, ok.detail["block_hash"], ok.detail["confirmations"]) == ("pass", HASH, 3)


def test_a_receipt_the_canonical_chain_does_not_hold_never_passes():
    fabricated = canonical_settlement(PAYMENT, TX, on_chain(), chain(100, 102, txs=()), head=102, required=3)
    assert (fabricated.result, fabricated.reason) == ("pending", "tx_not_in_block")
    other_hash = canonical_settlement(PAYMENT, TX, on_chain(block_hash="0x" + "d" * 64), chain(100, 102), 102, 3)
    assert (other_hash.result, other_hash.reason, other_hash.detail["canonical_hash"]) == (
        "pending", "block_hash_mismatch", HASH)
    no_hash = canonical_settlement(PAYMENT, TX, receipt(), chain(100, 102), 102, 3)
    assert no_hash.reason == "block_hash_mismatch", "a receipt without a block hash proves nothing"
    hashless = {100: Block(100, "", frozenset([TX])), 102: chain(102)[102]}
    assert canonical_settlement(PAYMENT, TX, receipt(), hashless, 102, 3).reason == "block_hash_mismatch", \
        "nor does a block without one"
    no_block = canonical_settlement(PAYMENT, TX, on_chain(), {102: chain(102)[102]}, 102, 3)
    assert (no_block.result, no_block.reason) == ("pending", "block_not_found")
    wrong_height = canonical_settlement(PAYMENT, TX, on_chain(), {100: Block(99, HASH, frozenset([TX])), 102: None}, 102, 3)
    assert wrong_height.reason == "block_not_found"
    reverted_elsewhere = canonical_settlement(PAYMENT, TX, on_chain(status=0), chain(100, 102, txs=()), 102, 3)
    assert reverted_elsewhere.result == "pending", "not even a failure is believed off the canonical chain"


def test_a_head_alone_never_makes_a_settlement_final():
    far_head = canonical_settlement(PAYMENT, TX, on_chain(), {**chain(100), 102: None}, head=100_000, required=3)
    assert (far_head.result, far_head.reason, far_head.detail["confirmations"]) == ("pending", "awaiting_confirmations", 2)
    low_head = canonical_settlement(PAYMENT, TX, on_chain(), chain(100, 102), head=90, required=3)
    assert (low_head.result, low_head.detail["confirmations"]) == ("pass", 3), "the block that confirms it exists"
    one = canonical_settlement(PAYMENT, TX, on_chain(), chain(100), head=100, required=1)
    assert one.result == "pass"


def test_failures_on_the_canonical_chain_still_fail():
    reverted = canonical_settlement(PAYMENT, TX, on_chain(status=0), chain(100, 102), 102, 3)
    assert (reverted.result, reverted.reason) == ("fail", "tx_reverted")
    wrong = canonical_settlement(PAYMENT, TX, on_chain(value=9999), chain(100, 102), 102, 3)
    assert (wrong.result, wrong.reason) == ("fail", "logs_mismatch")


def test_blocks_from_answers_and_the_logs_digest():
    light = block_of({"number": "0x64", "hash": HASH.upper().replace("0X", "0x"), "transactions": [TX.upper()]})
    full = block_of({"number": "0x64", "hash": HASH, "transactions": [{"hash": TX, "from": "0xfac"}]})
    assert light == full == Block(100, HASH, frozenset([TX])) and block_of(None) is None
    a, b = receipt()["logs"], receipt(value=9999)["logs"]
    other_token = {"address": "0x" + "e" * 40, "topics": [TRANSFER, topic(PAYER), topic(PAYEE)], "data": "0x1"}
    assert logs_digest(PAYMENT, a + [other_token]) == logs_digest(PAYMENT, list(reversed(a))), "only the payment's logs count"
    assert logs_digest(PAYMENT, a) != logs_digest(PAYMENT, b) and len(logs_digest(PAYMENT, a)) == 16
