"""Benchmark of the OpenGradient proof checks against a naive approach, same run, same data.

N TEE-signed answers (RSA-PSS, 4 TEEs registered in a real TEE registry on anvil) anchored in batches
of 20 (OpenZeppelin StandardMerkleTree dumps in the local blob store, `batchSettle` on the relay):
- `receipts verify` (verifier/og.py): one batched registry read for all TEEs of the pass, keys parsed
  once; every batch's tree fetched once and indexed, then each call is a lookup and a short proof;
- naive: per call a fresh registry lookup (web3 contract call) and key parse; per call the relay's
  BatchSettlement logs, the blobs, and a linear search for the leaf.
Every 50th answer is tampered with after anchoring (both checks must fail). Prints TEE signature
checks/s and Merkle proofs/s of both paths, and whether their results are identical.
Talks only to 127.0.0.1.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from eth_hash.auto import keccak

from receipts.storage import config as cfg
from testbed.blobstore import start_blobstore
from testbed.og_chain import batch_settle, deploy_og_contracts, register_tee
from testbed.node import start_anvil
from receipts.verifier import og, tee

PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
REGISTRY_ABI = [{"type": "function", "name": "getTEE", "stateMutability": "view",
                 "inputs": [{"name": "teeId", "type": "bytes32"}],
                 "outputs": [{"name": "", "type": "tuple", "components": [
                     {"name": n, "type": t} for n, t in (
                         ("owner", "address"), ("paymentAddress", "address"), ("endpoint", "string"),
                         ("publicKey", "bytes"), ("tlsCertificate", "bytes"), ("pcrHash", "bytes32"),
                         ("teeType", "uint8"), ("enabled", "bool"), ("registeredAt", "uint256"),
                         ("lastHeartbeatAt", "uint256"))] + [
                     {"name": "ohttpConfig", "type": "tuple", "components": [
                         {"name": n, "type": t} for n, t in (("keyId", "uint8"), ("kemId", "uint16"), ("kdfId", "uint16"),
                                                             ("aeadId", "uint16"), ("publicKey", "bytes"),
                                                             ("keyConfig", "bytes"), ("registeredAt", "uint256"))]}]}]}]


def say(msg: str) -> None:
    print(f"bench-og: {msg}", file=sys.stderr, flush=True)


def standard_tree(leaves: list[bytes]) -> list[bytes]:
    ordered = sorted(leaves)
    tree = [b""] * (2 * len(ordered) - 1)
    for i, leaf in enumerate(ordered):
        tree[len(tree) - 1 - i] = leaf
    for i in range(len(tree) - 1 - len(ordered), -1, -1):
        a, b = tree[2 * i + 1], tree[2 * i + 2]
        tree[i] = keccak(min(a, b) + max(a, b))
    return tree


def make_calls(n: int, keys: list) -> list[dict]:
    calls, now = [], int(time.time()) - 3600  # signed an hour ago: past the anchoring deadline, so a leaf
    # in no batch is `fail` (as the naive path says), not `pending`
    for i in range(n):
        key, der = keys[i % len(keys)]
        req, out, ts = os.urandom(32), os.urandom(32), now - n + i
        sig = key.sign(tee.signed_message(req, out, ts), PSS, hashes.SHA256())
        calls.append({"receipt_id": f"r{i}", "tee_id": tee.tee_id_of(der), "tee_request_hash": "0x" + req.hex(),
                      "tee_output_hash": "0x" + out.hex(), "tee_signature": base64.b64encode(sig).decode(),
                      "tee_timestamp": ts, "settlement_type": "batch"})
    return calls


def anchor_batches(url: str, relay: str, blobs, calls: list[dict], size: int = 20) -> None:
    for start in range(0, len(calls), size):
        part = calls[start:start + size]
        leaves = [og._leaf(c) for c in part]
        tree = standard_tree(leaves)
        dump = {"format": "standard-v1", "leafEncoding": tee.LEAF_TYPES, "tree": ["0x" + t.hex() for t in tree]}
        blob_id = blobs.put(json.dumps(dump).encode())
        batch_settle(url, relay, tree[0], len(part), blob_id, wait=start + size >= len(calls))


def ours(calls: list[dict], settings) -> tuple[float, list, float, list]:
    t = time.perf_counter()
    facts = og.Facts()
    og._registry_keys(calls, settings, facts)
    sigs = [og.signature_of(c, facts).result for c in calls]
    t_sig = time.perf_counter() - t
    t = time.perf_counter()
    og._anchors(calls, settings, facts)
    proofs = [og.anchor_check(c, facts, settings).result for c in calls]
    return t_sig, sigs, time.perf_counter() - t, proofs


def naive(calls: list[dict], url: str, registry: str, relay: str, blob_url: str) -> tuple[float, list, float, list]:
    from web3 import Web3

    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"proxies": {"http": None, "https": None}}))
    contract = w3.eth.contract(address=Web3.to_checksum_address(registry), abi=REGISTRY_ABI)
    t = time.perf_counter()
    sigs = []
    for c in calls:  # a fresh registry lookup and key parse per call
        info = contract.functions.getTEE(bytes.fromhex(c["tee_id"][2:])).call()
        key = serialization.load_der_public_key(info[3])
        ok = info[7] and "0x" + keccak(info[3]).hex() == c["tee_id"]
        try:
            key.verify(base64.b64decode(c["tee_signature"]), tee.signed_message(
                bytes.fromhex(c["tee_request_hash"][2:]), bytes.fromhex(c["tee_output_hash"][2:]), c["tee_timestamp"]),
                PSS, hashes.SHA256())
        except Exception:
            ok = False
        sigs.append("pass" if ok else "fail")
    t_sig = time.perf_counter() - t
    t = time.perf_counter()
    proofs = []
    topic = og.BATCH
    for c in calls:  # per call: the relay's batches, their trees, a linear search
        leaf, found = og._leaf(c), "fail"
        for lg in w3.eth.get_logs({"address": Web3.to_checksum_address(relay), "topics": [topic], "fromBlock": 0}):
            blob_id = bytes(lg["data"])[96:].rstrip(b"\0").decode()
            dump = json.loads(urllib.request.urlopen(f"{blob_url}/v1/blobs/{blob_id}", timeout=10).read())
            tree = [bytes.fromhex(x[2:]) for x in dump["tree"]]
            if leaf in tree:
                proof = tee.proof_from_tree(tree, tree.index(leaf))
                found = "pass" if tee.root_from_proof(leaf, proof) == bytes(lg["topics"][1]) else "fail"
                break
        proofs.append(found)
    return t_sig, sigs, time.perf_counter() - t, proofs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--naive-calls", type=int, default=200, help="the naive path is slow: it runs on the first K calls")
    args = ap.parse_args(argv)
    n, k = args.calls, min(args.naive_calls, args.calls)
    keys = []
    for _ in range(4):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        keys.append((key, key.public_key().public_bytes(serialization.Encoding.DER,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo)))
    with start_anvil(chain_id=10740) as anvil, start_blobstore() as blobs:
        registry, relay = deploy_og_contracts(anvil.url)
        for i, (_, der) in enumerate(keys):
            register_tee(anvil.url, registry, der, b"cert", f"https://127.0.0.1:{9000 + i}", "0x" + "11" * 20)
        say(f"signing and anchoring {n} answers…")
        calls = make_calls(n, keys)
        anchor_batches(anvil.url, relay, blobs, calls)
        for c in calls[7::50]:  # tampered after anchoring: both checks must fail, in both paths
            sig = bytearray(base64.b64decode(c["tee_signature"]))
            sig[0] ^= 1
            c["tee_signature"] = base64.b64encode(bytes(sig)).decode()
        settings = cfg.Settings(
            networks=(cfg.Network("eip155:10740", anvil.url, scan_blocks=100_000),), og_registry=registry,
            og_relay=relay, og_blob_url=blobs.url)
        say("verifier path…")
        s_sig, o_sigs, s_proof, o_proofs = ours(calls, settings)
        say(f"naive path over the first {k} calls…")
        n_sig, n_sigs, n_proof, n_proofs = naive(calls[:k], anvil.url, registry, relay, blobs.url)
    same = o_sigs[:k] == n_sigs and o_proofs[:k] == n_proofs
    rows = [("TEE signature checks", n / s_sig, k / n_sig), ("Merkle proofs (batch anchors)", n / s_proof, k / n_proof)]
    lines = ["| check | verifier (per s) | naive (per s) | speed-up | goal | verdict |", "|---|---:|---:|---:|---|---|"]
    for name, a, b in rows:
        lines.append(f"| {name} | {a:,.0f} | {b:,.0f} | {a / b:.1f}× | ≥ 10× | {'goal met' if a / b >= 10 else 'goal missed'} |")
    lines += ["", f"- {n:,} calls ({n // 20} batches of 20, 4 TEEs) for the verifier, the first {k:,} for the naive path; "
                  f"results identical: {'yes' if same else 'NO'}; "
                  f"failed (tampered signatures, every 50th call): {o_sigs.count('fail')} signature checks, "
                  f"{o_proofs.count('fail')} proofs"]
    print("\n".join(lines))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
