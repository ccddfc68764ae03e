"""A paid MCP server: the ``mcp`` SDK's ``MCPServer`` over Streamable HTTP, its paid tools behind x402's MCP
payment wrapper (``x402.mcp.server_async.create_payment_wrapper``, exact EVM scheme, the test bed's facilitator).

The x402 MCP transport (x402 spec, transports-v2/mcp.md, "tool-result binding") puts nothing in HTTP headers:

- a ``tools/call`` of a paid tool without payment is answered (HTTP 200) with a tool result ``isError: true``
  whose ``structuredContent`` is the x402 ``PaymentRequired`` and ``content[0].text`` the same JSON;
- the client retries with the ``PaymentPayload`` in ``params._meta["x402/payment"]``;
- the wrapper verifies it with the facilitator, runs the tool, settles, and answers the tool's result with the
  ``SettleResponse`` in ``result._meta["x402/payment-response"]``.

Tools (all on every endpoint):

- ``chat``    paid, ``price`` atomic units; ``{"prompt": str}`` → "You said: <prompt>" (``structuredContent``: the
              deterministic chat completion of :func:`testbed.server.chat_completion`, with model and usage)
- ``weather`` paid, ``weather_price`` atomic units (default twice ``price``); ``{"city": str}``
- ``echo``    free; ``{"text": str}`` → the same text

Endpoints (one process, one MCP server, three Streamable HTTP session managers):

- ``POST/GET/DELETE /mcp``            stateful, answers a POST with an SSE stream (``text/event-stream``)
- ``POST/GET/DELETE /json/mcp``       stateful, answers a POST with one JSON body (``json_response=True``)
- ``POST /stateless/mcp``             stateless (no ``mcp-session-id``), JSON answers
- ``GET /healthz``                    readiness; and ``GET /testbed/settlements`` every settle answer this server
                                      got from the facilitator (including refused ones)

A settlement that reports failure: the request header ``X-Testbed-Fail: settle`` on a paid call's HTTP request
makes the server hand the facilitator's ``/settle`` a payment whose signature was altered after it was verified:
the real facilitator refuses it (``success: false``, an ``errorReason``), nothing moves on chain, and the x402
wrapper answers the settlement-failed tool result (``isError: true``; ``structuredContent`` = the PaymentRequired
with ``error: "Payment settlement failed: …"`` and the failed SettleResponse under ``"x402/payment-response"``;
no ``result._meta``). The same for every paid call to the tool ``<tool>`` when the server is started with
``--fail-settle <tool>``.

Run by :func:`start_mcp_server` as a child process (:mod:`testbed.service`); ``python -m testbed.mcp_server --help``.
"""

# no "from __future__ import annotations": the MCP SDK reads the tools' real annotations
import argparse
import contextlib
import contextvars
import json
import sys
from typing import Any

MCP_PATH = "/mcp"
JSON_MCP_PATH = "/json/mcp"
STATELESS_MCP_PATH = "/stateless/mcp"
PATHS = {"sse": MCP_PATH, "json": JSON_MCP_PATH, "stateless": STATELESS_MCP_PATH}
"""Response mode → endpoint path."""

CHAT_TOOL = "chat"
WEATHER_TOOL = "weather"
FREE_TOOL = "echo"
FAIL_HEADER = "X-Testbed-Fail"
FAIL_SETTLE = "settle"
SETTLEMENTS_PATH = "/testbed/settlements"
MODEL = "testbed-echo-1"
SERVER_NAME = "testbed-paid-mcp"

_fail_settle: contextvars.ContextVar[bool] = contextvars.ContextVar("testbed_mcp_fail_settle", default=False)


def _tampered(payload):
    """``payload`` with its EIP-3009 signature altered (last byte before v flipped): it no longer recovers to the
    payer, so the facilitator's settle (which verifies again) refuses it."""
    inner = dict(payload.payload or {})
    sig = inner.get("signature")
    if isinstance(sig, str) and sig.startswith("0x") and len(sig) > 6:
        flipped = "%02x" % (int(sig[-4:-2], 16) ^ 0xFF)
        inner["signature"] = sig[:-4] + flipped + sig[-2:]
    return payload.model_copy(update={"payload": inner})


def _facilitator_client(url: str, settlements: list):
    """The x402 async facilitator client (no proxy), which tampers with the payment it settles when asked."""
    import httpx
    from x402.http import FacilitatorConfig, HTTPFacilitatorClient

    class TestbedFacilitatorClient(HTTPFacilitatorClient):
        async def settle(self, payload, requirements):
            if _fail_settle.get():
                payload = _tampered(payload)
            result = await super().settle(payload, requirements)
            settlements.append(result.model_dump(by_alias=True, exclude_none=True, mode="json"))
            return result

    return TestbedFacilitatorClient(FacilitatorConfig(
        url=url, timeout=60.0, http_client=httpx.AsyncClient(timeout=60.0, trust_env=False, follow_redirects=True)))


def _to_call_tool_result(result):
    """x402's ``MCPToolResult`` (what its wrapper returns) as the MCP SDK's ``CallToolResult``."""
    from mcp.types import CallToolResult

    if isinstance(result, CallToolResult):
        return result
    doc: dict[str, Any] = {"content": list(result.content or []), "isError": bool(result.is_error)}
    if result.structured_content is not None:
        doc["structuredContent"] = result.structured_content
    if result.meta:
        doc["_meta"] = dict(result.meta)
    return CallToolResult.model_validate(doc)


def _request_meta(ctx) -> dict:
    """The ``params._meta`` of the ``tools/call`` being served (a plain dict)."""
    try:
        meta = ctx.request_context.meta
    except (AttributeError, ValueError):
        return {}
    return dict(meta) if isinstance(meta, dict) else {}


def _request_header(ctx, name: str) -> str:
    try:
        request = ctx.request_context.request
        return request.headers.get(name, "") if request is not None else ""
    except (AttributeError, ValueError):
        return ""


def create_app(*, facilitator_url: str, network: str, asset: str, pay_to: str, price: int = 10_000,
               weather_price: int | None = None, token_name: str = "USD Coin", token_version: str = "2",
               max_timeout_seconds: int = 300, fail_settle_tools: tuple[str, ...] = ()):
    """The MCP server as an ASGI app (Starlette; run it with its lifespan on). The facilitator must already answer
    ``GET /supported`` (the resource server asks it now)."""
    from mcp.server.mcpserver import Context, MCPServer
    from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
    from mcp.server.transport_security import TransportSecuritySettings
    from mcp.types import CallToolResult
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from x402.mcp.server_async import PaymentWrapperConfig, create_payment_wrapper
    from x402.mcp.types import ResourceInfo
    from x402.mechanisms.evm.exact import ExactEvmServerScheme
    from x402.schemas import ResourceConfig
    from x402.server import x402ResourceServer

    from .server import chat_completion

    settlements: list[dict] = []
    resource_server = x402ResourceServer(_facilitator_client(facilitator_url, settlements))
    resource_server.register(network, ExactEvmServerScheme())
    resource_server.initialize()  # GET /supported

    def paid(tool: str, amount: int, description: str):
        accepts = resource_server.build_payment_requirements(ResourceConfig(
            scheme="exact", pay_to=pay_to, network=network, max_timeout_seconds=max_timeout_seconds,
            price={"amount": str(int(amount)), "asset": asset, "extra": {"name": token_name, "version": token_version}},
        ))
        return create_payment_wrapper(resource_server, PaymentWrapperConfig(
            accepts=accepts,
            resource=ResourceInfo(url=f"mcp://tool/{tool}", description=description, mime_type="application/json")))

    async def run_paid(wrapped, tool: str, args: dict, ctx) -> CallToolResult:
        fail = tool in fail_settle_tools or _request_header(ctx, FAIL_HEADER).strip().lower() == FAIL_SETTLE
        token = _fail_settle.set(fail)
        try:
            result = await wrapped(args, {"_meta": _request_meta(ctx), "toolName": tool})
        finally:
            _fail_settle.reset(token)
        return _to_call_tool_result(result)

    async def chat_handler(args: dict, context) -> dict:
        completion = chat_completion({"model": MODEL, "messages": [{"role": "user", "content": args["prompt"]}]})
        return {"content": [{"type": "text", "text": completion["choices"][0]["message"]["content"]}],
                "structuredContent": completion}

    async def weather_handler(args: dict, context) -> dict:
        report = {"city": args["city"], "weather": "sunny", "temperature_c": 21}
        return {"content": [{"type": "text", "text": json.dumps(report)}], "structuredContent": report}

    paid_chat = paid(CHAT_TOOL, price, "Chat completion (testbed)")(chat_handler)
    paid_weather = paid(WEATHER_TOOL, weather_price if weather_price is not None else 2 * price,
                        "Weather report (testbed)")(weather_handler)

    mcp = MCPServer(SERVER_NAME, version="1.0.0", log_level="WARNING")

    @mcp.tool(name=CHAT_TOOL, description=f"Chat with the testbed model (paid: {price} atomic units)")
    async def chat(prompt: str, ctx: Context) -> CallToolResult:
        return await run_paid(paid_chat, CHAT_TOOL, {"prompt": prompt}, ctx)

    @mcp.tool(name=WEATHER_TOOL, description="Weather for a city (paid)")
    async def weather(city: str, ctx: Context) -> CallToolResult:
        return await run_paid(paid_weather, WEATHER_TOOL, {"city": city}, ctx)

    @mcp.tool(name=FREE_TOOL, description="Echo the text (free)")
    async def echo(text: str) -> str:
        return text

    lowlevel = mcp._lowlevel_server
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "https://127.0.0.1:*", "https://localhost:*"])
    managers = {
        "sse": StreamableHTTPSessionManager(app=lowlevel, security_settings=security),
        "json": StreamableHTTPSessionManager(app=lowlevel, json_response=True, security_settings=security),
        "stateless": StreamableHTTPSessionManager(app=lowlevel, json_response=True, stateless=True,
                                                  security_settings=security),
    }

    async def healthz(request):
        return JSONResponse({"ok": True, "network": network, "asset": asset, "payTo": pay_to, "price": str(price),
                             "tools": [CHAT_TOOL, WEATHER_TOOL, FREE_TOOL], "paths": PATHS})

    async def list_settlements(request):
        return JSONResponse(list(settlements))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with contextlib.AsyncExitStack() as stack:
            for manager in managers.values():
                await stack.enter_async_context(manager.run())
            yield

    routes = [Route(PATHS[mode], endpoint=StreamableHTTPASGIApp(m), methods=["GET", "POST", "DELETE"])
              for mode, m in managers.items()]
    routes += [Route("/healthz", healthz), Route(SETTLEMENTS_PATH, list_settlements)]
    return Starlette(routes=routes, lifespan=lifespan)


def start_mcp_server(*, facilitator_url: str, network: str, asset: str, pay_to: str, price: int = 10_000,
                     weather_price: int | None = None, tls: dict | None = None, url_host: str | None = None,
                     fail_settle_tools: tuple[str, ...] = (), timeout: float = 30.0, wait: bool = True):
    """Start the MCP server as a child process on 127.0.0.1; returns a :class:`~testbed.service.Service` whose
    ``url`` is the base URL (append :data:`MCP_PATH`, :data:`JSON_MCP_PATH` or :data:`STATELESS_MCP_PATH`).

    ``tls={"cert": path, "key": path}`` serves HTTPS (its URL then uses ``localhost``)."""
    from .service import start_service

    args = ["--facilitator-url", facilitator_url, "--network", network, "--asset", asset, "--pay-to", pay_to,
            "--price", str(int(price))]
    if weather_price is not None:
        args += ["--weather-price", str(int(weather_price))]
    for tool in fail_settle_tools:
        args += ["--fail-settle", tool]
    if tls:
        args += ["--ssl-certfile", str(tls["cert"]), "--ssl-keyfile", str(tls["key"])]
    return start_service("mcp-server", "testbed.mcp_server", args, tls=bool(tls),
                         url_host=url_host or ("localhost" if tls else None), timeout=timeout, wait=wait)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.mcp_server", description="paid MCP server (x402 over MCP)")
    ap.add_argument("--facilitator-url", required=True)
    ap.add_argument("--network", required=True, help="CAIP-2, e.g. eip155:8453")
    ap.add_argument("--asset", required=True, help="token address")
    ap.add_argument("--pay-to", required=True)
    ap.add_argument("--price", type=int, default=10_000, help="atomic units per chat call")
    ap.add_argument("--weather-price", type=int, help="atomic units per weather call (default twice --price)")
    ap.add_argument("--fail-settle", action="append", default=[], metavar="TOOL",
                    help="every paid call of TOOL gets a settlement that reports failure (repeatable)")
    ap.add_argument("--fd", type=int, help="serve this inherited listening socket")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ssl-certfile")
    ap.add_argument("--ssl-keyfile")
    ap.add_argument("--facilitator-timeout", type=float, default=30.0)
    args = ap.parse_args(argv)

    import socket

    import uvicorn

    from .server import wait_for_facilitator

    wait_for_facilitator(args.facilitator_url, args.facilitator_timeout)
    app = create_app(facilitator_url=args.facilitator_url, network=args.network, asset=args.asset,
                     pay_to=args.pay_to, price=args.price, weather_price=args.weather_price,
                     fail_settle_tools=tuple(args.fail_settle))
    # the session managers run in the app's lifespan: uvicorn must run it (testbed.service.serve_fd turns it off)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", lifespan="on",
                            ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile, timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    if args.fd is None:
        server.run()
    else:
        server.run(sockets=[socket.socket(fileno=args.fd)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
