"""The project installed the way a user outside the checkout installs it: a wheel built from the sources,
installed into a fresh virtual environment (from the package cache bootstrap filled: no network), then
`receipts --version`, `receipts doctor` and one recorded call, all run from a folder that is not the
checkout. This is the CI job the README promises for `pip install` / `pipx install` / `uv tool install`.

The proxy is started with the Dockerfile's own command (its CMD, the data volume mapped to a folder here,
and on 127.0.0.1: the tests talk to nothing else): no container runtime runs on this machine, so the
image itself is not built here; what it runs is."""
import json
import shutil
import subprocess
import sys
import zipfile

import requests

from support.proc import BIN, ROOT, ProxyProcess, wait_for

SKIP = shutil.ignore_patterns(".git", ".venv*", "node_modules", "data", "build", "*.egg-info", "__pycache__",
                              "tests", "docs")


def _docker_command() -> list[str]:
    """ENTRYPOINT + CMD of the Dockerfile (exec form)."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    found = {line.split(None, 1)[0]: json.loads(line.split(None, 1)[1]) for line in lines
             if line.startswith(("ENTRYPOINT ", "CMD "))}
    return found["ENTRYPOINT"] + found["CMD"]


def _uv(*args: str, cwd=None) -> subprocess.CompletedProcess:
    out = subprocess.run([str(BIN / "python"), "-m", "uv", *args], capture_output=True, text=True, timeout=300,
                         cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_the_wheel_installs_and_records_outside_the_checkout(tmp_path, tls, upstream):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=SKIP, symlinks=False)  # (the config link becomes the file it names)
    _uv("build", "--wheel", "--offline", "--no-build-isolation", "--python", str(BIN / "python"), "-o", str(tmp_path / "dist"), str(src))
    wheel = next((tmp_path / "dist").glob("receipts_proxy-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    # one namespace: no generic top-level packages, the default settings inside, no test bed
    assert {n.split("/")[0] for n in names if not n.startswith("receipts_proxy-")} == {"receipts"}
    assert {"receipts/mitm_config.yaml", "receipts/storage/views.sql", "receipts/node/preload.cjs",
            "receipts/addon/script.py"} <= set(names)
    assert not any("testbed" in n for n in names)

    venv = tmp_path / "venv"
    _uv("venv", "-q", "--python", sys._base_executable, str(venv))
    _uv("pip", "install", "-q", "--offline", "--python", str(venv / "bin" / "python"), str(wheel))
    home = tmp_path / "elsewhere"
    home.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(venv / "bin" / "receipts"), *args], capture_output=True, text=True, timeout=60,
                              cwd=home)

    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("receipts 0."), version
    doctor = run("doctor")
    installed = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages" / "receipts"
    assert f"ok    settings are valid ({installed / 'mitm_config.yaml'}): 3 network(s), 4 asset(s)" in doctor.stdout
    assert not (home / "data").exists()

    entry, *cmd = _docker_command()
    assert entry == "receipts" and cmd[0] == "proxy"
    as_here = [str(home / "data") if arg == "/data" else arg for arg in cmd[1:]]
    with ProxyProcess(home / "data", *as_here, "--listen-host", "127.0.0.1", "--listen-port", "0",
                      "--seal-interval", "0.1", upstream_ca=tls["ca"], bin_dir=venv / "bin", cwd=home) as proxy:
        answer = requests.post(f"{upstream}/v1/free/chat/completions", json={"model": "gpt-4o-mini", "messages": []},
                               proxies={"https": proxy.url}, verify=proxy.ca, timeout=30)
        assert answer.status_code == 200 and answer.headers["x-receipt-id"]

        def listed():
            out = run("sql", "--json", "SELECT receipt_id, model FROM calls", "--data", str(proxy.data))
            return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() != "[]" else None

        rows = wait_for(listed, timeout=30)
    assert rows == [{"receipt_id": answer.headers["x-receipt-id"], "model": "gpt-4o-mini"}]
