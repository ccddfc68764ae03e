"""The whole paid stack in one context manager: anvil, test USDC, facilitator, resource server.

    from testbed.stack import paid_stack

    with paid_stack() as s:
        call = s.pay(s.chat_url, {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        call.status, call.payment_response["transaction"]

``python -m testbed.stack`` starts it, prints where everything is (as JSON), and runs until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, Iterator

from . import chain
from .chain import FACILITATOR, PAYEE, PAYER, DevAccount
from .node import Anvil, start_anvil
from .server import CHAT_PATH


@dataclass
class PaidStack:
    anvil: Anvil
    token: str
    facilitator_url: str
    server_url: str
    price: int
    payer: DevAccount = PAYER
    payee: DevAccount = PAYEE
    facilitator: DevAccount = FACILITATOR
    services: list = field(default_factory=list, repr=False)

    @property
    def chain_id(self) -> int:
        return self.anvil.chain_id

    @property
    def network(self) -> str:
        """CAIP-2, ``eip155:<chain id>``."""
        return self.anvil.network

    @property
    def rpc_url(self) -> str:
        return self.anvil.url

    @property
    def chat_url(self) -> str:
        return self.server_url + CHAT_PATH

    @property
    def pay_to(self) -> str:
        return self.payee.address

    def w3(self):
        return chain.make_web3(self.anvil.url)

    def balance(self, address: str | DevAccount) -> int:
        """Test USDC balance (atomic units)."""
        return chain.balance_of(self.anvil.url, self.token, str(address))

    def pay(self, url: str | None = None, body: Any = None, proxy: str | None | bool = None, **kwargs: Any):
        """A paid call as the payer (defaults: the chat URL and a one-line chat request).
        See :func:`testbed.client.pay` for ``proxy``, ``verify``, ``headers``…"""
        from .client import pay

        if body is None:
            body = {"model": "testbed-echo-1", "messages": [{"role": "user", "content": "hello"}]}
        kwargs.setdefault("private_key", self.payer.private_key)
        kwargs.setdefault("spend_controls", {"allowed_assets": [
            {"network": self.network, "asset": self.token, "max_amount_per_payment": str(self.price * 100)}]})
        return pay(url or self.chat_url, body, proxy=proxy, **kwargs)

    def settlements(self) -> list[dict]:
        """Every answer the facilitator's /settle gave so far."""
        from .node import _NO_PROXY_OPENER

        with _NO_PROXY_OPENER.open(self.facilitator_url + "/settlements", timeout=10) as r:
            return json.loads(r.read())

    def receipts_config(self, confirmations: int, **network: Any) -> dict:
        """Settings for `receipts` reading this chain (its token's decimals, the RPC, the facilitator);
        `network` adds per-network settings such as rpc_timeout or deadline_grace."""
        return {"assets": [{"network": self.network, "address": self.token, "symbol": "tUSDC", "decimals": 6}],
                "networks": {self.network: {"rpc": self.rpc_url, "confirmations": confirmations,
                                            "facilitators": [self.facilitator.address], **network}}}

    def describe(self) -> dict:
        return {
            "chain_id": self.chain_id, "network": self.network, "rpc_url": self.rpc_url, "token": self.token,
            "price": str(self.price), "facilitator_url": self.facilitator_url, "server_url": self.server_url,
            "chat_url": self.chat_url,
            "accounts": {a.role: {"address": a.address, "private_key": a.private_key}
                         for a in (self.payer, self.payee, self.facilitator)},
        }


@contextlib.contextmanager
def paid_stack(
    chain_id: int = 8453,
    *,
    price: int = 10_000,
    payer_funds: int = chain.DEFAULT_PAYER_FUNDS,
    block_time: float | None = None,
    tls: dict | None = None,
    timeout: float = 30.0,
) -> Iterator[PaidStack]:
    """Start anvil (``chain_id``), deploy and fund test USDC, then the facilitator and the server.

    ``tls={"cert":…, "key":…}`` serves the resource server over HTTPS (URL host ``localhost``).
    Everything is stopped when the block exits, also on errors.
    """
    from .facilitator import start_facilitator
    from .server import start_server

    with contextlib.ExitStack() as stack:
        anvil = stack.enter_context(start_anvil(chain_id, block_time=block_time))
        # the Python services boot (imports: ~1-2 s) while the token is deployed and funded
        fac = stack.enter_context(start_facilitator(anvil.url, anvil.network, timeout=timeout, wait=False))
        token = chain.deploy_token(anvil.url)
        srv = stack.enter_context(start_server(
            facilitator_url=fac.url, network=anvil.network, asset=token, pay_to=PAYEE.address,
            price=price, tls=tls, timeout=timeout, wait=False))
        chain.fund(anvil.url, token, PAYER, payer_funds)
        fac.wait_ready(timeout)
        srv.wait_ready(timeout)
        yield PaidStack(anvil=anvil, token=token, facilitator_url=fac.url, server_url=srv.url, price=price,
                        services=[fac, srv])


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m testbed.stack", description="run the paid test stack")
    ap.add_argument("--chain-id", type=int, default=8453)
    ap.add_argument("--price", type=int, default=10_000)
    args = ap.parse_args(argv)
    with paid_stack(args.chain_id, price=args.price) as s:
        print(json.dumps(s.describe(), indent=2), flush=True)
        signal.signal(signal.SIGTERM, _interrupt)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
