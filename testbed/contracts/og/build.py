"""Compile the OpenGradient test bed's Solidity offline with solc-js into committed JSON artifacts.

    .venv/bin/python -m testbed.contracts.og.build            # rewrite the *.json artifacts
    .venv/bin/python -m testbed.contracts.og.build --check    # exit 1 if an artifact is stale

One ``solcjs --standard-json`` run over all the sources (solc 0.8.37, optimizer on, 200 runs, the
compiler's default EVM version). Sources are given by bare file name and content, so the metadata
hash at the end of the bytecode does not depend on where the repository lives. Each artifact holds
the ``bytecode`` (creation code, for a normal deployment) and the ``deployedBytecode`` (runtime code,
for ``anvil_setCode`` at a fixed address: the token, Permit2 and the upto proxy have no constructor
and no immutables for that reason). Tests and the chains use the committed artifacts; a test checks
that a rebuild gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONTRACTS = {
    "TestOPG": "TestOPG.sol",
    "TestPermit2": "TestPermit2.sol",
    "TestUptoPermit2Proxy": "TestUptoPermit2Proxy.sol",
    "TestTEERegistry": "TestTEERegistry.sol",
    "TestSettlementRelay": "TestSettlementRelay.sol",
}
SETTINGS = {"optimize": True, "runs": 200}


def artifact_path(name: str) -> Path:
    return HERE / f"{name}.json"


def load_artifact(name: str) -> dict:
    """The committed artifact: ``{contractName, sourceFile, sourceSha256, compiler, settings, abi,
    bytecode, deployedBytecode}``."""
    return json.loads(artifact_path(name).read_text())


def source_sha256(name: str) -> str:
    return hashlib.sha256((HERE / CONTRACTS[name]).read_bytes()).hexdigest()


def compile_all(*, timeout: float = 300.0) -> dict[str, dict]:
    """Compile every contract now (installs solc-js from npm if missing); returns name -> artifact."""
    from ...node import ensure_node_tools

    solcjs = ensure_node_tools().solcjs
    sources = sorted(set(CONTRACTS.values()))
    request = {
        "language": "Solidity",
        "sources": {f: {"content": (HERE / f).read_text()} for f in sources},
        "settings": {
            "optimizer": {"enabled": SETTINGS["optimize"], "runs": SETTINGS["runs"]},
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
        },
    }
    # stdout goes to a file: node may exit before a pipe has taken all of a large output (it did
    # here at 64 KiB), while writes to a file are synchronous. solc-js may print a note line first.
    with tempfile.TemporaryFile("w+") as stdout:
        done = subprocess.run([str(solcjs), "--standard-json"], cwd=HERE, input=json.dumps(request),
                              stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=timeout)
        stdout.seek(0)
        text = stdout.read()
    try:
        out = json.loads(text[text.index("{"):])
    except ValueError as e:
        raise RuntimeError(f"solcjs failed (exit {done.returncode}):\n{text[-4000:]}{done.stderr}") from e
    errors = [e for e in out.get("errors", []) if e.get("severity") == "error"]
    if done.returncode != 0 or errors:
        text = "\n".join(e.get("formattedMessage", str(e)) for e in errors) or done.stderr
        raise RuntimeError(f"solcjs failed (exit {done.returncode}):\n{text}")
    version = subprocess.run([str(solcjs), "--version"], capture_output=True, text=True,
                             timeout=timeout).stdout.strip()
    artifacts = {}
    for name, source in CONTRACTS.items():
        compiled = out["contracts"][source][name]
        artifacts[name] = {
            "contractName": name,
            "sourceFile": source,
            "sourceSha256": source_sha256(name),
            "compiler": f"solc-js {version}",
            "settings": dict(SETTINGS),
            "abi": compiled["abi"],
            "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
            "deployedBytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
        }
    return artifacts


def write_artifact(artifact: dict) -> Path:
    path = artifact_path(artifact["contractName"])
    path.write_text(json.dumps(artifact, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    from testbed.contracts.build import check_or_write

    return check_or_write(argv, __doc__.splitlines()[0], lambda: compile_all().items(), load_artifact,
                          write_artifact, "testbed.contracts.og.build")


if __name__ == "__main__":
    sys.exit(main())
