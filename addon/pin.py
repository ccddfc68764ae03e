"""The TEE certificate pin, for reverse-proxy mode.

The OpenGradient SDK trusts a TEE only if its TLS certificate is the one the TEE registry lists for
that endpoint. A client pointed at the recorder (`og.LLM.from_url`) gives that check up, so the
recorder does it instead: the upstream's certificate must equal the registry's `tlsCertificate` of a
registered TEE whose endpoint is this upstream. Modes: `enforce` (refuse otherwise), `record` (talk
anyway, note the result), `off`.

`PinCheck.check` is pure given the registry records; the registry is read by the caller (cached).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class PinResult:
    result: str  # match | mismatch | unregistered | disabled
    cert_sha256: str
    tee_id: str | None = None
    endpoint: str | None = None

    @property
    def ok(self) -> bool:
        return self.result == "match"

    def as_dict(self) -> dict:
        return {
            "result": self.result,
            "cert_sha256": self.cert_sha256,
            "tee_id": self.tee_id,
            "endpoint": self.endpoint,
        }

    def explain(self) -> str:
        where = f"TEE {self.tee_id} ({self.endpoint})" if self.tee_id else "no registered TEE"
        return {
            "match": f"upstream certificate matches the registry's tlsCertificate of {where}",
            "mismatch": f"upstream certificate (sha256 {self.cert_sha256[:16]}…) does not match the registry's "
            f"tlsCertificate of {where}: refusing, it may not be the TEE it claims to be",
            "unregistered": f"no TEE in the registry has the endpoint of this upstream "
            f"(certificate sha256 {self.cert_sha256[:16]}…)",
            "disabled": f"the upstream certificate is that of {where}, but the registry marks it disabled",
        }[self.result]


def endpoint_key(endpoint: str) -> tuple[str, int] | None:
    """(host, port) of a registry endpoint ("https://host:port", "host:port" or "host")."""
    text = endpoint.strip()
    parts = urlsplit(text if "//" in text else f"https://{text}")
    try:
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname.lower(), port or (80 if parts.scheme == "http" else 443)


def check(cert_der: bytes, host: str, port: int, records) -> PinResult:
    """Compare the upstream's leaf certificate with the registry records for host:port."""
    digest = hashlib.sha256(cert_der).hexdigest()
    here = [r for r in records if endpoint_key(r.endpoint or "") == (host.lower(), port)]
    if not here:
        return PinResult("unregistered", digest)
    for rec in here:
        if rec.tls_certificate == cert_der:
            return PinResult("match" if rec.enabled else "disabled", digest, rec.tee_id, rec.endpoint)
    return PinResult("mismatch", digest, here[0].tee_id, here[0].endpoint)


class RegistryCache:
    """The registry's records, read through `load` (I/O, injected) at most every `ttl` seconds; a
    failed read keeps the last good records and says so."""

    def __init__(self, load, ttl: float = 30.0, clock=None):
        import time

        self._load, self.ttl, self._clock = load, ttl, clock or time.monotonic
        self._records: list | None = None
        self._at = float("-inf")
        self.error: str | None = None

    def records(self) -> list | None:
        if self._clock() - self._at >= self.ttl:
            try:
                self._records, self.error = list(self._load()), None
            except Exception as exc:  # an RPC fault: the pin cannot be checked this time
                self.error = str(exc)
            self._at = self._clock()
        return self._records
