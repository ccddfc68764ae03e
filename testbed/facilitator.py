"""A local x402 facilitator: the ``x402`` package's own facilitator and exact EVM / SVM schemes, over HTTP.

Endpoints (what ``x402.http.HTTPFacilitatorClient`` calls):

- ``GET  /supported`` → ``SupportedResponse`` (``{kinds:[{x402Version, scheme, network}], extensions, signers}``)
- ``POST /verify``    ``{x402Version, paymentPayload, paymentRequirements}`` → ``VerifyResponse``
- ``POST /settle``    same body → ``SettleResponse`` (``{success, transaction, network, payer, ...}``)
- ``GET  /healthz``, and ``GET /settlements`` (every settle answer so far, for tests and demos)
- ``GET  /exchanges`` every /verify and /settle so far as ``{endpoint, request, response, status}`` (the
  request bodies too: what a resource server sent, e.g. a batch-settlement claim)

Settlement transactions are signed with the facilitator dev account and sent to anvil:
``token.transferWithAuthorization(from,to,value,validAfter,validBefore,nonce,v,r,s)`` for a 65-byte
EOA signature (the bytes-signature overload for other signatures).

Solana networks (``--network solana:…``, with ``--svm-rpc-url``, e.g. a :class:`testbed.solana_node.SolanaNode`)
get the SDK's exact SVM scheme: the facilitator simulates the client's partially signed transaction,
adds the fee payer's signature and sends it. The fee payer's keypair comes from ``TESTBED_SVM_FEE_PAYER_KEY``
(base58 of the 64-byte keypair, as ``str(solders.keypair.Keypair)`` gives it); ``/supported`` advertises it
as ``extra.feePayer``. EVM and SVM networks can be served by one facilitator.

With ``--batch-settlement`` the EVM networks also get the SDK's ``batch-settlement`` scheme (payment
channels: deposits through the deposit collectors, claims, settles and cooperative refunds against the
channel contract at the SDK's constant address; see :mod:`testbed.channels`). With
``$TESTBED_BATCH_AUTHORIZER_KEY`` set, the facilitator holds that receiver-authorizer key: ``/supported``
advertises its address as ``extra.receiverAuthorizer`` and it signs claims and refunds that come without
the authorizer's signature.

Run as a child process by :func:`start_facilitator`; ``python -m testbed.facilitator --help`` to run it
by itself.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from typing import Any

from .chain import FACILITATOR

KEY_ENV = "TESTBED_FACILITATOR_KEY"
SVM_KEY_ENV = "TESTBED_SVM_FEE_PAYER_KEY"
BATCH_AUTHORIZER_KEY_ENV = "TESTBED_BATCH_AUTHORIZER_KEY"


def is_svm(network: str) -> bool:
    """A Solana CAIP-2 id (``solana:<genesis hash prefix>``)."""
    return network.startswith("solana:")


def _signer_class():
    from x402.mechanisms.evm.signers import FacilitatorWeb3Signer

    class AnvilFacilitatorSigner(FacilitatorWeb3Signer):
        """FacilitatorWeb3Signer whose nonces follow the chain, so anvil snapshot/revert is safe.

        The stock signer caches the next nonce and only moves it forward; after ``evm_revert`` the
        chain's nonce goes back and every later settlement would wait forever in the mempool. Here
        each send takes the pending nonce from the node, with sends serialized by a lock.
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._send_lock = threading.RLock()

        def _reserve_nonce(self) -> int:
            return self._w3.eth.get_transaction_count(self._account.address, "pending")

        def write_contract(self, *args: Any, **kwargs: Any) -> str:
            with self._send_lock:
                return super().write_contract(*args, **kwargs)

        def send_transaction(self, *args: Any, **kwargs: Any) -> str:
            with self._send_lock:
                return super().send_transaction(*args, **kwargs)

        @property
        def w3(self):
            """The Web3 instance: the batch-settlement facilitator reads the ``Settled`` event's amount with it."""
            return self._w3

    return AnvilFacilitatorSigner


def make_signer(rpc_url: str, private_key: str, *, confirmation_timeout: float = 60.0):
    """The facilitator's EVM signer for ``rpc_url`` (no proxy: the node is local)."""
    import requests
    from web3 import Web3

    signer = _signer_class()(private_key=private_key, rpc_url=rpc_url,
                             confirmation_timeout_seconds=confirmation_timeout)
    session = requests.Session()
    session.trust_env = False
    signer._w3.provider = Web3.HTTPProvider(rpc_url, session=session, request_kwargs={"timeout": 30})
    return signer


def make_svm_signer(rpc_url: str, fee_payer_key: str):
    """The facilitator's SVM signer (fee payer) for the Solana JSON-RPC node at ``rpc_url``."""
    from solders.keypair import Keypair
    from x402.mechanisms.svm.signers import FacilitatorKeypairSigner

    return FacilitatorKeypairSigner(Keypair.from_base58_string(fee_payer_key), rpc_url=rpc_url)


def create_app(rpc_url: str | None, networks: list[str], private_key: str = FACILITATOR.private_key, *,
               svm_rpc_url: str | None = None, svm_fee_payer: str | None = None,
               batch_settlement: bool = False, batch_authorizer_key: str | None = None):
    """The facilitator as a FastAPI app (sync handlers: the x402 schemes block on RPC calls).

    EVM networks settle on ``rpc_url`` with ``private_key``; ``solana:…`` networks on ``svm_rpc_url``
    with the fee payer keypair ``svm_fee_payer`` (base58 of its 64 bytes). ``batch_settlement`` adds the
    SDK's batch-settlement scheme on the EVM networks, with ``batch_authorizer_key`` (optional) as the
    receiver-authorizer key it advertises and signs with.
    """
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from x402 import x402FacilitatorSync
    from x402.schemas.helpers import parse_payment_payload, parse_payment_requirements

    evm_networks = [n for n in networks if not is_svm(n)]
    svm_networks = [n for n in networks if is_svm(n)]
    facilitator = x402FacilitatorSync()
    signer = svm_signer = None
    if evm_networks:
        from x402.mechanisms.evm.exact import register_exact_evm_facilitator

        if not rpc_url:
            raise ValueError(f"EVM networks {evm_networks} need an RPC URL")
        signer = make_signer(rpc_url, private_key)
        register_exact_evm_facilitator(facilitator, signer, networks=evm_networks)
        if batch_settlement:
            from x402.mechanisms.evm.batch_settlement.authorizer_signer import LocalAuthorizerSigner
            from x402.mechanisms.evm.batch_settlement.facilitator.scheme import BatchSettlementEvmFacilitator

            authorizer = LocalAuthorizerSigner(batch_authorizer_key) if batch_authorizer_key else None
            facilitator.register(evm_networks, BatchSettlementEvmFacilitator(signer, authorizer_signer=authorizer))
    if svm_networks:
        from x402.mechanisms.svm.exact import register_exact_svm_facilitator

        if not svm_rpc_url or not svm_fee_payer:
            raise ValueError(f"Solana networks {svm_networks} need an SVM RPC URL and a fee payer key")
        svm_signer = make_svm_signer(svm_rpc_url, svm_fee_payer)
        register_exact_svm_facilitator(facilitator, svm_signer, networks=svm_networks)
    settlements: list[dict] = []
    exchanges: list[dict] = []
    lock = threading.Lock()

    app = FastAPI(title="testbed x402 facilitator", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.facilitator = facilitator
    app.state.signer = signer
    app.state.svm_signer = svm_signer

    def _parse(body: Any):
        if not isinstance(body, dict) or "paymentPayload" not in body or "paymentRequirements" not in body:
            raise ValueError("body must be {x402Version, paymentPayload, paymentRequirements}")
        payload = parse_payment_payload(body["paymentPayload"])
        version = int(body.get("x402Version") or payload.x402_version)
        requirements = parse_payment_requirements(version, body["paymentRequirements"])
        return payload, requirements

    def _dump(model) -> dict:
        return model.model_dump(by_alias=True, exclude_none=True, mode="json")

    @app.get("/healthz")
    def healthz():
        answer: dict[str, Any] = {"ok": True, "networks": networks}
        if signer is not None:
            answer["signer"] = signer.address
        if svm_signer is not None:
            answer["feePayers"] = svm_signer.get_addresses()
        return answer

    @app.get("/supported")
    def supported():
        return _dump(facilitator.get_supported())

    def _answer(endpoint: str, body: Any, answer: Any, status: int = 200):
        with lock:
            exchanges.append({"endpoint": endpoint, "request": body, "response": answer, "status": status})
        return answer if status == 200 else JSONResponse(answer, status_code=status)

    @app.post("/verify")
    def verify(body: dict):
        try:
            payload, requirements = _parse(body)
        except Exception as e:  # malformed request
            return _answer("/verify", body, {"error": f"invalid request: {e}"}, 400)
        try:
            return _answer("/verify", body, _dump(facilitator.verify(payload, requirements)))
        except Exception as e:
            return _answer("/verify", body, {"error": f"{type(e).__name__}: {e}"}, 500)

    @app.post("/settle")
    def settle(body: dict):
        try:
            payload, requirements = _parse(body)
        except Exception as e:
            return _answer("/settle", body, {"error": f"invalid request: {e}"}, 400)
        try:
            result = _dump(facilitator.settle(payload, requirements))
        except Exception as e:
            return _answer("/settle", body, {"error": f"{type(e).__name__}: {e}"}, 500)
        with lock:
            settlements.append(result)
        return _answer("/settle", body, result)

    @app.get("/settlements")
    def list_settlements():
        with lock:
            return list(settlements)

    @app.get("/exchanges")
    def list_exchanges():
        with lock:
            return list(exchanges)

    return app


def start_facilitator(rpc_url: str | None, networks: str | list[str], *,
                      private_key: str = FACILITATOR.private_key, svm_rpc_url: str | None = None,
                      svm_fee_payer: str | None = None, batch_settlement: bool = False,
                      batch_authorizer_key: str | None = None, timeout: float = 30.0, wait: bool = True):
    """Start the facilitator as a child process on 127.0.0.1; returns a :class:`~testbed.service.Service`.

    For ``solana:…`` networks pass ``svm_rpc_url`` and ``svm_fee_payer`` (base58 of the 64-byte keypair,
    handed over in the environment, never on the command line); ``rpc_url`` may then be None.
    ``batch_settlement`` adds the batch-settlement scheme on the EVM networks; ``batch_authorizer_key``
    (in the environment too) makes the facilitator the receiver authorizer.
    """
    from .service import start_service

    nets = [networks] if isinstance(networks, str) else list(networks)
    args: list[str] = []
    env = {KEY_ENV: private_key}
    if rpc_url:
        args += ["--rpc-url", rpc_url]
    if svm_rpc_url:
        args += ["--svm-rpc-url", svm_rpc_url]
    if svm_fee_payer:
        env[SVM_KEY_ENV] = svm_fee_payer
    if batch_settlement:
        args.append("--batch-settlement")
    if batch_authorizer_key:
        env[BATCH_AUTHORIZER_KEY_ENV] = batch_authorizer_key
    for n in nets:
        args += ["--network", n]
    return start_service("facilitator", "testbed.facilitator", args, env=env, timeout=timeout, wait=wait)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.facilitator", description="local x402 facilitator")
    ap.add_argument("--rpc-url", help="EVM JSON-RPC (needed for eip155 networks)")
    ap.add_argument("--svm-rpc-url", help=f"Solana JSON-RPC (needed for solana: networks; fee payer from ${SVM_KEY_ENV})")
    ap.add_argument("--network", action="append", required=True,
                    help="CAIP-2, e.g. eip155:8453 or solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1 (repeatable)")
    ap.add_argument("--batch-settlement", action="store_true",
                    help="also the batch-settlement scheme on EVM networks "
                         f"(receiver authorizer key from ${BATCH_AUTHORIZER_KEY_ENV}, optional)")
    ap.add_argument("--fd", type=int, help="serve this inherited listening socket")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    key = os.environ.get(KEY_ENV) or FACILITATOR.private_key
    if any(not is_svm(n) for n in args.network) and not args.rpc_url:
        ap.error("--rpc-url is needed for EVM networks")
    if any(is_svm(n) for n in args.network) and not (args.svm_rpc_url and os.environ.get(SVM_KEY_ENV)):
        ap.error(f"--svm-rpc-url and ${SVM_KEY_ENV} are needed for solana: networks")
    from .service import serve_fd

    app = create_app(args.rpc_url, args.network, key, svm_rpc_url=args.svm_rpc_url,
                     svm_fee_payer=os.environ.get(SVM_KEY_ENV), batch_settlement=args.batch_settlement,
                     batch_authorizer_key=os.environ.get(BATCH_AUTHORIZER_KEY_ENV))
    serve_fd(app, args.fd, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
