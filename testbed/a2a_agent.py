"""A paid A2A (Agent2Agent) agent: the real ``a2a-sdk`` server, x402 payments over the A2A transport.

The agent is built with the ``a2a-sdk`` package (1.x: A2A protocol 1.0, with the SDK's 0.3 compatibility
mode switched on) and charges for its one skill with the x402 A2A transport (x402 spec
``transports-v2/a2a.md``; Google's ``a2a-x402`` extension ``https://github.com/google-a2a/a2a-x402/v0.1``).
Verification and settlement go through the ``x402`` package's resource server (``x402ResourceServer``
with the HTTP facilitator client) to the test bed's facilitator (:mod:`testbed.facilitator`).

The flow of one paid task (the metadata sits in the task's ``status.message.metadata``):

1. the client's first message (no payment metadata) → the task stops in ``input-required`` with
   ``x402.payment.status: payment-required`` and ``x402.payment.required`` (an x402 v2 ``PaymentRequired``);
2. the client's next message names the task (``taskId``) and carries ``x402.payment.status:
   payment-submitted`` and ``x402.payment.payload`` (a ``PaymentPayload``) in its own metadata;
3. the agent verifies it with the facilitator → ``working`` with ``payment-verified``; settles it →
   ``completed`` with ``payment-completed``, ``x402.payment.receipts: [SettleResponse]`` and the answer as an
   artifact. A verification or settlement failure → ``failed`` with ``payment-failed``,
   ``x402.payment.error`` (an a2a-x402 error code) and ``x402.payment.receipts: [SettleResponse]``
   (``success: false``). The x402 spec's table is followed: the npm ``a2a-x402`` package instead leaves a
   failed payment in ``input-required`` so the client may retry.

A client that sends ``x402.payment.status: payment-rejected`` ends the task: ``failed`` with
``payment-rejected``.

Served on one socket (``python -m testbed.a2a_agent --fd N``, started by :func:`start_agent`):

- ``GET  /.well-known/agent-card.json``  the agent card: JSON-RPC at ``/`` and HTTP+JSON at ``/rest``, each
  for protocol 1.0 and 0.3, streaming on, the x402 extension declared ``required: true``
- ``POST /``                              JSON-RPC 2.0: ``SendMessage``, ``SendStreamingMessage`` (SSE),
  ``GetTask``… (1.0) and ``message/send``, ``message/stream``, ``tasks/get``… (0.3)
- ``/rest/message:send``, ``/rest/message:stream``, ``GET /rest/tasks/{id}``… (HTTP+JSON 1.0; the 0.3 paths
  are ``/rest/v1/…``)
- ``GET  /healthz``

The extension must be activated: a message without ``https://github.com/google-a2a/a2a-x402/v0.1`` in
``A2A-Extensions`` (1.0) or ``X-A2A-Extensions`` (0.3) is refused with the SDK's
``ExtensionSupportRequiredError`` (``require_extension=False`` serves it anyway). Every answer to a
request that activated it echoes the header (same name) with the URI.

Failure mode, asked for with the request header ``X-Testbed-Fail: settle`` on the paying message: after the
verification, the payer's whole test USDC balance is moved away (with the payer's dev key — the payer
"spent the money meanwhile"), so the facilitator's real ``transferWithAuthorization`` fails; the balance is
then moved back. The facilitator's settle does not re-simulate, so this is a settlement failure, not a
verification failure. It needs ``rpc_url``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any

X402_EXTENSION_URI = "https://github.com/google-a2a/a2a-x402/v0.1"
STATUS_KEY = "x402.payment.status"
REQUIRED_KEY = "x402.payment.required"
PAYLOAD_KEY = "x402.payment.payload"
RECEIPTS_KEY = "x402.payment.receipts"
ERROR_KEY = "x402.payment.error"

PAYMENT_REQUIRED = "payment-required"
PAYMENT_SUBMITTED = "payment-submitted"
PAYMENT_VERIFIED = "payment-verified"
PAYMENT_COMPLETED = "payment-completed"
PAYMENT_FAILED = "payment-failed"
PAYMENT_REJECTED = "payment-rejected"

# the a2a-x402 error codes (x402ErrorCode of the npm package)
INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
INVALID_SIGNATURE = "INVALID_SIGNATURE"
EXPIRED_PAYMENT = "EXPIRED_PAYMENT"
DUPLICATE_NONCE = "DUPLICATE_NONCE"
NETWORK_MISMATCH = "NETWORK_MISMATCH"
INVALID_AMOUNT = "INVALID_AMOUNT"
SETTLEMENT_FAILED = "SETTLEMENT_FAILED"

EXTENSION_HEADER = "A2A-Extensions"
LEGACY_EXTENSION_HEADER = "X-A2A-Extensions"
FAIL_HEADER = "X-Testbed-Fail"
RPC_PATH = "/"
REST_PREFIX = "/rest"
SKILL_ID = "paid-echo"
AGENT_NAME = "testbed paid echo agent"

log = logging.getLogger("testbed.a2a_agent")


def integral(obj: Any) -> Any:
    """``obj`` with every integral float made an int, recursively. A2A metadata is a protobuf ``Struct``,
    whose numbers are doubles: ``x402Version: 2`` arrives as ``2.0`` (and goes out so on the wire)."""
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)
    if isinstance(obj, dict):
        return {k: integral(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [integral(v) for v in obj]
    return obj


def error_code(reason: str | None, *, settling: bool) -> str:
    """The a2a-x402 error code for a facilitator's ``invalidReason``/``errorReason``."""
    r = (reason or "").lower()
    if "insufficient" in r or "exceeds balance" in r or "balance" in r:
        return INSUFFICIENT_FUNDS
    if "expired" in r or "valid_before" in r or "not_yet_valid" in r or "valid_after" in r:
        return EXPIRED_PAYMENT
    if "nonce" in r or "used" in r:
        return DUPLICATE_NONCE
    if "network" in r:
        return NETWORK_MISMATCH
    if "value" in r or "amount" in r:
        return INVALID_AMOUNT
    return SETTLEMENT_FAILED if settling else INVALID_SIGNATURE


def _dump(model) -> dict:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


# ---------------------------------------------------------------------------------------------
# The executor
# ---------------------------------------------------------------------------------------------


def _executor_class():
    from a2a.server.agent_execution import AgentExecutor

    class PaidAgentExecutor(AgentExecutor):
        """The paid skill: answer ``You said: <text>`` once paid (see the module doc for the flow)."""

        def __init__(self, resource_server, requirements: list, resource, *, network: str,
                     rpc_url: str | None, asset: str):
            self._rs = resource_server
            self._requirements = requirements
            self._resource = resource
            self._network = network
            self._rpc_url = rpc_url
            self._asset = asset
            self._offers: dict[str, Any] = {}    # task id -> the PaymentRequired it was sent
            self._asks: dict[str, str] = {}      # task id -> the text the client asked about

        async def execute(self, context, event_queue) -> None:
            from google.protobuf import json_format

            from a2a.helpers import new_task_from_user_message
            from a2a.server.tasks import TaskUpdater

            task = context.current_task
            if task is None:
                task = new_task_from_user_message(context.message)
                await event_queue.enqueue_event(task)
            updater = TaskUpdater(event_queue, task.id, task.context_id)
            metadata = integral(json_format.MessageToDict(context.message.metadata))
            status = metadata.get(STATUS_KEY)
            if status == PAYMENT_SUBMITTED:
                await self._paid(context, task.id, updater, metadata)
            elif status == PAYMENT_REJECTED:
                self._offers.pop(task.id, None)
                await updater.failed(self._message(updater, "Payment rejected by the client.",
                                                   {STATUS_KEY: PAYMENT_REJECTED}))
            else:
                await self._ask_for_payment(context, task.id, updater)

        async def cancel(self, context, event_queue) -> None:
            from a2a.server.tasks import TaskUpdater

            self._offers.pop(context.task_id, None)
            await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()

        @staticmethod
        def _message(updater, text: str, metadata: dict):
            from a2a.types import Part

            return updater.new_agent_message([Part(text=text)], metadata=metadata)

        async def _ask_for_payment(self, context, task_id: str, updater) -> None:
            offer = await self._rs.create_payment_required_response(
                self._requirements, self._resource, error="Payment required to use this skill")
            self._offers[task_id] = offer
            self._asks.setdefault(task_id, context.get_user_input())
            await updater.requires_input(self._message(
                updater, "Payment is required for this skill.",
                {STATUS_KEY: PAYMENT_REQUIRED, REQUIRED_KEY: _dump(offer)}))

        async def _fail(self, updater, task_id: str, code: str, receipt: dict, text: str) -> None:
            self._offers.pop(task_id, None)
            await updater.failed(self._message(updater, text, {
                STATUS_KEY: PAYMENT_FAILED, ERROR_KEY: code, RECEIPTS_KEY: [receipt]}))

        async def _paid(self, context, task_id: str, updater, metadata: dict) -> None:
            from x402.schemas.helpers import parse_payment_payload

            from a2a.types import Part

            offer = self._offers.get(task_id)
            raw = metadata.get(PAYLOAD_KEY)
            failure = {"success": False, "transaction": "", "network": self._network}
            if offer is None:
                return await self._fail(updater, task_id, INVALID_SIGNATURE,
                                        {**failure, "errorReason": "no_payment_requested"},
                                        "No payment was asked for on this task.")
            if not isinstance(raw, dict):
                return await self._fail(updater, task_id, INVALID_SIGNATURE,
                                        {**failure, "errorReason": "missing_payment_payload"},
                                        "The message carries no x402.payment.payload.")
            try:
                payload = parse_payment_payload(raw)
            except Exception as e:
                return await self._fail(updater, task_id, INVALID_SIGNATURE,
                                        {**failure, "errorReason": "invalid_payment_payload",
                                         "errorMessage": f"{type(e).__name__}: {e}"},
                                        "The payment payload is malformed.")
            requirements = self._rs.find_matching_requirements(offer.accepts, payload)
            if requirements is None:
                return await self._fail(updater, task_id, NETWORK_MISMATCH,
                                        {**failure, "errorReason": "no_matching_requirements"},
                                        "The payment matches none of the offered requirements.")
            try:
                verified = await self._rs.verify_payment(payload, requirements)
            except Exception as e:
                return await self._fail(updater, task_id, INVALID_SIGNATURE,
                                        {**failure, "errorReason": "verify_failed",
                                         "errorMessage": f"{type(e).__name__}: {e}"},
                                        f"Payment verification failed: {e}")
            if not verified.is_valid:
                receipt = {**failure, "errorReason": verified.invalid_reason or "invalid_payment"}
                if verified.invalid_message:
                    receipt["errorMessage"] = verified.invalid_message
                if verified.payer:
                    receipt["payer"] = verified.payer
                return await self._fail(updater, task_id, error_code(verified.invalid_reason, settling=False),
                                        receipt, f"Payment verification failed: {verified.invalid_reason}")
            await updater.start_work(self._message(updater, "Payment verified; working.",
                                                   {STATUS_KEY: PAYMENT_VERIFIED}))
            answer = f"You said: {self._asks.pop(task_id, '') or context.get_user_input()}"

            headers = (context.call_context.state or {}).get("headers") or {}
            drained = None
            if headers.get(FAIL_HEADER.lower(), "").lower() == "settle":
                drained = await asyncio.to_thread(self._drain, verified.payer)
            try:
                settled = await self._rs.settle_payment(payload, requirements)
            except Exception as e:
                settled = None
                receipt = {**failure, "errorReason": "settle_failed", "errorMessage": f"{type(e).__name__}: {e}"}
            finally:
                if drained:
                    await asyncio.to_thread(self._restore, *drained)
            self._offers.pop(task_id, None)
            if settled is not None:
                receipt = _dump(settled)
            if settled is None or not settled.success:
                reason = receipt.get("errorReason")
                return await self._fail(updater, task_id, error_code(reason, settling=True), receipt,
                                        f"Payment settlement failed: {reason}")
            await updater.add_artifact([Part(text=answer)], name="answer")
            await updater.complete(self._message(updater, "Payment completed.", {
                STATUS_KEY: PAYMENT_COMPLETED, RECEIPTS_KEY: [receipt]}))

        # -- the settle failure mode ------------------------------------------------------------
        def _drain(self, payer: str | None):
            """Move the payer's whole balance to the deployer (signed with the payer's dev key)."""
            from . import chain

            if not self._rpc_url:
                raise RuntimeError("X-Testbed-Fail: settle needs the agent's --rpc-url")
            if not payer or payer.lower() != chain.PAYER.address.lower():
                raise RuntimeError(f"X-Testbed-Fail: settle: only the dev payer's key is known, not {payer}")
            amount = chain.balance_of(self._rpc_url, self._asset, chain.PAYER.address)
            if amount:
                _transfer(self._rpc_url, self._asset, chain.PAYER, chain.DEPLOYER.address, amount)
            return amount, chain.PAYER.address

        def _restore(self, amount: int, payer: str) -> None:
            from . import chain

            if amount:
                _transfer(self._rpc_url, self._asset, chain.DEPLOYER, payer, amount)

    return PaidAgentExecutor


def _transfer(rpc_url: str, token: str, sender, to: str, amount: int) -> None:
    from . import chain

    w3 = chain.make_web3(rpc_url)
    c = chain.token_contract(w3, token)
    tx = c.functions.transfer(w3.to_checksum_address(to), int(amount)).build_transaction(
        {"from": sender.address, "gas": 100_000})
    chain._send(w3, tx, sender, 30.0)


def _handler_class():
    from a2a.server.request_handlers import DefaultRequestHandler
    from a2a.utils.errors import ExtensionSupportRequiredError

    class X402RequestHandler(DefaultRequestHandler):
        """The SDK's default handler, refusing messages that did not activate the x402 extension."""

        require_extension = True

        def _check(self, context) -> None:
            if self.require_extension and X402_EXTENSION_URI not in (context.requested_extensions or set()):
                raise ExtensionSupportRequiredError(
                    message=f"this agent requires the extension {X402_EXTENSION_URI} "
                            f"(activate it with the {EXTENSION_HEADER} header)")

        async def on_message_send(self, params, context):
            self._check(context)
            return await super().on_message_send(params, context)

        async def on_message_send_stream(self, params, context):
            self._check(context)
            async for event in super().on_message_send_stream(params, context):
                yield event

    return X402RequestHandler


class EchoExtensions:
    """ASGI middleware: a response to a request that activated the x402 extension carries the header back
    (under the name(s) the request used), as A2A agents confirm the extensions they activated."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        names = []
        for name, value in scope.get("headers") or []:
            if name.lower() in (b"a2a-extensions", b"x-a2a-extensions") and \
                    X402_EXTENSION_URI.encode() in value:
                names.append(b"X-A2A-Extensions" if name.lower().startswith(b"x-") else b"A2A-Extensions")

        async def send_with_echo(message):
            if message["type"] == "http.response.start" and names:
                message = dict(message)
                message["headers"] = list(message.get("headers") or []) + [
                    (n, X402_EXTENSION_URI.encode()) for n in dict.fromkeys(names)]
            await send(message)

        return await self.app(scope, receive, send_with_echo)


# ---------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------


def agent_card(base_url: str, *, price: int, network: str, asset: str):
    """The agent card: JSON-RPC (``base_url/``) and HTTP+JSON (``base_url/rest``), 1.0 first then 0.3."""
    from a2a.types import AgentCapabilities, AgentCard, AgentExtension, AgentInterface, AgentSkill

    base = base_url.rstrip("/")
    interfaces = [AgentInterface(protocol_binding=binding, url=url, protocol_version=version)
                  for version in ("1.0", "0.3")
                  for binding, url in (("JSONRPC", base + RPC_PATH), ("HTTP+JSON", base + REST_PREFIX))]
    return AgentCard(
        name=AGENT_NAME,
        description=f"Echoes your text back, for {price} atomic units of the test USDC ({asset} on {network}), "
                    "paid with x402",
        version="1.0.0",
        supported_interfaces=interfaces,
        capabilities=AgentCapabilities(streaming=True, extensions=[AgentExtension(
            uri=X402_EXTENSION_URI, description="Supports payments using the x402 protocol.", required=True)]),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id=SKILL_ID, name="Paid echo", description="Repeats the text it is sent, once paid",
                           tags=["x402", "testbed"])],
    )


def create_app(*, facilitator_url: str, network: str, asset: str, pay_to: str, price: int, base_url: str,
               rpc_url: str | None = None, max_timeout_seconds: int = 300, require_extension: bool = True):
    """The agent as a Starlette app (see the module doc). ``base_url`` is where clients reach it (the card
    names it); ``rpc_url`` (anvil) is only used by the ``X-Testbed-Fail: settle`` mode."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from x402 import ResourceConfig, ResourceInfo, x402ResourceServer
    from x402.http import FacilitatorConfig, HTTPFacilitatorClient
    from x402.mechanisms.evm.exact import ExactEvmServerScheme

    from a2a.compat.v0_3.context_builders import V03ServerCallContextBuilder
    from a2a.server.routes import (
        DefaultServerCallContextBuilder,
        create_agent_card_routes,
        create_jsonrpc_routes,
        create_rest_routes,
    )
    from a2a.server.tasks import InMemoryTaskStore

    from .server import TOKEN_NAME, TOKEN_VERSION

    resource_server = x402ResourceServer(HTTPFacilitatorClient(FacilitatorConfig(url=facilitator_url)))
    resource_server.register(network, ExactEvmServerScheme())
    resource_server.initialize()  # asks the facilitator /supported
    requirements = resource_server.build_payment_requirements(ResourceConfig(
        scheme="exact", network=network, pay_to=pay_to, max_timeout_seconds=max_timeout_seconds,
        price={"amount": str(int(price)), "asset": asset, "extra": {"name": TOKEN_NAME, "version": TOKEN_VERSION}}))
    resource = ResourceInfo(url=base_url.rstrip("/") + RPC_PATH, description=f"A2A skill {SKILL_ID}",
                            mime_type="text/plain")
    card = agent_card(base_url, price=price, network=network, asset=asset)
    executor = _executor_class()(resource_server, requirements, resource, network=network, rpc_url=rpc_url,
                                 asset=asset)
    handler = _handler_class()(agent_executor=executor, task_store=InMemoryTaskStore(), agent_card=card)
    handler.require_extension = require_extension
    # both extension header names, on every binding (the x402 spec names X-A2A-Extensions, A2A 1.0 A2A-Extensions)
    context_builder = V03ServerCallContextBuilder(DefaultServerCallContextBuilder())

    async def healthz(request):
        return JSONResponse({"ok": True, "network": network, "asset": asset, "payTo": pay_to, "price": str(price),
                             "extension": X402_EXTENSION_URI})

    routes = [Route("/healthz", healthz, methods=["GET"])]
    routes += create_agent_card_routes(card)
    routes += create_jsonrpc_routes(handler, RPC_PATH, context_builder=context_builder, enable_v0_3_compat=True)
    routes += create_rest_routes(handler, context_builder=context_builder, enable_v0_3_compat=True,
                                 path_prefix=REST_PREFIX)
    return Starlette(routes=routes, middleware=[Middleware(EchoExtensions)])


def start_agent(*, facilitator_url: str, network: str, asset: str, pay_to: str, price: int = 10_000,
                rpc_url: str | None = None, tls: dict | None = None, url_host: str | None = None,
                require_extension: bool = True, timeout: float = 30.0, wait: bool = True):
    """Start the agent as a child process on 127.0.0.1; returns a :class:`~testbed.service.Service`.

    ``tls={"cert": path, "key": path}`` serves HTTPS (its URL then uses ``localhost``, which the test
    certificates name). ``rpc_url`` (anvil) enables the ``X-Testbed-Fail: settle`` mode.
    """
    from .service import start_service

    args = ["--facilitator-url", facilitator_url, "--network", network, "--asset", asset, "--pay-to", pay_to,
            "--price", str(int(price)), "--url-host", url_host or ("localhost" if tls else "127.0.0.1")]
    if rpc_url:
        args += ["--rpc-url", rpc_url]
    if tls:
        args += ["--ssl-certfile", str(tls["cert"]), "--ssl-keyfile", str(tls["key"])]
    if not require_extension:
        args.append("--no-require-extension")
    return start_service("a2a-agent", "testbed.a2a_agent", args, tls=bool(tls),
                         url_host=url_host or ("localhost" if tls else None), timeout=timeout, wait=wait)


def _own_url(args) -> str:
    import socket

    port = args.port
    if args.fd is not None:
        dup = socket.fromfd(args.fd, socket.AF_INET, socket.SOCK_STREAM)
        try:
            port = dup.getsockname()[1]
        finally:
            dup.close()
    return f"{'https' if args.ssl_certfile else 'http'}://{args.url_host}:{port}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.a2a_agent", description="paid A2A agent (x402)")
    ap.add_argument("--facilitator-url", required=True)
    ap.add_argument("--network", required=True, help="CAIP-2, e.g. eip155:8453")
    ap.add_argument("--asset", required=True)
    ap.add_argument("--pay-to", required=True)
    ap.add_argument("--price", type=int, default=10_000, help="atomic units")
    ap.add_argument("--rpc-url", help="anvil, for the X-Testbed-Fail: settle mode")
    ap.add_argument("--fd", type=int, help="serve this inherited listening socket")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--url-host", default="127.0.0.1", help="the host name clients use (the card names it)")
    ap.add_argument("--ssl-certfile")
    ap.add_argument("--ssl-keyfile")
    ap.add_argument("--facilitator-timeout", type=float, default=30.0)
    ap.add_argument("--no-require-extension", action="store_true",
                    help="serve messages that did not activate the x402 extension")
    args = ap.parse_args(argv)

    from .server import wait_for_facilitator
    from .service import serve_fd

    logging.basicConfig(level=os.environ.get("TESTBED_A2A_LOG", "WARNING"))
    wait_for_facilitator(args.facilitator_url, args.facilitator_timeout)
    app = create_app(facilitator_url=args.facilitator_url, network=args.network, asset=args.asset,
                     pay_to=args.pay_to, price=args.price, base_url=_own_url(args), rpc_url=args.rpc_url,
                     require_extension=not args.no_require_extension)
    serve_fd(app, args.fd, host=args.host, port=args.port, ssl_certfile=args.ssl_certfile,
             ssl_keyfile=args.ssl_keyfile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
