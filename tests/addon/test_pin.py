"""The reverse-proxy certificate pin against registry records (pure)."""
from types import SimpleNamespace as R

from receipts.addon import pin

CERT, OTHER = b"cert-der-1", b"cert-der-2"


def rec(endpoint, cert=CERT, enabled=True, tee_id="0xaa"):
    return R(endpoint=endpoint, tls_certificate=cert, enabled=enabled, tee_id=tee_id)


def test_match_mismatch_unregistered_disabled():
    records = [rec("https://127.0.0.1:9443")]
    assert pin.check(CERT, "127.0.0.1", 9443, records).result == "match"
    bad = pin.check(OTHER, "127.0.0.1", 9443, records)
    assert bad.result == "mismatch" and not bad.ok and "does not match" in bad.explain()
    assert pin.check(CERT, "127.0.0.1", 9444, records).result == "unregistered"
    assert pin.check(CERT, "127.0.0.1", 9443, [rec("127.0.0.1:9443", enabled=False)]).result == "disabled"


def test_endpoint_forms():
    assert pin.endpoint_key("https://Tee.Example:8443/v1") == ("tee.example", 8443)
    assert pin.endpoint_key("tee.example") == ("tee.example", 443)
    assert pin.endpoint_key("http://tee.example") == ("tee.example", 80)
    assert pin.endpoint_key("https://x:notaport") is None


def test_registry_cache_rereads_after_ttl_and_keeps_last_good():
    now, calls = [0.0], []

    def load():
        calls.append(now[0])
        if len(calls) == 2:
            raise OSError("node down")
        return [rec("a:1")]

    cache = pin.RegistryCache(load, ttl=30, clock=lambda: now[0])
    assert len(cache.records()) == 1 and cache.records() is not None and len(calls) == 1
    now[0] = 31
    assert len(cache.records()) == 1 and cache.error == "node down"
    now[0] = 62
    cache.records()
    assert cache.error is None and len(calls) == 3
