"""MPP (the Machine Payments Protocol: the ``Payment`` HTTP authentication scheme) with the real ``pympp`` SDK,
settling on a local Tempo chain.

    from testbed.mpp import mpp_stack

    with mpp_stack() as s:
        call = s.pay()                                   # the SDK's client: 402, sign, paid retry
        call.status, call.www_authenticate, call.credential, call.receipt, call.tx_hash
        s.balance(s.payee)                               # pathUSD, atomic units (6 decimals)
        s.pay(fake_reference="random")                   # a receipt whose reference is on no chain
        s.pay(mode="push")                               # the client broadcasts; the credential holds the hash
        decode_tempo_transaction(call.signed_transaction)  # the signed 0x76 transaction, field by field

What runs, all on 127.0.0.1:

- **the chain**: anvil (npm ``@foundry-rs/anvil``, :mod:`testbed.node`) with ``--network tempo --hardfork T4``
  and chain id 4217 (Tempo mainnet's id). That is Tempo's own execution layer inside anvil: the TIP-20
  precompiles (pathUSD at ``0x20c0…0000``, AlphaUSD ``…01``, BetaUSD ``…02``, ThetaUSD ``…03``; every dev
  account holds 2^64-1 of each), fees paid in a TIP-20 fee token (to the fee manager ``0xfeec…``),
  Tempo transactions (type ``0x76``: batched calls, 2D and expiring nonces, fee payers) and no native value.
  No contract of ours is needed: the real precompile emits ``Transfer`` and ``TransferWithMemo``.
- **a JSON-RPC front** (:class:`TempoRpc`, in this process) that forwards everything to anvil and logs which
  side called what. It changes one thing: ``eth_sendRawTransactionSync`` loses its optional second parameter
  (the EIP-7966 timeout in ms, which the SDK's server sends and anvil 1.7.1 refuses as "expected params
  sequence with length 1").
- **the chain clock runs** ``clock_lead`` **seconds ahead** (``evm_increaseTime``, default 40): pympp 0.16.0 signs
  expiring-nonce transactions with ``valid_before = now + 60`` (Tempo's current 300 s cap), while anvil
  1.7.1's Tempo (hardforks up to T4) still caps ``valid_before`` at block time + 30 s and silently drops
  anything later from the block (the server's send then times out). With the lead, ``valid_before`` lands
  20 s after the next block's timestamp. Block timestamps are therefore ``clock_lead`` seconds in the future.
- **the server** (:mod:`testbed.mpp_server`, a child process): FastAPI + pympp's ``tempo.charge``,
  ``price`` atomic units of pathUSD per chat call to the payee; its RPC is the front's ``/server`` path.
- **the client** (:meth:`MppStack.pay`, in this process): pympp's ``Mpp`` client with
  ``tempo.charge(account=…)``; its RPC is the front's ``/client`` path. Its HTTP goes through ``proxy``
  (default: the environment's ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` minus ``NO_PROXY``), trusting
  ``verify`` (default: ``$SSL_CERT_FILE`` if set) — the SDK's own ``PaymentTransport`` wraps an
  ``httpx.AsyncHTTPTransport`` that ignores proxy variables, so the proxy is passed to it explicitly.

The SDK has no session or subscription intent (0.16.0: ``tempo``, ``evm`` and ``stripe`` methods, ``charge``
only), so there is none here. ``python -m testbed.mpp`` starts the stack, prints it as JSON, runs until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import json
import os
import ssl
import sys
import threading
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator
from urllib.parse import urlsplit

from .chain import PAYEE, PAYER, DevAccount, OnAnvil
from .service import serve_until_stopped
from .mpp_server import FAIL_HEADER, FAKE_REFERENCE_HEADER, HIDE_RECEIPT_HEADER, PATH_USD
from .node import Anvil, start_anvil

TEMPO_CHAIN_ID = 4217
HARDFORK = "T4"
CLOCK_LEAD = 40
ALPHA_USD = "0x20c0000000000000000000000000000000000001"
BETA_USD = "0x20c0000000000000000000000000000000000002"
THETA_USD = "0x20c0000000000000000000000000000000000003"
FEE_MANAGER = "0xfeec000000000000000000000000000000000000"
"""Where a Tempo transaction's fee goes: a ``Transfer(payer → 0xfeec…, fee)`` log of the fee token."""
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
"""keccak256("Transfer(address,address,uint256)")"""
TRANSFER_WITH_MEMO_TOPIC = "0x57bc7354aa85aed339e000bccffabbc529466af35f0772c8f8ee1145927de7f0"
"""keccak256("TransferWithMemo(address,address,uint256,bytes32)") — from, to and memo indexed, amount in data"""
MPP_MEMO_TAG = "0xef1ed712"
"""keccak256("mpp")[:4]: the first bytes of the attribution memo the SDK puts on the transfer."""

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ---------------------------------------------------------------------------------------------
# The JSON-RPC front
# ---------------------------------------------------------------------------------------------


class TempoRpc:
    """A JSON-RPC relay on 127.0.0.1 in front of anvil (a thread of this process).

    ``url_for("server")`` / ``url_for("client")`` give per-role URLs (any path works); :attr:`calls` lists
    ``(role, method)`` of every call in order. The only rewrite: ``eth_sendRawTransactionSync [raw, timeout]``
    is forwarded as ``[raw]`` (anvil takes no timeout).
    """

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        rpc = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                out = rpc._relay(self.path.strip("/") or "-", body)
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="tempo-rpc", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def url_for(self, role: str) -> str:
        return f"{self.url}/{role}"

    def methods(self, role: str | None = None) -> list[str]:
        """The JSON-RPC methods called so far (by ``role`` only, if given)."""
        with self._lock:
            return [m for r, m in self.calls if role is None or r == role]

    def _relay(self, role: str, body: bytes) -> bytes:
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        calls = payload if isinstance(payload, list) else [payload] if isinstance(payload, dict) else []
        for call in calls:
            method = str(call.get("method"))
            with self._lock:
                self.calls.append((role, method))
            if method == "eth_sendRawTransactionSync" and isinstance(call.get("params"), list):
                call["params"] = call["params"][:1]
        if calls:
            body = json.dumps(payload).encode()
        req = urllib.request.Request(self.upstream, body, {"content-type": "application/json"})
        try:
            with _DIRECT.open(req, timeout=60) as resp:
                return resp.read()
        except Exception as e:  # anvil gone or refusing: answer as a node would
            first = calls[0] if calls else {}
            return json.dumps({"jsonrpc": "2.0", "id": first.get("id"),
                               "error": {"code": -32603, "message": f"relay: {e}"}}).encode()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "TempoRpc":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# Decoding the wire
# ---------------------------------------------------------------------------------------------


def b64url_json(value: str | None) -> Any:
    """base64url (padding optional) of UTF-8 JSON, as Python data; None stays None."""
    if value is None:
        return None
    raw = value.strip()
    return json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))


def parse_www_authenticate(value: str | None) -> dict | None:
    """A ``WWW-Authenticate: Payment …`` value as ``{id, realm, method, intent, request, expires, opaque, …}``
    with ``request`` and ``opaque`` decoded (``request_b64`` keeps the wire form). Uses the SDK's parser."""
    if not value:
        return None
    from mpp import Challenge

    c = Challenge.from_www_authenticate(value)
    out = {"id": c.id, "realm": c.realm, "method": c.method, "intent": c.intent, "request": c.request,
           "request_b64": c.request_b64, "expires": c.expires}
    for key in ("digest", "description", "opaque", "header"):
        if getattr(c, key) is not None:
            out[key] = getattr(c, key)
    return out


def parse_authorization(value: str | None) -> dict | None:
    """An ``Authorization: Payment <b64url JSON>`` value as its JSON ``{challenge, payload, source}``, with the
    echoed ``challenge.request`` (and ``opaque``) also decoded under ``request_decoded``/``opaque_decoded``.
    ``payload.signature`` is a live signed transaction: a secret until it is on chain."""
    if not value or not value.lower().startswith("payment "):
        return None
    data = b64url_json(value.split(" ", 1)[1])
    ch = data.get("challenge") if isinstance(data, dict) else None
    if isinstance(ch, dict):
        if isinstance(ch.get("request"), str):
            ch["request_decoded"] = b64url_json(ch["request"])
        if isinstance(ch.get("opaque"), str):
            ch["opaque_decoded"] = b64url_json(ch["opaque"])
    return data


@dataclass
class Exchange:
    """One HTTP request/response as the client's transport saw it."""

    method: str
    url: str
    request_headers: list[tuple[str, str]]
    status: int
    response_headers: list[tuple[str, str]]

    def request_header(self, name: str) -> str | None:
        return _get(self.request_headers, name)

    def response_header(self, name: str) -> str | None:
        return _get(self.response_headers, name)


def _get(headers: list[tuple[str, str]], name: str) -> str | None:
    name = name.lower()
    return next((v for k, v in headers if k.lower() == name), None)


@dataclass
class MppCall:
    """What a paid call came to: the final answer and the exchanges on the way (the 402, the paid retry)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    exchanges: list[Exchange] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        return _get(self.headers, name)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def challenge_exchange(self) -> Exchange | None:
        return next((e for e in self.exchanges if e.status == 402), None)

    @property
    def paid_exchange(self) -> Exchange | None:
        return next((e for e in reversed(self.exchanges)
                     if (e.request_header("authorization") or "").lower().startswith("payment ")), None)

    @property
    def www_authenticate(self) -> str | None:
        """The raw ``WWW-Authenticate`` of the 402."""
        e = self.challenge_exchange
        return e.response_header("www-authenticate") if e else None

    @property
    def challenge(self) -> dict | None:
        """The 402's challenge, decoded (see :func:`parse_www_authenticate`)."""
        return parse_www_authenticate(self.www_authenticate)

    @property
    def authorization(self) -> str | None:
        """The raw ``Authorization: Payment …`` of the paid retry (holds a signed transaction: a secret)."""
        e = self.paid_exchange
        return e.request_header("authorization") if e else None

    @property
    def credential(self) -> dict | None:
        """The paid retry's credential, decoded (see :func:`parse_authorization`)."""
        return parse_authorization(self.authorization)

    @property
    def credential_hash(self) -> str | None:
        """A push-mode credential's ``payload.hash``: the transaction the client already broadcast."""
        payload = (self.credential or {}).get("payload") or {}
        return payload.get("hash") if payload.get("type") == "hash" else None

    @property
    def signed_transaction(self) -> str | None:
        """The credential's ``payload.signature``: the client's signed Tempo transaction (``0x76…``)."""
        payload = (self.credential or {}).get("payload") or {}
        return payload.get("signature") if payload.get("type") == "transaction" else None

    @property
    def payment_receipt(self) -> str | None:
        """The raw ``Payment-Receipt`` of the final answer."""
        return self.header("payment-receipt")

    @property
    def receipt(self) -> dict | None:
        """``Payment-Receipt`` decoded: ``{status, method, timestamp, reference, fundingCurrency?, …}``."""
        return b64url_json(self.payment_receipt)

    @property
    def reference(self) -> str | None:
        return (self.receipt or {}).get("reference")

    @property
    def tx_hash(self) -> str | None:
        """The receipt's reference when it looks like a transaction hash (``0x`` + 64 hex)."""
        ref = self.reference
        return ref if isinstance(ref, str) and len(ref) == 66 and ref.startswith("0x") else None


def signed_transaction_hash(raw_tx: str) -> str:
    """keccak256 of a signed transaction's bytes: its hash on chain (what an honest receipt references)."""
    from eth_hash.auto import keccak

    return "0x" + keccak(bytes.fromhex(raw_tx.removeprefix("0x"))).hex()


TEMPO_TX_FIELDS = ("chain_id", "max_priority_fee_per_gas", "max_fee_per_gas", "gas_limit", "calls", "access_list",
                   "nonce_key", "nonce", "valid_before", "valid_after", "fee_token", "fee_payer_signature",
                   "aa_authorization_list")


def decode_tempo_transaction(raw_tx: str) -> dict:
    """A signed Tempo transaction (``0x76 || rlp([...13 fields, key_authorization?, sender_signature])``) as
    named fields, without a node: integers as ints, addresses/bytes as ``0x`` hex, each call as ``{to, value,
    input}``; ``sender_signature`` is the 65-byte ``r‖s‖v`` of a secp256k1 signer (longer for P-256/WebAuthn
    or keychain signatures). A ``0x78`` fee-payer envelope (a sponsored charge) is refused."""
    import rlp

    raw = bytes.fromhex(raw_tx.removeprefix("0x"))
    if raw[:1] != b"\x76":
        raise ValueError(f"not a Tempo transaction (type byte {raw[:1].hex() or 'none'}, want 76)")
    items = rlp.decode(raw[1:])
    as_int = lambda b: int.from_bytes(b, "big")
    out: dict[str, Any] = {"type": "0x76"}
    for name, value in zip(TEMPO_TX_FIELDS, items[:13]):
        if name == "calls":
            value = [{"to": "0x" + c[0].hex(), "value": as_int(c[1]), "input": "0x" + c[2].hex()} for c in value]
        elif name in ("access_list", "aa_authorization_list"):
            value = value if isinstance(value, list) else []
        elif name == "fee_token":
            value = "0x" + value.hex() if value else None
        elif name == "fee_payer_signature":
            value = [as_int(x) for x in value] if isinstance(value, list) and value else None
        elif name in ("valid_before", "valid_after"):
            value = as_int(value) if value else None
        else:
            value = as_int(value)
        out[name] = value
    rest = items[13:]
    out["key_authorization"] = rest[0] if len(rest) == 2 else None
    out["sender_signature"] = "0x" + rest[-1].hex() if rest else None
    return out


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------


def env_proxy(url: str) -> str | None:
    """The proxy the environment asks for ``url`` (``<SCHEME>_PROXY``/``ALL_PROXY``, minus ``NO_PROXY``)."""
    proxies = urllib.request.getproxies_environment()
    parts = urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass_environment(parts.hostname, proxies):
        return None
    return proxies.get(parts.scheme) or proxies.get("all") or None


def _ssl_verify(verify: Any) -> Any:
    if isinstance(verify, ssl.SSLContext) or verify is False:
        return verify
    if isinstance(verify, (str, os.PathLike)):
        return ssl.create_default_context(cafile=os.fspath(verify))
    cafile = os.environ.get("SSL_CERT_FILE")
    if verify is None and cafile:
        return ssl.create_default_context(cafile=cafile)
    return True


def _run(coro):
    """Run ``coro`` to completion, also when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def pay(url: str, body: Any = None, *, private_key: str, rpc_url: str, chain_id: int = TEMPO_CHAIN_ID,
        currency: str = PATH_USD, max_atomic_amount: int | None = None, method: str = "POST",
        headers: dict | None = None, proxy: str | None | bool = None, verify: Any = None,
        mode: str = "pull", timeout: float = 60.0) -> MppCall:
    """One call with pympp's client (its ``PaymentTransport`` with ``tempo.charge``, as ``Mpp`` builds it): on a
    402 it signs a type-0x76 transaction paying the challenge and retries with ``Authorization: Payment …``.
    ``max_atomic_amount`` caps what it will pay (the SDK's own check); ``proxy``/``verify`` as in the module doc.

    ``mode="pull"`` (the SDK's only client mode): the credential carries the signed transaction and the server
    broadcasts it. ``mode="push"``: the client broadcasts the same transaction itself
    (``eth_sendRawTransactionSync`` on ``rpc_url``) and the credential carries only ``{"type": "hash"}`` (as
    mppx's push mode does); the SDK's server then checks the receipt on chain instead of sending anything."""
    import httpx
    from mpp import Credential
    from mpp.client import PaymentTransport
    from mpp.methods.tempo import TempoAccount
    from mpp.methods.tempo import client as tempo
    from mpp.runtime import ClientMethod

    if proxy is None:
        proxy = env_proxy(url)
    exchanges: list[Exchange] = []

    class Recording(httpx.AsyncBaseTransport):
        def __init__(self, inner: httpx.AsyncBaseTransport):
            self.inner = inner

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await self.inner.handle_async_request(request)
            exchanges.append(Exchange(request.method, str(request.url),
                                      [(k.decode(), v.decode()) for k, v in request.headers.raw],
                                      response.status_code,
                                      [(k.decode(), v.decode()) for k, v in response.headers.raw]))
            return response

        async def aclose(self) -> None:
            await self.inner.aclose()

    async def go() -> MppCall:
        inner = httpx.AsyncHTTPTransport(proxy=proxy or None, verify=_ssl_verify(verify), trust_env=False)
        method_cfg = tempo.charge(account=TempoAccount.from_key(private_key), rpc_url=rpc_url, chain_id=chain_id,
                                  currencies=[currency], max_atomic_amount=max_atomic_amount)
        if mode == "push":
            pull = method_cfg

            async def push_credential(params: Any) -> str:
                signed = Credential.from_authorization(await pull.create_credential(params))
                send = {"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransactionSync",
                        "params": [signed.payload["signature"]]}
                async with httpx.AsyncClient(trust_env=False, timeout=timeout) as rpc:
                    reply = (await rpc.post(rpc_url, json=send)).json()
                if "error" in reply:
                    raise RuntimeError(f"push: the node refused the transaction: {reply['error']}")
                tx_hash = reply["result"]["transactionHash"]
                return Credential(challenge=signed.challenge, payload={"type": "hash", "hash": tx_hash},
                                  source=signed.source).to_authorization()

            method_cfg = ClientMethod(method=pull.method, create_credential=push_credential,
                                      can_handle_challenge=pull.can_handle_challenge)
        elif mode != "pull":
            raise ValueError(f"mode must be 'pull' or 'push', not {mode!r}")
        transport = PaymentTransport(methods=[method_cfg], inner=Recording(inner))
        async with httpx.AsyncClient(transport=transport, timeout=timeout, trust_env=False) as http:
            kwargs: dict[str, Any] = {"headers": headers or {}}
            if body is not None:
                kwargs["json" if not isinstance(body, (bytes, str)) else "content"] = body
            r = await http.request(method, url, **kwargs)
            return MppCall(r.status_code, [(k.decode(), v.decode()) for k, v in r.headers.raw], r.content,
                           exchanges)

    return _run(go())


# ---------------------------------------------------------------------------------------------
# The stack
# ---------------------------------------------------------------------------------------------


class OnTempo(OnAnvil):
    """Where a Tempo stack's parts are (chain.OnAnvil), and its chain reads: TIP-20 balances (of
    ``currency`` by default), receipts and type-0x76 transactions. For MppStack and the session bed's stack."""

    currency: str

    def balance(self, address: str | DevAccount, token: str | None = None) -> int:
        """TIP-20 balance (atomic units, 6 decimals) of ``token`` (default the stack's currency)."""
        data = "0x70a08231" + str(address).lower().removeprefix("0x").rjust(64, "0")
        return int(self.anvil.rpc("eth_call", {"to": token or self.currency, "data": data}, "latest"), 16)

    def receipt(self, tx_hash: str) -> dict | None:
        return self.anvil.receipt(tx_hash)

    def transaction(self, tx_hash: str) -> dict | None:
        """``eth_getTransactionByHash``: type ``0x76``: ``calls``, ``feeToken``, ``nonceKey``, ``validBefore``…"""
        return self.anvil.rpc("eth_getTransactionByHash", tx_hash)


@dataclass
class MppStack(OnTempo):
    anvil: Anvil
    rpc: TempoRpc
    server_url: str
    price: int
    currency: str = PATH_USD
    payer: DevAccount = PAYER
    payee: DevAccount = PAYEE
    clock_lead: int = CLOCK_LEAD
    services: list = field(default_factory=list, repr=False)

    def pay(self, url: str | None = None, body: Any = None, proxy: str | None | bool = None, *,
            payer: DevAccount | None = None, fake_reference: str | None = None, fail: str | None = None,
            hide_receipt: bool = False, headers: dict | None = None, **kwargs: Any) -> MppCall:
        """A paid chat call as ``payer`` (default the stack's). ``fake_reference="random"|"unsent"``,
        ``fail="after-settle"`` and ``hide_receipt`` ask the server for its failure modes
        (:mod:`testbed.mpp_server`). See :func:`pay` for ``verify``, ``timeout``, ``max_atomic_amount``."""
        if body is None:
            body = {"model": "testbed-echo-1", "messages": [{"role": "user", "content": "hello"}]}
        headers = dict(headers or {})
        if fake_reference:
            headers[FAKE_REFERENCE_HEADER] = fake_reference
        if fail:
            headers[FAIL_HEADER] = fail
        if hide_receipt:
            headers[HIDE_RECEIPT_HEADER] = "1"
        kwargs.setdefault("max_atomic_amount", self.price * 100)
        return pay(url or self.chat_url, body, private_key=(payer or self.payer).private_key,
                   rpc_url=self.rpc.url_for("client"), chain_id=self.chain_id, currency=self.currency,
                   headers=headers, proxy=proxy, **kwargs)

    def describe(self) -> dict:
        return {
            "chain_id": self.chain_id, "rpc_url": self.rpc_url, "rpc_front": self.rpc.url,
            "currency": self.currency, "price": str(self.price), "server_url": self.server_url,
            "chat_url": self.chat_url, "clock_lead_seconds": self.clock_lead,
            "accounts": {a.role: {"address": a.address, "private_key": a.private_key}
                         for a in (self.payer, self.payee)},
        }


@contextlib.contextmanager
def mpp_stack(chain_id: int = TEMPO_CHAIN_ID, *, price: int = 10_000, currency: str = PATH_USD,
              tls: dict | None = None, clock_lead: int = CLOCK_LEAD, hardfork: str = HARDFORK,
              timeout: float = 30.0) -> Iterator[MppStack]:
    """Start anvil in Tempo mode (``chain_id``, ``hardfork``), its JSON-RPC front, and the pympp server
    charging ``price`` atomic units of ``currency`` per chat call to the payee.

    ``tls={"cert":…, "key":…}`` serves the server over HTTPS (URL host ``localhost``). Everything is stopped
    when the block exits, also on errors.
    """
    from .mpp_server import start_mpp_server

    with contextlib.ExitStack() as stack:
        anvil = stack.enter_context(start_anvil(chain_id, extra_args=["--network", "tempo", "--hardfork", hardfork]))
        if clock_lead:
            anvil.increase_time(clock_lead)
            anvil.mine()
        rpc = stack.enter_context(TempoRpc(anvil.url))
        srv = stack.enter_context(start_mpp_server(rpc_url=rpc.url_for("server"), recipient=PAYEE.address,
                                                   currency=currency, price=price, chain_id=chain_id, tls=tls,
                                                   timeout=timeout))
        yield MppStack(anvil=anvil, rpc=rpc, server_url=srv.url, price=price, currency=currency,
                       clock_lead=clock_lead, services=[srv])


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m testbed.mpp", description="run the MPP (pympp, Tempo) test stack")
    ap.add_argument("--chain-id", type=int, default=TEMPO_CHAIN_ID)
    ap.add_argument("--price", type=int, default=10_000)
    args = ap.parse_args(argv)
    with mpp_stack(args.chain_id, price=args.price) as s:
        print(json.dumps(s.describe(), indent=2), flush=True)
        serve_until_stopped()
    return 0


if __name__ == "__main__":
    sys.exit(main())
