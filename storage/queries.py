"""The canned queries behind the CLI (the views themselves are in views.sql)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import duckdb

FIND = "SELECT * FROM receipts WHERE list_contains(ids, lower(trim($id)))"


def rows(con: duckdb.DuckDBPyConnection, sql: str | duckdb.Statement, params: dict | None = None) -> tuple[list[str], list[tuple]]:
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


# ---- receipts serve: over the read cache (storage/cache.py), whose tables carry the views' names plus
# `ids` (h = hash(id), id, receipt_id: every id that finds a receipt, as in `receipts.ids`) ----------
SERVE_COLUMNS = ("receipt_id, first_seen, last_seen, app_name, host, path, model, total_tokens, status, "
                 "proof_status, resolution, reason, amount, amount_cap, decimals, symbol, asset, network, payer, "
                 "pay_to, payment_hash, session_id, session_amount, session_opened_by, attempts")
# what a call cost, counted once: a settled/signed amount, or a session's total at the call that opened it
SPEND = ("coalesce(amount, 0) + CASE WHEN receipt_id = session_opened_by THEN coalesce(session_amount, 0) "
         "ELSE 0 END")


def serve_where(f: dict) -> tuple[str, dict]:
    """SQL condition and parameters for the page's filters: app (app_name), host, model, status (a proof
    status or a resolution), since/until (datetimes), q (any id, as `receipts show` finds it)."""
    where, params = [], {}
    for key, column in (("app", "app_name"), ("host", "host"), ("model", "model")):
        if f.get(key):
            where.append(f"{column} = ${key}")
            params[key] = f[key]
    if f.get("status"):
        where.append("(proof_status = $status OR resolution = $status)")
        params["status"] = f["status"]
    if f.get("since"):
        where.append("first_seen >= $since")
        params["since"] = f["since"]
    if f.get("until"):
        where.append("first_seen < $until")
        params["until"] = f["until"]
    if f.get("q"):
        if "q_ids" in f:  # resolved by serve_search: a point lookup, not a scan
            where.append("receipt_id = ANY($q_ids)")
            params["q_ids"] = f["q_ids"]
        else:
            where.append("receipt_id IN (SELECT receipt_id FROM ids WHERE id = lower(trim($q)))")
            params["q"] = f["q"]
    return (" AND ".join(where) or "true"), params


def serve_search(con, q: str) -> list[str]:
    """The receipts an id finds (as FIND does), through the index on the ids' hashes."""
    key = q.strip().lower()
    h = con.execute("SELECT hash($k)", {"k": key}).fetchone()[0]
    # (only `h = $h` alone is an index lookup; the id is compared here, hashes can collide)
    return sorted({rid for i, rid in con.execute("SELECT id, receipt_id FROM ids WHERE h = $h", {"h": h}).fetchall()
                   if i == key})


def serve_list(con, f: dict, limit: int = 50, before: tuple | None = None) -> list[dict]:
    """Receipts matching the filters, newest first; `before` = (first_seen, receipt_id) of the last row
    of the previous page."""
    where, params = serve_where(f)
    if before:
        where += " AND (first_seen < $bt OR (first_seen = $bt AND receipt_id < $bid))"
        params.update(bt=before[0], bid=before[1])
    return dicts(con, f"SELECT {SERVE_COLUMNS} FROM receipts WHERE {where} "
                      "ORDER BY first_seen DESC, receipt_id DESC LIMIT $limit", {**params, "limit": limit})


def serve_count(con, f: dict) -> int:
    where, params = serve_where(f)
    return con.execute(f"SELECT count(*) FROM receipts WHERE {where}", params).fetchone()[0]


def serve_facets(con) -> dict[str, list[tuple]]:
    """The values each filter offers, most frequent first, with their counts."""
    out = {}
    for key, column in (("app", "app_name"), ("host", "host"), ("model", "model")):
        out[key] = rows(con, f"SELECT {column}, count(*) FROM receipts WHERE {column} IS NOT NULL "
                             "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 200")[1]
    out["status"] = rows(con, "SELECT s, count(*) FROM (SELECT proof_status AS s FROM receipts UNION ALL "
                              "SELECT resolution FROM receipts WHERE resolution IS NOT NULL) GROUP BY 1 ORDER BY 2 DESC")[1]
    return out


def serve_span(con, f: dict) -> tuple:
    where, params = serve_where(f)
    return con.execute(f"SELECT min(first_seen), max(first_seen) FROM receipts WHERE {where}", params).fetchone()


def spend_over_time(con, f: dict, bucket: str, by: str = "app_name") -> list[dict]:
    """Spend per time bucket ('hour', 'day', 'week') and `by` (app_name or pay_to), per asset."""
    assert by in ("app_name", "pay_to") and bucket in ("hour", "day", "week")
    where, params = serve_where(f)
    return dicts(con, f"""SELECT date_trunc('{bucket}', first_seen) AS t, coalesce({by}, '—') AS key,
                                 asset, network, any_value(symbol) AS symbol, any_value(decimals) AS decimals,
                                 sum({SPEND}) AS spend, count(*) AS calls
                          FROM receipts WHERE {where} AND asset IS NOT NULL
                          GROUP BY ALL HAVING sum({SPEND}) > 0 ORDER BY t""", params)


def spend_by(con, f: dict, by: str = "pay_to", limit: int = 12) -> list[dict]:
    """Total spend per payee (or app) and asset, largest first."""
    assert by in ("app_name", "pay_to")
    where, params = serve_where(f)
    return dicts(con, f"""SELECT coalesce({by}, '—') AS key, asset, network, any_value(symbol) AS symbol,
                                 any_value(decimals) AS decimals, sum({SPEND}) AS spend, count(*) AS calls
                          FROM receipts WHERE {where} AND asset IS NOT NULL
                          GROUP BY ALL HAVING sum({SPEND}) > 0 ORDER BY spend DESC LIMIT {int(limit)}""", params)


def status_counts(con, f: dict) -> list[dict]:
    """Receipts per proof status and resolution."""
    where, params = serve_where(f)
    return dicts(con, f"SELECT proof_status, resolution, count(*) AS n FROM receipts WHERE {where} "
                      "GROUP BY ALL ORDER BY n DESC", params)
