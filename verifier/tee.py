"""TEE proofs of OpenGradient answers, and the Merkle trees that anchor them in batches (pure).

- tee_id = keccak256(the TEE's DER SubjectPublicKeyInfo), as registered in the TEE registry;
- the signed message is keccak256(request_hash ‖ output_hash ‖ uint256 timestamp), signed with
  RSA-PSS (SHA-256, MGF1-SHA-256, salt length 32);
- batch leaves are `[bytes32 teeId, bytes32 inputHash, bytes32 outputHash, bytes signature,
  uint256 timestamp]` in an OpenZeppelin StandardMerkleTree: leaf = keccak256(keccak256(abi.encode(
  values))), parents hash the sorted pair of their children.
"""

from __future__ import annotations

import base64
import binascii
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from eth_abi import encode
from eth_hash.auto import keccak

LEAF_TYPES = ["bytes32", "bytes32", "bytes32", "bytes", "uint256"]
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def hex32(value: str | None) -> bytes | None:
    """32 bytes from a hex string (with or without 0x), or None."""
    if not isinstance(value, str):
        return None
    try:
        raw = bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        return None
    return raw if len(raw) == 32 else None


def b64(value: str | None) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def tee_id_of(public_key_der: bytes) -> str:
    return "0x" + keccak(public_key_der).hex()


def signed_message(request_hash: bytes, output_hash: bytes, timestamp: int) -> bytes:
    return keccak(request_hash + output_hash + timestamp.to_bytes(32, "big"))


@lru_cache(maxsize=256)
def _public_key(der: bytes) -> rsa.RSAPublicKey | None:
    try:
        key = serialization.load_der_public_key(der)
    except ValueError:
        return None
    return key if isinstance(key, rsa.RSAPublicKey) else None


def signature_valid(public_key_der: bytes, signature: bytes, message: bytes) -> bool:
    """RSA-PSS over `message` with the DER public key; False for any key or signature problem."""
    key = _public_key(public_key_der)
    if key is None:
        return False
    try:
        key.verify(signature, message, PSS, hashes.SHA256())
        return True
    except (InvalidSignature, ValueError):
        return False


# ---- Merkle (OpenZeppelin StandardMerkleTree) ----------------------------------------------------
def leaf_hash(tee_id: bytes, input_hash: bytes, output_hash: bytes, signature: bytes, timestamp: int) -> bytes:
    return keccak(keccak(encode(LEAF_TYPES, [tee_id, input_hash, output_hash, signature, timestamp])))


def _pair(a: bytes, b: bytes) -> bytes:
    return keccak(a + b if a <= b else b + a)


def root_from_proof(leaf: bytes, proof: list[bytes]) -> bytes:
    node = leaf
    for sibling in proof:
        node = _pair(node, sibling)
    return node


def proof_from_tree(tree: list[bytes], index: int) -> list[bytes]:
    """Sibling path of tree node `index` in the dump's array layout (root at 0, children 2i+1, 2i+2)."""
    proof = []
    while index > 0:
        sibling = index - 1 if index % 2 == 0 else index + 1
        if sibling < len(tree):
            proof.append(tree[sibling])
        index = (index - 1) // 2
    return proof


def find_leaf(dump: dict, leaf: bytes) -> list[bytes] | None:
    """The proof of `leaf` in a StandardMerkleTree dump, or None if it is not a leaf of it. The proof
    comes from the dump; only hashing it up to the on-chain root makes it evidence."""
    return tree_index(dump).get(leaf)


def tree_index(dump: dict) -> dict[bytes, list[bytes]]:
    """Every leaf of a StandardMerkleTree dump with its proof (empty for a malformed dump)."""
    try:
        tree = [bytes.fromhex(str(node).removeprefix("0x")) for node in dump["tree"]]
    except (KeyError, TypeError, ValueError):
        return {}
    return {tree[i]: proof_from_tree(tree, i) for i in range(len(tree) // 2, len(tree))}
