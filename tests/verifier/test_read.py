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
        assert V._prepare(con, tmp_path) == 0  # no OpenGradient events
        assert con.execute("SELECT type, paid, og FROM facts ORDER BY type").fetchall() == [
            ("check", False, False), ("request", True, False), ("response", False, False)]
        assert con.execute("SELECT payer, scheme FROM facts WHERE type = 'request'").fetchone() == ("0xabc", "exact")
        assert con.execute('SELECT "check", result FROM check_rows').fetchall() == [("verdict", "pending")]
