"""x402's `sign-in-with-x` extension: a wallet that already paid signs in instead of paying again.

The server's challenge declares it (`extensions["sign-in-with-x"]`: domain, uri, nonce, issuedAt, …, and
`supportedChains`); the client then sends `SIGN-IN-WITH-X: <base64 JSON>` with the CAIP-122 message's
fields, its `address`, `chainId`, `type` (`eip191` or `ed25519`) and `signature`, and is served without
paying. The signature is a bearer credential until `expirationTime`: it is kept only as a hash. What is
checked here, offline and at capture, is that the signature is the address's over the message the fields
make (EIP-4361 text for EVM accounts, signed with EIP-191 `personal_sign`; the CAIP-122 text for Solana
accounts, signed with ed25519). Which earlier payment granted the access is found by the views (the
latest payment of that address to the same host). Pure; never raises.
"""

from __future__ import annotations

import hashlib
from typing import Any

from eth_hash.auto import keccak

from . import eip712, solana, x402

HEADER = "sign-in-with-x"
FIELDS = (
    "domain",
    "address",
    "uri",
    "version",
    "chainId",
    "type",
    "nonce",
    "issuedAt",
    "statement",
    "expirationTime",
    "notBefore",
    "requestId",
    "resources",
)


def decode(value: str | None) -> dict | None:
    """The sign-in a header value carries: its fields (not the signature), the signature's hash, and
    `signer` (the address the signature verifies for) or `signer_error`."""
    if value is None:
        return None
    obj, err = x402.decode_b64_json(value)
    if err or not isinstance(obj, dict):
        return {"errors": [f"{HEADER}: {err or 'not a JSON object'}"]}
    out: dict[str, Any] = {k: obj.get(k) for k in FIELDS}
    signature = obj.get("signature")
    out["signature_sha256"] = hashlib.sha256(str(signature).encode()).hexdigest() if signature is not None else None
    out["signer"], out["signer_error"] = signer(obj)
    out["errors"] = []
    return out


def signer(obj: dict) -> tuple[str | None, str | None]:
    """(the address, None) when the signature is that address's over the message; else (None, why)."""
    try:
        chain, address, signature = str(obj.get("chainId") or ""), str(obj.get("address") or ""), obj.get("signature")
        if not isinstance(signature, str):
            return None, "no signature"
        if chain.startswith("eip155:"):
            digest = personal_digest(siwe_message(obj))
            recovered = eip712.recover(digest, signature)
            return (address, None) if recovered == address.lower() else (None, f"signed by {recovered}, not {address}")
        if chain.startswith("solana:"):
            key, sig = solana.b58decode(address), solana.b58decode(signature)
            if key is None or sig is None or len(key) != 32 or len(sig) != 64:
                return None, "the address or the signature is not base58 of an ed25519 key and signature"
            ok = solana.ed25519_valid(key, sig, siws_message(obj).encode())
            return (address, None) if ok else (None, "the ed25519 signature does not verify")
        return None, f"an unsupported chain: {chain or 'none'}"
    except Exception as exc:  # (a malformed sign-in is a capture-time note)
        return None, f"not verifiable: {exc}"


def personal_digest(message: str) -> bytes:
    """EIP-191 `personal_sign`: keccak of the prefix, the message's length in bytes, and the message."""
    data = message.encode()
    return keccak(b"\x19Ethereum Signed Message:\n" + str(len(data)).encode() + data)


def siwe_message(f: dict) -> str:
    """The EIP-4361 (Sign-In with Ethereum) text of these fields."""
    head = [f"{f['domain']} wants you to sign in with your Ethereum account:", str(f["address"]), ""]
    head += [str(f["statement"]), ""] if f.get("statement") else [""]
    return "\n".join(head + _tail(f, str(f["chainId"]).split(":", 1)[1]))


def siws_message(f: dict) -> str:
    """The CAIP-122 text of these fields for a Solana account."""
    head = [f"{f['domain']} wants you to sign in with your Solana account:", str(f["address"]), ""]
    head += [str(f["statement"]), ""] if f.get("statement") else []
    return "\n".join(head + _tail(f, str(f["chainId"]).split(":", 1)[1]))


def _tail(f: dict, chain_reference: str) -> list[str]:
    lines = [
        f"URI: {f['uri']}",
        f"Version: {f['version']}",
        f"Chain ID: {chain_reference}",
        f"Nonce: {f['nonce']}",
        f"Issued At: {f['issuedAt']}",
    ]
    for key, label in (("expirationTime", "Expiration Time"), ("notBefore", "Not Before"), ("requestId", "Request ID")):
        if f.get(key):
            lines.append(f"{label}: {f[key]}")
    if f.get("resources"):
        lines += ["Resources:"] + [f"- {r}" for r in f["resources"]]
    return lines
