"""The one vocabulary of records that every part of the project shares.

Everything on disk is an *event*: one JSON object per line in the journal, and one row in the
compacted Parquet files. The envelope is fixed; the payload (`data`) depends on the type:

| type         | written by | when                                                                  |
|--------------|------------|-----------------------------------------------------------------------|
| `request`    | addon      | before the request is forwarded upstream (durable first)              |
| `response`   | addon      | before the response (or a stream's headers) reaches the client        |
| `stream_end` | addon      | after the last chunk of a streamed response passed through            |
| `error`      | addon      | the exchange failed: client gone, upstream refused or timed out, TLS  |
| `check`      | verifier   | what one verification pass found that changed: `{"checks": [...]}`,   |
|              |            | each a CheckEntry or the VerdictEntry (typed at the end of this file) |

Envelope fields (see storage/views.sql for how each is read):
- `id`: unique event id (UUIDv7 text for live capture, UUIDv5 for ingested files so that ingesting the
  same file twice adds nothing);
- `type`: one of EVENT_TYPES;
- `ts`: seconds since the Unix epoch (float) at which the event happened;
- `receipt_id`: the exchange the event belongs to (UUIDv7, ours, stamped as `X-Receipt-Id`);
- `writer` and `seq`: who wrote it and its position in that writer's sequence (set by the journal);
- `data`: the typed payload, documented beside the code that builds it (addon/exchange.py, verifier/).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypedDict

# How a payment's `signer_error` begins when only the chain can check its signature (the verifier then
# passes the signature with the settlement): a contract wallet's (ERC-1271, ERC-6492), a delegation's
# (ERC-7710), a signed transaction's.
SMART_WALLET = "smart_wallet"
DELEGATION = "delegation"
SIGNED_TX = "signed_transaction"  # the payer signed a whole transaction (MPP's tempo): its settlement proves it

EVENT_TYPES = ("request", "response", "stream_end", "error", "check")


_counter = itertools.count(int.from_bytes(os.urandom(9), "big"))


def uuid7(ts: float | None = None, seed: bytes | None = None) -> str:
    """A time-ordered UUID (RFC 9562 version 7): 48 bits of milliseconds, then 74 bits that are
    unique in this process (a counter from a random start: cheap on the proxy's hot path) or, with
    `seed`, derived from it, so recording the same file twice gives the same ids."""
    ms = int((time.time() if ts is None else ts) * 1000) & ((1 << 48) - 1)
    if seed is not None:
        rand = int.from_bytes(hashlib.sha256(seed).digest()[:10], "big")
    else:
        rand = next(_counter)
    value = ms << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64 | 0b10 << 62 | rand & ((1 << 62) - 1)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def stable_id(*parts: str) -> str:
    """A deterministic id for events recorded from files, so re-recording the same input dedupes."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "receipts:" + "\x1f".join(parts)))


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    receipt_id: str
    data: dict
    ts: float = field(default_factory=time.time)
    id: str = field(default_factory=uuid7)

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {self.type!r}")

    def envelope(self, writer: str, seq: int) -> dict:
        return {
            "id": self.id,
            "type": self.type,
            "ts": self.ts,
            "receipt_id": self.receipt_id,
            "writer": writer,
            "seq": seq,
            "data": self.data,
        }


# ---- what the verifier writes: a `check` event's {"checks": [...]}, read by storage/fold.sql -----------
@dataclass(slots=True)
class Check:
    """One check of a receipt against its evidence: `pass`, `fail` or `pending`, a stable reason code
    (e.g. `tx_reverted`), what it rests on, and the block it was read at."""

    name: str
    result: str  # pass | fail | pending
    reason: str | None = None  # stable code, e.g. tx_reverted
    detail: dict = field(default_factory=dict)
    block: int | None = None

    def entry(self) -> CheckEntry:
        return {
            "check": self.name,
            "result": self.result,
            "reason": self.reason,
            "detail": self.detail,
            "block": self.block,
        }


class Verdict(NamedTuple):
    """A receipt's proof status (`pending`, `passed`, `failed`), its resolution (`risky`, `refunded`,
    `retried`, or None) and the reason code that decided it."""

    status: str
    resolution: str | None
    reason: str | None

    def entry(self, checks: list[Check], **evidence: Any) -> VerdictEntry:
        """The verdict as a check entry: each check's result, and the transaction that proves it (`tx`,
        `session_amount`) where there is one."""
        entry: VerdictEntry = {
            "check": "verdict",
            "result": self.status,
            "status": self.status,
            "resolution": self.resolution,
            "reason": self.reason,
            "detail": {c.name: c.result for c in checks},
        }
        if "tx" in evidence:
            entry["tx"] = evidence.pop("tx")
        if "session_amount" in evidence:
            entry["session_amount"] = evidence.pop("session_amount")
        if evidence:
            raise TypeError(f"unknown evidence {sorted(evidence)}")
        return entry


class CheckEntry(TypedDict):
    check: str
    result: str
    reason: str | None
    detail: dict
    block: int | None


class VerdictEntry(TypedDict, total=False):
    check: str  # "verdict"
    result: str  # = status
    status: str
    resolution: str | None
    reason: str | None
    detail: dict[str, str]  # check name -> result
    tx: str | None
    session_amount: str | int | None


def check_event(receipt_id: str, entries: list[CheckEntry | VerdictEntry]) -> Event:
    return Event("check", receipt_id, {"checks": entries})
