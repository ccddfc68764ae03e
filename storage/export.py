"""`receipts export`: the recorded data in files other tools read — Parquet, CSV, JSON lines, HAR.

Everything exported is read back from the journal, which holds only what the recorder kept: secrets
were replaced by `[redacted sha256:…]` (or dropped) before they were ever written, so the same
redaction holds in every export. HAR entries are rebuilt from the stored request and response
records (headers as stored, redacted; bodies only where `bodies: full` kept their redacted text);
`receipts ingest` reads them back.

- parquet: the view as it is (HUGEINT amounts, lists, timestamps), read back by DuckDB unchanged;
- csv: lists and structs as JSON text, amounts as integers, times as `YYYY-MM-DD HH:MM:SS.ffffff` (UTC);
  a text cell that a spreadsheet would take for a formula (it begins with `=`, `+`, `-`, `@`, a tab or a
  carriage return, as a captured User-Agent `=HYPERLINK(…)` does) is written with a `'` before it
  (OWASP's advice on CSV injection); numbers stay numbers;
- jsonl: one JSON object per line; amounts (HUGEINT) and costs (DECIMAL) as strings, so that no reader turns
  them into floats.

The connection that writes an export is sandboxed like every reader (storage/db.py): it reads a
snapshot of the journal, and the one file it can open is the export's temporary file.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from . import db
from .progress import Progress

VIEWS = ("receipts", "calls", "payments", "settlements", "challenges", "checks", "sessions", "channels")
TIME_COLUMN = {
    "receipts": "first_seen",
    "calls": "started_at",
    "payments": "sent_at",
    "settlements": "seen_at",
    "challenges": "seen_at",
    "checks": "observed_at",
    "sessions": "first_call_at",
    "channels": "opened_at",
}
FORMATS = ("parquet", "csv", "jsonl", "har")


class ExportError(ValueError):
    """A wrong combination of options; one sentence for the user."""


def _quote(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


def inert(expr: str) -> str:
    """SQL of the text `expr` made inert for a spreadsheet: a `'` before a formula's first character
    (`=`, `+`, `-`, `@`, tab, carriage return; OWASP, "CSV Injection")."""
    return (
        f"CASE WHEN left({expr}, 1) IN ('=', '+', '-', '@', chr(9), chr(13)) "
        f"THEN concat(chr(39), {expr}) ELSE {expr} END"
    )


def _select(con, view: str, fmt: str, since: datetime | None) -> tuple[str, dict]:
    """The SELECT of the export: the view's own columns, cast where the format needs it."""
    types = con.execute(f"DESCRIBE SELECT * FROM {view}").fetchall()
    cols = []
    for name, typ, *_ in types:
        q = '"' + name.replace('"', '""') + '"'
        if fmt == "csv" and ("[]" in typ or typ.startswith(("STRUCT", "MAP")) or typ == "JSON"):
            cols.append(f"{inert(f'to_json({q})::VARCHAR')} AS {q}")
        elif fmt == "csv" and typ == "VARCHAR":
            cols.append(f"{inert(q)} AS {q}")
        elif fmt == "jsonl" and (typ in ("HUGEINT", "UHUGEINT") or typ.startswith("DECIMAL")):
            cols.append(f"{q}::VARCHAR AS {q}")
        else:
            cols.append(q)
    where = f"WHERE {TIME_COLUMN[view]} >= $since" if since else ""
    return f"SELECT {', '.join(cols)} FROM {view} {where} ORDER BY ALL", ({"since": since} if since else {})


def export(
    data_dir: str | os.PathLike, fmt: str, out: str | None, since: datetime | None = None, view: str = "receipts"
) -> dict:
    """Write the export to `out` (a file; `-` or None: standard output, except for Parquet)."""
    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if view not in VIEWS:
        raise ExportError(f"--view must be one of {', '.join(VIEWS)}, not {view!r}")
    target = None if out is None or out == "-" else Path(out)
    to_stdout = target is None
    if fmt == "parquet" and to_stdout:
        raise ExportError("a Parquet export needs a file: --out FILE.parquet")
    if target is not None and target.is_dir():
        raise ExportError(f"--out {out} is a directory; give a file name")
    fd, tmp = tempfile.mkstemp(
        prefix=".receipts-export-", suffix=f".{fmt}", dir=str(target.parent) if target is not None else None
    )
    os.close(fd)
    try:
        with db.connect(data_dir, journal=False, write=[tmp]) as con:
            rows = _har(con, tmp, since) if fmt == "har" else _copy(con, tmp, fmt, since, view)
        if target is None:  # (to_stdout)
            with open(tmp, "rb") as f:
                shutil.copyfileobj(f, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            os.chmod(tmp, 0o600)  # private, as everything the project writes (DuckDB recreated the file)
            os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return {"rows": rows, "format": fmt, "view": "calls" if fmt == "har" else view, "out": out or "-"}


BIG_EXPORT = 100_000  # rows: a COPY this big takes seconds


def _copy(con, path: str, fmt: str, since: datetime | None, view: str) -> int:
    sql, params = _select(con, view, fmt, since)
    options = {"parquet": "FORMAT parquet, COMPRESSION zstd", "csv": "FORMAT csv, HEADER true", "jsonl": "FORMAT json"}[
        fmt
    ] + ", USE_TMP_FILE false"  # (a file of its own beside it: not allowed)
    sql = db.inline(sql, params)  # (before the path, which is the user's text, joins it)
    rows = con.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]
    if rows >= BIG_EXPORT:  # one COPY statement: no count as it goes, so say what it is doing
        print(f"receipts: export: writing {rows:,} {view} rows as {fmt}…", file=sys.stderr, flush=True)
    con.execute(f"COPY ({sql}) TO {_quote(path)} ({options})")
    return rows


# ---- HAR ------------------------------------------------------------------------------------------
HAR_QUERY = """
WITH req AS (SELECT receipt_id, ts, data FROM events WHERE type = 'request' {where}),
last AS (
    SELECT receipt_id, type, arg_max(data, ts) AS data, max(ts) AS ts FROM events
    WHERE type IN ('response', 'stream_end', 'error') AND receipt_id IN (SELECT receipt_id FROM req)
    GROUP BY receipt_id, type
)
SELECT r.receipt_id, epoch_us(r.ts) / 1e6, r.data::VARCHAR, resp.data::VARCHAR, fin.data::VARCHAR, err.data::VARCHAR
FROM req r
LEFT JOIN last resp ON resp.receipt_id = r.receipt_id AND resp.type = 'response'
LEFT JOIN last fin ON fin.receipt_id = r.receipt_id AND fin.type = 'stream_end'
LEFT JOIN last err ON err.receipt_id = r.receipt_id AND err.type = 'error'
ORDER BY r.ts, r.receipt_id
"""


def _headers(stored) -> list[dict]:
    """Stored headers (name → value, or a list for repeated headers) as HAR's name/value pairs."""
    out = []
    for name, value in (stored or {}).items():
        for v in value if isinstance(value, list) else [value]:
            out.append({"name": name, "value": "" if v is None else str(v)})
    return out


def _content(body: dict | None, mime: str | None, size) -> dict:
    body = body or {}
    content = {"size": size if size is not None else (body.get("size") or 0), "mimeType": mime or ""}
    if body.get("text") is not None:
        content["text"] = body["text"]
    elif body.get("base64") is not None:
        content["text"], content["encoding"] = body["base64"], "base64"
    if body.get("sha256"):
        content["comment"] = f"sha256 {body['sha256']}" + (
            " (body not kept: bodies: hash)" if "text" not in content else ""
        )
    return content


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def har_entry(receipt_id: str, ts: float, req: dict, resp: dict | None, fin: dict | None, err: dict | None) -> dict:
    """One HAR entry rebuilt from the stored (redacted) records of one exchange."""
    ports: dict[str | None, int] = {"https": 443, "http": 80}
    default_port = ports.get(req.get("scheme"))
    port = req.get("port")
    host = req.get("host") or ""
    authority = host if port in (None, default_port) else f"{host}:{port}"
    query = req.get("query")
    url = f"{req.get('scheme') or 'http'}://{authority}{req.get('path') or '/'}" + (f"?{query}" if query else "")
    req_headers = _headers(req.get("headers"))
    mime = next((h["value"] for h in req_headers if h["name"].lower() == "content-type"), "")
    body = req.get("body") or {}
    request: dict[str, Any] = {
        "method": req.get("method") or "GET",
        "url": url,
        "httpVersion": req.get("http_version") or "HTTP/1.1",
        "cookies": [],
        "headers": req_headers,
        "queryString": [
            {"name": n, "value": v} for n, _, v in (p.partition("=") for p in (query or "").split("&") if p)
        ],
        "headersSize": -1,
        "bodySize": body.get("size") if body.get("size") is not None else -1,
    }
    if body.get("size"):
        post = _content(body, mime, body.get("size"))
        request["postData"] = {
            "mimeType": mime,
            "text": post.get("text", ""),
            **({"comment": post["comment"]} if "comment" in post else {}),
        }
        if post.get("encoding"):
            request["postData"]["encoding"] = post["encoding"]  # a HAR extension that `receipts ingest` reads
    if resp:
        size = (fin or {}).get("bytes") if resp.get("stream") else None
        response = {
            "status": resp.get("status") or 0,
            "statusText": resp.get("reason") or "",
            "httpVersion": resp.get("http_version") or "HTTP/1.1",
            "cookies": [],
            "headers": _headers(resp.get("headers")),
            "redirectURL": "",
            "content": _content(resp.get("body"), resp.get("content_type"), size),
            "headersSize": -1,
            "bodySize": -1,
        }
    else:  # no answer came: HAR's convention for a failed request
        response = {
            "status": 0,
            "statusText": "",
            "httpVersion": "",
            "cookies": [],
            "headers": [],
            "redirectURL": "",
            "content": {"size": 0, "mimeType": ""},
            "headersSize": -1,
            "bodySize": -1,
            "_error": f"{(err or {}).get('kind')}: {(err or {}).get('message')}" if err else None,
        }
    latency = (fin or {}).get("latency_ms") or (resp or {}).get("latency_ms") or 0
    entry = {
        "startedDateTime": _iso(ts),
        "time": float(latency),
        "request": request,
        "response": response,
        "cache": {},
        "timings": {"send": 0, "wait": float(latency), "receive": 0},
        "_receiptId": receipt_id,
        "_logicalId": req.get("logical_id"),
    }
    if req.get("client"):
        entry["_clientAddress"] = req["client"]
    return entry


def _har(con, path: str, since: datetime | None) -> int:
    where = "AND ts >= CAST($since AS TIMESTAMP)" if since else ""
    cur = con.execute(db.inline(HAR_QUERY.format(where=where), {"since": since} if since else {}))
    n, progress = 0, Progress("export", None, "exchanges")
    with open(path, "wb") as f:
        f.write(b'{"log": {"version": "1.2", "creator": {"name": "receipts", "version": "0.1.0"}, "entries": [\n')
        while rows := cur.fetchmany(2000):
            for rid, ts, req, resp, fin, err in rows:
                loaded = (orjson.loads(x) if x else None for x in (req, resp, fin, err))
                entry = har_entry(rid, ts, *loaded)  # type: ignore[arg-type]  # a request event always has data
                f.write((b",\n" if n else b"") + orjson.dumps(entry))
                n += 1
            progress.add(len(rows))
        f.write(b"\n]}}\n")
    progress.finish()
    return n
