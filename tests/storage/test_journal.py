"""The journal on its own: recovery after a crash, sequence numbers, folding without gaps."""
import time

import orjson

from receipts.storage import db
from receipts.storage.journal import Journal
from receipts.storage.records import Event, uuid7
from support.proc import wait_for


def events(n, kind="request"):
    return [Event(kind, uuid7(), {"logical_id": "x", "method": "POST", "n": i}) for i in range(n)]


def count(data, sql="SELECT count(*), count(DISTINCT id) FROM events"):
    with db.connect(data) as con:
        return con.execute(sql).fetchone()


def sealed(j: Journal) -> bool:
    """The writer's open segment is empty: what was written is sealed (visible to readers)."""
    try:
        return (j.open_dir / f"{j.writer}.jsonl").stat().st_size == 0
    except FileNotFoundError:  # (between the seal's rename and the new open segment)
        return False


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
        wait_for(lambda: count(tmp_path) == (5, 5), timeout=10, interval=0.02)  # sealed by the running writer
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


def test_the_fold_empties_folded_segments_and_writers_reuse_them(tmp_path):
    with Journal(tmp_path, seal_interval=0.01, compact_after=3, compact_grace=0.2) as j:
        for _ in range(12):
            j.write(events(10))
            wait_for(lambda: sealed(j), timeout=10, interval=0.01)  # each write its own segment
            assert count(tmp_path) == (count(tmp_path)[0],) * 2, "no duplicate is ever visible"
        # a fold, and the grace of its segments: a folded segment emptied
        wait_for(lambda: any(p.stat().st_size == 0 for p in (tmp_path / "journal").glob("proxy-*.jsonl")),
                 timeout=15, interval=0.05)
        j.write(events(10))
        wait_for(lambda: count(tmp_path) == (130, 130), timeout=15, interval=0.05)  # sealed, in a reused slot
    tables = list((tmp_path / "tables" / "events").glob("*.parquet"))
    slots = sorted((tmp_path / "journal").glob("proxy-*.jsonl"))
    assert tables, "the fold wrote Parquet"
    assert any(p.stat().st_size == 0 for p in slots), "folded segments were emptied"
    assert len(slots) < 13, "emptied segments are reused"
    assert count(tmp_path) == (130, 130)


def test_a_writer_that_does_not_fold_seals_and_leaves_the_fold_to_others(tmp_path):
    """`receipts verify --once` writes with fold=False: its segments are sealed as ever (the writer keeps
    going after each seal), nothing is folded by it, and a reader folds them on the fly."""
    with Journal(tmp_path, "verifier", seal_interval=0.01, compact_after=1, fold=False) as j:
        for _ in range(5):
            j.write(events(10, "check"))
            wait_for(lambda: sealed(j), timeout=10, interval=0.01)  # sealed (and the writer goes on)
        assert j._thread.is_alive(), "the writer survived its seals"
    assert len(list((tmp_path / "journal").glob("verifier-*.jsonl"))) >= 2, "segments were sealed"
    assert not (tmp_path / "tables" / "manifest.json").exists(), "this writer folded nothing"
    assert count(tmp_path) == (50, 50)


def test_relaxed_durability_and_bad_settings(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="durability must be one of full, strict, relaxed"):
        Journal(tmp_path, durability="sometimes")
    with Journal(tmp_path, durability="relaxed", seal_interval=0.01) as j:
        j.write(events(4))
    assert count(tmp_path) == (4, 4)
    line = next(p for p in (tmp_path / "journal").glob("proxy-*.jsonl") if p.stat().st_size).read_bytes().splitlines()[0]
    assert set(orjson.loads(line)) == {"id", "type", "ts", "receipt_id", "writer", "seq", "data"}


def test_after_a_failed_fsync_the_descriptor_is_never_trusted_again(tmp_path, monkeypatch, fault_report):
    """The fault is INJECTED: os.fsync of the open segment fails once with EIO (a real failing disk cannot be
    made here). What must hold, as PostgreSQL does it: paid (fsync'd) appends fail until an fsync succeeds
    on a new file; nothing written is lost or doubled; the old descriptor is not fsync'd again."""
    import errno
    import os

    real_fsync, calls = os.fsync, []
    with Journal(tmp_path, seal_interval=3600) as j:
        j.write(events(3))
        bad_fd = j._fd

        def failing_fsync(fd):
            calls.append(fd)
            if fd == bad_fd:
                raise OSError(errno.EIO, "Input/output error")
            return real_fsync(fd)

        monkeypatch.setattr(os, "fsync", failing_fsync)
        fut = j.append(events(2), fsync=True)
        try:
            fut.result(5)
            raise AssertionError("an append whose fsync failed must fail")
        except OSError as exc:
            assert "fsync" in str(exc)
        wait = time.monotonic() + 5
        while j.broken and time.monotonic() < wait:
            time.sleep(0.02)
        assert not j.broken, "the journal rebuilt itself on a fresh file"
        assert j._fd != bad_fd and calls.count(bad_fd) == 1, "the failed descriptor was never fsync'd again"
        j.write(events(4))
    assert count(tmp_path) == (9, 9), "the 3 before, the 2 of the failed fsync (kept, not lost) and the 4 after"
    assert count(tmp_path, "SELECT min(seq), max(seq), count(DISTINCT seq) FROM events") == (1, 9, 9)
    fault_report("fsync failure (injected)", paid_append_failed=1, fsyncs_of_failed_descriptor_after=0,
                 events_kept=9, events_lost=0, duplicated=0)


def test_a_broken_journal_refuses_every_append_until_rebuilt(tmp_path):
    import shutil

    with Journal(tmp_path / "d", seal_interval=3600) as j:
        j.write(events(1))
        shutil.rmtree(tmp_path / "d")
        for fsync in (True, False):
            try:
                j.append(events(1), fsync=fsync).result(5)
                raise AssertionError("nothing is written into a removed directory")
            except OSError as exc:
                assert "disappeared" in str(exc)
        (tmp_path / "d").mkdir()
        deadline = time.monotonic() + 5
        while j.broken and time.monotonic() < deadline:
            time.sleep(0.05)
        j.write(events(2))
    assert count(tmp_path / "d") == (3, 3), "the event written before the removal was kept from the open descriptor"
