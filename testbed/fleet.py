"""`scripts/fleet`: a fleet on one machine, every part a real process on 127.0.0.1.

PostgreSQL (the lake's catalog) and SeaweedFS (its S3 store) from testbed/lakebed.py; `receipts lake init`;
anvil with a test USDC and the real x402 facilitator and server (testbed/stack.py); N recorders
(`receipts proxy`, each with its own data directory) with a `receipts ship` each; two verifier shards
(`receipts verify --lake … --shard 1/2` and `2/2`, each with its own data directory); `receipts serve
--lake`. Paid calls go through every recorder; the script waits until both shards have shipped a
`passed` verdict for every one of them, prints the lake's receipts and, with --keep, leaves it all
running until Ctrl-C. Everything it started is stopped at the end.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .lakebed import Postgres, SeaweedFS
from .stack import paid_stack

BIN = Path(sys.executable).parent
CONFIRMATIONS = 1


def say(msg: str) -> None:
    print(f"fleet: {msg}", flush=True)


class Procs:
    """The processes started, stopped in reverse order (SIGINT, then SIGKILL after 30 s)."""

    def __init__(self, env: dict, logs: Path):
        self.env, self.logs, self.started = env, logs, []

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")
        proc = subprocess.Popen([str(BIN / "receipts"), *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.started.append((name, proc))
        return proc

    def wait_line(self, name: str, pattern: str, timeout: float = 60) -> re.Match:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if m := re.search(pattern, (self.logs / f"{name}.log").read_text()):
                return m
            time.sleep(0.1)
        raise SystemExit(f"fleet: {name} did not start: see {self.logs / f'{name}.log'}")

    def stop(self) -> None:
        for _, proc in reversed(self.started):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for _, proc in reversed(self.started):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def receipts(env: dict, *args: str) -> str:
    out = subprocess.run([str(BIN / "receipts"), *args], env=env, capture_output=True, text=True, timeout=300)
    return out.stdout + out.stderr


def run(root: Path, recorders: int, calls: int, keep: bool, timeout: float) -> int:
    pg = Postgres().start()
    s3 = SeaweedFS(root / "seaweedfs").start()
    try:
        url = pg.createdb("fleet")
        env = {**os.environ, **s3.env(), "RECEIPTS_LAKE": url}
        say(f"PostgreSQL on 127.0.0.1:{pg.port}, SeaweedFS S3 on {s3.endpoint}; lake catalog {url!r}")
        say(receipts(env, "lake", "init", "--data-path", "s3://receipts/fleet/").strip())
        with paid_stack(chain_id=8453) as stack:
            config = root / "fleet.yaml"
            config.write_text(json.dumps(stack.receipts_config(CONFIRMATIONS)))
            logs = root / "logs"
            logs.mkdir(exist_ok=True)
            procs = Procs(env, logs)
            try:
                proxies = []
                for k in range(1, recorders + 1):
                    data = root / f"recorder{k}"
                    procs.start(f"recorder{k}", "proxy", "--data", str(data), "--config", str(config),
                                "--listen-port", "0", "--seal-interval", "0.2")
                    port = procs.wait_line(f"recorder{k}", r"listening at [\d.]+:(\d+)").group(1)
                    proxies.append(f"http://127.0.0.1:{port}")
                    procs.start(f"ship{k}", "ship", "--data", str(data), "--interval", "1", "--name", f"recorder{k}")
                for k in (1, 2):
                    procs.start(f"verify{k}", "verify", "--follow", "--interval", "1", "--config", str(config),
                                "--data", str(root / f"verifier{k}"), "--lake", url, "--shard", f"{k}/2",
                                "--name", f"verifier{k}")
                procs.start("serve", "serve", "--lake", url, "--port", "0", "--config", str(config))
                page = procs.wait_line("serve", r"receipts serve: (http://\S+)", 120).group(1)
                say(f"{recorders} recorders {', '.join(proxies)}, a shipper each, verifier shards 1/2 and 2/2, "
                    f"the page at {page}; logs in {logs}")
                paid = []
                for i in range(calls):
                    for proxy in proxies:
                        body = {"model": "fleet-model", "messages": [{"role": "user", "content": f"call {i} via {proxy}"}]}
                        paid.append(stack.pay(body=body, proxy=proxy).tx_hash)
                stack.anvil.mine(CONFIRMATIONS + 1)
                say(f"{len(paid)} paid calls made; waiting for both shards to pass them in the lake…")
                passed = _wait_passed(env, paid, timeout)
                say(f"{passed} of {len(paid)} receipts passed in the lake")
                print(receipts(env, "list", "--limit", str(len(paid))), flush=True)
                print(receipts(env, "sql", "SELECT split_part(writer, '/', 1) AS ship_name, count(*) AS events "
                                           "FROM events GROUP BY 1 ORDER BY 1"), flush=True)
                if keep:
                    say("running until Ctrl-C")
                    with contextlib.suppress(KeyboardInterrupt):
                        threading.Event().wait()
                return 0 if passed == len(paid) else 1
            finally:
                procs.stop()
    finally:
        s3.stop()
        pg.remove()


def _wait_passed(env: dict, txs: list[str], timeout: float) -> int:
    query = ("SELECT count(*) AS n FROM receipts WHERE proof_status = 'passed' AND payment_hash IN ("
             + ", ".join(f"'{t}'" for t in txs) + ")")
    end, n = time.monotonic() + timeout, 0
    while time.monotonic() < end:
        out = subprocess.run([str(BIN / "receipts"), "sql", "--csv", query], env=env, capture_output=True,
                             text=True, timeout=120)
        n = int(out.stdout.split()[1]) if out.returncode == 0 else 0
        if n == len(txs):
            break
        time.sleep(1)
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/fleet", description=__doc__.splitlines()[0])
    ap.add_argument("--recorders", type=int, default=3, help="recorders (each with its shipper; default 3)")
    ap.add_argument("--calls", type=int, default=2, help="paid calls through each recorder (default 2)")
    ap.add_argument("--keep", action="store_true", help="leave everything running until Ctrl-C")
    ap.add_argument("--timeout", type=float, default=180, help="seconds to wait for the verdicts (default 180)")
    ap.add_argument("--dir", help="keep the data directories and logs here (default: a temporary directory)")
    args = ap.parse_args(argv)
    root = Path(args.dir or tempfile.mkdtemp(prefix="receipts-fleet-"))
    root.mkdir(parents=True, exist_ok=True)
    return run(root, args.recorders, args.calls, args.keep, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
