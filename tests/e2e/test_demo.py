"""`scripts/demo` runs to completion and stops everything it started (its processes, found by a mark in
their environment: other processes on the machine, such as another test's anvil, are not its)."""
import os
import subprocess
import uuid
from pathlib import Path

from support.proc import ROOT, wait_for


def marked(mark: str) -> set[str]:
    """The processes whose environment carries `RECEIPTS_TEST_MARK=mark` (the demo's, and their children)."""
    found, needle = set(), f"RECEIPTS_TEST_MARK={mark}".encode()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if needle in (d / "environ").read_bytes().split(b"\0"):
                    found.add(d.name)
            except OSError:  # (gone, or not ours to read)
                pass
    return found


def test_demo_runs_to_completion_and_cleans_up():
    mark = uuid.uuid4().hex
    proc = subprocess.Popen([str(ROOT / "scripts" / "demo")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL, env={**os.environ, "RECEIPTS_TEST_MARK": mark})
    assert wait_for(lambda: marked(mark), timeout=30), "the mark is seen on the demo's processes while it runs"
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout[-2000:] + stderr[-2000:]
    text = stdout
    assert "=== paid call ===" in text and "Proof status  passed" in text
    assert "passed · risky (paid_but_server_error)" in text
    assert "passed · retried" in text
    og = text.split("demo: OpenGradient", 1)[1]
    assert "=== OpenGradient session" in og and og.count("Proof status  passed") == 3
    assert "Anchor        individual: tx 0x" in og and "Anchor        batch: root 0x" in og
    assert "Upstream pin  match" in og and "pending  (batch_pending)" in og
    assert "demo: done; everything it started is stopped." in text
    assert marked(mark) == set(), "everything the demo started is stopped"
