"""What `receipts serve` reads: a snapshot of the folded tables, the same ones every reader reads.

A snapshot is one `storage.db.connect()` of the data directory (the fold's Parquet files named by its
manifest, plus the unfolded tail folded at connect time) in which the `receipts` view was replaced by a
table of its rows (mostly the rows the fold keeps, read once), so that a list page, a count or a chart is
one query over rows already computed. The SQL of storage/queries.py runs on it as on the CLI's connection.
A receipt page reads its row there and computes its details over only its own folded rows
(`queries.one_receipt()`, as `receipts show` does; the Parquet files' metadata stays cached). An id is looked
up in `receipt_ids` (every id of every receipt, by hash).

`Snapshots` keeps the current one. Every `interval` seconds (1 s by default) it reads what the data
directory holds (`data_key()`: the manifest's generation, the sealed segments not folded yet and the old
Parquet files not migrated yet); if that changed, it takes a new snapshot in a background thread and swaps
it in for the requests that start afterwards. A request holds the snapshot it started with; the old
one is closed (its memory freed) when the last request using it ends. Taking a snapshot costs about what
computing the `receipts` view costs, so after one that took longer than `interval`, the next is taken no
sooner than that time again: the server never spends much more than half its time on them.

Nothing is written into the data directory (no fold from here: the recorder's writers fold).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import NamedTuple, cast

import duckdb

from receipts.storage import db, fold, queries

log = logging.getLogger("receipts.serve")
# the views replaced by tables of their rows (the details of a receipt are computed per page)
MATERIALIZED = ("receipts",)
# DuckDB's memory per snapshot (beyond it, it spills to its private temporary directory): two snapshots
# are alive while one is swapped in.
MEMORY_LIMIT = "300MB"
# A list page is a top-N (at most server.MAX_LIMIT rows, plus one to tell whether more follow). DuckDB reads
# such a page's columns only for the rows it keeps ("late materialization") up to this many rows; its
# default, 50, made every page of 51 rows read all columns of every matching row. 1M calls, a rare status:
# 0.12 s -> 0.012 s a page (a 501-row page: 0.14 -> 0.04 s).
TOP_N_ROWS = 1001


def data_key(data_dir: str | os.PathLike | db.Lake) -> tuple:
    """What the folded tables of `data_dir` hold, as far as a snapshot is concerned: equal keys, equal
    snapshots. Read before connecting, so that a change during a connect is seen by the next check.
    Of a lake: its catalog's current snapshot (every commit makes one), as the generation; no tail."""
    if isinstance(data_dir, db.Lake):
        return (_lake_snapshot(data_dir.url), (), ())
    manifest = fold.Manifest.load(data_dir)
    tail = fold.tail(data_dir, manifest)
    return (
        manifest.generation,
        tuple((p.name, first) for p, first in tail.segments),
        tuple(p.name for p in tail.legacy),
    )


_lakes: dict[str, duckdb.DuckDBPyConnection] = {}  # a lake's connection for data_key, kept (opening one takes ~1 s)
_lakes_lock = threading.Lock()


def _lake_snapshot(url: str) -> int:
    from receipts.storage import lake

    with _lakes_lock:
        if url not in _lakes:
            _lakes[url] = lake.open_lake(url, read_only=True)
        try:
            # (one row: the current snapshot)
            return cast(tuple, _lakes[url].execute(f"FROM ducklake_current_snapshot('{lake.ALIAS}')").fetchone())[0]
        except duckdb.Error:
            _lakes.pop(url).close()  # (opened again at the next check: the catalog may have restarted)
            raise


class Reading(NamedTuple):
    """What one request reads: a cursor of one snapshot, that snapshot's number, and its scratch databases
    (`queries.scratch()`: a receipt page's)."""

    con: duckdb.DuckDBPyConnection
    version: int
    scratches: list


@dataclass
class Snapshot:
    """One connection and the moment it shows. `reading()` lends a cursor for one request."""

    con: duckdb.DuckDBPyConnection
    key: tuple
    number: int
    seconds: float  # what taking it took
    taken_at: float  # when its data was read (time.time())
    receipts: int
    scratches: list = field(default_factory=list)  # queries.scratch()'s pool
    _pool: list = field(default_factory=list)
    _users: int = 0
    _retired: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def generation(self) -> int:
        return self.key[0]

    @property
    def tail_segments(self) -> int:
        return len(self.key[1])

    def enter(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            self._users += 1
            return self._pool.pop() if self._pool else self.con.cursor()

    def leave(self, cur: duckdb.DuckDBPyConnection) -> None:
        with self._lock:
            self._users -= 1
            self._pool.append(cur)
            done = self._retired and self._users == 0
        if done:
            self._close()

    def retire(self) -> None:
        """No new request gets this snapshot; it closes when its last one ends (now, if none uses it)."""
        with self._lock:
            self._retired = True
            done = self._users == 0
        if done:
            self._close()

    def _close(self) -> None:
        with self._lock:
            for cur in self._pool:
                cur.close()
            self._pool.clear()
            self.con.close()


def take(data_dir: str | os.PathLike, number: int, settings: dict | None = None) -> Snapshot:
    """A new snapshot of `data_dir`: connect, then the MATERIALIZED views replaced by tables of their rows,
    and `receipt_ids`."""
    started, at = time.monotonic(), time.time()
    key = data_key(data_dir)
    settings = {"memory_limit": MEMORY_LIMIT, "late_materialization_max_rows": TOP_N_ROWS, **(settings or {})}
    con = db.connect(data_dir, journal=False, settings=settings)  # (the tail is read in here)
    try:
        for view in MATERIALIZED:
            con.execute(f"CREATE TABLE {view}_rows AS SELECT * FROM {view}")
            con.execute(f"DROP VIEW {view}")
            con.execute(f"ALTER TABLE {view}_rows RENAME TO {view}")
        con.execute(queries.RECEIPT_IDS)
        count = cast(tuple, con.execute("SELECT count(*) FROM receipts").fetchone())[0]
    except BaseException:
        con.close()
        raise
    return Snapshot(con, key, number, time.monotonic() - started, at, count)


class Snapshots:
    """The current snapshot of a data directory, taken again when the data changed (see the module)."""

    def __init__(self, data_dir: str | os.PathLike, interval: float = 1.0, settings: dict | None = None):
        self.data_dir, self.interval, self.settings = data_dir, interval, settings
        self.state = "starting"  # starting → ready (or error, until a snapshot could be taken)
        self.error: str | None = None
        self.current: Snapshot | None = None
        self.first_seconds: float | None = None
        self.checked_at: float | None = None  # when the data was last seen to equal the current snapshot
        self._lock = threading.Lock()  # guards `current` against the swap
        self._taking = threading.Lock()  # one snapshot taken at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def version(self) -> int:
        return self.current.number if self.current else 0

    def refresh(self, force: bool = False) -> bool:
        """Take a new snapshot if the data changed (or `force`); True if one was swapped in."""
        with self._taking:
            current = self.current
            key = data_key(self.data_dir)
            if current is not None and key == current.key and not force:
                self.checked_at = time.time()
                return False
            snap = take(self.data_dir, (current.number if current else 0) + 1, self.settings)
            with self._lock:
                old, self.current = self.current, snap
            self.checked_at = snap.taken_at
            if old is None:
                self.first_seconds = snap.seconds
            self.state, self.error = "ready", None
            if old is not None:
                old.retire()
            log.debug("snapshot %d: %d receipts in %.2f s", snap.number, snap.receipts, snap.seconds)
            return True

    @contextlib.contextmanager
    def reading(self):
        """A `Reading` of the current snapshot for one request (the snapshot stays open until it ends)."""
        with self._lock:
            snap = self.current
            if snap is None:
                raise RuntimeError("no snapshot yet")
            cur = snap.enter()
        try:
            yield Reading(cur, snap.number, snap.scratches)
        finally:
            snap.leave(cur)

    def start(self) -> None:
        """Check every `interval` seconds in a background thread; after taking a snapshot that took longer,
        wait as long as it took before the next check."""

        def loop():
            delay = self.interval
            while not self._stop.wait(delay):
                delay = self.interval
                try:
                    if self.refresh() and self.current is not None:
                        delay = max(self.interval, self.current.seconds)
                    self.error = None
                except Exception as exc:  # keep serving the last snapshot; say what went wrong (once)
                    error = str(exc).splitlines()[0]
                    if error != self.error:
                        log.warning("could not take a new snapshot (tried again every %g s): %s", self.interval, error)
                    self.error = error

        self._thread = threading.Thread(target=loop, name="receipts-snapshots", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(60)
        with self._taking, self._lock:
            if self.current is not None:
                self.current.retire()
                self.current = None
