"""Benchmark of the lake (storage/lake.py) on this machine: PostgreSQL and SeaweedFS on 127.0.0.1
(testbed/lakebed.py), real `receipts ship` processes.

1. Ship throughput with 1, 4 and 8 shippers at once, each shipping its own folded data directory
   (testbed/synthetic.py, `--per-shipper` calls), as events/s over all of them. The anchor, measured in
   the same run: the same tables of one data directory copied into the lake by ONE plain INSERT … SELECT
   per table in one transaction (no ledger, no choosing), the physical limit of writing to this lake.
2. Lag with 1, 4 and 8 shippers (`--interval 1`) while as many writers each append events at a fixed rate:
   the age of the newest event the lake holds of each writer, sampled every second (p95 and max).
3. Queries over `--calls` calls shipped to the lake: `count(*)` and spend per app per day, median of 3
   fresh `receipts sql --lake` processes, before and after `receipts lake maintain`, against the same
   queries over the local tables (`--data`) of the directory that was shipped.
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

from scripts.bench_tables import QUERIES, WRITER, generate_fresh
from testbed.lakebed import Postgres, SeaweedFS


def say(msg: str) -> None:
    print(f"bench-lake: {msg}", file=sys.stderr, flush=True)


def fold(data: Path) -> None:
    subprocess.run([sys.executable, "-c", "import sys; from receipts.storage import fold; fold.fold(sys.argv[1])", str(data)],
                   check=True, cwd=ROOT, timeout=3600)


def events_of(data: Path) -> int:
    out = subprocess.run([str(BIN / "receipts"), "sql", "--csv", "--data", str(data), "SELECT count(*) AS n FROM events"],
                         capture_output=True, text=True, check=True, timeout=600)
    return int(out.stdout.split()[1])


def new_lake(pg: Postgres, env: dict, name: str) -> str:
    url = pg.createdb(name)
    subprocess.run([str(BIN / "receipts"), "lake", "init", "--lake", url, "--data-path", f"s3://receipts/{name}/"],
                   env=env, check=True, capture_output=True, timeout=300)
    return url


def throughput(pg, env, dirs: list[Path], events: int, k: int) -> tuple[float, float]:
    url = new_lake(pg, env, f"ship{k}")
    for d in dirs[:k]:
        (d / "ship.json").unlink(missing_ok=True)
    t = time.monotonic()
    procs = [subprocess.Popen([str(BIN / "receipts"), "ship", "--once", "--lake", url, "--data", str(d), "--name", d.name],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for d in dirs[:k]]
    errors = [p.communicate(timeout=3600)[1] for p in procs]
    wall = time.monotonic() - t
    if any(p.returncode for p in procs):
        raise SystemExit("bench-lake: a shipper failed:\n" + "\n".join(errors))
    return wall, k * events / wall


ANCHOR = """
import os, sys
from receipts.storage import db, lake, fold
con = lake.open_lake(sys.argv[1], read_only=False)
db.bind(con, sys.argv[2], views=False)
con.execute("BEGIN")
for t in fold.TABLES:
    con.execute(f"INSERT INTO lake.{t} BY NAME SELECT * FROM folded.{t}")
con.execute("COMMIT")
"""


def anchor(pg, env, data: Path, events: int) -> float:
    url = new_lake(pg, env, "anchor")
    t = time.monotonic()
    subprocess.run([sys.executable, "-c", ANCHOR, url, str(data)], env=env, check=True, cwd=ROOT, timeout=3600)
    return events / (time.monotonic() - t)


def lag(pg, env, work: Path, k: int, rate: float, seconds: float) -> tuple[float, float]:
    from receipts.storage import lake

    url = new_lake(pg, env, f"lag{k}")
    dirs = [work / f"lag{k}-{i}" for i in range(k)]
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(d), str(rate), str(seconds)], cwd=ROOT, env=env)
               for d in dirs]
    time.sleep(1.0)
    shippers = [subprocess.Popen([str(BIN / "receipts"), "ship", "--lake", url, "--data", str(d), "--name", d.name,
                                  "--interval", "1", "--seconds", str(seconds + 30)], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for d in dirs]
    os.environ.update({k_: v for k_, v in env.items() if k_.startswith("AWS_")})
    con = lake.open_lake(url, read_only=True)
    samples, end = [], time.monotonic() + seconds
    time.sleep(5.0)  # (the shippers load their extensions and make their first commits)
    while time.monotonic() < end:
        newest = dict(con.execute("SELECT split_part(writer, '/', 1), epoch(max(ts)) FROM lake.events GROUP BY 1").fetchall())
        now = time.time()
        samples += [now - newest[d.name] if d.name in newest else seconds for d in dirs]
        time.sleep(1.0)
    con.close()
    for p in writers:
        p.wait(60)
    for p in shippers:
        p.terminate()
        p.wait(60)
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    samples.sort()
    return samples[int(0.95 * (len(samples) - 1))], samples[-1]


def timed(cmd: list[str], env: dict, runs: int) -> float:
    walls = []
    for _ in range(runs):
        t = time.monotonic()
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
        walls.append(time.monotonic() - t)
    return statistics.median(walls)


def queries(env, url: str, data: Path, runs: int) -> dict[str, tuple[float, float]]:
    out = {}
    for name, sql in QUERIES.items():
        local = timed([str(BIN / "receipts"), "sql", "--csv", "--data", str(data), sql], env, runs)
        remote = timed([str(BIN / "receipts"), "sql", "--csv", "--lake", url, sql], env, runs)
        out[name] = (remote, local)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-shipper", type=int, default=20_000, help="calls in each shipper's data directory")
    p.add_argument("--calls", type=int, default=1_000_000, help="calls shipped for the query measures")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--lag-rate", type=float, default=300.0, help="events/s each writer appends")
    p.add_argument("--lag-seconds", type=float, default=30.0)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-lake-"))
    pg, s3 = Postgres().start(), SeaweedFS(work / "seaweedfs").start()
    env = {**os.environ, **s3.env()}
    lines = []
    try:
        say(f"8 data directories of {args.per_shipper:,} calls each")
        dirs = []
        for i in range(8):
            d = work / f"shipper{i + 1}"
            subprocess.run([sys.executable, "-c", "import sys; from testbed.synthetic import generate; "
                            "generate(sys.argv[1], int(sys.argv[2]), seed=int(sys.argv[3]))", str(d),
                            str(args.per_shipper), str(i + 1)], check=True, cwd=ROOT, timeout=3600, stdout=subprocess.DEVNULL)
            fold(d)
            dirs.append(d)
        events = events_of(dirs[0])
        say("the anchor: one INSERT … SELECT per table, one transaction")
        base = anchor(pg, env, dirs[0], events)
        lines += ["| shippers | events | seconds | events/s | vs the anchor (one plain insert: "
                  f"{base:,.0f} events/s) |", "|---:|---:|---:|---:|---:|"]
        for k in (1, 4, 8):
            say(f"{k} shipper(s) at once")
            wall, rate = throughput(pg, env, dirs, events, k)
            lines.append(f"| {k} | {k * events:,} | {wall:.1f} | {rate:,.0f} | {rate / base:.2f}× |")
        lines += ["", f"| shippers (each with a writer at {args.lag_rate:,.0f} events/s) | lag p95 | lag max |",
                  "|---:|---:|---:|"]
        for k in (1, 4, 8):
            say(f"lag: {k} writer(s) and shipper(s) for {args.lag_seconds:.0f} s")
            p95, worst = lag(pg, env, work, k, args.lag_rate, args.lag_seconds)
            lines.append(f"| {k} | {p95:.1f} s | {worst:.1f} s |")
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)

        say(f"{args.calls:,} calls: writing, folding and shipping them")
        big = work / "big"
        generate_fresh(big, args.calls)
        fold(big)
        url = new_lake(pg, env, "big")
        t = time.monotonic()
        subprocess.run([str(BIN / "receipts"), "ship", "--once", "--lake", url, "--data", str(big)], env=env,
                       check=True, capture_output=True, timeout=7200)
        shipped = time.monotonic() - t
        n = events_of(big)
        lines += ["", f"{args.calls:,} calls ({n:,} events) shipped by one shipper in {shipped:.1f} s "
                  f"({n / shipped:,.0f} events/s).", "",
                  "| query | lake, before maintenance | lake, after | local tables | after / local |",
                  "|---|---:|---:|---:|---:|"]
        before = queries(env, url, big, args.runs)
        t = time.monotonic()
        subprocess.run([str(BIN / "receipts"), "lake", "maintain", "--lake", url, "--older-than", "0"], env=env,
                       check=True, capture_output=True, timeout=3600)
        maintained = time.monotonic() - t
        after = queries(env, url, big, args.runs)
        for name in QUERIES:
            (b, local), (a, _) = before[name], after[name]
            lines.append(f"| {name} | {b:.2f} s | {a:.2f} s | {local:.2f} s | {a / local:.1f}× |")
        lines += ["", f"maintenance took {maintained:.1f} s; load average after: {os.getloadavg()[0]:.2f}"]
        print("\n".join(lines))
    finally:
        s3.stop()
        pg.remove()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
