"""A local OpenGradient TEE gateway for tests: the real og-x402 session middleware in front of a fake,
signing LLM, with a local facilitator that settles on two anvil chains.

Runs in the SDK's environment, ``.venv-og`` (it imports og-x402's ``x402`` package, which clashes
with the ``x402`` in ``.venv``)::

    .venv-og/bin/python testbed/og_gateway.py --config CONFIG.json

It is started by :mod:`testbed.og_stack`, which reads its ready line (``OG_GATEWAY_READY {json}``:
port, tee_id, the signing key and TLS certificate as base64 DER) and registers the TEE.

How it mirrors the real thing (OpenGradient ``tee-gateway`` + ``inference-facilitator``):

- HTTPS on 127.0.0.1 with a self-signed certificate made for this run (its DER is what the
  registry pins); an RSA-2048 signing key made for this run, ``tee_id = keccak256(DER SPKI)``.
- ``POST /v1/chat/completions`` is a Flask route behind og-x402's own Flask ``PaymentMiddleware``
  in **session mode** with its ``SessionStore``, configured as the real gateway configures it:
  one ``upto`` option on ``eip155:8453``, the OPG token, a cap (``amount``) per session, extra
  ``{name: "OpenGradient", version: "1", assetTransferMethod: "permit2", facilitatorAddress}`` and
  the ``erc20ApprovalGasSponsoring`` extension declared. So the 402 challenge, the
  ``X-Upto-Session`` header, "Session expired or exhausted", the idle-session reaper, the
  ``X-SETTLEMENT-TYPE`` handling, the ``X-TEE-*`` and ``X-Settlement-*`` headers and the stream's
  settlement fields all come from the real middleware code.
- The route answers like the real gateway's chat controller: a deterministic fake answer, then
  ``tee_request_hash = keccak256(json.dumps(canonical_request, sort_keys=True))`` (hex, no 0x),
  ``tee_output_hash = keccak256(answer)`` (a stream: the concatenated delta text),
  ``tee_timestamp`` (int seconds), ``tee_id`` (0x hex) and ``tee_signature`` = base64
  RSA-PSS(SHA-256, salt 32) over ``keccak256(request_hash ‖ output_hash ‖ uint256 timestamp)``.
  Which fields make up ``canonical_request`` is the ``request_hash_form`` option
  (:data:`REQUEST_HASH_FORMS`).
- The facilitator is in-process (the middleware calls it like ``HTTPFacilitatorClientSync``):
  ``verify``/``settle`` are og-x402's own upto/Permit2 facilitator scheme with a web3 signer on the
  "Base" anvil (settling calls the upto proxy's ``settle`` with the session total);
  ``settle_data`` does what the inference facilitator does on the OpenGradient chain:
  ``individual`` -> the Walrus-style record is stored in the blob server, a ``settleIndividual``
  transaction is signed (its hash is answered before it is broadcast), then broadcast;
  ``batch`` -> leaves ``[teeId, inputHash, outputHash, signature, timestamp]`` collect into an
  OpenZeppelin StandardMerkleTree, flushed after ``batch_size`` items, ``batch_idle`` seconds idle
  or ``batch_max_age`` seconds, or on request; the ``standard-v1`` dump goes to the blob server,
  then ``batchSettle(root, size, blobId)``.

Test controls, never used by the SDK (not payment-gated):

- ``POST /_testbed/faults`` with a JSON object of faults for the next calls (see :class:`Faults`)
- ``POST /_testbed/config`` changes ``cost_per_request``, ``session_idle``, ``batch_size``,
  ``batch_idle``, ``batch_max_age``, ``request_hash_form`` or ``stream_delay`` from now on
- ``POST /_testbed/flush`` ``{"sessions": true, "batches": true}``: settle open sessions and flush
  the batch now; answers what was settled
- ``GET /_testbed/state``: sessions (open and settled), individual and batch settlements, calls
- ``GET /health``, ``GET /signing-key`` as the real gateway has them
- Oblivious HTTP (:mod:`testbed.og_ohttp`): ``POST /v1/ohttp`` (paid by the same upto session option),
  ``GET /v1/ohttp/config``, and the controls ``GET``/``POST /_testbed/ohttp`` (its log, its settings)
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import json
import logging
import os
import re
import signal
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import keccak, to_checksum_address

log = logging.getLogger("og_gateway")

CHAT_PATH = "/v1/chat/completions"
OHTTP_PATH = "/v1/ohttp"
NETWORK = "eip155:8453"
OPG_ADDRESS = "0xFbC2051AE2265686a469421b2C5A2D5462FbF5eB"
SESSION_CAP = 100_000_000_000_000_000
"""0.1 OPG: the real gateway's ``amount`` per session (the signed Permit2 cap)."""
COST_PER_REQUEST = 100_000_000_000_000
"""0.0001 OPG: the real gateway's static per-request estimate (it prices by tokens on top)."""

SETTLE_INDIVIDUAL_SELECTOR = keccak(text="settleIndividual(bytes32,bytes32,bytes32,uint256,address,bytes,bytes)")[:4]
BATCH_SETTLE_SELECTOR = keccak(text="batchSettle(bytes32,uint256,bytes)")[:4]
SETTLEMENT_GAS_LIMIT = 9_000_000
"""The inference facilitator's default gas limit for its OpenGradient-chain transactions."""
LEAF_ENCODING = ["bytes32", "bytes32", "bytes32", "bytes", "uint256"]
INDIVIDUAL_QUEUE = "x402-settle-data-individual-queue-v2"
BATCH_QUEUE = "x402-settle-data-queue-v2"


# ---------------------------------------------------------------------------------------------
# Request hash forms
# ---------------------------------------------------------------------------------------------


def _canonical_user_content(content: Any) -> Any:
    """User content as the gateway hashes it: text kept, attachments reduced to {type[, filename]}."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return str(content)
    out: list[Any] = []
    for part in content:
        if not isinstance(part, dict):
            out.append({"type": "text", "text": str(part)})
        elif part.get("type") == "text":
            out.append({"type": "text", "text": part.get("text", "") or ""})
        else:
            entry: dict[str, Any] = {"type": part.get("type")}
            file_obj = part.get("file")
            filename = (file_obj.get("filename") if isinstance(file_obj, dict) else None) or part.get("filename")
            if filename:
                entry["filename"] = filename
            out.append(entry)
    return out


def _canonical_message(msg: dict) -> dict:
    role = msg.get("role")
    if role in ("system", "developer"):
        return {"role": "system", "content": msg.get("content")}
    if role == "user":
        return {"role": "user", "content": _canonical_user_content(msg.get("content"))}
    if role == "assistant":
        out: dict[str, Any] = {"role": "assistant", "content": msg.get("content") or ""}
        if msg.get("tool_calls"):
            out["tool_calls"] = [
                {"id": tc.get("id", ""), "type": tc.get("type", "function"),
                 "function": {"name": (tc.get("function") or {}).get("name", ""),
                              "arguments": (tc.get("function") or {}).get("arguments", "")}}
                for tc in msg["tool_calls"]
            ]
        return out
    if role == "tool":
        return {"role": "tool", "content": msg.get("content"), "tool_call_id": msg.get("tool_call_id")}
    if role == "function":
        return {"role": "function", "content": msg.get("content"), "name": msg.get("name")}
    raise ValueError(f"unknown message role: {role!r}")


def canonical_request(body: dict) -> dict:
    """The current form (tee-gateway since March 2026, and the SDK 1.1.4's ``build_inner_request``)."""
    temperature = body.get("temperature")
    d: dict[str, Any] = {
        "model": body.get("model"),
        "messages": [_canonical_message(m) for m in body.get("messages") or []],
        "temperature": float(temperature) if temperature is not None else 0.0,
    }
    if body.get("max_tokens") is not None:
        d["max_tokens"] = body["max_tokens"]
    if body.get("stop"):
        d["stop"] = body["stop"]
    if body.get("tools"):
        d["tools"] = body["tools"]
    if body.get("response_format"):
        d["response_format"] = body["response_format"]
    if body.get("web_search"):
        d["web_search"] = True
    return d


def pydantic_2026_02_request(body: dict) -> dict:
    """The February 2026 form (tee-gateway's FastAPI ``server.py``: ``ChatRequest.dict()``): every
    model field present, nulls included, ``tool_choice`` defaulting to "auto"."""
    temperature = body.get("temperature")
    max_tokens = body.get("max_tokens")
    return {
        "model": body.get("model"),
        "messages": [
            {"role": m.get("role"), "content": m.get("content"), "tool_calls": m.get("tool_calls"),
             "tool_call_id": m.get("tool_call_id"), "name": m.get("name")}
            for m in body.get("messages") or []
        ],
        "temperature": float(temperature) if temperature is not None else 0.0,
        "max_tokens": int(max_tokens) if max_tokens is not None else None,
        "stop": body.get("stop"),
        "tools": [{"type": t.get("type", "function"), "function": t.get("function")} for t in body["tools"]]
        if body.get("tools") else None,
        "tool_choice": body.get("tool_choice", "auto"),
    }


def body_request(body: dict) -> dict:
    """The whole request body as received (no OpenGradient version hashes this: for negative tests)."""
    return body


REQUEST_HASH_FORMS = {
    "canonical": canonical_request,
    "pydantic-2026-02": pydantic_2026_02_request,
    "body": body_request,
}
"""Which request object the gateway hashes, by name; ``canonical`` is the default."""


def request_hash_bytes(body: dict, form: str) -> bytes:
    return json.dumps(REQUEST_HASH_FORMS[form](body), sort_keys=True).encode("utf-8")


# ---------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------


class TeeKey:
    """An RSA-2048 signing key; ``tee_id`` = keccak256 of its DER SubjectPublicKeyInfo."""

    def __init__(self) -> None:
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.public_pem = self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        self.tee_id = "0x" + keccak(self.public_der).hex()

    def sign(self, message: bytes) -> str:
        sig = self.private_key.sign(
            message, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())
        return base64.b64encode(sig).decode()


def make_tls_certificate(directory: str) -> tuple[str, str, bytes]:
    """A self-signed certificate for 127.0.0.1 / localhost: (cert path, key path, cert DER)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "og-testbed-tee")])
    now = _dt.datetime.now(_dt.timezone.utc)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(directory, "tee-cert.pem"), os.path.join(directory, "tee-key.pem")
    with open(cert_path, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    return cert_path, key_path, cert.public_bytes(serialization.Encoding.DER)


# ---------------------------------------------------------------------------------------------
# Faults (test controls)
# ---------------------------------------------------------------------------------------------


class Faults:
    """Counters of faults to apply to the next calls (each use takes one off).

    - ``alter_answer``: the answer is changed after it was signed (its output hash no longer matches)
    - ``unregistered_key``: signed with a key that is not in the registry; ``tee_id`` still claims
      the registered TEE
    - ``unregistered_tee_id``: signed with the unregistered key, and ``tee_id`` is that key's own id
    - ``revert_individual``: the next individual settlement names a TEE id the registry does not
      know, so its (pre-signed, broadcast) transaction reverts
    - ``drop_individual``: the next individual settlement's transaction is signed and its hash
      answered, but it is never broadcast (its nonce goes to the next one)
    - ``omit_leaf``: the next batch item is accepted but left out of its tree
    - ``never_settle_session``: ``"next"`` (the next session created), a session id, or a list
    """

    COUNTERS = ("alter_answer", "unregistered_key", "unregistered_tee_id", "revert_individual",
                "drop_individual", "omit_leaf")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.never_settle: set[str] = set()
        self.never_settle_next = 0

    def update(self, spec: dict) -> None:
        with self._lock:
            for key, value in spec.items():
                if key in self.COUNTERS:
                    self.counts[key] = self.counts.get(key, 0) + int(value)
                elif key == "never_settle_session":
                    for v in value if isinstance(value, list) else [value]:
                        if v == "next":
                            self.never_settle_next += 1
                        else:
                            self.never_settle.add(str(v))
                elif key == "clear" and value:
                    self.counts.clear()
                    self.never_settle.clear()
                    self.never_settle_next = 0
                else:
                    raise ValueError(f"unknown fault: {key}")

    def take(self, name: str) -> bool:
        with self._lock:
            if self.counts.get(name, 0) > 0:
                self.counts[name] -= 1
                return True
            return False

    def session_created(self, session_id: str) -> None:
        with self._lock:
            if self.never_settle_next > 0:
                self.never_settle_next -= 1
                self.never_settle.add(session_id)

    def describe(self) -> dict:
        with self._lock:
            return {"counts": {k: v for k, v in self.counts.items() if v}, "never_settle": sorted(self.never_settle),
                    "never_settle_next": self.never_settle_next}


# ---------------------------------------------------------------------------------------------
# Chain and blob store access
# ---------------------------------------------------------------------------------------------


def _no_proxy_web3(url: str):
    import requests
    from web3 import Web3

    session = requests.Session()
    session.trust_env = False
    return Web3(Web3.HTTPProvider(url, session=session, request_kwargs={"timeout": 30}))


class BlobStore:
    """A Walrus-like publisher: ``PUT {url}/v1/blobs`` stores bytes and answers the blob id."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def put(self, data: bytes) -> str:
        req = urllib.request.Request(self.url + "/v1/blobs", data=data, method="PUT",
                                     headers={"Content-Type": "application/octet-stream"})
        with self._opener.open(req, timeout=15) as resp:
            reply = json.loads(resp.read())
        return blob_id_of_reply(reply)


def blob_id_of_reply(reply: Any) -> str:
    """The blob id in a Walrus publisher answer (``newlyCreated.blobObject.blobId`` or
    ``alreadyCertified.blobId``), or a plain ``{"blobId": …}``."""
    if isinstance(reply, dict):
        if isinstance(reply.get("newlyCreated"), dict):
            obj = reply["newlyCreated"].get("blobObject") or {}
            if obj.get("blobId"):
                return str(obj["blobId"])
        if isinstance(reply.get("alreadyCertified"), dict) and reply["alreadyCertified"].get("blobId"):
            return str(reply["alreadyCertified"]["blobId"])
        for key in ("blobId", "blob_id", "id"):
            if reply.get(key):
                return str(reply[key])
    raise ValueError(f"no blob id in the blob store's answer: {reply!r}")


class TxSender:
    """Signs and sends transactions from one account on one chain, with its own nonce counter."""

    def __init__(self, rpc_url: str, private_key: str):
        self.w3 = _no_proxy_web3(rpc_url)
        self.account = Account.from_key(private_key)
        self._lock = threading.Lock()
        self._nonce: int | None = None
        self.chain_id = self.w3.eth.chain_id

    @property
    def address(self) -> str:
        return self.account.address

    def _fees(self) -> tuple[int, int]:
        base = int(self.w3.eth.get_block("latest").get("baseFeePerGas") or 0)
        tip = 1_000_000
        return 2 * base + tip, tip

    def sign(self, to: str, data: bytes, *, gas: int = SETTLEMENT_GAS_LIMIT,
             consume_nonce: bool = True) -> tuple[bytes, str, int]:
        """A signed EIP-1559 transaction, its hash (known before it is broadcast) and its nonce.
        ``consume_nonce=False``: the next transaction gets the same nonce (this one is never sent)."""
        with self._lock:
            if self._nonce is None:
                self._nonce = self.w3.eth.get_transaction_count(self.address, "pending")
            nonce = self._nonce
            if consume_nonce:
                self._nonce += 1
        max_fee, tip = self._fees()
        tx = {"chainId": self.chain_id, "to": to_checksum_address(to), "data": data, "gas": gas,
              "maxFeePerGas": max_fee, "maxPriorityFeePerGas": tip, "nonce": nonce, "type": 2, "value": 0}
        signed = self.account.sign_transaction(tx)
        raw = bytes(signed.raw_transaction)
        return raw, "0x" + keccak(raw).hex(), nonce

    def broadcast(self, raw: bytes) -> None:
        self.w3.eth.send_raw_transaction(raw)

    def wait(self, tx_hash: str, timeout: float = 30.0) -> dict:
        return dict(self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout, poll_latency=0.05))


# ---------------------------------------------------------------------------------------------
# OpenZeppelin StandardMerkleTree
# ---------------------------------------------------------------------------------------------


def _abi_value(kind: str, value: Any) -> Any:
    if kind in ("bytes32", "bytes"):
        return bytes.fromhex(str(value).removeprefix("0x"))
    if kind == "uint256":
        return int(value)
    return value


def leaf_hash(values: list, encoding: list[str] = LEAF_ENCODING) -> bytes:
    """keccak256(keccak256(abi.encode(values)))"""
    return keccak(keccak(abi_encode(encoding, [_abi_value(k, v) for k, v in zip(encoding, values)])))


def _hash_pair(a: bytes, b: bytes) -> bytes:
    return keccak(b"".join(sorted((a, b))))


def standard_merkle_tree(values: list[list], encoding: list[str] = LEAF_ENCODING) -> dict:
    """``StandardMerkleTree.of(values, encoding).dump()``: leaves sorted by hash, laid out from the
    end of the array, each inner node the sorted-pair hash of its children."""
    if not values:
        raise ValueError("a Merkle tree needs at least one value")
    hashed = sorted(((leaf_hash(v, encoding), i) for i, v in enumerate(values)), key=lambda t: t[0])
    n = len(hashed)
    tree: list[bytes] = [b""] * (2 * n - 1)
    tree_index: dict[int, int] = {}
    for k, (h, value_index) in enumerate(hashed):
        tree[len(tree) - 1 - k] = h
        tree_index[value_index] = len(tree) - 1 - k
    for i in range(len(tree) - 1 - n, -1, -1):
        tree[i] = _hash_pair(tree[2 * i + 1], tree[2 * i + 2])
    return {
        "format": "standard-v1",
        "leafEncoding": list(encoding),
        "tree": ["0x" + node.hex() for node in tree],
        "values": [{"value": v, "treeIndex": tree_index[i]} for i, v in enumerate(values)],
    }


# ---------------------------------------------------------------------------------------------
# Data settlement on the OpenGradient chain (what the inference facilitator's /settle_data does)
# ---------------------------------------------------------------------------------------------


def _bytes32(value: Any, name: str) -> str:
    s = str(value or "").strip()
    s = s if s.startswith("0x") else "0x" + s
    if not re.fullmatch(r"0x[0-9a-fA-F]{64}", s):
        raise ValueError(f"invalid {name}: expected bytes32 hex")
    return s.lower()


def _b64_to_hex(value: str) -> str:
    raw = base64.b64decode(str(value).strip())
    if not raw:
        raise ValueError("invalid teeSignature: empty")
    return "0x" + raw.hex()


def _iso_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class BatchItem:
    tee_id: str
    input_hash: str
    output_hash: str
    signature_hex: str
    timestamp: str
    job_id: str
    omitted: bool = False

    def value(self) -> list:
        return [self.tee_id, self.input_hash, self.output_hash, self.signature_hex, self.timestamp]


@dataclass
class DataSettlement:
    """The OpenGradient-chain half of the facilitator: individual and batch proof records."""

    og_rpc: str
    relay: str
    individual_key: str
    batch_key: str
    blobs: BlobStore
    faults: Faults
    batch_size: int = 20
    batch_idle: float = 300.0
    batch_max_age: float = 900.0
    individual: list[dict] = field(default_factory=list)
    batches: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._individual_sender = TxSender(self.og_rpc, self.individual_key)
        self._batch_sender = TxSender(self.og_rpc, self.batch_key)
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._buffer: list[BatchItem] = []
        self._first_at: float | None = None
        self._last_at: float | None = None
        self._broadcast_queue: list[tuple[dict, bytes | None]] = []
        self._broadcast_cv = threading.Condition()
        self._stop = threading.Event()
        threading.Thread(target=self._broadcaster, daemon=True, name="individual-broadcast").start()
        threading.Thread(target=self._batch_timer, daemon=True, name="batch-timer").start()

    @property
    def individual_signer(self) -> str:
        return self._individual_sender.address

    @property
    def batch_signer(self) -> str:
        return self._batch_sender.address

    # -- /settle_data -----------------------------------------------------------------------------
    def settle_data(self, settlement_type: str, settlement_data: str | None) -> dict | None:
        kind = re.sub(r"[\s_-]+", "", settlement_type or "").lower()
        if kind in ("private", "pivate"):
            return None
        if not settlement_data:
            raise ValueError("Missing x-settlement-data header for settlement type")
        data = json.loads(base64.b64decode(settlement_data).decode("utf-8"))
        if kind == "batch":
            return {"settlementJob": self._add_batch_item(data)}
        if kind in ("individual", "inidvidual"):
            return {"settlementJob": self._individual(data)}
        raise ValueError(f"Unsupported x-settlement-type: {settlement_type}")

    # -- individual -------------------------------------------------------------------------------
    def _individual(self, data: dict) -> dict:
        tee_id = _bytes32(data["tee_id"], "teeId")
        input_hash = _bytes32(data["input_hash"], "inputHash")
        output_hash = _bytes32(data["output_hash"], "outputHash")
        timestamp = int(str(data["timestamp"]))
        eth_address = to_checksum_address(data["eth_address"])
        signature_hex = _b64_to_hex(data["tee_signature"])
        fault = None
        if self.faults.take("revert_individual"):
            fault = "revert"
            tee_id = "0x" + keccak(text=f"unknown tee {uuid.uuid4()}").hex()
        elif self.faults.take("drop_individual"):
            fault = "drop"
        record = {"input": data.get("input"), "output": data.get("output"), "teeSignature": data["tee_signature"],
                  "teeId": tee_id, "timestamp": str(timestamp), "ethAddress": eth_address}
        blob_id = self.blobs.put(json.dumps(record, separators=(",", ":")).encode())
        calldata = SETTLE_INDIVIDUAL_SELECTOR + abi_encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address", "bytes", "bytes"],
            [bytes.fromhex(tee_id[2:]), bytes.fromhex(input_hash[2:]), bytes.fromhex(output_hash[2:]), timestamp,
             eth_address, blob_id.encode("utf-8"), bytes.fromhex(signature_hex[2:])])
        raw, tx_hash, nonce = self._individual_sender.sign(self.relay, calldata, consume_nonce=fault != "drop")
        now = _iso_now()
        job = {"jobId": f"settlement-individual-{uuid.uuid4()}", "queue": INDIVIDUAL_QUEUE, "status": "waiting",
               "createdAt": now, "updatedAt": now, "settlementType": "individual", "queueNonce": nonce,
               "signerAddress": self.individual_signer, "txHash": tx_hash, "walrusBlobId": blob_id}
        entry = {"job_id": job["jobId"], "tx_hash": tx_hash, "blob_id": blob_id, "tee_id": tee_id,
                 "input_hash": input_hash, "output_hash": output_hash, "timestamp": timestamp,
                 "eth_address": eth_address, "fault": fault, "broadcast": False, "status": None}
        with self._lock:
            self.individual.append(entry)
        with self._broadcast_cv:
            self._broadcast_queue.append((entry, None if fault == "drop" else raw))
            self._broadcast_cv.notify()
        return job

    def _broadcaster(self) -> None:
        while not self._stop.is_set():
            with self._broadcast_cv:
                while not self._broadcast_queue and not self._stop.is_set():
                    self._broadcast_cv.wait(0.5)
                if self._stop.is_set():
                    return
                entry, raw = self._broadcast_queue.pop(0)
            if raw is None:
                entry["status"] = "dropped"
                continue
            try:
                self._individual_sender.broadcast(raw)
                entry["broadcast"] = True
                receipt = self._individual_sender.wait(entry["tx_hash"])
                entry["status"] = int(receipt["status"])
                log.info("individual settlement %s status %s", entry["tx_hash"], entry["status"])
            except Exception as e:
                entry["status"] = f"error: {e}"
                log.warning("individual settlement %s failed: %s", entry["tx_hash"], e)

    def individual_idle(self) -> bool:
        with self._broadcast_cv:
            return not self._broadcast_queue and all(e["status"] is not None for e in self.individual)

    # -- batch ------------------------------------------------------------------------------------
    def _add_batch_item(self, data: dict) -> dict:
        item = BatchItem(
            tee_id=_bytes32(data["tee_id"], "teeId"), input_hash=_bytes32(data["input_hash"], "inputHash"),
            output_hash=_bytes32(data["output_hash"], "outputHash"),
            signature_hex=_b64_to_hex(data["tee_signature"]), timestamp=str(int(str(data["tee_timestamp"]))),
            job_id=f"settlement-batch-{uuid.uuid4()}", omitted=self.faults.take("omit_leaf"))
        flush_now = False
        with self._lock:
            self._buffer.append(item)
            now = time.monotonic()
            self._first_at = self._first_at or now
            self._last_at = now
            flush_now = len(self._buffer) >= self.batch_size
        if flush_now:
            threading.Thread(target=self.flush_batch, args=("size",), daemon=True).start()
        stamp = _iso_now()
        return {"jobId": item.job_id, "queue": BATCH_QUEUE, "status": "waiting", "createdAt": stamp,
                "updatedAt": stamp, "settlementType": "batch"}

    def _batch_timer(self) -> None:
        while not self._stop.wait(0.05):
            with self._lock:
                due = bool(self._buffer) and (
                    time.monotonic() - (self._last_at or 0) >= self.batch_idle
                    or time.monotonic() - (self._first_at or 0) >= self.batch_max_age)
            if due:
                self.flush_batch("timer")

    def flush_batch(self, reason: str = "request") -> dict | None:
        with self._flush_lock:
            with self._lock:
                items, self._buffer = self._buffer, []
                self._first_at = self._last_at = None
            if not items:
                return None
            included = [i for i in items if not i.omitted]
            entry: dict[str, Any] = {"reason": reason, "items": [i.__dict__ | {"value": i.value()} for i in items],
                                     "size": len(included)}
            try:
                if not included:
                    entry["status"] = "empty"
                    return entry
                dump = standard_merkle_tree([i.value() for i in included])
                blob_id = self.blobs.put(json.dumps(dump, separators=(",", ":")).encode())
                root = dump["tree"][0]
                calldata = BATCH_SETTLE_SELECTOR + abi_encode(
                    ["bytes32", "uint256", "bytes"], [bytes.fromhex(root[2:]), len(included), blob_id.encode("utf-8")])
                raw, tx_hash, _ = self._batch_sender.sign(self.relay, calldata)
                entry.update(root=root, blob_id=blob_id, tx_hash=tx_hash, dump=dump)
                self._batch_sender.broadcast(raw)
                receipt = self._batch_sender.wait(tx_hash)
                entry["status"] = int(receipt["status"])
                log.info("batch %s of %d settled in %s (status %s)", root, len(included), tx_hash, entry["status"])
                return entry
            except Exception as e:
                entry["status"] = f"error: {e}"
                log.warning("batch flush failed: %s", e)
                return entry
            finally:
                with self._lock:
                    self.batches.append(entry)

    def stop(self) -> None:
        self._stop.set()
        with self._broadcast_cv:
            self._broadcast_cv.notify_all()


# ---------------------------------------------------------------------------------------------
# The in-process facilitator the middleware talks to
# ---------------------------------------------------------------------------------------------


class LocalFacilitator:
    """``verify``/``settle`` by og-x402's upto facilitator scheme on the Base anvil, ``settle_data``
    by :class:`DataSettlement` on the OpenGradient anvil (what the inference facilitator does)."""

    def __init__(self, base_rpc: str, facilitator_key: str, data: DataSettlement):
        from x402 import x402FacilitatorSync
        from x402.mechanisms.evm import FacilitatorWeb3Signer
        from x402.mechanisms.evm.upto import UptoEvmFacilitatorScheme

        self._signer = FacilitatorWeb3Signer(private_key=facilitator_key, rpc_url=base_rpc)
        # the signer's web3 must not use proxy variables (everything is on 127.0.0.1), and its
        # eth_call simulations must come from the facilitator: the upto proxy's settle() reverts
        # UnauthorizedFacilitator unless msg.sender is the witness's facilitator, and og-x402's
        # FacilitatorWeb3Signer.read_contract() sends no "from" (OpenGradient's own facilitator is
        # TypeScript and does not go through it)
        w3 = _no_proxy_poa_web3(base_rpc)
        w3.eth.default_account = self._signer.address
        self._signer._w3 = w3  # type: ignore[attr-defined]
        # (og-x402 0.0.2.dev2's register_upto_evm_facilitator() raises ImportError: it imports a name
        # its facilitator package does not export, so the scheme is registered directly)
        self._facilitator = x402FacilitatorSync().register([NETWORK], UptoEvmFacilitatorScheme(self._signer))
        self.data = data
        self.settlements: list[dict] = []

    @property
    def address(self) -> str:
        return self._signer.address

    def get_supported(self):
        return self._facilitator.get_supported()

    def verify(self, payload, requirements):
        result = self._facilitator.verify(payload, requirements)
        log.info("verify: valid=%s reason=%s payer=%s", result.is_valid, result.invalid_reason, result.payer)
        return result

    def settle(self, payload, requirements, settlement_type=None, settlement_data=None):
        result = self._facilitator.settle(payload, requirements)
        tx = result.transaction or ""
        if tx and not tx.startswith("0x"):
            result = result.model_copy(update={"transaction": "0x" + tx})
        self.settlements.append({"success": result.success, "transaction": result.transaction,
                                 "amount": result.amount, "payer": result.payer,
                                 "error": result.error_reason, "message": result.error_message})
        log.info("settle: success=%s tx=%s amount=%s error=%s %s", result.success, result.transaction,
                 result.amount, result.error_reason, result.error_message or "")
        return result

    def settle_data(self, settlement_type: str, settlement_data: str | None = None):
        return self.data.settle_data(settlement_type, settlement_data)


def _no_proxy_poa_web3(url: str):
    from web3.middleware import ExtraDataToPOAMiddleware

    w3 = _no_proxy_web3(url)
    w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    return w3


# ---------------------------------------------------------------------------------------------
# The middleware, as og-x402 ships it, with test hooks
# ---------------------------------------------------------------------------------------------


def make_session_store(faults: Faults):
    from x402.session import SessionStore

    class TestbedSessionStore(SessionStore):
        """og-x402's in-memory store, remembering settled sessions and obeying never-settle faults."""

        def __init__(self) -> None:
            super().__init__()
            self.settled: list[dict] = []

        def create_session(self, *args, **kwargs) -> str:
            session_id = super().create_session(*args, **kwargs)
            faults.session_created(session_id)
            return session_id

        def mark_settled(self, session_id: str, tx_hash: str) -> None:
            session = self.get_session(session_id)
            super().mark_settled(session_id, tx_hash)
            if session is not None:
                self.settled.append(describe_session(session) | {"settled": True, "settlement_tx": tx_hash})

        def open_sessions(self) -> list:
            with self._lock:
                return [s for s in self._sessions.values() if not s.settled]

    return TestbedSessionStore()


def describe_session(s) -> dict:
    auth = (s.permit_payload.get("payload") or {}).get("permit2Authorization") or {}
    return {"session_id": s.session_id, "payer": auth.get("from"), "nonce": auth.get("nonce"),
            "cap": str(s.max_amount), "accumulated": str(s.accumulated_cost), "settled": s.settled,
            "settling": s.settling, "settlement_tx": s.settlement_tx, "created_at": s.created_at,
            "last_activity": s.last_activity}


def make_middleware_class():
    from x402.http.middleware.flask import PaymentMiddleware

    class TestbedPaymentMiddleware(PaymentMiddleware):
        """og-x402's Flask ``PaymentMiddleware``; the reaper checks every ``reaper_interval`` seconds
        (og-x402 never checks more often than every 5 s), sessions named by a fault are never
        settled, and :meth:`settle_now` settles open sessions on request."""

        reaper_interval = 0.25
        faults: Faults | None = None

        def _reaper_loop(self) -> None:
            while not self._reaper_stop.wait(timeout=self.reaper_interval):
                try:
                    self._settle_ready_sessions()
                except Exception:
                    log.exception("session reaper")

        def _settle_session(self, session) -> None:
            if self.faults is not None and session.session_id in self.faults.never_settle:
                return
            super()._settle_session(session)

        def settle_now(self) -> list[dict]:
            done = []
            for session in self._session_store.open_sessions():
                if session.accumulated_cost <= 0:
                    continue
                before = session.settled
                self._settle_session(session)
                if session.settled and not before:
                    done.append(describe_session(session))
            return done

    return TestbedPaymentMiddleware


# ---------------------------------------------------------------------------------------------
# The fake, signing LLM (the gateway's chat controller)
# ---------------------------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def fake_answer(body: dict) -> str:
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    last_user = next((_text_of(m.get("content")) for m in reversed(messages)
                      if isinstance(m, dict) and m.get("role") == "user"), "")
    return f"You said: {last_user}" if last_user else "Hello from the OpenGradient test bed."


def fake_usage(body: dict, answer: str) -> dict:
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    prompt = sum(len(_text_of(m.get("content")).split()) for m in messages if isinstance(m, dict))
    completion = len(answer.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


@dataclass
class Gateway:
    config: dict
    key: TeeKey
    spare_key: TeeKey
    faults: Faults
    calls: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def prove(self, body: dict, output: str) -> tuple[dict, dict]:
        """The tee_* fields for ``output`` (and a note of which faults were applied)."""
        form = self.config.get("request_hash_form", "canonical")
        input_hash = keccak(request_hash_bytes(body, form))
        output_hash = keccak(output.encode("utf-8"))
        timestamp = int(time.time())
        message = keccak(input_hash + output_hash + timestamp.to_bytes(32, "big"))
        signer, claimed = self.key, self.key.tee_id
        applied: dict[str, Any] = {}
        if self.faults.take("unregistered_key"):
            signer, applied["unregistered_key"] = self.spare_key, True
        elif self.faults.take("unregistered_tee_id"):
            signer = self.spare_key
            claimed = self.spare_key.tee_id
            applied["unregistered_tee_id"] = True
        fields = {"tee_signature": signer.sign(message), "tee_request_hash": input_hash.hex(),
                  "tee_output_hash": output_hash.hex(), "tee_timestamp": timestamp, "tee_id": claimed}
        return fields, applied

    def record(self, entry: dict) -> None:
        with self._lock:
            self.calls.append(entry)


def build_app(gw: Gateway, data: DataSettlement, facilitator: LocalFacilitator):
    from flask import Flask, Response, g, jsonify, request

    app = Flask("og_gateway")
    cfg = gw.config

    @app.post(CHAT_PATH)
    def chat():
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return {"error": "Unsupported Media Type", "message": "Request must be application/json"}, 415
        try:
            REQUEST_HASH_FORMS["canonical"](body)
        except ValueError as e:
            return {"error": str(e)}, 400
        model = str(body.get("model") or "")
        answer = fake_answer(body)
        usage = fake_usage(body, answer)
        sent = answer
        if gw.faults.take("alter_answer"):
            sent = answer + " (altered after signing)"
        call = {"n": len(gw.calls) + 1, "stream": bool(body.get("stream")), "model": model,
                "settlement_type": request.headers.get("X-SETTLEMENT-TYPE"),
                "session_id": g.get("x402_session_id"), "request": body, "answer_signed": answer,
                "answer_sent": sent,
                "request_hashes": {name: keccak(request_hash_bytes(body, name)).hex() for name in REQUEST_HASH_FORMS}}
        if not body.get("stream"):
            tee, applied = gw.prove(body, answer)
            call.update(tee=tee, faults=applied)
            gw.record(call)
            return {
                "id": f"chatcmpl-{uuid.uuid4()}", "object": "chat.completion", "created": tee["tee_timestamp"],
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": sent}, "finish_reason": "stop"}],
                **tee, "usage": usage,
            }

        pieces = re.findall(r"\S+\s*", sent) or [sent]
        delay = float(cfg.get("stream_delay", 0.0))

        def generate():
            for piece in pieces:
                chunk = {"choices": [{"delta": {"content": piece, "role": "assistant"}, "index": 0,
                                      "finish_reason": None}], "model": model}
                yield f"data: {json.dumps(chunk)}\n\n"
                if delay:
                    time.sleep(delay)
            tee, applied = gw.prove(body, answer)
            call.update(tee=tee, faults=applied)
            gw.record(call)
            final = {"choices": [{"delta": {}, "index": 0, "finish_reason": "stop"}], "model": model, **tee,
                     "usage": usage}
            yield f"data: {json.dumps(final)}\n\n"
            yield "data: [DONE]\n\n"

        return Response(generate(), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "Connection": "keep-alive"})

    @app.get("/health")
    def health():
        return {"status": "OK", "version": "1.0.0", "tee_enabled": True}

    @app.get("/signing-key")
    def signing_key():
        return jsonify({"public_key": gw.key.public_pem, "tee_id": gw.key.tee_id,
                        "timestamp": _iso_now(), "enclave_info": {"platform": "og-testbed"}, "measurements": None})

    @app.post("/_testbed/faults")
    def set_faults():
        try:
            gw.faults.update(request.get_json(force=True) or {})
        except (ValueError, TypeError) as e:
            return {"error": str(e)}, 400
        return gw.faults.describe()

    @app.post("/_testbed/config")
    def configure():
        spec = request.get_json(force=True) or {}
        unknown = set(spec) - {"cost_per_request", "session_idle", "batch_idle", "batch_max_age", "batch_size",
                               "request_hash_form", "stream_delay"}
        if unknown or spec.get("request_hash_form", "canonical") not in REQUEST_HASH_FORMS:
            return {"error": f"cannot change {sorted(unknown) or spec.get('request_hash_form')}"}, 400
        cfg.update(spec)
        mw = app.config["x402_middleware"]
        if "session_idle" in spec:
            mw._session_idle_timeout = float(spec["session_idle"])
        for name in ("batch_idle", "batch_max_age"):
            if name in spec:
                setattr(data, name, float(spec[name]))
        if "batch_size" in spec:
            data.batch_size = int(spec["batch_size"])
        return {k: v for k, v in cfg.items() if not k.endswith("_key")}

    @app.post("/_testbed/flush")
    def flush():
        spec = request.get_json(silent=True) or {}
        out: dict[str, Any] = {}
        if spec.get("sessions", True):
            out["sessions"] = app.config["x402_middleware"].settle_now()
        if spec.get("batches", True):
            out["batch"] = _public_batch(data.flush_batch("request"))
        deadline = time.monotonic() + 20
        while spec.get("individual", True) and not data.individual_idle() and time.monotonic() < deadline:
            time.sleep(0.05)
        return out

    @app.get("/_testbed/state")
    def state():
        mw = app.config["x402_middleware"]
        store = mw._session_store
        return {
            "tee_id": gw.key.tee_id, "spare_tee_id": gw.spare_key.tee_id,
            "facilitator": facilitator.address, "individual_signer": data.individual_signer,
            "batch_signer": data.batch_signer, "request_hash_form": cfg.get("request_hash_form", "canonical"),
            "faults": gw.faults.describe(),
            "sessions": [describe_session(s) for s in store.open_sessions()],
            "settled_sessions": list(store.settled),
            "payment_settlements": list(facilitator.settlements),
            "individual": list(data.individual),
            "batches": [_public_batch(b) for b in data.batches],
            "calls": list(gw.calls),
        }

    return app


def _public_batch(entry: dict | None) -> dict | None:
    return None if entry is None else json.loads(json.dumps(entry, default=str))


def install_payment_middleware(app, gw: Gateway, facilitator: LocalFacilitator):
    """og-x402's session middleware, configured as the real gateway configures it."""
    from x402.extensions.erc20_approval_gas_sponsoring import declare_erc20_approval_gas_sponsoring_extension
    from x402.http import PaymentOption
    from x402.http.types import RouteConfig
    from x402.mechanisms.evm.upto import UptoEvmServerScheme
    from x402.schemas import AssetAmount
    from x402.server import x402ResourceServerSync

    cfg = gw.config
    server = x402ResourceServerSync(facilitator)
    server.register(NETWORK, UptoEvmServerScheme())
    option = PaymentOption(
        scheme="upto", pay_to=cfg["pay_to"], network=NETWORK,
        price=AssetAmount(amount=str(cfg.get("cap", SESSION_CAP)), asset=cfg.get("asset", OPG_ADDRESS),
                          extra={"name": "OpenGradient", "version": "1", "assetTransferMethod": "permit2"}))
    routes = {f"POST {CHAT_PATH}": RouteConfig(
        accepts=[option], extensions={**declare_erc20_approval_gas_sponsoring_extension()},
        mime_type="application/json", description="Chat completion")}
    # Oblivious HTTP (testbed/og_ohttp.py): paid like the chat, as the real gateway's "POST /v1/ohttp" route
    routes[f"POST {OHTTP_PATH}"] = RouteConfig(
        accepts=[option], extensions={**declare_erc20_approval_gas_sponsoring_extension()},
        mime_type="message/ohttp-req", description="Anonymous chat completion (Oblivious HTTP)")
    def cost(_ctx: dict) -> int:  # read at each call: /_testbed/config may change it
        return int(cfg.get("cost_per_request", COST_PER_REQUEST))

    mw_class = make_middleware_class()
    mw_class.reaper_interval = float(cfg.get("reaper_interval", 0.25))
    mw_class.faults = gw.faults
    mw = mw_class(app, routes, server, session_store=make_session_store(gw.faults),
                  cost_per_request=cost({}), session_idle_timeout=float(cfg.get("session_idle", 100)),
                  session_cost_calculator=cost)
    app.config["x402_middleware"] = mw
    return mw


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from werkzeug.serving import make_server

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="JSON file with the gateway's settings")
    args = ap.parse_args(argv)
    with open(args.config) as fh:
        cfg = json.load(fh)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("x402").setLevel(logging.WARNING if not cfg.get("verbose") else logging.INFO)

    faults = Faults()
    key, spare = TeeKey(), TeeKey()
    workdir = cfg.get("workdir") or os.path.dirname(os.path.abspath(args.config))
    cert_path, key_path, cert_der = make_tls_certificate(workdir)
    data = DataSettlement(
        og_rpc=cfg["og_rpc"], relay=cfg["relay"], individual_key=cfg["individual_key"], batch_key=cfg["batch_key"],
        blobs=BlobStore(cfg["blob_url"]), faults=faults, batch_size=int(cfg.get("batch_size", 20)),
        batch_idle=float(cfg.get("batch_idle", 300)), batch_max_age=float(cfg.get("batch_max_age", 900)))
    facilitator = LocalFacilitator(cfg["base_rpc"], cfg["facilitator_key"], data)
    gw = Gateway(cfg, key, spare, faults)
    app = build_app(gw, data, facilitator)
    # Oblivious HTTP: an X25519 key of this run (its public half goes into the registry's ohttpConfig)
    from og_ohttp import HpkeKey, install_ohttp_routes

    install_ohttp_routes(app, HpkeKey(), calls=lambda: gw.calls,
                         cost=lambda: int(cfg.get("cost_per_request", COST_PER_REQUEST)))
    install_payment_middleware(app, gw, facilitator)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server = make_server(cfg.get("host", "127.0.0.1"), int(cfg.get("port", 0)), app, threaded=True,
                         ssl_context=context)

    def _stop(*_: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    ready = {"port": server.server_port, "tee_id": key.tee_id, "public_key_der": base64.b64encode(key.public_der).decode(),
             "tls_cert_der": base64.b64encode(cert_der).decode(), "spare_tee_id": spare.tee_id,
             "spare_public_key_der": base64.b64encode(spare.public_der).decode(),
             "facilitator": facilitator.address, "individual_signer": data.individual_signer,
             "batch_signer": data.batch_signer}
    print("OG_GATEWAY_READY " + json.dumps(ready), flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        data.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
