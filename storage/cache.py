"""The read cache of `receipts serve`: the views' rows, materialized, and kept equal to the views.

The `receipts` view folds every event of the journal; over a million calls that takes minutes, and a
page has milliseconds. So the server keeps the rows of the views it shows (`receipts`, `calls`,
`challenges`, `payments`, `settlements`, `checks`, and every id that finds a receipt) in a DuckDB
database of its own — a private file, never in the data directory, which stays untouched — built once
and then refreshed incrementally:

- **What is new** is found by file. A Parquet file never changes once it appears, and a JSON slot is only
  ever replaced by an atomic rename, so only new Parquet files and slots whose (inode, size, mtime)
  changed are read. An event is new if its id was in no slot at the previous refresh and it is in no
  Parquet file read before (compaction copies events from slots into Parquet, so most Parquet events
  have been seen already). A glob listing is not a snapshot; the rule above loses nothing to that: an
  event that one refresh missed is still in its slot, or in a Parquet file not yet read, at the next.
- **What to recompute**: the logical calls that a new event belongs to, plus every logical call of an
  OpenGradient session any of them is in (each member's row counts the session's calls). Their events
  are read back (from the slots held here and from the Parquet files that `state.loc` says hold them)
  into a TEMP `events` table that shadows the journal view, and the views' own SQL (storage/views.sql)
  runs over just those events: each view is materialized once as a TEMP table of the same name, which
  the next view then reads.
- **Replacing** their rows happens in one transaction: readers see the cache before or after a refresh.

The first build is the same recomputation over every call, in buckets of whole sessions/logical calls
staged as Parquet partitions in a temporary directory, so memory stays bounded whatever the journal size.

The cache file persists, so a restart only reads what changed since (its `state.meta` names the journal,
the version of views.sql and of this layout; any difference rebuilds it).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import duckdb

from . import db
from .journal import journal_dir
from .layout import ANCHOR_JSON, EVENT_COLUMNS, ensure_anchors, parquet_dir
from .private import make_private_dir, tighten

log = logging.getLogger("receipts.cache")

FORMAT = "1"  # bump when the tables below change
TABLES = ("receipts", "calls", "challenges", "payments", "settlements", "checks")
MATERIALIZED = ("requests", "calls", "challenges", "payments", "settlements", "checks", "sessions")
GROUP_BYTES = 96 << 20       # Parquet bytes folded at once in the first build
BUCKET_ATTEMPTS = 60_000     # attempts recomputed per bucket in large recomputations (bounded memory)
# point lookups of the pages (an ART index each; maintained by every refresh)
INDEXES = (("receipts", "receipt_id"), ("ids", "h"), ("calls", "logical_id"), ("challenges", "logical_id"),
           ("payments", "logical_id"), ("settlements", "logical_id"), ("checks", "receipt_id"))
ENVELOPE = ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in EVENT_COLUMNS.items())
COLS = ", ".join(EVENT_COLUMNS)


def default_path(data_dir: str | os.PathLike) -> Path:
    """Where the cache of a data directory lives unless --cache says otherwise (outside the data directory)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "receipts"
    key = hashlib.sha256(str(journal_dir(data_dir).resolve()).encode()).hexdigest()[:16]
    return base / f"serve-{key}.duckdb"


def _q(text) -> str:
    return str(text).replace("'", "''")


def _lit(paths) -> str:
    return "[" + ", ".join(f"'{_q(p)}'" for p in paths) + "]"


@dataclass
class Refresh:
    """What one refresh did."""
    new_events: int = 0
    new_files: int = 0
    changed_slots: int = 0
    recomputed: int = 0        # logical calls whose rows were replaced
    seconds: float = 0.0
    at: float = field(default_factory=time.time)


class ReadCache:
    """Owns the cache database; `reading()` lends a connection whose unqualified view names
    (`receipts`, `calls`, …) are the cached tables, so storage/queries.py runs on it unchanged."""

    def __init__(self, data_dir: str | os.PathLike, path: str | os.PathLike | None = None,
                 memory_limit: str = "4GB"):
        self.data_dir = Path(data_dir)
        self.journal = journal_dir(data_dir).resolve()
        self.path = Path(path) if path else default_path(data_dir)
        self.version = 0
        self.state = "starting"
        self.error: str | None = None
        self.built_seconds: float | None = None
        self.last: Refresh | None = None
        self.refreshed_at: float | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._pool: list[duckdb.DuckDBPyConnection] = []
        self._write = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._files: dict[str, int] = {}          # Parquet path → file_no (already read)
        self._slots: dict[str, tuple] = {}        # slot path → (inode, size, mtime_ns) as last read
        self._tmp = Path(tempfile.mkdtemp(prefix="receipts-serve-"))
        self.memory_limit = memory_limit

    # ---- opening ---------------------------------------------------------------------------------
    def open(self) -> "ReadCache":
        make_private_dir(self.path.parent)
        tighten(p for p in (self.path, self.path.with_name(self.path.name + ".wal")) if p.exists())  # older versions
        try:
            self._con = duckdb.connect(":memory:")
            self._con.execute(f"ATTACH '{_q(self.path)}' AS serve")  # (a catalog name of ours, whatever the file's)
            self._con.execute("USE serve")
        except duckdb.IOException as exc:
            raise RuntimeError(f"the cache file {self.path} is in use ({str(exc).splitlines()[0]}); "
                               "pass another --cache") from None
        con = self._con
        con.execute(f"SET temp_directory = '{_q(self._tmp / 'spill')}'")
        con.execute("SET preserve_insertion_order = false")
        con.execute(f"SET memory_limit = '{self.memory_limit}'")
        # DuckDB's sandbox, as for every reader (storage/db.py): the journal and our private directory
        # (anchors, spill, staging) are the only places it opens files in; the cache file is open already
        db.sandbox(con, [self.journal, self._tmp])
        con.execute(self._views_sql())
        con.execute("CREATE SCHEMA IF NOT EXISTS state")
        con.execute("CREATE SCHEMA IF NOT EXISTS cache")
        con.execute("CREATE TABLE IF NOT EXISTS state.meta (key VARCHAR, value VARCHAR)")
        meta = dict(con.execute("SELECT key, value FROM state.meta").fetchall())
        if meta != self._meta(complete=True):
            self._reset()
        else:
            self._files = dict(con.execute("SELECT path, file_no FROM state.files").fetchall())
            self._slots = {p: (i, s, m) for p, i, s, m in con.execute("SELECT * FROM state.slots").fetchall()}
            self.state = "ready"
        return self

    def _views_sql(self) -> str:
        """views.sql with the journal path pointing at private, empty anchors: the cache never reads the
        journal through the views' globs, only through its explicit file lists (TEMP `events`)."""
        anchors = self._tmp / "journal"
        ensure_anchors(anchors)
        text = resources.files("storage").joinpath("views.sql").read_text()
        from .layout import columns_sql
        return text.replace("{journal}", str(anchors).replace("'", "''")).replace("{columns}", columns_sql())

    def _meta(self, complete: bool) -> dict:
        views = resources.files("storage").joinpath("views.sql").read_text()
        try:  # the journal's anchor file is made once and never removed: another inode, another journal
            st = (self.journal / ANCHOR_JSON).stat()
            anchor = f"{st.st_ino}:{st.st_mtime_ns}"
        except OSError:
            anchor = ""
        meta = {"format": FORMAT, "journal": str(self.journal), "anchor": anchor,
                "views": hashlib.sha256(views.encode()).hexdigest()}
        if complete:
            meta["complete"] = "1"
        return meta

    def _reset(self) -> None:
        con = self._con
        for t in TABLES + ("ids",):
            con.execute(f"DROP TABLE IF EXISTS cache.{t}")
        for t in ("files", "slots", "json_events", "loc", "links"):
            con.execute(f"DROP TABLE IF EXISTS state.{t}")
        con.execute("DELETE FROM state.meta")
        con.executemany("INSERT INTO state.meta VALUES (?, ?)", list(self._meta(complete=False).items()))
        con.execute("CREATE TABLE state.files (file_no INTEGER, path VARCHAR)")
        con.execute("CREATE TABLE state.slots (path VARCHAR, ino BIGINT, size BIGINT, mtime_ns BIGINT)")
        cols = ", ".join(f"{c} {t}" for c, t in EVENT_COLUMNS.items())
        con.execute(f"CREATE TABLE state.json_events (slot VARCHAR, {cols})")
        con.execute("CREATE TABLE state.loc (receipt_id VARCHAR, file_no INTEGER)")
        con.execute("CREATE TABLE state.links (receipt_id VARCHAR, logical_id VARCHAR, session VARCHAR)")
        cur = self._cursor()
        cur.execute(f"CREATE TEMP TABLE events AS SELECT {ENVELOPE} FROM (SELECT NULL AS {', NULL AS '.join(EVENT_COLUMNS)}) LIMIT 0")
        for t in TABLES:
            cur.execute(f"CREATE TABLE cache.{t} AS SELECT * FROM main.{t} LIMIT 0")
        cur.execute("CREATE TABLE cache.ids (h UBIGINT, id VARCHAR, receipt_id VARCHAR)")
        cur.close()
        self._files, self._slots = {}, {}
        self.state = "building"

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = self._con.cursor()
        cur.execute("USE serve")
        return cur

    # ---- the journal's files -----------------------------------------------------------------------
    def _parquet_files(self) -> list[str]:
        root = parquet_dir(self.journal)
        return sorted(str(p) for p in root.glob("*/*.parquet") if not p.name.startswith("."))

    def _slot_stats(self) -> dict[str, tuple]:
        out = {}
        for p in self.journal.glob("*.jsonl"):
            if p.name.startswith("."):
                continue
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            out[str(p)] = (st.st_ino, st.st_size, st.st_mtime_ns)
        return out

    # ---- build and refresh -------------------------------------------------------------------------
    def build(self) -> float:
        """Read everything (only if the cache is new or stale: else what changed); return the seconds it took."""
        started = time.monotonic()
        self.refresh()
        self.built_seconds = time.monotonic() - started
        return self.built_seconds

    def _finish(self) -> None:
        """After the first build: the indexes of the pages' lookups, and the cache marked complete."""
        for table, column in INDEXES:
            self._con.execute(f"CREATE INDEX IF NOT EXISTS {table}_{column} ON cache.{table} ({column})")
        self._con.execute("DELETE FROM state.meta")
        self._con.executemany("INSERT INTO state.meta VALUES (?, ?)", list(self._meta(complete=True).items()))
        self._con.execute("CHECKPOINT")
        self.state = "ready"

    def refresh(self) -> Refresh:
        """Take in what changed in the journal since the last refresh."""
        with self._write:
            started = time.monotonic()
            present = self._parquet_files()
            if self._files and not set(self._files) <= set(present):
                # Parquet files are never removed: this is another journal at the same path
                log.warning("Parquet files of the journal disappeared: rebuilding the read cache")
                self._reset()
            files = [p for p in present if p not in self._files]
            stats = self._slot_stats()
            changed = sorted(p for p in set(stats) | set(self._slots) if stats.get(p) != self._slots.get(p))
            out = Refresh(new_files=len(files), changed_slots=len(changed))
            if files or changed:
                cur = self._cursor()
                try:
                    cur.execute("BEGIN")
                    out.new_events, out.recomputed = self._take_in(cur, files, changed, stats)
                    cur.execute("COMMIT")
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
                finally:
                    cur.close()
                for p in files:
                    self._files[p] = len(self._files)
                self._slots = {p: s for p, s in stats.items()}
                if out.recomputed:
                    self.version += 1
            if self.state == "building":
                self._finish()
            out.seconds = time.monotonic() - started
            self.last, self.refreshed_at = out, time.time()
            return out

    def _take_in(self, cur, files: list[str], changed: list[str], stats: dict) -> tuple[int, int]:
        # the new Parquet files: where each receipt's events are, and which events are new
        base = len(self._files)
        cur.execute("CREATE OR REPLACE TEMP TABLE newfiles (file_no INTEGER, path VARCHAR)")
        if files:
            cur.execute("INSERT INTO newfiles SELECT base + i - 1, p FROM (SELECT unnest($p) AS p, "
                        "generate_subscripts($p, 1) AS i, $b AS base)", {"p": files, "b": base})
            cur.execute("INSERT INTO state.files SELECT * FROM newfiles")
        # (slot contents are re-read whole: a slot only ever changes by being replaced)
        readable = [p for p in changed if stats.get(p) and stats[p][1] > 0]
        cur.execute(f"CREATE OR REPLACE TEMP TABLE fresh AS SELECT '' AS slot, {ENVELOPE} FROM state.json_events LIMIT 0")
        if readable:
            cur.execute(f"INSERT INTO fresh SELECT filename, {ENVELOPE} FROM read_json({_lit(readable)}, "
                        f"format='newline_delimited', columns={{{_columns()}}}, filename=true)")
        if self.state == "building":
            cur.execute("INSERT INTO state.json_events SELECT * FROM fresh")  # (it was empty)
            new_events, recomputed = self._build_all(cur)
        else:
            new_events, recomputed = self._incremental(cur, files, changed)
        cur.execute("DELETE FROM state.slots")
        if stats:
            rows = [(p, *s) for p, s in stats.items()]
            cur.execute("INSERT INTO state.slots SELECT unnest($a), unnest($b), unnest($c), unnest($d)",
                        {"a": [r[0] for r in rows], "b": [r[1] for r in rows], "c": [r[2] for r in rows],
                         "d": [r[3] for r in rows]})
        return new_events, recomputed

    def _incremental(self, cur, files: list[str], changed: list[str]) -> tuple[int, int]:
        """New events (TEMP fresh: the changed slots; and the new Parquet files) → their calls recomputed."""
        link = ("CASE type WHEN 'request' THEN json_extract_string(data, ['$.logical_id', '$.upto_session']) "
                "WHEN 'response' THEN [NULL, json_extract_string(data, '$.og.upto_session')] END")
        cur.execute("CREATE OR REPLACE TEMP TABLE scan (id VARCHAR, receipt_id VARCHAR, file_no INTEGER, link VARCHAR[])")
        if files:
            cur.execute(f"INSERT INTO scan SELECT p.id, p.receipt_id, f.file_no, {link} FROM "
                        f"read_parquet({_lit(files)}, filename=true) p JOIN newfiles f ON f.path = p.filename")
            cur.execute("INSERT INTO state.loc SELECT DISTINCT receipt_id, file_no FROM scan")
        cur.execute(f"INSERT INTO scan SELECT id, receipt_id, NULL, {link} FROM fresh")
        # new: in no slot at the previous refresh (state.json_events still holds those) and in no file read before
        cur.execute("""CREATE OR REPLACE TEMP TABLE new AS
            SELECT DISTINCT ON (id) id, receipt_id, link FROM scan
            WHERE id NOT IN (SELECT id FROM state.json_events)""")
        if changed:  # now the slots as they are
            cur.execute(f"DELETE FROM state.json_events WHERE slot IN (SELECT unnest({_lit(changed)}))")
            cur.execute("INSERT INTO state.json_events SELECT * FROM fresh")
        cur.execute("""INSERT INTO state.links SELECT DISTINCT receipt_id, link[1], link[2] FROM new
                       WHERE link IS NOT NULL AND (link[1] IS NOT NULL OR link[2] IS NOT NULL)""")
        new_events = cur.execute("SELECT count(*) FROM new").fetchone()[0]
        if not new_events:
            return 0, 0
        return new_events, self._recompute(cur, self._closure(cur))

    def _build_all(self, cur) -> tuple[int, int]:
        """The first build: each Parquet file's events are folded alone, the slots' events together; then
        the calls whose events (or whose session's) lie in more than one of those groups are recomputed whole."""
        sources = []
        for no, files in enumerate(self._groups(cur.execute("SELECT file_no, path FROM newfiles").fetchall())):
            sources.append((no, [p for _, p in files], f"SELECT {ENVELOPE} FROM read_parquet({_lit([p for _, p in files])})"))
        sources.append((-1, [], f"SELECT {COLS} FROM fresh"))
        cur.execute("CREATE OR REPLACE TEMP TABLE grp (receipt_id VARCHAR, g INTEGER)")
        events = 0
        for no, paths, source in sources:
            if paths:  # where each receipt's events are (two narrow columns)
                cur.execute(f"INSERT INTO state.loc SELECT DISTINCT p.receipt_id, f.file_no FROM read_parquet("
                            f"{_lit(paths)}, filename=true) p JOIN newfiles f ON f.path = p.filename")
            cur.execute("DROP TABLE IF EXISTS temp.events")
            cur.execute(f"CREATE TEMP TABLE events AS {source}")  # (no event is twice in Parquet, nor in slots)
            cur.execute("INSERT INTO grp SELECT DISTINCT receipt_id, $g FROM events", {"g": no})
            events += cur.execute("SELECT count(*) FROM events").fetchone()[0]
            self._fold(cur)
            # attempt → logical call and session (an answer without its request in this group: parsed here)
            cur.execute("INSERT INTO state.links SELECT receipt_id, logical_id, upto_session FROM temp.calls")
            cur.execute("""INSERT INTO state.links SELECT DISTINCT receipt_id, NULL, s FROM (
                    SELECT receipt_id, json_extract_string(data, '$.og.upto_session') AS s FROM events
                    WHERE type = 'response' AND receipt_id NOT IN (SELECT receipt_id FROM temp.requests))
                WHERE s IS NOT NULL""")
        cur.execute("""CREATE OR REPLACE TEMP TABLE new AS
            WITH k AS (SELECT receipt_id, logical_id FROM state.links WHERE logical_id IS NOT NULL
                       UNION SELECT logical_id, logical_id FROM state.links WHERE logical_id IS NOT NULL),
            lg AS (SELECT k.logical_id, grp.g FROM k JOIN grp USING (receipt_id)),
            ls AS (SELECT DISTINCT q.logical_id, s.session FROM state.links q JOIN state.links s USING (receipt_id)
                   WHERE q.logical_id IS NOT NULL AND s.session IS NOT NULL),
            span AS (SELECT ls.session FROM ls JOIN lg USING (logical_id) GROUP BY ls.session HAVING count(DISTINCT lg.g) > 1)
            SELECT receipt_id FROM grp GROUP BY receipt_id HAVING count(*) > 1
            UNION SELECT logical_id FROM lg GROUP BY logical_id HAVING count(DISTINCT g) > 1
            UNION SELECT logical_id FROM ls WHERE session IN (SELECT session FROM span)""")
        spanning = cur.execute("SELECT count(*) FROM new").fetchone()[0]
        log.info("first build: %d events folded in %d groups; %d ids span groups", events, len(sources), spanning)
        if spanning:
            self._recompute(cur, self._closure(cur))
        return events, cur.execute("SELECT count(*) FROM cache.receipts").fetchone()[0]

    @staticmethod
    def _groups(files: list[tuple[int, str]]) -> list[list[tuple[int, str]]]:
        """Parquet files folded together in the first build: those of one date directory (compaction's
        day: a writer's calls and the verifier's checks of them mostly land on the same day), in groups
        of at most GROUP_BYTES."""
        by_dir: dict[str, list[tuple[int, str]]] = {}
        for no, path in sorted(files, key=lambda f: f[1]):
            by_dir.setdefault(os.path.dirname(path), []).append((no, path))
        groups = []
        for members in by_dir.values():
            group, size = [], 0
            for no, path in members:
                try:
                    n = os.path.getsize(path)
                except OSError:
                    n = 0
                if group and size + n > GROUP_BYTES:
                    groups.append(group)
                    group, size = [], 0
                group.append((no, path))
                size += n
            groups.append(group)
        return groups

    def _closure(self, cur) -> int:
        """TEMP todo(receipt_id): every attempt of every logical call a new event touches, and of every
        logical call sharing an OpenGradient session with one of them. Returns the logical calls' count."""
        # a check event's receipt_id is its logical call's id (that of the first attempt, for the recorder)
        cur.execute("""CREATE OR REPLACE TEMP TABLE todo_l AS
            SELECT DISTINCT logical_id FROM state.links
            WHERE logical_id IS NOT NULL AND (receipt_id IN (SELECT receipt_id FROM new)
                                              OR logical_id IN (SELECT receipt_id FROM new))""")
        sessions = cur.execute("SELECT count(*) FROM state.links WHERE session IS NOT NULL").fetchone()[0]
        n = cur.execute("SELECT count(*) FROM todo_l").fetchone()[0]
        while sessions:
            cur.execute("""CREATE OR REPLACE TEMP TABLE todo_s AS
                SELECT DISTINCT session FROM state.links WHERE session IS NOT NULL AND receipt_id IN (
                    SELECT receipt_id FROM state.links WHERE logical_id IN (SELECT logical_id FROM todo_l))""")
            if not cur.execute("SELECT count(*) FROM todo_s").fetchone()[0]:
                break
            cur.execute("""INSERT INTO todo_l SELECT DISTINCT logical_id FROM state.links
                WHERE logical_id IS NOT NULL AND logical_id NOT IN (SELECT logical_id FROM todo_l)
                  AND receipt_id IN (SELECT receipt_id FROM state.links WHERE session IN (SELECT session FROM todo_s))""")
            grown = cur.execute("SELECT count(*) FROM todo_l").fetchone()[0]
            if grown == n:
                break
            n = grown
        cur.execute("""CREATE OR REPLACE TEMP TABLE todo AS
            SELECT receipt_id FROM new UNION
            SELECT logical_id FROM todo_l UNION
            SELECT receipt_id FROM state.links WHERE logical_id IN (SELECT logical_id FROM todo_l)""")
        return n

    def _recompute(self, cur, logical: int) -> int:
        """Replace the cached rows of the calls in TEMP todo by the views' rows over their events."""
        cur.execute("DELETE FROM cache.receipts WHERE receipt_id IN (SELECT logical_id FROM todo_l)")
        cur.execute("DELETE FROM cache.ids WHERE receipt_id IN (SELECT logical_id FROM todo_l)")
        for t in TABLES[1:]:
            cur.execute(f"DELETE FROM cache.{t} WHERE receipt_id IN (SELECT receipt_id FROM todo)")
        attempts = cur.execute("SELECT count(*) FROM todo").fetchone()[0]
        buckets = max(1, math.ceil(attempts / BUCKET_ATTEMPTS))
        files = [r[0] for r in cur.execute(
            "SELECT DISTINCT f.path FROM state.loc l JOIN state.files f USING (file_no) "
            "WHERE l.receipt_id IN (SELECT receipt_id FROM todo) ORDER BY 1").fetchall()]
        # Parquet holds no event twice, nor do the slots; an event in both (compacted, in its grace
        # period) is taken from Parquet
        parquet = (f"SELECT {ENVELOPE} FROM read_parquet({_lit(files)}) WHERE receipt_id IN (SELECT receipt_id FROM todo_b)"
                   if files else f"SELECT {COLS} FROM state.json_events LIMIT 0")
        slots = f"SELECT {COLS} FROM state.json_events WHERE receipt_id IN (SELECT receipt_id FROM todo_b)"
        if buckets == 1:
            cur.execute("CREATE OR REPLACE TEMP TABLE todo_b AS SELECT receipt_id FROM todo")
            cur.execute("DROP TABLE IF EXISTS temp.events")
            cur.execute(f"CREATE TEMP TABLE events AS {parquet}")
            cur.execute(f"INSERT INTO events SELECT * FROM ({slots}) WHERE id NOT IN (SELECT id FROM events)")
            self._fold(cur)
        else:
            self._buckets(cur, buckets)
            stage = self._tmp / f"stage-{time.monotonic_ns()}"
            cur.execute("CREATE OR REPLACE TEMP TABLE todo_b AS SELECT receipt_id FROM todo_bucket")
            cur.execute(f"""COPY (WITH p AS MATERIALIZED ({parquet}), j AS ({slots})
                            SELECT p.*, t.bucket FROM p JOIN todo_bucket t USING (receipt_id)
                            UNION ALL
                            SELECT j.*, t.bucket FROM j JOIN todo_bucket t USING (receipt_id)
                            WHERE j.id NOT IN (SELECT id FROM p))
                        TO '{_q(stage)}' (FORMAT parquet, PARTITION_BY (bucket), COMPRESSION lz4_raw)""")
            try:
                for d in sorted(stage.iterdir()):
                    cur.execute("DROP TABLE IF EXISTS temp.events")
                    cur.execute(f"CREATE TEMP TABLE events AS SELECT {COLS} FROM read_parquet('{_q(d)}/*.parquet')")
                    self._fold(cur)
            finally:
                shutil.rmtree(stage, ignore_errors=True)
        for t in ("events",) + MATERIALIZED + ("folded", "todo_b"):
            cur.execute(f"DROP TABLE IF EXISTS temp.{t}")
        return logical

    def _buckets(self, cur, buckets: int) -> None:
        """TEMP todo_bucket(receipt_id, bucket): whole logical calls, whole sessions per bucket."""
        pairs = cur.execute("""SELECT DISTINCT q.logical_id, s.session FROM state.links q JOIN state.links s USING (receipt_id)
            WHERE q.logical_id IS NOT NULL AND s.session IS NOT NULL
              AND q.receipt_id IN (SELECT receipt_id FROM todo)""").fetchall()
        parent: dict[str, str] = {}

        def find(x: str) -> str:
            while parent.get(x, x) != x:
                parent[x] = parent.get(parent[x], parent[x])
                x = parent[x]
            return x
        for logical, session in pairs:
            a, b = find("l:" + logical), find("s:" + session)
            if a != b:
                parent[max(a, b)] = min(a, b)
        comp = [(lg, find("l:" + lg)) for lg in {p[0] for p in pairs}]
        cur.execute("CREATE OR REPLACE TEMP TABLE comp (logical_id VARCHAR, comp VARCHAR)")
        if comp:
            cur.execute("INSERT INTO comp SELECT unnest($a), unnest($b)",
                        {"a": [c[0] for c in comp], "b": [c[1] for c in comp]})
        cur.execute(f"""CREATE OR REPLACE TEMP TABLE todo_bucket AS
            SELECT t.receipt_id, CAST(hash(coalesce(c.comp, q.logical_id, t.receipt_id)) % {buckets} AS INTEGER) AS bucket
            FROM todo t
            LEFT JOIN (SELECT receipt_id, logical_id FROM state.links WHERE logical_id IS NOT NULL
                       UNION SELECT logical_id, logical_id FROM state.links WHERE logical_id IS NOT NULL) q USING (receipt_id)
            LEFT JOIN comp c USING (logical_id)""")

    def _fold(self, cur) -> None:
        """Run the views over TEMP events (each view materialized once, read by the next) and append
        the rows to the cache."""
        # (dropped first: DuckDB 2.0's CREATE OR REPLACE of a TEMP table named like the view it selects
        # from keeps the old rows)
        for v in MATERIALIZED + ("folded",):
            cur.execute(f"DROP TABLE IF EXISTS temp.{v}")
        for v in MATERIALIZED:
            cur.execute(f"CREATE TEMP TABLE {v} AS SELECT * FROM main.{v}")
        cur.execute("CREATE TEMP TABLE folded AS SELECT * FROM main.receipts")
        for t in TABLES[1:]:
            cur.execute(f"INSERT INTO cache.{t} SELECT * FROM temp.{t}")
        cur.execute("INSERT INTO cache.receipts SELECT * FROM folded")
        cur.execute("INSERT INTO cache.ids SELECT hash(id), id, receipt_id FROM "
                    "(SELECT DISTINCT unnest(ids) AS id, receipt_id FROM folded)")

    # ---- reading -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def reading(self):
        """A connection from the pool, for one request: `receipts`, `calls`, … name the cached tables
        (and `ids`: every id that finds a receipt, `h` its hash), so storage/queries.py runs on it as is."""
        try:
            cur = self._pool.pop()
        except IndexError:
            cur = self._cursor()
            cur.execute("SET search_path = 'serve.cache,serve.main'")
        try:
            yield cur
        finally:
            self._pool.append(cur)

    # ---- running -----------------------------------------------------------------------------------
    def start(self, interval: float = 1.0) -> None:
        """Refresh every `interval` seconds in a background thread."""
        def loop():
            while not self._stop.wait(interval):
                try:
                    self.refresh()
                    self.error = None
                except Exception as exc:  # keep serving what is cached; say what went wrong
                    self.error = str(exc).splitlines()[0]
                    log.warning("refresh failed: %s", self.error)
        self._thread = threading.Thread(target=loop, name="receipts-cache", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(30)
        with self._write:
            for cur in self._pool:
                cur.close()
            self._pool.clear()
            if self._con is not None:
                self._con.close()
                self._con = None
        shutil.rmtree(self._tmp, ignore_errors=True)


def _columns() -> str:
    return ", ".join(f"'{k}': '{v}'" for k, v in EVENT_COLUMNS.items())
