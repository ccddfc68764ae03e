"""`receipts lake publish`: the lake's receipts and calls copied into Iceberg tables (pyiceberg's SQL
catalog in the lake's PostgreSQL, files on its SeaweedFS), read back by another engine (chdb: ClickHouse
embedded) with every row and amount exactly the lake's; a second publish replaces the rows (no row
twice); and a publish given badly is one sentence."""
import json

import pytest

from testbed.lakebed import ACCESS_KEY, BUCKET, SECRET_KEY

from test_ship import make_calls, recorded

chdb = pytest.importorskip("chdb")


def lake_rows(lake) -> dict:
    rows = lake.sql("SELECT receipt_id, CAST(amount AS VARCHAR) AS amount, payer, paid_at FROM receipts")
    return {r["receipt_id"]: (r["amount"], r["payer"]) for r in rows}


def clickhouse_rows(lake, prefix: str, view: str, columns: str) -> list[dict]:
    """The Iceberg table at s3://BUCKET/prefix/view, read by ClickHouse (chdb) straight from the store."""
    url = f"{lake.s3.endpoint}/{BUCKET}/{prefix}/{view}/"
    out = chdb.query(f"SELECT {columns} FROM icebergS3('{url}', '{ACCESS_KEY}', '{SECRET_KEY}')", "JSONEachRow")
    return [json.loads(line) for line in str(out).splitlines() if line.strip()]


def catalog_rows(lake) -> list[str]:
    """pyiceberg's SQL catalog in the lake's database: each table's current metadata file."""
    dbname = lake.url.split("dbname=")[1].split()[0]
    return lake.pg.psql("SELECT table_name, metadata_location FROM iceberg.iceberg_tables ORDER BY 1", dbname).split()


def duckdb_rows(lake, metadata: str) -> dict:
    """The same table read by DuckDB's iceberg extension (from its wheel, offline: the test extra) at the
    metadata file the catalog names."""
    import glob
    import sysconfig

    import duckdb

    site = sysconfig.get_paths()["purelib"]
    files = [glob.glob(f"{site}/duckdb_extension_{w}/extensions/v{duckdb.__version__}/*.duckdb_extension")
             for w in ("httpfs", "avro", "iceberg")]
    assert all(files), "DuckDB's httpfs, avro and iceberg wheels (the test extra) are not installed"
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    for (path,), name in zip(files, ("httpfs", "avro", "iceberg")):
        con.execute(f"INSTALL '{path}'")
        con.execute(f"LOAD {name}")
    con.execute(f"CREATE SECRET (TYPE s3, KEY_ID '{ACCESS_KEY}', SECRET '{SECRET_KEY}', REGION 'us-east-1', "
                f"ENDPOINT '{lake.s3.endpoint.split('//')[1]}', URL_STYLE 'path', USE_SSL false)")
    rows = con.execute(f"SELECT receipt_id, CAST(amount AS VARCHAR), payer, typeof(amount) FROM iceberg_scan('{metadata}')").fetchall()
    assert {t for *_, t in rows} == {"DECIMAL(38,0)"}
    return {r: (a, p) for r, a, p, _ in rows}


def read_receipts(lake, prefix: str) -> dict:
    rows = clickhouse_rows(lake, prefix, "receipts", "receipt_id, toString(amount) AS amount, payer")
    got = {r["receipt_id"]: (None if r["amount"] in (None, "\\N") else r["amount"], r["payer"]) for r in rows}
    assert len(got) == len(rows), "a receipt twice in the Iceberg copy"
    return got


def test_publish_copies_the_lake_for_clickhouse_and_replaces_it(recorder, upstream, lake):
    prefix = f"iceberg-{lake.url.split('dbname=')[1].split()[0]}"
    ids = make_calls(recorder, upstream, 6)
    recorded(recorder, ids)
    assert lake.ship(recorder.data).returncode == 0
    out = lake.cli("lake", "publish", "--iceberg-path", f"s3://{BUCKET}/{prefix}/")
    assert out.returncode == 0, out.stderr
    first = lake_rows(lake)
    assert len(first) == 6 and any(a for a, _ in first.values())  # (a receipt per logical call: a 402 and its paid retry are one)
    assert read_receipts(lake, prefix) == first
    calls = clickhouse_rows(lake, prefix, "calls", "receipt_id")
    assert sorted(r["receipt_id"] for r in calls) == sorted(ids)

    more = make_calls(recorder, upstream, 3)
    recorded(recorder, ids + more)
    assert lake.ship(recorder.data).returncode == 0
    out = lake.cli("lake", "publish", "--iceberg-path", f"s3://{BUCKET}/{prefix}")
    assert out.returncode == 0, out.stderr
    second = lake_rows(lake)
    assert len(second) == 6 + 3
    assert read_receipts(lake, prefix) == second
    current = dict(row.split("|") for row in catalog_rows(lake))["receipts"]
    assert duckdb_rows(lake, current) == second
    calls = clickhouse_rows(lake, prefix, "calls", "receipt_id")
    assert sorted(r["receipt_id"] for r in calls) == sorted(ids + more)
    # one commit per table per publish: its first metadata file, then one more
    assert [row.rsplit("/", 1)[1][:6] for row in catalog_rows(lake)] == ["00001-", "00001-"]


def test_a_publish_given_badly_is_one_sentence(lake):
    for args, said in (([], "needs --iceberg-path"),
                       (["--iceberg-path", "/tmp/iceberg"], "must be s3://bucket/prefix/"),
                       (["--iceberg-path", f"s3://{BUCKET}/refused/"], "Access Denied")):
        # (the last with the store's read-only identity: its writes are refused)
        out = lake.cli("lake", "publish", *args, env=lake.s3.env(reader=True))
        assert out.returncode == 1 and said in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
        assert out.stderr.count("\n") == 1, out.stderr
    assert catalog_rows(lake) == [], "a refused publish left a table in the catalog"
