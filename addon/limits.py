"""Bounds on client connections, against slow or idle clients (slowloris).

- a client address may hold `per_client` open connections; the next one is closed as it connects;
- a connection must complete a request's headers within `header_timeout` seconds of connecting, and
  the next request's within `idle_timeout` seconds of its last exchange ending; otherwise it is closed.
  A connection that turned into a tunnel (TCP passthrough, WebSocket) is no longer timed.

mitmproxy only tells the addon when complete request headers arrived (`requestheaders`, or
`http_connect` for a CONNECT), so "a request started" means its headers are complete: a client that
dribbles headers byte by byte is closed at the timeout like one that sends nothing.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("receipts")


@dataclass
class _Conn:
    address: str
    active: int = 0                                   # exchanges under way
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class ConnectionLimits:
    def __init__(self, per_client: int, header_timeout: float, idle_timeout: float,
                 close: Callable[[str, str], None]):
        self.per_client, self.header_timeout, self.idle_timeout = per_client, header_timeout, idle_timeout
        self._close = close                           # close(connection id, why)
        self._conns: dict[str, _Conn] = {}
        self._per_address: dict[str, int] = {}
        self.closed = {"over_limit": 0, "header_timeout": 0, "idle_timeout": 0}

    def connected(self, conn_id: str, address: str | None) -> str | None:
        """A new client connection: the reason to refuse it, or None (and its header clock starts)."""
        address = address or "?"
        if self._per_address.get(address, 0) >= self.per_client:
            self.closed["over_limit"] += 1
            return f"{address} already holds {self.per_client} connections (max_client_connections)"
        self._per_address[address] = self._per_address.get(address, 0) + 1
        self._conns[conn_id] = conn = _Conn(address)
        self._arm(conn_id, conn, self.header_timeout, "header_timeout")
        return None

    def disconnected(self, conn_id: str) -> None:
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return
        self._disarm(conn)
        left = self._per_address.get(conn.address, 1) - 1
        if left > 0:
            self._per_address[conn.address] = left
        else:
            self._per_address.pop(conn.address, None)

    def started(self, conn_id: str) -> None:
        """A request's headers are complete on this connection."""
        conn = self._conns.get(conn_id)
        if conn is not None:
            conn.active += 1
            self._disarm(conn)

    def ended(self, conn_id: str) -> None:
        """An exchange on this connection is over (answered, or failed)."""
        conn = self._conns.get(conn_id)
        if conn is not None:
            conn.active = max(0, conn.active - 1)
            if conn.active == 0:
                self._arm(conn_id, conn, self.idle_timeout, "idle_timeout")

    def tunnelled(self, conn_id: str) -> None:
        """The connection became a tunnel: its timing is mitmproxy's own (tcp_timeout)."""
        conn = self._conns.get(conn_id)
        if conn is not None:
            conn.active += 1
            self._disarm(conn)

    def _arm(self, conn_id: str, conn: _Conn, seconds: float, why: str) -> None:
        self._disarm(conn)
        conn.timer = asyncio.get_running_loop().call_later(seconds, self._expire, conn_id, why)

    @staticmethod
    def _disarm(conn: _Conn) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None

    def _expire(self, conn_id: str, why: str) -> None:
        conn = self._conns.get(conn_id)
        if conn is None or conn.active:
            return
        self.closed[why] += 1
        self._close(conn_id, why)
