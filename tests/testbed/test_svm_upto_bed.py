"""x402 `upto` on Solana with the real npm SDK (testbed/svm_upto): client, resource server and facilitator
on the local SVM node, the payment-channels program in the real SVM.

A paid call with a cap of 10,000 and a charge of 3,000 goes through a real `mitmdump` (TLS interception,
the client trusting its CA) to the HTTPS server: exactly 3,000 lands in `pay_to`'s token account and the
other 7,000 of the escrowed cap goes back to the payer. The wire (402 challenge, PAYMENT-SIGNATURE with the
payer-signed channel-open transaction, PAYMENT-RESPONSE of the claim) and the two settled transactions are
checked against what the notes (notes/svm-upto-wire.md) describe.
"""
from __future__ import annotations

import base64
import shutil
import struct

import pytest
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from support.proc import BIN, ProxyProcess
from testbed.solana_node import TOKEN_PROGRAM, ata_address, rpc_get_transaction
from testbed.svm_upto import PROGRAM_ID, PROGRAM_SO, TREASURY_OWNER_DEVNET, build_program, solana_upto_stack

pytestmark = pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                                reason="needs node and npm (the x402 npm SDK)")

CAP, CHARGE, FUNDS = 10_000, 3_000, 5 * 10**6
MEMO = "upto-order-7"


@pytest.fixture(scope="module")
def stack(tls):
    with solana_upto_stack(cap=CAP, charge=CHARGE, payer_funds=FUNDS, memo=MEMO, tls=tls) as s:
        yield s


@pytest.fixture(scope="module")
def mitmdump(tmp_path_factory, tls):
    """A bare mitmdump (no addon): intercepts TLS with its own CA, verifies the server against the test CA."""
    p = ProxyProcess(tmp_path_factory.mktemp("mitm"))
    p.cmd = [str(BIN / "mitmdump"), "--listen-host", "127.0.0.1", "--listen-port", "0",
             "--set", f"confdir={p.data / 'ca'}", "--set", f"ssl_verify_upstream_trusted_ca={tls['ca']}",
             "--set", "flow_detail=1"]
    with p:
        yield p


@pytest.fixture(scope="module")
def paid(stack, mitmdump):
    before = stack.balances()
    call = stack.pay(proxy=mitmdump.url, verify=mitmdump.ca, charge=CHARGE)
    assert call.error is None and call.status == 200, (call.error, call.status, call.body, call.stderr)
    return call, before, stack.balances()


def landed(stack, signature):
    return rpc_get_transaction(stack.node, [signature, {"encoding": "jsonParsed", "commitment": "confirmed",
                                                        "maxSupportedTransactionVersion": 0}])


def test_charge_moves_exactly_to_pay_to_and_the_rest_back(stack, paid):
    call, before, after = paid
    assert after["payee"] - before["payee"] == CHARGE
    assert before["payer"] - after["payer"] == CHARGE
    assert after["treasury"] == before["treasury"] == 0
    assert call.json()["choices"][0]["message"]["content"] == "echo: hello"


def test_went_through_the_proxy(paid, mitmdump):
    call, _, _ = paid
    assert [e["status"] for e in call.exchanges] == [402, 200]
    log = mitmdump.output()
    assert log.count("POST https://localhost:") >= 2 and "402" in log and "200 OK" in log, log


def test_challenge(stack, paid):
    call, _, _ = paid
    (accept,) = call.payment_required["accepts"]
    assert accept["scheme"] == "upto" and accept["network"] == stack.network
    assert accept["amount"] == str(CAP) and accept["asset"] == str(stack.mint) and accept["payTo"] == stack.pay_to
    extra = accept["extra"]
    assert extra["feePayer"] == str(stack.fee_payer.pubkey())
    assert extra["receiverAuthorizer"] == str(stack.authorizer.pubkey())
    assert extra["tokenProgram"] == str(TOKEN_PROGRAM) and extra["memo"] == MEMO
    assert extra["paymentFlow"] == "escrow" and extra["withdrawDelay"] == 900


def test_payment_signature_is_a_payer_signed_channel_open(stack, paid):
    call, _, _ = paid
    sig = call.payment_signature
    p = sig["payload"]
    assert sig["accepted"]["scheme"] == "upto"
    assert p["from"] == str(stack.payer.pubkey()) and p["authorizedSigner"] == str(stack.authorizer.pubkey())
    assert p["maxAmount"] == p["deposit"] == str(CAP)
    tx = VersionedTransaction.from_bytes(base64.b64decode(p["openTransaction"]))
    keys, msg = list(tx.message.account_keys), tx.message
    assert keys[0] == stack.fee_payer.pubkey() and keys[1] == stack.payer.pubkey()  # fee payer, then the payer
    assert msg.header.num_required_signatures == 2
    assert tx.verify_with_results() == [False, True]  # the fee payer signs later, at the facilitator
    programs = [str(keys[ix.program_id_index]) for ix in msg.instructions]
    assert programs == ["ComputeBudget111111111111111111111111111111"] * 2 + [PROGRAM_ID,
                                                                             "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr"]
    open_ix, memo_ix = msg.instructions[2], msg.instructions[3]
    data = bytes(open_ix.data)
    salt, deposit, grace, open_slot, count = struct.unpack_from("<QQIQI", data, 1)
    assert data[0] == 1 and deposit == CAP and grace == 900 and count == 1
    assert str(salt) == p["nonce"] and str(open_slot) == p["openSlot"]
    assert Pubkey.from_bytes(data[33:65]) == stack.payee and struct.unpack_from("<H", data, 65)[0] == 10_000
    accounts = [keys[i] for i in bytes(open_ix.accounts)]
    assert str(accounts[5]) == p["channelId"] and accounts[2] == stack.fee_payer.pubkey()  # the channel's payee
    assert bytes(memo_ix.data) == MEMO.encode()


def test_payment_response_and_what_landed(stack, paid):
    call, _, _ = paid
    pr = call.payment_response
    assert pr["success"] is True and pr["amount"] == str(CHARGE) and pr["payer"] == str(stack.payer.pubkey())
    claim = landed(stack, pr["transaction"])
    assert claim["meta"]["err"] is None
    ixs = claim["transaction"]["message"]["instructions"]
    assert [ix["programId"] for ix in ixs] == ["ComputeBudget111111111111111111111111111111"] * 2 + [
        "Ed25519SigVerify111111111111111111111111111", PROGRAM_ID, PROGRAM_ID]
    moved = [ix["parsed"]["info"] for group in claim["meta"]["innerInstructions"] for ix in group["instructions"]
             if ix.get("parsed", {}).get("type") == "transferChecked"]
    payee_ata, payer_ata = ata_address(stack.payee, stack.mint), ata_address(stack.payer.pubkey(), stack.mint)
    assert [(m["destination"], m["tokenAmount"]["amount"]) for m in moved] == [
        (str(payee_ata), str(CHARGE)), (str(payer_ata), str(CAP - CHARGE))]
    # the deposit: the first /settle of the facilitator landed the payer's open transaction (memo and all)
    deposit = stack.settlements()[0]["result"]
    opened = landed(stack, deposit["transaction"])
    assert opened["meta"]["err"] is None and deposit["amount"] == str(CAP)
    assert [ix.get("parsed") for ix in opened["transaction"]["message"]["instructions"]][-1] == MEMO
    channel = Pubkey.from_string(call.payment_signature["payload"]["channelId"])
    assert stack.node.svm.get_account(ata_address(channel, stack.mint)) is None  # the escrow is closed
    assert stack.balance(TREASURY_OWNER_DEVNET) == 0


def test_another_call_charges_its_own_amount_below_the_cap(stack):
    before = stack.balances()
    call = stack.pay(proxy=False, verify=False, charge=CAP - 1)
    assert call.status == 200 and call.payment_response["amount"] == str(CAP - 1), (call.error, call.stderr)
    after = stack.balances()
    assert after["payee"] - before["payee"] == CAP - 1 and before["payer"] - after["payer"] == CAP - 1


@pytest.mark.skipif(shutil.which("clang-14") is None and shutil.which("clang") is None, reason="needs clang")
def test_the_program_is_built_from_its_source(tmp_path):
    assert build_program(tmp_path / "p.so").read_bytes() == PROGRAM_SO.read_bytes()
