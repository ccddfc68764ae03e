"""`receipts ingest FILE`: record calls from traffic captured elsewhere (HAR, or a mitmproxy flow file).

Exchanges go through the same pure translation as live capture (addon/exchange.py) and the same
linker, in the order they happened, so the receipts equal those a live capture would have made.
Ids are derived from the file's content: ingesting the same file twice adds nothing.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import orjson

from receipts.storage.config import Settings
from receipts.storage.db import ensure_database_file
from receipts.storage.journal import Journal
from receipts.storage.progress import Progress
from receipts.storage.records import Event, stable_id, uuid7

from . import exchange as X
from . import redact as R
from .bodies import Tap
from .linker import Linker


class IngestError(Exception):
    """The file cannot be read as HAR or as mitmproxy flows; one sentence for the user."""


def ingest_file(path: str, settings: Settings, say=None) -> dict:
    """Record the AI calls of a HAR or mitmproxy flow file; `say` gets progress lines on long files."""
    raw = _read(path)
    file_id = hashlib.sha256(raw).hexdigest()
    pairs = sorted(_exchanges(raw, path), key=lambda p: p[0].ts)
    events, calls, skipped = [], 0, 0
    linker = Linker()
    reading = Progress("ingest: read", len(pairs), "exchanges", say)
    for index, (req, resp) in enumerate(pairs):
        produced = exchange_events(
            req, resp, settings, linker, seed=f"{file_id}:{index}", source=f"ingest:{Path(path).name}"
        )
        calls += bool(produced)
        skipped += not produced
        events += produced
        reading.add()
    reading.finish()
    fresh = _not_yet_recorded(events, settings.data_dir)
    new_calls = sum(e.type == "request" for e in fresh)
    events = fresh
    writing = Progress("ingest: written", len(events), "events", say)
    with Journal(
        settings.data_dir, "ingest", durability=settings.durability, seal_interval=settings.seal_interval
    ) as journal:
        for start in range(0, len(events), 1000):
            journal.write(events[start : start + 1000])
            writing.add(len(events[start : start + 1000]))
    writing.finish()
    ensure_database_file(settings.data_dir)
    return {"calls": new_calls, "already": calls - new_calls, "skipped": skipped, "events": len(events)}


def _not_yet_recorded(events: list[Event], data_dir: str) -> list[Event]:
    """Events of an earlier ingest of the same file have the same ids: keep only the new ones."""
    from receipts.storage import db

    if not events or not Path(data_dir, "journal").exists():
        return events
    with db.connect(data_dir) as con:
        known = {
            i
            for (i,) in con.execute(
                "SELECT id FROM events WHERE id IN (SELECT unnest($ids))", {"ids": [e.id for e in events]}
            ).fetchall()
        }
    return [e for e in events if e.id not in known]


def exchange_events(
    req: X.Req, resp: X.Resp | None, settings: Settings, linker: Linker, *, seed: str, source: str
) -> list[Event]:
    """The events live capture would have written for this exchange ([] if it is not an AI call)."""
    match = X.request_match(set(req.h.items), req.host, req.path, settings, req.h.get("authorization"))
    protocol = match if match in X.BODY_PROTOCOLS else None
    call = X.body_call(match, req.body, req.path) if protocol else None
    if protocol and call is None:  # (an MCP or A2A message that is no tool call or message send: as live)
        match = protocol = None
    if match is None and not (resp and settings.capture_x402 and X.response_is_x402(resp, resp.h)):
        return []
    receipt_id = uuid7(req.ts, seed=seed.encode())
    logical, keys, data = linker.open(
        req, settings, receipt_id=receipt_id, match=match or "x402-response", source=source, call=call
    )
    events = [Event("request", receipt_id, data, ts=req.ts, id=stable_id(seed, "request"))]
    if resp is None:
        linker.outcome(keys, False)
        return events
    if (resp.h.get("content-type") or "").lower().startswith("text/event-stream"):
        events += _stream_events(req, resp, settings, receipt_id, seed, (data.get("host"), data.get("model")), protocol)
    else:
        rdata = X.response_data(resp, req.ts, settings, call=(data.get("host"), data.get("model")), protocol=protocol)
        linker.remember_challenge(logical, rdata.get("challenge"))
        events.append(
            Event("response", receipt_id, rdata, ts=resp.ts_end or resp.ts_start, id=stable_id(seed, "response"))
        )
    told = events[-1].data
    linker.remember_task(logical, (told.get("a2a") or {}).get("task_id"), req.ts)
    linker.outcome(keys, resp.status < 400 and not told.get("challenge"))
    return events


def _stream_events(
    req: X.Req, resp: X.Resp, settings: Settings, receipt_id: str, seed: str, call: tuple, protocol: str | None = None
) -> list[Event]:
    head = X.response_data(resp, req.ts, settings, stream=True)
    tap = Tap(sse=True)
    tap(resp.body or b"")
    end = resp.ts_end or resp.ts_start
    tail = X.stream_end_data(X.streamed_summary(tap, resp.h), req.ts, end, call, protocol)
    return [
        Event("response", receipt_id, head, ts=resp.ts_start, id=stable_id(seed, "response")),
        Event("stream_end", receipt_id, tail, ts=end, id=stable_id(seed, "stream_end")),
    ]


# ---- readers -------------------------------------------------------------------------------------
def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise IngestError(f"cannot read {path}: {exc.strerror or exc}") from None


def _exchanges(raw: bytes, path: str) -> list[tuple[X.Req, X.Resp | None]]:
    if raw.lstrip()[:1] == b"{":
        return list(_har(raw, path))
    return list(_flows(path))


def _har(raw: bytes, path: str) -> Iterator[tuple[X.Req, X.Resp | None]]:
    try:
        entries = orjson.loads(raw)["log"]["entries"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise IngestError(f"{path} is not a HAR file (no log.entries)") from None
    for entry in entries:
        try:
            yield _har_entry(entry)
        except (KeyError, TypeError, ValueError) as exc:
            raise IngestError(f"{path}: a HAR entry is malformed ({type(exc).__name__}: {exc})") from None


def _har_entry(entry: dict) -> tuple[X.Req, X.Resp | None]:
    rq, rs = entry["request"], entry.get("response") or {}
    url = urlsplit(rq["url"])
    ts = datetime.fromisoformat(entry["startedDateTime"].replace("Z", "+00:00")).timestamp()
    path = url.path + (f"?{url.query}" if url.query else "")
    port = url.port or (443 if url.scheme == "https" else 80)
    post = rq.get("postData") or {}
    req = X.Req(
        method=rq["method"],
        scheme=url.scheme,
        host=url.hostname or "",
        port=port,
        path=path or "/",
        headers=_har_headers(rq),
        body=_har_body(post) if post else b"",
        ts=ts,
        http_version=rq.get("httpVersion") or "HTTP/1.1",
        client=entry.get("_clientAddress"),
    )
    status = int(rs.get("status") or 0)
    if status <= 0:
        return req, None
    total = max(float(entry.get("time") or 0), 0) / 1000
    resp = X.Resp(
        status=status,
        headers=_har_headers(rs),
        body=_har_body(rs.get("content") or {}),
        ts_start=ts + total,
        ts_end=ts + total,
        reason=rs.get("statusText") or "",
        http_version=rs.get("httpVersion") or "HTTP/1.1",
    )
    return req, resp


def _har_headers(msg: dict) -> list[tuple[str, str]]:
    return [
        (X.clean(h["name"]), X.clean(h["value"])) for h in msg.get("headers") or [] if not h["name"].startswith(":")
    ]


def _har_body(content: dict) -> bytes:
    text = content.get("text") or ""
    if content.get("encoding") == "base64":
        return base64.b64decode(text)
    return R.bytes_of(text)


def _flows(path: str) -> Iterator[tuple[X.Req, X.Resp | None]]:
    from mitmproxy import http, io
    from mitmproxy.exceptions import FlowReadException

    from .recorder import to_req, to_resp

    try:
        with open(path, "rb") as f:
            flows = [fl for fl in io.FlowReader(f).stream() if isinstance(fl, http.HTTPFlow)]
    except (FlowReadException, ValueError) as exc:
        raise IngestError(f"{path} is neither a HAR file nor a mitmproxy flow file ({exc})") from None
    for fl in flows:
        yield to_req(fl), (to_resp(fl) if fl.response else None)
