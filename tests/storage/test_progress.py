"""storage.progress: long work speaks (after a second, every two, and at its end); short work is quiet."""
from receipts.storage.progress import Progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_long_work_says_how_far_it_is_and_when_it_ends():
    clock, lines = Clock(), []
    p = Progress("ingest: read", 1000, "exchanges", lines.append, clock=clock)
    for _ in range(10):
        clock.now += 0.5
        p.add(100)
    p.finish()
    assert lines[0] == "ingest: read: 200 of 1,000 exchanges (20%) in 1 s, about 4 s left"
    assert len(lines) == 1 + 2 + 1  # at 1 s, then at 3 s and 5 s, then the end
    assert lines[-1] == "ingest: read: 1,000 of 1,000 exchanges done in 5 s"


def test_short_work_is_quiet():
    clock, lines = Clock(), []
    p = Progress("export", None, "rows", lines.append, clock=clock)
    clock.now = 0.5
    p.add(10)
    p.finish()
    assert lines == []
