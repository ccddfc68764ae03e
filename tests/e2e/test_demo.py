"""`scripts/demo` runs to completion and stops everything it started."""
import subprocess

from support.proc import ROOT


def pids(pattern):
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return set(out.stdout.split())


def test_demo_runs_to_completion_and_cleans_up():
    before = pids("anvil") | pids("receipts proxy")
    out = subprocess.run([str(ROOT / "scripts" / "demo")], capture_output=True, text=True, timeout=300,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    text = out.stdout
    assert "=== paid call ===" in text and "Proof status  passed" in text
    assert "passed · risky (paid_but_server_error)" in text
    assert "passed · retried" in text
    assert "demo: done; everything it started is stopped." in text
    assert (pids("anvil") | pids("receipts proxy")) - before == set()
