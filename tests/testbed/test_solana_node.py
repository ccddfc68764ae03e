"""The local Solana chain (testbed/solana_node.py) with the real x402 SDK.

The SDK's exact SVM client signs a payment against the node, the SDK's facilitator verifies it
(simulation), co-signs it as fee payer and sends it; the SVM moves the tokens; getTransaction shows
what a verifier checks. Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import base64

import httpx
import pytest
from solana.rpc.api import Client
from solana.rpc.async_api import AsyncClient
from solana.rpc.core import RPCException
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.rpc.errors import SendTransactionPreflightFailureMessage
from solders.signature import Signature
from solders.transaction import VersionedTransaction
from solders.transaction_status import TransactionConfirmationStatus

from support.svm import (AMOUNT, FUNDS, MEMO, World, co_signed, facilitator, no_proxy, node,  # noqa: F401 (fixtures)
                         requirements, settle, sign_payment, world)
from testbed.solana_node import MEMO_PROGRAM, TOKEN_2022_PROGRAM, TOKEN_PROGRAM, SolanaNode

pytestmark = [pytest.mark.filterwarnings("ignore:Client is deprecated:FutureWarning"),
              pytest.mark.usefixtures("no_proxy")]  # (solana-py follows proxy variables; the node is local)

COMPUTE_BUDGET = Pubkey.from_string("ComputeBudget111111111111111111111111111111")


_http = httpx.Client(trust_env=False, timeout=10)  # one keep-alive client: a new one costs ~40 ms


@pytest.fixture(scope="module", autouse=True)
def _close_http():
    yield
    _http.close()


def rpc_answer(node: SolanaNode, method: str, *params) -> dict:
    request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    return _http.post(node.url, json=request).json()


def rpc(node: SolanaNode, method: str, *params):
    answer = rpc_answer(node, method, *params)
    assert "error" not in answer, answer
    return answer["result"]


def get_transaction(node: SolanaNode, signature: str, commitment: str = "confirmed"):
    return rpc(node, "getTransaction", signature,
               {"encoding": "jsonParsed", "commitment": commitment, "maxSupportedTransactionVersion": 0})


def status(node: SolanaNode, signature: str):
    return rpc(node, "getSignatureStatuses", [signature])["value"][0]


def test_client_signs_a_partially_signed_v0_payment(world):
    payment = sign_payment(world, requirements(world))
    tx = VersionedTransaction.from_bytes(base64.b64decode(payment.payload["transaction"]))
    message = tx.message
    assert isinstance(message, MessageV0)
    assert message.account_keys[0] == world.fee_payer.pubkey()
    assert tx.signatures[0] == Signature.default()         # left for the facilitator
    assert tx.verify_with_results() == [False, True]        # the payer's signature is real
    programs = [message.account_keys[ix.program_id_index] for ix in message.instructions]
    assert programs == [COMPUTE_BUDGET, COMPUTE_BUDGET, TOKEN_PROGRAM, MEMO_PROGRAM]
    assert bytes(message.instructions[2].data)[0] == 12     # TransferChecked
    assert bytes(message.instructions[3].data) == MEMO.encode()
    # Without the fee payer's signature the node refuses it, as a real RPC node does.
    answer = rpc_answer(world.node, "sendTransaction", base64.b64encode(bytes(tx)).decode(), {"encoding": "base64"})
    assert answer["error"]["code"] == -32003


def test_facilitator_verifies_and_settles_on_the_node(world):
    node, req = world.node, requirements(world)
    payment = sign_payment(world, req)
    fac = facilitator(world)
    verdict = fac.verify(payment, req)
    assert verdict.is_valid, verdict
    assert verdict.payer == str(world.payer.pubkey())
    lamports_before = node.balance(world.fee_payer.pubkey())

    result = fac.settle(payment, req)

    assert result.success, result
    assert node.token_balance(world.payee, world.mint) == AMOUNT
    assert node.token_balance(world.payer.pubkey(), world.mint) == FUNDS - AMOUNT
    fee = get_transaction(node, result.transaction)["meta"]["fee"]
    assert fee == 2 * 5_000  # two signatures; the fee payer paid only the fee
    assert lamports_before - node.balance(world.fee_payer.pubkey()) == fee
    assert status(node, result.transaction)["confirmationStatus"] == "confirmed"


@pytest.mark.parametrize("world", [TOKEN_PROGRAM, TOKEN_2022_PROGRAM], indirect=True, ids=["token", "token-2022"])
def test_get_transaction_json_parsed_shows_transfer_checked_and_memo(world):
    node = world.node
    signature = settle(world)

    tx = get_transaction(node, signature)

    assert tx["version"] == 0 and tx["meta"]["err"] is None
    assert tx["transaction"]["signatures"][0] == signature
    keys = tx["transaction"]["message"]["accountKeys"]
    assert keys[0] == {"pubkey": str(world.fee_payer.pubkey()), "signer": True, "writable": True,
                       "source": "transaction"}
    assert {"pubkey": str(world.payer.pubkey()), "signer": True, "writable": False,
            "source": "transaction"} in keys
    transfer, memo = tx["transaction"]["message"]["instructions"][2:]
    assert transfer["program"] == "spl-token" and transfer["programId"] == str(world.token_program)
    assert transfer["parsed"] == {"type": "transferChecked", "info": {
        "source": str(world.payer_ata), "mint": str(world.mint), "destination": str(world.payee_ata),
        "authority": str(world.payer.pubkey()),
        "tokenAmount": {"amount": str(AMOUNT), "decimals": 6, "uiAmount": 0.25, "uiAmountString": "0.25"}}}
    assert memo == {"program": "spl-memo", "programId": str(MEMO_PROGRAM), "parsed": MEMO, "stackHeight": None}
    post = {b["owner"]: b["uiTokenAmount"]["amount"] for b in tx["meta"]["postTokenBalances"]}
    assert post == {str(world.payee): str(AMOUNT), str(world.payer.pubkey()): str(FUNDS - AMOUNT)}
    assert any("Instruction: TransferChecked" in line for line in tx["meta"]["logMessages"])

    # The same answer parses with solders' own response types (what solana-py uses).
    parsed = Client(node.url).get_transaction(Signature.from_string(signature), encoding="jsonParsed",
                                              commitment="confirmed", max_supported_transaction_version=0)
    assert parsed.value.transaction.meta.fee == 10_000

    history = rpc(node, "getSignaturesForAddress", str(world.payee_ata), {"limit": 1, "commitment": "confirmed"})
    assert [(h["signature"], h["memo"], h["err"]) for h in history] == [(signature, f"[{len(MEMO)}] {MEMO}", None)]


def test_commitment_goes_from_confirmed_to_finalized_as_slots_pass(world):
    node = world.node
    signature = settle(world)
    assert status(node, signature)["confirmationStatus"] == "confirmed"
    assert get_transaction(node, signature, "finalized") is None
    assert rpc_answer(node, "getTransaction", signature, {"commitment": "processed"})["error"]["code"] == -32602

    node.advance(node.finalize_depth - 1)
    assert status(node, signature)["confirmationStatus"] == "confirmed"
    node.advance(1)

    assert status(node, signature) | {"slot": 0} == {"slot": 0, "confirmations": None, "err": None,
                                                      "status": {"Ok": None}, "confirmationStatus": "finalized"}
    assert get_transaction(node, signature, "finalized")["slot"] == status(node, signature)["slot"]


def test_a_landed_transaction_is_processed_first_when_confirmation_takes_a_slot():
    with SolanaNode(confirm_depth=1, finalize_depth=3) as node:
        signature = node.airdrop(Keypair().pubkey(), 10**6)
        seen = [status(node, signature)["confirmationStatus"]]
        for _ in range(3):
            node.advance(1)
            seen.append(status(node, signature)["confirmationStatus"])
    assert seen == ["processed", "confirmed", "confirmed", "finalized"]


def test_a_payment_over_an_expired_blockhash_does_not_land(world):
    node, req = world.node, requirements(world)
    payment = sign_payment(world, req)
    node.expire_blockhash()

    verdict = facilitator(world).verify(payment, req)
    assert not verdict.is_valid and verdict.invalid_reason == "transaction_simulation_failed"
    assert "BlockhashNotFound" in verdict.invalid_message
    assert not facilitator(world).settle(payment, req).success

    # Sent anyway, without preflight: the node hands back the signature, the chain drops the transaction.
    wire = co_signed(world, payment)
    signature = rpc(node, "sendTransaction", wire, {"encoding": "base64", "skipPreflight": True})
    assert status(node, signature) is None
    assert get_transaction(node, signature) is None
    assert node.token_balance(world.payee, world.mint) == 0
    # With preflight, solana-py gets the simulation failure as an error.
    with pytest.raises(RPCException) as caught:
        Client(node.url).send_raw_transaction(base64.b64decode(wire))
    failure = caught.value.args[0]  # solana-py's parse of error -32002
    assert isinstance(failure, SendTransactionPreflightFailureMessage)
    assert "BlockhashNotFound" in str(failure.data.err)


def test_the_blockhash_ages_out_after_150_slots(node):
    first = rpc(node, "getLatestBlockhash", {"commitment": "confirmed"})["value"]
    assert first["lastValidBlockHeight"] == node.tip() + 150
    node.advance(150)
    assert rpc(node, "isBlockhashValid", first["blockhash"])["value"] is True
    node.advance(1)
    assert rpc(node, "isBlockhashValid", first["blockhash"])["value"] is False
    assert rpc(node, "getLatestBlockhash")["value"]["blockhash"] != first["blockhash"]


def test_a_program_failure_lands_with_its_error_and_the_fee_charged(world):
    node, req = world.node, requirements(world, amount=FUNDS + 1)  # more than the payer holds
    payment = sign_payment(world, req)
    assert not facilitator(world).verify(payment, req).is_valid
    lamports_before = node.balance(world.fee_payer.pubkey())

    signature = rpc(node, "sendTransaction", co_signed(world, payment), {"encoding": "base64", "skipPreflight": True})

    error = {"InstructionError": [2, {"Custom": 1}]}  # the token program's InsufficientFunds
    assert status(node, signature)["err"] == error
    tx = get_transaction(node, signature)
    assert tx["meta"]["err"] == error and tx["meta"]["status"] == {"Err": error}
    assert lamports_before - node.balance(world.fee_payer.pubkey()) == tx["meta"]["fee"] == 10_000
    assert node.token_balance(world.payer.pubkey(), world.mint) == FUNDS


def test_solana_py_async_client_reads_the_settled_payment(world):
    signature = Signature.from_string(settle(world))

    async def read():
        client = AsyncClient(world.node.url)
        try:
            statuses = await client.get_signature_statuses([signature])
            tx = await client.get_transaction(signature, "jsonParsed", "confirmed", max_supported_transaction_version=0)
            return statuses.value[0], tx.value
        finally:
            await client.close()

    status_, tx = asyncio.run(read())
    assert status_.confirmation_status == TransactionConfirmationStatus.Confirmed
    assert tx.transaction.meta.err is None and tx.slot == status_.slot


def test_solana_py_reads_accounts_fees_and_slots(world):
    node, client = world.node, Client(world.node.url)
    mint = client.get_account_info(world.mint).value
    assert mint.owner == TOKEN_PROGRAM and mint.data[44] == 6
    parsed = client.get_account_info_json_parsed(world.mint).value.data.parsed
    assert parsed["type"] == "mint" and parsed["info"]["supply"] == str(FUNDS)
    accounts = client.get_multiple_accounts([world.payer_ata, Keypair().pubkey()]).value
    assert accounts[0].owner == TOKEN_PROGRAM and accounts[1] is None
    assert client.get_token_account_balance(world.payer_ata).value.amount == str(FUNDS)
    assert client.get_balance(world.fee_payer.pubkey()).value == 10**9
    assert client.get_minimum_balance_for_rent_exemption(165).value == 2_039_280
    message = MessageV0.try_compile(world.fee_payer.pubkey(), [], [], client.get_latest_blockhash().value.blockhash)
    assert client.get_fee_for_message(message).value == 5_000
    node.advance(40)
    assert [client.get_slot(c).value for c in ("processed", "confirmed", "finalized")] == [40, 40, 8]
    assert rpc_answer(node, "getBlock", 1)["error"]["code"] == -32601
