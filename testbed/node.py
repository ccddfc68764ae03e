"""anvil (a real local Ethereum node) and solc-js: found, or installed from npm, and started.

The tools come from the npm registry into ``<repo>/node_modules`` (git-ignored)::

    npm install --no-save --prefix <repo> @foundry-rs/anvil@1.7.1 solc@0.8.37

:func:`ensure_node_tools` does that once (it is idempotent and skipped when the right versions are
already there; concurrent callers wait on a lock). ``TESTBED_ANVIL`` / ``TESTBED_SOLCJS`` point at
other binaries if you have them.

:func:`start_anvil` runs anvil on 127.0.0.1 and gives an :class:`Anvil` handle (a context manager)
with JSON-RPC helpers: ``snapshot``/``revert``, ``mine``, ``set_automine``, ``receipt`` …
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import ROOT

ANVIL_VERSION = "1.7.1"
SOLC_VERSION = "0.8.37"
NPM_PACKAGES = {"@foundry-rs/anvil": ANVIL_VERSION, "solc": SOLC_VERSION}

DEFAULT_MNEMONIC = "test test test test test test test test test test test junk"
"""anvil's default dev mnemonic: its accounts and keys are public knowledge, test use only."""

_LISTENING = re.compile(r"Listening on ([\d.]+):(\d+)")


class NodeToolsError(RuntimeError):
    """anvil or solc-js could not be found or installed."""


class AnvilError(RuntimeError):
    """anvil did not start, or a JSON-RPC call failed."""


# ---------------------------------------------------------------------------------------------
# Finding / installing the npm tools
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeTools:
    anvil: Path
    solcjs: Path


def _platform_suffix() -> str:
    system = {"linux": "linux", "darwin": "darwin", "windows": "win32"}.get(platform.system().lower())
    machine = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower()
    )
    if not system or not machine:
        raise NodeToolsError(f"anvil from npm has no build for {platform.system()}/{platform.machine()}")
    return f"{system}-{machine}"


def anvil_binary(root: Path = ROOT) -> Path:
    """Where the npm package puts the native anvil binary (it may not exist yet)."""
    return Path(root) / "node_modules" / "@foundry-rs" / f"anvil-{_platform_suffix()}" / "bin" / "anvil"


def solcjs_binary(root: Path = ROOT) -> Path:
    """Where npm puts the solc-js command line (it may not exist yet)."""
    return Path(root) / "node_modules" / ".bin" / "solcjs"


def _installed_version(root: Path, package: str) -> str | None:
    try:
        meta = json.loads((Path(root) / "node_modules" / package / "package.json").read_text())
    except (OSError, ValueError):
        return None
    return meta.get("version")


def _npm_tools_present(root: Path) -> bool:
    return (
        all(_installed_version(root, pkg) == ver for pkg, ver in NPM_PACKAGES.items())
        and _installed_version(root, f"@foundry-rs/anvil-{_platform_suffix()}") == ANVIL_VERSION
        and os.access(anvil_binary(root), os.X_OK)
        and solcjs_binary(root).exists()
    )


@contextlib.contextmanager
def _install_lock(root: Path, timeout: float):
    """An exclusive lock (a file in the temp dir, one per repository) around ``npm install``."""
    key = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"receipts-testbed-npm-{key}.lock"
    with open(path, "a+") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise NodeToolsError(f"timed out waiting for another npm install (lock {path})")
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def npm_pins_present(folder: Path, pins: dict[str, str]) -> bool:
    """Each pinned npm package is in ``folder/node_modules`` at its version."""
    for pkg, version in pins.items():
        try:
            meta = json.loads((folder / "node_modules" / pkg / "package.json").read_text())
        except (OSError, ValueError):
            return False
        if meta.get("version") != version:
            return False
    return True


def install_npm_folder(folder: Path, present, what: str, *, timeout: float = 300.0) -> Path:
    """``npm install`` of ``folder/package.json`` into that folder, once: skipped while ``present()`` says the
    packages are there; a lock serializes concurrent installs. ``what`` names the packages in errors."""
    if present():
        return folder
    npm = shutil.which("npm")
    if npm is None:
        raise NodeToolsError(f"npm is not installed: it is needed once for {what} (apt-get install npm)")
    with _install_lock(folder, timeout):
        if not present():
            cmd = [npm, "install", "--no-audit", "--no-fund", "--no-package-lock", "--loglevel=error",
                   "--prefix", str(folder)]
            done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=timeout)
            if done.returncode != 0 or not present():
                raise NodeToolsError(f"npm install failed (exit {done.returncode}): {' '.join(cmd)}\n"
                                     f"{(done.stdout + done.stderr)[-2000:]}")
    return folder


def ensure_node_tools(root: Path = ROOT, *, timeout: float = 300.0) -> NodeTools:
    """Return the anvil and solcjs paths, installing them from npm first if needed.

    Idempotent: when ``node_modules`` already holds the pinned versions nothing is run.
    ``TESTBED_ANVIL`` and ``TESTBED_SOLCJS`` override the paths (no install then).
    """
    root = Path(root)
    env_anvil, env_solc = os.environ.get("TESTBED_ANVIL"), os.environ.get("TESTBED_SOLCJS")
    if env_anvil and env_solc:
        return NodeTools(Path(env_anvil), Path(env_solc))
    if not _npm_tools_present(root):
        with _install_lock(root, timeout):
            if not _npm_tools_present(root):  # someone else may have installed meanwhile
                _npm_install(root, timeout)
    return NodeTools(
        Path(env_anvil) if env_anvil else anvil_binary(root),
        Path(env_solc) if env_solc else solcjs_binary(root),
    )


def _npm_install(root: Path, timeout: float) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise NodeToolsError(
            "npm is not installed: it is needed once to fetch anvil and solc-js "
            "(apt-get install -y npm, or set TESTBED_ANVIL and TESTBED_SOLCJS)"
        )
    specs = [f"{pkg}@{ver}" for pkg, ver in NPM_PACKAGES.items()]
    cmd = [npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(root), *specs]
    try:
        done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise NodeToolsError(f"npm install timed out after {timeout:.0f} s: {' '.join(cmd)}") from e
    if done.returncode != 0 or not _npm_tools_present(root):
        tail = (done.stdout + done.stderr).strip()[-2000:]
        raise NodeToolsError(f"npm install failed (exit {done.returncode}): {' '.join(cmd)}\n{tail}")


# ---------------------------------------------------------------------------------------------
# JSON-RPC
# ---------------------------------------------------------------------------------------------

_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_rpc_ids = iter(range(1, 1 << 62))


def rpc_call(url: str, method: str, params: list | None = None, *, timeout: float = 10.0) -> Any:
    """One JSON-RPC call, straight to ``url`` (proxy environment variables are ignored)."""
    body = json.dumps({"jsonrpc": "2.0", "id": next(_rpc_ids), "method": method, "params": params or []})
    req = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"})
    try:
        with _NO_PROXY_OPENER.open(req, timeout=timeout) as resp:
            reply = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise AnvilError(f"{method} at {url}: {e}") from e
    if reply.get("error"):
        raise AnvilError(f"{method}: {reply['error']}")
    return reply.get("result")


# ---------------------------------------------------------------------------------------------
# Child processes that die with us
# ---------------------------------------------------------------------------------------------


def _load_prctl():
    """libc's prctl, resolved now (in the parent): the child must not import or load anything."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl() if platform.system() == "Linux" else None
_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    """On Linux: SIGTERM to the child when the parent dies (no orphaned nodes or servers)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def popen_child(cmd: list[str], **kwargs) -> subprocess.Popen:
    """Start a helper process (anvil, facilitator, server) in its own session, tied to our life.

    Its own session: a Ctrl-C in our terminal is ours to handle (we stop the helpers in order).
    Note: PR_SET_PDEATHSIG fires when the *thread* that started the child exits, so start
    long-lived helpers from a thread that outlives them (normally the main thread).
    """
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        start_new_session=True, preexec_fn=_child_setup if _PRCTL is not None else None, **kwargs,
    )


class OutputPump:
    """Reads a child's combined output on a daemon thread; keeps the last lines, offers them as a queue."""

    def __init__(self, proc: subprocess.Popen, keep: int = 400):
        self.lines: list[str] = []
        self.queue: queue.Queue[str | None] = queue.Queue()
        self._keep = keep
        threading.Thread(target=self._run, args=(proc,), daemon=True).start()

    def _run(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            if len(self.lines) > self._keep:
                del self.lines[: len(self.lines) - self._keep]
            self.queue.put(line)
        self.queue.put(None)

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.lines[-n:])


def stop_child(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. Only this one process."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=timeout)


# ---------------------------------------------------------------------------------------------
# anvil
# ---------------------------------------------------------------------------------------------


class Anvil:
    """A running anvil. Use as a context manager, or call :meth:`stop`."""

    def __init__(self, proc: subprocess.Popen, pump: OutputPump, host: str, port: int, chain_id: int):
        self.process = proc
        self._pump = pump
        self.host = host
        self.port = port
        self.chain_id = chain_id

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def network(self) -> str:
        """The CAIP-2 id of this chain, ``eip155:<chain id>``."""
        return f"eip155:{self.chain_id}"

    @property
    def output(self) -> str:
        return self._pump.tail(400)

    # -- JSON-RPC helpers ---------------------------------------------------------------------
    def rpc(self, method: str, *params: Any, timeout: float = 10.0) -> Any:
        return rpc_call(self.url, method, list(params), timeout=timeout)

    def snapshot(self) -> str:
        """``evm_snapshot``: an id to :meth:`revert` to later."""
        return self.rpc("evm_snapshot")

    def revert(self, snapshot_id: str) -> None:
        """``evm_revert``: back to the snapshot (which is used up: take a new one to revert again)."""
        if not self.rpc("evm_revert", snapshot_id):
            raise AnvilError(f"evm_revert({snapshot_id}) refused (unknown or already used snapshot)")

    def mine(self, n: int = 1) -> None:
        """Mine ``n`` blocks now (works with automine off too)."""
        self.rpc("anvil_mine", hex(n))

    def set_automine(self, enabled: bool) -> None:
        """Automine on: each transaction gets its own block at once. Off: blocks only on :meth:`mine`
        (or every ``block_time`` seconds if anvil was started with one)."""
        self.rpc("evm_setAutomine", bool(enabled))

    def increase_time(self, seconds: int) -> None:
        """Move the chain's clock forward (takes effect in the next block)."""
        self.rpc("evm_increaseTime", int(seconds))

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def receipt(self, tx_hash: str) -> dict | None:
        """``eth_getTransactionReceipt`` as plain JSON (None when unknown or not mined)."""
        return self.rpc("eth_getTransactionReceipt", tx_hash)

    def accounts(self) -> list[str]:
        return self.rpc("eth_accounts")

    def w3(self):
        """A web3.py ``Web3`` for this node (proxy environment variables are ignored)."""
        from .chain import make_web3

        return make_web3(self.url)

    # -- life cycle ---------------------------------------------------------------------------
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        stop_child(self.process, timeout)

    def __enter__(self) -> "Anvil":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Anvil {self.url} chain {self.chain_id} {'running' if self.alive() else 'stopped'}>"


def start_anvil(
    chain_id: int = 8453,
    port: int = 0,
    block_time: float | None = None,
    *,
    host: str = "127.0.0.1",
    mnemonic: str = DEFAULT_MNEMONIC,
    accounts: int = 10,
    balance_eth: int = 10_000,
    extra_args: list[str] | tuple[str, ...] = (),
    startup_timeout: float = 20.0,
) -> Anvil:
    """Start anvil on ``host`` (127.0.0.1); returns once JSON-RPC answers with the right chain id.

    ``port=0`` lets anvil pick a free port (read back from its "Listening on" line).
    ``block_time`` (seconds) turns on interval mining in addition to automine.
    The process is killed on :meth:`Anvil.stop`, on leaving the ``with`` block, and if we die.
    """
    tools = ensure_node_tools()
    cmd = [
        str(tools.anvil), "--host", host, "--port", str(port), "--chain-id", str(chain_id),
        "--mnemonic", mnemonic, "--accounts", str(accounts), "--balance", str(balance_eth),
    ]
    if block_time is not None:
        cmd += ["--block-time", str(block_time)]
    cmd += list(extra_args)
    proc = popen_child(cmd)
    pump = OutputPump(proc)
    deadline = time.monotonic() + startup_timeout
    try:
        bound_port = None
        while bound_port is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AnvilError(f"anvil did not report a port within {startup_timeout:.0f} s")
            try:
                line = pump.queue.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                raise AnvilError(f"anvil exited with status {proc.wait()}")
            m = _LISTENING.search(line)
            if m:
                bound_port = int(m.group(2))
        node = Anvil(proc, pump, host, bound_port, chain_id)
        while True:
            try:
                got = int(node.rpc("eth_chainId", timeout=2.0), 16)
                break
            except AnvilError:
                if not node.alive():
                    raise AnvilError(f"anvil exited with status {proc.poll()}")
                if time.monotonic() > deadline:
                    raise AnvilError(f"anvil's JSON-RPC did not answer within {startup_timeout:.0f} s")
                time.sleep(0.05)
        if got != chain_id:
            raise AnvilError(f"anvil reports chain id {got}, wanted {chain_id}")
        return node
    except BaseException as e:
        stop_child(proc)
        if isinstance(e, AnvilError):
            raise AnvilError(f"{e}\n{' '.join(cmd)}\n--- anvil output ---\n{pump.tail()}") from None
        raise
