"""The verifier end to end: real x402 client → `receipts proxy` → real x402 server, whose real facilitator
settles on anvil; then `receipts verify` against the chain."""
import json
import os
import subprocess
import time

import httpx
import pytest

from support import x402_wire as W
from support.oracle import assert_same_as_before
from support.proc import BIN, ROOT, ProxyProcess, wait_for
from support.verifier_views import x402_pass_and_views
from testbed.chain import FACILITATOR
from testbed.node import start_anvil
from testbed.stack import paid_stack

CONFIRMATIONS = 3


@pytest.fixture(scope="module")
def stack():
    with paid_stack(chain_id=8453) as s:
        yield s


@pytest.fixture(scope="module")
def config(tmp_path_factory, stack):
    path = tmp_path_factory.mktemp("cfg") / "receipts.yaml"
    path.write_text(json.dumps(stack.receipts_config(CONFIRMATIONS, rpc_timeout=1, deadline_grace=1)))  # YAML ⊇ JSON
    return str(path)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, config):
    with ProxyProcess(tmp_path_factory.mktemp("data"), "--config", config, "--seal-interval", "0.1") as p:
        yield p


def receipts(proxy, *args, env=None):
    out = subprocess.run([str(BIN / "receipts"), *args, "--data", str(proxy.data)], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, env={**os.environ, **(env or {})})
    return out


def verify(proxy, config, env=None):
    return receipts(proxy, "verify", "--once", "--config", config, env=env)


def receipt(proxy, tx):
    out = receipts(proxy, "show", "--json", tx)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def recorded(proxy, tx):
    return wait_for(lambda: receipts(proxy, "show", "--json", tx).returncode == 0 and receipt(proxy, tx))


def verdicts(doc):
    return [(c["proof_status"], c["resolution"], c["reason"]) for c in doc["checks"] if c["check"] == "verdict"]


def test_pending_until_confirmed_then_passed(stack, proxy, config):
    call = stack.pay(proxy=proxy.url)
    assert call.status == 200 and call.tx_hash
    doc = recorded(proxy, call.tx_hash)
    r = doc["receipt"]
    assert (r["payer"].lower(), r["pay_to"].lower(), r["asset"].lower()) == (
        stack.payer.address.lower(), stack.payee.address.lower(), stack.token.lower())
    assert int(r["amount"]) == 10000 and r["decimals"] == 6 and r["attempts"] == 2
    # what it cost is what it paid on chain, in whole tokens, not a price table's figure
    assert (r["cost"], r["cost_currency"], r["cost_source"], r["price_table"]) == ("0.01", r["symbol"], "x402", None)
    assert r["symbol"]
    assert r["signer"] == stack.payer.address.lower(), "the real client's signature recovers to the payer"

    assert verify(proxy, config).returncode == 0
    assert verdicts(receipt(proxy, call.tx_hash))[-1] == ("pending", None, "awaiting_confirmations")
    stack.anvil.mine(CONFIRMATIONS)
    assert verify(proxy, config).returncode == 0
    doc = receipt(proxy, call.tx_hash)
    assert (doc["receipt"]["proof_status"], doc["receipt"]["reason"]) == ("passed", None)
    assert verdicts(doc) == [("pending", None, "awaiting_confirmations"), ("passed", None, None)]
    settled = next(c for c in doc["checks"] if c["check"] == "settlement_tx" and c["result"] == "pass")
    assert json.loads(settled["detail"])["sender"].lower() == FACILITATOR.address.lower()
    again = verify(proxy, config)
    assert "0 changed" in again.stdout, "verifying twice decides nothing new"
    text = receipts(proxy, "show", call.tx_hash).stdout
    assert "0.01 tUSDC (atomic 10000, 6 decimals)" in text and "Status path" in text
    path = text.split("Status path")[1].split("Evidence")[0]
    assert "pending  (awaiting_confirmations)" in path and path.strip().splitlines()[-1].endswith("passed")
    assert f"confirmations {CONFIRMATIONS + 1} of {CONFIRMATIONS}" in text and FACILITATOR.address.lower() in text.lower()


def test_a_reorg_moves_a_passed_receipt_back_to_pending(stack, proxy, config):
    snapshot = stack.anvil.snapshot()
    call = stack.pay(proxy=proxy.url)
    recorded(proxy, call.tx_hash)
    stack.anvil.mine(CONFIRMATIONS)
    verify(proxy, config)
    assert receipt(proxy, call.tx_hash)["receipt"]["proof_status"] == "passed"
    stack.anvil.revert(snapshot)  # the settlement's blocks are gone
    verify(proxy, config)
    doc = receipt(proxy, call.tx_hash)
    assert doc["receipt"]["proof_status"] == "pending" and doc["receipt"]["reason"] == "tx_not_found"
    assert [v[0] for v in verdicts(doc)][-2:] == ["passed", "pending"], "the history keeps both steps"


def test_paid_then_server_error_is_risky(stack, proxy, config):
    call = stack.pay(proxy=proxy.url, headers={"X-Testbed-Fail": "after-settle"})
    assert call.status >= 500 and call.tx_hash
    recorded(proxy, call.tx_hash)
    stack.anvil.mine(CONFIRMATIONS)
    verify(proxy, config)
    r = receipt(proxy, call.tx_hash)["receipt"]
    assert (r["proof_status"], r["resolution"], r["reason"]) == ("passed", "risky", "paid_but_server_error")


def test_a_forged_signature_fails(stack, proxy, config):
    url = stack.chat_url
    body = {"model": "m", "messages": [{"role": "user", "content": "forged"}]}
    with httpx.Client(proxy=proxy.url, timeout=30) as c:
        accepted = W.unb64json(c.post(url, json=body).headers["payment-required"])["accepts"][0]
        forged = W.signed_eip3009(FACILITATOR.private_key, stack.payer.address, token=accepted["asset"],
                                  pay_to=accepted["payTo"], extra=accepted["extra"])
        forged["accepted"] = accepted
        refused = c.post(url, json=body, headers={"PAYMENT-SIGNATURE": W.b64json(forged), "X-Request-Id": "forged-1"})
    assert refused.status_code == 402, "the real facilitator refuses it too"
    wait_for(lambda: receipts(proxy, "show", "forged-1").returncode == 0)
    verify(proxy, config)
    r = receipt(proxy, "forged-1")["receipt"]
    assert (r["proof_status"], r["reason"]) == ("failed", "signature_mismatch")
    assert r["signer"] == FACILITATOR.address.lower() and r["payer"].lower() == stack.payer.address.lower()


def test_a_node_on_the_wrong_chain_never_gives_passed(stack, proxy, config):
    # a body of its own: the default one would join the logical call of the failed attempt above
    call = stack.pay(body={"model": "m", "messages": [{"role": "user", "content": "wrong chain"}]}, proxy=proxy.url)
    recorded(proxy, call.tx_hash)
    stack.anvil.mine(CONFIRMATIONS)
    with start_anvil(chain_id=1) as impostor:
        out = verify(proxy, config, env={"RECEIPTS_RPC_EIP155_8453": impostor.url})
    assert out.returncode == 1 and "wrong_chain" in out.stdout and "serves chain 1, expected 8453" in out.stdout
    assert receipt(proxy, call.tx_hash)["receipt"]["proof_status"] == "pending"
    assert verify(proxy, config).returncode == 0
    assert receipt(proxy, call.tx_hash)["receipt"]["proof_status"] == "passed"


def test_a_settlement_the_client_was_not_told_about_is_found_by_log_scan(stack, proxy, config):
    body = {"model": "m", "messages": [{"role": "user", "content": "silent settlement"}]}
    call = stack.pay(body=body, proxy=proxy.url, headers={"X-Testbed-Hide-Settlement": "1", "X-Request-Id": "silent-1"})
    assert call.status == 200 and call.tx_hash is None
    on_chain = stack.settlements()[-1]["transaction"]
    wait_for(lambda: receipts(proxy, "show", "silent-1").returncode == 0)
    stack.anvil.mine(CONFIRMATIONS)
    verify(proxy, config)
    doc = receipt(proxy, "silent-1")
    assert doc["receipt"]["payment_hash"] is None and doc["receipt"]["proof_status"] == "passed"
    settled = [json.loads(c["detail"]) for c in doc["checks"] if c["check"] == "settlement_tx"][-1]
    assert (settled["tx_hash"], settled["found_by"]) == (on_chain.lower(), "log_scan")


def test_a_refund_after_a_failed_call_is_recognised(stack, proxy, config):
    call = stack.pay(proxy=proxy.url, headers={"X-Testbed-Fail": "after-settle"})
    recorded(proxy, call.tx_hash)
    stack.anvil.mine(CONFIRMATIONS)
    verify(proxy, config)
    assert receipt(proxy, call.tx_hash)["receipt"]["resolution"] == "risky"
    from testbed.chain import token_contract
    w3 = stack.w3()
    token = token_contract(w3, stack.token)
    tx = token.functions.transfer(stack.payer.address, 10000).transact({"from": stack.payee.address})
    assert w3.eth.wait_for_transaction_receipt(tx).status == 1
    verify(proxy, config)
    r = receipt(proxy, call.tx_hash)["receipt"]
    assert (r["proof_status"], r["resolution"], r["reason"]) == ("passed", "refunded", "paid_but_server_error")


def test_a_failed_paid_attempt_then_a_passing_retry_is_retried(stack, proxy, config):
    body = {"model": "m", "messages": [{"role": "user", "content": "try again"}]}
    first = stack.pay(body=body, proxy=proxy.url, headers={"X-Testbed-Fail": "handler"})
    assert first.status == 500 and first.tx_hash is None
    second = stack.pay(body=body, proxy=proxy.url)
    assert second.status == 200
    doc = recorded(proxy, second.tx_hash)
    assert doc["receipt"]["attempts"] == 4 and [c["status"] for c in doc["calls"]] == [402, 500, 402, 200]
    stack.anvil.mine(CONFIRMATIONS)
    verify(proxy, config)
    r = receipt(proxy, second.tx_hash)["receipt"]
    assert (r["proof_status"], r["resolution"]) == ("passed", "retried")


@pytest.fixture(scope="module")
def lying_server():
    """A server that claims whatever settlement the test asks it to (tests/support/upstream.py, plain HTTP)."""
    from support.upstream import start_upstream

    server, port = start_upstream(0)
    yield f"http://127.0.0.1:{port}"
    server.shutdown()


def claimed_settlement(proxy, lying_server, tx, request_id, valid_before=2**31, value=10000, pay_to=None):
    from eth_account import Account

    from support import upstream as U

    key = Account.create()
    payment = W.signed_eip3009(key.key, key.address, token=U.ASSET, pay_to=pay_to or U.PAY_TO,
                               valid_before=valid_before, value=value)
    body = {"model": "m", "messages": [{"role": "user", "content": request_id}]}
    with httpx.Client(proxy=proxy.url, timeout=30) as c:
        assert c.post(f"{lying_server}/v1/chat/completions", json=body).status_code == 402  # the terms
        resp = c.post(f"{lying_server}/v1/chat/completions", json=body,
                      headers={"PAYMENT-SIGNATURE": W.b64json(payment), "X-Test-Tx": tx, "X-Request-Id": request_id})
    assert resp.status_code == 200
    wait_for(lambda: receipts(proxy, "show", request_id).returncode == 0)


def test_a_reverted_settlement_fails(stack, proxy, config, lying_server):
    from testbed.chain import token_contract

    w3 = stack.w3()
    bogus = token_contract(w3, stack.token).functions.transferFrom(stack.payer.address, stack.payee.address, 1)
    tx = bogus.transact({"from": stack.payee.address, "gas": 200_000})  # no allowance: it reverts
    assert w3.eth.wait_for_transaction_receipt(tx).status == 0
    claimed_settlement(proxy, lying_server, "0x" + bytes(tx).hex().removeprefix("0x"), "reverted-1")
    stack.anvil.mine(CONFIRMATIONS)
    verify(proxy, config)
    r = receipt(proxy, "reverted-1")["receipt"]
    assert (r["proof_status"], r["reason"]) == ("failed", "tx_reverted")


def test_a_settlement_whose_logs_do_not_match_fails(stack, proxy, config, lying_server):
    call = stack.pay(proxy=proxy.url)  # a real settlement, but of another payment
    claimed_settlement(proxy, lying_server, call.tx_hash, "mismatch-1")
    stack.anvil.mine(CONFIRMATIONS)
    verify(proxy, config)
    doc = receipt(proxy, "mismatch-1")
    assert (doc["receipt"]["proof_status"], doc["receipt"]["reason"]) == ("failed", "logs_mismatch")
    problems = [json.loads(c["detail"]) for c in doc["checks"] if c["check"] == "settlement_tx"][-1]["problems"]
    assert problems and "no Transfer of token" in problems[0]


def test_a_payment_unsettled_past_its_deadline_is_risky(stack, proxy, config, lying_server):
    stack.anvil.mine(1)  # deadlines are judged in chain time: the head block's timestamp
    chain_now = int(stack.anvil.rpc("eth_getBlockByNumber", "latest", False)["timestamp"], 16)
    claimed_settlement(proxy, lying_server, W.random_tx_hash(), "late-1", valid_before=chain_now - 5)
    verify(proxy, config)
    r = receipt(proxy, "late-1")["receipt"]
    assert (r["proof_status"], r["resolution"], r["reason"]) == ("pending", "risky", "pending_past_deadline")


def test_two_settlements_of_one_logical_call_are_risky(stack, proxy, config):
    body = {"model": "m", "messages": [{"role": "user", "content": "charged twice"}]}
    first = stack.pay(body=body, proxy=proxy.url, headers={"X-Testbed-Fail": "after-settle"})
    second = stack.pay(body=body, proxy=proxy.url)
    assert first.tx_hash and second.tx_hash and first.tx_hash != second.tx_hash
    recorded(proxy, second.tx_hash)
    stack.anvil.mine(CONFIRMATIONS)
    verify(proxy, config)
    r = receipt(proxy, first.tx_hash)["receipt"]
    assert r["receipt_id"] == receipt(proxy, second.tx_hash)["receipt"]["receipt_id"], "one logical call"
    assert (r["proof_status"], r["resolution"], r["reason"]) == ("passed", "risky", "double_settlement")


class FaultyNode:
    """A real forwarding proxy in front of anvil that can answer 429 or stall (faults on demand)."""

    def __init__(self, upstream):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer = self
        self.mode, self.upstream = "pass", upstream

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                if outer.mode == "429":
                    self.send_response(429)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                if outer.mode == "stall":
                    time.sleep(1.5)
                answer = httpx.post(outer.upstream, content=body, headers={"content-type": "application/json"}).content
                try:
                    self.send_response(200)
                    self.send_header("content-length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def test_rate_limits_and_timeouts_never_give_passed(stack, proxy, config):
    call = stack.pay(proxy=proxy.url)
    recorded(proxy, call.tx_hash)
    stack.anvil.mine(CONFIRMATIONS)
    node = FaultyNode(stack.rpc_url)
    env = {"RECEIPTS_RPC_EIP155_8453": node.url}
    try:
        for mode, kind in (("429", "rate_limited"), ("stall", "timeout")):
            node.mode = mode
            out = verify(proxy, config, env=env)
            assert out.returncode == 1 and kind in out.stdout, out.stdout
            assert receipt(proxy, call.tx_hash)["receipt"]["proof_status"] == "pending"
        node.mode = "pass"
        assert verify(proxy, config, env=env).returncode == 0
        assert receipt(proxy, call.tx_hash)["receipt"]["proof_status"] == "passed"
    finally:
        node.server.shutdown()


@pytest.mark.parametrize("value, pay_to, reason", [(20000, None, "overcharged"),
                                                    (10000, "0x" + "7" * 40, "unexpected_pay_to")])
def test_charged_more_than_asked_or_paid_elsewhere_is_risky(stack, proxy, config, lying_server, value, pay_to, reason):
    claimed_settlement(proxy, lying_server, W.random_tx_hash(), f"{reason}-1", value=value, pay_to=pay_to)
    verify(proxy, config)
    r = receipt(proxy, f"{reason}-1")["receipt"]
    assert (r["proof_status"], r["resolution"], r["reason"]) == ("failed", "risky", reason)


def test_zz_a_settlement_lost_in_a_reorg_that_never_reappears_fails(stack, proxy, config):
    # last in the module: it moves the chain's clock past every authorization's deadline
    snapshot = stack.anvil.snapshot()
    call = stack.pay(proxy=proxy.url)
    recorded(proxy, call.tx_hash)
    stack.anvil.mine(CONFIRMATIONS)
    verify(proxy, config)
    stack.anvil.revert(snapshot)
    verify(proxy, config)
    assert receipt(proxy, call.tx_hash)["receipt"]["proof_status"] == "pending"
    stack.anvil.increase_time(400)  # past validBefore (now + 300 s) and the grace
    stack.anvil.mine(1)
    verify(proxy, config)
    doc = receipt(proxy, call.tx_hash)
    assert [v[0] for v in verdicts(doc)][-3:] == ["passed", "pending", "failed"]
    assert (doc["receipt"]["proof_status"], doc["receipt"]["reason"]) == ("failed", "settlement_disappeared")


def test_zzz_reading_settlements_from_logs_decides_exactly_as_one_receipt_each(stack, proxy, config, monkeypatch):
    # many receipts at once are read from the token's logs (verify.BULK); force that path for all of
    # them: every verdict already decided one receipt at a time must stay as it is
    from receipts.storage import config as cfg
    from receipts.storage.journal import Journal
    from receipts.verifier import verify as V

    monkeypatch.setattr(V, "BULK", 0)
    for chunk in (V.CHUNK, 2):  # one round; then rounds of two (blocks read ahead, kept, located by nonce)
        with Journal(proxy.data, "verifier-bulk") as journal:
            summary = V.verify_once(str(proxy.data), cfg.load(config), journal, chunk=chunk)
        assert summary.seen >= 5 and summary.statuses.get("passed", 0) >= 4, summary.statuses
        assert summary.faults == [] and summary.changed == 0, "the log path agrees with every earlier verdict"


def test_zzzz_the_verifiers_read_gives_what_the_views_give(proxy):
    # every test above left receipts of another kind: retries, 402 challenges, server errors, double
    # settlements, forged signatures, reorgs; and a check history. The pass reads them a receipt per
    # query, so that every receipt is at the edge of a part
    got = x402_pass_and_views(proxy.data, part=1)
    assert len(got["views_rows"]) >= 5 and len(got["views_history"]) >= 20, (len(got["views_rows"]), len(got["views_history"]))
    assert got["parts"] >= 5
    assert got["rows"] == got["views_rows"]
    assert got["history"] == got["views_history"]


def test_zzzzz_the_views_over_the_tables_equal_the_views_before_the_fold(proxy):
    # the same receipts (retries, 402s, server errors, double settlements, reorgs, refunds, checks)
    assert_same_as_before(proxy.data)


def test_kill_9_during_a_verify_pass_decides_each_receipt_once(tmp_path, fault_report):
    """kill -9 of `receipts verify` at random moments of passes over 4,000 real settlements: a rerun
    finishes the work, every receipt ends passed with exactly one verdict, and a further pass adds nothing."""
    import random
    import signal

    from receipts.storage import config as cfg
    from testbed.bulk import record, settle_many
    from testbed.lying_node import start_lying_node
    from testbed.chain import deploy_token, fund

    data, rng = tmp_path / "data", random.Random(9)
    with start_anvil(chain_id=8453) as anvil, start_lying_node(anvil.url, "pass") as slow:
        token = deploy_token(anvil.url)
        fund(anvil.url, token, amount=10**12)
        payments = settle_many(anvil, token, 4000)
        anvil.mine(2)
        config = tmp_path / "cfg.yaml"
        control(slow, delay=0.15)  # an honest node, slow: a pass lasts seconds
        config.write_text(json.dumps({"networks": {"eip155:8453": {"rpc": slow.url, "confirmations": 1}}}))
        record(data, token, anvil.chain_id, payments, cfg.load(str(config)))
        cmd = [str(BIN / "receipts"), "verify", "--once", "--config", str(config), "--data", str(data)]
        killed, partial = 0, []
        for _ in range(8):
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
            time.sleep(rng.uniform(0.8, 2.5))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed += 1
            proc.wait(30)
            partial.append(decided(data))
            if 0 < partial[-1] < len(payments):
                break
        assert any(0 < n < len(payments) for n in partial), f"a kill landed while verdicts were being written: {partial}"
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert done.returncode == 0, done.stdout + done.stderr
        again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert "; 0 changed" in again.stdout, again.stdout
    out = subprocess.run([str(BIN / "receipts"), "sql", "--json", "--data", str(data),
                          "SELECT r.proof_status, (SELECT count(*) FROM checks c WHERE c.receipt_id = r.receipt_id "
                          "AND c.\"check\" = 'verdict') AS verdicts FROM receipts r"], capture_output=True, text=True, cwd=ROOT)
    rows = json.loads(out.stdout)
    assert len(rows) == 4000
    assert {(r["proof_status"], r["verdicts"]) for r in rows} == {("passed", 1)}, "each receipt decided exactly once"
    fault_report("kill -9 during verify", receipts=4000, kills=killed, decided_when_killed=partial, verdicts_per_receipt=1,
                 duplicated=0)


def decided(data) -> int:
    out = subprocess.run([str(BIN / "receipts"), "sql", "--csv", "--data", str(data),
                          "SELECT count(DISTINCT receipt_id) AS n FROM checks WHERE \"check\" = 'verdict'"],
                         capture_output=True, text=True, cwd=ROOT)
    return int(out.stdout.split()[1])


def control(node, **body):
    import urllib.request

    req = urllib.request.Request(node.url + "/control", json.dumps(body).encode(), {"content-type": "application/json"})
    urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10).read()
