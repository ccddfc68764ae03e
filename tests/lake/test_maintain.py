"""`receipts lake maintain`: merges small files, flushes inlined rows, expires snapshots and deletes the
objects a killed shipper left (uploaded, never committed), while a shipper keeps shipping; every query
gives the same rows after it. Credentials may come from a private secrets file instead of the variables."""
import os
import subprocess
from unittest import mock

from support.proc import BIN, ROOT, wait_for

from test_ship import TABLES, assert_exactly_once, make_calls, recorded


def objects_and_files(lake) -> tuple[set, set]:
    """The objects under the lake's data path, and the files its catalog names."""
    from receipts.storage import lake as lk

    with mock.patch.dict(os.environ, lake.s3.env()):  # (for this connection only: the variables are restored)
        con = lk.open_lake(lake.url, read_only=True)
    try:
        objects = {r[0] for r in con.execute(f"SELECT file FROM glob('{lake.path}**/*.parquet')").fetchall()}
        named = set()
        for table in (*TABLES, lk.KEPT) if lk.KEPT in lk._tables(con) else TABLES:
            named |= {r[0] for r in con.execute(f"SELECT data_file FROM ducklake_list_files('lake', '{table}')").fetchall()}
        return objects, named
    finally:
        con.close()


def test_maintenance_while_a_shipper_runs(recorder, upstream, lake):
    ids = make_calls(recorder, upstream, 12)
    recorded(recorder, ids)
    assert lake.ship(recorder.data, env={"RECEIPTS_SHIP_FAULT": "after_upload"}).returncode == -9
    orphans = objects_and_files(lake)[0]
    assert orphans  # what the killed commit uploaded: objects no snapshot names
    for _ in range(3):  # small commits: files and inlined rows to merge and flush
        more = make_calls(recorder, upstream, 2)
        recorded(recorder, more)
        ids += more
        assert lake.ship(recorder.data).returncode == 0
    query = "SELECT * FROM receipts ORDER BY receipt_id"
    before = lake.sql(query)
    objects, named = objects_and_files(lake)
    assert orphans <= objects and not orphans & named

    loop = lake.shipping(recorder.data, 0.3, 120)
    try:
        later = make_calls(recorder, upstream, 3)
        done = lake.cli("lake", "maintain", "--older-than", "0")
        assert done.returncode == 0, done.stderr
        assert "removed orphaned files" in done.stderr and "merged small files" in done.stderr
        recorded(recorder, later)
        wait_for(lambda: len(lake.sql("SELECT receipt_id FROM calls")) >= len(ids + later), timeout=60, interval=0.5)
    finally:
        loop.terminate()
        log = loop.communicate(timeout=60)[0]
    assert loop.returncode == 0, log
    objects, named = objects_and_files(lake)
    assert not orphans & objects  # the killed commit's objects are gone
    assert objects == named  # and nothing else is left unnamed
    after = {r["receipt_id"]: r for r in lake.sql(query)}
    assert all(after[r["receipt_id"]] == r for r in before if r["receipt_id"] not in ids[-3:])
    assert_exactly_once(lake, ids + later)


def test_credentials_from_a_private_secrets_file(recorder, upstream, lake, tmp_path):
    ids = make_calls(recorder, upstream, 12)  # (enough rows to be Parquet on S3, not inlined in the catalog)
    recorded(recorder, ids)
    assert lake.ship(recorder.data).returncode == 0
    secrets = tmp_path / "lake.env"
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")  # (the endpoint stays: nothing may leave 127.0.0.1)
    secrets.write_text("# the lake's keys\n" + "".join(f"export {k}='{lake.env[k]}'\n" for k in keys))
    bare = {k: v for k, v in lake.env.items() if k not in keys}

    def run(**extra):
        return subprocess.run([str(BIN / "receipts"), "sql", "--csv", "SELECT count(DISTINCT id) AS n FROM events"], cwd=ROOT,
                              env={**bare, **extra}, capture_output=True, text=True, timeout=120)

    assert run().returncode == 1  # no credentials: the store refuses
    os.chmod(secrets, 0o644)
    refused = run(RECEIPTS_LAKE_SECRETS=str(secrets))
    assert refused.returncode == 1 and "can be read by others" in refused.stderr, refused.stderr
    os.chmod(secrets, 0o600)
    ok = run(RECEIPTS_LAKE_SECRETS=str(secrets))
    assert ok.returncode == 0 and int(ok.stdout.split()[1]) >= len(ids), ok.stderr
