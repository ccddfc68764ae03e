"""Bodies with bounded memory (pure; no I/O): capped decompression, and a tap for streamed bodies.

A body is attacker-controlled. Two rules keep the recorder's memory bounded whatever arrives:
- `decode()` undoes a Content-Encoding (gzip, deflate, br, zstd, chained) into at most `limit` bytes:
  1 MB of gzip that expands to 1 GiB stops at the limit and says `body_too_large` (the body is then
  described by its bytes as sent: size and SHA-256 of the wire form);
- bodies that are large or of unknown length pass through streamed (mitmproxy's `flow.X.stream`, a
  `Tap`): each chunk goes on at once, the tap counts and hashes it and keeps only the first `keep`
  bytes, which are parsed (usage, ids) once the body ends, if it fits.
"""

from __future__ import annotations

import hashlib
import zlib

import brotli
import orjson

try:
    from compression import zstd  # Python 3.14
except ImportError:  # mitmproxy depends on the backport
    from backports import zstd

from .sse import SSEParser

DECODE_LIMIT = 16 << 20  # most bytes a decoded body may take in memory
KEEP = 1 << 20  # bytes of a streamed body kept for parsing
_CHUNK = 64 << 10


class TooLarge(Exception):
    """The decoded body would exceed the limit."""


def decode(raw: bytes, encoding: str | None, limit: int = DECODE_LIMIT) -> tuple[bytes, str | None]:
    """The body with its Content-Encoding undone (at most `limit` bytes), and an error code:
    None, `body_too_large` (past the limit: the raw bytes are returned) or `undecodable: …`
    (an unknown or broken encoding: the raw bytes are returned)."""
    codings = [c.strip().lower() for c in (encoding or "").split(",") if c.strip() and c.strip().lower() != "identity"]
    body = raw
    try:
        for coding in reversed(codings):  # the last coding applied is undone first
            body = _undo(coding, body, limit)
    except TooLarge:
        return raw, "body_too_large"
    except (ValueError, EOFError, zlib.error, brotli.error, zstd.ZstdError) as exc:
        return raw, f"undecodable: {encoding}: {type(exc).__name__}"
    return body, None


def _undo(coding: str, data: bytes, limit: int) -> bytes:
    if coding in ("gzip", "x-gzip"):
        return _zlib(data, 16 + zlib.MAX_WBITS, limit)
    if coding == "deflate":  # zlib-wrapped, or raw deflate as some servers send it
        try:
            return _zlib(data, zlib.MAX_WBITS, limit)
        except zlib.error:
            return _zlib(data, -zlib.MAX_WBITS, limit)
    if coding == "br":
        return _brotli(data, limit)
    if coding == "zstd":
        return _zstd(data, limit)
    raise ValueError(f"unknown content-encoding {coding!r}")


def _zlib(data: bytes, wbits: int, limit: int) -> bytes:
    d = zlib.decompressobj(wbits)
    out = d.decompress(data, limit + 1)
    if len(out) > limit or d.unconsumed_tail:
        raise TooLarge
    return out + d.flush()


def _brotli(data: bytes, limit: int) -> bytes:
    d, out = brotli.Decompressor(), bytearray()
    for i in range(0, len(data), _CHUNK):
        out += d.process(data[i : i + _CHUNK], output_buffer_limit=limit + 1 - len(out))
        while len(out) <= limit and not d.can_accept_more_data() and not d.is_finished():
            out += d.process(b"", output_buffer_limit=limit + 1 - len(out))
        if len(out) > limit:
            raise TooLarge
    return bytes(out)


def _zstd(data: bytes, limit: int) -> bytes:
    d = zstd.ZstdDecompressor()
    out = d.decompress(data, max_length=limit + 1)
    if len(out) > limit or not (d.eof or d.needs_input):  # output is still pending: past the limit
        raise TooLarge
    return out


def must_stream(expected_size: int | None, limit: int) -> bool:
    """Whether a recorded body passes through streamed: its length is unknown (chunked, HTTP/2
    without content-length) or above the limit. `expected_size` is mitmproxy's expected body size:
    None or -1 when unknown, 0 when there is no body."""
    return expected_size is None or expected_size < 0 or expected_size > limit


class Tap:
    """mitmproxy's `stream` callable for a recorded body: every chunk passes on unchanged; the tap
    counts and hashes it, keeps the first `keep` bytes, and feeds a server-sent-event parser if the
    body is an event stream."""

    def __init__(self, sse: bool = False, keep: int = KEEP):
        self.size, self.keep = 0, keep
        self.hash = hashlib.sha256()
        self.head = bytearray()
        self.parser = SSEParser() if sse else None

    def __call__(self, chunk: bytes) -> bytes:
        if chunk:
            self.size += len(chunk)
            self.hash.update(chunk)
            if self.parser is not None:
                self.parser.feed(chunk)
            elif len(self.head) <= self.keep:
                self.head += chunk[: self.keep + 1 - len(self.head)]
        return chunk

    @property
    def complete(self) -> bool:
        """The kept bytes are the whole body."""
        return self.size <= self.keep

    def record(self) -> dict:
        """The body as seen on the wire: size and SHA-256 (the body record of a streamed body)."""
        return {"size": self.size, "sha256": self.hash.hexdigest(), "streamed": True}


SMALL_JSON = 1 << 20  # a request body looked into for a payment (MCP, A2A) is no bigger than this


def small_json(body: bytes | None) -> object | None:
    """A small body's JSON (None when absent, too big to look into, or not JSON)."""
    if not body or len(body) > SMALL_JSON:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
