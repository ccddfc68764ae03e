"""MPP **session** intents (the ``tempo`` method's TIP-1034 payment channel) with the REAL ``mppx`` npm SDK
(0.11.0), client and server, settling on a local Tempo chain.

    from testbed.mpp_session import mpp_session_stack

    with mpp_session_stack(price=10_000, suggested_deposit=30_000) as s:
        run = s.run_session(calls=5)              # open + 5 paid calls (+ a top-up) + close, one channel
        run.calls[0].action, run.calls[1].action  # "open", "voucher"
        run.calls[1].credential                   # decoded Authorization: {challenge, payload, source}
        run.calls[1].receipt                      # decoded Payment-Receipt {channelId, acceptedCumulative, spent…}
        run.close_receipt["txHash"]               # the close transaction on anvil
        s.reserve_events(run.close_receipt["txHash"])  # [{event: "ChannelClosed", args: {settledToPayee…}}]

        with s.client(proxy=mitm_url, verify=mitm_ca) as c:   # or drive the calls yourself
            first = c.call(); second = c.call(); closed = c.close()

What runs, all on 127.0.0.1:

- **the chain**: anvil (npm ``@foundry-rs/anvil`` 1.7.1) with ``--network tempo --hardfork T4`` and chain id 4217,
  as in :mod:`testbed.mpp` (pathUSD and the other TIP-20 precompiles, type-0x76 transactions, expiring nonces).
  No clock lead is needed: viem signs expiring-nonce transactions with ``validBefore = now + 25`` s, inside
  anvil's 30 s cap.
- **the channel reserve**: anvil 1.7.1 has no TIP-1034 precompile, so the test bed's own contract
  (``testbed/contracts/TestChannelReserve.sol``: the ABI, events, errors, channel ids and EIP-712 vouchers mppx
  uses, secp256k1 voucher signatures checked on chain) is put at the precompile's address
  :data:`RESERVE` (``0x4d5050…``, "MPP") with ``anvil_setCode``. It differs from the precompile in two
  places, both documented in the contract: the payer grants it a pathUSD allowance once (a real ``approve``
  transaction at start), and the transaction context hash that binds a channel id to its open transaction
  (``expiringNonceHash = keccak256(encodeForSigning(tx) || sender)``, which the real node hands the
  precompile) is seeded by the JSON-RPC front below.
- **a JSON-RPC front** (:class:`ReserveRpc`, a :class:`testbed.mpp.TempoRpc`): forwards everything to anvil and
  logs who called what. When a signed transaction that calls the reserve's ``open`` is broadcast, it computes the
  transaction's context hash and sender from the raw bytes and writes it to the reserve's
  ``openContextHash[sender]`` (``anvil_setStorageAt``) just before forwarding. A simulated ``open`` has no
  signed transaction, so it gets a placeholder hash: as a state override for ``eth_call``, written to storage
  for ``eth_fillTransaction``/``eth_estimateGas`` (the broadcast that follows overwrites it).
  ``eth_sendRawTransactionSync`` loses its timeout parameter (as in :mod:`testbed.mpp`).
- **dust in the reserve**: the deployer gives the reserve :data:`RESERVE_DUST` (1 base unit) at start, so its
  TIP-20 balance slot exists: Tempo charges 250,000 gas per new storage slot and the gas limit anvil fills in
  for the client's open transaction covers only one (the channel's).
- **the server** (``testbed/mpp_session/server.mjs``, a Node child): ``Mppx.create`` with
  ``tempo.session({account: payee, currency, suggestedDeposit, …})``; ``POST /v1/chat/completions`` costs
  ``price`` atomic units per call (``unitType: "request"``). The payee's key signs the close (and the optional
  scheduled ``settle``) transactions. Its RPC is the front's ``/server`` path.
- **the client** (``testbed/mpp_session/client.mjs``, a Node child per :class:`SessionClient`):
  ``tempo.session.manager({account: payer, maxDeposit, topUpAmount})``, driven over stdin; its paid HTTP goes
  through ``proxy`` (default: the environment's) trusting ``verify`` (``NODE_EXTRA_CA_CERTS``); its RPC is the
  front's ``/client`` path, never proxied.

The npm packages (``testbed/mpp_session/package.json``: ``mppx`` 0.11.0, ``viem`` 2.57.13 — 2.57.16 and later
declare an optional peer ``mppx >= 0.17`` that npm refuses next to 0.11.0 —, ``undici``) are installed on first
use into ``testbed/mpp_session/node_modules`` by :func:`ensure_npm_packages`.

``python -m testbed.mpp_session`` starts the stack, prints it as JSON and runs until Ctrl-C;
``python -m testbed.mpp_session --demo 3`` runs one session of 3 calls and prints every header decoded.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from . import ROOT
from .chain import DEPLOYER, PAYEE, PAYER, DevAccount
from .service import serve_until_stopped
from .mpp import TEMPO_CHAIN_ID, OnTempo, TempoRpc
from .mpp_server import PATH_USD, decimal_amount
from .node import Anvil, OutputPump, _PRCTL, _child_setup, popen_child, rpc_call, start_anvil, stop_child

__all__ = ["RESERVE", "MppSessionStack", "SessionClient", "SessionCall", "SessionRun", "ReserveRpc",
           "mpp_session_stack", "expiring_nonce_hash", "parse_www_authenticate", "parse_authorization",
           "b64url_json", "ensure_npm_packages", "install_reserve", "compute_channel_id", "voucher_digest",
           "voucher_signer", "sign_voucher", "decode_reserve_events", "token_transfers", "tempo_calls",
           "encode_reserve_call", "describe_call", "SessionError", "SessionServer", "RESERVE_DUST"]

RESERVE = "0x4d50500000000000000000000000000000000000"
"""The TIP-1034 TIP-20 channel reserve precompile's address (mppx ``tip20ChannelEscrow``)."""
HARDFORK = "T4"
NODE_DIR = ROOT / "testbed" / "mpp_session"
SERVER_JS = NODE_DIR / "server.mjs"
CLIENT_JS = NODE_DIR / "client.mjs"
PRELOAD = ROOT / "receipts" / "node" / "preload.cjs"
NPM_PINS = {"mppx": "0.11.0", "viem": "2.57.13", "undici": "6.29.1"}
CHAT_PATH = "/v1/chat/completions"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
CONTEXT_SLOT_INDEX = 1
"""``openContextHash`` is the reserve contract's storage slot 1 (a mapping sender -> bytes32)."""
MAX_UINT256 = 2**256 - 1
FEE_MANAGER = "0xfeec000000000000000000000000000000000000"


def _keccak(data: bytes) -> bytes:
    from eth_hash.auto import keccak

    return keccak(data)


OPEN_SELECTOR = _keccak(b"open(address,address,address,uint96,bytes32,address)")[:4]
TRANSFER_TOPIC = "0x" + _keccak(b"Transfer(address,address,uint256)").hex()


# ---------------------------------------------------------------------------------------------
# The channel reserve contract
# ---------------------------------------------------------------------------------------------


def reserve_artifact() -> dict:
    from .contracts.build_channel_reserve import load_artifact

    return load_artifact()


def reserve_abi() -> list[dict]:
    return reserve_artifact()["abi"]


def install_reserve(url: str, code: str | None = None, address: str = RESERVE) -> None:
    """Put the reserve's runtime code (default: the committed artifact's) at ``address``."""
    code = code or reserve_artifact()["deployedBytecode"]
    rpc_call(url, "anvil_setCode", [address, code])
    if rpc_call(url, "eth_getCode", [address, "latest"]).lower() != code.lower():
        raise RuntimeError(f"anvil_setCode did not put the channel reserve at {address}")


def context_slot(sender: str) -> str:
    """The storage slot of ``openContextHash[sender]``: keccak256(abi.encode(sender, 1))."""
    word = bytes.fromhex(sender.lower().removeprefix("0x").rjust(64, "0"))
    return "0x" + _keccak(word + CONTEXT_SLOT_INDEX.to_bytes(32, "big")).hex()


def compute_channel_id(descriptor: dict, chain_id: int = TEMPO_CHAIN_ID, reserve: str = RESERVE) -> str:
    """keccak256(abi.encode(payer, payee, operator, token, salt, authorizedSigner, expiringNonceHash, reserve,
    chainId)): a session's channel id from the ``descriptor`` every credential carries."""
    from eth_abi import encode

    d = descriptor
    return "0x" + _keccak(encode(
        ["address", "address", "address", "address", "bytes32", "address", "bytes32", "address", "uint256"],
        [d["payer"], d["payee"], d["operator"], d["token"], bytes.fromhex(d["salt"][2:]), d["authorizedSigner"],
         bytes.fromhex(d["expiringNonceHash"][2:]), reserve, chain_id])).hex()


def voucher_digest(channel_id: str, cumulative_amount: int, chain_id: int = TEMPO_CHAIN_ID,
                   reserve: str = RESERVE) -> bytes:
    """The EIP-712 digest a voucher signs: domain ``TIP20 Channel Reserve`` v1 (chainId, the reserve),
    ``Voucher(bytes32 channelId,uint96 cumulativeAmount)``."""
    from eth_abi import encode

    domain = _keccak(encode(["bytes32", "bytes32", "bytes32", "uint256", "address"], [
        _keccak(b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
        _keccak(b"TIP20 Channel Reserve"), _keccak(b"1"), chain_id, reserve]))
    struct = _keccak(encode(["bytes32", "bytes32", "uint96"], [
        _keccak(b"Voucher(bytes32 channelId,uint96 cumulativeAmount)"), bytes.fromhex(channel_id[2:]),
        int(cumulative_amount)]))
    return _keccak(b"\x19\x01" + domain + struct)


def voucher_signer(channel_id: str, cumulative_amount: int, signature: str, chain_id: int = TEMPO_CHAIN_ID,
                   reserve: str = RESERVE) -> str:
    """The address that signed a voucher (65-byte secp256k1 ``r || s || v``), lower-case."""
    from eth_keys import keys

    sig = bytes.fromhex(signature.removeprefix("0x"))
    v = sig[64] - 27 if sig[64] >= 27 else sig[64]
    pub = keys.Signature(vrs=(v, int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"))) \
        .recover_public_key_from_msg_hash(voucher_digest(channel_id, cumulative_amount, chain_id, reserve))
    return pub.to_checksum_address().lower()


def sign_voucher(private_key: str, channel_id: str, cumulative_amount: int, chain_id: int = TEMPO_CHAIN_ID,
                 reserve: str = RESERVE) -> str:
    """A voucher signature as the SDK makes it (``r || s || v``, v 27/28), for tests that forge or replay."""
    from eth_keys import keys

    sig = keys.PrivateKey(bytes.fromhex(private_key.removeprefix("0x"))).sign_msg_hash(
        voucher_digest(channel_id, cumulative_amount, chain_id, reserve))
    return "0x" + sig.r.to_bytes(32, "big").hex() + sig.s.to_bytes(32, "big").hex() + bytes([sig.v + 27]).hex()


def encode_reserve_call(name: str, *args: Any) -> str:
    """Calldata for a reserve function (descriptors as dicts or tuples in ABI order)."""
    from eth_abi import encode

    fn = next(e for e in reserve_abi() if e["type"] == "function" and e["name"] == name)

    def canon(i: dict) -> str:
        if i["type"].startswith("tuple"):
            return "(" + ",".join(canon(c) for c in i["components"]) + ")" + i["type"][5:]
        return i["type"]

    def value(i: dict, v: Any) -> Any:
        if i["type"] == "tuple":
            v = [v[c["name"]] for c in i["components"]] if isinstance(v, dict) else v
            return tuple(value(c, x) for c, x in zip(i["components"], v))
        if i["type"].startswith("bytes") and isinstance(v, str):
            return bytes.fromhex(v.removeprefix("0x"))
        if i["type"].startswith("uint") and isinstance(v, str):
            return int(v)
        return v

    types = [canon(i) for i in fn["inputs"]]
    selector = _keccak(f"{name}({','.join(types)})".encode())[:4]
    return "0x" + selector.hex() + encode(types, [value(i, v) for i, v in zip(fn["inputs"], args)]).hex()


def _event_signature(e: dict) -> str:
    return f"{e['name']}({','.join(i['type'] for i in e['inputs'])})"


def decode_reserve_events(receipt: dict, address: str = RESERVE) -> list[dict]:
    """The reserve's events in a receipt, in log order: ``[{event, args, logIndex}]`` (bytes32 as 0x hex,
    amounts as ints, addresses lower-case)."""
    from eth_abi import decode

    events = {"0x" + _keccak(_event_signature(e).encode()).hex(): e for e in reserve_abi() if e["type"] == "event"}
    out = []
    for log in receipt.get("logs") or []:
        if log["address"].lower() != address.lower() or not log["topics"]:
            continue
        e = events.get(log["topics"][0])
        if e is None:
            continue
        indexed = [i for i in e["inputs"] if i["indexed"]]
        plain = [i for i in e["inputs"] if not i["indexed"]]
        values = decode([i["type"] for i in plain], bytes.fromhex(log["data"][2:]))
        args: dict[str, Any] = {}
        for i, topic in zip(indexed, log["topics"][1:]):
            args[i["name"]] = "0x" + topic[-40:] if i["type"] == "address" else topic
        for i, v in zip(plain, values):
            args[i["name"]] = "0x" + v.hex() if isinstance(v, bytes) else v.lower() if isinstance(v, str) else v
        out.append({"event": e["name"], "args": args, "logIndex": int(log["logIndex"], 16)})
    return out


def token_transfers(receipt: dict, token: str = PATH_USD) -> list[dict]:
    """The TIP-20 ``Transfer`` logs of ``token`` in a receipt: ``[{from, to, amount}]`` (fees go to
    ``0xfeec…``)."""
    out = []
    for log in receipt.get("logs") or []:
        if log["address"].lower() == token.lower() and log["topics"] and log["topics"][0] == TRANSFER_TOPIC:
            out.append({"from": "0x" + log["topics"][1][-40:], "to": "0x" + log["topics"][2][-40:],
                        "amount": int(log["data"], 16)})
    return out


# ---------------------------------------------------------------------------------------------
# Tempo transactions: the open transaction's context hash
# ---------------------------------------------------------------------------------------------


def _tempo_items(raw_tx: str) -> list:
    import rlp

    raw = bytes.fromhex(raw_tx.removeprefix("0x"))
    if raw[:1] != b"\x76":
        raise ValueError(f"not a Tempo transaction (type byte {raw[:1].hex() or 'none'}, want 76)")
    return rlp.decode(raw[1:])


def tempo_calls(raw_tx: str) -> list[dict]:
    """The ``calls`` of a signed type-0x76 transaction: ``[{to, value, input}]``."""
    return [{"to": "0x" + c[0].hex(), "value": int.from_bytes(c[1], "big"), "input": "0x" + c[2].hex()}
            for c in _tempo_items(raw_tx)[4]]


def expiring_nonce_hash(raw_tx: str) -> tuple[str, str]:
    """``(keccak256(encodeForSigning(tx) || sender), sender)`` of a signed type-0x76 transaction: what the
    Tempo node hands the channel reserve as the open's context (mppx ``Channel.computeExpiringNonceHash``).

    ``encodeForSigning`` is the transaction without its sender signature, a fee payer's signature replaced by
    the ``0x00`` marker and the fee token then left out; the sender is recovered from a secp256k1 signature
    (65 bytes; other signature kinds are refused)."""
    import rlp
    from eth_keys import keys

    items = _tempo_items(raw_tx)
    if len(items) not in (14, 15):
        raise ValueError(f"unexpected Tempo transaction field count {len(items)}")
    signature = items[-1]
    unsigned = list(items[:-1])
    if isinstance(unsigned[11], list) and unsigned[11]:  # a fee payer signed: the sender signed the 0x00 marker
        unsigned[11] = b"\x00"
    if unsigned[11] == b"\x00":
        unsigned[10] = b""
    encoded = b"\x76" + rlp.encode(unsigned)
    if not isinstance(signature, bytes) or len(signature) != 65:
        raise ValueError("only 65-byte secp256k1 sender signatures are supported")
    r, s, v = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big"), signature[64]
    v = v - 27 if v >= 27 else v
    sender = keys.Signature(vrs=(v, r, s)).recover_public_key_from_msg_hash(_keccak(encoded)).to_canonical_address()
    return "0x" + _keccak(encoded + sender).hex(), "0x" + sender.hex()


# ---------------------------------------------------------------------------------------------
# The JSON-RPC front that seeds the open context
# ---------------------------------------------------------------------------------------------


class ReserveRpc(TempoRpc):
    """:class:`testbed.mpp.TempoRpc` that also plays the node's part for the channel reserve: a broadcast
    transaction that calls ``open`` on :data:`RESERVE` has its context hash written to
    ``openContextHash[sender]`` first; a simulated ``open`` gets a placeholder hash as a state override.
    :attr:`seeded` lists ``{sender, expiringNonceHash, role}`` per seeded broadcast."""

    def __init__(self, upstream: str, reserve: str = RESERVE):
        self.reserve = reserve.lower()
        self.seeded: list[dict] = []
        self._seed_lock = threading.Lock()
        super().__init__(upstream)

    def _opens_reserve(self, to: Any, data: Any) -> bool:
        return (isinstance(to, str) and to.lower() == self.reserve and isinstance(data, str)
                and data.lower().startswith("0x" + OPEN_SELECTOR.hex()))

    def _relay(self, role: str, body: bytes) -> bytes:
        try:
            payload = json.loads(body)
        except ValueError:
            return super()._relay(role, body)
        calls = payload if isinstance(payload, list) else [payload] if isinstance(payload, dict) else []
        with self._seed_lock:  # seed and forward as one step (broadcasts are executed on arrival: automine)
            for call in calls:
                method, params = call.get("method"), call.get("params")
                if not isinstance(params, list) or not params:
                    continue
                if method in ("eth_sendRawTransaction", "eth_sendRawTransactionSync"):
                    self._seed_broadcast(role, params[0])
                elif method in ("eth_call", "eth_estimateGas", "eth_fillTransaction") and isinstance(params[0], dict):
                    self._seed_simulation(method, call, params)
            return super()._relay(role, json.dumps(payload).encode())

    def _seed_broadcast(self, role: str, raw: Any) -> None:
        if not isinstance(raw, str) or not raw.startswith("0x76"):
            return
        try:
            if not any(self._opens_reserve(c["to"], c["input"]) for c in tempo_calls(raw)):
                return
            context, sender = expiring_nonce_hash(raw)
        except (ValueError, TypeError, IndexError):
            return  # not ours to judge: the node refuses what it cannot decode
        rpc_call(self.upstream, "anvil_setStorageAt", [self.reserve, context_slot(sender), context])
        self.seeded.append({"role": role, "sender": sender, "expiringNonceHash": context})

    def _seed_simulation(self, method: str, call: dict, params: list) -> None:
        """A simulated ``open`` (no signed transaction, so no real context hash): ``eth_call`` gets a placeholder
        hash as a state override; ``eth_estimateGas`` / ``eth_fillTransaction`` (which fill the gas limit and take
        no override) get it written to storage, where the broadcast that follows overwrites it with the real one."""
        req = params[0]
        targets = [(req.get("to"), req.get("data") or req.get("input"))]
        targets += [(c.get("to"), c.get("data") or c.get("input"))
                    for c in req.get("calls") or [] if isinstance(c, dict)]
        sender = req.get("from")
        if not isinstance(sender, str) or not any(self._opens_reserve(t, d) for t, d in targets):
            return
        placeholder = "0x" + _keccak(b"testbed: simulated open context" + bytes.fromhex(sender[2:])).hex()
        if method != "eth_call":
            rpc_call(self.upstream, "anvil_setStorageAt", [self.reserve, context_slot(sender), placeholder])
            return
        while len(params) < 2:
            params.append("latest")
        if len(params) < 3 or not isinstance(params[2], dict):
            params[2:] = [{}]
        entry = params[2].setdefault(self.reserve, {})
        entry.setdefault("stateDiff", {})[context_slot(sender)] = placeholder
        call["params"] = params


# ---------------------------------------------------------------------------------------------
# Decoding the wire
# ---------------------------------------------------------------------------------------------

_PARAM = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def b64url_json(value: str | None) -> Any:
    """base64url (padding optional) of UTF-8 JSON, as Python data; None stays None."""
    if value is None:
        return None
    raw = value.strip()
    return json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))


def parse_www_authenticate(value: str | None) -> dict | None:
    """One ``WWW-Authenticate: Payment k="v", …`` challenge as its auth-params, with ``request`` decoded (and
    ``request_b64`` keeping the wire form)."""
    if not value or not value.lstrip().lower().startswith("payment "):
        return None
    params = {m.group(1): m.group(2) if m.group(2) is not None else m.group(3)
              for m in _PARAM.finditer(value.lstrip()[8:])}
    if "request" in params:
        params["request_b64"] = params["request"]
        params["request"] = b64url_json(params["request"])
    if "opaque" in params:
        with contextlib.suppress(ValueError):
            params["opaque"] = b64url_json(params["opaque"])
    return params


def parse_authorization(value: str | None) -> dict | None:
    """``Authorization: Payment <b64url JSON>`` as its JSON ``{challenge, payload, source}``, the echoed
    ``challenge.request`` also decoded under ``request_decoded``."""
    if not value or not value.lstrip().lower().startswith("payment "):
        return None
    data = b64url_json(value.strip()[8:])
    ch = data.get("challenge") if isinstance(data, dict) else None
    if isinstance(ch, dict) and isinstance(ch.get("request"), str):
        ch["request_decoded"] = b64url_json(ch["request"])
    return data


@dataclass
class SessionCall:
    """One ``fetch`` (or ``close``) of the session client: the final answer and every HTTP round trip the
    SDK made for it (``exchanges``: ``{request: {method, url, headers, body}, response: {status, headers}}``,
    header names lower-case)."""

    status: int | None
    headers: dict
    body: Any
    exchanges: list[dict]
    sdk_receipt: dict | None = None
    channel_id: str | None = None
    cumulative: int | None = None

    def authorizations(self) -> list[dict]:
        """Every credential sent (decoded), in order: an open or voucher, a top-up, a retry…"""
        return [parse_authorization(x["request"]["headers"]["authorization"]) for x in self.exchanges
                if (x["request"]["headers"].get("authorization") or "").lower().startswith("payment ")]

    @property
    def challenge_exchange(self) -> dict | None:
        return next((x for x in self.exchanges if x["response"]["status"] == 402), None)

    @property
    def www_authenticate(self) -> str | None:
        x = self.challenge_exchange
        return x["response"]["headers"].get("www-authenticate") if x else None

    @property
    def challenge(self) -> dict | None:
        return parse_www_authenticate(self.www_authenticate)

    @property
    def paid_exchange(self) -> dict | None:
        """The last round trip that carried a credential and got a 2xx."""
        return next((x for x in reversed(self.exchanges)
                     if (x["request"]["headers"].get("authorization") or "").lower().startswith("payment ")
                     and 200 <= x["response"]["status"] < 300), None)

    @property
    def authorization(self) -> str | None:
        x = self.paid_exchange
        return x["request"]["headers"]["authorization"] if x else None

    @property
    def credential(self) -> dict | None:
        return parse_authorization(self.authorization)

    @property
    def action(self) -> str | None:
        """The paid credential's ``payload.action``: open, voucher, topUp or close."""
        return ((self.credential or {}).get("payload") or {}).get("action")

    @property
    def payment_receipt(self) -> str | None:
        x = self.paid_exchange
        return x["response"]["headers"].get("payment-receipt") if x else self.headers.get("payment-receipt")

    @property
    def receipt(self) -> dict | None:
        """``Payment-Receipt`` decoded: ``{method, intent, status, timestamp, reference, challengeId, channelId,
        acceptedCumulative, spent, units?, txHash?}``."""
        return b64url_json(self.payment_receipt)


@dataclass
class SessionRun:
    """A whole session: the calls in order, then the close."""

    calls: list[SessionCall]
    close: SessionCall
    close_receipt: dict | None

    @property
    def channel_id(self) -> str | None:
        return (self.close_receipt or {}).get("channelId") or (self.calls[0].channel_id if self.calls else None)


# ---------------------------------------------------------------------------------------------
# The npm packages and the Node processes
# ---------------------------------------------------------------------------------------------


def _npm_present() -> bool:
    from .node import npm_pins_present

    return npm_pins_present(NODE_DIR, NPM_PINS)


def ensure_npm_packages(*, timeout: float = 300.0) -> Path:
    """Install ``testbed/mpp_session/package.json``'s packages into that folder once; returns the folder."""
    from .node import install_npm_folder

    return install_npm_folder(NODE_DIR, _npm_present, "the mppx npm SDK", timeout=timeout)


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed (scripts/bootstrap --test, or apt-get install nodejs)")
    return node


def _direct_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k.upper() not in PROXY_VARS}
    env.update(extra or {})
    return env


class SessionServer:
    """The mppx session server (``server.mjs``) as a child process; ``events`` are its JSON log lines."""

    def __init__(self, cfg: dict, payee_key: str, *, secret_key: str | None = None, timeout: float = 30.0):
        ensure_npm_packages()
        env = _direct_env({"MPP_SECRET_KEY": secret_key or base64.b64encode(secrets.token_bytes(32)).decode(),
                           "TESTBED_PAYEE_KEY": payee_key})
        self.cmd = [_node(), str(SERVER_JS), json.dumps(cfg)]
        self.process = popen_child(self.cmd, env=env, cwd=str(NODE_DIR))
        self._pump = OutputPump(self.process)
        self.events: list[dict] = []
        self.url = ""
        self._lock = threading.Lock()
        deadline = time.monotonic() + timeout
        try:
            while not self.url:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"the mppx server did not listen within {timeout:.0f} s")
                try:
                    line = self._pump.queue.get(timeout=min(left, 0.5))
                except queue.Empty:
                    continue
                if line is None:
                    raise RuntimeError(f"the mppx server exited with status {self.process.wait()}")
                event = self._parse(line)
                if event and event.get("event") == "listening":
                    self.url = event["url"]
                elif event and event.get("event") == "fatal":
                    raise RuntimeError(f"the mppx server failed: {event.get('message')}")
        except BaseException as e:
            self.stop()
            if isinstance(e, RuntimeError):
                raise RuntimeError(f"{e}\n--- server output ---\n{self._pump.tail()}") from None
            raise
        threading.Thread(target=self._drain, daemon=True).start()

    def _parse(self, line: str) -> dict | None:
        try:
            event = json.loads(line)
        except ValueError:
            return None
        if isinstance(event, dict):
            with self._lock:
                self.events.append(event)
            return event
        return None

    def _drain(self) -> None:
        while True:
            line = self._pump.queue.get()
            if line is None:
                return
            self._parse(line)

    def settlements(self) -> list[dict]:
        """The SDK's ``onSessionSettlement`` reports so far: ``{trigger, txHash, channelId, amount, delta}``."""
        with self._lock:
            return [e for e in self.events if e.get("event") == "settlement"]

    @property
    def output(self) -> str:
        return self._pump.tail(400)

    def stop(self) -> None:
        stop_child(self.process)


class SessionClient:
    """One mppx ``tempo.session.manager()`` in a Node child (``client.mjs``): one session (one channel) for
    its life. :meth:`call` makes a paid call (the first opens the channel), :meth:`close` closes it on
    chain through the server. Use as a context manager (the process is stopped on exit)."""

    def __init__(self, rpc_url: str, private_key: str, *, chain_id: int = TEMPO_CHAIN_ID, url: str | None = None,
                 proxy: str | None | bool = None, verify: Any = None, max_deposit: int | None = None,
                 top_up_amount: int | None = None, decimals: int = 6, timeout: float = 60.0):
        ensure_npm_packages()
        self.url = url
        self.timeout = timeout
        env = _direct_env()
        if proxy is None:
            proxy = (os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or os.environ.get("HTTP_PROXY")
                     or os.environ.get("http_proxy") or False)
        if proxy:
            env.update({"HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "NO_PROXY": "", "NODE_USE_ENV_PROXY": "1"})
            env["NODE_OPTIONS"] = f"{env.get('NODE_OPTIONS', '')} --require {PRELOAD}".strip()
        if isinstance(verify, (str, os.PathLike)):
            env["NODE_EXTRA_CA_CERTS"] = os.fspath(verify)
        elif verify is False:
            env["NODE_TLS_REJECT_UNAUTHORIZED"] = "0"
        env["TESTBED_PAYER_KEY"] = private_key
        cfg: dict[str, Any] = {"rpcUrl": rpc_url, "chainId": chain_id}
        if max_deposit is not None:
            cfg["maxDeposit"] = decimal_amount(max_deposit, decimals)
        if top_up_amount is not None:
            cfg["topUpAmount"] = decimal_amount(top_up_amount, decimals)
        self.cmd = [_node(), str(CLIENT_JS), json.dumps(cfg)]
        self.process = subprocess.Popen(
            self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=str(NODE_DIR), env=env, start_new_session=True,
            preexec_fn=_child_setup if _PRCTL is not None else None)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, args=(self.process.stdout, self._lines), daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        self._ids = iter(range(1, 1 << 31))
        ready = self._reply(None, timeout)
        if not ready.get("ready"):
            self.stop()
            raise RuntimeError(f"the mppx client did not start: {ready}")
        self.payer = ready.get("payer")

    @staticmethod
    def _read(stream, out: "queue.Queue[str | None]") -> None:
        for line in stream:
            out.put(line.rstrip("\n"))
        out.put(None)

    def _read_err(self) -> None:
        for line in self.process.stderr:
            self.stderr.append(line.rstrip("\n"))
            del self.stderr[:-200]

    def _reply(self, want_id: int | None, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the mppx client gave no answer within {timeout:.0f} s\n"
                                   + "\n".join(self.stderr[-40:]))
            try:
                line = self._lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"the mppx client exited ({self.process.poll()})\n" + "\n".join(self.stderr[-40:]))
            try:
                msg = json.loads(line)
            except ValueError:
                continue  # a stray line (a warning printed on stdout)
            if isinstance(msg, dict) and msg.get("id") == want_id:
                return msg

    def request(self, op: str, timeout: float | None = None, **fields: Any) -> dict:
        """Send one command to the client process and wait for its answer (raises on ``ok: false``)."""
        cmd_id = next(self._ids)
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"id": cmd_id, "op": op, **fields}) + "\n")
        self.process.stdin.flush()
        reply = self._reply(cmd_id, timeout or self.timeout)
        if not reply.get("ok"):
            raise SessionError(reply.get("error", "?"), reply)
        return reply

    def call(self, body: Any = None, *, url: str | None = None, headers: dict | None = None,
             method: str = "POST") -> SessionCall:
        """One paid call. The first opens the channel (``action: open``: a signed open transaction the server
        broadcasts); each later one sends a voucher for the new cumulative amount (after a ``topUp`` post when
        the deposit would not cover it)."""
        fields: dict[str, Any] = {"url": url or self.url, "method": method}
        if body is not None:
            fields["body"] = body
        if headers:
            fields["headers"] = headers
        r = self.request("fetch", **fields)
        return SessionCall(r.get("status"), r.get("headers") or {}, r.get("body"), r.get("exchanges") or [],
                           r.get("receipt"), r.get("channelId"), int(r.get("cumulative") or 0))

    def close(self) -> SessionCall:
        """Close the channel: a ``close`` credential (a voucher for the final amount) posted to the last URL;
        the server sends ``close`` on chain (payee paid, the rest refunded) and answers 204 with a receipt whose
        ``txHash`` is that transaction. ``sdk_receipt`` is the receipt as the SDK returned it."""
        r = self.request("close")
        return SessionCall(None, {}, None, r.get("exchanges") or [], r.get("receipt"), r.get("channelId"),
                           int(r.get("cumulative") or 0))

    def state(self) -> dict:
        return self.request("state")

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.process.stdin.write(json.dumps({"id": 0, "op": "exit"}) + "\n")
                self.process.stdin.flush()
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                stop_child(self.process)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.close()

    def __enter__(self) -> "SessionClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class SessionError(RuntimeError):
    """The client SDK raised (the message is its error); ``reply`` is the whole answer (with exchanges)."""

    def __init__(self, message: str, reply: dict):
        super().__init__(message)
        self.reply = reply


# ---------------------------------------------------------------------------------------------
# The stack
# ---------------------------------------------------------------------------------------------


@dataclass
class MppSessionStack(OnTempo):
    anvil: Anvil
    rpc: ReserveRpc
    server: SessionServer
    price: int
    suggested_deposit: int | None
    currency: str = PATH_USD
    payer: DevAccount = PAYER
    payee: DevAccount = PAYEE
    reserve: str = RESERVE
    approve_tx: str | None = None

    @property
    def server_url(self) -> str:
        return self.server.url

    def client(self, *, proxy: str | None | bool = None, verify: Any = None, payer: DevAccount | None = None,
               max_deposit: int | None = None, top_up_amount: int | None = None, url: str | None = None,
               timeout: float = 60.0) -> SessionClient:
        """A new session client (one channel) as ``payer`` (default the stack's) for ``url`` (default the
        chat route). ``max_deposit`` caps what the SDK will lock (atomic units; default 100 × price);
        ``top_up_amount`` makes each top-up that size; ``proxy``/``verify`` as in :class:`SessionClient`."""
        return SessionClient(self.rpc.url_for("client"), (payer or self.payer).private_key, chain_id=self.chain_id,
                             url=url or self.chat_url, proxy=proxy, verify=verify,
                             max_deposit=self.price * 100 if max_deposit is None else max_deposit,
                             top_up_amount=top_up_amount, timeout=timeout)

    def run_session(self, calls: int = 3, body: Any = None, **client_kwargs: Any) -> SessionRun:
        """Open a session, make ``calls`` paid calls in it, close it; returns every call and the close."""
        if not 1 <= calls <= 100:
            raise ValueError("calls must be between 1 and 100")
        with self.client(**client_kwargs) as c:
            done = [c.call(body) for _ in range(calls)]
            closed = c.close()
        return SessionRun(done, closed, closed.sdk_receipt)

    # ------------------------------------------------------------------ chain reads
    def reserve_events(self, tx_hash: str) -> list[dict]:
        """The channel reserve's events in that transaction (see :func:`decode_reserve_events`)."""
        return decode_reserve_events(self.receipt(tx_hash) or {}, self.reserve)

    def transfers(self, tx_hash: str) -> list[dict]:
        """The currency's ``Transfer`` logs in that transaction (see :func:`token_transfers`)."""
        return token_transfers(self.receipt(tx_hash) or {}, self.currency)

    def channel_state(self, channel_id: str) -> dict:
        """``getChannelState(channelId)``: ``{settled, deposit, closeRequestedAt}`` (all 0 once closed)."""
        data = "0x" + _keccak(b"getChannelState(bytes32)")[:4].hex() + channel_id.removeprefix("0x").rjust(64, "0")
        out = bytes.fromhex(self.anvil.rpc("eth_call", {"to": self.reserve, "data": data}, "latest")[2:])
        return {"settled": int.from_bytes(out[0:32], "big"), "deposit": int.from_bytes(out[32:64], "big"),
                "closeRequestedAt": int.from_bytes(out[64:96], "big")}

    def reserve_logs(self, from_block: int = 0) -> list[dict]:
        """Every reserve event since ``from_block``, with its ``transactionHash`` (the session's history)."""
        logs = self.anvil.rpc("eth_getLogs", {"address": self.reserve, "fromBlock": hex(from_block),
                                              "toBlock": "latest"})
        out = []
        for log in logs:
            for e in decode_reserve_events({"logs": [log]}, self.reserve):
                out.append({**e, "transactionHash": log["transactionHash"], "blockNumber": int(log["blockNumber"], 16)})
        return out

    def describe(self) -> dict:
        return {
            "chain_id": self.chain_id, "rpc_url": self.rpc_url, "rpc_front": self.rpc.url, "reserve": self.reserve,
            "currency": self.currency, "price": str(self.price), "suggested_deposit": str(self.suggested_deposit),
            "server_url": self.server_url, "chat_url": self.chat_url,
            "accounts": {a.role: {"address": a.address, "private_key": a.private_key}
                         for a in (self.payer, self.payee)},
        }


RESERVE_DUST = 1
"""Base units of the currency the deployer gives the reserve at start, so that its TIP-20 balance slot exists:
a Tempo transaction pays 250,000 gas for each new storage slot, and the gas limit anvil fills in for the
client's open transaction does not cover a second one (the open then runs out of gas inside ``transferFrom``)."""


def _send(url: str, owner: str, token: str, data: str, what: str) -> str:
    tx = rpc_call(url, "eth_sendTransaction", [{"from": owner, "to": token, "data": data}])
    receipt = None
    for _ in range(100):  # automine: there at once, or within a few ms
        receipt = rpc_call(url, "eth_getTransactionReceipt", [tx])
        if receipt:
            break
        time.sleep(0.05)
    if not receipt or receipt.get("status") != "0x1":
        raise RuntimeError(f"{what} by {owner} failed: {receipt}")
    return tx


def _approve(url: str, owner: str, token: str, spender: str) -> str:
    data = "0x095ea7b3" + spender.lower().removeprefix("0x").rjust(64, "0") + "f" * 64
    return _send(url, owner, token, data, f"approve({spender})")


def _transfer(url: str, owner: str, token: str, to: str, amount: int) -> str:
    data = "0xa9059cbb" + to.lower().removeprefix("0x").rjust(64, "0") + hex(amount)[2:].rjust(64, "0")
    return _send(url, owner, token, data, f"transfer({to}, {amount})")


@contextlib.contextmanager
def mpp_session_stack(chain_id: int = TEMPO_CHAIN_ID, *, price: int = 10_000, suggested_deposit: int | None = 30_000,
                      currency: str = PATH_USD, tls: dict | None = None, settle_every_units: int | None = None,
                      reserve_code: str | None = None, hardfork: str = HARDFORK,
                      timeout: float = 30.0) -> Iterator[MppSessionStack]:
    """Start anvil in Tempo mode, the channel reserve at :data:`RESERVE` (``reserve_code``: other runtime code
    to put there, e.g. a deliberately broken build), the payer's allowance to it, the JSON-RPC front and the
    mppx session server charging ``price`` atomic units of ``currency`` per call to the payee, suggesting an
    opening deposit of ``suggested_deposit``. ``settle_every_units`` makes the server settle on chain every that
    many calls; ``tls={"cert":…, "key":…}`` serves HTTPS (URL host ``localhost``). All stopped on exit."""
    ensure_npm_packages()
    with contextlib.ExitStack() as stack:
        anvil = stack.enter_context(start_anvil(chain_id, extra_args=["--network", "tempo", "--hardfork", hardfork]))
        install_reserve(anvil.url, reserve_code)
        approve_tx = _approve(anvil.url, PAYER.address, currency, RESERVE)
        _transfer(anvil.url, DEPLOYER.address, currency, RESERVE, RESERVE_DUST)
        rpc = stack.enter_context(ReserveRpc(anvil.url))
        cfg: dict[str, Any] = {"rpcUrl": rpc.url_for("server"), "currency": currency, "chainId": chain_id,
                               "price": decimal_amount(price), "realm": "localhost" if tls else "127.0.0.1"}
        if suggested_deposit:
            cfg["suggestedDeposit"] = decimal_amount(suggested_deposit)
        if settle_every_units:
            cfg["settleEveryUnits"] = int(settle_every_units)
        if tls:
            cfg["tls"] = {"cert": str(tls["cert"]), "key": str(tls["key"])}
        server = SessionServer(cfg, PAYEE.private_key, timeout=timeout)
        stack.callback(server.stop)
        yield MppSessionStack(anvil=anvil, rpc=rpc, server=server, price=price, suggested_deposit=suggested_deposit,
                              currency=currency, approve_tx=approve_tx)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def describe_call(call: SessionCall) -> dict:
    """A call's HTTP round trips with every payment header decoded (for reading the wire)."""
    return {"status": call.status, "action": call.action, "exchanges": [{
        "request": f"{x['request']['method']} {x['request']['url']}",
        "payment_session": x["request"]["headers"].get("payment-session"),
        "authorization": parse_authorization(x["request"]["headers"].get("authorization")),
        "status": x["response"]["status"],
        "www_authenticate": parse_www_authenticate(x["response"]["headers"].get("www-authenticate")),
        "payment_receipt": b64url_json(x["response"]["headers"].get("payment-receipt")),
        "response_headers": sorted(x["response"]["headers"]),
    } for x in call.exchanges]}


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m testbed.mpp_session",
                                 description="run the MPP session (mppx, TIP-1034 channel) test stack")
    ap.add_argument("--price", type=int, default=10_000)
    ap.add_argument("--suggested-deposit", type=int, default=30_000)
    ap.add_argument("--demo", type=int, metavar="N", help="run one session of N calls, print it decoded, exit")
    ap.add_argument("--settle-every", type=int, metavar="UNITS", help="the server settles every UNITS calls")
    args = ap.parse_args(argv)
    with mpp_session_stack(price=args.price, suggested_deposit=args.suggested_deposit,
                           settle_every_units=args.settle_every) as s:
        if args.demo:
            run = s.run_session(calls=args.demo)
            print(json.dumps({"stack": s.describe(), "calls": [describe_call(c) for c in run.calls],
                              "close": describe_call(run.close), "sdk_close_receipt": run.close_receipt,
                              "server_settlements": s.server.settlements(), "chain": s.reserve_logs()},
                             indent=2, default=str))
            return 0
        print(json.dumps(s.describe(), indent=2), flush=True)
        serve_until_stopped()
    return 0


if __name__ == "__main__":
    sys.exit(main())
