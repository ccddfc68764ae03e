"""From checks to the status users see (pure)."""
from receipts.storage.records import Check
from receipts.verifier.verify import signature_check, terms_check, verdict

GRACE = 600.0

OK = [Check("signature", "pass"), Check("terms", "pass"), Check("settlement_tx", "pass")]
PAYER, PAYEE = "0x" + "1" * 40, "0x" + "2" * 40


def test_statuses():
    assert verdict(OK, {"status": 200, "payment_count": 1}, 0) == ("passed", None, None)
    assert verdict(OK[:2] + [Check("settlement_tx", "pending", "awaiting_confirmations")], {"status": 200}, 0) == (
        "pending", None, "awaiting_confirmations")
    assert verdict(OK[:2] + [Check("settlement_tx", "fail", "tx_reverted")], {"status": 200}, 0) == (
        "failed", None, "tx_reverted")


def test_resolutions():
    assert verdict(OK, {"status": 502}, 0) == ("passed", "risky", "paid_but_server_error")
    assert verdict(OK, {"status": 200, "settlement_count": 2}, 0) == ("passed", "risky", "double_settlement")
    assert verdict(OK, {"status": 200, "payment_count": 2}, 0) == ("passed", "retried", None)
    late = OK[:2] + [Check("settlement_tx", "pending", "tx_not_found")]
    assert verdict(late, {"status": 200, "valid_before": 1000}, 1000 + GRACE + 1) == ("pending", "risky", "pending_past_deadline")
    assert verdict(late, {"status": 200, "valid_before": 1000}, 1000) == ("pending", None, "tx_not_found")


def test_signature_and_terms_checks():
    assert signature_check({"signer": PAYER.upper().replace("0X", "0x"), "payer": PAYER}).result == "pass"
    forged = signature_check({"signer": PAYEE, "payer": PAYER})
    assert (forged.result, forged.reason) == ("fail", "signature_mismatch")
    base = {"pay_to": PAYEE, "challenge_pay_to": PAYEE, "asset": "0xa", "challenge_asset": "0xA",
            "signed_amount": 10, "max_amount_required": 10}
    assert terms_check(base).result == "pass"
    assert terms_check({**base, "signed_amount": 11}).reason == "overcharged"
    assert terms_check({**base, "pay_to": PAYER}).reason == "unexpected_pay_to"
    assert verdict([Check("signature", "pass"), terms_check({**base, "pay_to": PAYER}), Check("settlement_tx", "pass")],
                   {"status": 200}, 0) == ("failed", "risky", "unexpected_pay_to")


def test_a_settlement_that_vanished_and_never_came_back_fails():
    gone = OK[:2] + [Check("settlement_tx", "pending", "tx_not_found")]
    r = {"status": 200, "valid_before": 1000, "settlement_ever_passed": True}
    assert verdict(gone, r, 1000 + GRACE - 1) == ("pending", None, "tx_not_found")
    assert verdict(gone, r, 1000 + GRACE + 1) == ("failed", None, "settlement_disappeared")


def test_terms_check_the_network_and_the_time_window():
    at = 1767225600.0  # 2026-01-01 UTC, in seconds since the epoch as the verifier's queries give it
    base = {"network": "eip155:8453", "challenge_network": "eip155:8453", "paid_at": at,
            "valid_after": 0, "valid_before": int(at) + 10**6}
    assert terms_check(base).result == "pass"
    assert terms_check({**base, "challenge_network": "eip155:1"}).reason == "unexpected_network"
    assert terms_check({**base, "valid_before": 1000}).reason == "outside_time_window"


def test_a_passed_settlement_is_held_while_a_node_only_seems_behind():
    from receipts.verifier.verify import _held

    r, last = {"receipt_id": "r", "last_status": "passed"}, {("r", "settlement_tx"): ("pass", None)}
    for reason in ("awaiting_confirmations", "block_not_found"):  # the node lacks a block: it may be behind
        assert _held(r, Check("settlement_tx", "pending", reason), last)
        assert not _held({**r, "last_status": "pending"}, Check("settlement_tx", "pending", reason), last)
        assert not _held(r, Check("settlement_tx", "pending", reason), {}), "never passed: nothing to hold"
    for reason in ("tx_not_found", "tx_not_in_block", "block_hash_mismatch", "nodes_disagree"):  # evidence: demote
        assert not _held(r, Check("settlement_tx", "pending", reason), last)
    assert not _held(r, Check("settlement_tx", "fail", "tx_reverted"), last)


def test_a_signature_only_the_chain_can_check_passes_with_its_settlement():
    from receipts.storage.records import Check
    from receipts.verifier.verify import by_settlement, signature_check

    for why in ("smart_wallet (ERC-1271, a 192-byte signature): checked on chain by its settlement",
                "delegation (ERC-7710 via 0xdd): checked on chain by its settlement"):
        waiting = signature_check({"payer": "0xabc", "signer": None, "signer_error": why})
        assert (waiting.result, waiting.reason) == ("pending", "smart_wallet_signature")
        settled = Check("settlement_tx", "pass", None, {"tx_hash": "0x12"}, 7)
        passed = by_settlement(waiting, settled)
        assert (passed.result, passed.detail["by"], passed.detail["tx"]) == ("pass", "settlement", "0x12")
    plain = signature_check({"payer": "0xabc", "signer": None, "signer_error": "the EIP-712 domain is unknown"})
    assert plain.reason == "signature_unverifiable"
