"""MPP (the Machine Payments Protocol: the `Payment` HTTP authentication scheme, draft-ryan-httpauth-payment).

- The 402 carries one challenge per offer: `WWW-Authenticate: Payment id="…", realm="…", method="tempo",
  intent="charge", request="<base64url of JSON {amount, currency, recipient, methodDetails: {chainId}, …}>",
  expires="…"`.
- The paid retry carries `Authorization: Payment <base64url of JSON {challenge: <the challenge echoed>,
  source: "did:pkh:eip155:<chain>:<address>", payload: {type: transaction|hash|proof, signature|hash}}>`.
  The whole value is a bearer credential, and a `transaction` payload is a signed transaction anyone could
  broadcast until it expires: it is kept only as hashes (its keccak is the transaction's hash).
- The answer carries `Payment-Receipt: <base64url of JSON {status, method, timestamp, reference}>`: for the
  `tempo` method the reference is the transaction on the Tempo chain (eip155:4217, a TIP-20
  `transferWithMemo`), which the EVM verifier checks like any token transfer; other methods (stripe, card,
  lightning) settle off chain, and their reference is the provider's.
- A `session` intent (mppx) pays from a payment channel on Tempo: `open` (a signed transaction depositing
  into the escrow, and the first voucher), `voucher` per call (a signature over the cumulative amount),
  `topUp`, `close`. Its receipts name the channel and the running `spent`. Recorded and linked by channel;
  not verified yet (the charge of one call is not on chain; the close's settlement is the channel's).
Pure; none raises.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import TypeGuard

import orjson
from eth_hash.auto import keccak

SCHEME = "mpp"
_PARAM = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_CHALLENGE_START = re.compile(r"(?:^|,)\s*Payment\s+(?=[A-Za-z][A-Za-z0-9_-]*\s*=)", re.I)
_TX_HASH = re.compile(r"0x[0-9a-fA-F]{64}")
_DID = re.compile(r"did:pkh:eip155:([0-9]+):(0x[0-9a-fA-F]{40})")


def is_credential(authorization: str | None) -> TypeGuard[str]:
    return bool(authorization and authorization.lstrip()[:8].lower() == "payment ")


def _b64url_json(text: object) -> object:
    if not isinstance(text, str) or len(text) > 64 * 1024:
        return None
    try:
        return orjson.loads(base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return None


def challenges(values: list[str]) -> list[dict]:
    """Every `Payment` challenge in `WWW-Authenticate` values: their auth-params, `request` decoded."""
    out = []
    for value in values:
        starts = [m.end() for m in _CHALLENGE_START.finditer(value)]
        for i, start in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else len(value)
            params = {
                m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
                for m in _PARAM.finditer(value[start:end])
            }
            request = _b64url_json(params.get("request"))
            out.append({**params, "request": request if isinstance(request, dict) else None})
    return out


def offer(c: dict) -> dict:
    """An MPP challenge as an offer (the shape of an x402 `accepts` entry)."""
    request = c.get("request") or {}
    return {
        "scheme": SCHEME,
        "network": network(c.get("method"), request),
        "asset": _str(request.get("currency")),
        "amount": _str(request.get("amount")),
        "pay_to": _str(request.get("recipient")),
        "max_timeout_seconds": None,
        "resource": _str((request.get("_mppx_scope") or {}).get("resource"))
        if isinstance(request.get("_mppx_scope"), dict)
        else None,
    }


def network(method: object, request: dict) -> str:
    """Where a method settles: an EVM chain (`eip155:<chainId>`, Tempo's 4217 by default), or the method's
    name for one that settles off chain (`stripe`, `card`, `lightning`, …)."""
    details = got if isinstance(got := request.get("methodDetails"), dict) else {}
    if method in ("tempo", "evm"):
        chain = details.get("chainId", 4217 if method == "tempo" else None)
        return (
            f"eip155:{int(chain)}"
            if isinstance(chain, (int, float)) and not isinstance(chain, bool)
            else f"mpp:{method}"
        )
    return f"mpp:{method}" if isinstance(method, str) else "mpp"


def credential(authorization: str) -> dict:
    """The payment an `Authorization: Payment …` value makes, without its secrets."""
    doc = _b64url_json(authorization.strip()[8:].strip())
    if not isinstance(doc, dict):
        return {"errors": ["Authorization: Payment is not base64url JSON"]}
    echo = got if isinstance(got := doc.get("challenge"), dict) else {}
    request = _b64url_json(echo.get("request"))
    request = request if isinstance(request, dict) else {}
    payload = got if isinstance(got := doc.get("payload"), dict) else {}
    did = _DID.fullmatch(str(doc.get("source") or ""))
    signed = payload.get("signature") if payload.get("type") == "transaction" else None
    tx = payload.get("hash") if payload.get("type") == "hash" else _keccak_hex(signed)
    session = _session(payload)
    if session:  # (its signed transaction, an open's or a top-up's, and its voucher signature are secrets)
        signed, tx = payload.get("signature"), _keccak_hex(payload.get("transaction"))
    return {
        **session,
        "method": _str(echo.get("method")),
        "intent": _str(echo.get("intent")),
        "challenge_id": _str(echo.get("id")),
        "realm": _str(echo.get("realm")),
        "expires": _str(echo.get("expires")),
        "source": _str(doc.get("source")),
        "payer": did.group(2) if did else None,
        "payload_type": _str(payload.get("type")),
        "network": network(echo.get("method"), request),
        "asset": _str(request.get("currency")),
        "amount": None if session else _str(request.get("amount")),
        "pay_to": _str(request.get("recipient")),
        "payment_tx": tx.lower() if isinstance(tx, str) and _TX_HASH.fullmatch(tx) else None,
        "signature_sha256": hashlib.sha256(str(signed).encode()).hexdigest() if signed is not None else None,
        "errors": [] if echo else ["Authorization: Payment names no challenge"],
    }


def _session(payload: dict) -> dict:
    """A session intent's step (mppx: `action` open, voucher, topUp or close, on a payment channel): the
    channel, the cumulative amount the voucher signs, a top-up's deposit. Nothing lands on chain per call:
    the per-call charge is the receipt's `spent` minus the last one, and the channel's open, top-ups and
    close are its transactions. {} for a charge."""
    action = payload.get("action")
    if not isinstance(action, str) or not isinstance(payload.get("channelId"), str):
        return {}
    channel = payload["channelId"].lower()
    return {
        "session_action": action,
        "channel_id": channel if _TX_HASH.fullmatch(channel) else None,
        "voucher_amount": _digits(payload.get("cumulativeAmount")),
        "deposit_amount": _digits(payload.get("additionalDeposit")),
    }


def _digits(value: object) -> str | None:
    return value if isinstance(value, str) and value.isdigit() and len(value) <= 78 else None


def _keccak_hex(signed: object) -> str | None:
    """The hash of a signed transaction given in hex (what a node names it by)."""
    if not isinstance(signed, str) or not re.fullmatch(r"0x(?:[0-9a-fA-F]{2})+", signed):
        return None
    return "0x" + keccak(bytes.fromhex(signed[2:])).hex()


def receipt(value: str | None) -> dict | None:
    """A `Payment-Receipt` as a settlement: `reference` is the transaction when it is a 32-byte hash (else
    the provider's id: a Stripe payment, a channel, …)."""
    if value is None:
        return None
    doc = _b64url_json(value)
    if not isinstance(doc, dict):
        return {"header": "payment-receipt", "success": None, "errors": ["payment-receipt is not base64url JSON"]}
    ref = _str(doc.get("reference"))
    if isinstance(doc.get("channelId"), str):  # a session's: the reference is the channel, not a transaction
        tx = _str(doc.get("txHash"))
        return {
            "header": "payment-receipt",
            "success": doc.get("status") == "success",
            "network": None,
            "payer": None,
            "tx_hash": None,
            "job_id": None,
            "amount": None,
            "channel_id": doc["channelId"].lower(),
            "charged_cumulative": _digits(doc.get("spent")),
            "channel_tx": tx.lower() if tx and _TX_HASH.fullmatch(tx) else None,
            "error_reason": None if doc.get("status") == "success" else _str(doc.get("status")),
            "error_message": None,
            "errors": [],
        }
    tx_hash = ref.lower() if ref and _TX_HASH.fullmatch(ref) else None
    is_tx = tx_hash is not None
    return {
        "header": "payment-receipt",
        "success": doc.get("status") == "success",
        "network": None,
        "payer": None,
        "tx_hash": tx_hash,
        "job_id": None if is_tx else ref,
        "amount": None,
        "error_reason": None if doc.get("status") == "success" else _str(doc.get("status")),
        "error_message": None,
        "errors": [],
    }


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
