"""Run a test bed HTTP service (facilitator, resource server) as a child process.

The parent binds the listening socket on 127.0.0.1 (port chosen by the kernel, so no race for a
"free port") and hands it to ``python -m <module> --fd N``, which serves it with uvicorn. The child
gets an environment without proxy variables: its own HTTP calls (to anvil, to the facilitator)
must go straight to 127.0.0.1, whatever the test process has set for its clients.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from typing import Sequence

from . import ROOT
from .node import OutputPump, popen_child, stop_child

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def serve_until_stopped() -> None:
    """Block until SIGTERM or Ctrl-C: a bed run as a command (``python -m testbed.…``) keeps its stack up."""

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    with contextlib.suppress(KeyboardInterrupt):
        while True:  # (each pause ends with a signal; SIGTERM or SIGINT ends the loop)
            signal.pause()


class ServiceError(RuntimeError):
    """A service did not come up."""


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment minus proxy settings, plus the repository on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in PROXY_VARS}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class Service:
    """A running child service; ``url`` is its base URL. Stop it with :meth:`stop` or ``with``."""

    def __init__(self, name: str, proc, pump: OutputPump, url: str, probe: str = "", cmd: Sequence[str] = ()):
        self.name = name
        self.process = proc
        self._pump = pump
        self.url = url
        self._probe = probe or url + "/healthz"
        self._cmd = list(cmd)

    def wait_ready(self, timeout: float = 30.0) -> "Service":
        """Poll the readiness URL until it answers 200; on failure stop the child and raise."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                if not self.alive():
                    raise ServiceError(f"{self.name} exited with status {self.process.poll()}")
                try:
                    left = max(0.2, min(5.0, deadline - time.monotonic()))
                    with _NO_PROXY_OPENER.open(self._probe, timeout=left) as r:
                        if r.status == 200:
                            return self
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise ServiceError(f"{self.name} did not answer {self._probe} within {timeout:.0f} s")
                time.sleep(0.05)
        except BaseException as e:
            self.stop()
            if isinstance(e, ServiceError):
                time.sleep(0.1)  # let the pump catch the last lines
                raise ServiceError(f"{e}\n{' '.join(self._cmd)}\n--- {self.name} output ---\n"
                                   f"{self._pump.tail()}") from None
            raise

    @property
    def output(self) -> str:
        return self._pump.tail(400)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        stop_child(self.process, timeout)

    def __enter__(self) -> "Service":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Service {self.name} {self.url} {'running' if self.alive() else 'stopped'}>"


_NO_PROXY_OPENER = urllib.request.build_opener(
    urllib.request.ProxyHandler({}),
    urllib.request.HTTPSHandler(context=ssl._create_unverified_context()),  # readiness probe only
)


def start_service(
    name: str,
    module: str,
    args: Sequence[str] = (),
    *,
    host: str = "127.0.0.1",
    url_host: str | None = None,
    tls: bool = False,
    env: dict[str, str] | None = None,
    ready_path: str = "/healthz",
    timeout: float = 30.0,
    wait: bool = True,
) -> Service:
    """Start ``python -m module --fd N *args`` on a fresh socket; unless ``wait=False``, wait until
    ``ready_path`` answers 200 (else call :meth:`Service.wait_ready` later)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        sock.listen(256)
        sock.set_inheritable(True)
        port = sock.getsockname()[1]
        cmd = [sys.executable, "-m", module, "--fd", str(sock.fileno()), *args]
        proc = popen_child(cmd, env=child_env(env), pass_fds=(sock.fileno(),), cwd=str(ROOT))
    finally:
        sock.close()  # the child holds its own copy
    pump = OutputPump(proc)
    url = f"{'https' if tls else 'http'}://{url_host or host}:{port}"
    service = Service(name, proc, pump, url, probe=f"{'https' if tls else 'http'}://{host}:{port}{ready_path}",
                      cmd=cmd)
    if wait:
        service.wait_ready(timeout)
    return service


def serve_fd(app, fd: int | None, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "info",
             ssl_certfile: str | None = None, ssl_keyfile: str | None = None) -> None:
    """Child side: serve ``app`` with uvicorn on the inherited socket ``fd`` (or bind host:port)."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, ssl_certfile=ssl_certfile,
                            ssl_keyfile=ssl_keyfile, timeout_graceful_shutdown=2, lifespan="off")
    server = uvicorn.Server(config)
    if fd is None:
        server.run()
    else:
        server.run(sockets=[socket.socket(fileno=fd)])
