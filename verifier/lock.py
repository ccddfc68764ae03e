"""One `receipts verify` at a time per data directory.

Two verifiers read the same history and would both append the verdict that changed: every receipt
would get it twice. So a verifier holds an exclusive `flock` on `<data>/journal/verify.lock` (its pid
written inside, for the message) for as long as it runs; the kernel releases it when the process
ends, however it ends. (The journal's own `open/verifier.lock` is the lock of its writer *name*,
which a second verifier would simply not take: it would write as `verifier2`.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from receipts.storage.journal import journal_dir


class VerifierBusy(Exception):
    """Another verifier holds the lock; the message is one sentence for the user."""


@contextlib.contextmanager
def exclusive(data_dir: str | os.PathLike):
    """Hold the verifier lock of `data_dir` for the block, or raise VerifierBusy at once."""
    path = journal_dir(data_dir) / "verify.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _holder(fd)
        os.close(fd)
        raise VerifierBusy(f"another receipts verify is running on {data_dir} (pid {pid})") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield Path(path)
    finally:
        os.close(fd)  # releases the lock (the file stays: removing it could let two hold different inodes)


def _holder(fd: int, wait: float = 0.5) -> str:
    """The pid the holder wrote (it writes it just after taking the lock: wait a moment for it)."""
    deadline = time.monotonic() + wait
    while True:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text or time.monotonic() > deadline:
            return text or "unknown"
        time.sleep(0.02)
