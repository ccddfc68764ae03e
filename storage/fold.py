"""The fold: sealed journal events become rows of typed tables, once, in the background.

Layout under `<data>/tables/`:

    manifest.json              what is folded: the files of each table, and the segments they came from
    <table>/<gen>-<uuid>.parquet   immutable Parquet files, one per table per fold (merged as they add up)
    .lock                      flock: one process folds at a time (any journal writer, or a reader)

The manifest is the commit point. A fold reads the sealed segments it does not yet name, writes one
Parquet file per table (temp name, fsync, rename), then replaces the manifest (temp, fsync, rename):
before that rename nothing of the fold is visible, after it everything is. A reader reads the manifest,
then the segments it does not name (the *tail*, seconds of events), and folds those on the fly with the
same SQL (storage/fold.sql). So a query is complete, and never counts an event twice.

Segments are slots that writers reuse (storage/journal.py), so the manifest names each folded segment with
the id of its first event. A folded segment is emptied only `grace` seconds after the fold that named it
(readers read the manifest and then the segments within milliseconds; a reader that finds the manifest
changed meanwhile reads again). Files a merge replaced are deleted `RETIRE_AFTER` seconds later, so a
query that started before the merge can finish.

A journal from before the fold (events as JSON in `journal/parquet/date=…/*.parquet`) is folded by the
first fold, file by file, with progress shown; each file is named in the manifest once folded, and
removed after. Segments that an interrupted old compaction had already copied are skipped (its sidecar
names them), so nothing is counted twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import orjson

from .journal import _fsync_dir
from .layout import ANCHOR_JSON, columns_sql, parquet_dir
from .records import uuid7

log = logging.getLogger("receipts.fold")

TABLES_DIR = "tables"
MANIFEST = "manifest.json"
FOLD_EVERY = 2.0  # seconds between folds of a running writer
BATCH_BYTES = 64 << 20  # JSON read per fold step (a long backlog is folded in steps)
MERGE_AT = 8  # files of one size class that are merged into one, with any smaller after them (`merge_due`)
# ... but `events`, which is read whole or not at all (ad-hoc SQL, a fold of the tables again) and never
# looked up by an id, where a file costs one footer more: 64 at a time. Each event is written again about
# half as often (at 1M calls, merging the events of a migration's 31 steps took 8.9 s of a 132 s fold).
MERGE_AT_OF = {"events": 64}
MERGE_ROWS = 4_000_000  # files bigger than this are left alone by merges
MEMORY_LIMIT = (
    "600MB"  # DuckDB's memory of one fold (1M calls migrate at 816 MiB peak RSS; 400MB made some steps run twice)
)
RETIRE_AFTER = 600.0  # seconds a file replaced by a merge stays on disk
THREADS: int | None = 1  # DuckDB threads of a fold: background work, one core (None: one per core)


def tables_dir(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / TABLES_DIR


def journal_of(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / "journal"


# Where every id that finds a receipt is recorded: the columns the `ids` of the receipts view are made of
# (storage/views.sql: the calls' ids, the settlements' tx hash, job id and channel tx, the payments' payer,
# nonce and channel id).
# tests/storage/test_queries.py checks that these find every id of every receipt.
ID_COLUMNS = (
    ("requests", "client_request_id"),
    ("requests", "idempotency_key"),
    ("requests", "payment_identifier"),
    ("requests", "upto_session"),
    ("responses", "provider_request_id"),
    ("responses", "response_id"),
    ("responses", "og_upto_session"),
    ("responses", "og_settlement_tx_hash"),
    ("stream_ends", "response_id"),
    ("stream_ends", "og_settlement_tx_hash"),
    ("requests", "a2a_task"),
    ("responses", "a2a_task"),
    ("stream_ends", "a2a_task"),
    ("settlements", "tx_hash"),
    ("settlements", "job_id"),
    ("settlements", "channel_tx"),
    ("payments", "payer"),
    ("payments", "nonce"),
    ("payments", "channel_id"),
)
IDS = "ids"  # the index of those ids: (id as `receipts show` compares it, the attempt that carries it)
# tables whose files are sorted, so that a lookup of one value (or range) reads one row group a file: the
# id index, and the checks (the verifier reads them a range of logical ids at a time)
ORDER = {IDS: "id", "checks": "receipt_id"}
ROW_GROUP_SIZE = 16384  # rows: a lookup by a sorted column reads this many from each file
# zstd's level: 1 writes these tables faster than DuckDB's default (3), and smaller (1M calls: the events
# 6.1 vs 8.4 s and 357 vs 370 MiB, the requests 85 vs 89 MiB, the kept receipts 123 vs 128 MiB)
ZSTD_LEVEL = 1


def _sections(kind: str) -> dict[str, str]:
    """The statements of storage/fold.sql that start with `-- <kind>: <name>`, by name."""
    text = resources.files(__package__).joinpath("fold.sql").read_text()
    parts = re.split(r"^-- (table|parse): (\w+)\n", text, flags=re.MULTILINE)  # [head, kind, name, body, …]
    return {name: body.strip().rstrip(";") for k, name, body in zip(parts[1::3], parts[2::3], parts[3::3]) if k == kind}


def parses() -> dict[str, str]:
    """Each event type's one parse (storage/fold.sql `-- parse:`) -> its SELECT over `{events}`: what the
    tables read as `{p}<name>`."""
    return _sections("parse")


def statements() -> dict[str, str]:
    """Each table -> its SELECT: those of storage/fold.sql over `{events}` and the parses (`{p}request`, …),
    then `ids` over the tables before it (`{t}requests`, …)."""
    out = _sections("table")
    out[IDS] = (
        "SELECT DISTINCT id, receipt_id FROM ("
        + " UNION ALL ".join(
            f"SELECT lower({column}) AS id, receipt_id FROM {{t}}{table}" for table, column in ID_COLUMNS
        )
        + ") WHERE id IS NOT NULL"
    )
    return out


TABLES = tuple(statements())
RECEIPTS = "receipts"  # the kept rows of the `receipts` view (one per logical call, the newest of each wins)


def _version(*files: str, extra=()) -> str:
    """A hash of these SQL files (and of `extra`: what else shapes the files written)."""
    import hashlib

    text = "".join(resources.files(__package__).joinpath(f).read_text() for f in files) + repr(extra)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tables_version() -> str:
    """What the typed tables were folded with: tables of another version are folded again from `events`."""
    return _version("fold.sql", extra=(statements()[IDS], ROW_GROUP_SIZE, ORDER))


def receipts_version() -> str:
    """What the kept receipts were computed with: rows kept by another version are computed again."""
    return _version("fold.sql", "views.sql")


# ---- the manifest ------------------------------------------------------------------------------
@dataclass
class Manifest:
    generation: int = 0
    files: dict[str, list[str]] = field(default_factory=dict)  # table -> file names
    folded: dict[str, list] = field(default_factory=dict)  # segment -> [first event id, folded at]
    migrated: list[str] = field(default_factory=list)  # old event Parquet files folded
    retired: list[list] = field(default_factory=list)  # [table/file, replaced at]
    receipts_version: str | None = None  # receipts_version() of the kept receipts
    tables_version: str | None = None  # tables_version() of the typed tables

    @classmethod
    def load(cls, data_dir) -> Manifest:
        try:
            raw = orjson.loads((tables_dir(data_dir) / MANIFEST).read_bytes())
        except FileNotFoundError:
            return cls()
        return cls(
            raw["generation"],
            raw["files"],
            raw["folded"],
            raw.get("migrated", []),
            raw.get("retired", []),
            raw.get("receipts_version"),
            raw.get("tables_version"),
        )

    def save(self, data_dir) -> None:
        self.generation += 1
        path = tables_dir(data_dir) / MANIFEST
        tmp = path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
        body = {
            "generation": self.generation,
            "files": self.files,
            "folded": self.folded,
            "migrated": self.migrated,
            "retired": self.retired,
            "receipts_version": self.receipts_version,
            "tables_version": self.tables_version,
        }
        _write_synced(tmp, orjson.dumps(body))
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    def paths(self, data_dir, table: str) -> list[str]:
        root = tables_dir(data_dir).resolve() / table
        return [str(root / name) for name in self.files.get(table, [])]


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- what is not folded yet --------------------------------------------------------------------
def first_id(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            line = f.readline()
        return orjson.loads(line).get("id") if line else None
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return None


@dataclass
class Tail:
    """Events the manifest does not hold: sealed segments (with their first event id) and old-format
    Parquet files."""

    segments: list[tuple[Path, str]]
    legacy: list[Path]
    journal: Path

    def __bool__(self) -> bool:
        return bool(self.segments or self.legacy)

    def source(self) -> str:
        """SQL for the events of the tail (the `{events}` of storage/fold.sql)."""
        parts = []
        if self.segments:
            files = ", ".join(_lit(p) for p, _ in self.segments)
            parts.append(
                f"SELECT id, type, ts, receipt_id, writer, seq, data FROM read_json([{files}], "
                f"format = 'newline_delimited', columns = {columns_sql()})"
            )
        if self.legacy:
            files = ", ".join(_lit(p) for p in self.legacy)
            parts.append(f"SELECT id, type, ts, receipt_id, writer, seq, data FROM read_parquet([{files}])")
        if not parts:  # no events: the empty anchor segment gives the columns their types
            parts.append(
                f"SELECT * FROM read_json({_lit(self.journal.resolve() / ANCHOR_JSON)}, "
                f"format = 'newline_delimited', columns = {columns_sql()})"
            )
        return "(" + " UNION ALL ".join(parts) + ")"


def _lit(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def tail(data_dir, manifest: Manifest) -> Tail:
    journal = journal_of(data_dir)
    copied = {name: first for _, entries in _old_sidecars(journal) for name, first in entries.items()}
    segments = []
    for path in sorted(journal.glob("*.jsonl")):
        if path.name == ANCHOR_JSON:
            continue
        first = first_id(path)
        if first is None:
            continue  # empty (a free slot)
        done = manifest.folded.get(path.name)
        if (done and done[0] == first) or copied.get(path.name) == first:
            continue
        segments.append((path.resolve(), first))
    migrated = set(manifest.migrated)
    legacy = [
        p.resolve()
        for p in sorted(parquet_dir(journal).glob("date=*/*.parquet"))
        if not p.name.startswith("_anchor") and _rel(journal, p) not in migrated
    ]
    return Tail(segments, legacy, journal)


def _rel(journal: Path, path: Path) -> str:
    return str(path.resolve().relative_to(journal.resolve()))


# ---- folding -------------------------------------------------------------------------------------
class FoldLock:
    """The fold's flock, taken without waiting: another process folding means there is nothing to do."""

    def __init__(self, data_dir, wait: bool = False):
        self.wait = wait
        root = tables_dir(data_dir)
        root.mkdir(exist_ok=True, mode=0o700)  # (never the data directory itself: it may have been removed)
        self.fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> bool:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if not self.wait else 0))
            return True
        except BlockingIOError:
            return False

    def __exit__(self, *exc) -> None:
        os.close(self.fd)  # (releases the lock)


def fold(
    data_dir, *, grace: float = 60.0, progress: Callable[[str], None] | None = None, wait: bool = False
) -> int | None:
    """Fold every sealed event not folded yet, retire what is due, merge small files.
    The number of events folded, or None when another process holds the fold (nothing done here)."""
    with FoldLock(data_dir, wait) as held:
        if not held:
            return None
        return _fold_locked(data_dir, grace, progress)


def _fold_locked(data_dir, grace: float, progress) -> int:
    manifest = Manifest.load(data_dir)
    remove_orphans(data_dir, manifest)
    sidecars = _skip_copied_by_old_compaction(data_dir, manifest)
    if sidecars:
        manifest.save(data_dir)
        for sidecar in sidecars:
            sidecar.unlink(missing_ok=True)
    total = 0
    if manifest.files and manifest.tables_version != tables_version():
        _refold(data_dir, manifest, progress)
    steps = list(_steps(tail(data_dir, manifest)))
    if not steps and manifest.receipts_version != receipts_version() and manifest.files:
        steps = [Tail([], [], journal_of(data_dir))]  # no new event, but the kept receipts are of another version
    with _connection() as con:
        for n, step in enumerate(steps, 1):
            total += _bounded_step(con, data_dir, manifest, step, progress)
            if progress and len(steps) > 1:
                progress(f"folded {n}/{len(steps)} parts of the journal ({total:,} events)")
        changed = _retire(data_dir, manifest, grace)
        changed |= _merge(con, data_dir, manifest)
        if changed:
            manifest.save(data_dir)
    _drop_retired_files(data_dir, manifest)
    if steps or changed:
        from .db import write_database_file  # (db reads the tables this module keeps)

        write_database_file(data_dir)
    return total


def _steps(t: Tail):
    """The tail in steps of about BATCH_BYTES of JSON (old Parquet files count 16× their size: their JSON
    is compressed, and a step computes the receipts of every call it touches)."""
    for items, weight, make in (
        (t.legacy, 16, lambda b: Tail([], b, t.journal)),
        (t.segments, 1, lambda b: Tail(b, [], t.journal)),
    ):
        batch, size = [], 0
        for item in items:
            batch.append(item)
            size += weight * Path(item if isinstance(item, Path) else item[0]).stat().st_size
            if size >= BATCH_BYTES:
                yield make(batch)
                batch, size = [], 0
        if batch:
            yield make(batch)


def _fold_step(con, data_dir, manifest: Manifest, step: Tail, progress=None) -> int:
    """Bind the step as the tail of the manifest (storage/db.py, as a reader does), write each table's rows
    of it and the receipts it changed to new files, then commit them in the manifest."""
    from . import db

    count = db.bind(con, data_dir, manifest=manifest, tail=step)
    gen = manifest.generation + 1
    written = []
    for table in TABLES:
        name = f"{gen:08d}-{uuid7()}.parquet"
        if _copy(con, f"FROM folded.tail_{table}", tables_dir(data_dir) / table / name, ORDER.get(table)):
            written.append((table, name))
    if manifest.receipts_version != receipts_version():  # every receipt computed again: the old rows go
        written += [(RECEIPTS, n) for n in _keep_every_receipt(con, data_dir, gen, progress)]
        manifest.retired += [[f"{RECEIPTS}/{n}", time.time()] for n in manifest.files.pop(RECEIPTS, [])]
        manifest.receipts_version = receipts_version()
    elif not db.kept_only(con):  # the receipts of the calls this step touched
        name = f"{gen:08d}-{uuid7()}.parquet"
        if _copy(con, _exact("main.receipts_live", con), tables_dir(data_dir) / RECEIPTS / name):
            written.append((RECEIPTS, name))
    now = time.time()
    for table, name in written:
        manifest.files.setdefault(table, []).append(name)
    for path, first in step.segments:
        manifest.folded[path.name] = [first, now]
    journal = journal_of(data_dir)
    manifest.migrated += [_rel(journal, p) for p in step.legacy]
    manifest.tables_version = tables_version()
    manifest.save(data_dir)
    for p in step.legacy:  # folded for good: the old file goes (the manifest keeps its name)
        p.unlink(missing_ok=True)
    return count


KEEP_AT_ONCE = 50_000  # logical calls whose receipts are computed at once when every receipt is computed again


def _keep_every_receipt(con, data_dir, gen: int, progress=None) -> list[str]:
    """Compute every receipt again (the kept rows are of another views.sql), KEEP_AT_ONCE logical calls at a
    time with their sessions' calls (`db.scope`), each part to a file of its own: within the fold's memory
    limit however many calls there are (all at once, 1M calls took 3.2 GB). A call of a session that spans
    two parts is computed in both, the same row: the newer file's is read. Returns the files' names."""
    from . import db

    starts = [
        r[0]
        for r in con.execute(
            "SELECT logical_id FROM (SELECT logical_id, row_number() OVER (ORDER BY logical_id) AS n "
            "FROM (SELECT DISTINCT logical_id FROM folded.requests WHERE logical_id IS NOT NULL)) "
            f"WHERE n % {KEEP_AT_ONCE} = 1 ORDER BY logical_id"
        ).fetchall()
    ]
    con.execute("CREATE OR REPLACE VIEW main.receipts_scoped AS FROM receipts_of(true)")
    names = []
    for i, start in enumerate(starts):
        before = f" AND logical_id < {_lit(starts[i + 1])}" if i + 1 < len(starts) else ""
        con.execute("DELETE FROM folded.scope_ids")
        db.scope(con, f"SELECT logical_id FROM folded.requests WHERE logical_id >= {_lit(start)}{before}")
        name = f"{gen:08d}-{uuid7()}.parquet"
        if _copy(con, _exact("main.receipts_scoped", con), tables_dir(data_dir) / RECEIPTS / name):
            names.append(name)
        if progress and len(starts) > 1:
            progress(f"computed the receipts again (views.sql changed): {i + 1}/{len(starts)} parts")
    return names


def _bounded_step(con, data_dir, manifest: Manifest, step: Tail, progress=None) -> int:
    """_fold_step within MEMORY_LIMIT; a step DuckDB cannot do within it (a backlog whose calls' receipts
    do not spill) is done again with DuckDB's default limit (80 % of the memory), so that a fold never
    stops for good. Files the failed try wrote are named by no manifest: the next fold removes them."""
    import duckdb

    try:
        return _fold_step(con, data_dir, manifest, step, progress)
    except duckdb.OutOfMemoryException:
        log.warning("a fold step needed more than %s; done again without that limit", MEMORY_LIMIT)
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        con.execute(f"SET memory_limit = '{int(ram * 0.8) >> 20}MB'")
        done = _fold_step(con, data_dir, manifest, step, progress)
        with contextlib.suppress(duckdb.OutOfMemoryException):  # (else the rest of this fold goes without it)
            con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
        return done


def _refold(data_dir, manifest: Manifest, progress) -> None:
    """Fold every typed table again from `events` (each event whole): fold.sql changed since they were
    folded (a field added, a type changed). The kept receipts are computed again by the next step."""
    if progress:
        progress("folding the tables again: the fold's fields changed since this data directory was folded")
    events = ", ".join(_lit(p) for p in manifest.paths(data_dir, "events"))
    source = f"(SELECT id, type, epoch_us(ts) / 1e6 AS ts, receipt_id, writer, seq, data FROM read_parquet([{events}]))"
    gen = manifest.generation + 1
    with _connection() as con:
        for parse, sql in parses().items():  # (views: the whole history is not held in memory)
            con.execute(f"CREATE VIEW parsed_{parse} AS {sql.replace('{events}', source)}")
        for table, sql in statements().items():
            if table == "events":
                continue
            name = f"{gen:08d}-{uuid7()}.parquet"
            select = sql.replace("{events}", source).replace("{t}", "new_").replace("{p}", "parsed_")
            fresh = [name] if _copy(con, select, tables_dir(data_dir) / table / name, ORDER.get(table)) else []
            con.execute(
                f"CREATE VIEW new_{table} AS "
                + (f"FROM read_parquet({_lit(tables_dir(data_dir) / table / name)})" if fresh else f"{select} LIMIT 0")
            )
            manifest.retired += [[f"{table}/{n}", time.time()] for n in manifest.files.get(table, [])]
            manifest.files[table] = fresh
    manifest.tables_version = tables_version()
    manifest.save(data_dir)


def _connection():
    """The fold's DuckDB connection: THREADS threads, MEMORY_LIMIT (sorts and merges spill to disk past it),
    spill files in a private directory, no progress bar on a terminal."""
    import duckdb

    from .db import literal, spill_dir

    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute(f"SET temp_directory = {literal(spill_dir())}")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
    if THREADS:
        con.execute(f"SET threads = {int(THREADS)}")
    return con


def _exact(relation: str, con) -> str:
    """SELECT of `relation` with its HUGEINT columns as DECIMAL(38, 0): Parquet has no 128-bit integer."""
    types = con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {relation})").fetchall()
    assert all(t != "DECIMAL(38,0)" for _, t in types), "storage/db.py reads DECIMAL(38, 0) back as HUGEINT"
    money = [c for c, t in types if t == "HUGEINT"]
    cast = f" REPLACE ({', '.join(f'{c}::DECIMAL(38, 0) AS {c}' for c in money)})" if money else ""
    return f"SELECT *{cast} FROM {relation}"


def _copy(con, select: str, target: Path, order: str | None = None) -> bool:
    """Write `select` (sorted by `order`) to `target` atomically; False (and nothing written) when it has
    no rows."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = target.with_name(f".{target.name}.tmp")
    if order:
        select = f"SELECT * FROM ({select}) ORDER BY {order}"
    rows = con.execute(
        f"COPY ({select}) TO {_lit(tmp)} (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL {ZSTD_LEVEL}, "
        f"ROW_GROUP_SIZE {ROW_GROUP_SIZE})"
    ).fetchone()[0]
    if not rows:
        tmp.unlink(missing_ok=True)
        return False
    os.chmod(tmp, 0o600)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, target)
    return True


def _retire(data_dir, manifest: Manifest, grace: float) -> bool:
    """Empty the segments folded more than `grace` seconds ago (atomic rename: the path never goes),
    if they still hold what was folded; writers take empty slots again."""
    now, changed = time.time(), False
    journal = journal_of(data_dir)
    for name, (first, at) in list(manifest.folded.items()):
        if now - at < grace:
            continue
        slot = journal / name
        if first_id(slot) == first:
            tmp = slot.with_name(f".{name}.empty")
            tmp.write_bytes(b"")
            os.replace(tmp, slot)
        del manifest.folded[name]
        changed = True
    return changed


def _merge(con, data_dir, manifest: Manifest) -> bool:
    """Merge each table's newest files when `merge_due` says so, until it says no more."""
    changed = False
    for table in manifest.files:
        for _ in range(64):  # (each merge leaves fewer files: bounded by their number anyway)
            names = manifest.files[table]
            n = merge_due([_rows(con, tables_dir(data_dir) / table / name) for name in names], MERGE_AT_OF.get(table))
            if not n:
                break
            _merge_newest(con, data_dir, manifest, table, n)
            changed = True
    return changed


def size_class(rows: int) -> int:
    """A file's size class: 0 below 16 rows, 1 below 256, … (a merge of MERGE_AT files of a class makes
    about one of the next)."""
    return (max(rows, 1).bit_length() - 1) // 4


def merge_due(rows: list[int], at: int | None = None) -> int:
    """How many of the newest files (`rows`: each file's rows, oldest first) to merge into one; 0 for none.
    The newest run of files of size class `c` or less (and below MERGE_ROWS) is merged once it holds
    `at` (MERGE_AT) files of class `c`, for the smallest such `c`. Small files are merged with small ones,
    and the result with files of its own size later: each row is written again about twice per size class
    (log16 of the table's rows; once with `at` 64), not once per merge as when every small file was merged
    each time (which rewrote millions of rows every MERGE_AT folds of a recorder at full speed). The newest
    files only, so that the merged file, the newest, is newer than every file it does not hold (the kept
    receipts rely on it).
    A smaller file older than a file of class `c` counts as one of class `c`: files whose sizes straddle a
    class boundary (256 rows, say) break every run of the smaller class, and would stay unmerged until
    MERGE_AT files of the bigger class came (31 files of a table, after a fold of a long backlog)."""
    for c in range(size_class(MERGE_ROWS) + 1):
        run = []  # the size classes of the newest files of class c or less, newest first
        for n in reversed(rows):
            if n >= MERGE_ROWS or size_class(n) > c:
                break
            run.append(size_class(n))
        # (the files from the newest one of class c back: those of class c, and the smaller older ones)
        if c in run and len(run) - run.index(c) >= (at or MERGE_AT):
            return len(run)
    return 0


def _merge_newest(con, data_dir, manifest: Manifest, table: str, n: int) -> None:
    names = manifest.files[table]
    old, merged = names[:-n], names[-n:]
    name = f"{manifest.generation + 1:08d}-{uuid7()}.parquet"
    files = ", ".join(_lit(tables_dir(data_dir) / table / m) for m in merged)
    select = f"SELECT * FROM read_parquet([{files}])"
    if table == RECEIPTS:  # the newest row of each receipt (file names sort in commit order)
        select = (
            f"SELECT * EXCLUDE (filename) FROM read_parquet([{files}], filename = true) "
            "QUALIFY row_number() OVER (PARTITION BY receipt_id ORDER BY filename DESC) = 1"
        )
    _copy(con, select, tables_dir(data_dir) / table / name, ORDER.get(table))
    manifest.files[table] = old + [name]
    manifest.retired += [[f"{table}/{m}", time.time()] for m in merged]


_row_counts: dict[str, int] = {}


def _rows(con, path: Path) -> int:
    key = str(path)
    if key not in _row_counts:
        _row_counts[key] = con.execute(
            f"SELECT coalesce(sum(num_rows), 0) FROM parquet_file_metadata({_lit(key)})"
        ).fetchone()[0]
    return _row_counts[key]


def _drop_retired_files(data_dir, manifest: Manifest) -> None:
    now = time.time()
    due = [r for r in manifest.retired if now - r[1] >= RETIRE_AFTER]
    if not due:
        return
    for rel, _ in due:
        (tables_dir(data_dir) / rel).unlink(missing_ok=True)
    manifest.retired = [r for r in manifest.retired if now - r[1] < RETIRE_AFTER]
    manifest.save(data_dir)


def _old_sidecars(journal: Path) -> list[tuple[Path, dict]]:
    """The `.slots` sidecars of an old compaction interrupted in its grace period: each names the segments
    (with their first event id) that its Parquet file also holds. Only those whose Parquet file exists."""
    out = []
    for sidecar in parquet_dir(journal).glob("date=*/*.parquet.slots"):
        try:
            entries = orjson.loads(sidecar.read_bytes()) if sidecar.with_suffix("").exists() else {}
        except (OSError, orjson.JSONDecodeError):
            entries = {}
        out.append((sidecar, entries))
    return out


def _skip_copied_by_old_compaction(data_dir, manifest: Manifest) -> list[Path]:
    """Segments an old compaction had copied into Parquet are folded with that file, not again: the
    manifest names them as folded. Returns the sidecars, to remove once the manifest is saved."""
    journal = journal_of(data_dir)
    found = _old_sidecars(journal)
    for _, entries in found:
        for name, first in entries.items():
            if first and first_id(journal / name) == first:
                manifest.folded[name] = [first, 0.0]
    return [sidecar for sidecar, _ in found]


def remove_orphans(data_dir, manifest: Manifest) -> None:
    """Files of a fold or merge that was killed before its manifest named them."""
    named = {f"{t}/{n}" for t, names in manifest.files.items() for n in names} | {r[0] for r in manifest.retired}
    root = tables_dir(data_dir)
    for path in root.glob("*/*.parquet*"):
        rel = f"{path.parent.name}/{path.name}"
        if rel not in named and (path.name.startswith(".") or path.suffix == ".parquet"):
            path.unlink(missing_ok=True)
    for path in parquet_dir(journal_of(data_dir)).glob("date=*/.*.parquet.tmp"):  # an old compaction's
        path.unlink(missing_ok=True)
    for path in Path(data_dir).glob(".receipts.duckdb.tmp*"):  # the database file's, killed while written
        path.unlink(missing_ok=True)


# ---- the background folder of a running writer ----------------------------------------------------
class Folder:
    """Folds in a background thread of a journal writer: every FOLD_EVERY seconds, and sooner once
    `threshold` segments were sealed. Any writer may fold; the flock keeps it to one at a time."""

    def __init__(self, data_dir, grace: float):
        self.data_dir, self.grace = data_dir, grace
        self._cv = threading.Condition()
        self._sealed = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="fold", daemon=True)
        from .journal import Throttle

        self._errors = Throttle(60.0, log)

    def start(self) -> None:
        self._thread.start()

    def sealed(self, threshold: int) -> None:
        with self._cv:
            self._sealed += 1
            if self._sealed >= threshold:
                self._cv.notify()

    def stop(self) -> None:
        """Stop, after folding what this writer sealed (unless another process is folding)."""
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join()
        self._fold()

    def _run(self) -> None:
        while True:
            with self._cv:
                if not self._stopping:
                    self._cv.wait(FOLD_EVERY)
                if self._stopping:
                    return
                self._sealed = 0
            self._fold()

    def _fold(self) -> None:
        try:
            fold(self.data_dir, grace=self.grace)
        except Exception as exc:  # the journal keeps everything: the next fold tries again
            self._errors.error("fold failed (it is tried again): %s", exc)


def stale(data_dir) -> bool:
    """Whether the typed tables were folded by another version of fold.sql."""
    m = Manifest.load(data_dir)
    return bool(m.files) and m.tables_version != tables_version()


def catch_up(data_dir, say: Callable[[str], None]) -> None:
    """Fold a backlog in the foreground, with progress: a journal from before the fold (its first start
    with this version), more unfolded events than one fold step, or kept receipts of another views.sql
    (which every reader would otherwise compute again, all of them). A fold under way elsewhere, or a data
    directory this user cannot write, leaves it to the readers' tail."""
    m = Manifest.load(data_dir)
    t = tail(data_dir, m)
    again = bool(m.files) and m.receipts_version != receipts_version()
    if not (t.legacy or stale(data_dir) or again) and sum(p.stat().st_size for p, _ in t.segments) < BATCH_BYTES:
        return
    say("folding the journal into tables" + (" (first start since the journal format changed)" if t.legacy else ""))
    try:
        n = fold(data_dir, progress=say)
    except OSError as exc:
        say(f"could not fold now ({exc.strerror or exc}); queries read the journal instead")
        return
    if n is not None:
        say(f"folded {n:,} events")
