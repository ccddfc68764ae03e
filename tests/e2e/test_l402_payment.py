"""L402 and Cloudflare pay-per-crawl end to end, through a real `receipts proxy` (HTTPS, its CA).

L402: the real `l402-requests` client pays an Aperture-style server (testbed/l402.py: signed BOLT11
invoices, libmacaroons V2 macaroons naming the payment hash). Only the Lightning payment is simulated: the
test bed's wallet gets the preimage from the server's node, as a settled HTLC would reveal it. The receipt
names the invoice's payment hash as `payment_hash`, its amount (msat) and payee node; `receipts verify`
checks offline that the preimage is the proof (its SHA-256 is the payment hash): passed, or failed
(bad_preimage) for a wrong one. Neither the macaroon nor the preimage is in any event or file.

Pay-per-crawl: a crawler agrees to a price, the site charges it; the receipt is `off_chain` with the
charge in millionths of a dollar. (No public library implements it: the server is the test bed's.)"""
import hashlib
import json

import pytest

from support.proc import ProxyProcess, receipts_cli, wait_for
from testbed.l402 import l402_stack

PRICE_MSAT = 10_000


@pytest.fixture(scope="module")
def stack(tls):
    with l402_stack(price_msat=PRICE_MSAT, tls=tls) as s:
        yield s


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, tls):
    with ProxyProcess(tmp_path_factory.mktemp("data"), "--seal-interval", "0.1", upstream_ca=tls["ca"]) as p:
        yield p


def sql(proxy, query) -> list[dict]:
    out = receipts_cli("sql", "--json", query, data=proxy.data)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def verify(proxy, tmp_path) -> None:
    config = tmp_path / "receipts.yaml"
    config.write_text(json.dumps({"networks": {}}))
    out = receipts_cli("verify", "--once", "--config", str(config), data=proxy.data, timeout=120)
    assert out.returncode == 0, out.stderr


def test_an_l402_payment_is_proved_by_its_preimage_and_a_bad_one_fails(stack, proxy, tmp_path):
    good = stack.pay(body={"model": "m", "messages": [{"role": "user", "content": "good"}]},
                     proxy=proxy.url, verify=proxy.ca)
    assert good.status == 200, good.text
    bad = stack.pay(body={"model": "m", "messages": [{"role": "user", "content": "bad"}]},
                    proxy=proxy.url, verify=proxy.ca, preimage_override="00" * 32)
    assert bad.status == 402
    payment_hash = hashlib.sha256(bytes.fromhex(good.authorization.rsplit(":", 1)[1])).hexdigest()
    wait_for(lambda: len(sql(proxy, "SELECT * FROM receipts WHERE scheme = 'l402'")) >= 2 or None, timeout=20)
    verify(proxy, tmp_path)
    rows = sql(proxy, "SELECT * FROM receipts WHERE scheme = 'l402' ORDER BY first_seen")
    passed = [r for r in rows if r["proof_status"] == "passed"]
    failed = [r for r in rows if r["proof_status"] == "failed"]
    assert len(passed) == 1 and len(failed) == 1, rows
    r = passed[0]
    assert r["payment_hash"] == payment_hash, r
    assert (int(r["amount"]), r["pay_to"], r["network"], r["attempts"]) == (PRICE_MSAT, stack.node_pubkey, "lightning", 2), r
    assert failed[0]["reason"] == "bad_preimage"
    # the credential is in no event and no file: not the macaroon, not the preimage
    secrets = [good.macaroon, good.authorization.rsplit(":", 1)[1]]
    for secret in secrets:
        n = sql(proxy, f"SELECT count(*) AS n FROM events WHERE data::VARCHAR LIKE '%{secret[:40]}%'")
        assert n == [{"n": 0}], secret[:12]
        for path in proxy.data.rglob("*"):
            if path.is_file():
                assert secret[:40].encode() not in path.read_bytes(), path


def test_a_crawl_charge_is_off_chain_and_exact(stack, proxy, tmp_path):
    charged = stack.crawl("paid-article", exact_price="USD 0.01", proxy=proxy.url, verify=proxy.ca)
    assert charged.status == 200 and charged.header("crawler-charged") == "USD 0.01"
    wait_for(lambda: sql(proxy, "SELECT * FROM receipts WHERE scheme = 'pay-per-crawl'") or None, timeout=20)
    verify(proxy, tmp_path)
    (r,) = sql(proxy, "SELECT * FROM receipts WHERE scheme = 'pay-per-crawl'")
    assert (r["proof_status"], int(r["amount"]), r["amount_decimal"], r["symbol"]) == ("off_chain", 10_000, "0.01", "USD"), r
