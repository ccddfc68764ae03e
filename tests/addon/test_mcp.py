"""x402 over MCP at capture: the tool call a JSON-RPC body makes, its payment in `_meta`, the challenge and
settlement in the answer (JSON or an event stream), and the linking of the unpaid call with its paid retry.
The shapes are the x402 MCP transport's (the SDK's own `x402.mcp` helpers build the payment's `_meta`)."""
import orjson
from x402.mcp.utils import extract_payment_from_meta

from receipts.addon import exchange as X
from receipts.addon import mcp
from receipts.addon.linker import Linker
from receipts.addon.sse import SSEParser
from receipts.storage import config as cfg
from support import x402_wire as W

SETTINGS = cfg.load()
USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAY_TO, PAYER = "0x" + "2" * 40, "0x" + "3" * 40
CHALLENGE = W.challenge_v2(PAY_TO, USDC, 10_000)
PAYMENT = W.payment_v2_eip3009(CHALLENGE["accepts"][0], PAYER, 7_000, W.random_nonce_hex(), 0, 2**40,
                               W.random_signature())
SETTLED = W.settlement(W.random_tx_hash(), PAYER, "eip155:8453", amount="7000")


def tool_call(rid, payment=None, arguments=None):
    params = {"name": "weather", "arguments": arguments or {"city": "Oslo"}}
    if payment is not None:
        params["_meta"] = {"x402/payment": payment}
    return orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params})


def challenge_result(rid):
    text = orjson.dumps(CHALLENGE).decode()
    return {"jsonrpc": "2.0", "id": rid, "result": {"isError": True, "structuredContent": CHALLENGE,
                                                     "content": [{"type": "text", "text": text}]}}


def paid_result(rid, settlement=SETTLED):
    return {"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": "sunny"}],
                                                     "_meta": {"x402/payment-response": settlement}}}


def req(body, headers=(("mcp-protocol-version", "2025-06-18"), ("content-type", "application/json"))):
    return X.Req("POST", "https", "tools.example", 443, "/mcp", list(headers), body, 1000.0, client="10.0.0.1")


def resp(doc, content_type="application/json"):
    return X.Resp(200, [("content-type", content_type)], orjson.dumps(doc), 1000.5, 1000.6)


def test_only_mcp_requests_are_looked_into_by_cheap_signals():
    assert X.request_match({"mcp-session-id"}, "tools.example", "/anything", SETTINGS) == "mcp"
    assert X.request_match(set(), "tools.example", "/v2/mcp/", SETTINGS) == "mcp"
    assert X.request_match({"content-type"}, "tools.example", "/api/mcpx", SETTINGS) is None


def test_the_tool_call_and_its_payment_are_read_from_the_body():
    body = tool_call(7, PAYMENT)
    assert extract_payment_from_meta(orjson.loads(body)["params"]) is not None  # (the SDK reads it there too)
    call = mcp.call_of(body)
    assert (call["id"], call["method"], call["tool"], call["payment"]) == (7, "tools/call", "weather", PAYMENT)
    assert mcp.call_of(orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})) is None
    assert mcp.call_of(b"not json") is None and mcp.call_of(b"[]") is None
    data = X.request_data(req(body), SETTINGS, logical_id="l", match="mcp", source="test",
                          call=X.body_call("mcp", body, "/mcp"))
    pay = data["payment"]
    assert (pay["payer"], pay["pay_to"], pay["amount"], pay["header"]) == (PAYER, PAY_TO, "7000", "mcp:_meta")
    assert data["mcp"] == {"id": 7, "method": "tools/call", "tool": "weather"}
    assert PAYMENT["payload"]["signature"] not in orjson.dumps(data).decode()  # (kept as a hash only)


def test_the_challenge_and_the_settlement_are_read_from_the_answer():
    d = X.response_data(resp(challenge_result(7)), 1000.0, SETTINGS, protocol="mcp")
    assert d["challenge"]["source"] == "mcp" and d["challenge"]["accepts"][0]["pay_to"] == PAY_TO
    assert d["mcp"] == {"id": 7, "is_error": True} and d["settlement"] is None
    # the challenge as text only (no structuredContent) is found too
    text_only = challenge_result(8)
    del text_only["result"]["structuredContent"]
    assert X.response_data(resp(text_only), 1000.0, SETTINGS, protocol="mcp")["challenge"]["accepts"][0]["amount"] == "10000"
    d = X.response_data(resp(paid_result(9)), 1000.0, SETTINGS, protocol="mcp")
    assert (d["settlement"]["tx_hash"], d["settlement"]["amount"], d["challenge"]) == (SETTLED["transaction"], "7000", None)
    failed = X.response_data(resp(paid_result(10, W.settlement("", PAYER, "eip155:8453", success=False,
                                                               error_reason="insufficient_funds"))), 1000.0, SETTINGS, protocol="mcp")
    assert (failed["settlement"]["success"], failed["settlement"]["error_reason"]) == (False, "insufficient_funds")


def test_an_event_stream_answer_gives_the_same_at_its_end():
    parser = SSEParser()
    parser.feed(b"event: message\ndata: " + orjson.dumps(paid_result(11)) + b"\n\n")
    parser.close()
    summary = parser.summary()
    assert summary["done"] is True
    end = X.stream_end_data(summary, 1000.0, 1001.0, protocol="mcp")
    assert end["settlement"]["tx_hash"] == SETTLED["transaction"] and end["mcp"]["id"] == 11


def test_the_paid_retry_joins_its_unpaid_call_and_a_new_call_does_not():
    linker = Linker()
    first, _, _ = linker.open(req(tool_call(1)), SETTINGS, receipt_id="a", match="mcp", source="test")
    linker.outcome(linker.keys("10.0.0.1", "POST", "https://tools.example:443/mcp", None, None, None,
                               ("weather", mcp.call_of(tool_call(1))["arguments_sha256"])), False)  # (a challenge)
    retry, keys, _ = linker.open(req(tool_call(2, PAYMENT)), SETTINGS, receipt_id="b", match="mcp", source="test")
    assert retry == first == "a"
    linker.outcome(keys, True)  # it was served
    again, _, _ = linker.open(req(tool_call(3)), SETTINGS, receipt_id="c", match="mcp", source="test")
    other, _, _ = linker.open(req(tool_call(4, arguments={"city": "Rome"})), SETTINGS, receipt_id="d", match="mcp",
                              source="test")
    assert (again, other) == ("c", "d")


def test_a_failed_settlement_inside_the_error_result_is_read():
    """x402's Python MCP wrapper answers a settlement that failed with an error result whose PaymentRequired
    holds the SettleResponse (no `_meta`)."""
    failed = W.settlement("", PAYER, "eip155:8453", success=False, error_reason="invalid_exact_evm_payload_signature")
    answer = challenge_result(12)
    answer["result"]["structuredContent"] = {**CHALLENGE, "error": "Payment settlement failed",
                                             "x402/payment-response": failed}
    d = X.response_data(resp(answer), 1000.0, SETTINGS, protocol="mcp")
    assert (d["settlement"]["success"], d["settlement"]["error_reason"]) == (False, "invalid_exact_evm_payload_signature")
