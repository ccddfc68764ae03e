"""OpenGradient end to end: the real `opengradient` SDK (in .venv-og) → `receipts proxy --reverse` (with the
registry pin enforced) → the test bed's TEE gateway (og-x402's session middleware) → two anvil chains
("Base" 8453 for the upto session payment, 10740 for the registry and the proof anchors), then
`receipts verify --once`.

Tests share one test bed; each records into its own data directory. The last test moves Base's clock
past the permit deadline, so it stays last."""
import contextlib
import json
import os
import subprocess
import time
import uuid

import pytest

from support.oracle import assert_same_as_before
from support.proc import BIN, ProxyProcess, receipts_cli, wait_for
from testbed.og_chain import TEE_OPERATOR, set_tee_enabled
from testbed.og_stack import COST_PER_REQUEST, start_og_stack


@pytest.fixture(scope="module")
def og():
    with start_og_stack(session_idle=1.0) as stack:
        yield stack


class Recorder:
    def __init__(self, og, proxy: ProxyProcess, config):
        self.og, self.proxy, self.config = og, proxy, config

    @property
    def url(self):
        return f"https://127.0.0.1:{self.proxy.port}"

    def client(self, **kw):
        lines = self.og.run_client(self.url, prompt=f"prompt {uuid.uuid4()}", **kw)
        assert all(line["ok"] for line in lines), lines
        return lines

    def verify(self):
        out = receipts_cli("verify", "--once", "--config", str(self.config), data=self.proxy.data)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    def verify_with_nodes_down(self):
        """A pass whose Base and OpenGradient nodes are unreachable (a closed port)."""
        env = {**os.environ, "RECEIPTS_RPC_EIP155_8453": "http://127.0.0.1:9", "RECEIPTS_RPC_EIP155_10740": "http://127.0.0.1:9"}
        return subprocess.run([str(BIN / "receipts"), "verify", "--once", "--config", str(self.config), "--data",
                               str(self.proxy.data)], capture_output=True, text=True, timeout=120, env=env)

    def sql(self, query):
        out = receipts_cli("sql", "--json", query, data=self.proxy.data)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def receipts(self, count):
        return wait_for(lambda: (rows := self.sql("SELECT * FROM receipts WHERE tee_id IS NOT NULL "
                                                  "ORDER BY first_seen")) and len(rows) >= count and rows)

    def checks(self, receipt_id):
        rows = self.sql(f"SELECT \"check\", result, reason, detail FROM checks WHERE receipt_id = '{receipt_id}' "
                        "ORDER BY observed_at")
        return {r["check"]: r for r in rows}  # the latest of each


@contextlib.contextmanager
def recorder(og, tmp_path, **og_settings):
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({
        "networks": {"eip155:8453": {"rpc": og.base_url, "confirmations": 1},
                     "eip155:10740": {"rpc": og.og_url, "confirmations": 1}},
        "assets": [{"network": "eip155:8453", "address": og.chains.opg, "symbol": "OPG", "decimals": 18}],
        "opengradient": {"registry": og.registry, "relay": og.relay, "blob_url": og.blob_url, **og_settings}}))
    with ProxyProcess(tmp_path / "data", "--config", str(config), "--seal-interval", "0.2",
                      "--reverse", og.url) as proxy:
        yield Recorder(og, proxy, config)


def settled(og, count):
    """Wait until the gateway has settled `count` sessions (it does so after 1 s idle)."""
    return og.wait_for(lambda s: len(s["settled_sessions"]) >= count and s["settled_sessions"],
                       timeout=30, what=f"{count} settled sessions")


def test_calls_of_one_session_share_one_settlement_and_all_pass(og, tmp_path):
    before = len(og.state()["settled_sessions"])
    with recorder(og, tmp_path) as rec:
        lines = rec.client(calls=3, settlement="private")
        rows = rec.receipts(3)
        sessions = settled(og, before + 1)
        rec.verify()
        rows = rec.receipts(3)
        session = next(s for s in sessions if s["session_id"] == rows[0]["session_id"])
        checks = rec.checks(rows[0]["receipt_id"])
        show = receipts_cli("show", rows[-1]["session_id"], data=rec.proxy.data)
        calls = rec.sql("SELECT upstream_pin, upstream_tee_id FROM calls WHERE status = 200")
        events = rec.sql("SELECT count(*) AS n FROM events WHERE type = 'check'")
        down = rec.verify_with_nodes_down()
        after = (rec.sql("SELECT count(*) AS n FROM events WHERE type = 'check'"), rec.receipts(3))
    assert down.returncode == 1 and "unreachable" in down.stdout, down.stdout
    assert after[0] == events, "a node fault appends nothing: the passed receipts stay passed"
    assert {r["proof_status"] for r in after[1]} == {"passed"}
    assert len(lines) == 3 and len(rows) == 3
    assert {r["session_id"] for r in rows} == {session["session_id"]}
    assert {r["proof_status"] for r in rows} == {"passed"}
    assert {r["payment_hash"] for r in rows} == {session["settlement_tx"].lower()}
    assert {r["session_amount"] for r in rows} == {3 * COST_PER_REQUEST} == {int(session["accumulated"])}
    assert {r["amount"] for r in rows} == {None}  # a call's share is not on chain: unknown, not invented
    assert {r["payer"].lower() for r in rows} == {og.payer.address.lower()}
    assert rows[0]["session_opened_by"] == rows[0]["receipt_id"] and rows[0]["session_calls"] == 3
    assert checks["tee_request_hash"]["result"] == "pass"
    assert json.loads(checks["tee_request_hash"]["detail"])["form"] == "gateway-2026-03"
    assert checks["session_settlement"]["result"] == "pass" and checks["tee_signature"]["result"] == "pass"
    assert {(c["upstream_pin"], c["upstream_tee_id"]) for c in calls} == {("match", og.tee_id)}
    assert show.returncode == 0 and session["settlement_tx"].lower() in show.stdout.lower()
    assert_same_as_before(rec.proxy.data)  # sessions, TEE proofs, checks: the views over the tables = before


def test_an_answer_altered_after_signing_fails_alone(og, tmp_path):
    og.faults(alter_answer=1)
    with recorder(og, tmp_path) as rec:
        rec.client(calls=3, settlement="private")
        rec.receipts(3)
        og.flush()
        rec.verify()
        rows = rec.receipts(3)
    failed = [r for r in rows if r["proof_status"] == "failed"]
    assert len(failed) == 1 and failed[0]["reason"] == "output_hash_mismatch"
    assert failed[0]["receipt_id"] == rows[0]["receipt_id"]  # the first call took the fault
    assert [r["proof_status"] for r in rows[1:]] == ["passed", "passed"]


def test_foreign_keys_and_disabled_tees_fail(og, tmp_path):
    with recorder(og, tmp_path) as rec:
        og.faults(unregistered_key=1)
        rec.client(calls=1, settlement="private")
        og.faults(unregistered_tee_id=1)
        rec.client(calls=1, settlement="private")
        rec.receipts(2)
        rec.verify()
        rows = rec.receipts(2)
        assert [(r["proof_status"], r["reason"]) for r in rows] == [("failed", "bad_signature"),
                                                                     ("failed", "tee_not_registered")]
    with recorder(og, tmp_path / "disabled") as rec:
        rec.client(calls=1, settlement="private")
        rec.receipts(1)
        set_tee_enabled(og.og_url, og.registry, og.tee_id, False, owner=TEE_OPERATOR)
        try:
            rec.verify()
        finally:
            set_tee_enabled(og.og_url, og.registry, og.tee_id, True, owner=TEE_OPERATOR)
        row, = rec.receipts(1)
    assert (row["proof_status"], row["reason"]) == ("failed", "tee_disabled")


def test_individual_anchor_that_reverts_fails(og, tmp_path):
    og.faults(revert_individual=1)
    with recorder(og, tmp_path) as rec:
        rec.client(calls=2, settlement="individual")
        rows = rec.receipts(2)
        og.flush()
        rec.verify()
        rows = rec.receipts(2)
        anchors = [rec.checks(r["receipt_id"])["anchor"] for r in rows]
    assert [a["result"] for a in anchors] == ["fail", "pass"]
    assert anchors[0]["reason"] == "anchor_reverted"
    assert [r["proof_status"] for r in rows] == ["failed", "passed"]
    assert all(r["anchor_tx"] for r in rows)


def test_batch_anchor_is_pending_until_the_batch_lands(og, tmp_path):
    with recorder(og, tmp_path) as rec:
        rec.client(calls=2, settlement="batch")
        rec.receipts(2)
        og.flush(batches=False)  # the session is settled; the batch is not flushed yet
        rec.verify()
        pending = rec.receipts(2)
        detail = json.loads(rec.checks(pending[0]["receipt_id"])["anchor"]["detail"])
        og.flush()
        rec.verify()
        rows = rec.receipts(2)
        anchor = json.loads(rec.checks(rows[0]["receipt_id"])["anchor"]["detail"])
    assert [(r["proof_status"], r["reason"]) for r in pending] == [("pending", "batch_pending")] * 2
    assert detail["deadline"] > detail["chain_time"]
    assert [r["proof_status"] for r in rows] == ["passed", "passed"]
    assert anchor["root"].startswith("0x") and anchor["proof_length"] >= 1


def test_a_leaf_missing_from_its_batch_fails_after_the_deadline(og, tmp_path):
    with recorder(og, tmp_path, anchor_deadline=2) as rec:
        og.faults(omit_leaf=1)
        rec.client(calls=2, settlement="batch")
        rec.receipts(2)
        og.flush()
        time.sleep(2.5)
        og.chains.og.mine(1)  # the OpenGradient chain's clock is the one deadlines are read on
        rec.verify()
        rows = rec.receipts(2)
    assert [(r["proof_status"], r["reason"]) for r in rows] == [("failed", "leaf_not_in_any_batch"), ("passed", None)]


def test_streamed_and_whole_answers_give_the_same_proof_results(og, tmp_path):
    with recorder(og, tmp_path) as rec:
        rec.client(plan=[{"stream": False, "settlement": "private"}, {"stream": True, "settlement": "private"}])
        rows = rec.receipts(2)
        og.flush()
        rec.verify()
        rows = rec.receipts(2)
        results = [{k: (v["result"], v["reason"]) for k, v in rec.checks(r["receipt_id"]).items()
                    if k.startswith("tee_")} for r in rows]
        forms = [json.loads(rec.checks(r["receipt_id"])["tee_request_hash"]["detail"])["form"] for r in rows]
    assert results[0] == results[1] == {"tee_request_hash": ("pass", None), "tee_output_hash": ("pass", None),
                                        "tee_signature": ("pass", None)}
    assert forms[0] == forms[1]
    assert [r["proof_status"] for r in rows] == ["passed", "passed"]


def test_an_exhausted_session_ends_and_the_next_call_opens_another(og, tmp_path):
    og.configure(cost_per_request=int(og.config["cap"]) // 2)
    try:
        with recorder(og, tmp_path) as rec:
            rec.client(calls=3, settlement="private")
            rows = rec.receipts(3)
            og.flush()
            rec.verify()
            rows = rec.receipts(3)
            sessions = rec.sql("SELECT * FROM sessions ORDER BY opened_at")
    finally:
        og.configure(cost_per_request=COST_PER_REQUEST)
    first, second = sessions
    assert first["calls"] == 2 and first["ended_at"] is not None  # the 402 "Session expired or exhausted"
    assert second["ended_at"] is None and second["opened_by"] == rows[2]["receipt_id"]
    assert [r["session_id"] for r in rows] == [first["session_id"]] * 2 + [second["session_id"]]
    assert rows[2]["attempts"] == 3  # under the old session (402), then the 402 challenge, then paid again
    assert [r["proof_status"] for r in rows] == ["passed"] * 3
    cap = int(og.config["cap"])  # amounts beyond 2**53 come back as exact strings
    assert [int(r["session_amount"]) for r in rows] == [cap] * 2 + [cap // 2]


def test_a_session_never_settled_is_pending_then_risky_after_the_permit_deadline(og, tmp_path):
    og.faults(never_settle_session="next")
    with recorder(og, tmp_path) as rec:
        rec.client(calls=1, settlement="private")
        rec.receipts(1)
        og.flush(batches=False)
        rec.verify()
        first, = rec.receipts(1)
        base = og.chains.base
        head = int(base.rpc("eth_getBlockByNumber", "latest", False)["timestamp"], 16)
        base.increase_time(int(first["session_deadline"]) - head + 60)  # last test: Base's clock stays moved
        base.mine(1)
        rec.verify()
        row, = rec.receipts(1)
    assert (first["proof_status"], first["resolution"], first["reason"]) == ("pending", None, "session_not_settled")
    assert (row["proof_status"], row["resolution"], row["reason"]) == ("pending", "risky",
                                                                      "session_unsettled_past_deadline")
