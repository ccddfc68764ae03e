"""The payment-channel test bed: x402's batch-settlement scheme (the real SDK client, server and facilitator)
on the test bed's own channel contracts, through an HTTPS-intercepting proxy."""

import pytest

import x402  # noqa: F401  (installed by scripts/bootstrap: a missing package must fail, not skip)

from eth_account import Account
from eth_account.messages import encode_defunct
from web3.exceptions import ContractLogicError

from support.proc import BIN, ProxyProcess
from testbed import channels
from testbed.chain import FACILITATOR, PAYEE, PAYER
from testbed.channels import AUTHORIZER, BATCH_SETTLEMENT, channel_stack
from testbed.contracts.build import compile_contracts, load_artifact, source_sha256

PRICE = 10_000
DEPOSIT = PRICE * 10  # the server's extra.minDeposit (10 x price), which the SDK client deposits
CHANNEL_CONTRACTS = ["TestChannels", "TestERC3009DepositCollector", "TestPermit2DepositCollector", "TestMulticall3"]
CHAT = {"model": "testbed-echo-1", "messages": [{"role": "user", "content": "a channel call"}]}


@pytest.fixture(scope="module")
def mitm(tmp_path_factory, tls):
    """A plain mitmdump (no addon): an HTTPS-intercepting proxy with its own CA, as apps see a recorder."""
    d = tmp_path_factory.mktemp("mitm")
    p = ProxyProcess(d)
    p.cmd = [str(BIN / "mitmdump"), "--listen-host", "127.0.0.1", "--listen-port", "0",
             "--set", f"confdir={d / 'ca'}", "--set", f"ssl_verify_upstream_trusted_ca={tls['ca']}",
             "--set", "flow_detail=0"]
    with p:
        yield p


@pytest.fixture(scope="module")
def stack(tls):
    with channel_stack(chain_id=8453, price=PRICE, tls={"cert": tls["cert"], "key": tls["key"]}) as s:
        yield s


def _sig(item: dict) -> str:
    def canon(i):
        if not i["type"].startswith("tuple"):
            return i["type"]
        return "(" + ",".join(canon(c) for c in i["components"]) + ")" + i["type"][5:]
    return f"{item['name']}({','.join(canon(i) for i in item['inputs'])})"


def _reverts(reason: str):
    return pytest.raises(ContractLogicError, match=reason)


# --------------------------------------------------------------------------------------------
# The contracts against the SDK
# --------------------------------------------------------------------------------------------


def test_channel_contracts_match_the_sdk():
    from x402.mechanisms.evm.batch_settlement import constants
    from x402.mechanisms.evm.batch_settlement.abi import BATCH_SETTLEMENT_ABI
    from x402.mechanisms.evm.constants import MULTICALL3_ADDRESS, PERMIT2_ADDRESS

    assert (channels.BATCH_SETTLEMENT, channels.ERC3009_DEPOSIT_COLLECTOR, channels.PERMIT2_DEPOSIT_COLLECTOR) == (
        constants.BATCH_SETTLEMENT_ADDRESS, constants.ERC3009_DEPOSIT_COLLECTOR_ADDRESS,
        constants.PERMIT2_DEPOSIT_COLLECTOR_ADDRESS)
    assert (channels.MULTICALL3, channels.PERMIT2) == (MULTICALL3_ADDRESS, PERMIT2_ADDRESS)
    assert Account.from_key(AUTHORIZER.private_key).address == AUTHORIZER.address

    ours = {(e["type"], _sig(e)): e for e in load_artifact("TestChannels")["abi"] if e["type"] in ("function", "event")}
    for entry in BATCH_SETTLEMENT_ABI:  # every function the SDK calls, with its inputs and outputs
        mine = ours.get((entry["type"], _sig(entry)))
        assert mine is not None, f"missing {entry['type']} {_sig(entry)}"
        if entry["type"] == "function":
            assert [o["type"] for o in mine["outputs"]] == [o["type"] for o in entry["outputs"]], _sig(entry)
        else:
            assert [i["indexed"] for i in mine["inputs"]] == [i["indexed"] for i in entry["inputs"]]
    # the events the verifier reads (documented in testbed/channels.py and the wire notes)
    assert channels.event_signatures() == {
        "ChannelOpened": "ChannelOpened(bytes32,address,address,address,address,address,uint40,bytes32)",
        "Deposited": "Deposited(bytes32,address,address,address,uint128,uint128)",
        "Claimed": "Claimed(bytes32,address,address,uint128,uint128,uint128)",
        "Settled": "Settled(address,address,address,uint128)",
        "Refunded": "Refunded(bytes32,address,address,uint128,uint256,uint128)",
        "WithdrawInitiated": "WithdrawInitiated(bytes32,address,uint128,uint40)",
        "WithdrawFinalized": "WithdrawFinalized(bytes32,address,address,uint128,uint128)",
        "WithdrawCanceled": "WithdrawCanceled(bytes32)",
    }
    for name in CHANNEL_CONTRACTS:
        assert load_artifact(name)["sourceSha256"] == source_sha256(name), \
            f"{load_artifact(name)['sourceFile']} changed: run python -m testbed.contracts.build"


def test_channel_artifacts_rebuild():
    fresh = compile_contracts(CHANNEL_CONTRACTS)
    for name in CHANNEL_CONTRACTS:
        assert fresh[name] == load_artifact(name), f"{name}: stale artifact (python -m testbed.contracts.build)"


# --------------------------------------------------------------------------------------------
# Deposit, vouchers, claim + settle, refund: through the proxy
# --------------------------------------------------------------------------------------------


def test_channel_lifecycle_through_a_proxy(stack, mitm):
    token = stack.token
    payer_before, payee_before = stack.balance(PAYER), stack.balance(PAYEE)
    held_before = stack.balance(BATCH_SETTLEMENT)
    channel_id = stack.channel_id()
    assert stack.contract().functions.getChannelId(stack.config_tuple(stack.channel_config())).call().hex() \
        == channel_id[2:]  # the contract and the SDK agree on the id

    charges = [7_000, 2_500, PRICE, 1, 0, 4_321]
    cumulative = 0
    for i, charge in enumerate(charges):
        call = stack.pay(body=CHAT, charge=charge, proxy=mitm.url, verify=mitm.ca)
        assert call.status == 200, call.text
        assert [e.status for e in call.exchanges] == [402, 200]
        (offer,) = call.payment_required["accepts"]
        assert offer["scheme"] == "batch-settlement" and offer["amount"] == str(PRICE)
        assert offer["extra"] == {"name": "USD Coin", "version": "2", "receiverAuthorizer": AUTHORIZER.address,
                                  "withdrawDelay": 900, "minDeposit": str(DEPOSIT)}
        payload = call.payment_signature["payload"]
        assert payload["type"] == ("deposit" if i == 0 else "voucher")
        assert payload["voucher"]["channelId"] == channel_id
        assert payload["voucher"]["maxClaimableAmount"] == str(cumulative + PRICE)  # signed cap: charged so far + price
        cumulative += charge
        answer = call.payment_response
        assert answer["success"] is True
        assert answer["extra"]["chargedAmount"] == str(charge)
        assert answer["extra"]["channelState"]["chargedCumulativeAmount"] == str(cumulative)
        if i == 0:
            auth = payload["deposit"]["authorization"]["erc3009Authorization"]
            assert payload["deposit"]["amount"] == str(DEPOSIT) and auth["validAfter"] == "0"
            assert answer["amount"] == str(DEPOSIT) and answer["extra"]["channelState"]["balance"] == str(DEPOSIT)
            events = stack.events(answer["transaction"])
            assert [e["event"] for e in events] == ["ChannelOpened", "Deposited"]
            assert events[1]["args"] == {"channelId": channel_id, "payer": PAYER.address, "token": token,
                                         "collector": channels.ERC3009_DEPOSIT_COLLECTOR, "amount": DEPOSIT,
                                         "balance": DEPOSIT}
        else:
            assert answer["transaction"] == ""  # a voucher moves no money: no transaction
    total = sum(charges)
    assert stack.balance(PAYER) == payer_before - DEPOSIT
    assert stack.channel() == {"channelId": channel_id, "balance": DEPOSIT, "totalClaimed": 0, "refundNonce": 0,
                               "pendingWithdrawal": {"amount": 0, "initiatedAt": 0}}
    (record,) = stack.server_channels()
    assert (record["chargedCumulativeAmount"], record["signedMaxClaimable"]) == (
        str(total), str(total - charges[-1] + PRICE))

    # the server claims what it charged, then settles it to the payee
    done = stack.claim_and_settle()
    (claim,) = done["claims"]
    assert claim["vouchers"] == 1
    (claimed,) = stack.events(claim["transaction"])
    assert claimed["event"] == "Claimed" and claimed["args"] == {
        "channelId": channel_id, "receiver": PAYEE.address, "token": token, "amount": total, "totalClaimed": total,
        "maxClaimableAmount": int(record["signedMaxClaimable"])}
    (settled,) = stack.events(done["settle"]["transaction"])
    assert settled == {"event": "Settled", "logIndex": settled["logIndex"], "args": {
        "receiver": PAYEE.address, "token": token, "sender": FACILITATOR.address, "amount": total}}
    assert stack.balance(PAYEE) == payee_before + total
    assert stack.receiver_account() == {"totalClaimed": total, "totalSettled": total}

    # the client asks for the rest back, through the proxy too
    refund = stack.refund(proxy=mitm.url, verify=mitm.ca)
    assert refund.ok, refund.error
    assert [e.status for e in refund.exchanges] == [402, 200]
    sent = refund.payment_signature["payload"]
    assert sent["type"] == "refund" and sent["voucher"]["maxClaimableAmount"] == str(total)
    assert refund.settle_response["amount"] == str(DEPOSIT - total)
    (refunded,) = stack.events(refund.tx_hash)  # the claim batched before it changes nothing: already claimed
    assert refunded["event"] == "Refunded" and refunded["args"] == {
        "channelId": channel_id, "payer": PAYER.address, "token": token, "amount": DEPOSIT - total,
        "refundNonce": 0, "balance": total}

    assert stack.balance(PAYER) == payer_before - total        # deposit back, minus what was claimed
    assert stack.balance(PAYEE) == payee_before + total        # exactly the sum of the charges
    assert stack.balance(BATCH_SETTLEMENT) == held_before      # the contract keeps nothing of this channel
    assert stack.channel() == {"channelId": channel_id, "balance": total, "totalClaimed": total, "refundNonce": 1,
                               "pendingWithdrawal": {"amount": 0, "initiatedAt": 0}}
    assert stack.server_channels() == []  # drained: the server dropped its record

    kinds = [(x["endpoint"], x["request"]["paymentPayload"]["payload"]["type"]) for x in stack.facilitator_exchanges()]
    assert kinds == [("/verify", "deposit"), ("/settle", "deposit"), ("/settle", "claim"), ("/settle", "settle"),
                     ("/verify", "refund"), ("/settle", "refund")]


# --------------------------------------------------------------------------------------------
# What the contract refuses, and what it lets through outside the server
# --------------------------------------------------------------------------------------------


def test_the_contract_checks_vouchers_claims_refunds_and_withdrawals(stack, tls):
    salt = "0x" + "00" * 31 + "07"
    client = stack.new_client(salt=salt)
    cfg = stack.channel_config(salt=salt)
    cid = stack.channel_id(cfg)
    payer_before, payee_before = stack.balance(PAYER), stack.balance(PAYEE)
    held_before = stack.balance(BATCH_SETTLEMENT)
    call = stack.pay(body=CHAT, charge=3_000, client=client, proxy=False, verify=tls["ca"])  # opens this channel
    assert call.status == 200 and call.payment_signature["payload"]["voucher"]["channelId"] == cid
    assert stack.channel(cid)["balance"] == DEPOSIT

    def claim_of(voucher, total=None):
        return stack.voucher_claim(voucher, total, config=cfg)

    # a voucher not signed by the payer (here: by the payee) is refused, by either claim path
    forged = stack.sign_voucher(3_000, channel_id=cid, private_key=PAYEE.private_key)
    with _reverts("invalid voucher signature"):
        stack.claim_on_chain([claim_of(forged)])
    with _reverts("invalid voucher signature"):
        stack.claim_on_chain([claim_of(forged)], with_signature=True)
    # a real signature over another channel's voucher, or over another amount, is refused too
    with _reverts("invalid voucher signature"):
        stack.claim_on_chain([claim_of(stack.sign_voucher(3_000))])
    tampered = {**stack.sign_voucher(3_000, channel_id=cid), "maxClaimableAmount": "3001"}
    with _reverts("invalid voucher signature"):
        stack.claim_on_chain([claim_of(tampered, 3_000)])
    # more than the voucher allows, more than the channel holds
    good = stack.sign_voucher(3_000, channel_id=cid)
    with _reverts("claim exceeds voucher"):
        stack.claim_on_chain([claim_of(good, 3_001)])
    with _reverts("claim exceeds channel balance"):
        stack.claim_on_chain([claim_of(stack.sign_voucher(DEPOSIT + 1, channel_id=cid))])
    # only the receiver authorizer claims without a signature; its signature must be its own
    with _reverts("caller is not the receiver authorizer"):
        stack.claim_on_chain([claim_of(good)], sender=PAYER)
    c = stack.contract()
    bad_batch_sig = Account.sign_message(encode_defunct(b"not a claim batch"), AUTHORIZER.private_key).signature
    with _reverts("invalid receiver authorizer signature"):
        stack._send(c.functions.claimWithSignature([claim_of(good)], bad_batch_sig), FACILITATOR)
    with _reverts("invalid refund nonce"):
        stack._send(c.functions.refundWithSignature(stack.config_tuple(cfg), 1, 5, bad_batch_sig), FACILITATOR)
    with _reverts("invalid receiver authorizer signature"):
        stack._send(c.functions.refundWithSignature(stack.config_tuple(cfg), 1, 0, bad_batch_sig), FACILITATOR)
    assert stack.channel(cid)["totalClaimed"] == 0

    # a genuine voucher signed outside the server claims more than went through the proxy (3,000)
    over = stack.sign_voucher(50_000, channel_id=cid)
    receipt = stack.claim_on_chain([claim_of(over)], with_signature=True)
    (claimed,) = channels.decode_events(stack.w3(), receipt)
    assert claimed["args"]["amount"] == 50_000 and claimed["args"]["totalClaimed"] == 50_000
    stack.claim_on_chain([claim_of(over, 20_000)])  # cumulative: a lower claim changes nothing
    assert stack.channel(cid)["totalClaimed"] == 50_000
    (settled,) = channels.decode_events(stack.w3(), stack.settle_on_chain())
    assert settled["args"]["amount"] == 50_000 and stack.balance(PAYEE) == payee_before + 50_000

    # the payer's own way out: a withdrawal, final only after the channel's withdraw delay
    with _reverts("invalid withdraw amount"):
        stack.initiate_withdraw(DEPOSIT - 50_000 + 1, config=cfg)
    stack.initiate_withdraw(40_000, config=cfg)
    assert stack.channel(cid)["pendingWithdrawal"]["amount"] == 40_000
    with _reverts("withdraw delay not elapsed"):
        stack.finalize_withdraw(config=cfg)
    stack.anvil.increase_time(stack.withdraw_delay)
    stack.anvil.mine()
    (final,) = channels.decode_events(stack.w3(), stack.finalize_withdraw(config=cfg))
    assert final["event"] == "WithdrawFinalized" and final["args"]["amount"] == 40_000

    # the server refunds "the rest" as it sees it (97,000); the contract pays only what is unclaimed (10,000)
    (done,) = stack.server_refund([cid])
    events = stack.events(done["transaction"])
    assert [e["event"] for e in events] == ["Refunded"]
    assert events[0]["args"]["amount"] == 10_000 and events[0]["args"]["balance"] == 50_000
    assert stack.channel(cid) == {"channelId": cid, "balance": 50_000, "totalClaimed": 50_000, "refundNonce": 1,
                                  "pendingWithdrawal": {"amount": 0, "initiatedAt": 0}}
    assert stack.balance(PAYER) == payer_before - 50_000
    assert stack.balance(BATCH_SETTLEMENT) == held_before
    with _reverts("nothing to refund"):
        stack._send(c.functions.refund(stack.config_tuple(cfg), 1), AUTHORIZER)


# --------------------------------------------------------------------------------------------
# Permit2 deposits, the facilitator holding the receiver-authorizer key
# --------------------------------------------------------------------------------------------


def test_permit2_deposits_with_the_facilitator_as_authorizer():
    with channel_stack(chain_id=84532, price=5_000, authorizer="facilitator", asset_transfer_method="permit2") as s:
        payer_before, payee_before = s.balance(PAYER), s.balance(PAYEE)
        first = s.pay(charge=4_000, proxy=False)
        assert first.status == 200, first.text
        offer = first.payment_required["accepts"][0]
        assert offer["extra"]["assetTransferMethod"] == "permit2"
        assert offer["extra"]["receiverAuthorizer"] == AUTHORIZER.address  # from the facilitator's /supported
        auth = first.payment_signature["payload"]["deposit"]["authorization"]["permit2Authorization"]
        assert auth["spender"] == channels.PERMIT2_DEPOSIT_COLLECTOR
        assert auth["witness"] == {"channelId": s.channel_id()} and auth["permitted"]["amount"] == "50000"
        (deposited,) = [e for e in s.events(first.tx_hash) if e["event"] == "Deposited"]
        assert deposited["args"]["collector"] == channels.PERMIT2_DEPOSIT_COLLECTOR
        assert s.pay(charge=5_000, proxy=False).status == 200

        s.claim_and_settle()
        assert s.balance(PAYEE) == payee_before + 9_000
        refund = s.refund(proxy=False)
        assert refund.ok, refund.error
        assert s.balance(PAYER) == payer_before - 9_000
        assert s.channel()["refundNonce"] == 1
