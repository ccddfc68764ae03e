"""A local x402 facilitator: the ``x402`` package's own facilitator and exact EVM scheme, over HTTP.

Endpoints (what ``x402.http.HTTPFacilitatorClient`` calls):

- ``GET  /supported`` → ``SupportedResponse`` (``{kinds:[{x402Version, scheme, network}], extensions, signers}``)
- ``POST /verify``    ``{x402Version, paymentPayload, paymentRequirements}`` → ``VerifyResponse``
- ``POST /settle``    same body → ``SettleResponse`` (``{success, transaction, network, payer, ...}``)
- ``GET  /healthz``, and ``GET /settlements`` (every settle answer so far, for tests and demos)

Settlement transactions are signed with the facilitator dev account and sent to anvil:
``token.transferWithAuthorization(from,to,value,validAfter,validBefore,nonce,v,r,s)`` for a 65-byte
EOA signature (the bytes-signature overload for other signatures).

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


def create_app(rpc_url: str, networks: list[str], private_key: str = FACILITATOR.private_key):
    """The facilitator as a FastAPI app (sync handlers: the x402 EVM scheme blocks on web3 calls)."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from x402 import x402FacilitatorSync
    from x402.mechanisms.evm.exact import register_exact_evm_facilitator
    from x402.schemas.helpers import parse_payment_payload, parse_payment_requirements

    signer = make_signer(rpc_url, private_key)
    facilitator = x402FacilitatorSync()
    register_exact_evm_facilitator(facilitator, signer, networks=networks)
    settlements: list[dict] = []
    lock = threading.Lock()

    app = FastAPI(title="testbed x402 facilitator", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.facilitator = facilitator
    app.state.signer = signer

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
        return {"ok": True, "signer": signer.address, "networks": networks}

    @app.get("/supported")
    def supported():
        return _dump(facilitator.get_supported())

    @app.post("/verify")
    def verify(body: dict):
        try:
            payload, requirements = _parse(body)
        except Exception as e:  # malformed request
            return JSONResponse({"error": f"invalid request: {e}"}, status_code=400)
        try:
            return _dump(facilitator.verify(payload, requirements))
        except Exception as e:
            return JSONResponse({"error": f"{type(e).__name__}: {e}"}, status_code=500)

    @app.post("/settle")
    def settle(body: dict):
        try:
            payload, requirements = _parse(body)
        except Exception as e:
            return JSONResponse({"error": f"invalid request: {e}"}, status_code=400)
        try:
            result = _dump(facilitator.settle(payload, requirements))
        except Exception as e:
            return JSONResponse({"error": f"{type(e).__name__}: {e}"}, status_code=500)
        with lock:
            settlements.append(result)
        return result

    @app.get("/settlements")
    def list_settlements():
        with lock:
            return list(settlements)

    return app


def start_facilitator(rpc_url: str, networks: str | list[str], *, private_key: str = FACILITATOR.private_key,
                      timeout: float = 30.0, wait: bool = True):
    """Start the facilitator as a child process on 127.0.0.1; returns a :class:`~testbed.service.Service`."""
    from .service import start_service

    nets = [networks] if isinstance(networks, str) else list(networks)
    args = ["--rpc-url", rpc_url]
    for n in nets:
        args += ["--network", n]
    return start_service("facilitator", "testbed.facilitator", args, env={KEY_ENV: private_key}, timeout=timeout,
                         wait=wait)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.facilitator", description="local x402 facilitator")
    ap.add_argument("--rpc-url", required=True)
    ap.add_argument("--network", action="append", required=True, help="CAIP-2, e.g. eip155:8453 (repeatable)")
    ap.add_argument("--fd", type=int, help="serve this inherited listening socket")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    key = os.environ.get(KEY_ENV) or FACILITATOR.private_key
    from .service import serve_fd

    serve_fd(create_app(args.rpc_url, args.network, key), args.fd, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
