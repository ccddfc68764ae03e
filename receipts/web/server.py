"""`receipts serve`: a local, read-only web page over the views, served from a snapshot of the folded
tables (receipts/web/snapshot.py), with the standard library's threading HTTP server.

`App.handle()` maps a request to a response (status, type, body, headers); `Handler` is the thin HTTP
side. Pages are rendered by receipts/web/pages.py and charts.py (pure functions); the SQL is in
storage/queries.py, shared with `receipts show/list/tail`. Each request reads one snapshot from start to
end (`Snapshots.reading()`): the one current when it started. Every response — whatever the method, and
the standard library's own errors too — carries a strict Content-Security-Policy (scripts and styles only
from this server's /static/, no inline script, no inline style, nothing from elsewhere) and the other
HEADERS.

Who is answered (`App.handle()`, before anything else):
- the Host header must be one the server expects (`allowed_hosts()`), so a web page elsewhere cannot read
  receipts through DNS rebinding: on a loopback address its loopback names; on any other address that
  address, this machine's name (on 0.0.0.0/::, also the loopback names and the machine's addresses) and
  the names given with --allow-host; else 403;
- on an address other machines can reach (or when a token was given), every request must carry the
  token: `?token=…` (the answer then sets an HttpOnly, SameSite=Strict cookie, sent by the page's later
  requests), that cookie, or `Authorization: Bearer …`; compared in constant time; else 401.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import signal
import socket
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import cast
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from receipts.storage import queries

from .. import render
from . import charts, pages
from .snapshot import Reading, Snapshot, Snapshots

log = logging.getLogger("receipts.serve")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'"  # an SVG opened on its own: no script either
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
MAX_LIMIT = 500


@dataclass
class Response:
    status: int
    body: bytes
    type: str = "text/html; charset=utf-8"
    headers: dict = field(default_factory=dict)


class BadRequest(ValueError):
    """A filter the page cannot use; the message says which and why."""


def parse_filters(query: dict[str, list[str]]) -> dict:
    """The list's filters from a query string: text as given (`<name>_text`) and parsed values."""
    f: dict = {}
    for key in ("app", "host", "model", "status", "q"):
        value = (query.get(key) or [""])[0].strip()
        if len(value) > 2000:
            raise BadRequest(f"{key} is too long")
        if value:
            f[key] = value
    for key in ("since", "until"):
        value = (query.get(key) or [""])[0].strip()
        if value:
            try:
                f[key] = queries.parse_since(value)
            except ValueError:
                raise BadRequest(
                    f"{key} takes a duration such as 30m, 2h, 7d or a date such as 2026-11-24, "
                    f"not {render.safe(value, 80)}"
                ) from None
            f[key + "_text"] = value
    before, before_id = (query.get("before") or [""])[0], (query.get("before_id") or [""])[0]
    if before and before_id:
        try:
            f["before"] = (datetime.fromisoformat(before), before_id)
        except ValueError:
            raise BadRequest("before must be a date and time") from None
    try:
        f["limit"] = max(1, min(MAX_LIMIT, int((query.get("limit") or ["50"])[0])))
    except ValueError:
        raise BadRequest("limit must be a number") from None
    return f


def _key(f: dict) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in f.items() if not k.endswith("_text")))


def _bearer(value: str | None) -> str | None:
    scheme, _, credentials = (value or "").strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


def _cookies(value: str | None, name: str) -> list[str]:
    """The values of every cookie called `name` in a Cookie header (read by hand: http.cookies drops the
    whole header at the first cookie it cannot parse)."""
    found = []
    for part in (value or "").split(";"):
        key, sep, val = part.strip().partition("=")
        if sep and key == name:
            found.append(val.strip().strip('"'))
    return found


class App:
    """The routes. Holds the snapshots, the settings (explorer links) and a small memo of what only changes
    with the snapshot (filter values, counts, charts). `allowed_hosts` (None: any) and `token` (None: no
    token needed) say who is answered; `run()` sets them."""

    def __init__(self, snapshots: Snapshots, settings=None, data_dir: str = ""):
        self.snapshots, self.settings, self.data_dir = snapshots, settings, str(data_dir)
        self.allowed_hosts: set[str] | None = None
        self.token: str | None = None
        self.cookie = "receipts_token"  # (run() adds the port: cookies are shared by every port of a host)
        self._memo: OrderedDict = OrderedDict()
        self._memo_lock = threading.Lock()
        folder = resources.files("receipts.web").joinpath("static")
        self.static = {name: folder.joinpath(name).read_bytes() for name in STATIC}

    # ---- plumbing ----------------------------------------------------------------------------------
    def status(self) -> dict:
        """What /api/status answers (and the pages' header shows): the snapshot served, and when the data
        directory was last seen to hold nothing newer (`refreshed_at`, UTC)."""
        s = self.snapshots
        snap = s.current
        out = {
            "state": s.state,
            "data": self.data_dir,
            "version": s.version,
            "error": s.error,
            "build_seconds": s.first_seconds,
            "receipts": snap.receipts if snap else None,
            "refreshed_at": datetime.fromtimestamp(s.checked_at, UTC).strftime("%H:%M:%S") if s.checked_at else None,
        }
        if snap:
            out["snapshot"] = {
                "number": snap.number,
                "generation": snap.generation,
                "tail_segments": snap.tail_segments,
                "seconds": round(snap.seconds, 4),
                "taken_at": datetime.fromtimestamp(snap.taken_at, UTC).isoformat(),
            }
        return out

    def _memoized(self, r: Reading, key: tuple, compute):
        key = (r.version,) + key
        with self._memo_lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
        value = compute(r.con)
        with self._memo_lock:
            self._memo[key] = value
            while len(self._memo) > 256:
                self._memo.popitem(last=False)
        return value

    def handle(self, method: str, target: str, headers=None) -> Response:
        """The answer to one request; `headers` maps header names (any case) to values."""
        headers = headers if headers is not None else {}
        host = headers.get("Host")
        if self.allowed_hosts is not None and (host or "").lower() not in self.allowed_hosts:
            return Response(
                403,
                b"unexpected Host header: open the page at the address receipts serve printed "
                b"(another name needs --allow-host)\n",
                "text/plain; charset=utf-8",
            )
        via = self._authenticated(urlsplit(target).query, headers)
        if via is None:
            return Response(
                401,
                b"this page needs its token: open the address receipts serve printed "
                b"(/?token=...), or send Authorization: Bearer <token>\n",
                "text/plain; charset=utf-8",
                {"WWW-Authenticate": 'Bearer realm="receipts serve"'},
            )
        if method not in ("GET", "HEAD"):
            return Response(405, b"read-only\n", "text/plain; charset=utf-8", {"Allow": "GET, HEAD"})
        resp = self._route(target)
        if via == "query":  # the page's next requests (its script, style, charts, links) carry the cookie
            resp.headers["Set-Cookie"] = f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict"
        return resp

    def _authenticated(self, query: str, headers) -> str | None:
        """How the request showed the token ("query", "header", "cookie"; "open" when none is needed), or None."""
        if self.token is None:
            return "open"
        given = [("query", t) for t in parse_qs(query).get("token", [])] + [
            ("header", _bearer(headers.get("Authorization")))
        ]
        given += [("cookie", t) for t in _cookies(headers.get("Cookie"), self.cookie)]
        want = self.token.encode()
        for via, token in given:
            if token is not None and hmac.compare_digest(token.encode(), want):
                return via
        return None

    def _route(self, target: str) -> Response:
        url = urlsplit(target)
        path, query = url.path, parse_qs(url.query, keep_blank_values=False)
        try:
            if path.startswith("/static/"):
                name = path[len("/static/") :]
                if name in self.static:
                    return Response(200, self.static[name], STATIC[name], {"Cache-Control": "no-cache"})
                return self._not_found()
            if path == "/favicon.ico":
                return Response(204, b"", "image/x-icon")
            if path == "/api/status":
                return self._json(self.status())
            if self.snapshots.current is None:
                return self._building(path)
            with self.snapshots.reading() as r:
                return self._read(r, url, path, query)
        except BadRequest as exc:
            return Response(400, pages.message_page("Cannot filter like that", str(exc), self.status()).encode())

    def _read(self, r: Reading, url, path: str, query) -> Response:
        if path == "/":
            return self.list_page(r, query)
        if path == "/api/receipts":
            return self.list_api(r, query)
        if path.startswith("/receipt/"):
            return self.receipt_page(r, unquote(path[len("/receipt/") :]))
        if path.startswith("/api/receipt/"):
            return self.receipt_api(r, unquote(path[len("/api/receipt/") :]), "stamp" in url.query)
        if path.startswith("/chart/") and path.endswith(".svg"):
            return self.chart(r, path[len("/chart/") : -4], query)
        return self._not_found()

    def _json(self, obj, status: int = 200) -> Response:
        return Response(
            status, orjson.dumps(obj, default=render._default, option=orjson.OPT_NON_STR_KEYS), "application/json"
        )

    def _not_found(self) -> Response:
        return Response(404, pages.message_page("Not found", "Nothing here.", self.status()).encode())

    def _building(self, path: str) -> Response:
        s = self.snapshots
        if path.startswith("/api/"):
            return self._json({"state": s.state, "error": s.error}, 503)
        text = (
            f"The receipts are being read from the data directory; this page works once they are "
            f"(reload). {s.error or ''}"
        )
        return Response(
            503, pages.message_page("Reading the receipts", text, self.status()).encode(), headers={"Retry-After": "2"}
        )

    # ---- the list ----------------------------------------------------------------------------------
    def _rows(self, r: Reading, f: dict) -> tuple[list[dict], int, dict | None]:
        limit = f["limit"]
        rows = queries.serve_list(r.con, f, limit + 1, f.get("before"))
        more = len(rows) > limit
        rows = rows[:limit]
        total = self._memoized(
            r,
            ("total", _key({k: v for k, v in f.items() if k not in ("before", "limit")})),
            lambda con: queries.serve_count(con, f),
        )
        after = None
        if more and rows:
            after = {"before": rows[-1]["first_seen"].isoformat(), "before_id": rows[-1]["receipt_id"]}
        return rows, total, after

    def _filters(self, r: Reading, query) -> dict:
        f = parse_filters(query)
        if f.get("q"):
            f["q_ids"] = self._memoized(r, ("search", f["q"]), lambda con: queries.search(con, f["q"]))
        return f

    def list_page(self, r: Reading, query) -> Response:
        f = self._filters(r, query)
        only_q = f.get("q") and not any(
            f.get(k) for k in ("app", "host", "model", "status", "since", "until", "before")
        )
        if only_q and len(f["q_ids"]) == 1:  # an id that names one receipt: go there
            return Response(302, b"", headers={"Location": pages.receipt_href(f["q_ids"][0])})
        rows, total, after = self._rows(r, f)
        facets = self._memoized(r, ("facets",), queries.serve_facets)
        paid = self._memoized(r, ("paid", _key(f)), lambda con: queries.paid_calls(con, f))
        html = pages.list_page(rows, total, f, facets, self.status(), after, r.version, f["limit"], paid=paid > 0)
        return Response(200, html.encode())

    def list_api(self, r: Reading, query) -> Response:
        f = self._filters(r, query)
        seen = (query.get("v") or [""])[0]
        if seen == str(r.version):
            return self._json({"version": r.version, "changed": False})
        rows, total, _ = self._rows(r, f)
        status = self.status()
        return self._json(
            {
                "version": r.version,
                "changed": True,
                "total": total,
                "total_text": f"{total:,}",
                "freshness": pages.freshness(status),
                "rows": [{"id": x["receipt_id"], "cells": pages.list_row(x)} for x in rows],
            }
        )

    # ---- one receipt -------------------------------------------------------------------------------
    def _receipt(self, r: Reading, ident: str):
        """(receipt row, details), if `ident` is a receipt's own id; else (None, the ids of the receipts
        this id finds, as `receipts show` finds them)."""
        got = queries.one_receipt(r.con, ident, r.scratches)
        return (got, None) if got else (None, queries.search(r.con, ident))

    def receipt_page(self, r: Reading, ident: str) -> Response:
        got, found = self._receipt(r, ident)
        if got is None:
            if len(found) == 1:
                return Response(302, b"", headers={"Location": pages.receipt_href(found[0])})
            if found:
                return Response(302, b"", headers={"Location": "/?" + pages.qs({"q": ident})})
            return Response(
                404, pages.message_page("No such receipt", f"No receipt matches {ident}.", self.status()).encode()
            )
        row, details = got
        doc = render.to_json(render.receipt_document(row, details))
        network = self.settings.network(row.get("network")) if self.settings and row.get("network") else None
        explorer = network.explorer_link if network else None  # (none for a local chain)
        stamp = hashlib.sha256(doc.encode()).hexdigest()[:16]
        return Response(200, pages.receipt_page(row, details, doc, self.status(), explorer, stamp).encode())

    def receipt_api(self, r: Reading, ident: str, stamp_only: bool) -> Response:
        got, found = self._receipt(r, ident)
        if got is None:
            return self._json({"error": "no such receipt", "matches": found}, 404)
        doc = render.to_json(render.receipt_document(*got))
        if stamp_only:
            return self._json({"stamp": hashlib.sha256(doc.encode()).hexdigest()[:16]})
        return Response(200, doc.encode(), "application/json")

    # ---- charts ------------------------------------------------------------------------------------
    def chart(self, r: Reading, name: str, query) -> Response:
        f = self._filters(r, query)
        f.pop("before", None)
        f.pop("limit", None)

        def draw(con) -> str:
            if name == "status":
                return charts.status_counts(queries.status_counts(con, f))
            if name == "spend-payee":
                return charts.spend_by(queries.spend_by(con, f, "pay_to"), "payee")
            first, last = queries.serve_span(con, f)
            span = (last - first).total_seconds() if first and last else 0
            bucket = "hour" if span <= 3 * 86400 else "day" if span <= 120 * 86400 else "week"
            if name in ("spend-app", "spend-payee-time"):
                by, label = ("app_name", "app") if name == "spend-app" else ("pay_to", "payee")
                return charts.spend_over_time(queries.spend_over_time(con, f, bucket, by), bucket, label)
            measure, _, by = name.partition("-")  # tokens-model, cost-app, latency-model, errors-app
            if measure in queries.USAGE_MEASURES and by in ("model", "app"):
                column = "app_name" if by == "app" else "model"
                return charts.usage_over_time(
                    queries.usage_over_time(con, f, measure, bucket, column), measure, bucket, by
                )
            return ""

        svg = self._memoized(r, ("chart", name, _key(f)), draw)
        if not svg:
            return self._not_found()
        return Response(200, svg.encode(), "image/svg+xml", {"Content-Security-Policy": SVG_CSP})


class Handler(BaseHTTPRequestHandler):
    server: Server  # (the one `run` makes, with its App)
    protocol_version = "HTTP/1.1"
    server_version = "receipts-serve"
    sys_version = ""

    def setup(self):
        super().setup()
        # answers go out at once (without it, a keep-alive client waits ~40 ms for each: Nagle + delayed ACK)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def __getattr__(self, name: str):
        # Every method goes through _serve(), OPTIONS, TRACE and unknown ones too (a 405 with HEADERS):
        # the standard library answers a method without a do_<METHOD> with its own bare 501.
        if name.startswith("do_"):
            return lambda: self._serve(name[3:])
        raise AttributeError(name)

    def _serve(self, method: str) -> None:
        app: App = self.server.app
        try:
            resp = app.handle(method, self.path, self.headers)
        except Exception:  # a bug must not take the server down; say so on the page and in the log
            log.exception("error serving %s", render.safe(self.path, 200))
            resp = Response(500, b"internal error (see the server's log)\n", "text/plain; charset=utf-8")
        self._send(resp, with_body=method != "HEAD")

    def _send(self, resp: Response, with_body: bool) -> None:
        if self.request_version == "HTTP/0.9":  # (also the version of a request line too broken to read):
            self.request_version = "HTTP/1.0"  # the standard library would answer without status line or headers
        self.send_response(resp.status)
        for k, v in {**HEADERS, "Content-Type": resp.type, **resp.headers}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(resp.body)))
        if with_body:  # one write: headers and body
            self._headers_buffer.append(b"\r\n" + resp.body)
            self.flush_headers()
        else:
            self.end_headers()

    def send_error(self, code, message=None, explain=None):
        """The standard library's own refusals (a malformed request line, a URI or header too long), with
        the same headers as every other answer (and none of the request's text echoed)."""
        self.close_connection = True
        phrase = self.responses.get(code, ("Error",))[0]
        self._send(
            Response(code, f"{code} {phrase}\n".encode(), "text/plain; charset=utf-8", {"Connection": "close"}),
            with_body=self.command != "HEAD" and code >= 200 and code not in (204, 304),
        )

    def log_message(self, format, *args):
        text = format % args
        token = self.server.app.token
        log.debug("%s %s", self.address_string(), text.replace(token, "[token]") if token else text)


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
# --allow-host: a name, an IPv4 address, an IPv6 address (bare or in brackets), then :PORT or not
ALLOW_HOST = re.compile(
    r"^(\[[0-9a-f:.]+\]|[0-9a-f.]*:[0-9a-f.]*:[0-9a-f:.]*|[a-z0-9]([a-z0-9.-]*[a-z0-9])?)(:\d{1,5})?$"
)
TOKEN = re.compile(r"^[A-Za-z0-9._~-]{16,200}$")


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _host_header(name: str, port: int | None) -> set[str]:
    """How a Host header names `name` (an IPv6 address in brackets): with the port, and bare where
    the port is HTTP's default or not known (a name given without one, e.g. behind a reverse proxy)."""
    name = name.lower()
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"
    return {name} if port is None else {f"{name}:{port}"} | ({name} if port == 80 else set())


def _machine_addresses() -> set[str]:
    """This machine's name and the addresses it is reached at: those its name resolves to, and the one
    it sends from by default (a UDP socket's connect() picks the route; nothing is sent)."""
    found = {socket.gethostname()}
    try:
        # (IPv4 and IPv6 socket addresses: the first item is the address text)
        found |= {cast(str, info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: never reached
            found.add(s.getsockname()[0])
    except OSError:
        pass
    return found


def allowed_hosts(host: str, port: int, extra=()) -> set[str]:
    """The Host headers the server answers. On a loopback address: its loopback names. On another: that
    address and this machine's name; on 0.0.0.0 or :: also the loopback names and the machine's addresses.
    `extra` (--allow-host) adds NAME (with this port, and bare) or NAME:PORT (exactly)."""
    if is_loopback(host):
        names = {*LOOPBACK_NAMES, host}
    elif is_wildcard(host):
        names = {*LOOPBACK_NAMES, *_machine_addresses()}
    else:
        names = {host, socket.gethostname()}
    out = set().union(*(_host_header(n, port) for n in names))
    for name in extra:
        name = name.lower()
        m = ALLOW_HOST.match(name)
        if m and m.group(3):
            out.add(name)
        else:
            out |= _host_header(name, port) | _host_header(name, None)
    return out


def _interrupt(*_):
    raise KeyboardInterrupt


class Server(ThreadingHTTPServer):
    daemon_threads = True
    app: App  # (set by `run`)


class Server6(Server):
    address_family = socket.AF_INET6


def run(
    data_dir: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    cache_path: str | None = None,
    settings=None,
    refresh: float = 1.0,
    allow_hosts=(),
    token: str | None = None,
) -> int:
    """Serve until interrupted: listen at once, take the first snapshot, then check for new data every
    `refresh` seconds. (`cache_path`, the old --cache, is ignored: nothing is cached on disk.)

    On a loopback address no token is needed unless `token` is given; on any other address one is
    always needed: `token`, or one made here and printed once."""
    snapshots = Snapshots(data_dir, refresh)
    app = App(snapshots, settings, data_dir)
    server = (Server6 if ":" in host else Server)((host, port), Handler)
    server.app = app
    port = server.server_address[1]
    app.allowed_hosts = allowed_hosts(host, port, allow_hosts)
    made = token is None and not is_loopback(host)
    app.token = secrets.token_urlsafe(32) if made else token
    app.cookie = f"receipts_token_{port}"
    shown = f"[{host}]" if ":" in host else host
    print(f"receipts serve: http://{shown}:{port}/ (data {data_dir})", flush=True)
    if cache_path:
        print(
            "receipts serve: --cache is ignored: the pages read the data directory's folded tables, "
            "nothing is cached on disk",
            file=sys.stderr,
            flush=True,
        )
    if app.token:
        where = socket.gethostname() if is_wildcard(host) else shown
        print(
            f"receipts serve: every request needs the token; open http://{where}:{port}/?token="
            f"{app.token if made else '<the token you gave>'} (or send Authorization: Bearer <token>)",
            flush=True,
        )

    def prepare():
        try:
            snapshots.refresh(force=True)
            print(
                f"receipts serve: ready, {cast(Snapshot, snapshots.current).receipts:,} receipts (read in "
                f"{snapshots.first_seconds:.1f} s); checking for new data every {refresh:g} s",
                flush=True,
            )
        except Exception as exc:
            snapshots.state, snapshots.error = "error", str(exc).splitlines()[0]
            print(
                f"receipts serve: the receipts could not be read (tried again every {refresh:g} s): {snapshots.error}",
                file=sys.stderr,
                flush=True,
            )
        snapshots.start()

    threading.Thread(target=prepare, name="receipts-first-snapshot", daemon=True).start()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        snapshots.close()
    return 0
