"""The audit's narrow read of the journal (storage/audit.sql) folds events exactly as the views do.

Over a synthetic journal with every kind of call and verdict (testbed/synthetic.py), plus a sealed JSON
segment holding both new events and copies of compacted ones (a compaction's grace period)."""
import orjson

from storage import audit, db
from storage.journal import Journal
from storage.records import Event, uuid7
from testbed.synthetic import generate

CALL_FIELDS = [("receipt_id", "receipt_id"), ("logical_id", "logical_id"), ("started_at", "started_at"),
               ("app_name", "app_name"), ("host", "host"), ("path", "path"), ("model", "model"),
               ("status", "status"), ("usage_source", "usage_source"), ("error", "error"),
               ("secrets_in_clear", "secrets_in_clear"), ("paid", "paid"), ("session_id", "upto_session")]
RECEIPT_FIELDS = [("logical_id", "receipt_id"), ("first_seen", "first_seen"), ("attempts", "attempts"),
                  ("status", "status"), ("app_name", "app_name"), ("host", "host"), ("session_id", "session_id"),
                  ("proof_status", "proof_status"), ("resolution", "resolution"), ("reason", "reason"),
                  ("settlements", "settlement_count"), ("payer", "payer"), ("pay_to", "pay_to"), ("asset", "asset"),
                  ("decimals", "decimals"), ("symbol", "symbol"), ("verdict_tx", "CASE WHEN session_id IS NOT NULL THEN payment_hash END"),
                  ("session_amount", "session_amount")]


USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"


def _journal(tmp_path):
    generate(tmp_path, 3000, seed=5, days=2)
    with db.connect(tmp_path, snapshot=False) as con:
        copies = con.execute("SELECT id, type, ts, receipt_id, writer, seq, data FROM read_parquet($g) "
                             "WHERE type IN ('request', 'response', 'check') ORDER BY id LIMIT 300",
                             {"g": str(tmp_path / "journal" / "parquet" / "*" / "*.parquet")}).fetchall()
    segment = tmp_path / "journal" / "proxy-000001.jsonl"  # a sealed slot still holding compacted events
    segment.write_bytes(b"".join(orjson.dumps({"id": i, "type": t, "ts": ts, "receipt_id": r, "writer": w, "seq": s,
                                               "data": orjson.loads(d)}) + b"\n"
                                 for i, t, ts, r, w, s, d in copies))
    rid = uuid7()
    with Journal(tmp_path, "proxy", seal_interval=3600) as j:  # and a new call, only in JSON
        j.write([Event("request", rid, {"logical_id": rid, "app": "late-app/1", "host": "late.example", "scheme": "http",
                                        "path": "/v1/chat/completions", "secrets_in_clear": ["x-api-key"]}),
                 Event("response", rid, {"status": 200, "usage": None})])
    return rid


def test_the_audit_folds_calls_and_receipts_as_the_views_do(tmp_path):
    late = _journal(tmp_path)
    with db.connect(tmp_path) as con:
        audit._read(con, tmp_path)
        for table, view, fields, key in (("audit_calls", "calls", CALL_FIELDS, "receipt_id"),
                                         ("audit_receipts", "receipts", RECEIPT_FIELDS, "receipt_id")):
            got = con.execute(f"SELECT {', '.join(a for a, _ in fields)} FROM {table} ORDER BY 1").fetchall()
            want = con.execute(f"SELECT {', '.join(b for _, b in fields)} FROM {view} ORDER BY {key}").fetchall()
            assert len(got) == len(want) > 2000
            assert got == want, next((g, w) for g, w in zip(got, want) if g != w)
        kinds = con.execute("SELECT count(DISTINCT proof_status), count(DISTINCT resolution), count(DISTINCT reason) "
                            "FROM audit_receipts").fetchone()
        assert kinds[0] == 4 and kinds[1] >= 3 and kinds[2] >= 10, kinds
    rep = audit.report(tmp_path)
    assert rep["summary"]["calls"] == 3001
    late_row = next(r for r in rep["secrets_in_clear"] if r["host"] == "late.example")
    assert (late_row["app_name"], late_row["secrets"], late_row["example_receipt"]) == ("late-app/1", ["x-api-key"], late)
    assert sum(r["refusals"] for r in rep["pinned_clients"]) == 3, "copies of compacted events count once"


def test_each_problem_of_the_synthetic_journal_is_reported(tmp_path):
    generate(tmp_path, 20_000, seed=2, days=3)
    rep = audit.report(tmp_path)
    assert rep["summary"]["calls"] == 20_000
    for section in audit.PROBLEMS:
        assert rep[section], f"the synthetic journal plants {section}"
    reasons = {r["reason"] for r in rep["risky_failed"]}
    assert {"overcharged", "unexpected_pay_to", "double_settlement", "paid_but_server_error", "signature_mismatch",
            "tx_reverted", "pending_past_deadline", "session_unsettled_past_deadline"} <= reasons, reasons
    assert all(r["settlements"] == 2 for r in rep["double_charges"])
    assert all(int(r["charged"]) == 2 * int(r["challenge_amount"]) for r in rep["overcharges"])
    with db.connect(tmp_path) as con:  # totals: each settlement whose latest settlement check passed, once
        verified = con.execute("""
            WITH last AS (SELECT receipt_id, arg_max(result, observed_at) AS result FROM checks
                          WHERE "check" = 'settlement_tx' GROUP BY receipt_id)
            SELECT sum(coalesce(s.amount, p.amount)) FROM settlements s JOIN payments p USING (receipt_id)
            JOIN last ON last.receipt_id = s.logical_id
            WHERE last.result = 'pass' AND p.asset = $asset""", {"asset": USDC}).fetchone()[0]
    got = sum(t["verified"] for t in rep["totals"] if t["asset"] == USDC)
    assert got == verified > 0 and isinstance(got, int)
