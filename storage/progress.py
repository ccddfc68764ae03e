"""Progress of long work (an ingest, an export, the first fold), on standard error.

Quiet for work that ends within `after` seconds; then a line at most every `every` seconds, and one at
the end. Lines, not a redrawn bar: they read the same in a terminal, in CI logs and piped to a file.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


class Progress:
    def __init__(
        self,
        what: str,
        total: int | None = None,
        unit: str = "",
        say: Callable[[str], None] | None = None,
        after: float = 1.0,
        every: float = 2.0,
        clock=time.monotonic,
    ):
        self.what, self.total, self.unit = what, total, unit
        self._say = say or (lambda text: print(f"receipts: {text}", file=sys.stderr, flush=True))
        self._clock, self._every = clock, every
        self._start = clock()
        self._next = self._start + after
        self.done = 0
        self.spoke = False

    def add(self, n: int = 1) -> None:
        self.done += n
        now = self._clock()
        if now >= self._next:
            self._next = now + self._every
            self._line(now)

    def finish(self) -> None:
        if self.spoke:  # (work that never spoke stays quiet at its end too)
            self._line(self._clock(), final=True)

    def _line(self, now: float, final: bool = False) -> None:
        self.spoke = True
        of = f" of {self.total:,}" if self.total is not None else ""
        pct = f" ({self.done / self.total:.0%})" if self.total and not final else ""
        rate = self.done / max(now - self._start, 1e-9)
        left = ""
        if self.total and not final and rate > 0:
            left = f", about {max(0.0, (self.total - self.done) / rate):.0f} s left"
        self._say(
            f"{self.what}: {self.done:,}{of} {self.unit}{pct}{' done' if final else ''} "
            f"in {now - self._start:.0f} s{left}".replace("  ", " ")
        )
