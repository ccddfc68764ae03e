"""One round's view of the chain from endpoints that answer badly (a stand-in node over real HTTP)."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from receipts.storage.config import Network
from receipts.verifier import verify as V


class Misshapen(BaseHTTPRequestHandler):
    """Answers every call with a bare number: JSON, but not the shape a block has."""

    def log_message(self, *a):
        pass

    def do_POST(self):
        calls = json.loads(self.rfile.read(int(self.headers["content-length"])))
        body = json.dumps([{"jsonrpc": "2.0", "id": c["id"], "result": "0x2105" if c["method"] == "eth_chainId"
                            else "0x10"} for c in calls]).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def misshapen():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Misshapen)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_an_answer_of_the_wrong_shape_is_a_fault_not_a_crash(misshapen):
    net, faults = Network("eip155:8453", misshapen), []
    assert V._network_views(net, [{"receipt_id": "r"}], faults, {}) is None
    assert len(faults) == 1 and faults[0].startswith("eip155:8453: bad_response: ") and "wrong shape" in faults[0]


def test_a_quorum_larger_than_the_endpoints_decides_nothing():
    faults = []
    net = Network("eip155:8453", ("http://127.0.0.1:9",), quorum=2)
    assert V._network_views(net, [{"receipt_id": "r"}], faults, {}) is None
    assert faults == ["eip155:8453: quorum_not_reached: quorum 2 but 1 rpc URL(s)"]


def test_an_endpoint_down_under_a_quorum_of_one_is_decided_by_the_others(misshapen):
    faults = []
    net = Network("eip155:8453", (misshapen, "http://127.0.0.1:9"), quorum=1)
    assert V._network_views(net, [{"receipt_id": "r"}], faults, {}) is None, "neither answered well"
    assert "quorum_not_reached: 0 of 2 endpoints answered, 1 must agree" in faults[0]
