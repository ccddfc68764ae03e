"""The rest of the shell keeps working: in a shell set up by `eval "$(receipts env)"`, HTTPS to a host the
capture rules cannot match passes through the proxy as TLS, unopened: pip (trusting the shell's bundle)
and git with its own trust store (`http.sslCAInfo`) still reach and verify the real server. The AI host is opened and
recorded. With `--intercept all` the same clients fail: the proxy's certificate is not the server's.

The non-AI server is a local HTTPS file server (127.0.0.1) holding a package index with one wheel and a
bare git repository served the "dumb" HTTP way; the AI upstream is the test upstream at `localhost`."""
import functools
import http.server
import json
import os
import ssl
import subprocess
import sys
import threading
import zipfile

import pytest

from support.proc import BIN, ProxyProcess, receipts_cli, wait_for


def _wheel(folder) -> str:
    name = "tinypkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(folder / name, "w") as z:
        z.writestr("tinypkg/__init__.py", "")
        z.writestr("tinypkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n")
        z.writestr("tinypkg-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                   "Tag: py3-none-any\n")
        z.writestr("tinypkg-1.0.dist-info/RECORD", "")
    return name


@pytest.fixture(scope="module")
def files_host(tls, tmp_path_factory):
    """https://127.0.0.1:PORT: /simple/tinypkg/ (an index with a wheel) and /repo.git (dumb HTTP)."""
    root = tmp_path_factory.mktemp("files")
    (root / "simple" / "tinypkg").mkdir(parents=True)
    wheel = _wheel(root)
    (root / "simple" / "tinypkg" / "index.html").write_text(f'<a href="/{wheel}">{wheel}</a>')
    work = root / "work"
    for cmd in (["git", "init", "-q", str(work)],
                ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                 "--allow-empty", "-m", "first"],
                ["git", "clone", "-q", "--bare", str(work), str(root / "repo.git")],
                ["git", "-C", str(root / "repo.git"), "update-server-info"]):
        subprocess.run(cmd, check=True, capture_output=True)
    head = subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls["cert"], tls["key"])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"url": f"https://127.0.0.1:{server.server_address[1]}", "head": head}
    server.shutdown()


def _shell_env(proxy) -> dict:
    # the user's shell: nothing of the proxy's, nor this machine's own pip/git CA settings
    drop = {*proxy.client_env(), "PIP_CERT", "PIP_FIND_LINKS", "GIT_SSL_CAINFO", "NODE_OPTIONS"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _clients(proxy, files_host, tls, tmp_path, upstream) -> subprocess.CompletedProcess:
    """pip download, git ls-remote and one AI call (curl), in a shell set up by the pasted line. The
    machine's own roots trust the file server (as a real machine's trust pypi.org): SSL_CERT_FILE names
    them before the line runs, and git has them as its own store (http.sslCAInfo)."""
    from receipts import env

    roots = tmp_path / "machine-roots.pem"
    roots.write_bytes(env.system_roots().read_bytes() + open(tls["ca"], "rb").read())
    script = f"""
export SSL_CERT_FILE={roots}
eval "$({BIN / 'receipts'} env --data {proxy.data} --listen-port {proxy.port})"
{sys.executable} -m pip download -q --no-deps --disable-pip-version-check \
    --index-url {files_host['url']}/simple -d {tmp_path / 'dl'} tinypkg || exit 11
git -c http.sslCAInfo={roots} ls-remote {files_host['url']}/repo.git || exit 12
curl -sS --fail -X POST -H 'content-type: application/json' -d '{{"model": "gpt-4o-mini", "messages": []}}' \
    {upstream}/v1/free/chat/completions -o /dev/null || exit 13
"""
    return subprocess.run(["bash", "-c", script], env=_shell_env(proxy), capture_output=True, text=True, timeout=120)


def _config(tmp_path, intercept: str):
    # the AI upstream is `localhost`; the file server's 127.0.0.1 is not an AI host here
    path = tmp_path / f"config-{intercept}.yaml"
    path.write_text(json.dumps({"capture": {"intercept": intercept, "hosts": ["localhost"]}}))
    return str(path)


def test_other_hosts_pass_through_unopened(tmp_path, tls, upstream, files_host):
    with ProxyProcess(tmp_path / "data", "--config", _config(tmp_path, "known"), "--seal-interval", "0.1",
                      upstream_ca=tls["ca"]) as proxy:
        ran = _clients(proxy, files_host, tls, tmp_path, upstream)
        assert ran.returncode == 0, ran.stderr[-3000:]

        def recorded():
            out = receipts_cli("sql", "--json", "SELECT host, path FROM calls", data=proxy.data)
            return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() != "[]" else None

        rows = wait_for(recorded, timeout=30)
    assert (tmp_path / "dl" / "tinypkg-1.0-py3-none-any.whl").is_file()
    assert files_host["head"] in ran.stdout
    assert rows == [{"host": "localhost", "path": "/v1/free/chat/completions"}]


def test_intercepting_everything_breaks_clients_with_their_own_trust_store(tmp_path, tls, upstream, files_host):
    with ProxyProcess(tmp_path / "data", "--config", _config(tmp_path, "all"), upstream_ca=tls["ca"]) as proxy:
        ran = _clients(proxy, files_host, tls, tmp_path, upstream)
    assert ran.returncode == 12 and "certificate" in ran.stderr.lower(), ran.stderr[-2000:]


def test_a_host_where_x402_was_seen_is_opened_from_then_on(tmp_path):
    from receipts.addon import intercept
    from receipts.storage import config as cfg

    settings = cfg.load(_config(tmp_path, "known"), {"data_dir": str(tmp_path)})
    assert intercept.intercepted(settings, intercept.read_learned(tmp_path)) == ["localhost"]
    intercept.learn(tmp_path, "Pay.Example.com")
    intercept.learn(tmp_path, "not a host\n^.*$")  # (the file is read back into regular expressions)
    assert intercept.intercepted(settings, intercept.read_learned(tmp_path)) == ["localhost", "pay.example.com"]
