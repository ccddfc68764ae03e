"""OpenGradient's confidential inference over Oblivious HTTP, in the test bed: the real SDK's
``og.ConfidentialLLM`` → an HTTPS relay (:mod:`testbed.og_relay`, pays with x402) → the TEE gateway's
``POST /v1/ohttp`` (:mod:`testbed.og_gateway` + :mod:`testbed.og_ohttp`).

    from testbed.og_ohttp_bed import start_og_ohttp_bed

    with start_og_ohttp_bed() as bed:                     # or start_og_ohttp_bed(og) to reuse an OgStack
        lines = bed.run_client(plan=[{"stream": False}, {"stream": True}])   # the real SDK, one dict a call
        bed.relay_state()["calls"]                        # what the relay got, sent (each exchange) and answered
        bed.gateway_log()                                 # what the gateway's /v1/ohttp got and answered
        bed.og.flush(); bed.og.state()["settled_sessions"]   # the relay's upto session, settled on "Base"

What it adds to :func:`testbed.og_stack.start_og_stack`:

- the gateway's X25519 key (``GET /v1/ohttp/config``) is put in the registry's ``ohttpConfig`` for its TEE
  (:func:`testbed.og_chain.set_ohttp_config`, from the TEE's owner), so the SDK discovers it on chain
- the relay pays from its own account, :data:`RELAY_PAYER` (anvil dev account 5), given OPG with
  Permit2 approved; it accepts ``Authorization: Bearer <token>`` (:data:`DEFAULT_TOKEN`)
- the relay serves HTTPS on 127.0.0.1 with a certificate made for the run (``relay_ca``, a PEM file);
  ``upstream_ca`` holds the relay's and the gateway's certificates (for a recorder's ``--upstream-ca``)

Proxies: the relay's paid call to the gateway goes through ``HTTPS_PROXY`` when ``relay_env`` gives one
(with the CA in ``SSL_CERT_FILE``/``REQUESTS_CA_BUNDLE``), or from when :meth:`OhttpBed.relay_configure`
sets ``proxy``/``ca``; the client's calls to the relay go through the proxy named in ``run_client(env=…)``.
With neither, nothing goes through a proxy (the test runner's own proxy variables are not passed on).
Only 127.0.0.1 is used.
"""

from __future__ import annotations

import base64
import contextlib
import json
import queue
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from . import ROOT, og_chain
from .chain import DevAccount
from .node import OutputPump, popen_child, stop_child
from .og_stack import OgStack, OgStackError, _child_env, og_python, start_og_stack

RELAY_SCRIPT = ROOT / "testbed" / "og_relay.py"
CLIENT_SCRIPT = ROOT / "testbed" / "og_ohttp_client.py"
RELAY_PATH = "/api/v1/chat/ohttp"
"""Where ``og.ConfidentialLLM`` posts (it appends this to the relay's base URL)."""
GATEWAY_OHTTP_PATH = "/v1/ohttp"
DEFAULT_TOKEN = "og-testbed-relay-token"
RELAY_FUNDS = 100 * 10**18
RELAY_PAYER = DevAccount("relay", 5, "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc",
                         "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba")
"""The relay's x402 account: anvil's dev account 5 (a publicly known key, for local chains only)."""
_PROXY_NAMES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
_CA_NAMES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@dataclass
class OhttpBed:
    og: OgStack
    relay: subprocess.Popen
    pump: OutputPump
    relay_url: str
    """The relay's base URL, ``https://127.0.0.1:PORT`` (what ``og.ConfidentialLLM`` is given)."""
    relay_cert_der: bytes
    relay_ca: str
    """The relay's certificate as a PEM file (a client that goes direct trusts it)."""
    gateway_ca: str
    """The gateway's certificate as a PEM file."""
    upstream_ca: str
    """Both certificates in one PEM file."""
    token: str
    payer: DevAccount
    ohttp_config: dict
    """The gateway's ``GET /v1/ohttp/config``: key_id, kem_id, kdf_id, aead_id, public_key and key_config (hex)."""
    workdir: str

    # -- where things are ----------------------------------------------------------------------
    @property
    def chat_url(self) -> str:
        """``{relay}/api/v1/chat/ohttp``"""
        return self.relay_url + RELAY_PATH

    @property
    def gateway_ohttp_url(self) -> str:
        return self.og.url + GATEWAY_OHTTP_PATH

    @property
    def output(self) -> str:
        """The relay's recent log lines."""
        return self.pump.tail(200)

    def describe(self) -> dict:
        return {"relay_url": self.relay_url, "chat_url": self.chat_url, "gateway_ohttp_url": self.gateway_ohttp_url,
                "tee_id": self.og.tee_id, "token": self.token, "relay_payer": self.payer.address,
                "relay_ca": self.relay_ca, "gateway_ca": self.gateway_ca, "upstream_ca": self.upstream_ca,
                "ohttp_config": self.ohttp_config, "og": self.og.describe()}

    # -- control requests ----------------------------------------------------------------------
    def _relay_request(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        ctx = ssl.create_default_context(cafile=self.relay_ca)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.relay_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
        try:
            with opener.open(req, timeout=timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            raise OgStackError(f"relay {method} {path}: HTTP {e.code} {e.read()[:500]!r}") from e

    def relay_state(self) -> dict:
        """``{address, settlement_type, proxy_override, env_proxies, ca, calls: [...]}``; each call has
        ``client_headers``, ``tee_id``, ``request_sha256``/``request_length``, ``outbound`` (each exchange
        with the gateway: url, headers, ``body_sha256``, status, response_headers), ``upstream_*`` (status,
        content type, headers, sha256, length of the gateway's answer), ``downstream_sha256``/``_length``
        (what went to the client), ``billing`` and ``stripped_bytes`` (streams), ``status``, ``error``."""
        return self._relay_request("GET", "/_testbed/state")

    def relay_configure(self, **settings: Any) -> dict:
        """``proxy`` (URL; ``""`` none; ``None`` back to the environment's), ``ca`` (a PEM file),
        ``settlement_type``, ``tokens``. A new proxy or CA makes a new outbound client (a new upto session)."""
        return self._relay_request("POST", "/_testbed/config", settings)

    def gateway_log(self) -> list[dict]:
        """What the gateway's ``/v1/ohttp`` got and answered: ``request_sha256``/``_length``, ``headers``,
        ``session_id``, ``decapsulated``, ``inner_request``, ``stream``, ``status``, ``response_content_type``,
        ``response_sha256``/``_length``, ``cost``, ``chunks``, ``billing_frame``, ``call_n`` (its entry in
        ``og.state()["calls"]``)."""
        return self.og._request("GET", "/_testbed/ohttp")["calls"]

    def gateway_settings(self, **settings: Any) -> dict:
        """``billing_frame`` (bool), ``opg_price_usd``, ``corrupt_response`` (a count of answers to spoil)."""
        return self.og._request("POST", "/_testbed/ohttp", settings)

    def relay_opg_balance(self) -> int:
        return og_chain.opg_balance(self.og.base_url, self.payer.address)

    # -- the real SDK --------------------------------------------------------------------------
    def run_client(self, *, calls: int = 1, stream: bool = False, plan: list[dict] | None = None,
                   prompt: str | None = None, model: str | None = None, env: dict | None = None,
                   ca: str | bool | None = None, token: str | None = None, relay_url: str | None = None,
                   strict: bool = False, timeout: float = 120.0) -> list[dict]:
        """Run :mod:`testbed.og_ohttp_client` (``og.ConfidentialLLM``) with ``.venv-og/bin/python``; returns one
        dict per call. ``env``: added to the client's environment (e.g. a recorder's ``client_env()``: its
        ``HTTPS_PROXY`` and CA). ``ca``: the client's CA bundle; default the relay's certificate unless
        ``env`` names a CA; ``False``: none given. ``token``: default the bed's."""
        cmd = [str(og_python()), str(CLIENT_SCRIPT), "--relay", relay_url or self.relay_url, "--rpc", self.og.og_url,
               "--registry", self.og.registry, "--token", token or self.token, "--calls", str(calls)]
        if stream:
            cmd.append("--stream")
        if plan is not None:
            cmd += ["--plan", json.dumps(plan)]
        if prompt:
            cmd += ["--prompt", prompt]
        if model:
            cmd += ["--model", model]
        if strict:
            cmd.append("--strict")
        child_env = _env_with(env)
        if ca is None and not any((env or {}).get(k) for k in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")):
            ca = self.relay_ca
        if ca:
            cmd += ["--ca", str(ca)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env, cwd=ROOT,
                              stdin=subprocess.DEVNULL)
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            raise OgStackError(f"og_ohttp_client exited {done.returncode}\n{done.stdout[-3000:]}\n"
                               f"{done.stderr[-3000:]}\nrelay:\n{self.output[-3000:]}")
        return lines

    # -- life cycle ----------------------------------------------------------------------------
    def alive(self) -> bool:
        return self.relay.poll() is None

    def stop(self) -> None:
        stop_child(self.relay)


def _env_with(extra: dict | None) -> dict[str, str]:
    """The bed's child environment (no proxy, no CA bundle variables) plus ``extra``; when ``extra`` names a
    proxy, the bed's own ``NO_PROXY=127.0.0.1`` is dropped (everything here is on 127.0.0.1)."""
    env = {k: v for k, v in _child_env().items() if k not in _CA_NAMES}
    extra = {k: str(v) for k, v in (extra or {}).items()}
    if any(k.lower() in _PROXY_NAMES[:3] and v for k, v in extra.items()):
        for k in [k for k in env if k.lower() == "no_proxy"]:
            del env[k]
    env.update(extra)
    return env


def _pem(der: bytes) -> str:
    return ssl.DER_cert_to_PEM_cert(der)


def _wait_line(proc: subprocess.Popen, pump: OutputPump, prefix: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise OgStackError(f"the relay did not start within {timeout:.0f} s\n{pump.tail()}")
        try:
            line = pump.queue.get(timeout=min(left, 0.5))
        except queue.Empty:
            continue
        if line is None:
            raise OgStackError(f"the relay exited with status {proc.wait()}\n{pump.tail()}")
        if line.startswith(prefix):
            return json.loads(line.split(" ", 1)[1])


def register_ohttp_config(og: OgStack) -> dict:
    """Read the gateway's ``GET /v1/ohttp/config`` and put it in the registry's ``ohttpConfig`` of its TEE."""
    cfg = og._request("GET", "/v1/ohttp/config")
    og_chain.set_ohttp_config(og.og_url, og.registry, og.tee_id, key_id=cfg["key_id"], kem_id=cfg["kem_id"],
                              kdf_id=cfg["kdf_id"], aead_id=cfg["aead_id"], public_key=bytes.fromhex(cfg["public_key"]),
                              key_config=bytes.fromhex(cfg["key_config"]))
    return cfg


@contextlib.contextmanager
def start_og_ohttp_bed(og: OgStack | None = None, *, relay_env: dict | None = None, token: str = DEFAULT_TOKEN,
                       relay_funds: int = RELAY_FUNDS, settlement_type: str = "private", verbose: bool = False,
                       timeout: float = 60.0, **og_stack_settings: Any) -> Iterator[OhttpBed]:
    """Start the relay (and, without ``og``, an OpenGradient bed with ``og_stack_settings``), register the
    gateway's OHTTP key, fund the relay's account; stop what was started here when the block exits.

    ``relay_env``: added to the relay's environment (``HTTPS_PROXY``, ``SSL_CERT_FILE``…: its paid call to
    the gateway then goes through that proxy). ``settlement_type``: the ``X-SETTLEMENT-TYPE`` the relay
    sends (``private``: no proof anchoring, the gateway's answer being ciphertext to the payment layer)."""
    with contextlib.ExitStack() as stack:
        if og is None:
            og = stack.enter_context(start_og_stack(**og_stack_settings))
        ohttp_config = register_ohttp_config(og)
        if relay_funds:
            og_chain.fund_opg(og.base_url, RELAY_PAYER, relay_funds)
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="og-ohttp-"))
        gateway_ca = Path(workdir) / "gateway-cert.pem"
        gateway_ca.write_text(_pem(og.tls_cert_der))
        config = {"host": "127.0.0.1", "port": 0, "workdir": workdir, "og_rpc": og.og_url, "registry": og.registry,
                  "base_rpc": og.base_url, "private_key": RELAY_PAYER.private_key, "tokens": [token],
                  "settlement_type": settlement_type, "verbose": verbose}
        config_path = Path(workdir) / "relay.json"
        config_path.write_text(json.dumps(config))
        proc = popen_child([str(og_python()), str(RELAY_SCRIPT), "--config", str(config_path)],
                           env=_env_with(relay_env), cwd=ROOT)
        stack.callback(stop_child, proc)
        pump = OutputPump(proc)
        ready = _wait_line(proc, pump, "OG_RELAY_READY ", timeout)
        cert_der = base64.b64decode(ready["tls_cert_der"])
        relay_ca = Path(workdir) / "relay-ca.pem"
        relay_ca.write_text(_pem(cert_der))
        upstream_ca = Path(workdir) / "upstream-ca.pem"
        upstream_ca.write_text(_pem(cert_der) + _pem(og.tls_cert_der))
        bed = OhttpBed(og=og, relay=proc, pump=pump, relay_url=f"https://127.0.0.1:{ready['port']}",
                       relay_cert_der=cert_der, relay_ca=str(relay_ca), gateway_ca=str(gateway_ca),
                       upstream_ca=str(upstream_ca), token=token, payer=RELAY_PAYER, ohttp_config=ohttp_config,
                       workdir=workdir)
        deadline = time.monotonic() + timeout
        while True:
            try:
                bed._relay_request("GET", "/health", timeout=2)
                break
            except (OgStackError, OSError) as e:
                if not bed.alive() or time.monotonic() > deadline:
                    raise OgStackError(f"the relay does not answer: {e}\n{pump.tail()}") from None
                time.sleep(0.05)
        yield bed


def main(argv: list[str] | None = None) -> int:
    """``python -m testbed.og_ohttp_bed``: start the bed, print where everything is, run until Ctrl-C."""
    import signal

    from .og_stack import _interrupt

    with start_og_ohttp_bed(session_idle=5.0, batch_idle=10.0) as bed:
        print(json.dumps(bed.describe(), indent=2), flush=True)
        signal.signal(signal.SIGTERM, _interrupt)
        with contextlib.suppress(KeyboardInterrupt):
            while bed.alive() and bed.og.alive():
                time.sleep(0.5)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
