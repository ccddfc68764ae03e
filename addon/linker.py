"""Which HTTP exchanges belong to one logical paid call (the 402, the paid retry, further retries).

An attempt joins an earlier one when they share
- the x402 `payment-identifier` (the client says it is the same purchase), or
- the client's `Idempotency-Key` (same client address), or
- client address + method + URL + request-body hash, but only while the earlier attempt has not
  succeeded (it got a 402, a 5xx, or no answer) — so the same prompt sent twice on purpose stays two
  calls — and within `window` seconds; for an MCP tool call, client + URL + tool + arguments instead of
  the body (an x402 challenge in its answer is no success); or
- for an A2A message, the task it is sent to, when an earlier attempt's answer named that task.
The linker also remembers the last challenge of each logical call, so that an x402 v1 payment, which
does not repeat the asset, can be completed from it. State is small and bounded.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from receipts.storage.config import Settings

from . import exchange as X


@dataclass
class _Entry:
    logical_id: str
    ts: float
    settled: bool = False  # the last attempt succeeded: new identical requests start a new call


class Linker:
    def __init__(self, window: float = 600.0, capacity: int = 50_000):
        self.window, self.capacity = window, capacity
        self._by_key: OrderedDict[tuple, _Entry] = OrderedDict()
        self._challenges: OrderedDict[str, dict] = OrderedDict()

    @staticmethod
    def keys(
        client: str | None,
        method: str,
        url: str,
        body_sha256: str | None,
        idempotency_key: str | None,
        payment_identifier: str | None,
        tool_call: tuple | None = None,
        task: str | None = None,
    ) -> list[tuple]:
        keys: list[tuple] = []
        if payment_identifier:
            keys.append(("pid", payment_identifier))
        if idempotency_key:
            keys.append(("idem", client, idempotency_key))
        if tool_call:  # an MCP tool call: its paid retry's body differs (the payment in _meta, a new JSON-RPC id)
            keys.append(("tool", client, url, *tool_call))
        if task:  # an A2A message to a task: the task its challenge came in (remember_task)
            keys.insert(0, ("task", task))
        keys.append(("body", client, method, url, body_sha256))
        return keys

    def open(
        self, req: X.Req, settings: Settings, *, receipt_id: str, match: str, source: str, call: dict | None = None
    ) -> tuple[str, list[tuple], dict]:
        """A new attempt: (its logical id, its link keys, its request payload), decoding its payment once.
        The call a body makes (MCP, A2A: `call`, X.body_call) is read from the body if not given."""
        if match in X.BODY_PROTOCOLS and call is None:
            call = X.body_call(match, req.body, req.path)
        decoded = X.payment(req.h) if call is None else X.body_payment(call)
        pay = decoded[0] or {}
        url = f"{req.scheme}://{req.host}:{req.port}{req.path}"
        tool = (call["tool"], call["arguments_sha256"]) if call and call["protocol"] == "mcp" else None
        keys = self.keys(
            req.client,
            req.method,
            url,
            X.sha256_hex(req.body) if req.body is not None else None,
            req.h.get("idempotency-key"),
            pay.get("payment_identifier"),
            tool,
            (call or {}).get("task_id"),
        )
        logical = self.link(keys, receipt_id, req.ts)
        data = X.request_data(
            req,
            settings,
            logical_id=logical,
            match=match,
            source=source,
            challenge=self.challenge_for(logical),
            decoded=decoded,
            call=call,
        )
        return logical, keys, data

    def remember_task(self, logical_id: str, task: str | None, ts: float) -> None:
        """An A2A answer named its task: later messages to that task belong to this logical call."""
        if task:
            self._by_key[("task", task)] = _Entry(logical_id, ts)
            self._by_key.move_to_end(("task", task))
            self._trim(self._by_key)

    def link(self, keys: list[tuple], receipt_id: str, ts: float) -> str:
        """The logical id for a new attempt (its own receipt id when it starts a new call)."""
        logical = receipt_id
        for key in keys:
            entry = self._by_key.get(key)
            if entry is None or ts - entry.ts > self.window:
                continue
            if key[0] in ("body", "tool") and entry.settled:
                continue
            logical = entry.logical_id
            break
        for key in keys:
            self._by_key[key] = _Entry(logical, ts)
            self._by_key.move_to_end(key)
        self._trim(self._by_key)
        return logical

    def outcome(self, keys: list[tuple], ok: bool) -> None:
        """Record how the attempt ended; a success closes the body-hash link."""
        for key in keys:
            if key in self._by_key:
                self._by_key[key].settled = ok

    def remember_challenge(self, logical_id: str, challenge: dict | None) -> None:
        if challenge:
            self._challenges[logical_id] = challenge
            self._challenges.move_to_end(logical_id)
            self._trim(self._challenges)

    def challenge_for(self, logical_id: str) -> dict | None:
        return self._challenges.get(logical_id)

    def _trim(self, d: OrderedDict) -> None:
        while len(d) > self.capacity:
            d.popitem(last=False)
