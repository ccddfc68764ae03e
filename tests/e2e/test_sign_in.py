"""x402 sign-in-with-x end to end: the real x402 SDK's resource server declares the extension and grants
access to a wallet that already paid; the real SDK client pays once through `receipts proxy` (HTTPS, its
CA), then signs in for the same resource and is served without paying; a forged sign-in (another key,
claiming the payer's address) is refused by the server. The receipts say which sign-in is valid, and which
earlier payment granted the access; the signature itself is in no table and no journal file."""
import json

import pytest

from support.proc import ProxyProcess, receipts_cli, wait_for
from testbed.client import forged_siwx_signer
from testbed.stack import paid_stack

BODY = {"model": "testbed-echo-1", "messages": [{"role": "user", "content": "the same resource twice"}]}


@pytest.fixture(scope="module")
def stack(tls):
    with paid_stack(siwx=True, tls=tls) as s:
        yield s


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, tls):
    with ProxyProcess(tmp_path_factory.mktemp("data"), "--seal-interval", "0.1", upstream_ca=tls["ca"]) as p:
        yield p


def receipts(proxy) -> list[dict]:
    out = receipts_cli("sql", "--json", "SELECT * FROM receipts ORDER BY first_seen", data=proxy.data)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_sign_in_is_linked_to_the_payment_that_granted_it_and_a_forged_one_is_invalid(stack, proxy):
    paid = stack.pay(body=BODY, proxy=proxy.url, verify=proxy.ca, siwx=True)
    assert paid.status == 200, paid.text
    before = stack.balance(stack.payer)
    signed = stack.sign_in(body=BODY, proxy=proxy.url, verify=proxy.ca)
    assert signed.status == 200 and stack.balance(stack.payer) == before  # served, and nothing paid
    forged = stack.sign_in(body=BODY, proxy=proxy.url, verify=proxy.ca,
                           signer=forged_siwx_signer(stack.payer.address, "0x" + "7" * 64))
    assert forged.status == 402
    rows = wait_for(lambda: (r := [x for x in receipts(proxy) if x["sign_in"]]) and len(r) >= 2 and r or None, timeout=20)
    by_payment = {r["receipt_id"]: r for r in receipts(proxy) if r["payer"]}
    valid = [r for r in rows if r["sign_in"] == "valid"]
    invalid = [r for r in rows if r["sign_in"] == "invalid"]
    assert valid and invalid, rows
    assert valid[-1]["sign_in_address"].lower() == stack.payer.address.lower()
    assert valid[-1]["access_by"] in by_payment, (valid[-1], list(by_payment))
    assert by_payment[valid[-1]["access_by"]]["payment_hash"] == paid.payment_response["transaction"]
    assert invalid[-1]["sign_in_error"] and invalid[-1]["sign_in_address"].lower() == stack.payer.address.lower()
    secret = signed.sign_in_with_x["signature"].removeprefix("0x")
    out = receipts_cli("sql", "--json", f"SELECT count(*) AS n FROM events WHERE data::VARCHAR ILIKE '%{secret[:40]}%'",
                       data=proxy.data)
    assert json.loads(out.stdout) == [{"n": 0}], out.stderr
    for path in proxy.data.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
