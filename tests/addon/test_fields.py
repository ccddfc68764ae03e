"""Tests for addon.fields: usage and TEE fields (redaction: test_redact.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from receipts.addon.fields import answer_ids, tee_from_body, tee_from_headers, usage_from_body

SETTINGS = settings(max_examples=150, deadline=None)


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


def test_usage_of_every_shape_the_sdks_produce() -> None:
    # (the shapes of the OpenAI, Anthropic and Gemini API references)
    responses = {"id": "resp_1", "object": "response", "model": "gpt-4.1-mini",
                 "usage": {"input_tokens": 36, "input_tokens_details": {"cached_tokens": 0},
                           "output_tokens": 87, "output_tokens_details": {"reasoning_tokens": 0},
                           "total_tokens": 123}}
    assert usage_from_body(responses) == {"prompt_tokens": 36, "completion_tokens": 87, "total_tokens": 123}
    embeddings = {"object": "list", "data": [], "model": "text-embedding-3-small",
                  "usage": {"prompt_tokens": 8, "total_tokens": 8}}
    assert usage_from_body(embeddings) == {"prompt_tokens": 8, "completion_tokens": None, "total_tokens": 8}
    completions = {"id": "cmpl-1", "object": "text_completion", "choices": [],
                   "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}
    assert usage_from_body(completions) == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    gemini = {"candidates": [], "modelVersion": "gemini-2.0-flash", "responseId": "abc",
              "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 9, "totalTokenCount": 13,
                                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 4}]}}
    assert usage_from_body(gemini) == {"prompt_tokens": 4, "completion_tokens": 9, "total_tokens": 13}
    assert answer_ids(gemini) == ("abc", "gemini-2.0-flash") and answer_ids(responses) == ("resp_1", "gpt-4.1-mini")


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


# ---------------------------------------------------------------- properties

KEYS = ["usage", "prompt_tokens", "completion_tokens", "total_tokens", "input_tokens",
        "output_tokens", "tee_id", "tee_signature", "tee_timestamp", "max_tokens"]

json_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=6),
    max_leaves=40,
)


# written here, not taken from addon/fields.py: what the fuzzed results are checked against
TEE_BODY_KEYS = ("tee_signature", "tee_request_hash", "tee_output_hash", "tee_timestamp", "tee_id")


def header_text(value: object) -> str | None:
    """A header value as tee_from_headers reads it: bytes decoded (bad UTF-8 replaced), a string stripped."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    return value.strip() if isinstance(value, str) else None


@SETTINGS
@given(json_values | st.binary())
def test_never_raise(obj: object) -> None:
    # tee_from_body and tee_from_headers catch every exception and answer None: so what they answer is
    # compared with what the input holds (a swallowed exception answers None where fields were there)
    usage = usage_from_body(obj)
    assert usage is None or set(usage) == {"prompt_tokens", "completion_tokens",
                                           "total_tokens"}
    tee = tee_from_body(obj)
    present = {k: obj[k] for k in TEE_BODY_KEYS if obj.get(k) is not None} if isinstance(obj, dict) else {}
    assert tee == (present or None)
    got = tee_from_headers({"x-tee-id": obj, "X-TEE-Timestamp": obj})
    text = header_text(obj)
    if not text:
        assert got is None
    else:
        stamp = int(text) if text.isascii() and text.isdigit() and len(text) < 19 else text
        assert got == {"tee_id": text, "tee_timestamp": stamp}
    named = {"x-tee-signature", "x-tee-id", "x-tee-timestamp", "x-tee-request-hash", "x-tee-output-hash"}
    if isinstance(obj, dict) and not any(k.lower() in named for k in obj):
        assert tee_from_headers(obj) is None
