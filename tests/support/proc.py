"""Run the real `receipts proxy` (or a bare mitmdump with the addon) as a subprocess for tests."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LISTENING = re.compile(r"listening at (?:\*|[\d.]+):(\d+)")


class ProxyProcess:
    """A proxy subprocess; knows its port, its CA file and what it printed."""

    def __init__(self, data: Path, *extra: str, upstream_ca: str | None = None, mitmdump: bool = False,
                 env: dict | None = None, bin_dir: Path = BIN, cwd: Path = ROOT):
        self.data = Path(data)
        self.cwd = cwd
        if mitmdump:  # the user's own mitmdump with `-s addon/script.py`
            cmd = [str(BIN / "mitmdump"), "--listen-host", "127.0.0.1", "--listen-port", "0",
                   "-s", str(ROOT / "addon" / "script.py"), "--set", f"confdir={self.data / 'ca'}",
                   "--set", f"receipts_data={self.data}", "--set", "flow_detail=0"]
            if upstream_ca:
                cmd += ["--set", f"ssl_verify_upstream_trusted_ca={upstream_ca}"]
        else:
            cmd = [str(bin_dir / "receipts"), "proxy", "--data", str(self.data), "--listen-port", "0"]
            if upstream_ca:
                cmd += ["--upstream-ca", upstream_ca]
        self.cmd = cmd + list(extra)
        self.env = {**os.environ, **(env or {})}
        self.lines: list[str] = []
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def ca(self) -> str:
        return str(self.data / "ca" / "mitmproxy-ca-cert.pem")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client_env(self) -> dict:
        """What an app needs to go through the proxy: HTTPS_PROXY and the CA variables."""
        return {"HTTPS_PROXY": self.url, "https_proxy": self.url, "HTTP_PROXY": self.url,
                "http_proxy": self.url, "NO_PROXY": "", "no_proxy": "",
                "SSL_CERT_FILE": self.ca, "REQUESTS_CA_BUNDLE": self.ca, "CURL_CA_BUNDLE": self.ca,
                "NODE_EXTRA_CA_CERTS": self.ca}

    def start(self, timeout: float = 30.0) -> "ProxyProcess":
        self.lines.clear()
        self.port = None
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=self.env, cwd=self.cwd, start_new_session=True)
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while self.port is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"proxy did not start within {timeout}s:\n{self.output()}")
            time.sleep(0.02)
        return self

    def _pump(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.lines.append(line)
            m = LISTENING.search(line)
            if m and proc is self.proc:
                self.port = int(m.group(1))

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self, timeout: float = 20.0) -> int:
        """Ctrl-C, as a user would: the proxy seals what it has and exits."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else 0

    def kill(self) -> None:
        """kill -9: no chance to flush or seal anything."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def __enter__(self) -> "ProxyProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def receipts_cli(*args: str, data: Path | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "receipts"), *args] + (["--data", str(data)] if data else [])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.1):
    """Poll until predicate() is truthy (bounded); return its value or raise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
