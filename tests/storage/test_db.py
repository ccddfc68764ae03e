"""Read-only DuckDB access: `event_fields`, the narrow read of every event, against the `events` view."""
import duckdb
import pytest

from storage import db
from storage.compact import write_parquet
from storage.journal import Journal
from storage.records import Event, uuid7

PATHS = "['$.logical_id', '$.payment.payer', '$.status', '$.missing', '$.payment']"


def _journal(tmp_path, big: int = 0):
    with Journal(tmp_path, seal_interval=3600) as j:
        j.write([Event("request", uuid7(), {"logical_id": f"l{i}", "payment": {"payer": f"0x{i}"} if i % 2 else None,
                                            "pad": "x" * big}) for i in range(6)])
        j.write([Event("response", uuid7(), {"status": 200 + i, "payment": "text"}) for i in range(3)])
    return sorted((tmp_path / "journal").glob("proxy-*.jsonl"))


def _both(con):
    want = con.execute(f"SELECT id, type, ts, receipt_id, json_extract_string(data, {PATHS}) FROM events"
                       " ORDER BY id").fetchall()
    got = con.execute(f"SELECT * FROM event_fields({PATHS}, 1048576) ORDER BY id").fetchall()
    return want, got


def test_event_fields_gives_every_event_once_with_the_fields_json_extract_gives(tmp_path):
    slots = _journal(tmp_path)
    with db.connect(tmp_path, snapshot=False) as con:
        want, got = _both(con)
    assert len(want) == 9 and got == want
    # compacted but not yet retired: the same events are in Parquet and in JSON, and each is read once
    write_parquet(slots, tmp_path / "journal" / "parquet" / "date=2026-01-01" / "x.parquet")
    with db.connect(tmp_path, snapshot=False) as con:
        assert con.execute("SELECT count(*) FROM read_parquet($p)", {"p": str(tmp_path / "journal" / "parquet"
                                                                         / "*" / "*.parquet")}).fetchone()[0] == 9
        want2, got2 = _both(con)
    assert got2 == want2 == want


def test_event_fields_refuses_an_event_bigger_than_its_buffer(tmp_path):
    _journal(tmp_path, big=5000)
    with db.connect(tmp_path, snapshot=False) as con:
        with pytest.raises(duckdb.Error):
            con.execute(f"SELECT count(*) FROM event_fields({PATHS}, 4096)").fetchall()
        assert con.execute(f"SELECT count(*) FROM event_fields({PATHS}, 65536)").fetchone()[0] == 9
