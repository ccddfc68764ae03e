"""Read-only DuckDB access to the journal: every reader goes through here.

No process ever holds the journal open for writing through DuckDB, so any number of readers (the
CLI, the verifier, the duckdb CLI, notebooks) work while the proxy captures.
"""
from __future__ import annotations

import logging
import os
import re
from importlib import resources
from pathlib import Path

import duckdb

from .journal import journal_dir
from .layout import columns_sql, ensure_anchors

log = logging.getLogger("receipts.db")
DB_FILE = "receipts.duckdb"
VIEWS = ("events", "calls", "challenges", "payments", "settlements", "checks", "receipts")
READ_ONLY_STATEMENTS = {"SELECT", "EXPLAIN", "PRAGMA"}
MACRO = re.compile(r"^CREATE OR REPLACE MACRO\b.*?;[ \t]*$", re.S | re.M)  # each ends at the first line ending in ;


class QueryRejected(ValueError):
    """The SQL would change something; `receipts sql` only reads."""


def views_sql(data_dir: str | os.PathLike) -> str:
    journal = journal_dir(data_dir).resolve()
    text = resources.files("storage").joinpath("views.sql").read_text()
    return text.replace("{journal}", str(journal).replace("'", "''")).replace("{columns}", columns_sql())


def _prepare(data_dir: str | os.PathLike) -> None:
    ensure_anchors(journal_dir(data_dir))


def connect(data_dir: str | os.PathLike, snapshot: bool = True, views: bool = True,
            receipts: list[str] | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the views over `data_dir`'s journal.

    With `snapshot` (the default), the journal is read once into a temporary `events` table that the
    views then use: every query of the connection sees the same consistent moment, and the files are
    read and parsed once instead of once per view that a query touches. With `receipts`, the snapshot
    holds only the events of those receipt ids (for a program that needs the views of a few calls).
    Without `views`, only the macros (`utc`, `json_fields`, `parquet_fields`, `event_fields`) are
    defined: binding every view costs ~50 ms that a program reading through them alone need not pay.
    """
    _prepare(data_dir)
    con = duckdb.connect(":memory:")
    if not views:
        con.execute("\n".join(MACRO.findall(views_sql(data_dir))))
        return con
    con.execute(views_sql(data_dir))
    if snapshot and receipts is None:
        con.execute("CREATE TEMP TABLE events AS SELECT * FROM main.events")
    elif snapshot:
        con.execute("CREATE TEMP TABLE events AS SELECT * FROM main.events "
                    "WHERE receipt_id IN (SELECT unnest($receipts))", {"receipts": receipts})
    return con


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Reject anything but queries: `receipts sql` must never change or write files."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryRejected(str(exc).splitlines()[0]) from None
    if not statements:
        raise QueryRejected("no SQL statement given")
    for st in statements:
        kind = str(st.type).rsplit(".", 1)[-1]
        if kind not in READ_ONLY_STATEMENTS:
            raise QueryRejected(f"only queries are allowed here, not {kind} statements")


def ensure_database_file(data_dir: str | os.PathLike) -> Path | None:
    """Write `<data>/receipts.duckdb` holding the same views, for external tools (duckdb CLI, notebooks).

    Rewritten only when its views differ from this version's; if a reader holds it open, it is left
    as it is (DuckDB allows one writer or many readers) and a warning says so.
    """
    _prepare(data_dir)
    path = Path(data_dir) / DB_FILE
    sql = views_sql(data_dir)
    try:
        if path.exists():
            with duckdb.connect(str(path), read_only=True) as con:
                if con.execute("SELECT max(sql) FROM receipts_meta").fetchone()[0] == sql:
                    return path
    except duckdb.Error:
        pass
    try:
        with duckdb.connect(str(path)) as con:
            con.execute(sql)
            con.execute("CREATE OR REPLACE TABLE receipts_meta AS SELECT $sql AS sql", {"sql": sql})
    except duckdb.Error as exc:
        log.warning("could not update %s (is a reader holding it open?): %s", path, str(exc).splitlines()[0])
        return None
    return path
