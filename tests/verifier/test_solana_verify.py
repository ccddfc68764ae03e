"""verifier/solana.py against a real SVM (testbed/solana_node.py: LiteSVM with the real SPL programs,
behind our JSON-RPC layer), with payments signed by the real x402 SDK's SVM client and settled by its
facilitator. The receipt rows are what `receipts verify` reads for such a payment (TO_VERIFY's columns);
the e2e test (tests/e2e/test_svm_payment.py) records them through `receipts proxy`."""
import time

import pytest
from solders.keypair import Keypair

from receipts.addon import solana as sol
from receipts.verifier import solana as V
from receipts.storage.rpc import Rpc
from receipts.verifier.verify import _Reader

from receipts.storage.config import Network
from receipts.storage.rpc import RpcError
from support.svm import AMOUNT, NETWORK, facilitator, no_proxy, node, requirements, sign_payment, world  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.filterwarnings("ignore:Client is deprecated:FutureWarning"),
              pytest.mark.usefixtures("no_proxy")]  # (solana-py follows proxy variables; the node is local)


def row(w, payment, signature=None, **over) -> dict:
    """The receipt row of a payment as the verifier reads it (decoded as the recorder decodes it)."""
    tx = sol.decode_transaction(payment.payload["transaction"])
    r = {"receipt_id": "r1", "payer": tx["authority"], "pay_to": str(w.payee), "asset": tx["mint"],
         "signed_amount": int(tx["amount"]), "memo": tx["memo"], "token_account": tx["destination"],
         "recent_blockhash": tx["recent_blockhash"], "payment_hash": signature, "paid_at": time.time(), **over}
    return {**r, "payee_token_account": sol.ata_address(r["pay_to"], r["asset"], tx["token_program"])}


NET = Network(NETWORK)


def check(w, r, facilitators=()):
    return checks(w, r, facilitators)[0]


def checks(w, r, facilitators=()):
    """The settlement check, and a refund check if a refund was seen."""
    view = V.read_view(NET, [r], _Reader(Rpc(w.node.url, timeout=5)))
    net = Network(NETWORK, endpoints=(w.node.url,), facilitators=tuple(facilitators))
    return V.settlement_checks(r, [view], net, time.time())


def paid(w):
    """A payment the SDK's facilitator settled: (payment, signature)."""
    req = requirements(w)
    payment = sign_payment(w, req)
    result = facilitator(w).settle(payment, req)
    assert result.success, result
    return payment, result.transaction


def test_passed_only_when_finalized(world):
    payment, signature = paid(world)
    r = row(world, payment, signature)
    pending = check(world, r, (str(world.fee_payer.pubkey()),))
    assert (pending.result, pending.reason) == ("pending", "awaiting_finalization")
    world.node.advance(32)
    passed = check(world, r, (str(world.fee_payer.pubkey()),))
    assert (passed.result, passed.reason) == ("pass", None)
    assert passed.detail["commitment"] == "finalized" and passed.detail["fee_payer"] == str(world.fee_payer.pubkey())
    assert passed.block == pending.block == passed.detail["slot"] is not None


def test_what_the_transaction_did_must_be_what_was_paid(world):
    payment, signature = paid(world)
    world.node.advance(32)
    r = row(world, payment, signature)
    elsewhere = check(world, row(world, payment, signature, pay_to=str(Keypair().pubkey())))  # to the wrong account
    assert (elsewhere.result, elsewhere.reason) == ("fail", "unexpected_pay_to")
    less = check(world, {**r, "signed_amount": AMOUNT + 1})
    assert (less.result, less.reason) == ("fail", "amount_mismatch")
    other_memo = check(world, {**r, "memo": "another order"})
    assert (other_memo.result, other_memo.reason) == ("fail", "memo_mismatch")
    unknown = check(world, r, (str(Keypair().pubkey()),))
    assert (unknown.result, unknown.reason) == ("fail", "unexpected_fee_payer")
    assert check(world, r).result == "pass"


def test_a_settlement_the_server_did_not_name_is_found_by_its_memo(world):
    payment, signature = paid(world)
    world.node.advance(32)
    found = check(world, row(world, payment, None))
    assert (found.result, found.detail["found_by"], found.detail["signature"]) == ("pass", "memo_search", signature)


def test_a_payment_that_never_landed_expires_with_its_blockhash(world):
    payment = sign_payment(world, requirements(world))  # signed, never settled
    r = row(world, payment, None)
    waiting = check(world, r)
    assert (waiting.result, waiting.reason) == ("pending", "no_tx_hash")
    world.node.expire_blockhash()
    expired = check(world, r)
    assert (expired.result, expired.reason) == ("fail", "expired")
    claimed = check(world, {**r, "payment_hash": sol.b58encode(bytes(range(64)))})  # a signature no node has
    assert (claimed.result, claimed.reason) == ("fail", "expired")


def test_a_transfer_back_after_a_bad_outcome_is_a_refund(world):
    """Where a refund matters (here: the server answered 500 after it settled), a later transferChecked
    of the mint from pay_to back into the account the payer paid from is found and checked."""
    payment, signature = paid(world)
    world.node.advance(32)
    r = row(world, payment, signature, status=500)
    assert [c.name for c in checks(world, r)] == ["settlement_tx"]  # nothing came back yet
    back = world.node.transfer_tokens(world.mint, world.payee_key, world.payer.pubkey(), AMOUNT)
    world.node.advance(32)
    settled, refund = checks(world, r)
    assert (settled.result, refund.name, refund.result) == ("pass", "refund", "pass")
    (t,) = refund.detail["transfers"]
    assert (t["tx"], t["value"], t["to"]) == (back, AMOUNT, str(world.payer_ata))
    assert [c.name for c in checks(world, {**r, "status": 200})] == ["settlement_tx"]  # (it mattered only after a bad outcome)


def test_a_node_of_another_chain_is_a_fault(world):
    with pytest.raises(RpcError, match="wrong_chain"):
        V.read_view(Network("solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"), [], _Reader(Rpc(world.node.url, timeout=5)))
