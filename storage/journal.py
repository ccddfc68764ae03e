"""The durable, append-only event journal.

Layout under `<data>/journal/`:

    open/<writer>.jsonl      the writer's private open segment (appended, fsync'd by group commit)
    open/<writer>.lock       flock held by the live writer; a free lock means the writer is gone
    open/<writer>.state      the writer's next sequence number, for restarts
    <writer>-<slot>.jsonl    sealed segments, visible to readers (DuckDB globs `*.jsonl`)
    parquet/date=…/*.parquet compacted events

Why *slots*: a DuckDB glob expands file names and opens them a moment later, so a file that
disappears in between makes the query fail. So no visible path is ever removed. A segment is sealed
by atomically renaming the open segment over a free (empty) slot or a new slot name. Compaction
copies full slots into a Parquet file (temp name, fsync, rename), waits a grace period so that a
query that listed files before the Parquet existed can finish, then atomically replaces each
compacted slot with an empty file, which makes it free again. Readers therefore see every event at
least once, and the views drop the duplicates by event id (storage/views.sql).

Durability: `append()` writes the events at once (so they survive a crash of this process) and
returns a future. In `strict` mode it resolves only after they are also fsync'd (so they survive a
crash of the machine); one fsync serves every append that arrived while the previous one ran (group
commit). In `relaxed` mode it resolves at once; fsync happens at sealing.
"""
from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import orjson

from .records import Event

log = logging.getLogger("receipts.journal")

DURABILITY = ("full", "strict", "relaxed")
_DONE: Future = Future()  # shared by every append that waits for nothing
_DONE.set_result(None)
SYNC_DELAY = 0.05  # seconds an unawaited write may wait for its fsync (strict and full modes)


def _failed(exc: BaseException) -> Future:
    fut: Future = Future()
    fut.set_exception(exc)
    return fut


class JournalBusy(Exception):
    """Another live process already writes under this writer name."""


def journal_dir(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / "journal"


class _Slots:
    """The sealed slots of one writer: which are free, and the next new slot number."""

    def __init__(self, root: Path, writer: str):
        self.root, self.writer = root, writer
        self.free: list[Path] = []
        self.next_no = 1
        for path in sorted(root.glob(f"{writer}-*.jsonl")):
            number = path.stem.rsplit("-", 1)[-1]
            if not number.isdigit():
                continue
            self.next_no = max(self.next_no, int(number) + 1)
            if path.stat().st_size == 0:
                self.free.append(path)
        self.lock = threading.Lock()

    def take(self) -> Path:
        with self.lock:
            if self.free:
                return self.free.pop(0)
            path = self.root / f"{self.writer}-{self.next_no:06d}.jsonl"
            self.next_no += 1
            return path

    def give_back(self, paths: list[Path]) -> None:
        with self.lock:
            self.free.extend(paths)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _valid_prefix(raw: bytes) -> tuple[bytes, int]:
    """The complete, parseable lines of a segment left by a dead writer, and the highest seq seen."""
    keep, top = [], 0
    for line in raw.split(b"\n")[:-1]:  # the part after the last newline is an unfinished write
        try:
            top = max(top, int(orjson.loads(line).get("seq", 0)))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            log.warning("dropping an unreadable journal line (%d bytes)", len(line))
            continue
        keep.append(line)
    return b"".join(x + b"\n" for x in keep), top


class Journal:
    """One writer's journal. `append` writes in the caller's thread (a short `write()` to the page
    cache, under a lock); a flusher thread group-commits the fsyncs, seals segments and hands full
    ones to the compactor."""

    def __init__(self, data_dir: str | os.PathLike, writer: str = "proxy", *,
                 durability: str = "strict", seal_interval: float = 1.0,
                 seal_bytes: int = 8 << 20, compact_after: int = 64, compact_grace: float = 60.0):
        if durability not in DURABILITY:
            raise ValueError(f"durability must be one of {', '.join(DURABILITY)}, not {durability!r}")
        self.root = journal_dir(data_dir)
        self.open_dir = self.root / "open"
        self.durability = durability
        self.seal_interval, self.seal_bytes = seal_interval, seal_bytes
        self.compact_after, self.compact_grace = compact_after, compact_grace
        self.name = writer  # the writer name asked for; start() takes it, or the first free `<name>N`
        self.writer = ""
        self._cv = threading.Condition()
        self._waiting: list[Future] = []   # appends waiting for the next fsync
        self._dirty_since: float | None = None  # first write not yet fsync'd
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._compactor = None
        self.last_error: str | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self, writer: str | None = None) -> "Journal":
        """Take the writer name (or the first free `<name>N`), recover leftovers, start writing."""
        self.open_dir.mkdir(parents=True, exist_ok=True)
        from .layout import ensure_anchors  # the files every view needs to exist
        ensure_anchors(self.root)
        self._lock_fd, self.writer = self._claim(writer or self.name)
        self._slots = _Slots(self.root, self.writer)
        self._seq = self._recover(self.writer, self._slots)
        self._recover_orphans()
        self._fd = os.open(self._open_path(self.writer), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = self._opened_at = 0
        from .compact import Compactor
        self._compactor = Compactor(self.root, self.writer, self._slots, self.compact_grace)
        self._compactor.resume()
        self._stopping = False
        self._thread = threading.Thread(target=self._flusher, name=f"journal-{self.writer}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Flush, seal what is written, stop. Idempotent."""
        if self._thread is None:
            return
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join()
        self._thread = None
        if self._compactor:
            self._compactor.stop()
        os.close(self._fd)
        os.close(self._lock_fd)

    def __enter__(self) -> "Journal":
        return self.start() if self._thread is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the public operation -------------------------------------------------------------
    def append(self, events: list[Event], fsync: bool = True) -> Future:
        """Write events now (they survive a crash of this process from here on).

        The future resolves once they are also fsync'd when `fsync` is asked for (always in `full`
        mode, never in `relaxed` mode), else at once; such writes are fsync'd by a group commit at
        most SYNC_DELAY later (`relaxed`: at sealing). A failed write (disk full, read-only
        directory) fails the future, and nothing of it stays in the journal.
        """
        with self._cv:
            if self._thread is None:
                return _failed(RuntimeError("the journal is not running"))
            try:
                self._write(events)
            except OSError as exc:
                return _failed(exc)
            if self._dirty_since is None:
                self._dirty_since = time.monotonic()
            if not (self.durability == "full" or (fsync and self.durability == "strict")):
                return _DONE  # the flusher, awake every SYNC_DELAY, fsyncs it: no wake-up needed
            fut: Future = Future()
            self._waiting.append(fut)
            self._cv.notify()  # waking the flusher costs the event loop a GIL hand-over: only here
        return fut

    def write(self, events: list[Event], timeout: float = 30.0) -> None:
        """Append and wait: for callers outside an event loop (ingest, verifier)."""
        self.append(events).result(timeout)

    def _write(self, events: list[Event]) -> None:
        seq = self._seq
        blob = b"".join(orjson.dumps(e.envelope(self.writer, seq + i)) + b"\n" for i, e in enumerate(events))
        try:
            written = os.write(self._fd, blob)  # O_APPEND
            if written != len(blob):
                raise OSError(28, "short write (No space left on device?)")
        except OSError as exc:
            self._undo_partial_write()
            self.last_error = f"cannot write the journal in {self.open_dir}: {exc.strerror or exc}"
            log.error("%s", self.last_error)
            raise OSError(exc.errno, self.last_error) from None
        if self._size == 0:
            self._opened_at = time.monotonic()
        self._size += len(blob)
        self._seq, self.last_error = seq + len(events), None

    # ---- writer name and recovery ---------------------------------------------------------
    def _open_path(self, writer: str) -> Path:
        return self.open_dir / f"{writer}.jsonl"

    def _try_lock(self, writer: str) -> int | None:
        fd = os.open(self.open_dir / f"{writer}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            os.close(fd)
            return None

    def _claim(self, base: str) -> tuple[int, str]:
        for n in range(1, 33):
            name = base if n == 1 else f"{base}{n}"
            fd = self._try_lock(name)
            if fd is not None:
                return fd, name
        raise JournalBusy(f"32 live writers already use {self.open_dir} as {base!r}")

    def _recover(self, writer: str, slots: _Slots) -> int:
        """Seal what a dead writer of this name left in its open segment; return the next seq."""
        state = self.open_dir / f"{writer}.state"
        try:
            seq = int(orjson.loads(state.read_bytes())["next_seq"])
        except (OSError, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            seq = 1
        path = self._open_path(writer)
        if path.exists():
            good, top = _valid_prefix(path.read_bytes())
            seq = max(seq, top + 1)
            if good:
                tmp = path.with_suffix(".recovered")
                tmp.write_bytes(good)
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
                self._write_state(writer, seq)
                os.replace(tmp, slots.take())
                log.info("recovered %d bytes left unsealed by %s", len(good), writer)
            path.unlink()
            _fsync_dir(self.root)
        return seq

    def _recover_orphans(self) -> None:
        """Other writers that died (their lock is free) may have left an open segment: seal it."""
        for path in self.open_dir.glob("*.jsonl"):
            other = path.stem
            if other == self.writer:
                continue
            fd = self._try_lock(other)
            if fd is None:
                continue
            try:
                self._recover(other, _Slots(self.root, other))
            finally:
                os.close(fd)

    def _write_state(self, writer: str, next_seq: int) -> None:
        state = self.open_dir / f"{writer}.state"
        tmp = state.with_suffix(".state-tmp")
        tmp.write_bytes(orjson.dumps({"next_seq": next_seq}))
        os.replace(tmp, state)

    # ---- the flusher thread ---------------------------------------------------------------
    def _flusher(self) -> None:
        while True:
            with self._cv:
                if not (self._waiting or self._stopping or self._sync_due()):
                    self._cv.wait(self._wait_time())
                waiting, self._waiting = self._waiting, []
                dirty = self._sync_due()
                if waiting or dirty:
                    self._dirty_since = None
                stopping = self._stopping
                fd = self._fd
            if waiting or dirty:
                self._sync(fd, waiting)
            with self._cv:
                self._seal_if_due(force=stopping)
            if stopping:
                return

    def _sync(self, fd: int, waiting: list[Future]) -> None:
        """One fsync for every append that arrived since the last one (group commit)."""
        try:
            os.fsync(fd)
        except OSError as exc:
            self.last_error = f"cannot fsync the journal in {self.open_dir}: {exc.strerror or exc}"
            log.error("%s", self.last_error)
            for fut in waiting:
                fut.set_exception(OSError(exc.errno, self.last_error))
            return
        for fut in waiting:
            fut.set_result(None)

    def _sync_due(self) -> bool:
        """Writes nobody waits for are fsync'd SYNC_DELAY after the first of them (not in relaxed
        mode), so that under load one fsync covers many, and fsync rarely competes with writes."""
        return (self.durability != "relaxed" and self._dirty_since is not None
                and time.monotonic() - self._dirty_since >= SYNC_DELAY)

    def _wait_time(self) -> float:
        now = time.monotonic()
        deadlines = [self._opened_at + self.seal_interval] if self._size else [now + 1.0]
        if self.durability != "relaxed":
            deadlines.append(now + SYNC_DELAY if self._dirty_since is None else self._dirty_since + SYNC_DELAY)
        return max(0.0, min(deadlines) - now)

    def _undo_partial_write(self) -> None:
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            log.error("could not cut a partial write from the open segment; recovery will drop it")

    def _seal_if_due(self, force: bool = False) -> None:
        """Called with the lock held, so no append lands in a segment while it is being sealed."""
        if self._size == 0:
            return
        due = time.monotonic() - self._opened_at >= self.seal_interval or self._size >= self.seal_bytes
        if not (due or force):
            return
        try:
            self._seal()
        except OSError as exc:
            self.last_error = f"cannot seal a journal segment: {exc.strerror or exc}"
            log.error("%s", self.last_error)

    def _seal(self) -> None:
        os.fsync(self._fd)
        self._dirty_since = None
        self._write_state(self.writer, self._seq)
        slot = self._slots.take()
        os.replace(self._open_path(self.writer), slot)
        _fsync_dir(self.root)
        os.close(self._fd)
        self._fd = os.open(self._open_path(self.writer), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = 0
        self._compactor.sealed(slot, self.compact_after)
