"""Pure extraction of usage and TEE proof fields from decoded JSON.

Wire facts (see /work/shared/PROTOCOL.md, sections 3 and 4):

* Usage: every shape the SDKs produce (``USAGE_NAMES``: OpenAI chat, completions,
  embeddings and Responses, Anthropic, Gemini ``usageMetadata``; cache token counts
  are ignored).  Unknown usage is *unknown* (None), never 0.
* OpenGradient TEE proof: body fields ``tee_signature`` (base64),
  ``tee_request_hash``, ``tee_output_hash`` (hex), ``tee_timestamp`` (int
  seconds), ``tee_id`` (hex); the same may arrive as headers ``X-TEE-Signature``,
  ``X-TEE-ID``, ``X-TEE-Timestamp``, ``X-TEE-Request-Hash``, ``X-TEE-Output-Hash``.

Redacted copies of JSON (secrets replaced by a short SHA-256 tag) are made by
addon/redact.py, which holds the project's one definition of a secret name.

No function here raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_MAX_INT64 = 2**63 - 1

TEE_KEYS = ("tee_signature", "tee_request_hash", "tee_output_hash", "tee_timestamp", "tee_id")
TEE_HEADERS = {
    "x-tee-signature": "tee_signature",
    "x-tee-id": "tee_id",
    "x-tee-timestamp": "tee_timestamp",
    "x-tee-request-hash": "tee_request_hash",
    "x-tee-output-hash": "tee_output_hash",
}

# --------------------------------------------------------------------------
# usage


def token_count(value: object) -> int | None:
    """A token count: non-negative int (or decimal string) fitting in int64."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20:
        value = int(value)
    if isinstance(value, int) and 0 <= value <= _MAX_INT64:
        return value
    return None


def _usage_triplet(prompt: int | None, completion: int | None, total: int | None) -> dict[str, int | None]:
    if total is None and prompt is not None and completion is not None:
        total = prompt + completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


# The names each count has in the usage objects the SDKs produce: OpenAI chat, completions and embeddings
# (prompt_tokens, completion_tokens, total_tokens); OpenAI Responses and Anthropic (input_tokens,
# output_tokens, and total_tokens in Responses); Gemini's usageMetadata (promptTokenCount,
# candidatesTokenCount, totalTokenCount). Cached, reasoning and thought token details are not counted apart.
USAGE_NAMES = {
    "prompt_tokens": ("prompt_tokens", "input_tokens", "promptTokenCount"),
    "completion_tokens": ("completion_tokens", "output_tokens", "candidatesTokenCount"),
    "total_tokens": ("total_tokens", "totalTokenCount"),
}


def usage_counts(usage: object) -> dict[str, int | None] | None:
    """The prompt, completion and total token counts of a usage object of any shape above (a missing
    total is their sum); None when it names no count. An invalid count is unknown (None), never 0."""
    if not isinstance(usage, Mapping):
        return None
    counts, named = {}, False
    for key, names in USAGE_NAMES.items():
        value = next((usage[n] for n in names if usage.get(n) is not None), None)
        named |= value is not None
        counts[key] = token_count(value)
    return (
        _usage_triplet(counts["prompt_tokens"], counts["completion_tokens"], counts["total_tokens"]) if named else None
    )


def usage_from_body(obj: object) -> dict[str, int | None] | None:
    """Token usage of a JSON response body (`usage`, or Gemini's `usageMetadata`); None when it carries
    no usage counts."""
    if not isinstance(obj, Mapping):
        return None
    return usage_counts(obj.get("usage")) or usage_counts(obj.get("usageMetadata"))


def answer_ids(obj: object) -> tuple[str | None, str | None]:
    """(response id, model) an answer's JSON (or a stream's chunk, or an OpenAI Responses `response`) names:
    `id` and `model`, or Gemini's `responseId` and `modelVersion`."""
    if not isinstance(obj, Mapping):
        return None, None
    rid = next((obj[k] for k in ("id", "responseId") if isinstance(obj.get(k), str)), None)
    model = next((obj[k] for k in ("model", "modelVersion") if isinstance(obj.get(k), str)), None)
    return rid, model


# --------------------------------------------------------------------------
# TEE proof fields


def tee_from_body(obj: object) -> dict[str, Any] | None:
    """The ``tee_*`` fields present (and non-null) in a JSON body, or None."""
    try:
        if not isinstance(obj, dict):
            return None
        found = {key: obj[key] for key in TEE_KEYS if obj.get(key) is not None}
        return found or None
    except Exception:
        return None


def _header_value(name: str, value: object) -> object:
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.strip()
    if name == "tee_timestamp" and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    return value


def tee_from_headers(headers: Mapping[str, str]) -> dict[str, Any] | None:
    """Map ``X-TEE-*`` response headers to ``tee_*`` names; None if none present.

    ``tee_timestamp`` becomes an int when it is a plain decimal (as in bodies).
    """
    try:
        if not isinstance(headers, Mapping):
            return None
        found: dict[str, Any] = {}
        for key, value in headers.items():
            name = TEE_HEADERS.get(key.lower()) if isinstance(key, str) else None
            if name is not None:
                converted = _header_value(name, value)
                if converted not in (None, ""):
                    found[name] = converted
        return found or None
    except Exception:
        return None
