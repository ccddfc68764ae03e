"""The seller's own signed receipt (x402's `offer-receipt` extension), through a real `receipts proxy` and
`receipts verify`: kept whole, its signer recovered at capture, and checked: `valid` when `pay_to` signed it
and it says what was paid; `invalid` (and the receipt `risky`) when another key signed it or it names
another payer; `absent` when the server sent none.

Not real: the seller. No released x402 server library signs receipts in Python (the TypeScript extension
does); the test upstream signs one with eth_account, with the spec's EIP-712 domain and types (the digest
is checked against eth_account's own typed-data encoding in tests/addon/test_x402.py)."""
import json

import httpx
from eth_account import Account

from support import upstream as U
from support import x402_wire as W
from support.proc import ProxyProcess, receipts_cli, wait_for
from support.serve import ServeProcess

BODY = {"model": "fake-model", "messages": [{"role": "user", "content": "a receipt, please"}]}


def paid_call(proxy, upstream, pay_to: str, **headers) -> str:
    with httpx.Client(proxy=proxy.url, verify=proxy.ca, timeout=30, headers={"X-Test-Pay-To": pay_to}) as client:
        first = client.post(f"{upstream}/v1/chat/completions", json=BODY)
        accepted = W.unb64json(first.headers["payment-required"])["accepts"][0]
        assert accepted["payTo"] == pay_to
        pay = W.payment_v2_eip3009(accepted, W.random_address(), U.AMOUNT, W.random_nonce_hex(), 0, 2**31,
                                   W.random_signature())
        r = client.post(f"{upstream}/v1/chat/completions", json=BODY,
                        headers={"PAYMENT-SIGNATURE": W.b64json(pay), **headers})
    assert r.status_code == 200, r.text
    return first.headers["x-receipt-id"]


def test_the_sellers_receipt_is_kept_checked_and_shown(tmp_path, tls, upstream):
    seller, stranger = Account.create(), Account.create()
    with ProxyProcess(tmp_path / "data", "--seal-interval", "0.1", upstream_ca=tls["ca"]) as proxy:
        calls = {
            "valid": paid_call(proxy, upstream, seller.address, **{"X-Test-Seller-Key": seller.key.hex()}),
            "stranger": paid_call(proxy, upstream, seller.address, **{"X-Test-Seller-Key": stranger.key.hex()}),
            "lying": paid_call(proxy, upstream, seller.address, **{"X-Test-Seller-Key": seller.key.hex(),
                                                                   "X-Test-Seller-Says-Payer": W.random_address()}),
            "absent": paid_call(proxy, upstream, seller.address),
        }

        def rows():
            out = receipts_cli("sql", "--json", "SELECT receipt_id, seller_receipt, proof_status, resolution, reason "
                                                "FROM receipts", data=proxy.data)
            return {r["receipt_id"]: r for r in json.loads(out.stdout)} if out.returncode == 0 else {}

        wait_for(lambda: set(calls.values()) <= set(rows()), timeout=20, interval=0.2)
        before = rows()
        assert [before[calls[k]]["seller_receipt"] for k in calls] == ["not_verified"] * 3 + ["absent"]

        config = tmp_path / "no-nodes.yaml"
        config.write_text(json.dumps({"networks": {}}))
        out = receipts_cli("verify", "--once", "--config", str(config), data=proxy.data, timeout=120)
        assert out.returncode == 0, out.stderr
        after = rows()
        assert {k: after[v]["seller_receipt"] for k, v in calls.items()} == {
            "valid": "valid", "stranger": "invalid", "lying": "invalid", "absent": "absent"}
        # the seller's word never settles the payment; one that is wrong makes the receipt risky
        assert (after[calls["valid"]]["proof_status"], after[calls["valid"]]["resolution"]) == ("pending", None)
        assert (after[calls["stranger"]]["resolution"], after[calls["stranger"]]["reason"]) == ("risky", "seller_receipt_invalid")
        assert (after[calls["lying"]]["resolution"], after[calls["lying"]]["reason"]) == ("risky", "seller_receipt_disagrees")

        shown = receipts_cli("show", calls["valid"], data=proxy.data)
        assert shown.returncode == 0 and "seller's receipt (valid, eip712, signed by " + seller.address.lower() in shown.stdout
        doc = json.loads(receipts_cli("show", "--json", calls["valid"], data=proxy.data).stdout)
        kept = json.loads(doc["settlements"][0]["seller_receipt"])
        assert kept["signature"].startswith("0x") and kept["signer"] == seller.address.lower()

    with ServeProcess(tmp_path / "data") as serve:  # the receipt page shows it too (escaped, as every value)
        page = serve.get("/receipt/" + calls["valid"]).text
        assert 'id="seller-receipt">valid<' in page and seller.address.lower() in page
        assert 'id="seller-receipt">invalid<' in serve.get("/receipt/" + calls["lying"]).text
