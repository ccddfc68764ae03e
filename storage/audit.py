"""The audit's data: runs storage/audit.sql over a read-only connection and returns the report's rows.

`report(data_dir, since=None, app=None)` → {"summary": {...}, "<section>": [row dicts], "evidence":
{receipt_id: [checks]}}. Amounts stay exact Python ints (HUGEINT); rendering is receipts/audit.py's.
"""
from __future__ import annotations

import os
import re
from datetime import datetime
from importlib import resources

import duckdb

from . import db
from .journal import journal_dir

LINE_BYTES = 1 << 20   # largest JSON segment line read at first (else once more with BIG_LINE_BYTES)
BIG_LINE_BYTES = 1 << 28
SECTIONS = ("summary", "apps", "totals", "totals_by_app", "statuses", "http_statuses", "risky_failed",
            "overcharges", "never_settled", "double_charges", "secrets_in_clear", "pinned_clients", "no_usage")
PROBLEMS = ("risky_failed", "overcharges", "never_settled", "double_charges", "secrets_in_clear",
            "pinned_clients", "no_usage")
_NAME = re.compile(r"^-- name: (\w+)\s*$", re.M)


def statements(data_dir: str | os.PathLike, max_line: int = LINE_BYTES) -> dict[str, str]:
    """audit.sql's statements by name, with the journal's path and the line buffer filled in."""
    journal = str(journal_dir(data_dir).resolve()).replace("'", "''")
    text = resources.files("storage").joinpath("audit.sql").read_text()
    parts = _NAME.split(text)[1:]
    return {name: body.replace("{journal}", journal).replace("{max_line}", str(max_line)).strip()
            for name, body in zip(parts[::2], parts[1::2])}


def _dicts(cur: duckdb.DuckDBPyConnection) -> list[dict]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def _read(con: duckdb.DuckDBPyConnection, data_dir) -> dict[str, str]:
    """Read the journal once into audit_ev and fold it (calls, verdicts, receipts, sessions, charges)."""
    for max_line in (LINE_BYTES, BIG_LINE_BYTES):
        sql = statements(data_dir, max_line)
        try:
            for name in ("paths", "read", "read_segments"):
                con.execute(sql[name])
            break
        except duckdb.InvalidInputException:  # a segment line longer than the buffer (full bodies)
            if max_line == BIG_LINE_BYTES:
                raise
    for name in ("calls", "verdicts", "receipts", "sessions", "charges"):
        con.execute(sql[name])
    return sql


def report(data_dir: str | os.PathLike, since: datetime | None = None, app: str | None = None) -> dict:
    """Every section of the audit, filtered to calls since `since` (UTC) and from app `app`."""
    params = {"since": since, "app": app}
    # (tables are built in parallel; rows are ordered by SQL)
    with db.connect(data_dir, snapshot=False, settings={"preserve_insertion_order": False}) as con:
        sql = _read(con, data_dir)
        out: dict = {}
        for name in SECTIONS:
            query = sql[f"section_{name}"]
            rows = _dicts(con.execute(query, {k: v for k, v in params.items() if f"${k}" in query}))
            out[name] = rows[0] if name == "summary" else rows
        listed = sorted({r["receipt_id"] for s in ("risky_failed", "overcharges", "double_charges") for r in out[s]}
                        | {r["key"] for r in out["never_settled"] if r["kind"] == "x402"})
        con.execute("CREATE OR REPLACE TEMP TABLE audit_ids AS SELECT unnest($ids::VARCHAR[]) AS id", {"ids": listed})
        evidence: dict[str, list[dict]] = {}
        for row in _dicts(con.execute(sql["evidence"])):
            evidence.setdefault(row.pop("receipt_id"), []).append(row)
        out["evidence"] = evidence
        out["known_apps"] = [r[0] for r in con.execute(
            "SELECT DISTINCT app_name FROM audit_calls WHERE app_name IS NOT NULL ORDER BY 1").fetchall()]
    return out
