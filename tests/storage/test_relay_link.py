"""A sealed (OHTTP) call's receipt: what cannot be known is said, and the relay's payment is linked when the
same recorder saw the relay forward the same bytes (storage/views.sql `relayed`)."""
from __future__ import annotations

from receipts.storage import db, fold, queries
from receipts.storage.journal import Journal
from receipts.storage.records import Event
from support.proc import receipts_cli

TEE = "0x" + "ab" * 32
SEALED = "5" * 64  # the sealed body's sha256, the same on both hops


def sealed_call(rid, sha=SEALED, payment=None):
    return [Event("request", rid, {"logical_id": rid, "host": "relay" if payment is None else "tee", "method": "POST",
                                   "path": "/api/v1/chat/ohttp", "body": {"size": 900, "sha256": sha},
                                   "payment": payment, "ohttp": {"tee_id": TEE, "stream": True, "sealed": True}}),
            Event("response", rid, {"status": 200, "content_type": "message/ohttp-chunked-res",
                                    "settlement": {"header": "PAYMENT-RESPONSE", "tx_hash": "0xt" + rid,
                                                   "success": True} if payment else None})]


PAYMENT = {"scheme": "exact", "amount": "1000", "decimals": 6, "payer": "0xrelay", "network": "eip155:8453"}
COLUMNS = "receipt_id, proof_status, reason, ohttp_tee_id, relay_receipt, model, cost_source"


def receipts(data):
    """The receipts' rows, by the view; `receipts show` computes the same from each call's own rows
    (`queries.found`, made to compute rows the fold kept)."""
    with db.connect(data) as con:
        rows = {r[0]: r for r in con.execute(f"SELECT {COLUMNS} FROM receipts").fetchall()}
        con.execute(f"SET VARIABLE {db.KEPT_ONLY} = false")
        for receipt_id, row in rows.items():
            [(shown, _)] = queries.found(con, receipt_id)
            assert tuple(shown[c] for c in COLUMNS.split(", ")) == row
        return rows


def test_the_client_hop_is_sealed_and_linked_to_the_relays_payment(tmp_path):
    with Journal(tmp_path, "proxy", seal_interval=3600) as j:
        j.write(sealed_call("client") + sealed_call("relay", payment=PAYMENT)
                + sealed_call("other", sha="6" * 64, payment=PAYMENT) + sealed_call("alone", sha="7" * 64))
        j._seal_if_due(force=True)
    tail = receipts(tmp_path)  # read from the journal (not folded yet)
    fold.fold(tmp_path)
    folded = receipts(tmp_path)
    for got in (tail, folded):
        assert got["client"] == ("client", "unpaid", "sealed", TEE, "relay", None, "unknown")
        assert got["relay"][1:5] == ("pending", "not_verified", TEE, None)  # the relay's own payment, to verify
        assert got["alone"][1:5] == ("unpaid", "sealed", TEE, None)  # the relay's hop was not seen here
        assert got["other"][4] is None


def test_show_says_what_cannot_be_known(tmp_path):
    with Journal(tmp_path, "proxy", seal_interval=0.01) as j:
        j.write(sealed_call("client") + sealed_call("relay", payment=PAYMENT))
    shown = receipts_cli("show", "client", data=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert f"OHTTP for TEE {TEE}" in shown.stdout and "relay's payment: relay" in shown.stdout
    assert "model, prompt, answer, tokens, cost and the TEE's proof are sealed" in shown.stdout
