"""A paid MCP tool call as a real agent makes it: the ``mcp`` SDK's client (``ClientSession`` over
``streamable_http_client``) wrapped with x402's MCP client (``x402.mcp.wrap_mcp_client_with_payment``: auto
payment with the exact EVM client scheme and the payer's key), through a forward proxy if asked.

    from testbed.mcp_client import call_tool

    call = call_tool("http://127.0.0.1:PORT/mcp", "chat", {"prompt": "hi"}, proxy="http://127.0.0.1:8080",
                     verify="/path/to/proxy-ca.pem")
    call.text, call.payment_made, call.settlement["transaction"], call.exchanges  # every HTTP exchange, bodies too

Proxy and TLS: the MCP SDK talks HTTP through an ``httpx2.AsyncClient`` it is handed (``streamable_http_client(url,
http_client=…)``); this module builds it with ``proxy`` and ``verify`` (bool, CA file or ``ssl.SSLContext``) and
``trust_env=False``, so what the test asks is what happens. ``proxy=None`` (default) takes the environment's
``HTTPS_PROXY``/``HTTP_PROXY`` (minus ``NO_PROXY``), ``proxy=False`` connects directly; ``verify=None`` takes
``SSL_CERT_FILE`` if set. (The SDK's own default client, ``create_mcp_http_client()``, is an ``httpx2.AsyncClient``
with ``trust_env=True``: a stock MCP app honours ``HTTPS_PROXY`` and ``SSL_CERT_FILE`` by itself.)

Compatibility shim: x402 2.25.0's MCP client calls ``mcp_client.call_tool({"name", "arguments", "_meta"},
read_timeout_seconds=timedelta)`` and reads the result's ``isError``/``structuredContent``/``_meta`` attributes,
the mcp 1.x names; mcp 2.3.0's ``ClientSession.call_tool(name, arguments, read_timeout_seconds: float, meta=…)``
returns a ``CallToolResult`` with ``is_error``/``structured_content``/``meta``. :class:`SessionAdapter` bridges
the two without changing what goes on the wire (the SDK serialises ``_meta`` as given).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
from dataclasses import dataclass, field
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from .chain import PAYER
from .client import _ssl_verify, _x402_client, env_proxy

PAYMENT_META_KEY = "x402/payment"
RESPONSE_META_KEY = "x402/payment-response"


# ---------------------------------------------------------------------------------------------
# What went over the wire
# ---------------------------------------------------------------------------------------------


def sse_events(body: bytes) -> list[dict]:
    """The events of a ``text/event-stream`` body: ``[{"event", "data", "id", "retry"}]`` (absent fields omitted)."""
    events: list[dict] = []
    current: dict[str, str] = {}
    data: list[str] = []
    for raw in body.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if raw == "":
            if data or current:
                if data:
                    current["data"] = "\n".join(data)
                events.append(current)
            current, data = {}, []
            continue
        if raw.startswith(":"):
            continue
        name, _, value = raw.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name in ("event", "id", "retry"):
            current[name] = value
    if data or current:
        if data:
            current["data"] = "\n".join(data)
        events.append(current)
    return events


@dataclass
class HttpExchange:
    """One HTTP request/response as the MCP client sent and read it (headers in wire case; the response body is
    what the client read: all of it for a POST, what had arrived by the end for a long-lived GET stream)."""

    method: str
    url: str
    request_headers: list[tuple[str, str]]
    request_body: bytes
    status: int | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_body: bytes = b""

    def request_header(self, name: str) -> str | None:
        return next((v for k, v in self.request_headers if k.lower() == name.lower()), None)

    def response_header(self, name: str) -> str | None:
        return next((v for k, v in self.response_headers if k.lower() == name.lower()), None)

    @property
    def request_json(self) -> Any:
        return json.loads(self.request_body) if self.request_body else None

    @property
    def content_type(self) -> str:
        return (self.response_header("content-type") or "").split(";")[0].strip().lower()

    @property
    def response_messages(self) -> list[dict]:
        """The JSON-RPC messages of the answer: the JSON body, or the ``data`` of each SSE event (a batch is
        flattened)."""
        if not self.response_body:
            return []
        if self.content_type == "text/event-stream":
            docs = [json.loads(e["data"]) for e in sse_events(self.response_body) if e.get("data")]
        elif self.content_type == "application/json":
            docs = [json.loads(self.response_body)]
        else:
            return []
        return [m for d in docs for m in (d if isinstance(d, list) else [d])]

    @property
    def rpc_method(self) -> str | None:
        doc = self.request_json if self.method == "POST" else None
        return doc.get("method") if isinstance(doc, dict) else None

    def describe(self) -> dict:
        """A JSON-able account of the exchange (bodies decoded)."""
        return {"method": self.method, "url": self.url, "request_headers": self.request_headers,
                "request_body": self.request_json if self.request_body else None, "status": self.status,
                "response_headers": self.response_headers,
                "response_body": self.response_body.decode("utf-8", "replace")}


def _recording_transport(inner: Any, exchanges: list[HttpExchange]) -> Any:
    import httpx2

    class _Tee(httpx2.AsyncByteStream):
        def __init__(self, stream: Any, exchange: HttpExchange) -> None:
            self._stream, self._exchange = stream, exchange

        async def __aiter__(self):
            async for chunk in self._stream:
                self._exchange.response_body += chunk
                yield chunk

        async def aclose(self) -> None:
            await self._stream.aclose()

    class _Recording(httpx2.AsyncBaseTransport):
        async def handle_async_request(self, request: Any) -> Any:
            body = request.content if request.method != "GET" else b""  # the SDK's bodies are in memory
            exchange = HttpExchange(request.method, str(request.url),
                                    [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw], body)
            exchanges.append(exchange)
            response = await inner.handle_async_request(request)
            exchange.status = response.status_code
            exchange.response_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw]
            return httpx2.Response(response.status_code, headers=response.headers,
                                   stream=_Tee(response.stream, exchange), extensions=response.extensions)

        async def aclose(self) -> None:
            await inner.aclose()

    return _Recording()


def http_client(*, proxy: str | None | bool = None, verify: Any = None, headers: dict[str, str] | None = None,
                url: str | None = None, exchanges: list[HttpExchange] | None = None, timeout: float = 60.0) -> Any:
    """The ``httpx2.AsyncClient`` to hand ``streamable_http_client``: through ``proxy``, trusting ``verify``, with
    ``headers`` on every request, recording into ``exchanges`` if given."""
    import httpx2

    if proxy is None and url:
        proxy = env_proxy(url)
    transport = httpx2.AsyncHTTPTransport(proxy=proxy or None, verify=_ssl_verify(verify), trust_env=False)
    if exchanges is not None:
        transport = _recording_transport(transport, exchanges)
    return httpx2.AsyncClient(transport=transport, headers=headers, trust_env=False,
                              timeout=httpx2.Timeout(timeout, read=max(timeout, 300.0)))


# ---------------------------------------------------------------------------------------------
# The x402 MCP client on the mcp 2.x session
# ---------------------------------------------------------------------------------------------


class SessionAdapter:
    """The MCP client x402's ``x402MCPClient`` expects, on an mcp 2.x ``ClientSession`` (see the module doc).
    ``results`` keeps every ``CallToolResult`` as it came (by alias: the wire's field names)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.results: list[dict] = []

    async def call_tool(self, params: dict, read_timeout_seconds: Any = None, **_: Any) -> Any:
        if isinstance(read_timeout_seconds, timedelta):
            read_timeout_seconds = read_timeout_seconds.total_seconds()
        result = await self.session.call_tool(params["name"], params.get("arguments") or {},
                                              read_timeout_seconds=read_timeout_seconds, meta=params.get("_meta"))
        doc = result.model_dump(by_alias=True, exclude_none=True, mode="json")
        self.results.append(doc)
        return SimpleNamespace(content=doc.get("content") or [], isError=bool(doc.get("isError")),
                               structuredContent=doc.get("structuredContent"), _meta=doc.get("_meta") or {})

    async def list_tools(self) -> Any:
        return await self.session.list_tools()


@dataclass
class McpCall:
    """One tool call as the x402 MCP client made it (the unpaid call, and the paid retry if it paid)."""

    tool: str
    arguments: dict
    result: dict
    """The last ``CallToolResult`` (wire field names: ``content``, ``isError``, ``structuredContent``, ``_meta``)."""
    payment_made: bool
    payment_required: dict | None = None
    """The challenge (x402 ``PaymentRequired``) the unpaid call got, if any."""
    payment: dict | None = None
    """The ``PaymentPayload`` sent in ``params._meta["x402/payment"]`` of the retry."""
    exchanges: list[HttpExchange] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)
    """Every ``CallToolResult`` of this call, in order."""
    error: str | None = None

    @property
    def is_error(self) -> bool:
        return bool(self.result.get("isError"))

    @property
    def text(self) -> str:
        return "".join(c.get("text", "") for c in self.result.get("content") or [] if isinstance(c, dict))

    @property
    def settlement(self) -> dict | None:
        """The SettleResponse: ``result._meta["x402/payment-response"]`` (a settled call), else the failed one the
        x402 Python wrapper puts in ``structuredContent["x402/payment-response"]`` of a settlement-failed result."""
        meta = self.result.get("_meta") or {}
        if isinstance(meta.get(RESPONSE_META_KEY), dict):
            return meta[RESPONSE_META_KEY]
        sc = self.result.get("structuredContent") or {}
        found = sc.get(RESPONSE_META_KEY) if isinstance(sc, dict) else None
        return found if isinstance(found, dict) else None

    @property
    def settled(self) -> bool:
        return bool((self.settlement or {}).get("success"))

    @property
    def tx_hash(self) -> str | None:
        tx = (self.settlement or {}).get("transaction")
        return tx if isinstance(tx, str) and len(tx) == 66 and tx.startswith("0x") else None

    def tool_calls(self) -> list[HttpExchange]:
        """The HTTP exchanges that carried this call's ``tools/call`` requests."""
        return [e for e in self.exchanges if e.rpc_method == "tools/call"]


async def call_tool_async(
    url: str,
    name: str,
    arguments: dict | None = None,
    *,
    private_key: str = PAYER.private_key,
    pay: bool = True,
    proxy: str | None | bool = None,
    verify: Any = None,
    headers: dict[str, str] | None = None,
    spend_controls: Any = None,
    x402_client: Any = None,
    list_tools: bool = False,
    protocol: str = "legacy",
    timeout: float = 60.0,
) -> McpCall:
    """Open an MCP session on ``url``, optionally ``tools/list``, call ``name`` with x402's MCP client, close the
    session. ``pay=False`` takes the challenge and stops there. ``spend_controls`` as for
    :func:`testbed.client.pay_async` (default: any asset).

    ``protocol``: ``"legacy"`` (default) is ``ClientSession.initialize()``, the handshake every pre-2026 client does
    (``initialize``, ``notifications/initialized``, the session's GET stream, ``DELETE`` at the end);
    ``"auto"`` is the mcp 2.x ``mcp.Client`` default (a ``server/discover`` probe at 2026-07-28, the stateless
    per-request envelope if the server speaks it, else the handshake); ``"2026-07-28"`` pins the modern era."""
    from mcp import Client, ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from x402.mcp import PaymentRequiredError, wrap_mcp_client_with_payment

    arguments = dict(arguments or {})
    exchanges: list[HttpExchange] = []
    if x402_client is None:
        x402_client = _x402_client(private_key, spend_controls or {"allowed_assets": True})
    seen: dict[str, Any] = {}

    async with http_client(proxy=proxy, verify=verify, headers=headers, url=url, exchanges=exchanges,
                           timeout=timeout) as http:
        async with contextlib.AsyncExitStack() as stack:
            if protocol == "legacy":
                read, write = await stack.enter_async_context(streamable_http_client(url, http_client=http))
                session = await stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
            else:
                mcp_client = await stack.enter_async_context(
                    Client(streamable_http_client(url, http_client=http), mode=protocol))
                session = mcp_client.session
            if list_tools:
                await session.list_tools()
            adapter = SessionAdapter(session)
            x402_mcp = wrap_mcp_client_with_payment(adapter, x402_client, auto_payment=pay,
                                                   on_payment_requested=None if pay else (lambda ctx: False))
            x402_mcp.on_before_payment(lambda ctx: seen.__setitem__("required", ctx.payment_required))
            x402_mcp.on_after_payment(lambda ctx: seen.__setitem__("payload", ctx.payment_payload))
            error = None
            try:
                answer = await x402_mcp.call_tool(name, arguments)
                paid = answer.payment_made
            except PaymentRequiredError as e:  # pay=False: the challenge is the answer
                seen.setdefault("required", e.payment_required)
                paid, error = False, f"{type(e).__name__}: {e}"

    def dump(model: Any) -> dict | None:
        return model.model_dump(by_alias=True, exclude_none=True, mode="json") if model is not None else None

    required = dump(seen.get("required"))
    if required is None and adapter.results:
        first = adapter.results[0]
        sc = first.get("structuredContent")
        if first.get("isError") and isinstance(sc, dict) and "accepts" in sc:
            required = sc
    return McpCall(tool=name, arguments=arguments, result=adapter.results[-1] if adapter.results else {},
                   payment_made=paid, payment_required=required, payment=dump(seen.get("payload")),
                   exchanges=exchanges, results=list(adapter.results), error=error)


def call_tool(url: str, name: str, arguments: dict | None = None, **kwargs: Any) -> McpCall:
    """Blocking :func:`call_tool_async` (its own event loop; in a worker thread if one is running here)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(call_tool_async(url, name, arguments, **kwargs))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, call_tool_async(url, name, arguments, **kwargs)).result()
