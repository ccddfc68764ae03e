"""Builders for x402 wire values used by the tests.

Every header value on the x402 wire is standard base64 (with padding) of compact
UTF-8 JSON with camelCase keys and no nulls (see PROTOCOL.md section 1).  The
builders here produce plain dicts; wrap them with :func:`b64json` to get the
header value.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from typing import Any

DEFAULT_EXTRA = {"name": "USD Coin", "version": "2"}
DEFAULT_RESOURCE = "https://upstream.test/v1/chat/completions"
V1_ERROR = "X-PAYMENT header is required"


def _drop_nulls(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_nulls(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_drop_nulls(v) for v in obj]
    return obj


def b64json(obj: Any) -> str:
    """Standard base64 (padded) of compact UTF-8 JSON; None values are dropped."""
    raw = json.dumps(_drop_nulls(obj), separators=(",", ":"), ensure_ascii=False)
    return base64.b64encode(raw.encode("utf-8")).decode("ascii")


def unb64json(s: str | bytes) -> Any:
    """Inverse of :func:`b64json`.

    Tolerates surrounding whitespace, missing padding and the URL-safe alphabet.
    Raises ValueError when the value is not base64 of UTF-8 JSON.
    """
    if isinstance(s, bytes):
        s = s.decode("ascii", errors="strict")
    s = "".join(s.split())
    if not s:
        raise ValueError("empty value")
    s += "=" * (-len(s) % 4)
    try:
        if "-" in s or "_" in s:
            raw = base64.urlsafe_b64decode(s)
        else:
            raw = base64.b64decode(s, validate=True)
        return json.loads(raw.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not base64 JSON: {exc}") from exc


# --------------------------------------------------------------------------
# challenges (server -> client)


def challenge_v2(
    pay_to: str,
    asset: str,
    amount: int,
    network: str = "eip155:8453",
    scheme: str = "exact",
    resource: str = DEFAULT_RESOURCE,
    extra: dict | None = None,
    max_timeout_seconds: int = 60,
) -> dict:
    """x402 v2 PaymentRequired (goes, base64'd, in the PAYMENT-REQUIRED header)."""
    return {
        "x402Version": 2,
        "resource": {"url": resource},
        "accepts": [
            {
                "scheme": scheme,
                "network": network,
                "asset": asset,
                "amount": str(amount),
                "payTo": pay_to,
                "maxTimeoutSeconds": max_timeout_seconds,
                "extra": dict(DEFAULT_EXTRA if extra is None else extra),
            }
        ],
    }


def challenge_v1(
    pay_to: str,
    asset: str,
    amount: int,
    network: str = "base",
    scheme: str = "exact",
    resource: str = DEFAULT_RESOURCE,
    extra: dict | None = None,
    description: str = "Chat completion",
    mime_type: str = "application/json",
    max_timeout_seconds: int = 60,
) -> dict:
    """x402 v1 402 body (JSON, not base64)."""
    return {
        "x402Version": 1,
        "error": V1_ERROR,
        "accepts": [
            {
                "scheme": scheme,
                "network": network,
                "maxAmountRequired": str(amount),
                "resource": resource,
                "description": description,
                "mimeType": mime_type,
                "payTo": pay_to,
                "maxTimeoutSeconds": max_timeout_seconds,
                "asset": asset,
                "extra": dict(DEFAULT_EXTRA if extra is None else extra),
            }
        ],
    }


# --------------------------------------------------------------------------
# payments (client -> server)


def _eip3009_payload(
    to: str, payer: str, value: int, nonce_hex: str, valid_after: int, valid_before: int, signature: str
) -> dict:
    return {
        "signature": signature,
        "authorization": {
            "from": payer,
            "to": to,
            "value": str(value),
            "validAfter": str(valid_after),
            "validBefore": str(valid_before),
            "nonce": nonce_hex,
        },
    }


def _payment_identifier_ext(payment_identifier: str | None) -> dict | None:
    if payment_identifier is None:
        return None
    return {"payment-identifier": {"info": {"id": payment_identifier}}}


def payment_v2_eip3009(
    accepted: dict,
    payer: str,
    value: int,
    nonce_hex: str,
    valid_after: int,
    valid_before: int,
    signature: str,
    payment_identifier: str | None = None,
    resource: str | None = None,
) -> dict:
    """x402 v2 PaymentPayload, exact scheme / EIP-3009 (PAYMENT-SIGNATURE header).

    ``accepted`` is the chosen entry of the challenge's ``accepts``; the
    authorization's ``to`` is its ``payTo``.
    """
    out: dict[str, Any] = {
        "x402Version": 2,
        "accepted": dict(accepted),
        "payload": _eip3009_payload(
            accepted["payTo"], payer, value, nonce_hex, valid_after, valid_before, signature
        ),
    }
    if resource is not None:
        out["resource"] = {"url": resource}
    ext = _payment_identifier_ext(payment_identifier)
    if ext is not None:
        out["extensions"] = ext
    return out


def payment_v1_eip3009(
    accepted: dict,
    payer: str,
    value: int,
    nonce_hex: str,
    valid_after: int,
    valid_before: int,
    signature: str,
) -> dict:
    """x402 v1 payment (X-PAYMENT header), exact / EIP-3009.

    ``accepted`` is an entry of a v1 challenge's ``accepts`` (``payTo`` is the
    recipient; ``scheme``/``network`` default to "exact"/"base").
    """
    return {
        "x402Version": 1,
        "scheme": accepted.get("scheme", "exact"),
        "network": accepted.get("network", "base"),
        "payload": _eip3009_payload(
            accepted["payTo"], payer, value, nonce_hex, valid_after, valid_before, signature
        ),
    }


def payment_v2_permit2(
    accepted: dict,
    payer: str,
    amount: int,
    nonce: int,
    deadline: int,
    valid_after: int,
    signature: str,
    spender: str,
    facilitator: str | None = None,
    payment_identifier: str | None = None,
    resource: str | None = None,
) -> dict:
    """x402 v2 PaymentPayload with a Permit2 authorization (exact or upto).

    ``permitted.token`` is ``accepted["asset"]``, ``witness.to`` is
    ``accepted["payTo"]``; ``witness.facilitator`` only when given (upto).
    """
    witness: dict[str, Any] = {"to": accepted["payTo"]}
    if facilitator is not None:
        witness["facilitator"] = facilitator
    witness["validAfter"] = str(valid_after)
    out: dict[str, Any] = {
        "x402Version": 2,
        "accepted": dict(accepted),
        "payload": {
            "signature": signature,
            "permit2Authorization": {
                "from": payer,
                "permitted": {"token": accepted["asset"], "amount": str(amount)},
                "spender": spender,
                "nonce": str(int(nonce)),
                "deadline": str(deadline),
                "witness": witness,
            },
        },
    }
    if resource is not None:
        out["resource"] = {"url": resource}
    ext = _payment_identifier_ext(payment_identifier)
    if ext is not None:
        out["extensions"] = ext
    return out


# --------------------------------------------------------------------------
# settlement (server -> client)


def settlement(
    tx: str,
    payer: str,
    network: str,
    success: bool = True,
    amount: str | None = None,
    error_reason: str | None = None,
) -> dict:
    """SettleResponse (PAYMENT-RESPONSE / X-PAYMENT-RESPONSE header)."""
    out: dict[str, Any] = {"success": success, "transaction": tx, "network": network, "payer": payer}
    if error_reason is not None:
        out["errorReason"] = error_reason
    if amount is not None:
        out["amount"] = str(amount)
    return out


def seller_receipt(key: str, network: str, resource_url: str, payer: str, transaction: str = "",
                   issued_at: int = 1703123456) -> dict:
    """A seller's signed receipt (x402 `offer-receipt` extension, EIP-712 with the spec's types), signed
    with eth_account by `key`, as `extensions` of a SettleResponse."""
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    payload = {"network": network, "resourceUrl": resource_url, "payer": payer, "issuedAt": issued_at,
               "transaction": transaction}
    typed = {"types": {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                                        {"name": "chainId", "type": "uint256"}],
                       "Receipt": [{"name": "network", "type": "string"}, {"name": "resourceUrl", "type": "string"},
                                   {"name": "payer", "type": "string"}, {"name": "issuedAt", "type": "uint256"},
                                   {"name": "transaction", "type": "string"}]},
             "primaryType": "Receipt", "domain": {"name": "x402 receipt", "version": "1",
                                                  "chainId": int(network.split(":")[1])}, "message": payload}
    signature = Account.from_key(key).sign_message(encode_typed_data(full_message=typed)).signature.hex()
    return {"offer-receipt": {"info": {"version": 1, "receipt": {
        "format": "eip712", "payload": payload, "signature": "0x" + signature.removeprefix("0x")}}}}


# --------------------------------------------------------------------------
# random values


def random_tx_hash() -> str:
    return "0x" + secrets.token_hex(32)


def random_address() -> str:
    """Lower-case 20-byte address (valid without an EIP-55 checksum)."""
    return "0x" + secrets.token_hex(20)


def random_nonce_hex() -> str:
    return "0x" + secrets.token_hex(32)


def random_signature() -> str:
    """65-byte r||s||v signature: 0x + 130 hex digits."""
    return "0x" + secrets.token_hex(65)


def signed_eip3009(key, payer, token, chain=8453, value=10000, extra=None, pay_to="0x" + "2" * 40,
                   valid_before=2**31, offered=None, nonce="0x" + "ab" * 32):
    """A v2 exact/EIP-3009 payment really signed with `key` (claiming to come from `payer`) for `value`.
    `accepted.amount` (the offer the payment says it answers) is `offered`, by default the signed value: a
    different one is what an overcharging (or underpaying) client sends."""
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    extra = extra or {"name": "USD Coin", "version": "2"}
    auth = {"from": payer, "to": pay_to, "value": value, "validAfter": 0, "validBefore": valid_before,
            "nonce": nonce}
    typed = {"types": {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                                        {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}],
                       "TransferWithAuthorization": [{"name": n, "type": t} for n, t in (
                           ("from", "address"), ("to", "address"), ("value", "uint256"), ("validAfter", "uint256"),
                           ("validBefore", "uint256"), ("nonce", "bytes32"))]},
             "primaryType": "TransferWithAuthorization",
             "domain": {**extra, "chainId": chain, "verifyingContract": token}, "message": auth}
    sig = Account.sign_message(encode_typed_data(full_message=typed), key).signature.hex()
    accepted = {"scheme": "exact", "network": f"eip155:{chain}", "asset": token,
                "amount": str(value if offered is None else offered),
                "payTo": auth["to"], "extra": extra}
    return {"x402Version": 2, "accepted": accepted,
            "payload": {"signature": "0x" + sig.removeprefix("0x"),
                        "authorization": {**auth, "value": str(value), "validAfter": "0", "validBefore": str(valid_before)}}}
