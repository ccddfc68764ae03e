"""The whole OpenGradient test bed in one context manager: two anvil chains, a blob server, the TEE
gateway (registered in the TEE registry) and the real SDK as a client.

    from testbed.og_stack import start_og_stack

    with start_og_stack(session_idle=1.0) as og:
        calls = og.run_client(calls=3, settlement="batch")     # the real opengradient SDK
        og.flush()                                             # settle sessions, flush the batch now
        og.state()["settled_sessions"]

- chains (:mod:`testbed.og_chain`): "Base" (8453: OPG, Permit2, the upto proxy; the payer holds OPG
  and approved Permit2) and the OpenGradient chain (10740: TEE registry, settlement relay)
- a Walrus-like blob server (:mod:`testbed.blobstore`)
- the TEE gateway (:mod:`testbed.og_gateway`, run with ``.venv-og/bin/python``): HTTPS on
  127.0.0.1 with a certificate made for the run, registered in the TEE registry with its signing
  key (``tee_id`` = keccak256 of the DER public key) and that certificate
- :meth:`OgStack.run_client` runs :mod:`testbed.og_client` (``og.LLM.from_url``) with
  ``.venv-og/bin/python`` and returns its JSON lines

Needs ``.venv-og`` (``scripts/bootstrap`` makes it). Only 127.0.0.1 is used. ``python -m
testbed.og_stack`` starts it, prints where everything is (as JSON), and runs until Ctrl-C.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from . import ROOT, og_chain
from .blobstore import BlobStore, start_blobstore
from .chain import DEPLOYER, FACILITATOR, PAYEE, PAYER, DevAccount
from .node import OutputPump, popen_child, stop_child
from .og_chain import OgChains, start_og_chains

OG_PYTHON = ROOT / ".venv-og" / "bin" / "python"
GATEWAY_SCRIPT = ROOT / "testbed" / "og_gateway.py"
CLIENT_SCRIPT = ROOT / "testbed" / "og_client.py"
CHAT_PATH = "/v1/chat/completions"
SESSION_CAP = 100_000_000_000_000_000
"""0.1 OPG, the real gateway's cap per session (the challenge's ``amount``)."""
COST_PER_REQUEST = 100_000_000_000_000
"""0.0001 OPG charged per call against the session (the real gateway's static estimate)."""
REQUEST_HASH_FORMS = ("canonical", "pydantic-2026-02", "body")
"""The gateway's ``request_hash_form`` choices (see :mod:`testbed.og_gateway`)."""


class OgStackError(RuntimeError):
    """The gateway did not start, or a control request failed."""


def og_python() -> Path:
    """``.venv-og/bin/python`` (``scripts/bootstrap`` makes it), or a clear error."""
    if not OG_PYTHON.exists():
        raise OgStackError(f"{OG_PYTHON} is missing: run scripts/bootstrap (it creates .venv-og with opengradient)")
    return OG_PYTHON


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONPATH", None)
    return env


def pinned_context(cert_der: bytes) -> ssl.SSLContext:
    """A TLS client context that trusts exactly the gateway's certificate (by value, like a pin)."""
    ctx = ssl.create_default_context(cadata=ssl.DER_cert_to_PEM_cert(cert_der))
    return ctx


@dataclass
class OgStack:
    chains: OgChains
    blobs: BlobStore
    gateway: subprocess.Popen
    pump: OutputPump
    url: str
    tee_id: str
    public_key_der: bytes
    tls_cert_der: bytes
    spare_tee_id: str
    spare_public_key_der: bytes
    facilitator_address: str
    individual_signer: str
    batch_signer: str
    config: dict
    workdir: str
    payer: DevAccount = PAYER
    payee: DevAccount = PAYEE
    _ctx: ssl.SSLContext | None = field(default=None, repr=False)

    # -- where things are ---------------------------------------------------------------------
    @property
    def chat_url(self) -> str:
        return self.url + CHAT_PATH

    @property
    def base_url(self) -> str:
        return self.chains.base.url

    @property
    def og_url(self) -> str:
        return self.chains.og.url

    @property
    def registry(self) -> str:
        return self.chains.registry

    @property
    def relay(self) -> str:
        return self.chains.relay

    @property
    def blob_url(self) -> str:
        return self.blobs.url

    @property
    def output(self) -> str:
        """The gateway's recent log lines."""
        return self.pump.tail(200)

    def describe(self) -> dict:
        return {
            "gateway_url": self.url, "chat_url": self.chat_url, "tee_id": self.tee_id,
            "tls_cert_der_b64": base64.b64encode(self.tls_cert_der).decode(),
            "public_key_der_b64": base64.b64encode(self.public_key_der).decode(),
            "base_rpc": self.base_url, "og_rpc": self.og_url, "registry": self.registry, "relay": self.relay,
            "opg": self.chains.opg, "permit2": self.chains.permit2, "upto_proxy": self.chains.upto_proxy,
            "blob_url": self.blob_url, "facilitator": self.facilitator_address,
            "individual_signer": self.individual_signer, "batch_signer": self.batch_signer,
            "payer": {"address": self.payer.address, "private_key": self.payer.private_key},
            "payee": self.payee.address, "config": {k: v for k, v in self.config.items() if not k.endswith("_key")},
        }

    # -- control requests (never used by the SDK) ---------------------------------------------
    def _request(self, method: str, path: str, body: Any = None, timeout: float = 60.0) -> Any:
        if self._ctx is None:
            self._ctx = pinned_context(self.tls_cert_der)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=self._ctx))
        try:
            with opener.open(req, timeout=timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            raise OgStackError(f"{method} {path}: HTTP {e.code} {e.read()[:500]!r}") from e

    def faults(self, **spec: Any) -> dict:
        """Faults for the next calls, e.g. ``faults(alter_answer=1)``, ``faults(never_settle_session="next")``;
        see :class:`testbed.og_gateway.Faults`. ``faults(clear=True)`` removes all. Returns what is pending."""
        return self._request("POST", "/_testbed/faults", spec)

    def configure(self, **settings: Any) -> dict:
        """Change gateway settings from now on: ``cost_per_request``, ``session_idle``, ``batch_size``,
        ``batch_idle``, ``batch_max_age``, ``request_hash_form``, ``stream_delay``."""
        return self._request("POST", "/_testbed/config", settings)

    def flush(self, *, sessions: bool = True, batches: bool = True) -> dict:
        """Settle every open session that has a cost, flush the pending batch, and wait for pending
        individual settlements; returns ``{"sessions": [...], "batch": {...} | None}``."""
        return self._request("POST", "/_testbed/flush", {"sessions": sessions, "batches": batches})

    def state(self) -> dict:
        """Sessions, payment settlements, individual and batch settlements and calls, as the gateway sees them."""
        return self._request("GET", "/_testbed/state")

    def wait_for(self, predicate, timeout: float = 15.0, interval: float = 0.1, what: str = "condition") -> Any:
        """Poll :meth:`state` until ``predicate(state)`` is truthy; returns that value."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(self.state())
            if value:
                return value
            if time.monotonic() > deadline:
                raise OgStackError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.output}")
            time.sleep(interval)

    # -- the real SDK --------------------------------------------------------------------------
    def run_client(self, url: str | None = None, *, calls: int = 1, stream: bool = False,
                   settlement: str = "batch", plan: list[dict] | None = None, prompt: str | None = None,
                   model: str | None = None, wire: bool = True, private_key: str | None = None,
                   timeout: float = 120.0) -> list[dict]:
        """Run :mod:`testbed.og_client` (the opengradient SDK) against ``url`` (default: the gateway;
        pass the recorder's reverse-proxy URL to go through it); returns one dict per call."""
        cmd = [str(og_python()), str(CLIENT_SCRIPT), "--url", url or self.url, "--calls", str(calls),
               "--settlement", settlement, "--base-rpc", self.base_url]
        if stream:
            cmd.append("--stream")
        if plan is not None:
            cmd += ["--plan", json.dumps(plan)]
        if prompt:
            cmd += ["--prompt", prompt]
        if model:
            cmd += ["--model", model]
        if wire:
            cmd.append("--wire")
        env = _child_env()
        env["OG_TESTBED_PRIVATE_KEY"] = private_key or self.payer.private_key
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT,
                              stdin=subprocess.DEVNULL)
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            raise OgStackError(f"og_client exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return lines

    # -- life cycle ----------------------------------------------------------------------------
    def alive(self) -> bool:
        return self.gateway.poll() is None

    def stop(self) -> None:
        stop_child(self.gateway)


def _wait_ready(proc: subprocess.Popen, pump: OutputPump, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise OgStackError(f"the gateway did not start within {timeout:.0f} s\n{pump.tail()}")
        try:
            line = pump.queue.get(timeout=min(left, 0.5))
        except queue.Empty:
            continue
        if line is None:
            raise OgStackError(f"the gateway exited with status {proc.wait()}\n{pump.tail()}")
        if line.startswith("OG_GATEWAY_READY "):
            return json.loads(line.split(" ", 1)[1])


@contextlib.contextmanager
def start_og_stack(
    *,
    session_idle: float = 1.0,
    reaper_interval: float = 0.2,
    cost_per_request: int = COST_PER_REQUEST,
    cap: int = SESSION_CAP,
    batch_size: int = 20,
    batch_idle: float = 300.0,
    batch_max_age: float = 900.0,
    request_hash_form: str = "canonical",
    stream_delay: float = 0.0,
    payer_funds: int = og_chain.DEFAULT_OPG_FUNDS,
    register: bool = True,
    verbose: bool = False,
    timeout: float = 60.0,
) -> Iterator[OgStack]:
    """Start everything; stop everything (also on errors) when the block exits.

    ``session_idle``: seconds an upto session may stay idle before the gateway settles it (the real
    gateway: 100). ``batch_size`` / ``batch_idle`` / ``batch_max_age``: when the batch of proof
    leaves is flushed (the real facilitator: 20 items, 5 min idle, 15 min age).
    ``request_hash_form``: which canonical request the gateway hashes (:data:`REQUEST_HASH_FORMS`).
    ``register=False`` leaves the TEE out of the registry (its individual settlements then revert).
    """
    if request_hash_form not in REQUEST_HASH_FORMS:
        raise ValueError(f"request_hash_form must be one of {REQUEST_HASH_FORMS}")
    python = og_python()
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="og-stack-"))
        chains = stack.enter_context(start_og_chains(payer_funds=payer_funds))
        blobs = stack.enter_context(start_blobstore())
        config = {
            "host": "127.0.0.1", "port": 0, "workdir": workdir,
            "base_rpc": chains.base.url, "og_rpc": chains.og.url, "relay": chains.relay, "blob_url": blobs.url,
            "asset": chains.opg, "pay_to": PAYEE.address, "cap": str(cap), "cost_per_request": str(cost_per_request),
            # the relay lets its admin (the deployer) and the facilitator settle: one signs individual
            # settlements, the other batches (the real facilitator also uses two keys)
            "facilitator_key": FACILITATOR.private_key, "individual_key": DEPLOYER.private_key,
            "batch_key": FACILITATOR.private_key,
            "session_idle": session_idle, "reaper_interval": reaper_interval, "batch_size": batch_size,
            "batch_idle": batch_idle, "batch_max_age": batch_max_age, "request_hash_form": request_hash_form,
            "stream_delay": stream_delay, "verbose": verbose,
        }
        config_path = Path(workdir) / "gateway.json"
        config_path.write_text(json.dumps(config))
        proc = popen_child([str(python), str(GATEWAY_SCRIPT), "--config", str(config_path)], env=_child_env(),
                           cwd=ROOT)
        stack.callback(stop_child, proc)
        pump = OutputPump(proc)
        ready = _wait_ready(proc, pump, timeout)
        url = f"https://127.0.0.1:{ready['port']}"
        public_der = base64.b64decode(ready["public_key_der"])
        cert_der = base64.b64decode(ready["tls_cert_der"])
        if register:
            tee_id = og_chain.register_tee(chains.og.url, chains.registry, public_der, cert_der, url, PAYEE)
            if tee_id != ready["tee_id"]:
                raise OgStackError(f"registry tee id {tee_id} != gateway tee id {ready['tee_id']}")
        og = OgStack(
            chains=chains, blobs=blobs, gateway=proc, pump=pump, url=url, tee_id=ready["tee_id"],
            public_key_der=public_der, tls_cert_der=cert_der, spare_tee_id=ready["spare_tee_id"],
            spare_public_key_der=base64.b64decode(ready["spare_public_key_der"]),
            facilitator_address=ready["facilitator"], individual_signer=ready["individual_signer"],
            batch_signer=ready["batch_signer"], config=config, workdir=workdir)
        deadline = time.monotonic() + timeout
        while True:
            try:
                og._request("GET", "/health", timeout=2)
                break
            except (OgStackError, OSError) as e:
                if not og.alive() or time.monotonic() > deadline:
                    raise OgStackError(f"the gateway does not answer: {e}\n{pump.tail()}") from None
                time.sleep(0.05)
        yield og


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m testbed.og_stack", description="run the OpenGradient test bed")
    ap.add_argument("--session-idle", type=float, default=5.0)
    ap.add_argument("--batch-idle", type=float, default=10.0)
    ap.add_argument("--request-hash-form", default="canonical", choices=REQUEST_HASH_FORMS)
    args = ap.parse_args(argv)
    with start_og_stack(session_idle=args.session_idle, batch_idle=args.batch_idle,
                        request_hash_form=args.request_hash_form) as og:
        print(json.dumps(og.describe(), indent=2), flush=True)
        signal.signal(signal.SIGTERM, _interrupt)
        with contextlib.suppress(KeyboardInterrupt):
            while og.alive():
                time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
