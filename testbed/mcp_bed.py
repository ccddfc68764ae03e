"""x402 over MCP on the chain test bed: :func:`testbed.stack.paid_stack` (anvil, test USDC, the real x402
facilitator) plus a paid MCP server (:mod:`testbed.mcp_server`: the ``mcp`` SDK's server over Streamable HTTP,
x402's MCP payment wrapper), and calls made by the ``mcp`` SDK's client wrapped with x402's MCP client
(:mod:`testbed.mcp_client`).

    from testbed.mcp_bed import mcp_stack

    with mcp_stack(tls=tls) as s:                       # tls optional: {"cert":…, "key":…} (URL host localhost)
        call = s.call_tool("chat", {"prompt": "hi"}, proxy=proxy.url, verify=proxy.ca)
        call.text, call.payment_made, call.settlement["transaction"], call.tx_hash
        call.payment_required, call.payment                # the challenge, and the PaymentPayload sent in _meta
        call.exchanges                                     # every HTTP exchange, with bodies (JSON or SSE)
        s.call_tool("echo", {"text": "free"})             # the free tool: no payment
        s.call_tool("chat", {"prompt": "x"}, fail_settle=True)   # a settlement that reports failure
        s.call_tool("chat", {"prompt": "x"}, mode="json")        # answers as JSON bodies instead of SSE
        s.balance(s.payee), s.settlements()

Modes (the server's endpoints): ``"sse"`` → ``/mcp`` (POSTs answered with ``text/event-stream``), ``"json"`` →
``/json/mcp`` (``application/json``), ``"stateless"`` → ``/stateless/mcp`` (JSON, no ``mcp-session-id``).

``python -m testbed.mcp_bed`` starts it and prints where everything is (JSON) until Ctrl-C; ``--wire`` instead
makes one paid call, one free call and one failing settlement per mode (directly, no proxy) and prints every
HTTP exchange as JSON.
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Iterator

from .mcp_server import CHAT_TOOL, FAIL_HEADER, FAIL_SETTLE, FREE_TOOL, PATHS, SETTLEMENTS_PATH, WEATHER_TOOL
from .stack import PaidStack
from .service import serve_until_stopped

MODES = tuple(PATHS)


@dataclass
class McpStack:
    paid: PaidStack
    server_url: str
    """The MCP server's base URL (``https://localhost:PORT`` with TLS, else ``http://127.0.0.1:PORT``)."""
    weather_price: int
    services: list = field(default_factory=list, repr=False)

    # the chain side, as PaidStack has it
    @property
    def price(self) -> int:
        """What ``chat`` costs (atomic units of the test USDC)."""
        return self.paid.price

    @property
    def payer(self):
        return self.paid.payer

    @property
    def payee(self):
        return self.paid.payee

    @property
    def token(self) -> str:
        return self.paid.token

    @property
    def network(self) -> str:
        return self.paid.network

    @property
    def rpc_url(self) -> str:
        return self.paid.rpc_url

    def w3(self):
        return self.paid.w3()

    def balance(self, who: Any) -> int:
        return self.paid.balance(who)

    def settlements(self) -> list[dict]:
        """Every answer the facilitator's ``/settle`` gave (successes and refusals)."""
        return self.paid.settlements()

    def server_settlements(self) -> list[dict]:
        """Every settle answer the MCP server got from the facilitator."""
        from .service import _NO_PROXY_OPENER

        probe = self.server_url.replace("://localhost:", "://127.0.0.1:")
        with _NO_PROXY_OPENER.open(probe + SETTLEMENTS_PATH, timeout=10) as r:
            return json.loads(r.read())

    def url(self, mode: str = "sse") -> str:
        """The MCP endpoint of ``mode`` (see the module doc)."""
        return self.server_url + PATHS[mode]

    def price_of(self, tool: str) -> int:
        return {CHAT_TOOL: self.price, WEATHER_TOOL: self.weather_price}.get(tool, 0)

    def call_tool(self, name: str, arguments: dict | None = None, *, mode: str = "sse", pay: bool = True,
                  proxy: str | None | bool = None, verify: Any = None, headers: dict[str, str] | None = None,
                  fail_settle: bool = False, **kwargs: Any):
        """A tool call as the payer with the ``mcp`` client and x402's MCP client (see
        :func:`testbed.mcp_client.call_tool_async` for ``proxy``, ``verify``, ``list_tools``…). Returns a
        :class:`~testbed.mcp_client.McpCall`. ``fail_settle`` sends ``X-Testbed-Fail: settle``: the facilitator
        refuses the settlement and the server reports it (nothing moves)."""
        from .mcp_client import call_tool

        if fail_settle:
            headers = {**(headers or {}), FAIL_HEADER: FAIL_SETTLE}
        kwargs.setdefault("private_key", self.payer.private_key)
        kwargs.setdefault("spend_controls", {"allowed_assets": [
            {"network": self.network, "asset": self.token,
             "max_amount_per_payment": str(max(self.price, self.weather_price) * 100)}]})
        return call_tool(self.url(mode), name, arguments, pay=pay, proxy=proxy, verify=verify, headers=headers,
                         **kwargs)

    def describe(self) -> dict:
        return {**self.paid.describe(), "mcp_server_url": self.server_url,
                "mcp_endpoints": {mode: self.url(mode) for mode in MODES},
                "tools": {CHAT_TOOL: str(self.price), WEATHER_TOOL: str(self.weather_price), FREE_TOOL: "0"}}


@contextlib.contextmanager
def mcp_stack(chain_id: int = 8453, *, price: int = 10_000, weather_price: int | None = None,
              tls: dict | None = None, fail_settle_tools: tuple[str, ...] = (), timeout: float = 30.0,
              **paid_kwargs: Any) -> Iterator[McpStack]:
    """What :func:`~testbed.stack.paid_stack` starts (``chain_id``, ``price``; ``paid_kwargs``: ``payer_funds``,
    ``block_time``; its HTTP resource server too, over ``tls`` as well: ``s.paid`` is that :class:`PaidStack`)
    plus the paid MCP server (``tls={"cert":…, "key":…}`` serves
    HTTPS on ``localhost``; ``weather_price`` default twice ``price``; ``fail_settle_tools``: tools whose every
    paid call gets a refused settlement). Everything stops when the block exits, also on errors."""
    from . import chain
    from .chain import PAYEE, PAYER
    from .facilitator import start_facilitator
    from .mcp_server import start_mcp_server
    from .node import start_anvil
    from .server import start_server

    weather_price = 2 * price if weather_price is None else weather_price
    payer_funds = paid_kwargs.pop("payer_funds", chain.DEFAULT_PAYER_FUNDS)
    block_time = paid_kwargs.pop("block_time", None)
    if paid_kwargs:
        raise TypeError(f"unexpected arguments {sorted(paid_kwargs)}")
    # paid_stack's steps, with the MCP server booting alongside the HTTP resource server (each takes ~1-2 s)
    with contextlib.ExitStack() as stack:
        anvil = stack.enter_context(start_anvil(chain_id, block_time=block_time))
        fac = stack.enter_context(start_facilitator(anvil.url, anvil.network, timeout=timeout, wait=False))
        token = chain.deploy_token(anvil.url)
        srv = stack.enter_context(start_server(
            facilitator_url=fac.url, network=anvil.network, asset=token, pay_to=PAYEE.address, price=price, tls=tls,
            timeout=timeout, wait=False))
        mcp_srv = stack.enter_context(start_mcp_server(
            facilitator_url=fac.url, network=anvil.network, asset=token, pay_to=PAYEE.address, price=price,
            weather_price=weather_price, tls=tls, fail_settle_tools=tuple(fail_settle_tools), timeout=timeout,
            wait=False))
        chain.fund(anvil.url, token, PAYER, payer_funds)
        for service in (fac, srv, mcp_srv):
            service.wait_ready(timeout)
        paid = PaidStack(anvil=anvil, token=token, facilitator_url=fac.url, server_url=srv.url, price=price,
                         services=[fac, srv])
        yield McpStack(paid=paid, server_url=mcp_srv.url, weather_price=weather_price, services=[mcp_srv])



def wire(s: McpStack) -> dict:
    """One paid ``chat``, one free ``echo`` and one failing settlement per mode, with every HTTP exchange."""
    out: dict[str, Any] = {}
    for mode in MODES:
        for label, name, args, extra in (("paid", CHAT_TOOL, {"prompt": "hi"}, {}),
                                         ("free", FREE_TOOL, {"text": "hi"}, {}),
                                         ("fail_settle", CHAT_TOOL, {"prompt": "hi"}, {"fail_settle": True})):
            call = s.call_tool(name, args, mode=mode, proxy=False, **extra)
            out[f"{mode}/{label}"] = {"payment_made": call.payment_made, "settlement": call.settlement,
                                      "payment": call.payment, "payment_required": call.payment_required,
                                      "exchanges": [e.describe() for e in call.exchanges]}
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m testbed.mcp_bed", description="run the paid MCP test stack")
    ap.add_argument("--chain-id", type=int, default=8453)
    ap.add_argument("--price", type=int, default=10_000)
    ap.add_argument("--wire", action="store_true", help="make a few calls, print their HTTP exchanges, exit")
    args = ap.parse_args(argv)
    with mcp_stack(args.chain_id, price=args.price) as s:
        if args.wire:
            print(json.dumps(wire(s), indent=2), flush=True)
            return 0
        print(json.dumps(s.describe(), indent=2), flush=True)
        serve_until_stopped()
    return 0


if __name__ == "__main__":
    sys.exit(main())
