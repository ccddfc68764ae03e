"""The JSON-RPC client against a real local HTTP node stand-in that misbehaves on command."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from receipts.storage.rpc import Rpc, RpcError


class Node(ThreadingHTTPServer):
    """Answers eth_chainId / eth_blockNumber; `faults` is a list consumed one per request."""
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.faults, self.chain_id, self.requests = [], 8453, 0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        node = self.server
        node.requests += 1
        calls = json.loads(self.rfile.read(int(self.headers["content-length"])))
        fault = node.faults.pop(0) if node.faults else None
        if fault == "sleep":
            time.sleep(1.0)
        if isinstance(fault, int):
            self.send_response(fault)
            self.end_headers()
            return
        if fault in ("huge", "huge-unannounced"):  # a valid answer, padded past the client's bound
            pad = json.dumps([{"jsonrpc": "2.0", "id": c["id"], "result": "0x" + "0" * 5000} for c in calls]).encode()
            self.send_response(200)
            if fault == "huge":
                self.send_header("content-length", str(len(pad)))
            self.send_header("connection", "close")
            self.end_headers()
            self.wfile.write(pad)
            self.close_connection = True
            return
        answers = {"eth_chainId": hex(node.chain_id), "eth_blockNumber": "0x10"}
        body = json.dumps([{"jsonrpc": "2.0", "id": c["id"], "result": answers[c["method"]]} for c in calls]).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def node():
    n = Node()
    yield n
    n.shutdown()


def test_batches_in_order(node):
    rpc = Rpc(node.url, chain_id=8453)
    assert rpc.batch([("eth_blockNumber", []), ("eth_chainId", [])]) == ["0x10", "0x2105"]


def test_transient_faults_are_retried_then_reported(node):
    node.faults = [429, 503]
    assert Rpc(node.url, backoff=0.01).call("eth_blockNumber", []) == "0x10"
    node.faults = [429] * 10
    with pytest.raises(RpcError) as err:
        Rpc(node.url, backoff=0.01, retries=2).call("eth_blockNumber", [])
    assert err.value.kind == "rate_limited"


def test_timeouts_and_wrong_chain_never_pass_as_answers(node):
    node.faults = ["sleep"] * 3
    with pytest.raises(RpcError) as err:
        Rpc(node.url, timeout=0.2, retries=1, backoff=0.01).call("eth_blockNumber", [])
    assert err.value.kind == "timeout"
    node.chain_id = 1
    with pytest.raises(RpcError) as err:
        Rpc(node.url, chain_id=8453).call("eth_blockNumber", [])
    assert err.value.kind == "wrong_chain" and "serves chain 1, expected 8453" in str(err.value)


@pytest.mark.parametrize("fault", ["huge", "huge-unannounced"])
def test_an_answer_bigger_than_the_bound_is_a_fault_not_an_answer(node, fault):
    rpc = Rpc(node.url, max_bytes=4096, retries=0)
    node.faults = [fault]
    with pytest.raises(RpcError) as err:
        rpc.call("eth_blockNumber", [])
    assert err.value.kind == "too_large" and "4096" in str(err.value)
    assert rpc.call("eth_blockNumber", []) == "0x10", "answers within the bound are read as before"
    node.faults = [fault]
    assert Rpc(node.url, max_bytes=1 << 20).call("eth_blockNumber", []).startswith("0x000"), "a bigger bound reads it"
