"""x402 over A2A (Agent2Agent, the `a2a-x402` extension): payments in a task's message metadata.

The A2A transport of x402 (x402 spec transports-v2/a2a.md; activated by the `A2A-Extensions` or
`X-A2A-Extensions` request header naming `a2a-x402`) puts nothing in HTTP headers:
- the agent asks for payment in the status message of the task it answers with: its metadata has
  `x402.payment.status: payment-required` and `x402.payment.required` (a PaymentRequired, v2 or v1);
- the client's next message to that task (`taskId`) carries `x402.payment.payload` (a PaymentPayload) and
  `x402.payment.status: payment-submitted`;
- the outcome comes in a later status message: `x402.payment.status` (payment-completed, payment-failed,
  …) and `x402.payment.receipts`, a LIST of SettleResponses (one per settlement attempt; the last is the
  outcome), with `x402.payment.error` on failure.
Messages travel as JSON-RPC (`SendMessage`, `SendStreamingMessage`; `message/send`, `message/stream` in
0.3) or REST (`POST …/message:send`, `…/message:stream`); answers are JSON or an event stream. Numbers in
metadata are doubles (protobuf Structs): the x402 decoders take integral doubles.

Only a request that cheap signals mark as A2A is looked into (`looks_like_a2a`), and only a message send is
recorded (`call_of`). The unpaid message, the challenge and the paid one form one receipt: the paid one
names the challenge's task (linked by task id). Pure; none raises.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from .bodies import small_json

HEADERS = frozenset({"a2a-version", "a2a-extensions", "x-a2a-extensions"})
PATHS = ("/message:send", "/message:stream")
SEND_METHODS = frozenset({"SendMessage", "SendStreamingMessage", "message/send", "message/stream"})
PREFIX = "x402.payment."
MAX_DEPTH = 12


def looks_like_a2a(header_names: set[str], path: str) -> bool:
    return not header_names.isdisjoint(HEADERS) or path.partition("?")[0].endswith(PATHS)


def call_of(body: bytes | None, path: str = "") -> dict | None:
    """The message send a request body makes: {id, method, task_id, context_id, payment (the PaymentPayload
    object or None), status, message_sha256}; None for anything else (GetTask, the agent card, …)."""
    doc = small_json(body)
    if not isinstance(doc, dict):
        return None
    if doc.get("method") in SEND_METHODS:
        params = got if isinstance(got := doc.get("params"), dict) else {}
        message, method, rid = params.get("message"), doc["method"], doc.get("id")
    elif path.partition("?")[0].endswith(PATHS):  # REST: {message: …} (1.0) or {request: …} (0.3)
        message, method, rid = doc.get("message") or doc.get("request"), path.partition("?")[0].rsplit("/", 1)[1], None
    else:
        return None
    if not isinstance(message, dict):
        return None
    meta = got if isinstance(got := message.get("metadata"), dict) else {}
    parts = message.get("parts")
    return {
        "id": rid if isinstance(rid, (str, int)) and not isinstance(rid, bool) else None,
        "method": method,
        "task_id": _text(message.get("taskId")),
        "context_id": _text(message.get("contextId")),
        "payment": meta.get(PREFIX + "payload"),
        "status": _text(meta.get(PREFIX + "status")),
        "message_sha256": hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest(),
    }


def answer_of(doc: object) -> dict | None:
    """What an answer (a JSON-RPC result, a REST task, or one event of a stream) says: {task_id, state,
    status (x402.payment.status), challenge, settlement (the last of the receipts), receipts (how many),
    error}; None when it holds no task."""
    task_id, state = _task(doc)
    meta = _last_x402_metadata(doc)
    if task_id is None and meta is None:
        return None
    meta = meta or {}
    receipts = meta.get(PREFIX + "receipts")
    receipts = receipts if isinstance(receipts, list) else []
    return {
        "task_id": task_id,
        "state": state,
        "status": _text(meta.get(PREFIX + "status")),
        "challenge": meta.get(PREFIX + "required"),
        "settlement": receipts[-1] if receipts else None,
        "receipts": len(receipts),
        "error": _text(meta.get(PREFIX + "error")),
    }


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _task(doc: object) -> tuple[str | None, str | None]:
    """The task an answer is about, and its state (JSON-RPC `result.task` / `result.statusUpdate` /
    `result` itself, REST's task object, 0.3's `result` with `kind`)."""
    result = doc.get("result", doc) if isinstance(doc, dict) else None
    if not isinstance(result, dict):
        return None, None
    for key in ("task", "statusUpdate", "status_update"):
        if isinstance(result.get(key), dict):
            result = result[key]
            break
    task_id = _text(result.get("taskId")) or _text(result.get("id"))
    status = got if isinstance(got := result.get("status"), dict) else {}
    return task_id, _text(status.get("state"))


def _last_x402_metadata(doc: object) -> dict | None:
    """The last metadata object holding x402 keys, in document order (the status message's; a history's
    older messages come before it in a task object only when the status is not repeated)."""
    found: list[dict] = []

    def walk(node: Any, depth: int) -> None:
        if depth > MAX_DEPTH:
            return
        if isinstance(node, dict):
            meta = node.get("metadata")
            if isinstance(meta, dict) and any(isinstance(k, str) and k.startswith(PREFIX) for k in meta):
                found.append(meta)
            for key, value in node.items():
                if key != "history":  # (earlier messages: the payment's signature and stale states)
                    walk(value, depth + 1)
        elif isinstance(node, list):
            for value in node:
                walk(value, depth + 1)

    walk(doc, 0)
    return found[-1] if found else None
