"""x402 over MCP on the test bed: the real ``mcp`` SDK (client and Streamable HTTP server), x402's MCP payment
wrapper and MCP client, the real facilitator settling on anvil, through a real TLS-intercepting proxy.

The proxy is a bare ``mitmdump`` (no recorder addon): this module tests the bed, not the recorder. It has its own
CA (the client trusts it) and verifies the MCP server (HTTPS on localhost) against the test CA.
"""

import json
import re

import pytest

import mcp  # noqa: F401  (installed by scripts/bootstrap --test: a missing package must fail, not skip)
import x402  # noqa: F401

from support.proc import BIN, ProxyProcess, wait_for
from testbed.mcp_bed import mcp_stack

TRANSFER = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"  # Transfer(address,address,uint256)
EXPECTED_CONTENT_TYPE = {"sse": "text/event-stream", "json": "application/json"}


@pytest.fixture(scope="module")
def stack(tls):
    with mcp_stack(tls=tls) as s:
        yield s


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, tls):
    data = tmp_path_factory.mktemp("mitm")
    p = ProxyProcess(data)
    p.cmd = [str(BIN / "mitmdump"), "--listen-host", "127.0.0.1", "--listen-port", "0",
             "--set", f"confdir={data / 'ca'}", "--set", f"ssl_verify_upstream_trusted_ca={tls['ca']}"]
    with p:
        yield p


def _topic_address(topic) -> str:
    return "0x" + bytes(topic)[-20:].hex()


def _seen_by_proxy(proxy, url: str) -> int:
    """How many POSTs to ``url`` the proxy has logged."""
    return len(re.findall(rf"POST {re.escape(url)}\b", proxy.output()))


@pytest.mark.parametrize("mode", ["sse", "json"])
def test_a_paid_tool_call_through_the_proxy_moves_the_price_to_the_payee(stack, proxy, mode):
    payer_before, payee_before = stack.balance(stack.payer), stack.balance(stack.payee)
    posts_before = _seen_by_proxy(proxy, stack.url(mode))

    call = stack.call_tool("chat", {"prompt": f"paid over {mode}"}, mode=mode, proxy=proxy.url, verify=proxy.ca)

    assert call.payment_made and not call.is_error, (call.result, call.error)
    assert call.text == f"You said: paid over {mode}"
    assert call.settled and call.tx_hash, call.settlement
    assert call.settlement["payer"] == stack.payer.address and call.settlement["network"] == stack.network
    assert stack.balance(stack.payee) - payee_before == stack.price
    assert payer_before - stack.balance(stack.payer) == stack.price

    # the settlement on chain: the token's Transfer from the payer to the payee
    receipt = stack.w3().eth.get_transaction_receipt(call.tx_hash)
    assert receipt["status"] == 1
    transfers = [log for log in receipt["logs"]
                 if log["address"].lower() == stack.token.lower() and "0x" + log["topics"][0].hex().removeprefix("0x") == TRANSFER]
    assert [(_topic_address(t["topics"][1]), _topic_address(t["topics"][2]), int(t["data"].hex(), 16))
            for t in transfers] == [(stack.payer.address.lower(), stack.payee.address.lower(), stack.price)]

    # the wire: an unpaid tools/call answered with the challenge, the paid retry answered with the settlement
    unpaid, paid = call.tool_calls()
    assert [e.status for e in (unpaid, paid)] == [200, 200]
    assert {e.content_type for e in (unpaid, paid)} == {EXPECTED_CONTENT_TYPE[mode]}
    assert "_meta" not in unpaid.request_json["params"]
    [challenge] = unpaid.response_messages
    assert challenge["id"] == unpaid.request_json["id"]
    result = challenge["result"]
    assert result["isError"] is True and json.loads(result["content"][0]["text"]) == result["structuredContent"]
    assert result["structuredContent"] == call.payment_required
    [offer] = call.payment_required["accepts"]
    assert (offer["scheme"], offer["network"], offer["asset"], offer["amount"], offer["payTo"]) == (
        "exact", stack.network, stack.token, str(stack.price), stack.payee.address)

    payment = paid.request_json["params"]["_meta"]["x402/payment"]
    assert payment == call.payment and payment["accepted"] == offer
    authorization = payment["payload"]["authorization"]
    assert (authorization["from"], authorization["to"], authorization["value"]) == (
        stack.payer.address, stack.payee.address, str(stack.price))
    [answer] = paid.response_messages
    assert answer["id"] == paid.request_json["id"] != unpaid.request_json["id"]
    assert answer["result"]["_meta"]["x402/payment-response"] == call.settlement

    # one MCP session (handshake era): its id and protocol version on every request after initialize
    session = unpaid.request_header("mcp-session-id")
    assert session and paid.request_header("mcp-session-id") == session
    assert {e.request_header("mcp-protocol-version") for e in (unpaid, paid)} == {"2025-11-25"}
    assert [e.rpc_method for e in call.exchanges if e.method == "POST"][:2] == ["initialize", "notifications/initialized"]

    # it all went through the proxy, as TLS to localhost
    assert all(e.url.startswith("https://localhost:") for e in call.exchanges)
    wait_for(lambda: _seen_by_proxy(proxy, stack.url(mode)) - posts_before >= 4)  # initialize, initialized, 2 calls


def test_a_free_tool_call_pays_nothing(stack, proxy):
    balances = stack.balance(stack.payer), stack.balance(stack.payee)
    settled = len(stack.settlements())

    call = stack.call_tool("echo", {"text": "no charge"}, proxy=proxy.url, verify=proxy.ca)

    assert not call.payment_made and not call.is_error and call.text == "no charge"
    assert call.settlement is None and call.payment is None and call.payment_required is None
    [only] = call.tool_calls()
    assert "_meta" not in only.request_json["params"]
    assert "x402/payment-response" not in json.dumps(only.response_messages)
    assert (stack.balance(stack.payer), stack.balance(stack.payee)) == balances
    assert len(stack.settlements()) == settled


def test_a_paid_tool_without_payment_gets_the_challenge_and_nothing_moves(stack, proxy):
    balances = stack.balance(stack.payer), stack.balance(stack.payee)

    call = stack.call_tool("weather", {"city": "Lisbon"}, pay=False, proxy=proxy.url, verify=proxy.ca)

    assert not call.payment_made and call.is_error and call.payment is None
    assert call.payment_required["accepts"][0]["amount"] == str(stack.weather_price)
    assert call.payment_required["resource"]["url"] == "mcp://tool/weather"
    assert len(call.tool_calls()) == 1
    assert (stack.balance(stack.payer), stack.balance(stack.payee)) == balances


def test_a_failing_settlement_is_reported_as_such(stack, proxy):
    balances = stack.balance(stack.payer), stack.balance(stack.payee)

    call = stack.call_tool("chat", {"prompt": "settle this if you can"}, fail_settle=True, proxy=proxy.url,
                           verify=proxy.ca)

    # paid, but the facilitator refused the settlement: the tool's answer is withheld, nothing moved
    assert call.payment_made and call.is_error and not call.settled and call.tx_hash is None
    assert call.settlement == {"success": False, "errorReason": "invalid_exact_evm_payload_signature",
                               "transaction": "", "network": stack.network}
    assert (stack.balance(stack.payer), stack.balance(stack.payee)) == balances
    assert stack.settlements()[-1]["success"] is False
    assert stack.server_settlements()[-1]["errorReason"] == "invalid_exact_evm_payload_signature"

    # on the wire: an isError result shaped like a challenge (PaymentRequired), the failed SettleResponse inside
    # structuredContent (x402's Python wrapper), no result._meta
    unpaid, paid = call.tool_calls()
    assert "x402/payment" in paid.request_json["params"]["_meta"]
    [answer] = paid.response_messages
    result = answer["result"]
    assert result["isError"] is True and "_meta" not in result
    assert result["structuredContent"]["error"] == "Payment settlement failed: invalid_exact_evm_payload_signature"
    assert result["structuredContent"]["accepts"] == call.payment_required["accepts"]
    assert result["structuredContent"]["x402/payment-response"] == call.settlement
    assert json.loads(result["content"][0]["text"]) == result["structuredContent"]
    assert "You said" not in json.dumps(result)


def test_the_2026_protocol_pays_the_same_way_without_a_session(stack, proxy):
    """mcp 2.x's ``mcp.Client`` default: a ``server/discover`` probe, then the stateless per-request envelope
    (``Mcp-Method``/``Mcp-Name`` headers, protocol metadata in every ``params._meta``, ``resultType``)."""
    payee_before = stack.balance(stack.payee)

    call = stack.call_tool("chat", {"prompt": "modern"}, protocol="auto", proxy=proxy.url, verify=proxy.ca)

    assert call.payment_made and call.settled and call.text == "You said: modern"
    assert stack.balance(stack.payee) - payee_before == stack.price
    assert call.exchanges[0].rpc_method == "server/discover"
    unpaid, paid = call.tool_calls()
    for e in (unpaid, paid):
        assert (e.request_header("mcp-method"), e.request_header("mcp-name")) == ("tools/call", "chat")
        assert e.request_header("mcp-protocol-version") == "2026-07-28" and e.request_header("mcp-session-id") is None
    meta = paid.request_json["params"]["_meta"]
    assert meta["io.modelcontextprotocol/protocolVersion"] == "2026-07-28" and "x402/payment" in meta
    [answer] = paid.response_messages
    assert answer["result"]["resultType"] == "complete"
    assert answer["result"]["_meta"]["x402/payment-response"] == call.settlement
    assert {e.method for e in call.exchanges} == {"POST"}  # no GET stream, no DELETE
