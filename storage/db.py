"""Read-only, sandboxed DuckDB access to the journal: every reader goes through here.

No process ever holds the journal open for writing through DuckDB, so any number of readers (the
CLI, the verifier, the duckdb CLI, notebooks) work while the proxy captures.

Every connection opened here is confined by DuckDB's own sandbox (`sandbox()`): external access off,
files only under the directories and at the paths it is given (the journal; an export's output file),
no extension loaded or installed, and the configuration locked so that no statement can undo it.
`receipts sql` adds a check of the statement itself (`check_read_only()`): one statement, and only a
query (SELECT, a PRAGMA from READ_PRAGMAS, EXPLAIN of a SELECT). Each covers what the other cannot:
a plain SELECT can call `read_text('/etc/shadow')`, which only the sandbox stops; the sandbox does not
tell reading from writing, so a COPY into a place it allows (the journal) is stopped by the check alone.
(A statement-type check by itself let `PRAGMA import_database` and `EXPLAIN ANALYZE COPY … TO` through.)
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import math
import os
import re
import secrets
import shutil
import stat
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import cast

import duckdb

from . import fold
from .fold import tables_dir
from .journal import journal_dir
from .layout import ensure_anchors

log = logging.getLogger("receipts.db")
DB_FILE = "receipts.duckdb"
# PRAGMAs that only read: the version and platform, the catalog (tables, columns, functions, collations)
# and the database's size. Every other PRAGMA is refused by `receipts sql`: some change settings, and
# `import_database` runs the SQL files of a directory.
READ_PRAGMAS = frozenset(
    {
        "version",
        "platform",
        "user_agent",
        "table_info",
        "show_tables",
        "show_tables_expanded",
        "show_databases",
        "database_list",
        "database_size",
        "functions",
        "collations",
    }
)


# Table functions that change the connection although its configuration is locked (DuckDB 1.5.5 lets
# them run; they cannot reach a file outside the sandbox, but a query has no business calling them).
STATE_FUNCTIONS = frozenset({"enable_logging", "disable_logging", "truncate_duckdb_logs"})
# Functions of the lake's extensions that reach past its tables: PostgreSQL itself (the catalog's server,
# read-only here, but every table the role may read), and DuckLake's maintenance (refused by the read-only
# catalog anyway). `receipts sql --lake` reads the views and tables only.
LAKE_FUNCTIONS = frozenset(
    {
        "postgres_query",
        "postgres_execute",
        "postgres_attach",
        "postgres_scan",
        "postgres_scan_pushdown",
        "postgres_clear_cache",
    }
)


class QueryRejected(ValueError):
    """The SQL would change something; `receipts sql` only reads."""


def views_sql() -> str:
    return resources.files(__package__).joinpath("views.sql").read_text()


# What `connect()` / `bind()` define besides the tables (`views`): True, every view; False, none; or
AT_LEAST_RECEIPTS = "receipts"  # `receipts`, and only it when it reads the kept rows alone, else every view
KEPT_RECEIPTS = "kept"  # `receipts` when it reads the kept rows alone, else none
# (binding views.sql, which DuckDB does view by view as it creates them, is most of a connection's time)
_CATALOG = ("duckdb_", "information_schema", "pg_", "sqlite_", "pragma_")  # what lists a connection's names


@functools.cache
def view_names() -> frozenset[str]:
    """The names of the views and macros of storage/views.sql, lowercase."""
    return frozenset(defined for defined, _, _ in _view_statements())


@functools.cache
def _view_statements() -> tuple[tuple[str, frozenset[str], str], ...]:
    """views.sql statement by statement: (the name it defines, the names of views.sql it uses, its text).
    Its words are read with a regular expression, not DuckDB's tokens (`_words`, for a user's SQL: 15 ms
    over views.sql, on the way of every `receipts show`): views.sql has no `--` inside a string and no
    `/* */` comment."""
    before: set[str] = set()
    out = []
    for statement in duckdb.extract_statements(views_sql()):
        words = re.findall(r"\w+", re.sub(r"--[^\n]*", "", statement.query).lower())
        defined = words[next(i for i, w in enumerate(words) if w in ("view", "macro")) + 1]
        out.append((defined, frozenset(words) & before, statement.query))  # (`folded.payments`: not the view)
        before.add(defined)
    return tuple(out)


def views_sql_for(sql: str) -> str:
    """The statements of views.sql that define what `sql` names (its words), and what those use, in
    their order: what a connection that runs only `sql` needs bound (binding all of views.sql takes
    ~30 ms, half of it `receipts_of`)."""
    need = {text.lower() for _, text in _words(sql)} & view_names()
    for defined, uses, _ in reversed(_view_statements()):  # (a statement can use only those before it)
        if defined in need:
            need |= uses
    return ";\n".join(text for defined, _, text in _view_statements() if defined in need) + ";"


def reads_receipts_alone(sql: str) -> bool:
    """Whether the query names `receipts` and nothing else that a connection defines besides the tables:
    no view or macro of views.sql, no listing of the catalog. Such a query needs no more than
    AT_LEAST_RECEIPTS. Only DuckDB's tokens are read (binding the query here, outside the sandbox, would
    open what it names): a word that might be such a name is a no, and every view is bound."""
    words = {text.lower() for _, text in _words(sql)}
    return "receipts" in words and not words & view_names() and not any(w.startswith(_CATALOG) for w in words)


def _prepare(data_dir: str | os.PathLike) -> None:
    ensure_anchors(journal_dir(data_dir))


_spill_root: str | None = None


def spill_dir() -> str:
    """A directory for one connection's spill files, which DuckDB creates when it needs it and removes on
    close: `<pid>-<random>` inside one private (0700) directory of this user, `receipts-duckdb-<uid>` in the
    system's temporary directory. Set explicitly because DuckDB's default, `.tmp` under the current
    directory, is added to the directories the sandbox allows. A process that dies while it spills (kill
    -9) leaves its directory: the next process of the user removes those of processes that are gone."""
    global _spill_root
    if _spill_root is None:
        _spill_root = _private_root()
        _remove_orphans(_spill_root)
    return os.path.join(_spill_root, f"{os.getpid()}-{secrets.token_hex(6)}")


def _private_root() -> str:
    """The user's spill directory, made 0700 if missing; if the name is taken by anything else (another
    user's, a link, looser modes), a fresh private directory of this process instead (removed at exit)."""
    root = os.path.join(tempfile.gettempdir(), f"receipts-duckdb-{os.getuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(root, 0o700)
    st = os.lstat(root)
    if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700:
        return root
    mine = tempfile.mkdtemp(prefix="receipts-duckdb-")
    atexit.register(shutil.rmtree, mine, True)
    return mine


def _remove_orphans(root: str, at_most: int = 1000) -> None:
    """Remove the spill directories in `root` whose process is gone (at most `at_most` entries looked at)."""
    for name in sorted(os.listdir(root))[:at_most]:
        pid = name.split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        except PermissionError:  # (a live process of someone else: not ours to touch)
            pass


def sandbox(con: duckdb.DuckDBPyConnection, directories=(), paths=()) -> duckdb.DuckDBPyConnection:
    """Confine `con` for good: from now on DuckDB opens files only under `directories` and at `paths`
    (globs included: a glob under an allowed directory lists only there), loads and installs no
    extension, reaches no URL, and refuses every change of a setting (`lock_configuration`). DuckDB does
    not tell reading from writing: an allowed place can be written by a COPY, which is why `receipts sql`
    also checks its statement. Its spill directory (`temp_directory`) is allowed too, so set it first.

    The order matters: the allowed places can only be set while external access is on, and nothing can
    be set once the configuration is locked."""
    con.execute(
        f"SET allowed_directories = {_list(d if '://' in str(d) else str(Path(d).resolve()) for d in directories)}"
    )
    con.execute(f"SET allowed_paths = {_list(os.path.abspath(p) for p in paths)}")  # (as the COPY names it)
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


@dataclass(frozen=True)
class Lake:
    """A lake (storage/lake.py) given to a reader in place of a data directory (`--lake`)."""

    url: str

    def __str__(self) -> str:
        return f"lake {self.url}"


def connect(
    data_dir: str | os.PathLike | Lake,
    *,
    views: bool | str = True,
    journal: bool = True,
    write=(),
    settings: dict | None = None,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the tables and views over `data_dir`, sandboxed (`sandbox()`).

    Every query of the connection sees the same moment (`bind`): the fold's tables as its manifest names
    them, plus the tail it does not hold yet, folded here once. Without `views`, only the tables
    (schema `folded`; what a program that reads them alone needs); with AT_LEAST_RECEIPTS or
    KEPT_RECEIPTS, fewer views when the kept receipts are all there is (`bind()`).

    The connection can open files under the journal and the tables only; with `journal=False` under the
    tables only (`receipts sql`). `write` names the files it may also write (an export's output).
    `settings` are DuckDB settings applied before the configuration is locked (e.g. `{"threads": 1}`).
    A `Lake` instead of a directory: the same over the lake (`connect_lake()`).
    """
    if isinstance(data_dir, Lake):
        return connect_lake(data_dir.url, views=views, write=write, settings=settings)
    _prepare(data_dir)
    con = duckdb.connect(":memory:")
    try:
        # (no prepared parameters here: binding one makes duckdb import pandas, 0.3 s of every command)
        con.execute(f"SET temp_directory = {_lit(spill_dir())}")
        con.execute("SET enable_progress_bar = false")  # (DuckDB's bar would print on a terminal)
        # Each view binds the same Parquet files (every file is written once, under a new name, and never
        # changed): their footers are read once per connection, not once per view (half of a connect).
        con.execute("SET parquet_metadata_cache = true")
        for name, value in (settings or {}).items():
            con.execute(f"SET GLOBAL {name} = {_lit(value)}")  # (names are ours, never a user's; GLOBAL: cursors too)
        bind(con, data_dir, views=views)
        places = [tables_dir(data_dir)] + ([journal_dir(data_dir)] if journal else [])
        return sandbox(con, places, write)
    except BaseException:
        con.close()
        raise


def connect_lake(
    url: str, *, views: bool | str = True, write=(), settings: dict | None = None
) -> duckdb.DuckDBPyConnection:
    """As `connect()`, over a lake (storage/lake.py) instead of a data directory: the catalog attached
    read-only, the same views over its tables, sandboxed to the lake's data path (and `write`). A lake's
    `receipts` always computes the rows shipped since its last keep: KEPT_RECEIPTS binds no view."""
    from . import lake

    views = views is True or views == AT_LEAST_RECEIPTS
    con = lake.open_lake(url, read_only=True)
    try:
        con.execute(f"SET temp_directory = {_lit(spill_dir())}")
        con.execute("SET enable_progress_bar = false")
        for name, value in (settings or {}).items():
            con.execute(f"SET GLOBAL {name} = {_lit(value)}")
        lake.check_tables(con)
        bind_lake(con, views=views)
        return sandbox(con, [lake.data_path(con)], write)
    except BaseException:
        con.close()
        raise


def bind_lake(con: duckdb.DuckDBPyConnection, *, views: bool = True, kept: bool = True) -> int:
    """The tables of `folded` as the lake's (storage/lake.py attaches it as `lake`), every one read at the
    same snapshot, and the views over them: what `bind()` gives over a data directory. With `kept`, the
    receipts `receipts lake maintain` kept (lake.keep_receipts) stand for every receipt that no later
    shipment touched, and only the touched ones are computed by the query (the rows inserted since are the
    tail, as a data directory's unfolded events are); otherwise every receipt is computed. Returns the
    snapshot read."""
    from . import lake

    since = lake.kept_since(con) if views and kept else None
    at = lake.snapshot(con)  # (after: a keep committed between the two reads only widens the tail)
    con.execute("CREATE SCHEMA IF NOT EXISTS folded")
    for table in fold.TABLES:
        con.execute(f"CREATE OR REPLACE VIEW folded.{table} AS FROM lake.{table} AT (VERSION => {int(at)})")
        new = (
            f"FROM ducklake_table_insertions('{lake.ALIAS}', 'main', '{table}', {since + 1}, {int(at)})"
            if since is not None and since < at
            else f"FROM lake.{table} LIMIT 0"
        )
        con.execute(f"CREATE OR REPLACE TABLE folded.tail_{table} AS {new}")
    con.execute("CREATE OR REPLACE TABLE folded.scope_ids (logical_id VARCHAR)")
    if not views:
        return at
    con.execute(views_sql())
    if since is None:
        con.execute("CREATE OR REPLACE VIEW main.receipts_live AS FROM receipts_of(false)")
        con.execute("CREATE OR REPLACE VIEW receipts AS FROM main.receipts_live")
        return at
    scope(con, "FROM touched()")
    con.execute("CREATE OR REPLACE VIEW main.receipts_live AS FROM receipts_of(true)")
    kept_rows = f"FROM lake.{lake.KEPT} AT (VERSION => {int(at)})"
    scoped = cast(tuple, con.execute("SELECT count(*) FROM folded.scope_ids").fetchone())[0]  # count(*): one row
    if not scoped:  # nothing shipped since: the kept rows
        con.execute(f"CREATE OR REPLACE VIEW receipts AS {kept_rows}")  # (a scoped computation still scans)
        return at
    con.execute(
        f"CREATE OR REPLACE VIEW receipts AS {kept_rows} "
        "WHERE receipt_id NOT IN (SELECT logical_id FROM folded.scope_ids) UNION ALL FROM main.receipts_live"
    )
    return at


def bind(
    con: duckdb.DuckDBPyConnection,
    data_dir: str | os.PathLike,
    *,
    views: bool | str = True,
    manifest: fold.Manifest | None = None,
    tail: fold.Tail | None = None,
    tries: int = 5,
) -> int:
    """Define in `con` the tables (`folded.<table>`: their Parquet files, then their rows of the tail,
    folded here into `folded.tail_<table>`) and, with `views`, the views over them, `receipts` included.
    When nothing is computed (no tail; the kept receipts are of this views.sql), `receipts` is the kept
    rows and needs no other view: AT_LEAST_RECEIPTS and KEPT_RECEIPTS then define it alone. Otherwise
    AT_LEAST_RECEIPTS defines every view, and KEPT_RECEIPTS none.

    The manifest is read again after the tail: if a fold committed meanwhile, everything is bound again
    (a folded segment may be emptied). The fold binds its own step as the tail of the manifest it is about
    to replace (`manifest`, `tail`). Returns the number of events folded here (the tail's)."""
    con.execute("CREATE SCHEMA IF NOT EXISTS folded")
    if manifest is None and fold.stale(data_dir):  # folded by another version of fold.sql: fold them again
        fold.fold(data_dir, wait=True)
    for _ in range(tries):
        m = manifest or fold.Manifest.load(data_dir)
        t = tail if tail is not None else fold.tail(data_dir, m)
        con.execute(f"CREATE OR REPLACE TABLE folded.tail AS SELECT * FROM {t.source()}")
        # nothing to fold (no tail): a table's empty tail takes its columns from its files (the same types)
        shaped = [] if t else [table for table in fold.TABLES if m.files.get(table)]
        for table in shaped:
            first = _read_parquet(m.paths(data_dir, table)[:1])
            con.execute(f"CREATE OR REPLACE {_tail_kind(table)} folded.tail_{table} AS {first} LIMIT 0")
        _fold_tail(con, [table for table in fold.TABLES if table not in shaped])
        if manifest or fold.Manifest.load(data_dir).generation == m.generation:
            break
    for table in fold.TABLES:
        con.execute(
            f"CREATE OR REPLACE VIEW folded.{table} AS "
            + " UNION ALL ".join(
                [_read_parquet(m.paths(data_dir, table))] * bool(m.files.get(table)) + [f"FROM folded.tail_{table}"]
            )
        )
    n = cast(tuple, con.execute("SELECT count(*) FROM folded.tail").fetchone())[0]  # count(*): one row
    con.execute("CREATE OR REPLACE TABLE folded.scope_ids (logical_id VARCHAR)")
    if views:
        _bind_receipts(con, data_dir, m, n, views)
    return n


def scope(con: duckdb.DuckDBPyConnection, calls: str) -> None:
    """Add to folded.scope_ids (the logical calls the scoped macros of views.sql compute) the logical ids that
    the query `calls` gives, with every call of their sessions (`session_mates()`)."""
    con.execute(f"INSERT INTO folded.scope_ids SELECT DISTINCT logical_id FROM ({calls}) WHERE logical_id IS NOT NULL")
    con.execute(
        "INSERT INTO folded.scope_ids SELECT logical_id FROM session_mates() WHERE logical_id IS NOT NULL "
        "EXCEPT SELECT logical_id FROM folded.scope_ids"
    )


def _tail_kind(table: str) -> str:
    """`events` of the tail is a view (the tail as it is, not a second copy of every event's JSON), the
    others tables; always so, since a connection binds again (a fold's steps, a verifier's passes) and
    DuckDB does not replace a view with a table."""
    return "VIEW" if table == "events" else "TABLE"


def _fold_tail(con: duckdb.DuckDBPyConnection, tables) -> None:
    """The tail's events (`folded.tail`) folded by storage/fold.sql into `folded.tail_<table>` of `tables`."""
    if not tables:
        return
    for name, sql in fold.parses().items():  # (each event parsed once, for every table that reads it)
        con.execute(f"CREATE OR REPLACE TEMP TABLE parsed_{name} AS {sql.replace('{events}', 'folded.tail')}")
    for table, sql in fold.statements().items():
        if table not in tables:
            continue
        sql = sql.replace("{events}", "folded.tail").replace("{t}", "folded.tail_").replace("{p}", "parsed_")
        con.execute(f"CREATE OR REPLACE {_tail_kind(table)} folded.tail_{table} AS {sql}")
    for name in fold.parses():
        con.execute(f"DROP TABLE parsed_{name}")


def _define_views(con: duckdb.DuckDBPyConnection) -> None:
    """The macros and views of storage/views.sql, once per connection (a fold binds each of its steps in
    the same one): they name `folded.<table>`, which each query binds anew, so they outlive a rebind."""
    version = fold.receipts_version()
    if cast(tuple, con.execute("SELECT getvariable('receipts_views')").fetchone())[0] != version:
        con.execute(views_sql())
        con.execute(f"SET VARIABLE receipts_views = {_lit(version)}")


KEPT_ONLY = "receipts_kept_only"  # (a DuckDB variable of the connection: _bind_receipts)


def kept_only(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether `receipts` only reads the kept rows and computes none (then `main.receipts_live` is
    empty), as `_bind_receipts` said. A lake's connection never says so."""
    return bool(cast(tuple, con.execute(f"SELECT getvariable('{KEPT_ONLY}')").fetchone())[0])


def _bind_receipts(con, data_dir, m: fold.Manifest, tail_events: int, views: bool | str = True) -> None:
    """`receipts`: the rows the fold keeps (the newest of each), except those of the logical calls the tail
    touched, which each query computes (`main.receipts_live`: a view, so a query that reads no receipt
    pays nothing; it is empty when nothing is computed). Kept rows of another version of views.sql
    are not used: everything is computed here until the fold has kept them again.
    The variable `receipts_kept_only` says whether `receipts` only reads kept rows (no row computed when
    it is read): what a reader that reads it many times needs to know (storage/audit.py).
    The views of views.sql are defined first, as `views` (`bind()`) says."""
    con.execute(f"SET VARIABLE {KEPT_ONLY} = false")
    kept = m.paths(data_dir, fold.RECEIPTS) if m.receipts_version == fold.receipts_version() else None
    computes = bool(tail_events) or not kept  # (else none is computed: the kept rows are all there is)
    if computes and views == KEPT_RECEIPTS:
        return
    if computes or views is True:
        _define_views(con)
    if tail_events:
        scope(con, "FROM touched()")
    if computes:  # (binding receipts_of would cost every reader 20 ms)
        con.execute(f"CREATE OR REPLACE VIEW main.receipts_live AS FROM receipts_of({kept is not None})")
    if not kept:
        con.execute("CREATE OR REPLACE VIEW receipts AS FROM main.receipts_live")
        return
    base, deltas = kept[0], kept[1:]
    # the fold writes the HUGEINT columns as DECIMAL(38, 0) (fold._exact), and no other column has that type
    money = [
        c
        for c, t in con.execute(
            f"SELECT column_name, column_type FROM (DESCRIBE FROM read_parquet({_lit(base)}))"
        ).fetchall()
        if t == "DECIMAL(38,0)"
    ]
    back = f" REPLACE ({', '.join(f'{c}::HUGEINT AS {c}' for c in money)})" if money else ""
    newest = (
        (
            "(SELECT * EXCLUDE (filename) FROM read_parquet(["
            + ", ".join(_lit(f) for f in deltas)
            + "], filename = true) "
            "QUALIFY row_number() OVER (PARTITION BY receipt_id ORDER BY filename DESC) = 1)"
        )
        if deltas
        else None
    )
    parts = [
        f"SELECT *{back} FROM read_parquet({_lit(base)}) WHERE receipt_id NOT IN (SELECT logical_id FROM folded.scope_ids)"
        + (f" AND receipt_id NOT IN (SELECT receipt_id FROM {newest})" if newest else "")
    ]
    if newest:
        parts.append(f"SELECT *{back} FROM {newest} WHERE receipt_id NOT IN (SELECT logical_id FROM folded.scope_ids)")
    if tail_events:  # (with no tail, nothing is computed live: the kept rows are all there is)
        parts.append("FROM main.receipts_live")
    con.execute("CREATE OR REPLACE VIEW receipts AS " + " UNION ALL ".join(parts))
    if not tail_events:  # the same names in every connection, whatever the fold has done: none computed
        con.execute("CREATE OR REPLACE VIEW main.receipts_live AS FROM receipts LIMIT 0")
    con.execute(f"SET VARIABLE {KEPT_ONLY} = {not tail_events}")


_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def inline(sql: str, params: dict | None) -> str:
    """`sql` with each `$name` replaced by `params[name]` as a literal (`literal()`).

    The commands run their parameters this way rather than binding them: binding any parameter makes the
    duckdb package import pandas when it is installed, 0.2 s of every `receipts show`. Only the templates
    of this code are passed here, never a user's SQL."""
    return _PARAM.sub(lambda m: literal(params[m.group(1)]), sql) if params else sql


_SPLIT_ABOVE = 64  # strings of a list given as one string (`literal`)


def literal(value) -> str:
    """A SQL literal of `value` (None, bool, int, finite float, datetime, str, or a list of str) that
    nothing in it can end: quotes are doubled, and a text DuckDB's parser would cut (a NUL, a lone
    surrogate) is given as hex."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return f"{value!r}::DOUBLE"
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return f"decode(from_hex('{value.encode(errors='replace').hex()}'))"
        return f"decode(from_hex('{value.encode().hex()}'))" if "\x00" in value else _lit(value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        if len(value) > _SPLIT_ABOVE and not any("\n" in v for v in value):
            # one string cut into the list: DuckDB binds a list of N constants in about 8 µs each
            return f"string_split({literal(chr(10).join(value))}, chr(10))"
        return "[" + ", ".join(literal(v) for v in value) + "]::VARCHAR[]"
    raise TypeError(f"no SQL literal for {type(value).__name__}")


def _read_parquet(files: list[str]) -> str:
    return f"FROM read_parquet([{', '.join(_lit(f) for f in files)}])"


def _lit(text) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def _list(texts) -> str:
    return "[" + ", ".join(_lit(t) for t in texts) + "]"


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.Statement:
    """The one statement of `sql`, parsed, if it only reads; else QueryRejected. Run the statement
    returned (not `sql` again), so that what runs is what was checked.

    Allowed: a SELECT (with FROM-first, VALUES, DESCRIBE, SHOW, SUMMARIZE), a PRAGMA of READ_PRAGMAS
    without `=`, and EXPLAIN [ANALYZE] of a SELECT (EXPLAIN ANALYZE runs its statement)."""
    _refuse_pragmas(_words(sql))  # before DuckDB parses it: see _refuse_pragmas
    statements = _parse(con, sql)
    if not statements:
        raise QueryRejected("no SQL statement given")
    if len(statements) > 1:
        raise QueryRejected(f"one statement at a time, not {len(statements)}")
    st = statements[0]
    try:
        kind = st.type.name
    except ValueError:  # a statement type the Python client has no name for (e.g. UPDATE EXTENSIONS)
        raise QueryRejected("only queries are allowed here") from None
    words = _words(st.query)
    called = {text.lower() for _, text in words} & STATE_FUNCTIONS
    if called:
        raise QueryRejected(f"{sorted(called)[0]} is not allowed here: it changes the connection")
    called = {text.lower() for _, text in words} & LAKE_FUNCTIONS
    if called:
        raise QueryRejected(f"{sorted(called)[0]} is not allowed here: it reaches the catalog's server, not the lake")
    if kind == "SELECT":
        return st
    if kind == "PRAGMA" and _read_pragma(words):
        return st
    if kind == "PRAGMA" and words and words[0][1].upper() == "PRAGMA":
        raise QueryRejected(
            f"PRAGMA {words[1][1] if len(words) > 1 else ''} is not allowed here; "
            f"only PRAGMAs that read: {', '.join(sorted(READ_PRAGMAS))}"
        )
    if kind == "EXPLAIN" and _explains_a_query(con, st.query, words):
        return st
    if kind == "EXPLAIN":
        raise QueryRejected("EXPLAIN is allowed here only of a SELECT")
    first = words[0][1].upper() if words and words[0][1].isalpha() else kind  # (CHECKPOINT is a CALL to DuckDB)
    raise QueryRejected(f"only queries are allowed here, not {first} statements")


def _parse(con: duckdb.DuckDBPyConnection, sql: str) -> list:
    try:
        return con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryRejected(str(exc).splitlines()[0]) from None


def _words(sql: str) -> list[tuple[int, str]]:
    """DuckDB's tokens of `sql` as (offset in its UTF-8 bytes, text), comments left out."""
    raw = sql.encode()
    tokens = duckdb.tokenize(sql)
    ends = [offset for offset, _ in tokens[1:]] + [len(raw)]
    return [
        (offset, _token_text(raw[offset:end].decode(errors="replace").strip(), kind))
        for (offset, kind), end in zip(tokens, ends)
        if kind != duckdb.token_type.comment
    ]


def _token_text(text: str, kind) -> str:
    """A token's text without the comments that follow it: DuckDB 1.5's tokenizer leaves comments out
    (no token of their own), so the text up to the next token holds them. Only a string constant or a
    quoted identifier can hold a blank, `--` or `/*` of its own."""
    if kind == duckdb.token_type.string_const or text.startswith('"'):
        return text
    return re.split(r"\s|--|/\*", text, maxsplit=1)[0]


def _refuse_pragmas(words: list[tuple[int, str]]) -> None:
    """QueryRejected if a statement of `words` is a PRAGMA outside READ_PRAGMAS (or sets one with `=`).
    Checked on the tokens, before DuckDB parses the SQL: DuckDB 1.5's parser replaces a PRAGMA by the
    SQL its function returns, and `PRAGMA import_database('dir')` reads the SQL files of `dir` to do
    so; a PRAGMA that reads comes back from it as the SELECT it stands for."""
    start = 0
    for i, (_, text) in enumerate(words + [(-1, ";")]):
        if text != ";":
            continue
        statement, start = words[start:i], i + 1
        first = statement[0][1].upper() if statement else ""  # (EXPLAIN's statement is parsed on its own)
        pragma = next(
            (j for j, (_, w) in enumerate(statement) if w.upper() == "PRAGMA" and (j == 0 or first == "EXPLAIN")), None
        )
        if pragma is not None and not _read_pragma(statement[pragma:]):
            name = statement[pragma + 1][1] if pragma + 1 < len(statement) else ""
            raise QueryRejected(
                f"PRAGMA {name} is not allowed here; only PRAGMAs that read: {', '.join(sorted(READ_PRAGMAS))}"
            )


def _read_pragma(words: list[tuple[int, str]]) -> bool:
    return (
        len(words) > 1
        and words[0][1].upper() == "PRAGMA"
        and words[1][1].lower() in READ_PRAGMAS
        and not any(text == "=" for _, text in words)
    )


def _explains_a_query(con: duckdb.DuckDBPyConnection, sql: str, words: list[tuple[int, str]]) -> bool:
    """Whether an EXPLAIN statement explains one SELECT: what follows `EXPLAIN [ANALYZE]`, or its
    options in parentheses (`EXPLAIN (ANALYZE, FORMAT json) SELECT …`), must parse as one."""
    i = 1 + (len(words) > 1 and words[1][1].upper() in ("ANALYZE", "ANALYSE"))
    starts = [i]
    if i < len(words) and words[i][1] == "(":
        depth = 0
        for j in range(i, len(words)):
            depth += {"(": 1, ")": -1}.get(words[j][1], 0)
            if depth == 0:
                starts.append(j + 1)
                break
    for start in starts:
        if start >= len(words):
            continue
        try:
            inner = con.extract_statements(sql.encode()[words[start][0] :].decode())
            if len(inner) == 1 and inner[0].type.name == "SELECT":
                return True
        except (duckdb.Error, ValueError):
            continue
    return False


def ensure_database_file(data_dir: str | os.PathLike) -> Path | None:
    """Write `<data>/receipts.duckdb`: the same tables and views, for external tools (duckdb CLI, notebooks).

    It is a snapshot: the views name the Parquet files of the fold's manifest, and the tail is copied in.
    The fold writes it again after every fold, as a new file renamed over the old one, so a reader that
    holds the old one open keeps a consistent view (until it opens the file again) and never blocks the
    writer. Written under the fold's lock (one writer at a time)."""
    _prepare(data_dir)
    with fold.FoldLock(data_dir, wait=True):
        return write_database_file(data_dir)


def write_database_file(data_dir: str | os.PathLike) -> Path | None:
    """ensure_database_file, for a caller that holds the fold's lock."""
    path = Path(data_dir) / DB_FILE
    tmp = path.with_name(f".{DB_FILE}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        with duckdb.connect(str(tmp)) as con:
            con.execute(f"SET temp_directory = {_lit(spill_dir())}")
            con.execute("SET enable_progress_bar = false")
            bind(con, data_dir)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except (duckdb.Error, OSError) as exc:
        log.warning("could not write %s: %s", path, str(exc).splitlines()[0])
        tmp.unlink(missing_ok=True)
        return None
    finally:
        Path(f"{tmp}.wal").unlink(missing_ok=True)
    return path


def _open_file(path: Path, read_only: bool, directories=()) -> duckdb.DuckDBPyConnection:
    """The database file, sandboxed like every connection here (the file itself stays open to it)."""
    con = duckdb.connect(str(path), read_only=read_only)
    try:
        con.execute(f"SET temp_directory = {_lit(spill_dir())}")
        return sandbox(con, directories)
    except BaseException:
        con.close()
        raise
