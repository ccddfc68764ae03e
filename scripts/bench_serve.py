"""Benchmark of `receipts serve` over a synthetic journal of N calls (default 1,000,000; testbed/synthetic.py).

Starts the real `receipts serve` (a subprocess, its own read cache in a temporary directory) and measures,
over HTTP on 127.0.0.1 with one keep-alive client:
- the first start (the read cache built from the journal) and a restart (the cache file reused);
- p50/p95/p99 of the list page (unfiltered, and filtered by app, by status, by host and model, by time
  range), of the search (a tx hash, which redirects to its receipt; a session id, which lists its calls),
  of receipt pages (a different receipt each request), and for information the list's JSON and the charts;
- a refresh: a batch of new calls appended through the real journal writer, the time until the page
  shows them, and the list page's latency while calls keep arriving.
Prints a markdown table with a verdict per goal (list page and receipt page < 100 ms at p95).
"""
from __future__ import annotations

import argparse
import os
import re
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

import duckdb  # noqa: E402
import httpx  # noqa: E402
import orjson  # noqa: E402

BIN = Path(sys.executable).parent
GOAL_MS = 100.0


def say(msg: str) -> None:
    print(f"bench-serve: {msg}", file=sys.stderr, flush=True)


class Serve:
    def __init__(self, data: Path, cache: Path):
        self.cmd = [str(BIN / "receipts"), "serve", "--data", str(data), "--port", "0", "--cache", str(cache)]
        self.url = None

    def start(self, timeout: float = 1800) -> float:
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
                    if httpx.get(self.url + "/api/status", timeout=5).json().get("state") == "ready":
                        return time.monotonic() - started
                except httpx.HTTPError:
                    pass
            if time.monotonic() - started > timeout:
                raise SystemExit("receipts serve not ready in time:\n" + "".join(self.lines))
            time.sleep(0.05)

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
    times.sort()
    q = lambda p: times[min(len(times) - 1, int(round(p * (len(times) - 1))))]  # noqa: E731
    return {"n": n, "p50": statistics.median(times), "p95": q(0.95), "p99": q(0.99), "max": times[-1]}


def sample(data: Path, k: int, seed: int) -> dict:
    """Ids to ask for, straight from the journal's Parquet files."""
    con = duckdb.connect()
    files = f"'{data}/journal/parquet/*/*.parquet'"
    out = {}
    out["receipts"] = [r[0] for r in con.execute(
        f"SELECT DISTINCT json_extract_string(data, '$.logical_id') FROM read_parquet({files}) "
        f"WHERE type = 'request' USING SAMPLE reservoir({k} ROWS) REPEATABLE ({seed})").fetchall() if r[0]]
    out["tx"] = [r[0] for r in con.execute(
        f"SELECT json_extract_string(data, '$.settlement.tx_hash') AS tx FROM read_parquet({files}) "
        f"WHERE type = 'response' AND json_extract_string(data, '$.settlement.tx_hash') IS NOT NULL "
        f"USING SAMPLE reservoir({k} ROWS) REPEATABLE ({seed})").fetchall()]
    out["sessions"] = [r[0] for r in con.execute(
        f"SELECT DISTINCT json_extract_string(data, '$.upto_session') FROM read_parquet({files}) "
        f"WHERE type = 'request' AND json_extract_string(data, '$.upto_session') IS NOT NULL LIMIT {k}").fetchall()]
    out["apps"] = [r[0] for r in con.execute(
        f"SELECT json_extract_string(data, '$.app_name') a, count(*) FROM read_parquet({files}) "
        f"WHERE type = 'request' GROUP BY 1 ORDER BY 2 DESC").fetchall() if r[0]]
    out["hosts"] = [r for r in con.execute(
        f"SELECT json_extract_string(data, '$.host'), json_extract_string(data, '$.model'), count(*) "
        f"FROM read_parquet({files}) WHERE type = 'request' GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 3").fetchall()]
    out["newest"] = con.execute(f"SELECT max(ts) FROM read_parquet({files})").fetchone()[0]
    return out


def append_calls(data: Path, calls: int, seed: int, rate: float | None = None) -> int:
    """Append a small synthetic journal's events (new ids, times now) through the real journal writer."""
    from storage import db
    from storage.journal import Journal
    from storage.records import Event
    from testbed.synthetic import generate

    src = Path(tempfile.mkdtemp(prefix="bench-serve-new-"))
    try:
        generate(src, calls, seed=seed, days=0.01)
        with db.connect(src) as con:
            rows = con.execute("SELECT id, type, ts, receipt_id, data FROM events ORDER BY ts").fetchall()
    finally:
        shutil.rmtree(src, ignore_errors=True)
    events = [Event(t, rid, orjson.loads(d), ts, i) for i, t, ts, rid, d in rows]
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=200, help="requests per measured page kind")
    ap.add_argument("--data", help="reuse this synthetic data directory (made if missing)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    load_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    data = Path(args.data) if args.data else tmp / "data"
    total_started = time.monotonic()
    try:
        if not (data / "journal" / "parquet").exists():
            from testbed.synthetic import generate
            say(f"generating {args.calls:,} synthetic calls in {data}")
            made = generate(data, args.calls, seed=args.seed)
            say(f"generated {made['receipts']:,} receipts ({made['events']:,} events) in {made['seconds']:.0f} s")
        ids = sample(data, max(args.requests, 50), args.seed)
        cache = tmp / "cache.duckdb"
        serve = Serve(data, cache)
        say("starting receipts serve (first start: the read cache is built)")
        first = serve.start()
        status = httpx.get(serve.url + "/api/status").json()
        build_rss = serve.peak_rss_mib()
        say(f"ready in {first:.1f} s: {status['receipts']:,} receipts (peak RSS {build_rss or 0:.0f} MiB)")
        serve.stop()
        cache_mib = cache.stat().st_size / 2**20
        restart_serve = Serve(data, cache)
        restart = restart_serve.start()
        serve = restart_serve
        say(f"restart (cache file reused): ready in {restart:.2f} s")

        rows = []
        with httpx.Client(base_url=serve.url, timeout=60, follow_redirects=False) as http:
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
            # new calls arrive: the time until the page shows them, and the list page meanwhile
            before = http.get("/api/status").json()
            t0 = time.monotonic()
            appended = append_calls(data, 200, args.seed + 1)
            deadline = time.monotonic() + 120
            while http.get("/api/status").json()["receipts"] == before["receipts"]:
                if time.monotonic() > deadline:
                    raise SystemExit("new calls never showed up")
                time.sleep(0.02)
            shown = time.monotonic() - t0
            refresh = http.get("/api/status").json()["last_refresh"]
            say(f"{appended} new events: shown after {shown:.2f} s (refresh {refresh['seconds']:.3f} s)")
            writer = threading.Thread(target=append_calls, args=(data, 600, args.seed + 2, 60.0))
            writer.start()
            during = measure(http, ["/", f"/?app={quote(top_app)}"] + [f"/receipt/{r}" for r in ids["receipts"][:20]],
                             args.requests)
            writer.join()
            rows.append(("list and receipt pages while ~60 calls/s arrive", during, True))
            refreshes = http.get("/api/status").json()["last_refresh"]
        serve_rss = serve.peak_rss_mib()
        serve.stop()
        status_after = status
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n### receipts serve over {status_after['receipts']:,} receipts ({args.calls:,} calls)\n")
    print("| request | n | p50 (ms) | p95 (ms) | p99 (ms) | goal | verdict |")
    print("|---|---:|---:|---:|---:|---|---|")
    for name, m, goal in rows:
        verdict = ("goal met" if m["p95"] < GOAL_MS else "goal missed") if goal else "–"
        print(f"| {name} | {m['n']} | {m['p50']:.1f} | {m['p95']:.1f} | {m['p99']:.1f} | "
              f"{'p95 < 100 ms' if goal else '–'} | {verdict} |")
    print()
    print("| cache | seconds |")
    print("|---|---:|")
    print(f"| first start: read cache built from the journal | {first:.1f} |")
    print(f"| restart: cache file reused, brought up to date | {restart:.2f} |")
    print(f"| 200 new calls ({appended} events) appended → shown by the page | {shown:.2f} |")
    print(f"| one refresh taking them in | {refresh['seconds']:.3f} |")
    print(f"| last refresh while ~60 calls/s arrive ({refreshes['new_events']} new events) | {refreshes['seconds']:.3f} |")
    print(f"\n- the cache file: {cache_mib:,.0f} MiB; peak RSS of the server: {build_rss or 0:,.0f} MiB while building, "
          f"{serve_rss or 0:,.0f} MiB when serving after a restart")
    print(f"- load average (1 min) at start {load_start:.2f}, at the end {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    met = all(m["p95"] < GOAL_MS for _, m, goal in rows if goal)
    print(f"\n- goal (list page and receipt page < {GOAL_MS:.0f} ms at p95 with {args.calls:,} calls): "
          f"{'met' if met else 'missed'}; one keep-alive client, sequential requests, {args.requests} per row; "
          f"total {time.monotonic() - total_started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
