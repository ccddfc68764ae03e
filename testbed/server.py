"""A paid, OpenAI-compatible resource server behind the ``x402`` package's FastAPI middleware.

``POST /v1/chat/completions`` costs ``price`` atomic units of the test USDC (exact scheme,
``payTo`` = the payee, network ``eip155:<chain id>``): without payment it answers 402 with a
``PAYMENT-REQUIRED`` header; with a valid ``PAYMENT-SIGNATURE`` the middleware verifies it with the
facilitator, runs the handler, settles, and adds ``PAYMENT-RESPONSE``.

The answer is a deterministic fake chat completion (same request → same body). ``"stream": true``
gives Server-Sent Events (``chat.completion.chunk`` events then ``data: [DONE]``; a usage chunk
when ``stream_options.include_usage``). Note the x402 middleware buffers the whole body before it
settles, so the client receives the events at once.

Failure modes, asked for with the request header ``X-Testbed-Fail`` (status from
``X-Testbed-Fail-Status``, default 500):

- ``handler``      the handler answers 5xx: the middleware does **not** settle (no money moves)
- ``raise``        the handler raises: the middleware answers 500 and does not settle
- ``after-settle`` the payment **is settled**, then the server answers 5xx anyway; the
                   ``PAYMENT-RESPONSE`` header (with the tx hash) is kept — "paid, then server error"

With ``X-Testbed-Hide-Settlement: 1`` the payment is settled but the answer carries no
``PAYMENT-RESPONSE`` (as with an asynchronous facilitator): the settlement is only on chain.

Free routes: ``GET /healthz``, ``GET /v1/models``. Every answer carries a fresh ``x-request-id``.

``X-Testbed-Charge: <atomic units>`` on a request makes the handler charge that much instead of the price
(meant for the batch-settlement scheme, where a call costs what it costs up to the price): it answers with the
SDK's ``Settlement-Overrides: {"amount": …}`` header, which the x402 middleware strips and settles with (the
price stays the most a call may cost; a charge above it fails to settle).

With ``scheme="batch-settlement"`` (``--scheme batch-settlement``) the route takes the SDK's payment-channel
scheme instead of exact (EVM only): the first call opens a channel with a deposit, later calls pay with
cumulative vouchers the server keeps in its channel storage (no transaction per call), and a refund request
(the client's zero-charge refund voucher) is answered by the middleware without running the handler. The
receiver-authorizer key comes from ``$TESTBED_SERVER_AUTHORIZER_KEY`` (else the facilitator's advertised
one is used). The SDK's channel manager is built but its timers never start; these free routes drive it:

- ``GET  /testbed/channels``                 the server's channel records (``Channel.to_dict()``)
- ``POST /testbed/channels/claim``           claim every channel's charged vouchers now (``claimWithSignature``)
- ``POST /testbed/channels/settle``          settle the claimed funds to the payee now
- ``POST /testbed/channels/claim-and-settle`` both
- ``POST /testbed/channels/refund``          refund channels now (body ``{"channelIds": [...]}``, default all)

On a Solana network (``--network solana:…``) the route takes the SDK's exact SVM scheme instead: ``asset``
is the SPL mint (base58), ``payTo`` the payee's wallet (the client pays its associated token account),
the price has no EVM token ``name``/``version``, and the facilitator's fee payer comes from its
``/supported``. ``memo`` (optional) is the memo every payment must carry; without it the client adds a
random one. ``svm_rpc_url`` (optional) lets the server add a recent blockhash to the offer.

With ``siwx=True`` (``--siwx``) the route also declares the SDK's ``sign-in-with-x`` extension
(``declare_siwx_extension``): the 402's ``extensions["sign-in-with-x"]`` carries a fresh CAIP-122 challenge
(domain/uri of ``siwx_origin``, nonce, issuedAt, the route's network), the SDK's SIWX resource server
extension records every settled payer in its ``InMemorySIWxStorage`` (settle hook), and its protected-request
hook serves a request whose ``SIGN-IN-WITH-X`` header proves (EIP-191 / ed25519) a wallet that already paid
for the path, without payment. A header that fails (bad signature, wrong domain, stale, unpaid wallet) is
ignored: the answer is the 402 again. The free route ``GET /testbed/siwx`` lists the hook's events
(``payment_recorded``, ``access_granted``, ``validation_failed`` with the SDK's reason).
"""

# no "from __future__ import annotations" here: FastAPI must see the real Request annotation
import argparse
import hashlib
import json
import os
import sys
import uuid
from typing import Any

CHAT_PATH = "/v1/chat/completions"
FAIL_HEADER = "X-Testbed-Fail"
FAIL_STATUS_HEADER = "X-Testbed-Fail-Status"
HIDE_HEADER = "X-Testbed-Hide-Settlement"
MODEL = "testbed-echo-1"
CREATED = 1_700_000_000
TOKEN_NAME = "USD Coin"
TOKEN_VERSION = "2"
CHARGE_HEADER = "X-Testbed-Charge"
AUTHORIZER_KEY_ENV = "TESTBED_SERVER_AUTHORIZER_KEY"
BATCH_SETTLEMENT = "batch-settlement"
CHANNELS_PATH = "/testbed/channels"
SIWX_PATH = "/testbed/siwx"


# ---------------------------------------------------------------------------------------------
# The fake model
# ---------------------------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _digest(req: Any) -> str:
    return hashlib.sha256(json.dumps(req, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def chat_completion(req: dict) -> dict:
    """A deterministic OpenAI-style ``chat.completion`` for ``req``."""
    messages = req.get("messages") if isinstance(req.get("messages"), list) else []
    last_user = next((_text_of(m.get("content")) for m in reversed(messages)
                      if isinstance(m, dict) and m.get("role") == "user"), "")
    answer = f"You said: {last_user}" if last_user else "Hello from the testbed."
    prompt_tokens = sum(len(_text_of(m.get("content")).split()) for m in messages if isinstance(m, dict))
    completion_tokens = len(answer.split())
    return {
        "id": "chatcmpl-" + _digest(req)[:24],
        "object": "chat.completion",
        "created": CREATED,
        "model": str(req.get("model") or MODEL),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def chat_stream_events(req: dict) -> list[str]:
    """The same answer as SSE ``data:`` lines (each ending in a blank line), ``[DONE]`` last."""
    full = chat_completion(req)
    words = full["choices"][0]["message"]["content"].split(" ")
    base = {"id": full["id"], "object": "chat.completion.chunk", "created": full["created"],
            "model": full["model"]}

    def chunk(delta: dict, finish: str | None = None) -> dict:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": (w if i == 0 else " " + w)}) for i, w in enumerate(words)]
    chunks.append(chunk({}, "stop"))
    if (req.get("stream_options") or {}).get("include_usage"):
        chunks.append({**base, "choices": [], "usage": full["usage"]})
    events = [f"data: {json.dumps(c, separators=(',', ':'))}\n\n" for c in chunks]
    events.append("data: [DONE]\n\n")
    return events


# ---------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------


def is_svm(network: str) -> bool:
    """A Solana CAIP-2 id (``solana:<genesis hash prefix>``)."""
    return network.startswith("solana:")


def create_app(*, facilitator_url: str, network: str, asset: str, pay_to: str, price: int = 10_000,
               token_name: str = TOKEN_NAME, token_version: str = TOKEN_VERSION,
               max_timeout_seconds: int = 300, memo: str | None = None, svm_rpc_url: str | None = None,
               scheme: str = "exact", receiver_authorizer_key: str | None = None,
               withdraw_delay: int | None = None, asset_transfer_method: str | None = None,
               siwx: bool = False, siwx_origin: str | None = None, siwx_statement: str | None = None,
               siwx_expiration_seconds: int | None = None):
    """The resource server. The facilitator must already answer ``GET /supported``.

    ``eip155:…`` networks use the exact EVM scheme (``token_name``/``token_version`` are the token's
    EIP-712 domain); ``solana:…`` networks the exact SVM scheme (``memo``, ``svm_rpc_url`` optional).
    ``scheme="batch-settlement"``: the EVM payment-channel scheme, with ``receiver_authorizer_key`` (None:
    the facilitator's), ``withdraw_delay`` seconds (None: the SDK's 900) and ``asset_transfer_method``
    (``"eip3009"``, the default, or ``"permit2"``) for deposits.
    ``siwx=True``: the SDK's sign-in-with-x extension on the route (see the module doc); ``siwx_origin`` is the
    server's origin as its clients see it (``http://127.0.0.1:<port>``; required), ``siwx_statement`` and
    ``siwx_expiration_seconds`` the SDK's ``DeclareSIWxOptions.statement``/``expiration_seconds``.
    """
    import httpx
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from x402.http import FacilitatorConfig, HTTPFacilitatorClient, PaymentOption, RouteConfig
    from x402.http.middleware.fastapi import payment_middleware
    from x402.server import x402ResourceServer

    facilitator = HTTPFacilitatorClient(FacilitatorConfig(
        url=facilitator_url, timeout=60.0,
        http_client=httpx.AsyncClient(timeout=60.0, trust_env=False, follow_redirects=True),
    ))
    resource_server = x402ResourceServer(facilitator)
    channel_scheme = channel_manager = None
    if scheme == BATCH_SETTLEMENT:
        if is_svm(network):
            raise ValueError("batch-settlement is an EVM scheme")
        from x402.mechanisms.evm.batch_settlement.authorizer_signer import LocalAuthorizerSigner
        from x402.mechanisms.evm.batch_settlement.server import (
            BatchSettlementChannelManager,
            BatchSettlementEvmScheme,
            BatchSettlementEvmSchemeServerConfig,
            ChannelManagerConfig,
        )

        authorizer = LocalAuthorizerSigner(receiver_authorizer_key) if receiver_authorizer_key else None
        channel_scheme = BatchSettlementEvmScheme(pay_to, BatchSettlementEvmSchemeServerConfig(
            receiver_authorizer_signer=authorizer, withdraw_delay=withdraw_delay))
        resource_server.register(network, channel_scheme)
        # built directly (not scheme.create_channel_manager, which takes the network's default asset)
        # and never start()ed: claims, settles and refunds happen only when the routes below ask
        channel_manager = BatchSettlementChannelManager(ChannelManagerConfig(
            scheme=channel_scheme, facilitator=facilitator, receiver=pay_to, token=asset, network=network))
        extra = {"name": token_name, "version": token_version}
        if asset_transfer_method:
            extra["assetTransferMethod"] = asset_transfer_method
    elif scheme != "exact":
        raise ValueError(f"unknown scheme {scheme!r}")
    elif is_svm(network):
        from x402.mechanisms.svm.exact import ExactSvmServerScheme

        resource_server.register(network, ExactSvmServerScheme(svm_rpc_url))
        extra = {"memo": memo} if memo else {}
    else:
        from x402.mechanisms.evm.exact import ExactEvmServerScheme

        resource_server.register(network, ExactEvmServerScheme())
        extra = {"name": token_name, "version": token_version}
    siwx_extensions = siwx_events = None
    if siwx:
        siwx_extensions, siwx_events = _siwx_setup(resource_server, network, siwx_origin, siwx_statement,
                                                   siwx_expiration_seconds)
    routes = {
        f"POST {CHAT_PATH}": RouteConfig(
            accepts=PaymentOption(
                scheme=scheme,
                pay_to=pay_to,
                price={"amount": str(int(price)), "asset": asset, "extra": extra},
                network=network,
                max_timeout_seconds=max_timeout_seconds,
            ),
            description="Chat completion (testbed)",
            mime_type="application/json",
            extensions=siwx_extensions,
        ),
    }
    x402_mw = payment_middleware(routes, resource_server)  # asks the facilitator /supported now

    app = FastAPI(title="testbed paid chat", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def x402_payment(request: Request, call_next):
        return await x402_mw(request, call_next)

    @app.middleware("http")  # added last = outermost: sees the settled response
    async def fail_after_settle(request: Request, call_next):
        response = await call_next(request)
        if request.headers.get(FAIL_HEADER, "").lower() != "after-settle" or response.status_code >= 400:
            return response
        async for _ in response.body_iterator:  # drain
            pass
        keep = {k: v for k, v in response.headers.items()
                if k.lower() in ("payment-response", "x-payment-response", "x-request-id")}
        status = _fail_status(request)
        return JSONResponse({"error": {"message": "testbed: failing after settlement",
                                       "type": "server_error", "code": status}},
                            status_code=status, headers=keep)

    @app.middleware("http")  # settled, but the client is not told how
    async def hide_settlement(request: Request, call_next):
        response = await call_next(request)
        if request.headers.get(HIDE_HEADER):
            for name in ("payment-response", "x-payment-response"):
                if name in response.headers:
                    del response.headers[name]
        return response

    @app.middleware("http")  # outermost of all: a fresh request id on every answer
    async def request_id(request: Request, call_next):
        response = await call_next(request)
        response.headers["x-request-id"] = "req_" + uuid.uuid4().hex
        return response

    @app.get("/healthz")
    async def healthz():
        return {"ok": True, "network": network, "asset": asset, "payTo": pay_to, "price": str(price),
                "scheme": scheme}

    if channel_manager is not None:
        _channel_routes(app, channel_scheme, channel_manager)

    if siwx_events is not None:
        @app.get(SIWX_PATH)
        async def siwx_log():
            return {"origin": siwx_origin, "events": siwx_events}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": MODEL, "object": "model", "created": CREATED,
                                            "owned_by": "testbed"}]}

    @app.post(CHAT_PATH)
    async def chat(request: Request):
        mode = request.headers.get(FAIL_HEADER, "").lower()
        if mode == "handler":
            status = _fail_status(request)
            return JSONResponse({"error": {"message": "testbed: handler failure", "type": "server_error",
                                           "code": status}}, status_code=status)
        if mode == "raise":
            raise RuntimeError("testbed: handler raised")
        try:
            req = json.loads(await request.body() or b"{}")
        except ValueError:
            return JSONResponse({"error": {"message": "body is not JSON", "type": "invalid_request_error"}},
                                status_code=400)
        if not isinstance(req, dict):
            req = {}
        charge = request.headers.get(CHARGE_HEADER)
        # the actual cost of this call: the x402 middleware settles this amount instead of the price
        overrides = {"Settlement-Overrides": json.dumps({"amount": charge.strip()})} if charge else {}
        if req.get("stream"):
            return StreamingResponse(iter(chat_stream_events(req)), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", **overrides})
        return JSONResponse(chat_completion(req), headers=overrides)

    return app


def _channel_routes(app, channel_scheme, manager) -> None:
    """The free routes that drive the SDK's channel manager now (see the module doc)."""
    from fastapi import Request
    from fastapi.responses import JSONResponse

    def _failed(e: Exception):
        return JSONResponse({"error": f"{type(e).__name__}: {e}"}, status_code=500)

    def _claims(results) -> list[dict]:
        return [{"vouchers": r.vouchers, "transaction": r.transaction} for r in results]

    @app.get(CHANNELS_PATH)
    async def channels():
        return {"channels": [c.to_dict() for c in channel_scheme.get_storage().list()]}

    @app.post(CHANNELS_PATH + "/claim")
    async def claim():
        try:
            return {"claims": _claims(await manager.claim())}
        except Exception as e:
            return _failed(e)

    @app.post(CHANNELS_PATH + "/settle")
    async def settle():
        try:
            return {"transaction": (await manager.settle()).transaction}
        except Exception as e:
            return _failed(e)

    @app.post(CHANNELS_PATH + "/claim-and-settle")
    async def claim_and_settle():
        try:
            done = await manager.claim_and_settle()
        except Exception as e:
            return _failed(e)
        settled = done["settle"]
        return {"claims": _claims(done["claims"]), "settle": {"transaction": settled.transaction} if settled else None}

    @app.post(CHANNELS_PATH + "/refund")
    async def refund(request: Request):
        try:
            body = json.loads(await request.body() or b"{}")
            ids = body.get("channelIds") if isinstance(body, dict) else None
            results = await manager.refund(ids)
        except Exception as e:
            return _failed(e)
        return {"refunds": [{"channel": r.channel, "transaction": r.transaction} for r in results]}


def _siwx_setup(resource_server, network: str, origin: str | None, statement: str | None,
                expiration_seconds: int | None) -> tuple[dict, list]:
    """The SDK's sign-in-with-x, wired as its docs say: the route's declaration, and the resource server
    extension (settle hook + protected-request hook) over an in-memory storage. Returns ``(route extensions,
    the hook's event list)``."""
    from x402.extensions.sign_in_with_x import (
        CreateSIWxResourceServerExtensionOptions,
        DeclareSIWxOptions,
        InMemorySIWxStorage,
        create_siwx_resource_server_extension,
        declare_siwx_extension,
    )

    if not origin:
        raise ValueError("siwx needs siwx_origin, the server's origin as its clients see it")
    events: list = []
    resource_server.register_extension(create_siwx_resource_server_extension(
        CreateSIWxResourceServerExtensionOptions(storage=InMemorySIWxStorage(), origin=origin,
                                                 on_event=events.append)))
    return declare_siwx_extension(DeclareSIWxOptions(
        network=network, statement=statement, expiration_seconds=expiration_seconds)), events


def _own_origin(args) -> str:
    """``scheme://host:port`` of the socket this process serves (``--siwx-host``, else ``--host``)."""
    import socket

    port = args.port
    if args.fd is not None:
        dup = socket.fromfd(args.fd, socket.AF_INET, socket.SOCK_STREAM)
        try:
            port = dup.getsockname()[1]
        finally:
            dup.close()
    return f"{'https' if args.ssl_certfile else 'http'}://{args.siwx_host or args.host}:{port}"


def _fail_status(request) -> int:
    try:
        status = int(request.headers.get(FAIL_STATUS_HEADER, "500"))
    except ValueError:
        status = 500
    return status if 400 <= status <= 599 else 500


def start_server(*, facilitator_url: str, network: str, asset: str, pay_to: str, price: int = 10_000,
                 tls: dict | None = None, url_host: str | None = None, memo: str | None = None,
                 svm_rpc_url: str | None = None, scheme: str = "exact", receiver_authorizer_key: str | None = None,
                 withdraw_delay: int | None = None, asset_transfer_method: str | None = None,
                 timeout: float = 30.0, wait: bool = True, siwx: bool = False, siwx_origin: str | None = None):
    """Start the resource server as a child process; returns a :class:`~testbed.service.Service`.

    ``tls={"cert": path, "key": path}`` serves HTTPS (its URL then uses ``localhost``, which the
    test certificates from ``tests/support/certs.py`` name). ``memo`` and ``svm_rpc_url`` are for
    ``solana:…`` networks (see :func:`create_app`); ``scheme``, ``receiver_authorizer_key`` (handed over in
    the environment), ``withdraw_delay`` and ``asset_transfer_method`` for ``batch-settlement``.
    ``siwx=True``: the SDK's sign-in-with-x on the route (see :func:`create_app`); its origin is
    ``siwx_origin``, else the service's own URL (the child reads its port off the socket).
    """
    from .service import start_service

    args = ["--facilitator-url", facilitator_url, "--network", network, "--asset", asset,
            "--pay-to", pay_to, "--price", str(int(price))]
    env = {}
    if scheme != "exact":
        args += ["--scheme", scheme]
    if receiver_authorizer_key:
        env[AUTHORIZER_KEY_ENV] = receiver_authorizer_key
    if withdraw_delay is not None:
        args += ["--withdraw-delay", str(int(withdraw_delay))]
    if asset_transfer_method:
        args += ["--asset-transfer-method", asset_transfer_method]
    if memo:
        args += ["--memo", memo]
    if svm_rpc_url:
        args += ["--svm-rpc-url", svm_rpc_url]
    if tls:
        args += ["--ssl-certfile", str(tls["cert"]), "--ssl-keyfile", str(tls["key"])]
    if siwx:
        args += ["--siwx", "--siwx-host", url_host or ("localhost" if tls else "127.0.0.1")]
        if siwx_origin:
            args += ["--siwx-origin", siwx_origin]
    return start_service("server", "testbed.server", args, tls=bool(tls), env=env,
                         url_host=url_host or ("localhost" if tls else None), timeout=timeout, wait=wait)


def wait_for_facilitator(url: str, timeout: float) -> None:
    """The middleware asks the facilitator ``/supported`` at start: wait until it answers."""
    import time
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with opener.open(url.rstrip("/") + "/supported", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"facilitator {url} did not answer /supported within {timeout:.0f} s")
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.server", description="paid fake chat server (x402)")
    ap.add_argument("--facilitator-url", required=True)
    ap.add_argument("--network", required=True, help="CAIP-2, e.g. eip155:8453 or solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1")
    ap.add_argument("--asset", required=True, help="token address (SPL mint on solana:)")
    ap.add_argument("--pay-to", required=True)
    ap.add_argument("--price", type=int, default=10_000, help="atomic units")
    ap.add_argument("--fd", type=int, help="serve this inherited listening socket")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ssl-certfile")
    ap.add_argument("--ssl-keyfile")
    ap.add_argument("--facilitator-timeout", type=float, default=30.0)
    ap.add_argument("--memo", help="solana: the memo every payment carries (default: a random one per payment)")
    ap.add_argument("--svm-rpc-url", help="solana: JSON-RPC for a recent blockhash in the offer (optional)")
    ap.add_argument("--scheme", default="exact", choices=["exact", BATCH_SETTLEMENT])
    ap.add_argument("--withdraw-delay", type=int, help="batch-settlement: the channels' withdraw delay (seconds)")
    ap.add_argument("--asset-transfer-method", choices=["eip3009", "permit2"],
                    help="batch-settlement: how deposits pull the token (default eip3009)")
    ap.add_argument("--siwx", action="store_true", help="declare the SDK's sign-in-with-x extension on the route")
    ap.add_argument("--siwx-origin", help="sign-in-with-x: the origin clients use (default: this socket's URL)")
    ap.add_argument("--siwx-host", help="sign-in-with-x: the host of the default origin (default --host)")
    args = ap.parse_args(argv)

    from .service import serve_fd

    wait_for_facilitator(args.facilitator_url, args.facilitator_timeout)
    app = create_app(facilitator_url=args.facilitator_url, network=args.network, asset=args.asset,
                     pay_to=args.pay_to, price=args.price, memo=args.memo, svm_rpc_url=args.svm_rpc_url,
                     scheme=args.scheme, receiver_authorizer_key=os.environ.get(AUTHORIZER_KEY_ENV),
                     withdraw_delay=args.withdraw_delay, asset_transfer_method=args.asset_transfer_method,
                     siwx=args.siwx, siwx_origin=(args.siwx_origin or _own_origin(args)) if args.siwx else None)
    serve_fd(app, args.fd, host=args.host, port=args.port, ssl_certfile=args.ssl_certfile,
             ssl_keyfile=args.ssl_keyfile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
