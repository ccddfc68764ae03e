"""OpenGradient's ConfidentialLLM over Oblivious HTTP (RFC 9458): what a recorder can see of it.

The SDK encrypts the whole chat request (model, messages, parameters) with HPKE to one TEE's key and
posts it to a relay: `POST …/api/v1/chat/ohttp`, `Content-Type: message/ohttp-req`, `X-TEE-ID: <the TEE
it is sealed for>`, `X-OHTTP-Stream: true` for a streamed answer, and the relay's own bearer token. The
relay forwards the same bytes to that TEE and pays for the call itself (x402): the client sends no
payment. The answer (`message/ohttp-res`, or `message/ohttp-chunked-res` streamed) is sealed too.

So what is known of such a call: that it was made, when, by which app, to which relay, for which TEE
(as the client claims: the TEE's proof is inside the ciphertext), streamed or not, the sizes and hashes of
both bodies, and, where the recorder also sees the relay's hop, the relay's payment (its forwarded body is
byte for byte the client's, so the two share `request_sha256`). What cannot be known: the model, the
prompt, the answer, the tokens and their cost, and whether the TEE's signature over the answer is valid.
Pure; none raises.
"""

from __future__ import annotations

PATH_SUFFIX = "/chat/ohttp"
REQUEST_TYPE = "message/ohttp-req"
TEE_HEADER = "x-tee-id"
STREAM_HEADER = "x-ohttp-stream"
UNKNOWABLE = "model, prompt, answer, tokens, cost and the TEE's proof are sealed (OHTTP)"


def looks_like_ohttp(path: str) -> bool:
    """A ConfidentialLLM call, by its path (`…/api/v1/chat/ohttp`); cheap: the body is never read."""
    return path.partition("?")[0].rstrip("/").endswith(PATH_SUFFIX)


def request_fields(get, path: str) -> dict | None:
    """The clear part of an OHTTP request (`get`: a header getter): the TEE it is sealed for and whether
    the answer streams; None when the request is not OHTTP (neither its content type nor its path)."""
    content_type = (get("content-type") or "").partition(";")[0].strip().lower()
    if content_type != REQUEST_TYPE and not looks_like_ohttp(path):
        return None
    return {
        "tee_id": _tee_id(get(TEE_HEADER)),
        "stream": (get(STREAM_HEADER) or "").strip().lower() == "true",
        "sealed": content_type == REQUEST_TYPE,
    }


def _tee_id(value: str | None) -> str | None:
    """The TEE id as the TEE's own proofs write it: `0x` and 64 lowercase hex digits (the SDK sends the
    digits alone); any other value as it came, stripped."""
    text = (value or "").strip().lower()
    digits = text.removeprefix("0x")
    if len(digits) == 64 and all(c in "0123456789abcdef" for c in digits):
        return "0x" + digits
    return text or None
