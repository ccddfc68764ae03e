"""No paid receipt stays `not_verified` once a verify pass has seen it: a payment settled off chain (a
network that is no chain, as Cloudflare's `cloudflare:402`) is `off_chain` with the provider's settlement
id, and one whose shape the verifier cannot read is `pending (unsupported_payment)`. Real `receipts proxy`
and `receipts verify` processes; httpx through HTTPS_PROXY against the test upstream."""
import json

import httpx

from support import x402_wire as W
from support.proc import ProxyProcess, receipts_cli, wait_for


def paid_call(proxy, upstream, accepted: dict, payload: dict) -> str:
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hello"}]}
    payment = {"x402Version": 2, "accepted": accepted, "payload": payload}
    with httpx.Client(proxy=proxy.url, verify=proxy.ca, timeout=30) as client:
        r = client.post(f"{upstream}/v1/chat/completions", json=body, headers={"PAYMENT-SIGNATURE": W.b64json(payment)})
    assert r.status_code == 200, r.text
    return r.headers["x-receipt-id"]


def receipts(proxy) -> dict:
    out = receipts_cli("sql", "--json", "SELECT receipt_id, proof_status, reason, payer FROM receipts", data=proxy.data)
    assert out.returncode == 0, out.stderr
    return {r["receipt_id"]: r for r in json.loads(out.stdout)}


def test_off_chain_and_unreadable_payments_get_a_status(tmp_path, tls, upstream):
    with ProxyProcess(tmp_path / "data", "--seal-interval", "0.1", upstream_ca=tls["ca"]) as proxy:
        off = paid_call(proxy, upstream, {"scheme": "batch-settlement", "network": "cloudflare:402", "amount": "100",
                                          "asset": "USD", "payTo": "crawler-pay"}, {"amount": "100", "asset": "USD"})
        odd = paid_call(proxy, upstream, {"scheme": "exact", "network": "eip155:8453", "amount": "10000",
                                          "asset": W.random_address(), "payTo": W.random_address()},
                        {"delegationManager": W.random_address(), "permissionContext": "0x00"})
        wait_for(lambda: {off, odd} <= set(receipts(proxy)), timeout=20, interval=0.2)
        before = receipts(proxy)
        assert [before[k]["reason"] for k in (off, odd)] == ["not_verified", "not_verified"]
        assert not before[off]["payer"] and not before[odd]["payer"]  # (no payer in the payment)
        config = tmp_path / "no-nodes.yaml"
        config.write_text(json.dumps({"networks": {}}))
        out = receipts_cli("verify", "--once", "--config", str(config), data=proxy.data, timeout=120)
        assert out.returncode == 0, out.stderr
        after = receipts(proxy)
        assert (after[off]["proof_status"], after[off]["reason"]) == ("off_chain", "off_chain")
        assert (after[odd]["proof_status"], after[odd]["reason"]) == ("pending", "unsupported_payment")
        settled = json.loads(receipts_cli("sql", "--json", f"SELECT detail FROM checks WHERE receipt_id = '{off}' "
                                          "AND \"check\" = 'settlement_tx'", data=proxy.data).stdout)
        assert json.loads(settled[0]["detail"])["settlement_id"]  # the provider's settlement id, kept
        again = receipts_cli("verify", "--once", "--config", str(config), data=proxy.data, timeout=120)
        assert again.returncode == 0 and receipts(proxy) == after  # (nothing changes twice)
