"""OpenGradient ConfidentialLLM over OHTTP: what is kept of a sealed call (addon/ohttp.py)."""
from __future__ import annotations

import dataclasses

from receipts.addon import exchange as X
from receipts.addon import ohttp
from receipts.storage import config as cfg

SETTINGS = cfg.load()
TEE = "0x" + "ab" * 32
SEALED = bytes(range(256)) * 3  # HPKE ciphertext: opaque bytes


def headers(*extra):
    return [("Content-Type", "message/ohttp-req"), ("Accept", "message/ohttp-chunked-res"),
            ("X-TEE-ID", TEE.upper().replace("0X", "0x")), ("Authorization", "Bearer chat-account-token"), *extra]


def sealed_request(path="/api/v1/chat/ohttp", hdrs=None):
    return X.Req("POST", "https", "relay.opengradient.ai", 443, path, hdrs if hdrs is not None else headers(),
                 SEALED, 1000.0, client="127.0.0.1")


def test_the_path_alone_says_ohttp():
    assert ohttp.looks_like_ohttp("/api/v1/chat/ohttp")
    assert ohttp.looks_like_ohttp("/api/v1/chat/ohttp/?x=1")
    assert not ohttp.looks_like_ohttp("/api/v1/chat/completions")
    assert not ohttp.looks_like_ohttp("/ohttp/chat")


def test_a_sealed_call_is_recorded_whatever_the_config_says():
    no_x402 = dataclasses.replace(SETTINGS, capture_x402=False)
    assert X.request_match({"content-type", "x-tee-id"}, "relay.opengradient.ai", "/api/v1/chat/ohttp", no_x402) == "ohttp"
    assert X.request_match({"content-type"}, "relay.opengradient.ai", "/api/v1/chat/other", SETTINGS) is None


def test_what_is_kept_of_a_sealed_request():
    data = X.request_data(sealed_request(), SETTINGS, logical_id="l1", match="ohttp", source="proxy")
    assert data["ohttp"] == {"tee_id": TEE, "stream": False, "sealed": True}
    assert data["body"]["size"] == len(SEALED) and len(data["body"]["sha256"]) == 64
    assert data["payment"] is None and data["model"] is None
    assert data["headers"]["authorization"] != "Bearer chat-account-token"  # the relay's token is a secret


def test_a_stream_and_the_relay_hop_that_names_no_path():
    streamed = headers(("X-OHTTP-Stream", "true"))
    assert ohttp.request_fields(dict((k.lower(), v) for k, v in streamed).get, "/api/v1/chat/ohttp")["stream"] is True
    gateway_hop = ohttp.request_fields({"content-type": "message/ohttp-req; v=1", "x-tee-id": TEE[2:]}.get, "/v1/ohttp")
    assert gateway_hop == {"tee_id": TEE, "stream": False, "sealed": True}  # (the SDK sends the digits alone)
    assert ohttp.request_fields({"x-tee-id": " tee-7 "}.get, "/api/v1/chat/ohttp")["tee_id"] == "tee-7"


def test_other_requests_have_no_ohttp_fields():
    plain = X.Req("POST", "https", "api.example", 443, "/v1/chat/completions",
                  [("Content-Type", "application/json"), ("X-TEE-ID", TEE)], b"{}", 1000.0, client="127.0.0.1")
    assert X.request_data(plain, SETTINGS, logical_id="l", match="path", source="proxy")["ohttp"] is None
