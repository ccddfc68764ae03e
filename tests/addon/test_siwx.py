"""x402's sign-in-with-x at capture: the message each account type signs, and whose signature it is. The
messages are checked against the x402 SDK's own (its SIWE text comes from the `siwe` library), and the
signatures are made with eth_account (EIP-191 personal_sign) and solders (ed25519)."""
import base64
import json

from eth_account import Account
from eth_account.messages import encode_defunct
from solders.keypair import Keypair
from x402.extensions.sign_in_with_x.evm import format_siwe_message
from x402.extensions.sign_in_with_x.solana import format_siws_message

from receipts.addon import exchange as X
from receipts.addon import siwx
from receipts.storage import config as cfg

ACCOUNT = Account.from_key("0x" + "5" * 64)
INFO = {"domain": "api.example", "uri": "https://api.example/v1/chat/completions", "version": "1",
        "nonce": "n0nce12345678", "issuedAt": "2026-12-06T05:00:00.000Z"}
FULL = {**INFO, "statement": "Sign in to reuse your purchase", "expirationTime": "2026-12-06T06:00:00.000Z",
        "resources": ["https://api.example/v1/chat/completions"]}


def evm_payload(info=INFO, key=ACCOUNT, address=None) -> dict:
    fields = {**info, "chainId": "eip155:8453", "type": "eip191", "address": address or ACCOUNT.address}
    signed = key.sign_message(encode_defunct(text=format_siwe_message(fields, fields["address"])))
    return {**fields, "signature": "0x" + signed.signature.hex()}


def header(payload: dict) -> str:
    return base64.b64encode(json.dumps(payload).encode()).decode()


def test_the_messages_are_the_sdks():
    for info in (INFO, FULL):
        evm = {**info, "chainId": "eip155:8453", "address": ACCOUNT.address}
        assert siwx.siwe_message(evm) == format_siwe_message(evm, ACCOUNT.address)
        sol = {**info, "chainId": "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1", "address": "x"}
        assert siwx.siws_message(sol) == format_siws_message(sol, "x")


def test_an_evm_sign_in_verifies_for_its_address_and_a_forged_one_does_not():
    good = siwx.decode(header(evm_payload()))
    assert (good["signer"], good["signer_error"], good["address"]) == (ACCOUNT.address, None, ACCOUNT.address)
    assert "signature" not in good and good["signature_sha256"]
    forged = siwx.decode(header(evm_payload(key=Account.from_key("0x" + "6" * 64), address=ACCOUNT.address)))
    assert forged["signer"] is None and "not " + ACCOUNT.address in forged["signer_error"]
    altered = evm_payload()
    altered["nonce"] = "another-nonce"  # (the signature covered the old one)
    assert siwx.decode(header(altered))["signer"] is None


def test_a_solana_sign_in_verifies_with_ed25519():
    key = Keypair()
    fields = {**INFO, "chainId": "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1", "type": "ed25519", "address": str(key.pubkey())}
    signature = key.sign_message(siwx.siws_message(fields).encode())
    good = siwx.decode(header({**fields, "signature": str(signature)}))
    assert good["signer"] == str(key.pubkey())
    bad = siwx.decode(header({**fields, "signature": str(Keypair().sign_message(b"other"))}))
    assert bad["signer"] is None and bad["signer_error"] == "the ed25519 signature does not verify"


def test_the_header_is_recorded_as_a_paid_call_and_kept_only_as_a_hash():
    value = header(evm_payload())
    h = [("SIGN-IN-WITH-X", value), ("content-type", "application/json")]
    assert X.request_match({"sign-in-with-x"}, "api.example", "/anything", cfg.load()) == "x402"
    assert X.is_paid(X.Headers.of(h))
    req = X.Req("POST", "https", "api.example", 443, "/v1/chat/completions", h, b"{}", 1000.0)
    data = X.request_data(req, cfg.load(), logical_id="l", match="x402", source="test")
    assert data["siwx"]["signer"] == ACCOUNT.address
    text = json.dumps(data)
    assert value not in text and evm_payload()["signature"] not in text
    assert siwx.decode("not base64 json")["errors"]
