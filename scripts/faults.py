"""The fault table: runs the tests that produce each fault for real (or inject it, where it cannot be
produced here), and prints what each guarantees with the figures measured in this run.

Each test reports its figures through the `fault_report` fixture (tests/conftest.py) into the file
RECEIPTS_FAULTS_REPORT names; this script sets it, runs the tests, and prints one row per fault class.
A test that fails makes the script exit 1, and its row says FAILED.

Usage: scripts/faults [--markdown-out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# fault class -> (test selection, the prefix of the figures it reports, how it is produced, what is guaranteed)
FAULTS = [
    ("kill -9 under load", "tests/e2e/test_durability.py::test_kill_9_at_random_moments_loses_nothing", "kill -9 under load",
     "20 kill -9 of a real proxy at random moments, 4 clients calling (a third paid)",
     "every request that reached the upstream and every answer that reached a client is in the journal; no duplicate, no partial event"),
    ("kill -9 during compaction", "tests/e2e/test_durability.py::test_kill_9_at_random_moments_loses_nothing",
     "kill -9 during compaction", "12 kill -9 while segments are sealed every 50 ms and compacted every 2",
     "as above; temporary files of an interrupted compaction are removed at the next start"),
    ("kill -9 during verify", "tests/e2e/test_verify.py::test_kill_9_during_a_verify_pass_decides_each_receipt_once",
     "kill -9 during verify", "kill -9 of `receipts verify` at random moments of a pass over 4,000 real settlements on anvil",
     "a rerun completes the pass; each receipt gets exactly one verdict"),
    ("disk full", "tests/e2e/test_durability.py::test_full_disk_refuses_paid_requests_and_lets_unpaid_through", "disk full",
     "a real 2 MiB tmpfs filled to the last byte",
     "paid requests get a 503 and never leave; unpaid ones pass with no receipt id; recording resumes when space is back"),
    ("data directory removed", "tests/e2e/test_fail_closed.py::test_a_removed_data_directory_refuses_paid_calls_until_it_is_back",
     "data directory removed", "rm -rf of the data directory under a running proxy, then mkdir",
     "paid calls get a 503 until it is back, without spinning or flooding the log; the proxy recovers by itself"),
    ("fsync failure", "tests/storage/test_journal.py::test_after_a_failed_fsync_the_descriptor_is_never_trusted_again",
     "fsync failure", "INJECTED: os.fsync of the open segment fails with EIO",
     "the append fails (paid: 503); the descriptor is never fsync'd again; its events move to a fresh fsync'd file"),
    ("compression bombs, huge bodies", "tests/e2e/test_bounded.py::test_bombs_and_huge_bodies_stay_within_the_memory_bound",
     "compression bombs", "1 GiB gzip bombs in a request and an answer, 100 MB answers (length, chunked), a 50 MB upload",
     "peak RSS under 300 MB; bodies forwarded byte for byte; `body_too_large` recorded"),
    ("slowloris", "tests/e2e/test_bounded.py::test_slow_clients_are_cut_off_and_the_proxy_keeps_serving", "slowloris",
     "30 connections sending headers that never end, and an idle kept-alive connection",
     "connections past max_client_connections closed at once, the rest at header_timeout / idle_timeout"),
    ("fuzzed exchanges", "tests/e2e/test_fuzz.py", "fuzzed exchanges",
     "2,000 mutated requests and answers (x402 headers, bodies, encodings, bytes that are not UTF-8)",
     "no traceback; every stamped receipt id has its row; every paid request recorded or refused"),
    ("a lying node", "tests/e2e/test_lying_node.py", "lying node",
     "a real JSON-RPC process in front of anvil forging receipts, block hashes, heads; a 300 MB answer",
     "never `passed`; no new verdict from a jumping head; the answer hits the size cap"),
    ("the SQL sandbox", "tests/storage/test_sandbox.py", "the SQL sandbox",
     "PRAGMA, IMPORT/EXPORT, COPY, ATTACH, INSTALL/LOAD, SET, CALL, file functions, stacked and hidden statements",
     "each refused; no file read or written outside the journal"),
    ("the secrets scan", "tests/e2e/test_durability.py::test_no_secret_reaches_the_data_directory", "secrets scan",
     "secrets in headers, query, body, payment signature, signed transaction, form and command line",
     "none in any file under the data directory, exports, query output or the audit (bodies: hash and full)"),
]


def run_tests(report: Path) -> int:
    selections = list(dict.fromkeys(selection for _, selection, _, _, _ in FAULTS))
    env = {**os.environ, "RECEIPTS_FAULTS_REPORT": str(report)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selections]
    print(f"faults: running {len(selections)} test selections (several minutes)", file=sys.stderr, flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, stdout=sys.stderr).returncode


def figures(report: Path) -> list[dict]:
    return [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []


def table(found: list[dict]) -> str:
    lines = ["| fault | how it is produced | guaranteed | measured in this run |", "|---|---|---|---|"]
    for name, _, prefix, how, guaranteed in FAULTS:
        rows = [r for r in found if r["fault"].startswith(prefix)]
        measured = "; ".join(f"{r['fault']}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in r["figures"].items())
                             for r in rows) or "FAILED or not run"
        lines.append(f"| {name} | {how} | {guaranteed} | {measured} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown-out", help="also write the table to this file")
    args = ap.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "faults.jsonl"
        code = run_tests(report)
        text = table(figures(report))
    load = os.getloadavg()
    text += (f"\n\nMeasured by `scripts/faults` on {os.cpu_count()} CPUs in {time.monotonic() - started:.0f} s "
             f"(load average {load[0]:.2f}); tests exit code {code}.")
    print(text)
    if args.markdown_out:
        Path(args.markdown_out).write_text(text + "\n")
    return 1 if code else 0


if __name__ == "__main__":
    sys.exit(main())
