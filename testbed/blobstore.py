"""A local blob server that plays Walrus (publisher and aggregator) for the OpenGradient test bed.

    with start_blobstore() as blobs:
        PUT  {blobs.url}/v1/blobs?epochs=5   body = the bytes  -> 200 JSON with the blob id
        GET  {blobs.url}/v1/blobs/<blob id>                    -> 200 the bytes, or 404

The store answer has the Walrus publisher's shape: ``{"newlyCreated": {"blobObject": {"blobId", "size",
…}}}`` the first time, ``{"alreadyCertified": {"blobId", "endEpoch"}}`` for bytes already stored.
POST is accepted like PUT, and ``/v1/store`` like ``/v1/blobs`` (older publishers). Query parameters
are ignored.

A blob id is the unpadded base64url of SHA-256 of the bytes (43 characters): the same form as a
Walrus id (32 bytes, base64url) and content-derived like one, but not the same value (Walrus derives
it from the erasure-coded blob's metadata). Only 127.0.0.1 is used; everything is in memory.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import re
import threading

MAX_BLOB = 64 * 1024 * 1024
_BLOB_PATH = re.compile(r"^/v1/blobs/([A-Za-z0-9_-]+)$")
_STORE_PATHS = ("/v1/blobs", "/v1/store")
END_EPOCH = 1000


def blob_id_of(data: bytes) -> str:
    """The id this server gives ``data``: unpadded base64url of its SHA-256."""
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


class BlobStore:
    """A running blob server: ``.url``, the stored ``.blobs`` (id -> bytes), and ``.requests``
    (``(method, path, status)`` of each request). A context manager: leaving stops the server."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="blobstore", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def put(self, data: bytes) -> str:
        """Store ``data`` directly (no HTTP); returns its blob id."""
        blob_id, _ = self._store(bytes(data))
        return blob_id

    def get(self, blob_id: str) -> bytes | None:
        with self._lock:
            return self.blobs.get(blob_id)

    def _store(self, data: bytes) -> tuple[str, bool]:
        blob_id = blob_id_of(data)
        with self._lock:
            new = blob_id not in self.blobs
            self.blobs[blob_id] = data
        return blob_id, new

    def _log(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.requests.append((method, path, status))

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "BlobStore":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<BlobStore {self.url} {len(self.blobs)} blobs>"


def _handler_for(store: BlobStore) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "testbed-blobstore/1"

        def log_message(self, format, *args):
            pass

        def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            store._log(self.command, self.path, status)  # before the client can see the answer
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, obj: dict) -> None:
            self._send(status, json.dumps(obj).encode())

        def _body(self) -> bytes | None:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                chunks, total = [], 0
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    total += size
                    if total > MAX_BLOB:
                        return None
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BLOB:
                return None
            return self.rfile.read(length)

        def do_PUT(self) -> None:
            path = self.path.split("?", 1)[0]
            if path not in _STORE_PATHS:
                return self._json(404, {"error": {"code": 404, "message": f"no such endpoint: {path}"}})
            data = self._body()
            if data is None:
                self.close_connection = True
                return self._json(413, {"error": {"code": 413, "message": f"blob larger than {MAX_BLOB} bytes"}})
            blob_id, new = store._store(data)
            if new:
                return self._json(200, {"newlyCreated": {
                    "blobObject": {
                        "id": "0x" + hashlib.sha256(b"object:" + blob_id.encode()).hexdigest(),
                        "registeredEpoch": 0, "blobId": blob_id, "size": len(data), "encodingType": "RS2",
                        "certifiedEpoch": 0, "deletable": False,
                        "storage": {"id": "0x" + hashlib.sha256(b"storage:" + blob_id.encode()).hexdigest(),
                                    "startEpoch": 0, "endEpoch": END_EPOCH, "storageSize": len(data)},
                    },
                    "resourceOperation": {"registerFromScratch": {"encodedLength": len(data),
                                                                  "epochsAhead": END_EPOCH}},
                    "cost": 0,
                }})
            return self._json(200, {"alreadyCertified": {"blobId": blob_id, "endEpoch": END_EPOCH}})

        do_POST = do_PUT

        def do_GET(self) -> None:
            m = _BLOB_PATH.match(self.path.split("?", 1)[0])
            data = store.get(m.group(1)) if m else None
            if data is None:
                return self._json(404, {"error": {"code": 404, "message": "blob not found"}})
            self._send(200, data, "application/octet-stream")

        do_HEAD = do_GET

    return Handler


def start_blobstore() -> BlobStore:
    """Start a blob server on 127.0.0.1 (a free port); use it as a context manager."""
    return BlobStore()


__all__ = ["BlobStore", "start_blobstore", "blob_id_of", "MAX_BLOB"]
