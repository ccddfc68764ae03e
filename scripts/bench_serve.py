"""Benchmark of `receipts serve` (and `receipts show`) over a synthetic journal of N calls (default
1,000,000; testbed/synthetic.py), folded first as the recorder's writers fold it (storage/fold.py).

Starts the real `receipts serve` (a subprocess; it reads snapshots of the folded tables, nothing cached on
disk) and measures, over HTTP on 127.0.0.1 with one keep-alive client:
- start to first page: from starting the process until `/` answers 200 (the first snapshot taken);
- p50/p95/p99 of the list page (unfiltered, and filtered by app, by status, by host and model, by time
  range), of the search (a tx hash, which redirects to its receipt; a session id, which lists its calls),
  of receipt pages (a different receipt each request), and for information the list's JSON and the charts;
- new calls: a batch appended through the real journal writer (which seals and folds them), the time
  until the server shows them, and the list and receipt pages' latency while calls keep arriving;
- `receipts show <tx hash>` as a process, start to exit (goal at 1,000,000 calls: 0.3 s).
Prints markdown tables with a verdict per goal (list page and receipt page < 100 ms at p95).
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import duckdb
import httpx
import orjson

BIN = Path(sys.executable).parent
GOAL_MS = 100.0
SHOW_GOAL_S = 0.3


def say(msg: str) -> None:
    print(f"bench-serve: {msg}", file=sys.stderr, flush=True)


class Serve:
    def __init__(self, data: Path):
        self.cmd = [str(BIN / "receipts"), "serve", "--data", str(data), "--port", "0"]
        self.url = None

    def start(self, timeout: float = 1800) -> float:
        """Seconds from starting the process until the list page answers 200."""
        started = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True, cwd=ROOT)
        self.lines: list[str] = []

        def pump():
            for line in self.proc.stdout:
                self.lines.append(line)
                m = re.search(r"receipts serve: (http://[\d.]+:\d+)/", line)
                if m:
                    self.url = m.group(1)
        threading.Thread(target=pump, daemon=True).start()
        while True:
            if self.proc.poll() is not None:
                raise SystemExit("receipts serve exited:\n" + "".join(self.lines))
            if self.url:
                try:
                    if httpx.get(self.url + "/", timeout=30).status_code == 200:
                        return time.monotonic() - started
                except httpx.HTTPError:
                    pass
            if time.monotonic() - started > timeout:
                raise SystemExit("receipts serve not ready in time:\n" + "".join(self.lines))
            time.sleep(0.02)

    def peak_rss_mib(self) -> float | None:
        try:
            for line in open(f"/proc/{self.proc.pid}/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def quantiles(times: list[float]) -> dict:
    times = sorted(times)
    q = lambda p: times[min(len(times) - 1, int(round(p * (len(times) - 1))))]
    return {"n": len(times), "p50": statistics.median(times), "p95": q(0.95), "p99": q(0.99), "max": times[-1]}


def measure(http: httpx.Client, paths: list[str], n: int) -> dict:
    """Latency of GET path (cycling through `paths`), n requests after 3 warm-ups; status must be 200/302."""
    for p in paths[:3]:
        http.get(p)
    times = []
    for i in range(n):
        path = paths[i % len(paths)]
        t = time.perf_counter()
        r = http.get(path)
        _ = r.content
        times.append((time.perf_counter() - t) * 1000)
        if r.status_code not in (200, 302):
            raise SystemExit(f"{path}: HTTP {r.status_code}\n{r.text[:500]}")
    return quantiles(times)


def sample(data: Path, k: int, seed: int) -> dict:
    """Ids to ask for, from the folded tables."""
    from receipts.storage import db

    out = {}
    with db.connect(data, journal=False, views=False) as con:
        out["receipts"] = [r[0] for r in con.execute(
            f"SELECT DISTINCT logical_id FROM folded.requests USING SAMPLE reservoir({k} ROWS) REPEATABLE ({seed})").fetchall()]
        out["tx"] = [r[0] for r in con.execute(
            f"SELECT tx_hash FROM folded.settlements WHERE tx_hash IS NOT NULL "
            f"USING SAMPLE reservoir({k} ROWS) REPEATABLE ({seed})").fetchall()]
        out["sessions"] = [r[0] for r in con.execute(
            f"SELECT DISTINCT upto_session FROM folded.requests WHERE upto_session IS NOT NULL LIMIT {k}").fetchall()]
        out["apps"] = [r[0] for r in con.execute(
            "SELECT coalesce(app_name, app, client) a, count(*) FROM folded.requests GROUP BY 1 ORDER BY 2 DESC").fetchall() if r[0]]
        out["hosts"] = con.execute("SELECT host, model, count(*) FROM folded.requests GROUP BY 1, 2 "
                                   "ORDER BY 3 DESC LIMIT 3").fetchall()
        out["newest"] = con.execute("SELECT epoch(max(ts)) FROM folded.events").fetchone()[0]
    return out


def synthetic_events(calls: int, seed: int) -> list:
    """The events of a small synthetic journal of the last minutes (new ids, times now)."""
    from receipts.storage.records import Event
    from testbed.synthetic import generate

    src = Path(tempfile.mkdtemp(prefix="bench-serve-new-"))
    try:
        generate(src, calls, seed=seed, days=0.01)
        rows = duckdb.connect().execute(f"SELECT id, type, ts, receipt_id, data FROM read_parquet("
                                        f"'{src}/journal/parquet/*/*.parquet') ORDER BY ts, id").fetchall()
    finally:
        shutil.rmtree(src, ignore_errors=True)
    return [Event(t, rid, orjson.loads(d), ts, i) for i, t, ts, rid, d in rows]


def append_calls(data: Path, calls: int, seed: int, rate: float | None = None) -> int:
    """Append a small synthetic journal's events through the real journal writer (it seals and folds)."""
    from receipts.storage.journal import Journal

    events = synthetic_events(calls, seed)
    with Journal(data, "bench", seal_interval=0.2) as j:
        if rate is None:
            j.write(events)
        else:  # about `rate` calls a second, in small batches
            per = max(1, len(events) // max(1, calls))
            step = max(1, int(rate * per / 10))
            for i in range(0, len(events), step):
                j.write(events[i:i + step])
                time.sleep(0.1)
    return len(events)


def show_times(data: Path, txs: list[str], n: int) -> tuple[dict, dict]:
    """`receipts show --json <tx hash>` as a process: wall seconds and CPU seconds (user + system)."""
    walls, cpus = [], []
    for tx in (txs * (n // max(1, len(txs)) + 1))[:n]:
        t = time.perf_counter()
        proc = subprocess.Popen([str(BIN / "receipts"), "show", "--json", "--data", str(data), tx],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        walls.append(time.perf_counter() - t)
        cpus.append(usage.ru_utime + usage.ru_stime)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"receipts show {tx} failed: {proc.stderr.read().decode()[:500]}")
    return quantiles(walls), quantiles(cpus)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=200, help="requests per measured page kind")
    ap.add_argument("--shows", type=int, default=20, help="`receipts show` runs")
    ap.add_argument("--data", help="reuse this synthetic data directory (made if missing)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    from receipts.storage import fold

    load_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    data = Path(args.data) if args.data else tmp / "data"
    total_started = time.monotonic()
    try:
        if not (data / "journal").exists():
            from testbed.synthetic import generate
            say(f"generating {args.calls:,} synthetic calls in {data}")
            made = generate(data, args.calls, seed=args.seed)
            say(f"generated {made['receipts']:,} receipts ({made['events']:,} events) in {made['seconds']:.0f} s")
        t = time.monotonic()
        folded = fold.fold(data, wait=True, progress=say)
        say(f"folded {folded:,} events in {time.monotonic() - t:.1f} s (not part of the figures)")
        ids = sample(data, max(args.requests, 50), args.seed)
        serve = Serve(data)
        say("starting receipts serve")
        first = serve.start()
        status = httpx.get(serve.url + "/api/status").json()
        say(f"first page after {first:.1f} s: {status['receipts']:,} receipts "
            f"(first snapshot {status['snapshot']['seconds']:.1f} s)")

        rows = []
        with httpx.Client(base_url=serve.url, timeout=120, follow_redirects=False) as http:
            top_app, (host, model, _) = ids["apps"][0], ids["hosts"][0]
            newest = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ids["newest"] - 86400))
            kinds = [
                ("list page, unfiltered", ["/"], True),
                ("list page, filtered by app", [f"/?app={quote(top_app)}"], True),
                ("list page, filtered by status (failed)", ["/?status=failed"], True),
                ("list page, filtered by host and model", [f"/?host={quote(host)}&model={quote(model)}"], True),
                ("list page, last day of data (time range)", [f"/?since={newest}"], True),
                ("list page, every filter value in turn", [f"/?app={quote(a)}" for a in ids["apps"]]
                 + ["/?status=" + s for s in ("passed", "pending", "failed", "unpaid", "risky", "retried", "refunded")], True),
                ("search: tx hash (302 to its receipt)", [f"/?q={t}" for t in ids["tx"]], True),
                ("search: session id (its calls)", [f"/?q={s}" for s in ids["sessions"]], True),
                ("receipt page (a different receipt each time)", [f"/receipt/{r}" for r in ids["receipts"]], True),
                ("list JSON (live updates, changed)", [f"/api/receipts?v=x{i}" for i in range(5)], False),
                ("chart: spend over time per app (not memoized: a new filter each time)",
                 [f"/chart/spend-app.svg?until={quote(time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(ids['newest'] + i)))}"
                  for i in range(args.requests + 3)], False),
            ]
            for name, paths, goal in kinds:
                m = measure(http, paths, args.requests)
                rows.append((name, m, goal))
                say(f"{name}: p50 {m['p50']:.1f} ms, p95 {m['p95']:.1f} ms")
            # new calls arrive: the time until the page shows them, and the pages meanwhile
            before = http.get("/api/status").json()
            events = synthetic_events(200, args.seed + 1)
            t0 = time.monotonic()
            from receipts.storage.journal import Journal
            with Journal(data, "bench", seal_interval=0.2) as j:
                j.write(events)
                deadline = time.monotonic() + 300
                while http.get("/api/status").json()["receipts"] == before["receipts"]:
                    if time.monotonic() > deadline:
                        raise SystemExit("new calls never showed up")
                    time.sleep(0.02)
                shown = time.monotonic() - t0
            after = http.get("/api/status").json()
            say(f"{len(events)} new events: shown after {shown:.2f} s (that snapshot took "
                f"{after['snapshot']['seconds']:.2f} s)")
            writer = threading.Thread(target=append_calls, args=(data, 600, args.seed + 2, 60.0))
            v0 = http.get("/api/status").json()["version"]
            writer.start()
            during = measure(http, ["/", f"/?app={quote(top_app)}"] + [f"/receipt/{r}" for r in ids["receipts"][:20]],
                             args.requests)
            writer.join()
            rows.append(("list and receipt pages while ~60 calls/s arrive", during, True))
            busy = http.get("/api/status").json()
        serve_rss = serve.peak_rss_mib()
        serve.stop()
        say(f"receipts show --json <tx hash>, {args.shows} runs")
        show_wall, show_cpu = show_times(data, ids["tx"][:10], args.shows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n### receipts serve over {status['receipts']:,} receipts ({args.calls:,} calls)\n")
    print("| request | n | p50 (ms) | p95 (ms) | p99 (ms) | goal | verdict |")
    print("|---|---:|---:|---:|---:|---|---|")
    for name, m, goal in rows:
        verdict = ("goal met" if m["p95"] < GOAL_MS else "goal missed") if goal else "–"
        print(f"| {name} | {m['n']} | {m['p50']:.1f} | {m['p95']:.1f} | {m['p99']:.1f} | "
              f"{'p95 < 100 ms' if goal else '–'} | {verdict} |")
    print()
    print("| snapshots | seconds |")
    print("|---|---:|")
    print(f"| start to first page (the first snapshot: connect, the receipts' rows into a table) | {first:.2f} |")
    print(f"| that first snapshot alone | {status['snapshot']['seconds']:.2f} |")
    print(f"| 200 new calls ({len(events)} events) appended → shown by the page | {shown:.2f} |")
    print(f"| the snapshot that showed them | {after['snapshot']['seconds']:.2f} |")
    print(f"| last snapshot while ~60 calls/s arrive ({busy['version'] - v0} snapshots meanwhile) | "
          f"{busy['snapshot']['seconds']:.2f} |")
    print()
    print("| `receipts show --json <tx hash>` (a process, start to exit) | p50 | p95 | max |")
    print("|---|---:|---:|---:|")
    print(f"| wall seconds ({show_wall['n']} runs) | {show_wall['p50']:.2f} | {show_wall['p95']:.2f} | {show_wall['max']:.2f} |")
    print(f"| CPU seconds, user + system | {show_cpu['p50']:.2f} | {show_cpu['p95']:.2f} | {show_cpu['max']:.2f} |")
    print(f"\n- peak RSS of the server: {serve_rss or 0:,.0f} MiB (two snapshots live while one is swapped in)")
    print(f"- load average (1 min) at start {load_start:.2f}, at the end {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs; "
          f"own CPU seconds (this script) {resource.getrusage(resource.RUSAGE_SELF).ru_utime:.0f}")
    met = all(m["p95"] < GOAL_MS for _, m, goal in rows if goal)
    print(f"\n- goal (list page and receipt page < {GOAL_MS:.0f} ms at p95 with {args.calls:,} calls): "
          f"{'met' if met else 'missed'}; `receipts show` p50 {show_wall['p50']:.2f} s "
          f"(goal {SHOW_GOAL_S} s at 1,000,000 calls); one keep-alive client, sequential requests, "
          f"{args.requests} per row; total {time.monotonic() - total_started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
