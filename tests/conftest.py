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
