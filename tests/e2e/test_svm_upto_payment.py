"""x402 `upto` on Solana end to end: the real npm `@x402/svm` upto client, server and facilitator
(testbed/svm_upto) through a real `receipts proxy` (HTTPS, its CA), on the local SVM (testbed/solana_node.py).

The payer opens a payment channel holding the cap (10,000); after the call the facilitator claims the
charge (3,000) to payTo and refunds the rest. The receipt names the payer, the cap, the charge as its
amount, the channel, and the claim's signature as `payment_hash`; `receipts verify` passes it once the claim
is finalized and pay_to's token account gained exactly the charge. Real: the SDK's client, server and
facilitator, the SVM with the System, SPL Token, ATA and Ed25519 programs. Ours: the channel program (a C
version of the payment-channels program's instructions: no registry has its binary) and the node's
JSON-RPC layer."""
import json

import pytest

from support.proc import ProxyProcess, receipts_cli, wait_for

CAP, CHARGE = 10_000, 3_000


@pytest.fixture(scope="module")
def stack(tls):
    from testbed.svm_upto import solana_upto_stack

    with solana_upto_stack(cap=CAP, charge=CHARGE, tls=tls) as s:
        yield s


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, tls):
    with ProxyProcess(tmp_path_factory.mktemp("data"), "--seal-interval", "0.1", upstream_ca=tls["ca"]) as p:
        yield p


def receipt(proxy, key) -> dict | None:
    out = receipts_cli("show", "--json", key, data=proxy.data)
    return json.loads(out.stdout)["receipt"] if out.returncode == 0 else None


def test_an_upto_payment_on_solana_is_its_charge_and_passes_when_finalized(stack, proxy, tmp_path):
    call = stack.pay(proxy=proxy.url, verify=proxy.ca, charge=CHARGE)
    assert call.error is None and call.status == 200, (call.error, call.status)
    signature = call.payment_response["transaction"]
    r = wait_for(lambda: receipt(proxy, signature), timeout=20)
    assert (r["scheme"], r["kind"], r["payer"], r["pay_to"]) == \
        ("upto", "svm_upto", str(stack.payer.pubkey()), str(stack.payee)), r
    assert (int(r["amount"]), int(r["amount_cap"]), r["payment_hash"]) == (CHARGE, CAP, signature), r
    assert r["channel_id"] == call.payment_signature["payload"]["channelId"]
    config = tmp_path / "receipts.yaml"
    config.write_text(json.dumps({"networks": {stack.network: {
        "rpc": stack.rpc_url, "facilitators": [str(stack.fee_payer.pubkey())]}}}))

    def verified():
        out = receipts_cli("verify", "--once", "--config", str(config), data=proxy.data, timeout=120)
        assert out.returncode == 0, out.stderr
        return receipt(proxy, signature)

    assert verified()["proof_status"] == "pending"
    stack.node.advance(32)
    r = verified()
    assert (r["proof_status"], r["reason"]) == ("passed", None), r
