"""A BOLT11 decoder on the standard library and ``coincurve`` (already a runtime dependency of the project):
bech32 checksum, the human-readable part (currency, amount), the timestamp, the tagged fields a receipt needs
(``p`` payment hash, ``s`` payment secret, ``d`` description, ``h`` description hash, ``n`` payee, ``x`` expiry,
``c`` min_final_cltv_expiry, ``9`` features) and the signature: checked against ``n`` when present, else the
payee is recovered from it. Unknown fields, and ``p``/``h``/``s``/``n`` of the wrong length, are skipped, as
BOLT #11 asks. Route hints (``r``), fallback addresses (``f``) and metadata (``m``) are skipped too.

The recorder decodes L402 invoices with it (addon/l402.py); tests/testbed/test_l402_bed.py checks it against
the ``bolt11`` package, which the test bed signs its invoices with.
"""

from __future__ import annotations

import hashlib
import re

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_CURRENCIES = ("bcrt", "tbs", "bc", "tb", "sb")  # longest first
_MSAT_PER_BTC = 100_000_000_000
_MULTIPLIER = {"m": 10**3, "u": 10**6, "n": 10**9, "p": 10**12}  # divisors of one bitcoin
_SIGNATURE_GROUPS = 104  # 520 bits: 64-byte compact signature + recovery id


class InvoiceError(ValueError):
    pass


def _polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= _GEN[i] if (top >> i) & 1 else 0
    return chk


def _bech32(invoice: str) -> tuple[str, list[int]]:
    if invoice.lower() != invoice and invoice.upper() != invoice:
        raise InvoiceError("mixed case")
    s = invoice.lower()
    if s.startswith("lightning:"):
        s = s[len("lightning:") :]
    pos = s.rfind("1")
    if pos < 1 or pos + 7 > len(s):
        raise InvoiceError("no bech32 separator")
    hrp, data = s[:pos], s[pos + 1 :]
    if any(c not in CHARSET for c in data):
        raise InvoiceError("invalid bech32 character")
    values = [CHARSET.index(c) for c in data]
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    if _polymod(expanded + values) != 1:  # bech32 (not bech32m)
        raise InvoiceError("bad bech32 checksum")
    return hrp, values[:-6]


def _to_int(groups: list[int]) -> int:
    n = 0
    for g in groups:
        n = n << 5 | g
    return n


def _to_bytes(groups: list[int], trim: bool = True) -> bytes:
    """5-bit groups → bytes; ``trim`` drops the last partial byte (tag data), else pads it with zeros."""
    bits = len(groups) * 5
    n = _to_int(groups)
    if trim:
        return (n >> (bits % 8)).to_bytes(bits // 8, "big")
    pad = -bits % 8
    return (n << pad).to_bytes((bits + pad) // 8, "big")


def _amount_msat(amount: str) -> int | None:
    if not amount:
        return None
    m = re.fullmatch(r"([1-9]\d*)([munp]?)", amount)
    if not m:
        raise InvoiceError(f"invalid amount {amount!r}")
    value, mult = int(m.group(1)), m.group(2)
    if not mult:
        return value * _MSAT_PER_BTC
    if mult == "p" and value % 10:
        raise InvoiceError("sub-millisatoshi amount")
    return value * _MSAT_PER_BTC // _MULTIPLIER[mult]


def decode(invoice: str) -> dict:
    """The fields of a BOLT11 invoice, its signature checked; :class:`InvoiceError` if it is not valid."""
    from coincurve import PublicKey
    from coincurve.ecdsa import cdata_to_der, deserialize_compact

    hrp, data = _bech32(invoice.strip())
    if not hrp.startswith("ln"):
        raise InvoiceError("not a lightning invoice")
    currency = next((c for c in _CURRENCIES if hrp[2:].startswith(c)), None)
    if currency is None:
        raise InvoiceError(f"unknown currency in {hrp!r}")
    if len(data) < 7 + _SIGNATURE_GROUPS:
        raise InvoiceError("too short")
    body, sig = data[:-_SIGNATURE_GROUPS], _to_bytes(data[-_SIGNATURE_GROUPS:])
    out: dict = {
        "currency": currency,
        "amount_msat": _amount_msat(hrp[2 + len(currency) :]),
        "timestamp": _to_int(body[:7]),
        "expiry": 3600,
        "min_final_cltv_expiry": 18,
        "payment_hash": None,
        "payment_secret": None,
        "description": None,
        "description_hash": None,
        "features": None,
        "payee": None,
        "signature": sig[:64].hex(),
        "recovery_flag": sig[64],
    }
    i = 7
    while i < len(body):
        if i + 3 > len(body):
            raise InvoiceError("truncated tagged field")
        tag, length = CHARSET[body[i]], body[i + 1] * 32 + body[i + 2]
        field = body[i + 3 : i + 3 + length]
        if len(field) != length:
            raise InvoiceError("truncated tagged field")
        i += 3 + length
        first = {"p": "payment_hash", "s": "payment_secret", "h": "description_hash"}.get(tag)
        if first and length == 52 and out[first] is None:
            out[first] = _to_bytes(field).hex()
        elif tag == "n" and length == 53 and out["payee"] is None:
            out["payee"] = _to_bytes(field).hex()
        elif tag == "d" and out["description"] is None:
            out["description"] = _to_bytes(field).decode("utf-8")
        elif tag in ("x", "c"):
            out["expiry" if tag == "x" else "min_final_cltv_expiry"] = _to_int(field)
        elif tag == "9":
            out["features"] = _to_int(field)
    if out["payment_hash"] is None:
        raise InvoiceError("no payment hash")
    message = hrp.encode("utf-8") + _to_bytes(body, trim=False)
    if out["payee"]:
        try:
            ok = PublicKey(bytes.fromhex(out["payee"])).verify(
                cdata_to_der(deserialize_compact(sig[:64])), message, hasher=lambda m: hashlib.sha256(m).digest()
            )
        except Exception as e:
            raise InvoiceError(f"bad signature: {e}") from e
        if not ok:
            raise InvoiceError("signature does not match the payee")
    else:
        try:
            key = PublicKey.from_signature_and_message(sig, message, hasher=lambda m: hashlib.sha256(m).digest())
        except Exception as e:
            raise InvoiceError(f"signature not recoverable: {e}") from e
        out["payee"] = key.format(compressed=True).hex()
    return out
