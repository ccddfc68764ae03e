"""Payment channels (x402 `batch-settlement`) at capture: the payloads and answers made by the real `x402`
SDK's own types and its own channel-id function, signed with eth_account; decoded by addon/x402.py."""
from __future__ import annotations

from eth_account import Account
from x402.mechanisms.evm.batch_settlement.types import (ChannelConfig, ChannelStateExtra, PaymentResponseExtra,
                                                        VoucherFields)
from x402.mechanisms.evm.batch_settlement.utils import compute_channel_id

from receipts.addon import eip712, x402
from receipts.storage import channels

PAYER = Account.from_key("0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
NETWORK = "eip155:8453"
CONFIG = ChannelConfig(payer=PAYER.address, payer_authorizer=PAYER.address,
                       receiver="0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
                       receiver_authorizer="0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc",
                       token="0x5FbDB2315678afecb367f032d93F642f64180aa3", withdraw_delay=900, salt="0x" + "00" * 32)
CHANNEL = compute_channel_id(CONFIG, NETWORK)


def voucher(amount: int, key=PAYER, channel: str = CHANNEL) -> dict:
    signed = key.unsafe_sign_hash(channels.voucher_digest(8453, channel, amount))
    return VoucherFields(channel_id=channel, max_claimable_amount=str(amount),
                         signature="0x" + signed.signature.hex()).to_dict()


def payment(kind: str, amount: int, **more) -> dict:
    payload = {"type": kind, "channelConfig": CONFIG.to_dict(), "voucher": voucher(amount), **more}
    return {"x402Version": 2, "payload": payload,
            "accepted": {"scheme": "batch-settlement", "network": NETWORK, "asset": CONFIG.token, "amount": "10000",
                         "payTo": CONFIG.receiver, "maxTimeoutSeconds": 300, "extra": {"name": "USD Coin", "version": "2"}}}


def test_the_channel_id_is_the_sdks():
    assert channels.channel_id(8453, CONFIG.to_dict()) == CHANNEL
    assert channels.channel_id(84532, CONFIG.to_dict()) != CHANNEL  # (bound to the chain)


def test_a_deposit_names_the_channel_its_voucher_and_what_it_puts_in_never_a_price():
    obj = payment("deposit", 10_000, deposit={"amount": "100000", "authorization": {"erc3009Authorization": {
        "validAfter": "0", "validBefore": "1796535149", "salt": "0x" + "11" * 32, "signature": "0x" + "ab" * 65}}})
    p = x402.parse_payment(obj)
    assert p["kind"] == "channel_deposit" and p["errors"] == []
    assert (p["payer"], p["pay_to"], p["asset"]) == (CONFIG.payer, CONFIG.receiver, CONFIG.token)
    assert (p["channel_id"], p["voucher_amount"], p["deposit_amount"]) == (CHANNEL, "10000", "100000")
    assert p["amount"] is None  # (what the call costs is in its answer)
    assert "ab" * 65 not in repr(p)  # the deposit's authorization signature is a secret: not kept
    assert eip712.signer(obj, NETWORK, CONFIG.token, {}) == (PAYER.address.lower(), None)


def test_a_voucher_signed_by_another_key_recovers_to_it():
    other = Account.from_key("0x" + "42" * 32)
    obj = payment("voucher", 20_000)
    obj["payload"]["voucher"] = voucher(20_000, key=other)
    assert eip712.signer(obj, NETWORK, CONFIG.token, {}) == (other.address.lower(), None)


def test_a_voucher_for_another_channel_than_its_configuration_is_noted():
    obj = payment("voucher", 20_000)
    obj["payload"]["voucher"] = voucher(20_000, channel="0x" + "12" * 32)
    assert "voucher.channelId is not the hash of channelConfig" in x402.parse_payment(obj)["errors"]


def test_a_refund_is_its_own_kind():
    obj = payment("refund", 7_000)
    obj["payload"]["amount"] = "500"
    p = x402.parse_payment(obj)
    assert (p["kind"], p["voucher_amount"], p["refund_amount"]) == ("channel_refund", "7000", "500")


def test_the_answer_s_charge_is_the_call_s_amount_and_the_deposit_stays_the_channel_s():
    state = ChannelStateExtra(channel_id=CHANNEL, balance="100000", total_claimed="0", charged_cumulative_amount="7000")
    deposit = {"success": True, "payer": CONFIG.payer, "transaction": "0x" + "ab" * 32, "network": NETWORK,
               "amount": "100000", "extra": PaymentResponseExtra(charged_amount="7000", channel_state=state).to_dict()}
    s = x402.parse_settlement(deposit)
    assert (s["amount"], s["tx_hash"], s["channel_tx"], s["channel_amount"]) == ("7000", None, "0x" + "ab" * 32, "100000")
    assert (s["channel_id"], s["charged_cumulative"], s["channel_balance"]) == (CHANNEL, "7000", "100000")
    voucher_answer = {**deposit, "transaction": "", "amount": "", "extra": PaymentResponseExtra(
        charged_amount="2500", channel_state=state).to_dict()}
    s = x402.parse_settlement(voucher_answer)
    assert (s["amount"], s["tx_hash"], s["channel_tx"], s["errors"]) == ("2500", None, None, [])


def test_an_ordinary_answer_is_unchanged():
    s = x402.parse_settlement({"success": True, "transaction": "0x" + "cd" * 32, "network": NETWORK, "amount": "10"})
    assert (s["tx_hash"], s["amount"]) == ("0x" + "cd" * 32, "10") and "channel_tx" not in s
