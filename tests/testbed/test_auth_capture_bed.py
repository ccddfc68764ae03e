"""The auth-capture (escrow) test bed: the REAL npm x402 client (@x402/evm 2.27.0 ./auth-capture/client) pays
through an HTTPS-intercepting proxy; the test bed's escrow (at the client's constant addresses) holds the cap;
the server captures and voids on demand through the facilitator."""

import json
import subprocess

import pytest

import x402  # noqa: F401  (installed by scripts/bootstrap: a missing package must fail, not skip)

from eth_account import Account
from web3.exceptions import ContractLogicError

from support.proc import BIN, ProxyProcess
from testbed import auth_capture
from testbed.auth_capture import (
    AUTH_CAPTURE_ESCROW,
    AUTHORIZER,
    EIP3009_TOKEN_COLLECTOR,
    OPERATOR_REFUND_COLLECTOR,
    auth_capture_stack,
    revert_error,
)
from testbed.auth_capture_scheme import (
    derive_bound_salt,
    payment_info_hash,
    receive_authorization_signable,
    recover,
)
from testbed.chain import FACILITATOR, PAYEE, PAYER
from testbed.contracts.build import compile_contracts, load_artifact, source_sha256

CAP = 10_000
CONTRACTS = ["TestAuthCaptureEscrow", "TestERC3009TokenCollector", "TestOperatorRefundCollector"]


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
    with auth_capture_stack(chain_id=8453, price=CAP, tls={"cert": tls["cert"], "key": tls["key"]}) as s:
        yield s


def _reverts(error: str):
    class _Catch:
        def __enter__(self):
            return self

        def __exit__(self, kind, exc, tb):
            assert exc is not None, f"expected a revert with {error}"
            assert isinstance(exc, ContractLogicError), exc
            assert revert_error(exc) == error, (revert_error(exc), exc)
            return True
    return _Catch()


# --------------------------------------------------------------------------------------------
# The contracts against the npm client
# --------------------------------------------------------------------------------------------


def test_contracts_sit_at_the_npm_clients_addresses(stack):
    script = ("import('@x402/evm').then(m => console.log(JSON.stringify([m.AUTH_CAPTURE_ESCROW_ADDRESS, "
              "m.EIP3009_TOKEN_COLLECTOR_ADDRESS, m.OPERATOR_REFUND_COLLECTOR_ADDRESS])))")
    out = subprocess.run(["node", "--input-type=module", "-e", script], cwd=auth_capture.NODE_DIR,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(out) == [AUTH_CAPTURE_ESCROW, EIP3009_TOKEN_COLLECTOR, OPERATOR_REFUND_COLLECTOR]
    w3 = stack.w3()
    for address in auth_capture.contracts():
        assert len(w3.eth.get_code(address)) > 100
    assert Account.from_key(AUTHORIZER.private_key).address == AUTHORIZER.address
    # the events and lifecycle functions the decoder and the verifier read (see the wire notes)
    assert auth_capture.event_signatures() == {
        "PaymentAuthorized": "PaymentAuthorized(bytes32,(address,address,address,address,uint120,uint48,uint48,"
                             "uint48,uint16,uint16,address,uint256),uint256,address)",
        "PaymentCharged": "PaymentCharged(bytes32,(address,address,address,address,uint120,uint48,uint48,uint48,"
                          "uint16,uint16,address,uint256),uint256,address,uint256,address)",
        "PaymentCaptured": "PaymentCaptured(bytes32,uint256,uint256,address)",
        "PaymentVoided": "PaymentVoided(bytes32,uint256)",
        "PaymentReclaimed": "PaymentReclaimed(bytes32,uint256)",
        "PaymentRefunded": "PaymentRefunded(bytes32,uint256,address)",
        "TokenStoreCreated": "TokenStoreCreated(address,address)",
    }
    for name in CONTRACTS:
        assert load_artifact(name)["sourceSha256"] == source_sha256(name), \
            f"{load_artifact(name)['sourceFile']} changed: run python -m testbed.contracts.build"


def test_auth_capture_artifacts_rebuild():
    fresh = compile_contracts(CONTRACTS)
    for name in CONTRACTS:
        assert fresh[name] == load_artifact(name), f"{name}: stale artifact (python -m testbed.contracts.build)"


# --------------------------------------------------------------------------------------------
# Authorize 10,000; capture 4,000; void the rest: through the proxy
# --------------------------------------------------------------------------------------------


def test_authorize_capture_void_through_a_proxy(stack, mitm):
    before = stack.balances()
    call = stack.pay(proxy=mitm.url, verify=mitm.ca)  # the client trusts only the proxy's CA: it went through it
    assert call.ok, (call.error, call.status, call.body, call.stderr)
    assert [x["response"]["status"] for x in call.exchanges] == [402, 200]
    assert call.body["choices"][0]["message"]["content"] == "You said: hello"

    # the 402's offer, as the npm client needs it
    (offer,) = call.payment_required["accepts"]
    extra = offer["extra"]
    assert (offer["scheme"], offer["amount"], offer["payTo"], offer["asset"]) == (
        "auth-capture", str(CAP), PAYEE.address, stack.token)
    assert extra["captureAuthorizer"] == FACILITATOR.address and extra["receiverAuthorizer"] == AUTHORIZER.address
    assert extra["authCaptureEscrow"] == AUTH_CAPTURE_ESCROW
    assert (extra["paymentFlow"], extra["captureMode"], extra["operatorType"]) == ("escrow", "deferred", "delegated")
    assert extra["refundDeadline"] > extra["captureDeadline"] > offer["maxTimeoutSeconds"]

    # what the client signed: ReceiveWithAuthorization of the whole cap to the collector,
    # its nonce the payer-agnostic payment hash
    sent = call.payment_signature
    assert sent["x402Version"] == 2 and sent["accepted"] == offer
    auth = sent["payload"]["authorization"]
    assert (auth["from"], auth["to"], auth["value"], auth["validAfter"]) == (
        PAYER.address, EIP3009_TOKEN_COLLECTOR, str(CAP), "0")
    assert int(auth["validBefore"]) <= extra["captureDeadline"]
    salt, salt_nonce = sent["payload"]["salt"], sent["payload"]["saltNonce"]
    assert salt == derive_bound_salt(AUTHORIZER.address, None, salt_nonce)  # bound: the authorizer is in the salt
    info = call.payment_info
    assert info["operator"] == FACILITATOR.address and info["receiver"] == PAYEE.address
    assert auth["nonce"] == payment_info_hash(stack.chain_id, info, payer_agnostic=True)
    signable = receive_authorization_signable(auth, token_name="USD Coin", token_version="2",
                                              chain_id=stack.chain_id, token=stack.token)
    assert recover(signable, sent["payload"]["signature"]) == PAYER.address

    # the answer names the authorize transaction and the amount now held
    answer = call.payment_response
    assert answer == {"success": True, "payer": PAYER.address, "transaction": call.tx_hash, "network": stack.network,
                      "amount": str(CAP)}
    hash_ = call.payment_info_hash
    events = stack.events(call.tx_hash)
    authorized = next(e for e in events if e["event"] == "PaymentAuthorized")
    assert authorized["args"]["paymentInfoHash"] == hash_ and authorized["args"]["amount"] == CAP
    assert authorized["args"]["tokenCollector"] == EIP3009_TOKEN_COLLECTOR
    assert authorized["args"]["paymentInfo"]["salt"] == int(salt, 16)
    assert stack.payment_state(hash_) == {"hasCollectedPayment": True, "capturableAmount": CAP, "refundableAmount": 0}
    held = stack.balances()
    assert held["payer"] == before["payer"] - CAP and held["escrow"] == before["escrow"] + CAP
    assert held["payee"] == before["payee"]

    # capture 4,000: the merchant is paid that, the escrow keeps 6,000
    done = stack.capture(4_000, hash_)
    assert done["settlement"]["success"] is True, done
    assert done["payload"]["type"] == "capture" and done["payload"]["expectedCapturableAmount"] == str(CAP)
    (captured,) = stack.events(done["settlement"]["transaction"])
    assert captured == {"event": "PaymentCaptured", "logIndex": captured["logIndex"], "args": {
        "paymentInfoHash": hash_, "amount": 4_000, "feeAmount": 0, "feeReceiver": FACILITATOR.address}}
    assert stack.balance(PAYEE) == before["payee"] + 4_000
    assert stack.payment_state(hash_)["capturableAmount"] == 6_000

    # more than is held: the escrow refuses (the facilitator's simulation, and the operator sending it itself)
    refused = stack.capture(6_001, hash_)["settlement"]
    assert refused["success"] is False
    assert refused["errorReason"] == "invalid_auth_capture_evm_insufficient_authorization"
    with _reverts("InsufficientAuthorization(bytes32,uint256,uint256)"):
        stack.capture_on_chain(6_001)
    with _reverts("InsufficientAuthorization(bytes32,uint256,uint256)"):
        stack.capture_on_chain(CAP + 1)

    # void: the payer gets the other 6,000 back
    voided = stack.void(hash_)
    assert voided["settlement"]["success"] is True, voided
    (event,) = stack.events(voided["settlement"]["transaction"])
    assert event["event"] == "PaymentVoided" and event["args"] == {"paymentInfoHash": hash_, "amount": 6_000}
    after = stack.balances()
    assert after["payer"] == before["payer"] - 4_000
    assert after["payee"] == before["payee"] + 4_000
    assert after["escrow"] == before["escrow"]
    assert stack.payment_state(hash_) == {"hasCollectedPayment": True, "capturableAmount": 0,
                                          "refundableAmount": 4_000}

    kinds = [(x["endpoint"], x["request"]["paymentPayload"]["payload"].get("type", "authorize"))
             for x in stack.facilitator_exchanges()[-4:]]
    assert kinds == [("/settle", "authorize"), ("/settle", "capture"), ("/settle", "capture"), ("/settle", "void")]


# --------------------------------------------------------------------------------------------
# What the escrow and the facilitator refuse
# --------------------------------------------------------------------------------------------


def test_the_escrow_refuses_what_was_not_authorized(stack, tls):
    call = stack.pay(proxy=False, verify=tls["ca"])
    assert call.ok, (call.error, call.body)
    hash_, info = call.payment_info_hash, call.payment_info

    # only the operator captures or voids; only the payer reclaims, and not before the capture deadline
    with _reverts("InvalidSender(address,address)"):
        stack.capture_on_chain(1, info, sender=PAYEE)
    with _reverts("InvalidSender(address,address)"):
        stack.void_on_chain(info, sender=PAYER)
    with _reverts("BeforeAuthorizationExpiry(uint48,uint48)"):
        stack.reclaim_on_chain(info)
    # a changed PaymentInfo is another payment: nothing is held for it
    with _reverts("InsufficientAuthorization(bytes32,uint256,uint256)"):
        stack.capture_on_chain(1, {**info, "receiver": PAYER.address})

    # the same signed payment cannot be collected twice
    signature = call.payment_signature["payload"]["signature"]
    (first,) = [x for x in stack.facilitator_exchanges()
                if x["request"]["paymentPayload"]["payload"].get("signature") == signature]
    replay = stack.facilitator_settle(first["request"])
    assert replay["success"] is False
    assert replay["errorReason"] == "invalid_auth_capture_evm_payment_already_collected"

    # a capture signed for balances that are not the escrow's is refused before it is sent
    stale = stack.capture(1_000, hash_, expectedCapturableAmount=str(CAP - 1))["settlement"]
    assert stale["success"] is False and stale["errorReason"] == "invalid_auth_capture_evm_unexpected_payment_state"
    assert stack.payment_state(hash_)["capturableAmount"] == CAP

    # after the capture deadline the payer takes the hold back itself, and no capture is possible any more
    snapshot = stack.anvil.snapshot()
    try:
        payer_before = stack.balance(PAYER)
        stack.anvil.increase_time(info["authorizationExpiry"] - stack.w3().eth.get_block("latest")["timestamp"] + 1)
        stack.anvil.mine()
        with _reverts("AfterAuthorizationExpiry(uint48,uint48)"):
            stack.capture_on_chain(1, info)
        receipt = stack.reclaim_on_chain(info)
        (event,) = auth_capture.decode_events(stack.w3(), receipt)
        assert event["event"] == "PaymentReclaimed" and event["args"] == {"paymentInfoHash": hash_, "amount": CAP}
        assert stack.balance(PAYER) == payer_before + CAP
    finally:
        stack.anvil.revert(snapshot)
    assert stack.void(hash_)["settlement"]["success"] is True


def test_unbound_salt_without_a_receiver_authorizer():
    with auth_capture_stack(chain_id=84532, price=CAP, receiver_authorizer=False) as s:
        call = s.pay(proxy=False)
        assert call.ok, (call.error, call.body)
        extra = call.payment_required["accepts"][0]["extra"]
        assert "receiverAuthorizer" not in extra
        payload = call.payment_signature["payload"]
        assert "saltNonce" not in payload  # unbound: the salt is the client's random 32 bytes
        nonce = payment_info_hash(s.chain_id, call.payment_info, payer_agnostic=True)
        assert payload["authorization"]["nonce"] == nonce
        assert s.payment_state(call.payment_info_hash)["capturableAmount"] == CAP
        with pytest.raises(auth_capture.LifecycleError, match="no receiver authorizer"):
            s.capture(4_000)
        # the operator still captures and voids out of band (as the facilitator's own account)
        s.capture_on_chain(4_000)
        s.void_on_chain()
        assert s.balance(PAYEE) == 4_000
        assert s.balance(s.token_store()) == 0
