"""The read cache of `receipts serve` (storage/cache.py) always holds exactly the views' rows: after its
first build, and after every incremental refresh while real journal writers append, seal and compact."""
import random
import time

import orjson
import pytest

from storage import cache as C
from storage import db
from storage.journal import Journal
from storage.records import Event

TABLES = C.TABLES


def rows(con, table):
    """A table's rows, comparable: lists sorted (`ids` order is not defined), rows sorted."""
    out = []
    for r in con.execute(f"SELECT * FROM {table}").fetchall():
        out.append(tuple(tuple(sorted(map(str, x))) if isinstance(x, list) else x for x in r))
    return sorted(out, key=repr)


def assert_equal_to_views(cache, data):
    with db.connect(data) as views, cache.reading() as cached:
        for t in TABLES:
            want, got = rows(views, t), rows(cached, t)
            assert len(got) == len(want), f"{t}: {len(got)} cached rows, the view has {len(want)}"
            assert got == want, f"{t} differs from the view: " + _first_difference(cached, t, got, want)
        ids = cached.execute("SELECT count(*) FROM ids WHERE h <> hash(id)").fetchone()[0]
        assert ids == 0
        n = cached.execute("SELECT count(DISTINCT receipt_id) FROM ids").fetchone()[0]
        assert n == len(want := rows(views, "receipts"))


def _first_difference(con, table, got, want):
    cols = [d[0] for d in con.execute(f"SELECT * FROM {table} LIMIT 0").description]
    extra, missing = sorted(set(got) - set(want), key=repr), sorted(set(want) - set(got), key=repr)
    if extra and missing:
        return repr([(c, a, b) for c, a, b in zip(cols, extra[0], missing[0]) if a != b])
    return f"{len(extra)} rows more, {len(missing)} fewer: {(extra or missing)[0]!r}"


@pytest.fixture(scope="module")
def synthetic_events(tmp_path_factory):
    """The events of a small synthetic journal (every kind of call, sessions, checks), oldest first."""
    from testbed.synthetic import generate

    src = tmp_path_factory.mktemp("synthetic")
    generate(src, 900, seed=7, days=1.0)
    with db.connect(src) as con:
        got = con.execute("SELECT id, type, ts, receipt_id, data FROM events ORDER BY ts, id").fetchall()
    return [Event(t, rid, orjson.loads(d), ts, i) for i, t, ts, rid, d in got]


def test_the_first_build_equals_the_views_in_small_buckets(tmp_path, monkeypatch):
    from testbed.synthetic import generate

    generate(tmp_path / "data", 3000, seed=3, days=3.0)  # one Parquet file a day: calls span files
    monkeypatch.setattr(C, "BUCKET_ATTEMPTS", 20)       # the calls spanning files recomputed in many buckets
    monkeypatch.setattr(C, "GROUP_BYTES", 1)            # and one Parquet file folded at a time
    staged = []
    monkeypatch.setattr(C.ReadCache, "_buckets", lambda self, cur, n, f=C.ReadCache._buckets: (staged.append(n), f(self, cur, n)))
    cache = C.ReadCache(tmp_path / "data", tmp_path / "cache.duckdb").open()
    try:
        cache.build()
        assert cache.state == "ready" and cache.version == 1
        assert staged and staged[0] > 10, "the calls spanning files went through the staged buckets"
        assert_equal_to_views(cache, tmp_path / "data")
    finally:
        cache.close()


def test_incremental_refreshes_equal_the_views_while_writers_seal_and_compact(tmp_path, synthetic_events):
    data = tmp_path / "data"
    rnd = random.Random(5)
    # the verifier's events come from their own writer; some answers are sealed before their requests
    calls = [e for e in synthetic_events if e.type != "check"]
    checks = [e for e in synthetic_events if e.type == "check"]
    chunks = [calls[i:i + 150] for i in range(0, len(calls), 150)]
    for chunk in chunks[::3]:
        rnd.shuffle(chunk)
    proxy = Journal(data, "proxy", seal_interval=0.02, compact_after=3, compact_grace=0.3).start()
    verifier = Journal(data, "verifier", seal_interval=0.02, compact_after=2, compact_grace=0.3).start()
    cache = C.ReadCache(data, tmp_path / "cache.duckdb").open()
    try:
        cache.build()
        versions = [cache.version]
        for i, chunk in enumerate(chunks):
            proxy.write(chunk)
            if i % 2:
                verifier.write(checks[: len(checks) * (i + 1) // len(chunks)])
                checks = checks[len(checks) * (i + 1) // len(chunks):]
            time.sleep(0.1)
            if i % 3 == 2:
                cache.refresh()
                assert_equal_to_views(cache, data)
                versions.append(cache.version)
        verifier.write(checks)
        time.sleep(1.0)  # sealed, compacted, and the compacted slots emptied
        parquet = [p for p in (data / "journal" / "parquet").rglob("*.parquet") if p.name != "_anchor.parquet"]
        assert len(parquet) >= 3, "compaction ran during the test"
        done = cache.refresh()
        assert done.new_events > 0 and done.recomputed > 0
        assert_equal_to_views(cache, data)
        assert versions == sorted(versions) and cache.version > versions[0]
        assert cache.refresh().new_events == 0, "nothing is taken in twice"
    finally:
        proxy.close()
        verifier.close()
        cache.close()
    # a restart resumes from the cache file: no rebuild, and what arrived meanwhile is taken in
    with Journal(data, "proxy", seal_interval=0.02) as again:
        again.write([Event("check", synthetic_events[0].receipt_id,
                           {"checks": [{"check": "verdict", "result": "failed", "status": "failed",
                                        "reason": "late_news"}]})])
        time.sleep(0.2)
    cache = C.ReadCache(data, tmp_path / "cache.duckdb").open()
    try:
        assert cache.state == "ready", "the cache file is reused"
        refresh = cache.refresh()
        assert refresh.new_events == 1 and refresh.recomputed >= 1
        assert_equal_to_views(cache, data)
    finally:
        cache.close()


def test_a_cache_of_another_journal_or_views_version_is_rebuilt(tmp_path, synthetic_events):
    for name in ("a", "b"):
        with Journal(tmp_path / name, "proxy", seal_interval=0.02) as j:
            j.write(synthetic_events[:40] if name == "a" else synthetic_events[40:90])
    path = tmp_path / "cache.duckdb"
    first = C.ReadCache(tmp_path / "a", path).open()
    first.build()
    first.close()
    other = C.ReadCache(tmp_path / "b", path).open()
    try:
        assert other.state == "building", "another journal: built again"
        other.build()
        assert_equal_to_views(other, tmp_path / "b")
    finally:
        other.close()


def test_a_journal_replaced_at_the_same_path_rebuilds_the_cache(tmp_path):
    from testbed.synthetic import generate

    data = tmp_path / "data"
    generate(data, 300, seed=1, days=1.0)
    cache = C.ReadCache(data, tmp_path / "cache.duckdb").open()
    try:
        cache.build()
        import shutil
        shutil.rmtree(data / "journal")
        generate(data, 200, seed=2, days=1.0)  # another journal where the first was
        cache.refresh()
        assert cache.state == "ready"
        assert_equal_to_views(cache, data)
    finally:
        cache.close()
    shutil.rmtree(data / "journal")
    generate(data, 100, seed=3, days=1.0)
    again = C.ReadCache(data, tmp_path / "cache.duckdb").open()
    try:
        assert again.state == "building", "another journal (its anchor is another file): built again"
        again.build()
        assert_equal_to_views(again, data)
    finally:
        again.close()
