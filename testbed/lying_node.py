"""A JSON-RPC node that lies: an HTTP proxy in front of a real anvil, forwarding every call and then
rewriting the answers in one chosen way. Tests run it as a child process (:func:`start_lying_node`)
and point the verifier at it, to show that none of its lies becomes `passed`.

Modes (set at start with ``--mode``, or later with ``POST /control {"mode": …}``):

===================== ===========================================================================
``pass``              forwards everything unchanged (an honest node)
``forge-receipt``     ``eth_getTransactionReceipt`` of a transaction that does not exist answers a
                      successful receipt for the payments registered with ``POST /control
                      {"forge": {tx_hash: {payer, pay_to, asset, amount, nonce}}}``: the
                      ``Transfer(payer → pay_to, amount)`` and ``AuthorizationUsed(payer, nonce)``
                      logs the payment would leave, sent by the facilitator, in a real block a few
                      blocks deep (with that block's real hash)
``forge-blockhash``   the ``blockHash`` of every receipt and log is replaced by a made-up one
``jumping-head``      ``eth_blockNumber`` and ``eth_getBlockByNumber("latest")`` alternate between
                      1000 blocks ahead of the real head and ``BEHIND`` blocks behind it
``huge``              every answer but ``eth_chainId`` is a ~300 MB JSON body, streamed without a
                      ``content-length`` (``--huge-mb`` sets the size)
===================== ===========================================================================

``POST /control {"delay": seconds}`` makes every answer that late (a slow node, in any mode).
``GET /healthz`` answers 200; ``GET /control`` gives the mode and how many calls were answered.

    with start_lying_node(stack.rpc_url, "forge-blockhash") as liar:
        ...  # RECEIPTS_RPC_EIP155_8453=liar.url
"""
from __future__ import annotations

import argparse
import hashlib
import json
import socket
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .chain import AUTHORIZATION_USED_TOPIC, FACILITATOR, TRANSFER_TOPIC, topic_address

MODES = ("pass", "forge-receipt", "forge-blockhash", "jumping-head", "huge")
AHEAD, BEHIND = 1000, 2
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # anvil is local


class Liar:
    """What the node lies about, and the forwarding to the real node."""

    def __init__(self, upstream: str, mode: str, huge_mb: int = 300):
        self.upstream, self.mode, self.huge_mb = upstream, mode, huge_mb
        self.delay = 0.0
        self.forged: dict[str, dict] = {}
        self.calls = self.heads = 0
        self.lock = threading.Lock()

    def forward(self, calls: list[dict]) -> list[dict]:
        body = json.dumps(calls).encode()
        req = urllib.request.Request(self.upstream, body, {"content-type": "application/json"})
        with _DIRECT.open(req, timeout=30) as resp:
            return json.loads(resp.read())

    def real(self, method: str, *params) -> object:
        return self.forward([{"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}])[0].get("result")

    def answer(self, calls: list[dict]) -> list[dict]:
        """The real node's answers, then this mode's lies."""
        answers = self.forward(calls)
        by_id = {a.get("id"): a for a in answers}
        for call in calls:
            a = by_id.get(call.get("id"))
            if a is not None and "result" in a:
                a["result"] = self.lie(call["method"], call.get("params") or [], a["result"])
        with self.lock:
            self.calls += len(calls)
        return answers

    def lie(self, method: str, params: list, result):
        if self.mode == "forge-receipt" and method == "eth_getTransactionReceipt" and result is None:
            payment = self.forged.get(str(params[0]).lower())
            return self.forged_receipt(params[0], payment) if payment else None
        if self.mode == "forge-blockhash" and method in ("eth_getTransactionReceipt", "eth_getLogs"):
            return _rehash(result)
        if self.mode == "jumping-head" and (method == "eth_blockNumber" or
                                            method == "eth_getBlockByNumber" and params[:1] == ["latest"]):
            return self.jumping(method, result)
        return result

    def jumping(self, method: str, result):
        with self.lock:
            self.heads += 1
            ahead = self.heads % 2 == 1
        real = int(result if method == "eth_blockNumber" else result["number"], 16)
        height = real + AHEAD if ahead else max(0, real - BEHIND)
        if method == "eth_blockNumber":
            return hex(height)
        return {**result, "number": hex(height)} if ahead else self.real("eth_getBlockByNumber", hex(height), False)

    def forged_receipt(self, tx: str, p: dict) -> dict:
        """A successful receipt of `tx` with exactly the logs the payment `p` would leave."""
        head = int(self.real("eth_blockNumber"), 16)
        block = self.real("eth_getBlockByNumber", hex(max(1, head - 5)), False)
        where = {"blockNumber": block["number"], "blockHash": block["hash"], "transactionHash": tx,
                 "transactionIndex": "0x0", "removed": False}
        logs = [{**where, "address": p["asset"], "logIndex": "0x0", "data": "0x" + int(p["amount"]).to_bytes(32, "big").hex(),
                 "topics": [TRANSFER_TOPIC, topic_address(p["payer"]), topic_address(p["pay_to"])]},
                {**where, "address": p["asset"], "logIndex": "0x1", "data": "0x",
                 "topics": [AUTHORIZATION_USED_TOPIC, topic_address(p["payer"]), p["nonce"].lower()]}]
        return {**where, "status": "0x1", "from": p.get("from", FACILITATOR.address), "to": p["asset"],
                "logs": logs, "gasUsed": "0x1d4c0", "cumulativeGasUsed": "0x1d4c0", "effectiveGasPrice": "0x1",
                "contractAddress": None, "type": "0x2", "logsBloom": "0x" + "0" * 512}


def _rehash(result):
    """`result` with every blockHash replaced by a made-up one (the same for the same block)."""
    if isinstance(result, list):
        return [_rehash(x) for x in result]
    if isinstance(result, dict):
        out = {k: _rehash(v) for k, v in result.items()}
        if isinstance(out.get("blockHash"), str):
            out["blockHash"] = "0x" + hashlib.sha256(b"forged" + out["blockHash"].encode()).hexdigest()
        return out
    return result


class Handler(BaseHTTPRequestHandler):
    liar: Liar  # set on the class by serve()

    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.path == "/healthz":
            return self._json(200, {"ok": True})
        if self.path == "/control":
            return self._json(200, {"mode": self.liar.mode, "calls": self.liar.calls, "forged": len(self.liar.forged)})
        self._json(404, {"error": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"null")
        if self.path == "/control":
            return self._control(body)
        calls = body if isinstance(body, list) else [body]
        time.sleep(self.liar.delay)
        if self.liar.mode == "huge" and any(c.get("method") != "eth_chainId" for c in calls):
            return self._huge(calls)
        answers = self.liar.answer(calls)
        self._json(200, answers if isinstance(body, list) else answers[0])

    def _control(self, body: dict):
        if body.get("mode") is not None and body["mode"] not in MODES:
            return self._json(400, {"error": f"mode must be one of {', '.join(MODES)}"})
        self.liar.mode = body.get("mode") or self.liar.mode
        self.liar.delay = float(body.get("delay", self.liar.delay))
        self.liar.forged.update({k.lower(): v for k, v in (body.get("forge") or {}).items()})
        self._json(200, {"mode": self.liar.mode})

    def _huge(self, calls: list[dict]):
        """A valid JSON-RPC answer of ~huge_mb MB, a MB at a time, with no length announced."""
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        pad = b"0" * (1 << 20)
        try:
            self.wfile.write(b'[{"jsonrpc":"2.0","id":%d,"result":"0x' % calls[0].get("id", 1))
            for _ in range(self.liar.huge_mb):
                self.wfile.write(pad)
            self.wfile.write(b'"}]')
        except OSError:  # the client stopped reading: as it should
            pass

    def _json(self, status: int, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve(liar: Liar, fd: int | None, port: int = 0) -> None:
    Handler.liar = liar
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler, bind_and_activate=fd is None)
    if fd is not None:
        server.socket.close()
        server.socket = socket.socket(fileno=fd)
    server.daemon_threads = True
    server.serve_forever()


def start_lying_node(upstream: str, mode: str = "pass", *, huge_mb: int = 300, timeout: float = 30.0):
    """The lying node as a child process (a :class:`testbed.service.Service`: ``.url``, ``with``)."""
    from .service import start_service

    return start_service("lying-node", "testbed.lying_node", ["--upstream", upstream, "--mode", mode,
                                                               "--huge-mb", str(huge_mb)], timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.lying_node", description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True, help="the real node's JSON-RPC URL")
    ap.add_argument("--mode", choices=MODES, default="pass")
    ap.add_argument("--huge-mb", type=int, default=300, help="size of a `huge` answer")
    ap.add_argument("--fd", type=int, help="serve this inherited listening socket")
    ap.add_argument("--port", type=int, default=0, help="without --fd: the port on 127.0.0.1")
    args = ap.parse_args(argv)
    serve(Liar(args.upstream, args.mode, args.huge_mb), args.fd, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
