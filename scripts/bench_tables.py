"""Benchmark of the typed tables: ad-hoc SQL, `receipts show`, `receipts audit`, the fold, bytes on disk.

For each size (default 100,000 and 1,000,000 calls), testbed/synthetic.py writes a journal in the format
before the fold (JSON events in Parquet: "today's" bytes on disk), a fresh process folds it (one DuckDB
thread: the fold's throughput on one core), and every measure runs as a fresh process, 3 times (median;
peak RSS of the worst run). The anchor of each query is the same query over ONE pre-materialized Parquet
file of the final rows (`COPY (SELECT * FROM receipts)`), in a fresh Python process: the physical limit.
The fold's lag is measured while a writer appends events at a fixed rate above the recorder's full speed.
The load average is printed with the figures: other work on the same cores slows every run.
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

QUERIES = {
    "count": "SELECT count(*) FROM receipts",
    "spend per app per day": "SELECT app_name, date_trunc('day', first_seen) AS day, sum(amount) AS spent "
                             "FROM receipts GROUP BY ALL ORDER BY ALL",
}
GOALS = {"count": 1.0, "spend per app per day": 1.0, "show": 0.3, "audit": 3.0}


def say(msg: str) -> None:
    print(f"bench-tables: {msg}", file=sys.stderr, flush=True)


RUNNER = """
import json, os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
_, status, usage = os.wait4(proc.pid, 0)
err = proc.stderr.read().decode()[-2000:]
print(json.dumps([time.perf_counter() - start, usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024,
                  os.waitstatus_to_exitcode(status), err]))
"""


def timed(argv: list[str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, peak RSS MiB) of one process, started by a small runner process (a child
    forked from this big process would count this process's pages in its peak RSS); fails if it fails."""
    import json

    out = subprocess.run([sys.executable, "-S", "-c", RUNNER, *argv], capture_output=True, text=True, cwd=ROOT,
                         timeout=3600)
    wall, cpu, rss, code, err = json.loads(out.stdout)
    if code != 0:
        raise SystemExit(f"{' '.join(argv[:3])} failed: {err}")
    return wall, cpu, rss


def median_of(argv: list[str], runs: int) -> tuple[float, int]:
    results = [timed(argv) for _ in range(runs)]
    return statistics.median(r[0] for r in results), max(r[2] for r in results)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def live_bytes(data: Path) -> int:
    """The bytes of the files the manifest names (files a merge replaced stay 10 minutes, then go)."""
    from receipts.storage import fold

    m = fold.Manifest.load(data)
    return sum(os.path.getsize(p) for table in m.files for p in m.paths(data, table))


def fold_fresh(data: Path) -> tuple[float, float, int]:
    code = "import sys; from receipts.storage import fold; fold.THREADS = 1; fold.fold(sys.argv[1])"
    return timed([sys.executable, "-c", code, str(data)])


def generate_fresh(data: Path, calls: int) -> None:
    code = "import sys; from testbed.synthetic import generate; generate(sys.argv[1], int(sys.argv[2]), seed=1)"
    subprocess.run([sys.executable, "-c", code, str(data), str(calls)], check=True, cwd=ROOT, timeout=3600,
                   stdout=sys.stderr)  # (its progress is not part of the table)


def count_events(data: Path) -> int:
    out = subprocess.run([str(BIN / "receipts"), "sql", "--csv", "--data", str(data), "SELECT count(*) AS n FROM events"],
                         capture_output=True, text=True, check=True, cwd=ROOT, timeout=600)
    return int(out.stdout.split()[1])


FLOOR_SQL = r"""
WITH tokens AS (
    SELECT DISTINCT unnest(regexp_extract_all(data,
        '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|(?:0x)?[0-9a-fA-F]{32,}')) AS t
    FROM events
    UNION SELECT id FROM events UNION SELECT receipt_id FROM events)
SELECT sum(CASE WHEN t LIKE '%-%' THEN 16 ELSE (length(t) - CASE WHEN t LIKE '0x%' THEN 2 ELSE 0 END) // 2 END) AS n
FROM tokens WHERE t IS NOT NULL
"""


def floor_bytes(data: Path) -> int:
    """The raw bytes of the distinct ids and hashes the events carry (uuids as 16 bytes, hex as its bytes):
    random values no lossless layout stores in fewer bytes, whatever it does with the rest."""
    out = subprocess.run([str(BIN / "receipts"), "sql", "--csv", "--data", str(data), FLOOR_SQL],
                         capture_output=True, text=True, check=True, cwd=ROOT, timeout=3600)
    return int(out.stdout.split()[1])


def anchor(data: Path, out: Path) -> None:
    """The anchor: the final rows of `receipts` in one Parquet file."""
    code = ("import sys; from receipts.storage import db; con = db.connect(sys.argv[1], write=[sys.argv[2]]); "
            "con.execute(f\"COPY (SELECT * FROM receipts) TO '{sys.argv[2]}' (FORMAT parquet, COMPRESSION zstd)\")")
    subprocess.run([sys.executable, "-c", code, str(data), str(out)], check=True, cwd=ROOT, timeout=3600)


def some_tx(data: Path) -> str:
    out = subprocess.run([str(BIN / "receipts"), "sql", "--csv", "--data", str(data),
                          "SELECT tx_hash FROM settlements WHERE tx_hash IS NOT NULL ORDER BY receipt_id LIMIT 1 OFFSET 1000"],
                         capture_output=True, text=True, check=True, cwd=ROOT, timeout=600)
    return out.stdout.split()[1]


def one_size(calls: int, runs: int, work: Path) -> list[tuple]:
    data = work / f"d{calls}"
    say(f"{calls:,} calls: writing the synthetic journal")
    generate_fresh(data, calls)
    before = du(data / "journal")
    say(f"{calls:,} calls: folding (fresh process, one thread)")
    fwall, fcpu, frss = fold_fresh(data)
    events = count_events(data)
    after = live_bytes(data)
    rows = [("fold", f"{fwall:.2f} s", f"{events / fwall:,.0f} events/s ({events / fcpu:,.0f} per CPU-s)",
             f"{frss} MiB", "≥ 20,000 events/s")]
    floor = floor_bytes(data)
    rows.append(("bytes on disk per call", f"{after / calls:.0f} B", f"{after / before:.0%} of today's "
                 f"{before / calls:.0f} B; the distinct ids and hashes alone: {floor / calls:.0f} B "
                 f"({floor / before:.0%})", "", "≤ 50 %"))
    anchor_file = work / f"anchor{calls}.parquet"
    anchor(data, anchor_file)
    for name, sql in QUERIES.items():
        wall, rss = median_of([str(BIN / "receipts"), "sql", "--csv", "--data", str(data), sql], runs)
        code = f"import duckdb; duckdb.sql({sql.replace('FROM receipts', f'FROM read_parquet({str(anchor_file)!r})')!r}).fetchall()"
        awall, arss = median_of([sys.executable, "-c", code], runs)
        rows.append((f"receipts sql: {name}", f"{wall:.2f} s", f"{wall / awall:.1f}× the anchor ({awall:.2f} s, {arss} MiB)",
                     f"{rss} MiB", f"≤ {GOALS[name]} s, ≤ 3×"))
    tx = some_tx(data)
    wall, rss = median_of([str(BIN / "receipts"), "show", "--data", str(data), tx], runs)
    rows.append(("receipts show <tx hash>", f"{wall:.2f} s", "", f"{rss} MiB", "≤ 0.3 s"))
    wall, rss = median_of([str(BIN / "receipts"), "audit", "--data", str(data), "--format", "md",
                           "--out", os.devnull], runs)
    rows.append(("receipts audit", f"{wall:.2f} s", "", f"{rss} MiB", "≤ 3 s, ≤ 1.5 GB"))
    shutil.rmtree(data)
    anchor_file.unlink()
    return rows


WRITER = """
import sys, time
from receipts.storage.journal import Journal
from receipts.storage.records import Event, uuid7
rate, seconds = float(sys.argv[2]), float(sys.argv[3])
body = {"logical_id": None, "host": "api.openai.com", "method": "POST", "path": "/v1/chat/completions",
        "model": "gpt-4o-mini", "headers": {"user-agent": "bench", "content-type": "application/json"},
        "body": {"size": 812, "sha256": "ab" * 32}}
with Journal(sys.argv[1], "proxy") as j:
    start, n = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        due = int((time.monotonic() - start) * rate) - n
        if due > 0:
            batch = []
            for _ in range(due):
                rid = uuid7()
                batch.append(Event("request", rid, {**body, "logical_id": rid}))
            j.append(batch, fsync=False)
            n += due
        time.sleep(0.005)
"""


def fold_lag(work: Path, rate: float, seconds: float) -> tuple[float, float, float]:
    """(p95 lag, max lag, events written/s): lag = age of the oldest sealed event the tables do not hold."""
    from receipts.storage import fold
    import orjson

    data = work / "lag"
    data.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(data), str(rate), str(seconds)], cwd=ROOT)
    lags, deadline = [], time.monotonic() + seconds + 10
    time.sleep(2.0)
    while proc.poll() is None and time.monotonic() < deadline:
        t = fold.tail(data, fold.Manifest.load(data))
        oldest = []
        for path, _ in t.segments:
            try:
                with open(path, "rb") as f:
                    oldest.append(orjson.loads(f.readline())["ts"])
            except (OSError, ValueError, KeyError):
                pass
        lags.append(time.time() - min(oldest) if oldest else 0.0)
        time.sleep(0.25)
    proc.wait(30)
    lags.sort()
    n = count_events(data)
    shutil.rmtree(data)
    return lags[int(0.95 * (len(lags) - 1))], lags[-1], n / seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", default="100000,1000000", help="sizes, comma-separated")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--lag-rate", type=float, default=3000.0, help="events/s the writer appends (recorder: ~1,500)")
    p.add_argument("--lag-seconds", type=float, default=30.0)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-tables-"))
    try:
        lines = ["| calls | measure | median | ratio / detail | peak RSS | goal |", "|---|---|---|---|---|---|"]
        for calls in (int(c) for c in args.calls.split(",")):
            for row in one_size(calls, args.runs, work):
                lines.append(f"| {calls:,} | " + " | ".join(row) + " |")
            lines.append(f"| | load average after: {os.getloadavg()[0]:.2f} | | | | |")
        say(f"fold lag: a writer appending {args.lag_rate:,.0f} events/s for {args.lag_seconds:.0f} s")
        p95, worst, rate = fold_lag(work, args.lag_rate, args.lag_seconds)
        lines.append(f"| – | fold lag while a writer appends {rate:,.0f} events/s | p95 {p95:.1f} s | max {worst:.1f} s | | ≤ 5 s |")
        print("\n".join(lines))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
