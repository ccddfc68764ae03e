"""The OpenGradient TEE registry, read with batched `eth_call`s.

Two reads: `keys(ids)` (each TEE's DER public key and whether it is enabled — what a TEE signature
check needs; unknown ids come back as None) and `records()` (every registered TEE with its endpoint
and TLS certificate — what the reverse proxy's pin needs). Both only use calls that do not revert
for unknown ids, so one batch answers for many TEEs.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_abi import decode, encode
from eth_hash.auto import keccak

from .rpc import Rpc

TEE_TYPES = (0, 1)  # LLM proxy, validator
TEE_INFO = (
    "(address,address,string,bytes,bytes,bytes32,uint8,bool,uint256,uint256,"
    "(uint8,uint16,uint16,uint16,bytes,bytes,uint256))"
)


def _selector(signature: str) -> bytes:
    return keccak(signature.encode())[:4]


GET_TEE = _selector("getTEE(bytes32)")
GET_PUBLIC_KEY = _selector("getTEEPublicKey(bytes32)")
IS_ENABLED = _selector("isTEEEnabled(bytes32)")
BY_TYPE = _selector("getTEEsByType(uint8)")


@dataclass(frozen=True)
class TeeKey:
    tee_id: str
    public_key: bytes
    enabled: bool


@dataclass(frozen=True)
class TeeRecord:
    tee_id: str
    owner: str
    payment_address: str
    endpoint: str
    public_key: bytes
    tls_certificate: bytes
    pcr_hash: str
    tee_type: int
    enabled: bool
    registered_at: int
    last_heartbeat_at: int


def _id(tee_id: str) -> bytes:
    raw = bytes.fromhex(tee_id.removeprefix("0x"))
    if len(raw) != 32:
        raise ValueError(f"tee id {tee_id!r} is not 32 bytes")
    return raw


def _hex(result: object) -> bytes:
    return bytes.fromhex(str(result or "0x").removeprefix("0x"))


class Registry:
    def __init__(self, rpc: Rpc, address: str):
        self.rpc, self.address = rpc, address

    def _calls(self, datas: list[bytes]) -> list[bytes]:
        return [
            _hex(r)
            for r in self.rpc.batch(
                [("eth_call", [{"to": self.address, "data": "0x" + d.hex()}, "latest"]) for d in datas]
            )
        ]

    def keys(self, tee_ids: list[str]) -> dict[str, TeeKey | None]:
        """Public key and enabled flag of each TEE id (None: not registered, or not a 32-byte id)."""
        ids = [t.lower() for t in tee_ids]
        valid = [t for t in ids if _valid(t)]
        answers = self._calls(
            [sel + encode(["bytes32"], [_id(t)]) for t in valid for sel in (GET_PUBLIC_KEY, IS_ENABLED)]
        )
        out: dict[str, TeeKey | None] = {t: None for t in ids}
        for i, tee_id in enumerate(valid):
            key = decode(["bytes"], answers[2 * i])[0]
            enabled = decode(["bool"], answers[2 * i + 1])[0]
            out[tee_id] = TeeKey(tee_id, key, enabled) if key else None
        return out

    def records(self) -> list[TeeRecord]:
        """Every registered TEE (of the LLM-proxy and validator types)."""
        lists = self._calls([BY_TYPE + encode(["uint8"], [t]) for t in TEE_TYPES])
        ids = sorted({x for raw in lists for x in decode(["bytes32[]"], raw)[0]})
        out = []
        for tee_id, raw in zip(ids, self._calls([GET_TEE + encode(["bytes32"], [x]) for x in ids])):
            ((owner, pay, endpoint, key, cert, pcr, kind, enabled, registered, heartbeat, _ohttp),) = decode(
                [TEE_INFO], raw
            )
            out.append(
                TeeRecord(
                    "0x" + tee_id.hex(),
                    owner.lower(),
                    pay.lower(),
                    endpoint,
                    key,
                    cert,
                    "0x" + pcr.hex(),
                    kind,
                    enabled,
                    registered,
                    heartbeat,
                )
            )
        return out


def _valid(tee_id: str) -> bool:
    try:
        _id(tee_id)
        return True
    except ValueError:
        return False
