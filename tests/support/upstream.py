"""Deterministic fake OpenAI-compatible inference server that speaks x402.

Run as a script::

    python tests/support/upstream.py --port 0 [--cert C --key K] [--host 127.0.0.1]

prints ``READY <port>`` on stdout once listening.  Or import it::

    server, port = start_upstream(port=0, cert=None, key=None)
    ...
    server.shutdown()

Routes (JSON bodies):
  GET  /health                       {"ok": true}
  POST /v1/chat/completions          x402 v2 exact/EIP-3009 (PAYMENT-SIGNATURE or X-PAYMENT); with
                                     X-Test-Seller-Key, the settlement carries a signed seller receipt;
                                     X-Test-Pay-To chooses the challenge's payTo
  POST /v1/free/chat/completions     no payment
  POST /v1/legacy/chat/completions   x402 v1 (402 JSON body, X-PAYMENT, X-PAYMENT-RESPONSE)
  POST /v1/jobid/chat/completions    like v2, settlement ``transaction`` is ``payment-<uuid4>``
  POST /v1/embeddings                fixed embedding
  POST /v1/messages                  Anthropic-style message (``stream``: Anthropic's typed events)
  POST /v1/responses                 OpenAI Responses API, no payment (``stream``: its typed events)
  POST /v1/completions               OpenAI legacy completions, no payment (``stream``: text chunks)
  GET  /_seen                        last 1000 requests: [{method, path, headers, body_sha256}]
  DELETE /_seen                      clear that list (and the stream times)
  GET  /_stream_times/<key>          {"first": t, "last": t} (time.time()) of a stream

Request knobs: body ``"stream": true`` (SSE, chunked), ``"n_chunks"`` (default 5),
``"chunk_delay"`` seconds (default 0), ``"stream_key"``; header ``X-Test-Status: NNN``
(injected status after payment handling; no settlement header unless ``X-Test-Settle: 1``);
header ``X-Test-Tx: 0x…`` makes the settlement claim that transaction hash; ``X-Test-Raw-Headers:
<base64>`` adds those header lines to the answer byte for byte; ``X-Test-Body: gzip-bomb:N | big:N |
chunked:N`` answers 200 with a gzip bomb of N zero bytes, or N bytes with a length, or chunked.
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import json
import signal
import socket
import ssl
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

try:  # imported as part of the tests.support / support package
    from . import x402_wire
except ImportError:  # run as a script: python tests/support/upstream.py
    import x402_wire  # type: ignore[no-redef]

PAY_TO = "0x87cbA3f9221bFdE7D6d8661713D9A49016957D13"
ASSET = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"  # USDC on Base
AMOUNT = 10000
NETWORK = "eip155:8453"
NETWORK_V1 = "base"
EXTRA = {"name": "USD Coin", "version": "2"}
TEE_ID = "0x" + hashlib.sha256(b"fake-upstream-tee").hexdigest()
DEFAULT_MODEL = "fake-model"
SEEN_MAX = 1000

CHAT_ROUTES = {
    "/v1/chat/completions": "v2",
    "/v1/free/chat/completions": "free",
    "/v1/legacy/chat/completions": "v1",
    "/v1/jobid/chat/completions": "jobid",
}


# --------------------------------------------------------------------------
# helpers


_BOMBS: dict[int, bytes] = {}


def _gzip_zeros(n: int) -> bytes:
    """gzip of n zero bytes, made a MiB at a time (1 GiB of zeros is about 1 MB of gzip)."""
    if n not in _BOMBS:
        import zlib
        z, zeros, parts = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS), bytes(1 << 20), []
        for start in range(0, n, len(zeros)):
            parts.append(z.compress(zeros[:min(len(zeros), n - start)]))
        _BOMBS[n] = b"".join(parts) + z.flush()
    return _BOMBS[n]


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _text_of(content) -> str:
    """Text of an OpenAI message content (string or list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, str):
                parts.append(p)
            elif isinstance(p, dict) and isinstance(p.get("text"), str):
                parts.append(p["text"])
        return "".join(parts)
    return ""


def _chat_answer(req: dict, body: bytes) -> dict:
    messages = req.get("messages") if isinstance(req.get("messages"), list) else []
    last_user = ""
    prompt_chars = 0
    for m in messages:
        if not isinstance(m, dict):
            continue
        text = _text_of(m.get("content"))
        prompt_chars += len(text)
        if m.get("role") == "user":
            last_user = text
    answer = "echo: " + last_user
    prompt_tokens = 1 + prompt_chars // 4
    completion_tokens = 1 + len(answer) // 4
    return {
        "id": "chatcmpl-" + _sha256_hex(body)[:24],
        "model": req.get("model") or DEFAULT_MODEL,
        "answer": answer,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _payer_of(payment: dict) -> str:
    payload = payment.get("payload")
    if isinstance(payload, dict):
        for k in ("authorization", "permit2Authorization"):
            auth = payload.get(k)
            if isinstance(auth, dict) and isinstance(auth.get("from"), str):
                return auth["from"]
    return ""


def _delay(req: dict) -> float:
    """The request's ``chunk_delay``: seconds between the chunks of a stream (0: none, or not a number)."""
    try:
        return max(0.0, float(req.get("chunk_delay", 0) or 0))
    except (TypeError, ValueError):
        return 0.0


def _split(text: str, k: int) -> list[str]:
    n = len(text)
    return [text[i * n // k : (i + 1) * n // k] for i in range(k)]


# --------------------------------------------------------------------------
# handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-x402-upstream/1.0"
    sys_version = ""
    timeout = 120  # idle keep-alive connections are dropped after this
    disable_nagle_algorithm = True  # headers and body go in separate writes: no 40 ms delayed-ACK stalls

    server: "UpstreamServer"

    # quiet
    def log_message(self, format, *args):
        pass

    # every method goes through the same dispatcher
    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    # ---- I/O

    def _read_body(self) -> bytes:
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        length = self.headers.get("Content-Length")
        if length:
            return self.rfile.read(int(length))
        return b""

    def _send(self, status: int, obj=None, headers: dict | None = None, raw: bytes | None = None,
              content_type: str = "application/json") -> None:
        if raw is None:
            raw = b"" if obj is None else json.dumps(obj, separators=(",", ":")).encode()
        if status in (204, 304) or 100 <= status < 200:
            raw = b""
        special = self.headers.get("X-Test-Body") if status == 200 else None
        if special:
            return self._send_special(special, headers)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("x-request-id", self._request_id)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self._raw_headers()
        self.end_headers()
        if raw and self.command != "HEAD":
            self.wfile.write(raw)

    def _raw_headers(self) -> None:
        """`X-Test-Raw-Headers: <base64 of header lines>`: added to the answer byte for byte (any bytes)."""
        value = self.headers.get("X-Test-Raw-Headers")
        if value:
            try:
                self._headers_buffer.append(base64.b64decode(value))
            except ValueError:
                pass

    def _send_special(self, spec: str, headers: dict | None) -> None:
        """`X-Test-Body`: `gzip-bomb:N` (gzip of N zero bytes), `big:N` (N bytes, content-length),
        `chunked:N` (N bytes, chunked)."""
        kind, _, size = spec.partition(":")
        n = int(size or 0)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-request-id", self._request_id)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self._raw_headers()
        if kind == "gzip-bomb":
            body = _gzip_zeros(n)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if kind == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(n))
        self.end_headers()
        block = b"x" * (1 << 20)
        for start in range(0, n, len(block)):
            part = block[:min(len(block), n - start)]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part) if kind == "chunked" else part)
        if kind == "chunked":
            self.wfile.write(b"0\r\n\r\n")

    # ---- dispatch

    def _dispatch(self) -> None:
        self._request_id = "req_" + uuid.uuid4().hex
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self._send(400, {"error": "bad request framing"}, {"Connection": "close"})
            return
        path = unquote(urlsplit(self.path).path)
        method = self.command
        srv = self.server

        if path.startswith("/_"):
            self._introspect(method, path)
            return

        srv.record(method, path, self.headers, body)

        kind = None
        if method == "GET" and path == "/health":
            kind = "health"
        elif method == "POST" and path in CHAT_ROUTES:
            kind = CHAT_ROUTES[path]
        elif method == "POST" and path == "/v1/embeddings":
            kind = "embeddings"
        elif method == "POST" and path == "/v1/messages":
            kind = "messages"
        elif method == "POST" and path == "/v1/responses":
            kind = "responses"
        elif method == "POST" and path == "/v1/completions":
            kind = "completions"

        # ---- payment handling
        settle_headers: dict[str, str] = {}
        if kind in ("v2", "jobid", "v1"):
            if kind == "v1":
                pay_value = self.headers.get("X-PAYMENT")
            else:
                pay_value = self.headers.get("PAYMENT-SIGNATURE") or self.headers.get("X-PAYMENT")
            resource = f"{srv.scheme}://{self.headers.get('Host') or srv.host_port}{path}"
            if not pay_value:
                if kind == "v1":
                    self._send(402, x402_wire.challenge_v1(PAY_TO, ASSET, AMOUNT, network=NETWORK_V1,
                                                           resource=resource, extra=EXTRA))
                else:
                    chal = x402_wire.challenge_v2(self.headers.get("X-Test-Pay-To") or PAY_TO, ASSET, AMOUNT,
                                                  network=NETWORK, resource=resource, extra=EXTRA)
                    self._send(402, {}, {"PAYMENT-REQUIRED": x402_wire.b64json(chal)})
                return
            try:
                payment = x402_wire.unb64json(pay_value)
                if not isinstance(payment, dict):
                    raise ValueError("payment is not an object")
            except ValueError:
                self._send(400, {"error": "invalid payment"})
                return
            payer = _payer_of(payment)
            if self.headers.get("X-Test-Tx"):  # the settlement this server claims, chosen by the test
                tx = self.headers["X-Test-Tx"]
            elif kind == "jobid":
                tx = f"payment-{uuid.uuid4()}"
            else:
                tx = "0x" + _sha256_hex(pay_value.encode())
            if kind == "v1":
                net = payment.get("network") if isinstance(payment.get("network"), str) else NETWORK_V1
                settle_headers["X-PAYMENT-RESPONSE"] = x402_wire.b64json(x402_wire.settlement(tx, payer, net))
            else:
                settled = x402_wire.settlement(tx, payer, NETWORK)
                if self.headers.get("X-Test-Seller-Key"):  # a signed receipt (offer-receipt), as the test asks:
                    said = self.headers.get("X-Test-Seller-Says-Payer") or payer  # (a lying one names another payer)
                    settled["extensions"] = x402_wire.seller_receipt(self.headers["X-Test-Seller-Key"], NETWORK, resource,
                                                                     said, tx)
                settle_headers["PAYMENT-RESPONSE"] = x402_wire.b64json(settled)

        # ---- injected status
        injected = self.headers.get("X-Test-Status")
        if injected:
            try:
                status = int(injected.strip())
            except ValueError:
                status = 0
            if 200 <= status <= 599:
                extra = settle_headers if self.headers.get("X-Test-Settle") == "1" else {}
                self._send(status, {"error": "injected"}, extra)
                return

        if kind is None:
            self._send(404, {"error": "not found"})
            return
        if kind == "health":
            self._send(200, {"ok": True})
            return

        try:
            req = json.loads(body) if body.strip() else {}
        except (ValueError, UnicodeDecodeError):
            req = None
        if not isinstance(req, dict):
            self._send(400, {"error": "invalid json"})
            return
        model = req.get("model") or DEFAULT_MODEL

        if kind == "embeddings":
            self._send(200, {
                "object": "list",
                "data": [{"object": "embedding", "embedding": [0.1, 0.2], "index": 0}],
                "model": model,
                "usage": {"prompt_tokens": 3, "total_tokens": 3},
            })
            return
        if kind in ("responses", "completions") or (kind == "messages" and req.get("stream") is True):
            self._other_api(kind, req, body)
            return
        if kind == "messages":
            self._send(200, {
                "id": "msg_" + _sha256_hex(body)[:24],
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": "echo"}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 7, "output_tokens": 3},
            })
            return

        # chat completions
        ans = _chat_answer(req, body)
        if req.get("stream") is True:
            self._stream(req, body, ans, settle_headers)
            return
        self._send(200, {
            "id": ans["id"],
            "object": "chat.completion",
            "model": ans["model"],
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": ans["answer"]},
                "finish_reason": "stop",
            }],
            "usage": ans["usage"],
        }, settle_headers)

    # ---- the Responses, completions and Anthropic streaming APIs (shapes of their API references)

    def _other_api(self, kind: str, req: dict, body: bytes) -> None:
        model, rid = req.get("model") or DEFAULT_MODEL, _sha256_hex(body)[:24]
        prompt = req.get("input") if kind == "responses" else req.get("prompt") if kind == "completions" else \
            _text_of((req.get("messages") or [{}])[-1].get("content"))
        answer = "echo: " + (prompt if isinstance(prompt, str) else json.dumps(prompt))
        inp, out = 1 + len(json.dumps(prompt)) // 4, 1 + len(answer) // 4
        pieces = _split(answer, 3)
        if kind == "responses":
            usage = {"input_tokens": inp, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": out,
                     "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": inp + out}
            message = {"id": "msg_" + rid, "type": "message", "status": "completed", "role": "assistant",
                       "content": [{"type": "output_text", "text": answer, "annotations": []}]}
            done = {"id": "resp_" + rid, "object": "response", "created_at": int(time.time()), "status": "completed",
                    "model": model, "output": [message], "usage": usage, "error": None, "incomplete_details": None,
                    "instructions": None, "metadata": {}, "parallel_tool_calls": True, "temperature": 1.0,
                    "tool_choice": "auto", "tools": [], "top_p": 1.0}
            if req.get("stream") is not True:
                return self._send(200, done)
            started = {**done, "status": "in_progress", "output": [], "usage": None}
            at = {"item_id": "msg_" + rid, "output_index": 0, "content_index": 0}
            part = {"type": "output_text", "text": answer, "annotations": []}
            events = [("response.created", {"response": started}),
                      ("response.output_item.added", {"output_index": 0, "item": {**message, "status": "in_progress",
                                                                                  "content": []}}),
                      ("response.content_part.added", {**at, "part": {**part, "text": ""}})]
            events += [("response.output_text.delta", {**at, "delta": piece}) for piece in pieces]
            events += [("response.output_text.done", {**at, "text": answer}),
                       ("response.content_part.done", {**at, "part": part}),
                       ("response.output_item.done", {"output_index": 0, "item": message}),
                       ("response.completed", {"response": done})]
            events = [(name, {"type": name, **e}) for name, e in events]
            return self._stream_events([(name, {**e, "sequence_number": i}) for i, (name, e) in enumerate(events)],
                                       _delay(req))
        if kind == "completions":
            usage = {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out}
            head = {"id": "cmpl-" + rid, "object": "text_completion", "created": int(time.time()), "model": model}
            if req.get("stream") is not True:
                return self._send(200, {**head, "choices": [{"index": 0, "text": answer, "finish_reason": "stop",
                                                             "logprobs": None}], "usage": usage})
            events = [(None, {**head, "choices": [{"index": 0, "text": piece, "finish_reason": None, "logprobs": None}]})
                      for piece in pieces]
            events += [(None, {**head, "choices": [], "usage": usage}), (None, "[DONE]")]
            return self._stream_events(events, _delay(req))
        message = {"id": "msg_" + rid, "type": "message", "role": "assistant", "model": model, "content": [],
                   "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": inp, "output_tokens": 1}}
        events = [("message_start", {"type": "message_start", "message": message}),
                  ("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}})]
        events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": piece}}) for piece in pieces]
        events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                   ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                      "usage": {"output_tokens": out}}),
                   ("message_stop", {"type": "message_stop"})]
        self._stream_events(events, _delay(req))

    def _stream_events(self, events: list, delay: float = 0.0) -> None:
        """An event stream of (event name or None, JSON object or text) items, chunked, each flushed, with
        `delay` seconds between them (the request's ``chunk_delay``)."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", self._request_id)
        self.end_headers()
        for i, (name, payload) in enumerate(events):
            if i and delay:
                time.sleep(delay)
            data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
            event = (f"event: {name}\n" if name else "") + f"data: {data}\n\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event.encode()), event.encode()))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # ---- streaming

    def _stream(self, req: dict, body: bytes, ans: dict, headers: dict) -> None:
        try:
            k = max(0, int(req.get("n_chunks", 5)))
        except (TypeError, ValueError):
            k = 5
        delay = _delay(req)
        key = req.get("stream_key")
        key = str(key) if key is not None else self._request_id

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", self._request_id)
        for h, v in headers.items():
            self.send_header(h, v)
        self.end_headers()

        times: dict[str, float] = {}
        srv = self.server

        def write_chunk(data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def write_event(payload) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
            if "first" not in times:
                times["first"] = time.time()
                srv.set_stream_times(key, dict(times))
            write_chunk(b"data: " + data.encode() + b"\n\n")

        try:
            for i, piece in enumerate(_split(ans["answer"], k) if k else []):
                if i and delay:
                    time.sleep(delay)
                write_event({
                    "id": ans["id"],
                    "object": "chat.completion.chunk",
                    "model": ans["model"],
                    "choices": [{"index": 0, "delta": {"content": piece}}],
                })
            sig = hashlib.shake_256(b"fake-tee-signature:" + body).digest(256)
            write_event({
                "id": ans["id"],
                "object": "chat.completion.chunk",
                "model": ans["model"],
                "choices": [],
                "usage": ans["usage"],
                "tee_signature": base64.b64encode(sig).decode(),
                "tee_request_hash": "0x" + _sha256_hex(body),
                "tee_output_hash": "0x" + _sha256_hex(ans["answer"].encode()),
                "tee_timestamp": int(time.time()),
                "tee_id": TEE_ID,
            })
            write_event("[DONE]")
            times["last"] = time.time()
            srv.set_stream_times(key, dict(times))
            write_chunk(b"")  # terminating zero-length chunk
        except OSError:
            self.close_connection = True

    # ---- introspection

    def _introspect(self, method: str, path: str) -> None:
        srv = self.server
        if path == "/_seen" and method == "GET":
            self._send(200, srv.seen_list())
        elif path == "/_seen" and method == "DELETE":
            srv.clear()
            self._send(200, {"ok": True})
        elif path.startswith("/_stream_times/") and method == "GET":
            t = srv.get_stream_times(path[len("/_stream_times/"):])
            if t is None:
                self._send(404, {"error": "unknown stream key"})
            else:
                self._send(200, {"first": t.get("first"), "last": t.get("last")})
        else:
            self._send(404, {"error": "not found"})


# --------------------------------------------------------------------------
# server


class UpstreamServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], ssl_context: ssl.SSLContext | None = None):
        self.ssl_context = ssl_context
        self.scheme = "https" if ssl_context else "http"
        self._lock = threading.Lock()
        self._seen: collections.deque = collections.deque(maxlen=SEEN_MAX)
        self._stream_times: dict[str, dict] = {}
        self._conns: set = set()
        self._closed = False
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def host_port(self) -> str:
        return f"{self.server_address[0]}:{self.server_address[1]}"

    # registry
    def record(self, method, path, headers, body: bytes) -> None:
        hdrs: dict[str, str] = {}
        for k, v in headers.items():
            k = k.lower()
            hdrs[k] = f"{hdrs[k]}, {v}" if k in hdrs else v
        entry = {"method": method, "path": path, "headers": hdrs, "body_sha256": _sha256_hex(body)}
        with self._lock:
            self._seen.append(entry)

    def seen_list(self) -> list:
        with self._lock:
            return list(self._seen)

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()
            self._stream_times.clear()

    def set_stream_times(self, key: str, times: dict) -> None:
        with self._lock:
            self._stream_times[key] = times

    def get_stream_times(self, key: str) -> dict | None:
        with self._lock:
            t = self._stream_times.get(key)
            return dict(t) if t is not None else None

    # connections: TLS handshake happens in the per-connection thread
    def finish_request(self, request, client_address):
        conn = request
        if self.ssl_context is not None:
            try:
                request.settimeout(30)
                conn = self.ssl_context.wrap_socket(request, server_side=True)
            except (OSError, ValueError):
                return
        with self._lock:
            self._conns.add(conn)
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            with self._lock:
                self._conns.discard(conn)
            if conn is not request:
                try:
                    conn.close()
                except OSError:
                    pass

    def handle_error(self, request, client_address):  # quiet
        pass

    def shutdown(self) -> None:
        """Stop serving, close the listening socket and any open connections."""
        if not self._closed:
            super().shutdown()
        self._closed = True
        self.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                socket.socket.shutdown(c, socket.SHUT_RDWR)
            except OSError:
                pass


def _ssl_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if not cert:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def make_upstream(port: int = 0, cert: str | None = None, key: str | None = None,
                  host: str = "127.0.0.1") -> UpstreamServer:
    return UpstreamServer((host, port), _ssl_context(cert, key))


def start_upstream(port: int = 0, cert: str | None = None, key: str | None = None,
                   host: str = "127.0.0.1") -> tuple[UpstreamServer, int]:
    """Start the server in a daemon thread; returns (server, port)."""
    server = make_upstream(port, cert, key, host)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         name=f"fake-upstream-{server.port}", daemon=True)
    t.start()
    return server, server.port


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fake x402 OpenAI-compatible upstream")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    args = ap.parse_args(argv)
    if bool(args.cert) != bool(args.key):
        ap.error("--cert and --key go together")
    server = make_upstream(args.port, args.cert, args.key, args.host)

    def _stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    print(f"READY {server.port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
