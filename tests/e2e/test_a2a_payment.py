"""x402 over A2A end to end: the real `a2a-sdk` client pays a paid agent built on the real `a2a-sdk` server
(the a2a-x402 extension's metadata; the test bed's real x402 facilitator on anvil) through a real
`receipts proxy` (HTTPS, its CA). The payment travels in message metadata, not headers: the recorder looks
into requests its cheap signals mark as A2A, records only message sends, and pairs the ask, the agent's
payment-required answer and the paid message (linked by the task) into one receipt. The receipts come as a
list; the last one is the outcome. Streaming (SSE) and unary answers; a settlement that fails."""
import json

import pytest

from support.proc import ProxyProcess, receipts_cli, wait_for
from testbed.a2a_bed import a2a_stack


@pytest.fixture(scope="module")
def stack(tls):
    with a2a_stack(tls=tls) as s:
        yield s


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, tls):
    with ProxyProcess(tmp_path_factory.mktemp("data"), "--seal-interval", "0.1", upstream_ca=tls["ca"]) as p:
        yield p


def sql(proxy, query) -> list[dict]:
    out = receipts_cli("sql", "--json", query, data=proxy.data)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def by_tx(proxy, tx) -> dict | None:
    rows = sql(proxy, f"SELECT * FROM receipts WHERE payment_hash = '{tx.lower()}'")
    return rows[0] if rows else None


@pytest.mark.parametrize("streaming", [True, False], ids=["sse", "unary"])
def test_a_paid_task_is_one_receipt_with_its_payment(stack, proxy, streaming, tmp_path):
    task = stack.pay(f"hello {streaming}", proxy=proxy.url, verify=proxy.ca, streaming=streaming)
    assert task.tx_hash, (task.state, task.error, task.metadata)
    r = wait_for(lambda: by_tx(proxy, task.tx_hash), timeout=20)
    assert (r["payer"].lower(), r["pay_to"].lower(), int(r["amount"]), r["a2a_task"]) == \
        (stack.paid.payer.address.lower(), stack.paid.payee.address.lower(), stack.paid.price, task.task_id), r
    assert (r["attempts"], r["payment_count"], r["max_amount_required"]) == (2, 1, stack.paid.price), r
    methods = {m["rpc_method"] for m in sql(proxy, "SELECT DISTINCT rpc_method FROM calls")}
    assert methods <= {"SendMessage", "SendStreamingMessage"}, methods  # (no GetTask, no agent card)
    assert sql(proxy, f"SELECT receipt_id FROM receipts WHERE list_contains(ids, '{task.task_id.lower()}')") \
        == [{"receipt_id": r["receipt_id"]}]  # (the task id finds it)
    config = tmp_path / "receipts.yaml"
    config.write_text(json.dumps(stack.paid.receipts_config(confirmations=1)))
    out = receipts_cli("verify", "--once", "--config", str(config), data=proxy.data, timeout=120)
    assert out.returncode == 0, out.stderr
    assert by_tx(proxy, task.tx_hash)["proof_status"] == "passed"


def test_a_failed_settlement_is_recorded_as_failed(stack, proxy):
    task = stack.pay("refuse me", proxy=proxy.url, verify=proxy.ca, fail="settle")
    assert task.payment_status == "payment-failed", task.metadata
    rows = wait_for(lambda: sql(proxy, f"SELECT * FROM receipts WHERE a2a_task = '{task.task_id}'") or None, timeout=20)
    assert rows[0]["settlement_success"] is False, rows[0]
