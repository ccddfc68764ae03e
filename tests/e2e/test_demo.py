"""`scripts/demo` runs to completion and stops everything it started."""
import subprocess

from support.proc import ROOT


def pids(pattern):
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return set(out.stdout.split())


def test_demo_runs_to_completion_and_cleans_up():
    before = pids("anvil") | pids("receipts proxy") | pids("og_gateway")
    out = subprocess.run([str(ROOT / "scripts" / "demo")], capture_output=True, text=True, timeout=300,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    text = out.stdout
    assert "=== paid call ===" in text and "Proof status  passed" in text
    assert "passed · risky (paid_but_server_error)" in text
    assert "passed · retried" in text
    og = text.split("demo: OpenGradient", 1)[1]
    assert "=== OpenGradient session" in og and og.count("Proof status  passed") == 3
    assert "Anchor        individual: tx 0x" in og and "Anchor        batch: root 0x" in og
    assert "Upstream pin  match" in og and "pending  (batch_pending)" in og
    assert "demo: done; everything it started is stopped." in text
    assert (pids("anvil") | pids("receipts proxy") | pids("og_gateway")) - before == set()
