import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.certs import make_ca, make_server_cert  # noqa: E402
from support.upstream import start_upstream  # noqa: E402


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
