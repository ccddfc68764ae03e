"""x402 over A2A at capture: the message send a body makes, its payment in the message metadata, and what
an answer's status message says (the challenge, the last of the receipts), as the a2a-x402 extension puts
them (shapes of the a2a-sdk 1.0 JSON-RPC binding and REST; numbers as doubles, as protobuf Structs give)."""
import orjson

from receipts.addon import a2a
from receipts.addon import exchange as X
from receipts.addon.linker import Linker
from receipts.storage import config as cfg
from support import x402_wire as W

SETTINGS = cfg.load()
USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAY_TO, PAYER = "0x" + "2" * 40, "0x" + "3" * 40
REQUIRED = {**W.challenge_v2(PAY_TO, USDC, 10_000), "x402Version": 2.0}
PAYMENT = {**W.payment_v2_eip3009(REQUIRED["accepts"][0], PAYER, 10_000, W.random_nonce_hex(), 0, 2**40,
                                  W.random_signature()), "x402Version": 2.0}
TX = W.random_tx_hash()


def send(message: dict, method="SendStreamingMessage") -> bytes:
    return orjson.dumps({"method": method, "params": {"message": message}, "id": "r1", "jsonrpc": "2.0"})


def status_update(task, meta, state="TASK_STATE_INPUT_REQUIRED") -> dict:
    return {"result": {"statusUpdate": {"taskId": task, "status": {"state": state, "message": {
        "role": "ROLE_AGENT", "parts": [{"text": "…"}], "metadata": meta}}}}, "id": "r1", "jsonrpc": "2.0"}


def req(body, path="/"):
    return X.Req("POST", "https", "agent.example", 443, path, [("a2a-version", "1.0")], body, 1000.0, client="10.0.0.1")


def test_only_message_sends_are_calls_and_the_payment_is_in_their_metadata():
    assert X.request_match({"a2a-extensions"}, "agent.example", "/", SETTINGS) == "a2a"
    assert a2a.call_of(orjson.dumps({"method": "GetTask", "params": {"id": "t"}, "id": 1, "jsonrpc": "2.0"})) is None
    ask = a2a.call_of(send({"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "hi"}]}))
    assert (ask["method"], ask["task_id"], ask["payment"]) == ("SendStreamingMessage", None, None)
    paid = send({"messageId": "m2", "taskId": "t1", "role": "ROLE_USER", "parts": [{"text": "here"}],
                 "metadata": {"x402.payment.payload": PAYMENT, "x402.payment.status": "payment-submitted"}})
    data = X.request_data(req(paid), SETTINGS, logical_id="l", match="a2a", source="test",
                          call=X.body_call("a2a", paid, "/"))
    pay = data["payment"]
    assert (pay["payer"], pay["amount"], pay["x402_version"], pay["header"]) == (PAYER, "10000", 2, "a2a:metadata")
    assert data["a2a"]["task_id"] == "t1" and PAYMENT["payload"]["signature"] not in orjson.dumps(data).decode()
    rest = a2a.call_of(orjson.dumps({"message": {"taskId": "t2", "parts": []}}), "/v1/message:send")
    assert rest["task_id"] == "t2"


def test_the_answer_s_challenge_and_the_last_receipt_are_read():
    asked = X.response_data(X.Resp(200, [("content-type", "application/json")], orjson.dumps(status_update(
        "t1", {"x402.payment.status": "payment-required", "x402.payment.required": REQUIRED})), 1000.5, 1000.6),
        1000.0, SETTINGS, protocol="a2a")
    assert asked["challenge"]["accepts"][0]["pay_to"] == PAY_TO and asked["a2a"]["task_id"] == "t1"
    receipts = [W.settlement("", PAYER, "eip155:8453", success=False), W.settlement(TX, PAYER, "eip155:8453")]
    done = X.response_data(X.Resp(200, [], orjson.dumps(status_update(
        "t1", {"x402.payment.status": "payment-completed", "x402.payment.receipts": receipts},
        "TASK_STATE_COMPLETED")), 1000.5, 1000.6), 1000.0, SETTINGS, protocol="a2a")
    assert (done["settlement"]["tx_hash"], done["a2a"]["receipts"], done["a2a"]["status"]) == (TX, 2, "payment-completed")


def test_the_paid_message_joins_the_ask_by_its_task():
    linker = Linker()
    first, keys, _ = linker.open(req(send({"parts": [{"text": "hi"}]})), SETTINGS, receipt_id="a", match="a2a",
                                 source="test")
    linker.remember_task(first, "t1", 1000.0)
    linker.outcome(keys, False)
    paid = send({"taskId": "t1", "parts": [{"text": "pay"}], "metadata": {"x402.payment.payload": PAYMENT}})
    second, _, _ = linker.open(req(paid), SETTINGS, receipt_id="b", match="a2a", source="test")
    other, _, _ = linker.open(req(send({"taskId": "t9", "parts": []})), SETTINGS, receipt_id="c", match="a2a",
                              source="test")
    assert (second, other) == ("a", "c")
