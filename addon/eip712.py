"""Who signed an x402 payment: EIP-712 digests and secp256k1 recovery, at capture time.

The raw signature is a secret (it authorizes a transfer until its deadline), so it is never stored;
instead the recorder stores the address it recovers to, and the verifier checks that it is the payer.

EIP-3009 (`exact` on USDC-style tokens), PROTOCOL.md §1:
    domain  {name: extra.name, version: extra.version, chainId, verifyingContract: asset}
    TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,
                              uint256 validBefore,bytes32 nonce)
"""
from __future__ import annotations

from eth_hash.auto import keccak

DOMAIN_TYPE = b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
TRANSFER_WITH_AUTHORIZATION = (b"TransferWithAuthorization(address from,address to,uint256 value,"
                               b"uint256 validAfter,uint256 validBefore,bytes32 nonce)")


def _uint(value) -> bytes:
    return int(value).to_bytes(32, "big")


def _address(value: str) -> bytes:
    raw = bytes.fromhex(value.removeprefix("0x"))
    if len(raw) != 20:
        raise ValueError("an address must be 20 bytes")
    return raw.rjust(32, b"\0")


def _bytes32(value: str) -> bytes:
    raw = bytes.fromhex(value.removeprefix("0x"))
    if len(raw) != 32:
        raise ValueError("a nonce must be 32 bytes")
    return raw


def domain_separator(name: str, version: str, chain_id: int, contract: str) -> bytes:
    return keccak(keccak(DOMAIN_TYPE) + keccak(name.encode()) + keccak(version.encode()) + _uint(chain_id)
                  + _address(contract))


def eip3009_digest(domain: bytes, auth: dict) -> bytes:
    struct = keccak(keccak(TRANSFER_WITH_AUTHORIZATION) + _address(auth["from"]) + _address(auth["to"])
                    + _uint(auth["value"]) + _uint(auth["validAfter"]) + _uint(auth["validBefore"])
                    + _bytes32(auth["nonce"]))
    return keccak(b"\x19\x01" + domain + struct)


def recover(digest: bytes, signature: str) -> str:
    """The address whose key made this 65-byte signature over `digest` (0x-prefixed, lowercase)."""
    from coincurve import PublicKey

    sig = bytes.fromhex(signature.removeprefix("0x"))
    if len(sig) != 65:
        raise ValueError(f"a {len(sig)}-byte signature (smart-wallet signatures are not recoverable)")
    v = sig[64] - 27 if sig[64] >= 27 else sig[64]
    if v not in (0, 1):
        raise ValueError("the signature's v is neither 27/28 nor 0/1")
    key = PublicKey.from_signature_and_message(sig[:64] + bytes([v]), digest, hasher=None)
    return "0x" + keccak(key.format(compressed=False)[1:])[-20:].hex()


def chain_id(network: str | None) -> int | None:
    if network and network.startswith("eip155:") and network[7:].isdigit():
        return int(network[7:])
    return None


def signer(obj: object, network: str | None, asset: str | None, extra: dict | None) -> tuple[str | None, str | None]:
    """(recovered signer, None) or (None, why not) for an EIP-3009 payment payload; never raises."""
    try:
        payload = obj.get("payload") if isinstance(obj, dict) else None
        auth = payload.get("authorization") if isinstance(payload, dict) else None
        if not isinstance(auth, dict):
            return None, "not an EIP-3009 payment"
        chain = chain_id(network)
        if chain is None or not asset or not isinstance(extra, dict) or "name" not in extra or "version" not in extra:
            return None, "the EIP-712 domain is unknown (network, asset, or extra name/version missing)"
        domain = domain_separator(str(extra["name"]), str(extra["version"]), chain, asset)
        return recover(eip3009_digest(domain, auth), str(payload.get("signature", ""))), None
    except Exception as exc:  # malformed input is a capture-time note, never an exception
        return None, f"signature not recoverable: {exc}"
