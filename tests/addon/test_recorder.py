"""The addon's hooks with real mitmproxy flows (mitmproxy.test), without a network."""
import asyncio
import json

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons, tflow, tutils

from receipts.addon.recorder import Recorder
from receipts.storage import db


def hook(result):
    """Run a hook as mitmproxy does: it may return a coroutine, which is then awaited."""
    if result is not None:
        asyncio.run(result)


def paid_flow():
    f = tflow.tflow(resp=tutils.tresp(status_code=200, content=b'{"id":"chatcmpl-9","model":"m",'
                                      b'"usage":{"prompt_tokens":2,"completion_tokens":3,"total_tokens":5}}'))
    f.request.path = "/v1/chat/completions"
    f.request.content = json.dumps({"model": "m", "stream": False}).encode()
    f.request.headers["authorization"] = "Bearer sk-hook-secret"
    return f


def test_bad_set_values_raise_options_errors(tmp_path):
    rec = Recorder()
    with taddons.context(rec) as tctx:
        for key, value, words in (("receipts_bodies", "all", "bodies must be one of none, hash, full"),
                                  ("receipts_durability", "x", "durability must be one of full, strict, relaxed"),
                                  ("receipts_stamp", "maybe", "stamp_receipt_id must be true or false")):
            with pytest.raises(exceptions.OptionsError, match=words):
                tctx.configure(rec, receipts_data=str(tmp_path), **{key: value})
    rec.done()


def test_hooks_record_request_and_response_and_stamp(tmp_path):
    rec = Recorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, receipts_data=str(tmp_path), receipts_seal_interval="0.01")
        f = paid_flow()
        hook(rec.request(f))
        hook(rec.response(f))
        assert f.response.headers["X-Receipt-Id"] == f.metadata["receipt_id"]
    rec.done()
    with db.connect(tmp_path) as con:
        row = con.execute("SELECT status, total_tokens, usage_source, response_id FROM calls").fetchone()
        raw = " ".join(r[0] for r in con.execute("SELECT data::VARCHAR FROM events").fetchall())
    assert row == (200, 5, "provider", "chatcmpl-9")
    assert "sk-hook-secret" not in raw and "[redacted sha256:" in raw


def test_unmatched_traffic_is_left_alone(tmp_path):
    rec = Recorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, receipts_data=str(tmp_path), receipts_seal_interval="0.01")
        f = tflow.tflow(resp=True)
        f.request.path = "/static/logo.png"
        hook(rec.request(f))
        hook(rec.response(f))
        assert "X-Receipt-Id" not in f.response.headers and "receipt_id" not in f.metadata
        g = paid_flow()  # an AI call in the same run: what is recorded is read back below
        hook(rec.request(g))
        hook(rec.response(g))
    rec.done()
    with db.connect(tmp_path) as con:
        paths = con.execute("SELECT path FROM calls").fetchall()
        logo = con.execute("SELECT count(*) FROM events WHERE data::VARCHAR LIKE '%logo.png%'").fetchone()
    assert paths == [("/v1/chat/completions",)], "the AI call is recorded, the other one is not"
    assert logo == (0,)


def free_flow():
    f = paid_flow()
    del f.request.headers["authorization"]
    return f


def with_payment(f):
    f.request.headers["payment-signature"] = "eyJ4NDAyVmVyc2lvbiI6Mn0="
    return f


@pytest.mark.parametrize("paid", [True, False])
def test_an_internal_error_refuses_a_paid_exchange_and_lets_an_unpaid_one_pass(tmp_path, monkeypatch, caplog, paid):
    """The bug is INJECTED (an exception from the payload builder): no real input is known to raise any more."""
    from receipts.addon import exchange

    def broken(*a, **k):
        raise RuntimeError("injected")

    rec = Recorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, receipts_data=str(tmp_path), receipts_seal_interval="0.01")
        monkeypatch.setattr(exchange, "response_data", broken)
        f = with_payment(free_flow()) if paid else free_flow()
        upstream_answer = f.response
        hook(rec.request(f))
        assert f.response is upstream_answer, "the request itself was recorded and goes on"
        hook(rec.response(f))
        assert "X-Receipt-Id" not in f.response.headers, "no receipt id for an answer that was not recorded"
        if paid:
            assert f.response.status_code == 503 and f.response.headers["x-receipts-error"] == "internal-error"
        else:
            assert f.response is upstream_answer
        monkeypatch.setattr(exchange, "request_data", broken)
        g = with_payment(free_flow()) if paid else free_flow()
        answer = g.response
        g.response = None
        hook(rec.request(g))
        assert (g.response is not None and g.response.status_code == 503) == paid, "a paid request is never forwarded"
        g.response = g.response or answer
    rec.done()
    failures = [r for r in caplog.records if "internal error in the" in r.getMessage()]
    assert len(failures) == 2
    assert f.id in failures[0].getMessage() and g.id in failures[1].getMessage(), "logged once, with the flow's id"


@pytest.mark.parametrize("kind", ["mpp", "l402", "crawler", "mcp"])
def test_an_internal_error_before_the_record_refuses_every_kind_of_paid_request(tmp_path, monkeypatch, kind):
    """Payments that are not x402 headers (an MPP or L402 credential in Authorization, a crawler's price, an MCP
    tool call's `_meta`) are refused too when the recorder fails before it knows them. The bug is INJECTED."""
    from receipts.addon import exchange

    def broken(*a, **k):
        raise RuntimeError("injected")

    rec = Recorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, receipts_data=str(tmp_path), receipts_seal_interval="0.01")
        monkeypatch.setattr(exchange, "request_data", broken)
        g = free_flow()
        if kind == "mpp":
            g.request.headers["authorization"] = "Payment eyJjaGFsbGVuZ2UiOnt9fQ"
        elif kind == "l402":
            g.request.headers["authorization"] = "L402 AgEEbHNhdA:" + "ab" * 32
        elif kind == "crawler":
            g.request.headers["crawler-exact-price"] = "USD 0.01"
        else:
            g.request.path = "/mcp"
            g.request.headers["mcp-protocol-version"] = "2025-11-25"
            g.request.content = b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"t","_meta":{"x402/payment":{}}}}'
        g.response = None
        hook(rec.request(g))
        assert g.response is not None and g.response.status_code == 503, "a paid request is never forwarded"
    rec.done()


def test_a_streamed_answer_that_breaks_off_keeps_what_it_carried(tmp_path):
    """A client that hangs up as soon as it has an MCP tool's result (the `mcp` SDK's client did, under load in
    CI): the settlement in the event stream it got is the receipt's, and the exchange says how it ended."""
    import orjson
    from mitmproxy import flow as mflow

    from support import x402_wire as W

    tx, payer = W.random_tx_hash(), W.random_address()
    challenge = W.challenge_v2("0x" + "2" * 40, "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", 10_000)
    payment = W.payment_v2_eip3009(challenge["accepts"][0], payer, 10_000, W.random_nonce_hex(), 0, 2**40,
                                   W.random_signature())
    result = {"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": "sunny"}], "_meta": {
        "x402/payment-response": W.settlement(tx, payer, "eip155:8453", amount="10000")}}}
    rec = Recorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, receipts_data=str(tmp_path), receipts_seal_interval="0.01")
        f = tflow.tflow(resp=tutils.tresp(status_code=200, content=b""))
        f.request.path = "/mcp"
        f.request.headers["mcp-protocol-version"] = "2025-06-18"
        f.request.content = orjson.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
            "name": "weather", "arguments": {}, "_meta": {"x402/payment": payment}}})
        hook(rec.requestheaders(f))
        hook(rec.request(f))
        f.response.headers["content-type"] = "text/event-stream"
        hook(rec.responseheaders(f))
        assert callable(f.response.stream), "the answer streams through the recorder's tap"
        f.response.stream(b"event: message\ndata: " + orjson.dumps(result) + b"\n\n")
        f.error = mflow.Error("Client disconnected.")
        hook(rec.error(f))
    rec.done()
    with db.connect(tmp_path) as con:
        call = con.execute("SELECT error, stream FROM calls").fetchone()
        receipt = con.execute("SELECT payment_hash, payer, settlement_success FROM receipts").fetchone()
    assert call == ("client_disconnected: Client disconnected.", True)
    assert receipt == (tx, payer, True)
