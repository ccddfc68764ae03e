"""The journal on its own: recovery after a crash, sequence numbers, compaction without gaps."""
import time

import orjson

from storage import db
from storage.journal import Journal
from storage.records import Event, uuid7


def events(n, kind="request"):
    return [Event(kind, uuid7(), {"logical_id": "x", "method": "POST", "n": i}) for i in range(n)]


def count(data, sql="SELECT count(*), count(DISTINCT id) FROM events"):
    with db.connect(data) as con:
        return con.execute(sql).fetchone()


def test_a_dead_writers_open_segment_is_sealed_without_its_torn_last_line(tmp_path):
    j = Journal(tmp_path, seal_interval=3600).start()
    j.write(events(3))
    # simulate kill -9 mid-write: a torn line at the end of the open segment, and no close()
    with open(j.open_dir / "proxy.jsonl", "ab") as f:
        f.write(b'{"id": "torn", "type": "requ')
    j._thread = None  # the process "died": nothing more is written or sealed
    import fcntl, os
    fcntl.flock(j._lock_fd, fcntl.LOCK_UN)
    os.close(j._lock_fd)
    assert count(tmp_path) == (0, 0), "nothing sealed yet"

    with Journal(tmp_path, seal_interval=0.05) as again:
        assert again.writer == "proxy"
        assert count(tmp_path) == (3, 3)
        again.write(events(2))
        time.sleep(0.3)
    assert count(tmp_path) == (5, 5)
    assert count(tmp_path, "SELECT min(seq), max(seq), count(DISTINCT seq) FROM events") == (1, 5, 5)


def test_a_second_live_writer_gets_its_own_name(tmp_path):
    with Journal(tmp_path) as a, Journal(tmp_path) as b:
        assert (a.writer, b.writer) == ("proxy", "proxy2")


def test_events_carry_the_writer_name_asked_for(tmp_path):
    with Journal(tmp_path, "proxy"), Journal(tmp_path, "verifier", seal_interval=0.01) as v:
        assert v.writer == "verifier"
        v.write(events(2, "check"))
    assert count(tmp_path, "SELECT list(DISTINCT writer) FROM events") == (["verifier"],)


def test_compaction_folds_segments_into_parquet_and_frees_slots(tmp_path):
    with Journal(tmp_path, seal_interval=0.01, compact_after=3, compact_grace=0.2) as j:
        for _ in range(12):
            j.write(events(10))
            time.sleep(0.03)
            assert count(tmp_path) == (count(tmp_path)[0],) * 2, "no duplicate is ever visible"
        time.sleep(1.0)
    parquet = [p for p in (tmp_path / "journal" / "parquet").rglob("*.parquet") if p.name != "_anchor.parquet"]
    slots = sorted((tmp_path / "journal").glob("proxy-*.jsonl"))
    assert parquet, "compaction wrote Parquet"
    assert any(p.stat().st_size == 0 for p in slots), "compacted slots were emptied"
    assert len(slots) < 12, "emptied slots are reused"
    assert count(tmp_path) == (120, 120)
    assert not list((tmp_path / "journal" / "parquet").rglob("*.slots")), "retirements finished"


def test_relaxed_durability_and_bad_settings(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="durability must be one of full, strict, relaxed"):
        Journal(tmp_path, durability="sometimes")
    with Journal(tmp_path, durability="relaxed", seal_interval=0.01) as j:
        j.write(events(4))
    assert count(tmp_path) == (4, 4)
    line = next(p for p in (tmp_path / "journal").glob("proxy-*.jsonl") if p.stat().st_size).read_bytes().splitlines()[0]
    assert set(orjson.loads(line)) == {"id", "type", "ts", "receipt_id", "writer", "seq", "data"}
