"""`scripts/demo`: the whole story on this machine, then everything it started is stopped.

1. x402: anvil (chain 8453) with a test USDC, the real x402 facilitator and resource server, the
   recorder (`receipts proxy`) in front of them, a few paid calls through it — a normal one, one the
   server fails after being paid, one that fails and is retried — then `receipts verify` after the
   confirmations, and the receipts printed.
2. OpenGradient: two anvil chains ("Base" and the OpenGradient chain), the TEE gateway, the recorder
   in reverse-proxy mode with the registry pin, the real `opengradient` SDK making calls in one session
   (individual, batch and private proofs, one streamed), the session settled, `receipts verify` before
   and after the batch is anchored, and the receipts printed.
"""
from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .stack import paid_stack

BIN = Path(sys.executable).parent
CONFIRMATIONS = 2


def receipts(*args: str) -> str:
    out = subprocess.run([str(BIN / "receipts"), *args], capture_output=True, text=True, timeout=120)
    return out.stdout + out.stderr


def start_proxy(data: Path, config: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([str(BIN / "receipts"), "proxy", "--data", str(data), "--config", str(config),
                             "--listen-port", "0", "--seal-interval", "0.1", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    for line in proc.stdout:
        if m := re.search(r"listening at [\d.]+:(\d+)", line):
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep its pipe drained
            return proc, f"http://127.0.0.1:{m.group(1)}"
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit("demo: the recorder did not start")


def calls(stack, proxy: str) -> dict[str, str]:
    """A handful of paid calls through the recorder; returns label → an id that finds the receipt."""
    chat = lambda text: {"model": "demo-model", "messages": [{"role": "user", "content": text}]}
    found = {}
    ok = stack.pay(body=chat("What is a receipt?"), proxy=proxy)
    found["paid call"] = ok.tx_hash
    broken = stack.pay(body=chat("Fail after payment"), proxy=proxy, headers={"X-Testbed-Fail": "after-settle"})
    found["paid, then the server failed"] = broken.tx_hash
    stack.pay(body=chat("Try twice"), proxy=proxy, headers={"X-Testbed-Fail": "handler"})
    retried = stack.pay(body=chat("Try twice"), proxy=proxy)
    found["failed once, retried"] = retried.tx_hash
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/demo", description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="keep the recorded data here (default: a temporary directory)")
    ap.add_argument("--only", choices=("x402", "og"), help="run one half of the demo")
    args = ap.parse_args(argv)
    data = Path(args.data or tempfile.mkdtemp(prefix="receipts-demo-"))
    if args.only != "og":
        x402_demo(data / "x402")
    if args.only != "x402":
        og_demo(data / "opengradient")
    print("demo: done; everything it started is stopped.")
    return 0


def og_demo(data: Path) -> None:
    from .og_stack import start_og_stack

    print("\ndemo: OpenGradient — starting two anvil chains, the TEE registry, the TEE gateway…", flush=True)
    data.mkdir(parents=True, exist_ok=True)
    with start_og_stack(session_idle=1.0) as og:
        config = data.parent / "opengradient-demo.yaml"
        config.write_text(json.dumps({
            "networks": {"eip155:8453": {"rpc": og.base_url}, "eip155:10740": {"rpc": og.og_url}},
            "assets": [{"network": "eip155:8453", "address": og.chains.opg, "symbol": "OPG", "decimals": 18}],
            "opengradient": {"registry": og.registry, "relay": og.relay, "blob_url": og.blob_url}}))
        proxy, url = start_proxy(data, config, "--reverse", og.url)
        try:
            url = url.replace("http://", "https://")
            print(f"demo: recorder in reverse-proxy mode on {url} (pin enforced); the opengradient SDK calls it…",
                  flush=True)
            og.run_client(url, plan=[{"settlement": "individual"}, {"settlement": "batch", "stream": True},
                                     {"settlement": "private"}])
            og.flush(batches=False)  # now, not when the gateway's idle timer fires: the demo shows one state
            print("demo: session settled on Base; verifying before the batch is anchored…", flush=True)
            print(receipts("verify", "--once", "--config", str(config), "--data", str(data)), end="")
            og.flush()
            print("demo: batch anchored; verifying again…", flush=True)
            print(receipts("verify", "--once", "--config", str(config), "--data", str(data)), end="")
        finally:
            proxy.send_signal(signal.SIGINT)
            proxy.wait(30)
        print("\n" + receipts("list", "--data", str(data)))
        session = receipts("sql", "--csv", "SELECT session_id FROM sessions LIMIT 1", "--data", str(data)).split()[-1]
        print(f"\n=== OpenGradient session {session} ===\n" + receipts("show", session, "--data", str(data)))
    config.unlink(missing_ok=True)


def x402_demo(data: Path) -> None:
    data.mkdir(parents=True, exist_ok=True)
    print("demo: starting anvil, the token, the x402 facilitator and server…", flush=True)
    with paid_stack(chain_id=8453) as stack:
        config = data.parent / f"{data.name}-demo.yaml"
        config.write_text(json.dumps(stack.receipts_config(CONFIRMATIONS)))
        proxy, url = start_proxy(data, config)
        try:
            print(f"demo: recorder on {url}, data in {data}; making paid calls through it…", flush=True)
            found = calls(stack, url)
            time.sleep(0.5)
            print("demo: verifying before the settlements are final…", flush=True)
            print(receipts("verify", "--once", "--config", str(config), "--data", str(data)), end="")
            stack.anvil.mine(CONFIRMATIONS)
            print(f"demo: {CONFIRMATIONS} blocks mined; verifying again…", flush=True)
            print(receipts("verify", "--once", "--config", str(config), "--data", str(data)), end="")
        finally:
            proxy.send_signal(signal.SIGINT)
            proxy.wait(30)
        print("\n" + receipts("list", "--data", str(data)))
        for label, ident in found.items():
            print(f"\n=== {label} ===\n" + receipts("show", ident, "--data", str(data)))
    config.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
