"""Matching captured payments against settlement receipts (pure; the chain tests are end to end)."""
from verifier.evidence import AUTHORIZATION_USED, TRANSFER, settlement

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
