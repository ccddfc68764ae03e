"""The verifier's narrow read of the journal (verify.FACTS)."""
from storage import db
from storage.journal import Journal
from storage.records import Event, uuid7
from verifier import verify as V


def test_an_event_bigger_than_the_read_buffer_is_read_with_a_bigger_one(tmp_path, monkeypatch):
    with Journal(tmp_path, seal_interval=3600) as j:
        rid = uuid7()
        j.write([Event("request", rid, {"logical_id": rid, "payment": {"payer": "0xabc", "scheme": "exact"},
                                        "body": {"full": "x" * 20000}}),
                 Event("response", rid, {"status": 200, "settlement": {"header": "payment-response", "tx_hash": "0x1"}}),
                 Event("check", rid, {"checks": [{"check": "verdict", "result": "pending", "status": "pending"}]})])
    monkeypatch.setattr(V, "LINE_BYTES", 4096)
    with db.connect(tmp_path, snapshot=False, views=False) as con:
        V._read_facts(con)
        con.execute(V.CHECK_ROWS)
        assert con.execute("SELECT type, paid, og FROM facts ORDER BY type").fetchall() == [
            ("check", False, False), ("request", True, False), ("response", False, False)]
        assert con.execute("SELECT payer, scheme FROM facts WHERE type = 'request'").fetchone() == ("0xabc", "exact")
        assert con.execute('SELECT "check", result FROM check_rows').fetchall() == [("verdict", "pending")]


def test_the_narrow_read_gives_what_the_views_give_on_every_kind_of_call(tmp_path):
    # synthetic calls of every kind the recorder and the verifier write: unpaid, x402 with 402s, retries,
    # double settlements and a check history, and OpenGradient sessions and TEE proofs (which the x402
    # pass must leave to verifier/og.py exactly as the calls view marks them)
    from support.verifier_views import narrow_read_and_views
    from testbed.synthetic import generate

    generate(tmp_path, 3000, seed=7)
    got, want, got_history, history = narrow_read_and_views(tmp_path)
    with db.connect(tmp_path) as con:
        og = con.execute("SELECT count(DISTINCT logical_id) FROM calls WHERE upto_session IS NOT NULL "
                         "OR tee_id IS NOT NULL").fetchone()[0]
    assert og >= 20 and len(want) >= 200 and len(history) >= 500, (og, len(want), len(history))
    assert got == want
    assert got_history == history


def test_the_opengradient_pass_sees_the_same_receipts_in_its_narrow_snapshot(tmp_path):
    # the OpenGradient pass reads the views over a snapshot of just the receipts the x402 pass marked as
    # its own: on synthetic sessions and TEE proofs, its query gives what it gives over every event
    from testbed.synthetic import generate
    from verifier import og

    generate(tmp_path, 3000, seed=7)
    with db.connect(tmp_path, snapshot=False, views=False) as con:
        receipts = V._prepare(con)
    results = []
    for only in (None, receipts):
        with db.connect(tmp_path, receipts=only) as con:
            rows = con.execute(og.TO_VERIFY).fetchall()
            checks = con.execute(og.LAST_CHECKS + " ORDER BY ALL", {"ids": [r[0] for r in rows]}).fetchall()
            events = con.execute("SELECT count(*) FROM events").fetchone()[0]
        results.append((rows, checks, events))
    (everything, every_check, all_events), (narrow, narrow_checks, some_events) = results
    assert len(everything) >= 100 and len(every_check) >= 100, (len(everything), len(every_check))
    assert narrow == everything and narrow_checks == every_check
    assert some_events < all_events / 3, (some_events, all_events)  # it is a small part of the journal


def test_events_being_compacted_are_read_once(tmp_path):
    # compacted into Parquet but still in their JSON segments (the grace period): each event once
    from storage.compact import write_parquet

    with Journal(tmp_path, seal_interval=3600) as j:
        rid = uuid7()
        j.write([Event("request", rid, {"logical_id": rid, "payment": {"payer": "0xabc", "scheme": "exact"}}),
                 Event("response", rid, {"status": 200})])
    slots = sorted((tmp_path / "journal").glob("proxy-*.jsonl"))
    with db.connect(tmp_path, snapshot=False, views=False) as con:
        V._read_facts(con)
        before = con.execute("SELECT id, type, payer, status FROM facts ORDER BY id").fetchall()
    write_parquet(slots, tmp_path / "journal" / "parquet" / "date=2026-01-01" / "x.parquet")
    with db.connect(tmp_path, snapshot=False, views=False) as con:
        V._read_facts(con)
        during = con.execute("SELECT id, type, payer, status FROM facts ORDER BY id").fetchall()
    for slot in slots:  # retired: the events are in Parquet only
        slot.write_text("")
    with db.connect(tmp_path, snapshot=False, views=False) as con:
        V._read_facts(con)
        after = con.execute("SELECT id, type, payer, status FROM facts ORDER BY id").fetchall()
    assert len(before) == 2 and before[0][2] == "0xabc" and before[1][3] == "200"
    assert during == before and after == before
