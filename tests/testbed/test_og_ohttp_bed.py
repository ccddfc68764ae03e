"""The Oblivious HTTP test bed, no proxy anywhere: the real SDK's ``og.ConfidentialLLM`` (in .venv-og) →
the relay (bearer token; pays with the SDK's x402 stack) → the TEE gateway's ``POST /v1/ohttp`` (og-x402's
upto session middleware) → a signed answer the SDK decrypts and verifies.

Proven from three independent records (the client's own wire log, the relay's, the gateway's) and the
"Base" chain: the answers come through, streamed and not; the encapsulated body is the same bytes on both
hops; the relay's hop was paid (one upto session, settled on chain from the relay's account)."""

import uuid

import pytest

from testbed import og_chain
from testbed.og_ohttp_bed import DEFAULT_TOKEN, RELAY_PAYER, start_og_ohttp_bed
from testbed.og_stack import COST_PER_REQUEST


@pytest.fixture(scope="module")
def bed():
    # one upto session for the module: sessions stay open until the test flushes them
    with start_og_ohttp_bed(session_idle=120.0, reaper_interval=0.2, batch_idle=120.0) as b:
        yield b


def _norm(tee_id: str) -> str:
    tee_id = tee_id.lower()
    return tee_id if tee_id.startswith("0x") else "0x" + tee_id


def test_the_sdk_gets_verified_answers_through_the_relay_and_the_relay_paid(bed):
    og = bed.og
    relay_before = bed.relay_opg_balance()
    payee_before = og_chain.opg_balance(og.base_url, og.payee.address)
    prompts = [f"plain {uuid.uuid4()}", f"streamed {uuid.uuid4()}"]
    lines = bed.run_client(plan=[{"stream": False, "prompt": prompts[0]}, {"stream": True, "prompt": prompts[1]}])
    relay_calls = bed.relay_state()["calls"][-2:]
    gateway_calls = bed.gateway_log()[-2:]
    sessions = og.state()["sessions"]

    # the SDK decrypted and verified both answers (it raises otherwise: ok would be False)
    assert [line["ok"] for line in lines] == [True, True], lines
    assert [line["answer"] for line in lines] == [f"You said: {p}" for p in prompts]
    assert all(_norm(line["proof"]["tee_id"]) == og.tee_id for line in lines)
    assert lines[0]["frames"] is None and len(lines[1]["frames"]) >= 3
    assert lines[0]["tee"]["ohttp"]["public_key"] == bed.ohttp_config["public_key"]  # discovered on chain
    assert [c["inner_request"]["messages"][0]["content"] for c in gateway_calls] == prompts
    assert [c["stream"] for c in gateway_calls] == [False, True]

    for line, relayed, seen in zip(lines, relay_calls, gateway_calls):
        stream = line["stream"]
        (sent,) = line["wire"]  # the SDK's one POST to the relay
        assert sent["url"] == bed.chat_url and sent["status"] == 200
        h = sent["request_headers"]
        assert h["Content-Type"] == "message/ohttp-req" and h["Authorization"] == f"Bearer {DEFAULT_TOKEN}"
        assert h["Accept"] == ("message/ohttp-chunked-res" if stream else "message/ohttp-res")
        assert h.get("X-OHTTP-Stream") == ("true" if stream else None)
        # the same encapsulated bytes at every step: client sent = relay got = relay sent (each try) = gateway got
        body = sent["request_sha256"]
        assert relayed["request_sha256"] == seen["request_sha256"] == body
        assert relayed["request_length"] == seen["request_length"] == sent["request_length"]
        assert relayed["outbound"] and {x["body_sha256"] for x in relayed["outbound"]} == {body}
        paid = relayed["outbound"][-1]
        assert paid["url"] == bed.gateway_ohttp_url and paid["status"] == 200
        assert paid["headers"]["x-tee-id"] == h["X-TEE-ID"] and _norm(h["X-TEE-ID"]) == og.tee_id
        assert paid["headers"]["content-type"] == "message/ohttp-req" and "authorization" not in paid["headers"]
        assert seen["headers"]["x-tee-id"] == h["X-TEE-ID"]
        # the answer: unchanged when single shot; a stream loses only the gateway's billing frame
        assert sent["response_sha256"] == relayed["downstream_sha256"]
        assert relayed["upstream_sha256"] == seen["response_sha256"]
        if stream:
            assert sent["response_headers"]["Content-Type"] == "message/ohttp-chunked-res"
            assert relayed["stripped_bytes"] > 0 and relayed["malformed"] is None
            assert relayed["upstream_length"] - relayed["downstream_length"] == relayed["stripped_bytes"]
            assert relayed["billing"] == [seen["cost"]] and seen["cost"]["cost_opg"] == str(COST_PER_REQUEST)
        else:
            assert sent["response_headers"]["Content-Type"] == "message/ohttp-res"
            assert relayed["upstream_sha256"] == relayed["downstream_sha256"]
            assert relayed["upstream_headers"]["x-inference-cost-opg"] == str(COST_PER_REQUEST)

    # paid: the first call answered the 402 with a Permit2 upto permit, the second reused the session
    first, second = relay_calls
    assert [x["status"] for x in first["outbound"]] == [402, 200]
    assert "payment-signature" in first["outbound"][1]["headers"]
    assert [x["status"] for x in second["outbound"]] == [200]
    session_id = first["outbound"][1]["response_headers"]["x-upto-session"]
    assert second["outbound"][0]["headers"]["x-upto-session"] == session_id
    assert [c["session_id"] for c in gateway_calls] == [session_id, session_id]
    (session,) = [s for s in sessions if s["session_id"] == session_id]
    assert session["payer"].lower() == RELAY_PAYER.address.lower()
    assert int(session["accumulated"]) == 2 * COST_PER_REQUEST

    settled = og.flush()["sessions"]
    (done,) = [s for s in settled if s["session_id"] == session_id]
    assert done["settlement_tx"]
    receipt = og_chain.receipt(og.base_url, done["settlement_tx"])
    assert int(receipt["status"], 16) == 1
    assert relay_before - bed.relay_opg_balance() == 2 * COST_PER_REQUEST
    assert og_chain.opg_balance(og.base_url, og.payee.address) - payee_before == 2 * COST_PER_REQUEST


def test_a_wrong_token_is_refused_before_anything_is_paid(bed):
    (line,) = bed.run_client(token="not-the-token")
    relayed = bed.relay_state()["calls"][-1]
    assert not line["ok"] and "401" in line["error"]
    assert relayed["status"] == 401 and relayed["outbound"] == []


def test_the_sdk_refuses_an_answer_spoiled_after_sealing(bed):
    bed.gateway_settings(corrupt_response=1)
    (line,) = bed.run_client(prompt=f"spoiled {uuid.uuid4()}")
    seen = bed.gateway_log()[-1]
    assert seen["fault"] == "corrupt_response" and seen["status"] == 200
    assert not line["ok"] and line["wire"][0]["status"] == 200  # delivered, then refused by the SDK
