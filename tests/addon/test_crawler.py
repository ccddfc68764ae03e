"""Cloudflare pay-per-crawl at capture: the price offered, the crawler's agreement to pay, the charge."""
from receipts.addon import crawler
from receipts.addon import exchange as X
from receipts.storage import config as cfg

SETTINGS = cfg.load()


def req(headers):
    return X.Req("GET", "https", "site.example", 443, "/article", list(headers), None, 1000.0, client="10.0.0.1")


def resp(status, headers):
    return X.Resp(status, list(headers), b"", 1000.5, 1000.6)


def test_prices_are_exact_in_millionths():
    assert crawler.price("USD 0.01") == ("USD", 10_000)
    assert crawler.price(" usd 1.5 ") == ("USD", 1_500_000)
    assert crawler.price("USD 0.0000001") is None  # (finer than a millionth: not rounded)
    assert crawler.price("0.01 USD") is None and crawler.price(None) is None


def test_an_agreement_to_pay_is_a_paid_request():
    h = [("crawler-exact-price", "USD 0.01"), ("signature-agent", "https://crawler.example")]
    assert X.request_match({"crawler-exact-price"}, "site.example", "/article", SETTINGS) == "crawler"
    assert X.is_paid(X.Headers.of(h))
    pay = X.request_data(req(h), SETTINGS, logical_id="l", match="crawler", source="test")["payment"]
    assert (pay["scheme"], pay["kind"], pay["network"], pay["asset"], pay["amount"]) == \
        ("pay-per-crawl", "exact_price", "cloudflare:pay-per-crawl", "USD", "10000")
    bad = X.request_data(req([("crawler-max-price", "lots")]), SETTINGS, logical_id="l", match="crawler", source="test")
    assert bad["payment"]["kind"] == "max_price" and bad["payment"]["amount"] is None and bad["errors"]


def test_the_price_and_the_charge_are_read_from_the_answers():
    offered = X.response_data(resp(402, [("crawler-price", "USD 0.01")]), 1000.0, SETTINGS)
    assert offered["challenge"]["accepts"][0]["amount"] == "10000" and offered["settlement"] is None
    assert X.response_is_x402(resp(402, [("crawler-price", "USD 0.01")]), X.Headers.of([("crawler-price", "USD 0.01")]))
    charged = X.response_data(resp(200, [("crawler-charged", "USD 0.01")]), 1000.0, SETTINGS)["settlement"]
    assert (charged["success"], charged["amount"], charged["network"]) == (True, "10000", "cloudflare:pay-per-crawl")
    refused = X.response_data(resp(402, [("crawler-error", "price_too_low")]), 1000.0, SETTINGS)["settlement"]
    assert (refused["success"], refused["error_reason"]) == (False, "price_too_low")
