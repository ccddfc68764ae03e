"""The MPP test bed: the real pympp client and server (the `tempo` method's charge intent) on anvil in Tempo
mode (chain id 4217, the TIP-20 precompiles), directly and through a real `receipts proxy` trusting its CA."""

import re

import httpx
import pytest

import mpp  # noqa: F401  (pympp: installed with the test tools; a missing package must fail, not skip)

from eth_hash.auto import keccak

from support.proc import ProxyProcess
from testbed.mpp import (FEE_MANAGER, MPP_MEMO_TAG, PATH_USD, TRANSFER_TOPIC, TRANSFER_WITH_MEMO_TOPIC,
                         decode_tempo_transaction, mpp_stack, signed_transaction_hash)

PRICE = 12_345
TX_HASH = re.compile(r"0x[0-9a-f]{64}")


@pytest.fixture(scope="module")
def stack(tls):
    with mpp_stack(price=PRICE, tls=tls) as s:
        yield s


def _topic_address(topic: str) -> str:
    return "0x" + topic[-40:]


def _logs(receipt: dict, topic: str) -> list[dict]:
    return [log for log in receipt["logs"] if log["topics"][0] == topic and log["address"].lower() == PATH_USD]


def test_tempo_charge_moves_the_price_on_the_local_chain(stack, tls):
    payer, payee = stack.payer.address.lower(), stack.payee.address.lower()
    before_payer, before_payee = stack.balance(payer), stack.balance(payee)
    seen = len(stack.rpc.calls)

    call = stack.pay(verify=tls["ca"])
    assert call.status == 200, call.text
    assert [e.status for e in call.exchanges] == [402, 200]

    # the challenge: tempo/charge for PRICE base units of pathUSD to the payee, on chain 4217
    ch = call.challenge
    assert call.www_authenticate.startswith("Payment ")
    assert (ch["method"], ch["intent"], ch["realm"]) == ("tempo", "charge", "localhost")
    assert ch["request"]["amount"] == str(PRICE)
    assert ch["request"]["currency"] == PATH_USD
    assert ch["request"]["recipient"].lower() == payee
    assert ch["request"]["methodDetails"]["chainId"] == 4217
    assert ch["expires"]

    # the credential echoes the challenge and carries the signed type-0x76 transaction
    cred = call.credential
    assert cred["challenge"]["id"] == ch["id"] and cred["challenge"]["request"] == ch["request_b64"]
    assert cred["source"] == f"did:pkh:eip155:4217:{stack.payer.address}"
    assert cred["payload"]["type"] == "transaction" and call.signed_transaction.startswith("0x76")

    # the receipt's reference is that transaction's hash, mined on the local chain
    receipt_header = call.receipt
    assert receipt_header["status"] == "success" and receipt_header["method"] == "tempo"
    assert TX_HASH.fullmatch(call.tx_hash) and call.tx_hash == signed_transaction_hash(call.signed_transaction)
    tx, receipt = stack.transaction(call.tx_hash), stack.receipt(call.tx_hash)
    assert tx["type"] == "0x76" and receipt["status"] == "0x1"
    assert tx["from"].lower() == payer and tx["calls"][0]["to"].lower() == PATH_USD
    assert tx["feeToken"].lower() == PATH_USD and int(tx["nonceKey"], 16) == 2**256 - 1  # an expiring nonce
    decoded = decode_tempo_transaction(call.signed_transaction)  # the same, from the credential alone
    assert decoded["calls"] == [{"to": PATH_USD, "value": 0, "input": tx["calls"][0]["input"]}]
    assert (decoded["chain_id"], decoded["nonce_key"], decoded["valid_before"]) == (
        4217, 2**256 - 1, int(tx["validBefore"], 16))
    assert decoded["fee_token"] == PATH_USD and decoded["fee_payer_signature"] is None

    # the TIP-20 logs: the payment (Transfer + TransferWithMemo bound to the challenge) and the fee
    memo_log = _logs(receipt, TRANSFER_WITH_MEMO_TOPIC)
    assert len(memo_log) == 1
    memo = memo_log[0]["topics"][3]
    assert (_topic_address(memo_log[0]["topics"][1]), _topic_address(memo_log[0]["topics"][2])) == (payer, payee)
    assert int(memo_log[0]["data"], 16) == PRICE
    assert memo.startswith(MPP_MEMO_TAG) and memo[-14:] == keccak(ch["id"].encode())[:7].hex()
    transfers = {_topic_address(log["topics"][2]): int(log["data"], 16) for log in _logs(receipt, TRANSFER_TOPIC)}
    assert transfers[payee] == PRICE
    fee = transfers[FEE_MANAGER]
    assert 0 < fee < PRICE

    assert stack.balance(payee) - before_payee == PRICE
    assert before_payer - stack.balance(payer) == PRICE + fee

    # which RPC calls each side made: the client only reads, the server broadcasts and waits in one call
    calls = stack.rpc.calls[seen:]
    assert [m for r, m in calls if r == "server"] == ["eth_sendRawTransactionSync"]
    assert "eth_sendRawTransactionSync" not in [m for r, m in calls if r == "client"]


def test_push_mode_credential_carries_only_the_hash(stack, tls):
    before = stack.balance(stack.payee)
    call = stack.pay(mode="push", verify=tls["ca"])
    assert call.status == 200, call.text
    assert call.credential["payload"] == {"type": "hash", "hash": call.tx_hash}
    assert stack.receipt(call.tx_hash)["status"] == "0x1"
    assert stack.balance(stack.payee) - before == PRICE

    # the same credential again: refused (the SDK's replay store), and nothing moves
    again = httpx.post(stack.chat_url, json={"model": "m", "messages": [{"role": "user", "content": "hello"}]},
                       headers={"Authorization": call.authorization}, verify=tls["ca"], trust_env=False)
    assert again.status_code == 403 and "already used" in again.json()["detail"]
    assert "payment-receipt" not in again.headers
    assert stack.balance(stack.payee) - before == PRICE


def test_a_receipt_whose_reference_is_on_no_chain(stack, tls):
    before = stack.balance(stack.payee)
    for mode in ("random", "unsent"):
        call = stack.pay(fake_reference=mode, verify=tls["ca"])
        assert call.status == 200 and call.receipt["status"] == "success", call.text
        assert TX_HASH.fullmatch(call.tx_hash)
        assert stack.receipt(call.tx_hash) is None and stack.transaction(call.tx_hash) is None
        # "unsent": exactly what an honest receipt would say, but never broadcast
        assert (call.tx_hash == signed_transaction_hash(call.signed_transaction)) is (mode == "unsent")
    assert stack.balance(stack.payee) == before


def test_paid_through_the_recording_proxy(stack, tls, tmp_path):
    before = stack.balance(stack.payee)
    with ProxyProcess(tmp_path / "data", "--seal-interval", "0.1", upstream_ca=tls["ca"]) as proxy:
        call = stack.pay(proxy=proxy.url, verify=proxy.ca)
    assert call.status == 200, call.text
    assert [e.status for e in call.exchanges] == [402, 200]
    assert call.header("x-receipt-id")  # the proxy answered (and recorded) it
    assert stack.receipt(call.tx_hash)["status"] == "0x1"
    assert stack.balance(stack.payee) - before == PRICE
