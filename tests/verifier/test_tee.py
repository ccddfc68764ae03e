"""TEE proof and Merkle helpers against keys and trees made here (pure, no chain)."""
import base64
import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from eth_hash.auto import keccak

from receipts.verifier import tee

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
DER = KEY.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def sign(message: bytes) -> bytes:
    return KEY.sign(message, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())


def test_signature_over_request_output_and_timestamp():
    req, out = os.urandom(32), os.urandom(32)
    msg = tee.signed_message(req, out, 1_700_000_000)
    sig = sign(msg)
    assert tee.signature_valid(DER, sig, msg)
    assert not tee.signature_valid(DER, sig, tee.signed_message(req, out, 1_700_000_001))
    assert not tee.signature_valid(DER, sig[:-1] + bytes([sig[-1] ^ 1]), msg)
    assert not tee.signature_valid(b"not a key", sig, msg)
    assert tee.tee_id_of(DER) == "0x" + keccak(DER).hex()


def test_hex_and_base64_inputs_are_checked():
    assert tee.hex32("0x" + "ab" * 32) == bytes([0xab]) * 32
    assert tee.hex32("ab" * 31) is None and tee.hex32("zz") is None and tee.hex32(None) is None
    assert tee.b64(base64.b64encode(b"x").decode()) == b"x"
    assert tee.b64("not base64!") is None


def _standard_tree(leaves: list[bytes]) -> list[bytes]:
    """An OpenZeppelin-style array tree built independently: leaves sorted, at the end, reversed."""
    ordered = sorted(leaves)
    n = len(ordered)
    tree = [b""] * (2 * n - 1)
    for i, leaf in enumerate(ordered):
        tree[len(tree) - 1 - i] = leaf
    for i in range(len(tree) - 1 - n, -1, -1):
        a, b = tree[2 * i + 1], tree[2 * i + 2]
        tree[i] = keccak(min(a, b) + max(a, b))
    return tree


def test_merkle_proof_of_each_leaf_reaches_the_root():
    leaves = [tee.leaf_hash(os.urandom(32), os.urandom(32), os.urandom(32), os.urandom(256), 1000 + i)
              for i in range(7)]
    tree = _standard_tree(leaves)
    dump = {"format": "standard-v1", "tree": ["0x" + t.hex() for t in tree]}
    for leaf in leaves:
        proof = tee.find_leaf(dump, leaf)
        assert tee.root_from_proof(leaf, proof) == tree[0]
    assert tee.find_leaf(dump, os.urandom(32)) is None
    assert tee.find_leaf({"tree": "junk"}, leaves[0]) is None
