"""Compile the test bed's Solidity offline with solc-js into committed JSON artifacts.

    .venv/bin/python -m testbed.contracts.build            # rewrite every artifact (TestUSDC.json, ...)
    .venv/bin/python -m testbed.contracts.build --check    # exit 1 if the artifact is stale

The compile is ``solcjs --bin --abi --optimize`` (solc 0.8.37, 200 runs, the compiler's default EVM
version), run inside this directory on the bare file name so that the metadata hash appended to
the bytecode does not depend on where the repository lives. Tests and the stack use the committed
artifact and never compile; a test checks that a rebuild gives the same bytecode.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONTRACTS = {
    "TestUSDC": "TestUSDC.sol",
    "TestWallet": "TestWallet.sol",
    # the x402 batch-settlement (payment channel) contracts, placed at the SDK's addresses by testbed.channels
    "TestChannels": "TestChannels.sol",
    "TestERC3009DepositCollector": "TestChannels.sol",
    "TestPermit2DepositCollector": "TestChannels.sol",
    "TestMulticall3": "TestMulticall3.sol",
    # the x402 auth-capture (escrow) contracts, placed at the npm client's addresses by testbed.auth_capture
    "TestAuthCaptureEscrow": "TestAuthCapture.sol",
    "TestERC3009TokenCollector": "TestAuthCapture.sol",
    "TestOperatorRefundCollector": "TestAuthCapture.sol",
}


def artifact_path(name: str = "TestUSDC") -> Path:
    return HERE / f"{name}.json"


def load_artifact(name: str = "TestUSDC") -> dict:
    """The committed artifact: ``{contractName, sourceFile, sourceSha256, compiler, settings, abi, bytecode}``."""
    return json.loads(artifact_path(name).read_text())


def source_sha256(name: str = "TestUSDC") -> str:
    return hashlib.sha256((HERE / CONTRACTS[name]).read_bytes()).hexdigest()


def compile_contract(name: str = "TestUSDC", *, timeout: float = 180.0) -> dict:
    """Compile ``name`` with solc-js now (installs it from npm if missing) and return the artifact."""
    return compile_contracts([name], timeout=timeout)[name]


def compile_contracts(names: list[str] | None = None, *, timeout: float = 180.0) -> dict[str, dict]:
    """Compile ``names`` (default: all of :data:`CONTRACTS`), each source file once; name -> artifact."""
    from ..node import ensure_node_tools

    solcjs = ensure_node_tools().solcjs
    names = list(CONTRACTS) if names is None else list(names)
    version = subprocess.run([str(solcjs), "--version"], capture_output=True, text=True,
                             timeout=timeout).stdout.strip()
    artifacts: dict[str, dict] = {}
    for source in dict.fromkeys(CONTRACTS[n] for n in names):
        with tempfile.TemporaryDirectory(prefix="testbed-solc-") as out:
            cmd = [str(solcjs), "--bin", "--abi", "--optimize", "--output-dir", out, source]
            done = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, timeout=timeout)
            if done.returncode != 0:
                raise RuntimeError(f"solcjs failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
            for name in (n for n in names if CONTRACTS[n] == source):
                stem = source.replace(".", "_") + "_" + name
                artifacts[name] = {
                    "contractName": name,
                    "sourceFile": source,
                    "sourceSha256": source_sha256(name),
                    "compiler": f"solc-js {version}",
                    "settings": {"optimize": True, "runs": 200},
                    "abi": json.loads((Path(out) / f"{stem}.abi").read_text()),
                    "bytecode": "0x" + (Path(out) / f"{stem}.bin").read_text().strip(),
                }
    return {n: artifacts[n] for n in names}


def write_artifact(artifact: dict) -> Path:
    path = artifact_path(artifact["contractName"])
    path.write_text(json.dumps(artifact, indent=1) + "\n")
    return path


def check_or_write(argv: list[str] | None, description: str, fresh, load, write, module: str) -> int:
    """The command line of a contracts build: write the fresh artifacts (name → artifact), or with
    --check compare them with the committed ones and write nothing."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--check", action="store_true", help="compare with the committed artifacts, write nothing")
    args = ap.parse_args(argv)
    stale = []
    for name, artifact in fresh():
        if args.check:
            try:
                committed = load(name)
            except (OSError, ValueError):
                committed = {}
            if committed != artifact:
                stale.append(name)
        else:
            print(f"wrote {write(artifact)}")
    if stale:
        print(f"stale artifacts: {', '.join(stale)} (run python -m {module})", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return check_or_write(argv, __doc__.splitlines()[0], lambda: compile_contracts().items(),
                          load_artifact, write_artifact, "testbed.contracts.build")


if __name__ == "__main__":
    sys.exit(main())
