"""MPP (the `Payment` HTTP authentication scheme) end to end: the real `pympp` client pays the real `pympp`
server with its `tempo` method through a real `receipts proxy` (HTTPS, its CA), on a local Tempo chain
(anvil's Tempo mode, chain 4217: real TIP-20 precompiles and type-0x76 transactions; testbed/mpp.py).

The receipt names the payer (the credential's DID), the recipient, amount and currency of the challenge
and the `Payment-Receipt`'s reference as `payment_hash`; the signed transaction and the credential are in
no event or file; `receipts verify` passes it on chain (the TIP-20 Transfer from the payer to the
recipient). A server whose receipt names a transaction that is not its payment's is failed
(reference_mismatch); one that is not on chain is never passed."""
import json

import pytest

from support.proc import ProxyProcess, receipts_cli, wait_for
from testbed.mpp import mpp_stack


@pytest.fixture(scope="module")
def stack(tls):
    with mpp_stack(tls=tls) as s:
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
    config.write_text(json.dumps({"networks": {stack.network: {"rpc": stack.rpc_url, "confirmations": 1}}}))
    out = receipts_cli("verify", "--once", "--config", str(config), data=proxy.data, timeout=120)
    assert out.returncode == 0, out.stderr


def test_a_tempo_charge_is_recorded_and_verified_on_chain(stack, proxy, tmp_path):
    call = stack.pay(body={"model": "m", "messages": [{"role": "user", "content": "mpp"}]},
                     proxy=proxy.url, verify=proxy.ca)
    assert call.status == 200, call.text
    reference = call.receipt["reference"]
    rows = wait_for(lambda: sql(proxy, f"SELECT * FROM receipts WHERE payment_hash = '{reference.lower()}'") or None,
                    timeout=20)
    r = rows[0]
    assert (r["scheme"], r["kind"], r["network"], r["payer"].lower(), r["pay_to"].lower(), int(r["amount"])) == \
        ("mpp", "tempo", "eip155:4217", stack.payer.address.lower(), stack.payee.address.lower(), stack.price), r
    assert r["attempts"] == 2
    secret = call.signed_transaction.removeprefix("0x")
    n = sql(proxy, f"SELECT count(*) AS n FROM events WHERE data::VARCHAR ILIKE '%{secret[:48]}%'")
    assert n == [{"n": 0}]
    for path in proxy.data.rglob("*"):
        if path.is_file():
            assert call.authorization[8:56].encode() not in path.read_bytes(), path
    verify(stack, proxy, tmp_path)
    r = sql(proxy, f"SELECT * FROM receipts WHERE payment_hash = '{reference.lower()}'")[0]
    assert (r["proof_status"], r["reason"]) == ("passed", None), r


@pytest.mark.parametrize("fake, reason", [("random", "reference_mismatch"), ("unsent", None)])
def test_a_receipt_whose_reference_is_not_on_chain_never_passes(stack, proxy, tmp_path, fake, reason):
    call = stack.pay(body={"model": "m", "messages": [{"role": "user", "content": f"lying {fake}"}]},
                     proxy=proxy.url, verify=proxy.ca, fake_reference=fake)
    assert call.status == 200
    reference = call.receipt["reference"].lower()
    wait_for(lambda: sql(proxy, f"SELECT * FROM receipts WHERE payment_hash = '{reference}'") or None, timeout=20)
    verify(stack, proxy, tmp_path)
    (r,) = sql(proxy, f"SELECT * FROM receipts WHERE payment_hash = '{reference}'")
    assert r["proof_status"] != "passed", r
    if reason:
        assert (r["proof_status"], r["reason"]) == ("failed", reason), r
    else:
        assert (r["proof_status"], r["reason"]) == ("pending", "tx_not_found"), r
