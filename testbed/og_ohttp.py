"""Oblivious HTTP (RFC 9458) for the OpenGradient test bed: the TEE gateway's side of it, and the
chunk framing the relay needs.

Imported by :mod:`testbed.og_gateway` and :mod:`testbed.og_relay`, which run with ``.venv-og/bin/python``
(``pyhpke``, the HPKE library the ``opengradient`` SDK itself uses for the sender side, is only there;
it is imported lazily, so the framing helpers also work in ``.venv``).

The construction is the one the SDK 1.1.4 (``opengradient.client.tee_ohttp``) speaks, and the real
tee-gateway implements as the recipient:

- fixed suite DHKEM(X25519, HKDF-SHA256) 0x0020 / HKDF-SHA256 0x0001 / ChaCha20-Poly1305 0x0003,
  key id 1 by default (whatever the registry's ``ohttpConfig.keyId`` says)
- request: ``hdr(7) = key_id(1) ‖ kem_id(2) ‖ kdf_id(2) ‖ aead_id(2)``, then ``enc(32)``, then the HPKE
  ciphertext of the inner body. The HPKE ``info`` is ``"message/bhttp request" ‖ 0x00 ‖ hdr``. The inner
  body is the chat-completions JSON itself (no Binary HTTP wrapping: a documented divergence of
  OpenGradient's from RFC 9458; the cryptography is the RFC's)
- response secrets: HPKE exports ``"message/bhttp response"`` (single shot) and
  ``"message/bhttp chunked response"`` (streams), 32 bytes each
- response keys: ``prk = HMAC-SHA256(key = enc ‖ response_nonce, msg = secret)``; ``key =
  HKDF-Expand(prk, "key", 32)``, ``nonce = HKDF-Expand(prk, "nonce", 12)``
- single shot (``message/ohttp-res``): ``response_nonce(32) ‖ ChaCha20-Poly1305(key, nonce, body, aad="")``
- chunked (``message/ohttp-chunked-res``, draft-ietf-ohai-chunked-ohttp-08): ``response_nonce(32)``, then
  per chunk ``varint(len(sealed)) ‖ sealed`` with the nonce ``nonce XOR counter`` (12 bytes big-endian,
  from 0) and ``aad=""``, and last ``varint(0) ‖ sealed_final`` with ``aad="final"`` running to the end
  of the body. The gateway seals one inner SSE event per chunk.
- billing frame (the real gateway's, gateway → relay only): in a chunked response, before the final
  chunk, the plaintext ``"\\n--opengradient-ohttp-billing-v1--\\n" ‖ uint32be(len) ‖ JSON {cost_opg,
  cost_usd, opg_price_usd}``. The relay strips it before the bytes go on to the client
  (:class:`ChunkedStreamFilter`): the SDK's decrypter would read its first byte, 0x0a, as a chunk
  length. A sealed chunk is at least 16 bytes (the AEAD tag), so a frame starting with 0x0a cannot be
  a chunk and the magic is unambiguous at a chunk boundary.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import struct
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Iterator

log = logging.getLogger("og_ohttp")

OHTTP_PATH = "/v1/ohttp"
OHTTP_CONFIG_PATH = "/v1/ohttp/config"
CHAT_PATH = "/v1/chat/completions"
REQUEST_MEDIA_TYPE = "message/ohttp-req"
RESPONSE_MEDIA_TYPE = "message/ohttp-res"
CHUNKED_RESPONSE_MEDIA_TYPE = "message/ohttp-chunked-res"

KEY_ID = 0x01
KEM_X25519 = 0x0020
KDF_HKDF_SHA256 = 0x0001
AEAD_CHACHA20_POLY1305 = 0x0003
NK = 32
"""AEAD key length, and the response nonce length (max(Nn, Nk))."""
NN = 12
"""AEAD nonce length."""
ENC_LEN = 32
HEADER_LEN = 7
MIN_SEALED = 16
"""A sealed chunk is never shorter than the Poly1305 tag."""
MAX_REQUEST_BYTES = 512 * 1024
"""The real gateway's cap on an encapsulated request."""

LABEL_REQUEST = b"message/bhttp request"
LABEL_RESPONSE = b"message/bhttp response"
LABEL_CHUNKED_RESPONSE = b"message/bhttp chunked response"
BILLING_MAGIC = b"\n--opengradient-ohttp-billing-v1--\n"
IDENTIFYING_FIELDS = ("user", "metadata", "x-request-id", "request_id")
"""Inner request fields the real gateway drops before running the chat."""
OPG_DECIMALS = 18


# ---------------------------------------------------------------------------------------------
# Framing (no HPKE needed)
# ---------------------------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """QUIC variable-length integer (RFC 9000 §16): 1, 2, 4 or 8 bytes, length in the top two bits."""
    if value < 0 or value >= 1 << 62:
        raise ValueError(f"varint out of range: {value}")
    for size, prefix in ((1, 0x00), (2, 0x40), (4, 0x80), (8, 0xC0)):
        if value < 1 << (8 * size - 2):
            raw = value.to_bytes(size, "big")
            return bytes([raw[0] | prefix]) + raw[1:]
    raise AssertionError("unreachable")


def decode_varint(buf: bytes | bytearray, offset: int = 0) -> tuple[int, int] | None:
    """``(value, next_offset)``, or None when ``buf`` ends inside the varint."""
    if offset >= len(buf):
        return None
    size = 1 << (buf[offset] >> 6)
    if offset + size > len(buf):
        return None
    value = buf[offset] & 0x3F
    for b in buf[offset + 1:offset + size]:
        value = (value << 8) | b
    return value, offset + size


def request_header(key_id: int = KEY_ID) -> bytes:
    return bytes([key_id]) + struct.pack(">HHH", KEM_X25519, KDF_HKDF_SHA256, AEAD_CHACHA20_POLY1305)


def key_config(public_key: bytes, key_id: int = KEY_ID) -> bytes:
    """The RFC 9458 §3 key configuration:
    ``key_id(1) ‖ kem_id(2) ‖ pk(32) ‖ len(2) ‖ (kdf_id(2) ‖ aead_id(2))``."""
    if len(public_key) != 32:
        raise ValueError("an X25519 public key is 32 bytes")
    suites = struct.pack(">HH", KDF_HKDF_SHA256, AEAD_CHACHA20_POLY1305)
    return bytes([key_id]) + struct.pack(">H", KEM_X25519) + public_key + struct.pack(">H", len(suites)) + suites


def billing_frame(cost: dict) -> bytes:
    payload = json.dumps(cost, separators=(",", ":")).encode()
    return BILLING_MAGIC + len(payload).to_bytes(4, "big") + payload


def session_cost(cost_opg: int, opg_price_usd: str) -> dict:
    """The real gateway's ``opengradient`` cost block: three strings (OPG smallest units, USD, USD per OPG)."""
    price = Decimal(str(opg_price_usd))
    usd = Decimal(int(cost_opg)) / (Decimal(10) ** OPG_DECIMALS) * price
    return {"cost_opg": str(int(cost_opg)), "cost_usd": format(usd, "f"), "opg_price_usd": format(price, "f")}


class ChunkedStreamFilter:
    """Reads a chunked OHTTP response as it arrives and passes it on without the billing frames.

    ``feed(data)`` returns the bytes to forward now; ``finish()`` the rest at the end of the stream.
    Frames are only parsed, never decrypted. ``billing`` holds the stripped frames' JSON, ``chunks`` the
    number of sealed chunks seen (the final one included once the zero-length prefix was read)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._state = "nonce"
        self.billing: list[dict] = []
        self.chunks = 0
        self.stripped = 0
        self.malformed: str | None = None

    def feed(self, data: bytes) -> bytes:
        self._buf.extend(data)
        out = bytearray()
        for _ in range(1_000_000):  # bounded: each round consumes bytes or returns
            if self._state == "final" or self._state == "passthrough":
                out.extend(self._buf)
                self._buf.clear()
                return bytes(out)
            if self._state == "nonce":
                if len(self._buf) < NK:
                    return bytes(out)
                out.extend(self._buf[:NK])
                del self._buf[:NK]
                self._state = "frame"
                continue
            if not self._buf:
                return bytes(out)
            if self._buf[0] == BILLING_MAGIC[0]:
                if len(self._buf) < len(BILLING_MAGIC) + 4:
                    if BILLING_MAGIC.startswith(bytes(self._buf[:len(BILLING_MAGIC)])):
                        return bytes(out)
                elif self._buf.startswith(BILLING_MAGIC):
                    size = int.from_bytes(self._buf[len(BILLING_MAGIC):len(BILLING_MAGIC) + 4], "big")
                    end = len(BILLING_MAGIC) + 4 + size
                    if len(self._buf) < end:
                        return bytes(out)
                    try:
                        self.billing.append(json.loads(bytes(self._buf[len(BILLING_MAGIC) + 4:end])))
                    except ValueError:
                        self.billing.append({"unparsed": bytes(self._buf[len(BILLING_MAGIC) + 4:end]).hex()})
                    self.stripped += end
                    del self._buf[:end]
                    continue
            parsed = decode_varint(self._buf, 0)
            if parsed is None:
                return bytes(out)
            size, offset = parsed
            if size == 0:
                self.chunks += 1
                self._state = "final"
                continue
            if size < MIN_SEALED:
                self.malformed = f"a chunk of {size} bytes"
                self._state = "passthrough"
                continue
            if len(self._buf) < offset + size:
                return bytes(out)
            out.extend(self._buf[:offset + size])
            del self._buf[:offset + size]
            self.chunks += 1
        raise RuntimeError("ChunkedStreamFilter: too many frames in one feed")

    def finish(self) -> bytes:
        rest = bytes(self._buf)
        self._buf.clear()
        if self._state != "final" and self.malformed is None:
            self.malformed = "the stream ended without a final chunk"
        return rest


# ---------------------------------------------------------------------------------------------
# HPKE (pyhpke, as the SDK) and the response sealing
# ---------------------------------------------------------------------------------------------


def _suite():
    from pyhpke import AEADId, CipherSuite, KDFId, KEMId

    return CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.CHACHA20_POLY1305)


class HpkeKey:
    """The gateway's X25519 recipient key (independent of its RSA signing key, as in the real gateway)."""

    def __init__(self, key_id: int = KEY_ID, seed: bytes | None = None):
        pair = _suite().kem.derive_key_pair(seed or os.urandom(32))
        self.key_id = key_id
        self.private_key = pair.private_key
        self.public_key: bytes = pair.public_key.to_public_bytes()

    def config(self) -> dict:
        """What ``GET /v1/ohttp/config`` answers and what goes into the registry's ``ohttpConfig``."""
        return {"key_id": self.key_id, "kem_id": KEM_X25519, "kdf_id": KDF_HKDF_SHA256,
                "aead_id": AEAD_CHACHA20_POLY1305, "public_key": self.public_key.hex(),
                "key_config": key_config(self.public_key, self.key_id).hex()}


@dataclass
class Decapsulated:
    plaintext: bytes
    key_id: int
    enc: bytes
    response_secret: bytes
    chunked_response_secret: bytes


def decapsulate(key: HpkeKey, wire: bytes) -> Decapsulated:
    """Open an encapsulated request; raises ValueError on any problem (the caller answers 400, saying no more)."""
    if len(wire) < HEADER_LEN + ENC_LEN:
        raise ValueError("encapsulated request too short")
    key_id = wire[0]
    suite = struct.unpack(">HHH", wire[1:HEADER_LEN])
    if key_id != key.key_id or suite != (KEM_X25519, KDF_HKDF_SHA256, AEAD_CHACHA20_POLY1305):
        raise ValueError("unknown key id or HPKE suite")
    enc = bytes(wire[HEADER_LEN:HEADER_LEN + ENC_LEN])
    info = LABEL_REQUEST + b"\x00" + wire[:HEADER_LEN]
    try:
        ctx = _suite().create_recipient_context(enc, key.private_key, info=info)
        plaintext = ctx.open(bytes(wire[HEADER_LEN + ENC_LEN:]), aad=b"")
    except Exception as e:
        raise ValueError(f"cannot open the request: {type(e).__name__}") from None
    return Decapsulated(plaintext=plaintext, key_id=key_id, enc=enc,
                        response_secret=ctx.export(LABEL_RESPONSE, max(NN, NK)),
                        chunked_response_secret=ctx.export(LABEL_CHUNKED_RESPONSE, max(NN, NK)))


def response_keys(secret: bytes, enc: bytes, response_nonce: bytes) -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives import hashes, hmac
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

    mac = hmac.HMAC(enc + response_nonce, hashes.SHA256())
    mac.update(secret)
    prk = mac.finalize()
    key = HKDFExpand(algorithm=hashes.SHA256(), length=NK, info=b"key").derive(prk)
    nonce = HKDFExpand(algorithm=hashes.SHA256(), length=NN, info=b"nonce").derive(prk)
    return key, nonce


def seal_response(decap: Decapsulated, body: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    response_nonce = os.urandom(max(NN, NK))
    key, nonce = response_keys(decap.response_secret, decap.enc, response_nonce)
    return response_nonce + ChaCha20Poly1305(key).encrypt(nonce, body, b"")


class ChunkSealer:
    """Seals a chunked response: ``header()`` first, then ``seal(chunk)``, and exactly one
    ``seal(last, final=True)``."""

    def __init__(self, decap: Decapsulated):
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        self._response_nonce = os.urandom(max(NN, NK))
        key, self._nonce = response_keys(decap.chunked_response_secret, decap.enc, self._response_nonce)
        self._aead = ChaCha20Poly1305(key)
        self.counter = 0
        self.done = False

    def header(self) -> bytes:
        return self._response_nonce

    def seal(self, plaintext: bytes, final: bool = False) -> bytes:
        if self.done:
            raise RuntimeError("the final chunk was already sealed")
        nonce = bytes(a ^ b for a, b in zip(self._nonce, self.counter.to_bytes(NN, "big")))
        sealed = self._aead.encrypt(nonce, plaintext, b"final" if final else b"")
        self.counter += 1
        self.done = final
        return (encode_varint(0) if final else encode_varint(len(sealed))) + sealed


# ---------------------------------------------------------------------------------------------
# The gateway's routes (Flask; installed by og_gateway.main)
# ---------------------------------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_RECORDED_HEADERS = ("content-type", "content-length", "accept", "x-tee-id", "x-ohttp-stream", "x-settlement-type",
                     "x-upto-session", "payment-signature", "x-payment", "authorization", "user-agent",
                     "transfer-encoding")
_FORWARDED_PREFIXES = ("x-payment", "x-upto", "x-settlement", "x-tee")


@dataclass
class OhttpSettings:
    billing_frame: bool = True
    opg_price_usd: str = "0.05"
    corrupt_response: int = 0
    """Faults: the next N sealed responses get one ciphertext byte flipped (the SDK must refuse them)."""


class OhttpLog:
    """What the gateway's ``/v1/ohttp`` saw and answered, one entry per call that reached the route."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: list[dict] = []

    def add(self, entry: dict) -> dict:
        with self._lock:
            entry["n"] = len(self.entries) + 1
            self.entries.append(entry)
        return entry

    def snapshot(self) -> list[dict]:
        with self._lock:
            return json.loads(json.dumps(self.entries, default=str))


def _subrequest(app, body: bytes, settlement_type: str | None) -> tuple[int, list, Any]:
    """The chat, in process, through the app *without* the payment middleware (the real gateway does the
    same: the outer ``/v1/ohttp`` request is the paid one)."""
    from flask import request

    outer = request.environ
    env = {k: v for k, v in outer.items()
           if k.startswith("wsgi.") or k in ("SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "HTTP_HOST",
                                             "REMOTE_ADDR")}
    env.update({"REQUEST_METHOD": "POST", "PATH_INFO": CHAT_PATH, "RAW_URI": CHAT_PATH, "REQUEST_URI": CHAT_PATH,
                "SCRIPT_NAME": "", "QUERY_STRING": "", "CONTENT_TYPE": "application/json",
                "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
                "HTTP_AUTHORIZATION": "Bearer ohttp"})
    if settlement_type:
        env["HTTP_X_SETTLEMENT_TYPE"] = settlement_type
    captured: dict[str, Any] = {"status": "500 Internal Server Error", "headers": []}

    def start_response(status, headers, exc_info=None):
        captured["status"], captured["headers"] = status, list(headers)
        return lambda _data: None

    middleware = app.config.get("x402_middleware")
    inner = middleware._original_wsgi if middleware is not None else app.wsgi_app
    iterator = inner(env, start_response)
    return int(captured["status"].split(" ", 1)[0]), captured["headers"], iterator


def _close(iterator: Any) -> None:
    close = getattr(iterator, "close", None)
    if callable(close):
        close()


def _find_call(calls: list[dict], body: dict) -> int | None:
    for i in range(len(calls) - 1, -1, -1):
        if calls[i].get("request") == body:
            return calls[i].get("n")
    return None


def install_ohttp_routes(app, key: HpkeKey, *, calls: Callable[[], list[dict]], cost: Callable[[], int],
                         settings: OhttpSettings | None = None) -> OhttpLog:
    """Add ``POST /v1/ohttp`` (pay it with the chat's payment option), ``GET /v1/ohttp/config`` and the
    test controls ``GET /_testbed/ohttp`` (the log) and ``POST /_testbed/ohttp`` (settings, faults)."""
    from flask import Response, g, request

    settings = settings or OhttpSettings()
    ohttp_log = OhttpLog()
    lock = threading.Lock()

    def take_corrupt() -> bool:
        with lock:
            if settings.corrupt_response > 0:
                settings.corrupt_response -= 1
                return True
            return False

    @app.get(OHTTP_CONFIG_PATH)
    def ohttp_config():
        return key.config()

    @app.post(OHTTP_PATH)
    def ohttp():
        raw = request.get_data(cache=False, parse_form_data=False)
        entry: dict[str, Any] = {
            "received_at": time.time(), "path": request.path,
            "headers": {k.lower(): v for k, v in request.headers.items() if k.lower() in _RECORDED_HEADERS},
            "session_id": g.get("x402_session_id"), "request_sha256": _sha256(raw), "request_length": len(raw),
            "decapsulated": False,
        }
        ohttp_log.add(entry)

        def fail(status: int, message: str):
            entry.update(status=status, error=message)
            return {"error": message}, status

        if not raw:
            return fail(400, "empty body")
        if len(raw) > MAX_REQUEST_BYTES:
            return fail(413, "encapsulated request too large")
        try:
            decap = decapsulate(key, raw)
        except ValueError as e:
            log.warning("OHTTP decapsulation failed: %s", e)
            return fail(400, "malformed encapsulated request")
        entry.update(decapsulated=True, key_id=decap.key_id, enc=decap.enc.hex())
        try:
            inner = json.loads(decap.plaintext.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return fail(400, "inner payload is not valid JSON")
        if not isinstance(inner, dict):
            return fail(400, "inner payload must be a JSON object")
        inner = {k: v for k, v in inner.items() if k not in IDENTIFYING_FIELDS}
        entry.update(inner_request=inner, stream=inner.get("stream") is True)
        status, headers, iterator = _subrequest(app, json.dumps(inner, separators=(",", ":")).encode(),
                                                request.headers.get("X-SETTLEMENT-TYPE"))
        forwarded = [(k, v) for k, v in headers if k.lower().startswith(_FORWARDED_PREFIXES)]
        content_type = next((v for k, v in headers if k.lower() == "content-type"), "application/json")
        entry["inner_status"] = status
        cost_block = session_cost(cost(), settings.opg_price_usd)
        streaming = 200 <= status < 300 and content_type.split(";")[0].strip() == "text/event-stream"

        if not streaming:
            chunks: list[bytes] = []
            try:
                for chunk in iterator:
                    if chunk:
                        chunks.append(chunk)
            finally:
                _close(iterator)
            body = b"".join(chunks)
            entry["call_n"] = _find_call(calls(), inner)
            if not 200 <= status < 300:  # plaintext, as the real gateway answers errors
                entry.update(status=status, response_content_type=content_type, response_sha256=_sha256(body),
                             response_length=len(body))
                return Response(body, status=status, headers=forwarded, content_type=content_type)
            sealed = seal_response(decap, body)
            if take_corrupt():
                sealed = sealed[:-1] + bytes([sealed[-1] ^ 0x01])
                entry["fault"] = "corrupt_response"
            cost_headers = [("X-Inference-Cost-OPG", cost_block["cost_opg"]),
                            ("X-Inference-Cost-USD", cost_block["cost_usd"]),
                            ("X-Inference-Price-OPG-USD", cost_block["opg_price_usd"])]
            entry.update(status=status, response_content_type=RESPONSE_MEDIA_TYPE, response_sha256=_sha256(sealed),
                         response_length=len(sealed), cost=cost_block, inner_response_sha256=_sha256(body))
            return Response(sealed, status=status, headers=forwarded + cost_headers, mimetype=RESPONSE_MEDIA_TYPE)

        sealer = ChunkSealer(decap)
        corrupt = take_corrupt()
        entry.update(status=status, response_content_type=CHUNKED_RESPONSE_MEDIA_TYPE, cost=cost_block,
                     fault="corrupt_response" if corrupt else None)

        def stream() -> Iterator[bytes]:
            digest = hashlib.sha256()
            length = 0
            frames = 0

            def emit(data: bytes) -> bytes:
                nonlocal length
                digest.update(data)
                length += len(data)
                return data

            pending: bytes | None = None
            try:
                yield emit(sealer.header())
                for chunk in iterator:  # one inner SSE event per chunk
                    if not chunk:
                        continue
                    if pending is not None:
                        frames += 1
                        yield emit(sealer.seal(pending))
                    pending = chunk
                if settings.billing_frame:
                    entry["billing_frame"] = True
                    yield emit(billing_frame(cost_block))
                final = sealer.seal(pending or b"", final=True)
                if corrupt:
                    final = final[:-1] + bytes([final[-1] ^ 0x01])
                frames += 1
                yield emit(final)
            finally:
                _close(iterator)
                entry.update(response_sha256=digest.hexdigest(), response_length=length, chunks=frames,
                             call_n=_find_call(calls(), inner), finished_at=time.time())

        return Response(stream(), status=status, headers=forwarded, mimetype=CHUNKED_RESPONSE_MEDIA_TYPE)

    @app.get("/_testbed/ohttp")
    def ohttp_state():
        return {"config": key.config(), "settings": settings.__dict__, "calls": ohttp_log.snapshot()}

    @app.post("/_testbed/ohttp")
    def ohttp_settings():
        spec = request.get_json(force=True) or {}
        unknown = set(spec) - set(OhttpSettings.__dataclass_fields__)
        if unknown:
            return {"error": f"unknown settings: {sorted(unknown)}"}, 400
        with lock:
            for k, v in spec.items():
                setattr(settings, k, type(getattr(settings, k))(v))
        return settings.__dict__

    return ohttp_log
