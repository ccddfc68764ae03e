"""The MPP session bed: the real mppx 0.11.0 client and server run a `tempo` `session` (a TIP-1034 payment
channel) on anvil in Tempo mode (chain id 4217), with the test bed's channel reserve at the precompile's
address. No proxy here: the client talks to the server directly."""

import re

import pytest

from testbed.contracts.build_channel_reserve import HERE, SOURCE, compile_reserve, load_artifact, source_sha256
from testbed.mpp_session import (FEE_MANAGER, PATH_USD, RESERVE, RESERVE_DUST, b64url_json, compute_channel_id,
                                 encode_reserve_call, expiring_nonce_hash, mpp_session_stack, sign_voucher,
                                 tempo_calls, voucher_signer)
from testbed.node import AnvilError

PRICE = 10_000
DEPOSIT = 30_000  # the server's suggestedDeposit: the opening deposit and each top-up
CALLS = 5  # 5 x 10,000 > 30,000: the fourth call needs a top-up
HEX32 = re.compile(r"0x[0-9a-f]{64}")
INVALID_SIGNATURE = "0x8baa579f"  # InvalidSignature()


@pytest.fixture(scope="module")
def stack():
    with mpp_session_stack(price=PRICE, suggested_deposit=DEPOSIT) as s:
        yield s


def _fee_paid_by(s, tx_hash: str, who: str) -> int:
    """What `who` paid the fee manager in that transaction (Tempo fees are a TIP-20 transfer)."""
    return sum(t["amount"] for t in s.transfers(tx_hash) if t["from"] == who and t["to"] == FEE_MANAGER)


def test_one_session_many_calls_settled_on_close(stack):
    s = stack
    payer, payee = s.payer.address.lower(), s.payee.address.lower()
    before = {"payer": s.balance(payer), "payee": s.balance(payee), "reserve": s.balance(RESERVE)}
    seen_rpc = len(s.rpc.calls)

    with s.client() as client:
        calls = [client.call({"model": "testbed-echo-1", "messages": [{"role": "user", "content": f"call {i}"}]})
                 for i in range(CALLS)]
        closed = client.close()

    # every call was served, each after its own 402 challenge; the first opened the channel, the rest paid
    # with vouchers; the fourth first topped the channel up
    assert [c.status for c in calls] == [200] * CALLS
    assert [c.body["choices"][0]["message"]["content"] for c in calls] == [f"echo: call {i}" for i in range(CALLS)]
    assert [c.action for c in calls] == ["open"] + ["voucher"] * (CALLS - 1)
    assert [[x["response"]["status"] for x in c.exchanges] for c in calls] == \
        [[402, 200]] * 3 + [[402, 204, 200]] + [[402, 200]]
    assert [a["payload"]["action"] for a in calls[3].authorizations()] == ["topUp", "voucher"]

    channel_id = calls[0].credential["payload"]["channelId"]
    assert HEX32.fullmatch(channel_id)
    for i, call in enumerate(calls, start=1):
        ch, cred, rc = call.challenge, call.credential, call.receipt
        # the challenge: tempo/session, PRICE per request of pathUSD to the payee, on chain 4217, this escrow
        assert (ch["method"], ch["intent"]) == ("tempo", "session")
        assert ch["request"]["amount"] == str(PRICE) and ch["request"]["unitType"] == "request"
        assert ch["request"]["currency"] == PATH_USD and ch["request"]["recipient"].lower() == payee
        assert ch["request"]["suggestedDeposit"] == str(DEPOSIT)
        assert ch["request"]["methodDetails"] == {"chainId": 4217, "escrowContract": RESERVE, "sessionProtocol": "v2"}
        # the credential: echoes that challenge, names the payer, one channel, the cumulative amount so far
        assert cred["challenge"]["id"] == ch["id"] and cred["challenge"]["request"] == ch["request_b64"]
        assert cred["source"] == f"did:pkh:eip155:4217:{s.payer.address}"
        payload = cred["payload"]
        assert payload["channelId"] == channel_id and payload["cumulativeAmount"] == str(i * PRICE)
        assert compute_channel_id(payload["descriptor"]) == channel_id
        assert voucher_signer(channel_id, i * PRICE, payload["signature"]) == payer
        # the receipt: the channel is the reference; what the server accepted and charged so far
        assert (rc["method"], rc["intent"], rc["status"]) == ("tempo", "session", "success")
        assert rc["reference"] == rc["channelId"] == channel_id and rc["challengeId"] == ch["id"]
        assert (rc["acceptedCumulative"], rc["spent"], rc["units"]) == (str(i * PRICE), str(i * PRICE), i)
        assert ("txHash" in rc) == (i == 1)  # only the open's receipt names a transaction
        # later calls tell the server which channel they mean
        assert call.exchanges[0]["request"]["headers"].get("payment-session") == (channel_id if i > 1 else None)

    # the open: the client's signed 0x76 transaction calling the reserve's open(); the server broadcast it
    open_payload = calls[0].credential["payload"]
    raw_open = open_payload["transaction"]
    assert open_payload["type"] == "transaction" and raw_open.startswith("0x76")
    assert [c["to"] for c in tempo_calls(raw_open)] == [RESERVE]
    context, sender = expiring_nonce_hash(raw_open)
    assert sender == payer and context == open_payload["descriptor"]["expiringNonceHash"]
    open_tx = calls[0].receipt["txHash"]
    assert s.receipt(open_tx)["status"] == "0x1" and s.transaction(open_tx)["from"].lower() == payer
    [opened] = s.reserve_events(open_tx)
    assert opened["event"] == "ChannelOpened" and opened["args"]["channelId"] == channel_id
    assert (opened["args"]["deposit"], opened["args"]["expiringNonceHash"]) == (DEPOSIT, context)
    assert {"from": payer, "to": RESERVE, "amount": DEPOSIT} in s.transfers(open_tx)

    # the top-up: its own signed transaction, broadcast by the server, TopUp on chain
    topup_payload = calls[3].authorizations()[0]["payload"]
    topup_receipt = b64url_json(calls[3].exchanges[1]["response"]["headers"]["payment-receipt"])  # on the 204
    topup_tx = topup_receipt["txHash"]
    assert (topup_receipt["channelId"], topup_receipt["acceptedCumulative"]) == (channel_id, str(3 * PRICE))
    assert topup_payload["additionalDeposit"] == str(DEPOSIT)
    [topped] = s.reserve_events(topup_tx)
    assert topped["event"] == "TopUp" and topped["args"]["newDeposit"] == 2 * DEPOSIT

    # the close: a voucher for the final amount, posted without a body; the server closed the channel on chain
    [close_auth] = closed.authorizations()
    assert close_auth["payload"]["action"] == "close"
    assert close_auth["payload"]["cumulativeAmount"] == str(CALLS * PRICE)
    assert voucher_signer(channel_id, CALLS * PRICE, close_auth["payload"]["signature"]) == payer
    assert [x["response"]["status"] for x in closed.exchanges] == [204]
    close_receipt = closed.receipt
    assert close_receipt == closed.sdk_receipt and close_receipt["channelId"] == channel_id
    assert (close_receipt["acceptedCumulative"], close_receipt["spent"]) == (str(CALLS * PRICE), str(CALLS * PRICE))
    close_tx = close_receipt["txHash"]
    assert s.receipt(close_tx)["status"] == "0x1"
    assert s.transaction(close_tx)["from"].lower() == payee  # the payee's account sends close
    [closed_event] = s.reserve_events(close_tx)
    assert closed_event["event"] == "ChannelClosed" and closed_event["args"]["channelId"] == channel_id
    assert closed_event["args"]["settledToPayee"] == CALLS * PRICE
    assert closed_event["args"]["refundedToPayer"] == 2 * DEPOSIT - CALLS * PRICE
    moved = s.transfers(close_tx)
    assert {"from": RESERVE, "to": payee, "amount": CALLS * PRICE} in moved
    assert {"from": RESERVE, "to": payer, "amount": 2 * DEPOSIT - CALLS * PRICE} in moved
    assert s.channel_state(channel_id) == {"settled": 0, "deposit": 0, "closeRequestedAt": 0}
    assert s.server.settlements()[-1] == {"event": "settlement", "trigger": "close", "txHash": close_tx,
                                          "channelId": channel_id, "amount": str(CALLS * PRICE),
                                          "delta": str(CALLS * PRICE)}

    # the money: the payee got exactly the calls' price (less its own fee for the close transaction), the payer
    # paid exactly that plus its fees for the open and the top-up; nothing stays in the reserve
    fees_payer = _fee_paid_by(s, open_tx, payer) + _fee_paid_by(s, topup_tx, payer)
    assert s.balance(payee) - before["payee"] == CALLS * PRICE - _fee_paid_by(s, close_tx, payee)
    assert before["payer"] - s.balance(payer) == CALLS * PRICE + fees_payer
    assert s.balance(RESERVE) == before["reserve"] == RESERVE_DUST

    # who did what on chain: the client only read; the server broadcast the open and the top-up (their
    # context hashes seeded by the front) and sent the close itself
    calls_rpc = s.rpc.calls[seen_rpc:]
    assert not {"eth_sendRawTransaction", "eth_sendRawTransactionSync"} & {m for r, m in calls_rpc if r == "client"}
    assert [x["expiringNonceHash"] for x in s.rpc.seeded[-1:]] == [context]


def test_the_reserve_checks_voucher_signatures(stack):
    """settle() with a voucher the payer did not sign reverts InvalidSignature; the payer's own goes through.
    With the signature check taken out of the contract, the forged voucher would be paid: this test sees it."""
    s = stack
    with s.client() as client:
        first = client.call()
        assert first.status == 200 and first.action == "open"
        payload = first.credential["payload"]
        channel_id, descriptor = payload["channelId"], payload["descriptor"]

        def settle(signature: str) -> str:
            data = encode_reserve_call("settle", descriptor, PRICE, signature)
            return s.anvil.rpc("eth_call", {"from": s.payee.address, "to": RESERVE, "data": data}, "latest")

        forged = sign_voucher(s.payee.private_key, channel_id, PRICE)  # the payee signs its own voucher
        with pytest.raises(AnvilError, match=INVALID_SIGNATURE):
            settle(forged)
        with pytest.raises(AnvilError, match=INVALID_SIGNATURE):
            settle(payload["signature"][:-2] + "1c" if payload["signature"].endswith("1b") else
                   payload["signature"][:-2] + "1b")  # the payer's signature with the other recovery id
        assert settle(sign_voucher(s.payer.private_key, channel_id, PRICE)) == "0x"  # the payer's own: fine

        # the same check against a reserve whose signature check is broken (any recovered signer accepted)
        source = (HERE / SOURCE).read_text()
        broken_source = source.replace("if (signer == address(0) || signer != expected) revert InvalidSignature();",
                                       "if (signer == address(0)) revert InvalidSignature();")
        assert broken_source != source
        good_code = s.anvil.rpc("eth_getCode", RESERVE, "latest")
        s.anvil.rpc("anvil_setCode", RESERVE, compile_reserve(source_text=broken_source)["deployedBytecode"])
        try:
            assert settle(forged) == "0x"  # a broken reserve pays a forged voucher
        finally:
            s.anvil.rpc("anvil_setCode", RESERVE, good_code)
        with pytest.raises(AnvilError, match=INVALID_SIGNATURE):
            settle(forged)

        closed = client.close()
    assert closed.receipt["spent"] == str(PRICE)
    assert s.reserve_events(closed.receipt["txHash"])[0]["args"]["settledToPayee"] == PRICE


def test_channel_reserve_artifact_is_fresh():
    """The committed artifact is what the committed source compiles to."""
    fresh = compile_reserve()
    committed = load_artifact()
    assert committed["sourceSha256"] == source_sha256()
    assert fresh["deployedBytecode"] == committed["deployedBytecode"] and fresh["abi"] == committed["abi"]
