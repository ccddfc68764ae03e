"""A raw HTTP/1.1 client for tests that must send bytes no library would (non-UTF-8 headers, bombs)."""
from __future__ import annotations

import base64
import http.client
import socket
from dataclasses import dataclass


@dataclass
class Answer:
    status: int
    headers: dict[str, str]   # lower-cased names, latin-1 text
    body: bytes


def request(proxy_port: int, url: str, headers: list[tuple[bytes, bytes]], body: bytes = b"",
            method: bytes = b"POST", timeout: float = 30.0) -> Answer | None:
    """Send one request through the proxy (plain HTTP, absolute URI, Connection: close); None when the
    connection was closed without an answer."""
    head = [method + b" " + url.encode() + b" HTTP/1.1", b"Host: " + url.split("/")[2].encode(),
            b"Connection: close", b"Content-Length: " + str(len(body)).encode()]
    head += [name + b": " + value for name, value in headers]
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout) as sock:
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
        resp = http.client.HTTPResponse(sock)
        try:
            resp.begin()
            data = resp.read()
        except (http.client.HTTPException, ConnectionError):
            return None
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)


def raw_header_lines(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """The value of the test upstream's X-Test-Raw-Headers: these header lines, byte for byte."""
    return base64.b64encode(b"".join(n + b": " + v + b"\r\n" for n, v in pairs))
