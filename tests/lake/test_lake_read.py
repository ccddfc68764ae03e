"""Readers over the lake: `receipts sql`, `show`, `list`, `audit` and `export` with --lake give what they
give over the data directory that was shipped; the lake is read-only to them, sandboxed to its data
path; and a lake given badly is one clear sentence."""
import json

from support.proc import receipts_cli

from test_ship import make_calls, recorded


def both(lake, data, *args):
    local = receipts_cli(*args, data=data)
    remote = lake.cli(*args, "--lake", lake.url)
    assert local.returncode == 0 and remote.returncode == 0, (local.stderr, remote.stderr)
    return local.stdout, remote.stdout


def test_every_reader_gives_the_same_over_the_lake(recorder, upstream, lake, tmp_path):
    ids = make_calls(recorder, upstream, 9)
    recorded(recorder, ids)
    assert lake.ship(recorder.data).returncode == 0
    tx = lake.sql("SELECT payment_hash FROM receipts WHERE payment_hash IS NOT NULL LIMIT 1")[0]["payment_hash"]
    local, remote = both(lake, recorder.data, "show", "--json", tx)
    assert json.loads(local) == json.loads(remote) and json.loads(remote)["receipt"]["payment_hash"] == tx
    local, remote = both(lake, recorder.data, "list", "--json", "--limit", "100")
    assert json.loads(local) == json.loads(remote) and len(json.loads(remote)) == 9
    local, remote = both(lake, recorder.data, "audit", "--format", "json")
    strip = lambda text: {k: v for k, v in json.loads(text).items() if k not in ("meta",)}
    assert strip(local) == strip(remote) and json.loads(remote)["summary"]["calls"] == len(ids)
    local, remote = both(lake, recorder.data, "export", "--format", "csv", "--view", "calls")
    assert sorted(local.splitlines()) == sorted(remote.splitlines()) and len(remote.splitlines()) == len(ids) + 1


def test_the_lake_is_read_only_and_sandboxed_to_readers(lake):
    for query, said in (("DELETE FROM lake.events", "only queries are allowed here"),
                        ("SELECT * FROM postgres_query('__ducklake_metadata_lake', 'select 1')", "not allowed here"),
                        ("SELECT * FROM ducklake_expire_snapshots('lake', older_than => now())", "read-only"),
                        ("SELECT * FROM read_text('/etc/hostname')", "disabled by configuration"),
                        (f"SELECT * FROM read_text('s3://{lake.path.split('/')[2]}/elsewhere/x')", "disabled by configuration")):
        out = lake.cli("sql", query)
        assert out.returncode == 1 and said in out.stderr, (query, out.stderr)


def test_a_lake_given_badly_is_one_sentence(lake, tmp_path):
    for args, said in ((["sql", "--lake", lake.url + " password=hunter2", "SELECT 1"], "PGPASSWORD"),
                       (["sql", "--lake", "postgres:dbname=nothing host=127.0.0.1 port=1 user=x", "SELECT 1"],
                        "cannot open the lake"),
                       (["ship", "--data", str(tmp_path), "--once", "--lake", ""], "no lake given")):
        out = lake.cli(*args, env={"RECEIPTS_LAKE": ""})
        assert out.returncode == 1 and said in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
        assert out.stderr.count("\n") == 1, out.stderr
    uninitialized = lake.pg.createdb("empty_lake")
    out = lake.cli("sql", "--lake", uninitialized, "SELECT 1")
    assert out.returncode == 1 and "receipts lake init" in out.stderr, out.stderr

