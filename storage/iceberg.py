"""An Iceberg copy of the lake, for engines that read Iceberg and not DuckLake (`receipts lake publish`).

The lake's `receipts` and `calls` views, read at one snapshot, each replace the rows of an Iceberg table
(`receipts.receipts`, `receipts.calls`) in one Iceberg commit: a reader sees the previous copy or the new
one, never a mix. The Iceberg catalog is pyiceberg's SQL catalog in the lake's own PostgreSQL database
(its tables in the schema `iceberg`); the tables' files go under the path given (s3://bucket/prefix/) on
the lake's object store, with the lake's credentials (storage/lake.py: the AWS variables, PGPASSWORD …,
or RECEIPTS_LAKE_SECRETS).

Types: HUGEINT amounts become decimal(38,0) (Iceberg's widest; exact, and a value of more digits is
refused, never rounded), JSON becomes a string; the others map as pyarrow maps them.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from .lake import LakeError, catalog, load_secrets

NAMESPACE = "receipts"
VIEWS = ("receipts", "calls")
SCHEMA = "iceberg"  # the PostgreSQL schema of pyiceberg's catalog tables, beside DuckLake's
CAST = {"HUGEINT": "DECIMAL(38,0)", "UHUGEINT": "DECIMAL(38,0)", "JSON": "VARCHAR"}


def publish(url: str, path: str | None, say=print) -> dict[str, int]:
    """Replace each Iceberg table's rows with the view's current rows; returns the rows of each."""
    where = _path(path)
    load_secrets()
    rows = _read(url)
    cat = _catalog(url, where)
    done = {}
    for view, table in rows.items():
        _overwrite(cat, view, table, where)
        done[view] = table.num_rows
        current = cat.load_table(f"{NAMESPACE}.{view}").metadata_location
        say(f"published {table.num_rows:,} rows of {view} to {NAMESPACE}.{view}: {current}")
    return done


def _path(path: str | None) -> str:
    """s3://bucket/prefix/ (with its slash), or LakeError."""
    if not path:
        raise LakeError("lake publish needs --iceberg-path: where the Iceberg files go (s3://bucket/prefix/)")
    u = urlsplit(path)
    if u.scheme != "s3" or not u.netloc:
        raise LakeError(f"--iceberg-path must be s3://bucket/prefix/ on the lake's object store, not {path!r}")
    return path if path.endswith("/") else path + "/"


def _read(url: str) -> dict:
    """The views' rows as Arrow tables, every one read at the same snapshot of the lake."""
    import duckdb

    from . import db

    con = db.connect(db.Lake(url))
    try:
        out = {}
        for view in VIEWS:
            cols = con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {view})").fetchall()
            select = ", ".join(
                f"CAST({_ident(c)} AS {CAST[t]}) AS {_ident(c)}" if t in CAST else _ident(c) for c, t in cols
            )
            try:
                out[view] = con.execute(f"SELECT {select} FROM {view}").to_arrow_table()
            except duckdb.ConversionException as e:
                raise LakeError(f"a value of {view} does not fit Iceberg's decimal(38,0): {_first_line(e)}") from None
        return out
    finally:
        con.close()


def _catalog(url: str, where: str):
    """pyiceberg's SQL catalog in the lake's PostgreSQL database (schema `iceberg`), files on its S3."""
    import sqlalchemy
    from psycopg2.extensions import parse_dsn
    from pyiceberg.catalog.sql import SqlCatalog

    dsn = catalog(url).removeprefix("ducklake:")
    if not dsn.startswith("postgres:"):
        raise LakeError("lake publish needs a lake whose catalog is PostgreSQL (postgres:dbname=… host=…)")
    try:
        keys = parse_dsn(dsn.removeprefix("postgres:"))
    except Exception as e:
        raise LakeError(f"cannot read the lake's catalog string: {_first_line(e)}") from None
    keys["options"] = f"-c search_path={SCHEMA}"
    uri = sqlalchemy.URL.create("postgresql+psycopg2", query=keys).render_as_string(hide_password=False)
    try:
        engine = sqlalchemy.create_engine(uri)
        with engine.begin() as c:
            c.execute(sqlalchemy.text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        engine.dispose()
        cat = SqlCatalog("receipts", uri=uri, warehouse=where, **_s3())
        if (NAMESPACE,) not in cat.list_namespaces():
            cat.create_namespace(NAMESPACE)
        return cat
    except sqlalchemy.exc.SQLAlchemyError as e:
        raise LakeError(
            f"cannot open the Iceberg catalog in the lake's database: {_first_line(getattr(e, 'orig', None) or e)}"
        ) from None


def _s3() -> dict[str, str]:
    """pyiceberg's S3 properties from the variables the lake reads (storage/lake.py s3_secret)."""
    env = os.environ.get
    props = {
        "s3.access-key-id": env("AWS_ACCESS_KEY_ID"),
        "s3.secret-access-key": env("AWS_SECRET_ACCESS_KEY"),
        "s3.session-token": env("AWS_SESSION_TOKEN"),
        "s3.region": env("AWS_REGION") or env("AWS_DEFAULT_REGION") or "us-east-1",
        "s3.endpoint": env("AWS_ENDPOINT_URL_S3") or env("AWS_ENDPOINT_URL"),
    }
    return {k: v for k, v in props.items() if v}


def _overwrite(cat, view: str, rows, where: str) -> None:
    """One commit: the table made with the rows, or its schema widened to theirs (new columns) and all
    its rows replaced by them."""
    import warnings

    from pyiceberg.exceptions import CommitFailedException, NoSuchTableError

    name, location = f"{NAMESPACE}.{view}", f"{where}{view}"
    try:
        try:
            table = cat.load_table(name)
        except NoSuchTableError:
            with cat.create_table_transaction(name, schema=rows.schema, location=location) as tx:
                tx.append(rows)
            return
        if table.location().rstrip("/") != location:
            raise LakeError(
                f"the Iceberg table {name} is at {table.location()}, not under {where}: publish with the path "
                f"it was first published to"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ("Delete operation did not match any records": it was empty)
            with table.transaction() as tx:
                with tx.update_schema() as schema:
                    schema.union_by_name(rows.schema)
                tx.overwrite(rows)
    except CommitFailedException:
        raise LakeError(f"another publish committed {name} meanwhile: run `receipts lake publish` again") from None
    except LakeError:
        raise
    except Exception as e:  # (pyarrow's S3 and pyiceberg's errors have no common base)
        raise LakeError(f"cannot publish {name} to {where}: {_first_line(e)[:300]}") from None


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
