"""`receipts serve`: a local, read-only web page over the views, served from the read cache
(storage/cache.py), with the standard library's threading HTTP server.

`App.handle()` maps a request to a response (status, type, body, headers); `Handler` is the thin HTTP
side. Pages are rendered by receipts/web/pages.py and charts.py (pure functions); the SQL is in
storage/queries.py. Every response carries a strict Content-Security-Policy (scripts and styles only
from this server's /static/, no inline script, no inline style, nothing from elsewhere), and requests
naming another host are refused, so a web page elsewhere cannot read receipts through DNS rebinding.
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import signal
import socket
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from storage import queries
from storage.cache import ReadCache

from .. import render
from . import charts, pages

log = logging.getLogger("receipts.serve")

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'"  # an SVG opened on its own: no script either
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY", "Cross-Origin-Resource-Policy": "same-origin",
           "Cross-Origin-Opener-Policy": "same-origin", "Cache-Control": "no-store"}
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
                raise BadRequest(f"{key} takes a duration such as 30m, 2h, 7d or a date such as 2026-11-24, "
                                 f"not {render.safe(value, 80)}") from None
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


class App:
    """The routes. Holds the cache, the settings (explorer links) and a small memo of what only changes
    when the cache does (filter values, counts, charts)."""

    def __init__(self, cache: ReadCache, settings=None, data_dir: str = ""):
        self.cache, self.settings, self.data_dir = cache, settings, str(data_dir)
        self.allowed_hosts: set[str] | None = None
        self._memo: OrderedDict = OrderedDict()
        self._memo_lock = threading.Lock()
        folder = resources.files("receipts.web").joinpath("static")
        self.static = {name: folder.joinpath(name).read_bytes() for name in STATIC}

    # ---- plumbing ----------------------------------------------------------------------------------
    def status(self) -> dict:
        c = self.cache
        out = {"state": c.state, "data": self.data_dir, "cache": str(c.path), "version": c.version,
               "error": c.error, "build_seconds": c.built_seconds, "receipts": None,
               "refreshed_at": datetime.fromtimestamp(c.refreshed_at, timezone.utc).strftime("%H:%M:%S")
               if c.refreshed_at else None}
        if c.state == "ready":
            out["receipts"] = self._memoized(("count", ()), lambda con: queries.serve_count(con, {}))
        if c.last:
            out["last_refresh"] = {"seconds": round(c.last.seconds, 4), "new_events": c.last.new_events,
                                   "recomputed": c.last.recomputed, "new_files": c.last.new_files,
                                   "changed_slots": c.last.changed_slots}
        return out

    def _memoized(self, key: tuple, compute):
        key = (self.cache.version,) + key
        with self._memo_lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
        with self.cache.reading() as con:
            value = compute(con)
        with self._memo_lock:
            self._memo[key] = value
            while len(self._memo) > 256:
                self._memo.popitem(last=False)
        return value

    def handle(self, method: str, target: str, host: str | None) -> Response:
        if self.allowed_hosts is not None and (host or "").lower() not in self.allowed_hosts:
            return Response(403, b"unexpected Host header: open the page at the address receipts serve printed\n",
                            "text/plain; charset=utf-8")
        if method not in ("GET", "HEAD"):
            return Response(405, b"read-only\n", "text/plain; charset=utf-8", {"Allow": "GET, HEAD"})
        url = urlsplit(target)
        path, query = url.path, parse_qs(url.query, keep_blank_values=False)
        try:
            if path.startswith("/static/"):
                name = path[len("/static/"):]
                if name in self.static:
                    return Response(200, self.static[name], STATIC[name], {"Cache-Control": "no-cache"})
                return self._not_found()
            if path == "/favicon.ico":
                return Response(204, b"", "image/x-icon")
            if path == "/api/status":
                return self._json(self.status())
            if self.cache.state != "ready":
                return self._building(path)
            if path == "/":
                return self.list_page(query)
            if path == "/api/receipts":
                return self.list_api(query)
            if path.startswith("/receipt/"):
                return self.receipt_page(unquote(path[len("/receipt/"):]))
            if path.startswith("/api/receipt/"):
                return self.receipt_api(unquote(path[len("/api/receipt/"):]), "stamp" in url.query)
            if path.startswith("/chart/") and path.endswith(".svg"):
                return self.chart(path[len("/chart/"):-4], query)
            return self._not_found()
        except BadRequest as exc:
            return Response(400, pages.message_page("Cannot filter like that", str(exc), self.status()).encode())

    def _json(self, obj, status: int = 200) -> Response:
        return Response(status, orjson.dumps(obj, default=render._default, option=orjson.OPT_NON_STR_KEYS),
                        "application/json")

    def _not_found(self) -> Response:
        return Response(404, pages.message_page("Not found", "Nothing here.", self.status()).encode())

    def _building(self, path: str) -> Response:
        if path.startswith("/api/"):
            return self._json({"state": self.cache.state, "error": self.cache.error}, 503)
        text = (f"The read cache is being built from the journal; this page works once it is ready "
                f"(reload). {self.cache.error or ''}")
        return Response(503, pages.message_page("Building the cache", text, self.status()).encode(),
                        headers={"Retry-After": "2"})

    # ---- the list ----------------------------------------------------------------------------------
    def _rows(self, f: dict) -> tuple[list[dict], int, dict | None]:
        limit = f["limit"]
        with self.cache.reading() as con:
            rows = queries.serve_list(con, f, limit + 1, f.get("before"))
        more = len(rows) > limit
        rows = rows[:limit]
        total = self._memoized(("total", _key({k: v for k, v in f.items() if k not in ("before", "limit")})),
                               lambda con: queries.serve_count(con, f))
        after = None
        if more and rows:
            after = {"before": rows[-1]["first_seen"].isoformat(), "before_id": rows[-1]["receipt_id"]}
        return rows, total, after

    def _filters(self, query) -> dict:
        f = parse_filters(query)
        if f.get("q"):
            with self.cache.reading() as con:
                f["q_ids"] = queries.serve_search(con, f["q"])
        return f

    def list_page(self, query) -> Response:
        f = self._filters(query)
        if f.get("q") and not any(f.get(k) for k in ("app", "host", "model", "status", "since", "until", "before")):
            if len(f["q_ids"]) == 1:  # an id that names one receipt: go there
                return Response(302, b"", headers={"Location": pages.receipt_href(f["q_ids"][0])})
        rows, total, after = self._rows(f)
        facets = self._memoized(("facets",), queries.serve_facets)
        html = pages.list_page(rows, total, f, facets, self.status(), after, self.cache.version, f["limit"])
        return Response(200, html.encode())

    def list_api(self, query) -> Response:
        f = self._filters(query)
        seen = (query.get("v") or [""])[0]
        if seen == str(self.cache.version):
            return self._json({"version": self.cache.version, "changed": False})
        rows, total, _ = self._rows(f)
        status = self.status()
        return self._json({"version": self.cache.version, "changed": True, "total": total,
                           "total_text": f"{total:,}", "freshness": pages.freshness(status),
                           "rows": [{"id": r["receipt_id"], "cells": pages.list_row(r)} for r in rows]})

    # ---- one receipt -------------------------------------------------------------------------------
    def _receipt(self, ident: str):
        with self.cache.reading() as con:
            rows = queries.dicts(con, "SELECT * FROM receipts WHERE receipt_id = $id", {"id": ident})
            if not rows:  # another id of it (as `receipts show` finds it)
                return None, [{"receipt_id": r} for r in queries.serve_search(con, ident)]
            return (rows[0], queries.receipt_details(con, ident)), None

    def receipt_page(self, ident: str) -> Response:
        got, found = self._receipt(ident)
        if got is None:
            if found and len(found) == 1:
                return Response(302, b"", headers={"Location": pages.receipt_href(found[0]["receipt_id"])})
            if found:
                return Response(302, b"", headers={"Location": "/?" + pages.qs({"q": ident})})
            return Response(404, pages.message_page("No such receipt", f"No receipt matches {ident}.", self.status()).encode())
        r, details = got
        doc = render.to_json(render.receipt_document(r, details))
        network = self.settings.network(r.get("network")) if self.settings and r.get("network") else None
        explorer = getattr(network, "explorer", None) if network else None
        stamp = hashlib.sha256(doc.encode()).hexdigest()[:16]
        return Response(200, pages.receipt_page(r, details, doc, self.status(), explorer, stamp).encode())

    def receipt_api(self, ident: str, stamp_only: bool) -> Response:
        got, found = self._receipt(ident)
        if got is None:
            return self._json({"error": "no such receipt", "matches": [x["receipt_id"] for x in found or []]}, 404)
        doc = render.to_json(render.receipt_document(*got))
        if stamp_only:
            return self._json({"stamp": hashlib.sha256(doc.encode()).hexdigest()[:16]})
        return Response(200, doc.encode(), "application/json")

    # ---- charts ------------------------------------------------------------------------------------
    def chart(self, name: str, query) -> Response:
        f = self._filters(query)
        f.pop("before", None)
        f.pop("limit", None)

        def draw(con) -> str:
            if name == "status":
                return charts.status_counts(queries.status_counts(con, f))
            if name == "spend-payee":
                return charts.spend_by(queries.spend_by(con, f, "pay_to"), "payee")
            if name in ("spend-app", "spend-payee-time"):
                first, last = queries.serve_span(con, f)
                span = (last - first).total_seconds() if first and last else 0
                bucket = "hour" if span <= 3 * 86400 else "day" if span <= 120 * 86400 else "week"
                by, label = ("app_name", "app") if name == "spend-app" else ("pay_to", "payee")
                return charts.spend_over_time(queries.spend_over_time(con, f, bucket, by), bucket, label)
            return ""
        svg = self._memoized(("chart", name, _key(f)), draw)
        if not svg:
            return self._not_found()
        return Response(200, svg.encode(), "image/svg+xml", {"Content-Security-Policy": SVG_CSP})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "receipts-serve"
    sys_version = ""

    def setup(self):
        super().setup()
        # answers go out at once (without it, a keep-alive client waits ~40 ms for each: Nagle + delayed ACK)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):
        self._serve("GET")

    def do_HEAD(self):
        self._serve("HEAD")

    def do_POST(self):
        self._serve("POST")

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _serve(self, method: str) -> None:
        app: App = self.server.app
        try:
            resp = app.handle(method, self.path, self.headers.get("Host"))
        except Exception:  # a bug must not take the server down; say so on the page and in the log
            log.exception("error serving %s", render.safe(self.path, 200))
            resp = Response(500, b"internal error (see the server's log)\n", "text/plain; charset=utf-8")
        self.send_response(resp.status)
        for k, v in {**HEADERS, "Content-Type": resp.type, **resp.headers}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(resp.body)))
        if method != "HEAD":  # one write: headers and body
            self._headers_buffer.append(b"\r\n" + resp.body)
            self.flush_headers()
        else:
            self.end_headers()

    def log_message(self, format, *args):  # noqa: A002 — quiet unless asked
        log.debug("%s %s", self.address_string(), format % args)


def allowed_hosts(host: str, port: int) -> set[str] | None:
    """The Host headers a loopback server answers (None: any, when it listens on a wider address)."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        return None
    names = {"127.0.0.1", "localhost", "[::1]", host if ":" not in host else f"[{host}]"}
    return {f"{n}:{port}" for n in names} | ({n for n in names} if port == 80 else set())


def _interrupt(*_):
    raise KeyboardInterrupt


def run(data_dir: str, host: str = "127.0.0.1", port: int = 8000, cache_path: str | None = None,
        settings=None, refresh: float = 1.0) -> int:
    """Serve until interrupted: listen at once, build (or resume) the cache, then refresh it."""
    cache = ReadCache(data_dir, cache_path).open()
    app = App(cache, settings, data_dir)
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.app = app
    port = server.server_address[1]
    app.allowed_hosts = allowed_hosts(host, port)
    shown = f"[{host}]" if ":" in host else host
    print(f"receipts serve: http://{shown}:{port}/ (data {data_dir}, cache {cache.path})", flush=True)

    def prepare():
        try:
            seconds = cache.build()
            print(f"receipts serve: ready, {app.status()['receipts']:,} receipts "
                  f"(cache built or brought up to date in {seconds:.1f} s); refreshing every {refresh:g} s", flush=True)
        except Exception as exc:
            cache.state, cache.error = "error", str(exc).splitlines()[0]
            print(f"receipts serve: the cache could not be built: {cache.error}", file=sys.stderr, flush=True)
            return
        cache.start(refresh)
    threading.Thread(target=prepare, name="receipts-cache-build", daemon=True).start()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        cache.close()
    return 0
