"""Benchmark of `receipts audit` over synthetic journals of 100,000 and 1,000,000 calls.

The journals are written by testbed/synthetic.py (the recorder's and the verifier's event shapes:
unpaid calls, x402 calls with their check events, double charges, retries, OpenGradient sessions,
failures, several apps, hosts, models and payees), in the layout from before the fold, then folded
into the typed tables (storage/fold.py) once, timed apart: the audit reads the folded tables, as it
does after a running proxy has folded what it sealed. Each audit is a fresh `receipts audit --format
md` process (startup included), run `--runs` times; the table gives the median, the spread, the CPU
time and the peak memory, then where the time goes inside one audit at the largest size. Goal: under
10 s at 1,000,000 calls. The machine's load average is printed beside the figures: other work on the
same cores slows every run.
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


def in_child(code: str) -> float:
    """Wall seconds of `code` run in a fresh Python process: the bench's own memory stays small (the
    peak RSS of an audit process counts the pages it was forked with)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); {code}"], check=True, cwd=ROOT)
    return time.perf_counter() - start


def breakdown(data: Path) -> list[tuple[str, float]]:
    """Seconds per step of one audit, in this process."""
    from receipts.storage import audit

    steps, sql = [], audit.statements()
    t0 = time.perf_counter()
    con = audit.connect(data)  # as storage/audit.py does
    steps.append(("connect (bind the folded tables, fold the tail, views)", time.perf_counter() - t0))
    for name in audit.TABLES:
        t = time.perf_counter()
        con.execute(sql[name])
        steps.append((f"audit_{name}", time.perf_counter() - t))
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
    from receipts.storage import fold

    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-audit-"))
    rows, total = [], time.perf_counter()
    try:
        for n in args.calls:
            data = base / f"calls-{n}-seed-{args.seed}"
            gen_s = fold_s = None
            if not (data / "journal").exists():
                say(f"generating {n:,} calls into {data}")
                gen_s = in_child(f"from testbed.synthetic import generate; generate({str(data)!r}, {n}, {args.seed})")
            if fold.tail(data, fold.Manifest.load(data)):
                say(f"folding {n:,} calls")
                fold_s = in_child(f"from receipts.storage import fold; fold.fold({str(data)!r}, wait=True)")
            manifest = fold.Manifest.load(data)
            files = [p for table in fold.TABLES for p in manifest.paths(data, table)]
            size = sum(os.path.getsize(p) for p in files) / 2**20
            import duckdb

            with duckdb.connect() as con:
                events = con.execute("SELECT count(*) FROM read_parquet($f)",
                                     {"f": manifest.paths(data, "events")}).fetchone()[0]
            runs = []
            for i in range(args.runs):
                load = os.getloadavg()[0]
                runs.append((*run_audit(data), load))
                say(f"{n:,} calls: run {i + 1}: {runs[-1][0]:.2f} s (load {load:.2f})")
            rows.append((n, events, size, gen_s, fold_s, runs))
        steps = breakdown(base / f"calls-{args.calls[-1]}-seed-{args.seed}")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    print("| calls | events | folded tables (MiB) | generated in (s) | folded in (s) | audit median (s) | min – max (s) | CPU (s) | peak RSS (MiB) | load avg at start |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, events, size, gen_s, fold_s, runs in rows:
        walls = [r[0] for r in runs]
        print(f"| {n:,} | {events:,} | {size:,.0f} | {'reused' if gen_s is None else f'{gen_s:.1f}'} | "
              f"{'reused' if fold_s is None else f'{fold_s:.1f}'} | "
              f"{statistics.median(walls):.2f} | {min(walls):.2f} – {max(walls):.2f} | "
              f"{statistics.median(r[1] for r in runs):.2f} | {max(r[2] for r in runs):,} | "
              f"{', '.join(f'{r[3]:.1f}' for r in runs)} |")
    print()
    largest = rows[-1]
    median = statistics.median(r[0] for r in largest[-1])
    verdict = "goal met" if median < GOAL_SECONDS else "goal missed"
    print("| goal | measured | verdict |")
    print("|---|---|---|")
    print(f"| `receipts audit` over {largest[0]:,} calls < {GOAL_SECONDS:.0f} s | {median:.2f} s (median of {len(largest[-1])}) | {verdict} |")
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
