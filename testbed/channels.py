"""Payment channels on anvil: x402's ``batch-settlement`` EVM scheme with the real SDK client, server and facilitator.

    from testbed.channels import channel_stack      # also: from testbed.stack import channel_stack

    with channel_stack() as s:
        first = s.pay(charge=7_000)                  # 402, then a deposit (opens the channel) + voucher
        later = s.pay(charge=2_500)                  # 402, then a voucher only: no transaction
        s.claim_and_settle()                         # the server's channel manager: claimWithSignature + settle
        refund = s.refund()                          # the client's cooperative refund request (over HTTP)
        s.channel()                                  # on-chain {balance, totalClaimed, refundNonce, ...}

Only the contracts are ours: ``TestChannels`` (the channel contract), ``TestERC3009DepositCollector``,
``TestPermit2DepositCollector`` and ``TestMulticall3`` (testbed/contracts/, compiled by
:mod:`testbed.contracts.build`), put with ``anvil_setCode`` at the addresses the SDK has as constants
(:data:`BATCH_SETTLEMENT`, :data:`ERC3009_DEPOSIT_COLLECTOR`, :data:`PERMIT2_DEPOSIT_COLLECTOR`; Multicall3 at
its canonical address, which the SDK's facilitator reads through, and the test bed's own Permit2 at the
canonical Permit2 address). Their runtime code is what their creation code returns (an ``eth_call``): they
have no constructor, no immutables and no state to set up.

Who is who: the payer (dev account 1) opens the channel and signs vouchers; the payee (2) is the server's
``payTo`` and the channel's receiver; the facilitator (3) sends every transaction; the receiver authorizer
(dev account 5, :data:`AUTHORIZER`) signs claim batches and refunds, held by the resource server
(``authorizer="server"``, the default) or by the facilitator (``authorizer="facilitator"``, advertised in its
``/supported``).

Charges: the route's price is the most one call may cost (each voucher raises the cumulative amount the
payer signs by the price); the server charges what :meth:`ChannelStack.pay` asks in ``charge`` (the
``X-Testbed-Charge`` request header; default the price), and the client keeps the charged cumulative amount
from the answer's ``PAYMENT-RESPONSE``.

The server's channel manager never runs by itself (its timers are not started): :meth:`ChannelStack.claim`,
:meth:`~ChannelStack.settle`, :meth:`~ChannelStack.claim_and_settle` and :meth:`~ChannelStack.server_refund`
make it act now. :meth:`~ChannelStack.sign_voucher` and :meth:`~ChannelStack.claim_on_chain` act outside it
(e.g. a claim for more than was charged through a proxy).

``python -m testbed.channels`` starts the stack, prints where everything is (as JSON) and runs until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Iterator

from . import chain
from .chain import FACILITATOR, PAYEE, PAYER, DevAccount
from .service import serve_until_stopped
from .contracts.build import load_artifact
from .node import Anvil, rpc_call, start_anvil
from .server import CHANNELS_PATH, CHARGE_HEADER

BATCH_SETTLEMENT = "0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003"
"""The SDK's ``BATCH_SETTLEMENT_ADDRESS``: here ``TestChannels``."""
ERC3009_DEPOSIT_COLLECTOR = "0x4020806089470a89826cB9fB1f4059150b550004"
"""The SDK's ``ERC3009_DEPOSIT_COLLECTOR_ADDRESS``: here ``TestERC3009DepositCollector``."""
PERMIT2_DEPOSIT_COLLECTOR = "0x4020425FAf3B746C082C2f942b4E5159887B0005"
"""The SDK's ``PERMIT2_DEPOSIT_COLLECTOR_ADDRESS``: here ``TestPermit2DepositCollector``."""
MULTICALL3 = "0xcA11bde05977b3631167028862bE2a173976CA11"
"""Multicall3's canonical address (the SDK's facilitator batches reads through it): here ``TestMulticall3``."""
PERMIT2 = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
"""Permit2's canonical address: here the test bed's ``TestPermit2`` (testbed/contracts/og)."""

AUTHORIZER = DevAccount("authorizer", 5, "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc",
                        "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba")
"""The channels' receiverAuthorizer (dev account 5): signs claim batches and refunds."""

ZERO_SALT = "0x" + "00" * 32
"""The SDK client's default channel salt."""
WITHDRAW_DELAY = 900
"""The SDK's minimum (and the server's default) withdraw delay, seconds."""


def contracts() -> dict[str, str]:
    """address -> contract name, for everything :func:`install_contracts` places."""
    return {BATCH_SETTLEMENT: "TestChannels", ERC3009_DEPOSIT_COLLECTOR: "TestERC3009DepositCollector",
            PERMIT2_DEPOSIT_COLLECTOR: "TestPermit2DepositCollector", MULTICALL3: "TestMulticall3",
            PERMIT2: "TestPermit2"}


def runtime_code(url: str, name: str) -> str:
    """The runtime code of contract ``name``: TestPermit2's committed ``deployedBytecode``, for ours what
    their creation code returns (an ``eth_call`` without ``to``; they have no constructor arguments)."""
    if name == "TestPermit2":
        from .contracts.og.build import load_artifact as og_artifact

        return og_artifact("TestPermit2")["deployedBytecode"]
    return rpc_call(url, "eth_call", [{"data": load_artifact(name)["bytecode"], "gas": hex(30_000_000)}, "latest"])


def install_contracts(url: str) -> None:
    """Put the channel contracts, the deposit collectors, Multicall3 and Permit2 at their addresses."""
    for address, name in contracts().items():
        code = runtime_code(url, name)
        rpc_call(url, "anvil_setCode", [address, code])
        if rpc_call(url, "eth_getCode", [address, "latest"]).lower() != code.lower():
            raise RuntimeError(f"anvil_setCode did not put {name} at {address}")


def channel_abi() -> list[dict]:
    return load_artifact("TestChannels")["abi"]


def event_signatures() -> dict[str, str]:
    """Event name -> canonical signature (``Name(type,...)``) of the channel contract."""
    return {e["name"]: f"{e['name']}({','.join(i['type'] for i in e['inputs'])})"
            for e in channel_abi() if e["type"] == "event"}


def event_topics() -> dict[str, str]:
    """Event name -> topic0 (keccak256 of the signature, 0x hex)."""
    from eth_utils import keccak

    return {name: "0x" + keccak(text=sig).hex() for name, sig in event_signatures().items()}


def decode_events(w3: Any, receipt: Any) -> list[dict]:
    """The channel contract's events in a transaction receipt: ``[{event, args, logIndex}]`` in log order
    (addresses checksummed, bytes32 as 0x hex)."""
    contract = w3.eth.contract(address=BATCH_SETTLEMENT, abi=channel_abi())
    by_topic = {bytes.fromhex(t[2:]): name for name, t in event_topics().items()}
    out = []
    for log in receipt["logs"]:
        if log["address"].lower() != BATCH_SETTLEMENT.lower() or not log["topics"]:
            continue
        topic0 = log["topics"][0]
        topic = bytes.fromhex(topic0[2:]) if isinstance(topic0, str) else bytes(topic0)
        name = by_topic.get(topic)
        if name is None:
            continue
        decoded = getattr(contract.events, name)().process_log(log)
        args = {k: ("0x" + v.hex() if isinstance(v, (bytes, bytearray)) else v) for k, v in decoded["args"].items()}
        out.append({"event": name, "args": args, "logIndex": decoded["logIndex"]})
    return out


class ChannelAdminError(RuntimeError):
    """The resource server's channel manager failed (its message is the SDK's)."""


@dataclass
class ChannelStack(chain.OnAnvil):
    anvil: Anvil
    token: str
    facilitator_url: str
    server_url: str
    price: int
    withdraw_delay: int = WITHDRAW_DELAY
    authorizer_mode: str = "server"
    asset_transfer_method: str = "eip3009"
    payer: DevAccount = PAYER
    payee: DevAccount = PAYEE
    facilitator: DevAccount = FACILITATOR
    authorizer: DevAccount = AUTHORIZER
    services: list = field(default_factory=list, repr=False)
    _client: Any = field(default=None, repr=False)

    # ------------------------------------------------------------------ where things are

    def contract(self, w3: Any = None):
        """The channel contract (web3) at :data:`BATCH_SETTLEMENT`."""
        return (w3 or self.w3()).eth.contract(address=BATCH_SETTLEMENT, abi=channel_abi())

    # ------------------------------------------------------------------ the client

    def new_client(self, payer: DevAccount | None = None, *, salt: str | None = None, max_amount: int | None = None,
                   **options: Any):
        """``(x402Client, scheme)`` for ``payer`` (default the stack's) with the SDK's batch-settlement client;
        it may pay up to ``max_amount`` per call (default 100 x price; the SDK caps a deposit at 5 x that).
        ``options`` go to :func:`testbed.client.batch_settlement_client` (``deposit_multiplier``, ...)."""
        from .client import batch_settlement_client

        cap = max_amount if max_amount is not None else self.price * 100
        return batch_settlement_client((payer or self.payer).private_key, network=self.network, salt=salt,
                                       spend_controls={"allowed_assets": [
                                           {"network": self.network, "asset": self.token,
                                            "max_amount_per_payment": str(cap)}]}, **options)

    @property
    def client(self):
        """The stack's payer client, ``(x402Client, scheme)``, built once: it holds the channel's state."""
        if self._client is None:
            self._client = self.new_client()
        return self._client

    def pay(self, url: str | None = None, body: Any = None, proxy: str | None | bool = None, *,
            charge: int | None = None, headers: dict[str, str] | None = None, client: Any = None, **kwargs: Any):
        """A paid call through the channel (the first one deposits): :func:`testbed.client.pay` with the
        stack's batch-settlement client (or ``client``, an ``(x402Client, scheme)``). ``charge`` (atomic
        units, at most the price) is what the server charges for it; default the price."""
        from .client import pay

        if body is None:
            body = {"model": "testbed-echo-1", "messages": [{"role": "user", "content": "hello"}]}
        headers = dict(headers or {})
        if charge is not None:
            headers[CHARGE_HEADER] = str(int(charge))
        x402_client, _ = client or self.client
        return pay(url or self.chat_url, body, proxy=proxy, headers=headers or None, x402_client=x402_client,
                   **kwargs)

    def refund(self, url: str | None = None, body: Any = None, proxy: str | None | bool = None, *,
               amount: int | None = None, client: Any = None, **kwargs: Any):
        """The client's cooperative refund request (:func:`testbed.client.refund`) for the stack's channel (or
        ``client``'s): all that was not charged, or ``amount``. Returns a :class:`testbed.client.RefundCall`."""
        from .client import refund

        if body is None:
            body = {"model": "testbed-echo-1", "messages": [{"role": "user", "content": "refund"}]}
        _, scheme = client or self.client
        return refund(url or self.chat_url, scheme, body, amount=amount, proxy=proxy, **kwargs)

    # ------------------------------------------------------------------ channel identity

    def channel_config(self, payer: DevAccount | None = None, *, salt: str = ZERO_SALT):
        """The SDK ``ChannelConfig`` the client builds for ``payer`` against this server."""
        from x402.mechanisms.evm.batch_settlement.types import ChannelConfig

        payer = payer or self.payer
        return ChannelConfig(payer=payer.address, payer_authorizer=payer.address, receiver=self.payee.address,
                             receiver_authorizer=self.authorizer.address, token=self.token,
                             withdraw_delay=self.withdraw_delay, salt=salt)

    def channel_id(self, config: Any = None) -> str:
        """The channel id (0x hex, lower case) as the SDK computes it (default: the stack's channel)."""
        from x402.mechanisms.evm.batch_settlement.utils import compute_channel_id

        return compute_channel_id(config or self.channel_config(), self.network).lower()

    @staticmethod
    def config_tuple(config: Any) -> tuple:
        """A ``ChannelConfig`` as the contract's tuple."""
        from x402.mechanisms.evm.batch_settlement.facilitator.utils import to_contract_channel_config

        return to_contract_channel_config(config)

    # ------------------------------------------------------------------ on-chain state

    def channel(self, channel_id: str | None = None) -> dict:
        """The channel on chain: ``{channelId, balance, totalClaimed, refundNonce, pendingWithdrawal: {amount,
        initiatedAt}}`` (ints)."""
        cid = bytes.fromhex((channel_id or self.channel_id()).removeprefix("0x"))
        c = self.contract()
        balance, claimed = c.functions.channels(cid).call()
        wd_amount, wd_at = c.functions.pendingWithdrawals(cid).call()
        return {"channelId": "0x" + cid.hex(), "balance": balance, "totalClaimed": claimed,
                "refundNonce": c.functions.refundNonce(cid).call(),
                "pendingWithdrawal": {"amount": wd_amount, "initiatedAt": wd_at}}

    def receiver_account(self, receiver: str | DevAccount | None = None) -> dict:
        """``{totalClaimed, totalSettled}`` of ``receiver`` (default the payee) for the test token."""
        w3 = self.w3()
        claimed, settled = self.contract(w3).functions.receivers(
            w3.to_checksum_address(str(receiver or self.payee)), self.token).call()
        return {"totalClaimed": claimed, "totalSettled": settled}

    def events(self, tx_hash: str) -> list[dict]:
        """The channel contract's decoded events of a transaction (see :func:`decode_events`)."""
        w3 = self.w3()
        return decode_events(w3, w3.eth.get_transaction_receipt(tx_hash))

    # ------------------------------------------------------------------ the server's channel manager

    def _admin(self, path: str, body: Any = None) -> Any:
        from .service import _NO_PROXY_OPENER  # no proxy; HTTPS without verification (a local test server)

        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server_url + CHANNELS_PATH + path, data=data,
                                     method="GET" if body is None else "POST",
                                     headers={"content-type": "application/json"})
        try:
            with _NO_PROXY_OPENER.open(req, timeout=120) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise ChannelAdminError(json.loads(e.read() or b"{}").get("error") or str(e)) from None

    def server_channels(self) -> list[dict]:
        """The server's channel records (the SDK's ``Channel.to_dict()``: chargedCumulativeAmount,
        signedMaxClaimable, signature, balance, totalClaimed, ...)."""
        return self._admin("")["channels"]

    def claim(self) -> list[dict]:
        """The server claims every channel's charged vouchers now: ``[{vouchers, transaction}]``."""
        return self._admin("/claim", {})["claims"]

    def settle(self) -> str:
        """The server settles its claimed funds to the payee now; the transaction hash."""
        return self._admin("/settle", {})["transaction"]

    def claim_and_settle(self) -> dict:
        """Both: ``{claims: [{vouchers, transaction}], settle: {transaction} | None}``."""
        return self._admin("/claim-and-settle", {})

    def server_refund(self, channel_ids: list[str] | None = None) -> list[dict]:
        """The server refunds channels now (its channel manager: claim what was charged + refund the rest in
        one multicall): ``[{channel, transaction}]``."""
        return self._admin("/refund", {} if channel_ids is None else {"channelIds": channel_ids})["refunds"]

    # ------------------------------------------------------------------ outside the server

    def sign_voucher(self, max_claimable: int, *, channel_id: str | None = None,
                     private_key: str | None = None) -> dict:
        """A voucher ``{channelId, maxClaimableAmount, signature}`` signed now with the SDK's
        ``sign_voucher`` (default: by the payer, for the stack's channel)."""
        from eth_account import Account
        from x402.mechanisms.evm.batch_settlement.client import sign_voucher
        from x402.mechanisms.evm.signers import EthAccountSigner

        signer = EthAccountSigner(Account.from_key(private_key or self.payer.private_key))
        return sign_voucher(signer, channel_id or self.channel_id(), int(max_claimable), self.network).to_dict()

    def voucher_claim(self, voucher: dict, total_claimed: int | None = None, config: Any = None) -> tuple:
        """A ``VoucherClaim`` tuple for the contract from a voucher (``total_claimed`` default its maximum)."""
        total = int(voucher["maxClaimableAmount"]) if total_claimed is None else int(total_claimed)
        return ((self.config_tuple(config or self.channel_config()), int(voucher["maxClaimableAmount"])),
                bytes.fromhex(voucher["signature"].removeprefix("0x")), total)

    def claim_on_chain(self, claims: list[tuple], *, with_signature: bool = False,
                       sender: DevAccount | None = None) -> dict:
        """Send ``claim(claims)`` from the receiver authorizer, or with ``with_signature`` the facilitator's
        ``claimWithSignature(claims, <the authorizer's ClaimBatch signature>)``; returns the receipt. A
        revert raises (web3's ``ContractLogicError`` with the contract's reason, from the gas estimate)."""
        c = self.contract()
        if with_signature:
            from x402.mechanisms.evm.batch_settlement.authorizer_signer import LocalAuthorizerSigner, sign_claim_batch
            from x402.mechanisms.evm.batch_settlement.types import ChannelConfig, VoucherClaim

            entries = [VoucherClaim(channel=ChannelConfig(*cfg[:6], salt="0x" + bytes(cfg[6]).hex()),
                                    max_claimable_amount=str(mx), signature="0x" + bytes(sig).hex(),
                                    total_claimed=str(total))
                       for ((cfg, mx), sig, total) in claims]
            sig = sign_claim_batch(LocalAuthorizerSigner(self.authorizer.private_key), entries, self.network)
            fn = c.functions.claimWithSignature(claims, bytes.fromhex(sig.removeprefix("0x")))
            return self._send(fn, sender or self.facilitator)
        return self._send(c.functions.claim(claims), sender or self.authorizer)

    def settle_on_chain(self, receiver: str | DevAccount | None = None, *, sender: DevAccount | None = None) -> dict:
        """Send ``settle(receiver, token)`` (default the payee, from the facilitator); returns the receipt."""
        w3 = self.w3()
        fn = self.contract(w3).functions.settle(w3.to_checksum_address(str(receiver or self.payee)), self.token)
        return self._send(fn, sender or self.facilitator)

    def initiate_withdraw(self, amount: int, *, config: Any = None, sender: DevAccount | None = None) -> dict:
        """The payer asks for ``amount`` back (final after the withdraw delay); returns the receipt."""
        fn = self.contract().functions.initiateWithdraw(self.config_tuple(config or self.channel_config()), int(amount))
        return self._send(fn, sender or self.payer)

    def finalize_withdraw(self, *, config: Any = None, sender: DevAccount | None = None) -> dict:
        """Pay out the pending withdrawal (after ``anvil.increase_time(withdraw_delay)``); returns the receipt."""
        fn = self.contract().functions.finalizeWithdraw(self.config_tuple(config or self.channel_config()))
        return self._send(fn, sender or self.payer)

    def _send(self, fn: Any, sender: DevAccount, timeout: float = 30.0) -> dict:
        w3 = self.w3()
        tx = fn.build_transaction({"from": sender.address})  # estimates gas: a revert raises here
        return chain._send(w3, tx, sender, timeout)

    # ------------------------------------------------------------------ the facilitator's side

    def settlements(self) -> list[dict]:
        """Every answer the facilitator's /settle gave so far (deposits, claims, settles, refunds)."""
        return self._facilitator_get("/settlements")

    def facilitator_exchanges(self) -> list[dict]:
        """Every /verify and /settle the facilitator got so far: ``{endpoint, request, response, status}``."""
        return self._facilitator_get("/exchanges")

    def _facilitator_get(self, path: str) -> Any:
        from .node import _NO_PROXY_OPENER

        with _NO_PROXY_OPENER.open(self.facilitator_url + path, timeout=10) as r:
            return json.loads(r.read())

    def receipts_config(self, confirmations: int, **network: Any) -> dict:
        """Settings for `receipts` reading this chain (as :meth:`testbed.stack.PaidStack.receipts_config`)."""
        return {"assets": [{"network": self.network, "address": self.token, "symbol": "tUSDC", "decimals": 6}],
                "networks": {self.network: {"rpc": self.rpc_url, "confirmations": confirmations,
                                            "facilitators": [self.facilitator.address], **network}}}

    def describe(self) -> dict:
        return {
            "scheme": "batch-settlement", "chain_id": self.chain_id, "network": self.network,
            "rpc_url": self.rpc_url, "token": self.token, "price": str(self.price),
            "withdraw_delay": self.withdraw_delay, "receiver_authorizer_held_by": self.authorizer_mode,
            "asset_transfer_method": self.asset_transfer_method,
            "facilitator_url": self.facilitator_url, "server_url": self.server_url, "chat_url": self.chat_url,
            "channel_admin": self.server_url + CHANNELS_PATH, "charge_header": CHARGE_HEADER,
            "contracts": {name: address for address, name in contracts().items()},
            "channel_id": self.channel_id(),
            "accounts": {a.role: {"address": a.address, "private_key": a.private_key}
                         for a in (self.payer, self.payee, self.facilitator, self.authorizer)},
        }


@contextlib.contextmanager
def channel_stack(
    chain_id: int = 8453,
    *,
    price: int = 10_000,
    payer_funds: int = chain.DEFAULT_PAYER_FUNDS,
    withdraw_delay: int = WITHDRAW_DELAY,
    authorizer: str = "server",
    asset_transfer_method: str = "eip3009",
    block_time: float | None = None,
    tls: dict | None = None,
    timeout: float = 30.0,
) -> Iterator[ChannelStack]:
    """Start anvil (``chain_id``), place the channel contracts, deploy and fund test USDC, then the facilitator
    (exact + batch-settlement) and the server (batch-settlement, ``price`` atomic units at most per call).

    ``authorizer``: who holds the receiver-authorizer key, ``"server"`` or ``"facilitator"``.
    ``asset_transfer_method``: how deposits pull the token, ``"eip3009"`` (receiveWithAuthorization through the
    ERC-3009 collector) or ``"permit2"`` (the payer's Permit2 witness transfer through the Permit2 collector;
    the payer's Permit2 allowance is set up here). ``tls={"cert":…, "key":…}`` serves the resource server
    over HTTPS (URL host ``localhost``). Everything is stopped when the block exits, also on errors.
    """
    from .facilitator import start_facilitator
    from .server import BATCH_SETTLEMENT as SCHEME
    from .server import start_server

    if authorizer not in ("server", "facilitator"):
        raise ValueError("authorizer must be 'server' or 'facilitator'")
    if asset_transfer_method not in ("eip3009", "permit2"):
        raise ValueError("asset_transfer_method must be 'eip3009' or 'permit2'")
    with contextlib.ExitStack() as stack:
        anvil = stack.enter_context(start_anvil(chain_id, block_time=block_time))
        fac = stack.enter_context(start_facilitator(
            anvil.url, anvil.network, batch_settlement=True, timeout=timeout, wait=False,
            batch_authorizer_key=AUTHORIZER.private_key if authorizer == "facilitator" else None))
        install_contracts(anvil.url)
        token = chain.deploy_token(anvil.url)
        srv = stack.enter_context(start_server(
            facilitator_url=fac.url, network=anvil.network, asset=token, pay_to=PAYEE.address, price=price,
            tls=tls, scheme=SCHEME, withdraw_delay=withdraw_delay,
            asset_transfer_method=asset_transfer_method if asset_transfer_method != "eip3009" else None,
            receiver_authorizer_key=AUTHORIZER.private_key if authorizer == "server" else None,
            timeout=timeout, wait=False))
        chain.fund(anvil.url, token, PAYER, payer_funds)
        if asset_transfer_method == "permit2":
            w3 = chain.make_web3(anvil.url)
            approve = chain.token_contract(w3, token).functions.approve(PERMIT2, 2**256 - 1)
            chain._send(w3, approve.build_transaction({"from": PAYER.address, "gas": 100_000}), PAYER, timeout)
        fac.wait_ready(timeout)
        srv.wait_ready(timeout)
        yield ChannelStack(anvil=anvil, token=token, facilitator_url=fac.url, server_url=srv.url, price=price,
                           withdraw_delay=withdraw_delay, authorizer_mode=authorizer,
                           asset_transfer_method=asset_transfer_method, services=[fac, srv])



def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m testbed.channels", description="run the payment-channel test stack")
    ap.add_argument("--chain-id", type=int, default=8453)
    ap.add_argument("--price", type=int, default=10_000)
    ap.add_argument("--authorizer", choices=["server", "facilitator"], default="server")
    ap.add_argument("--asset-transfer-method", choices=["eip3009", "permit2"], default="eip3009")
    args = ap.parse_args(argv)
    with channel_stack(args.chain_id, price=args.price, authorizer=args.authorizer,
                       asset_transfer_method=args.asset_transfer_method) as s:
        print(json.dumps(s.describe(), indent=2), flush=True)
        serve_until_stopped()
    return 0


if __name__ == "__main__":
    sys.exit(main())
