"""`receipts proxy`: mitmdump with the recorder addon, configured from mitm_config.yaml and flags."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from receipts import addon
from receipts.addon import intercept
from receipts.storage.config import ConfigError, Settings
from receipts.storage.private import make_private_dir

SCRIPT = Path(addon.__file__).resolve().parent / "script.py"


def mitmdump_args(settings: Settings, config_path: str | None, mode: str = "regular") -> list[str]:
    """The mitmdump command line that runs the recorder with exactly these settings."""
    ca = settings.ca_path
    sets = {
        "confdir": str(ca),
        "receipts_data": settings.data_dir,
        "receipts_bodies": settings.bodies,
        "receipts_durability": settings.durability,
        "receipts_stamp": str(settings.stamp_receipt_id).lower(),
        "receipts_capture_x402": str(settings.capture_x402).lower(),
        "receipts_seal_interval": str(settings.seal_interval),
        "receipts_body_max_bytes": str(settings.body_max_bytes),
        "receipts_compact_after": str(settings.compact_after),
        "receipts_compact_grace": str(settings.compact_grace),
        "receipts_pin": settings.og_pin,
        "receipts_stream_above": str(settings.stream_bodies_above),
        "receipts_max_client_connections": str(settings.max_client_connections),
        "receipts_header_timeout": str(settings.header_timeout),
        "receipts_idle_timeout": str(settings.idle_timeout),
        "stream_large_bodies": str(settings.stream_bodies_above),  # unrecorded traffic is never held whole either
        "flow_detail": "0",
    }
    if config_path:
        sets["receipts_config"] = str(config_path)
    if settings.upstream_ca:
        sets["ssl_verify_upstream_trusted_ca"] = settings.upstream_ca
    args = [
        "--mode",
        mode,
        "--listen-host",
        settings.listen_host,
        "--listen-port",
        str(settings.listen_port),
        "-s",
        str(SCRIPT),
    ]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    if not mode.startswith("reverse"):  # (reverse mode opens its one upstream, and checks its pin first)
        # connect upstream only when the first request is read, so that the client's TLS is negotiated
        # first: a client asking for HTTP/2 gets it whatever the upstream speaks (mitmproxy translates)
        args += ["--set", "connection_strategy=lazy"]
        for regex in intercept.allow_hosts(settings, intercept.read_learned(settings.data_dir)):
            args += ["--set", f"allow_hosts={regex}"]
    for path in settings.ai_paths:
        args += ["--set", f"receipts_ai_paths={path}"]
    for rule in settings.rules:
        args += ["--set", f"receipts_rules={rule.host}{rule.path if rule.path.startswith('/') else '/' + rule.path}"]
    return args


def reverse_upstream(url: str) -> str:
    """The upstream of reverse-proxy mode, checked: an http(s) URL with a host. Any upstream works; the
    certificate pin applies only to one the OpenGradient TEE registry lists (addon/pin.py)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(f"--reverse needs an upstream like https://host:port, not {url!r}.")
    return f"{parts.scheme}://{parts.netloc}"


def _pin_note(settings: Settings) -> str:
    if settings.og_pin == "off" or not settings.og_registry:
        return "no certificate pin: the usual TLS checks"
    return f"certificate pin {settings.og_pin} if the upstream is a registered OpenGradient TEE"


def _usable(settings: Settings) -> None:
    """Make the CA and data directories (private) and check that the journal's can be written, before the
    proxy starts: one sentence (ConfigError) rather than a traceback or mitmproxy's startup errors."""
    for what, path in (
        ("CA directory", settings.ca_path),
        ("data directory", settings.data_dir),
        ("data directory", Path(settings.data_dir) / "journal"),
    ):
        try:
            make_private_dir(path)
            probe = Path(path) / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(
                f"cannot use the {what} {path}: {exc.strerror or exc}. Choose another "
                f"({'--ca-dir' if what == 'CA directory' else '--data'}) or fix its permissions."
            ) from None


def run(settings: Settings, config_path: str | None, reverse: str | None = None) -> int:
    """Run the proxy in this process until interrupted (reverse: the upstream of reverse-proxy mode)."""
    from mitmproxy.tools.main import mitmdump

    from receipts.storage import fold

    _usable(settings)
    fold.catch_up(settings.data_dir, lambda m: print(f"receipts: {m}", file=sys.stderr, flush=True))
    if reverse:
        print(
            f"receipts: recording into {Path(settings.data_dir).resolve()}\n"
            f"receipts: reverse proxy for {reverse} ({_pin_note(settings)}); point the client at\n"
            f"  https://{settings.listen_host}:{settings.listen_port} (or http://)",
            file=sys.stderr,
            flush=True,
        )
        mitmdump(mitmdump_args(settings, config_path, mode=f"reverse:{reverse}"))
        return 0
    from mitmproxy.certs import CertStore

    from . import env

    CertStore.from_store(settings.ca_path, "mitmproxy", 2048)  # the CA mitmdump would make at start, made now:
    bundle = env.trust_bundle(settings)  # the trust bundle names it
    print(
        f"receipts: recording into {Path(settings.data_dir).resolve()}\n"
        f'receipts: point the apps of a shell at it with these lines (or: eval "$(receipts env)"):\n'
        + env.shell_lines(env.variables(settings, bundle)),
        end="",
        file=sys.stderr,
        flush=True,
    )
    mitmdump(mitmdump_args(settings, config_path))
    return 0
