"""The whole paid stack in one context manager: anvil, test USDC, facilitator, resource server.

    from testbed.stack import paid_stack

    with paid_stack() as s:
        call = s.pay(s.chat_url, {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        call.status, call.payment_response["transaction"]

``solana_stack()`` is the same on Solana: a local SVM node (:class:`testbed.solana_node.SolanaNode`), a
USDC-like SPL mint, the facilitator with the exact SVM scheme (fee payer) and the server asking for it:

    from testbed.stack import solana_stack

    with solana_stack() as s:
        call = s.pay(proxy=None)                 # the x402 httpx client with the exact SVM scheme
        call.payment_response["transaction"]     # the settlement's signature (base58)
        s.balance(s.payee)                       # the payee's token balance, atomic units

``channel_stack()`` (from :mod:`testbed.channels`, re-exported here) is x402's payment channels: the
``batch-settlement`` scheme of the SDK's client, server and facilitator on the test bed's channel contracts:

    from testbed.stack import channel_stack

    with channel_stack() as s:
        s.pay(charge=7_000)          # deposit + first voucher; later calls are vouchers only
        s.claim_and_settle()         # the server's channel manager, now
        s.refund()                   # the client's cooperative refund request

``paid_stack(siwx=True)`` adds the SDK's sign-in-with-x to the server's route: a wallet that paid once signs
in on later calls instead of paying again:

    with paid_stack(siwx=True) as s:
        s.pay(siwx=True)                 # 402, SIWX retry refused (not paid yet), then paid: 3 exchanges
        s.pay(siwx=True)                 # 402, SIWX retry served: no PAYMENT-SIGNATURE, no money moves
        s.sign_in(signer=forged_siwx_signer(s.payer.address, other_key)).status   # 402: refused
        s.siwx_events()                  # the server's SIWX hook events

``python -m testbed.stack`` starts it, prints where everything is (as JSON), and runs until Ctrl-C
(``--solana`` for the Solana stack, ``--channels`` for the payment-channel stack).
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Iterator

from . import chain
from .chain import FACILITATOR, PAYEE, PAYER, DevAccount
from .service import serve_until_stopped
from .channels import ChannelStack, channel_stack  # noqa: F401  (re-exported)
from .node import Anvil, start_anvil
from .server import CHAT_PATH


@dataclass
class PaidStack(chain.OnAnvil):
    anvil: Anvil
    token: str
    facilitator_url: str
    server_url: str
    price: int
    payer: DevAccount = PAYER
    payee: DevAccount = PAYEE
    facilitator: DevAccount = FACILITATOR
    services: list = field(default_factory=list, repr=False)
    siwx: bool = False

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

    def sign_in(self, url: str | None = None, body: Any = None, proxy: str | None | bool = None, **kwargs: Any):
        """Sign in with x as the payer, never pay (defaults as :meth:`pay`); see :func:`testbed.client.sign_in`
        for ``signer``, ``verify``, ``headers``…"""
        from .client import sign_in

        if body is None:
            body = {"model": "testbed-echo-1", "messages": [{"role": "user", "content": "hello"}]}
        kwargs.setdefault("private_key", self.payer.private_key)
        return sign_in(url or self.chat_url, body, proxy=proxy, **kwargs)

    def siwx_events(self) -> dict:
        """The server's sign-in-with-x log (``paid_stack(siwx=True)`` only): ``{"origin", "events"}``."""
        from .node import _NO_PROXY_OPENER
        from .server import SIWX_PATH

        with _NO_PROXY_OPENER.open(self.server_url + SIWX_PATH, timeout=10) as r:
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
    siwx: bool = False,
) -> Iterator[PaidStack]:
    """Start anvil (``chain_id``), deploy and fund test USDC, then the facilitator and the server.

    ``tls={"cert":…, "key":…}`` serves the resource server over HTTPS (URL host ``localhost``).
    ``siwx=True``: the server declares the SDK's sign-in-with-x (see :func:`testbed.server.create_app`).
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
            price=price, tls=tls, timeout=timeout, wait=False, siwx=siwx))
        chain.fund(anvil.url, token, PAYER, payer_funds)
        fac.wait_ready(timeout)
        srv.wait_ready(timeout)
        yield PaidStack(anvil=anvil, token=token, facilitator_url=fac.url, server_url=srv.url, price=price,
                        services=[fac, srv], siwx=siwx)


@dataclass
class SolanaStack:
    """The Solana paid stack (see :func:`solana_stack`). Keys are ``solders`` objects: ``str()`` gives base58."""

    node: Any                # testbed.solana_node.SolanaNode, serving JSON-RPC on 127.0.0.1
    mint: Any                # Pubkey of the 6-decimal test mint (SPL Token program)
    mint_authority: Any      # Keypair that may mint more
    payer: Any               # Keypair: the client's wallet, owner of the funded token account
    payee: Any               # Pubkey: the server's payTo (its token account exists)
    fee_payer: Any           # Keypair: the facilitator's fee payer, funded with SOL
    network: str
    facilitator_url: str
    server_url: str
    price: int
    memo: str | None = None
    services: list = field(default_factory=list, repr=False)

    @property
    def rpc_url(self) -> str:
        return self.node.url

    @property
    def chat_url(self) -> str:
        return self.server_url + CHAT_PATH

    @property
    def pay_to(self) -> str:
        return str(self.payee)

    @property
    def asset(self) -> str:
        return str(self.mint)

    def balance(self, owner: Any) -> int:
        """``owner``'s balance of the test mint (atomic units); ``owner`` a Pubkey, Keypair or base58 string."""
        from solders.pubkey import Pubkey

        if hasattr(owner, "pubkey"):
            owner = owner.pubkey()
        elif isinstance(owner, str):
            owner = Pubkey.from_string(owner)
        return self.node.token_balance(owner, self.mint)

    def token_account(self, owner: Any):
        """``owner``'s associated token account for the test mint."""
        from .solana_node import ata_address

        return ata_address(owner.pubkey() if hasattr(owner, "pubkey") else owner, self.mint)

    def x402_client(self, payer: Any = None, *, max_amount: int | None = None):
        """An async ``x402.x402Client`` paying as ``payer`` (default the stack's) with the exact SVM scheme,
        reading the node for the mint and blockhash; it may spend up to ``max_amount`` (default 100 x price)
        of the test mint per payment (x402 pays only its known assets unless told)."""
        from x402 import x402Client
        from x402.mechanisms.svm.exact import register_exact_svm_client
        from x402.mechanisms.svm.signers import KeypairSigner

        client = x402Client()
        register_exact_svm_client(client, KeypairSigner(payer or self.payer), networks=self.network,
                                  rpc_url=self.node.url)
        client.set_spend_controls({"allowed_assets": [
            {"network": self.network, "asset": str(self.mint),
             "max_amount_per_payment": str(max_amount if max_amount is not None else self.price * 100)}]})
        return client

    def pay(self, url: str | None = None, body: Any = None, proxy: str | None | bool = None, *,
            payer: Any = None, **kwargs: Any):
        """A paid call as ``payer`` (default the stack's payer) with the x402 httpx client; see
        :func:`testbed.client.pay` for ``proxy``, ``verify``, ``headers``… ``call.payment_response
        ["transaction"]`` is the settlement's base58 signature."""
        from .client import pay

        if body is None:
            body = {"model": "testbed-echo-1", "messages": [{"role": "user", "content": "hello"}]}
        kwargs.setdefault("x402_client", self.x402_client(payer))
        return pay(url or self.chat_url, body, proxy=proxy, **kwargs)

    def settlements(self) -> list[dict]:
        """Every answer the facilitator's /settle gave so far."""
        from .node import _NO_PROXY_OPENER

        with _NO_PROXY_OPENER.open(self.facilitator_url + "/settlements", timeout=10) as r:
            return json.loads(r.read())

    def describe(self) -> dict:
        return {
            "network": self.network, "rpc_url": self.rpc_url, "mint": str(self.mint), "price": str(self.price),
            "facilitator_url": self.facilitator_url, "server_url": self.server_url, "chat_url": self.chat_url,
            "accounts": {
                "payer": {"pubkey": str(self.payer.pubkey()), "keypair": str(self.payer)},
                "payee": {"pubkey": str(self.payee)},
                "fee_payer": {"pubkey": str(self.fee_payer.pubkey()), "keypair": str(self.fee_payer)},
                "mint_authority": {"pubkey": str(self.mint_authority.pubkey()), "keypair": str(self.mint_authority)},
            },
        }


SOLANA_DEVNET = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"
"""The CAIP-2 id the Solana stack uses: x402 knows only the public clusters' ids, the RPC URL points to the local node."""


@contextlib.contextmanager
def solana_stack(
    *,
    price: int = 10_000,
    payer_funds: int = 10 * 10**6,
    fee_payer_lamports: int = 10**9,
    memo: str | None = None,
    network: str = SOLANA_DEVNET,
    node: Any = None,
    tls: dict | None = None,
    timeout: float = 30.0,
) -> Iterator[SolanaStack]:
    """Start a Solana node (in this process, on 127.0.0.1; or use ``node``, already started), a 6-decimal
    mint, fund the payer's token account with ``payer_funds``, create the payee's token account, give the
    fee payer ``fee_payer_lamports``, then the facilitator (exact SVM, that fee payer) and the server
    (``price`` atomic units per chat; ``memo`` the memo every payment must carry, default a random one).

    ``tls={"cert":…, "key":…}`` serves the resource server over HTTPS (URL host ``localhost``).
    Everything started here is stopped when the block exits, also on errors.
    """
    from solders.keypair import Keypair

    from .facilitator import start_facilitator
    from .server import start_server
    from .solana_node import SolanaNode

    with contextlib.ExitStack() as stack:
        if node is None:
            node = stack.enter_context(SolanaNode())
        fee_payer, payer, payee, authority = Keypair(), Keypair(), Keypair().pubkey(), Keypair()
        # the node is set up while the Python services boot (the facilitator reads it only per payment)
        fac = stack.enter_context(start_facilitator(None, network, svm_rpc_url=node.url, svm_fee_payer=str(fee_payer),
                                                    timeout=timeout, wait=False))
        node.airdrop(fee_payer.pubkey(), fee_payer_lamports)
        mint = node.create_mint(authority.pubkey(), decimals=6)
        srv = stack.enter_context(start_server(
            facilitator_url=fac.url, network=network, asset=str(mint), pay_to=str(payee), price=price,
            tls=tls, memo=memo, timeout=timeout, wait=False))
        node.mint_to(mint, authority, payer.pubkey(), payer_funds)
        node.create_ata(payee, mint)
        fac.wait_ready(timeout)
        srv.wait_ready(timeout)
        yield SolanaStack(node=node, mint=mint, mint_authority=authority, payer=payer, payee=payee,
                          fee_payer=fee_payer, network=network, facilitator_url=fac.url, server_url=srv.url,
                          price=price, memo=memo, services=[fac, srv])



def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m testbed.stack", description="run the paid test stack")
    ap.add_argument("--chain-id", type=int, default=8453)
    ap.add_argument("--price", type=int, default=10_000)
    ap.add_argument("--solana", action="store_true", help="the Solana stack (local SVM node) instead of anvil")
    ap.add_argument("--channels", action="store_true", help="the payment-channel (batch-settlement) stack")
    args = ap.parse_args(argv)
    if args.solana:
        started = solana_stack(price=args.price)
    elif args.channels:
        started = channel_stack(args.chain_id, price=args.price)
    else:
        started = paid_stack(args.chain_id, price=args.price)
    with started as s:
        print(json.dumps(s.describe(), indent=2), flush=True)
        serve_until_stopped()
    return 0


if __name__ == "__main__":
    sys.exit(main())
