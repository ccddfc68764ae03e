"""The `duckdb` CLI installed beside the project's Python (the `duckdb-cli` package, pinned with `duckdb`
in pyproject.toml) opens the files the project's duckdb writes: `duckdb -readonly data/receipts.duckdb
"FROM receipts"`, as the README says. A CLI older than the Python package cannot open them ("… only read
versions between …"), so the two pins must move together: these tests fail when they do not. No
network: the CLI reads the journal with the JSON and Parquet readers built into it, and is told not to
download an extension."""
import os
import subprocess
import sys
from pathlib import Path

import duckdb

from receipts.storage import db
from receipts.storage.journal import Journal
from receipts.storage.records import Event, uuid7

CLI = Path(sys.executable).parent / "duckdb"
NO_DOWNLOAD = ("-cmd", "SET autoinstall_known_extensions = false")


def duckdb_cli(*args, home: Path) -> subprocess.CompletedProcess:
    # a home of its own: no ~/.duckdbrc of the machine, nothing written into the real home
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "HOME": str(home)}, stdin=subprocess.DEVNULL)


def test_the_cli_is_the_version_of_the_python_package(tmp_path):
    assert CLI.exists(), f"no duckdb CLI at {CLI}: is duckdb-cli installed (scripts/bootstrap)?"
    out = duckdb_cli("--version", home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == f"v{duckdb.__version__}", (out.stdout, duckdb.__version__)


def test_the_cli_opens_read_only_a_file_the_python_package_wrote(tmp_path):
    path = tmp_path / "x.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE t AS SELECT range AS i, 'row ' || range AS s FROM range(3)")
        con.execute("CREATE VIEW v AS SELECT sum(i) AS total, max(s) AS last FROM t")
    before = path.read_bytes()
    out = duckdb_cli("-readonly", *NO_DOWNLOAD, "-csv", str(path), "FROM v", home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["total,last", "3,row 2"]
    refused = duckdb_cli("-readonly", *NO_DOWNLOAD, str(path), "CREATE TABLE u AS SELECT 1", home=tmp_path)
    assert refused.returncode != 0 and "read-only" in refused.stderr
    assert path.read_bytes() == before


def test_the_readme_command_shows_the_receipts(tmp_path):
    data = tmp_path / "data"
    ids = []
    with Journal(data, seal_interval=3600) as journal:
        for i in range(3):
            rid = uuid7()
            ids.append(rid)
            journal.write([Event("request", rid, {"logical_id": rid, "method": "POST", "host": "api.example",
                                                  "path": "/v1/x", "app": f"app-{i}", "model": "m"}),
                           Event("response", rid, {"status": 200, "model": "m", "usage": {"total_tokens": 7}})])
    path = db.ensure_database_file(data)
    assert path == data / "receipts.duckdb"
    # the README's command, as it is
    out = duckdb_cli("-readonly", *NO_DOWNLOAD, str(path), "FROM receipts", home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert all(rid in out.stdout for rid in ids), out.stdout
    counted = duckdb_cli("-readonly", *NO_DOWNLOAD, "-csv", str(path),
                         "SELECT count(*) AS n, sum(total_tokens) AS tokens FROM receipts", home=tmp_path)
    assert counted.returncode == 0, counted.stderr
    assert counted.stdout.splitlines() == ["n,tokens", "3,21"]
