"""The audit's data: runs storage/audit.sql over a read-only connection and returns the report's rows.

`report(data_dir, since=None, app=None)` → {"summary": {...}, "<section>": [row dicts], "evidence":
{receipt_id: [checks]}}. Amounts stay exact Python ints (HUGEINT); rendering is receipts/audit.py's.

The audit reads no journal itself: the connection (storage/db.py) binds the folded tables, with the
events not folded yet, and the statements query the views over them. It can open no file of the
journal (`journal=False`).
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from importlib import resources

import duckdb

from . import db

SECTIONS = (
    "summary",
    "apps",
    "usage",
    "totals",
    "totals_by_app",
    "statuses",
    "http_statuses",
    "risky_failed",
    "overcharges",
    "never_settled",
    "double_charges",
    "secrets_in_clear",
    "pinned_clients",
    "no_usage",
)
MEMORY_LIMIT = "500MB"  # DuckDB's, for the audit's temp tables: a million calls stay under 1 GB of RSS
TABLES = ("calls", "receipts", "sessions", "charges")  # the statements that build the audit's tables, in order
_NAME = re.compile(r"^-- name: (\w+)\s*$", re.M)


def statements() -> dict[str, str]:
    """audit.sql's statements by name."""
    text = resources.files(__package__).joinpath("audit.sql").read_text()
    parts = _NAME.split(text)[1:]
    return {name: body.strip() for name, body in zip(parts[::2], parts[1::2])}


def connect(data_dir: str | os.PathLike) -> duckdb.DuckDBPyConnection:
    """The audit's connection: the views over the folded tables, no journal file open to it."""
    # (tables are built in parallel; rows are ordered by SQL. Past MEMORY_LIMIT DuckDB spills to disk.)
    return db.connect(
        data_dir, journal=False, settings={"preserve_insertion_order": False, "memory_limit": MEMORY_LIMIT}
    )


def build(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Make the audit's tables (calls, receipts, sessions, charges) in `con`; returns the statements.
    `audit_receipts` is a view when `receipts` is the rows the fold kept in local Parquet files (each
    section reads its few columns from them: cheaper than copying every column once), and a table when
    `receipts` computes rows as it is read, or reads a lake's."""
    sql = statements()
    if _reads_kept_files(con):
        sql["receipts"] = sql["receipts"].replace("CREATE OR REPLACE TEMP TABLE", "CREATE OR REPLACE TEMP VIEW", 1)
    for name in TABLES:
        con.execute(sql[name])
    return sql


def _reads_kept_files(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether `receipts` only reads the kept rows' Parquet files and computes none (`db.kept_only`)."""
    return db.kept_only(con)


def _dicts(cur: duckdb.DuckDBPyConnection) -> list[dict]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


BY_RECEIPT = ("risky_failed", "overcharges", "double_charges")  # the problem sections whose rows are receipts
LISTED = (*BY_RECEIPT, "never_settled")  # and one whose x402 rows are (its sessions' are not)


def report(
    data_dir: str | os.PathLike, since: datetime | None = None, app: str | None = None, shown: int | None = None
) -> dict:
    """Every section of the audit, filtered to calls since `since` (UTC) and from app `app`; the evidence of
    the receipts that the first `shown` rows of each problem section name (None: every row)."""
    params = {"since": since, "app": app}
    with connect(data_dir) as con:
        sql = build(con)
        out: dict = {}
        for name in SECTIONS:
            query = sql[f"section_{name}"]
            rows = _dicts(con.execute(db.inline(query, {k: v for k, v in params.items() if f"${k}" in query})))
            out[name] = rows[0] if name == "summary" else rows
        seen = {name: out[name][:shown] if shown else out[name] for name in LISTED}
        listed = sorted(
            {r["receipt_id"] for name in BY_RECEIPT for r in seen[name]}
            | {r["key"] for r in seen["never_settled"] if r["kind"] == "x402"}
        )
        con.execute(
            db.inline("CREATE OR REPLACE TEMP TABLE audit_ids AS SELECT unnest($ids::VARCHAR[]) AS id", {"ids": listed})
        )
        evidence: dict[str, list[dict]] = {}
        for row in _dicts(con.execute(sql["evidence"])):
            evidence.setdefault(row.pop("receipt_id"), []).append(row)
        out["evidence"] = evidence
        out["known_apps"] = [
            r[0]
            for r in con.execute(
                "SELECT DISTINCT app_name FROM audit_calls WHERE app_name IS NOT NULL ORDER BY 1"
            ).fetchall()
        ]
    return out
