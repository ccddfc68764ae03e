"""Reverse-proxy mode and the TEE certificate pin: a real `receipts proxy --reverse` subprocess, a real
registry on anvil (chain 10740), and local HTTPS upstreams whose certificates are, or are not, the one
the registry lists for their endpoint."""
import json
import ssl
import uuid

import httpx
import pytest

from support.proc import ProxyProcess, receipts_cli, wait_for
from support.upstream import start_upstream
from testbed.og_chain import TEE_REGISTRY, register_tee, start_og_chains

OTHER_CERT = b"0\x82not-the-upstream-certificate"


def der(pem_path: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(open(pem_path).read())


@pytest.fixture(scope="module")
def world(tls, tmp_path_factory):
    """Two upstreams: `good` registered with its real certificate, `bad` with another one."""
    good, good_port = start_upstream(0, tls["cert"], tls["key"])
    bad, bad_port = start_upstream(0, tls["cert"], tls["key"])
    with start_og_chains(payer_funds=0) as chains:
        good_id = register_tee(chains.og.url, TEE_REGISTRY, b"key-good", der(tls["cert"]),
                               f"https://localhost:{good_port}", chains.og.url and "0x" + "11" * 20)
        register_tee(chains.og.url, TEE_REGISTRY, b"key-bad", OTHER_CERT, f"https://localhost:{bad_port}",
                     "0x" + "22" * 20)
        config = tmp_path_factory.mktemp("cfg") / "config.yaml"
        config.write_text(json.dumps({"networks": {"eip155:10740": {"rpc": chains.og.url}},
                                      "opengradient": {"registry": TEE_REGISTRY}}))
        yield {"good": good_port, "bad": bad_port, "good_id": good_id, "config": str(config),
               "servers": (good, bad)}
    good.shutdown()
    bad.shutdown()


def reverse_proxy(tmp_path, world, port_key, *extra):
    return ProxyProcess(tmp_path / "data", "--config", world["config"], "--seal-interval", "0.2",
                        "--reverse", f"https://localhost:{world[port_key]}", *extra)


def calls(data):
    out = receipts_cli("sql", "--json", "SELECT * FROM calls ORDER BY started_at", data=data)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def post(proxy, text):
    return httpx.post(f"http://127.0.0.1:{proxy.port}/v1/chat/completions", timeout=30,
                      json={"model": "fake-model", "messages": [{"role": "user", "content": text}]})


def test_pinned_upstream_is_recorded_with_its_tee(tmp_path, world):
    with reverse_proxy(tmp_path, world, "good") as proxy:
        resp = post(proxy, f"hello {uuid.uuid4()}")
        assert resp.status_code == 402 and resp.headers["payment-required"], resp.text  # the upstream's own answer
        rows = wait_for(lambda: calls(proxy.data))
    assert rows[0]["upstream_pin"] == "match"
    assert rows[0]["upstream_tee_id"] == world["good_id"]
    assert rows[0]["status"] == 402


def test_enforce_refuses_an_upstream_whose_certificate_is_not_the_registry_s(tmp_path, world):
    bad = world["servers"][1]
    bad.clear()
    marker = f"must-not-arrive {uuid.uuid4()}"
    with reverse_proxy(tmp_path, world, "bad") as proxy:
        resp = post(proxy, marker)
        assert resp.status_code == 502
        rows = wait_for(lambda: [r for r in calls(proxy.data) if r["error"]])
        output = proxy.output()
        doctor = receipts_cli("doctor", "--config", world["config"], data=proxy.data)
    assert not any(marker.encode() in body for *_, body in bad.seen_list())
    assert rows[0]["error"].startswith("tee_pin_mismatch: upstream certificate")
    assert "does not match the registry's tlsCertificate" in output
    assert "the recorder refused an upstream 1 times (tee_pin_mismatch): upstream certificate" in doctor.stdout


def test_record_mode_talks_but_notes_the_mismatch(tmp_path, world):
    with reverse_proxy(tmp_path, world, "bad", "--pin", "record") as proxy:
        assert post(proxy, f"recorded {uuid.uuid4()}").status_code == 402  # reached the upstream
        rows = wait_for(lambda: calls(proxy.data))
    assert rows[0]["upstream_pin"] == "mismatch"


def test_reverse_works_for_any_upstream_without_a_registry(tmp_path, tls, upstream):
    # no OpenGradient settings at all: not a TEE, so no pin; the usual TLS checks of the upstream apply
    port = upstream.rsplit(":", 1)[1]
    with ProxyProcess(tmp_path / "data", "--seal-interval", "0.2", "--reverse", f"https://localhost:{port}",
                      upstream_ca=tls["ca"]) as proxy:
        resp = httpx.post(f"http://127.0.0.1:{proxy.port}/v1/free/chat/completions", timeout=30,
                          json={"model": "gpt-4o-mini", "messages": []})
        assert resp.status_code == 200 and resp.headers["x-receipt-id"]
        rows = wait_for(lambda: [r for r in calls(proxy.data) if r["status"]])
        assert "no certificate pin" in proxy.output()
    assert rows[0]["model"] == "gpt-4o-mini" and rows[0]["upstream_pin"] in (None, "unregistered")
    # ... and an upstream whose certificate nothing vouches for is still refused (no --upstream-ca)
    with ProxyProcess(tmp_path / "data2", "--reverse", f"https://localhost:{port}") as proxy:
        resp = httpx.post(f"http://127.0.0.1:{proxy.port}/v1/free/chat/completions", timeout=30,
                          json={"model": "gpt-4o-mini", "messages": []})
    assert resp.status_code == 502


def test_an_upstream_the_registry_does_not_list_gets_the_usual_tls_checks(tmp_path, tls, world, upstream):
    # a registry is configured (pin: enforce), but this upstream is no TEE of it: it is not pinned
    port = upstream.rsplit(":", 1)[1]
    with ProxyProcess(tmp_path / "data", "--config", world["config"], "--seal-interval", "0.2",
                      "--reverse", f"https://localhost:{port}", upstream_ca=tls["ca"]) as proxy:
        resp = httpx.post(f"http://127.0.0.1:{proxy.port}/v1/free/chat/completions", timeout=30,
                          json={"model": "gpt-4o-mini", "messages": []})
        assert resp.status_code == 200 and resp.headers["x-receipt-id"]  # not refused by the pin
        rows = wait_for(lambda: [r for r in calls(proxy.data) if r["status"]])
    assert rows[0]["status"] == 200 and rows[0]["upstream_pin"] in (None, "unregistered")


def test_reverse_refuses_a_url_that_is_not_an_upstream(tmp_path):
    out = receipts_cli("proxy", "--reverse", "ftp://x", data=tmp_path / "d")
    assert out.returncode == 1 and "https://host:port" in out.stderr
