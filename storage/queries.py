"""The canned queries behind the CLI (the views themselves are in views.sql)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import duckdb

FIND = "SELECT * FROM receipts WHERE list_contains(ids, lower(trim($id)))"


def rows(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None) -> tuple[list[str], list[tuple]]:
    cur = con.execute(sql, params or {})
    return [d[0] for d in cur.description], cur.fetchall()


def dicts(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None) -> list[dict]:
    cols, data = rows(con, sql, params)
    return [dict(zip(cols, r)) for r in data]


def find_receipt(con: duckdb.DuckDBPyConnection, ident: str) -> list[dict]:
    """Receipts that any id finds: receipt/request/provider id, tx hash, session, nonce, payer."""
    return dicts(con, FIND, {"id": ident})


def receipt_details(con: duckdb.DuckDBPyConnection, logical_id: str) -> dict:
    """Everything recorded about one logical call: its attempts, payments, settlements, checks."""
    by = {"id": logical_id}
    return {
        "calls": dicts(con, "SELECT * FROM calls WHERE logical_id = $id ORDER BY started_at", by),
        "challenges": dicts(con, "SELECT * FROM challenges WHERE logical_id = $id ORDER BY seen_at", by),
        "payments": dicts(con, "SELECT * FROM payments WHERE logical_id = $id ORDER BY sent_at", by),
        "settlements": dicts(con, "SELECT * FROM settlements WHERE logical_id = $id ORDER BY seen_at", by),
        "checks": dicts(con, "SELECT * FROM checks WHERE receipt_id = $id ORDER BY observed_at", by),
    }


LIST_COLUMNS = ("receipt_id, first_seen, host, path, model, status, proof_status, resolution, "
                "amount, decimals, asset, payer, pay_to, payment_hash")


def list_receipts(con: duckdb.DuckDBPyConnection, status: str | None = None,
                  since: datetime | None = None, limit: int = 50) -> list[dict]:
    where, params = ["true"], {"limit": limit}
    if status:
        where.append("(proof_status = $status OR resolution = $status)")
        params["status"] = status
    if since:
        where.append("first_seen >= $since")
        params["since"] = since
    sql = f"SELECT {LIST_COLUMNS} FROM receipts WHERE {' AND '.join(where)} ORDER BY first_seen DESC LIMIT $limit"
    return dicts(con, sql, params)


def new_calls(con: duckdb.DuckDBPyConnection, after: datetime | None) -> list[dict]:
    """Calls that started after `after` (for `receipts tail`)."""
    sql = ("SELECT receipt_id, logical_id, started_at, method, host, path, status, model, total_tokens, paid, error"
           " FROM calls WHERE started_at > coalesce($after, TIMESTAMP '1970-01-01') ORDER BY started_at")
    return dicts(con, sql, {"after": after})


def parse_since(text: str) -> datetime:
    """`10m`, `2h`, `3d` ago, or an ISO date/time (UTC)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip()
    if t[:-1].isdigit() and t[-1:] in units:
        return (datetime.now(timezone.utc) - timedelta(seconds=int(t[:-1]) * units[t[-1]])).replace(tzinfo=None)
    try:
        moment = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since takes a duration such as 30m, 2h, 7d or a date such as 2026-11-24, not {text!r}") from None
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment
