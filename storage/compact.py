"""Compaction: fold full journal slots into Parquet without a reader ever seeing a gap or an error.

1. copy the slots' events into `parquet/date=<today>/<writer>-<uuid7>.parquet` (temp name, fsync,
   rename), with a sidecar `….slots` naming each slot and the id of its first event;
2. after a grace period (so a query that listed files before the Parquet existed still finds the
   events in the slots), replace each slot with an empty file (atomic rename: the path never
   disappears) and hand it back to the writer as free;
3. drop the sidecar. A sidecar found at start-up means step 2 was interrupted: it is resumed.
Readers see an event twice only during the grace period, and the views keep one copy by event id.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson

from .layout import columns_sql, parquet_dir
from .records import uuid7

log = logging.getLogger("receipts.compact")


def _first_id(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            line = f.readline()
        return orjson.loads(line).get("id") if line else None
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return None


def write_parquet(slots: list[Path], target: Path) -> None:
    """Copy the events of `slots` into one Parquet file at `target`, atomically."""
    import duckdb

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    files = [str(p) for p in slots]
    with duckdb.connect() as con:
        con.execute(
            f"COPY (SELECT * FROM read_json($files, format='newline_delimited', columns={columns_sql()})"
            f" ORDER BY writer, seq) TO '{tmp}' (FORMAT parquet, COMPRESSION zstd)",
            {"files": files})
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, target)


class Compactor:
    """Compacts one writer's full slots in a background thread."""

    def __init__(self, journal: Path, writer: str, slots, grace: float):
        self.journal, self.writer, self.slots, self.grace = journal, writer, slots, grace
        self.full: list[Path] = []
        self.retiring: list[tuple[float, Path, dict[str, str]]] = []
        self._work: list[list[Path]] = []
        self._cv = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"compact-{writer}", daemon=True)

    def resume(self) -> None:
        """Pick up interrupted retirements and slots that were full when the last writer died, and
        remove this writer's temporary files that a crash left behind."""
        uuid = "????????-????-????-????-????????????"
        for orphan in [*parquet_dir(self.journal).glob(f"*/.{self.writer}-{uuid}.parquet.tmp"),
                       *self.journal.glob(f".{self.writer}-{'[0-9]' * 6}.jsonl.empty")]:
            orphan.unlink(missing_ok=True)
            log.info("removed %s, left by an interrupted compaction", orphan.name)
        retired: set[str] = set()
        for sidecar in parquet_dir(self.journal).glob(f"*/{self.writer}-*.parquet.slots"):
            try:
                entries = orjson.loads(sidecar.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue
            if not sidecar.with_suffix("").exists():  # the Parquet never landed: slots stay full
                sidecar.unlink(missing_ok=True)
                continue
            retired.update(entries)
            self.retiring.append((time.monotonic() + self.grace, sidecar, entries))
        for path in sorted(self.journal.glob(f"{self.writer}-*.jsonl")):
            if path.name not in retired and path.stat().st_size > 0:
                self.full.append(path)
        self._thread.start()

    def sealed(self, slot: Path, threshold: int) -> None:
        """Called by the writer after sealing: compaction starts once `threshold` slots are full."""
        with self._cv:
            self.full.append(slot)
            if len(self.full) >= threshold:
                self._work.append(self.full)
                self.full = []
                self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cv:
                timeout = min((d for d, _, _ in self.retiring), default=time.monotonic() + 5) - time.monotonic()
                if not self._work and not self._stopping:
                    self._cv.wait(max(0.0, timeout))
                if self._stopping:
                    return
                work, self._work = self._work, []
            for group in work:
                self._compact(group)
            self._retire_due()

    def _compact(self, group: list[Path]) -> None:
        day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        target = parquet_dir(self.journal) / f"date={day}" / f"{self.writer}-{uuid7()}.parquet"
        entries = {p.name: _first_id(p) for p in group}
        sidecar = target.with_name(target.name + ".slots")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            sidecar.write_bytes(orjson.dumps(entries))
            write_parquet(group, target)
        except Exception as exc:  # keep the slots full and visible; try again with the next group
            log.error("compaction of %d segments failed: %s", len(group), exc)
            sidecar.unlink(missing_ok=True)
            with self._cv:
                self.full = group + self.full
            return
        with self._cv:
            self.retiring.append((time.monotonic() + self.grace, sidecar, entries))

    def _retire_due(self) -> None:
        now = time.monotonic()
        with self._cv:
            due = [r for r in self.retiring if r[0] <= now]
            self.retiring = [r for r in self.retiring if r[0] > now]
        for _, sidecar, entries in due:
            freed = [p for name, first in entries.items() if (p := self.journal / name) and self._empty(p, first)]
            self.slots.give_back(freed)
            sidecar.unlink(missing_ok=True)

    def _empty(self, slot: Path, first_id: str | None) -> bool:
        """Replace a compacted slot by an empty file, if it still holds what was compacted."""
        if _first_id(slot) != first_id:
            return False
        tmp = slot.with_name(f".{slot.name}.empty")
        tmp.write_bytes(b"")
        os.replace(tmp, slot)
        return True
