"""Batched JSON-RPC, strict about what it trusts.

One HTTP request carries many calls (a JSON array), which is what makes verifying thousands of
receipts fast. Faults are classified so that the verifier can say what is wrong and never treat a
fault as evidence: a timeout, HTTP 429/5xx, a malformed answer, a node on the wrong chain, or a
node that is behind all raise `RpcError` (after retries with backoff), never return "not found".
Answers are bounded: one bigger than `max_bytes` raises `RpcError("too_large")` after reading at
most that much (a node cannot make the verifier hold an answer of any size).
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, cast

import orjson

MAX_BYTES = 64 << 20  # the default bound of one answer (a batch of 500 receipts is ~2 MB)
CHUNK_BYTES = 1 << 20


class RpcError(Exception):
    """The node could not be trusted for an answer; `kind` says why (one word, stable)."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind


@dataclass
class Rpc:
    url: str
    timeout: float = 5.0
    retries: int = 3
    backoff: float = 0.25
    chain_id: int | None = None  # expected; checked once per client
    max_bytes: int = MAX_BYTES  # the biggest answer read

    def __post_init__(self) -> None:
        self._checked = self.chain_id is None
        self._next_id = 1

    def call(self, method: str, params: list) -> Any:  # (a JSON value)
        return self.batch([(method, params)])[0]

    def batch(self, calls: list[tuple[str, list]]) -> list[Any]:
        """Results in order; JSON-RPC errors of single calls are raised as RpcError too."""
        if not calls:
            return []
        self._check_chain()
        return self._with_retries(calls)

    def _check_chain(self) -> None:
        if self._checked:
            return
        got = int(cast(str, self._with_retries([("eth_chainId", [])])[0]), 16)  # eth_chainId: hex text
        if got != self.chain_id:
            raise RpcError("wrong_chain", f"{self.url} serves chain {got}, expected {self.chain_id}")
        self._checked = True

    def _with_retries(self, calls: list[tuple[str, list]]) -> list[Any]:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return self._send(calls)
            except RpcError as exc:
                if (
                    exc.kind not in ("timeout", "rate_limited", "server_error", "unreachable")
                    or attempt == self.retries
                ):
                    raise
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _send(self, calls: list[tuple[str, list]]) -> list[Any]:
        first = self._next_id
        self._next_id += len(calls)
        body = orjson.dumps(
            [{"jsonrpc": "2.0", "id": first + i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
        )
        req = urllib.request.Request(self.url, body, {"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = self._read(resp)
        except urllib.error.HTTPError as exc:
            kind = "rate_limited" if exc.code == 429 else "server_error" if exc.code >= 500 else "bad_response"
            raise RpcError(kind, f"HTTP {exc.code} from {self.url}") from None
        except TimeoutError:
            raise RpcError("timeout", f"no answer from {self.url} within {self.timeout}s") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise RpcError("timeout", f"no answer from {self.url} within {self.timeout}s") from None
            raise RpcError("unreachable", f"{self.url}: {exc.reason}") from None
        except (http.client.HTTPException, ConnectionError) as exc:  # the answer broke off
            raise RpcError("unreachable", f"{self.url}: {type(exc).__name__}") from None
        return _results(raw, first, len(calls))

    def _read(self, resp) -> bytes:
        """The answer's body, or RpcError("too_large") once more than `max_bytes` have come (or been
        announced): read a chunk at a time, so a bigger answer is never held whole."""
        length = resp.headers.get("content-length")
        if length is not None and length.strip().isdigit():
            if int(length) > self.max_bytes:
                raise RpcError("too_large", f"{self.url} announced {int(length)} bytes, more than {self.max_bytes}")
            return resp.read()
        chunks, size = [], 0
        while chunk := resp.read(CHUNK_BYTES):
            size += len(chunk)
            if size > self.max_bytes:
                raise RpcError("too_large", f"{self.url} sent more than {self.max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


def warm_up() -> None:
    """Build urllib's default opener now (its HTTPS context loads the CA store: ~20 ms), as the first
    `urlopen` would, so that a caller can do it in the background before its first call."""
    if urllib.request._opener is None:  # type: ignore[attr-defined]  # private, not in typeshed
        urllib.request.install_opener(urllib.request.build_opener())


def _results(raw: bytes, first: int, n: int) -> list[Any]:
    try:
        items = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise RpcError("bad_response", "the node's answer is not JSON") from None
    if isinstance(items, dict):  # some nodes answer a whole failed batch with one error object
        raise RpcError("bad_response", str(items.get("error") or items)[:200])
    by_id = {item.get("id"): item for item in items if isinstance(item, dict)}
    out = []
    for i in range(first, first + n):
        item = by_id.get(i)
        if item is None:
            raise RpcError("bad_response", f"the node's answer lacks call {i}")
        if "error" in item:
            raise RpcError("call_error", str(item["error"])[:200])
        out.append(item.get("result"))
    return out
