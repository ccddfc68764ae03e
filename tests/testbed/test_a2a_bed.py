"""x402 over A2A on the test bed: the real a2a-sdk agent (testbed/a2a_agent.py) asks for an x402 payment in an
``input-required`` task, the real a2a-sdk client pays it with the real x402 SDK (exact EVM, EIP-3009) through
`receipts proxy` (HTTPS, the proxy's CA), and the agent settles through the real facilitator on anvil."""

import pytest

import x402  # noqa: F401  (installed by scripts/bootstrap: a missing package must fail, not skip)
import a2a  # noqa: F401  (same: a2a-sdk)

from support.proc import ProxyProcess
from testbed import chain
from testbed.a2a_agent import X402_EXTENSION_URI
from testbed.a2a_bed import a2a_stack

STATUSES = ["payment-required", "payment-verified", "payment-completed"]


@pytest.fixture(scope="module")
def stack(tls):
    with a2a_stack(chain_id=8453, tls=tls) as s:
        yield s


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, tls):
    with ProxyProcess(tmp_path_factory.mktemp("data"), "--seal-interval", "0.1", upstream_ca=tls["ca"]) as p:
        yield p


def _balances(s):
    return s.balance(s.payer), s.balance(s.payee)


def test_a_paid_a2a_task_through_the_proxy_moves_the_price_on_anvil(stack, proxy, monkeypatch):
    before = _balances(stack)
    # as after `eval "$(receipts env)"`: HTTPS_PROXY is the proxy, and SSL_CERT_FILE its CA alone, so the agent's
    # own certificate (another CA) would fail: the proxy opened the connection
    for name, value in proxy.client_env().items():
        monkeypatch.setenv(name, value)

    paid = stack.pay("what does this cost?")  # proxy and CA from the environment

    assert paid.error is None, paid.error
    assert paid.state == "TASK_STATE_COMPLETED" and paid.payment_status == "payment-completed"
    assert paid.payment_statuses == STATUSES  # streamed: required, then verified and completed
    assert paid.answer == "You said: what does this cost?"
    # the offer the agent made (x402 v2 PaymentRequired in the task's status message)
    required = paid.payment_required
    assert required["x402Version"] == 2
    assert required["accepts"] == [{
        "scheme": "exact", "network": "eip155:8453", "asset": stack.token, "amount": str(stack.price),
        "payTo": stack.payee.address, "maxTimeoutSeconds": 300, "extra": {"name": "USD Coin", "version": "2"}}]
    # the payment the x402 SDK signed and the client sent in the message metadata
    auth = paid.payment["payload"]["authorization"]
    assert paid.payment["accepted"] == required["accepts"][0]
    assert (auth["from"], auth["to"], auth["value"]) == (stack.payer.address, stack.payee.address, str(stack.price))
    # the receipts list: one SettleResponse from the real facilitator
    [receipt] = paid.receipts
    assert receipt["success"] is True and receipt["network"] == "eip155:8453"
    assert receipt["payer"] == stack.payer.address
    assert paid.tx_hash and paid.tx_hash in [s["transaction"] for s in stack.settlements()]

    # the money moved on anvil, in the settlement transaction
    assert _balances(stack) == (before[0] - stack.price, before[1] + stack.price)
    tx = stack.anvil.receipt(paid.tx_hash)
    assert int(tx["status"], 16) == 1
    [transfer] = [log for log in tx["logs"] if log["topics"][0] == chain.TRANSFER_TOPIC]
    assert transfer["topics"][1:] == [chain.topic_address(stack.payer.address), chain.topic_address(stack.payee.address)]
    assert int(transfer["data"], 16) == stack.price
    assert chain.authorization_state(stack.rpc_url, stack.token, stack.payer.address, auth["nonce"])

    # the wire: the card, two SendStreamingMessage (SSE) to the JSON-RPC endpoint, GetTask
    card, first, paying, get = paid.exchanges
    assert (card.method, card.url, card.status) == ("GET", stack.card_url, 200)
    for ex in (first, paying, get):
        assert (ex.method, ex.url, ex.status) == ("POST", stack.agent_url + "/", 200)
        assert ex.request_header("A2A-Extensions") == X402_EXTENSION_URI
        assert ex.request_header("A2A-Version") == "1.0"
        assert ex.response_header("A2A-Extensions") == X402_EXTENSION_URI
    assert [ex.request_json()["method"] for ex in (first, paying, get)] == [
        "SendStreamingMessage", "SendStreamingMessage", "GetTask"]
    assert first.is_sse and paying.is_sse and not get.is_sse
    metadata = paying.request_json()["params"]["message"]["metadata"]
    assert metadata["x402.payment.status"] == "payment-submitted"
    assert metadata["x402.payment.payload"]["payload"]["signature"] == paid.payment["payload"]["signature"]
    events = paying.response_json()
    assert [next(iter(e["result"])) for e in events] == ["statusUpdate", "artifactUpdate", "statusUpdate"]


def test_a_failed_settlement_ends_the_task_failed_with_a_receipt_and_moves_nothing(stack):
    before = _balances(stack)

    paid = stack.pay("pay and fail", proxy=False, verify=False, fail="settle")

    assert paid.state == "TASK_STATE_FAILED", paid.task
    assert paid.payment_status == "payment-failed" and paid.payment_error == "SETTLEMENT_FAILED"
    assert paid.payment_statuses == ["payment-required", "payment-verified", "payment-failed"]
    [receipt] = paid.receipts
    assert receipt["success"] is False and receipt["errorReason"] and receipt["payer"] == stack.payer.address
    assert paid.answer is None  # no answer without settlement
    assert _balances(stack) == before  # the payer's balance was moved away during settlement, then back
    if paid.tx_hash:  # the facilitator sent it and it reverted
        assert int(stack.anvil.receipt(paid.tx_hash)["status"], 16) == 0
    auth = paid.payment["payload"]["authorization"]
    assert not chain.authorization_state(stack.rpc_url, stack.token, stack.payer.address, auth["nonce"])


@pytest.mark.parametrize("fail, status, error", [
    ("verify", "payment-failed", "INVALID_SIGNATURE"),  # the client spoiled its signature
    ("reject", "payment-rejected", None),               # the client declined to pay
])
def test_a_payment_that_is_not_made_ends_the_task_and_moves_nothing(stack, fail, status, error):
    before = _balances(stack)
    paid = stack.pay("no deal", proxy=False, verify=False, fail=fail, streaming=False)
    assert (paid.state, paid.payment_status, paid.payment_error) == ("TASK_STATE_FAILED", status, error)
    assert all(r["success"] is False for r in paid.receipts)
    assert _balances(stack) == before


def test_a_message_without_the_extension_activated_is_refused(stack):
    paid = stack.pay("who needs extensions", proxy=False, verify=False, activate=False)
    assert paid.error and "ExtensionSupportRequired" in paid.error
    assert paid.payment_required is None and paid.payment is None


@pytest.mark.parametrize("binding, version, streaming, endpoint", [
    ("JSONRPC", "1.0", False, "/"),
    ("HTTP+JSON", "1.0", True, "/rest/message:stream"),
    ("JSONRPC", "0.3", True, "/"),
    ("HTTP+JSON", "0.3", False, "/rest/v1/message:send"),
])
def test_every_binding_and_protocol_version_pays(stack, binding, version, streaming, endpoint):
    before = _balances(stack)
    paid = stack.pay("again", proxy=False, verify=False, binding=binding, protocol_version=version,
                     streaming=streaming)
    assert paid.error is None, paid.error
    assert paid.payment_status == "payment-completed" and paid.receipts[0]["success"] is True
    assert _balances(stack) == (before[0] - stack.price, before[1] + stack.price)
    assert paid.exchanges[1].url == stack.agent_url + endpoint
    if version == "0.3":  # the SDK's 0.3 transports also send the extension under its old name
        assert paid.exchanges[1].request_header("X-A2A-Extensions") == X402_EXTENSION_URI
