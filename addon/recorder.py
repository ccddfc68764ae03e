"""The mitmproxy addon: turns AI-call flows into journal events, durably, without touching traffic.

Hooks stay short; the translation lives in addon/exchange.py (pure) and the disk in storage/.
- `request`: recorded and fsync'd *before* mitmproxy forwards it (the hook is awaited).
- `responseheaders`: a server-sent-event stream is tapped chunk by chunk (never buffered).
- `response`: recorded before the client gets it; for a stream, a `stream_end` event.
- `error`: client gone, upstream refused or timed out, TLS failure.
Every event is written before the traffic moves on (it survives the proxy being killed); events of
paid calls are also fsync'd first (they survive a power cut) — in `full` mode every event is. If the
journal cannot be written, a paid request is answered with a 503 instead of being forwarded
unrecorded; unpaid traffic keeps flowing. Both are logged as errors.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Optional

import orjson
from mitmproxy import ctx, exceptions, http

from storage import config as cfg
from storage.db import ensure_database_file
from storage.journal import Journal
from storage.private import private_umask, secure_data_dir
from storage.records import Event, uuid7

from . import exchange as X
from . import pin, process
from .linker import Linker
from .sse import SSEParser

log = logging.getLogger("receipts")
OPTIONS = {  # option name -> (settings field, help)
    "receipts_data": ("data_dir", "Data directory for the journal (default ./data, or RECEIPTS_DATA)."),
    "receipts_bodies": ("bodies", "Body storage: none | hash | full."),
    "receipts_durability": ("durability", "full | strict (default) | relaxed; see mitm_config.yaml."),
    "receipts_stamp": ("stamp_receipt_id", "Add X-Receipt-Id to recorded responses: true | false."),
    "receipts_capture_x402": ("capture_x402", "Record anything carrying x402 headers: true | false."),
    "receipts_seal_interval": ("seal_interval", "Seconds before written events become visible to queries."),
    "receipts_body_max_bytes": ("body_max_bytes", "Largest body kept in full mode."),
    "receipts_compact_after": ("compact_after", "Sealed segments that trigger compaction into Parquet."),
    "receipts_compact_grace": ("compact_grace", "Seconds compacted segments stay readable."),
    "receipts_pin": ("og_pin", "Reverse mode: enforce | record | off, the TEE registry's certificate pin."),
}


@dataclass
class FlowState:
    receipt_id: str
    logical_id: str
    keys: list
    paid: bool
    parser: SSEParser | None = None


def to_req(flow: http.HTTPFlow) -> X.Req:
    r = flow.request
    peer = flow.client_conn.peername or (None, None)
    return X.Req(method=r.method, scheme=r.scheme, host=r.pretty_host, port=r.port, path=r.path,
                 headers=_fields(r.headers), body=_content(r), ts=r.timestamp_start,
                 http_version=r.http_version, client=peer[0], client_port=peer[1])


def to_resp(flow: http.HTTPFlow, streamed: bool = False) -> X.Resp:
    r = flow.response
    return X.Resp(status=r.status_code, headers=_fields(r.headers),
                  body=None if streamed else _content(r), ts_start=r.timestamp_start,
                  ts_end=r.timestamp_end, reason=r.reason, http_version=r.http_version)


def _fields(headers: http.Headers) -> list[tuple[str, str]]:
    return [(k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")) for k, v in headers.fields]


def _content(message: http.Message) -> bytes | None:
    if message.raw_content is None:
        return None
    if not any(k.lower() == b"content-encoding" for k, _ in message.headers.fields):
        return message.raw_content
    try:
        return message.get_content(strict=False)
    except Exception:  # an undecodable Content-Encoding: keep the bytes as they came
        return message.raw_content


class Recorder:
    def __init__(self) -> None:
        self.settings: cfg.Settings | None = None
        self.journal: Journal | None = None
        self.linker = Linker()
        self._flows: dict[str, FlowState] = {}  # live flows by flow id (metadata must stay serializable)
        self._registry: pin.RegistryCache | None = None  # reverse mode with a pin: the TEE registry
        self._pins: dict[str, pin.PinResult | str] = {}  # pin result by server connection id
        self._owners: dict[str, asyncio.Future] = {}  # client connection id -> its process (lookup)

    # ---- options and lifecycle ---------------------------------------------------------------
    def load(self, loader) -> None:
        private_umask()  # what the recorder (and mitmproxy, DuckDB) writes is the user's only: storage/private.py
        loader.add_option("receipts_config", Optional[str], None,
                          "Path of mitm_config.yaml (default: the one beside the addon).")
        for name, (_, help_) in OPTIONS.items():
            loader.add_option(name, Optional[str], None, help_)
        loader.add_option("receipts_ai_paths", Sequence[str], [], "More AI paths to record (path suffixes).")
        loader.add_option("receipts_rules", Sequence[str], [], "More traffic to record, as HOSTGLOB/PATHGLOB.")

    def configure(self, updated: set[str]) -> None:
        if not any(name.startswith("receipts_") for name in updated) and self.settings:
            return
        settings = self._settings()
        if self.journal and _journal_settings(settings) != _journal_settings(self.settings):
            self.journal.close()
            self.journal = None
        self.settings = settings
        if self.journal is None:
            self.journal = self._open_journal(settings)
        self._registry = _registry_cache(settings) if _reverse(ctx.options) and settings.og_pin != "off" else None

    def _settings(self) -> cfg.Settings:
        opts = ctx.options
        overrides = {field_: getattr(opts, name) for name, (field_, _) in OPTIONS.items()}
        try:
            settings = cfg.load(opts.receipts_config, overrides)
            return cfg.with_extras(settings, list(opts.receipts_rules), list(opts.receipts_ai_paths))
        except cfg.ConfigError as exc:
            raise exceptions.OptionsError(str(exc)) from None

    def _open_journal(self, settings: cfg.Settings) -> Journal:
        journal = Journal(settings.data_dir, "proxy", durability=settings.durability,
                          seal_interval=settings.seal_interval, compact_after=settings.compact_after,
                          compact_grace=settings.compact_grace)
        try:
            secure_data_dir(settings.data_dir, settings.ca_path)  # 0700; tightened if an older version left it open
            journal.start()
            ensure_database_file(settings.data_dir)
        except OSError as exc:
            raise exceptions.OptionsError(
                f"cannot use data directory {settings.data_dir}: {exc.strerror or exc}.") from None
        log.info("receipts: recording into %s (writer %s, %s durability)",
                 journal.root, journal.writer, settings.durability)
        return journal

    def done(self) -> None:
        if self.journal:
            self.journal.close()
            self.journal = None

    # ---- hooks -------------------------------------------------------------------------------
    async def request(self, flow: http.HTTPFlow) -> None:
        match = self._match(flow)
        if match is None:
            return
        req = to_req(flow)
        st, event = self._start(flow, req, match)
        owner = await self._owner(flow)
        event.data["process"] = owner
        event.data["app_name"] = process.app_name(owner, req.h.get("user-agent"), req.client)
        if not await self._write([event], st) and st.paid:
            flow.response = self._refusal()

    async def responseheaders(self, flow: http.HTTPFlow) -> None:
        st = self._flows.get(flow.id)
        ctype = flow.response.headers.get("content-type", "")
        if st is None or not ctype.lower().startswith("text/event-stream"):
            return
        st.parser = SSEParser()
        flow.response.stream = self._tap(st.parser)
        self._stamp(flow, st)
        data = X.response_data(to_resp(flow, streamed=True), flow.request.timestamp_start, self.settings, stream=True)
        if upstream := self._upstream(flow):
            data["upstream"] = upstream
        await self._write([Event("response", st.receipt_id, data, ts=time.time())], st)

    async def response(self, flow: http.HTTPFlow) -> None:
        st = self._flows.pop(flow.id, None)
        events = []
        if st is None:
            resp = to_resp(flow)
            if not (self.settings.capture_x402 and X.response_is_x402(resp, resp.h)):
                return
            st, first = self._start(flow, to_req(flow), "x402-response")
            events.append(first)
        now = time.time()
        upstream = self._upstream(flow)
        if st.parser is not None:
            st.parser.close()
            data = X.stream_end_data(st.parser.summary(), flow.request.timestamp_start, now)
            events.append(Event("stream_end", st.receipt_id, data, ts=now))
            ok = flow.response.status_code < 400 and bool(data.get("done"))
        else:
            self._stamp(flow, st)
            data = X.response_data(to_resp(flow), flow.request.timestamp_start, self.settings)
            if upstream:
                data["upstream"] = upstream
            self.linker.remember_challenge(st.logical_id, data.get("challenge"))
            events.append(Event("response", st.receipt_id, data, ts=now))
            ok = flow.response.status_code < 400
        self.linker.outcome(st.keys, ok)
        await self._write(events, st)

    async def error(self, flow: http.HTTPFlow) -> None:
        st = self._flows.pop(flow.id, None)
        if st is None or flow.error is None:
            return
        self.linker.outcome(st.keys, False)
        msg = flow.error.msg
        phase = "response" if flow.response else "request"
        data = X.error_data(X.classify_error(msg), msg, phase)
        upstream = self._upstream(flow)
        if upstream and upstream["result"] != "match":
            found = self._pins[flow.server_conn.id]
            why = found if isinstance(found, str) else found.explain()
            data = {**X.error_data(f"tee_pin_{upstream['result']}", why, "tls"), "upstream": upstream}
            log.warning("receipts: refused upstream %s: %s", flow.request.pretty_host, why)
        await self._write([Event("error", st.receipt_id, data, ts=time.time())], st)

    def client_disconnected(self, client) -> None:
        self._owners.pop(client.id, None)

    def tls_failed_client(self, data) -> None:
        """A client refused our certificate (often: it pins its server's): keep a trace of it."""
        peer = data.context.client.peername or (None, None)
        sni = data.context.client.sni
        msg = str(data.conn.error or "client refused the proxy's certificate")
        payload = {**X.error_data("client_tls_refused", msg, "tls"), "host": sni, "client": peer[0]}
        self.journal.append([Event("error", uuid7(), payload)])
        log.warning("receipts: client %s refused the proxy certificate for %s (%s): if it pins certificates, "
                    "use reverse-proxy mode; otherwise make it trust %s", peer[0], sni, msg,
                    self.settings.ca_path / "mitmproxy-ca-cert.pem")

    async def tls_start_server(self, data) -> None:
        """Reverse mode: the upstream must present the certificate the TEE registry lists for it."""
        if self._registry is None or not data.conn.address:
            return
        if data.ssl_conn is None:  # script addons run before mitmproxy's TLS setup: let it build the
            ctx.master.addons.get("tlsconfig").tls_start_server(data)  # connection, then replace the check
        records = await asyncio.to_thread(self._registry.records)
        host, port = data.conn.address[0], data.conn.address[1]
        conn_id, enforce = data.conn.id, self.settings.og_pin == "enforce"

        def verify(_conn, cert, _errno, depth, _ok) -> bool:
            if depth:  # the chain above the leaf: the pin is on the leaf itself
                return True
            if records is None:
                self._pins[conn_id] = f"the TEE registry could not be read ({self._registry.error})"
                return not enforce
            result = pin.check(_der(cert), host, port, records)
            self._pins[conn_id] = result
            return result.ok or not enforce

        from OpenSSL import SSL

        data.ssl_conn.set_verify(SSL.VERIFY_PEER, verify)
        while len(self._pins) > 10_000:
            self._pins.pop(next(iter(self._pins)))

    # ---- helpers -----------------------------------------------------------------------------
    async def _owner(self, flow: http.HTTPFlow) -> dict | None:
        """The local process behind this client connection (looked up once per connection, in a thread;
        a lookup slower than 250 ms is not waited for)."""
        conn = flow.client_conn
        if not conn.peername or not conn.sockname:
            return None
        if conn.id not in self._owners:
            self._owners[conn.id] = asyncio.ensure_future(
                asyncio.to_thread(process.owner_of, conn.peername[:2], conn.sockname[1]))
        try:
            return await asyncio.wait_for(asyncio.shield(self._owners[conn.id]), 0.25)
        except Exception:  # timed out, or /proc could not be read: the call keeps address and user agent
            return None

    def _upstream(self, flow: http.HTTPFlow) -> dict | None:
        """What the pin said about the upstream of this flow (reverse mode only)."""
        found = self._pins.get(flow.server_conn.id) if flow.server_conn else None
        if found is None:
            return None
        if isinstance(found, str):
            return {"result": "unchecked", "why": found, "mode": self.settings.og_pin}
        return {**found.as_dict(), "mode": self.settings.og_pin}

    def _match(self, flow: http.HTTPFlow) -> str | None:
        names = {k.decode("latin-1").lower() for k, _ in flow.request.headers.fields}
        return X.request_match(names, flow.request.pretty_host, flow.request.path, self.settings)

    def _start(self, flow: http.HTTPFlow, req: X.Req, match: str) -> tuple[FlowState, Event]:
        receipt_id = uuid7(req.ts)
        logical, keys, data = self.linker.open(req, self.settings, receipt_id=receipt_id, match=match, source="proxy")
        st = FlowState(receipt_id, logical, keys, paid=X.is_paid(req.h))
        self._flows[flow.id] = st
        flow.metadata["receipt_id"] = receipt_id  # shown in mitmweb, saved with flow files
        return st, Event("request", receipt_id, data, ts=req.ts, id=uuid7())

    async def _write(self, events: list[Event], st: FlowState) -> bool:
        """Write before the traffic moves on; for paid calls (or `full`), also wait for the fsync."""
        fut = self.journal.append(events, fsync=st.paid)
        try:
            if fut.done():
                fut.result()
            else:
                await asyncio.wrap_future(fut)
            return True
        except Exception as exc:
            self._alarm(exc, st)
            return False

    def _alarm(self, exc: BaseException, st: FlowState) -> None:
        log.error("receipts: JOURNAL WRITE FAILED, refusing paid requests (503), unpaid traffic passes "
                  "unrecorded: %s", exc)

    def _refusal(self) -> http.Response:
        reason = self.journal.last_error or "the journal cannot be written"
        body = {"error": {"type": "receipts_journal_unavailable",
                          "message": f"The receipts recorder did not forward this paid request because it "
                                     f"cannot record it ({reason}). Fix the data directory, then retry."}}
        return http.Response.make(503, orjson.dumps(body), {"content-type": "application/json",
                                                             "x-receipts-error": "journal-unavailable"})

    def _stamp(self, flow: http.HTTPFlow, st: FlowState) -> None:
        if self.settings.stamp_receipt_id and flow.response is not None:
            flow.response.headers["X-Receipt-Id"] = st.receipt_id

    @staticmethod
    def _tap(parser: SSEParser):
        def tap(chunk: bytes) -> bytes:
            if chunk:
                parser.feed(chunk)
            return chunk
        return tap


def _reverse(options) -> bool:
    return any(str(m).startswith("reverse:") for m in getattr(options, "mode", []) or [])


def _registry_cache(settings: cfg.Settings) -> pin.RegistryCache | None:
    """The registry the pin is checked against (None: no registry configured, nothing matches)."""
    from verifier.registry import Registry
    from verifier.rpc import Rpc

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

