"""Incremental, bounded-memory Server-Sent-Events parser for AI response streams.

Wire format (WHATWG HTML "server-sent events"): a UTF-8 byte stream of lines
ended by CRLF, LF or CR.  ``field: value`` lines accumulate into an event (one
leading space of the value is dropped; several ``data`` lines are joined with
"\\n"); a line starting with ``:`` is a comment; an empty line dispatches the
event.  A leading BOM is ignored.

What the event data holds (see /work/shared/PROTOCOL.md, sections 3 and 4):

* OpenAI-compatible chat streams: JSON chunks ``{id, model, choices: [{delta:
  {content}}], usage?}`` ending with ``data: [DONE]``; ``usage`` is null except
  in the final chunk when ``stream_options.include_usage`` is set.
* Anthropic: typed events ``message_start`` (``message.id/model/usage.
  input_tokens``), ``content_block_delta`` (``delta.text``), ``message_delta``
  (``usage.output_tokens``), ``message_stop``.
* OpenGradient TEE gateway: the last data event carries ``tee_signature``,
  ``tee_request_hash``, ``tee_output_hash``, ``tee_timestamp``, ``tee_id`` and
  possibly ``data_settlement_transaction_hash``, ``data_settlement_blob_id``,
  ``settlement_job_id`` or ``data_settlement_error``.

Memory is bounded: a line, or an event's accumulated data, longer than
``max_event_bytes`` is dropped with an error, and parsing resumes at the next
line break.  The parser never raises; problems are counted in ``errors``.
Unlike the strict spec, an event left unterminated at ``close()`` is still
dispatched (with an error noted), since a recorder prefers data over purity.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson
from Crypto.Hash import keccak

from .fields import answer_ids, token_count, usage_counts

DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
MAX_ERRORS = 20
_EOL = re.compile(rb"\r\n|\r|\n")

TEE_KEYS = ("tee_signature", "tee_request_hash", "tee_output_hash", "tee_timestamp", "tee_id")
SETTLEMENT_KEYS = (
    "data_settlement_transaction_hash",
    "data_settlement_blob_id",
    "settlement_job_id",
    "data_settlement_error",
)


def _pick(obj: dict, keys: tuple[str, ...]) -> dict[str, Any] | None:
    found = {key: obj[key] for key in keys if obj.get(key) is not None}
    return found or None


class _Usage:
    """Token usage of a stream: whole (OpenAI, Responses, Gemini) or in parts (Anthropic)."""

    def __init__(self) -> None:
        self.seen = False
        self.prompt: int | None = None
        self.completion: int | None = None
        self.total: int | None = None

    def whole(self, usage: dict) -> None:
        """A usage object that holds the stream's whole counts (OpenAI's last chunk, a Responses
        `response.completed`, Gemini's latest usageMetadata): fields.usage_counts."""
        counts = usage_counts(usage)
        if counts is None:
            return
        self.seen = True
        self.prompt, self.completion, self.total = (
            counts["prompt_tokens"],
            counts["completion_tokens"],
            counts["total_tokens"],
        )

    def anthropic(self, usage: dict) -> None:
        prompt = token_count(usage.get("input_tokens"))
        completion = token_count(usage.get("output_tokens"))
        if prompt is None and completion is None:
            return
        self.seen = True
        self.total = None
        if prompt is not None:
            self.prompt = prompt
        if completion is not None:
            self.completion = completion

    def as_dict(self) -> dict[str, int | None] | None:
        if not self.seen:
            return None
        total = self.total
        if total is None and self.prompt is not None and self.completion is not None:
            total = self.prompt + self.completion
        return {"prompt_tokens": self.prompt, "completion_tokens": self.completion, "total_tokens": total}


class SSEParser:
    """Feed response chunks with ``feed``; call ``close`` at the end; read ``summary``."""

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max(1, int(max_event_bytes))
        # line/event assembly state
        self._buf = bytearray()
        self._discarding = False
        self._skip_lf = False
        self._first_line = True
        self._closed = False
        self._data: list[str] = []
        self._data_bytes = 0
        self._has_data = False
        self._event_type = ""
        self._event_broken = False
        # results
        self._events = 0
        self._bytes = 0
        self._done = False
        self._id: str | None = None
        self._model: str | None = None
        self._usage = _Usage()
        self._tee: dict[str, Any] | None = None
        self._settlement: dict[str, Any] | None = None
        self._jsonrpc: dict[str, Any] | None = None  # a JSON-RPC answer of an MCP or A2A stream (see _handle_object)
        self._jsonrpc_x402 = False  # it holds x402 fields
        self._x402_event = False  # the event being handled does
        self._text_hash = hashlib.sha256()
        # what an OpenGradient TEE signs as the output
        self._text_keccak = keccak.new(digest_bits=256, update_after_digest=True)
        self._text_seen = False
        self._output_chars = 0
        self._errors: list[str] = []
        self._error_count = 0

    # ------------------------------------------------------------------ input

    def feed(self, chunk: bytes) -> None:
        """Consume one chunk of the response body."""
        try:
            self._feed(chunk)
        except Exception as exc:
            self._error(f"internal error: {type(exc).__name__}")

    def close(self) -> None:
        """End of stream: flush a trailing line and an unterminated event."""
        try:
            self._close()
        except Exception as exc:
            self._error(f"internal error: {type(exc).__name__}")

    def _feed(self, chunk: bytes) -> None:
        if self._closed:
            self._error("data fed after close")
            return
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            self._error(f"chunk is {type(chunk).__name__}, expected bytes")
            return
        data = bytes(chunk)
        if not data:
            return
        self._bytes += len(data)
        if self._skip_lf and data[:1] == b"\n":
            data = data[1:]
        self._skip_lf = data.endswith(b"\r")
        pos = 0
        for match in _EOL.finditer(data):
            self._end_line(data[pos : match.start()])
            pos = match.end()
        self._append_partial(data[pos:])

    def _close(self) -> None:
        if self._closed:
            return
        if self._buf and not self._discarding:
            self._end_line(b"")
        self._buf = bytearray()
        self._discarding = False
        if self._has_data or self._event_broken:
            self._error("stream ended inside an unterminated event")
            self._dispatch()
        self._closed = True

    # ----------------------------------------------------------------- lines

    def _append_partial(self, piece: bytes) -> None:
        if self._discarding or not piece:
            return
        if len(self._buf) + len(piece) > self.max_event_bytes:
            self._oversized_line()
            return
        self._buf += piece

    def _oversized_line(self) -> None:
        self._error(f"line longer than {self.max_event_bytes} bytes dropped")
        self._buf = bytearray()
        self._discarding = True
        self._event_broken = True
        self._first_line = False

    def _end_line(self, piece: bytes) -> None:
        if self._discarding:
            self._discarding = False
            return
        if len(self._buf) + len(piece) > self.max_event_bytes:
            self._oversized_line()
            self._discarding = False
            return
        raw = bytes(self._buf) + piece if self._buf else piece
        self._buf = bytearray()
        self._process_line(self._decode(raw))

    def _decode(self, raw: bytes) -> str:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._error("non-UTF-8 bytes in stream")
            line = raw.decode("utf-8", "replace")
        if self._first_line:
            self._first_line = False
            line = line.removeprefix("\ufeff")
        return line

    def _process_line(self, line: str) -> None:
        if not line:
            self._dispatch()
            return
        if line.startswith(":"):
            return
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._add_data(value)
        elif field == "event":
            self._event_type = value

    def _add_data(self, value: str) -> None:
        if self._event_broken:
            return
        self._data_bytes += len(value) + 1
        if self._data_bytes > self.max_event_bytes:
            self._error(f"event longer than {self.max_event_bytes} bytes dropped")
            self._event_broken = True
            self._data = []
            return
        self._data.append(value)
        self._has_data = True

    # ---------------------------------------------------------------- events

    def _dispatch(self) -> None:
        data = "\n".join(self._data)
        ready = self._has_data and not self._event_broken
        event_type = self._event_type
        self._data, self._data_bytes, self._has_data = [], 0, False
        self._event_type, self._event_broken = "", False
        if ready:
            self._events += 1
            self._handle_data(event_type, data)

    def _handle_data(self, event_type: str, data: str) -> None:
        if data.strip() == "[DONE]":
            self._done = True
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._error(f"invalid JSON in event {self._events}")
            return
        if isinstance(obj, dict):
            self._x402_event = "x402" in data
            self._handle_object(event_type, obj)

    def _handle_object(self, event_type: str, obj: dict) -> None:
        kind = typed if isinstance(typed := obj.get("type"), str) else event_type
        if kind == "error" or event_type == "error" or isinstance(obj.get("error"), dict):
            self._error(f"error event in stream (event {self._events})")
        if "jsonrpc" in obj and ("result" in obj or "error" in obj):  # an MCP or A2A answer (addon/mcp.py,
            if self._x402_event or not self._jsonrpc_x402:  # addon/a2a.py): the last one that speaks of
                self._jsonrpc, self._jsonrpc_x402 = obj, self._x402_event  # x402, else the last; it ends an MCP
            self._done = True  # request's stream
            return
        if kind == "response.output_text.delta":  # OpenAI Responses API: text deltas, then the response
            self._add_text(obj.get("delta"))
        elif kind.startswith("response.") and isinstance(obj.get("response"), dict):
            self._responses_event(kind, obj["response"])
        elif kind == "message_start":
            self._anthropic_start(obj.get("message"))
        elif kind == "message_delta" and isinstance(obj.get("usage"), dict):
            self._usage.anthropic(obj["usage"])
        elif kind == "content_block_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict):
                self._add_text(delta.get("text"))
        elif kind == "message_stop":
            self._done = True
        else:
            self._openai_chunk(obj)
        self._proof_fields(obj)

    def _anthropic_start(self, message: object) -> None:
        if not isinstance(message, dict):
            return
        self._first_ids(message)
        usage = message.get("usage")
        if isinstance(usage, dict):
            # output_tokens here is a placeholder; the real count is in message_delta.
            self._usage.anthropic({"input_tokens": usage.get("input_tokens")})

    def _responses_event(self, kind: str, response: dict) -> None:
        """response.created / in_progress / completed / failed / incomplete: the response's id and model;
        its usage when completed (the stream's end)."""
        self._first_ids(response)
        if isinstance(response.get("usage"), dict):
            self._usage.whole(response["usage"])
        if kind == "response.completed":
            self._done = True
        elif kind in ("response.failed", "response.incomplete"):
            self._error(f"{kind} (event {self._events})")

    def _openai_chunk(self, obj: dict) -> None:
        """An OpenAI chat or completions chunk, or a Gemini streamGenerateContent chunk."""
        self._first_ids(obj)
        for key in ("usage", "usageMetadata"):
            if isinstance(obj.get(key), dict):
                self._usage.whole(obj[key])
        candidates = obj.get("candidates")  # Gemini
        if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
            content = candidates[0].get("content")
            for part in (content.get("parts") or []) if isinstance(content, dict) else []:
                if isinstance(part, dict):
                    self._add_text(part.get("text"))
            if candidates[0].get("finishReason"):  # (Gemini's streams end with no [DONE])
                self._done = True
            return
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return
        delta = choices[0].get("delta")
        if isinstance(delta, dict):
            self._add_text(delta.get("content"))
        else:
            self._add_text(choices[0].get("text"))

    def _first_ids(self, obj: dict) -> None:
        rid, model = answer_ids(obj)
        self._id = self._id if self._id is not None else rid
        self._model = self._model if self._model is not None else model

    def _proof_fields(self, obj: dict) -> None:
        tee = _pick(obj, TEE_KEYS)
        if tee is not None:
            self._tee = tee
        settlement = _pick(obj, SETTLEMENT_KEYS)
        if settlement is not None:
            self._settlement = settlement

    def _add_text(self, text: object) -> None:
        if not isinstance(text, str):
            return
        self._text_seen = True
        self._output_chars += len(text)
        raw = text.encode("utf-8", "surrogatepass")
        self._text_hash.update(raw)
        self._text_keccak.update(raw)

    # ---------------------------------------------------------------- output

    def _error(self, message: str) -> None:
        self._error_count += 1
        if len(self._errors) < MAX_ERRORS:
            self._errors.append(message)

    def summary(self) -> dict[str, Any]:
        """A JSON-serializable snapshot of what the stream revealed so far."""
        return {
            "events": self._events,
            "bytes": self._bytes,
            "done": self._done,
            "id": self._id,
            "model": self._model,
            "usage": self._usage.as_dict(),
            "tee": dict(self._tee) if self._tee is not None else None,
            "settlement": dict(self._settlement) if self._settlement is not None else None,
            "jsonrpc": self._jsonrpc,
            "output_text_sha256": self._text_hash.hexdigest() if self._text_seen else None,
            "output_text_keccak": "0x" + self._text_keccak.hexdigest() if self._text_seen or self._tee else None,
            "output_chars": self._output_chars,
            "errors": list(self._errors),
            "error_count": self._error_count,
        }
