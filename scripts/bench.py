"""Throughput / latency / stream-TTFB benchmark of the receipts recorder against bare mitmdump.

One run, one local fake upstream (tests/support/upstream.py, plain HTTP on 127.0.0.1), three paths:

  direct                    load generator -> upstream
  mitmdump (bare)           load generator -> mitmdump (regular mode, no addon) -> upstream
  receipts proxy (strict)   load generator -> `receipts proxy --durability strict` -> upstream

The proxies are used as forward proxies: requests carry the absolute URI in the request line
(what an HTTP_PROXY client sends), over keep-alive connections.  Load comes from `wrk` (installed
with apt-get when missing and running as root) or, failing that, from a small asyncio generator in
this file; whichever is chosen is used for every row alike.

The throughput of the recorder against bare mitmdump is measured interleaved: both proxies are
started once and kept running, and each of --rounds rounds runs bare then recorder at c=1, then
bare then recorder at c=32.  A load burst on a shared machine then hits both sides of a round
alike; the verdict uses the median of the per-round ratios.

Usage: scripts/bench [--seconds N] [--rounds N] [--streams N] [--markdown-out FILE]
                     [--loadgen auto|wrk|python]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = ROOT / "tests" / "support"
VENV_BIN = ROOT / ".venv" / "bin"
HOST = "127.0.0.1"
FREE_PATH = "/v1/free/chat/completions"
PAID_PATH = "/v1/chat/completions"
WARMUP_S = 1
CONNS = (1, 32)
QUIET_WINDOW_S = 2.0  # the recorder folds every 2 s (storage/fold.py FOLD_EVERY): one whole cycle
QUIET_CPU_S = 0.05    # CPU seconds a settled proxy may use in that window (an empty fold uses ~0.02)
SETTLE_MAX_S = 15.0

sys.path.insert(0, str(SUPPORT))
import upstream as fake
import x402_wire

# The fake upstream writes a response's headers and its body with two separate send() calls.  On a
# keep-alive connection that hits Nagle's algorithm + the client's delayed ACK: every response then
# takes ~40 ms, whatever sits in front of it.  The benchmark starts the same server with TCP_NODELAY
# on its accepted sockets (a class attribute of socketserver.StreamRequestHandler) so the upstream
# is not the thing measured.  --upstream-nagle starts it unmodified.
UPSTREAM_CODE = """
import sys
sys.path.insert(0, {support!r})
import upstream
upstream._Handler.disable_nagle_algorithm = {nodelay!r}
sys.exit(upstream.main(sys.argv[1:]))
"""


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# processes


class Proc:
    """A child process in its own session, output to a log file; stopped by signalling its group."""

    def __init__(self, name: str, argv: list[str], logdir: Path, env: dict | None = None):
        self.name = name
        self.log_path = logdir / f"{re.sub(r'[^a-z0-9]+', '-', name.lower())}.log"
        self._log = open(self.log_path, "wb")
        self.p = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  cwd=ROOT, env=env, start_new_session=True)

    def tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log_path.read_bytes().decode(errors="replace"))
            if m:
                return m
            if self.p.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.p.returncode} before it was ready:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.02)

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.p.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, grace: float = 20.0) -> int | None:
        """SIGINT (what Ctrl-C would send), then SIGTERM, then SIGKILL; bounded waits."""
        if self.p.poll() is None:
            for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                self._signal(sig)
                try:
                    self.p.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    log(f"{self.name} still running after {sig.name}")
        if not self._log.closed:
            self._signal(signal.SIGKILL)  # anything it left behind in its group (once)
            self._log.close()
        return self.p.returncode


def run_bounded(argv: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    """subprocess.run with a timeout whose child is killed on any exit (timeout, Ctrl-C, exception)."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                         start_new_session=True, **kw)
    try:
        out, err = p.communicate(timeout=timeout)
    except BaseException:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
        raise
    return subprocess.CompletedProcess(argv, p.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


# --------------------------------------------------------------------------------------------
# requests


def chat_body(**extra) -> bytes:
    """A ~200-byte OpenAI-style chat request body."""
    head = '{"model":"bench",'
    for k, v in extra.items():
        head += f'"{k}":{"true" if v is True else v},'
    head += '"messages":[{"role":"user","content":"'
    tail = '"}]}'
    filler = "Summarise the receipts benchmark in one short sentence, please. " * 4
    n = max(16, 200 - len(head) - len(tail))
    return (head + filler[:n] + tail).encode()


def paid_header(up_port: int) -> str:
    """A fixed, well-formed x402 v2 PAYMENT-SIGNATURE value for the fake upstream's challenge."""
    resource = f"http://{HOST}:{up_port}{PAID_PATH}"
    chal = x402_wire.challenge_v2(fake.PAY_TO, fake.ASSET, fake.AMOUNT, network=fake.NETWORK,
                                  resource=resource, extra=fake.EXTRA)
    pay = x402_wire.payment_v2_eip3009(chal["accepts"][0], x402_wire.random_address(), fake.AMOUNT,
                                       x402_wire.random_nonce_hex(), 0, int(time.time()) + 3600,
                                       x402_wire.random_signature(), resource=resource)
    return x402_wire.b64json(pay)


@dataclass
class Target:
    """Where the load generator connects, and what goes in the request line and Host header."""
    port: int
    path: str
    host_header: str
    headers: dict = field(default_factory=dict)


def target(up_port: int, proxy_port: int | None, path: str, headers: dict | None = None) -> Target:
    hosthdr = f"{HOST}:{up_port}"
    if proxy_port is None:
        return Target(up_port, path, hosthdr, dict(headers or {}))
    return Target(proxy_port, f"http://{hosthdr}{path}", hosthdr, dict(headers or {}))


def request_bytes(t: Target, body: bytes) -> bytes:
    lines = [f"POST {t.path} HTTP/1.1", f"Host: {t.host_header}", "Content-Type: application/json",
             f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in t.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# --------------------------------------------------------------------------------------------
# load generators


@dataclass
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # connect/read/write/timeout errors and non-2xx answers

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def _lua_str(s: str) -> str:
    return "[==[" + s + "]==]"


WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d errors=%d p50_us=%d p99_us=%d\\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(99))))
end
"""


class WrkLoad:
    name = "wrk"

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self._n = 0

    def _script(self, t: Target, body: bytes) -> Path:
        self._n += 1
        lua = ['wrk.method = "POST"', f"wrk.path = {_lua_str(t.path)}", f"wrk.body = {_lua_str(body.decode())}",
               f'wrk.headers["Host"] = {_lua_str(t.host_header)}',
               'wrk.headers["Content-Type"] = "application/json"']
        lua += [f"wrk.headers[ {_lua_str(k)} ] = {_lua_str(v)}" for k, v in t.headers.items()]
        path = self.workdir / f"wrk{self._n}.lua"
        path.write_text("\n".join(lua) + "\n" + WRK_DONE)
        return path

    def _wrk(self, script: Path, t: Target, conns: int, seconds: int) -> LoadResult:
        argv = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "--timeout", "5s", "-s", str(script),
                f"http://{HOST}:{t.port}/"]
        cp = run_bounded(argv, timeout=seconds + 30)
        m = re.search(r"RESULT requests=(\d+) duration_us=(\d+) errors=(\d+) p50_us=(\d+) p99_us=(\d+)", cp.stdout)
        if cp.returncode != 0 or not m:
            raise RuntimeError(f"wrk failed (rc {cp.returncode}):\n{cp.stdout}\n{cp.stderr}")
        req, dur, err, p50, p99 = map(int, m.groups())
        return LoadResult(req, dur / 1e6, p50 / 1e3, p99 / 1e3, err)

    def run(self, t: Target, body: bytes, conns: int, seconds: int) -> tuple[LoadResult, int]:
        """Warm-up run (discarded), then the measured run; returns (result, requests sent in both)."""
        script = self._script(t, body)
        warm = self._wrk(script, t, conns, WARMUP_S)
        res = self._wrk(script, t, conns, seconds)
        return res, warm.requests + res.requests


class PyLoad:
    """Fallback: asyncio, one keep-alive connection per concurrency slot, Content-Length responses."""
    name = "python-asyncio"

    def __init__(self, workdir: Path):
        pass

    @staticmethod
    async def _slot(port: int, req: bytes, warm_end: float, end: float, lat: list, stats: dict) -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while True:
                t0 = time.perf_counter()
                if t0 >= end:
                    return
                writer.write(req)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
                if not m:
                    raise RuntimeError("response without Content-Length: " + head[:200].decode(errors="replace"))
                await reader.readexactly(int(m.group(1)))
                t1 = time.perf_counter()
                stats["sent"] += 1
                if t0 >= warm_end and t1 <= end:
                    lat.append(t1 - t0)
                    if not 200 <= status < 300:
                        stats["errors"] += 1
        finally:
            writer.close()

    async def _run(self, t: Target, body: bytes, conns: int, seconds: int):
        req = request_bytes(t, body)
        start = time.perf_counter()
        warm_end, end = start + WARMUP_S, start + WARMUP_S + seconds
        lat: list[float] = []
        stats = {"sent": 0, "errors": 0}
        results = await asyncio.gather(*(self._slot(t.port, req, warm_end, end, lat, stats) for _ in range(conns)),
                                       return_exceptions=True)
        bad = [r for r in results if isinstance(r, BaseException)]
        if bad:
            raise RuntimeError(f"load generator: {len(bad)} connection(s) failed: {bad[0]!r}")
        return lat, stats

    def run(self, t: Target, body: bytes, conns: int, seconds: int) -> tuple[LoadResult, int]:
        lat, stats = asyncio.run(self._run(t, body, conns, seconds))
        lat.sort()
        return LoadResult(len(lat), float(seconds), pct(lat, 50) * 1e3, pct(lat, 99) * 1e3, stats["errors"]), stats["sent"]


def pct(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, int(round(p / 100 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def choose_loadgen(kind: str, workdir: Path):
    if kind in ("auto", "wrk") and not shutil.which("wrk"):
        if os.geteuid() == 0 and shutil.which("apt-get"):
            log("wrk not found; installing it with apt-get")
            try:
                run_bounded(["apt-get", "update", "-qq"], timeout=300)
                run_bounded(["apt-get", "install", "-y", "-qq", "wrk"], timeout=300,
                            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            except subprocess.TimeoutExpired:
                log("apt-get timed out")
        if not shutil.which("wrk"):
            if kind == "wrk":
                raise SystemExit("bench: wrk is not installed and could not be installed")
            log("wrk unavailable; using the asyncio load generator for every row")
    if kind == "python" or not shutil.which("wrk"):
        return PyLoad(workdir)
    return WrkLoad(workdir)


# --------------------------------------------------------------------------------------------
# stream time-to-first-byte


class _Conn:
    def __init__(self, port: int):
        self.sock = socket.create_connection((HOST, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.marks: list[tuple[int, float]] = []  # (len(buf) after a recv, time of that recv)

    def more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data
        self.marks.append((len(self.buf), time.perf_counter()))

    def line_at(self, pos: int) -> tuple[bytes, int]:
        while (i := self.buf.find(b"\r\n", pos)) < 0:
            self.more()
        return bytes(self.buf[pos:i]), i + 2

    def need(self, end: int) -> None:
        while len(self.buf) < end:
            self.more()

    def close(self) -> None:
        self.sock.close()


def one_stream(conn: _Conn, req: bytes) -> tuple[float, bool]:
    """Send one streamed request; returns (seconds until the first body `data:` byte, keep-alive?)."""
    conn.buf.clear()
    conn.marks.clear()
    t0 = time.perf_counter()
    conn.sock.sendall(req)
    while (hend := conn.buf.find(b"\r\n\r\n")) < 0:
        conn.more()
    head = bytes(conn.buf[:hend]).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    hdrs = {}
    for h in head[1:]:
        k, _, v = h.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if status != 200:
        raise RuntimeError(f"stream request answered {head[0]!r}")
    body_start = hend + 4
    while (i := conn.buf.find(b"data:", body_start)) < 0:
        conn.more()
    first = next(t for n, t in conn.marks if n >= i + 5)
    # read the rest of the response so the connection can be reused (and the proxy sees a complete flow)
    if "chunked" in hdrs.get("transfer-encoding", "").lower():
        pos = body_start
        while True:
            line, pos = conn.line_at(pos)
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, up to the empty line
                    line, pos = conn.line_at(pos)
                    if not line:
                        break
                break
            conn.need(pos + size + 2)
            pos += size + 2
        keep = hdrs.get("connection", "").lower() != "close"
    elif "content-length" in hdrs:
        conn.need(body_start + int(hdrs["content-length"]))
        keep = hdrs.get("connection", "").lower() != "close"
    else:  # delimited by close
        try:
            while True:
                conn.more()
        except EOFError:
            pass
        keep = False
    return first - t0, keep


def ttfb(up_port: int, proxy_port: int | None, n: int, warm: int = 2) -> list[float]:
    """n sequential streamed requests (after `warm` unmeasured ones) on a keep-alive connection; ms."""
    body = chat_body(stream=True, n_chunks=3, chunk_delay=0.05)
    t = target(up_port, proxy_port, FREE_PATH)
    req = request_bytes(t, body)
    conn = _Conn(t.port)
    out: list[float] = []
    try:
        for i in range(warm + n):
            dt, keep = one_stream(conn, req)
            if i >= warm:
                out.append(dt * 1e3)
            if not keep:
                conn.close()
                conn = _Conn(t.port)
    finally:
        conn.close()
    return out


def bootstrap_diff_ci(a: list[float], b: list[float], rounds: int = 4000, seed: int = 7) -> tuple[float, float]:
    """95% bootstrap interval of median(a) - median(b)."""
    rng = random.Random(seed)
    diffs = sorted(statistics.median(rng.choices(a, k=len(a))) - statistics.median(rng.choices(b, k=len(b)))
                   for _ in range(rounds))
    return diffs[int(0.025 * rounds)], diffs[int(0.975 * rounds) - 1]


# --------------------------------------------------------------------------------------------
# the benchmark


@dataclass
class Row:
    name: str
    c1: LoadResult | None = None
    c32: LoadResult | None = None
    ttfb: list[float] | None = None
    sent: int = 0  # requests the load generator sent (warm-ups included)
    runs: dict[int, list[LoadResult]] = field(default_factory=dict)  # interleaved: conns -> one per round

    @property
    def ttfb_median(self) -> float | None:
        return statistics.median(self.ttfb) if self.ttfb else None


def start_upstream(logdir: Path, nodelay: bool) -> tuple[Proc, int]:
    code = UPSTREAM_CODE.format(support=str(SUPPORT), nodelay=nodelay)
    p = Proc("upstream", [sys.executable, "-c", code, "--port", "0", "--host", HOST], logdir)
    m = p.wait_for(r"READY (\d+)", 20)
    return p, int(m.group(1))


def start_mitmdump(name: str, confdir: Path, logdir: Path, extra: list[str] = ()) -> tuple[Proc, int]:
    argv = [str(VENV_BIN / "mitmdump"), "--listen-host", HOST, "--listen-port", "0",
            "--set", f"confdir={confdir}", "--set", "flow_detail=0", *extra]
    p = Proc(name, argv, logdir)
    m = p.wait_for(r"proxy listening at [\d.]+:(\d+)", 60)
    return p, int(m.group(1))


def start_recorder(data: Path, logdir: Path) -> tuple[Proc, int]:
    argv = [str(VENV_BIN / "receipts"), "proxy", "--data", str(data), "--listen-host", HOST,
            "--listen-port", "0", "--durability", "strict"]
    p = Proc("receipts proxy", argv, logdir)
    m = p.wait_for(r"proxy listening at [\d.]+:(\d+)", 60)
    return p, int(m.group(1))


def measure(row: Row, gen, up_port: int, proxy_port: int | None, seconds: int, streams: int) -> None:
    body = chat_body()
    t = target(up_port, proxy_port, FREE_PATH)
    log(f"{row.name}: c=1 ({WARMUP_S}+{seconds} s)")
    row.c1, sent1 = gen.run(t, body, 1, seconds)
    log(f"{row.name}: c=32 ({WARMUP_S}+{seconds} s)")
    row.c32, sent32 = gen.run(t, body, 32, seconds)
    row.sent += sent1 + sent32
    if streams:
        log(f"{row.name}: {streams} streams for TTFB")
        row.ttfb = ttfb(up_port, proxy_port, streams)
        row.sent += streams + 2


def cpu_seconds(proc: Proc) -> float:
    """User + system CPU time of a proxy's process, all its threads (the recorder's folds included)."""
    try:
        fields = Path(f"/proc/{proc.p.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(procs: list[Proc]) -> None:
    """Wait until the proxies are idle over a whole fold cycle, so that the recorder's fold of the
    run just done does not take CPU from the next run (of the other proxy, on 2 cores); bounded."""
    start = time.monotonic()
    samples: list[tuple[float, float]] = []  # (time, CPU of all procs)
    while True:
        now = time.monotonic()
        samples.append((now, sum(cpu_seconds(p) for p in procs)))
        old = [x for x in samples if x[0] <= now - QUIET_WINDOW_S]
        if old and samples[-1][1] - old[-1][1] <= QUIET_CPU_S:
            return
        if now - start > SETTLE_MAX_S:
            log(f"proxies not idle after {SETTLE_MAX_S:.0f} s; measuring anyway")
            return
        time.sleep(0.25)


def median_run(runs: list[LoadResult]) -> LoadResult:
    """The run of median req/s (the lower middle one for an even count): its latencies go with it."""
    return sorted(runs, key=lambda r: r.rps)[(len(runs) - 1) // 2]


def interleave(paths: list[tuple[Row, Proc, int]], gen, up_port: int, rounds: int, seconds: int) -> dict[str, float]:
    """Round after round, each path at c=1 then at c=32, in the order given, against proxies kept
    running.  Sets each row's c1/c32 to its median run; returns the most CPU seconds a proxy used
    during another path's run (warm-up included), by row name: what an idle proxy took from it."""
    body = chat_body()
    procs = [proc for _, proc, _ in paths]
    idle_cpu = {row.name: 0.0 for row, _, _ in paths}
    for n in range(1, rounds + 1):
        for conns in CONNS:
            for row, proc, port in paths:
                settle(procs)
                others = [(r, p) for r, p, _ in paths if p is not proc]
                before = [cpu_seconds(p) for _, p in others]
                log(f"round {n}/{rounds}, {row.name}: c={conns} ({WARMUP_S}+{seconds} s)")
                res, sent = gen.run(target(up_port, port, FREE_PATH), body, conns, seconds)
                row.runs.setdefault(conns, []).append(res)
                row.sent += sent
                for (r, p), b in zip(others, before):
                    idle_cpu[r.name] = max(idle_cpu[r.name], cpu_seconds(p) - b)
    for row, _, _ in paths:
        row.c1, row.c32 = median_run(row.runs[1]), median_run(row.runs[32])
    return idle_cpu


def round_ratios(rec: Row, bare: Row, conns: int) -> list[float]:
    """Recorder req/s over bare req/s of the same round, in %."""
    return [100 * a.rps / b.rps if b.rps else float("nan") for a, b in zip(rec.runs[conns], bare.runs[conns])]


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def fmt(v: float | None, nd: int = 2) -> str:
    if v is None:
        return "–"
    return f"{v:,.{nd}f}"


def render(rows: list[Row], paid: Row | None, ratios: list[str], notes: list[str]) -> str:
    out = ["| path | req/s c=1 | p50 c=1 (ms) | p99 c=1 (ms) | req/s c=32 | p50 c=32 (ms) | p99 c=32 (ms) "
           "| stream TTFB median (ms) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows + ([paid] if paid else []):
        c1, c32 = r.c1, r.c32
        out.append(f"| {r.name} | {fmt(c1 and c1.rps, 0)} | {fmt(c1 and c1.p50_ms)} | {fmt(c1 and c1.p99_ms)} "
                   f"| {fmt(c32 and c32.rps, 0)} | {fmt(c32 and c32.p50_ms)} | {fmt(c32 and c32.p99_ms)} "
                   f"| {fmt(r.ttfb_median)} |")
    out += ["", "| comparison (recorder vs bare mitmdump) | value | goal | verdict |", "|---|---|---|---|"]
    out += ratios
    if notes:
        out += [""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=5, help="measured duration of each run (default 5; whole s)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved rounds of bare mitmdump and recorder runs (default 3)")
    ap.add_argument("--streams", type=int, default=20, help="streamed requests per path for TTFB (default 20)")
    ap.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    ap.add_argument("--no-paid", action="store_true", help="skip the paid x402 run through the recorder")
    ap.add_argument("--upstream-nagle", action="store_true",
                    help="run the fake upstream as is (no TCP_NODELAY): expect ~40 ms per keep-alive response")
    ap.add_argument("--markdown-out", help="also write the tables to this file")
    args = ap.parse_args(argv)
    if args.seconds < 1:
        ap.error("--seconds must be at least 1")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")

    def _term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGHUP, _term)
    # Started in the background by a non-interactive shell, SIGINT arrives ignored and the children
    # would inherit that (and then ignore the SIGINT that stops them cleanly): catch it explicitly.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    tmp = Path(tempfile.mkdtemp(prefix="receipts-bench-"))
    procs: list[Proc] = []
    t_start = time.monotonic()
    load_start = loadavg()
    log(f"load average at start: {load_start}")
    try:
        gen = choose_loadgen(args.loadgen, tmp)
        up, up_port = start_upstream(tmp, nodelay=not args.upstream_nagle)
        procs.append(up)
        log(f"upstream on {HOST}:{up_port}; load generator: {gen.name}")

        direct = Row("direct")
        measure(direct, gen, up_port, None, args.seconds, args.streams)

        bare = Row("mitmdump (bare)")
        mp, mport = start_mitmdump("mitmdump bare", tmp / "ca-bare", tmp)
        procs.append(mp)
        rec = Row("receipts proxy (strict)")
        data = tmp / "data"
        rp, rport = start_recorder(data, tmp)
        procs.append(rp)
        idle_cpu = interleave([(bare, mp, mport), (rec, rp, rport)], gen, up_port, args.rounds, args.seconds)
        if args.streams:
            log(f"{bare.name}: {args.streams} streams for TTFB")
            bare.ttfb = ttfb(up_port, mport, args.streams)
            bare.sent += args.streams + 2
        mp.stop()

        # Bare mitmdump buffers a whole response before sending it on, so its TTFB above is the whole
        # stream's duration.  For the TTFB comparison, a bare mitmdump that streams bodies (built-in
        # option, no addon) is the fair baseline: the recorder streams event streams through.
        bare_s = Row("mitmdump (bare, stream_large_bodies=1)")
        if args.streams:
            sp, sport = start_mitmdump("mitmdump bare streaming", tmp / "ca-bare", tmp,
                                       ["--set", "stream_large_bodies=1"])
            procs.append(sp)
            log(f"{bare_s.name}: {args.streams} streams for TTFB")
            bare_s.ttfb = ttfb(up_port, sport, args.streams)
            sp.stop()

        if args.streams:
            log(f"{rec.name}: {args.streams} streams for TTFB")
            rec.ttfb = ttfb(up_port, rport, args.streams)
            rec.sent += args.streams + 2
        paid = None
        if not args.no_paid:
            paid = Row("receipts proxy (strict), paid x402 (PAYMENT-SIGNATURE)")
            t = target(up_port, rport, PAID_PATH, {"PAYMENT-SIGNATURE": paid_header(up_port)})
            log(f"{paid.name}: c=32 ({WARMUP_S}+{args.seconds} s)")
            paid.c32, paid.sent = gen.run(t, chat_body(), 32, args.seconds)
        log("stopping the recorder (SIGINT)")
        rc = rp.stop(grace=30)
        cp = run_bounded([str(VENV_BIN / "receipts"), "sql", "--data", str(data), "--csv",
                          "select count(*) from calls"], timeout=60, cwd=ROOT)
        journaled = None
        if cp.returncode == 0:
            nums = re.findall(r"^\s*(\d+)\s*$", cp.stdout, re.M)
            journaled = int(nums[-1]) if nums else None
        count_note = (f"recorder journaled **{journaled if journaled is not None else '?'}** calls "
                      f"(`select count(*) from calls`, after SIGINT; proxy exit code {rc}); the load generator "
                      f"completed {rec.sent + (paid.sent if paid else 0):,} requests through it (warm-ups and "
                      f"streams included; up to 32 more per run were in flight when a run ended)")
        if cp.returncode != 0:
            count_note += f"; `receipts sql` failed: {cp.stderr.strip() or cp.stdout.strip()}"

        # ---- comparisons
        ratios = []

        def verdict(ok: bool) -> str:
            return "goal met" if ok else "goal missed"

        for conns, a, b in ((1, rec.c1, bare.c1), (32, rec.c32, bare.c32)):
            rs = round_ratios(rec, bare, conns)
            r = statistics.median(rs)
            ratios.append(f"| recorder throughput, c={conns} | {r:.1f}% of bare: median of the per-round ratios "
                          f"({', '.join(f'{x:.1f}' for x in rs)}%; median runs {a.rps:,.0f} vs {b.rps:,.0f} req/s) "
                          f"| ≥ 85% | {verdict(r >= 85)} |")
        added = rec.c1.p50_ms - bare.c1.p50_ms
        ratios.append(f"| added p50 latency, c=1 | {added:+.2f} ms ({rec.c1.p50_ms:.2f} vs {bare.c1.p50_ms:.2f} ms) "
                      f"| ≤ 0.5 ms | {verdict(added <= 0.5)} |")
        added32 = rec.c32.p50_ms - bare.c32.p50_ms
        ratios.append(f"| added p50 latency, c=32 (for information) | {added32:+.2f} ms "
                      f"({rec.c32.p50_ms:.2f} vs {bare.c32.p50_ms:.2f} ms) | – | – |")
        if rec.ttfb and bare_s.ttfb:
            a, b = rec.ttfb_median, bare_s.ttfb_median
            lo, hi = bootstrap_diff_ci(rec.ttfb, bare_s.ttfb)
            within = lo <= 0 <= hi
            ratios.append(f"| stream TTFB, recorder − bare (streaming) | {a:.2f} − {b:.2f} = {a - b:+.2f} ms "
                          f"(95% bootstrap CI of the difference [{lo:+.2f}, {hi:+.2f}] ms, n={len(rec.ttfb)} each) "
                          f"| within noise (CI contains 0) | {verdict(within)} |")
            ratios.append(f"| stream TTFB, recorder − bare (default, buffering) | {a:.2f} − {bare.ttfb_median:.2f} "
                          f"= {a - bare.ttfb_median:+.2f} ms | – (bare buffers the whole stream) | – |")

        notes = [count_note]
        per_round = "; ".join(
            f"c={c}: " + ", ".join(f"{b.rps:,.0f}/{a.rps:,.0f}" for b, a in zip(bare.runs[c], rec.runs[c]))
            for c in CONNS)
        notes.append(f"bare mitmdump and recorder interleaved, both started once and kept running: "
                     f"{args.rounds} round(s) of bare then recorder at c=1, then at c=32, each run started once "
                     f"both proxies were idle for {QUIET_WINDOW_S:.0f} s; req/s bare/recorder by round: {per_round}; "
                     f"their rows show the median run (the lower middle one for an even --rounds); most CPU an idle "
                     f"proxy used during the other's run (warm-up included): recorder "
                     f"{idle_cpu[rec.name]:.2f} s, bare {idle_cpu[bare.name]:.2f} s")
        if paid and paid.c32 and paid.c32.errors:
            notes.append(f"paid run: {paid.c32.errors} non-2xx/errored responses")
        for r in (direct, bare, rec):
            for conns, res in ((1, r.c1), (32, r.c32)):
                errors = sum(x.errors for x in r.runs.get(conns) or ([res] if res else []))  # every round's
                if errors:
                    notes.append(f"{r.name} c={conns}: {errors} errors / non-2xx responses")
        notes.append(f"load generator {gen.name}, {args.seconds} s per run after a {WARMUP_S} s warm-up; "
                     f"POST {FREE_PATH} with a {len(chat_body())}-byte JSON body, keep-alive, forward-proxy "
                     f"absolute-URI requests; TTFB = send → first `data:` byte, {args.streams} sequential streams "
                     f"(n_chunks 3, chunk_delay 0.05 s) on one keep-alive connection after 2 warm-ups")
        load_end = loadavg()
        log(f"load average at end: {load_end}")
        notes.append(f"upstream: tests/support/upstream.py on {HOST}:{up_port}"
                     + (" as is (Nagle on)" if args.upstream_nagle else
                        ", started with TCP_NODELAY (unpatched it stalls ~40 ms per keep-alive response)")
                     + f"; {os.cpu_count()} CPUs; load average (1, 5, 15 min) at start {load_start}, at end "
                     f"{load_end}; total {time.monotonic() - t_start:.0f} s")
        md = render([direct, bare, bare_s, rec], paid, ratios, notes)
        print(md, flush=True)
        if args.markdown_out:
            Path(args.markdown_out).write_text(md)
            log(f"wrote {args.markdown_out}")
        return 0
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        return 130
    finally:
        for p in reversed(procs):
            p.stop(grace=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
