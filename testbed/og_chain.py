"""Two local anvil chains prepared like OpenGradient's: "Base" for payments, the OpenGradient chain for proofs.

:func:`start_og_chains` starts both and gives an :class:`OgChains` handle (a context manager):

- ``.base``, chain id 8453, with the project's own contracts placed at the real addresses by
  ``anvil_setCode``: an OPG-like token at :data:`OPG` (18 decimals, name "OpenGradient", open
  ``mint``), a Permit2-compatible contract at :data:`PERMIT2`, and an x402 "upto" settlement proxy at
  :data:`UPTO_PROXY` (``settle`` selector ``0xff11e7b4``, emits ``Settled()``).
- ``.og``, chain id 10740, with a TEE registry at :data:`TEE_REGISTRY` (the ``opengradient`` SDK
  1.1.4's default registry address, so the SDK's own registry client works against it) and a
  settlement relay (``settleIndividual`` / ``batchSettle``) deployed normally.

Transactions are plain JSON-RPC ``eth_sendTransaction`` from anvil's unlocked dev accounts (other
addresses are impersonated with ``anvil_impersonateAccount``). A call that would revert raises
:class:`TxReverted` with the decoded custom error; pass ``gas=`` to skip estimation and let a
reverting transaction land on chain (``status 0``), and ``check=False`` to get its hash back anyway.

Accounts (anvil's default mnemonic, see :mod:`testbed.chain`): :data:`PAYER` signs permits,
:data:`PAYEE` is paid, :data:`FACILITATOR` settles on Base and relays proofs on the OpenGradient chain,
:data:`DEPLOYER` deploys, and :data:`TEE_OPERATOR` (index 4) owns registered TEEs.
The Solidity sources and deviations from the real contracts are in ``testbed/contracts/og/``.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Iterator

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_hash.auto import keccak

from .chain import DEPLOYER, FACILITATOR, PAYEE, PAYER, TRANSFER_TOPIC, DevAccount
from .contracts.og.build import CONTRACTS, load_artifact
from .node import Anvil, start_anvil

__all__ = [
    "OPG", "PERMIT2", "UPTO_PROXY", "TEE_REGISTRY", "BASE_CHAIN_ID", "OG_CHAIN_ID",
    "DEPLOYER", "PAYER", "PAYEE", "FACILITATOR", "TEE_OPERATOR",
    "OgChains", "start_og_chains", "install_base_contracts", "deploy_og_contracts",
    "fund_opg", "opg_balance", "opg_allowance", "nonce_bitmap", "nonce_used",
    "upto_authorization", "sign_permit2", "settle_upto", "address_of", "sign_opg_permit",
    "settle_upto_with_permit", "opg_nonce", "decode_revert",
    "register_tee", "set_tee_enabled", "set_ohttp_config", "get_tee", "settle_individual", "batch_settle",
    "TxReverted", "ChainError", "receipt", "selector",
]

# ---------------------------------------------------------------------------------------------
# Addresses, chain ids, topics
# ---------------------------------------------------------------------------------------------

BASE_CHAIN_ID = 8453
OG_CHAIN_ID = 10740

OPG = "0xFbC2051AE2265686a469421b2C5A2D5462FbF5eB"
"""The OPG token on Base mainnet (PROTOCOL.md §3); here the test token TestOPG."""
PERMIT2 = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
"""Uniswap's canonical Permit2 address; here TestPermit2."""
UPTO_PROXY = "0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002"
"""x402's upto Permit2 proxy (the permit's spender); here TestUptoPermit2Proxy."""
TEE_REGISTRY = "0x703cB174AEadB35D611858369B4b1111dC9Abda6"
"""The TEE registry address the ``opengradient`` SDK 1.1.4 uses by default; here TestTEERegistry."""

MAX_UINT256 = 2**256 - 1
DEFAULT_OPG_FUNDS = 100 * 10**18
"""What :func:`start_og_chains` gives the payer by default: 100 OPG, with Permit2 approved."""

TEE_OPERATOR = DevAccount("tee_operator", 4, "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
                          "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a")
"""Registers and owns TEEs on the OpenGradient chain (dev account 4)."""


def _topic(signature: str) -> str:
    return "0x" + keccak(signature.encode()).hex()


APPROVAL_TOPIC = _topic("Approval(address,address,uint256)")
SETTLED_TOPIC = _topic("Settled()")
"""0x97088ec3…91b6, the upto (and exact) proxy's event."""
SETTLED_WITH_PERMIT_TOPIC = _topic("SettledWithPermit()")
INDIVIDUAL_SETTLEMENT_TOPIC = _topic("IndividualSettlement(bytes32,address,bytes32,bytes32,uint256,bytes,bytes)")
"""0x74e71a19…b782"""
BATCH_SETTLEMENT_TOPIC = _topic("BatchSettlement(bytes32,uint256,bytes)")
"""0xc2aff8d8…1127"""
TEE_REGISTERED_TOPIC = _topic("TEERegistered(bytes32,address,uint8)")
TEE_ENABLED_TOPIC = _topic("TEEEnabled(bytes32)")
TEE_DISABLED_TOPIC = _topic("TEEDisabled(bytes32)")
__all__ += ["TRANSFER_TOPIC", "APPROVAL_TOPIC", "SETTLED_TOPIC", "SETTLED_WITH_PERMIT_TOPIC",
            "INDIVIDUAL_SETTLEMENT_TOPIC", "BATCH_SETTLEMENT_TOPIC", "TEE_REGISTERED_TOPIC",
            "TEE_ENABLED_TOPIC", "TEE_DISABLED_TOPIC", "MAX_UINT256", "DEFAULT_OPG_FUNDS"]

# ---------------------------------------------------------------------------------------------
# ABI helpers (from the committed artifacts)
# ---------------------------------------------------------------------------------------------


def _type(item: dict) -> str:
    if item["type"].startswith("tuple"):
        return "(" + ",".join(_type(c) for c in item["components"]) + ")" + item["type"][5:]
    return item["type"]


_ABIS: dict[str, list[dict]] = {}


def _abi(contract: str) -> list[dict]:
    if contract not in _ABIS:
        _ABIS[contract] = load_artifact(contract)["abi"]
    return _ABIS[contract]


def _function(contract: str, name: str) -> dict:
    matches = [e for e in _abi(contract) if e["type"] == "function" and e["name"] == name]
    if len(matches) != 1:
        raise KeyError(f"{contract}.{name}: {len(matches)} ABI entries")
    return matches[0]


def selector(contract: str, name: str) -> str:
    """``0x`` + the 4-byte selector of ``contract.name`` computed from the committed ABI."""
    fn = _function(contract, name)
    sig = f"{name}({','.join(_type(i) for i in fn['inputs'])})"
    return "0x" + keccak(sig.encode()).hex()[:8]


def _calldata(contract: str, name: str, *args: Any) -> str:
    fn = _function(contract, name)
    types = [_type(i) for i in fn["inputs"]]
    return selector(contract, name) + abi_encode(types, list(args)).hex()


def _decode_output(contract: str, name: str, data: str) -> tuple:
    fn = _function(contract, name)
    return abi_decode([_type(o) for o in fn["outputs"]], bytes.fromhex(data.removeprefix("0x")))


def _error_table() -> dict[bytes, tuple[str, list[str]]]:
    table: dict[bytes, tuple[str, list[str]]] = {}
    for contract in CONTRACTS:
        for e in _abi(contract):
            if e["type"] == "error":
                types = [_type(i) for i in e["inputs"]]
                table[keccak(f"{e['name']}({','.join(types)})".encode())[:4]] = (e["name"], types)
    return table


_ERRORS: dict[bytes, tuple[str, list[str]]] | None = None


def decode_revert(data: str | None) -> str | None:
    """A readable revert reason from revert data: ``Error(string)`` text or ``CustomError(args)``."""
    global _ERRORS
    if not data or not isinstance(data, str) or len(data) < 10:
        return None
    raw = bytes.fromhex(data.removeprefix("0x"))
    if raw[:4] == bytes.fromhex("08c379a0"):
        with contextlib.suppress(Exception):
            return abi_decode(["string"], raw[4:])[0]
    if _ERRORS is None:
        _ERRORS = _error_table()
    if raw[:4] in _ERRORS:
        name, types = _ERRORS[raw[:4]]
        try:
            values = abi_decode(types, raw[4:])
        except Exception:
            values = ()
        shown = ", ".join("0x" + v.hex() if isinstance(v, bytes) else str(v) for v in values)
        return f"{name}({shown})"
    return None


# ---------------------------------------------------------------------------------------------
# JSON-RPC and transactions
# ---------------------------------------------------------------------------------------------

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_ids = iter(range(1, 1 << 62))


class ChainError(RuntimeError):
    """A JSON-RPC call failed. ``.error`` holds the node's error object (or None)."""

    def __init__(self, message: str, error: dict | None = None):
        super().__init__(message)
        self.error = error


class TxReverted(ChainError):
    """A transaction reverted: refused at gas estimation (``tx_hash`` None) or mined with status 0.

    ``reason`` is the decoded revert (e.g. ``"InvalidNonce()"``, ``"TEENotEnabled(0x…)"``), ``data``
    the raw revert data when the node gave it, ``receipt`` the receipt of a mined one.
    """

    def __init__(self, message: str, *, tx_hash: str | None = None, reason: str | None = None,
                 data: str | None = None, receipt: dict | None = None, error: dict | None = None):
        super().__init__(message, error)
        self.tx_hash = tx_hash
        self.reason = reason
        self.data = data
        self.receipt = receipt


def _rpc(url: str, method: str, params: list | None = None, *, timeout: float = 30.0) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": params or []})
    req = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"})
    try:
        with _NO_PROXY.open(req, timeout=timeout) as resp:
            reply = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ChainError(f"{method} at {url}: {e}") from e
    if reply.get("error"):
        err = reply["error"]
        data = err.get("data") if isinstance(err, dict) else None
        if isinstance(data, dict):  # some nodes nest it
            data = data.get("data")
        message = str(err.get("message", err)) if isinstance(err, dict) else str(err)
        if "revert" in message.lower():
            reason = decode_revert(data) or message
            raise TxReverted(f"{method} reverted: {reason}", reason=reason,
                             data=data if isinstance(data, str) else None, error=err)
        raise ChainError(f"{method}: {err}", err)
    return reply.get("result")


def _address(value: Any) -> str:
    return value.address if isinstance(value, DevAccount) else str(value)


def _checksum(address: str) -> str:
    raw = address.lower().removeprefix("0x")
    digest = keccak(raw.encode()).hex()
    return "0x" + "".join(c.upper() if c.isalpha() and int(digest[i], 16) >= 8 else c for i, c in enumerate(raw))


_DEV_ACCOUNTS: dict[str, set[str]] = {}


def _can_send(url: str, sender: str) -> None:
    """Let anvil send from ``sender``: its dev accounts are unlocked; anyone else is impersonated
    (and given 1 ETH for gas if it has less than 0.1 ETH)."""
    if url not in _DEV_ACCOUNTS:
        _DEV_ACCOUNTS[url] = {a.lower() for a in _rpc(url, "eth_accounts")}
    if sender.lower() in _DEV_ACCOUNTS[url]:
        return
    _rpc(url, "anvil_impersonateAccount", [sender])
    if int(_rpc(url, "eth_getBalance", [sender, "latest"]), 16) < 10**17:
        _rpc(url, "anvil_setBalance", [sender, hex(10**18)])


def receipt(url: str, tx_hash: str, *, timeout: float = 30.0) -> dict:
    """Wait for and return the receipt of ``tx_hash`` (plain JSON-RPC dict)."""
    deadline = time.monotonic() + timeout
    while True:
        got = _rpc(url, "eth_getTransactionReceipt", [tx_hash])
        if got is not None:
            return got
        if time.monotonic() > deadline:
            raise ChainError(f"no receipt for {tx_hash} within {timeout:.0f} s (is mining on?)")
        time.sleep(0.02)


def _transact(url: str, sender: Any, to: str | None, data: str, *, gas: int | None = None,
              wait: bool = True, check: bool = True, timeout: float = 30.0) -> str:
    """Send a transaction from an unlocked (or impersonated) account; returns its hash.

    ``gas=None``: anvil estimates it, and a call that would revert raises :class:`TxReverted` before
    anything is sent. With ``gas`` the transaction is sent as is and may land reverted; then
    ``check=True`` raises :class:`TxReverted` (with ``tx_hash`` and ``receipt``), ``check=False``
    returns the hash. ``wait=False`` returns at once (the transaction may still be pending).
    """
    frm = _address(sender)
    _can_send(url, frm)
    tx: dict[str, Any] = {"from": frm, "data": data}
    if to is not None:
        tx["to"] = to
    if gas is None:  # estimate here: anvil's eth_sendTransaction would send a reverting one anyway
        tx["gas"] = hex(int(_rpc(url, "eth_estimateGas", [tx], timeout=timeout), 16) * 6 // 5 + 10_000)
    else:
        tx["gas"] = hex(gas)
    tx_hash = _rpc(url, "eth_sendTransaction", [tx], timeout=timeout)
    if not wait:
        return tx_hash
    rec = receipt(url, tx_hash, timeout=timeout)
    if int(rec["status"], 16) != 1 and check:
        reason = None
        try:  # replay it on the parent block's state for a reason (approximate: ignores the block's earlier txs)
            call = {k: v for k, v in tx.items() if k != "gas"}
            _rpc(url, "eth_call", [call, hex(int(rec["blockNumber"], 16) - 1)])
        except TxReverted as e:
            reason = e.reason
        except ChainError:
            pass
        raise TxReverted(f"transaction {tx_hash} reverted: {reason or 'no reason'}", tx_hash=tx_hash,
                         reason=reason, receipt=rec)
    return tx_hash


def _call(url: str, to: str, contract: str, name: str, *args: Any, block: str = "latest") -> tuple:
    out = _rpc(url, "eth_call", [{"to": to, "data": _calldata(contract, name, *args)}, block])
    return _decode_output(contract, name, out)


def _deploy(url: str, contract: str, deployer: Any, ctor_types: list[str] = (), ctor_args: list = ()) -> str:
    code = load_artifact(contract)["bytecode"] + abi_encode(list(ctor_types), list(ctor_args)).hex()
    rec = receipt(url, _transact(url, deployer, None, code))
    return _checksum(rec["contractAddress"])


def _set_code(url: str, address: str, contract: str) -> None:
    code = load_artifact(contract)["deployedBytecode"]
    _rpc(url, "anvil_setCode", [address, code])
    if _rpc(url, "eth_getCode", [address, "latest"]).lower() != code.lower():
        raise ChainError(f"anvil_setCode did not put {contract} at {address}")


def _bytes(value: bytes | str) -> bytes:
    """bytes as given, or a ``0x`` hex string."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str) and value.startswith("0x"):
        return bytes.fromhex(value[2:])
    raise TypeError(f"expected bytes or a 0x-hex string, got {value!r:.60}")


def _bytes32(value: bytes | str) -> bytes:
    raw = _bytes(value)
    if len(raw) != 32:
        raise ValueError(f"expected 32 bytes, got {len(raw)}")
    return raw


# ---------------------------------------------------------------------------------------------
# Base: OPG, Permit2, the upto proxy
# ---------------------------------------------------------------------------------------------


def install_base_contracts(base_url: str) -> None:
    """Put TestOPG, TestPermit2 and TestUptoPermit2Proxy at :data:`OPG`, :data:`PERMIT2`, :data:`UPTO_PROXY`."""
    _set_code(base_url, OPG, "TestOPG")
    _set_code(base_url, PERMIT2, "TestPermit2")
    _set_code(base_url, UPTO_PROXY, "TestUptoPermit2Proxy")


def fund_opg(base_url: str, address: Any, amount: int, *, approve_permit2: bool = True) -> str:
    """Mint ``amount`` OPG (atomic, 18 decimals) to ``address`` and have it approve Permit2 for
    2**256-1 (sent from ``address``: a dev account, or impersonated). Returns the mint tx hash."""
    owner = _checksum(_address(address))
    tx = _transact(base_url, DEPLOYER, OPG, _calldata("TestOPG", "mint", owner, int(amount)))
    if approve_permit2 and opg_allowance(base_url, owner, PERMIT2) != MAX_UINT256:
        _transact(base_url, owner, OPG, _calldata("TestOPG", "approve", PERMIT2, MAX_UINT256))
    return tx


def opg_balance(base_url: str, address: Any) -> int:
    return _call(base_url, OPG, "TestOPG", "balanceOf", _checksum(_address(address)))[0]


def opg_allowance(base_url: str, owner: Any, spender: Any) -> int:
    return _call(base_url, OPG, "TestOPG", "allowance", _checksum(_address(owner)), _checksum(_address(spender)))[0]


def nonce_bitmap(base_url: str, owner: Any, word_pos: int) -> int:
    """Permit2 ``nonceBitmap(owner, wordPos)``."""
    return _call(base_url, PERMIT2, "TestPermit2", "nonceBitmap", _checksum(_address(owner)), int(word_pos))[0]


def nonce_used(base_url: str, owner: Any, nonce: int | str) -> bool:
    """Whether Permit2 nonce ``nonce`` of ``owner`` is spent (word ``nonce >> 8``, bit ``nonce & 0xff``)."""
    n = int(nonce)
    return bool(nonce_bitmap(base_url, owner, n >> 8) >> (n & 0xFF) & 1)


def upto_authorization(owner: Any, to: Any, cap: int, *, facilitator: Any = FACILITATOR,
                       nonce: int | None = None, deadline: int | None = None, valid_after: int = 0,
                       token: str = OPG, spender: str = UPTO_PROXY) -> dict:
    """A ``permit2Authorization`` as x402's upto client writes it (numbers as decimal strings):
    ``{from, permitted:{token, amount}, spender, nonce, deadline, witness:{to, facilitator, validAfter}}``.
    Defaults: a random 256-bit nonce, a deadline one hour from now."""
    return {
        "from": _checksum(_address(owner)),
        "permitted": {"token": _checksum(token), "amount": str(int(cap))},
        "spender": _checksum(spender),
        "nonce": str(secrets.randbits(256) if nonce is None else int(nonce)),
        "deadline": str(int(time.time()) + 3600 if deadline is None else int(deadline)),
        "witness": {"to": _checksum(_address(to)), "facilitator": _checksum(_address(facilitator)),
                    "validAfter": str(int(valid_after))},
    }


def sign_permit2(chain_id: int, authorization: dict, private_key: str | bytes) -> str:
    """Sign ``authorization`` (a permit2Authorization dict) with the digest of
    :func:`addon.eip712.permit2_digest`; returns a 65-byte ``r‖s‖v`` hex signature, v in {27, 28}."""
    from coincurve import PrivateKey

    from receipts.addon.eip712 import permit2_digest

    key = private_key if isinstance(private_key, bytes) else bytes.fromhex(private_key.removeprefix("0x"))
    sig = PrivateKey(key).sign_recoverable(permit2_digest(chain_id, authorization), hasher=None)
    return "0x" + (sig[:64] + bytes([sig[64] + 27])).hex()


def _permit_tuple(permit: dict | tuple) -> tuple:
    if isinstance(permit, dict):
        p = permit["permitted"]
        return ((_checksum(p["token"]), int(p["amount"])), int(permit["nonce"]), int(permit["deadline"]))
    (token, amount), nonce, deadline = permit
    return ((_checksum(token), int(amount)), int(nonce), int(deadline))


def _witness_tuple(witness: dict | tuple) -> tuple:
    if isinstance(witness, dict):
        return (_checksum(witness["to"]), _checksum(witness["facilitator"]), int(witness.get("validAfter", 0)))
    to, facilitator, valid_after = witness
    return (_checksum(to), _checksum(facilitator), int(valid_after))


def settle_upto(base_url: str, permit: dict | tuple, amount: int, owner: Any, witness: dict | tuple,
                signature: bytes | str, sender: Any = FACILITATOR, *, gas: int | None = None,
                wait: bool = True, check: bool = True) -> str:
    """``UPTO_PROXY.settle(permit, amount, owner, witness, signature)`` sent by ``sender`` (the
    facilitator named in the witness, or the proxy reverts UnauthorizedFacilitator). ``permit`` is a
    permit2Authorization-like dict (``permitted``, ``nonce``, ``deadline``) or the tuple
    ``((token, cap), nonce, deadline)``; ``witness`` a dict (``to``, ``facilitator``, ``validAfter``)
    or a tuple. Returns the tx hash (see :func:`_transact` for gas/wait/check)."""
    data = _calldata("TestUptoPermit2Proxy", "settle", _permit_tuple(permit), int(amount),
                     _checksum(_address(owner)), _witness_tuple(witness), _bytes(signature))
    return _transact(base_url, sender, UPTO_PROXY, data, gas=gas, wait=wait, check=check)


def address_of(private_key: str | bytes) -> str:
    """The checksummed address of a secp256k1 private key."""
    from coincurve import PrivateKey

    key = private_key if isinstance(private_key, bytes) else bytes.fromhex(private_key.removeprefix("0x"))
    return _checksum("0x" + keccak(PrivateKey(key).public_key.format(compressed=False)[1:])[-20:].hex())


def sign_opg_permit(chain_id: int, private_key: str | bytes, spender: str, value: int, nonce: int,
                    deadline: int) -> tuple[int, int, bytes, bytes, int]:
    """An EIP-2612 permit for TestOPG (domain name "OpenGradient", version "1") signed by
    ``private_key``; returns ``(value, deadline, r, s, v)``, the upto proxy's EIP2612Permit tuple."""
    from coincurve import PrivateKey

    from receipts.addon.eip712 import domain_separator

    key = private_key if isinstance(private_key, bytes) else bytes.fromhex(private_key.removeprefix("0x"))
    owner = address_of(key)
    typehash = keccak(b"Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)")
    struct = keccak(typehash + abi_encode(["address", "address", "uint256", "uint256", "uint256"],
                                          [owner, _checksum(spender), int(value), int(nonce), int(deadline)]))
    digest = keccak(b"\x19\x01" + domain_separator("OpenGradient", "1", chain_id, OPG) + struct)
    sig = PrivateKey(key).sign_recoverable(digest, hasher=None)
    return (int(value), int(deadline), sig[:32], sig[32:64], sig[64] + 27)


def settle_upto_with_permit(base_url: str, permit2612: tuple, permit: dict | tuple, amount: int, owner: Any,
                            witness: dict | tuple, signature: bytes | str, sender: Any = FACILITATOR, *,
                            gas: int | None = None, wait: bool = True, check: bool = True) -> str:
    """``UPTO_PROXY.settleWithPermit(permit2612, permit, amount, owner, witness, signature)`` (selector
    0x016c1748): first an EIP-2612 approval of Permit2 (``(value, deadline, r, s, v)``, e.g. from
    :func:`sign_opg_permit`; value must equal the cap), then the settlement. Emits SettledWithPermit."""
    data = _calldata("TestUptoPermit2Proxy", "settleWithPermit", tuple(permit2612), _permit_tuple(permit),
                     int(amount), _checksum(_address(owner)), _witness_tuple(witness), _bytes(signature))
    return _transact(base_url, sender, UPTO_PROXY, data, gas=gas, wait=wait, check=check)


def opg_nonce(base_url: str, owner: Any) -> int:
    """TestOPG's EIP-2612 nonce of ``owner``."""
    return _call(base_url, OPG, "TestOPG", "nonces", _checksum(_address(owner)))[0]


# ---------------------------------------------------------------------------------------------
# The OpenGradient chain: TEE registry and settlement relay
# ---------------------------------------------------------------------------------------------


def deploy_og_contracts(og_url: str, *, registry_at: str | None = None, deployer: Any = DEPLOYER,
                        relayers: tuple = (FACILITATOR,)) -> tuple[str, str]:
    """Deploy the TEE registry and the settlement relay; returns ``(registry, relay)`` addresses.

    ``registry_at``: place the registry there with ``anvil_setCode`` instead of deploying it
    (:func:`start_og_chains` uses :data:`TEE_REGISTRY`). The relay's admin is ``deployer``, and
    ``deployer`` and ``relayers`` may settle."""
    if registry_at is not None:
        _set_code(og_url, registry_at, "TestTEERegistry")
        registry = _checksum(registry_at)
    else:
        registry = _deploy(og_url, "TestTEERegistry", deployer)
    relay = _deploy(og_url, "TestSettlementRelay", deployer, ["address"], [registry])
    for r in relayers:
        _transact(og_url, deployer, relay, _calldata("TestSettlementRelay", "setRelayer", _checksum(_address(r)), True))
    return registry, relay


def register_tee(og_url: str, registry: str, public_key_der: bytes, tls_cert_der: bytes, endpoint: str,
                 payment_address: Any, enabled: bool = True, *, tee_type: int = 0,
                 pcr_hash: bytes | str = b"\0" * 32, owner: Any = TEE_OPERATOR) -> str:
    """Register a TEE (owned by ``owner``); returns its id, ``0x`` + keccak256(public_key_der) hex,
    as the registry computed it (checked against the TEERegistered event)."""
    data = _calldata("TestTEERegistry", "registerTEE", bytes(public_key_der), bytes(tls_cert_der),
                     _checksum(_address(payment_address)), endpoint, int(tee_type), _bytes32(pcr_hash))
    rec = receipt(og_url, _transact(og_url, owner, registry, data))
    events = [log for log in rec["logs"] if log["topics"][0] == TEE_REGISTERED_TOPIC]
    tee_id = "0x" + keccak(bytes(public_key_der)).hex()
    if len(events) != 1 or events[0]["topics"][1] != tee_id:
        raise ChainError(f"registerTEE: no TEERegistered event for {tee_id}")
    if not enabled:
        set_tee_enabled(og_url, registry, tee_id, False, owner=owner)
    return tee_id


def set_tee_enabled(og_url: str, registry: str, tee_id: bytes | str, enabled: bool, *,
                    owner: Any = TEE_OPERATOR) -> str:
    """``setEnabled(teeId, enabled)`` from the TEE's owner; returns the tx hash."""
    data = _calldata("TestTEERegistry", "setEnabled", _bytes32(tee_id), bool(enabled))
    return _transact(og_url, owner, registry, data)


def set_ohttp_config(og_url: str, registry: str, tee_id: bytes | str, *, key_id: int, kem_id: int, kdf_id: int,
                     aead_id: int, public_key: bytes, key_config: bytes, signature: bytes = b"",
                     owner: Any = TEE_OPERATOR) -> str:
    """``setOHTTPConfig(teeId, keyId, kemId, kdfId, aeadId, publicKey, keyConfig, signature)`` from the TEE's
    owner: the HPKE key a client encrypts Oblivious HTTP requests to (the test registry does not check
    ``signature``). Returns the tx hash."""
    data = _calldata("TestTEERegistry", "setOHTTPConfig", _bytes32(tee_id), int(key_id), int(kem_id), int(kdf_id),
                     int(aead_id), bytes(public_key), bytes(key_config), bytes(signature))
    return _transact(og_url, owner, registry, data)


_TEE_FIELDS = ("owner", "paymentAddress", "endpoint", "publicKey", "tlsCertificate", "pcrHash", "teeType",
               "enabled", "registeredAt", "lastHeartbeatAt", "ohttpConfig")
_OHTTP_FIELDS = ("keyId", "kemId", "kdfId", "aeadId", "publicKey", "keyConfig", "registeredAt")


def get_tee(og_url: str, registry: str, tee_id: bytes | str) -> dict | None:
    """The registry's record (``getTEE``) as a dict with the contract's field names, or None if unknown.
    Addresses are checksummed, ``pcrHash`` is ``0x`` hex, byte fields are bytes."""
    try:
        (raw,) = _call(og_url, registry, "TestTEERegistry", "getTEE", _bytes32(tee_id))
    except TxReverted as e:
        if e.reason and e.reason.startswith("TEENotFound"):
            return None
        raise
    record = dict(zip(_TEE_FIELDS, raw))
    record["owner"] = _checksum(record["owner"])
    record["paymentAddress"] = _checksum(record["paymentAddress"])
    record["pcrHash"] = "0x" + record["pcrHash"].hex()
    record["ohttpConfig"] = dict(zip(_OHTTP_FIELDS, record["ohttpConfig"]))
    return record


def settle_individual(og_url: str, relay: str, tee_id: bytes | str, input_hash: bytes | str,
                      output_hash: bytes | str, timestamp: int, eth_address: Any, walrus_blob_id: bytes | str,
                      signature: bytes | str, *, sender: Any = FACILITATOR, gas: int | None = None,
                      wait: bool = True, check: bool = True) -> str:
    """``settleIndividual(teeId, inputHash, outputHash, timestamp, ethAddress, walrusBlobId, signature)``
    (selector 0x90480ad1) from a relayer. Hashes and the signature are bytes or ``0x`` hex; a str
    ``walrus_blob_id`` that is not ``0x`` hex is taken as the blob id text (UTF-8). Reverts
    ``TEENotEnabled`` for an unknown or disabled TEE."""
    blob = walrus_blob_id.encode() if isinstance(walrus_blob_id, str) and not walrus_blob_id.startswith("0x") \
        else _bytes(walrus_blob_id)
    data = _calldata("TestSettlementRelay", "settleIndividual", _bytes32(tee_id), _bytes32(input_hash),
                     _bytes32(output_hash), int(timestamp), _checksum(_address(eth_address)), blob, _bytes(signature))
    return _transact(og_url, sender, relay, data, gas=gas, wait=wait, check=check)


def batch_settle(og_url: str, relay: str, root: bytes | str, size: int, blob_id: bytes | str, *,
                 sender: Any = FACILITATOR, gas: int | None = None, wait: bool = True, check: bool = True) -> str:
    """``batchSettle(merkleRoot, batchSize, walrusBlobId)`` from a relayer; emits BatchSettlement."""
    blob = blob_id.encode() if isinstance(blob_id, str) and not blob_id.startswith("0x") else _bytes(blob_id)
    data = _calldata("TestSettlementRelay", "batchSettle", _bytes32(root), int(size), blob)
    return _transact(og_url, sender, relay, data, gas=gas, wait=wait, check=check)


# ---------------------------------------------------------------------------------------------
# Both chains together
# ---------------------------------------------------------------------------------------------


@dataclass
class OgChains:
    """The two running chains and where things are. A context manager: leaving stops both nodes."""

    base: Anvil
    og: Anvil
    registry: str
    relay: str
    opg: str = OPG
    permit2: str = PERMIT2
    upto_proxy: str = UPTO_PROXY

    payer = PAYER
    payee = PAYEE
    facilitator = FACILITATOR
    deployer = DEPLOYER
    tee_operator = TEE_OPERATOR

    def stop(self) -> None:
        self.og.stop()
        self.base.stop()

    def __enter__(self) -> "OgChains":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def start_og_chains(*, payer_funds: int = DEFAULT_OPG_FUNDS, block_time: float | None = None) -> Iterator[OgChains]:
    """Start "Base" (8453) and the OpenGradient chain (10740) on free ports, install the contracts,
    and give the payer ``payer_funds`` OPG with Permit2 approved (0: none). Both nodes stop on exit."""
    with contextlib.ExitStack() as stack:
        base = stack.enter_context(start_anvil(chain_id=BASE_CHAIN_ID, block_time=block_time))
        og = stack.enter_context(start_anvil(chain_id=OG_CHAIN_ID, block_time=block_time))
        install_base_contracts(base.url)
        registry, relay = deploy_og_contracts(og.url, registry_at=TEE_REGISTRY)
        if payer_funds:
            fund_opg(base.url, PAYER, payer_funds)
        yield OgChains(base=base, og=og, registry=registry, relay=relay)
