"""L402 (Lightning Labs' HTTP 402, formerly LSAT): a Lightning invoice to pay, and a macaroon that the
payment's preimage unlocks.

- The 402 carries `WWW-Authenticate: L402 macaroon="<base64>", invoice="<BOLT11>"` (Aperture sends an `LSAT`
  one first, with the same values).
- The paid retry carries `Authorization: L402 <macaroon>[,<macaroon>…]:<preimage hex>`.
- The proof: `sha256(preimage)` is the invoice's payment hash, which the macaroon's identifier also names
  (Aperture's identifier: uint16 version ‖ payment hash ‖ token id, in the libmacaroons V2 binary format).
The macaroon with the preimage is a bearer credential until its caveats expire: neither is kept. What is
kept: the payment hash (the `nonce` of the payment, and the receipt's `payment_hash`), the preimage's
SHA-256 (`signature_sha256`: the payment hash again when the proof is good), and the invoice's amount and
payee, from the challenge whose invoice has the same payment hash. Lightning pays off chain: no one else
can see the payment; the preimage is its proof. Pure; none raises.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any, TypeGuard

from . import bolt11

SCHEMES = ("l402", "lsat")
NETWORK = "lightning"
DECIMALS = 11  # millisatoshis in a bitcoin: amounts are kept in msat
_CHALLENGE = re.compile(r'\b(L402|LSAT)\s+macaroon="([^"]+)",\s*invoice="([^"]+)"', re.I)
_CREDENTIAL = re.compile(r"^\s*(L402|LSAT)\s+([A-Za-z0-9+/=_,-]+):([0-9a-fA-F]{64})\s*$", re.I)


def is_credential(authorization: str | None) -> TypeGuard[str]:
    return bool(authorization and authorization.lstrip()[:5].lower() in ("l402 ", "lsat "))


def challenges(values: list[str]) -> list[dict]:
    """Every L402/LSAT challenge in `WWW-Authenticate` values, its invoice decoded: [{scheme, macaroon, invoice,
    payment_hash, amount_msat, payee, expiry, errors}]."""
    out = []
    for value in values:
        for m in _CHALLENGE.finditer(value):
            found: dict[str, Any] = {"scheme": m.group(1).lower(), "macaroon": m.group(2), "errors": []}
            try:
                inv = bolt11.decode(m.group(3))
                found.update(
                    payment_hash=inv["payment_hash"],
                    amount_msat=inv["amount_msat"],
                    payee=inv["payee"],
                    expiry=inv["expiry"],
                    currency=inv["currency"],
                )
            except Exception as exc:  # (a bad invoice is a note: bolt11.InvoiceError, or worse)
                found["errors"].append(f"invoice: {exc}")
            out.append(found)
    return out


def credential(authorization: str | None) -> dict | None:
    """What an `Authorization: L402 …` value proves, without its secrets: {scheme, payment_hash (the first
    macaroon's identifier's), preimage_sha256, errors}; None for any other value."""
    if not is_credential(authorization):
        return None
    m = _CREDENTIAL.match(authorization or "")
    if not m:
        return {
            "scheme": authorization.lstrip()[:4].lower(),
            "payment_hash": None,
            "preimage_sha256": None,
            "errors": ["Authorization: not `L402 <macaroon>:<64 hex preimage>`"],
        }
    first = m.group(2).split(",")[0]
    payment_hash = macaroon_payment_hash(first)
    return {
        "scheme": m.group(1).lower(),
        "payment_hash": payment_hash,
        "preimage_sha256": hashlib.sha256(bytes.fromhex(m.group(3))).hexdigest(),
        "errors": [] if payment_hash else ["the macaroon's identifier names no payment hash"],
    }


def macaroon_payment_hash(b64: str) -> str | None:
    """The payment hash in an Aperture macaroon's identifier (V2 binary: version 2, then fields of a varint
    type and a varint length; field 2 is the identifier), or None."""
    try:
        raw = base64.b64decode(b64 + "=" * (-len(b64) % 4), altchars=b"-_" if "-" in b64 or "_" in b64 else None)
    except ValueError:
        return None
    if not raw or raw[0] != 2:
        return None
    i = 1
    while i < len(raw):
        kind, i = _varint(raw, i)
        if kind == 0:  # end of the header section: no identifier
            return None
        length, i = _varint(raw, i)
        data, i = raw[i : i + length], i + length
        if kind == 2:
            return data[2:34].hex() if len(data) >= 34 and data[:2] == b"\0\0" else None
    return None


def _varint(raw: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while i < len(raw):
        byte = raw[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7
    return -1, i


def redact_challenge(value: str, tag) -> str:
    """A `WWW-Authenticate` value with each L402/LSAT macaroon replaced by `tag(macaroon)` (half a credential)."""
    return _CHALLENGE.sub(lambda m: f'{m.group(1)} macaroon="{tag(m.group(2))}", invoice="{m.group(3)}"', value)
