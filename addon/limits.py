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
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("receipts")


@dataclass(slots=True)
class _Conn:
    address: str
    active: int = 0  # exchanges under way
    deadline: float | None = None  # when it is closed unless a request's headers arrive first
    why: str = "header_timeout"


class ConnectionLimits:
    """Counts and deadlines are updated on each hook (a float assignment); one task sweeps the
    connections past their deadline a few times a second."""

    def __init__(self, per_client: int, header_timeout: float, idle_timeout: float, close: Callable[[str, str], None]):
        self.per_client, self.header_timeout, self.idle_timeout = per_client, header_timeout, idle_timeout
        self._close = close  # close(connection id, why)
        self._conns: dict[str, _Conn] = {}
        self._per_address: dict[str, int] = {}
        self._sweeper: asyncio.Task | None = None
        self.closed = {"over_limit": 0, "header_timeout": 0, "idle_timeout": 0}

    def connected(self, conn_id: str, address: str | None) -> str | None:
        """A new client connection: the reason to refuse it, or None (and its header clock starts)."""
        address = address or "?"
        if self._per_address.get(address, 0) >= self.per_client:
            self.closed["over_limit"] += 1
            return f"{address} already holds {self.per_client} connections (max_client_connections)"
        self._per_address[address] = self._per_address.get(address, 0) + 1
        self._conns[conn_id] = _Conn(address, deadline=time.monotonic() + self.header_timeout)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return None

    def disconnected(self, conn_id: str) -> None:
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return
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
            conn.deadline = None

    def ended(self, conn_id: str) -> None:
        """An exchange on this connection is over (answered, or failed)."""
        conn = self._conns.get(conn_id)
        if conn is not None:
            conn.active = max(0, conn.active - 1)
            if conn.active == 0:
                conn.deadline, conn.why = time.monotonic() + self.idle_timeout, "idle_timeout"

    def tunnelled(self, conn_id: str) -> None:
        """The connection became a tunnel: its timing is mitmproxy's own (tcp_timeout)."""
        conn = self._conns.get(conn_id)
        if conn is not None:
            conn.active += 1
            conn.deadline = None

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()

    async def _sweep(self) -> None:
        """Close the connections past their deadline; stops once no connection is left to watch."""
        step = max(0.05, min(self.header_timeout, self.idle_timeout) / 4)
        while self._conns:
            await asyncio.sleep(step)
            now = time.monotonic()
            for conn_id, conn in list(self._conns.items()):
                if conn.deadline is not None and conn.deadline <= now and not conn.active:
                    conn.deadline = None
                    self.closed[conn.why] += 1
                    self._close(conn_id, conn.why)
