"""x402 ``auth-capture`` (escrow) on anvil: the REAL npm client pays, the escrow holds, capture and void on demand.

    from testbed.auth_capture import auth_capture_stack

    with auth_capture_stack() as s:                 # price 10_000: the cap the client authorizes
        call = s.pay(proxy=mitm_url, verify=mitm_ca)  # 402, then PAYMENT-SIGNATURE: the escrow holds 10,000
        call.status, call.payment_signature, call.payment_response   # decoded; the answer names the authorize tx
        s.payment_state()                           # {hasCollectedPayment: True, capturableAmount: 10000, ...}
        s.capture(4_000)                            # the merchant (payTo) gets 4,000 now
        s.void()                                    # the payer gets the other 6,000 back
        s.balance(s.payer), s.balance(s.payee)

Who is who (anvil's dev accounts, :mod:`testbed.chain`): the payer (1) runs the npm client
(``@x402/evm`` 2.27.0 ``AuthCaptureEvmScheme`` with ``@x402/fetch``'s ``wrapFetchWithPayment``, in Node:
``testbed/auth_capture/pay.mjs``); the payee (2) is the server's ``payTo``, the payment's ``receiver``; the
facilitator (3) is the operator (``extra.captureAuthorizer``, ``operatorType: "delegated"``: it submits every
escrow call) and the fee recipient; the server holds the receiver-authorizer key (dev account 6,
:data:`AUTHORIZER`), so the client's salt is bound (``saltNonce`` on the wire) and the server signs every
capture and void it asks the facilitator to relay. ``auth_capture_stack(receiver_authorizer=False)`` leaves the
authorizer out: an unbound salt, authorize only (the facilitator relays no lifecycle; :meth:`capture_on_chain`
and :meth:`void_on_chain` still act as the operator directly).

The contracts are the test bed's own (``testbed/contracts/TestAuthCapture.sol``: the escrow, its per-operator
token store, the ERC-3009 token collector and the operator refund collector), put with ``anvil_setCode`` at
the addresses the npm client has as constants for the v1.1 deployment (:data:`AUTH_CAPTURE_ESCROW`,
:data:`EIP3009_TOKEN_COLLECTOR`, :data:`OPERATOR_REFUND_COLLECTOR`).

The npm packages (``testbed/auth_capture/package.json``: ``@x402/core``, ``@x402/evm``, ``@x402/fetch`` 2.27.0,
``viem``, ``undici``) are installed on first use into ``testbed/auth_capture/node_modules`` (not the
repository's ``node_modules``: an ``npm install --no-save`` there would prune the packages already in it).

``python -m testbed.auth_capture`` starts the stack, prints where everything is (as JSON) and runs until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from . import ROOT, chain
from .auth_capture_scheme import (
    AUTH_CAPTURE_ESCROW,
    EIP3009_TOKEN_COLLECTOR,
    OPERATOR_REFUND_COLLECTOR,
    SCHEME,
    error_name,
    escrow_abi,
    payment_info_hash,
    payment_info_tuple,
    reconstruct_payment_info,
)
from .chain import FACILITATOR, PAYEE, PAYER, DevAccount, OnAnvil
from .service import serve_until_stopped
from .contracts.build import load_artifact
from .node import Anvil, rpc_call, start_anvil

__all__ = ["AUTH_CAPTURE_ESCROW", "EIP3009_TOKEN_COLLECTOR", "OPERATOR_REFUND_COLLECTOR", "AUTHORIZER",
           "AuthCaptureStack", "AuthCapturePayment", "auth_capture_stack", "ensure_npm_client"]

AUTHORIZER = DevAccount("receiver-authorizer", 6, "0x976EA74026E726554dB657fA54763abd0C3a0aa9",
                        "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e")
"""The server's receiver authorizer (dev account 6): signs the Capture and Void it asks the facilitator to relay."""

NODE_DIR = ROOT / "testbed" / "auth_capture"
RUNNER = NODE_DIR / "pay.mjs"
PRELOAD = ROOT / "receipts" / "node" / "preload.cjs"
NPM_PINS = {"@x402/core": "2.27.0", "@x402/evm": "2.27.0", "@x402/fetch": "2.27.0"}
CHAT_PATH = "/v1/chat/completions"
ADMIN_PATH = "/testbed/auth-capture"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def contracts() -> dict[str, str]:
    """address -> contract name, for everything :func:`install_contracts` places."""
    return {AUTH_CAPTURE_ESCROW: "TestAuthCaptureEscrow", EIP3009_TOKEN_COLLECTOR: "TestERC3009TokenCollector",
            OPERATOR_REFUND_COLLECTOR: "TestOperatorRefundCollector"}


def install_contracts(url: str) -> None:
    """Put the escrow and the collectors at the client's addresses (their runtime code is what their creation
    code returns: they have no constructor arguments, no immutables and no state to set up)."""
    for address, name in contracts().items():
        code = rpc_call(url, "eth_call", [{"data": load_artifact(name)["bytecode"], "gas": hex(30_000_000)}, "latest"])
        rpc_call(url, "anvil_setCode", [address, code])
        if rpc_call(url, "eth_getCode", [address, "latest"]).lower() != code.lower():
            raise RuntimeError(f"anvil_setCode did not put {name} at {address}")


def event_signatures() -> dict[str, str]:
    """Event name -> canonical signature of the escrow (tuples spelled out)."""
    def canon(i: dict) -> str:
        if i["type"].startswith("tuple"):
            return "(" + ",".join(canon(c) for c in i["components"]) + ")" + i["type"][5:]
        return i["type"]
    return {e["name"]: f"{e['name']}({','.join(canon(i) for i in e['inputs'])})"
            for e in escrow_abi() if e["type"] == "event"}


def event_topics() -> dict[str, str]:
    from eth_utils import keccak

    return {name: "0x" + keccak(text=sig).hex() for name, sig in event_signatures().items()}


def decode_events(w3: Any, receipt: Any) -> list[dict]:
    """The escrow's events in a receipt: ``[{event, args, logIndex}]`` in log order (bytes32 as 0x hex, the
    ``paymentInfo`` tuple as a dict of its fields)."""
    contract = w3.eth.contract(address=AUTH_CAPTURE_ESCROW, abi=escrow_abi())
    by_topic = {bytes.fromhex(t[2:]): name for name, t in event_topics().items()}
    out = []
    for log in receipt["logs"]:
        if log["address"].lower() != AUTH_CAPTURE_ESCROW.lower() or not log["topics"]:
            continue
        t0 = log["topics"][0]
        name = by_topic.get(bytes.fromhex(t0[2:]) if isinstance(t0, str) else bytes(t0))
        if name is None:
            continue
        decoded = getattr(contract.events, name)().process_log(log)
        args = {k: _plain(v) for k, v in decoded["args"].items()}
        out.append({"event": name, "args": args, "logIndex": decoded["logIndex"]})
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray)):
        return "0x" + bytes(v).hex()
    if isinstance(v, dict) or hasattr(v, "items"):
        return {k: _plain(x) for k, x in dict(v).items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def revert_error(exc: BaseException) -> str | None:
    """The escrow custom error (``Name(types)``) a web3 revert carries, if any."""
    data = getattr(exc, "data", None)
    if isinstance(data, str):
        return error_name(data)
    for arg in getattr(exc, "args", ()):
        if isinstance(arg, str) and arg.startswith("0x"):
            return error_name(arg)
    return None


# ---------------------------------------------------------------------------------------------
# The npm client
# ---------------------------------------------------------------------------------------------


def _npm_present() -> bool:
    from .node import npm_pins_present

    return npm_pins_present(NODE_DIR, NPM_PINS) and (NODE_DIR / "node_modules" / "viem" / "package.json").exists()


def ensure_npm_client(*, timeout: float = 300.0) -> Path:
    """Install ``testbed/auth_capture/package.json``'s packages into that folder once; returns the folder."""
    from .node import install_npm_folder

    return install_npm_folder(NODE_DIR, _npm_present, "the x402 npm client", timeout=timeout)


def _decode(value: str | None) -> Any:
    import base64

    return json.loads(base64.b64decode(value)) if value else None


@dataclass
class AuthCapturePayment:
    """One paid call by the npm client. ``exchanges`` are what its fetch sent and got (headers lower-cased)."""

    status: int | None
    body: Any
    exchanges: list[dict]
    payment_required: dict | None
    payment_signature: dict | None
    payment_response: dict | None
    error: str | None = None
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == 200

    @property
    def accepted(self) -> dict | None:
        """The ``accepts`` entry the client paid (``PAYMENT-SIGNATURE.accepted``)."""
        return (self.payment_signature or {}).get("accepted")

    @property
    def tx_hash(self) -> str | None:
        tx = (self.payment_response or {}).get("transaction")
        return tx if isinstance(tx, str) and len(tx) == 66 else None

    @property
    def payment_info(self) -> dict | None:
        """The escrow's ``PaymentInfo`` this payment commits to (rebuilt from the offer and the payload)."""
        if not self.payment_signature or not self.accepted:
            return None
        return reconstruct_payment_info(self.accepted, self.payment_signature["payload"])

    @property
    def payment_info_hash(self) -> str | None:
        info = self.payment_info
        if info is None:
            return None
        return payment_info_hash(int(self.accepted["network"].split(":")[1]), info)


def run_npm_client(url: str, private_key: str, *, body: Any = None, headers: dict | None = None,
                   proxy: str | None | bool = None, verify: Any = None, spend_controls: dict | bool | None = None,
                   timeout: float = 60.0) -> AuthCapturePayment:
    """Pay ``url`` with the npm auth-capture client in Node. ``proxy``: a proxy URL, ``False`` for none, ``None``
    for the environment's; ``verify``: a CA file to trust (``NODE_EXTRA_CA_CERTS``), ``False`` to trust
    anything (the server's or the proxy's certificate); ``spend_controls``: the SDK's ``SpendControls``
    (``{allowedAssets: [{network, asset, maxAmountPerPayment}]}``; it pays only its known assets otherwise)."""
    ensure_npm_client()
    env = {k: v for k, v in os.environ.items() if k.upper() not in PROXY_VARS}
    if proxy is None:
        proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or False
    if proxy:
        env.update({"HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "NO_PROXY": "", "NODE_USE_ENV_PROXY": "1"})
    if isinstance(verify, (str, os.PathLike)):
        env["NODE_EXTRA_CA_CERTS"] = os.fspath(verify)
    elif verify is False:
        env["NODE_TLS_REJECT_UNAUTHORIZED"] = "0"
    env["NODE_OPTIONS"] = f"{env.get('NODE_OPTIONS', '')} --require {PRELOAD}".strip()
    env["TESTBED_PAYER_KEY"] = private_key
    args: dict[str, Any] = {"url": url, "body": body, "headers": headers or {}}
    if spend_controls is not None:
        args["spendControls"] = spend_controls
    done = subprocess.run(["node", str(RUNNER), json.dumps(args)], cwd=NODE_DIR, env=env, capture_output=True,
                          text=True, timeout=timeout)
    try:
        out = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return AuthCapturePayment(None, None, [], None, None, None,
                                  error=f"node exited {done.returncode}: {done.stdout[-2000:]}", stderr=done.stderr)
    if "error" in out:
        return AuthCapturePayment(None, None, [], None, None, None, error=out["error"], stderr=done.stderr)
    return AuthCapturePayment(out["status"], out["body"], out["exchanges"], out["paymentRequired"],
                              out["paymentSignature"], out["paymentResponse"], stderr=done.stderr)


# ---------------------------------------------------------------------------------------------
# The stack
# ---------------------------------------------------------------------------------------------


class LifecycleError(RuntimeError):
    """The server's lifecycle route refused (e.g. no receiver authorizer)."""


@dataclass
class AuthCaptureStack(OnAnvil):
    anvil: Anvil
    token: str
    facilitator_url: str
    server_url: str
    price: int
    receiver_authorizer: bool = True
    payer: DevAccount = PAYER
    payee: DevAccount = PAYEE
    operator: DevAccount = FACILITATOR
    authorizer: DevAccount = AUTHORIZER
    services: list = field(default_factory=list, repr=False)

    # ------------------------------------------------------------------ where things are
    def escrow(self, w3: Any = None):
        return (w3 or self.w3()).eth.contract(address=AUTH_CAPTURE_ESCROW, abi=escrow_abi())

    def token_store(self) -> str:
        """The operator's token store: where the escrowed money sits."""
        return self.escrow().functions.getTokenStore(self.operator.address).call()

    def balances(self) -> dict[str, int]:
        """Test USDC of the payer, the payee (merchant), the operator's token store (escrow) and the operator."""
        return {"payer": self.balance(self.payer), "payee": self.balance(self.payee),
                "escrow": self.balance(self.token_store()), "operator": self.balance(self.operator)}

    # ------------------------------------------------------------------ paying
    def pay(self, url: str | None = None, body: Any = None, proxy: str | None | bool = None, *, verify: Any = None,
            headers: dict | None = None, payer: DevAccount | None = None, max_amount: int | None = None,
            timeout: float = 60.0) -> AuthCapturePayment:
        """A paid call with the npm auth-capture client (see :func:`run_npm_client` for ``proxy`` and ``verify``);
        it may authorize up to ``max_amount`` of the test token per payment (default 100 x price)."""
        if body is None:
            body = {"model": "testbed-echo-1", "messages": [{"role": "user", "content": "hello"}]}
        cap = max_amount if max_amount is not None else self.price * 100
        controls = {"allowedAssets": [{"network": self.network, "asset": self.token, "maxAmountPerPayment": str(cap)}]}
        return run_npm_client(url or self.chat_url, (payer or self.payer).private_key, body=body, headers=headers,
                              proxy=proxy, verify=verify, spend_controls=controls, timeout=timeout)

    # ------------------------------------------------------------------ the server's lifecycle (via the facilitator)
    def payments(self) -> list[dict]:
        """The server's authorized payments: ``{paymentInfoHash, paymentInfo, saltNonce, authorizeTx, capturable,
        refundable, lifecycle: [{type, settlement}]}``."""
        return self._admin("/payments")["payments"]

    def capture(self, amount: int, payment_info_hash: str | None = None, **fields: Any) -> dict:
        """The server asks the facilitator to capture ``amount`` (default payment: the latest); ``fields`` may set
        ``feeAmount``, ``feeReceiver``, ``expectedCapturableAmount``/``expectedRefundableAmount`` (else the
        server's own). Returns ``{payload, settlement}``: the lifecycle payload sent to ``/settle`` and its answer
        (``settlement["success"]`` False with the reason when refused)."""
        return self._admin("/capture", {"amount": int(amount), **_hash(payment_info_hash), **fields})

    def void(self, payment_info_hash: str | None = None) -> dict:
        """The server asks the facilitator to void what is still held (default payment: the latest)."""
        return self._admin("/void", _hash(payment_info_hash))

    # ------------------------------------------------------------------ on chain
    def payment_state(self, payment_info_hash: str | None = None) -> dict:
        """The escrow's ``paymentState`` (default payment: the server's latest)."""
        h = payment_info_hash or self.payments()[-1]["paymentInfoHash"]
        collected, capturable, refundable = self.escrow().functions.paymentState(bytes.fromhex(h[2:])).call()
        return {"hasCollectedPayment": collected, "capturableAmount": capturable, "refundableAmount": refundable}

    def events(self, tx_hash: str) -> list[dict]:
        w3 = self.w3()
        return decode_events(w3, w3.eth.get_transaction_receipt(tx_hash))

    def capture_on_chain(self, amount: int, payment_info: dict | None = None, *, fee_amount: int = 0,
                         fee_receiver: str | None = None, sender: DevAccount | None = None) -> dict:
        """``escrow.capture`` sent straight from ``sender`` (default the operator), not through the facilitator;
        returns the receipt. A revert raises web3's error (:func:`revert_error` names the escrow's error)."""
        info = payment_info or self.payments()[-1]["paymentInfo"]
        fn = self.escrow().functions.capture(payment_info_tuple(info), int(amount), int(fee_amount),
                                             self.w3().to_checksum_address(fee_receiver or info["feeReceiver"]))
        return self._send(fn, sender or self.operator)

    def void_on_chain(self, payment_info: dict | None = None, *, sender: DevAccount | None = None) -> dict:
        info = payment_info or self.payments()[-1]["paymentInfo"]
        return self._send(self.escrow().functions.void(payment_info_tuple(info)), sender or self.operator)

    def reclaim_on_chain(self, payment_info: dict | None = None, *, sender: DevAccount | None = None) -> dict:
        """The payer's own way out, once ``authorizationExpiry`` (the offer's ``captureDeadline``) has passed."""
        info = payment_info or self.payments()[-1]["paymentInfo"]
        return self._send(self.escrow().functions.reclaim(payment_info_tuple(info)), sender or self.payer)

    def _send(self, fn: Any, sender: DevAccount, timeout: float = 30.0) -> dict:
        tx = fn.build_transaction({"from": sender.address})  # estimates gas: a revert raises here
        return chain._send(self.w3(), tx, sender, timeout)

    # ------------------------------------------------------------------ the facilitator's side
    def settlements(self) -> list[dict]:
        return self._get(self.facilitator_url + "/settlements")

    def facilitator_exchanges(self) -> list[dict]:
        """Every /verify and /settle the facilitator got: ``{endpoint, request, response, status}``."""
        return self._get(self.facilitator_url + "/exchanges")

    def facilitator_settle(self, body: dict) -> dict:
        """POST ``body`` (``{x402Version, paymentPayload, paymentRequirements}``) to the facilitator's /settle."""
        from .service import _NO_PROXY_OPENER

        req = urllib.request.Request(self.facilitator_url + "/settle", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
        with _NO_PROXY_OPENER.open(req, timeout=60) as r:
            return json.loads(r.read())

    def supported(self) -> dict:
        return self._get(self.facilitator_url + "/supported")

    @staticmethod
    def _get(url: str) -> Any:
        from .service import _NO_PROXY_OPENER

        with _NO_PROXY_OPENER.open(url, timeout=10) as r:
            return json.loads(r.read())

    def _admin(self, path: str, body: Any = None) -> Any:
        from .service import _NO_PROXY_OPENER  # no proxy; HTTPS without verification (a local test server)

        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server_url + ADMIN_PATH + path, data=data,
                                     method="GET" if body is None else "POST",
                                     headers={"content-type": "application/json"})
        try:
            with _NO_PROXY_OPENER.open(req, timeout=120) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise LifecycleError(json.loads(e.read() or b"{}").get("error") or str(e)) from None

    def receipts_config(self, confirmations: int, **network: Any) -> dict:
        """Settings for `receipts` reading this chain (as :meth:`testbed.stack.PaidStack.receipts_config`)."""
        return {"assets": [{"network": self.network, "address": self.token, "symbol": "tUSDC", "decimals": 6}],
                "networks": {self.network: {"rpc": self.rpc_url, "confirmations": confirmations,
                                            "facilitators": [self.operator.address], **network}}}

    def describe(self) -> dict:
        return {
            "scheme": SCHEME, "chain_id": self.chain_id, "network": self.network, "rpc_url": self.rpc_url,
            "token": self.token, "price": str(self.price), "facilitator_url": self.facilitator_url,
            "server_url": self.server_url, "chat_url": self.chat_url, "lifecycle": self.server_url + ADMIN_PATH,
            "receiver_authorizer": self.authorizer.address if self.receiver_authorizer else None,
            "contracts": {name: address for address, name in contracts().items()},
            "runner": str(RUNNER),
            "accounts": {a.role: {"address": a.address, "private_key": a.private_key}
                         for a in (self.payer, self.payee, self.operator, self.authorizer)},
        }


def _hash(h: str | None) -> dict:
    return {"paymentInfoHash": h} if h else {}


@contextlib.contextmanager
def auth_capture_stack(
    chain_id: int = 8453,
    *,
    price: int = 10_000,
    payer_funds: int = chain.DEFAULT_PAYER_FUNDS,
    receiver_authorizer: bool = True,
    fee_bps: int = 0,
    max_timeout_seconds: int = 300,
    capture_deadline_seconds: int = 3_600,
    refund_deadline_seconds: int = 86_400,
    tls: dict | None = None,
    timeout: float = 30.0,
) -> Iterator[AuthCaptureStack]:
    """Start anvil (``chain_id``), place the escrow contracts, deploy and fund test USDC, then the facilitator
    (the operator; ``fee_bps`` its fixed fee, published as ``minFeeBps = maxFeeBps``) and the server (``price``:
    the cap each payment authorizes; the capture and refund deadlines are that many seconds after the 402).
    ``tls={"cert":…, "key":…}`` serves the resource server over HTTPS (URL host ``localhost``). The npm client is
    installed (once) meanwhile. Everything is stopped when the block exits, also on errors."""
    from concurrent.futures import ThreadPoolExecutor

    from .auth_capture_services import start_facilitator, start_server

    with contextlib.ExitStack() as stack, ThreadPoolExecutor(1) as pool:
        npm = pool.submit(ensure_npm_client)
        anvil = stack.enter_context(start_anvil(chain_id))
        fac = stack.enter_context(start_facilitator(anvil.url, anvil.network, fee_bps=fee_bps, timeout=timeout,
                                                    wait=False))
        install_contracts(anvil.url)
        token = chain.deploy_token(anvil.url)
        srv = stack.enter_context(start_server(
            facilitator_url=fac.url, network=anvil.network, asset=token, pay_to=PAYEE.address, price=price,
            authorizer_key=AUTHORIZER.private_key if receiver_authorizer else None,
            max_timeout_seconds=max_timeout_seconds, capture_deadline_seconds=capture_deadline_seconds,
            refund_deadline_seconds=refund_deadline_seconds, tls=tls, timeout=timeout, wait=False))
        chain.fund(anvil.url, token, PAYER, payer_funds)
        fac.wait_ready(timeout)
        srv.wait_ready(timeout)
        npm.result()
        yield AuthCaptureStack(anvil=anvil, token=token, facilitator_url=fac.url, server_url=srv.url, price=price,
                               receiver_authorizer=receiver_authorizer, services=[fac, srv])



def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m testbed.auth_capture", description="run the auth-capture test stack")
    ap.add_argument("--chain-id", type=int, default=8453)
    ap.add_argument("--price", type=int, default=10_000)
    ap.add_argument("--fee-bps", type=int, default=0)
    ap.add_argument("--no-receiver-authorizer", action="store_true", help="unbound salt; authorize only")
    args = ap.parse_args(argv)
    with auth_capture_stack(args.chain_id, price=args.price, fee_bps=args.fee_bps,
                            receiver_authorizer=not args.no_receiver_authorizer) as s:
        print(json.dumps(s.describe(), indent=2), flush=True)
        serve_until_stopped()
    return 0


if __name__ == "__main__":
    sys.exit(main())
