"""The canned queries of `receipts show/list/tail` and of `receipts serve` (the views are in views.sql).

Both run on a connection of storage/db.py `connect()`: the CLI on a fresh one, whose `receipts`, `calls`, …
are the views; `receipts serve` on a snapshot in which `receipts` was replaced by a table of its rows
(receipts/web/snapshot.py), so the same SQL runs on both.

`receipts show ID` never reads the `receipts` view, which computes every receipt (seconds to minutes
over a large journal). Instead:

1. `candidates()`: the logical calls an id may name are found in the fold's index of ids (`folded.ids`,
   sorted by id: one row group of each file is read) and, for a receipt or logical id, in `requests`;
2. `computed()`: the views of storage/views.sql run, unchanged, in a scratch in-memory database attached to
   the connection, over copies of only the folded rows those calls need (their attempts, every table's
   rows copied at once; for their receipts' rows, also every call of an OpenGradient session they are in,
   since a member's row counts the session's calls, and the relay hops of sealed calls). Where
   `receipts` reads the rows the fold kept and computes none (no tail), a call's row is read from it
   instead, and the scratch computes only the details, which read neither;
3. the receipts kept are those whose `ids` hold the id, exactly as `SELECT * FROM receipts WHERE
   list_contains(ids, lower(trim(id)))` (`FIND`) would select them.
A receipt page of `receipts serve` (`one_receipt()`) reads the receipt's row from the snapshot's `receipts`
table and computes its details the same way (`scratch()`).
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, cast

import duckdb

from .db import inline, kept_only

FIND = "SELECT * FROM receipts WHERE list_contains(ids, lower(trim($id)))"

# Receipt and logical ids are uuid7 text, lowercase (storage/records.py): compared as they are, so that
# the Parquet files' min/max statistics skip row groups.
UUID_COLUMNS = (("requests", "receipt_id"), ("requests", "logical_id"))
DETAILS = {  # what a receipt shows besides its row (`receipts show`, the receipt page)
    "calls": "SELECT * FROM calls WHERE logical_id = $id ORDER BY started_at",
    "challenges": "SELECT * FROM challenges WHERE logical_id = $id ORDER BY seen_at",
    "payments": "SELECT * FROM payments WHERE logical_id = $id ORDER BY sent_at",
    "settlements": "SELECT * FROM settlements WHERE logical_id = $id ORDER BY seen_at",
    "checks": "SELECT * FROM checks WHERE receipt_id = $id ORDER BY observed_at",
}
_DETAILS = " ".join(DETAILS.values())  # (what a scratch database binds views for: db.views_sql_for)
_ROWS = "SELECT * FROM receipts_of(false) WHERE list_contains($l, receipt_id) ORDER BY first_seen, receipt_id"
_LIST_AT_MOST = 64  # values compared with list_contains inside their min..max range; more: a join


def rows(
    con: duckdb.DuckDBPyConnection, sql: str | duckdb.Statement, params: dict | None = None
) -> tuple[list[str], list[tuple]]:
    cur = con.execute(inline(sql, params)) if isinstance(sql, str) else con.execute(sql)
    return [d[0] for d in cur.description], cur.fetchall()


def dicts(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None) -> list[dict]:
    cols, data = rows(con, sql, params)
    return [dict(zip(cols, r)) for r in data]


@contextlib.contextmanager
def meanwhile[T](con: duckdb.DuckDBPyConnection, read: Callable[[duckdb.DuckDBPyConnection], T]) -> Iterator[Future[T]]:
    """`read(cursor)` on a cursor of `con` of its own (its own default catalog and transaction), in a thread
    of its own, while the body of the `with` goes on; the Future of what it gives. DuckDB lets go of
    Python's lock while a query runs, so the two run at once. The `with` ends when `read` has: the cursor
    is made and closed by the caller's thread."""
    cur, done = con.cursor(), Future[T]()

    def run() -> None:
        try:
            done.set_result(read(cur))
        except BaseException as exc:  # (raised by done.result())
            done.set_exception(exc)

    thread = threading.Thread(target=run, name="receipts-query")
    thread.start()
    try:
        yield done
    finally:
        thread.join()
        cur.close()


def at_once(con: duckdb.DuckDBPyConnection, statements: list[str], database: str | None = None) -> list[list[dict]]:
    """What each of `statements` gives (`dicts()`), run at once (`meanwhile`), each on a cursor whose default
    database is `database`, if given: small queries that each read a row group or two take about the time
    of the longest instead of their sum. The first error, if any, is raised once all have ended."""

    def run(sql: str, cur: duckdb.DuckDBPyConnection) -> list[dict]:
        if database:
            cur.execute(f"USE {database}")
        return dicts(cur, sql)

    with contextlib.ExitStack() as running:
        answers = [running.enter_context(meanwhile(con, functools.partial(run, sql))) for sql in statements]
    return [answer.result() for answer in answers]


def normalized(con: duckdb.DuckDBPyConnection, ident: str) -> str:
    """An id as the receipts' `ids` hold it (DuckDB's lower() and trim(), as in `FIND`)."""
    return cast(tuple, con.execute(inline("SELECT lower(trim($id))", {"id": str(ident)})).fetchone())[0]


# ---- one receipt, by any of its ids --------------------------------------------------------------------
def _one_of(column: str, name: str, values: list[str]) -> tuple[str, dict]:
    """`column` is one of `values`, as a filter DuckDB pushes into the Parquet scan: one value compared as
    is; a few inside their min..max range (which skips row groups) and then exactly; many by a join."""
    values = sorted(set(values))
    if len(values) == 1:
        return f"{column} = ${name}", {name: values[0]}
    if len(values) <= _LIST_AT_MOST:
        return (
            f"{column} BETWEEN ${name}_lo AND ${name}_hi AND list_contains(${name}, {column})",
            {name: values, f"{name}_lo": values[0], f"{name}_hi": values[-1]},
        )
    return f"{column} IN (SELECT unnest(${name}))", {name: values}


def candidates(con: duckdb.DuckDBPyConnection, ident: str, prefix: bool = False) -> list[str]:
    """The logical ids of every call that `ident` may find (a superset of what `FIND` selects: an id of an
    older response, say, is looked at too; `found()` keeps what the receipts' ids hold); with `prefix`,
    of every call with an id that starts with `ident`."""
    key = normalized(con, ident)
    if not key:
        return []
    # (`ids` is sorted by id: an id, or the range of ids a prefix starts, is one row group of a file)
    match = "{c} >= $k AND {c} < $hi AND starts_with({c}, $k)" if prefix else "{c} = $k"
    hits = [f"SELECT receipt_id FROM folded.ids WHERE {match.format(c='id')}"]
    hits += [f"SELECT receipt_id FROM folded.{table} WHERE {match.format(c=column)}" for table, column in UUID_COLUMNS]
    attempts = [
        r[0] for r in con.execute(inline(" UNION ".join(hits), {"k": key, "hi": key + "\U0010ffff"})).fetchall()
    ]
    if not attempts:
        return []
    where, params = _one_of("receipt_id", "a", attempts)
    return sorted(
        {r[0] for r in con.execute(inline(f"SELECT logical_id FROM folded.requests WHERE {where}", params)).fetchall()}
    )


def computed(con: duckdb.DuckDBPyConnection, logical_ids: list[str]) -> list[tuple[dict, dict]]:
    """(receipt row, details) of each of these logical calls that exists, oldest first: the views of
    storage/views.sql, unchanged, over copies of only the folded rows they read (`scratch()`). Where
    `receipts` reads the kept rows alone (`db.kept_only`), the rows are read from it (one row group
    each), while the scratch computes only the details."""
    if not logical_ids:
        return []
    if kept_only(con):
        where, params = _one_of("receipt_id", "l", logical_ids)
        return _with_details(
            con, inline(f"SELECT * FROM receipts WHERE {where} ORDER BY first_seen, receipt_id", params), logical_ids
        )
    with scratch(con, logical_ids, rows=True) as cur:
        if cur is None:
            return []
        found = dicts(cur, _ROWS, {"l": sorted(set(logical_ids))})
        return [(row, details(cur, row["receipt_id"])) for row in found]


@contextlib.contextmanager
def scratch(con: duckdb.DuckDBPyConnection, logical_ids: list[str], pool: list[str] | None = None, rows: bool = False):
    """A cursor of `con` whose default database is a scratch in-memory database holding the views of
    storage/views.sql that the details read (`db.views_sql_for`), and with `rows` the receipts' rows
    (`_ROWS`), over copies of only the folded rows they read for these logical calls: their attempts
    and, for the receipts' rows, every attempt of the OpenGradient sessions they are in (a member's row
    counts its calls) and the relay hops of sealed calls. None (no cursor) if none of the calls was
    recorded.

    The scratch database is attached for the time of the `with`, or taken from `pool` (the names of
    scratch databases of `con` kept between uses: `receipts serve`'s snapshot, for the details alone) and
    emptied back into it."""
    logical_ids = sorted({x for x in logical_ids if x})
    cur = con.cursor()  # (its own default catalog; `con` may serve other threads meanwhile)
    try:
        home = cast(tuple, cur.execute("SELECT current_database()").fetchone())[0]
        # (the calls' attempts are read while a new scratch database is made)
        with meanwhile(con, lambda reading: _attempts(reading, f"{home}.folded", logical_ids)) as found:
            name = pool.pop() if pool else _new_scratch(cur, home, _ROWS + _DETAILS if rows else _DETAILS)
        try:
            attempts = found.result()
            recorded = bool(attempts.own)
            if recorded:
                _copy_rows(cur, f"{home}.folded", f"{name}.folded", logical_ids, attempts, rows)
                cur.execute(f"USE {name}")
            yield cur if recorded else None
        finally:
            cur.execute(f"USE {home}")
            if pool is None:
                cur.execute(f"DETACH {name}")
            else:
                for table in _SCRATCH_TABLES:
                    cur.execute(f"DELETE FROM {name}.folded.{table}")
                pool.append(name)
    finally:
        cur.close()


# the tables of a receipt's attempts, keyed by the attempt's receipt_id (copied at once: `_copy_rows`)
_BY_ATTEMPT = ("responses", "offers", "settlements", "stream_ends", "errors", "checks")
# what the views of a receipt and its details read (neither `events` nor the tail's tables)
_SCRATCH_TABLES = ("requests", "payments", *_BY_ATTEMPT)


def _new_scratch(cur: duckdb.DuckDBPyConnection, home: str, reads: str) -> str:
    """Attach an empty scratch database with the tables of `home`'s `folded` schema and the views that
    the SQL `reads` needs."""
    from .db import views_sql_for

    name = f"receipt_{secrets.token_hex(8)}"
    cur.execute(f"ATTACH ':memory:' AS {name}")
    cur.execute(f"CREATE SCHEMA {name}.folded")
    for table in _SCRATCH_TABLES:  # (the tail's tables have the columns of the files: db.bind)
        cur.execute(f"CREATE TABLE {name}.folded.{table} AS FROM {home}.folded.tail_{table} LIMIT 0")
    cur.execute(f"CREATE TABLE {name}.folded.scope_ids (logical_id VARCHAR)")
    cur.execute(f"USE {name}")
    try:  # (no `receipts`: computed() reads receipts_of(false), the scratch holding only its rows)
        cur.execute(views_sql_for(reads))
    finally:
        cur.execute(f"USE {home}")
    return name


class Attempts(NamedTuple):
    """The attempts of some logical calls (`own`), those of them that paid, and the OpenGradient sessions
    their requests name, lowercased as `folded.ids` holds them."""

    own: list[str]
    paid: list[str]
    sessions: list[str]


def _copy_rows(
    cur: duckdb.DuckDBPyConnection, src: str, into: str, logical_ids: list[str], calls: Attempts, rows: bool
) -> None:
    """Copy from schema `src` into the empty tables of schema `into` the rows the views need to compute
    the details of these logical calls (`calls`: their attempts, `_attempts`), and with `rows` their
    receipts' rows: every table's rows of their attempts at once (`_copy_attempts`). A receipt's row also
    counts the calls of its OpenGradient session, found by the sessions their requests name (copied with
    them) or, rarely, by an answer alone (the call that opened one: copied after), and reads the relay
    hops of sealed calls; its details read neither."""
    own = calls.own
    members = sorted(set(_session_members(cur, src, calls.sessions)) - set(own)) if rows else []
    # (a member's request was not read: whether it paid is not known, its payments are looked for)
    _copy_attempts(cur, src, into, sorted(own + members), sorted(calls.paid + members), logical_ids)
    if rows:
        _copy_opened_sessions(cur, src, into, own, calls.sessions, own + members)
        _copy_relay_hops(cur, src, into)


def _copy_opened_sessions(
    cur: duckdb.DuckDBPyConnection, src: str, into: str, own: list[str], sessions: list[str], copied: list[str]
) -> None:
    """Copy the attempts of the OpenGradient sessions that the answers to `own` name, and none of their
    requests (`sessions`), but those `copied` already."""
    where, params = _one_of("receipt_id", "a", own)
    sql = inline(f"SELECT DISTINCT lower(og_upto_session) FROM {into}.responses WHERE {where}", params)
    opened = sorted({r[0] for r in cur.execute(sql).fetchall() if r[0]} - set(sessions))
    more = sorted(set(_session_members(cur, src, opened)) - set(copied))
    if more:
        _copy_attempts(cur, src, into, more, more, [])


def _copy_relay_hops(cur: duckdb.DuckDBPyConnection, src: str, into: str) -> None:
    """Copy the requests of the relay hops of the sealed calls in `into` (views.sql `relayed`: they say
    enough)."""
    sql = f"SELECT request_sha256 FROM {into}.requests WHERE ohttp AND request_sha256 IS NOT NULL"
    sealed = [r[0] for r in cur.execute(sql).fetchall()]
    if sealed:
        same, params = _one_of("request_sha256", "h", sealed)
        cur.execute(
            inline(
                f"INSERT INTO {into}.requests SELECT * FROM {src}.requests WHERE {same} AND "
                f"(paid OR upto_session IS NOT NULL) AND receipt_id NOT IN (SELECT receipt_id FROM {into}.requests)",
                params,
            )
        )


def _copy_attempts(
    cur: duckdb.DuckDBPyConnection,
    src: str,
    into: str,
    attempts: list[str],
    paying: list[str],
    logical_ids: list[str],
) -> None:
    """Copy from schema `src` into `into` the rows of these attempts, every table at once (`at_once`):
    the payments of those of them in `paying`; the verifier's checks of these logical ids too."""

    def copy(table: str, keys: list[str]) -> str:
        where, params = _one_of("receipt_id", "k", keys)
        return inline(f"INSERT INTO {into}.{table} SELECT * FROM {src}.{table} WHERE {where}", params)

    copies = [copy(table, attempts + logical_ids if table == "checks" else attempts) for table in _BY_ATTEMPT]
    at_once(cur, [copy("requests", attempts), *copies] + ([copy("payments", paying)] if paying else []))


def _attempts(cur: duckdb.DuckDBPyConnection, src: str, logical_ids: list[str]) -> Attempts:
    """The attempts of these logical calls in `src` (a read of three columns of their requests)."""
    if not logical_ids:
        return Attempts([], [], [])
    where, params = _one_of("logical_id", "l", logical_ids)
    found = cur.execute(
        inline(f"SELECT receipt_id, paid, lower(upto_session) FROM {src}.requests WHERE {where}", params)
    ).fetchall()
    return Attempts(
        sorted({r[0] for r in found}),
        sorted({r[0] for r in found if r[1]}),
        sorted({r[2] for r in found if r[2]}),
    )


def _session_members(cur: duckdb.DuckDBPyConnection, src: str, sessions: list[str]) -> list[str]:
    """Every attempt in `src` that names one of these sessions (lowercased) by its request or its answer,
    found by the index of ids (`folded.ids`, sorted by id: one row group of each file is read): with a
    few more, if any, that carry the same text as another id; the views count only the session's own."""
    if not sessions:
        return []
    where, params = _one_of("id", "s", sessions)
    sql = inline(f"SELECT DISTINCT receipt_id FROM {src}.ids WHERE {where}", params)
    return [r[0] for r in cur.execute(sql).fetchall()]


def found(con: duckdb.DuckDBPyConnection, ident: str) -> list[tuple[dict, dict]]:
    """Every receipt that `ident` finds (receipt, request, provider or response id, tx hash, job id,
    session id, nonce, payer, …: what `FIND` selects), with its details; what `receipts show` prints."""
    key = normalized(con, ident)
    return [(r, d) for r, d in computed(con, candidates(con, key)) if key in (r["ids"] or [])]


PREFIX_AT_LEAST = 6  # characters of an id that `receipts show` takes as its beginning
PREFIX_LISTED = 10  # receipts an ambiguous beginning names


def by_prefix(con: duckdb.DuckDBPyConnection, prefix: str, at_most: int = PREFIX_LISTED) -> list[str]:
    """The logical ids of the receipts with an id that starts with `prefix` (as `receipts list` shortens
    them, with or without its `…`), as git takes a commit's beginning: at most `at_most` (more: that many
    and one); none for a prefix shorter than PREFIX_AT_LEAST."""
    key = normalized(con, prefix.strip().removesuffix("…"))
    if len(key) < PREFIX_AT_LEAST:
        return []
    return candidates(con, key, prefix=True)[: at_most + 1]


def details(con: duckdb.DuckDBPyConnection, receipt_id: str) -> dict[str, list[dict]]:
    """A receipt's details (DETAILS: its attempts, the 402's terms, payments, settlements, checks), in
    `con`'s default database (a scratch's), the queries at once."""
    here = cast(tuple, con.execute("SELECT current_database()").fetchone())[0]
    return dict(zip(DETAILS, at_once(con, [inline(sql, {"id": receipt_id}) for sql in DETAILS.values()], here)))


def one_receipt(
    con: duckdb.DuckDBPyConnection, receipt_id: str, pool: list[str] | None = None
) -> tuple[dict, dict] | None:
    """The receipt whose own id (its logical call's) this is, as `receipts` has it in `con` (a snapshot of
    `receipts serve`), and its details computed over only its rows (`scratch()`, from `pool`); None if
    there is none."""
    got = _with_details(
        con, inline("SELECT * FROM receipts WHERE receipt_id = $id", {"id": receipt_id}), [receipt_id], pool
    )
    return got[0] if got else None


def _with_details(
    con: duckdb.DuckDBPyConnection, found: str, logical_ids: list[str], pool: list[str] | None = None
) -> list[tuple[dict, dict]]:
    """Each receipt row that the query `found` gives (of some of `logical_ids`), with its details, computed
    over only the rows of those calls (`scratch()`, from `pool`) while `found` runs."""
    with meanwhile(con, lambda reading: dicts(reading, found)) as rows, scratch(con, logical_ids, pool) as cur:
        return [
            (r, details(cur, r["receipt_id"]) if cur is not None else {name: [] for name in DETAILS})
            for r in rows.result()
        ]


def receipt(con: duckdb.DuckDBPyConnection, receipt_id: str) -> tuple[dict, dict] | None:
    """The receipt whose own id (its logical call's) this is, with its details, computed over only its
    rows (`computed()`); None if there is none."""
    got = computed(con, [receipt_id])
    return got[0] if got else None


# ---- lists ---------------------------------------------------------------------------------------------
LIST_COLUMNS = (
    "receipt_id, first_seen, host, path, model, status, proof_status, resolution, total_tokens, "
    "latency_ms, cost, cost_currency, cost_source, amount, decimals, symbol, asset, payer, pay_to, "
    "payment_hash"
)


def list_receipts(
    con: duckdb.DuckDBPyConnection, status: str | None = None, since: datetime | None = None, limit: int = 50
) -> list[dict]:
    """`receipts list`: newest first, with the filters of the web page's list (`serve_where()`); reads
    `receipts` alone (so `receipts list` connects with db.AT_LEAST_RECEIPTS)."""
    where, params = serve_where({"status": status, "since": since})
    sql = f"SELECT {LIST_COLUMNS} FROM receipts WHERE {where} ORDER BY first_seen DESC, receipt_id DESC LIMIT $limit"
    return dicts(con, sql, {**params, "limit": limit})


NEW_CALLS = (
    "SELECT receipt_id, logical_id, started_at, method, host, path, status, model, total_tokens, paid, error"
    " FROM calls_of(false, started_after := $after)"
    " WHERE started_at > coalesce($after, TIMESTAMP '1970-01-01') ORDER BY started_at"
)


def new_calls(con: duckdb.DuckDBPyConnection, after: datetime | None) -> list[dict]:
    """Calls that started after `after` (for `receipts tail`, every second; NEW_CALLS needs only the views
    `db.views_sql_for` gives it): the rows of `calls`, computed for those exchanges alone
    (`calls_of(…, started_after)`), not for every exchange as the view is."""
    return dicts(con, NEW_CALLS, {"after": after})


def parse_since(text: str) -> datetime:
    """`10m`, `2h`, `3d` ago, or an ISO date/time (UTC)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip()
    if t[:-1].isdigit() and t[-1:] in units:
        return (datetime.now(UTC) - timedelta(seconds=int(t[:-1]) * units[t[-1]])).replace(tzinfo=None)
    try:
        moment = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since takes a duration such as 30m, 2h, 7d or a date such as 2026-11-24, not {text!r}"
        ) from None
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


# ---- the web page's list, counts and charts (over `receipts`: in `receipts serve`, the table of its rows) --
SERVE_COLUMNS = (
    "receipt_id, first_seen, last_seen, app_name, host, path, model, total_tokens, latency_ms, "
    "cost, cost_currency, cost_source, price_table, status, "
    "proof_status, resolution, reason, amount, amount_cap, decimals, symbol, asset, network, payer, "
    "pay_to, payment_hash, session_id, session_amount, session_opened_by, attempts"
)
# what a call cost, counted once: a settled/signed amount, or a session's total at the call that opened it
SPEND = "coalesce(amount, 0) + CASE WHEN receipt_id = session_opened_by THEN coalesce(session_amount, 0) ELSE 0 END"


def serve_where(f: dict) -> tuple[str, dict]:
    """SQL condition and parameters for the list's filters: app (app_name), host, model, status (a proof
    status or a resolution), since/until (datetimes), q (any id, as `receipts show` finds it; `q_ids`: the
    receipts `search()` found for it)."""
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
        if "q_ids" in f:  # found by search(): a few receipts, not a scan of every receipt's ids
            where.append("list_contains($q_ids, receipt_id)")
            params["q_ids"] = f["q_ids"]
        else:
            where.append("list_contains(ids, lower(trim($q)))")
            params["q"] = f["q"]
    return (" AND ".join(where) or "true"), params


# In a snapshot of `receipts serve`, every id of every receipt by its hash (`h`), with the row of the
# receipt in the `receipts` table (`r`, its rowid), ordered by hash so that a lookup reads one row group.
RECEIPT_IDS = (
    "CREATE TABLE receipt_ids AS SELECT hash(id) AS h, r FROM "
    "(SELECT unnest(ids) AS id, rowid AS r FROM receipts) ORDER BY h"
)


def search(con: duckdb.DuckDBPyConnection, ident: str) -> list[str]:
    """In a snapshot of `receipts serve`: the ids of the receipts `ident` finds (as `FIND`), through
    `receipt_ids` (a hash can collide: the receipt's ids are compared too)."""
    key = normalized(con, ident)
    return [
        r[0]
        for r in con.execute(
            inline(
                "SELECT receipt_id FROM receipts WHERE rowid IN (SELECT r FROM receipt_ids WHERE h = hash($k)) "
                "AND list_contains(ids, $k) ORDER BY receipt_id",
                {"k": key},
            )
        ).fetchall()
    ]


def serve_list(con, f: dict, limit: int = 50, before: tuple | None = None) -> list[dict]:
    """Receipts matching the filters, newest first; `before` = (first_seen, receipt_id) of the last row
    of the previous page."""
    where, params = serve_where(f)
    if before:
        where += " AND (first_seen < $bt OR (first_seen = $bt AND receipt_id < $bid))"
        params.update(bt=before[0], bid=before[1])
    return dicts(
        con,
        f"SELECT {SERVE_COLUMNS} FROM receipts WHERE {where} ORDER BY first_seen DESC, receipt_id DESC LIMIT $limit",
        {**params, "limit": limit},
    )


def serve_count(con, f: dict) -> int:
    where, params = serve_where(f)
    return con.execute(inline(f"SELECT count(*) FROM receipts WHERE {where}", params)).fetchone()[0]


def serve_facets(con) -> dict[str, list[tuple]]:
    """The values each filter offers, most frequent first, with their counts."""
    out = {}
    for key, column in (("app", "app_name"), ("host", "host"), ("model", "model")):
        out[key] = rows(
            con,
            f"SELECT {column}, count(*) FROM receipts WHERE {column} IS NOT NULL "
            "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 200",
        )[1]
    out["status"] = rows(
        con,
        "SELECT s, count(*) FROM (SELECT proof_status AS s FROM receipts UNION ALL "
        "SELECT resolution FROM receipts WHERE resolution IS NOT NULL) GROUP BY 1 ORDER BY 2 DESC",
    )[1]
    return out


def serve_span(con, f: dict) -> tuple:
    where, params = serve_where(f)
    return con.execute(
        inline(f"SELECT min(first_seen), max(first_seen) FROM receipts WHERE {where}", params)
    ).fetchone()


def spend_over_time(con, f: dict, bucket: str, by: str = "app_name") -> list[dict]:
    """Spend per time bucket ('hour', 'day', 'week') and `by` (app_name or pay_to), per asset."""
    assert by in ("app_name", "pay_to") and bucket in ("hour", "day", "week")
    where, params = serve_where(f)
    return dicts(
        con,
        f"""SELECT date_trunc('{bucket}', first_seen) AS t, coalesce({by}, '—') AS key,
                                 asset, network, any_value(symbol) AS symbol, any_value(decimals) AS decimals,
                                 sum({SPEND}) AS spend, count(*) AS calls
                          FROM receipts WHERE {where} AND asset IS NOT NULL
                          GROUP BY ALL HAVING sum({SPEND}) > 0 ORDER BY t""",
        params,
    )


def spend_by(con, f: dict, by: str = "pay_to", limit: int = 12) -> list[dict]:
    """Total spend per payee (or app) and asset, largest first."""
    assert by in ("app_name", "pay_to")
    where, params = serve_where(f)
    return dicts(
        con,
        f"""SELECT coalesce({by}, '—') AS key, asset, network, any_value(symbol) AS symbol,
                                 any_value(decimals) AS decimals, sum({SPEND}) AS spend, count(*) AS calls
                          FROM receipts WHERE {where} AND asset IS NOT NULL
                          GROUP BY ALL HAVING sum({SPEND}) > 0 ORDER BY spend DESC LIMIT {int(limit)}""",
        params,
    )


USAGE_MEASURES = {  # the usage charts: what each sums (or takes the 95th percentile of) per bucket and group
    "tokens": "sum(total_tokens)",
    "cost": "sum(cost)",
    "latency": "quantile_cont(latency_ms, 0.95)",
    "errors": "count(*) FILTER (WHERE status IS NULL OR status >= 400)",
}


def usage_over_time(con, f: dict, measure: str, bucket: str, by: str = "model") -> list[dict]:
    """Tokens, cost (per currency), p95 latency or failed calls per time bucket and `by` (model or app_name),
    over every call, paid on chain or not."""
    assert measure in USAGE_MEASURES and by in ("model", "app_name") and bucket in ("hour", "day", "week")
    where, params = serve_where(f)
    unit = "cost_currency" if measure == "cost" else "NULL::VARCHAR"
    return dicts(
        con,
        f"""SELECT date_trunc('{bucket}', first_seen) AS t, coalesce({by}, '—') AS key,
                                 {unit} AS unit, {USAGE_MEASURES[measure]} AS value, count(*) AS calls
                          FROM receipts WHERE {where} GROUP BY ALL
                          HAVING {USAGE_MEASURES[measure]} > 0 ORDER BY t""",
        params,
    )


def paid_calls(con, f: dict) -> int:
    """How many of the calls the filters match were paid on chain (the spend charts are shown for them)."""
    where, params = serve_where(f)
    return con.execute(inline(f"SELECT count(*) FROM receipts WHERE {where} AND asset IS NOT NULL", params)).fetchone()[
        0
    ]


def status_counts(con, f: dict) -> list[dict]:
    """Receipts per proof status and resolution."""
    where, params = serve_where(f)
    return dicts(
        con,
        f"SELECT proof_status, resolution, count(*) AS n FROM receipts WHERE {where} GROUP BY ALL ORDER BY n DESC",
        params,
    )
