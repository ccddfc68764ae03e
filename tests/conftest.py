import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.certs import make_ca, make_server_cert
from support.upstream import start_upstream


@pytest.fixture(scope="session")
def tls(tmp_path_factory):
    """A private CA and a server certificate for the local HTTPS upstream."""
    d = tmp_path_factory.mktemp("tls")
    ca = make_ca(d)
    cert, key = make_server_cert(d, ca)
    return {"ca": str(ca[0]), "cert": str(cert), "key": str(key)}


@pytest.fixture(scope="session")
def upstream(tls):
    """The fake x402 inference server over HTTPS on 127.0.0.1; yields its base URL."""
    server, port = start_upstream(0, tls["cert"], tls["key"])
    yield f"https://localhost:{port}"
    server.shutdown()


@pytest.fixture
def fault_report(request):
    """Figures a fault test measured, for scripts/faults' table: appended as one JSON line to the file
    RECEIPTS_FAULTS_REPORT names (nothing is written without it)."""
    path = os.environ.get("RECEIPTS_FAULTS_REPORT")

    def report(fault: str, **figures) -> None:
        if path:
            with open(path, "a") as f:
                f.write(json.dumps({"fault": fault, "test": request.node.nodeid, "figures": figures}) + "\n")
    return report


def pytest_sessionfinish(session, exitstatus):
    """Leave without running interpreter teardown. A daemon thread may still be inside DuckDB (a fold of a
    journal a test left open) when Python finalizes, and DuckDB's C++ runtime then aborts the process
    ("terminate called without an active exception", exit 134) after every test has passed. The result is
    already decided here; the tests that guard the fold's kill -9 safety show that an interrupted fold loses
    nothing. (Known issue, to be fixed at its cause: every test should close its journals.)"""
    import os
    import sys

    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        session.config.add_cleanup(lambda: (sys.stdout.flush(), sys.stderr.flush(), os._exit(int(exitstatus))))
