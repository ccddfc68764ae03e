"""The fold: events become typed rows once; readers read the tables plus a bounded tail; the views over
the tables equal the views as they were before (the oracle); migration, kill -9 and concurrency."""
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import orjson
import pytest

from receipts.storage import db, fold, queries
from receipts.storage.journal import Journal
from receipts.storage.records import Event, uuid7
from testbed.synthetic import generate
from support.oracle import assert_same_as_before, differences

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def counts(data):
    with db.connect(data) as con:
        return con.execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone()


def tail_events(data) -> int:
    """How many events a reader reads from JSON (the tail): every other row comes from the tables."""
    import duckdb

    with duckdb.connect() as con:
        return db.bind(con, data, views=False)


def paid_call(rid, amount="1000000000000000000001", decimals=18):
    return [Event("request", rid, {"logical_id": rid, "host": "h", "method": "POST", "path": "/v1",
                                   "payment": {"scheme": "exact", "amount": amount, "decimals": decimals,
                                               "payer": "0xa", "network": "eip155:8453"}}),
            Event("response", rid, {"status": 200, "settlement": {"header": "PAYMENT-RESPONSE", "tx_hash": "0xt" + rid,
                                                                  "success": True, "amount": amount}})]


def test_views_over_the_tables_equal_the_views_before_the_fold(tmp_path):
    generate(tmp_path, 3000, seed=3)  # every call kind, in the journal format before the fold
    assert_same_as_before(tmp_path)   # all of it read as the tail
    assert fold.fold(tmp_path) > 7000
    assert tail_events(tmp_path) == 0
    assert_same_as_before(tmp_path)   # all of it from the tables
    with Journal(tmp_path, "proxy", seal_interval=3600) as j:  # some folded, some in the tail
        j.write(paid_call("late-1") + paid_call("late-2"))
        j._seal_if_due(force=True)
        fold.fold(tmp_path)
        j.write([Event("check", "late-1", {"checks": [{"check": "verdict", "status": "passed", "result": "pass"}]})])
        j._seal_if_due(force=True)
        assert tail_events(tmp_path) == 1
        assert_same_as_before(tmp_path)


def _forge(data, table, sql_replace, where):
    """Rewrite one folded file in place (what the comparison must notice)."""
    import duckdb

    (f,) = fold.Manifest.load(data).paths(data, table)[:1]
    with duckdb.connect() as con:
        con.execute(f"COPY (SELECT * REPLACE ({sql_replace}) FROM read_parquet('{f}')) TO '{f}.x' (FORMAT parquet)",
                    {"w": where})
    os.replace(f + ".x", f)


def test_the_oracle_comparison_can_fail(tmp_path):
    generate(tmp_path, 300, seed=4)
    fold.fold(tmp_path)
    assert not differences(tmp_path)
    with db.connect(tmp_path, views=False) as con:
        (event,) = con.execute("SELECT event_id FROM folded.settlements LIMIT 1").fetchall()[0]
    _forge(tmp_path, "settlements", "CASE WHEN event_id = $w THEN '0xforged' ELSE tx_hash END AS tx_hash", event)
    assert set(differences(tmp_path)) == {"settlements"}
    with db.connect(tmp_path) as con:
        (rid,) = con.execute("SELECT receipt_id FROM receipts WHERE amount > 0 LIMIT 1").fetchall()[0]
    _forge(tmp_path, "receipts", "CASE WHEN receipt_id = $w THEN amount + 1 ELSE amount END AS amount", rid)
    assert set(differences(tmp_path)) == {"settlements", "receipts"}


def test_money_stays_exact_in_pandas_and_polars(tmp_path):
    with Journal(tmp_path, seal_interval=0.01) as j:
        j.write(paid_call("r1"))
    import receipts

    con = receipts.connect(tmp_path)
    row = con.execute("SELECT amount, amount_decimal, decimals FROM receipts").fetchall()[0]
    assert row == (1000000000000000000001, "1000.000000000000000001", 18)
    df = con.sql("SELECT amount_decimal, amount::VARCHAR AS units FROM receipts").df()
    assert df.amount_decimal[0] == "1000.000000000000000001" and df.units[0] == "1000000000000000000001"
    pl = con.sql("SELECT amount, amount_decimal FROM receipts").pl()
    assert pl["amount_decimal"][0] == "1000.000000000000000001" and int(pl["amount"][0]) == 1000000000000000000001
    assert con.execute("SELECT sum(amount) FROM receipts").fetchone()[0] == 1000000000000000000001


def test_a_journal_from_before_the_fold_is_migrated_once_with_progress(tmp_path, monkeypatch):
    monkeypatch.setattr(fold, "BATCH_BYTES", 1_000_000)  # several steps, so progress is shown
    generate(tmp_path, 2000, seed=5)
    want = counts(tmp_path)
    # an old compaction interrupted in its grace period: a segment also held by its Parquet file
    legacy = sorted((tmp_path / "journal" / "parquet").glob("date=*/*.parquet"))[0]
    import duckdb

    with duckdb.connect() as con:
        rows = con.execute(f"SELECT id, type, ts, receipt_id, writer, seq, data FROM read_parquet('{legacy}') "
                           "LIMIT 5").fetchall()
    seg = tmp_path / "journal" / "proxy-000001.jsonl"
    seg.write_bytes(b"".join(orjson.dumps(dict(zip(("id", "type", "ts", "receipt_id", "writer", "seq", "data"),
                                                   (*r[:6], orjson.loads(r[6]))))) + b"\n" for r in rows))
    legacy.with_name(legacy.name + ".slots").write_bytes(orjson.dumps({seg.name: rows[0][0]}))
    assert counts(tmp_path) == want, "the copy is not counted twice by readers"
    shown = []
    assert fold.fold(tmp_path, progress=shown.append) == want[0]
    assert len(shown) > 2 and shown[-1].endswith(f"({want[0]:,} events)")
    assert not list((tmp_path / "journal" / "parquet").glob("date=*/*.parquet")), "the old files are gone"
    assert counts(tmp_path) == want and tail_events(tmp_path) == 0
    assert fold.fold(tmp_path) == 0, "nothing is folded twice"
    assert counts(tmp_path) == want


def test_a_step_beyond_the_folds_memory_limit_is_done_again_without_it(tmp_path, monkeypatch, caplog):
    """A real out-of-memory of DuckDB (the limit set far below what a step needs), not a mock: the step is
    folded again without the limit, nothing is lost or doubled, and the next fold removes what the
    failed try wrote."""
    generate(tmp_path, 1500, seed=8)
    want = counts(tmp_path)
    monkeypatch.setattr(fold, "MEMORY_LIMIT", "2MB")
    assert fold.fold(tmp_path) == want[0]
    assert "needed more than 2MB" in caplog.text
    assert counts(tmp_path) == want and tail_events(tmp_path) == 0
    monkeypatch.undo()
    fold.fold(tmp_path)
    named = {p for t in fold.TABLES + (fold.RECEIPTS,) for p in fold.Manifest.load(tmp_path).paths(tmp_path, t)}
    on_disk = {str(p.resolve()) for p in (tmp_path / "tables").glob("*/*.parquet")}
    assert on_disk <= named | {r for r in on_disk if any(x[0] in r for x in fold.Manifest.load(tmp_path).retired)}
    assert counts(tmp_path) == want


FOLD_SCRIPT = "import sys; from receipts.storage import fold; fold.BATCH_BYTES = 30_000; fold.fold(sys.argv[1])"


def test_kill_9_of_the_fold_at_any_moment_loses_and_doubles_nothing(tmp_path):
    ref, data = tmp_path / "ref", tmp_path / "data"
    generate(ref, 10000, seed=6)
    shutil.copytree(ref, data)
    fold.fold(ref)
    with db.connect(ref) as con:
        want = con.execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone()
        want_receipts = con.execute("SELECT count(*), sum(amount), count(payment_hash) FROM receipts").fetchone()
    rng = random.Random(6)
    killed = 0
    for _ in range(8):
        p = subprocess.Popen([sys.executable, "-c", FOLD_SCRIPT, str(data)], cwd=ROOT)
        time.sleep(rng.uniform(0.1, 1.0))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            killed += 1
        p.wait()
        assert counts(data) == want, "readers see every event once, whatever moment the fold died at"
    assert killed >= 3
    fold.fold(data)
    assert tail_events(data) == 0
    with db.connect(data) as con:
        assert con.execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone() == want
        assert con.execute("SELECT count(*), sum(amount), count(payment_hash) FROM receipts").fetchone() == want_receipts
    m = fold.Manifest.load(data)
    named = {n for names in m.files.values() for n in names} | {r[0].split("/")[1] for r in m.retired}
    on_disk = {p.name for p in (data / "tables").glob("*/*.parquet")}
    assert on_disk == named, "what killed folds left behind is removed"


def test_queries_stay_correct_while_two_writers_write_and_the_fold_merges_and_retires(tmp_path, monkeypatch):
    monkeypatch.setattr(fold, "MERGE_AT", 3)
    monkeypatch.setattr(fold, "FOLD_EVERY", 0.2)
    monkeypatch.setattr(fold, "RETIRE_AFTER", 0.5)
    stop, seen, errors = threading.Event(), [], []

    def read():
        while not stop.is_set():
            try:
                seen.append(counts(tmp_path))
            except Exception as exc:  # a reader must never fail
                errors.append(repr(exc))

    def write(journal, n):
        for i in range(n):
            journal.write([Event("request", uuid7(), {"logical_id": f"{journal.writer}-{i}", "method": "POST"})
                           for _ in range(20)])
            time.sleep(0.01)

    with Journal(tmp_path, "proxy", seal_interval=0.05, compact_grace=0.3) as a, \
            Journal(tmp_path, "proxy", seal_interval=0.05, compact_grace=0.3) as b:
        reader = threading.Thread(target=read)
        reader.start()
        threads = [threading.Thread(target=write, args=(j, 150)) for j in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(1.0)
        stop.set()
        reader.join()
    assert not errors, errors[:3]
    assert len(seen) > 5
    assert all(n == d for n, d in seen), "no event is ever seen twice"
    assert all(x[0] <= y[0] for x, y in zip(seen, seen[1:])), "counts never go back"
    assert counts(tmp_path) == (6000, 6000)
    assert tail_events(tmp_path) == 0, "closing writers fold what they sealed"
    m = fold.Manifest.load(tmp_path)
    assert len(m.files["requests"]) <= fold.MERGE_AT * 3, "small files were merged"
    assert (tmp_path / "receipts.duckdb").exists()


def replay_merges(file_rows: int | list[int], folds: int = 0, at: int | None = None) -> tuple[float, int]:
    """`folds` folds of `file_rows` rows each (or one fold per size listed), merged as `fold._merge` merges
    them after each fold (`at` files of a class at a time): the rows the merges wrote per row folded, and
    the most files a table had."""
    sizes = file_rows if isinstance(file_rows, list) else [file_rows] * folds
    files, written, most = [], 0, 0
    for rows in sizes:
        files.append(rows)
        while n := fold.merge_due(files, at):
            written += sum(files[-n:])
            files[-n:] = [sum(files[-n:])]
        most = max(most, len(files))
    return written / sum(sizes), most


def test_merges_write_each_row_again_a_few_times_not_once_per_merge():
    """A recorder at full speed folds a few thousand rows every 2 seconds. Merging every small file
    whenever MERGE_AT of them were there wrote a table's rows again at every merge, until the file held
    MERGE_ROWS rows: 67 times each, for 4M rows in 2,000 folds. Merging files with files of their own
    size writes each about once per size class."""
    for file_rows, folds in ((2000, 2000), (6000, 700), (20, 10000), (1, 5000)):
        again, most = replay_merges(file_rows, folds)
        assert again <= 5.5, (file_rows, again)
        assert most <= 3 * fold.MERGE_AT, (file_rows, most)
    rng = random.Random(11)
    for low, high, folds in ((200, 300, 5000), (3000, 5000, 1500), (1, 40, 10000)):  # sizes about a class boundary
        again, most = replay_merges([rng.randint(low, high) for _ in range(folds)])
        assert again <= 5.5 and most <= 4 * fold.MERGE_AT, (low, high, again, most)
    assert fold.merge_due([78_000] * 31) == 31, "a migration's files are merged into one"
    straddling = [230] * 19 + [263] + [240] * 8 + [258, 237, 54]  # (a 1M-call backlog's `errors`: classes 1 and 2)
    assert fold.merge_due(straddling) == 31, "files about a class boundary are merged all the same"
    assert fold.merge_due([230] * 3 + [263] + [240] * 3) == 0, "fewer than MERGE_AT, counting the older ones"
    assert fold.merge_due([263] + [240] * (fold.MERGE_AT - 1)) == 0, "newer small files wait for their own class"
    assert fold.merge_due([fold.MERGE_ROWS] + [10] * (fold.MERGE_AT - 1)) == 0
    assert fold.merge_due([5_000_000] + [10] * fold.MERGE_AT) == fold.MERGE_AT, "big files are left alone"


def test_the_events_files_are_merged_64_at_a_time_and_each_event_written_again_less(tmp_path, monkeypatch):
    """`events` is read whole, never looked up by an id: its files are merged 64 of a class at a time
    (fold.MERGE_AT_OF), so each event is written again about half as often as another table's rows, and
    a migration's 31 steps leave 31 files of events, and one of each other table."""
    at = fold.MERGE_AT_OF["events"]
    for file_rows, folds in ((2000, 2000), (6000, 700), (20, 10000)):
        events, most = replay_merges(file_rows, folds, at)
        others, _ = replay_merges(file_rows, folds)
        assert events <= 0.6 * others and most <= 3 * at, (file_rows, events, others, most)
    assert fold.merge_due([78_000] * 31, at) == 0 and fold.merge_due([78_000] * at, at) == at
    monkeypatch.setattr(fold, "BATCH_BYTES", 1)  # (a step a segment)
    with Journal(tmp_path, "proxy", seal_interval=3600) as j:
        for i in range(12):
            j.write(paid_call(f"call-{i}"))
            j._seal_if_due(force=True)
    fold.fold(tmp_path, grace=0)
    m = fold.Manifest.load(tmp_path)
    assert len(m.files["events"]) == 12 and len(m.files["requests"]) == 1, {t: len(f) for t, f in m.files.items()}


def test_merges_of_the_newest_files_keep_the_newest_row_of_each_receipt(tmp_path, monkeypatch):
    """Merges take the newest files only, so the kept row of a receipt in a merged file is its newest.
    The first fold keeps 20 receipts (a file of a bigger size class than the later ones, which keep one
    each), so the later merges leave it out."""
    monkeypatch.setattr(fold, "MERGE_AT", 2)
    calls = [f"call-{i}" for i in range(20)]
    with Journal(tmp_path, "proxy", seal_interval=3600) as j:
        for rid in calls:
            j.write(paid_call(rid))
        j._seal_if_due(force=True)
        fold.fold(tmp_path, grace=0)
        for n in range(12):  # one receipt's verdict changes in each fold; merges happen in between
            status = ("pending", "passed", "failed")[n % 3]
            j.write([Event("check", calls[n % 4], {"checks": [{"check": "verdict", "status": status,
                                                                "result": status, "reason": f"round-{n}"}]})])
            j._seal_if_due(force=True)
            fold.fold(tmp_path, grace=0)
    m = fold.Manifest.load(tmp_path)
    assert len(m.files[fold.RECEIPTS]) < 10 and any(r[0].startswith("receipts/") for r in m.retired)
    with db.connect(tmp_path) as con:
        kept = con.execute("SELECT receipt_id, proof_status, reason FROM receipts ORDER BY 1").fetchall()
        computed = con.execute("SELECT receipt_id, proof_status, reason FROM receipts_of(false) ORDER BY 1").fetchall()
    assert kept == computed
    assert [r[2] for r in kept if r[0] in calls[:4]] == ["round-8", "round-9", "round-10", "round-11"]


def test_the_tail_stays_bounded_while_a_writer_runs(tmp_path):
    """No fold on read: with a writer running, a reader folds only the last seconds of events itself."""
    bounds = []
    with Journal(tmp_path, "proxy", seal_interval=0.1) as j:
        for i in range(40):
            j.write([Event("request", uuid7(), {"logical_id": f"x{i}", "method": "POST"}) for _ in range(50)])
            time.sleep(0.1)
            if i % 10 == 9:
                bounds.append((tail_events(tmp_path), counts(tmp_path)[0]))
    assert bounds[-1][1] > 1500
    assert all(tail <= 50 * 10 * (fold.FOLD_EVERY + 1) for tail, _ in bounds), bounds
    assert tail_events(tmp_path) == 0


def test_the_database_file_opens_in_a_plain_duckdb(tmp_path):
    import duckdb

    with Journal(tmp_path, seal_interval=0.01) as j:
        j.write(paid_call("r1") + paid_call("r2"))
    path = db.ensure_database_file(tmp_path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*), sum(amount) FROM receipts").fetchone() == (2, 2000000000000000000002)


def test_the_first_command_on_an_old_data_directory_migrates_it_with_progress(tmp_path):
    generate(tmp_path, 1500, seed=7)
    want = counts(tmp_path)
    receipts = os.path.join(os.path.dirname(sys.executable), "receipts")
    out = subprocess.run([receipts, "sql", "--csv", "SELECT count(*) AS n, count(DISTINCT id) AS d FROM events",
                          "--data", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["n,d", f"{want[0]},{want[1]}"]
    assert "folding the journal into tables (first start since the journal format changed)" in out.stderr
    assert f"folded {want[0]:,} events" in out.stderr
    again = subprocess.run([receipts, "sql", "--csv", "SELECT count(*) AS n FROM events", "--data", str(tmp_path)],
                           capture_output=True, text=True, timeout=120)
    assert again.stdout.split() == ["n", str(want[0])] and "folding" not in again.stderr


def test_tables_of_another_version_of_the_fold_are_folded_again_from_the_events(tmp_path):
    generate(tmp_path, 500, seed=8)
    fold.fold(tmp_path)
    m = fold.Manifest.load(tmp_path)
    before = m.files["payments"]
    m.tables_version = "an older fold.sql"
    m.save(tmp_path)
    assert fold.stale(tmp_path)
    assert_same_as_before(tmp_path)  # the reader folds them again first
    m = fold.Manifest.load(tmp_path)
    assert not fold.stale(tmp_path) and m.files["payments"] != before and m.files["events"]
    assert m.receipts_version == fold.receipts_version()


def test_kept_receipts_of_another_version_of_the_views_are_computed_again_by_the_next_fold(tmp_path, monkeypatch):
    """...by the next command, in parts of KEEP_AT_ONCE calls (all at once, 1M calls took 3.2 GB), with
    progress; a session whose calls fall in two parts is whole in each."""
    generate(tmp_path, 300, seed=9)
    fold.fold(tmp_path)
    m = fold.Manifest.load(tmp_path)
    before = m.files[fold.RECEIPTS]
    m.receipts_version = "an older views.sql"
    m.save(tmp_path)
    with db.connect(tmp_path) as con:  # meanwhile every receipt is computed by the reader
        assert con.execute(f"SELECT getvariable('{db.KEPT_ONLY}')").fetchone()[0] is False
        want = con.execute("SELECT * FROM receipts ORDER BY receipt_id").fetchall()
        calls = con.execute("SELECT receipt_id, session_id FROM receipts ORDER BY receipt_id").fetchall()
    assert len(want) > 200
    at_once = 7  # (the synthetic sessions' calls are contiguous in id order: one of them falls in two parts)
    monkeypatch.setattr(fold, "KEEP_AT_ONCE", at_once)
    parts: dict[str, set[int]] = {}
    for n, (_, session) in enumerate(calls):
        parts.setdefault(session, set()).add(n // at_once)
    assert any(len(p) > 1 for s, p in parts.items() if s), "a session spans two parts"
    said: list[str] = []
    fold.catch_up(tmp_path, said.append)  # no new event: the kept rows alone are computed again
    n = -(-len(calls) // at_once)
    assert f"computed the receipts again (views.sql changed): {n}/{n} parts" in said, said
    m = fold.Manifest.load(tmp_path)
    assert m.receipts_version == fold.receipts_version() and m.files[fold.RECEIPTS] != before
    with db.connect(tmp_path) as con:
        assert con.execute(f"SELECT getvariable('{db.KEPT_ONLY}')").fetchone()[0] is True
        assert con.execute("SELECT * FROM receipts ORDER BY receipt_id").fetchall() == want


def test_every_connection_offers_the_same_tables_and_views_whatever_the_fold_has_done(tmp_path):
    """A user lists the tables in one command and reads them in the next: a fold in between (which leaves
    nothing to compute) must not take a name away."""
    def surface():
        with db.connect(tmp_path) as con:
            names = sorted(con.execute("SELECT table_schema, table_name FROM information_schema.tables").fetchall())
            for schema, name in names:  # each one can be read
                con.execute(f'SELECT count(*) FROM "{schema}"."{name}"').fetchone()
            columns = con.execute(  # (with no tail, the empty tail tables take their columns from the files)
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'folded' ORDER BY table_name, ordinal_position"
            ).fetchall()
            return names, columns, con.execute("SELECT count(*) FROM main.receipts_live").fetchone()[0]

    generate(tmp_path, 300, seed=10)
    before, columns, live = surface()  # (the journal is not folded yet: every receipt is computed)
    fold.fold(tmp_path)
    after, columns_after, live_after = surface()  # (all kept: none computed)
    assert ("main", "receipts_live") in before and live > 200
    assert after == before and live_after == 0
    assert columns_after == columns and len(columns) > 300


def test_a_query_of_receipts_alone_binds_no_other_view_when_nothing_is_computed(tmp_path):
    """`receipts sql` over `receipts` alone (db.reads_receipts_alone) connects with AT_LEAST_RECEIPTS: with
    no tail it reads the kept rows without binding views.sql, and gets what a connection with every view
    gets; with a tail, or for a scratch `receipts show` (KEPT_RECEIPTS), it falls back as bind() says."""
    generate(tmp_path, 300, seed=12)

    def defined(con, name):
        return bool(con.execute("SELECT count(*) FROM duckdb_views() WHERE schema_name = 'main' AND view_name = $n", {"n": name}).fetchone()[0])

    with db.connect(tmp_path, views=db.AT_LEAST_RECEIPTS) as con:  # a tail: every view
        assert not db.kept_only(con) and defined(con, "calls") and defined(con, "receipts")
    with db.connect(tmp_path, views=db.KEPT_RECEIPTS) as con:  # a tail: none
        assert not db.kept_only(con) and not defined(con, "calls") and not defined(con, "receipts")
    fold.fold(tmp_path)
    with db.connect(tmp_path) as con:
        want = con.execute("SELECT * FROM receipts ORDER BY receipt_id").fetchall()
        listed = queries.list_receipts(con, limit=1000)
    assert len(want) > 200
    for views in (db.AT_LEAST_RECEIPTS, db.KEPT_RECEIPTS):
        with db.connect(tmp_path, views=views) as con:
            assert db.kept_only(con) and not defined(con, "calls") and not defined(con, "events"), views
            assert con.execute("SELECT * FROM receipts ORDER BY receipt_id").fetchall() == want, views
            assert queries.list_receipts(con, limit=1000) == listed  # (`receipts list` connects so)
            assert con.execute("SELECT count(*) FROM main.receipts_live").fetchone()[0] == 0


@pytest.mark.parametrize("query, alone", [
    ("SELECT count(*) FROM receipts", True),
    ("select app_name, sum(amount) from main.receipts group by all", True),
    ("DESCRIBE receipts", True),
    ("SELECT * FROM receipts JOIN calls USING (logical_id)", False),  # a view of views.sql
    ("SELECT decimal_text(amount, decimals) FROM receipts", False),  # a macro of views.sql
    ("SELECT * FROM receipts_of(false)", False),
    ("SELECT * FROM receipts, duckdb_views()", False),  # a listing of the catalog
    ("SELECT * FROM information_schema.tables WHERE table_name = 'receipts'", False),
    ("SHOW TABLES", False),
    ("SELECT 1", False),
])
def test_which_queries_read_receipts_alone(query, alone):
    assert db.reads_receipts_alone(query) is alone


@pytest.mark.parametrize("query", [
    "SELECT * FROM calls", "FROM challenges", "FROM payments", "FROM settlements", "FROM checks", "FROM events",
    "FROM channels", "FROM sessions", "FROM receipts_of(false)", "FROM touched()", "FROM session_mates()",
    "SELECT decimal_text(amount, decimals), whole_tokens(amount, decimals) FROM payments",
    " ".join(queries.DETAILS.values()).replace("$id", "'x'").split(" SELECT")[0],
])
def test_the_views_a_query_names_are_bound_with_what_they_use(tmp_path, query):
    """A scratch database binds only the views its queries name (`db.views_sql_for`): each one runs with
    what it binds, nothing of views.sql before it."""
    generate(tmp_path, 60, seed=4)
    fold.fold(tmp_path)
    with db.connect(tmp_path, views=False) as con:
        con.execute(db.views_sql_for(query))
        con.execute(query).fetchall()


def test_the_details_of_a_receipt_bind_neither_receipts_nor_sessions():
    sql = db.views_sql_for(" ".join(queries.DETAILS.values()))
    assert "MACRO calls_of" in sql and "VIEW settlements" in sql and "MACRO payment_rows" in sql
    assert "MACRO receipts_of" not in sql and "MACRO sessions_of" not in sql and "VIEW channels" not in sql


def test_one_connection_binds_again_with_a_tail_and_without(tmp_path):
    """A verifier's passes and a fold's steps bind the same connection again: its tail tables go from
    folded on the fly (events in the tail) to shaped by the files (none) and back."""
    import duckdb

    generate(tmp_path, 50, seed=6)
    with duckdb.connect() as con:
        seen = []
        for step in range(3):
            n = db.bind(con, tmp_path)
            seen.append((n, con.execute("SELECT count(*) FROM events").fetchone()[0]))
            if step == 0:
                fold.fold(tmp_path)
            else:
                with Journal(tmp_path, "proxy", fold=False) as j:  # (sealed at close, not folded)
                    j.append([Event("request", uuid7(), {"logical_id": None, "host": "h", "path": "/v1/x"})])
    assert seen[0][0] > 0 and seen[1][0] == 0 and seen[1][1] == seen[0][1], seen  # (all folded: no tail)
    assert seen[2][0] >= 1 and seen[2][1] == seen[1][1] + 1, seen
