"""Run the real `receipts serve` as a subprocess for tests, and find Debian's Chromium for Playwright."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx

from .proc import BIN, ROOT

LISTENING = re.compile(r"receipts serve: http://([\d.]+):(\d+)/")
TOKEN = re.compile(r"\?token=([A-Za-z0-9._~-]+)")


def chromium() -> str:
    """Debian's chromium (scripts/bootstrap installs it); RECEIPTS_CHROMIUM names another binary."""
    path = os.environ.get("RECEIPTS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise RuntimeError("no chromium found: run scripts/bootstrap (it installs Debian's chromium) "
                           "or set RECEIPTS_CHROMIUM")
    return path


class ServeProcess:
    """`receipts serve` on a free port. On an address other machines reach, it prints a token: `token`
    holds it, and `get()` sends it (as `Authorization: Bearer`) unless told otherwise."""

    def __init__(self, data: Path, *extra: str, env: dict | None = None):
        self.cmd = [str(BIN / "receipts"), "serve", "--data", str(data), "--port", "0", *extra]
        self.env = {**os.environ, **(env or {})}
        self.lines: list[str] = []
        self.port: int | None = None
        self.token: str | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> "ServeProcess":
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     cwd=ROOT, start_new_session=True, env=self.env)
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"receipts serve exited with {self.proc.returncode}:\n{self.output()}")
            if self.port and self.status().get("state") == "ready":
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"receipts serve not ready within {timeout}s:\n{self.output()}")
            time.sleep(0.1)

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            m = LISTENING.search(line)
            if m:
                self.port = int(m.group(2))
            t = TOKEN.search(line)
            if t:
                self.token = t.group(1)

    def output(self) -> str:
        return "".join(self.lines)

    def get(self, path: str, token: bool = True, **kw) -> httpx.Response:
        if token and self.token:
            kw["headers"] = {"Authorization": f"Bearer {self.token}", **kw.get("headers", {})}
        return httpx.get(self.url + path, timeout=30, **kw)

    def status(self) -> dict:
        try:
            return self.get("/api/status").json()
        except (httpx.HTTPError, ValueError):  # (not listening yet, or its token not read yet)
            return {}

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode if self.proc else 0

    def __enter__(self) -> "ServeProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
