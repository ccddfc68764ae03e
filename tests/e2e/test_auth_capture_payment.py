"""x402 auth-capture (escrow) end to end: the real npm `@x402/evm` auth-capture client (the only released
part: testbed/auth_capture.py builds the server, facilitator and escrow contracts of this project, at the
client's addresses, from the scheme's spec) pays through a real `receipts proxy` (HTTPS, its CA) on anvil.

The payment authorizes a cap of 10,000 into the escrow; the merchant is the offer's payTo (not the
authorization's `to`, the escrow's collector). The receipt names the payer, the merchant, the cap and the
escrow's payment id; `receipts verify` checks the hold (the payer's transfer of the cap to the collector,
AuthorizationUsed of the nonce that binds every term) and then waits for the capture: pending
(awaiting_capture), passed once 4,000 is captured (the amount is the capture, not the cap), and a payment
voided without a capture is failed (voided)."""
import json

import pytest

from support.proc import ProxyProcess, receipts_cli, wait_for

CAP = 10_000


@pytest.fixture(scope="module")
def stack(tls):
    from testbed.auth_capture import auth_capture_stack

    with auth_capture_stack(price=CAP, tls=tls) as s:
        yield s


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, tls):
    with ProxyProcess(tmp_path_factory.mktemp("data"), "--seal-interval", "0.1", upstream_ca=tls["ca"]) as p:
        yield p


def sql(proxy, query) -> list[dict]:
    out = receipts_cli("sql", "--json", query, data=proxy.data)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def verify(stack, proxy, tmp_path) -> None:
    config = tmp_path / "receipts.yaml"
    config.write_text(json.dumps(stack.receipts_config(confirmations=1)))
    out = receipts_cli("verify", "--once", "--config", str(config), data=proxy.data, timeout=120)
    assert out.returncode == 0, out.stderr


def by_id(proxy, payment_id) -> dict:
    return sql(proxy, f"SELECT * FROM receipts WHERE channel_id = '{payment_id}'")[0]


def test_a_hold_is_pending_until_captured_and_its_amount_is_the_capture(stack, proxy, tmp_path):
    call = stack.pay(proxy=proxy.url, verify=proxy.ca)
    assert call.status == 200, call
    payment_id = stack.payments()[-1]["paymentInfoHash"].lower()
    r = wait_for(lambda: sql(proxy, f"SELECT * FROM receipts WHERE channel_id = '{payment_id}'") or None, timeout=20)[0]
    assert (r["scheme"], r["kind"], r["payer"].lower(), r["pay_to"].lower(), int(r["amount_cap"]), r["amount"]) == \
        ("auth-capture", "auth_capture", stack.payer.address.lower(), stack.pay_to.lower(), CAP, None), r
    assert r["signer"].lower() == stack.payer.address.lower()  # (ReceiveWithAuthorization, recovered)
    verify(stack, proxy, tmp_path)
    r = by_id(proxy, payment_id)
    assert (r["proof_status"], r["reason"]) == ("pending", "awaiting_capture"), r
    stack.capture(4_000, payment_id)
    verify(stack, proxy, tmp_path)
    r = by_id(proxy, payment_id)
    assert (r["proof_status"], r["reason"], int(r["amount"])) == ("passed", None, 4_000), r


def test_a_hold_voided_without_capture_fails(stack, proxy, tmp_path):
    call = stack.pay(proxy=proxy.url, verify=proxy.ca, body={"model": "m", "messages": [{"role": "user", "content": "void"}]})
    assert call.status == 200, [(e["response"].get("status"), e["response"].get("headers")) for e in call.exchanges]
    payment_id = stack.payments()[-1]["paymentInfoHash"].lower()
    wait_for(lambda: sql(proxy, f"SELECT * FROM receipts WHERE channel_id = '{payment_id}'") or None, timeout=20)
    stack.void(payment_id)
    verify(stack, proxy, tmp_path)
    r = by_id(proxy, payment_id)
    assert (r["proof_status"], r["reason"]) == ("failed", "voided"), r
