"""Which local process owns a client's TCP connection (Linux): app attribution for audits.

The client's socket is the row of /proc/net/tcp{,6} whose *local* address is the client's address and
port and whose remote end is the proxy's; its inode names the socket, and the process holding it has
a `/proc/<pid>/fd/*` link to `socket:[inode]`. Reading every process's fds costs milliseconds, so the
recorder does it in a thread, once per client connection, and only for connections that carry a
recorded call. Processes of other users cannot be read without privileges: then the answer is None
and the call keeps its client address and user agent.

A command line often carries credentials (`curl -H "Authorization: Bearer …"`, `--api-key`,
`OPENAI_API_KEY=…`): it is stored only after addon/redact.py has replaced every secret by its tag.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from .redact import redact_argv

PROC = Path("/proc")


def _hex_endpoint(text: str) -> tuple[str, int] | None:
    """'0100007F:1F90' (little-endian 32-bit words, as the kernel prints them) → ('127.0.0.1', 8080)."""
    try:
        addr, port = text.split(":")
        raw = bytes.fromhex(addr)
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
        ip = ipaddress.ip_address(words)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return str(ip), int(port, 16)
    except ValueError:
        return None


def socket_inode(table: str, local: tuple[str, int], remote_port: int) -> int | None:
    """The inode of the socket whose local end is `local` and remote port `remote_port` (pure)."""
    for line in table.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 10:
            continue
        here, there = _hex_endpoint(cols[1]), _hex_endpoint(cols[2])
        if here == local and there and there[1] == remote_port and cols[9] != "0":
            return int(cols[9])
    return None


def _owner(inode: int, proc: Path = PROC) -> int | None:
    target = f"socket:[{inode}]"
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            for fd in os.scandir(pid_dir / "fd"):
                if os.readlink(fd.path) == target:
                    return int(pid_dir.name)
        except OSError:  # gone, or not ours to read
            continue
    return None


def describe(pid: int, proc: Path = PROC) -> dict:
    """pid, executable path and command line: redacted argument by argument (`curl -H "Authorization:
    Bearer sk-…"` keeps `curl -H Authorization: [redacted sha256:…]`; addon/redact.py), then joined by
    spaces and cut at 512 characters."""
    out: dict = {"pid": pid, "exe": None, "cmdline": None}
    try:
        out["exe"] = os.readlink(proc / str(pid) / "exe")
    except OSError:
        pass
    try:
        args = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
        out["cmdline"] = cmdline([a.decode("utf-8", "replace") for a in args if a])
    except OSError:
        pass
    return out


def cmdline(argv: list[str]) -> str | None:
    """The command line as stored: secrets redacted first (so a cut never leaves part of one), then cut."""
    return " ".join(redact_argv(argv))[:512] or None


def owner_of(client: tuple[str, int], proxy_port: int, proc: Path = PROC) -> dict | None:
    """The process behind a local client connection, or None (remote client, gone, not readable)."""
    host = client[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if not ip.is_loopback:
        return None
    for name in ("tcp", "tcp6"):
        try:
            table = (proc / "net" / name).read_text()
        except OSError:
            continue
        inode = socket_inode(table, (str(ip), client[1]), proxy_port)
        if inode:
            pid = _owner(inode, proc)
            return describe(pid, proc) if pid else None
    return None


INTERPRETERS = ("python", "node", "ruby", "perl", "bash", "sh", "deno", "bun", "java", "php")


def app_name(proc: dict | None, user_agent: str | None, client: str | None) -> str | None:
    """A short, stable name to group calls by app: the program (and the script an interpreter runs),
    else the user agent, else the client address."""
    if proc and proc.get("exe"):
        name = proc["exe"].rsplit("/", 1)[-1]
        args = (proc.get("cmdline") or "").split()[1:]
        if name.startswith(INTERPRETERS):
            script = next((a for a in args if not a.startswith("-")), None)
            if script:
                return f"{name} {script.rsplit('/', 1)[-1]}"[:120]
        return name[:120]
    ident = user_agent or client
    return ident[:120] if ident else None
