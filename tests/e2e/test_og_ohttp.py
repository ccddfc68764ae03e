"""OpenGradient ConfidentialLLM over Oblivious HTTP, end to end: the real SDK's `og.ConfidentialLLM` (in
.venv-og) → `receipts proxy` (HTTPS_PROXY) → the test bed's relay, whose paid call to the TEE gateway goes
through the same proxy → the gateway's `/v1/ohttp` (og-x402's upto session on anvil), then the session is
settled on chain and `receipts verify --once` runs.

The client's hop is sealed: the receipt keeps the TEE the request was sealed for, sizes and hashes, says
`sealed`, and links the relay's paid hop (the same encapsulated bytes), which carries the payer, the amount
cap and, once settled, the proof."""
import json

import pytest

from support.proc import ProxyProcess, receipts_cli, wait_for
from testbed.og_ohttp_bed import RELAY_PAYER, start_og_ohttp_bed


@pytest.fixture(scope="module")
def bed():
    with start_og_ohttp_bed(session_idle=120.0, reaper_interval=0.2, batch_idle=120.0) as b:
        yield b


def sql(data, query):
    out = receipts_cli("sql", "--json", query, data=data)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_sealed_call_and_the_relays_payment_are_one_story(bed, tmp_path):
    og = bed.og
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({
        "networks": {"eip155:8453": {"rpc": og.base_url, "confirmations": 1},
                     "eip155:10740": {"rpc": og.og_url, "confirmations": 1}},
        "assets": [{"network": "eip155:8453", "address": og.chains.opg, "symbol": "OPG", "decimals": 18}],
        "opengradient": {"registry": og.registry, "relay": og.relay, "blob_url": og.blob_url}}))
    with ProxyProcess(tmp_path / "data", "--config", str(config), "--seal-interval", "0.2",
                      upstream_ca=bed.upstream_ca) as proxy:
        bed.relay_configure(proxy=proxy.url, ca=proxy.ca)  # the relay's own calls go through the recorder too
        lines = bed.run_client(plan=[{"stream": False}, {"stream": True}], env=proxy.client_env())
        assert [line["ok"] for line in lines] == [True, True], lines
        sent = [line["wire"][0] for line in lines]

        rows = wait_for(lambda: (r := sql(proxy.data, "SELECT * FROM receipts WHERE ohttp_tee_id IS NOT NULL "
                                                      "ORDER BY first_seen")) and len(r) >= 4 and r, timeout=30)
        clients = [r for r in rows if r["path"] == "/api/v1/chat/ohttp"]
        relays = {r["receipt_id"]: r for r in rows if r["path"] == "/v1/ohttp"}
        assert len(clients) == 2 and len(relays) == 2, rows
        calls = {c["receipt_id"]: c for c in sql(proxy.data, "SELECT * FROM calls WHERE ohttp")}
        for client, wire in zip(clients, sent):
            assert client["ohttp_tee_id"] == og.tee_id
            assert (client["proof_status"], client["reason"], client["payer"]) == ("unpaid", "sealed", None)
            assert client["model"] is None and client["total_tokens"] is None and client["cost_source"] == "unknown"
            relay = relays[client["relay_receipt"]]  # the relay's hop that forwarded these very bytes
            assert relay["payer"].lower() == RELAY_PAYER.address.lower() and relay["ohttp_tee_id"] == og.tee_id
            own = calls[client["receipt_id"]]
            assert own["request_sha256"] == wire["request_sha256"] and own["request_bytes"] == wire["request_length"]
            assert own["response_sha256"] == wire["response_sha256"]
        assert {r["session_id"] for r in relays.values()} == {next(iter(relays.values()))["session_id"]}
        assert all(r["proof_status"] == "pending" for r in relays.values())

        shown = receipts_cli("show", clients[0]["receipt_id"], data=proxy.data).stdout
        assert f"OHTTP for TEE {og.tee_id}" in shown and clients[0]["relay_receipt"] in shown
        assert "model, prompt, answer, tokens, cost and the TEE's proof are sealed" in shown

        og.flush()  # the relay's upto session is settled on "Base"
        out = receipts_cli("verify", "--once", "--config", str(config), data=proxy.data)
        assert out.returncode == 0, out.stdout + out.stderr
        after = {r["receipt_id"]: r for r in sql(proxy.data, "SELECT * FROM receipts WHERE ohttp_tee_id IS NOT NULL")}
        for rid in relays:
            assert after[rid]["proof_status"] == "passed", after[rid]
            assert after[rid]["payment_hash"] in og.state()["settled_sessions"][0].values(), og.state()
        for client in clients:
            assert after[client["receipt_id"]]["proof_status"] == "unpaid"
