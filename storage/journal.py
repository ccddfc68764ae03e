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

import errno
import fcntl
import logging
import os
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from .records import Event

if TYPE_CHECKING:
    from .fold import Folder

log = logging.getLogger("receipts.journal")

DURABILITY = ("full", "strict", "relaxed")
_DONE: Future = Future()  # shared by every append that waits for nothing
_DONE.set_result(None)
SYNC_DELAY = 0.05  # seconds an unawaited write may wait for its fsync (strict and full modes)
RETRY = 1.0  # seconds between attempts to rebuild a broken journal (and between repeated errors)


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
            if not self.free:  # the fold empties folded slots (maybe in another process): look again
                self.free = [
                    p
                    for p in sorted(self.root.glob(f"{self.writer}-*.jsonl"))
                    if p.stem.rsplit("-", 1)[-1].isdigit() and p.stat().st_size == 0
                ]
            if self.free:
                return self.free.pop(0)
            path = self.root / f"{self.writer}-{self.next_no:06d}.jsonl"
            self.next_no += 1
            return path


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
    ones to the compactor.

    Faults. Every append first checks that the open segment is still a named file, and the flusher
    that it is the file at its path: a data directory removed, replaced or unmounted under the proxy
    is noticed at once, and always before an fsync'd append is acknowledged. Such a
    loss, or a failed fsync, makes the journal *broken*: every append fails (the recorder refuses paid
    calls) until the flusher has rebuilt a sound open segment. As PostgreSQL does after a failed fsync,
    a descriptor whose fsync failed is never trusted again: the bytes fsync'd before it (read back) and
    those written since (kept in memory until an fsync covers them) go into a fresh file, fsync'd, that
    replaces the open segment. The flusher tries this every RETRY seconds, once the data directory
    exists again; errors are logged at most once per RETRY seconds.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        writer: str = "proxy",
        *,
        durability: str = "strict",
        seal_interval: float = 1.0,
        seal_bytes: int = 8 << 20,
        compact_after: int = 64,
        compact_grace: float = 60.0,
        fold: bool = True,
    ):
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
        self._waiting: list[Future] = []  # appends waiting for the next fsync
        self._dirty_since: float | None = None  # first write not yet fsync'd
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._folder: Folder | None = None
        self._folds = fold  # whether this writer runs the fold (storage/fold.py Folder)
        self._broken: str | None = None  # why nothing can be written now (see the class docstring)
        self._retry_at = 0.0
        self._logged = Throttle(10 * RETRY)
        self.last_error: str | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self, writer: str | None = None) -> Journal:
        """Take the writer name (or the first free `<name>N`), recover leftovers, start writing."""
        self.open_dir.mkdir(parents=True, exist_ok=True)
        from .layout import ensure_anchors  # the files every view needs to exist

        ensure_anchors(self.root)
        self._lock_fd, self.writer = self._claim(writer or self.name)
        self._slots = _Slots(self.root, self.writer)
        self._seq = self._recover(self.writer, self._slots)
        self._recover_orphans()
        self._open_segment()
        self._start_folder()
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
        if self._folder:
            self._folder.stop()
        os.close(self._fd)
        os.close(self._lock_fd)

    def __enter__(self) -> Journal:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def broken(self) -> str | None:
        """Why the journal cannot be written now (None: it can)."""
        return self._broken

    # ---- the public operation -------------------------------------------------------------
    def append(self, events: list[Event], fsync: bool = True) -> Future:
        """Write events now (they survive a crash of this process from here on).

        The future resolves once they are also fsync'd when `fsync` is asked for (always in `full`
        mode, never in `relaxed` mode), else at once; such writes are fsync'd by a group commit at
        most SYNC_DELAY later (`relaxed`: at sealing). A failed write (disk full, read-only or removed
        directory, a broken journal, an event that cannot be serialized) fails the future, and nothing
        of it stays in the journal.
        """
        with self._cv:
            if self._thread is None:
                return _failed(RuntimeError("the journal is not running"))
            try:
                self._check_place()
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
        try:
            blob = b"".join(orjson.dumps(e.envelope(self.writer, seq + i)) + b"\n" for i, e in enumerate(events))
        except (TypeError, ValueError) as exc:  # orjson: text that is not UTF-8, a value it cannot encode
            raise OSError(errno.EINVAL, f"an event could not be serialized ({exc}); nothing was written") from None
        try:
            written = os.write(self._fd, blob)  # O_APPEND
            if written != len(blob):
                raise OSError(28, "short write (No space left on device?)")
        except OSError as exc:
            self._undo_partial_write()
            self.last_error = f"cannot write the journal in {self.open_dir}: {exc.strerror or exc}"
            self._logged.error("%s", self.last_error)
            raise OSError(exc.errno, self.last_error) from None
        if self._size == 0:
            self._opened_at = time.monotonic()
        self._size += len(blob)
        self._tail.append(blob)
        self._seq, self.last_error = seq + len(events), None

    def _check_place(self) -> None:
        """Fail unless the journal is sound and the open segment still has a name (one fstat: a removed
        directory unlinks it; the flusher also checks the path itself after every fsync, which catches
        an unmounted directory within SYNC_DELAY, and always before an fsync'd append is acknowledged)."""
        if self._broken is None and os.fstat(self._fd).st_nlink > 0:
            return
        if self._broken is None:
            self._break(
                f"the journal's open segment disappeared from {self.open_dir}: the data directory "
                "was removed, replaced or unmounted"
            )
        raise OSError(errno.EIO, self._broken)

    def _segment_in_place(self) -> bool:
        try:
            st = os.stat(self._open_name)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._ident

    def _break(self, why: str) -> None:
        """Called with the lock held: nothing is written until the flusher rebuilds the open segment."""
        self._broken = self.last_error = why
        self._retry_at = 0.0
        self._logged.error("journal broken, refusing writes until it recovers: %s", why)
        self._cv.notify()

    # ---- writer name and recovery ---------------------------------------------------------
    def _open_path(self, writer: str) -> Path:
        return self.open_dir / f"{writer}.jsonl"

    def _open_segment(self) -> None:
        self._open_name = str(self._open_path(self.writer))  # a str: the hot path stats it on every append
        self._fd = os.open(self._open_name, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        st = os.fstat(self._fd)
        self._ident = (st.st_dev, st.st_ino)
        self._size = self._synced = os.lseek(self._fd, 0, os.SEEK_END)
        self._opened_at = time.monotonic()
        self._tail: list[bytes] = []  # blobs written after the last fsync (`_synced` bytes)

    def _start_folder(self) -> None:
        if not self._folds:
            return
        from .fold import Folder

        self._folder = Folder(self.root.parent, self.compact_grace)
        self._folder.start()

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
        for leftover in (".recovered", ".state-tmp", ".salvage"):  # temp files of an interrupted step
            self.open_dir.joinpath(writer + leftover).unlink(missing_ok=True)
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
                stopping, broken = self._stopping, self._broken
                fd, covered = self._fd, (self._size, len(self._tail))
            if broken:
                _fail(waiting, broken)
                self._rebuild()
            elif waiting or dirty:
                self._sync(fd, covered, waiting)
            with self._cv:
                sealing = self._seal_due(stopping)
                fd, size = self._fd, self._size
            synced = None
            if sealing:  # the segment's bytes fsync'd before the lock is taken: appends do not wait for it
                try:
                    os.fsync(fd)
                    synced = (fd, size)
                except OSError:
                    pass  # (fsync'd again under the lock, where a failure breaks the journal)
            with self._cv:
                self._seal_if_due(force=stopping, synced=synced)
            if stopping:
                return

    def _sync(self, fd: int, covered: tuple[int, int], waiting: list[Future]) -> None:
        """One fsync for every append that arrived since the last one (group commit). It counts only
        if the segment is still in place afterwards (an fsync of a removed file proves nothing)."""
        try:
            os.fsync(fd)
        except OSError as exc:
            with self._cv:
                self._break(f"cannot fsync the journal in {self.open_dir}: {exc.strerror or exc}")
            _fail(waiting, self._broken)
            return
        with self._cv:
            if not self._segment_in_place():
                self._break(
                    f"the journal's open segment disappeared from {self.open_dir}: the data "
                    "directory was removed, replaced or unmounted"
                )
            elif fd == self._fd:
                self._synced = max(self._synced, covered[0])
                del self._tail[: covered[1]]
            broken = self._broken
        if broken:
            _fail(waiting, broken)
        else:
            for fut in waiting:
                fut.set_result(None)

    def _sync_due(self) -> bool:
        """Writes nobody waits for are fsync'd SYNC_DELAY after the first of them (not in relaxed
        mode), so that under load one fsync covers many, and fsync rarely competes with writes."""
        return (
            self.durability != "relaxed"
            and self._dirty_since is not None
            and self._broken is None
            and time.monotonic() - self._dirty_since >= SYNC_DELAY
        )

    def _wait_time(self) -> float:
        now = time.monotonic()
        if self._broken:
            return max(0.0, self._retry_at - now)
        deadlines = [max(self._opened_at + self.seal_interval, self._retry_at)] if self._size else [now + 1.0]
        if self.durability != "relaxed":
            deadlines.append(now + SYNC_DELAY if self._dirty_since is None else self._dirty_since + SYNC_DELAY)
        return max(0.0, min(deadlines) - now)

    def _undo_partial_write(self) -> None:
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            log.error("could not cut a partial write from the open segment; recovery will drop it")

    def _seal_due(self, force: bool = False) -> bool:
        if self._size == 0 or self._broken or (time.monotonic() < self._retry_at and not force):
            return False
        return force or time.monotonic() - self._opened_at >= self.seal_interval or self._size >= self.seal_bytes

    def _seal_if_due(self, force: bool = False, synced: tuple[int, int] | None = None) -> None:
        """Called with the lock held, so no append lands in a segment while it is being sealed. `synced`:
        (fd, size) fsync'd just before the lock was taken; if nothing was appended since, the segment
        needs no second fsync here (only the directory does)."""
        if not self._seal_due(force):
            return
        try:
            if synced != (self._fd, self._size):
                os.fsync(self._fd)
        except OSError as exc:
            self._break(f"cannot fsync the journal in {self.open_dir}: {exc.strerror or exc}")
            return
        try:
            self._seal()
        except OSError as exc:  # tried again RETRY seconds later, not in a busy loop
            self.last_error = f"cannot seal a journal segment: {exc.strerror or exc}"
            self._retry_at = time.monotonic() + RETRY
            self._logged.error("%s", self.last_error)

    def _seal(self) -> None:
        self._dirty_since = None
        self._synced, self._tail = self._size, []
        self._write_state(self.writer, self._seq)
        slot = self._slots.take()
        os.replace(self._open_path(self.writer), slot)
        _fsync_dir(self.root)
        os.close(self._fd)
        self._open_segment()
        if self._folder:
            self._folder.sealed(self.compact_after)

    # ---- rebuilding a broken journal ------------------------------------------------------
    def _rebuild(self) -> None:
        """Called by the flusher while broken: put every event written so far into a fresh, fsync'd
        open segment at the journal's path, once the data directory exists again."""
        if time.monotonic() < self._retry_at:
            return
        self._retry_at = time.monotonic() + RETRY
        if not self.root.parent.is_dir():
            return  # the data directory is not back
        try:
            salvage = (os.pread(self._fd, self._synced, 0) if self._synced else b"") + b"".join(self._tail)
            fresh = self._rebuild_dirs()
            fd = self._fresh_segment(salvage)
        except OSError as exc:
            self._logged.error("journal still broken (%s); trying again every %.0f s", exc.strerror or exc, RETRY)
            return
        with self._cv:
            os.close(self._fd)
            self._fd = fd
            st = os.fstat(fd)
            self._ident, self._size, self._synced, self._tail = (st.st_dev, st.st_ino), len(salvage), len(salvage), []
            self._opened_at, self._broken, self.last_error, self._retry_at = time.monotonic(), None, None, 0.0
        if fresh:
            if self._folder:
                self._folder.stop()
            self._slots = _Slots(self.root, self.writer)
            self._start_folder()
        log.warning("journal writable again in %s (%d bytes of unsealed events kept)", self.root, len(salvage))

    def _rebuild_dirs(self) -> bool:
        """The journal's directories again, and this writer's lock in them; True if they were recreated."""
        lock = self.open_dir / f"{self.writer}.lock"
        if lock.exists() and os.stat(lock).st_ino == os.fstat(self._lock_fd).st_ino:
            return False
        self.open_dir.mkdir(parents=True, exist_ok=True)
        from .layout import ensure_anchors

        ensure_anchors(self.root)
        fd = self._try_lock(self.writer)
        if fd is None:
            raise OSError(errno.EBUSY, f"another live writer took the name {self.writer!r} in {self.open_dir}")
        os.close(self._lock_fd)
        self._lock_fd = fd
        return True

    def _fresh_segment(self, content: bytes) -> int:
        """A new open segment holding `content`, fsync'd, atomically in place of the old one."""
        path = self._open_path(self.writer)
        tmp = path.with_suffix(".salvage")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        try:
            if content and os.write(fd, content) != len(content):
                raise OSError(errno.ENOSPC, "short write (No space left on device?)")
            os.fsync(fd)
            os.replace(tmp, path)
            _fsync_dir(self.open_dir)
        except OSError:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        return fd


def _fail(waiting: list[Future], why: str | None) -> None:
    for fut in waiting:
        fut.set_exception(OSError(errno.EIO, why or "the journal is broken"))


class Throttle:
    """Logs an error at most once per `every` seconds, saying how many were left out in between."""

    def __init__(self, every: float, logger: logging.Logger = log):
        self.every, self.next_at, self.skipped, self.log = every, 0.0, 0, logger
        self._lock = threading.Lock()

    def error(self, msg: str, *args) -> None:
        with self._lock:
            now = time.monotonic()
            if now < self.next_at:
                self.skipped += 1
                return
            skipped, self.skipped, self.next_at = self.skipped, 0, now + self.every
        if skipped:
            msg += f" (and {skipped} more like it in the last {self.every:.0f} s)"
        self.log.error(msg, *args)
