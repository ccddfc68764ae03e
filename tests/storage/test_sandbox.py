"""`receipts sql` and every DuckDB connection the project opens are read-only and confined, tried as an
attacker would: each form below (reading files outside the journal, writing files, importing a
database, loading extensions, reaching URLs, changing or unlocking the settings, several statements at
once) is refused — through the real `receipts sql` process (a one-line `Error: …`, exit 1) and through
the Python connections (a DuckDB error) — and the file system shows it: no sentinel's content is ever
printed, no file appears or changes anywhere under the test's directory or in $HOME."""
import hashlib
import os
import subprocess
import uuid
from datetime import datetime, timedelta, timezone

import duckdb
import pytest

from receipts.storage import db, queries
from receipts.storage.journal import Journal
from receipts.storage.records import Event, uuid7
from support.proc import BIN

SENTINEL = "sentinel-" + uuid.uuid4().hex  # the content of every file that must stay unread

# Each form is refused by `receipts sql`. {…} are filled in per test: `journal` is the data's journal,
# `outside` a directory beside the data, `ca` the proxy CA's private key, `evil` a directory holding
# schema.sql/load.sql that would create a table and write a file if it were imported.
FORMS = [
    # reading files outside the journal
    "SELECT * FROM read_text('{outside}/secret.txt')",
    "SELECT * FROM read_blob('{ca}')",
    "SELECT * FROM read_text('/etc/shadow')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_csv('{outside}/secret.txt', header = false)",
    "SELECT * FROM read_json('{outside}/*.json')",
    "SELECT * FROM read_parquet('{outside}/*.parquet')",
    "SELECT * FROM parquet_metadata('{outside}/x.parquet')",
    "SELECT * FROM sniff_csv('{outside}/secret.txt')",
    "SELECT * FROM glob('/root/*')",
    "SELECT * FROM glob('{outside}/*')",
    "SELECT * FROM glob('~/*')",
    "SELECT * FROM read_text('{journal}/../ca/mitmproxy-ca.pem')",
    "SELECT * FROM read_text('.tmp/secret.txt')",       # DuckDB's default spill directory is allowed
    "SELECT content FROM read_text('{journal}/*.jsonl')",  # the snapshot is all `receipts sql` reads
    "SELECT getenv('RECEIPTS_TEST_SENTINEL')",
    "SELECT * FROM read_csv('https://example.com/x.csv')",
    "SELECT * FROM read_parquet('s3://bucket/x.parquet')",
    "SELECT * FROM read_json('http://127.0.0.1:9/x.json')",
    "SELECT * FROM duckdb_secrets()",
    "SELECT * FROM query('ATTACH ''{outside}/q.duckdb''')",
    # importing a database: runs the SQL files of a directory
    "PRAGMA import_database('{evil}')",
    "IMPORT DATABASE '{evil}'",
    # writing files
    "COPY (SELECT 1) TO '{outside}/copy.csv'",
    "COPY (SELECT 'forged') TO '{journal}/proxy-999999.jsonl'",
    "COPY receipts TO '{outside}/receipts.parquet' (FORMAT parquet)",
    "EXPORT DATABASE '{outside}/exported'",
    "EXPLAIN ANALYZE COPY (SELECT 1) TO '{journal}/explained.jsonl'",
    "EXPLAIN (ANALYZE, FORMAT json) COPY (SELECT 1) TO '{outside}/explained.csv'",
    "PRAGMA profiling_output = '{outside}/profile.json'",
    "PRAGMA enable_profiling",
    "SET enable_profiling = 'json'",
    # several statements, and a second one hidden after a comment
    "SELECT 1; COPY (SELECT 1) TO '{outside}/second.csv'",
    "SELECT 1 /* ; */ ; ATTACH '{outside}/hidden.duckdb'",
    "SELECT 1 -- x\n; SELECT * FROM read_text('{outside}/secret.txt')",
    # other databases
    "ATTACH '{outside}/attached.duckdb' AS a",
    "ATTACH ':memory:' AS m",
    "DETACH memory",
    "USE memory",
    # extensions
    "INSTALL httpfs",
    "FORCE INSTALL httpfs",
    "LOAD httpfs",
    "LOAD '{outside}/evil.duckdb_extension'",
    "UPDATE EXTENSIONS",
    "CALL install_extension('httpfs')",
    # settings: the sandbox's own, and any other
    "SET enable_external_access = true",
    "SET GLOBAL enable_external_access = true",
    "RESET enable_external_access",
    "SET lock_configuration = false",
    "RESET lock_configuration",
    "SET allowed_directories = ['/']",
    "SET allowed_paths = ['/etc/shadow']",
    "SET temp_directory = '{outside}'",
    "SET threads = 1",
    "PRAGMA threads = 1",
    "SET VARIABLE x = 1",
    "CALL enable_logging()",
    "SELECT * FROM enable_logging()",
    "SELECT * FROM system.main.truncate_duckdb_logs()",
    "CALL pragma_version()",
    # changing the catalog
    "CREATE TABLE t AS SELECT 1",
    "CREATE VIEW v AS SELECT * FROM read_text('{outside}/secret.txt')",
    "CREATE OR REPLACE VIEW receipts AS SELECT 1 AS receipt_id",
    "CREATE OR REPLACE MACRO m() AS TABLE SELECT * FROM read_text('{outside}/secret.txt')",
    "CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 'v')",
    "DROP VIEW calls",
    "INSERT INTO events SELECT * FROM events",
    "PREPARE p AS SELECT 1",
    "BEGIN",
    "CHECKPOINT",
    "VACUUM",
]

# What the sandbox alone must stop, on a Python connection that runs anything it is given (no statement
# check): every form that opens a file, reaches a URL, loads an extension or changes a setting.
SANDBOX_FORMS = [
    "SELECT * FROM read_text('{outside}/secret.txt')",
    "SELECT * FROM read_blob('{ca}')",
    "SELECT * FROM read_text('/etc/shadow')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM glob('/root/*')",
    "SELECT * FROM glob('{outside}/*')",
    "SELECT * FROM read_text('{journal}/../ca/mitmproxy-ca.pem')",
    "SELECT * FROM read_text('.tmp/secret.txt')",
    "SELECT * FROM read_csv('https://example.com/x.csv')",
    "PRAGMA import_database('{evil}')",
    "IMPORT DATABASE '{evil}'",
    "COPY (SELECT 1) TO '{outside}/copy.csv'",
    "EXPORT DATABASE '{outside}/exported'",
    "EXPLAIN ANALYZE COPY (SELECT 1) TO '{outside}/explained.csv'",
    "ATTACH '{outside}/attached.duckdb' AS a",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "RESET lock_configuration",
    "SET allowed_directories = ['/']",
    "SET temp_directory = '{outside}'",
    "PRAGMA profiling_output = '{outside}/profile.json'",
    # (not `CALL enable_logging()`: DuckDB 1.5.5 runs it despite the lock, in memory, and writes no file
    # outside the sandbox, as the fingerprint below checks; `receipts sql` refuses it by name)
    "CREATE VIEW v AS SELECT * FROM read_text('{outside}/secret.txt')",
]
# ... and on a connection without the journal (`receipts sql`'s, an export's), writing into it too
JOURNAL_WRITES = [
    "COPY (SELECT 'forged') TO '{journal}/proxy-999999.jsonl'",
    "SELECT * FROM read_text('{journal}/*.jsonl')",
]


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A data directory with a few calls, sentinels all around it, and a home and working directory of
    its own (where INSTALL would write, and DuckDB's default spill directory)."""
    data, outside, evil, home, cwd = (tmp_path / n for n in ("data", "outside", "evil", "home", "cwd"))
    for d in (outside, evil, home, cwd / ".tmp", data / "ca"):
        d.mkdir(parents=True)
    for f in (outside / "secret.txt", data / "ca" / "mitmproxy-ca.pem", home / "secret.txt", cwd / ".tmp" / "secret.txt"):
        f.write_text(SENTINEL + "\n")
    (outside / "secret.json").write_text(f'{{"s": "{SENTINEL}"}}\n')
    with duckdb.connect() as con:
        con.execute(f"COPY (SELECT '{SENTINEL}' AS s) TO '{outside / 'x.parquet'}' (FORMAT parquet)")
    (evil / "schema.sql").write_text("CREATE TABLE pwned (x VARCHAR);\n")
    (evil / "load.sql").write_text(f"COPY (SELECT 'pwned') TO '{outside / 'pwned.csv'}';\n")
    with Journal(data, seal_interval=3600) as j:
        for i in range(3):
            rid = uuid7()
            j.write([Event("request", rid, {"logical_id": rid, "method": "POST", "host": "api.example", "path": "/v1/x",
                                            "app": f"app-{i}", "model": "m"}),
                     Event("response", rid, {"status": 200, "model": "m", "usage": {"total_tokens": 7}})])
    values = {"journal": data / "journal", "outside": outside, "ca": data / "ca" / "mitmproxy-ca.pem", "evil": evil}
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RECEIPTS_TEST_SENTINEL", SENTINEL)
    return {"root": tmp_path, "data": data, "cwd": cwd, "home": home, "fill": lambda form: form.format(**values)}


def fingerprint(root) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def sql(world, query, *flags):
    return subprocess.run([str(BIN / "receipts"), "sql", *flags, "--data", str(world["data"]), query],
                          capture_output=True, text=True, timeout=60, cwd=world["cwd"], env=os.environ.copy())


def test_receipts_sql_refuses_every_form_in_one_line_and_nothing_is_read_or_written(world, fault_report):
    assert len(FORMS) >= 23
    before = fingerprint(world["root"])
    for form in FORMS:
        query = world["fill"](form)
        out = sql(world, query)
        assert out.returncode == 1, (query, out.stdout, out.stderr)
        assert out.stderr.startswith("Error: ") and len(out.stderr.strip().splitlines()) == 1, (query, out.stderr)
        assert out.stdout == "" and SENTINEL not in out.stderr, query
        assert fingerprint(world["root"]) == before, f"{query} changed the file system"
    fault_report("the SQL sandbox (receipts sql)", forms_tried=len(FORMS), refused=len(FORMS), files_read_or_written=0)


def test_receipts_sql_still_answers_queries_and_harmless_pragmas(world):
    ok = {"SELECT count(*) AS n FROM receipts": "3",
          "SELECT count(*) AS n FROM calls c JOIN receipts r ON r.receipt_id = c.logical_id WHERE c.status = 200": "3",
          "FROM events SELECT count(*) AS n": "6",
          "WITH x AS (SELECT app FROM calls) SELECT count(DISTINCT app) AS n FROM x": "3",
          "SELECT current_setting('enable_external_access')::VARCHAR AS n": "false",
          "SELECT current_setting('lock_configuration')::VARCHAR AS n": "true"}
    for query, want in ok.items():
        out = sql(world, query, "--csv")
        assert out.returncode == 0 and out.stdout.split() == ["n", want], (query, out.stderr)
    for query, word in {"PRAGMA table_info('receipts')": "receipt_id", "PRAGMA version": "v", "PRAGMA show_tables": "receipts",
                        "DESCRIBE calls": "started_at", "SUMMARIZE SELECT 1 AS one": "one",
                        "EXPLAIN SELECT * FROM receipts": "physical_plan",
                        "EXPLAIN ANALYZE SELECT count(*) FROM calls": "analyzed_plan",
                        "/* a comment */ SELECT 'x' AS y -- another": "x"}.items():
        out = sql(world, query)
        assert out.returncode == 0 and word in out.stdout, (query, out.stderr)


def test_the_python_connections_are_sandboxed_too(world):
    before = fingerprint(world["root"])
    for journal in (True, False):
        with db.connect(world["data"], journal=journal) as con:
            assert con.execute("SELECT count(*) FROM receipts").fetchone() == (3,)
            for form in SANDBOX_FORMS + ([] if journal else JOURNAL_WRITES):
                with pytest.raises(duckdb.Error) as refused:
                    con.execute(world["fill"](form)).fetchall()
                assert SENTINEL not in str(refused.value)
            assert con.execute("SELECT current_setting('enable_external_access')").fetchone() == (False,)
    with db.connect(world["data"], views=False) as con:  # the verifier's: the tables alone
        assert con.execute("SELECT count(*) FROM folded.events").fetchone() == (6,)
        with pytest.raises(duckdb.Error):
            con.execute(world["fill"]("SELECT * FROM read_text('{outside}/secret.txt')")).fetchall()
    assert fingerprint(world["root"]) == before


def test_an_export_connection_writes_its_own_file_and_nothing_else(world):
    out = world["root"] / "outside" / "export.csv"
    out.touch()
    with db.connect(world["data"], journal=False, write=[out]) as con:
        con.execute(f"COPY (SELECT count(*) FROM receipts) TO '{out}' (FORMAT csv, USE_TMP_FILE false)")
        for other in (out.with_name("export.csv.tmp"), out.with_name("other.csv"), world["data"] / "journal" / "x.jsonl"):
            with pytest.raises(duckdb.PermissionException):
                con.execute(f"COPY (SELECT 1) TO '{other}' (FORMAT csv)")
            assert not other.exists()
    assert out.read_text().split() == ["count_star()", "3"]


def test_the_snapshots_of_receipts_serve_are_sandboxed(world):
    """A snapshot of `receipts serve` (its `receipts` a table of the view's rows) is a connection of
    storage/db.py, confined like the others; one receipt's scratch database lives in its memory."""
    from receipts.web.snapshot import Snapshots

    before = fingerprint(world["root"])
    snaps = Snapshots(world["data"])
    try:
        snaps.refresh()
        with snaps.reading() as r:
            assert r.con.execute("SELECT count(*) FROM receipts").fetchone() == (3,)
            one = r.con.execute("SELECT min(receipt_id) FROM receipts").fetchone()[0]
            assert queries.receipt(r.con, one) == queries.one_receipt(r.con, one)  # (row and details)
            for form in SANDBOX_FORMS + JOURNAL_WRITES:
                with pytest.raises(duckdb.Error):
                    r.con.execute(world["fill"](form)).fetchall()
    finally:
        snaps.close()
    assert fingerprint(world["root"]) == before


def test_the_statement_check_names_what_it_refuses():
    con = duckdb.connect()
    refused = {"SELECT 1; SELECT 2": "one statement at a time, not 2",
               "PRAGMA import_database('/x')": "PRAGMA import_database is not allowed here",
               "EXPLAIN ANALYZE COPY (SELECT 1) TO '/x'": "EXPLAIN is allowed here only of a SELECT",
               "COPY (SELECT 1) TO '/x'": "only queries are allowed here, not COPY statements",
               "-- nothing": "no SQL statement given"}
    for query, words in refused.items():
        with pytest.raises(db.QueryRejected, match=words):
            db.check_read_only(con, query)
    # what runs is what was checked (DuckDB 1.5.5 hands a PRAGMA back as the SELECT it rewrote it into)
    for query, ending in {"SELECT 1": "SELECT 1", "PRAGMA version": "pragma_version()",
                          "EXPLAIN (FORMAT json) SELECT 'é'": "SELECT 'é'",
                          "/* é */ PRAGMA table_info('x')": "pragma_table_info('x')"}.items():
        assert db.check_read_only(con, query).query.strip().rstrip(";").endswith(ending)


def test_parameters_inlined_as_literals_are_the_values_and_nothing_more():
    """The commands inline their parameters (storage/db.py `inline`): an id typed into the web page's
    search is captured content's twin. Each text comes back exactly, and nothing in it becomes SQL."""
    nasty = ["plain", "it's", "''", "\\", "\\'", "'); SELECT 1; --", "-- x", "/* x */", "$b", "$$", "a\nb\r\t",
             "x\x00y", "\u202e\u0301é💸", "0xAbC", " padded ", ""]
    with duckdb.connect() as con:
        for text in nasty:
            assert con.execute("SELECT " + db.literal(text)).fetchall() == [(text,)], text
            assert con.execute(db.inline("SELECT $v = ?", {"v": text}), [text]).fetchone() == (True,), text
        assert con.execute("SELECT " + db.literal(nasty)).fetchone()[0] == nasty
        long = [t for t in nasty if "\n" not in t] * 10  # (past _SPLIT_ABOVE: one string, cut into the list)
        assert "string_split" in db.literal(long) and "string_split" not in db.literal(nasty * 10)
        for values in (long, nasty * 10, [], [""]):
            assert con.execute("SELECT " + db.literal(values)).fetchone()[0] == values
        assert con.execute("SELECT " + db.literal("bad\udc80")).fetchone()[0] == "bad?"  # (not UTF-8: replaced)
        assert con.execute(db.inline("SELECT $a, $b", {"a": "$b", "b": "x"})).fetchone() == ("$b", "x")
        moment = datetime(2026, 12, 5, 9, 30, 1, 250000, tzinfo=timezone(timedelta(hours=2)))
        assert con.execute("SELECT " + db.literal(moment)).fetchone()[0] == datetime(2026, 12, 5, 7, 30, 1, 250000)
        assert con.execute("SELECT " + db.literal(2**70) + ", " + db.literal(None)).fetchone() == (2**70, None)
    with pytest.raises(TypeError):
        db.literal(float("nan"))
    with pytest.raises(KeyError):
        db.inline("SELECT $missing", {"other": 1})
