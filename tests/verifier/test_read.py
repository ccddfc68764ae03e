"""What the verifier's passes read from the folded tables (verify.TO_VERIFY, og.TO_VERIFY) against the
same read written as plain queries over the views (tests/support/verifier_views.py)."""
import time

from receipts.storage import db, fold
from receipts.storage.journal import Journal
from receipts.storage.records import Event, uuid7
from support.verifier_views import og_pass_and_views, x402_pass_and_views

PAYER, PAY_TO, OTHER, ASSET = "0x" + "a1" * 20, "0x" + "b2" * 20, "0x" + "c3" * 20, "0x" + "d4" * 20


def test_the_x402_pass_reads_what_the_views_give_on_every_kind_of_call(tmp_path):
    # synthetic calls of every kind the recorder and the verifier write: unpaid, x402 with 402s, retries,
    # double settlements and a check history, and OpenGradient sessions and TEE proofs (which the x402
    # pass must leave to verifier/og.py exactly as the calls view marks them); read in parts of 50
    # receipts, so that parts begin and end everywhere
    from testbed.synthetic import generate

    generate(tmp_path, 3000, seed=7)
    fold.fold(tmp_path, wait=True)
    got = x402_pass_and_views(tmp_path, part=50)
    assert len(got["views_og"]) >= 20 and len(got["views_rows"]) >= 200 and len(got["views_history"]) >= 500, (
        len(got["views_og"]), len(got["views_rows"]), len(got["views_history"]))
    assert got["parts"] >= 5
    assert got["og"] == got["views_og"]
    assert got["rows"] == got["views_rows"]
    assert got["history"] == got["views_history"]
    mine = {row[0] for row in got["rows"]}
    assert got["round_history"] == [h for h in got["views_history"] if h[0] in mine]


def test_the_opengradient_pass_reads_what_the_views_give(tmp_path):
    # the OpenGradient pass reads its calls a part at a time: on synthetic sessions and TEE proofs, read
    # in parts of 20 calls (a session's calls fall in several parts), it reads what the views give over
    # every call
    from testbed.synthetic import generate

    generate(tmp_path, 3000, seed=7)
    fold.fold(tmp_path, wait=True)
    got = og_pass_and_views(tmp_path, part=20)
    assert got["parts"] >= 5
    assert len(got["views_rows"]) >= 100 and len(got["views_last"]) >= 100, (len(got["views_rows"]), len(got["views_last"]))
    assert sum(r["opened_by"] == r["receipt_id"] for r in got["views_rows"]) >= 10  # session openers (terms checked)
    assert got["rows"] == got["views_rows"]
    assert got["last"] == got["views_last"]


def _calls(t0: float) -> tuple[list[Event], dict]:
    """Calls whose reading is easy to get wrong: a 402 offering two terms (the first one applies), a
    paid 500 then a paid retry that got no answer (its status is NULL), a verdict that went from
    passed back to pending (the latest counts), a call whose latest verdict is final (not read), and
    one settlement reported to two attempts (one settlement, not two)."""
    def request(rid, logical, at, paid=True, amount="100", pay_to=PAY_TO):
        payment = {"payer": PAYER, "pay_to": pay_to, "asset": ASSET, "amount": amount, "scheme": "exact",
                   "kind": "eip3009", "network": "eip155:8453", "nonce": "0x" + "01" * 32, "signer": PAYER,
                   "valid_after": 0, "valid_before": 2**40}
        return Event("request", rid, {"logical_id": logical, **({"payment": payment} if paid else {})}, ts=at)

    def response(rid, at, status, **data):
        return Event("response", rid, {"status": status, **data}, ts=at)

    def verdict(logical, at, status):
        return Event("check", logical, {"checks": [{"check": "settlement_tx", "result": "pass" if status == "passed"
                                                    else "pending", "reason": None},
                                                   {"check": "verdict", "result": status, "status": status}]}, ts=at)

    offered = [{"scheme": "exact", "network": "eip155:8453", "asset": ASSET, "amount": "100", "pay_to": PAY_TO},
               {"scheme": "exact", "network": "eip155:84532", "asset": OTHER, "amount": "50", "pay_to": OTHER}]
    a, a2, b, b2, c, d, e, e2 = (uuid7(t0 + i) for i in range(8))
    events = [
        request(a, a, t0, paid=False), response(a, t0 + 0.1, 402, challenge={"x402_version": 2, "accepts": offered}),
        request(a2, a, t0 + 1), response(a2, t0 + 1.1, 200, settlement={"header": "payment-response", "tx_hash": "0x1"}),
        request(b, b, t0 + 2), response(b, t0 + 2.1, 500, settlement={"header": "payment-response", "tx_hash": "0x2"}),
        request(b2, b, t0 + 3),  # the retry: no answer
        request(c, c, t0 + 4), verdict(c, t0 + 5, "passed"), verdict(c, t0 + 6, "pending"),
        request(d, d, t0 + 7), verdict(d, t0 + 8, "failed"),
        request(e, e, t0 + 9), response(e, t0 + 9.1, 200, settlement={"header": "payment-response", "tx_hash": "0x3"}),
        request(e2, e, t0 + 10), response(e2, t0 + 10.1, 200, settlement={"header": "payment-response", "tx_hash": "0x3"}),
    ]
    return events, {"a": a, "b": b, "c": c, "d": d, "e": e}


def _expect(got: dict, ids: dict) -> None:
    rows = {r[0]: r for r in got["rows"]}
    assert set(rows) == {ids["a"], ids["b"], ids["c"], ids["e"]}, "a call whose latest verdict is final is not read"
    cols = ["receipt_id", "payer", "pay_to", "asset", "scheme", "kind", "nonce", "network", "valid_after",
            "valid_before", "paid_at", "signer", "signer_error", "signed_amount", "amount_cap",
            "max_amount_required", "challenge_pay_to", "challenge_asset", "challenge_network", "payment_hash",
            "settlement_job_id", "settlement_count", "payment_count", "status", "last_status", "last_resolution",
            "last_reason"]
    a, b, c, e = (dict(zip(cols, rows[ids[k]])) for k in "abce")
    assert (a["max_amount_required"], a["challenge_pay_to"], a["challenge_network"]) == (100, PAY_TO, "eip155:8453")
    assert (a["status"], a["payment_hash"], a["payment_count"], a["signed_amount"]) == (200, "0x1", 1, 100)
    assert (b["status"], b["payment_hash"], b["payment_count"], b["settlement_count"]) == (None, "0x2", 2, 1)
    assert (c["last_status"], c["status"], c["max_amount_required"]) == ("pending", None, None)
    assert (e["status"], e["payment_hash"], e["payment_count"], e["settlement_count"]) == (200, "0x3", 2, 1)


def test_the_offer_that_applies_and_the_last_attempt_as_the_views_say(tmp_path):
    events, ids = _calls(time.time() - 60)
    with Journal(tmp_path, seal_interval=3600) as j:
        j.write(events)
    got = x402_pass_and_views(tmp_path, part=1)
    assert got["parts"] == 5
    assert got["rows"] == got["views_rows"]
    _expect(got, ids)
    assert got["history"] == got["views_history"] and len(got["history"]) == 4


def test_the_unfolded_tail_is_read_as_the_folded_tables(tmp_path, monkeypatch):
    # requests folded into Parquet, their answers and checks still in the journal's tail (not folded
    # yet): each exchange read whole, once; then folded, the same rows
    events, ids = _calls(time.time() - 60)
    requests = [e for e in events if e.type == "request"]
    with Journal(tmp_path, seal_interval=3600) as j:
        j.write(requests)
    monkeypatch.setattr(fold.Folder, "_fold", lambda self: None)  # this writer does not fold
    with Journal(tmp_path, "verifier", seal_interval=3600) as j:
        j.write([e for e in events if e.type != "request"])
    with db.connect(tmp_path, views=False) as con:
        tail = {t: n for t, n in con.execute("SELECT type, count(*) FROM folded.tail GROUP BY ALL").fetchall()}
    assert tail == {"response": 5, "check": 3}, tail
    before = x402_pass_and_views(tmp_path, part=2)
    assert before["rows"] == before["views_rows"]
    _expect(before, ids)
    assert fold.fold(tmp_path, wait=True) == 8
    after = x402_pass_and_views(tmp_path, part=2)
    assert after["rows"] == before["rows"] and after["history"] == before["history"]


def test_the_opengradient_pass_reads_sessions_and_proofs_as_the_views_say(tmp_path):
    # a session opened by a paid call after its 402, a streamed call under it whose proof comes with
    # its end, a later call that paid again (the session's opener is still the first payment), and a
    # call under it answered 402 (a call of the session all the same)
    t0 = time.time() - 60
    o, o2, m, p, x = (uuid7(t0 + i) for i in range(5))

    def payment(at, amount):
        return {"payer": PAYER, "pay_to": PAY_TO, "asset": ASSET, "amount": amount, "scheme": "upto",
                "kind": "permit2", "network": "eip155:8453", "nonce": str(int(at)), "deadline": int(at) + 600,
                "valid_before": int(at) + 60, "facilitator": OTHER, "signer": PAYER}

    def tee(tee_id, at):
        return {"tee": {"tee_id": tee_id, "tee_timestamp": int(at), "tee_request_hash": "0x" + "11" * 32,
                        "tee_output_hash": "0x" + "22" * 32, "tee_signature": "c2ln"}}

    offer = [{"scheme": "upto", "network": "eip155:8453", "asset": ASSET, "amount": "1000", "pay_to": PAY_TO}]
    hashes = {"openai": "0x" + "11" * 32}
    events = [
        Event("request", o, {"logical_id": o}, ts=t0),
        Event("response", o, {"status": 402, "challenge": {"x402_version": 2, "accepts": offer}}, ts=t0 + 0.1),
        Event("request", o2, {"logical_id": o, "payment": payment(t0 + 1, "1000"), "settlement_type": "individual",
                              "tee_request_hashes": hashes}, ts=t0 + 1),
        Event("response", o2, {"status": 200, "og": {"upto_session": "sess-1", "settlement_tx_hash": "0xa1"},
                               **tee("0x" + "0e" * 32, t0 + 1)}, ts=t0 + 1.1),
        Event("request", m, {"logical_id": m, "upto_session": "sess-1", "settlement_type": "batch"}, ts=t0 + 2),
        Event("response", m, {"status": 200, "stream": True, **tee("0x" + "0d" * 32, t0 + 2)}, ts=t0 + 2.1),
        Event("stream_end", m, {"done": True, "output_text_keccak": "0x" + "22" * 32, **tee("0x" + "0f" * 32, t0 + 2)},
              ts=t0 + 2.5),
        Event("request", p, {"logical_id": p, "upto_session": "sess-1", "payment": payment(t0 + 3, "2000")}, ts=t0 + 3),
        Event("response", p, {"status": 200}, ts=t0 + 3.1),
        Event("request", x, {"logical_id": x, "upto_session": "sess-1"}, ts=t0 + 4),
        Event("response", x, {"status": 402}, ts=t0 + 4.1),
        Event("check", m, {"checks": [{"check": "tee_signature", "result": "pass"},
                                      {"check": "verdict", "result": "pending", "status": "pending"}]}, ts=t0 + 5),
    ]
    with Journal(tmp_path, seal_interval=3600) as j:
        j.write(events)
    got = og_pass_and_views(tmp_path, part=1)  # each call in a part of its own: the session's opener in one
    assert got["parts"] == 4
    assert got["rows"] == got["views_rows"]
    assert got["last"] == got["views_last"] == {(m, "tee_signature"): ("pass", None), (m, "verdict"): ("pending", None)}
    rows = {r["receipt_id"]: r for r in got["rows"]}
    assert set(rows) == {o, m, p, x}
    assert {r["opened_by"] for r in rows.values()} == {o} and {r["session"] for r in rows.values()} == {"sess-1"}
    assert (rows[o]["amount_cap"], rows[o]["deadline"], rows[o]["max_amount_required"]) == (1000, int(t0 + 1) + 600, 1000)
    assert rows[p]["max_amount_required"] is None  # the terms are those of the session's opener
    assert rows[m]["tee_id"] == "0x" + "0f" * 32 and rows[m]["output_seen"] == "0x" + "22" * 32  # its stream's end
    assert rows[m]["request_hashes"] == {} and rows[o]["request_hashes"] == hashes
    assert (rows[o]["anchor_tx"], rows[o]["settlement_type"]) == ("0xa1", "individual")
