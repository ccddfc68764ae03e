"""Benchmark of `receipts audit` over synthetic journals of 100,000 and 1,000,000 calls.

The journals are written by testbed/synthetic.py straight into the compacted Parquet layout (the
recorder's and the verifier's event shapes: unpaid calls, x402 calls with their check events, double
charges, retries, OpenGradient sessions, failures, several apps, hosts, models and payees). Each audit
is a fresh `receipts audit --format md` process (startup included), run `--runs` times; the table gives
the median, the spread, the CPU time and the peak memory, then where the time goes inside one audit
at the largest size. Goal: under 10 s at 1,000,000 calls. The machine's load average is printed
beside the figures: other work on the same cores slows every run.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
GOAL_SECONDS = 10.0


def say(msg: str) -> None:
    print(f"bench-audit: {msg}", file=sys.stderr, flush=True)


def run_audit(data: Path) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, peak RSS in MiB) of one `receipts audit` process."""
    start = time.perf_counter()
    proc = subprocess.Popen([str(BIN / "receipts"), "audit", "--data", str(data), "--format", "md", "--out", os.devnull],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"receipts audit failed: {err}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024


def breakdown(data: Path) -> list[tuple[str, float]]:
    """Seconds per step of one audit, in this process."""
    from storage import audit, db

    steps, sql = [], audit.statements(data)
    t0 = time.perf_counter()
    con = db.connect(data, snapshot=False, settings={"preserve_insertion_order": False})  # as storage/audit.py does
    steps.append(("connect (views and macros)", time.perf_counter() - t0))
    groups = [("read the journal (one parse per event)", ("paths", "read", "read_segments")),
              ("fold calls", ("calls",)), ("fold verdicts, receipts, sessions, charges",
                                           ("verdicts", "receipts", "sessions", "charges"))]
    for label, names in groups:
        t = time.perf_counter()
        for name in names:
            con.execute(sql[name])
        steps.append((label, time.perf_counter() - t))
    t = time.perf_counter()
    listed = []
    for name in audit.SECTIONS:
        query = sql[f"section_{name}"]
        rows = con.execute(query, {k: None for k in ("since", "app") if f"${k}" in query}).fetchall()
        if name == "risky_failed":
            listed = [r[0] for r in rows]
    steps.append(("the report's sections", time.perf_counter() - t))
    t = time.perf_counter()
    con.execute("CREATE OR REPLACE TEMP TABLE audit_ids AS SELECT unnest($ids::VARCHAR[]) AS id", {"ids": listed})
    con.execute(sql["evidence"]).fetchall()
    steps.append((f"evidence of the {len(listed):,} risky or failed receipts", time.perf_counter() - t))
    con.close()
    return steps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", metavar="DIR", help="keep (and reuse) the generated journals under DIR")
    args = ap.parse_args()
    from testbed.synthetic import generate

    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-audit-"))
    rows, total = [], time.perf_counter()
    try:
        for n in args.calls:
            data = base / f"calls-{n}-seed-{args.seed}"
            gen_s = None
            if not (data / "journal" / "parquet").exists():
                say(f"generating {n:,} calls into {data}")
                made = generate(data, n, args.seed)
                gen_s = made["seconds"]
            size = sum(p.stat().st_size for p in (data / "journal").rglob("*.parquet")) / 2**20
            import duckdb

            with duckdb.connect() as con:
                events = con.execute(f"SELECT count(*) FROM read_parquet('{data}/journal/parquet/*/*.parquet')").fetchone()[0]
            runs = []
            for i in range(args.runs):
                load = os.getloadavg()[0]
                runs.append((*run_audit(data), load))
                say(f"{n:,} calls: run {i + 1}: {runs[-1][0]:.2f} s (load {load:.2f})")
            rows.append((n, events, size, gen_s, runs))
        steps = breakdown(base / f"calls-{args.calls[-1]}-seed-{args.seed}")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    print("| calls | events | Parquet (MiB) | generated in (s) | audit median (s) | min – max (s) | CPU (s) | peak RSS (MiB) | load avg at start |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, events, size, gen_s, runs in rows:
        walls = [r[0] for r in runs]
        print(f"| {n:,} | {events:,} | {size:,.0f} | {'reused' if gen_s is None else f'{gen_s:.1f}'} | "
              f"{statistics.median(walls):.2f} | {min(walls):.2f} – {max(walls):.2f} | "
              f"{statistics.median(r[1] for r in runs):.2f} | {max(r[2] for r in runs):,} | "
              f"{', '.join(f'{r[3]:.1f}' for r in runs)} |")
    print()
    largest = rows[-1]
    median = statistics.median(r[0] for r in largest[4])
    verdict = "goal met" if median < GOAL_SECONDS else "goal missed"
    print("| goal | measured | verdict |")
    print("|---|---|---|")
    print(f"| `receipts audit` over {largest[0]:,} calls < {GOAL_SECONDS:.0f} s | {median:.2f} s (median of {len(largest[4])}) | {verdict} |")
    print()
    print(f"Where the time goes at {largest[0]:,} calls (one audit, in process):")
    print()
    print("| step | seconds |")
    print("|---|---:|")
    for label, secs in steps:
        print(f"| {label} | {secs:.2f} |")
    print(f"\n- {os.cpu_count()} CPUs; total {time.perf_counter() - total:.0f} s; journals {'kept in ' + str(base) if args.keep else 'removed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
