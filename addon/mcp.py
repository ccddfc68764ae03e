"""x402 over MCP (Model Context Protocol, Streamable HTTP): where the payment travels in JSON-RPC bodies.

The x402 MCP transport (x402 spec, transports-v2/mcp.md) puts nothing in HTTP headers:
- the challenge is a `tools/call` result with `isError: true` whose `structuredContent` is the
  PaymentRequired object (`content[0].text` holds the same JSON), answered with HTTP 200;
- the payment is `params._meta["x402/payment"]` of the retried `tools/call` (the PaymentPayload object);
- the settlement is `result._meta["x402/payment-response"]` (the SettleResponse object); a failed one is
  answered as an error result, the SettleResponse inside its PaymentRequired (x402's Python wrapper).
Answers are a JSON body or a server-sent event stream whose `message` events carry JSON-RPC messages.

Only a request that cheap signals mark as MCP is looked into (`looks_like_mcp`: its headers or path);
only its `tools/call` is recorded (`call_of`). Pure functions; none raises.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from .bodies import SMALL_JSON, small_json

PAYMENT_KEY = "x402/payment"
RESPONSE_KEY = "x402/payment-response"
HEADERS = frozenset({"mcp-protocol-version", "mcp-session-id", "mcp-method"})  # (mcp-method: the 2026-07-28 form)
TOOL_CALL = "tools/call"


def looks_like_mcp(header_names: set[str], path: str) -> bool:
    """An MCP Streamable HTTP exchange, by what is cheap to see: its MCP headers, or a path ending `/mcp`."""
    return not header_names.isdisjoint(HEADERS) or path.partition("?")[0].rstrip("/").endswith("/mcp")


def _digest(obj: object) -> str:
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()


def call_of(body: bytes | None) -> dict | None:
    """The `tools/call` a request body makes (the first of a batch): {id, method, tool, arguments_sha256,
    payment (the x402 PaymentPayload object or None)}; None for any other body."""
    doc = small_json(body)
    for msg in doc if isinstance(doc, list) else [doc]:
        if isinstance(msg, dict) and msg.get("method") == TOOL_CALL:
            params = got if isinstance(got := msg.get("params"), dict) else {}
            meta = got if isinstance(got := params.get("_meta"), dict) else {}
            rid = msg.get("id")
            return {
                "id": rid if isinstance(rid, (str, int)) and not isinstance(rid, bool) else None,
                "method": TOOL_CALL,
                "tool": params.get("name") if isinstance(params.get("name"), str) else None,
                "arguments_sha256": _digest(params.get("arguments")),
                "payment": meta.get(PAYMENT_KEY) if PAYMENT_KEY in meta else None,
            }
    return None


def answer_of(doc: object) -> dict | None:
    """What a JSON-RPC answer (a message, or a batch: the first with a result) says of x402: {id,
    is_error, challenge (the PaymentRequired object or None), settlement (the SettleResponse or None)};
    None when it is no JSON-RPC answer."""
    for msg in doc if isinstance(doc, list) else [doc]:
        if not isinstance(msg, dict) or "jsonrpc" not in msg or not ("result" in msg or "error" in msg):
            continue
        result = got if isinstance(got := msg.get("result"), dict) else {}
        meta = got if isinstance(got := result.get("_meta"), dict) else {}
        is_error = result.get("isError") is True
        challenge = _challenge(result) if is_error else None
        # a settlement that failed comes back as an error result: x402's Python wrapper puts it inside the
        # PaymentRequired it answers with (`structuredContent["x402/payment-response"]`), not in `_meta`
        settlement = meta.get(RESPONSE_KEY, (challenge or {}).get(RESPONSE_KEY))
        return {
            "id": msg.get("id"),
            "is_error": is_error or "error" in msg,
            "challenge": challenge,
            "settlement": settlement,
        }
    return None


def _challenge(result: dict) -> Any:
    """The PaymentRequired of an error result: `structuredContent`, else the JSON text of its first content."""
    found = result.get("structuredContent")
    if not (isinstance(found, dict) and "accepts" in found):
        content = result.get("content") if isinstance(result.get("content"), list) else []
        text = content[0].get("text") if content and isinstance(content[0], dict) else None
        try:
            found = orjson.loads(text) if isinstance(text, str) and len(text) <= SMALL_JSON else None
        except orjson.JSONDecodeError:
            found = None
    return found if isinstance(found, dict) and "accepts" in found else None
