"""The test USDC token on anvil, and who is who among anvil's funded dev accounts.

Accounts come from anvil's default dev mnemonic (``test test … junk``, path m/44'/60'/0'/0/i).
Their keys are public knowledge: fine for a local chain, worthless anywhere else.

=========== ===== ==============================================
role        index use
=========== ===== ==============================================
deployer    0     deploys the token
payer       1     holds test USDC, signs EIP-3009 authorizations
payee       2     the server's ``payTo``
facilitator 3     sends the settlement transactions (pays gas)
=========== ===== ==============================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .contracts.build import load_artifact

TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
"""keccak256("Transfer(address,address,uint256)")"""
AUTHORIZATION_USED_TOPIC = "0x98de503528ee59b575ef0c0a2576a82497bfc029a5685b209e9ec333479b10a5"
"""keccak256("AuthorizationUsed(address,bytes32)")"""

DEFAULT_PAYER_FUNDS = 1_000 * 10**6
"""What :func:`fund` mints to the payer: 1,000 test USDC (6 decimals)."""


@dataclass(frozen=True)
class DevAccount:
    role: str
    index: int
    address: str
    private_key: str

    def __str__(self) -> str:
        return self.address


# Derived from the default mnemonic; tests check them against anvil's eth_accounts.
DEPLOYER = DevAccount("deployer", 0, "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
                      "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
PAYER = DevAccount("payer", 1, "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
                   "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
PAYEE = DevAccount("payee", 2, "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
                   "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a")
FACILITATOR = DevAccount("facilitator", 3, "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
                         "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6")
ACCOUNTS = {a.role: a for a in (DEPLOYER, PAYER, PAYEE, FACILITATOR)}


def make_web3(url: str):
    """``Web3`` over HTTP to ``url`` that ignores proxy environment variables (the node is local)."""
    import requests
    from web3 import Web3

    session = requests.Session()
    session.trust_env = False
    return Web3(Web3.HTTPProvider(url, session=session, request_kwargs={"timeout": 30}))


def _w3(w3_or_url: Any):
    return make_web3(w3_or_url) if isinstance(w3_or_url, str) else w3_or_url


def token_abi() -> list[dict]:
    return load_artifact()["abi"]


def token_contract(w3_or_url: Any, address: str):
    w3 = _w3(w3_or_url)
    return w3.eth.contract(address=w3.to_checksum_address(address), abi=token_abi())


def _send(w3, tx: dict, sender: DevAccount, timeout: float) -> dict:
    tx = dict(tx)
    tx.setdefault("from", sender.address)
    tx.setdefault("nonce", w3.eth.get_transaction_count(sender.address, "pending"))
    tx.setdefault("chainId", w3.eth.chain_id)
    if "gas" not in tx:
        tx["gas"] = int(w3.eth.estimate_gas(tx) * 1.2) + 10_000
    signed = w3.eth.account.sign_transaction(tx, sender.private_key)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout, poll_latency=0.05)
    if receipt["status"] != 1:
        raise RuntimeError(f"transaction {tx_hash.hex()} reverted")
    return receipt


def deploy_token(w3_or_url: Any, deployer: DevAccount = DEPLOYER, *, timeout: float = 30.0) -> str:
    """Deploy TestUSDC from the committed artifact; returns its checksummed address.

    Waits for the receipt, so automine (anvil's default) or a block time must be on.
    """
    w3 = _w3(w3_or_url)
    art = load_artifact()
    factory = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    tx = factory.constructor().build_transaction({"from": deployer.address, "gas": 3_000_000})
    receipt = _send(w3, tx, deployer, timeout)
    return w3.to_checksum_address(receipt["contractAddress"])


def deploy_wallet(w3_or_url: Any, owner: str, deployer: DevAccount = DEPLOYER, *, timeout: float = 30.0) -> str:
    """Deploy a TestWallet (a smart-contract wallet: ERC-1271 signatures `abi.encode(0, ecdsa)` by `owner`)."""
    w3 = _w3(w3_or_url)
    art = load_artifact("TestWallet")
    factory = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    tx = factory.constructor(w3.to_checksum_address(owner)).build_transaction({"from": deployer.address, "gas": 1_000_000})
    return w3.to_checksum_address(_send(w3, tx, deployer, timeout)["contractAddress"])


def mint(w3_or_url: Any, token: str, to: str, amount: int, *, sender: DevAccount = DEPLOYER,
         timeout: float = 30.0) -> dict:
    """Mint ``amount`` atomic units to ``to`` (anyone may mint the test token); returns the receipt."""
    w3 = _w3(w3_or_url)
    c = token_contract(w3, token)
    tx = c.functions.mint(w3.to_checksum_address(to), int(amount)).build_transaction(
        {"from": sender.address, "gas": 120_000})
    return _send(w3, tx, sender, timeout)


def fund(w3_or_url: Any, token: str, payer: DevAccount = PAYER, amount: int = DEFAULT_PAYER_FUNDS) -> None:
    """Give the payer test USDC (dev accounts already hold 10,000 ETH for gas)."""
    mint(w3_or_url, token, payer.address, amount)


def balance_of(w3_or_url: Any, token: str, address: str) -> int:
    w3 = _w3(w3_or_url)
    return int(token_contract(w3, token).functions.balanceOf(w3.to_checksum_address(address)).call())


class OnAnvil:
    """Where a test bed stack's parts are, for a dataclass with ``anvil``, ``token``, ``server_url`` and
    ``payee`` (the stacks of testbed/stack.py, channels.py, auth_capture.py)."""

    anvil: Any
    token: str
    server_url: str
    payee: DevAccount

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
        return self.server_url + "/v1/chat/completions"

    @property
    def pay_to(self) -> str:
        return self.payee.address

    def w3(self):
        return make_web3(self.anvil.url)

    def balance(self, address: str | DevAccount) -> int:
        """Test USDC balance (atomic units)."""
        return balance_of(self.anvil.url, self.token, str(address))


def authorization_state(w3_or_url: Any, token: str, authorizer: str, nonce: str | bytes) -> bool:
    w3 = _w3(w3_or_url)
    n = bytes.fromhex(nonce.removeprefix("0x")) if isinstance(nonce, str) else nonce
    return bool(token_contract(w3, token).functions.authorizationState(
        w3.to_checksum_address(authorizer), n).call())


def topic_address(address: str) -> str:
    """An address as an indexed-event topic (32 bytes, lower-case hex)."""
    return "0x" + "0" * 24 + address.lower().removeprefix("0x")
