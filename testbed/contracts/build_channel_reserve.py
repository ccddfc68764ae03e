"""Compile the MPP session bed's channel reserve (``TestChannelReserve.sol``) with solc-js into its committed
JSON artifact.

    .venv/bin/python -m testbed.contracts.build_channel_reserve            # rewrite TestChannelReserve.json
    .venv/bin/python -m testbed.contracts.build_channel_reserve --check    # exit 1 if the artifact is stale

One ``solcjs --standard-json`` run (solc 0.8.37 from :mod:`testbed.node`, optimizer on, 200 runs, EVM version
``cancun``: anvil's Tempo mode runs it; the source is given by bare file name and content, so the metadata hash
does not depend on where the repository lives). The artifact holds ``deployedBytecode``, the runtime code that
:mod:`testbed.mpp_session` puts at the TIP-1034 precompile's address with ``anvil_setCode`` (the contract has
no constructor, no immutables and no state to set up). Tests use the committed artifact and never compile.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from .build import check_or_write

HERE = Path(__file__).resolve().parent
NAME = "TestChannelReserve"
SOURCE = "TestChannelReserve.sol"
SETTINGS = {"optimize": True, "runs": 200, "evmVersion": "cancun"}


def artifact_path(name: str = NAME) -> Path:
    return HERE / f"{name}.json"


def load_artifact(name: str = NAME) -> dict:
    """``{contractName, sourceFile, sourceSha256, compiler, settings, abi, bytecode, deployedBytecode}``."""
    return json.loads(artifact_path(name).read_text())


def source_sha256() -> str:
    return hashlib.sha256((HERE / SOURCE).read_bytes()).hexdigest()


def compile_reserve(*, timeout: float = 300.0, source_text: str | None = None) -> dict:
    """Compile now (installs solc-js from npm if missing); returns the artifact. ``source_text`` compiles
    other source under the same file name (a test uses it to check that a broken signature check is caught)."""
    from ..node import ensure_node_tools

    solcjs = ensure_node_tools().solcjs
    text = source_text if source_text is not None else (HERE / SOURCE).read_text()
    request = {
        "language": "Solidity",
        "sources": {SOURCE: {"content": text}},
        "settings": {
            "optimizer": {"enabled": SETTINGS["optimize"], "runs": SETTINGS["runs"]},
            "evmVersion": SETTINGS["evmVersion"],
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
        },
    }
    with tempfile.TemporaryFile("w+") as stdout:  # a file, not a pipe: node may exit before a pipe drains
        done = subprocess.run([str(solcjs), "--standard-json"], cwd=HERE, input=json.dumps(request),
                              stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=timeout)
        stdout.seek(0)
        out_text = stdout.read()
    try:
        out = json.loads(out_text[out_text.index("{"):])
    except ValueError as e:
        raise RuntimeError(f"solcjs failed (exit {done.returncode}):\n{out_text[-4000:]}{done.stderr}") from e
    errors = [e for e in out.get("errors", []) if e.get("severity") == "error"]
    if done.returncode != 0 or errors:
        msg = "\n".join(e.get("formattedMessage", str(e)) for e in errors) or done.stderr
        raise RuntimeError(f"solcjs failed (exit {done.returncode}):\n{msg}")
    version = subprocess.run([str(solcjs), "--version"], capture_output=True, text=True,
                             timeout=timeout).stdout.strip()
    c = out["contracts"][SOURCE][NAME]
    return {
        "contractName": NAME,
        "sourceFile": SOURCE,
        "sourceSha256": hashlib.sha256(text.encode()).hexdigest(),
        "compiler": f"solc-js {version}",
        "settings": SETTINGS,
        "abi": c["abi"],
        "bytecode": "0x" + c["evm"]["bytecode"]["object"],
        "deployedBytecode": "0x" + c["evm"]["deployedBytecode"]["object"],
    }


def write_artifact(artifact: dict) -> Path:
    path = artifact_path(artifact["contractName"])
    path.write_text(json.dumps(artifact, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    return check_or_write(argv, __doc__.splitlines()[0], lambda: [(NAME, compile_reserve())], load_artifact,
                          write_artifact, "testbed.contracts.build_channel_reserve")


if __name__ == "__main__":
    sys.exit(main())
