"""The mitmproxy addon: turns AI-call flows into journal events, durably, without touching traffic.

Hooks stay short; the translation lives in addon/exchange.py (pure) and the disk in storage/.
- `requestheaders`: a recorded request whose body is large or of unknown length is recorded here,
  before mitmproxy forwards its headers, and its body streams through a hashing tap (addon/bodies.py);
- `request`: any other recorded request, before mitmproxy forwards it (the hook is awaited);
- `responseheaders`: an answer that streams (server-sent events, large or open-ended bodies) is
  recorded here, before the client gets a byte, and tapped chunk by chunk (never buffered);
- `response`: a buffered answer, before the client gets it; for a streamed one, a `stream_end` event;
- `error`: client gone, upstream refused or timed out, TLS failure.
Every event is written before the traffic moves on (it survives the proxy being killed); events of
paid calls are also fsync'd first (they survive a power cut) — in `full` mode every event is.

Fail closed: a paid exchange is never passed on unless its events are written. If the journal cannot
be written, or anything unexpected goes wrong while recording a paid exchange, the client gets a 503
with `X-Receipts-Error` instead (the request is not forwarded; an upstream answer is not passed on).
Unpaid traffic keeps flowing, unrecorded, with the failure logged once per flow. A response is
stamped with `X-Receipt-Id` only once its request and answer are both in the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, cast

import orjson
from mitmproxy import ctx, exceptions, http
from mitmproxy.net.http.http1.read import expected_http_body_size

from receipts.storage import config as cfg
from receipts.storage.db import ensure_database_file
from receipts.storage.journal import Journal, Throttle
from receipts.storage.private import private_umask, secure_data_dir
from receipts.storage.records import Event, uuid7

from . import bodies, intercept, pin, pricing, process
from . import exchange as X
from .limits import ConnectionLimits
from .linker import Linker

log = logging.getLogger("receipts")
REFUSABLE = ("requestheaders", "request", "responseheaders", "response")  # hooks before bytes reach the other side


@dataclass
class FlowState:
    receipt_id: str
    logical_id: str
    keys: list
    paid: bool
    recorded: bool = False  # its request event is in the journal
    refused: str | None = None  # the hook in which the recorder answered it with a 503
    pending: list | None = None  # events to write with the next ones (a request discovered late)
    upload: bodies.Tap | None = None  # a request body streaming through
    tap: bodies.Tap | None = None  # an answer streaming through (its response event is written)
    request_body: dict | None = None  # the streamed request body's record, once it ended
    call: tuple = (None, None)  # the request's host and model (what prices its answer)
    protocol: str | None = None  # MCP or A2A: where the answer's payment fields are (X.BODY_PROTOCOLS)

    def take_pending(self) -> list:
        pending, self.pending = self.pending or [], None
        if pending:
            self.recorded = True  # written with the events that follow
        return pending


def to_req(flow: http.HTTPFlow) -> X.Req:
    r = flow.request
    peer = flow.client_conn.peername or (None, None)
    headers, raw = X.decode_fields(r.headers.fields)
    path, path_raw = X.decode_text(r.data.path)
    if path_raw:
        raw = {**(raw or {}), ":path": [path_raw]}
    body, error = _content(r)
    return X.Req(
        method=X.clean(r.method),
        scheme=X.clean(r.scheme),
        host=X.clean(r.pretty_host),
        port=r.port,
        path=path,
        headers=headers,
        body=body,
        ts=r.timestamp_start,
        http_version=X.clean(r.http_version),
        client=peer[0],
        client_port=peer[1],
        raw_b64=raw,
        body_error=error,
    )


def to_resp(flow: http.HTTPFlow, streamed: bool = False) -> X.Resp:
    r = flow.response
    assert r is not None  # (called once the flow has its answer)
    headers, raw = X.decode_fields(r.headers.fields)
    body, error = (None, None) if streamed else _content(r)
    return X.Resp(
        status=r.status_code,
        headers=headers,
        body=body,
        ts_start=r.timestamp_start,
        ts_end=r.timestamp_end,
        reason=X.clean(r.reason),
        http_version=X.clean(r.http_version),
        raw_b64=raw,
        body_error=error,
    )


def _content(message: http.Message) -> tuple[bytes | None, str | None]:
    """The body as the app sees it, decoded with a cap (None: it streamed through)."""
    if message.raw_content is None or message.stream:
        return None, None
    encoding = message.headers.get("content-encoding")
    return (message.raw_content, None) if not encoding else bodies.decode(message.raw_content, encoding)


def _guarded(hook):
    """Any exception in a hook is caught: a paid exchange is refused (503), anything else passes; the
    failure is logged once, with the flow's id. Hooks are plain functions that return a coroutine only
    when they have something to write: the unrecorded majority of traffic costs no coroutine."""
    name = hook.__name__

    @functools.wraps(hook)
    def run(self: Recorder, flow: http.HTTPFlow):
        try:
            work = hook(self, flow)
        except Exception as exc:
            return self._hook_failed(name, flow, exc)
        return None if work is None else self._guard(name, flow, work)

    return run


class Recorder:
    def __init__(self) -> None:
        self.settings: cfg.Settings | None = None
        self.journal: Journal | None = None
        self.linker = Linker()
        self.limits: ConnectionLimits | None = None
        self._flows: dict[str, FlowState] = {}  # live flows by flow id (metadata must stay serializable)
        self._registry: pin.RegistryCache | None = None  # reverse mode with a pin: the TEE registry
        self._pins: dict[str, pin.PinResult | str] = {}  # pin result by server connection id
        self._learned: set[str] = set()  # hosts where x402 was seen (addon/intercept.py)
        self._owners: dict[str, asyncio.Future] = {}  # client connection id -> its process (lookup)
        self._matched: dict[str, str | None] = {}  # why a flow is recorded, from requestheaders to request
        self._alarm = Throttle(10.0, log)  # journal write failures
        self._over_limit = Throttle(10.0, log)  # connections closed by the limits

    # ---- options and lifecycle ---------------------------------------------------------------
    def load(self, loader) -> None:
        pricing.warm_up()  # (the price table's import, off the first priced call's path)
        private_umask()  # what the recorder (and mitmproxy, DuckDB) writes is the user's only: storage/private.py
        loader.add_option(
            "receipts_config",
            Optional[str],  # noqa: UP045 (mitmproxy's option types are typing's)
            None,
            "Path of mitm_config.yaml (default: the one beside the addon).",
        )
        for o in cfg.OPTIONS:  # (storage/config.py: each declared once, with its flag and its check)
            if o.mitm:
                loader.add_option(o.mitm, Optional[str], None, o.help_text())  # noqa: UP045
        loader.add_option("receipts_ai_paths", Sequence[str], [], "More AI paths to record (path suffixes).")
        loader.add_option("receipts_rules", Sequence[str], [], "More traffic to record, as HOSTGLOB/PATHGLOB.")

    def _cfg(self) -> cfg.Settings:  # (a method: mitmproxy reads an addon's attributes when it loads it)
        assert self.settings is not None  # (set by configure, which mitmproxy runs before any traffic)
        return self.settings

    def configure(self, updated: set[str]) -> None:
        if not any(name.startswith("receipts_") for name in updated) and self.settings:
            return
        settings = self._settings()
        if self.journal and self.settings and _journal_settings(settings) != _journal_settings(self.settings):
            self.journal.close()
            self.journal = None
        self.settings = settings
        self._learned = set(intercept.read_learned(settings.data_dir))
        if self.journal is None:
            self.journal = self._open_journal(settings)
        self.limits = ConnectionLimits(
            settings.max_client_connections, settings.header_timeout, settings.idle_timeout, _close_connection
        )
        self._registry = _registry_cache(settings) if _reverse(ctx.options) and settings.og_pin != "off" else None

    def _settings(self) -> cfg.Settings:
        opts = ctx.options
        overrides = {o.setting: getattr(opts, o.mitm) for o in cfg.OPTIONS if o.mitm}
        try:
            settings = cfg.load(opts.receipts_config, overrides)
            return cfg.with_extras(settings, list(opts.receipts_rules), list(opts.receipts_ai_paths))
        except cfg.ConfigError as exc:
            raise exceptions.OptionsError(str(exc)) from None

    def _open_journal(self, settings: cfg.Settings) -> Journal:
        journal = Journal(
            settings.data_dir,
            "proxy",
            durability=settings.durability,
            seal_interval=settings.seal_interval,
            compact_after=settings.compact_after,
            compact_grace=settings.compact_grace,
        )
        try:
            secure_data_dir(settings.data_dir, settings.ca_path)  # 0700; tightened if an older version left it open
            journal.start()
            ensure_database_file(settings.data_dir)
        except OSError as exc:
            raise exceptions.OptionsError(
                f"cannot use data directory {settings.data_dir}: {exc.strerror or exc}."
            ) from None
        log.info(
            "receipts: recording into %s (writer %s, %s durability)", journal.root, journal.writer, settings.durability
        )
        return journal

    def done(self) -> None:
        if self.limits:
            self.limits.stop()
        if self.journal:
            self.journal.close()
            self.journal = None

    # ---- hooks: connections ------------------------------------------------------------------
    def client_connected(self, client) -> None:
        try:
            assert self.limits is not None  # (set by configure, which mitmproxy runs before any traffic)
            why = self.limits.connected(client.id, (client.peername or ("?",))[0])
        except Exception as exc:
            log.error("receipts: internal error in client_connected (%s: %s)", type(exc).__name__, exc)
            return
        if why:
            client.error = why
            self._over_limit.error("receipts: closed a connection: %s", why)

    def client_disconnected(self, client) -> None:
        self._owners.pop(client.id, None)
        if self.limits:
            self.limits.disconnected(client.id)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if self.limits:  # a CONNECT's headers are complete; the tunnel's requests come next
            self.limits.started(flow.client_conn.id)
            self.limits.ended(flow.client_conn.id)

    def tcp_start(self, flow) -> None:
        if self.limits:
            self.limits.tunnelled(flow.client_conn.id)

    def websocket_start(self, flow) -> None:
        if self.limits:
            self.limits.tunnelled(flow.client_conn.id)

    # ---- hooks: exchanges ----------------------------------------------------------------------
    @_guarded
    def requestheaders(self, flow: http.HTTPFlow):
        assert self.limits is not None  # (set by configure, which mitmproxy runs before any traffic)
        self.limits.started(flow.client_conn.id)
        if flow.request.headers.get("content-length", "0") != "0" or "transfer-encoding" in flow.request.headers:
            _ack_now(flow.client_conn.id)  # (its body may wait for this ACK: see _ack_now)
        match = self._matched[flow.id] = self._match(flow)
        if match is not None and self._streams(flow.request, None):
            return self._record_upload(flow, match)  # else recorded (or not) in `request`, its body read whole

    @_guarded
    def request(self, flow: http.HTTPFlow):
        match = self._matched.pop(flow.id, None) if flow.id in self._matched else self._match(flow)
        st = self._flows.get(flow.id)
        if st is not None:  # recorded at its headers: its body has streamed through by now
            st.request_body = st.upload.record() if st.upload else None
        elif match in X.BODY_PROTOCOLS:  # MCP, A2A: only a tool call or a message send is recorded
            call = X.body_call(match, flow.request.content, X.clean(flow.request.path))
            if call is not None:
                return self._record_request(flow, to_req(flow), match, call)
        elif match is not None:
            return self._record_request(flow, to_req(flow), match)

    @_guarded
    def responseheaders(self, flow: http.HTTPFlow):
        st = self._flows.get(flow.id)
        if st is None or st.refused:
            return
        assert flow.response is not None  # (the responseheaders hook: the answer's headers are in)
        sse = flow.response.headers.get("content-type", "").lower().startswith("text/event-stream")
        if sse or self._streams(flow.request, flow.response):
            return self._record_streamed_answer(flow, st, sse)  # else recorded in `response`, read whole

    @_guarded
    def response(self, flow: http.HTTPFlow):
        st = self._flows.pop(flow.id, None)
        assert self.limits is not None  # (set by configure, which mitmproxy runs before any traffic)
        self.limits.ended(flow.client_conn.id)
        assert flow.response is not None  # (the response hook: the answer is in)
        if st is None:
            st = self._discovered(flow)  # not an AI call by its request, but x402 by its answer
            if st is None:
                return None
        if st.refused == "responseheaders":  # the refusal replaced a streaming answer
            if not flow.response.raw_content:  # the upstream's body was empty: mitmproxy emptied ours
                flow.response.content = _refusal(answer=True).content
            return None
        if st.tap is not None:
            return self._write_answer(flow, st, self._stream_end(flow, st))
        if not flow.response.stream:  # (streamed by mitmproxy itself, not by this recorder: nothing to read)
            events = self._answer(flow, st)
            self.linker.outcome(st.keys, flow.response.status_code < 400 and not events[-1].data.get("challenge"))
            return self._write_answer(flow, st, events)

    async def _record_upload(self, flow: http.HTTPFlow, match: str) -> None:
        """A large or open-ended upload: recorded before its headers go on, its body hashed as it passes."""
        st = await self._record_request(flow, to_req(flow), match)
        if not st.refused:
            st.upload = flow.request.stream = bodies.Tap()
        else:
            flow.request.stream = False

    async def _record_streamed_answer(self, flow: http.HTTPFlow, st: FlowState, sse: bool) -> None:
        """An answer that streams: its event is written before the client gets a byte."""
        data = X.response_data(to_resp(flow, streamed=True), flow.request.timestamp_start, self._cfg(), stream=True)
        self._annotate(flow, st, data)
        assert flow.response is not None  # (to_resp has checked it: called from responseheaders)
        if await self._write([Event("response", st.receipt_id, data, ts=time.time())], st):
            st.tap = flow.response.stream = bodies.Tap(sse=sse)
            self._stamp(flow, st)
        elif st.paid:
            self._refuse(flow, st, "responseheaders")
        else:
            flow.response.stream = True  # unrecorded: it passes through without being held

    async def _write_answer(self, flow: http.HTTPFlow, st: FlowState, events: list[Event]) -> None:
        written = await self._write(events, st)
        if st.tap is None and not st.refused:
            if written:
                self._stamp(flow, st)
            elif st.paid:
                self._refuse(flow, st, "response")

    def _discovered(self, flow: http.HTTPFlow) -> FlowState | None:
        assert flow.response is not None  # (called from the response hook)
        assert self.settings is not None  # (set by configure, which mitmproxy runs before any traffic)
        if flow.response.stream or not self.settings.capture_x402:
            return None
        resp = to_resp(flow)
        if not X.response_is_x402(resp, resp.h):
            return None
        st, first = self._start(flow, to_req(flow), "x402-response")
        st.pending = [first]  # written with the answer
        return st

    def _answer(self, flow: http.HTTPFlow, st: FlowState) -> list[Event]:
        """The events of a buffered answer (and of its request, if discovered only now)."""
        data = X.response_data(
            to_resp(flow), flow.request.timestamp_start, self._cfg(), call=st.call, protocol=st.protocol
        )
        self._annotate(flow, st, data)
        self.linker.remember_challenge(st.logical_id, data.get("challenge"))
        self.linker.remember_task(st.logical_id, (data.get("a2a") or {}).get("task_id"), time.time())
        return st.take_pending() + [Event("response", st.receipt_id, data, ts=time.time())]

    def _stream_end(self, flow: http.HTTPFlow, st: FlowState) -> list[Event]:
        event = self._streamed(flow, st)
        assert flow.response is not None  # (called from the response hook)
        self.linker.outcome(
            st.keys,
            flow.response.status_code < 400 and bool(event.data.get("done")) and not event.data.get("challenge"),
        )
        return [event]

    def _streamed(self, flow: http.HTTPFlow, st: FlowState) -> Event:
        """The stream_end event of a streamed answer: what its tap saw pass, to its end or until it broke off."""
        now = time.time()
        assert flow.response is not None  # (the answer's headers came: its tap was set then)
        summary = X.streamed_summary(st.tap, _headers(flow.response))
        data = X.stream_end_data(summary, flow.request.timestamp_start, now, st.call, st.protocol)
        self.linker.remember_task(st.logical_id, (data.get("a2a") or {}).get("task_id"), now)
        self._annotate(flow, st, data, headers=False)
        return Event("stream_end", st.receipt_id, data, ts=now)

    @_guarded
    def error(self, flow: http.HTTPFlow):
        self._matched.pop(flow.id, None)
        st = self._flows.pop(flow.id, None)
        assert self.limits is not None  # (set by configure, which mitmproxy runs before any traffic)
        self.limits.ended(flow.client_conn.id)
        if st is not None and flow.error is not None:
            return self._record_error(flow, st)

    async def _record_error(self, flow: http.HTTPFlow, st: FlowState) -> None:
        self.linker.outcome(st.keys, False)
        assert flow.error is not None  # (the error hook calls this only with an error)
        msg = flow.error.msg
        phase = "response" if flow.response else "request"
        data = X.error_data(X.classify_error(msg), msg, phase)
        upstream = self._upstream(flow)
        if upstream and upstream["result"] != "match":
            found = self._pins[flow.server_conn.id]
            why = found if isinstance(found, str) else found.explain()
            data = {**X.error_data(f"tee_pin_{upstream['result']}", why, "tls"), "upstream": upstream}
            log.warning("receipts: refused upstream %s: %s", X.clean(flow.request.pretty_host), why)
        if st.tap is not None and flow.response is not None:
            # what the streamed answer carried before it broke off, then how it broke off (a client that hangs
            # up once it has an MCP tool's result: the settlement in what it got is part of the receipt)
            events = [self._streamed(flow, st)]
        else:
            self._annotate(flow, st, data, headers=False)
            events = []
        await self._write([*events, Event("error", st.receipt_id, data, ts=time.time())], st)

    def tls_failed_client(self, data) -> None:
        """A client refused our certificate (often: it pins its server's): keep a trace of it."""
        try:
            peer = data.context.client.peername or (None, None)
            sni = X.clean(data.context.client.sni or "") or None
            msg = X.clean(str(data.conn.error or "client refused the proxy's certificate"))
            server = data.context.server.address or (None, None)
            payload = {
                **X.error_data("client_tls_refused", msg, "tls"),
                "host": sni or server[0],
                "port": server[1],
                "client": peer[0],
            }
            assert self.journal is not None  # (set by configure, which mitmproxy runs before any traffic)
            self.journal.append([Event("error", uuid7(), payload)])
        except Exception as exc:
            log.error("receipts: could not record a refused certificate (%s: %s)", type(exc).__name__, exc)
            return
        assert self.settings is not None  # (set by configure, which mitmproxy runs before any traffic)
        log.warning(
            "receipts: client %s refused the proxy certificate for %s (%s): if it pins certificates, "
            "use reverse-proxy mode; otherwise make it trust %s",
            peer[0],
            sni,
            msg,
            self.settings.ca_cert,
        )

    async def tls_start_server(self, data) -> None:
        """Reverse mode: the upstream must present the certificate the TEE registry lists for it."""
        if self._registry is None or not data.conn.address:
            return
        if data.ssl_conn is None:  # script addons run before mitmproxy's TLS setup: let it build the
            ctx.master.addons.get("tlsconfig").tls_start_server(data)  # connection, then replace the check
        records = await asyncio.to_thread(self._registry.records)
        host, port = data.conn.address[0], data.conn.address[1]
        assert self.settings is not None  # (set by configure, which mitmproxy runs before any traffic)
        conn_id, enforce = data.conn.id, self.settings.og_pin == "enforce"

        chain_ok = [True]

        def verify(_conn, cert, _errno, depth, ok) -> bool:
            if depth:  # the chain above the leaf: a TEE is trusted by its leaf alone; others by the chain
                chain_ok[0] = chain_ok[0] and bool(ok)
                return True
            if records is None:
                registry = cast(pin.RegistryCache, self._registry)  # (not None: checked above, read now as before)
                self._pins[conn_id] = f"the TEE registry could not be read ({registry.error})"
                return not enforce
            result = pin.check(_der(cert), host, port, records)
            self._pins[conn_id] = result
            if result.result == "unregistered":  # not an OpenGradient TEE: the usual TLS checks, no pin
                return chain_ok[0] and bool(ok)
            return result.ok or not enforce

        from OpenSSL import SSL

        data.ssl_conn.set_verify(SSL.VERIFY_PEER, verify)
        while len(self._pins) > 10_000:
            self._pins.pop(next(iter(self._pins)))

    # ---- helpers -----------------------------------------------------------------------------
    async def _record_request(self, flow: http.HTTPFlow, req: X.Req, match: str, call: dict | None = None) -> FlowState:
        """Write the request event before the request goes on; refuse a paid one that cannot be written."""
        st, event = self._start(flow, req, match, call)
        owner = await self._owner(flow)
        event.data["process"] = owner
        event.data["app_name"] = process.app_name(owner, req.h.get("user-agent"), req.client)
        st.recorded = await self._write([event], st)
        if not st.recorded and st.paid:
            self._refuse(flow, st, "request")
        return st

    def _streams(self, request: http.Request, response: http.Response | None) -> bool:
        """Whether a recorded body streams through instead of being read whole (addon/bodies.py)."""
        message = response if response is not None else request
        assert self.settings is not None  # (set by configure, which mitmproxy runs before any traffic)
        if message.stream:
            return True
        length = message.headers.get("content-length")
        if length is not None and length.isdigit() and len(length) < 12:  # the common case, without parsing
            return int(length) > self.settings.stream_bodies_above
        if response is None and (request.is_http2 or request.is_http3) and "content-length" not in request.headers:
            return request.method not in ("GET", "HEAD")  # an HTTP/2 upload of unknown length
        try:
            size = expected_http_body_size(request, response)
        except ValueError:  # a malformed content-length: read whole, as mitmproxy does
            return False
        return bodies.must_stream(size, self.settings.stream_bodies_above)

    def _annotate(self, flow: http.HTTPFlow, st: FlowState, data: dict, headers: bool = True) -> None:
        """What the recorder adds to an answer's payload: the reverse-mode pin, a streamed request's body."""
        if headers and (upstream := self._upstream(flow)):
            data["upstream"] = upstream
        if st.request_body is not None:
            data["request_body"] = st.request_body

    async def _guard(self, hook: str, flow: http.HTTPFlow, work) -> None:
        try:
            await work
        except Exception as exc:
            self._hook_failed(hook, flow, exc)

    def _hook_failed(self, hook: str, flow: http.HTTPFlow, exc: Exception) -> None:
        st = self._flows.get(flow.id)
        paid = st.paid if st is not None else self._may_be_paid(flow)
        refuse = paid and hook in REFUSABLE
        log.error(
            "receipts: internal error in the %s hook of flow %s (%s: %s); %s",
            hook,
            flow.id,
            type(exc).__name__,
            exc,
            "the paid exchange was refused (503)"
            if refuse
            else "the exchange passes unrecorded"
            if not paid
            else "the exchange was already under way",
        )
        log.debug("receipts: traceback of that error", exc_info=exc)
        if refuse:
            self._refuse(flow, st, hook, "internal-error")
        elif st is not None:
            st.recorded = False  # never stamp what may not be recorded

    def _may_be_paid(self, flow: http.HTTPFlow) -> bool:
        """Before the recorder knew (its hook failed first): whether the request carries a payment in its
        headers (x402, a sign-in, an L402 or MPP credential, a crawler's price), or may in its body (MCP, A2A:
        taken as paid). Unsure is paid."""
        try:
            return X.is_paid(_headers(flow.request)) or self._match(flow) in X.BODY_PROTOCOLS
        except Exception:
            return True

    def _refuse(self, flow: http.HTTPFlow, st: FlowState | None, hook: str, kind: str = "journal-unavailable") -> None:
        """Answer the client with a 503 instead of passing the paid exchange on."""
        reason = self.journal.last_error if self.journal and kind == "journal-unavailable" else None
        if st is not None:
            st.refused, st.recorded = hook, False
        if hook in ("requestheaders", "request"):
            flow.request.stream = False
            flow.response = _refusal(kind, reason)
        elif flow.response is not None and not (hook == "response" and callable(flow.response.stream)):
            flow.response = _refusal(kind, reason, streamed=hook == "responseheaders", answer=True)

    async def _owner(self, flow: http.HTTPFlow) -> dict | None:
        """The local process behind this client connection (looked up once per connection, in a thread;
        a lookup slower than 250 ms is not waited for)."""
        conn = flow.client_conn
        if not conn.peername or not conn.sockname:
            return None
        if conn.id not in self._owners:
            self._owners[conn.id] = asyncio.ensure_future(
                asyncio.to_thread(process.owner_of, conn.peername[:2], conn.sockname[1])
            )
        try:
            return await asyncio.wait_for(asyncio.shield(self._owners[conn.id]), 0.25)
        except Exception:  # timed out, or /proc could not be read: the call keeps address and user agent
            return None

    def _upstream(self, flow: http.HTTPFlow) -> dict | None:
        """What the pin said about the upstream of this flow (reverse mode only)."""
        found = self._pins.get(flow.server_conn.id) if flow.server_conn else None
        if found is None:
            return None
        assert self.settings is not None  # (a pin is checked only once configure has set it)
        if isinstance(found, str):
            return {"result": "unchecked", "why": found, "mode": self.settings.og_pin}
        return {**found.as_dict(), "mode": self.settings.og_pin}

    def _match(self, flow: http.HTTPFlow) -> str | None:
        return X.request_match(
            _header_names(flow.request),
            X.clean(flow.request.pretty_host),
            X.clean(flow.request.path),
            self._cfg(),
            flow.request.headers.get("authorization"),
        )

    def _start(self, flow: http.HTTPFlow, req: X.Req, match: str, call: dict | None = None) -> tuple[FlowState, Event]:
        if match.startswith("x402"):
            self._learn(flow.request.host)
        receipt_id = uuid7(req.ts)
        logical, keys, data = self.linker.open(
            req, self._cfg(), receipt_id=receipt_id, match=match, source="proxy", call=call
        )
        paid = X.is_paid(req.h) or (call or {}).get("payment") is not None  # (MCP's and A2A's travel in the body)
        st = FlowState(
            receipt_id,
            logical,
            keys,
            paid=paid,
            call=(data.get("host"), data.get("model")),
            protocol=match if match in X.BODY_PROTOCOLS else None,
        )
        self._flows[flow.id] = st
        flow.metadata["receipt_id"] = receipt_id  # shown in mitmweb, saved with flow files
        return st, Event("request", receipt_id, data, ts=req.ts, id=uuid7())

    def _learn(self, host: str) -> None:
        """A host where x402 was seen: opened from now on, and at the next start (addon/intercept.py)."""
        host = host.lower()
        if host in self._learned:
            return
        self._learned.add(host)
        assert self.settings is not None  # (set by configure, which mitmproxy runs before any traffic)
        try:
            intercept.learn(self.settings.data_dir, host)
        except OSError as exc:  # the call is recorded all the same; only the hint is lost
            log.warning("receipts: cannot remember the x402 host %s: %s", host, exc)
        allowed = list(ctx.options.allow_hosts)
        if allowed:
            ctx.options.update(allow_hosts=[*allowed, intercept.host_regex(host)])

    async def _write(self, events: list[Event], st: FlowState) -> bool:
        """Write before the traffic moves on; for paid calls (or `full`), also wait for the fsync."""
        try:
            assert self.journal is not None  # (set by configure, which mitmproxy runs before any traffic)
            fut = self.journal.append(events, fsync=st.paid)
            if not fut.done():
                await asyncio.wrap_future(fut)
            fut.result()
            return True
        except Exception as exc:
            self._alarm.error(
                "receipts: JOURNAL WRITE FAILED, refusing paid requests (503), unpaid traffic passes unrecorded: %s",
                exc,
            )
            return False

    def _stamp(self, flow: http.HTTPFlow, st: FlowState) -> None:
        """Stamp the receipt id, only on an exchange whose request and answer are both recorded."""
        assert self.settings is not None  # (set by configure, which mitmproxy runs before any traffic)
        if self.settings.stamp_receipt_id and st.recorded and not st.refused and flow.response is not None:
            flow.response.headers["X-Receipt-Id"] = st.receipt_id


def _refusal(
    kind: str = "journal-unavailable", reason: str | None = None, streamed: bool = False, answer: bool = False
) -> http.Response:
    why = reason or (
        "the journal cannot be written"
        if kind == "journal-unavailable"
        else "an internal error occurred while recording it"
    )
    what = "did not pass on the answer to this paid request" if answer else "did not forward this paid request"
    body = orjson.dumps(
        {
            "error": {
                "type": f"receipts_{kind.replace('-', '_')}",
                "message": f"The receipts recorder {what} because it could not record it "
                f"({why}). Fix the cause, then retry.",
            }
        }
    )
    resp = http.Response.make(503, body, {"content-type": "application/json", "x-receipts-error": kind})
    if streamed:  # replaces an answer whose body is on its way: that body is dropped, this one is sent
        resp.stream = _once(body)
    return resp


def _once(body: bytes):
    sent: list[bool] = []

    def emit(_chunk: bytes) -> bytes:
        if sent:
            return b""
        sent.append(True)
        return body

    return emit


def _header_names(request: http.Request) -> set[str]:
    return {k.decode("latin-1").lower() for k, _ in request.headers.fields}


def _headers(message: http.Message) -> X.Headers:
    return X.Headers.of(X.decode_fields(message.headers.fields)[0])


def _close_connection(conn_id: str, why: str) -> None:
    """Close a client connection (mitmproxy's proxy server holds the connection handlers)."""
    handler = ctx.master.addons.get("proxyserver").connections.get(conn_id)
    task = handler.transports.get(handler.client) if handler else None
    if task and task.handler:
        task.handler.cancel(why)
        log.info("receipts: closed client connection %s (%s)", conn_id, why)


def _ack_now(conn_id: str) -> None:
    """Acknowledge what the client sent at once (Linux: TCP_QUICKACK, which also sends a pending ACK).
    A client that writes a request's headers and body separately without TCP_NODELAY (requests and
    urllib3 do, through a proxy) holds the body until its headers are acknowledged, and a delayed ACK
    holds that up to 40 ms: every such call would be 40 ms slower through the proxy than direct."""
    server = ctx.master.addons.get("proxyserver") if _QUICKACK is not None else None
    handler = getattr(server, "connections", {}).get(conn_id)
    io = handler.transports.get(handler.client) if handler else None
    sock = io.writer.get_extra_info("socket") if io and io.writer else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)


_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def _reverse(options) -> bool:
    return any(str(m).startswith("reverse:") for m in getattr(options, "mode", []) or [])


def _registry_cache(settings: cfg.Settings) -> pin.RegistryCache | None:
    """The registry the pin is checked against (None: no registry configured, nothing matches)."""
    from receipts.storage.registry import Registry
    from receipts.storage.rpc import Rpc

    net = settings.network(settings.og_network)
    if not settings.og_registry or not net or not net.rpc:
        return pin.RegistryCache(lambda: [])
    rpc = Rpc(net.rpc, timeout=net.rpc_timeout, chain_id=int(settings.og_network.split(":")[1]), retries=1)
    return pin.RegistryCache(Registry(rpc, settings.og_registry).records)


def _der(cert) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.to_cryptography().public_bytes(Encoding.DER)


def _journal_settings(s: cfg.Settings) -> tuple:
    return s.data_dir, s.durability, s.seal_interval, s.compact_after, s.compact_grace
