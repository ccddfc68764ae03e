"""Decoding of x402 (HTTP 402 payment) headers and bodies.

Wire formats (see /work/shared/PROTOCOL.md, section 1):

* Every x402 header value is standard base64 (with padding) of UTF-8 JSON with
  camelCase keys.  We also tolerate the url-safe alphabet, missing padding and
  surrounding whitespace.
* Challenge (server -> client): v1 is the JSON *body* of the 402 response,
  ``{x402Version: 1, error, accepts: [...]}``; v2 is the ``PAYMENT-REQUIRED``
  header, ``{x402Version: 2, error?, resource?: {url, description?, mimeType?},
  accepts: [...], extensions?}``.  An ``accepts`` entry carries ``scheme``,
  ``network`` (v1 legacy names such as ``base``; v2 CAIP-2 ``eip155:8453``),
  ``amount`` (v2) or ``maxAmountRequired`` (v1), ``asset``, ``payTo``,
  ``maxTimeoutSeconds``, ``extra`` and, in v1, ``resource``/``description``/
  ``mimeType``.
* Payment (client -> server): v1 ``X-PAYMENT`` = ``{x402Version: 1, scheme,
  network, payload}``; v2 ``PAYMENT-SIGNATURE`` = ``{x402Version: 2, payload,
  accepted, resource?, extensions?}``.  ``payload`` is either EIP-3009
  ``{signature, authorization: {from, to, value, validAfter, validBefore,
  nonce}}`` or Permit2 ``{signature, permit2Authorization: {from, permitted:
  {token, amount}, spender, nonce, deadline, witness: {to, validAfter,
  facilitator?}}}`` or, on Solana (SVM), ``{transaction}``: a partly signed v0 transaction in
  base64 (decoded by addon/solana.py; kept as a hash), or a payment channel's (``batch-settlement``)
  ``{type: deposit|voucher|refund, channelConfig: {payer, payerAuthorizer, receiver,
  receiverAuthorizer, token, withdrawDelay, salt}, voucher: {channelId, maxClaimableAmount,
  signature}, deposit?: {amount, authorization}, amount?}``.
* Settlement (server -> client): ``X-PAYMENT-RESPONSE`` / ``PAYMENT-RESPONSE``
  = ``{success, transaction, network, payer, errorReason?, errorMessage?,
  amount?}``; ``transaction`` is a tx hash, a Solana signature (base58 of 64
  bytes), ``""``, or an asynchronous job id such as ``payment-<uuid>``.  A payment channel's
  answer says what the call was charged in ``extra: {chargedAmount, channelState: {channelId,
  balance, totalClaimed, chargedCumulativeAmount?, …}}``; its ``transaction`` (a deposit's or a
  refund's, or ``""``) and ``amount`` (what was deposited or refunded) are the channel's, not the call's.

Every public function is total: it never raises, whatever it is given, and
reports problems as short strings in the result.  Secrets (the signature, a
signed approval transaction) are only ever returned as SHA-256 digests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any

import orjson

from receipts.storage import authcapture, channels

from . import eip712, solana

MAX_B64_BYTES = 64 * 1024
_MAX_INT64 = 2**63 - 1
_MAX_UINT256 = 2**256 - 1
_MAX_ID_CHARS = 1024

_TX_HASH_RE = re.compile(r"0x[0-9a-fA-F]{64}")
_BYTES32_RE = re.compile(r"0x[0-9a-fA-F]{64}")
_DECIMAL_RE = re.compile(r"[0-9]{1,80}")
_B64_TRANSLATE = bytes.maketrans(b"-_", b"+/")

# v1 network names and their CAIP-2 ids: the x402 SDK's v1 tables (x402 2.25.0,
# mechanisms/evm/v1/constants.py and mechanisms/svm/constants.py), plus "sepolia".
_V1_EVM_CHAIN_IDS: dict[str, int] = {
    "base": 8453,
    "base-sepolia": 84532,
    "ethereum": 1,
    "sepolia": 11155111,
    "polygon": 137,
    "polygon-amoy": 80002,
    "avalanche": 43114,
    "avalanche-fuji": 43113,
    "abstract": 2741,
    "abstract-testnet": 11124,
    "iotex": 4689,
    "sei": 1329,
    "sei-testnet": 1328,
    "peaq": 3338,
    "story": 1513,
    "educhain": 656476,
    "skale-base-sepolia": 1444673419,
    "megaeth": 4326,
    "monad": 143,
    "monad-testnet": 10143,
    "stable": 988,
    "stable-testnet": 2201,
    "celo": 42220,
    "flare": 14,
}
SOLANA_MAINNET = "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"
_LEGACY_NETWORKS: dict[str, str] = {
    **{name: f"eip155:{chain}" for name, chain in _V1_EVM_CHAIN_IDS.items()},
    "solana": SOLANA_MAINNET,
    "solana-devnet": "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1",
    "solana-testnet": "solana:4uhcVJyU9pJkvQyS88uRDiswHXSCkY3z",
}

_PAYMENT_ID_KEYS = ("id", "paymentId", "value")


# --------------------------------------------------------------------------
# small total helpers


def _never_raising(parse, empty, obj: object) -> dict[str, Any]:
    """Run a parser; a bug in it becomes an error entry, never an exception in the proxy."""
    try:
        return parse(obj)
    except Exception as exc:
        result = empty()
        result["errors"].append(f"internal error: {_type_name(exc)}")
        return result


def _type_name(value: object) -> str:
    return type(value).__name__


def _sha256_text(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def _str_field(d: dict, key: str, where: str, errors: list[str]) -> str | None:
    """Return ``d[key]`` if it is a string; None (and an error) otherwise."""
    value = d.get(key)
    if value is None or isinstance(value, str):
        return value
    errors.append(f"{where}.{key} is {_type_name(value)}, expected string")
    return None


def _uint_str(value: object) -> str | None:
    """Normalize a uint256 given as JSON int or decimal string; None if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer() and 0 <= value < 2**53:  # (protobuf Structs, as A2A's
        number = int(value)  # metadata, make every number a double)
    elif isinstance(value, str) and _DECIMAL_RE.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        return None
    if 0 <= number <= _MAX_UINT256:
        return str(number)
    return None


def _is_hex(value: object) -> bool:
    """A 0x-prefixed uint256 in hex."""
    return isinstance(value, str) and re.fullmatch(r"0x[0-9a-fA-F]{1,64}", value.strip()) is not None


def _uint_field(d: dict, key: str, where: str, errors: list[str]) -> str | None:
    value = d.get(key)
    if value is None or value == "":  # ("" is how x402 answers say "no amount", as a channel's vouchers do)
        return None
    result = _uint_str(value)
    if result is None:
        errors.append(f"{where}.{key} is not a non-negative integer")
    return result


def _int_field(d: dict, key: str, where: str, errors: list[str]) -> int | None:
    """Times and counts: a non-negative int that fits in int64, else None."""
    value = d.get(key)
    if value is None:
        return None
    text = _uint_str(value)
    if text is None or int(text) > _MAX_INT64:
        errors.append(f"{where}.{key} is not a non-negative 64-bit integer")
        return None
    return int(text)


def _dict_field(d: dict, key: str, where: str, errors: list[str]) -> dict | None:
    value = d.get(key)
    if value is None or isinstance(value, dict):
        return value
    errors.append(f"{where}.{key} is {_type_name(value)}, expected object")
    return None


def _version(d: dict, errors: list[str]) -> int | None:
    value = d.get("x402Version")
    if value is None:
        errors.append("x402Version missing")
        return None
    if isinstance(value, float) and value.is_integer():  # (a double, as in A2A's metadata)
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2**31:
        return value
    errors.append("x402Version is not a small non-negative integer")
    return None


# --------------------------------------------------------------------------
# base64 / primitives


def decode_b64_json(value: str | bytes) -> tuple[object | None, str | None]:
    """Decode a base64 (standard or url-safe, padding optional) UTF-8 JSON value."""
    try:
        return _decode_b64_json(value)
    except Exception as exc:
        return None, f"cannot decode: {_type_name(exc)}"


def _decode_b64_json(value: object) -> tuple[object | None, str | None]:
    if isinstance(value, str):
        if len(value) > MAX_B64_BYTES * 2:
            return None, "value larger than 64 KiB"
        try:
            raw = value.strip().encode("ascii")
        except UnicodeEncodeError:
            return None, "invalid base64: non-ASCII characters"
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value).strip()
    else:
        return None, f"expected str or bytes, got {_type_name(value)}"
    if len(raw) > MAX_B64_BYTES:
        return None, "value larger than 64 KiB"
    if not raw:
        return None, "empty value"
    raw = raw.translate(_B64_TRANSLATE).rstrip(b"=")
    if len(raw) % 4 == 1:
        return None, "invalid base64: bad length"
    raw += b"=" * (-len(raw) % 4)
    try:
        decoded = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return None, "invalid base64"
    try:
        return orjson.loads(decoded), None
    except orjson.JSONDecodeError as exc:
        if "UTF-8" in str(exc):
            return None, "decoded bytes are not valid UTF-8"
        return None, "decoded bytes are not valid JSON"


def is_tx_hash(s: object) -> bool:
    """True for ``0x`` followed by exactly 64 hex digits (any case)."""
    return isinstance(s, str) and _TX_HASH_RE.fullmatch(s) is not None


def caip2(network: object) -> str | None:
    """Map a v1 legacy network name to CAIP-2; other strings pass unchanged."""
    if not isinstance(network, str):
        return None
    return _LEGACY_NETWORKS.get(network.strip().lower(), network)


# --------------------------------------------------------------------------
# challenge


def _empty_entry() -> dict[str, Any]:
    keys = (
        "scheme",
        "network",
        "network_raw",
        "amount",
        "asset",
        "pay_to",
        "max_timeout_seconds",
        "resource",
        "description",
        "mime_type",
        "extra",
    )
    return dict.fromkeys(keys)


def _resource_info(value: object, where: str, errors: list[str]) -> dict[str, str | None]:
    """Accept a v2 resource object ``{url, description?, mimeType?}`` or a bare URL."""
    info: dict[str, str | None] = {"url": None, "description": None, "mime_type": None}
    if value is None:
        return info
    if isinstance(value, str):
        info["url"] = value
    elif isinstance(value, dict):
        info["url"] = _str_field(value, "url", where, errors)
        info["description"] = _str_field(value, "description", where, errors)
        info["mime_type"] = _str_field(value, "mimeType", where, errors)
    else:
        errors.append(f"{where} is {_type_name(value)}, expected object or string")
    return info


def _normalize_entry(
    d: dict, where: str, errors: list[str], fallback: dict[str, str | None] | None = None
) -> dict[str, Any]:
    """Normalize one accepts entry (v1 or v2) to snake_case, CAIP-2 network."""
    entry = _empty_entry()
    entry["scheme"] = _str_field(d, "scheme", where, errors)
    entry["network_raw"] = _str_field(d, "network", where, errors)
    entry["network"] = caip2(entry["network_raw"])
    amount_key = "amount" if d.get("amount") is not None else "maxAmountRequired"
    entry["amount"] = _uint_field(d, amount_key, where, errors)
    entry["asset"] = _str_field(d, "asset", where, errors)
    entry["pay_to"] = _str_field(d, "payTo", where, errors)
    entry["max_timeout_seconds"] = _int_field(d, "maxTimeoutSeconds", where, errors)
    own = _resource_info(d.get("resource"), f"{where}.resource", errors)
    fallback = fallback or {}
    entry["resource"] = own["url"] or fallback.get("url")
    entry["description"] = (
        _str_field(d, "description", where, errors) or own["description"] or fallback.get("description")
    )
    entry["mime_type"] = _str_field(d, "mimeType", where, errors) or own["mime_type"] or fallback.get("mime_type")
    extra = _dict_field(d, "extra", where, errors)
    entry["extra"] = dict(extra) if extra is not None else None
    return entry


def parse_challenge(obj: object) -> dict[str, Any]:
    """Normalize a v2 PAYMENT-REQUIRED object or a v1 402 JSON body."""
    return _never_raising(_parse_challenge, _empty_challenge, obj)


def _empty_challenge() -> dict[str, Any]:
    return {
        "x402_version": None,
        "error": None,
        "resource": None,
        "accepts": [],
        "extensions": None,
        "offers": [],
        "errors": [],
    }


def _parse_challenge(obj: object) -> dict[str, Any]:
    result = _empty_challenge()
    errors: list[str] = result["errors"]
    if not isinstance(obj, dict):
        errors.append(f"challenge is {_type_name(obj)}, expected object")
        return result
    result["x402_version"] = _version(obj, errors)
    result["error"] = _str_field(obj, "error", "challenge", errors)
    top = _resource_info(obj.get("resource"), "challenge.resource", errors)
    result["resource"] = top["url"]
    extensions = _dict_field(obj, "extensions", "challenge", errors)
    if extensions:  # (bazaar, sign-in-with-x, payment-identifier, offer-receipt …: kept whole)
        result["extensions"] = extensions
        offers = _offer_receipt(extensions).get("offers")
        result["offers"] = [seller_artifact("offer", o) for o in offers[:64]] if isinstance(offers, list) else []
    accepts = obj.get("accepts")
    if not isinstance(accepts, list):
        errors.append("challenge.accepts missing or not a list")
        return result
    for i, item in enumerate(accepts):
        where = f"accepts[{i}]"
        if isinstance(item, dict):
            result["accepts"].append(_normalize_entry(item, where, errors, top))
        else:
            errors.append(f"{where} is {_type_name(item)}, expected object")
    return result


def looks_like_v1_challenge(obj: object) -> bool:
    """True for a dict carrying ``x402Version`` and a list ``accepts``."""
    return isinstance(obj, dict) and "x402Version" in obj and isinstance(obj.get("accepts"), list)


# --------------------------------------------------------------------------
# payment


def _empty_payment() -> dict[str, Any]:
    keys = (
        "x402_version",
        "scheme",
        "network",
        "payer",
        "pay_to",
        "asset",
        "amount",
        "nonce",
        "valid_after",
        "valid_before",
        "deadline",
        "spender",
        "facilitator",
        "accepted",
        "resource",
        "payment_identifier",
        "signature_sha256",
        "signed_tx_sha256",
    )
    result: dict[str, Any] = dict.fromkeys(keys)
    result.update(kind="unknown", extensions=[], errors=[])
    return result


def parse_payment(obj: object) -> dict[str, Any]:
    """Decode the non-secret fields of an X-PAYMENT / PAYMENT-SIGNATURE object."""
    return _never_raising(_parse_payment, _empty_payment, obj)


def _parse_payment(obj: object) -> dict[str, Any]:
    result = _empty_payment()
    errors: list[str] = result["errors"]
    if not isinstance(obj, dict):
        errors.append(f"payment is {_type_name(obj)}, expected object")
        return result
    result["x402_version"] = _version(obj, errors)
    accepted = _dict_field(obj, "accepted", "payment", errors)
    entry = _normalize_entry(accepted, "accepted", errors) if accepted is not None else None
    result["accepted"] = entry
    _scheme_and_network(obj, entry, result, errors)
    resource = _resource_info(obj.get("resource"), "payment.resource", errors)
    result["resource"] = resource["url"] or (entry or {}).get("resource")
    payload = _dict_field(obj, "payload", "payment", errors)
    if payload is None:
        errors.append("payment.payload missing")
    else:
        _parse_payload(payload, result, errors)
    if result["asset"] is None and entry is not None:
        result["asset"] = entry["asset"]
    _parse_extensions(obj.get("extensions"), result, errors)
    return result


def _scheme_and_network(obj: dict, entry: dict | None, result: dict, errors: list[str]) -> None:
    scheme = entry["scheme"] if entry else None
    network = entry["network_raw"] if entry else None
    if scheme is None:
        scheme = _str_field(obj, "scheme", "payment", errors)
    if network is None:
        network = _str_field(obj, "network", "payment", errors)
    result["scheme"] = scheme
    result["network"] = caip2(network)


def _parse_payload(payload: dict, result: dict, errors: list[str]) -> None:
    signature = payload.get("signature")
    if isinstance(signature, str):
        result["signature_sha256"] = _sha256_text(signature)
    elif signature is not None:
        errors.append(f"payload.signature is {_type_name(signature)}, expected string")
    auth = payload.get("authorization")
    permit = payload.get("permit2Authorization")
    if payload.get("type") in CHANNEL_PAYLOADS and isinstance(payload.get("channelConfig"), dict):
        _parse_channel(payload, result, errors)
    elif isinstance(payload.get("openTransaction"), str):
        _parse_svm_upto(payload, result, errors)
    elif isinstance(payload.get("transaction"), str):
        result["kind"] = "svm"
        _parse_svm(payload["transaction"], result, errors)
    elif isinstance(payload.get("delegationManager"), str):
        result["kind"] = "erc7710"
        _parse_delegation(payload, result, errors)
    elif isinstance(auth, dict) and result["scheme"] == "auth-capture":
        result["kind"] = "auth_capture"
        _parse_eip3009(auth, result, errors)
        _parse_auth_capture(payload, result, errors)
    elif isinstance(auth, dict):
        result["kind"] = "eip3009"
        _parse_eip3009(auth, result, errors)
    elif isinstance(permit, dict):
        result["kind"] = "permit2"
        _parse_permit2(permit, result, errors)
    else:
        errors.append("payload has neither authorization, permit2Authorization, delegationManager nor transaction")


CHANNEL_PAYLOADS = ("deposit", "voucher", "refund")


def _parse_channel(payload: dict, result: dict, errors: list[str]) -> None:
    """A call paid from a payment channel: the channel's configuration names payer, payee (receiver) and
    token; the voucher promises the payee a cumulative amount (what this call may bring it to); a deposit
    names what it puts in. What the call costs is in the answer (chargedAmount). The voucher is the
    signed part (its signature kept as a hash); its channel id must be the configuration's hash."""
    result["kind"] = f"channel_{payload['type']}"
    config, where = payload["channelConfig"], "channelConfig"
    result["payer"] = _str_field(config, "payer", where, errors)
    result["pay_to"] = _str_field(config, "receiver", where, errors)
    result["asset"] = _str_field(config, "token", where, errors)
    result["spender"] = _str_field(config, "payerAuthorizer", where, errors)  # (may sign vouchers for the payer)
    voucher = _dict_field(payload, "voucher", "payload", errors) or {}
    claimed_id = voucher.get("channelId")
    result["channel_id"] = (
        claimed_id.lower() if isinstance(claimed_id, str) and _BYTES32_RE.fullmatch(claimed_id) else None
    )
    if result["channel_id"] is None:
        errors.append("voucher.channelId is not a bytes32 hex string")
    result["voucher_amount"] = _uint_field(voucher, "maxClaimableAmount", "voucher", errors)
    if isinstance(voucher.get("signature"), str):
        result["signature_sha256"] = _sha256_text(voucher["signature"])
    deposit = payload.get("deposit")
    if isinstance(deposit, dict):
        result["deposit_amount"] = _uint_field(deposit, "amount", "deposit", errors)
    if payload["type"] == "refund" and payload.get("amount") is not None:
        result["refund_amount"] = _uint_field(payload, "amount", "payload", errors)
    chain = eip712.chain_id(result["network"])
    if chain is not None and result["channel_id"]:
        try:
            if channels.channel_id(chain, config) != result["channel_id"]:
                errors.append("voucher.channelId is not the hash of channelConfig")
        except (KeyError, TypeError, ValueError) as e:
            errors.append(f"channelConfig is not a channel configuration: {e}")


def _parse_svm_upto(payload: dict, result: dict, errors: list[str]) -> None:
    """x402 `upto` on Solana: the payer opens a payment channel holding the cap (its signed part of the
    `openTransaction`, kept as a hash), from which the facilitator, after the call, pays the charge to the
    offer's payTo and refunds the rest: the settlement's transaction is that claim, its amount the charge."""
    result["kind"] = "svm_upto"
    result["payer"] = _str_field(payload, "from", "payload", errors)
    result["amount"] = _uint_field(payload, "maxAmount", "payload", errors)  # (the cap)
    result["nonce"] = _uint_field(payload, "nonce", "payload", errors)
    result["valid_after"] = _int_field(payload, "validAfter", "payload", errors)
    result["valid_before"] = _int_field(payload, "expiresAt", "payload", errors)
    result["spender"] = _str_field(payload, "authorizedSigner", "payload", errors)  # (signs the charge's voucher)
    result["channel_id"] = _str_field(payload, "channelId", "payload", errors)
    tx = solana.decode_transaction(payload["openTransaction"])
    if result["signature_sha256"] is None:
        result["signature_sha256"] = solana.transaction_sha256(payload["openTransaction"])
    mine = [sig for sig in tx["signatures"] if sig.get("signer") == result["payer"]]
    result.update(
        facilitator=tx["fee_payer"],
        memo=tx["memo"],
        recent_blockhash=tx["recent_blockhash"],
        payer_signature_valid=bool(mine) and all(sig.get("valid") for sig in mine),
    )
    if result["accepted"]:
        result["pay_to"], result["asset"] = result["accepted"]["pay_to"], result["accepted"]["asset"]
        program = ((result["accepted"].get("extra") or {}).get("tokenProgram")) or solana.TOKEN_PROGRAM
        result["payee_token_account"] = solana.ata_address(result["pay_to"], result["asset"], program)


def _parse_auth_capture(payload: dict, result: dict, errors: list[str]) -> None:
    """An auth-capture (escrow) payment (storage/authcapture.py): the authorization goes to the escrow's
    collector (`spender`) for the cap; the merchant is the offer's payTo; the operator (`facilitator`)
    captures later. `channel_id` is the escrow's id of the payment; the nonce must be its payer-agnostic
    hash, which binds every term."""
    result["spender"], result["pay_to"] = result["pay_to"], (result["accepted"] or {}).get("pay_to")
    entry = result["accepted"] or {}
    extra = entry.get("extra") or {}
    result["facilitator"] = extra.get("captureAuthorizer") if isinstance(extra.get("captureAuthorizer"), str) else None
    chain = eip712.chain_id(result["network"])
    escrow = str(extra.get("authCaptureEscrow") or authcapture.ESCROWS[0]).lower()
    try:
        if chain is None:
            raise ValueError(f"network {result['network']!r} is not an eip155 chain")
        wire = {"payTo": entry["pay_to"], "asset": entry["asset"], "amount": entry["amount"], "extra": extra}
        info = authcapture.payment_info(wire, payload)
        result["channel_id"] = authcapture.payment_id(chain, escrow, info)
        if (result.get("nonce") or "") != authcapture.payment_id(chain, escrow, info, payer_agnostic=True):
            errors.append("authorization.nonce is not the escrow's hash of the payment's terms")
    except (KeyError, TypeError, ValueError) as e:
        errors.append(f"auth-capture terms incomplete: {e}")


def _parse_delegation(payload: dict, result: dict, errors: list[str]) -> None:
    """An ERC-7710 delegation payment: the delegator's smart account lets the facilitator redeem a
    delegation (`redeemDelegations` on the delegation manager), which transfers the offer's amount to its
    payTo. The permission context is the signed delegation chain: kept as a hash only."""
    result["payer"] = _str_field(payload, "delegator", "payload", errors)
    result["spender"] = payload["delegationManager"]
    context = payload.get("permissionContext")
    if isinstance(context, str) and result["signature_sha256"] is None:  # (a `signature` beside it wins)
        result["signature_sha256"] = _sha256_text(context)
    if result["accepted"]:
        result["pay_to"], result["amount"] = result["accepted"]["pay_to"], result["accepted"]["amount"]


def _parse_svm(transaction: str, result: dict, errors: list[str]) -> None:
    """A Solana payment: the partly signed transaction (addon/solana.py) says who pays how much of which
    mint to which token account, under which fee payer; the transaction itself is kept as a hash only."""
    tx = solana.decode_transaction(transaction)
    # (the signed transaction is the payment's signature; a `signature` beside it wins)
    if result["signature_sha256"] is None:
        result["signature_sha256"] = solana.transaction_sha256(transaction)
    result.update(
        payer=tx["authority"],
        asset=tx["mint"],
        amount=tx["amount"],
        decimals=tx["decimals"],
        facilitator=tx["fee_payer"],
        token_account=tx["destination"],
        token_program=tx["token_program"],
        memo=tx["memo"],
        recent_blockhash=tx["recent_blockhash"],
        payer_signature_valid=tx["payer_signature_valid"],
    )
    if result["accepted"]:
        result["pay_to"] = result["accepted"]["pay_to"]
        # the token account the offer's payTo is paid at (its associated one): what the transfer must reach
        result["payee_token_account"] = solana.ata_address(result["pay_to"], tx["mint"], tx["token_program"])
    errors += [f"transaction: {e}" for e in tx["errors"]]


def _parse_eip3009(auth: dict, result: dict, errors: list[str]) -> None:
    where = "authorization"
    result["payer"] = _str_field(auth, "from", where, errors)
    result["pay_to"] = _str_field(auth, "to", where, errors)
    result["amount"] = _uint_field(auth, "value", where, errors)
    result["valid_after"] = _int_field(auth, "validAfter", where, errors)
    result["valid_before"] = _int_field(auth, "validBefore", where, errors)
    nonce = auth.get("nonce")
    if isinstance(nonce, str) and _BYTES32_RE.fullmatch(nonce):
        result["nonce"] = nonce.lower()
    elif nonce is not None:
        errors.append(f"{where}.nonce is not a bytes32 hex string")


def _parse_permit2(permit: dict, result: dict, errors: list[str]) -> None:
    where = "permit2Authorization"
    result["payer"] = _str_field(permit, "from", where, errors)
    result["spender"] = _str_field(permit, "spender", where, errors)
    # (the upto spec's own example writes the nonce in hex)
    result["nonce"] = (
        _uint_field(permit, "nonce", where, errors)
        if not _is_hex(permit.get("nonce"))
        else str(int(permit["nonce"], 16))
    )
    result["deadline"] = _int_field(permit, "deadline", where, errors)
    permitted = _dict_field(permit, "permitted", where, errors)
    if permitted is not None:
        result["asset"] = _str_field(permitted, "token", f"{where}.permitted", errors)
        result["amount"] = _uint_field(permitted, "amount", f"{where}.permitted", errors)
    witness = _dict_field(permit, "witness", where, errors)
    if witness is not None:
        result["pay_to"] = _str_field(witness, "to", f"{where}.witness", errors)
        result["valid_after"] = _int_field(witness, "validAfter", f"{where}.witness", errors)
        result["facilitator"] = _str_field(witness, "facilitator", f"{where}.witness", errors)


def _parse_extensions(ext: object, result: dict, errors: list[str]) -> None:
    if ext is None:
        return
    if isinstance(ext, list):
        result["extensions"] = [name for name in ext if isinstance(name, str)]
        return
    if not isinstance(ext, dict):
        errors.append(f"payment.extensions is {_type_name(ext)}, expected object")
        return
    result["extensions"] = [str(name) for name in ext]
    result["payment_identifier"] = _payment_identifier(ext.get("payment-identifier"), errors)
    result["signed_tx_sha256"] = _signed_tx_sha256(ext.get("erc20ApprovalGasSponsoring"))


def _identifier_from(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in _PAYMENT_ID_KEYS:
            if isinstance(value.get(key), str):
                return value[key]
    return None


def _payment_identifier(value: object, errors: list[str]) -> str | None:
    found = _identifier_from(value)
    if found is None and isinstance(value, dict):
        found = _identifier_from(value.get("info"))
    if found is None:
        if value is not None:
            errors.append("payment-identifier extension has no identifier string")
        return None
    if not found or len(found) > _MAX_ID_CHARS:
        errors.append("payment-identifier is empty or too long")
        return None
    return found


def _signed_tx_sha256(value: object) -> str | None:
    info = value.get("info") if isinstance(value, dict) else None
    signed = info.get("signedTransaction") if isinstance(info, dict) else None
    return _sha256_text(signed) if isinstance(signed, str) else None


# --------------------------------------------------------------------------
# settlement


def _empty_settlement() -> dict[str, Any]:
    keys = (
        "success",
        "tx_hash",
        "job_id",
        "network",
        "payer",
        "amount",
        "error_reason",
        "error_message",
        "extensions",
        "seller_receipt",
    )
    result: dict[str, Any] = dict.fromkeys(keys)
    result["errors"] = []
    return result


def parse_settlement(obj: object) -> dict[str, Any]:
    """Normalize an X-PAYMENT-RESPONSE / PAYMENT-RESPONSE object."""
    return _never_raising(_parse_settlement, _empty_settlement, obj)


def _parse_settlement(obj: object) -> dict[str, Any]:
    result = _empty_settlement()
    errors: list[str] = result["errors"]
    if not isinstance(obj, dict):
        errors.append(f"settlement is {_type_name(obj)}, expected object")
        return result
    success = obj.get("success")
    if isinstance(success, bool):
        result["success"] = success
    elif success is not None:
        errors.append(f"settlement.success is {_type_name(success)}, expected boolean")
    _transaction(obj, result, errors)
    result["network"] = caip2(_str_field(obj, "network", "settlement", errors))
    result["payer"] = _str_field(obj, "payer", "settlement", errors)
    result["amount"] = _uint_field(obj, "amount", "settlement", errors)
    result["error_reason"] = _str_field(obj, "errorReason", "settlement", errors)
    result["error_message"] = _str_field(obj, "errorMessage", "settlement", errors)
    extra = obj.get("extra")
    if isinstance(extra, dict) and ("chargedAmount" in extra or isinstance(extra.get("channelState"), dict)):
        _channel_settlement(extra, result, errors)
    extensions = _dict_field(obj, "extensions", "settlement", errors)
    if extensions:
        result["extensions"] = extensions  # (kept whole: the seller's own statements)
        receipt = _offer_receipt(extensions).get("receipt")
        result["seller_receipt"] = seller_artifact("receipt", receipt) if receipt is not None else None
    return result


def _channel_settlement(extra: dict, result: dict, errors: list[str]) -> None:
    """A payment channel's answer: the call's charge is `chargedAmount`; the transaction and amount the
    answer names (a deposit's, a refund's) are the channel's, kept apart as `channel_tx`/`channel_amount`
    so that neither passes for the call's own settlement or price."""
    result["channel_tx"], result["tx_hash"] = result["tx_hash"], None
    result["channel_amount"] = result["amount"]
    result["amount"] = _uint_field(extra, "chargedAmount", "settlement.extra", errors)
    state = _dict_field(extra, "channelState", "settlement.extra", errors) or {}
    channel = state.get("channelId")
    result["channel_id"] = channel.lower() if isinstance(channel, str) and _BYTES32_RE.fullmatch(channel) else None
    result["charged_cumulative"] = _uint_field(
        state, "chargedCumulativeAmount", "settlement.extra.channelState", errors
    )
    result["channel_balance"] = _uint_field(state, "balance", "settlement.extra.channelState", errors)
    result["channel_claimed"] = _uint_field(state, "totalClaimed", "settlement.extra.channelState", errors)


def _offer_receipt(extensions: dict) -> dict:
    """The `info` of the `offer-receipt` extension ({} when absent or not an object)."""
    ext = extensions.get("offer-receipt")
    info = ext.get("info") if isinstance(ext, dict) else None
    return info if isinstance(info, dict) else {}


def seller_artifact(kind: str, artifact: object) -> dict[str, Any]:
    """A signed offer or receipt of the `offer-receipt` extension as it came (its signature is the
    seller's statement, not a secret), with the address that signed it recovered."""
    signer, why = eip712.artifact_signer(kind, artifact)
    shown = artifact if isinstance(artifact, dict) else {"value": artifact}
    return {**shown, "signer": signer, "signer_error": why}


def _transaction(obj: dict, result: dict, errors: list[str]) -> None:
    tx = _str_field(obj, "transaction", "settlement", errors)
    if tx is None:
        return
    tx = tx.strip()
    if is_tx_hash(tx):
        result["tx_hash"] = tx.lower()
    elif solana.is_signature(tx):  # (base58: its case is part of it)
        result["tx_hash"] = tx
    elif tx:
        result["job_id"] = tx[:_MAX_ID_CHARS]
