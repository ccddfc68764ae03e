"""receipts.addon.redact: the one definition of a secret name, and redaction of each place a secret can be."""
from __future__ import annotations

import copy
import hashlib
import json
import shlex

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receipts.addon.redact import (is_secret_name, redact_argv, redact_json, redact_json_text, redact_multipart,
                          redact_pairs, redacted, secret_pair_names)

SETTINGS = settings(max_examples=150, deadline=None)


def tag(value: object) -> str:
    """The tag of a JSON value (redact_json hashes the value as JSON)."""
    digest = hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"[redacted sha256:{digest[:16]}]"


# ---------------------------------------------------------------- names

SECRET = ["authorization", "Proxy-Authorization", "cookie", "set-cookie", "x-api-key", "api-key", "X-Goog-Api-Key",
          "openai-api-key", "anthropic-api-key", "payment-signature", "x-payment", "X-Session-Tok", "x-session-token",
          "x-tok", "X-Api-Tok",
          "x-auth", "x-auth-token", "x-csrf-token", "x-amz-security-token", "x-client-secret", "x-password",
          "x-credentials", "x-signature", "sec-websocket-key", "x-session-id",
          "api_key", "apiKey", "APIKEY", "token", "access_token", "refreshToken", "id_token", "client_secret",
          "privateKey", "private_key", "mnemonic", "seed_phrase", "passphrase", "passwd", "pass", "sig", "session",
          "sessionId", "prompt_cache_key", "OPENAI_API_KEY", "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY",
          "AWS_ACCESS_KEY_ID", "oauth2-bearer", "user_credential", "tee_signature", "key"]
PUBLIC = ["idempotency-key", "Idempotency-Key", "idempotency_key", "x-request-id", "payment-response",
          "x-payment-response", "payment-required", "x-upto-session", "x-tee-signature", "x-tee-id",
          "X-TEE-Request-Hash", "content-type", "keep-alive", "www-authenticate", "user-agent", "host",
          "x-ratelimit-remaining-tokens", "anthropic-ratelimit-input-tokens-limit", "x-stainless-retry-count",
          "openai-organization", "x-settlement-tx-hash", "x-processing-hash", "x-receipt-id", "traceparent",
          "max_tokens", "maxTokens", "max_completion_tokens", "prompt_tokens", "total_tokens", "tokenizer",
          "token_type", "token_count", "author", "keyboard", "design", "passage", "seed",
          "public_key", "publicKey", "signer", "signed_amount", "model", "messages", "content", "code", "role"]


@pytest.mark.parametrize("name", SECRET)
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", PUBLIC)
def test_public_names(name):
    assert not is_secret_name(name)


# ---------------------------------------------------------------- name=value pairs

def test_pairs_of_query_strings_form_bodies_and_env():
    assert redact_pairs("model=m&api_key=k1&n=2") == f"model=m&api_key={redacted('k1')}&n=2"
    assert redact_pairs("api%5Fkey=k2&access_token=t&max_tokens=5") == \
        f"api%5Fkey={redacted('k2')}&access_token={redacted('t')}&max_tokens=5"  # names are percent-decoded
    assert redact_pairs("x-session-tok=abc&flag&=v") == f"x-session-tok={redacted('abc')}&flag&=v"
    assert redact_pairs("OPENAI_API_KEY=sk-1") == f"OPENAI_API_KEY={redacted('sk-1')}"
    assert secret_pair_names("a=1&key=2&sig=3&b") == ["key", "sig"]


# ---------------------------------------------------------------- JSON

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


def test_json_held_in_strings_is_redacted_and_stays_a_string():
    inner = json.dumps({"token": "abc-inner", "text": "kept"})
    doc = {"messages": [{"role": "user", "content": inner}],
           "tool": {"arguments": json.dumps([{"password": "pw-in-list"}, 1])},
           "twice": json.dumps({"wrapped": json.dumps({"api_key": "deep-key"})}),
           "prose": "{not json, token: loose}", "plain": '{"model": "m", "n": 1}',
           "answer": 'echo: {"token": "quoted-in-text", "note": "kept"} and more'}
    out = redact_json(doc)
    text = orjson.dumps(out).decode()
    assert out["answer"] == f'echo: {{"token": "{redacted(chr(34) + "quoted-in-text" + chr(34))}", "note": "kept"}} and more'
    for secret in ("abc-inner", "pw-in-list", "deep-key", "quoted-in-text"):
        assert secret not in text, secret
    content = json.loads(out["messages"][0]["content"])  # still a string holding JSON
    assert content == {"token": tag("abc-inner"), "text": "kept"}
    assert json.loads(json.loads(out["twice"])["wrapped"]) == {"api_key": tag("deep-key")}
    assert out["prose"] == doc["prose"] and out["plain"] == doc["plain"]  # nothing secret: untouched, byte for byte


def test_embedded_json_is_bounded():
    nested = {"token": "bottom"}
    for _ in range(6):
        nested = {"s": json.dumps(nested)}
    out = orjson.dumps(redact_json(nested)).decode()
    assert "bottom" in out  # parsing stops after a few levels of JSON in strings (work stays bounded)
    assert redact_json({"s": " " * 10 + json.dumps({"token": "t"})})["s"].count("[redacted") == 1


def test_json_that_does_not_parse_is_scanned():
    cut = '{"model": "m", "api_key": "k-cut-1", "password": 12345, "messages": [{"content": "hi'
    out = redact_json_text(cut)
    assert "k-cut-1" not in out and "12345" not in out and '"model": "m"' in out and '"content": "hi' in out
    big = '{"token": "tok-big", "n": 123456789012345678901234567890}'  # wider than orjson reads
    assert "tok-big" not in orjson.dumps(redact_json({"s": big})).decode()


def test_multipart_form_parts_with_secret_names():
    ctype = "multipart/form-data; boundary=XyZ"
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
            b"--XyZ\r\nContent-Disposition: form-data; name=\"api_key\"\r\n\r\nmp-secret-9\r\n"
            b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n\x00\xff\r\n"
            b"--XyZ--\r\n")
    out = redact_multipart(body, ctype)
    assert b"mp-secret-9" not in out and redacted(b"mp-secret-9").encode() in out
    assert b"whisper-1" in out and b"\x00\xff" in out and out.endswith(b"--XyZ--\r\n")
    assert redact_multipart(body, "multipart/form-data") == body  # no boundary: nothing to split


@SETTINGS
@given(st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=5),
                    max_leaves=30))
def test_secret_values_are_tagged_wherever_they_sit(obj: object) -> None:
    wrapped = {"api_key": obj, "data": [obj, {"Authorization": obj}], "as_text": json.dumps({"token": obj})}
    out = redact_json(wrapped)
    assert out["api_key"] == out["data"][1]["Authorization"] == tag(obj)
    assert out["data"][0] == redact_json(obj)
    assert json.loads(out["as_text"]) == {"token": tag(obj)}
    assert redact_json(wrapped) == out  # deterministic


# ---------------------------------------------------------------- command lines

def argv(line: str) -> str:
    return " ".join(redact_argv(shlex.split(line)))


COMMAND_LINES = [  # (command line, secrets that must be gone, words that must stay)
    ('curl -sS -H "Authorization: Bearer sk-cl-1111111111" https://api.example/v1/chat',
     ["sk-cl-1111111111"], ["curl", "-sS", "-H", "Authorization:", "https://api.example/v1/chat"]),
    ("curl --header='X-Api-Key: xak-2222' http://h/", ["xak-2222"], ["--header=X-Api-Key:"]),
    ("curl --header=X-Api-Key:xak-3333 http://h/", ["xak-3333"], ["--header=X-Api-Key:"]),
    ("curl -H'X-Session-Tok: tok-4444' http://h/", ["tok-4444"], ["-HX-Session-Tok:"]),
    ("curl -H 'Idempotency-Key: idem-5' -H 'Content-Type: application/json' http://h/", [],
     ["Idempotency-Key: idem-5", "Content-Type: application/json"]),
    ("curl -H 'X-Custom: Bearer custom-bearer-6' http://h/", ["custom-bearer-6"], ["X-Custom: Bearer [redacted"]),
    ("tool --api-key ak-7777 --model m", ["ak-7777"], ["tool", "--api-key", "--model m"]),
    ("tool --api-key=ak-8888 --max-tokens=5", ["ak-8888"], ["--api-key=[redacted", "--max-tokens=5"]),
    ("tool --token t-9 --password pw-10 --client-secret cs-11 --oauth2-bearer ob-12", ["t-9", "pw-10", "cs-11", "ob-12"],
     ["--token", "--password", "--client-secret", "--oauth2-bearer"]),
    ("tool --no-auth --verbose", [], ["--no-auth --verbose"]),  # a switch does not take the next flag as its value
    ("curl -u alice:pw-13 http://h/", ["pw-13", "alice:pw-13"], ["-u [redacted"]),
    ("curl -ualice:pw-14 --user bob:pw-15 --proxy-user carol:pw-16 -U dan:pw-17 http://h/",
     ["pw-14", "pw-15", "pw-16", "pw-17"], ["curl"]),
    ("python3 -u /srv/agent.py --model m", [], ["python3 -u /srv/agent.py --model m"]),  # -u is not a user here
    ("curl -b session=ck-18 http://h/", ["ck-18"], ["-b [redacted"]),
    ("gunicorn -b 0.0.0.0:8000 app:app", [], ["gunicorn -b 0.0.0.0:8000 app:app"]),
    ("env OPENAI_API_KEY=sk-proj-19191919 TOKEN=t-20 python app.py", ["sk-proj-19191919", "t-20"],
     ["env OPENAI_API_KEY=[redacted", "TOKEN=[redacted", "python app.py"]),
    ("curl https://user:pw-21@api.example/v1 http://only-user-22@h/", ["pw-21", "only-user-22"], ["@api.example/v1"]),
    ("curl 'https://h/v1/x?model=m&api_key=q-23&sig=q-24'", ["q-23", "q-24"], ["?model=m&api_key=[redacted"]),
    ("psql postgres://alice:pg-25@db/x?sslmode=require", ["pg-25"], ["@db/x?sslmode=require"]),
    ("curl -d 'api_key=form-26&model=m' http://h/", ["form-26"], ["model=m"]),
    ("curl -F password=form-27 http://h/", ["form-27"], ["-F password=[redacted"]),
    ("""curl -d '{"model": "m", "api_key": "json-28", "messages": [{"content": "{\\"token\\": \\"json-29\\"}"}]}' h""",
     ["json-28", "json-29"], ['"model":"m"']),
    ("node app.js sk-ant-api03-abcdefgh sk_live_abcdefgh12 ghp_abcdefghijklmnopqrstuvwx xoxb-1234567890-abc "
     "AKIAABCDEFGHIJKLMNOP AIzaSyA1234567890abcdefghijklmnopqrstu hf_abcdefghijklmnopqrstuv "
     "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2ln 0x" + "ab" * 32,
     ["sk-ant-api03-abcdefgh", "sk_live_abcdefgh12", "ghp_abcdefghijklmnopqrstuvwx", "xoxb-1234567890-abc",
      "AKIAABCDEFGHIJKLMNOP", "AIzaSyA1234567890", "hf_abcdefghijklmnopqrstuv", "eyJzdWIiOiIxMjM0In0", "ab" * 32],
     ["node app.js"]),
    ("cast send --private-key 0x" + "cd" * 32 + " 0xabc", ["cd" * 32], ["cast send --private-key", "0xabc"]),
    ("python bot.py Bearer bearer-30", ["bearer-30"], ["python bot.py Bearer [redacted"]),
    ("python risk-assessment.py --task sk-nope desk-lamp-2000", [], ["risk-assessment.py --task sk-nope desk-lamp-2000"]),
]


@pytest.mark.parametrize("line, gone, kept", COMMAND_LINES, ids=[c[0][:40] for c in COMMAND_LINES])
def test_command_lines(line, gone, kept):
    out = argv(line)
    for secret in gone:
        assert secret not in out, (secret, out)
    for word in kept:
        assert word in out, (word, out)


def test_a_command_line_tag_matches_the_stored_header():
    """curl's `-H 'Authorization: Bearer x'` gets the tag the recorded header gets: they correlate."""
    out = redact_argv(["curl", "-H", "Authorization: Bearer sk-same-1234567"])
    assert out == ["curl", "-H", f"Authorization: {redacted('Bearer sk-same-1234567')}"]
    assert redact_argv(["curl"]) == ["curl"] and redact_argv([]) == []
