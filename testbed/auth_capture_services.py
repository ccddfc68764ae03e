"""The auth-capture (escrow) facilitator and resource server, as child processes (see :mod:`testbed.auth_capture`).

Both are the ``x402`` Python SDK's own framework (``x402FacilitatorSync`` behind FastAPI; ``x402ResourceServer``
with its FastAPI payment middleware) with the test bed's ``auth-capture`` scheme plug-ins from
:mod:`testbed.auth_capture_scheme` registered: the SDK 2.25.0 has the ``escrow`` payment flow (settle before
the handler, and again after it) but no auth-capture mechanism.

Facilitator (``python -m testbed.auth_capture_services facilitator --rpc-url URL --network eip155:N``; its key
from ``$TESTBED_AUTH_CAPTURE_FACILITATOR_KEY``, default dev account 3): ``GET /supported`` (the kind's extra:
``captureAuthorizer`` = its own address, ``feeRecipient``, ``minFeeBps``/``maxFeeBps``), ``POST /verify``,
``POST /settle`` (a client's collect payload → ``authorize``; a server's ``{type: capture|void}`` payload →
``capture``/``void``), ``GET /settlements``, ``GET /exchanges``, ``GET /healthz``.

Resource server (``python -m testbed.auth_capture_services server --facilitator-url URL --network eip155:N
--asset TOKEN --pay-to ADDR --price N``; its receiver-authorizer key from ``$TESTBED_AUTH_CAPTURE_AUTHORIZER_KEY``,
none: unbound salt and no lifecycle relay): ``POST /v1/chat/completions`` behind the payment middleware
(402 → the client pays → the facilitator authorizes the cap into escrow before the handler runs; the
answer's ``PAYMENT-RESPONSE`` is that authorize settlement: capture is deferred), and the lifecycle routes
``GET /testbed/auth-capture/payments``, ``POST /testbed/auth-capture/capture`` ``{amount, paymentInfoHash?}``,
``POST /testbed/auth-capture/void`` ``{paymentInfoHash?}`` (default: the latest payment), each answering
``{payload, settlement}`` (what was sent to the facilitator's ``/settle``, and its answer).
"""


import argparse
import json
import os
import sys
import threading
import uuid
from typing import Any

from .auth_capture_scheme import (
    SCHEME,
    AuthCaptureFacilitatorScheme,
    AuthCaptureServerScheme,
    capture_signable,
    chain_id_of,
    payment_info_hash,
    reconstruct_payment_info,
    sign,
    void_signable,
)
from .chain import FACILITATOR

FACILITATOR_KEY_ENV = "TESTBED_AUTH_CAPTURE_FACILITATOR_KEY"
AUTHORIZER_KEY_ENV = "TESTBED_AUTH_CAPTURE_AUTHORIZER_KEY"
CHAT_PATH = "/v1/chat/completions"
ADMIN_PATH = "/testbed/auth-capture"
TOKEN_NAME, TOKEN_VERSION = "USD Coin", "2"


def _dump(model) -> Any:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json") if hasattr(model, "model_dump") else model


# ---------------------------------------------------------------------------------------------
# Facilitator
# ---------------------------------------------------------------------------------------------


def create_facilitator_app(rpc_url: str, networks: list[str], private_key: str = FACILITATOR.private_key, *,
                           fee_bps: int = 0):
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from x402 import x402FacilitatorSync
    from x402.schemas.helpers import parse_payment_payload, parse_payment_requirements

    facilitator = x402FacilitatorSync()
    scheme = AuthCaptureFacilitatorScheme(rpc_url, private_key, fee_bps=fee_bps)
    facilitator.register(networks, scheme)
    settlements: list[dict] = []
    exchanges: list[dict] = []
    lock = threading.Lock()
    app = FastAPI(title="testbed x402 auth-capture facilitator", docs_url=None, redoc_url=None, openapi_url=None)

    def _parse(body: Any):
        if not isinstance(body, dict) or "paymentPayload" not in body or "paymentRequirements" not in body:
            raise ValueError("body must be {x402Version, paymentPayload, paymentRequirements}")
        payload = parse_payment_payload(body["paymentPayload"])
        version = int(body.get("x402Version") or payload.x402_version)
        return payload, parse_payment_requirements(version, body["paymentRequirements"])

    def _answer(endpoint: str, body: Any, answer: Any, status: int = 200):
        with lock:
            exchanges.append({"endpoint": endpoint, "request": body, "response": answer, "status": status})
        return answer if status == 200 else JSONResponse(answer, status_code=status)

    @app.get("/healthz")
    def healthz():
        return {"ok": True, "networks": networks, "operator": scheme.address}

    @app.get("/supported")
    def supported():
        return _dump(facilitator.get_supported())

    @app.post("/verify")
    def verify(body: dict):
        try:
            payload, requirements = _parse(body)
        except Exception as e:
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


# ---------------------------------------------------------------------------------------------
# Resource server
# ---------------------------------------------------------------------------------------------


def create_server_app(*, facilitator_url: str, network: str, asset: str, pay_to: str, price: int = 10_000,
                      authorizer_key: str | None = None, max_timeout_seconds: int = 300,
                      capture_deadline_seconds: int = 3_600, refund_deadline_seconds: int = 86_400,
                      token_name: str = TOKEN_NAME, token_version: str = TOKEN_VERSION):
    import httpx
    from eth_account import Account
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from x402.http import FacilitatorConfig, HTTPFacilitatorClient, PaymentOption, RouteConfig
    from x402.http.middleware.fastapi import payment_middleware
    from x402.schemas import PaymentPayload, PaymentRequirements
    from x402.schemas.hooks import SkipSettleResult
    from x402.server import x402ResourceServer

    from .server import chat_completion

    authorizer = Account.from_key(authorizer_key) if authorizer_key else None
    chain_id = chain_id_of(network)
    facilitator = HTTPFacilitatorClient(FacilitatorConfig(
        url=facilitator_url, timeout=60.0,
        http_client=httpx.AsyncClient(timeout=60.0, trust_env=False, follow_redirects=True)))
    resource_server = x402ResourceServer(facilitator)
    resource_server.register(network, AuthCaptureServerScheme(authorizer.address if authorizer else None))

    payments: dict[str, dict] = {}      # paymentInfoHash -> what the lifecycle needs, and what happened
    authorized: dict[str, Any] = {}     # the client's signature -> its authorize SettleResponse (before-handler)
    order: list[str] = []
    lock = threading.Lock()

    def _is_ours(ctx) -> bool:
        return getattr(ctx.requirements, "scheme", None) == SCHEME

    async def after_settle(ctx):
        """Keep every authorized payment: its PaymentInfo (rebuilt as the facilitator does) and saltNonce."""
        if not _is_ours(ctx) or ctx.phase != "before-handler" or not ctx.result.success:
            return
        reqs = _dump(ctx.requirements)
        wire = dict(ctx.payment_payload.payload)
        info = reconstruct_payment_info(reqs, wire)
        hash_ = payment_info_hash(chain_id, info)
        with lock:
            authorized[wire["signature"]] = ctx.result
            payments[hash_] = {"paymentInfoHash": hash_, "paymentInfo": info, "saltNonce": wire.get("saltNonce"),
                               "requirements": reqs, "authorizeTx": ctx.result.transaction,
                               "capturable": int(info["maxAmount"]), "refundable": 0, "lifecycle": []}
            order.append(hash_)

    async def before_settle(ctx):
        """captureMode "deferred": the after-handler settle of the escrow flow is not a transaction; the answer's
        PAYMENT-RESPONSE repeats the authorize settlement."""
        if not _is_ours(ctx) or ctx.phase != "after-handler":
            return None
        with lock:
            done = authorized.get(ctx.payment_payload.payload.get("signature"))
        return SkipSettleResult(result=done) if done is not None else None

    resource_server.on_after_settle(after_settle)
    resource_server.on_before_settle(before_settle)

    routes = {
        f"POST {CHAT_PATH}": RouteConfig(
            accepts=PaymentOption(
                scheme=SCHEME, pay_to=pay_to, network=network, max_timeout_seconds=max_timeout_seconds,
                price={"amount": str(int(price)), "asset": asset,
                       "extra": {"name": token_name, "version": token_version,
                                 "captureDeadlineSeconds": capture_deadline_seconds,
                                 "refundDeadlineSeconds": refund_deadline_seconds}},
            ),
            description="Chat completion (testbed, auth-capture)", mime_type="application/json",
        ),
    }
    x402_mw = payment_middleware(routes, resource_server)
    app = FastAPI(title="testbed auth-capture paid chat", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def x402_payment(request: Request, call_next):
        return await x402_mw(request, call_next)

    @app.middleware("http")
    async def request_id(request: Request, call_next):
        response = await call_next(request)
        response.headers["x-request-id"] = "req_" + uuid.uuid4().hex
        return response

    @app.get("/healthz")
    async def healthz():
        return {"ok": True, "network": network, "asset": asset, "payTo": pay_to, "price": str(price),
                "scheme": SCHEME, "receiverAuthorizer": authorizer.address if authorizer else None}

    @app.post(CHAT_PATH)
    async def chat(request: Request):
        try:
            req = json.loads(await request.body() or b"{}")
        except ValueError:
            return JSONResponse({"error": {"message": "body is not JSON"}}, status_code=400)
        return JSONResponse(chat_completion(req if isinstance(req, dict) else {}))

    def _record(hash_: str | None) -> dict:
        with lock:
            key = hash_ or (order[-1] if order else None)
            if key is None or key not in payments:
                raise KeyError(f"no authorized payment {hash_ or ''}".strip())
            return payments[key]

    async def _lifecycle(rec: dict, wire: dict) -> dict:
        requirements = PaymentRequirements.model_validate(rec["requirements"])
        payload = PaymentPayload(x402_version=2, payload=wire, accepted=requirements)
        result = await facilitator.settle(payload, requirements)
        return _dump(result)

    @app.get(ADMIN_PATH + "/payments")
    async def list_payments():
        with lock:
            return {"payments": [payments[h] for h in order]}

    @app.post(ADMIN_PATH + "/capture")
    async def capture(body: dict):
        if authorizer is None:
            return JSONResponse({"error": "no receiver authorizer: lifecycle is not relayed"}, status_code=409)
        try:
            rec = _record(body.get("paymentInfoHash"))
        except KeyError as e:
            return JSONResponse({"error": str(e)}, status_code=404)
        amount = int(body["amount"])
        info = rec["paymentInfo"]
        fee_amount = int(body.get("feeAmount", amount * int(info["minFeeBps"]) // 10_000))
        fee_receiver = body.get("feeReceiver") or info["feeReceiver"]
        expected_c = int(body.get("expectedCapturableAmount", rec["capturable"]))
        expected_r = int(body.get("expectedRefundableAmount", rec["refundable"]))
        signature = sign(capture_signable(chain_id, info["operator"], payment_info_hash=rec["paymentInfoHash"],
                                          amount=amount, fee_amount=fee_amount, fee_receiver=fee_receiver,
                                          expected_capturable=expected_c, expected_refundable=expected_r),
                         authorizer.key.hex())
        wire = {"type": "capture", "paymentInfo": info, "saltNonce": rec["saltNonce"], "amount": str(amount),
                "feeAmount": str(fee_amount), "feeReceiver": fee_receiver,
                "expectedCapturableAmount": str(expected_c), "expectedRefundableAmount": str(expected_r),
                "authorizerSignature": signature}
        settlement = await _lifecycle(rec, wire)
        with lock:
            if settlement.get("success"):
                rec["capturable"] -= amount
                rec["refundable"] += amount
            rec["lifecycle"].append({"type": "capture", "amount": str(amount), "settlement": settlement})
        return {"payload": wire, "settlement": settlement}

    @app.post(ADMIN_PATH + "/void")
    async def void(body: dict):
        if authorizer is None:
            return JSONResponse({"error": "no receiver authorizer: lifecycle is not relayed"}, status_code=409)
        try:
            rec = _record(body.get("paymentInfoHash"))
        except KeyError as e:
            return JSONResponse({"error": str(e)}, status_code=404)
        info = rec["paymentInfo"]
        signature = sign(void_signable(chain_id, info["operator"], payment_info_hash=rec["paymentInfoHash"]),
                         authorizer.key.hex())
        wire = {"type": "void", "paymentInfo": info, "saltNonce": rec["saltNonce"], "authorizerSignature": signature}
        settlement = await _lifecycle(rec, wire)
        with lock:
            if settlement.get("success"):
                rec["capturable"] = 0
            rec["lifecycle"].append({"type": "void", "settlement": settlement})
        return {"payload": wire, "settlement": settlement}

    return app


# ---------------------------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------------------------


def start_facilitator(rpc_url: str, network: str, *, private_key: str = FACILITATOR.private_key, fee_bps: int = 0,
                      timeout: float = 30.0, wait: bool = True):
    from .service import start_service

    return start_service("auth-capture facilitator", "testbed.auth_capture_services",
                         ["facilitator", "--rpc-url", rpc_url, "--network", network, "--fee-bps", str(fee_bps)],
                         env={FACILITATOR_KEY_ENV: private_key}, timeout=timeout, wait=wait)


def start_server(*, facilitator_url: str, network: str, asset: str, pay_to: str, price: int,
                 authorizer_key: str | None, max_timeout_seconds: int = 300, capture_deadline_seconds: int = 3_600,
                 refund_deadline_seconds: int = 86_400, tls: dict | None = None, timeout: float = 30.0,
                 wait: bool = True):
    """``tls={"cert":…, "key":…}`` serves HTTPS (URL host ``localhost``)."""
    from .service import start_service

    args = ["server", "--facilitator-url", facilitator_url, "--network", network, "--asset", asset,
            "--pay-to", pay_to, "--price", str(price), "--max-timeout-seconds", str(max_timeout_seconds),
            "--capture-deadline-seconds", str(capture_deadline_seconds),
            "--refund-deadline-seconds", str(refund_deadline_seconds)]
    if tls:
        args += ["--tls-cert", tls["cert"], "--tls-key", tls["key"]]
    return start_service("auth-capture server", "testbed.auth_capture_services", args,
                         env={AUTHORIZER_KEY_ENV: authorizer_key or ""}, tls=bool(tls),
                         url_host="localhost" if tls else None, timeout=timeout, wait=wait)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.auth_capture_services")
    ap.add_argument("--fd", type=int, help="serve this inherited listening socket")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    sub = ap.add_subparsers(dest="role", required=True)
    f = sub.add_parser("facilitator")
    f.add_argument("--rpc-url", required=True)
    f.add_argument("--network", action="append", required=True)
    f.add_argument("--fee-bps", type=int, default=0)
    s = sub.add_parser("server")
    s.add_argument("--facilitator-url", required=True)
    s.add_argument("--network", required=True)
    s.add_argument("--asset", required=True)
    s.add_argument("--pay-to", required=True)
    s.add_argument("--price", type=int, default=10_000)
    s.add_argument("--max-timeout-seconds", type=int, default=300)
    s.add_argument("--capture-deadline-seconds", type=int, default=3_600)
    s.add_argument("--refund-deadline-seconds", type=int, default=86_400)
    s.add_argument("--tls-cert")
    s.add_argument("--tls-key")
    args = ap.parse_args(argv)
    from .service import serve_fd

    if args.role == "facilitator":
        app = create_facilitator_app(args.rpc_url, args.network,
                                     os.environ.get(FACILITATOR_KEY_ENV) or FACILITATOR.private_key,
                                     fee_bps=args.fee_bps)
        serve_fd(app, args.fd, host=args.host, port=args.port)
    else:
        from .server import wait_for_facilitator

        wait_for_facilitator(args.facilitator_url, 30.0)
        app = create_server_app(facilitator_url=args.facilitator_url, network=args.network, asset=args.asset,
                                pay_to=args.pay_to, price=args.price,
                                authorizer_key=os.environ.get(AUTHORIZER_KEY_ENV) or None,
                                max_timeout_seconds=args.max_timeout_seconds,
                                capture_deadline_seconds=args.capture_deadline_seconds,
                                refund_deadline_seconds=args.refund_deadline_seconds)
        serve_fd(app, args.fd, host=args.host, port=args.port, ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
