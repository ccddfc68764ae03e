"""`receipts doctor`: find what stands between an app and its receipts, and say it in plain words."""

from __future__ import annotations

import os
import socket
import sys
import uuid
from pathlib import Path

from receipts.storage import config as cfg

from .env import CA_VARIABLES


def run(config_path: str | None, data_dir: str, proxy: str | None, out=sys.stdout) -> list[str]:
    """Print one line per check; return the problems found (empty: all good)."""
    problems: list[str] = []

    def report(ok: bool, good: str, bad: str) -> None:
        print(f"{'ok  ' if ok else 'FAIL'}  {good if ok else bad}", file=out)
        if not ok:
            problems.append(bad)

    try:
        settings = cfg.load(config_path, {"data_dir": data_dir})
        found = config_path or (cfg.DEFAULT_CONFIG if cfg.DEFAULT_CONFIG.exists() else None)
        report(
            bool(found),
            f"settings are valid ({found}): {len(settings.networks)} network(s), {len(settings.assets)} asset(s) known",
            f"no settings file: {cfg.DEFAULT_CONFIG} is not there and no --config was given, so the built-in "
            f"defaults apply (no networks, no assets: nothing can be verified on chain)",
        )
    except cfg.ConfigError as exc:
        report(False, "", f"the settings are wrong: {exc}")
        settings = cfg.load(None, {"data_dir": data_dir}, env={})
    _data(settings, report, out)
    host, port = _address(proxy, settings)
    report(
        _listening(host, port),
        f"a proxy is listening on {host}:{port}",
        f"nothing listens on {host}:{port}: start the proxy with scripts/proxy (or receipts proxy)",
    )
    _environment(settings, host, port, report)
    _ca(settings, report)
    _refusals(settings, report)
    print(f"\n{len(problems)} problem(s) found." if problems else "\nAll checks passed.", file=out)
    return problems


def _data(settings: cfg.Settings, report, out) -> None:
    """The data directory can be written; if it does not exist yet, that it can be made where it is to be
    (the proxy makes it when it starts: the doctor makes nothing)."""
    data = Path(settings.data_dir)
    if not data.exists():
        parent = next((p for p in data.absolute().parents if p.exists()), Path("/"))
        if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
            print(
                f"note  there is no data directory at {data.absolute()} yet: the proxy makes it when it starts",
                file=out,
            )
        else:
            report(
                False,
                "",
                f"data directory {data} cannot be made ({parent} is not writable): paid requests "
                f"would be refused; choose another with --data or fix its permissions",
            )
        return
    probe = data / f".doctor-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"x")
        probe.unlink()
        report(True, f"data directory {data.resolve()} is writable", "")
    except OSError as exc:
        report(
            False,
            "",
            f"data directory {data} cannot be written ({exc.strerror or exc}): paid requests would be "
            f"refused; choose another with --data or fix its permissions/free space",
        )
    leftovers = (
        [p for p in (data / "journal" / "open").glob("*.jsonl") if p.stat().st_size]
        if (data / "journal").exists()
        else []
    )
    if leftovers:
        print(
            f"note  {len(leftovers)} open journal segment(s) hold events not yet visible to queries; they are "
            f"sealed within a second by a running proxy, or at the next start after a crash",
            file=out,
        )


def _address(proxy: str | None, settings: cfg.Settings) -> tuple[str, int]:
    if proxy:
        text = proxy.split("://", 1)[-1].rstrip("/")
        host, _, port = text.rpartition(":")
        try:
            return host or "127.0.0.1", int(port)
        except ValueError:
            raise cfg.ConfigError(f"--proxy takes HOST:PORT, not {proxy!r}") from None
    host = "127.0.0.1" if settings.listen_host in ("0.0.0.0", "::") else settings.listen_host
    return host, settings.listen_port


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _environment(settings: cfg.Settings, host: str, port: int, report) -> None:
    value = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    report(
        bool(value and f":{port}" in value),
        f"HTTPS_PROXY={value} points at the proxy",
        f"HTTPS_PROXY is {'set to ' + value if value else 'not set'} in this shell: apps started from it bypass "
        f"the proxy; run export HTTPS_PROXY=http://{host}:{port}",
    )


def _ca(settings: cfg.Settings, report) -> None:
    ca = settings.ca_cert
    if not ca.exists():
        report(False, "", f"there is no CA yet at {ca}: start the proxy once, it creates it")
        return
    pem = ca.read_bytes().strip()
    for name in CA_VARIABLES:
        path = os.environ.get(name)
        trusted = bool(path and Path(path).is_file() and pem in Path(path).read_bytes())
        report(
            trusted,
            f"{name} trusts the proxy's CA",
            f"{name} {'does not include' if path else 'is not set to'} the proxy's CA, so clients that read it "
            f"will refuse HTTPS through the proxy: export {name}={ca.resolve()}",
        )


# Clients that refused the proxy's certificate for a host, and have not made a call to it through the proxy
# since (a refusal that was fixed is history, not a problem).
REVERSE_PORT = 8443  # the port the suggested reverse proxy listens on, beside the regular one
REFUSALS = """
SELECT e.client, e.host, max(e.port) AS port, count(*) AS n FROM folded.errors e
WHERE e.kind = 'client_tls_refused' AND NOT EXISTS (
    SELECT 1 FROM folded.requests r WHERE r.client = e.client AND r.host = e.host AND r.ts > e.ts)
GROUP BY e.client, e.host ORDER BY n DESC LIMIT 5
"""


def _refusals(settings: cfg.Settings, report) -> None:
    if not (Path(settings.data_dir) / "journal").exists():
        return
    from receipts.storage import db

    with db.connect(settings.data_dir) as con:
        rows = con.execute(REFUSALS).fetchall()
        pins = con.execute(
            "SELECT kind, message, count(*) FROM folded.errors WHERE kind LIKE 'tee_pin_%' "
            "GROUP BY ALL ORDER BY 3 DESC LIMIT 5"
        ).fetchall()
    for client, host, port, n in rows:
        upstream = f"https://{host}" + (f":{port}" if port and port != 443 else "")
        report(
            False,
            "",
            f"a client at {client} refused the proxy's certificate for {host} ({n} times): it does not "
            f"trust the CA (set the variables above) or it pins its server's certificate: then run "
            f"`receipts proxy --reverse {upstream} --listen-port {REVERSE_PORT}` (beside this proxy, "
            f"same data) and point the client at https://127.0.0.1:{REVERSE_PORT} instead (the "
            f'OpenGradient SDK: og.LLM.from_url(key, llm_server_url="https://127.0.0.1:{REVERSE_PORT}")); '
            f"if the upstream is a TEE the OpenGradient registry lists, the recorder checks its "
            f"certificate pin itself",
        )
    for kind, message, n in pins:
        report(False, "", f"the recorder refused an upstream {n} times ({kind}): {message}")
