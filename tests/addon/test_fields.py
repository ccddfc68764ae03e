"""Tests for addon.fields: usage, TEE fields, redaction."""

from __future__ import annotations

import copy
import hashlib

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from addon.fields import redact_json, tee_from_body, tee_from_headers, usage_from_body

SETTINGS = settings(max_examples=150, deadline=None)


def tag(value: object) -> str:
    digest = hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"[redacted sha256:{digest[:16]}]"


# ---------------------------------------------------------------- usage

def test_usage_openai() -> None:
    body = {"id": "chatcmpl-1", "usage": {"prompt_tokens": 9, "completion_tokens": 12,
                                          "total_tokens": 21,
                                          "prompt_tokens_details": {"cached_tokens": 0}}}
    assert usage_from_body(body) == {"prompt_tokens": 9, "completion_tokens": 12,
                                     "total_tokens": 21}


def test_usage_openai_total_computed() -> None:
    body = {"usage": {"prompt_tokens": 9, "completion_tokens": 12}}
    assert usage_from_body(body)["total_tokens"] == 21
    body = {"usage": {"prompt_tokens": 9}}
    assert usage_from_body(body) == {"prompt_tokens": 9, "completion_tokens": None,
                                     "total_tokens": None}


def test_usage_anthropic() -> None:
    body = {"id": "msg_1", "type": "message",
            "usage": {"input_tokens": 30, "output_tokens": 5,
                      "cache_creation_input_tokens": 100, "cache_read_input_tokens": 7}}
    assert usage_from_body(body) == {"prompt_tokens": 30, "completion_tokens": 5,
                                     "total_tokens": 35}


def test_usage_unknown_is_none() -> None:
    for body in [{}, {"usage": None}, {"usage": {}}, {"usage": "12"}, [], None, "x",
                 {"usage": {"foo": 1}}]:
        assert usage_from_body(body) is None
    bad = usage_from_body({"usage": {"prompt_tokens": -1, "completion_tokens": True}})
    assert bad == {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}


# ---------------------------------------------------------------- TEE

def test_tee_from_body() -> None:
    body = {"id": "x", "choices": [], "tee_signature": "c2ln", "tee_request_hash": "0xaa",
            "tee_output_hash": "0xbb", "tee_timestamp": 1740000000, "tee_id": "0xcc"}
    assert tee_from_body(body) == {"tee_signature": "c2ln", "tee_request_hash": "0xaa",
                                   "tee_output_hash": "0xbb", "tee_timestamp": 1740000000,
                                   "tee_id": "0xcc"}
    assert tee_from_body({"tee_id": "0xcc", "other": 1}) == {"tee_id": "0xcc"}
    assert tee_from_body({"choices": []}) is None
    assert tee_from_body(["tee_id"]) is None


def test_tee_from_headers() -> None:
    headers = {"content-type": "application/json", "x-tee-signature": "c2ln",
               "x-tee-id": "0xcc", "x-tee-timestamp": "1740000000",
               "x-tee-request-hash": "0xaa", "x-tee-output-hash": "0xbb"}
    assert tee_from_headers(headers) == {"tee_signature": "c2ln", "tee_id": "0xcc",
                                         "tee_timestamp": 1740000000,
                                         "tee_request_hash": "0xaa",
                                         "tee_output_hash": "0xbb"}
    assert tee_from_headers({"X-TEE-ID": "0xcc"}) == {"tee_id": "0xcc"}
    assert tee_from_headers({"x-tee-timestamp": "soon"}) == {"tee_timestamp": "soon"}
    assert tee_from_headers({"content-type": "text/plain"}) is None
    assert tee_from_headers(None) is None  # type: ignore[arg-type]


# ---------------------------------------------------------------- redaction

def test_redact_secrets_keeps_token_counts() -> None:
    body = {
        "model": "gpt-4.1",
        "max_tokens": 100,
        "max_completion_tokens": 50,
        "api_key": "sk-live-123",
        "headers": {"Authorization": "Bearer abc", "X-API-Key": "k", "Cookie": "a=b",
                    "api-key": "k2", "content-type": "application/json"},
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        "wallet": {"privateKey": "0x" + "01" * 32, "mnemonic": ["word"] * 12,
                   "seed_phrase": "abandon ...", "password": "hunter2", "passwd": "p",
                   "client_secret": "s"},
        "payload": {"signature": "0xsig", "access_token": "at", "refresh_token": "rt"},
        "messages": [{"role": "user", "content": "hi", "apiKey": {"nested": True}}],
        "seed": 42,
    }
    original = copy.deepcopy(body)
    out = redact_json(body)
    assert body == original  # input untouched
    assert out["model"] == "gpt-4.1" and out["seed"] == 42
    assert out["max_tokens"] == 100 and out["max_completion_tokens"] == 50
    assert out["usage"] == body["usage"]
    assert out["api_key"] == tag("sk-live-123")
    assert out["headers"]["Authorization"] == tag("Bearer abc")
    for key in ("X-API-Key", "Cookie", "api-key"):
        assert out["headers"][key].startswith("[redacted sha256:")
    assert out["headers"]["content-type"] == "application/json"
    for key in body["wallet"]:
        assert out["wallet"][key].startswith("[redacted sha256:"), key
    assert out["wallet"]["mnemonic"] == tag(["word"] * 12)
    for key in body["payload"]:
        assert out["payload"][key].startswith("[redacted sha256:"), key
    assert out["messages"][0]["apiKey"] == tag({"nested": True})
    assert out["messages"][0]["content"] == "hi"
    text = orjson.dumps(out).decode()
    for secret in ("sk-live-123", "Bearer abc", "hunter2", "0xsig", "0x" + "01" * 32):
        assert secret not in text


def test_redact_depth_limit() -> None:
    deep: object = "leaf"
    for _ in range(200):
        deep = {"a": deep}
    out = redact_json(deep)
    depth = 0
    while isinstance(out, dict):
        out = out["a"]
        depth += 1
    assert out == "[too deep]"
    assert depth == 65


def test_redact_scalars_and_lists() -> None:
    assert redact_json(5) == 5
    assert redact_json(None) is None
    assert redact_json([{"token": 1}, "x"]) == [{"token": tag(1)}, "x"]


# ---------------------------------------------------------------- properties

KEYS = ["usage", "prompt_tokens", "completion_tokens", "total_tokens", "input_tokens",
        "output_tokens", "tee_id", "tee_signature", "tee_timestamp", "api_key", "token",
        "Authorization", "max_tokens", "signature"]

json_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=6),
    max_leaves=40,
)


@SETTINGS
@given(json_values | st.binary())
def test_never_raise(obj: object) -> None:
    usage = usage_from_body(obj)
    assert usage is None or set(usage) == {"prompt_tokens", "completion_tokens",
                                           "total_tokens"}
    tee = tee_from_body(obj)
    assert tee is None or (tee and all(key.startswith("tee_") for key in tee))
    headers = obj if isinstance(obj, dict) else {"x-tee-id": obj}
    tee_from_headers(headers)
    out = redact_json(obj)
    orjson.dumps(out) if not isinstance(out, bytes) else None
    assert redact_json(obj) == out  # deterministic


@SETTINGS
@given(json_values)
def test_redacted_output_has_no_secret_values(obj: object) -> None:
    wrapped = {"api_key": obj, "data": [obj, {"Authorization": obj}]}
    out = redact_json(wrapped)
    assert out["api_key"] == out["data"][1]["Authorization"] == tag(obj)
    assert out["data"][0] == redact_json(obj)
