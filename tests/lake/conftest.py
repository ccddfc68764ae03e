"""The lake's fixtures: one private PostgreSQL server and one SeaweedFS store for the session (real
components, both on 127.0.0.1), and a fresh, initialized lake (its own database and data path) per test."""
import itertools
import os
import subprocess
import sys

import pytest

from support.proc import BIN, ROOT, ProxyProcess

sys.path.insert(0, str(ROOT))
from testbed.lakebed import BUCKET, Postgres, SeaweedFS

_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def lakebed(tmp_path_factory):
    pg = Postgres().start()
    s3 = SeaweedFS(tmp_path_factory.mktemp("seaweedfs")).start()
    try:
        yield pg, s3
    finally:
        s3.stop()
        pg.remove()


class Lake:
    """A lake of one test: its catalog string, its data path, and the environment that reaches it."""

    def __init__(self, pg: Postgres, s3: SeaweedFS, name: str):
        self.pg, self.s3 = pg, s3
        self.url = pg.createdb(name)
        self.path = f"s3://{BUCKET}/{name}/"
        self.env = {**os.environ, **s3.env(), "RECEIPTS_LAKE": self.url}

    def cli(self, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "receipts"), *args], capture_output=True, text=True, timeout=timeout,
                              cwd=ROOT, env={**self.env, **(env or {})})

    def ship(self, data, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return self.cli("ship", "--data", str(data), "--once", *args, env=env)

    def shipping(self, data, interval: float, seconds: float) -> subprocess.Popen:
        """A `receipts ship` loop running in the background (its stdout and stderr together)."""
        return subprocess.Popen([str(BIN / "receipts"), "ship", "--data", str(data), "--interval", str(interval),
                                 "--seconds", str(seconds)], cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def sql(self, query: str) -> list[dict]:
        import json

        out = self.cli("sql", "--json", query)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


@pytest.fixture
def lake(lakebed):
    pg, s3 = lakebed
    made = Lake(pg, s3, f"lake{next(_numbers)}")
    out = made.cli("lake", "init", "--data-path", made.path)
    assert out.returncode == 0, out.stderr
    return made


@pytest.fixture
def recorder(tmp_path, tls):
    """A real `receipts proxy` process with its own data directory."""
    with ProxyProcess(tmp_path / "data", "--seal-interval", "0.2", upstream_ca=tls["ca"]) as proxy:
        yield proxy
