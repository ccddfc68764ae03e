"""Pure translation of one HTTP exchange into journal event payloads (no I/O, never raises).

The same functions serve live capture (addon/recorder.py) and recorded files (addon/ingest.py), so a
call captured live and the same call read from a HAR file give the same receipt.

Payloads (the `data` of each event; storage/views.sql reads them):

request:    logical_id, source, client, client_port, app, method, scheme, host, port, path, query,
            http_version, match (why it was recorded), headers (secrets replaced by hashes),
            raw_b64 (see below), body {size, sha256[, text | base64, truncated][, streamed][, wire]} (text
            and base64 only with `bodies: full`, redacted: addon/redact.py), model, stream, ids {client_request_id,
            idempotency_key, traceparent}, payment (decoded x402 payment or null), upto_session,
            settlement_type, tee_request_hashes {form: keccak of that canonical form},
            secrets_in_clear (names of secret headers/parameters sent over plain HTTP),
            process {pid, exe, cmdline} (the local process owning the client socket, its command line
            redacted; added by the recorder), errors
response:   status, reason, http_version, headers, raw_b64, content_type, body, stream, latency_ms,
            provider_request_id, response_id, model, usage, challenge, settlement, tee, og,
            tee_output_seen (keccak of the answer as a TEE hashes it), upstream (reverse-mode pin),
            request_body (a streamed request's body record, once it ended), errors
stream_end: latency_ms, bytes, sha256, events, done, id, model, usage, tee, og, output_text_sha256,
            output_text_keccak, output_chars, request_body, errors
error:      kind, message, phase, request_body

Bytes that are not UTF-8 (in header names or values, or the request path) are stored as text with
U+FFFD in place of each bad byte, and exactly in `raw_b64`: {header name: [base64 of each value as
sent], ":path": [base64]}; secret headers are never in `raw_b64` (their hash covers the bytes sent).
A body is described by `size` and `sha256` of what the app sees (Content-Encoding undone); `wire`
marks a body described as sent instead (an encoding that expands past the decode limit, or cannot be
undone), `streamed` one hashed as it passed through (addon/bodies.py).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from functools import cached_property
from typing import cast

import orjson

from receipts.storage.config import Settings
from receipts.storage.records import DELEGATION, SIGNED_TX

from . import a2a, bodies, crawler, eip712, l402, mcp, mpp, og, ohttp, pricing, siwx, x402
from . import fields as F
from . import redact as R
from .redact import sha256_hex

PAYMENT_HEADERS = ("payment-signature", "x-payment")
SETTLEMENT_HEADERS = ("payment-response", "x-payment-response")
CHALLENGE_HEADER = "payment-required"
SESSION_HEADER = "x-upto-session"
SIGN_IN_HEADER = "sign-in-with-x"  # access by an earlier payment (addon/siwx.py): recorded as a paid call is
PAID_HEADERS = PAYMENT_HEADERS + (SESSION_HEADER, SIGN_IN_HEADER)
MAX_HEADER_VALUE = 16 * 1024
SHOWN_HEADER_VALUE = 2048
FORM_TYPE = "application/x-www-form-urlencoded"
CLIENT_ID_HEADERS = ("x-request-id", "x-client-request-id")


@dataclass
class Req:
    """A request as any source sees it: mitmproxy flow, HAR entry, flow file."""

    method: str
    scheme: str
    host: str
    port: int
    path: str  # with the query string
    headers: list[tuple[str, str]]
    body: bytes | None
    ts: float
    http_version: str = "HTTP/1.1"
    client: str | None = None
    client_port: int | None = None
    raw_b64: dict[str, list[str]] | None = None  # values that were not UTF-8, exactly (see above)
    body_error: str | None = None  # why `body` is the wire form (addon/bodies.py)

    @cached_property
    def h(self) -> Headers:
        return Headers.of(self.headers)


@dataclass
class Resp:
    status: int
    headers: list[tuple[str, str]]
    body: bytes | None  # None when streamed through
    ts_start: float
    ts_end: float | None = None
    reason: str = ""
    http_version: str = "HTTP/1.1"
    raw_b64: dict[str, list[str]] | None = None
    body_error: str | None = None

    @cached_property
    def h(self) -> Headers:
        return Headers.of(self.headers)


@dataclass
class Headers:
    """Lowercased multi-map; remembers duplicates so they can be reported."""

    items: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, pairs: list[tuple[str, str]]) -> Headers:
        h = cls()
        for name, value in pairs:
            h.items.setdefault(str(name).lower(), []).append(str(value))
        return h

    def get(self, name: str) -> str | None:
        values = self.items.get(name)
        return values[0] if values else None

    def first_of(self, names: tuple[str, ...]) -> tuple[str, str] | tuple[None, None]:
        for name in names:
            if name in self.items:
                return name, self.items[name][0]
        return None, None


# ---- small helpers ---------------------------------------------------------------------------
def clean(text: str) -> str:
    """Text fit to store: bytes that were not UTF-8 (escaped as surrogates) become U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)


def decode_text(raw: bytes) -> tuple[str, str | None]:
    """Bytes as text (U+FFFD for bytes that are not UTF-8) and, if any were not, the base64 of all."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), base64.b64encode(raw).decode()


def decode_fields(fields) -> tuple[list[tuple[str, str]], dict[str, list[str]] | None]:
    """Header (name, value) byte pairs as text pairs, and `raw_b64` of those that were not UTF-8."""
    pairs: list[tuple[str, str]] = []
    raw: dict[str, list[str]] = {}
    for name_b, value_b in fields:
        name, name_raw = decode_text(name_b)
        value, value_raw = decode_text(value_b)
        if name_raw or value_raw:
            raw.setdefault(name.lower(), []).append(base64.b64encode(value_b).decode())
        pairs.append((name, value))
    return pairs, raw or None


def public_raw(raw: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
    """`raw_b64` without secret headers (their values are never stored, only hashed)."""
    kept = {n: v for n, v in (raw or {}).items() if n.startswith(":") or not R.is_secret_name(n)}
    return kept or None


def safe_headers(h: Headers) -> dict[str, str | list[str]]:
    """Headers fit to store: secrets become hashes, huge values are cut, duplicates become lists."""
    out: dict[str, str | list[str]] = {}
    for name, values in h.items.items():
        shown = [R.redacted(v) if R.is_secret_name(name) else _cut(v) for v in values]
        if name == "www-authenticate":  # an L402 challenge's macaroon is half a credential
            shown = [l402.redact_challenge(v, R.redacted) for v in shown]
        out[name] = shown[0] if len(shown) == 1 else shown
    return out


def _cut(value: str) -> str:
    if len(value) <= SHOWN_HEADER_VALUE:
        return value
    return value[:SHOWN_HEADER_VALUE] + f"…[{len(value) - SHOWN_HEADER_VALUE} more bytes]"


def safe_query(path: str) -> tuple[str, str | None]:
    """Split path and query; values of secret-looking query parameters become hashes."""
    bare, sep, query = path.partition("?")
    if not sep:
        return bare, None
    return bare, R.redact_pairs(query)


def parse_json(body: bytes | None) -> object | None:
    if not body or len(body) > 32 << 20:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def body_record(body: bytes | None, settings: Settings, content_type: str | None, wire: bool = False) -> dict:
    """Size and hash of a body (and in `full` mode the body, redacted); `wire`: as sent, encoded."""
    if body is None:
        return {"size": None, "sha256": None}
    rec: dict = {"size": len(body)}
    if settings.bodies != "none":
        rec["sha256"] = sha256_hex(body)
    if wire:
        rec["wire"] = True
    elif settings.bodies == "full":
        rec.update(_full_body(body, settings.body_max_bytes, content_type))
    return rec


def _body_errors(error: str | None) -> list[str]:
    if error == "body_too_large":
        return ["body_too_large: its Content-Encoding expands past the decode limit; described as sent"]
    return [f"body {error}; described as sent"] if error else []


def _full_body(body: bytes, limit: int, content_type: str | None) -> dict:
    """The body as kept with `bodies: full`, redacted by its kind (addon/redact.py): JSON (also JSON that
    does not parse), a form (`name=value&…`), a multipart form; other text and binary bodies as they are."""
    ctype = (content_type or "").lower()
    if "multipart/form-data" in ctype:
        body = R.redact_multipart(body, content_type)
    form = FORM_TYPE in ctype
    looks_json = not form and ("json" in ctype or body[:64].lstrip()[:1] in (b"{", b"["))
    doc = R.loads(body) if looks_json and len(body) <= 32 << 20 else None
    if doc is not None:
        text = R.dumps(R.redact_json(doc))
    elif form or looks_json:  # kept as text even when not UTF-8, so that it can be redacted
        text = body.decode("utf-8", "replace")
        text = R.redact_pairs(text) if form else R.redact_json_text(text)
    else:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(body[:limit]).decode(), "truncated": len(body) > limit}
    return {"text": text[:limit], "truncated": len(text) > limit}


# ---- classification --------------------------------------------------------------------------
def request_match(
    header_names: set[str], host: str, path: str, settings: Settings, authorization: str | None = None
) -> str | None:
    """Why a request is recorded before it is forwarded: x402 / path / rule, or None.
    `header_names` are lowercased; most traffic stops here, so callers pass what is cheap to get (and the
    `Authorization` value, whose scheme says an L402 payment)."""
    if settings.capture_x402 and not header_names.isdisjoint(PAID_HEADERS):
        return "x402"
    if settings.capture_x402 and not header_names.isdisjoint(crawler.OFFER_HEADERS):
        return "crawler"
    if settings.capture_x402 and l402.is_credential(authorization):
        return "l402"
    if settings.capture_x402 and mpp.is_credential(authorization):
        return "mpp"
    if settings.capture_x402 and mcp.looks_like_mcp(header_names, path):
        return "mcp"  # (only its tools/call is recorded: body_call, once the body is read)
    if settings.capture_x402 and a2a.looks_like_a2a(header_names, path):
        return "a2a"  # (only its message sends are recorded: body_call)
    if ohttp.looks_like_ohttp(path):
        return "ohttp"  # (sealed: only its headers and sizes are known)
    return settings.is_ai_call(host, path)


def response_is_x402(resp: Resp, h: Headers) -> bool:
    """An answer that is part of a payment, whatever its request looked like (x402, pay-per-crawl)."""
    if CHALLENGE_HEADER in h.items or h.first_of(SETTLEMENT_HEADERS)[0] or SESSION_HEADER in h.items:
        return True
    if "crawler-charged" in h.items or (resp.status == 402 and "crawler-price" in h.items):
        return True
    if resp.status == 402 and (
        l402.challenges(h.items.get("www-authenticate", [])) or mpp.challenges(h.items.get("www-authenticate", []))
    ):
        return True
    if "payment-receipt" in h.items:
        return True
    return resp.status == 402 and x402.looks_like_v1_challenge(parse_json(resp.body))


def is_paid(h: Headers) -> bool:
    """A paid exchange: forwarded only once recorded (a sign-in by an earlier payment counts as one)."""
    return bool(
        h.first_of(PAYMENT_HEADERS)[0]
        or SESSION_HEADER in h.items
        or SIGN_IN_HEADER in h.items
        or h.first_of(crawler.OFFER_HEADERS)[0]
        or l402.is_credential(h.get("authorization"))
        or mpp.is_credential(h.get("authorization"))
    )


# ---- payloads --------------------------------------------------------------------------------
def payment(h: Headers) -> tuple[dict | None, list[str]]:
    """The decoded payment of a request (non-secret fields and the header's hash)."""
    found = h.first_of(PAYMENT_HEADERS)
    if found[0] is None:
        return None, []
    name, value = found
    errors = [f"{name} header sent {len(h.items[name])} times; the first was used"] if len(h.items[name]) > 1 else []
    obj, err = x402.decode_b64_json(value)
    pay = x402.parse_payment(obj) if err is None else {"errors": [err]}
    pay = {**pay, "header": name, "header_sha256": sha256_hex(value), "_payload": obj}
    return pay, errors + [f"{name}: {e}" for e in pay.get("errors", [])]


# Payments that travel in JSON-RPC bodies, not headers: a request these match is looked into (body_call).
BODY_PROTOCOLS = {"mcp": "mcp:_meta", "a2a": "a2a:metadata"}  # protocol -> where its payment is (`header`)


def body_call(match: str | None, body: bytes | None, path: str) -> dict | None:
    """The call a request's body makes, for a match whose payment travels in the body: an MCP tool call
    (mcp.call_of) or an A2A message send (a2a.call_of), with its `protocol`; None for any other body."""
    found = mcp.call_of(body) if match == "mcp" else a2a.call_of(body, path) if match == "a2a" else None
    return {**found, "protocol": match} if found else None


def body_payment(call: dict | None) -> tuple[dict | None, list[str]]:
    """The decoded payment a body call carries (the PaymentPayload object itself: its hash stands for the
    header's): MCP's `params._meta["x402/payment"]`, A2A's message metadata `x402.payment.payload`."""
    if not call or call.get("payment") is None:
        return None, []
    obj = call["payment"]
    where = BODY_PROTOCOLS[call["protocol"]]
    pay = x402.parse_payment(obj)
    pay = {
        **pay,
        "header": where,
        "header_sha256": sha256_hex(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)),
        "_payload": obj,
    }
    return pay, [f"{where}: {e}" for e in pay.get("errors", [])]


def l402_payment(authorization: str, challenge: dict | None) -> tuple[dict, list[str]]:
    """An L402 credential as a payment (addon/l402.py): the payment hash and the preimage's hash, with the
    amount and payee of the challenge's invoice for that payment hash (when the 402 was seen)."""
    cred = l402.credential(authorization) or {}
    invoice: dict = next(
        (
            i
            for i in (challenge or {}).get("l402") or []
            if i.get("payment_hash") == cred.get("payment_hash") and cred.get("payment_hash")
        ),
        {},
    )
    pay = {
        "scheme": "l402",
        "kind": cred.get("scheme"),
        "network": l402.NETWORK,
        "nonce": cred.get("payment_hash"),
        "signature_sha256": cred.get("preimage_sha256"),
        "pay_to": invoice.get("payee"),
        "asset": "BTC",
        "amount": str(invoice["amount_msat"]) if invoice.get("amount_msat") is not None else None,
        "decimals": l402.DECIMALS,
        "symbol": "BTC",
        "valid_before": None,
        "header": "authorization",
        "header_sha256": sha256_hex(authorization),
        "errors": cred.get("errors", []),
    }
    return pay, [f"authorization: {e}" for e in pay["errors"]]


def mpp_payment(authorization: str, settings: Settings) -> tuple[dict, list[str]]:
    """An MPP credential as a payment (addon/mpp.py): the echoed challenge's terms, the payer of its `source`
    DID, and the transaction it pays with (its hash; the signed transaction itself is never kept). The payer
    signed that transaction, so its signature is checked on chain, by the settlement."""
    cred = mpp.credential(authorization)
    known = settings.asset(cred.get("network"), cred.get("asset"))
    kind = (
        f"{cred.get('method')}_session_{cred['session_action']}" if cred.get("session_action") else cred.get("method")
    )
    pay = {
        "scheme": mpp.SCHEME,
        "kind": kind,
        "channel_id": cred.get("channel_id"),
        "voucher_amount": cred.get("voucher_amount"),
        "deposit_amount": cred.get("deposit_amount"),
        "network": cred.get("network"),
        "payer": cred.get("payer"),
        "pay_to": cred.get("pay_to"),
        "asset": cred.get("asset"),
        "amount": cred.get("amount"),
        "nonce": cred.get("challenge_id"),
        "valid_before": _epoch(cred.get("expires")),
        "payment_tx": cred.get("payment_tx"),
        "signature_sha256": cred.get("signature_sha256"),
        "decimals": known.decimals if known else None,
        "symbol": known.symbol if known else None,
        "signer": None,
        "signer_error": f"{SIGNED_TX} (MPP {cred.get('payload_type')}): checked on chain by its settlement",
        "header": "authorization",
        "header_sha256": sha256_hex(authorization),
        "errors": cred.get("errors", []),
    }
    return pay, [f"authorization: {e}" for e in pay["errors"]]


def _epoch(iso: str | None) -> int | None:
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()) if iso else None
    except ValueError:
        return None


def completed_payment(pay: dict, settings: Settings, challenge: dict | None) -> dict:
    """Add what the payment header does not say: a v1 asset (from its challenge), known decimals,
    and who signed it (the signature itself is never kept)."""
    raw = pay.pop("_payload", None)
    extra = (pay.get("accepted") or {}).get("extra")
    entry = _challenge_entry(pay, challenge) if not (pay.get("asset") and extra) else None
    if entry:
        pay = {
            **pay,
            "asset": pay.get("asset") or entry.get("asset"),
            "pay_to": pay.get("pay_to") or entry.get("pay_to"),
        }
        extra = extra or entry.get("extra")
    known = settings.asset(pay.get("network"), pay.get("asset"))
    signer: str | None
    why: str | None
    if pay.get("kind") == "erc7710":  # the delegation chain is signed inside the permission context (a hash here)
        signer, why = None, f"{DELEGATION} (ERC-7710 via {pay.get('spender')}): checked on chain by its settlement"
    elif pay.get("kind") in ("svm", "svm_upto"):  # the transaction names its signer, its signature checked (x402.py)
        valid = pay.get("payer_signature_valid")
        signer, why = (
            (pay.get("payer"), None)
            if valid
            else (None, "the payer's signature does not verify" if valid is False else "the payer has not signed")
        )
    else:
        signer, why = eip712.signer(raw, pay.get("network"), pay.get("asset"), extra) if raw else (None, None)
    return {
        **pay,
        "decimals": known.decimals if known else pay.get("decimals"),
        "symbol": known.symbol if known else None,
        "signer": signer,
        "signer_error": why,
    }


def _challenge_entry(pay: dict, challenge: dict | None) -> dict | None:
    """The challenge entry this payment answers (same scheme and network)."""
    for entry in (challenge or {}).get("accepts") or []:
        if entry.get("scheme") == pay.get("scheme") and entry.get("network") == pay.get("network"):
            return entry
    return None


def request_data(
    req: Req,
    settings: Settings,
    *,
    logical_id: str,
    match: str,
    source: str,
    challenge: dict | None = None,
    decoded: tuple | None = None,
    call: dict | None = None,
) -> dict:
    """The request payload; `decoded` is `payment(req.h)` (or `body_payment(call)`) when the caller already
    has it; `call` the MCP tool call or A2A message send the body makes (body_call)."""
    h = req.h
    path, query = safe_query(req.path)
    doc = parse_json(req.body) if req.body_error is None else None
    doc = doc if isinstance(doc, dict) else {}
    pay, errors = decoded if decoded is not None else payment(h) if call is None else body_payment(call)
    if pay:
        pay = completed_payment(pay, settings, challenge)
    elif h.first_of(crawler.OFFER_HEADERS)[0]:
        pay, errors = crawler.payment(h.get)
    elif l402.is_credential(auth := h.get("authorization")):
        pay, errors = l402_payment(auth, challenge)
    elif mpp.is_credential(auth := h.get("authorization")):
        pay, errors = mpp_payment(auth, settings)
    sign_in = siwx.decode(h.get(SIGN_IN_HEADER))
    errors = errors + _oversized(h) + _body_errors(req.body_error) + (sign_in or {}).get("errors", [])
    return {
        "logical_id": logical_id,
        "source": source,
        "match": match,
        "client": req.client,
        "client_port": req.client_port,
        "app": h.get("user-agent"),
        "method": req.method,
        "scheme": req.scheme,
        "host": req.host,
        "port": req.port,
        "path": path,
        "query": query,
        "http_version": req.http_version,
        "headers": safe_headers(h),
        "raw_b64": public_raw(req.raw_b64),
        "body": body_record(req.body, settings, h.get("content-type"), wire=req.body_error is not None),
        "model": doc.get("model") if isinstance(doc.get("model"), str) else None,
        "stream": doc.get("stream") is True,
        "ids": {
            "client_request_id": _first(h, CLIENT_ID_HEADERS),
            "idempotency_key": h.get("idempotency-key"),
            "traceparent": h.get("traceparent"),
        },
        "payment": pay,
        "mcp": {k: call[k] for k in ("id", "method", "tool")} if call and call["protocol"] == "mcp" else None,
        "a2a": {k: call[k] for k in ("id", "method", "task_id", "context_id", "status")}
        if call and call["protocol"] == "a2a"
        else None,
        "siwx": sign_in,
        "ohttp": ohttp.request_fields(h.get, req.path),
        "upto_session": h.get(SESSION_HEADER),
        "settlement_type": h.get("x-settlement-type"),
        "tee_request_hashes": og.request_hashes(doc) if _is_og(h) else None,
        "secrets_in_clear": secrets_in_clear(req) if req.scheme == "http" else None,
        "errors": errors,
    }


def secrets_in_clear(req: Req) -> list[str] | None:
    """Names (never values) of the secret headers and query parameters a plain-HTTP request carried."""
    names = sorted({n for n in req.h.items if R.is_secret_name(n)})
    names += [f"?{name}" for name in R.secret_pair_names(req.path.partition("?")[2])]
    return names or None


def _is_og(h: Headers) -> bool:
    """OpenGradient SDK requests name their settlement type (or run under a session)."""
    return "x-settlement-type" in h.items or SESSION_HEADER in h.items


def _first(h: Headers, names: tuple[str, ...]) -> str | None:
    return h.first_of(names)[1]


def _oversized(h: Headers) -> list[str]:
    return [
        f"header {n} is {len(v)} bytes; its value was cut"
        for n, vs in h.items.items()
        for v in vs
        if len(v) > MAX_HEADER_VALUE
    ]


def challenge(resp: Resp, h: Headers) -> tuple[dict | None, list[str]]:
    value = h.get(CHALLENGE_HEADER)
    if value is not None:
        obj, err = x402.decode_b64_json(value)
        if err:
            return {"source": "header", "accepts": [], "errors": [err]}, [f"payment-required: {err}"]
        ch = {**x402.parse_challenge(obj), "source": "header"}
        return ch, [f"payment-required: {e}" for e in ch.get("errors", [])]
    if resp.status == 402:
        doc = parse_json(resp.body)
        if x402.looks_like_v1_challenge(doc):
            ch = {**x402.parse_challenge(doc), "source": "body"}
            return ch, [f"402 body: {e}" for e in ch.get("errors", [])]
    return None, []


def settlement(h: Headers) -> tuple[dict | None, list[str]]:
    found = h.first_of(SETTLEMENT_HEADERS)
    if found[0] is None:
        return None, []
    name, value = found
    obj, err = x402.decode_b64_json(value)
    if err:
        return {"header": name, "errors": [err]}, [f"{name}: {err}"]
    st = {**x402.parse_settlement(obj), "header": name}
    return st, [f"{name}: {e}" for e in st.get("errors", [])]


def og_fields(h: Headers) -> dict | None:
    og = {
        "settlement_tx_hash": h.get("x-settlement-tx-hash"),
        "walrus_blob_id": h.get("x-settlement-walrus-blob-id"),
        "processing_hash": h.get("x-processing-hash"),
        "upto_session": h.get(SESSION_HEADER),
    }
    og = {k: v for k, v in og.items() if v}
    return og or None


def response_data(
    resp: Resp,
    req_ts: float,
    settings: Settings,
    *,
    stream: bool = False,
    call: tuple[str | None, str | None] = (None, None),
    protocol: str | None = None,
) -> dict:
    """The response payload; for a stream, only what the headers say (the body follows later).
    `call`: the request's host and model, for the price of what the answer used (addon/pricing.py);
    `protocol`: the request's, when its payment travels in bodies (BODY_PROTOCOLS)."""
    h = resp.h
    doc = None if stream or resp.body_error else parse_json(resp.body)
    ch, ch_err = challenge(resp, h)
    st, st_err = settlement(h)
    told = body_answer(protocol, doc) if doc is not None and ch is None and st is None else None
    if told:
        (ch, ch_err), (st, st_err) = told["x402"]
    elif ch is None and st is None:  # pay-per-crawl's price and charge (addon/crawler.py), L402's invoice, MPP's
        ch = crawler.challenge(resp.status, h.get) or l402_challenge(resp.status, h) or mpp_challenge(resp.status, h)
        st = crawler.settlement(h.get) or mpp.receipt(h.get("payment-receipt"))
        st_err, ch_err = (st or {}).get("errors", []), (ch or {}).get("errors", [])
    end = resp.ts_start if stream else (resp.ts_end or resp.ts_start)
    found = answer_fields(doc, h)
    body = (
        {"size": None, "sha256": None}
        if stream
        else body_record(resp.body, settings, h.get("content-type"), wire=resp.body_error is not None)
    )
    return {
        "status": resp.status,
        "reason": resp.reason,
        "http_version": resp.http_version,
        "headers": safe_headers(h),
        "raw_b64": public_raw(resp.raw_b64),
        "content_type": h.get("content-type"),
        "body": body,
        "stream": stream,
        "latency_ms": round((end - req_ts) * 1000, 3) if end and req_ts else None,
        "provider_request_id": h.get("x-request-id") or h.get("request-id"),
        "response_id": found["id"],
        "model": found["model"],
        "usage": found["usage"],
        "cost": pricing.cost(found["model"] or call[1], found["usage"], call[0], req_ts),
        "challenge": ch,
        "settlement": st,
        **_told(told),
        "tee": found["tee"],
        "og": og_fields(h),
        "tee_output_seen": found["tee_output_seen"],
        "errors": ch_err + st_err + _oversized(h) + _bad_json(resp, h, doc, stream) + _body_errors(resp.body_error),
    }


def l402_challenge(status: int, h: Headers) -> dict | None:
    """A 402's L402/LSAT challenges, as offers (one per invoice: Aperture repeats it under both names)."""
    found = l402.challenges(h.items.get("www-authenticate", [])) if status == 402 else []
    invoices = list({c.get("payment_hash") or c["macaroon"]: c for c in found}.values())
    if not invoices:
        return None
    return {
        "source": "www-authenticate",
        "x402_version": None,
        "error": None,
        "errors": [f"www-authenticate: {e}" for c in invoices for e in c["errors"]],
        "accepts": [
            {
                "scheme": "l402",
                "network": l402.NETWORK,
                "asset": "BTC",
                "pay_to": c.get("payee"),
                "amount": str(c["amount_msat"]) if c.get("amount_msat") is not None else None,
                "max_timeout_seconds": c.get("expiry"),
                "resource": None,
            }
            for c in invoices
        ],
        "l402": [{k: c.get(k) for k in ("payment_hash", "amount_msat", "payee")} for c in invoices],
    }


def mpp_challenge(status: int, h: Headers) -> dict | None:
    """A 402's MPP `Payment` challenges, as offers."""
    found = mpp.challenges(h.items.get("www-authenticate", [])) if status == 402 else []
    if not found:
        return None
    return {
        "source": "www-authenticate",
        "x402_version": None,
        "error": None,
        "errors": [],
        "accepts": [mpp.offer(c) for c in found],
    }


def body_answer(protocol: str | None, doc: object) -> dict | None:
    """What an MCP or A2A answer says (mcp.answer_of, a2a.answer_of): {protocol, info (stored as the
    response's `mcp`/`a2a`), x402: ((challenge, errors), (settlement, errors)), decoded as headers' are}."""
    told = mcp.answer_of(doc) if protocol == "mcp" else a2a.answer_of(doc) if protocol == "a2a" else None
    if not told:
        return None
    where = BODY_PROTOCOLS[cast(str, protocol)]  # (`told` is None unless protocol is "mcp" or "a2a")
    ch = {**x402.parse_challenge(told["challenge"]), "source": protocol} if told.get("challenge") is not None else None
    st = {**x402.parse_settlement(told["settlement"]), "header": where} if told.get("settlement") is not None else None
    info = {k: v for k, v in told.items() if k not in ("challenge", "settlement")}
    return {
        "protocol": protocol,
        "info": info,
        "x402": (
            (ch, [f"{protocol} challenge: {e}" for e in (ch or {}).get("errors", [])]),
            (st, [f"{where} settlement: {e}" for e in (st or {}).get("errors", [])]),
        ),
    }


def _told(told: dict | None) -> dict:
    return {told["protocol"]: told["info"]} if told else {}


def answer_fields(doc: object, h: Headers) -> dict:
    """What a (non-event-stream) answer's JSON body says: id, model, usage and TEE proof fields."""
    doc = doc if isinstance(doc, dict) else {}
    tee = (F.tee_from_body(doc) if doc else None) or _tee_headers(h)
    rid, model = F.answer_ids(doc)
    return {
        "id": rid,
        "model": model,
        "usage": F.usage_from_body(doc) if doc else None,
        "tee": tee,
        "tee_output_seen": og.output_hash(doc) if tee else None,
    }


def _tee_headers(h: Headers) -> dict | None:
    if not any(name.startswith("x-tee-") for name in h.items):
        return None
    return F.tee_from_headers({k: v[0] for k, v in h.items.items()})


def _bad_json(resp: Resp, h: Headers, doc, stream: bool) -> list[str]:
    if stream or resp.body_error or not resp.body or doc is not None or "json" not in (h.get("content-type") or ""):
        return []
    return ["response body is not valid JSON"]


def streamed_summary(tap, h: Headers) -> dict:
    """What a streamed answer revealed: an event stream's parser summary (addon/sse.py), or the
    fields of a JSON body parsed from the bytes the tap kept (if they are the whole body)."""
    if tap.parser is not None:
        tap.parser.close()
        return {**tap.parser.summary(), "sha256": tap.hash.hexdigest()}
    out = {"bytes": tap.size, "sha256": tap.hash.hexdigest(), "events": None, "done": True, "errors": []}
    if not tap.complete:
        out["errors"] = [f"body of {tap.size} bytes streamed through; fields are read from bodies up to {tap.keep}"]
        return out
    body, error = bodies.decode(bytes(tap.head), h.get("content-encoding"))
    doc = None if error else parse_json(body)
    found = answer_fields(doc, h)
    return {
        **out,
        "id": found["id"],
        "model": found["model"],
        "usage": found["usage"],
        "tee": found["tee"],
        "output_text_keccak": found["tee_output_seen"],
        "errors": _body_errors(error),
        "jsonrpc": doc,
    }


def stream_end_data(
    summary: dict,
    req_ts: float,
    end_ts: float,
    call: tuple[str | None, str | None] = (None, None),
    protocol: str | None = None,
) -> dict:
    """What a streamed answer revealed as it passed through (streamed_summary); `call` and `protocol` as in
    response_data."""
    told = body_answer(protocol, summary.get("jsonrpc")) if summary.get("jsonrpc") is not None else None
    (ch, ch_err), (st, st_err) = told["x402"] if told else ((None, []), (None, []))
    settle = summary.get("settlement") or {}
    og = {
        "settlement_tx_hash": settle.get("data_settlement_transaction_hash"),
        "walrus_blob_id": settle.get("data_settlement_blob_id"),
        "settlement_job_id": settle.get("settlement_job_id"),
        "settlement_error": settle.get("data_settlement_error"),
    }
    og = {k: v for k, v in og.items() if v}
    keys = (
        "bytes",
        "sha256",
        "events",
        "done",
        "id",
        "model",
        "usage",
        "tee",
        "output_text_sha256",
        "output_text_keccak",
        "output_chars",
        "errors",
    )
    return {
        **{k: summary.get(k) for k in keys},
        "og": og or None,
        "challenge": ch,
        "settlement": st,
        **_told(told),
        "errors": (summary.get("errors") or []) + ch_err + st_err,
        "cost": pricing.cost(summary.get("model") or call[1], summary.get("usage"), call[0], req_ts),
        "latency_ms": round((end_ts - req_ts) * 1000, 3),
    }


def error_data(kind: str, message: str, phase: str) -> dict:
    return {"kind": kind, "message": message[:1000], "phase": phase}


def classify_error(message: str) -> str:
    """A stable kind for mitmproxy's error messages."""
    text = message.lower()
    for needle, kind in (
        ("client disconnected", "client_disconnected"),
        ("killed", "connection_killed"),
        ("timed out", "upstream_timeout"),
        ("timeout", "upstream_timeout"),
        ("refused", "upstream_refused"),
        ("connect call failed", "upstream_refused"),
        ("name or service not known", "upstream_unresolved"),
        ("certificate", "tls_failed"),
        ("tls", "tls_failed"),
        ("ssl", "tls_failed"),
        ("reset", "connection_reset"),
        ("closed", "connection_closed"),
    ):
        if needle in text:
            return kind
    return "error"
