"""The lake: the typed tables of many data directories in one DuckLake (a catalog in PostgreSQL, Parquet
on S3-compatible object storage), which many shippers append to and any DuckDB queries.

Each host keeps its own journal and fold as the point of durability (nothing is acknowledged to a client
on the strength of the lake); `receipts ship` copies what its data directory holds into the lake:

    lake.<table>        the tables of storage/fold.sql (events, requests, payments, …, ids), same columns;
                        `events.writer` is `<ship name>/<local writer>`, unique across the fleet
    lake.shipped        the ledger: one row per run of (writer, seq) shipped, in the same transaction as
                        the rows themselves; what it covers is never shipped again
    lake.ship_names     who owns a ship name: the first claim committed wins, every other owner refuses
    lake.lake_meta      the tables' version (storage/fold.py tables_version()), and which snapshot the
                        kept receipts are of
    lake.receipts_kept  the `receipts` view's rows as of one snapshot (`receipts lake maintain` computes
                        them): readers compute only the receipts that later shipments touched

Exactly once: a shipper owns its name (a flock on its data directory, and the first claim in the lake),
so nobody else ships those writers; it reads the ledger, chooses the events the ledger does not cover,
and inserts them, their typed rows and the ledger's rows in ONE transaction. A kill before the commit
leaves at most unreferenced Parquet objects (DuckLake writes each file under a new name: an object is
never overwritten; `receipts lake maintain` deletes such orphans); a kill after it leaves a ledger that
says so. Readers attach the catalog read-only; the data path comes from the catalog.

Credentials never come from the catalog URL or the config: PostgreSQL's from libpq (PGPASSWORD,
~/.pgpass, PGSSLMODE …), S3's from the AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL); any of them may instead be in
a private file that RECEIPTS_LAKE_SECRETS names (`load_secrets()`).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import logging
import os
import re
import signal
import socket
import sysconfig
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import orjson

from . import fold

log = logging.getLogger("receipts.lake")

DUCKDB = "1.5.5"  # the extension wheels (duckdb-extension-*) exist for this version of duckdb only
EXTENSIONS = (("httpfs", "httpfs"), ("postgres", "postgres_scanner"), ("ducklake", "ducklake"))
ALIAS = "lake"
LEDGER, NAMES, META, KEPT = "shipped", "ship_names", "lake_meta", "receipts_kept"
TABLES = fold.TABLES  # what is shipped: every table of the fold (the kept receipts are computed in the lake)
BATCH_EVENTS = 200_000  # events per commit at most (the catalog takes ~10 commits/s: ship large ones)
SHIP_STATE = "ship.json"  # in the data directory: this shipper's name and owner token, and its last report
FAULT = "RECEIPTS_SHIP_FAULT"  # tests: kill -9 this process at that point (before_upload, after_upload, after_commit)


class LakeError(Exception):
    """The lake cannot be used as asked: one sentence saying why and what to do."""


# ---- connecting ------------------------------------------------------------------------------------
def catalog(url: str) -> str:
    """The DuckLake catalog string of `url` (`postgres:dbname=… host=…`, with or without `ducklake:`).
    A password in it is refused: it would end up in shell histories and process lists."""
    url = url.strip()
    if not url:
        raise LakeError("no lake given: pass --lake 'postgres:dbname=… host=…' or set RECEIPTS_LAKE")
    if re.search(r"(^|\s)password\s*=", url, re.I) or re.search(r"://[^/@\s]*:[^/@\s]*@", url):
        raise LakeError("the lake's URL holds a password: put it in PGPASSWORD or ~/.pgpass instead")
    return url if url.startswith("ducklake:") else f"ducklake:{url}"


def _extension_files() -> list[tuple[str, str]]:
    """(file, name to LOAD) of each extension, from the duckdb-extension-* wheels."""
    import duckdb

    if duckdb.__version__ != DUCKDB:
        raise LakeError(f"the lake needs duckdb {DUCKDB} (this is {duckdb.__version__}): run scripts/bootstrap --lake")
    site = sysconfig.get_paths()["purelib"]
    out = []
    for wheel, name in EXTENSIONS:
        found = glob.glob(
            os.path.join(site, f"duckdb_extension_{wheel}", "extensions", f"v{DUCKDB}", "*.duckdb_extension")
        )
        if not found:
            raise LakeError(
                f"the {wheel} extension of DuckDB is not installed: run scripts/bootstrap --lake "
                f"(or pip install 'receipts[lake]')"
            )
        out.append((found[0], name))
    return out


def extension_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "receipts", "duckdb-extensions")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


SECRETS_FILE = "RECEIPTS_LAKE_SECRETS"  # a private file of NAME=value lines: the AWS variables, PGPASSWORD
SECRET_NAMES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "PGPASSWORD",
    "PGSSLMODE",
    "PGSSLROOTCERT",
)


def load_secrets() -> None:
    """The variables of the file RECEIPTS_LAKE_SECRETS names into this process's environment (those not
    set already). The file must be the user's only (0600): a secret others can read is refused."""
    path = os.environ.get(SECRETS_FILE)
    if not path:
        return
    try:
        st = os.stat(path)
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise LakeError(f"cannot read the secrets file {path} ({SECRETS_FILE}): {e.strerror}") from None
    if st.st_mode & 0o077 or st.st_uid != os.getuid():
        raise LakeError(f"the secrets file {path} can be read by others: chmod 600 it (and own it)")
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.strip().removeprefix("export ").strip()
        if not sep or name not in SECRET_NAMES:
            raise LakeError(f"{path}, line {n}: expected NAME=value with NAME one of {', '.join(SECRET_NAMES)}")
        os.environ.setdefault(name, value.strip().strip("'\""))


def s3_secret() -> str | None:
    """CREATE SECRET for S3 from the AWS variables (keys, region, endpoint), or None when none is set.
    An endpoint without keys is asked anonymously (never AWS's own endpoint instead)."""
    env = os.environ.get
    endpoint = env("AWS_ENDPOINT_URL_S3") or env("AWS_ENDPOINT_URL")
    key, secret = env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")
    if not (key and secret) and not endpoint:
        return None
    parts = [f"KEY_ID {_lit(key)}", f"SECRET {_lit(secret)}"] if key and secret else []
    if key and secret and env("AWS_SESSION_TOKEN"):
        parts.append(f"SESSION_TOKEN {_lit(env('AWS_SESSION_TOKEN'))}")
    parts.append(f"REGION {_lit(env('AWS_REGION') or env('AWS_DEFAULT_REGION') or 'us-east-1')}")
    if endpoint:
        u = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        parts += [f"ENDPOINT {_lit(u.netloc)}", "URL_STYLE 'path'", f"USE_SSL {str(u.scheme == 'https').lower()}"]
    return f"CREATE OR REPLACE SECRET receipts_s3 (TYPE s3, {', '.join(parts)})"


def open_lake(url: str, *, read_only: bool, data_path: str | None = None):
    """A DuckDB connection with the lake attached as `lake` (and nothing sandboxed: the caller does that).
    Only `init` (with a `data_path`) makes a lake where there is none."""
    import duckdb

    files = _extension_files()
    load_secrets()
    con = duckdb.connect(
        config={
            "extension_directory": extension_dir(),
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        }
    )
    try:
        for path, name in files:
            try:
                con.execute(f"LOAD {name}")
            except duckdb.Error:
                con.execute(f"INSTALL {_lit(path)}")
                con.execute(f"LOAD {name}")
        secret = s3_secret()
        if secret:
            con.execute(secret)
        options = ["READ_ONLY"] if read_only else []
        options.append(f"DATA_PATH {_lit(data_path)}" if data_path else "CREATE_IF_NOT_EXISTS false")
        opts = f" ({', '.join(options)})" if options else ""
        try:
            con.execute(f"ATTACH {_lit(catalog(url))} AS {ALIAS}{opts}")
        except duckdb.Error as e:
            if "creating a new DuckLake is explicitly disabled" in str(e):
                raise LakeError(
                    f"there is no lake at {url} yet: make it with `receipts lake init --lake … "
                    f"--data-path s3://bucket/prefix/`"
                ) from None
            raise LakeError(f"cannot open the lake {url}: {_first_line(e)}") from None
        return con
    except BaseException:
        con.close()
        raise


def data_path(con) -> str:
    """Where the lake's Parquet files are, as its catalog says."""
    row = con.execute(
        f"SELECT value FROM __ducklake_metadata_{ALIAS}.ducklake_metadata WHERE key = 'data_path'"
    ).fetchone()
    if not row or not row[0]:
        raise LakeError("the lake's catalog names no data path: run `receipts lake init` on it")
    return row[0]


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _lit(text) -> str:
    return "'" + str(text).replace("'", "''") + "'"


# ---- the tables ------------------------------------------------------------------------------------
def init(url: str, path: str) -> list[str]:
    """Create the lake's tables (those missing) with the data at `path` (s3://bucket/prefix/, or a
    directory). Returns the tables created."""
    import tempfile

    from . import db

    if not path.endswith("/"):
        path += "/"
    con = open_lake(url, read_only=False, data_path=path)
    try:
        have = set(_tables(con))
        created = []
        with tempfile.TemporaryDirectory() as empty:  # an empty data directory gives each table its columns
            local = db.connect(empty, views=False)
            for table in TABLES:
                if table in have:
                    continue
                cols = local.execute(f"SELECT column_name, column_type FROM (DESCRIBE folded.{table})").fetchall()
                con.execute(f"CREATE TABLE {ALIAS}.{table} ({', '.join(f'{_ident(c)} {t}' for c, t in cols)})")
                created.append(table)
            local.close()
        for name, ddl in (
            (LEDGER, "writer VARCHAR, seq_lo BIGINT, seq_hi BIGINT, events BIGINT, shipped_at TIMESTAMP"),
            (NAMES, "name VARCHAR, owner VARCHAR, host VARCHAR, data_dir VARCHAR, claimed_at TIMESTAMP"),
            (META, "key VARCHAR, value VARCHAR"),
        ):
            if name not in have:
                con.execute(f"CREATE TABLE {ALIAS}.{name} ({ddl})")
                created.append(name)
        if META in created:
            con.execute(f"INSERT INTO {ALIAS}.{META} VALUES ('tables_version', {_lit(fold.tables_version())})")
        return created
    finally:
        con.close()


def _tables(con) -> list[str]:
    return [
        r[0] for r in con.execute(f"SELECT table_name FROM duckdb_tables() WHERE database_name = '{ALIAS}'").fetchall()
    ]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def check_tables(con) -> None:
    """LakeError unless the lake has every table, folded by this version of storage/fold.sql."""
    have = set(_tables(con))
    missing = [t for t in (*TABLES, LEDGER, NAMES, META) if t not in have]
    if missing:
        raise LakeError(
            f"the lake has no {missing[0]} table: run `receipts lake init --lake … --data-path s3://…` first"
        )
    row = con.execute(f"SELECT value FROM {ALIAS}.{META} WHERE key = 'tables_version'").fetchone()
    if not row or row[0] != fold.tables_version():
        raise LakeError(
            f"the lake's tables were made by another version of the fold ({row[0] if row else 'none'}, "
            f"this is {fold.tables_version()}): ship to a new lake, or upgrade every shipper together"
        )


def snapshot(con) -> int:
    """The catalog's snapshot this connection reads (inside a transaction: the one it started at)."""
    return con.execute(f"SELECT id FROM ducklake_current_snapshot('{ALIAS}')").fetchone()[0]


def kept_since(con) -> int | None:
    """The snapshot the kept receipts are of, or None when there are none usable: none kept yet, or kept
    by another version of the views."""
    if KEPT not in _tables(con):
        return None
    meta = dict(
        con.execute(f"SELECT key, value FROM {ALIAS}.{META} WHERE key IN ('kept_snapshot', 'kept_version')").fetchall()
    )
    if meta.get("kept_version") != fold.receipts_version() or not str(meta.get("kept_snapshot", "")).isdigit():
        return None
    return int(meta["kept_snapshot"])


def keep_receipts(con) -> int:
    """Compute every receipt at one snapshot and keep the rows in the lake with that snapshot's id, in one
    transaction (shipments meanwhile are after that snapshot, so readers compute the receipts they touch).
    Returns the number of receipts kept."""
    from . import db

    at = db.bind_lake(con, kept=False)  # (every table read at snapshot `at`)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"CREATE OR REPLACE TABLE {ALIAS}.{KEPT} AS FROM main.receipts_live")
        con.execute(f"DELETE FROM {ALIAS}.{META} WHERE key IN ('kept_snapshot', 'kept_version')")
        con.execute(
            f"INSERT INTO {ALIAS}.{META} VALUES ('kept_snapshot', '{int(at)}'), "
            f"('kept_version', {_lit(fold.receipts_version())})"
        )
        n = con.execute(f"SELECT count(*) FROM {ALIAS}.{KEPT}").fetchone()[0]
        con.execute("COMMIT")
        return n
    except BaseException:
        with contextlib.suppress(Exception):
            con.execute("ROLLBACK")
        raise


# ---- owning a ship name ------------------------------------------------------------------------------
@dataclass
class Owner:
    name: str  # the ship name: the prefix of every writer this data directory ships
    token: str  # this data directory's owner token (kept in ship.json)


def default_name(data_dir) -> str:
    """The host and which of its data directories: unique across a fleet of hosts with unique names."""
    digest = hashlib.sha256(os.path.realpath(data_dir).encode()).hexdigest()[:8]
    return f"{socket.gethostname()}-{digest}"


def _state_path(data_dir) -> Path:
    return Path(data_dir) / SHIP_STATE


def local_owner(data_dir, name: str | None) -> Owner:
    """This data directory's owner token (made once, kept private), and the name asked for (or the one
    it shipped under before, or the default). A directory that shipped under one name keeps it."""
    state = read_state(data_dir)
    if state.get("name") and name and name != state["name"]:
        raise LakeError(
            f"{data_dir} ships as {state['name']!r}, not {name!r}: one data directory, one name "
            f"(its events are already in the lake under that name)"
        )
    owner = Owner(state.get("name") or name or default_name(data_dir), state.get("owner") or str(uuid.uuid4()))
    if not state.get("owner"):
        write_state(data_dir, {"name": owner.name, "owner": owner.token})
    return owner


def read_state(data_dir) -> dict:
    try:
        return orjson.loads(_state_path(data_dir).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}


def write_state(data_dir, update: dict) -> None:
    path = _state_path(data_dir)
    state = {**read_state(data_dir), **update}
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(orjson.dumps(state, option=orjson.OPT_INDENT_2))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def ship_lock(data_dir):
    """One shipper per data directory on this host (flock), told at once."""
    path = Path(data_dir) / ".ship.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LakeError(f"another `receipts ship` already ships {data_dir}") from None
        yield
    finally:
        os.close(fd)


def claim(con, owner: Owner, data_dir) -> None:
    """Take the ship name in the lake, or LakeError if another owner has it. The first claim committed
    wins (DuckLake numbers rows in commit order): a claim that lost a race sees the winner and refuses."""
    for attempt in range(2):
        rows = con.execute(
            f"SELECT owner, host, data_dir, claimed_at FROM {ALIAS}.{NAMES} "
            f"WHERE name = {_lit(owner.name)} ORDER BY rowid LIMIT 1"
        ).fetchall()
        if rows and rows[0][0] == owner.token:
            return
        if rows:
            _, host, where, since = rows[0]
            raise LakeError(
                f"the ship name {owner.name!r} belongs to another data directory ({where} on {host}, "
                f"since {since:%Y-%m-%d %H:%M}): give this one its own with --name"
            )
        if attempt == 0:
            con.execute(
                f"INSERT INTO {ALIAS}.{NAMES} VALUES ({_lit(owner.name)}, {_lit(owner.token)}, "
                f"{_lit(socket.gethostname())}, {_lit(os.path.realpath(data_dir))}, now()::TIMESTAMP)"
            )


# ---- shipping ----------------------------------------------------------------------------------------
@dataclass
class Shipped:
    events: int  # events shipped by this call
    commits: int
    backlog: int  # events the lake did not have when it began
    lag: float  # seconds since the oldest of those was recorded (0 when none)


def ship_once(con, data_dir, owner: Owner, *, batch: int = BATCH_EVENTS, progress=None) -> Shipped:
    """Ship every event of `data_dir` (folded or in its tail) that the ledger does not cover, with its
    typed rows, in commits of at most `batch` events. `con` has the lake attached (open_lake)."""
    from . import db
    from .journal import journal_dir
    from .layout import ensure_anchors

    ensure_anchors(journal_dir(data_dir))  # (a verifier's data directory may be new)
    db.bind(con, data_dir, views=False)
    prefix = owner.name + "/"
    # What the ledger does not cover, found once: this process owns the name (ship_lock), so no other
    # shipper adds to the ledger of these writers while it runs.
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE done AS SELECT substr(writer, {len(prefix) + 1}) AS writer, seq_lo, seq_hi "
        f"FROM {ALIAS}.{LEDGER} WHERE starts_with(writer, {_lit(prefix)})"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE todo AS SELECT e.id, e.writer, e.seq, e.ts FROM folded.events e "
        "WHERE NOT EXISTS (SELECT 1 FROM done d WHERE d.writer = e.writer AND e.seq BETWEEN d.seq_lo AND d.seq_hi)"
    )
    backlog, oldest = con.execute("SELECT count(*), epoch(min(ts)) FROM todo").fetchone()
    lag = max(0.0, time.time() - oldest) if backlog else 0.0
    shipped = commits = 0
    while shipped < backlog:
        n = _ship_batch(con, prefix, batch)
        if not n:
            break  # (cannot happen while todo holds rows; it bounds the loop)
        con.execute("DELETE FROM todo WHERE id IN (SELECT id FROM b)")
        shipped += n
        commits += 1
        if progress:
            progress(f"shipped {shipped:,} events ({backlog - shipped:,} to go)")
    return Shipped(shipped, commits, backlog, lag)


def _ship_batch(con, prefix: str, batch: int) -> int:
    """One commit: the first `batch` events of `todo` (by writer and seq), their rows in every table,
    the ids they add, and the ledger's runs of them."""
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE b AS SELECT id, writer, seq FROM todo ORDER BY writer, seq LIMIT {int(batch)}"
    )
    for table, sql in fold.statements().items():
        if table == "events":
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE b_events AS SELECT * REPLACE ({_lit(prefix)} || writer AS writer) "
                f"FROM folded.events WHERE id IN (SELECT id FROM b)"
            )
        elif table == fold.IDS:
            con.execute(f"CREATE OR REPLACE TEMP TABLE b_{table} AS {sql.replace('{t}', 'b_')}")
        else:
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE b_{table} AS FROM folded.{table} WHERE event_id IN (SELECT id FROM b)"
            )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE b_runs AS SELECT writer, min(seq) AS seq_lo, max(seq) AS seq_hi, count(*) AS events "
        "FROM (SELECT writer, seq, seq - row_number() OVER (PARTITION BY writer ORDER BY seq) AS run FROM b) "
        "GROUP BY writer, run"
    )
    _fault("before_upload")
    con.execute("BEGIN TRANSACTION")
    try:
        for table in TABLES:
            con.execute(f"INSERT INTO {ALIAS}.{table} BY NAME SELECT * FROM b_{table}")
        con.execute(
            f"INSERT INTO {ALIAS}.{LEDGER} SELECT {_lit(prefix)} || writer, seq_lo, seq_hi, events, "
            f"now()::TIMESTAMP FROM b_runs"
        )
        _fault("after_upload")
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            con.execute("ROLLBACK")
        raise
    _fault("after_commit")
    return con.execute("SELECT count(*) FROM b").fetchone()[0]


def _fault(point: str) -> None:
    """Tests only: a real kill -9 of this process at `point` (RECEIPTS_SHIP_FAULT), to show that no point
    of a commit loses or doubles a row."""
    if os.environ.get(FAULT) == point:
        os.kill(os.getpid(), signal.SIGKILL)


# ---- the shipper's loop ------------------------------------------------------------------------------
RETRY_MAX = 60.0  # seconds between tries at most (backoff doubles from 1 s)


def run_shipper(
    data_dir,
    url: str,
    *,
    name: str | None = None,
    once: bool = False,
    interval: float = 5.0,
    seconds: float | None = None,
    tries: int = 5,
    say=print,
) -> int:
    """Ship `data_dir` to the lake every `interval` seconds (or once), retrying failures with backoff,
    until SIGTERM/SIGINT or `seconds`. With `once`, gives up (LakeError) after `tries` failed tries."""
    import duckdb

    stop = _Stop()
    deadline = time.monotonic() + seconds if seconds else None
    with ship_lock(data_dir):
        owner = local_owner(data_dir, name)
        con, failures = None, 0
        say(f"shipping {data_dir} to {url} as {owner.name!r}")
        while not stop.asked:
            try:
                if con is None:
                    con = open_lake(url, read_only=False)
                    check_tables(con)
                    claim(con, owner, data_dir)
                got = ship_once(con, data_dir, owner, progress=say if once else None)
                write_state(
                    data_dir,
                    {
                        "name": owner.name,
                        "owner": owner.token,
                        "shipped_at": time.time(),
                        "last": {
                            "events": got.events,
                            "commits": got.commits,
                            "backlog": got.backlog,
                            "lag_s": got.lag,
                        },
                    },
                )
                if got.events or once:
                    say(
                        f"shipped {got.events:,} events in {got.commits} commit(s); lag before: "
                        f"{got.backlog:,} events, {got.lag:.1f} s"
                    )
                failures, wait = 0, interval
                if once:
                    return 0
            except LakeError:
                raise
            except (duckdb.Error, OSError) as e:
                failures += 1
                wait = min(RETRY_MAX, 2.0 ** (failures - 1))
                say(f"could not ship ({_first_line(e)}); try {failures}, again in {wait:.0f} s")
                if con is not None:
                    with contextlib.suppress(Exception):
                        con.close()
                    con = None
                if once and failures >= tries:
                    raise LakeError(f"gave up after {tries} tries: {_first_line(e)}") from None
            if deadline and time.monotonic() >= deadline:
                break
            stop.sleep(min(wait, deadline - time.monotonic()) if deadline else wait)
        return 0


class _Stop:
    """SIGTERM and SIGINT end the loop between commits, never inside one."""

    def __init__(self):
        self.asked = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._ask)

    def _ask(self, *_):
        self.asked = True

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + max(0.0, seconds)
        while not self.asked and time.monotonic() < end:
            time.sleep(min(0.2, end - time.monotonic()))


# ---- maintenance -------------------------------------------------------------------------------------
_UNDELETABLE = (
    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname LIKE 'ducklake%' "
    "AND NOT has_table_privilege(c.oid, 'DELETE') ORDER BY 1"
)


def check_can_delete(con) -> None:
    """LakeError, before any step, when this role may not DELETE from a catalog table (a PostgreSQL catalog).
    Asked up front because PostgreSQL reports a refusal inside DuckLake's transaction only as "current
    transaction is aborted", which says nothing of why."""
    import duckdb

    try:
        rows = con.execute(
            f"SELECT * FROM postgres_query('__ducklake_metadata_{ALIAS}', {_lit(_UNDELETABLE)})"
        ).fetchall()
    except duckdb.Error:
        return  # not a PostgreSQL catalog: each step's own error says what is wrong
    if rows:
        raise LakeError(
            f"maintenance needs DELETE on the catalog's tables, and this role has none on {rows[0][0]}"
            f"{f' (and {len(rows) - 1} more)' if len(rows) > 1 else ''}: see the README's least "
            "privilege; nothing was changed"
        )


def maintain(url: str, older_than: float = 3600.0, say=print) -> None:
    """Merge small files, flush rows inlined in the catalog, expire snapshots older than `older_than`
    seconds and delete the files only they used, and objects no snapshot names (a shipper killed before
    its commit) older than that; then keep the receipts as of now (keep_receipts). Safe while shippers run: DuckLake commits each step as a transaction,
    and nothing younger than `older_than` (a commit under way) is touched."""
    import duckdb

    con = open_lake(url, read_only=False)
    try:
        check_tables(con)
        check_can_delete(con)
        cutoff = f"now() - INTERVAL {int(older_than)} SECOND"
        for label, call in (
            ("flushed inlined rows", f"ducklake_flush_inlined_data('{ALIAS}')"),
            ("merged small files", f"ducklake_merge_adjacent_files('{ALIAS}')"),
            ("expired snapshots", f"ducklake_expire_snapshots('{ALIAS}', older_than => {cutoff})"),
            ("removed files of expired snapshots", f"ducklake_cleanup_old_files('{ALIAS}', older_than => {cutoff})"),
            ("removed orphaned files", f"ducklake_delete_orphaned_files('{ALIAS}', older_than => {cutoff})"),
        ):
            t = time.monotonic()
            try:
                n = con.execute(f"SELECT count(*) FROM {call}").fetchone()[
                    0
                ]  # (its rows hold TIMESTAMPTZ: pytz to fetch)
            except duckdb.Error as e:
                hint = (
                    (
                        " (maintenance needs DELETE on the catalog's tables and s3:DeleteObject: see the README's "
                        "least privilege)"
                    )
                    if "permission denied" in str(e).lower() or "403" in str(e)
                    else ""
                )
                raise LakeError(
                    f"maintenance stopped before `{label}`: {_first_line(e)[:300]}{hint}; "
                    f"the steps before it are done, and that step changed nothing"
                ) from None
            say(f"{label}: {n} ({time.monotonic() - t:.1f} s)")
        t = time.monotonic()
        try:
            n = keep_receipts(con)
        except duckdb.Error as e:
            raise LakeError(
                f"maintenance stopped before keeping the receipts: {_first_line(e)[:300]}; the steps "
                f"before it are done, and readers compute every receipt meanwhile"
            ) from None
        say(f"kept receipts: {n} ({time.monotonic() - t:.1f} s)")
    finally:
        con.close()
