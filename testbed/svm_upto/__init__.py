"""x402 ``upto`` on Solana with the real npm SDK: client, resource server and facilitator on the local SVM.

The Python ``x402`` package has no Solana ``upto``; npm's ``@x402/svm`` (2.27.0) has it, as a payment channel:
the client signs an ``open`` transaction of the payment-channels program that escrows the cap (the
*deposit*); the facilitator co-signs and lands it before the handler runs; after the handler, the server
names the actual charge (``setSettlementOverrides``) and signs a voucher for it, and the facilitator lands
``settle_and_seal`` + ``distribute``, which pays the charge to ``pay_to`` and refunds the rest to the payer.
The wire, decoded, is in ``notes/svm-upto-wire.md`` (at the workspace root).

The programs here (``node`` ≥ 20):

- ``facilitator.mjs``: ``x402Facilitator`` + ``UptoSvmScheme`` (facilitator) over HTTP (``/supported``,
  ``/verify``, ``/settle``, ``/settlements``);
- ``server.mjs``: express + ``@x402/express`` ``paymentMiddleware`` + ``UptoSvmScheme`` (server) charging
  each call ``X-Testbed-Charge`` (or ``--charge``) atomic units of a cap;
- ``client.mjs``: ``wrapFetchWithPayment`` + ``UptoSvmScheme`` (client), through an HTTP(S) proxy trusting a CA.

The npm packages are pinned (:data:`NPM_PACKAGES`) and installed on first use into this folder's
``node_modules`` (git-ignored) with ``npm install --no-save --prefix testbed/svm_upto`` — a prefix of their own,
because an ``npm install --no-save`` at the repository root would prune the packages ``scripts/bootstrap``
and :mod:`testbed.node` put there.

The on-chain program: ``upto`` needs the payment-channels program at
``CHNLxYvVA28MJP9PrFuDXccuoGXAx7jBacfLEkahyGsX``, which LiteSVM does not ship and whose binary no package
registry carries (its source is Rust for Solana's own toolchain, not installable here). The test bed loads
``program/payment_channels.so`` there: a C implementation of the instructions the flow uses (``open``,
``settle_and_seal``, ``distribute``, ``reclaim``, the event self-CPI), same wire formats and accounts,
compiled with Debian's clang for BPF and linked by :mod:`testbed.svm_upto.sbf_link`; see
``program/payment_channels.c`` for what it does and does not do like the real one. It runs in the real SVM
with the real System, SPL Token, Associated Token Account and Ed25519 programs.

Usage::

    from testbed.svm_upto import solana_upto_stack

    with solana_upto_stack(cap=10_000) as s:
        call = s.pay(charge=3_000)              # proxy=None: $HTTPS_PROXY; verify: a CA file
        call.status, call.payment_signature, call.payment_response, call.json()
        s.balance(s.payee)                      # 3000: the payee's token account
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..node import NodeToolsError, OutputPump, _install_lock, popen_child, stop_child

HERE = Path(__file__).resolve().parent
NPM_PACKAGES = {
    "@x402/core": "2.27.0",
    "@x402/svm": "2.27.0",
    "@x402/fetch": "2.27.0",
    "@x402/express": "2.27.0",
    "@x402/extensions": "2.27.0",
    "@solana/kit": "5.5.1",
    "express": "5.2.1",
    "undici": "6.29.1",
}
"""What the three programs import, pinned (the SDK's own dependencies come with them)."""

PROGRAM_ID = "CHNLxYvVA28MJP9PrFuDXccuoGXAx7jBacfLEkahyGsX"
"""The payment-channels program @x402/svm's upto scheme calls (devnet and mainnet)."""
PROGRAM_SO = HERE / "program" / "payment_channels.so"
PROGRAM_C = HERE / "program" / "payment_channels.c"
TREASURY_OWNER_DEVNET = "4zTeC5mVqWLruDexgU2mV66p9t5vCA9JyiZqdGDUspap"
"""The owner of the treasury token accounts @x402/svm names for devnet (`distribute` requires its ATA)."""
SOLANA_DEVNET = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"
CHAT_PATH = "/v1/chat/completions"


# --------------------------------------------------------------------------------------------------
# npm packages
# --------------------------------------------------------------------------------------------------

def _installed_version(package: str) -> str | None:
    try:
        return json.loads((HERE / "node_modules" / package / "package.json").read_text()).get("version")
    except (OSError, ValueError):
        return None


def packages_present() -> bool:
    return all(_installed_version(p) == v for p, v in NPM_PACKAGES.items())


def ensure_packages(*, timeout: float = 300.0) -> Path:
    """Install the pinned npm packages into ``testbed/svm_upto/node_modules`` if they are not there;
    returns that folder's parent (where the programs are). Idempotent, concurrent callers wait on a lock."""
    if not packages_present():
        with _install_lock(HERE, timeout):
            if not packages_present():
                npm = shutil.which("npm")
                if npm is None:
                    raise NodeToolsError("npm is not installed (apt-get install -y npm): it fetches the x402 SDK")
                specs = [f"{p}@{v}" for p, v in NPM_PACKAGES.items()]
                cmd = [npm, "install", "--no-save", "--no-audit", "--no-fund", "--loglevel=error",
                       "--prefix", str(HERE), *specs]
                try:
                    done = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, timeout=timeout)
                except subprocess.TimeoutExpired as e:
                    raise NodeToolsError(f"npm install timed out after {timeout:.0f} s") from e
                if done.returncode != 0 or not packages_present():
                    tail = (done.stdout + done.stderr).strip()[-2000:]
                    raise NodeToolsError(f"npm install failed (exit {done.returncode}): {' '.join(cmd)}\n{tail}")
    return HERE


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        raise NodeToolsError("node is not installed (apt-get install -y nodejs)")
    return node


# --------------------------------------------------------------------------------------------------
# the on-chain program
# --------------------------------------------------------------------------------------------------

def build_program(out: Path = PROGRAM_SO, *, clang: str | None = None) -> Path:
    """Compile ``program/payment_channels.c`` (clang, BPF target) and link it (:mod:`.sbf_link`) to ``out``.
    Needs clang (Debian: ``apt-get install clang-14``); the test bed itself loads the committed ``.so``."""
    import tempfile

    from .sbf_link import link

    clang = clang or shutil.which("clang-14") or shutil.which("clang")
    if clang is None:
        raise NodeToolsError("clang is not installed (apt-get install -y clang-14)")
    with tempfile.TemporaryDirectory() as tmp:
        obj = Path(tmp) / "payment_channels.o"
        done = subprocess.run([clang, "-target", "bpfel", "-mcpu=v2", "-O2", "-fno-builtin", "-ffreestanding",
                               "-Wall", "-Wno-unused-function", "-c", str(PROGRAM_C), "-o", str(obj)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise NodeToolsError(f"clang failed on {PROGRAM_C.name}:\n{done.stderr[-4000:]}")
        Path(out).write_bytes(link(obj.read_bytes()))
    return Path(out)


def load_program(node: Any) -> None:
    """Put the payment-channels program (``program/payment_channels.so``) at :data:`PROGRAM_ID` in ``node``
    (a :class:`testbed.solana_node.SolanaNode`)."""
    from solders.pubkey import Pubkey

    with node._lock:
        node.svm.add_program(Pubkey.from_string(PROGRAM_ID), PROGRAM_SO.read_bytes())


# --------------------------------------------------------------------------------------------------
# the Node services
# --------------------------------------------------------------------------------------------------

def _js_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment without proxy variables (the services talk to 127.0.0.1 only) and without a
    NODE_OPTIONS preload, plus ``extra``."""
    drop = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "NODE_OPTIONS", "NODE_USE_ENV_PROXY"}
    env = {k: v for k, v in os.environ.items() if k.upper() not in drop}
    env.update(extra or {})
    return env


def start_js_service(name: str, script: str, args: list[str], *, env: dict[str, str] | None = None,
                     timeout: float = 30.0, tls: bool = False):
    """Run ``node <script> *args`` (a program printing ``{"listening": port, ...}``); returns
    ``(Service, first JSON line)`` once ``/health`` answers."""
    from ..service import Service, ServiceError

    cmd = [node_binary(), str(HERE / script), *args]
    proc = popen_child(cmd, env=_js_env(env), cwd=str(HERE))
    pump = OutputPump(proc)
    deadline = time.monotonic() + timeout
    hello = None
    try:
        while hello is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServiceError(f"{name} did not report its port within {timeout:.0f} s")
            try:
                line = pump.queue.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                raise ServiceError(f"{name} exited with status {proc.wait()}")
            if line.startswith("{") and '"listening"' in line:
                hello = json.loads(line)
    except BaseException as e:
        stop_child(proc)
        time.sleep(0.1)
        raise ServiceError(f"{e}\n{' '.join(cmd)}\n--- {name} output ---\n{pump.tail()}") from None
    scheme = "https" if tls else "http"
    host = "localhost" if tls else "127.0.0.1"
    service = Service(name, proc, pump, f"{scheme}://{host}:{hello['listening']}",
                      probe=f"{scheme}://127.0.0.1:{hello['listening']}/health", cmd=cmd)
    service.wait_ready(timeout)
    return service, hello


# --------------------------------------------------------------------------------------------------
# a paid call
# --------------------------------------------------------------------------------------------------

def decode_header(value: str | None) -> Any:
    """An x402 header (base64 of UTF-8 JSON) as Python data; None stays None."""
    if value is None:
        return None
    raw = value.strip()
    return json.loads(base64.b64decode(raw + "=" * (-len(raw) % 4)).decode("utf-8"))


def _get(headers: list, name: str) -> str | None:
    name = name.lower()
    return next((v for k, v in headers if k.lower() == name), None)


@dataclass
class UptoCall:
    """What a paid call came to (as the npm client saw it): the final response and every exchange."""

    status: int | None
    headers: list[tuple[str, str]]
    body: bytes
    exchanges: list[dict] = field(default_factory=list)
    error: str | None = None
    stderr: str = ""

    def header(self, name: str) -> str | None:
        return _get(self.headers, name)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def challenge(self) -> dict | None:
        """The exchange that got the 402."""
        return next((e for e in self.exchanges if e["status"] == 402), None)

    @property
    def paid(self) -> dict | None:
        """The exchange that carried ``PAYMENT-SIGNATURE``."""
        return next((e for e in reversed(self.exchanges) if _get(e["request_headers"], "PAYMENT-SIGNATURE")), None)

    @property
    def payment_required(self) -> dict | None:
        """Decoded ``PAYMENT-REQUIRED`` of the 402."""
        c = self.challenge
        return decode_header(_get(c["response_headers"], "PAYMENT-REQUIRED")) if c else None

    @property
    def payment_signature(self) -> dict | None:
        """Decoded ``PAYMENT-SIGNATURE`` (holds the payer's signed channel-open transaction)."""
        p = self.paid
        return decode_header(_get(p["request_headers"], "PAYMENT-SIGNATURE")) if p else None

    @property
    def payment_response(self) -> dict | None:
        """Decoded ``PAYMENT-RESPONSE`` of the final response (the claim: charge and its transaction)."""
        return decode_header(self.header("PAYMENT-RESPONSE"))

    @property
    def transaction(self) -> str | None:
        """The settlement's base58 signature."""
        return (self.payment_response or {}).get("transaction")


@dataclass
class SvmUptoStack:
    """The running upto stack (see :func:`solana_upto_stack`). Keys are ``solders`` objects."""

    node: Any                # testbed.solana_node.SolanaNode
    mint: Any                # Pubkey of the 6-decimal test mint (SPL Token)
    mint_authority: Any      # Keypair
    payer: Any               # Keypair: the client's wallet (its token account is funded)
    payee: Any               # Pubkey: the server's payTo (its token account exists)
    fee_payer: Any           # Keypair: the facilitator's fee payer (also the channels' payee and rent payer)
    authorizer: Any          # Keypair: the server's receiver authorizer (signs vouchers)
    network: str
    facilitator_url: str
    server_url: str
    cap: int
    charge: int
    memo: str | None = None
    services: list = field(default_factory=list, repr=False)

    @property
    def rpc_url(self) -> str:
        return self.node.url

    @property
    def chat_url(self) -> str:
        return self.server_url + CHAT_PATH

    @property
    def pay_to(self) -> str:
        return str(self.payee)

    @property
    def program_id(self) -> str:
        return PROGRAM_ID

    def balance(self, owner: Any) -> int:
        """``owner``'s balance of the test mint (a Pubkey, Keypair or base58 string)."""
        from solders.pubkey import Pubkey

        if hasattr(owner, "pubkey"):
            owner = owner.pubkey()
        elif isinstance(owner, str):
            owner = Pubkey.from_string(owner)
        return self.node.token_balance(owner, self.mint)

    def balances(self) -> dict[str, int]:
        """Token balances of the payer, the payee, the fee payer and the treasury."""
        return {"payer": self.balance(self.payer), "payee": self.balance(self.payee),
                "fee_payer": self.balance(self.fee_payer), "treasury": self.balance(TREASURY_OWNER_DEVNET)}

    def token_account(self, owner: Any):
        from ..solana_node import ata_address

        return ata_address(owner.pubkey() if hasattr(owner, "pubkey") else owner, self.mint)

    def pay(self, url: str | None = None, body: Any = None, *, proxy: str | None | bool = None, verify: Any = None,
            charge: int | None = None, payer: Any = None, max_amount: int | None = None,
            headers: dict[str, str] | None = None, timeout: float = 60.0) -> UptoCall:
        """A paid call with the npm client (``client.mjs``). ``proxy``: a URL, None for the environment's
        (``HTTPS_PROXY``/``HTTP_PROXY`` minus ``NO_PROXY``, as :func:`testbed.client.env_proxy`), False for none.
        ``verify``: a CA file the client trusts (default ``$SSL_CERT_FILE`` if set), or False to not verify.
        ``charge``: what the server charges this call (atomic units; default the stack's), sent as
        ``X-Testbed-Charge``."""
        from ..client import env_proxy

        url = url or self.chat_url
        if proxy is None:
            proxy = env_proxy(url)
        if body is None:
            body = {"model": "testbed-echo-1", "messages": [{"role": "user", "content": "hello"}]}
        args = ["--url", url, "--rpc", self.rpc_url, "--mint", str(self.mint), "--network", self.network,
                "--max-amount", str(max_amount if max_amount is not None else self.cap * 100),
                "--body", body if isinstance(body, str) else json.dumps(body), "--timeout", str(timeout)]
        if proxy:
            args += ["--proxy", proxy]
        if verify is False:
            args += ["--insecure"]
        elif verify or os.environ.get("SSL_CERT_FILE"):
            args += ["--ca", str(verify or os.environ["SSL_CERT_FILE"])]
        for k, v in {"X-Testbed-Charge": str(self.charge if charge is None else charge), **(headers or {})}.items():
            args += ["--header", f"{k}: {v}"]
        env = _js_env({"TESTBED_UPTO_PAYER_KEY": str(payer or self.payer)})
        done = subprocess.run([node_binary(), str(HERE / "client.mjs"), *args], cwd=HERE, env=env,
                              capture_output=True, text=True, timeout=timeout + 30)
        try:
            out = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise RuntimeError(f"client.mjs failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}") from None
        return UptoCall(status=out["status"], headers=[tuple(h) for h in out["headers"]],
                        body=base64.b64decode(out["body"] or ""), exchanges=out["exchanges"], error=out["error"],
                        stderr=done.stderr)

    def settlements(self) -> list[dict]:
        """Every /settle answer of the facilitator so far ({requirements, result})."""
        from ..node import _NO_PROXY_OPENER

        with _NO_PROXY_OPENER.open(self.facilitator_url + "/settlements", timeout=10) as r:
            return json.loads(r.read())

    def describe(self) -> dict:
        return {
            "network": self.network, "rpc_url": self.rpc_url, "mint": str(self.mint), "cap": str(self.cap),
            "charge": str(self.charge), "program_id": PROGRAM_ID, "facilitator_url": self.facilitator_url,
            "server_url": self.server_url, "chat_url": self.chat_url,
            "accounts": {
                "payer": {"pubkey": str(self.payer.pubkey()), "keypair": str(self.payer)},
                "payee": {"pubkey": str(self.payee)},
                "fee_payer": {"pubkey": str(self.fee_payer.pubkey()), "keypair": str(self.fee_payer)},
                "authorizer": {"pubkey": str(self.authorizer.pubkey()), "keypair": str(self.authorizer)},
            },
        }


@contextlib.contextmanager
def solana_upto_stack(
    *,
    cap: int = 10_000,
    charge: int = 3_000,
    payer_funds: int = 10 * 10**6,
    fee_payer_lamports: int = 10**9,
    memo: str | None = None,
    network: str = SOLANA_DEVNET,
    node: Any = None,
    tls: dict | None = None,
    max_timeout_seconds: int = 300,
    timeout: float = 60.0,
) -> Iterator[SvmUptoStack]:
    """Start (or use ``node``) a local SVM node with the payment-channels program, a 6-decimal mint, the payer's
    funded token account, the payee's and the treasury's token accounts, then the npm facilitator (fee payer
    with ``fee_payer_lamports``) and the npm resource server asking ``upto`` ``cap`` per call and charging
    ``charge`` (``memo``: the memo the open transaction must carry; default a random one per payment).

    ``tls={"cert":…, "key":…}`` serves the resource server over HTTPS (URL host ``localhost``).
    Everything started here is stopped when the block exits, also on errors.
    """
    from solders.keypair import Keypair
    from solders.pubkey import Pubkey

    from ..solana_node import SolanaNode

    ensure_packages()
    with contextlib.ExitStack() as stack:
        if node is None:
            node = stack.enter_context(SolanaNode())
        load_program(node)
        fee_payer, payer, payee, authority, authorizer = Keypair(), Keypair(), Keypair().pubkey(), Keypair(), Keypair()
        node.airdrop(fee_payer.pubkey(), fee_payer_lamports)
        fac, _ = start_js_service("upto facilitator", "facilitator.mjs", ["--rpc", node.url, "--network", network],
                                  env={"TESTBED_SVM_FEE_PAYER_KEY": str(fee_payer)}, timeout=timeout)
        stack.callback(fac.stop)
        mint = node.create_mint(authority.pubkey(), decimals=6)
        node.mint_to(mint, authority, payer.pubkey(), payer_funds)
        node.create_ata(payee, mint)
        node.create_ata(Pubkey.from_string(TREASURY_OWNER_DEVNET), mint)
        args = ["--facilitator", fac.url, "--rpc", node.url, "--mint", str(mint), "--pay-to", str(payee),
                "--network", network, "--cap", str(cap), "--charge", str(charge), "--path", CHAT_PATH,
                "--max-timeout", str(max_timeout_seconds)]
        if memo:
            args += ["--memo", memo]
        if tls:
            args += ["--tls-cert", str(tls["cert"]), "--tls-key", str(tls["key"])]
        srv, _ = start_js_service("upto server", "server.mjs", args, timeout=timeout, tls=bool(tls),
                                  env={"TESTBED_UPTO_AUTHORIZER_KEY": str(authorizer)})
        stack.callback(srv.stop)
        yield SvmUptoStack(node=node, mint=mint, mint_authority=authority, payer=payer, payee=payee,
                           fee_payer=fee_payer, authorizer=authorizer, network=network, facilitator_url=fac.url,
                           server_url=srv.url, cap=cap, charge=charge, memo=memo, services=[fac, srv])


def main(argv: list[str] | None = None) -> int:
    """``python -m testbed.svm_upto``: start the stack, print where everything is, run until Ctrl-C;
    ``--build-program`` rebuilds ``program/payment_channels.so`` from its C source instead."""
    import argparse
    import signal

    ap = argparse.ArgumentParser(prog="python -m testbed.svm_upto", description=main.__doc__)
    ap.add_argument("--cap", type=int, default=10_000)
    ap.add_argument("--charge", type=int, default=3_000)
    ap.add_argument("--build-program", action="store_true")
    args = ap.parse_args(argv)
    if args.build_program:
        print(build_program())
        return 0
    with solana_upto_stack(cap=args.cap, charge=args.charge) as s:
        print(json.dumps(s.describe(), indent=2), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
            while True:
                signal.pause()
    return 0


__all__ = ["solana_upto_stack", "SvmUptoStack", "UptoCall", "ensure_packages", "build_program", "load_program",
           "PROGRAM_ID", "NPM_PACKAGES"]
