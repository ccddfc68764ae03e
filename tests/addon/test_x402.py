"""Tests for addon.x402: base64 JSON headers, challenges, payments, settlements."""

from __future__ import annotations

import base64
import hashlib

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receipts.addon import x402 as addon_x402  # (the module: its inner functions; `x402` is the SDK)
from receipts.addon.x402 import (
    caip2,
    decode_b64_json,
    is_tx_hash,
    looks_like_v1_challenge,
    parse_challenge,
    parse_payment,
    parse_settlement,
)

USDC_BASE = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
OPG_BASE = "0xFbC2051AE2265686a469421b2C5A2D5462FbF5eB"
OG_PAY_TO = "0x9deEBB5D1b22e4a6e027977CeAd13893A7E4cC1a"
PAYER = "0x857b06519E91e3A54538791bDbb0E22373e36b66"
EXACT_PERMIT2_SPENDER = "0x402085c248EeA27D92E8b30b2C58ed07f9E20001"
UPTO_PERMIT2_SPENDER = "0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002"
FACILITATOR = "0x1F3b0E2C7b4aFf1F7b3a5E0f7b5A8C9d0E1f2A3B"
SIGNATURE = "0x" + "ab" * 65
NONCE32 = "0x" + "5C" * 32
TX_HASH = "0x" + "9F" * 32
SIGNED_TX = "0x02f8b1" + "cd" * 100
URL = "https://llm.opengradient.ai/v1/chat/completions"

SETTINGS = settings(max_examples=150, deadline=None)


def b64(obj: object) -> str:
    return base64.b64encode(orjson.dumps(obj)).decode("ascii")


# ---------------------------------------------------------------- examples

def v1_challenge() -> dict:
    return {
        "x402Version": 1,
        "error": "X-PAYMENT header is required",
        "accepts": [{
            "scheme": "exact",
            "network": "base",
            "maxAmountRequired": "10000",
            "resource": URL,
            "description": "one chat completion",
            "mimeType": "application/json",
            "payTo": OG_PAY_TO,
            "maxTimeoutSeconds": 60,
            "asset": USDC_BASE,
            "extra": {"name": "USD Coin", "version": "2"},
        }],
    }


def v2_upto_entry() -> dict:
    return {
        "scheme": "upto",
        "network": "eip155:8453",
        "asset": OPG_BASE,
        "amount": "100000000000000000",
        "payTo": OG_PAY_TO,
        "maxTimeoutSeconds": 300,
        "extra": {"name": "OpenGradient", "version": "1"},
    }


def v2_challenge() -> dict:
    return {
        "x402Version": 2,
        "error": "Payment required",
        "resource": {"url": URL, "description": "LLM inference", "mimeType": "application/json"},
        "accepts": [v2_upto_entry()],
    }


def eip3009_payload() -> dict:
    return {
        "signature": SIGNATURE,
        "authorization": {
            "from": PAYER, "to": OG_PAY_TO, "value": "10000",
            "validAfter": "1740000000", "validBefore": 1740000600, "nonce": NONCE32,
        },
    }


def permit2_payload(spender: str, facilitator: str | None) -> dict:
    witness = {"to": OG_PAY_TO, "validAfter": "1740000000"}
    if facilitator is not None:
        witness["facilitator"] = facilitator
    return {
        "signature": SIGNATURE,
        "permit2Authorization": {
            "from": PAYER,
            "permitted": {"token": OPG_BASE, "amount": "100000000000000000"},
            "spender": spender,
            "nonce": "87263498172634981726349817263498172634981",
            "deadline": 1740000900,
            "witness": witness,
        },
    }


# ---------------------------------------------------------------- base64

def test_decode_standard_base64() -> None:
    obj = {"x402Version": 2, "accepts": []}
    assert decode_b64_json(b64(obj)) == (obj, None)
    assert decode_b64_json(b64(obj).encode()) == (obj, None)


def test_decode_url_safe_unpadded_and_whitespace() -> None:
    obj = {"k": "\u00ff\u00fe\u00fd???>>>", "n": [1, 2, 3]}
    raw = orjson.dumps(obj)
    url_safe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert "=" not in url_safe and ("-" in url_safe or "_" in url_safe)
    assert decode_b64_json("  " + url_safe + "\r\n") == (obj, None)


def test_decode_errors() -> None:
    for bad in ["", "   ", "!!!!", "abcde", "a", "ü123"]:
        obj, err = decode_b64_json(bad)
        assert obj is None and isinstance(err, str) and err
    obj, err = decode_b64_json(base64.b64encode(b"{not json"))
    assert obj is None and "JSON" in err
    obj, err = decode_b64_json(base64.b64encode(b'"\xff\xfe"'))
    assert obj is None and "UTF-8" in err
    obj, err = decode_b64_json(123)  # type: ignore[arg-type]
    assert obj is None and err


def test_decode_rejects_oversized() -> None:
    big = b64({"x": "a" * (70 * 1024)})
    obj, err = decode_b64_json(big)
    assert obj is None and "64 KiB" in err


# ---------------------------------------------------------------- primitives

def test_is_tx_hash() -> None:
    assert is_tx_hash(TX_HASH)
    assert is_tx_hash(TX_HASH.lower())
    assert not is_tx_hash(TX_HASH[:-1])
    assert not is_tx_hash(TX_HASH + "0")
    assert not is_tx_hash(TX_HASH + "\n")
    assert not is_tx_hash("payment-8d3c2f8e-1b7a-4c1e-9a55-0f3e2b1c4d5e")
    assert not is_tx_hash("0x" + "g" * 64)
    assert not is_tx_hash(None)
    assert not is_tx_hash(TX_HASH.encode())


def test_caip2() -> None:
    assert caip2("base") == "eip155:8453"
    assert caip2("base-sepolia") == "eip155:84532"
    assert caip2("ethereum") == "eip155:1"
    assert caip2("sepolia") == "eip155:11155111"
    assert caip2("polygon") == "eip155:137"
    assert caip2("polygon-amoy") == "eip155:80002"
    assert caip2("avalanche") == "eip155:43114"
    assert caip2("avalanche-fuji") == "eip155:43113"
    assert caip2("eip155:8453") == "eip155:8453"
    assert caip2("og-evm") == "og-evm"
    assert caip2(8453) is None
    assert caip2(None) is None


def test_every_v1_network_name_of_the_sdk_maps_to_caip2() -> None:
    """The x402 SDK's own v1 tables (EVM names to chain ids, Solana names to CAIP-2), one by one."""
    from x402.mechanisms.evm.v1.constants import V1_NETWORK_CHAIN_IDS, V1_NETWORKS
    from x402.mechanisms.svm.constants import V1_TO_V2_NETWORK_MAP

    assert len(set(V1_NETWORKS) | set(V1_NETWORK_CHAIN_IDS)) >= 23
    for name in set(V1_NETWORKS) | set(V1_NETWORK_CHAIN_IDS):
        assert caip2(name) == f"eip155:{V1_NETWORK_CHAIN_IDS[name]}", name
        assert caip2(name.upper()) == caip2(name)
    for name, network in V1_TO_V2_NETWORK_MAP.items():
        assert caip2(name) == network


def test_permit2_nonce_in_hex_as_the_upto_spec_writes_it() -> None:
    payload = permit2_payload(UPTO_PERMIT2_SPENDER, FACILITATOR)
    payload["permit2Authorization"]["nonce"] = "0x" + format(87263498172634981726349817263498172634981, "x")
    result = parse_payment({"x402Version": 2, "accepted": v2_upto_entry(), "payload": payload})
    assert result["errors"] == []
    assert result["nonce"] == "87263498172634981726349817263498172634981"
    payload["permit2Authorization"]["nonce"] = "0xzz"
    result = parse_payment({"x402Version": 2, "accepted": v2_upto_entry(), "payload": payload})
    assert result["nonce"] is None and result["errors"]


# ---------------------------------------------------------------- challenge

def test_parse_v1_challenge() -> None:
    body = v1_challenge()
    assert looks_like_v1_challenge(body)
    result = parse_challenge(body)
    assert result["x402_version"] == 1
    assert result["error"] == "X-PAYMENT header is required"
    assert result["errors"] == []
    [entry] = result["accepts"]
    assert entry == {
        "scheme": "exact", "network": "eip155:8453", "network_raw": "base",
        "amount": "10000", "asset": USDC_BASE, "pay_to": OG_PAY_TO,
        "max_timeout_seconds": 60, "resource": URL, "description": "one chat completion",
        "mime_type": "application/json", "extra": {"name": "USD Coin", "version": "2"},
    }


def test_parse_v2_challenge_from_header() -> None:
    obj, err = decode_b64_json(b64(v2_challenge()))
    assert err is None
    result = parse_challenge(obj)
    assert result["x402_version"] == 2
    assert result["resource"] == URL
    assert result["errors"] == []
    [entry] = result["accepts"]
    assert entry["scheme"] == "upto"
    assert entry["network"] == entry["network_raw"] == "eip155:8453"
    assert entry["amount"] == "100000000000000000"
    assert entry["asset"] == OPG_BASE  # kept as given, not re-checksummed
    assert entry["pay_to"] == OG_PAY_TO
    assert entry["max_timeout_seconds"] == 300
    assert entry["resource"] == URL
    assert entry["description"] == "LLM inference"
    assert entry["extra"] == {"name": "OpenGradient", "version": "1"}


def test_parse_challenge_bad_inputs() -> None:
    for bad in [None, [], "x", 3]:
        result = parse_challenge(bad)
        assert result["accepts"] == [] and result["errors"]
    result = parse_challenge({"x402Version": 2, "accepts": [7, {"amount": "-5", "network": 1}]})
    assert len(result["accepts"]) == 1
    assert result["accepts"][0]["amount"] is None
    assert result["accepts"][0]["network"] is None
    assert len(result["errors"]) >= 3
    assert not looks_like_v1_challenge({"accepts": []})
    assert not looks_like_v1_challenge({"x402Version": 1, "accepts": {}})
    assert not looks_like_v1_challenge([])


def test_challenge_amount_as_int() -> None:
    body = v1_challenge()
    body["accepts"][0]["maxAmountRequired"] = 10000
    assert parse_challenge(body)["accepts"][0]["amount"] == "10000"
    body["accepts"][0]["maxAmountRequired"] = 1.5
    result = parse_challenge(body)
    assert result["accepts"][0]["amount"] is None and result["errors"]


# ---------------------------------------------------------------- payment

PAYMENT_KEYS = {
    "x402_version", "scheme", "network", "kind", "payer", "pay_to", "asset", "amount",
    "nonce", "valid_after", "valid_before", "deadline", "spender", "facilitator", "accepted",
    "resource", "payment_identifier", "signature_sha256", "signed_tx_sha256", "extensions",
    "errors",
}


def assert_no_secrets(result: dict) -> None:
    text = orjson.dumps(result).decode()
    assert SIGNATURE not in text
    assert SIGNED_TX not in text
    assert set(result) == PAYMENT_KEYS


def test_parse_v1_exact_eip3009() -> None:
    payment = {"x402Version": 1, "scheme": "exact", "network": "base-sepolia",
               "payload": eip3009_payload()}
    obj, err = decode_b64_json(b64(payment))
    assert err is None
    result = parse_payment(obj)
    assert result["errors"] == []
    assert result["x402_version"] == 1
    assert result["scheme"] == "exact"
    assert result["network"] == "eip155:84532"
    assert result["kind"] == "eip3009"
    assert result["payer"] == PAYER
    assert result["pay_to"] == OG_PAY_TO
    assert result["amount"] == "10000"
    assert result["asset"] is None  # v1: the caller fills it from the challenge
    assert result["nonce"] == NONCE32.lower()
    assert result["valid_after"] == 1740000000
    assert result["valid_before"] == 1740000600
    assert result["deadline"] is None and result["spender"] is None
    assert result["accepted"] is None
    assert result["signature_sha256"] == hashlib.sha256(SIGNATURE.encode()).hexdigest()
    assert result["extensions"] == []
    assert_no_secrets(result)


def test_parse_v2_exact_eip3009() -> None:
    # the offer says 4000, the client signed 10000 (an overcharging client): what is recorded as paid is what
    # was signed — amount, payer, payee, nonce, validity from the authorization; the offer is kept apart
    entry = v2_upto_entry() | {"scheme": "exact", "asset": USDC_BASE, "amount": "4000", "payTo": "0x" + "77" * 20}
    payment = {"x402Version": 2, "payload": eip3009_payload(), "accepted": entry,
               "resource": {"url": URL}}
    result = parse_payment(payment)
    assert result["errors"] == []
    assert result["kind"] == "eip3009"
    assert result["scheme"] == "exact"
    assert result["network"] == "eip155:8453"
    assert result["asset"] == USDC_BASE
    assert result["resource"] == URL
    assert result["amount"] == "10000"
    assert (result["payer"], result["pay_to"], result["nonce"]) == (PAYER, OG_PAY_TO, NONCE32.lower())
    assert (result["valid_after"], result["valid_before"]) == (1740000000, 1740000600)
    assert (result["accepted"]["amount"], result["accepted"]["pay_to"]) == ("4000", "0x" + "77" * 20)
    assert_no_secrets(result)


def test_parse_v2_exact_permit2() -> None:
    entry = v2_upto_entry() | {"scheme": "exact"}
    payment = {"x402Version": 2, "accepted": entry,
               "payload": permit2_payload(EXACT_PERMIT2_SPENDER, None)}
    result = parse_payment(payment)
    assert result["errors"] == []
    assert result["kind"] == "permit2"
    assert result["scheme"] == "exact"
    assert result["spender"] == EXACT_PERMIT2_SPENDER
    assert result["facilitator"] is None
    assert result["pay_to"] == OG_PAY_TO
    assert result["asset"] == OPG_BASE
    assert_no_secrets(result)


def test_parse_v2_upto_permit2_with_extensions() -> None:
    payment = {
        "x402Version": 2,
        "accepted": v2_upto_entry(),
        "resource": URL,
        "payload": permit2_payload(UPTO_PERMIT2_SPENDER, FACILITATOR),
        "extensions": {
            "payment-identifier": {"info": {"id": "pay_0123456789abcdef0123"}},
            "erc20ApprovalGasSponsoring": {"info": {"signedTransaction": SIGNED_TX}},
        },
    }
    obj, err = decode_b64_json(base64.urlsafe_b64encode(orjson.dumps(payment)).rstrip(b"="))
    assert err is None
    result = parse_payment(obj)
    assert result["errors"] == []
    assert result["x402_version"] == 2
    assert result["scheme"] == "upto"
    assert result["network"] == "eip155:8453"
    assert result["kind"] == "permit2"
    assert result["payer"] == PAYER
    assert result["pay_to"] == OG_PAY_TO
    assert result["asset"] == OPG_BASE
    assert result["amount"] == "100000000000000000"
    assert result["nonce"] == "87263498172634981726349817263498172634981"
    assert result["deadline"] == 1740000900
    assert result["valid_after"] == 1740000000
    assert result["valid_before"] is None
    assert result["spender"] == UPTO_PERMIT2_SPENDER
    assert result["facilitator"] == FACILITATOR
    assert result["resource"] == URL
    assert result["accepted"]["scheme"] == "upto"
    assert result["payment_identifier"] == "pay_0123456789abcdef0123"
    assert result["signed_tx_sha256"] == hashlib.sha256(SIGNED_TX.encode()).hexdigest()
    assert result["extensions"] == ["payment-identifier", "erc20ApprovalGasSponsoring"]
    assert_no_secrets(result)


def test_payment_identifier_forms() -> None:
    base = {"x402Version": 2, "accepted": v2_upto_entry(),
            "payload": permit2_payload(UPTO_PERMIT2_SPENDER, FACILITATOR)}
    forms = [
        "key-0123456789abcdef",
        {"id": "key-0123456789abcdef"},
        {"paymentId": "key-0123456789abcdef"},
        {"value": "key-0123456789abcdef"},
        {"info": "key-0123456789abcdef"},
        {"info": {"paymentId": "key-0123456789abcdef"}},
    ]
    for form in forms:
        result = parse_payment(base | {"extensions": {"payment-identifier": form}})
        assert result["payment_identifier"] == "key-0123456789abcdef", form
    result = parse_payment(base | {"extensions": {"payment-identifier": {"info": 5}}})
    assert result["payment_identifier"] is None and result["errors"]


def test_parse_payment_invalid_numbers() -> None:
    payload = eip3009_payload()
    payload["authorization"].update(value="12.5", validBefore="soon", nonce="0x1234")
    result = parse_payment({"x402Version": 1, "scheme": "exact", "network": "base",
                            "payload": payload})
    assert result["amount"] is None
    assert result["valid_before"] is None
    assert result["nonce"] is None
    assert len(result["errors"]) == 3
    assert result["payer"] == PAYER


def test_parse_payment_bad_inputs() -> None:
    for bad in [None, "x", [], {}, {"x402Version": 2, "payload": "sig"},
                {"x402Version": 1, "payload": {"signature": SIGNATURE}}]:
        result = parse_payment(bad)
        assert result["kind"] == "unknown"
        assert result["errors"]
        assert_no_secrets(result)


# ---------------------------------------------------------------- settlement

def test_settlement_with_tx_hash() -> None:
    header = b64({"success": True, "transaction": TX_HASH, "network": "base",
                  "payer": PAYER, "amount": "4200"})
    obj, err = decode_b64_json(header)
    assert err is None
    result = parse_settlement(obj)
    assert result == {
        "success": True, "tx_hash": TX_HASH.lower(), "job_id": None,
        "network": "eip155:8453", "payer": PAYER, "amount": "4200",
        "error_reason": None, "error_message": None, "extensions": None, "seller_receipt": None, "errors": [],
    }


def test_settlement_with_job_id() -> None:
    job = "payment-8d3c2f8e-1b7a-4c1e-9a55-0f3e2b1c4d5e"
    result = parse_settlement({"success": True, "transaction": job,
                               "network": "eip155:8453", "payer": PAYER})
    assert result["tx_hash"] is None
    assert result["job_id"] == job
    assert result["errors"] == []


def test_settlement_empty_transaction_failure() -> None:
    result = parse_settlement({"success": False, "transaction": "", "network": "eip155:84532",
                               "payer": PAYER, "errorReason": "insufficient_funds",
                               "errorMessage": "balance too low"})
    assert result["success"] is False
    assert result["tx_hash"] is None and result["job_id"] is None
    assert result["network"] == "eip155:84532"
    assert result["error_reason"] == "insufficient_funds"
    assert result["error_message"] == "balance too low"


def test_settlement_bad_inputs() -> None:
    assert parse_settlement(None)["errors"]
    result = parse_settlement({"success": "yes", "transaction": 5, "amount": -1})
    assert result["success"] is None and result["tx_hash"] is None
    assert result["amount"] is None
    assert len(result["errors"]) == 3


# ---------------------------------------------------------------- properties

X402_KEYS = ["x402Version", "accepts", "accepted", "payload", "authorization",
             "permit2Authorization", "permitted", "witness", "signature", "amount",
             "maxAmountRequired", "network", "scheme", "resource", "extensions",
             "payment-identifier", "info", "id", "nonce", "deadline", "validAfter",
             "validBefore", "value", "from", "to", "success", "transaction", "extra",
             "erc20ApprovalGasSponsoring", "signedTransaction", "maxTimeoutSeconds"]

json_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_keys = st.sampled_from(X402_KEYS) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(json_keys, children, max_size=6),
    max_leaves=40,
)


def no_internal_error(result: dict) -> dict:
    """The parsers catch every exception themselves (an "internal error: …" entry): none may be caught."""
    assert not [e for e in result["errors"] if "internal error" in e], result["errors"]
    return result


@SETTINGS
@given(st.text() | st.binary())
def test_decode_never_raises(value: str | bytes) -> None:
    # decode_b64_json turns any exception into "cannot decode: …": the inner function, which does not catch,
    # must not raise either, and must give the same answer
    obj, err = addon_x402._decode_b64_json(value)
    assert (obj, err) == decode_b64_json(value)
    assert err is None or (obj is None and isinstance(err, str) and err)


@SETTINGS
@given(json_values)
def test_decode_roundtrip(obj: object) -> None:
    assert decode_b64_json(b64(obj)) == (obj, None)


@SETTINGS
@given(json_values | st.text() | st.binary())
def test_parsers_never_raise(obj: object) -> None:
    # the public parsers catch every exception (_never_raising): the inner ones, which do not, must not raise
    for parse, inner in ((parse_challenge, addon_x402._parse_challenge), (parse_payment, addon_x402._parse_payment),
                         (parse_settlement, addon_x402._parse_settlement)):
        result = no_internal_error(inner(obj))
        assert isinstance(result, dict) and isinstance(result["errors"], list)
        assert parse(obj) == result
        orjson.dumps(result)
    assert isinstance(looks_like_v1_challenge(obj), bool)
    assert isinstance(is_tx_hash(obj), bool)
    assert caip2(obj) is None or isinstance(caip2(obj), str)


@SETTINGS
@given(st.dictionaries(st.sampled_from(X402_KEYS), json_values, max_size=8),
       st.dictionaries(st.sampled_from(X402_KEYS), json_values, max_size=8))
def test_payment_like_inputs_never_raise(outer: dict, payload: dict) -> None:
    outer = outer | {"payload": payload | {"signature": SIGNATURE}}
    result = no_internal_error(parse_payment(outer))
    assert result["signature_sha256"] == hashlib.sha256(SIGNATURE.encode()).hexdigest()
    assert SIGNATURE not in orjson.dumps(result).decode()


# ---------------------------------------------------------------- Solana (SVM) exact

def test_parse_svm_exact_payment_and_its_settlement() -> None:
    """What the partly signed transaction says (addon/solana.py), with the payee from the offer; the
    transaction itself only as a hash; the settlement's base58 signature is the payment hash, case kept."""
    from test_solana import GOLDEN, GOLDEN_FIELDS, GOLDEN_PAY_TO

    entry = {"scheme": "exact", "network": "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1", "amount": "10000",
             "asset": GOLDEN_FIELDS["mint"], "payTo": GOLDEN_PAY_TO, "maxTimeoutSeconds": 60,
             "extra": {"feePayer": GOLDEN_FIELDS["fee_payer"]}}
    result = parse_payment({"x402Version": 2, "accepted": entry, "payload": {"transaction": GOLDEN}})
    assert result["errors"] == []
    assert result["kind"] == "svm" and result["scheme"] == "exact"
    assert (result["payer"], result["pay_to"], result["asset"], result["amount"], result["decimals"]) == (
        GOLDEN_FIELDS["payer"], GOLDEN_PAY_TO, GOLDEN_FIELDS["mint"], "10000", 6)
    assert result["facilitator"] == GOLDEN_FIELDS["fee_payer"]
    assert result["token_account"] == GOLDEN_FIELDS["destination"] and result["memo"] == "x402 golden"
    assert result["payee_token_account"] == GOLDEN_FIELDS["destination"]  # (payTo's associated token account)
    assert result["payer_signature_valid"] is True
    assert result["signature_sha256"] == hashlib.sha256(GOLDEN.encode()).hexdigest()
    assert GOLDEN not in orjson.dumps(result).decode()
    v1 = parse_payment({"x402Version": 1, "scheme": "exact", "network": "solana-devnet",
                        "payload": {"transaction": GOLDEN}})
    assert v1["network"] == entry["network"] and v1["payer"] == GOLDEN_FIELDS["payer"] and v1["pay_to"] is None

    signature = "5" + "j" * 86  # base58 of 64 bytes
    settled = parse_settlement({"success": True, "transaction": signature, "network": entry["network"]})
    assert settled["tx_hash"] == signature and settled["job_id"] is None
    assert parse_settlement({"success": True, "transaction": "payment-123"})["job_id"] == "payment-123"


# ---------------------------------------------------------------- the offer-receipt extension

def _signed(kind: str, payload: dict, account) -> dict:
    """A seller's EIP-712 offer or receipt, signed with eth_account (the spec's types, §4.3 and §5.3)."""
    from eth_account.messages import encode_typed_data

    fields = {"offer": [("resourceUrl", "string"), ("scheme", "string"), ("network", "string"), ("asset", "string"),
                        ("payTo", "address"), ("amount", "string"), ("maxTimeoutSeconds", "uint256"),
                        ("issuedAt", "uint256")],
              "receipt": [("network", "string"), ("resourceUrl", "string"), ("payer", "string"),
                          ("issuedAt", "uint256"), ("transaction", "string")]}[kind]
    primary = kind.capitalize()
    typed = {"types": {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                                        {"name": "chainId", "type": "uint256"}],
                       primary: [{"name": n, "type": t} for n, t in fields]},
             "primaryType": primary, "domain": {"name": f"x402 {kind}", "version": "1", "chainId": 8453},
             "message": payload}
    signature = account.sign_message(encode_typed_data(full_message=typed)).signature.hex()
    return {"format": "eip712", "payload": payload, "signature": "0x" + signature.removeprefix("0x")}


def test_the_sellers_signed_offer_and_receipt_are_kept_with_their_signer() -> None:
    from eth_account import Account

    seller = Account.create()
    offer = _signed("offer", {"resourceUrl": URL, "scheme": "exact", "network": "eip155:8453", "asset": OPG_BASE,
                              "payTo": seller.address, "amount": "10000", "maxTimeoutSeconds": 60,
                              "issuedAt": 1703123456}, seller)
    challenge = parse_challenge({"x402Version": 2, "accepts": [v2_upto_entry()], "extensions": {
        "offer-receipt": {"info": {"version": 1, "offers": [offer]}}, "bazaar": {"info": {"input": {}}}}})
    assert challenge["errors"] == [] and set(challenge["extensions"]) == {"offer-receipt", "bazaar"}
    assert challenge["offers"][0]["signer"] == seller.address.lower() and challenge["offers"][0]["payload"] == offer["payload"]

    receipt = _signed("receipt", {"network": "eip155:8453", "resourceUrl": URL, "payer": PAYER, "issuedAt": 1703123457,
                                  "transaction": TX_HASH}, seller)
    settled = parse_settlement({"success": True, "transaction": TX_HASH, "network": "eip155:8453", "payer": PAYER,
                                "extensions": {"offer-receipt": {"info": {"version": 1, "receipt": receipt}}}})
    assert settled["errors"] == [] and settled["seller_receipt"]["signer"] == seller.address.lower()
    assert settled["seller_receipt"]["payload"]["transaction"] == TX_HASH
    forged = {**receipt, "payload": {**receipt["payload"], "payer": "0x" + "9" * 40}}  # another payer, same signature
    other = parse_settlement({"success": True, "transaction": TX_HASH,
                              "extensions": {"offer-receipt": {"info": {"receipt": forged}}}})
    assert other["seller_receipt"]["signer"] not in (None, seller.address.lower())
    jws = parse_settlement({"success": True, "extensions": {"offer-receipt": {"info": {"receipt": {
        "format": "jws", "signature": "e30.e30.c2ln"}}}}})
    assert jws["seller_receipt"]["signer"] is None and "kid" in jws["seller_receipt"]["signer_error"]


# ---------------------------------------------------------------- contract wallets' signatures

def test_a_contract_wallets_signature_is_named_not_recovered() -> None:
    from eth_abi import encode

    from receipts.addon import eip712

    ecdsa = bytes(range(65))
    erc1271 = "0x" + encode(["uint256", "bytes"], [0, ecdsa]).hex()
    factory = "0x" + "ab" * 20
    erc6492 = "0x" + (encode(["address", "bytes", "bytes"], [factory, b"\x01\x02", ecdsa]) + eip712.ERC6492_SUFFIX).hex()
    assert eip712.smart_wallet("0x" + ecdsa.hex()) is None and eip712.smart_wallet(None) is None
    assert eip712.smart_wallet(erc1271).startswith("smart_wallet (ERC-1271, a 192-byte signature)")
    assert eip712.smart_wallet(erc6492).startswith(f"smart_wallet (ERC-6492, deployed by factory {factory})")
    payment = {"x402Version": 2, "payload": {"signature": erc6492, "authorization": {"from": PAYER}}}
    assert eip712.signer(payment, "eip155:8453", OPG_BASE, {"name": "USD Coin", "version": "2"}) == (
        None, eip712.smart_wallet(erc6492))


def test_an_erc7710_delegation_payment() -> None:
    """{delegationManager, permissionContext, delegator} (x402 exact EVM §3): the delegator pays the offer's
    amount to its payTo; the permission context (the signed delegation chain) only as a hash."""
    manager, context = "0x" + "dd" * 20, "0x" + "ab" * 200
    entry = v2_upto_entry() | {"scheme": "exact", "amount": "10000", "payTo": OG_PAY_TO}
    result = parse_payment({"x402Version": 2, "accepted": entry,
                            "payload": {"delegationManager": manager, "permissionContext": context, "delegator": PAYER}})
    assert result["errors"] == []
    assert (result["kind"], result["payer"], result["pay_to"], result["amount"], result["spender"]) == (
        "erc7710", PAYER, OG_PAY_TO, "10000", manager)
    assert result["signature_sha256"] == hashlib.sha256(context.encode()).hexdigest()
    assert context not in orjson.dumps(result).decode()


def test_a_failed_solana_settlement_keeps_its_signature_and_reason() -> None:
    signature = "5" + "j" * 86
    for reason in ("invalid_transaction_state", "duplicate_settlement"):
        failed = parse_settlement({"success": False, "errorReason": reason, "transaction": signature,
                                   "network": "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1", "payer": ""})
        assert (failed["success"], failed["tx_hash"], failed["error_reason"]) == (False, signature, reason)


@pytest.mark.parametrize("ext", [{"offer-receipt": []}, {"offer-receipt": {"info": [1]}}, {"offer-receipt": {"info": {
    "receipt": "a string", "offers": {"not": "a list"}}}}, {"offer-receipt": {"info": {"receipt": {"format": "eip712"}}}}])
def test_malformed_offer_receipt_extensions_are_notes_not_internal_errors(ext) -> None:
    settled = parse_settlement({"success": True, "extensions": ext})
    challenge = parse_challenge({"x402Version": 2, "accepts": [], "extensions": ext})
    for result in (settled, challenge):
        assert not any("internal error" in e for e in result["errors"]), result["errors"]
    assert settled["extensions"] == ext and challenge["offers"] == []
    if settled["seller_receipt"] is not None:
        assert settled["seller_receipt"]["signer"] is None and settled["seller_receipt"]["signer_error"]
