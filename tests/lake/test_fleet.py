"""`scripts/fleet`'s own program (testbed/fleet.py), as it runs: PostgreSQL, SeaweedFS, anvil with the
real x402 facilitator and server, two recorders with a shipper each, two verifier shards over the lake
and the page; every paid call is `passed` in the lake, verified against the chain by the shards."""
import subprocess
import sys

from support.proc import ROOT


def test_the_fleet_verifies_every_paid_call_in_the_lake(tmp_path):
    out = subprocess.run([sys.executable, "-m", "testbed.fleet", "--recorders", "2", "--calls", "1", "--dir",
                          str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "fleet: 2 of 2 receipts passed in the lake" in out.stdout, out.stdout
    names = {line.split()[0] for line in out.stdout.splitlines() if line.startswith(("recorder", "verifier"))}
    assert {"recorder1", "recorder2"} <= names and names & {"verifier1", "verifier2"}
