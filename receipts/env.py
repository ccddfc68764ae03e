"""What a shell needs so that every app started from it goes through the proxy: `receipts env` prints it
(`eval "$(receipts env)"`), and `receipts proxy` prints the same at start.

- HTTPS_PROXY and HTTP_PROXY (and their lowercase forms, which some clients read instead): plain-HTTP
  endpoints such as a local Ollama or vLLM are recorded too. NO_PROXY is emptied: loopback calls go
  through the proxy as well (it records AI paths and passes everything else through unchanged).
- SSL_CERT_FILE, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE: these *replace* a client's trust store, so they
  name a bundle of the system's roots plus the proxy's CA (`trust_bundle()`), not the proxy's CA alone:
  HTTPS to hosts the proxy passes through keeps working in that shell.
- NODE_EXTRA_CA_CERTS (added to Node's own roots): the proxy's CA. NODE_USE_ENV_PROXY=1 makes Node ≥ 22.21
  (and 24) honour HTTPS_PROXY in `fetch` and `https`; on older Node, NODE_OPTIONS requires the preload
  (receipts/node/preload.cjs), which routes `fetch` through undici's EnvHttpProxyAgent.
"""

from __future__ import annotations

import os
import shlex
import ssl
from pathlib import Path

from receipts.storage.config import Settings

PRELOAD = Path(__file__).resolve().parent / "node" / "preload.cjs"
BUNDLE = "trust-bundle.pem"  # beside the proxy's CA: the system's roots, then the proxy's CA
CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")  # what a client trusts


def system_roots(exclude: Path | None = None) -> Path | None:
    """The machine's CA bundle (SSL_CERT_FILE if set, else OpenSSL's default file, else certifi's)."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate) and not (exclude and Path(candidate).resolve() == exclude.resolve()):
            return Path(candidate)
    try:
        import certifi
    except ImportError:
        return None
    return Path(certifi.where())


def trust_bundle(settings: Settings) -> Path:
    """Write (again) `<ca dir>/trust-bundle.pem`: the system's roots and the proxy's CA certificate (the
    certificate only: never its key). The proxy's CA must exist (the proxy makes it at its first start)."""
    pem = settings.ca_cert.read_bytes()  # (FileNotFoundError: no CA yet)
    out = settings.ca_path / BUNDLE
    roots = system_roots(exclude=out)  # (a shell set up before has SSL_CERT_FILE on this very bundle)
    text = (roots.read_bytes().rstrip(b"\n") + b"\n" if roots else b"") + pem
    tmp = out.with_name(f".{BUNDLE}.{os.getpid()}.tmp")
    tmp.write_bytes(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, out)
    return out


def variables(settings: Settings, bundle: Path, host: str | None = None) -> dict[str, str]:
    """Every variable the shell needs, in the order they are printed."""
    host = host or ("127.0.0.1" if settings.listen_host in ("0.0.0.0", "::") else settings.listen_host)
    url = f"http://{host}:{settings.listen_port}"
    trusts = {name: str(bundle.resolve()) for name in CA_VARIABLES}
    trusts["NODE_EXTRA_CA_CERTS"] = str(settings.ca_cert.resolve())  # (Node adds it to its own roots)
    return {
        "HTTPS_PROXY": url,
        "https_proxy": url,
        "HTTP_PROXY": url,
        "http_proxy": url,
        "NO_PROXY": "",
        "no_proxy": "",
        **trusts,
        "NODE_USE_ENV_PROXY": "1",
        "NODE_OPTIONS": node_options(os.environ.get("NODE_OPTIONS", "")),
    }


def node_options(current: str) -> str:
    """The shell's NODE_OPTIONS with `--require <preload>` added once (Node reads quoted paths)."""
    require = f'--require "{PRELOAD}"' if " " in str(PRELOAD) else f"--require {PRELOAD}"
    return current if str(PRELOAD) in current else f"{current} {require}".strip()


def shell_lines(values: dict[str, str], shell: str = "sh") -> str:
    """`export NAME=value` lines (sh, bash, zsh) or `set -gx NAME value` (fish), values quoted."""
    if shell == "fish":
        return "".join(f"set -gx {k} {shlex.quote(v)}\n" for k, v in values.items())
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items())
