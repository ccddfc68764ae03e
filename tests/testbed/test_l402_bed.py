"""The L402 test bed (testbed/l402.py) and the pay-per-crawl routes (testbed/crawler.py), through the real
`receipts proxy` over HTTPS: the l402-requests client pays a simulated Lightning invoice and retries with the
macaroon and the preimage; a wrong preimage is refused; the invoice and the macaroon decode to one payment hash."""

import hashlib
import time

import pytest

import bolt11  # noqa: F401  (test tools: a missing package must fail, not skip)
import l402_requests  # noqa: F401
import pymacaroons  # noqa: F401

from support.proc import ProxyProcess
from receipts.addon import bolt11 as bolt11_lite
from testbed import crawler
from testbed.l402 import (
    CHAT_PATH,
    DENY_HEADER,
    LightningNode,
    create_app,
    decode_invoice,
    decode_macaroon,
    l402_stack,
    macaroon_from_b64,
    macaroon_header_value,
    macaroon_to_b64,
    node_pubkey,
    parse_authorization,
    parse_challenges,
)

PRICE_MSAT = 21_000
CHAT = {"model": "testbed-echo-1", "messages": [{"role": "user", "content": "pay me in sats"}]}


@pytest.fixture(scope="module")
def stack(tls):
    with l402_stack(price_msat=PRICE_MSAT, tls=tls) as s:
        yield s


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, tls):
    with ProxyProcess(tmp_path_factory.mktemp("l402-proxy"), "--seal-interval", "0.1", upstream_ca=tls["ca"]) as p:
        yield p


@pytest.fixture(scope="module")
def paid(stack, proxy):
    """One good paid call through the proxy (client trusts the proxy's CA)."""
    return stack.pay(CHAT, proxy=proxy.url, verify=proxy.ca)


def test_good_preimage_gets_the_answer_through_the_proxy(paid, stack):
    assert paid.status == 200, paid.text
    assert paid.json()["choices"][0]["message"]["content"] == "You said: pay me in sats"
    assert [e.status for e in paid.exchanges] == [402, 200]
    assert all(e.url == stack.chat_url and e.method == "POST" for e in paid.exchanges)
    assert paid.header("x-receipt-id"), "the recorder opened the HTTPS connection and stamped the answer"
    # Aperture's challenge: LSAT first, then L402, with one macaroon and one invoice
    challenge = paid.challenge
    assert [c["scheme"] for c in paid.challenges] == ["LSAT", "L402"]
    assert len({(c["macaroon"], c["invoice"]) for c in paid.challenges}) == 1
    assert challenge.response_header("cache-control") == "no-store"
    assert challenge.request_header("authorization") is None
    # the retry: Authorization: L402 <macaroon>:<preimage>, and the preimage is the proof of the payment
    auth = parse_authorization(paid.authorization)
    assert paid.authorization.startswith("L402 ") and auth["macaroons"] == [paid.macaroon]
    (payment,) = paid.payments
    assert auth["preimage"] == payment["preimage"]
    assert hashlib.sha256(bytes.fromhex(auth["preimage"])).hexdigest() == payment["payment_hash"]
    assert payment["amount_msat"] == PRICE_MSAT
    assert paid.paid.request_header("user-agent").startswith("l402-requests/")
    settled = {i["payment_hash"]: i for i in stack.invoices()}[payment["payment_hash"]]
    assert settled["settled"] and settled["preimage"] == payment["preimage"]


def test_the_invoice_and_the_macaroon_commit_to_one_payment_hash(paid, stack):
    inv = decode_invoice(paid.invoice)  # the bolt11 package: the signature is checked
    mac = decode_macaroon(paid.macaroon)
    payment_hash = paid.payments[0]["payment_hash"]
    assert inv["payment_hash"] == mac["identifier"]["payment_hash"] == payment_hash
    assert (inv["currency"], inv["amount_msat"], inv["payee"]) == ("bc", PRICE_MSAT, node_pubkey())
    assert paid.invoice.startswith("lnbc210n1")  # 21 sat = 210 nano-bitcoin
    assert inv["description"] == "chat (testbed L402)" and inv["expiry"] == 3600
    assert abs(inv["timestamp"] - time.time()) < 120 and inv["min_final_cltv_expiry"] == 80
    assert len(inv["payment_secret"]) == 64 and inv["features"]["payment_secret"] == "required"
    # Aperture's macaroon: V2, location "lsat", identifier version 0 || payment hash || token id
    assert (mac["version"], mac["location"], mac["identifier"]["version"]) == (2, "lsat", 0)
    assert len(mac["identifier_hex"]) == 2 * 66 and len(mac["identifier"]["token_id"]) == 64
    caveats = [c["id"] for c in mac["caveats"]]
    assert caveats[:2] == ["services=chat:0", "chat_capabilities=completions"]
    assert caveats[2].startswith("chat_valid_until=") and int(caveats[2].split("=")[1]) > time.time()
    # the small decoder of the project's own gives the same fields
    lite = bolt11_lite.decode(paid.invoice)
    assert {k: lite[k] for k in ("currency", "amount_msat", "timestamp", "expiry", "payment_hash",
                                 "payment_secret", "description", "min_final_cltv_expiry", "payee", "signature")} \
        == {k: inv[k] for k in ("currency", "amount_msat", "timestamp", "expiry", "payment_hash",
                                "payment_secret", "description", "min_final_cltv_expiry", "payee", "signature")}


def test_bad_preimage_is_refused_after_paying(stack, proxy):
    bad = stack.pay(CHAT, proxy=proxy.url, verify=proxy.ca, preimage_override="00" * 32)
    assert bad.status in (401, 402)
    assert bad.status == 402 and bad.challenges, "Aperture answers an invalid token with a fresh challenge"
    assert bad.header(DENY_HEADER).startswith("invalid preimage for payment hash")
    assert [e.status for e in bad.exchanges] == [402, 402]
    assert parse_authorization(bad.authorization)["preimage"] == "00" * 32
    (payment,) = bad.payments  # the invoice was paid all the same: money moved, no answer
    assert {i["payment_hash"]: i for i in stack.invoices()}[payment["payment_hash"]]["settled"]
    fresh = parse_challenges([v for k, v in bad.exchanges[1].response_headers if k.lower() == "www-authenticate"])
    assert fresh and fresh[0]["invoice"] != bad.invoice  # a new invoice and macaroon each time


def test_a_token_is_reused_and_a_tampered_one_refused(paid, stack, proxy):
    import httpx

    with httpx.Client(proxy=proxy.url, verify=proxy.ca, trust_env=False, timeout=30) as http:
        again = http.post(stack.chat_url, json=CHAT, headers={"Authorization": paid.authorization})
        assert again.status_code == 200, "a paid L402 is reusable until its caveats expire"
        legacy = http.post(stack.chat_url, json=CHAT, headers={"Authorization": "LSAT" + paid.authorization[4:]})
        assert legacy.status_code == 200
        auth = parse_authorization(paid.authorization)
        mac = macaroon_from_b64(auth["macaroons"][0])
        mac.add_first_party_caveat("services=other:0")  # the holder may attenuate, but not to another service
        attenuated = http.post(stack.chat_url, json=CHAT,
                               headers={"Authorization": f"L402 {macaroon_to_b64(mac)}:{auth['preimage']}"})
        assert attenuated.status_code == 402 and attenuated.headers[DENY_HEADER].startswith("macaroon:")
        # Aperture's other form: the macaroon in hex in a Macaroon header, the preimage in a caveat of it
        for name in ("Macaroon", "Grpc-Metadata-Macaroon"):
            r = http.post(stack.chat_url, json=CHAT,
                          headers={name: macaroon_header_value(auth["macaroons"][0], auth["preimage"])})
            assert r.status_code == 200, r.headers.get(DENY_HEADER)
        wrong = macaroon_header_value(auth["macaroons"][0], "ab" * 32)
        r = http.post(stack.chat_url, json=CHAT, headers={"Macaroon": wrong})
        assert r.status_code == 402 and r.headers[DENY_HEADER].startswith("invalid preimage")
        forged = macaroon_from_b64(auth["macaroons"][0])
        forged.signature = "00" * 32
        bad = http.post(stack.chat_url, json=CHAT,
                        headers={"Authorization": f"L402 {macaroon_to_b64(forged)}:{auth['preimage']}"})
        assert bad.status_code == 402 and "macaroon" in bad.headers[DENY_HEADER]


def test_l402_only_challenge_and_node_invoices():
    from fastapi.testclient import TestClient

    with TestClient(create_app(schemes=("L402",), currency="bcrt", price_msat=1_500)) as client:
        r = client.post(CHAT_PATH, json=CHAT)
    assert r.status_code == 402 and r.text == "payment required\n"
    (challenge,) = r.headers.get_list("www-authenticate")
    assert challenge.startswith('L402 macaroon="') and ', invoice="lnbcrt15n1' in challenge
    node = LightningNode(currency="tb")
    inv = node.create_invoice(1, "one msat")
    assert inv.bolt11.startswith("lntb10p1") and bolt11_lite.decode(inv.bolt11)["amount_msat"] == 1
    with pytest.raises(ValueError):
        LightningNode(key="11" * 32).receive(inv.bolt11)  # another node's invoice


@pytest.mark.parametrize("offer, status, headers", [
    ({}, 402, {"crawler-price": "USD 0.01"}),
    ({"exact_price": "USD 0.01"}, 200, {"crawler-charged": "USD 0.01"}),
    ({"max_price": "USD 0.05"}, 200, {"crawler-charged": "USD 0.01"}),
    ({"max_price": "USD 0.001"}, 402, {"crawler-error": "InvalidCrawlerMaxPrice", "crawler-price": "USD 0.01"}),
    ({"exact_price": "USD 0.02"}, 402, {"crawler-error": "InvalidCrawlerExactPrice", "crawler-price": "USD 0.01"}),
    ({"exact_price": "USD 0.01", "max_price": "USD 1"}, 400, {"crawler-error": "ConflictingPriceHeaders"}),
    ({"max_price": "0.05"}, 400, {"crawler-error": "InvalidCrawlerPriceValue"}),
])
def test_crawler_price_flows_through_the_proxy(stack, proxy, offer, status, headers):
    r = stack.crawl("pay-per-crawl", proxy=proxy.url, verify=proxy.ca, **offer)
    assert r.status == status, (r.headers, r.text)
    got = {k: r.header(k) for k in (crawler.PRICE, crawler.CHARGED, crawler.ERROR) if r.header(k) is not None}
    assert got == headers
    sent = dict((k.lower(), v) for k, v in r.request_headers)
    assert sent.get(crawler.EXACT_PRICE) == offer.get("exact_price")
    assert sent.get(crawler.MAX_PRICE) == offer.get("max_price")
    if status == 200:
        assert "<h1>pay per crawl</h1>" in r.text


def test_crawler_price_parsing():
    from decimal import Decimal

    assert crawler.parse_price("USD 0.01") == ("USD", Decimal("0.01"))
    for bad in ("0.01", "usd 0.01", "USD", "USD -1", "USD 1e3", ""):
        with pytest.raises(ValueError):
            crawler.parse_price(bad)
    assert crawler.decide({}, "EUR 2") == (402, {"crawler-price": "EUR 2"})
    assert crawler.decide({"crawler-max-price": "USD 5"}, "EUR 2") == (400,
                                                                       {"crawler-error": "InvalidCrawlerPriceValue"})
    assert crawler.decide({"crawler-exact-price": "EUR 2.00"}, "EUR 2") == (200, {"crawler-charged": "EUR 2"})
