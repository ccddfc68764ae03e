"""Who signed an x402 payment: EIP-712 digests and secp256k1 recovery, at capture time.

The raw signature is a secret (it authorizes a transfer until its deadline), so it is never stored;
instead the recorder stores the address it recovers to, and the verifier checks that it is the payer.

EIP-3009 (`exact` on USDC-style tokens), PROTOCOL.md §1 (Permit2: see permit2_digest):
    domain  {name: extra.name, version: extra.version, chainId, verifyingContract: asset}
    TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,
                              uint256 validBefore,bytes32 nonce)

x402 payment channels (`batch-settlement`): the voucher's digest, storage/channels.py.
"""

from __future__ import annotations

from typing import cast

from eth_hash.auto import keccak

from receipts.storage import channels
from receipts.storage.records import SMART_WALLET

DOMAIN_TYPE = b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
PERMIT2_DOMAIN_TYPE = b"EIP712Domain(string name,uint256 chainId,address verifyingContract)"
PERMIT2 = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
TOKEN_PERMISSIONS = b"TokenPermissions(address token,uint256 amount)"
WITNESS_UPTO = b"Witness(address to,address facilitator,uint256 validAfter)"
WITNESS_EXACT = b"Witness(address to,uint256 validAfter)"
PERMIT_WITNESS = (
    b"PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,"
    b"uint256 deadline,Witness witness)"
)
TRANSFER_WITH_AUTHORIZATION = (
    b"TransferWithAuthorization(address from,address to,uint256 value,"
    b"uint256 validAfter,uint256 validBefore,bytes32 nonce)"
)
RECEIVE_WITH_AUTHORIZATION = (
    b"ReceiveWithAuthorization(address from,address to,uint256 value,"
    b"uint256 validAfter,uint256 validBefore,bytes32 nonce)"
)  # (auth-capture's)


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
    return keccak(
        keccak(DOMAIN_TYPE) + keccak(name.encode()) + keccak(version.encode()) + _uint(chain_id) + _address(contract)
    )


def eip3009_digest(domain: bytes, auth: dict, kind: bytes = TRANSFER_WITH_AUTHORIZATION) -> bytes:
    struct = keccak(
        keccak(kind)
        + _address(auth["from"])
        + _address(auth["to"])
        + _uint(auth["value"])
        + _uint(auth["validAfter"])
        + _uint(auth["validBefore"])
        + _bytes32(auth["nonce"])
    )
    return keccak(b"\x19\x01" + domain + struct)


def permit2_digest(chain: int, permit: dict) -> bytes:
    """Permit2 `PermitWitnessTransferFrom` (x402 exact and upto schemes; upto's witness names the
    facilitator). Domain {name: "Permit2", chainId, verifyingContract: the canonical Permit2}."""
    witness = permit["witness"]
    if "facilitator" in witness:
        witness_type = WITNESS_UPTO
        witness_hash = keccak(
            keccak(WITNESS_UPTO)
            + _address(witness["to"])
            + _address(witness["facilitator"])
            + _uint(witness.get("validAfter", 0))
        )
    else:
        witness_type = WITNESS_EXACT
        witness_hash = keccak(keccak(WITNESS_EXACT) + _address(witness["to"]) + _uint(witness.get("validAfter", 0)))
    permitted = keccak(
        keccak(TOKEN_PERMISSIONS) + _address(permit["permitted"]["token"]) + _uint(permit["permitted"]["amount"])
    )
    struct = keccak(
        keccak(PERMIT_WITNESS + TOKEN_PERMISSIONS + witness_type)
        + permitted
        + _address(permit["spender"])
        + _uint(permit["nonce"])
        + _uint(permit["deadline"])
        + witness_hash
    )
    domain = keccak(keccak(PERMIT2_DOMAIN_TYPE) + keccak(b"Permit2") + _uint(chain) + _address(PERMIT2))
    return keccak(b"\x19\x01" + domain + struct)


# The seller's own signed artifacts (x402 `offer-receipt` extension, v1): domain {name, version "1",
# chainId from the artifact's network}; the types are the spec's, never sent on the wire.
ARTIFACT_DOMAIN_TYPE = b"EIP712Domain(string name,string version,uint256 chainId)"
OFFER = b"Offer(string resourceUrl,string scheme,string network,string asset,address payTo,string amount,uint256 maxTimeoutSeconds,uint256 issuedAt)"
RECEIPT = b"Receipt(string network,string resourceUrl,string payer,uint256 issuedAt,string transaction)"


def _text(value) -> bytes:
    return keccak(str(value).encode())


def artifact_digest(kind: str, payload: dict) -> bytes:
    """The EIP-712 digest of a signed offer or receipt's payload, as transmitted (absent optional fields
    are 0 or "", as the spec says)."""
    chain = chain_id(payload.get("network"))
    if chain is None:
        raise ValueError("an EIP-712 artifact needs an eip155 network")
    if kind == "offer":
        struct = keccak(
            keccak(OFFER)
            + _text(payload["resourceUrl"])
            + _text(payload["scheme"])
            + _text(payload["network"])
            + _text(payload["asset"])
            + _address(payload["payTo"])
            + _text(payload["amount"])
            + _uint(payload.get("maxTimeoutSeconds") or 0)
            + _uint(payload.get("issuedAt") or 0)
        )
    else:
        struct = keccak(
            keccak(RECEIPT)
            + _text(payload["network"])
            + _text(payload["resourceUrl"])
            + _text(payload["payer"])
            + _uint(payload["issuedAt"])
            + _text(payload.get("transaction") or "")
        )
    domain = keccak(keccak(ARTIFACT_DOMAIN_TYPE) + _text(f"x402 {kind}") + _text("1") + _uint(chain))
    return keccak(b"\x19\x01" + domain + struct)


def artifact_signer(kind: str, artifact: object) -> tuple[str | None, str | None]:
    """(who signed this offer or receipt, None) or (None, why not); never raises. JWS artifacts name their
    key by a DID URL (`kid`), which is not resolved here."""
    try:
        if not isinstance(artifact, dict):
            return None, f"the {kind} is not an object"
        if artifact.get("format") == "jws":
            return None, "a JWS artifact: its key (kid) is not resolved here"
        if artifact.get("format") != "eip712" or not isinstance(artifact.get("payload"), dict):
            return None, f"the {kind} is neither eip712 with a payload nor jws"
        return recover(artifact_digest(kind, artifact["payload"]), str(artifact.get("signature", ""))), None
    except Exception as exc:  # a malformed artifact is a capture-time note, never an exception
        return None, f"{kind} signature not recoverable: {exc}"


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


ERC6492_SUFFIX = bytes.fromhex("64926492" * 8)  # ends a signature of a wallet not deployed yet (ERC-6492)


def smart_wallet(signature: object) -> str | None:
    """Why a payment signature is a contract wallet's, as signer_error says it (None: an EOA's 65 bytes,
    or not a hex signature at all). ERC-1271: any other length, checked by the wallet's isValidSignature;
    ERC-6492: wrapped as abi.encode(factory, factoryCalldata, signature) + a magic suffix, for a wallet
    that its factory deploys first. Either is checked on chain by the token when it settles."""
    try:
        raw = bytes.fromhex(str(signature).removeprefix("0x"))
    except ValueError:
        return None
    if len(raw) in (0, 65):
        return None
    if raw.endswith(ERC6492_SUFFIX) and len(raw) >= 32 * 3 + len(ERC6492_SUFFIX):
        factory = "0x" + raw[12:32].hex()
        return f"{SMART_WALLET} (ERC-6492, deployed by factory {factory}): checked on chain by its settlement"
    return f"{SMART_WALLET} (ERC-1271, a {len(raw)}-byte signature): checked on chain by its settlement"


def signer(obj: object, network: str | None, asset: str | None, extra: dict | None) -> tuple[str | None, str | None]:
    """(recovered signer, None) or (None, why not) for an EIP-3009 or Permit2 payload; never raises."""
    try:
        payload = obj.get("payload") if isinstance(obj, dict) else None
        payload = payload if isinstance(payload, dict) else {}
        if isinstance(payload.get("voucher"), dict):  # a payment channel's call: its voucher is what is signed
            return _voucher_signer(payload["voucher"], network)
        wallet = smart_wallet(payload.get("signature"))
        if wallet:
            return None, wallet
        auth, permit = payload.get("authorization"), payload.get("permit2Authorization")
        if isinstance(permit, dict) and (permit_chain := chain_id(network)) is not None:
            return recover(permit2_digest(permit_chain, permit), str(payload.get("signature", ""))), None
        if not isinstance(auth, dict):
            return None, "neither an EIP-3009 nor a Permit2 payment"
        chain = chain_id(network)
        if chain is None or not asset or not isinstance(extra, dict) or "name" not in extra or "version" not in extra:
            return None, "the EIP-712 domain is unknown (network, asset, or extra name/version missing)"
        domain = domain_separator(str(extra["name"]), str(extra["version"]), chain, asset)
        accepted = cast(dict, obj).get("accepted")  # (a dict: else the payload was empty, answered above)
        scheme = accepted.get("scheme") if isinstance(accepted, dict) else None
        kind = RECEIVE_WITH_AUTHORIZATION if scheme == "auth-capture" else TRANSFER_WITH_AUTHORIZATION
        return recover(eip3009_digest(domain, auth, kind), str(payload.get("signature", ""))), None
    except Exception as exc:  # malformed input is a capture-time note, never an exception
        return None, f"signature not recoverable: {exc}"


def _voucher_signer(voucher: dict, network: str | None) -> tuple[str | None, str | None]:
    chain = chain_id(network)
    if chain is None:
        return None, "a channel voucher needs an eip155 network"
    wallet = smart_wallet(voucher.get("signature"))
    if wallet:
        return None, wallet
    digest = channels.voucher_digest(chain, str(voucher["channelId"]), voucher["maxClaimableAmount"])
    return recover(digest, str(voucher.get("signature", ""))), None
