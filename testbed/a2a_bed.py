"""x402 over A2A (Agent2Agent): a paid A2A agent on the chain test bed, and a paying client, both with the real
``a2a-sdk`` (and the real ``x402`` SDK for the payment).

    from testbed.a2a_bed import a2a_stack

    with a2a_stack() as s:
        paid = s.pay("hello")                     # through $HTTPS_PROXY if set, else direct
        paid.state                                # 'TASK_STATE_COMPLETED'
        paid.payment_status                       # 'payment-completed'
        paid.receipts                             # [{"success": True, "transaction": "0x…", "network": …, "payer": …}]
        paid.payment                              # the PaymentPayload the client sent (decoded)
        paid.answer                               # 'You said: hello'
        paid.exchanges                            # every HTTP exchange, with its raw bodies (SSE included)
        s.balance(s.payee)                        # the payee's test USDC, atomic units

``a2a_stack()`` is :func:`testbed.stack.paid_stack` (anvil, test USDC, the real facilitator with the exact EVM
scheme, the x402 HTTP resource server) plus the agent of :mod:`testbed.a2a_agent` (see there for the flow and
the routes), which verifies and settles through that facilitator. ``tls={"cert", "key"}`` serves the agent
(and the HTTP resource server) over HTTPS on ``localhost``.

The client (:func:`pay_a2a` / :func:`pay_a2a_async`) is the a2a-sdk's ``ClientFactory`` client over an httpx
client of ours (which records every exchange): it fetches the agent card, sends the first message, signs the
``x402.payment.required`` it gets back with the x402 SDK's ``x402ClientSync`` (exact EVM scheme, EIP-3009),
sends the payment in the next message's metadata, then asks ``GetTask`` for the final task (``get_task``).
Options:

- ``streaming`` (default True, the SDK's default): ``SendStreamingMessage`` (SSE); False: ``SendMessage``
- ``binding``: ``"JSONRPC"`` (default, the SDK's default) or ``"HTTP+JSON"`` (REST)
- ``protocol_version``: ``"1.0"`` (default) or ``"0.3"`` (the SDK's compat transports: ``message/send``…)
- ``activate`` (default True): send the extension activation header (``A2A-Extensions``; the 0.3 transports
  add ``X-A2A-Extensions``); ``extra_headers`` are sent on every request
- ``fail``: ``"settle"`` (the agent's settlement fails, see :mod:`testbed.a2a_agent`), ``"verify"`` (the client
  spoils the signature: verification fails), ``"reject"`` (the client answers ``payment-rejected``)
- ``proxy`` and ``verify`` as for :func:`testbed.client.pay`: ``proxy=None`` reads ``HTTPS_PROXY``/``NO_PROXY``,
  ``proxy=False`` goes direct; ``verify`` a CA file, an ``SSLContext`` or a bool, default ``$SSL_CERT_FILE``.

``python -m testbed.a2a_bed`` starts the stack, prints where everything is (as JSON) and runs until Ctrl-C;
``--pay`` makes one paid task and prints its exchanges.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

from .a2a_agent import (
    ERROR_KEY,
    FAIL_HEADER,
    PAYLOAD_KEY,
    PAYMENT_REJECTED,
    PAYMENT_SUBMITTED,
    RECEIPTS_KEY,
    REQUIRED_KEY,
    STATUS_KEY,
    X402_EXTENSION_URI,
    integral,
)
from .chain import PAYER



# ---------------------------------------------------------------------------------------------
# What the client saw
# ---------------------------------------------------------------------------------------------


def _get(headers: list[tuple[str, str]], name: str) -> str | None:
    name = name.lower()
    return next((v for k, v in headers if k.lower() == name), None)


def sse_data(body: bytes) -> list[Any]:
    """The ``data:`` payloads of an SSE body, JSON-decoded (multi-line data joined with newlines)."""
    out: list[Any] = []
    for block in body.decode("utf-8", "replace").replace("\r\n", "\n").split("\n\n"):
        data = [line[5:].removeprefix(" ") for line in block.split("\n") if line.startswith("data:")]
        if data:
            text = "\n".join(data)
            try:
                out.append(json.loads(text))
            except ValueError:
                out.append(text)
    return out


@dataclass
class A2AExchange:
    """One HTTP request/response as the client sent and received it (header names in wire case, raw bodies)."""

    method: str
    url: str
    request_headers: list[tuple[str, str]]
    request_body: bytes
    status: int
    response_headers: list[tuple[str, str]]
    _body: bytearray = field(default_factory=bytearray, repr=False)

    @property
    def response_body(self) -> bytes:
        return bytes(self._body)

    def request_header(self, name: str) -> str | None:
        return _get(self.request_headers, name)

    def response_header(self, name: str) -> str | None:
        return _get(self.response_headers, name)

    def request_json(self) -> Any:
        return json.loads(self.request_body) if self.request_body else None

    @property
    def is_sse(self) -> bool:
        return "text/event-stream" in (self.response_header("content-type") or "")

    def response_json(self) -> Any:
        """The JSON body, or for an SSE answer the list of its ``data:`` payloads."""
        return sse_data(self.response_body) if self.is_sse else json.loads(self.response_body)


def _status_message_metadata(obj: dict) -> dict:
    """``status.message.metadata`` of a Task / status-update dict (camelCase, as MessageToDict gives)."""
    return integral(((obj.get("status") or {}).get("message") or {}).get("metadata") or {})


@dataclass
class A2APaidTask:
    """What one paid A2A task came to."""

    task: dict | None
    """The final task (``GetTask`` when ``get_task``, else the last task state the client saw), camelCase."""
    payment_required: dict | None
    """``x402.payment.required`` of the ``input-required`` answer (integral numbers made ints)."""
    payment: dict | None
    """The ``PaymentPayload`` the client sent in ``x402.payment.payload`` (holds a live signature)."""
    events: list[list[dict]] = field(default_factory=list)
    """Per message sent, the stream responses the SDK client yielded (``{"task"|"statusUpdate"|…: …}``)."""
    exchanges: list[A2AExchange] = field(default_factory=list)
    card: dict | None = None
    error: str | None = None
    """An exception the client got (e.g. the SDK's A2A error for a refused message), else None."""

    @property
    def task_id(self) -> str | None:
        return (self.task or {}).get("id")

    @property
    def state(self) -> str | None:
        return ((self.task or {}).get("status") or {}).get("state")

    @property
    def metadata(self) -> dict:
        """The final task's ``status.message.metadata``."""
        return _status_message_metadata(self.task or {})

    @property
    def payment_status(self) -> str | None:
        return self.metadata.get(STATUS_KEY)

    @property
    def payment_error(self) -> str | None:
        return self.metadata.get(ERROR_KEY)

    @property
    def receipts(self) -> list[dict]:
        return list(self.metadata.get(RECEIPTS_KEY) or [])

    @property
    def receipt(self) -> dict | None:
        return self.receipts[-1] if self.receipts else None

    @property
    def tx_hash(self) -> str | None:
        tx = (self.receipt or {}).get("transaction")
        return tx if isinstance(tx, str) and len(tx) == 66 and tx.startswith("0x") else None

    @property
    def answer(self) -> str | None:
        """The text of the task's artifacts (the skill's answer), None if it has none."""
        texts = [p.get("text", "") for a in (self.task or {}).get("artifacts") or [] for p in a.get("parts") or []]
        return "".join(texts) if texts else None

    @property
    def payment_statuses(self) -> list[str]:
        """Every ``x402.payment.status`` the client saw from the agent, in order (streaming shows all)."""
        seen = []
        for events in self.events:
            for e in events:
                obj = e.get("task") or e.get("statusUpdate") or {}
                s = _status_message_metadata(obj).get(STATUS_KEY)
                if s:
                    seen.append(s)
        return seen


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------


def _recording_transport(inner, exchanges: list[A2AExchange]):
    import httpx

    class _Tee(httpx.AsyncByteStream):
        def __init__(self, stream, sink: bytearray):
            self._stream = stream
            self._sink = sink

        async def __aiter__(self):
            async for chunk in self._stream:
                self._sink.extend(chunk)
                yield chunk

        async def aclose(self) -> None:
            await self._stream.aclose()

    class _Recording(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            body = await request.aread()
            response = await inner.handle_async_request(request)
            ex = A2AExchange(
                request.method, str(request.url),
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw], body,
                response.status_code,
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw])
            exchanges.append(ex)
            return httpx.Response(response.status_code, headers=response.headers.raw,
                                  stream=_Tee(response.stream, ex._body), extensions=response.extensions,
                                  request=request)

        async def aclose(self) -> None:
            await inner.aclose()

    return _Recording()


def x402_client(private_key: str = PAYER.private_key, spend_controls: Any = None):
    """The x402 SDK's synchronous client with the exact EVM scheme (EIP-3009) for ``private_key``."""
    from eth_account import Account
    from x402 import x402ClientSync
    from x402.mechanisms.evm.exact import register_exact_evm_client
    from x402.mechanisms.evm.signers import EthAccountSigner

    client = x402ClientSync()
    client.set_spend_controls(spend_controls or {"allowed_assets": True})
    register_exact_evm_client(client, EthAccountSigner(Account.from_key(private_key)))
    return client


def _pick_card(card, binding: str, protocol_version: str):
    """A copy of ``card`` offering only the interfaces of ``binding`` at ``protocol_version``."""
    from a2a.types import AgentCard

    picked = AgentCard()
    picked.CopyFrom(card)
    keep = [i for i in card.supported_interfaces
            if i.protocol_binding == binding and (i.protocol_version or "").startswith(protocol_version)]
    if not keep:
        raise ValueError(f"the agent card offers no {binding} interface for protocol {protocol_version}")
    del picked.supported_interfaces[:]
    picked.supported_interfaces.extend(keep)
    return picked


def _spoil(payment: dict) -> dict:
    """The payment with one byte of its signature's ``r`` changed (the signature no longer matches)."""
    spoiled = json.loads(json.dumps(payment))
    sig = spoiled["payload"]["signature"]
    spoiled["payload"]["signature"] = sig[:4] + ("0" if sig[4] != "0" else "1") + sig[5:]
    return spoiled


async def pay_a2a_async(
    agent_url: str,
    text: str = "hello",
    *,
    private_key: str = PAYER.private_key,
    spend_controls: Any = None,
    proxy: str | None | bool = None,
    verify: Any = None,
    streaming: bool = True,
    binding: str = "JSONRPC",
    protocol_version: str = "1.0",
    activate: bool = True,
    extra_headers: dict[str, str] | None = None,
    fail: str | None = None,
    get_task: bool = True,
    timeout: float = 60.0,
) -> A2APaidTask:
    """One paid task with the a2a-sdk client (see the module doc for the options). Never raises for what the
    SDK raises (card resolution, TLS, transport, an A2A error answer): it is in ``.error``, with what was seen
    before it."""
    import httpx
    from google.protobuf import json_format
    from x402.schemas.helpers import parse_payment_required

    from a2a.client import A2ACardResolver, ClientCallContext, ClientConfig, ClientFactory
    from a2a.client.service_parameters import ServiceParametersFactory, with_a2a_extensions
    from a2a.types import GetTaskRequest, Message, Part, Role, SendMessageRequest

    from .client import _ssl_verify, env_proxy

    if fail not in (None, "settle", "verify", "reject"):
        raise ValueError(f"unknown fail mode {fail!r}")
    if proxy is None:
        proxy = env_proxy(agent_url)
    exchanges: list[A2AExchange] = []
    inner = httpx.AsyncHTTPTransport(proxy=proxy or None, verify=_ssl_verify(verify), trust_env=False)
    result = A2APaidTask(task=None, payment_required=None, payment=None, exchanges=exchanges)
    updates = [with_a2a_extensions([X402_EXTENSION_URI])] if activate else []
    params = ServiceParametersFactory.create(updates)
    params.update(extra_headers or {})

    def as_dict(msg) -> dict:
        return json_format.MessageToDict(msg)

    async with httpx.AsyncClient(transport=_recording_transport(inner, exchanges), trust_env=False,
                                 timeout=timeout) as http:
        factory = ClientFactory(ClientConfig(httpx_client=http, streaming=streaming,
                                             supported_protocol_bindings=[binding]))
        client = None
        try:
            card = await A2ACardResolver(http, agent_url).get_agent_card()
            result.card = as_dict(card)
            client = factory.create(_pick_card(card, binding, protocol_version))

            async def send(message, headers: dict[str, str]) -> dict | None:
                """Send ``message``; returns the last task state seen (a Task dict, updated by the events)."""
                context = ClientCallContext(service_parameters={**params, **headers})
                seen: list[dict] = []
                result.events.append(seen)
                task: dict | None = None
                async for event in client.send_message(SendMessageRequest(message=message), context=context):
                    e = as_dict(event)
                    seen.append(e)
                    if "task" in e:
                        task = e["task"]
                    elif "statusUpdate" in e and task is not None:
                        task = {**task, "status": e["statusUpdate"]["status"]}
                    elif "statusUpdate" in e:
                        su = e["statusUpdate"]
                        task = {"id": su.get("taskId"), "contextId": su.get("contextId"), "status": su["status"]}
                    elif "artifactUpdate" in e and task is not None:
                        task = {**task, "artifacts": [*(task.get("artifacts") or []), e["artifactUpdate"]["artifact"]]}
                return task

            first = Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=[Part(text=text)])
            task = await send(first, {})
            result.task = task
            required = _status_message_metadata(task or {}).get(REQUIRED_KEY)
            if not task or not required:
                return result
            result.payment_required = required
            if fail == "reject":
                metadata = {STATUS_KEY: PAYMENT_REJECTED}
                words = "I decline to pay."
            else:
                payload = x402_client(private_key, spend_controls).create_payment_payload(
                    parse_payment_required(required))
                payment = payload.model_dump(by_alias=True, exclude_none=True, mode="json")
                if fail == "verify":
                    payment = _spoil(payment)
                result.payment = payment
                metadata = {STATUS_KEY: PAYMENT_SUBMITTED, PAYLOAD_KEY: payment}
                words = "Here is the payment authorization."
            paying = Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), task_id=task["id"],
                             context_id=task.get("contextId", ""), parts=[Part(text=words)], metadata=metadata)
            task = await send(paying, {FAIL_HEADER: "settle"} if fail == "settle" else {})
            result.task = task or result.task
            if get_task and result.task_id:
                final = await client.get_task(GetTaskRequest(id=result.task_id),
                                              context=ClientCallContext(service_parameters=dict(params)))
                result.task = as_dict(final)
        except Exception as e:  # the SDK's errors: card resolution, transport, refused message (A2A error)
            result.error = f"{type(e).__name__}: {e}"
        finally:
            if client is not None:
                await client.close()
    return result


def pay_a2a(agent_url: str, text: str = "hello", **kwargs: Any) -> A2APaidTask:
    """Blocking :func:`pay_a2a_async` (its own event loop; in a worker thread if one runs here)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(pay_a2a_async(agent_url, text, **kwargs))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, pay_a2a_async(agent_url, text, **kwargs)).result()


# ---------------------------------------------------------------------------------------------
# The stack
# ---------------------------------------------------------------------------------------------


@dataclass
class A2AStack:
    """:class:`testbed.stack.PaidStack` plus the paid A2A agent."""

    paid: Any            # testbed.stack.PaidStack
    agent: Any           # testbed.service.Service
    services: list = field(default_factory=list, repr=False)

    @property
    def agent_url(self) -> str:
        """The agent's base URL (its card is at ``/.well-known/agent-card.json``; JSON-RPC at ``/``)."""
        return self.agent.url

    @property
    def card_url(self) -> str:
        return self.agent.url + "/.well-known/agent-card.json"

    def __getattr__(self, name: str) -> Any:  # anvil, token, price, payer, payee, network, rpc_url…
        if name in ("paid", "agent", "services"):
            raise AttributeError(name)
        return getattr(self.paid, name)

    def balance(self, address: Any) -> int:
        return self.paid.balance(address)

    def settlements(self) -> list[dict]:
        return self.paid.settlements()

    def pay(self, text: str = "hello", proxy: str | None | bool = None, verify: Any = None,
            **kwargs: Any) -> A2APaidTask:
        """A paid task as the payer (see :func:`pay_a2a_async` for the options); the x402 client may spend up to
        100 x the price of the test token per payment."""
        kwargs.setdefault("private_key", self.paid.payer.private_key)
        kwargs.setdefault("spend_controls", {"allowed_assets": [
            {"network": self.paid.network, "asset": self.paid.token,
             "max_amount_per_payment": str(self.paid.price * 100)}]})
        return pay_a2a(self.agent_url, text, proxy=proxy, verify=verify, **kwargs)

    def describe(self) -> dict:
        return {**self.paid.describe(), "agent_url": self.agent_url, "agent_card_url": self.card_url,
                "extension": X402_EXTENSION_URI}


@contextlib.contextmanager
def a2a_stack(chain_id: int = 8453, *, price: int = 10_000, tls: dict | None = None, timeout: float = 30.0,
              require_extension: bool = True, **paid_kwargs: Any) -> Iterator[A2AStack]:
    """:func:`testbed.stack.paid_stack` (same arguments) and the paid A2A agent, stopped together."""
    from .a2a_agent import start_agent
    from .stack import paid_stack

    with paid_stack(chain_id, price=price, tls=tls, timeout=timeout, **paid_kwargs) as paid:
        with start_agent(facilitator_url=paid.facilitator_url, network=paid.network, asset=paid.token,
                         pay_to=paid.payee.address, price=price, rpc_url=paid.rpc_url, tls=tls,
                         require_extension=require_extension, timeout=timeout) as agent:
            yield A2AStack(paid=paid, agent=agent, services=[*paid.services, agent])


def main(argv: list[str] | None = None) -> int:
    import argparse
    import signal
    import sys

    ap = argparse.ArgumentParser(prog="python -m testbed.a2a_bed", description="the paid A2A agent on anvil")
    ap.add_argument("--pay", action="store_true", help="make one paid task, print its exchanges, and stop")
    ap.add_argument("--no-streaming", action="store_true")
    ap.add_argument("--binding", default="JSONRPC", choices=["JSONRPC", "HTTP+JSON"])
    ap.add_argument("--protocol-version", default="1.0", choices=["1.0", "0.3"])
    args = ap.parse_args(argv)
    with a2a_stack() as s:
        print(json.dumps(s.describe(), indent=2), flush=True)
        if args.pay:
            paid = s.pay("hello", proxy=False, streaming=not args.no_streaming, binding=args.binding,
                         protocol_version=args.protocol_version)
            for ex in paid.exchanges:
                print(f"\n>>> {ex.method} {ex.url}")
                for k, v in ex.request_headers:
                    print(f"{k}: {v}")
                print(ex.request_body.decode("utf-8", "replace"))
                print(f"<<< {ex.status}")
                for k, v in ex.response_headers:
                    print(f"{k}: {v}")
                print(ex.response_body.decode("utf-8", "replace"))
            print(json.dumps({"state": paid.state, "payment_status": paid.payment_status,
                              "receipts": paid.receipts, "error": paid.error}, indent=2))
            return 0 if paid.payment_status == "payment-completed" else 1
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
