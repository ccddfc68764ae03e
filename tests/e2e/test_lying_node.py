"""The verifier against a node that lies: a real lying JSON-RPC process (testbed/lying_node.py) in front
of the real anvil of the paid stack, and more than one endpoint. Nothing a liar says becomes `passed`;
a node fault or a jumping head changes nothing; two verifiers never both write."""
import json
import os
import subprocess
import sys
import time
import urllib.request

import httpx
import pytest

from support import x402_wire as W
from support.proc import BIN, ROOT, ProxyProcess, wait_for
from testbed.lying_node import start_lying_node
from testbed.stack import paid_stack

CONFIRMATIONS = 3
ENV = "RECEIPTS_RPC_EIP155_8453"


@pytest.fixture(scope="module")
def stack():
    with paid_stack(chain_id=8453) as s:
        yield s


def write_config(tmp_path_factory, stack, **network):
    path = tmp_path_factory.mktemp("cfg") / "receipts.yaml"
    path.write_text(json.dumps(stack.receipts_config(CONFIRMATIONS, rpc_timeout=2, **network)))  # YAML ⊇ JSON
    return str(path)


@pytest.fixture(scope="module")
def config(tmp_path_factory, stack):
    return write_config(tmp_path_factory, stack)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, config):
    with ProxyProcess(tmp_path_factory.mktemp("data"), "--config", config, "--seal-interval", "0.1") as p:
        yield p


@pytest.fixture
def liar(stack):
    with start_lying_node(stack.rpc_url) as node:
        yield node


@pytest.fixture(scope="module")
def lying_server():
    """An x402 server that claims whatever settlement the test asks it to (tests/support/upstream.py)."""
    from support.upstream import start_upstream

    server, port = start_upstream(0)
    yield f"http://127.0.0.1:{port}"
    server.shutdown()


def control(node, **body):
    req = urllib.request.Request(node.url + "/control", json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as resp:
        return json.loads(resp.read())


def receipts(proxy, *args, env=None):
    return subprocess.run([str(BIN / "receipts"), *args, "--data", str(proxy.data)], capture_output=True, text=True,
                          timeout=180, cwd=ROOT, env={**os.environ, **(env or {})})


def verify(proxy, config, rpc=None):
    return receipts(proxy, "verify", "--once", "--config", config, env={ENV: rpc} if rpc else None)


def receipt(proxy, key):
    out = receipts(proxy, "show", "--json", key)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def verdicts(doc):
    return [(c["proof_status"], c["resolution"], c["reason"]) for c in doc["checks"] if c["check"] == "verdict"]


def settlement_checks(doc):
    return [(c["result"], c["reason"], json.loads(c["detail"])) for c in doc["checks"] if c["check"] == "settlement_tx"]


def check_events(proxy) -> int:
    out = receipts(proxy, "sql", "--json", "SELECT count(*) AS n FROM events WHERE type = 'check'")
    return json.loads(out.stdout)[0]["n"]


def pay(stack, proxy, words):
    """A real payment through the proxy, settled on anvil; a body of its own, so it is a logical call of its own."""
    call = stack.pay(body={"model": "m", "messages": [{"role": "user", "content": words}]}, proxy=proxy.url)
    assert call.status == 200 and call.tx_hash
    wait_for(lambda: receipts(proxy, "show", call.tx_hash).returncode == 0)
    return call.tx_hash


def claimed(proxy, lying_server, request_id):
    """A real signed payment to a server that claims a settlement transaction that does not exist;
    returns (claimed tx hash, the payment's fields as the lying node needs them to forge its logs)."""
    from eth_account import Account

    from support import upstream as U

    key, tx = Account.create(), W.random_tx_hash()
    payment = W.signed_eip3009(key.key, key.address, token=U.ASSET, pay_to=U.PAY_TO, valid_before=2**31, value=10000)
    body = {"model": "m", "messages": [{"role": "user", "content": request_id}]}
    with httpx.Client(proxy=proxy.url, timeout=30) as c:
        assert c.post(f"{lying_server}/v1/chat/completions", json=body).status_code == 402
        resp = c.post(f"{lying_server}/v1/chat/completions", json=body,
                      headers={"PAYMENT-SIGNATURE": W.b64json(payment), "X-Test-Tx": tx, "X-Request-Id": request_id})
    assert resp.status_code == 200
    wait_for(lambda: receipts(proxy, "show", request_id).returncode == 0)
    auth = payment["payload"]["authorization"]
    return tx, {"payer": key.address, "pay_to": U.PAY_TO, "asset": U.ASSET, "amount": 10000, "nonce": auth["nonce"]}


def test_a_fabricated_receipt_never_passes(stack, proxy, config, lying_server, liar, fault_report):
    tx, fields = claimed(proxy, lying_server, "fabricated-1")
    control(liar, mode="forge-receipt", forge={tx: fields})
    stack.anvil.mine(CONFIRMATIONS + 5)
    assert verify(proxy, config, rpc=liar.url).returncode == 0
    doc = receipt(proxy, "fabricated-1")
    assert (doc["receipt"]["proof_status"], doc["receipt"]["reason"], doc["receipt"]["trust"]) == (
        "pending", "tx_not_in_block", None)
    result, reason, detail = settlement_checks(doc)[-1]
    assert detail["sender"].lower() == stack.facilitator.address.lower() and detail["block_hash"], \
        "the forgery looked right: a successful receipt, from the facilitator, in a real block with its real hash"
    assert verify(proxy, config).returncode == 0  # the honest node: it does not exist at all
    assert receipt(proxy, "fabricated-1")["receipt"]["reason"] == "tx_not_found"
    assert "passed" not in [v[0] for v in verdicts(receipt(proxy, "fabricated-1"))]
    fault_report("lying node: a forged receipt", passed=0, reason="tx_not_in_block")


def test_a_forged_block_hash_never_passes(stack, proxy, config, liar, fault_report):
    tx = pay(stack, proxy, "forged block hash")
    stack.anvil.mine(CONFIRMATIONS)
    control(liar, mode="forge-blockhash")
    assert verify(proxy, config, rpc=liar.url).returncode == 0
    doc = receipt(proxy, tx)
    assert (doc["receipt"]["proof_status"], doc["receipt"]["reason"]) == ("pending", "block_hash_mismatch")
    assert verify(proxy, config).returncode == 0
    doc = receipt(proxy, tx)
    assert (doc["receipt"]["proof_status"], doc["receipt"]["trust"]) == ("passed", "single-node")
    assert verify(proxy, config, rpc=liar.url).returncode == 0, "a changed block hash is evidence: it demotes"
    assert receipt(proxy, tx)["receipt"]["reason"] == "block_hash_mismatch"
    assert verify(proxy, config).returncode == 0
    assert receipt(proxy, tx)["receipt"]["proof_status"] == "passed"
    fault_report("lying node: a forged block hash", passed_on_the_liar=0, reason="block_hash_mismatch")


def test_jumping_heads_add_no_verdicts(stack, proxy, config, liar, fault_report):
    final = pay(stack, proxy, "jumping heads, final")
    stack.anvil.mine(CONFIRMATIONS)
    fresh = pay(stack, proxy, "jumping heads, one block old")  # its confirming blocks do not exist yet
    assert verify(proxy, config).returncode == 0
    before = (verdicts(receipt(proxy, final)), verdicts(receipt(proxy, fresh)), check_events(proxy))
    assert before[0][-1][0] == "passed" and before[1][-1] == ("pending", None, "awaiting_confirmations")
    control(liar, mode="jumping-head")
    for _ in range(4):  # 1000 blocks ahead, 2 behind, ahead, behind
        out = verify(proxy, config, rpc=liar.url)
        assert out.returncode == 0 and "; 0 changed" in out.stdout, out.stdout
    assert (verdicts(receipt(proxy, final)), verdicts(receipt(proxy, fresh)), check_events(proxy)) == before
    assert liar_calls(liar) > 0, "the passes did read the lying node"
    fault_report("lying node: jumping heads", passes=4, new_verdicts=0)


def liar_calls(node) -> int:
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(node.url + "/control", timeout=10) as r:
        return json.loads(r.read())["calls"]


def test_a_passed_receipt_stays_passed_when_its_node_goes_down(stack, proxy, config, liar):
    tx = pay(stack, proxy, "node goes down")
    stack.anvil.mine(CONFIRMATIONS)
    assert verify(proxy, config, rpc=liar.url).returncode == 0
    assert receipt(proxy, tx)["receipt"]["proof_status"] == "passed"
    events = check_events(proxy)
    liar.stop()
    out = verify(proxy, config, rpc=liar.url)
    assert out.returncode == 1 and "unreachable" in out.stdout and "left as they were (node fault)" in out.stdout, out.stdout
    assert check_events(proxy) == events, "a node fault appends nothing"
    doc = receipt(proxy, tx)
    assert (doc["receipt"]["proof_status"], doc["receipt"]["trust"]) == ("passed", "single-node")


def peak_rss_of(cmd: list[str], env: dict) -> tuple[subprocess.CompletedProcess, int]:
    """Run `cmd` under a small probe process; its result and peak RSS (KiB), the probe's only child."""
    probe = ("import resource, subprocess, sys; out = subprocess.run(sys.argv[1:]); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(out.returncode)")
    done = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**os.environ, **env})
    lines = done.stdout.strip().splitlines()
    return done, int(lines[-1])


def test_a_huge_answer_hits_the_bound_and_memory_stays_low(stack, proxy, config, liar, fault_report):
    tx = pay(stack, proxy, "huge answer")
    stack.anvil.mine(CONFIRMATIONS)
    control(liar, mode="huge")  # ~300 MB, streamed with no length announced
    events = check_events(proxy)
    started = time.monotonic()
    done, rss_kib = peak_rss_of([str(BIN / "receipts"), "verify", "--once", "--config", config, "--data", str(proxy.data)],
                                {ENV: liar.url})
    assert done.returncode == 1 and "too_large" in done.stdout and "more than 67108864 bytes" in done.stdout, done.stdout
    assert rss_kib < 512 * 1024, f"peak RSS {rss_kib / 1024:.0f} MiB"
    assert time.monotonic() - started < 60
    assert check_events(proxy) == events and receipt(proxy, tx)["receipt"]["proof_status"] == "pending"
    fault_report("lying node: a 300 MB answer", verifier_peak_rss_mb=rss_kib // 1024, cap_mb=64, passed=0)


def test_an_honest_and_a_lying_endpoint_never_pass_what_the_liar_forges(stack, proxy, config, lying_server, liar,
                                                                        tmp_path_factory):
    real = pay(stack, proxy, "quorum: a real settlement")
    forged_tx, fields = claimed(proxy, lying_server, "quorum-fabricated-1")
    stack.anvil.mine(CONFIRMATIONS + 5)
    control(liar, mode="forge-blockhash")  # it lies about the real settlement's block
    assert verify(proxy, config, rpc=f"{stack.rpc_url},{liar.url}").returncode == 0  # quorum by default: both
    doc = receipt(proxy, real)
    assert (doc["receipt"]["proof_status"], doc["receipt"]["reason"], doc["receipt"]["trust"]) == (
        "pending", "nodes_disagree", None)
    result, reason, detail = settlement_checks(doc)[-1]
    assert (detail["quorum"], detail["endpoints"], detail["trust"]) == (2, 2, None)
    assert sorted(a["reason"] or "" for a in detail["answers"]) == ["", "block_hash_mismatch"]

    # it forges a receipt for the transaction that does not exist, and tells the truth about the real one
    control(liar, mode="forge-receipt", forge={forged_tx: fields})
    both = write_config(tmp_path_factory, stack, quorum=2, rpc=[stack.rpc_url, liar.url])
    assert verify(proxy, both).returncode == 0
    doc = receipt(proxy, "quorum-fabricated-1")
    assert (doc["receipt"]["proof_status"], doc["receipt"]["reason"]) == ("pending", "nodes_disagree")
    assert "passed" not in [v[0] for v in verdicts(doc)]
    doc = receipt(proxy, real)
    assert (doc["receipt"]["proof_status"], doc["receipt"]["trust"]) == ("passed", "quorum-2")
    assert settlement_checks(doc)[-1][2]["endpoints"] == 2
    assert "Trust         quorum-2" in receipts(proxy, "show", real).stdout


def test_one_endpoint_is_single_node_trust(stack, proxy, config):
    tx = pay(stack, proxy, "single node")
    stack.anvil.mine(CONFIRMATIONS)
    assert verify(proxy, config).returncode == 0
    doc = receipt(proxy, tx)
    assert (doc["receipt"]["proof_status"], doc["receipt"]["trust"]) == ("passed", "single-node")
    assert settlement_checks(doc)[-1][2]["trust"] == "single-node"
    text = receipts(proxy, "show", tx).stdout
    assert "Trust         single-node" in text and "lies consistently" in text


def test_two_verifiers_at_once_one_refuses_and_nothing_is_written_twice(stack, proxy, config):
    pay(stack, proxy, "two verifiers")
    stack.anvil.mine(CONFIRMATIONS)
    cmd = [str(BIN / "receipts"), "verify", "--follow", "--seconds", "3", "--interval", "0.5", "--config", config,
           "--data", str(proxy.data)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(2)]
    outs = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    refused = [o for o in outs if o[0] == 1]
    ran = [(p, o) for p, o in zip(procs, outs) if o[0] == 0]
    assert len(refused) == 1 and len(ran) == 1, outs
    assert refused[0][2].strip() == f"Error: another receipts verify is running on {proxy.data} (pid {ran[0][0].pid})"
    out = receipts(proxy, "sql", "--json", """
        SELECT receipt_id, list([proof_status, resolution, reason] ORDER BY observed_at) AS path
        FROM checks WHERE "check" = 'verdict' GROUP BY receipt_id""")
    paths = json.loads(out.stdout)
    assert paths
    for row in paths:
        steps = row["path"]
        assert all(a != b for a, b in zip(steps, steps[1:])), f"{row['receipt_id']}: a verdict written twice: {steps}"


def test_zz_settlements_read_in_bulk_from_logs_are_held_to_their_block_hash_too(stack, proxy, config, liar, monkeypatch):
    # last in the module: it demotes what passed. Many settlements at once are read from the token's
    # logs (verify.BULK); force that path for all of them, through a node that forges the logs' blockHash
    from receipts.storage import config as cfg
    from receipts.storage.journal import Journal
    from receipts.verifier import verify as V

    pay(stack, proxy, "bulk, forged block hash")
    stack.anvil.mine(CONFIRMATIONS)
    monkeypatch.setattr(V, "BULK", 0)
    monkeypatch.setenv(ENV, liar.url)
    control(liar, mode="forge-blockhash")
    with Journal(proxy.data, "verifier-bulk") as journal:
        summary = V.verify_once(str(proxy.data), cfg.load(config), journal)
    assert summary.faults == [] and summary.seen >= 1 and "passed" not in summary.statuses, summary.statuses
    reasons = json.loads(receipts(proxy, "sql", "--json", "SELECT reason, count(*) AS n FROM receipts "
                                  "WHERE payment_hash IS NOT NULL AND network = 'eip155:8453' GROUP BY ALL").stdout)
    assert {r["reason"] for r in reasons} <= {"block_hash_mismatch", "tx_not_found"}, reasons
    assert any(r["reason"] == "block_hash_mismatch" for r in reasons), reasons
