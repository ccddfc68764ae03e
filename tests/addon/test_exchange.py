"""Pure translation of exchanges into event payloads, and the linking of attempts."""
import base64

import orjson

from receipts.addon import exchange as X
from receipts.addon.linker import Linker
from receipts.storage import config as cfg
from support import x402_wire as W

SETTINGS = cfg.load()
USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"


def req(headers=(), body=b"{}", path="/v1/chat/completions"):
    return X.Req("POST", "https", "api.example", 443, path, list(headers), body, 1000.0, client="10.0.0.1")


def resp(status=200, headers=(), body=b"{}"):
    return X.Resp(status, list(headers), body, 1000.5, 1000.6)


def test_opengradient_headers_and_tee_fields():
    body = orjson.dumps({"id": "chatcmpl-og", "model": "gpt-og", "tee_signature": "c2ln", "tee_id": "0x" + "1" * 64,
                         "tee_request_hash": "0x" + "2" * 64, "tee_output_hash": "0x" + "3" * 64, "tee_timestamp": 1700000000})
    r = resp(headers=[("X-Upto-Session", "sess-1"), ("X-Settlement-Tx-Hash", "0x" + "a" * 64),
                      ("X-Settlement-Walrus-Blob-ID", "blob-7"), ("x-processing-hash", "0xfeed"),
                      ("content-type", "application/json")], body=body)
    d = X.response_data(r, 1000.0, SETTINGS)
    assert d["og"] == {"settlement_tx_hash": "0x" + "a" * 64, "walrus_blob_id": "blob-7",
                       "processing_hash": "0xfeed", "upto_session": "sess-1"}
    assert d["tee"]["tee_id"] == "0x" + "1" * 64 and d["tee"]["tee_timestamp"] == 1700000000
    assert d["latency_ms"] == 600.0 and d["response_id"] == "chatcmpl-og"
    q = X.request_data(req([("X-Upto-Session", "sess-1"), ("X-SETTLEMENT-TYPE", "individual")]), SETTINGS,
                       logical_id="l", match="x402", source="test")
    assert (q["upto_session"], q["settlement_type"]) == ("sess-1", "individual")
    assert X.request_match({"x-upto-session"}, "api.example", "/anything", SETTINGS) == "x402"
    assert X.request_match(set(), "api.example", "/anything", SETTINGS) is None


def test_tee_headers_when_the_body_has_none():
    r = resp(headers=[("X-TEE-ID", "0xabc"), ("X-TEE-Timestamp", "17")])
    assert X.response_data(r, 1000.0, SETTINGS)["tee"] == {"tee_id": "0xabc", "tee_timestamp": 17}


def test_v1_payment_takes_its_asset_from_the_challenge_and_decimals_from_config():
    challenge = {"accepts": [{"scheme": "exact", "network": "eip155:8453", "asset": USDC, "pay_to": "0xpay"}]}
    accepted = {"scheme": "exact", "network": "base", "payTo": "0xpay", "maxAmountRequired": "5"}
    pay = W.payment_v1_eip3009(accepted, "0xpayer", 5, W.random_nonce_hex(), 0, 99, W.random_signature())
    q = X.request_data(req([("X-PAYMENT", W.b64json(pay))]), SETTINGS, logical_id="l", match="x402",
                       source="test", challenge=challenge)
    assert (q["payment"]["asset"], q["payment"]["decimals"], q["payment"]["symbol"]) == (USDC, 6, "USDC")
    assert q["payment"]["network"] == "eip155:8453" and q["payment"]["payer"] == "0xpayer"


def test_secrets_in_headers_and_query_become_hashes():
    q = X.request_data(req([("Authorization", "Bearer sk-1"), ("X-Goog-Api-Key", "g-2"), ("Idempotency-Key", "idem-3")],
                           path="/v1/chat/completions?key=AIza-4&model=x"), SETTINGS,
                       logical_id="l", match="path", source="test")
    text = orjson.dumps(q).decode()
    assert "sk-1" not in text and "g-2" not in text and "AIza-4" not in text
    assert q["headers"]["idempotency-key"] == "idem-3" and q["query"].endswith("&model=x")
    assert q["ids"]["idempotency_key"] == "idem-3"


FULL = cfg.load(overrides={"bodies": "full"})


def test_full_bodies_keep_no_secret_in_any_form():
    """Forms, JSON held in JSON strings, multipart parts, JSON that does not parse, X-Session-Tok: with
    `bodies: full` each secret becomes a tag, and what is not secret is kept."""
    cases = [
        ("application/x-www-form-urlencoded", b"model=m&api_key=form-key-1&prompt=kept", [b"form-key-1"]),
        ("application/json", orjson.dumps({"model": "m", "messages": [
            {"role": "user", "content": '{"token": "in-string-2", "note": "kept"}'}]}), [b"in-string-2"]),
        ("application/json", b'{"model": "m", "api_key": "cut-3", "note": "kept", "messages": [{"content": "hi',
         [b"cut-3"]),
        ("multipart/form-data; boundary=b0", b'--b0\r\nContent-Disposition: form-data; name="token"\r\n\r\n'
         b'mp-4\r\n--b0\r\nContent-Disposition: form-data; name="file"\r\n\r\n\xffkept\r\n--b0--\r\n', [b"mp-4"]),
    ]
    for ctype, body, secrets in cases:
        q = X.request_data(req([("Content-Type", ctype), ("X-Session-Tok", "hdr-tok-5")], body=body), FULL,
                           logical_id="l", match="path", source="test")
        stored = orjson.dumps(q)
        for secret in secrets + [b"hdr-tok-5"]:
            assert secret not in stored, (ctype, secret)
        kept = q["body"].get("text") or base64.b64decode(q["body"]["base64"]).decode("latin-1")
        assert "kept" in kept and "[redacted sha256:" in kept, (ctype, q["body"])
        assert q["headers"]["x-session-tok"].startswith("[redacted sha256:")


def test_public_headers_stay_readable():
    public = [("Idempotency-Key", "idem-1"), ("X-Request-Id", "rid-2"), ("Payment-Response", "pr-3"),
              ("Payment-Required", "preq-4"), ("X-Upto-Session", "sess-5"), ("X-TEE-Signature", "teesig-6"),
              ("X-TEE-ID", "tee-7"), ("Content-Type", "application/json"), ("Keep-Alive", "timeout=5"),
              ("X-RateLimit-Remaining-Tokens", "99"), ("User-Agent", "agent/1")]
    q = X.request_data(req(public), SETTINGS, logical_id="l", match="path", source="test")
    assert q["headers"] == {name.lower(): value for name, value in public}
    r = X.response_data(resp(headers=public), 1000.0, SETTINGS)
    assert r["headers"] == {name.lower(): value for name, value in public}


def test_secrets_in_clear_names_the_widened_secrets():
    plain = X.Req("GET", "http", "h", 80, "/v1/x?model=m&sig=s1&x_session_tok=s2", [("X-Session-Tok", "t"),
                  ("X-Request-Id", "r")], None, 1.0)
    assert X.secrets_in_clear(plain) == ["x-session-tok", "?sig", "?x_session_tok"]


def test_linker_joins_retries_but_not_repeats():
    lk = Linker()
    body = Linker.keys("c", "POST", "u", "h", None, None)
    first = lk.link(body, "r1", 0.0)
    lk.outcome(body, ok=False)                        # a 402
    assert lk.link(body, "r2", 1.0) == first          # the paid retry joins it
    lk.outcome(body, ok=True)                         # ... and succeeds
    assert lk.link(body, "r3", 2.0) == "r3"           # the same prompt again is a new call
    pid = Linker.keys("c", "POST", "u", "other-body", None, "pid-1")
    assert lk.link(pid, "r4", 3.0) == "r4"
    lk.outcome(pid, ok=True)
    assert lk.link(Linker.keys("c2", "POST", "u2", "x", None, "pid-1"), "r5", 4.0) == "r4", "same purchase id"
    assert lk.link(body, "r6", 2.0 + 601) == "r6", "outside the window"


def test_the_payment_signer_is_recovered_at_capture_and_the_signature_not_kept():
    from eth_account import Account

    payer, other = Account.create(), Account.create()
    honest = W.signed_eip3009(payer.key, payer.address, token=USDC)
    forged = W.signed_eip3009(other.key, payer.address, token=USDC)  # claims to be from payer, signed by someone else
    for payment, expected in ((honest, payer.address), (forged, other.address)):
        q = X.request_data(req([("PAYMENT-SIGNATURE", W.b64json(payment))]), SETTINGS, logical_id="l",
                           match="x402", source="test")
        assert q["payment"]["signer"] == expected.lower() and q["payment"]["signer_error"] is None
        assert payment["payload"]["signature"][2:] not in orjson.dumps(q).decode()
    assert X.request_data(req([("PAYMENT-SIGNATURE", W.b64json({**honest, "accepted": {**honest["accepted"], "extra": {}}}))]),
                          SETTINGS, logical_id="l", match="x402", source="t")["payment"]["signer_error"].startswith(
        "the EIP-712 domain is unknown")


def test_a_v2_payment_is_recorded_as_signed_not_as_offered():
    """An overcharging client: it answers an offer of 10000 with an authorization it signed for 25000. The
    payment recorded is the signed one (amount, payer, payee, nonce), its signature recovered over it."""
    from eth_account import Account

    payer, pay_to, nonce = Account.create(), "0x" + "3c" * 20, "0x" + "5d" * 32
    over = W.signed_eip3009(payer.key, payer.address, token=USDC, value=25000, offered=10000, pay_to=pay_to,
                            nonce=nonce)
    assert (over["accepted"]["amount"], over["payload"]["authorization"]["value"]) == ("10000", "25000")
    q = X.request_data(req([("PAYMENT-SIGNATURE", W.b64json(over))]), SETTINGS, logical_id="l", match="x402",
                       source="test")
    p = q["payment"]
    assert (p["amount"], p["payer"], p["pay_to"], p["nonce"]) == ("25000", payer.address, pay_to, nonce)
    assert (p["signer"], p["signer_error"]) == (payer.address.lower(), None), "signed over the recorded value"
    assert p["accepted"]["amount"] == "10000", "the offer is kept as the offer"


def test_permit2_signers_are_recovered_for_exact_and_upto():
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    key = Account.create()
    for witness_fields, witness in (
            ([("to", "address"), ("facilitator", "address"), ("validAfter", "uint256")],
             {"to": "0x" + "2" * 40, "facilitator": "0x" + "3" * 40, "validAfter": 0}),
            ([("to", "address"), ("validAfter", "uint256")], {"to": "0x" + "2" * 40, "validAfter": 5})):
        permit = {"permitted": {"token": USDC, "amount": 10**17}, "spender": "0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002",
                  "nonce": 123456789, "deadline": 2**40, "witness": witness}
        typed = {"types": {
            "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "chainId", "type": "uint256"},
                             {"name": "verifyingContract", "type": "address"}],
            "PermitWitnessTransferFrom": [{"name": "permitted", "type": "TokenPermissions"},
                                          {"name": "spender", "type": "address"}, {"name": "nonce", "type": "uint256"},
                                          {"name": "deadline", "type": "uint256"}, {"name": "witness", "type": "Witness"}],
            "TokenPermissions": [{"name": "token", "type": "address"}, {"name": "amount", "type": "uint256"}],
            "Witness": [{"name": n, "type": t} for n, t in witness_fields]},
            "primaryType": "PermitWitnessTransferFrom",
            "domain": {"name": "Permit2", "chainId": 8453, "verifyingContract": "0x000000000022D473030F116dDEE9F6B43aC78BA3"},
            "message": permit}
        sig = "0x" + Account.sign_message(encode_typed_data(full_message=typed), key.key).signature.hex().removeprefix("0x")
        wire = {"x402Version": 2, "accepted": {"scheme": "upto" if "facilitator" in witness else "exact",
                                               "network": "eip155:8453", "asset": USDC, "amount": str(10**17),
                                               "payTo": witness["to"]},
                "payload": {"signature": sig, "permit2Authorization": {
                    **permit, "from": key.address, "nonce": str(permit["nonce"]), "deadline": str(permit["deadline"]),
                    "permitted": {"token": USDC, "amount": str(10**17)},
                    "witness": {k: str(v) if k == "validAfter" else v for k, v in witness.items()}}}}
        q = X.request_data(req([("PAYMENT-SIGNATURE", W.b64json(wire))]), SETTINGS, logical_id="l", match="x402",
                           source="test")
        assert q["payment"]["kind"] == "permit2" and q["payment"]["payer"] == key.address
        assert q["payment"]["signer"] == key.address.lower(), q["payment"]["signer_error"]
