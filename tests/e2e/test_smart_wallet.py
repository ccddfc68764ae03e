"""A smart-contract wallet pays (ERC-1271, as Coinbase Smart Wallet and CDP sign: a signature longer than
65 bytes): the real x402 client with a wallet signer → `receipts proxy` → the real x402 server, whose real
facilitator settles on anvil through the token's bytes-signature `transferWithAuthorization`, which asks
the wallet's `isValidSignature`. The recorder cannot recover such a signer (and never keeps the signature);
`receipts verify` passes the signature once the settlement that the token accepted it for has passed.
The wallet is our own TestWallet (testbed/contracts/TestWallet.sol), deployed on anvil."""
import json

import pytest
from eth_abi import encode
from eth_account import Account

from support.proc import ProxyProcess, receipts_cli
from testbed import chain
from testbed.client import pay
from testbed.stack import paid_stack

OWNER = Account.create()


def wallet_client(wallet: str):
    """The x402 client, signing for the wallet: the owner's ECDSA signature wrapped as the wallet wants it."""
    from x402 import x402Client
    from x402.mechanisms.evm.exact import register_exact_evm_client
    from x402.mechanisms.evm.signers import EthAccountSigner

    class WalletSigner(EthAccountSigner):
        @property
        def address(self) -> str:
            return wallet

        def sign_typed_data(self, *args, **kwargs) -> bytes:
            return encode(["uint256", "bytes"], [0, super().sign_typed_data(*args, **kwargs)])

    client = x402Client()
    client.set_spend_controls({"allowed_assets": True})
    register_exact_evm_client(client, WalletSigner(OWNER))
    return client


@pytest.fixture(scope="module")
def stack():
    with paid_stack(chain_id=8453) as s:
        yield s


def test_a_smart_wallet_payment_is_verified_by_its_settlement(tmp_path, stack):
    wallet = chain.deploy_wallet(stack.rpc_url, OWNER.address)
    chain.mint(stack.rpc_url, stack.token, wallet, 10**6)
    config = tmp_path / "receipts.yaml"
    config.write_text(json.dumps(stack.receipts_config(1)))
    with ProxyProcess(tmp_path / "data", "--config", str(config), "--seal-interval", "0.1") as proxy:
        call = pay(stack.chat_url, {"model": "m", "messages": [{"role": "user", "content": "from a wallet"}]},
                   proxy=proxy.url, verify=proxy.ca, x402_client=wallet_client(wallet))
        assert call.status == 200, (call.status, call.text)
        tx = call.payment_response["transaction"]
        assert chain.balance_of(stack.rpc_url, stack.token, wallet) == 10**6 - stack.price

        def receipt():
            out = receipts_cli("show", "--json", tx, data=proxy.data)
            return json.loads(out.stdout)["receipt"] if out.returncode == 0 else None

        from support.proc import wait_for
        r = wait_for(receipt, timeout=20)
        assert r["payer"].lower() == wallet.lower() and r["signer"] is None
        assert r["signer_error"].startswith("smart_wallet (ERC-1271, a ")
        out = receipts_cli("verify", "--once", "--config", str(config), data=proxy.data, timeout=120)
        assert out.returncode == 0, out.stderr
        r = receipt()
        assert (r["proof_status"], r["reason"]) == ("passed", None), r
        checks = json.loads(receipts_cli("sql", "--json", "SELECT detail FROM checks WHERE \"check\" = 'signature' "
                                         "AND result = 'pass'", data=proxy.data).stdout)
        assert json.loads(checks[-1]["detail"])["by"] == "settlement"
