"""x402 over MCP end to end: the real `mcp` SDK's client, wrapped with x402's MCP client, calls paid tools of
the `mcp` SDK's server (Streamable HTTP, x402's MCP payment wrapper, the test bed's real facilitator on
anvil) through a real `receipts proxy` (HTTPS, its CA). Nothing of the payment is in HTTP headers: the
recorder looks into the bodies of requests its cheap signals mark as MCP, and records only tool calls.

Each paid call is one receipt (its unpaid call, the challenge tool result and the paid retry), with the
JSON-RPC id, method and tool, the payer, amount and the settlement's transaction as `payment_hash`, whether
the answers are an event stream or JSON; `receipts verify` passes them on chain. A free tool call is an
unpaid receipt; the session's other messages (initialize, tools/list, …) are not recorded; a settlement
that the facilitator refuses is recorded as failed and is not passed."""
import json

import pytest

from support.proc import ProxyProcess, receipts_cli, wait_for
from testbed.mcp_bed import mcp_stack


@pytest.fixture(scope="module")
def stack(tls):
    with mcp_stack(tls=tls) as s:
        yield s


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, tls):
    with ProxyProcess(tmp_path_factory.mktemp("data"), "--seal-interval", "0.1", upstream_ca=tls["ca"]) as p:
        yield p


def sql(proxy, query) -> list[dict]:
    out = receipts_cli("sql", "--json", query, data=proxy.data)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def receipt_of(proxy, tx) -> dict | None:
    rows = sql(proxy, f"SELECT * FROM receipts WHERE payment_hash = '{tx.lower()}'")
    return rows[0] if rows else None


@pytest.fixture(scope="module")
def calls(stack, proxy):
    made = {mode: stack.call_tool("chat", {"prompt": f"in {mode}"}, mode=mode, proxy=proxy.url, verify=proxy.ca)
            for mode in ("sse", "json")}
    made["free"] = stack.call_tool("echo", {"text": "free"}, proxy=proxy.url, verify=proxy.ca)
    made["failed"] = stack.call_tool("chat", {"prompt": "refused"}, fail_settle=True, proxy=proxy.url, verify=proxy.ca)
    for mode in ("sse", "json"):
        assert made[mode].payment_made and made[mode].tx_hash, made[mode]
    try:
        wait_for(lambda: all(receipt_of(proxy, made[m].tx_hash) for m in ("sse", "json")) or None, timeout=20)
    except AssertionError as exc:  # what was recorded instead, to tell a slow recorder from a lost field
        seen = sql(proxy, "SELECT c.receipt_id, c.logical_id, c.rpc_method, c.status, c.stream, c.error, s.tx_hash "
                          "FROM calls c LEFT JOIN settlements s USING (receipt_id) ORDER BY c.started_at")
        kept = sql(proxy, "SELECT receipt_id, mcp_tool, proof_status, payment_hash FROM receipts")
        raise AssertionError(f"{exc}: txs {[made[m].tx_hash for m in ('sse', 'json')]}; calls {seen}; "
                             f"receipts {kept}; proxy {proxy.lines[-30:]}") from None
    return made


@pytest.mark.parametrize("mode", ["sse", "json"])
def test_a_paid_tool_call_is_one_receipt_with_its_payment(stack, proxy, calls, mode):
    r = receipt_of(proxy, calls[mode].tx_hash)
    assert (r["payer"].lower(), r["pay_to"].lower(), int(r["amount"])) == \
        (stack.payer.address.lower(), stack.payee.address.lower(), stack.price)
    assert (r["mcp_tool"], r["scheme"], r["attempts"], r["payment_count"]) == ("chat", "exact", 2, 1), r
    exchanges = sql(proxy, f"SELECT rpc_method, rpc_id, status FROM calls WHERE logical_id = '{r['receipt_id']}' "
                           "ORDER BY started_at")
    assert [e["rpc_method"] for e in exchanges] == ["tools/call", "tools/call"]
    assert exchanges[0]["rpc_id"] != exchanges[1]["rpc_id"]  # (the paid retry is a new JSON-RPC request)
    assert r["max_amount_required"] is not None  # (the challenge tool result's offer)


def test_only_tool_calls_are_recorded_and_a_free_one_is_unpaid(proxy, calls):
    methods = {row["rpc_method"] for row in sql(proxy, "SELECT DISTINCT rpc_method FROM calls")}
    assert methods == {"tools/call"}, methods  # (no initialize, notifications, tools/list, GET or DELETE)
    (free,) = sql(proxy, "SELECT * FROM receipts WHERE mcp_tool = 'echo'")
    assert (free["proof_status"], free["payer"]) == ("unpaid", None)


def test_verify_passes_the_paid_calls_and_not_the_refused_one(stack, proxy, calls, tmp_path):
    config = tmp_path / "receipts.yaml"
    config.write_text(json.dumps(stack.paid.receipts_config(confirmations=1)))
    out = receipts_cli("verify", "--once", "--config", str(config), data=proxy.data, timeout=120)
    assert out.returncode == 0, out.stderr
    for mode in ("sse", "json"):
        r = receipt_of(proxy, calls[mode].tx_hash)
        assert (r["proof_status"], r["reason"]) == ("passed", None), r
    (refused,) = sql(proxy, "SELECT * FROM receipts WHERE settlement_success = false")
    assert refused["mcp_tool"] == "chat" and refused["proof_status"] != "passed", refused
    assert refused["payment_hash"] is None
