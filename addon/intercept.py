"""Which HTTPS hosts the proxy opens, and which it passes through as TLS, unopened.

The capture rules can only match what the proxy decrypts. Opening every HTTPS connection breaks the rest
of a shell: tools with their own trust store (pip's `--cert`, git's `http.sslCAInfo`, a JVM) refuse the
proxy's certificate. So by default (`capture.intercept: known`) the proxy opens only:
- `capture.hosts`: the known inference APIs and loopback;
- the hosts of the user's `capture.rules` (a rule for any host, `*`, opens everything);
- hosts where x402 was seen before (`<data>/x402-hosts`, learned as calls are recorded).
Everything else passes through as TLS. The trade-off: the first x402 payment to an unknown HTTPS host is
not seen. `capture.intercept: all` opens every host.

mitmproxy's `allow_hosts` takes regular expressions matched against `host:port`; `allow_hosts()` turns
host globs into them. Plain-HTTP requests are always seen (nothing to open).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from receipts.storage.config import Settings

LEARNED = "x402-hosts"  # in the data directory: one host per line


def host_regex(glob: str) -> str:
    """`*.example.com` -> a regex matching `api.example.com:443` (a `*` stays within the host name)."""
    body = re.escape(glob.lower()).replace(r"\*", "[^:/]*").replace(r"\?", "[^:/]")
    return rf"^{body}:\d+$"


def intercepted(settings: Settings, learned: list[str]) -> list[str] | None:
    """The host globs the proxy opens, or None for every host."""
    if settings.intercept == "all" or any(rule.host.strip() in ("", "*") for rule in settings.rules):
        return None
    hosts = [*settings.intercept_hosts, *(rule.host for rule in settings.rules), *learned]
    return list(dict.fromkeys(h.lower() for h in hosts))


def allow_hosts(settings: Settings, learned: list[str]) -> list[str]:
    """mitmproxy's `allow_hosts` for these settings (empty: open everything)."""
    hosts = intercepted(settings, learned)
    return [] if hosts is None else [host_regex(h) for h in hosts]


# ---- the learned hosts (I/O) --------------------------------------------------------------------
def read_learned(data_dir: str | os.PathLike) -> list[str]:
    try:
        text = (Path(data_dir) / LEARNED).read_text()
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [line.strip().lower() for line in text.splitlines() if _plausible(line.strip())]


def learn(data_dir: str | os.PathLike, host: str) -> None:
    """Remember a host where x402 was seen (appended; the file is private like the rest of the data)."""
    if _plausible(host):
        with open(Path(data_dir) / LEARNED, "a") as f:
            f.write(host.lower() + "\n")


def _plausible(host: str) -> bool:
    """A host name or address, nothing else (the file is read back into regular expressions)."""
    return 0 < len(host) <= 253 and re.fullmatch(r"[A-Za-z0-9.\-:\[\]]+", host) is not None
