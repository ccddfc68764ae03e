"""The x402 SDK's Solana (SVM) exact payments on the local SVM (testbed/solana_node.py): a world with a
mint, a funded payer, a payee and a facilitator's fee payer, and the SDK's client and facilitator over it."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from x402 import x402ClientSync, x402FacilitatorSync
from x402.mechanisms.svm.constants import SOLANA_DEVNET_CAIP2
from x402.mechanisms.svm.exact.register import register_exact_svm_client, register_exact_svm_facilitator
from x402.mechanisms.svm.signers import FacilitatorKeypairSigner, KeypairSigner
from x402.schemas import PaymentPayload, PaymentRequired, PaymentRequirements

from testbed.solana_node import TOKEN_PROGRAM, SolanaNode, ata_address

NETWORK = SOLANA_DEVNET_CAIP2  # the SDK knows only the public clusters' ids; the RPC URL points here
AMOUNT = 250_000  # 0.25 test USDC
FUNDS = 10 * 10**6
MEMO = "order-42"



@dataclass
class World:
    node: SolanaNode
    mint: Pubkey
    fee_payer: Keypair  # the facilitator's key
    payer: Keypair      # the client's key, holds the tokens
    payee: Pubkey
    token_program: Pubkey
    payee_key: Keypair | None = None  # (to send a refund back)

    @property
    def payee_ata(self) -> Pubkey:
        return ata_address(self.payee, self.mint, self.token_program)

    @property
    def payer_ata(self) -> Pubkey:
        return ata_address(self.payer.pubkey(), self.mint, self.token_program)



def make_world(node: SolanaNode, token_program: Pubkey = TOKEN_PROGRAM) -> World:
    """A 6-decimal mint (SPL Token or Token-2022), a funded payer, the payee's ATA, a fee payer with SOL."""
    fee_payer, payer, payee_key, authority = Keypair(), Keypair(), Keypair(), Keypair()
    payee = payee_key.pubkey()
    node.airdrop(fee_payer.pubkey(), 10**9)
    mint = node.create_mint(authority.pubkey(), token_program=token_program)
    node.mint_to(mint, authority, payer.pubkey(), FUNDS)
    node.create_ata(payee, mint)
    return World(node, mint, fee_payer, payer, payee, token_program, payee_key)


def requirements(w: World, amount: int = AMOUNT) -> PaymentRequirements:
    return PaymentRequirements(scheme="exact", network=NETWORK, asset=str(w.mint), amount=str(amount),
                               pay_to=str(w.payee), max_timeout_seconds=60,
                               extra={"feePayer": str(w.fee_payer.pubkey()), "memo": MEMO})


def sign_payment(w: World, req: PaymentRequirements) -> PaymentPayload:
    """The SDK's client: reads the mint and a blockhash from the node, signs its part of the transaction."""
    client = register_exact_svm_client(x402ClientSync(), KeypairSigner(w.payer), networks=NETWORK, rpc_url=w.node.url)
    # Our mint is not one of the SDK's default assets: opt in, as an app would for any other token.
    client.set_spend_controls({"allowed_assets": [
        {"network": NETWORK, "asset": str(w.mint), "max_amount_per_payment": str(100 * 10**6)}]})
    return client.create_payment_payload(PaymentRequired(accepts=[req]))


def facilitator(w: World) -> x402FacilitatorSync:
    signer = FacilitatorKeypairSigner(w.fee_payer, rpc_url=w.node.url)
    return register_exact_svm_facilitator(x402FacilitatorSync(), signer, networks=[NETWORK])


def co_signed(w: World, payment: PaymentPayload) -> str:
    """The payment with the fee payer's signature added, base64, as the facilitator would send it."""
    signer = FacilitatorKeypairSigner(w.fee_payer, rpc_url=w.node.url)
    return signer.sign_transaction(payment.payload["transaction"], str(w.fee_payer.pubkey()), NETWORK)


def settle(w: World) -> str:
    req = requirements(w)
    result = facilitator(w).settle(sign_payment(w, req), req)
    assert result.success, result
    return result.transaction


# ---- fixtures (a test module imports the ones it uses) ----------------------------------------------
@pytest.fixture
def no_proxy(monkeypatch):
    """solana-py's HTTP client honours proxy variables; the node is local."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def node(no_proxy):
    with SolanaNode() as n:
        yield n


@pytest.fixture
def world(node, request) -> World:
    """A 6-decimal mint (SPL Token, or Token-2022 when parametrized so), a funded payer, the payee's ATA."""
    return make_world(node, getattr(request, "param", TOKEN_PROGRAM))
