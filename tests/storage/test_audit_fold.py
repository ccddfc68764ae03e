"""What `receipts audit` computes (storage/audit.sql), over the folded tables and the views.

- It reads the `calls` and `receipts` views; its sessions (`audit_sessions`) give the values of the
  `sessions` view, row for row, over a synthetic journal (testbed/synthetic.py, folded) and a tail not
  folded yet that holds the cases where the audit's old read of the journal disagreed with the views.
- Each rule of the report, on a few calls written for it: the offer a payment answers, paid but server
  error, double charges, overcharges, settled totals (the latest settlement check), never settled,
  sessions, secrets in clear, pinning clients, answers with no usage.
"""
import orjson
import pytest

from receipts.storage import audit, db, fold
from receipts.storage.journal import Journal
from receipts.storage.records import Event, uuid7
from testbed.synthetic import generate

T0 = 1_780_000_000.0
USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
SEPOLIA_USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
BASE, SEPOLIA = "eip155:8453", "eip155:84532"
PAYEE, PAYER = "0x" + "ab" * 20, "0x" + "cd" * 20

SESSION_FIELDS = [("session_id", "session_id"), ("calls", "calls"), ("p.payer", "payer"), ("p.pay_to", "pay_to"),
                  ("p.asset", "asset"), ("p.network", "network"), ("p.amount", "amount_cap"),
                  ("p.decimals", "decimals"), ("p.symbol", "symbol"), ("p.deadline", "deadline")]

# The report's sections and each one's columns, written here (not taken from audit.SECTIONS or the SQL): a
# section, a summary figure or a column the audit stops computing fails the test.
_PLACE = ["network", "asset", "symbol", "decimals"]
_VERDICT = ["proof_status", "resolution", "reason"]
REPORT_COLUMNS = {
    "summary": ["calls", "receipts", "paid_receipts", "apps", "first_seen", "last_seen", "not_verified"],
    "apps": ["app_name", "exe", "calls", "receipts", "paid_receipts", "hosts", "first_seen", "last_seen"],
    "usage": ["app_name", "model", "receipts", "tokens", "list_price", "list_currency", "paid_on_chain",
              "cost_unknown"],
    "totals": [*_PLACE, "pay_to", "paid_calls", "settlements", "verified", "reported", "authorized",
               "unknown_amounts"],
    "totals_by_app": ["app_name", *_PLACE, "paid_calls", "verified", "reported", "authorized"],
    "statuses": ["app_name", "proof_status", "resolution", "receipts"],
    "http_statuses": ["app_name", "status", "error", "calls"],
    "risky_failed": ["receipt_id", "app_name", "first_seen", "host", "path", "model", *_VERDICT, "last_status",
                     "attempts", *_PLACE, "payer", "pay_to", "amount", "txs", "verdict_tx", "session_id",
                     "verdict_at"],
    "overcharges": ["receipt_id", "app_name", "first_seen", "host", *_PLACE, "pay_to", "challenge_amount", "charged",
                    "excess", "scheme", *_VERDICT],
    "never_settled": ["key", "kind", "app_name", "first_seen", "host", *_PLACE, "payer", "pay_to", "amount",
                      "deadline", "txs", *_VERDICT, "calls"],
    "double_charges": ["receipt_id", "app_name", "first_seen", "host", *_PLACE, "payer", "pay_to", "settlements",
                       "txs", "charged", *_VERDICT],
    "secrets_in_clear": ["app_name", "host", "port", "path", "secrets", "calls", "first_seen", "last_seen",
                         "example_receipt"],
    "pinned_clients": ["client", "host", "refusals", "first_seen", "last_seen", "message"],
    "no_usage": ["app_name", "host", "model", "calls", "first_seen", "last_seen", "example_receipt"],
}
EVIDENCE_COLUMNS = ["check", "result", "reason", "detail", "observed_at"]


def assert_every_section_and_column(rep: dict) -> None:
    """Every section of REPORT_COLUMNS is in the report, with rows, and each row has exactly its columns."""
    assert list(rep) == [*REPORT_COLUMNS, "evidence", "known_apps"]
    assert list(rep["summary"]) == REPORT_COLUMNS["summary"]
    for name, columns in REPORT_COLUMNS.items():
        if name != "summary":
            assert rep[name], f"{name}: no rows to check"
            assert {tuple(row) for row in rep[name]} == {tuple(columns)}, name
    assert {tuple(row) for rows in rep["evidence"].values() for row in rows} == {tuple(EVIDENCE_COLUMNS)}
    assert rep["known_apps"] and all(isinstance(a, str) for a in rep["known_apps"])


# ---- calls written for a test ------------------------------------------------------------------
class Traffic:
    """Events of calls as the recorder and the verifier write them, one second apart."""

    def __init__(self, t0: float = T0):
        self.t, self.events = t0, []

    def _at(self) -> float:
        self.t += 1.0
        return self.t

    def call(self, lid: str | None = None, *, status: int | None = 200, app: str = "agent/1",
             host: str = "api.x402.example", scheme: str = "https", port: int = 443, payment: dict | None = None,
             settlement: dict | None = None, offers: list[dict] | None = None, usage=True, secrets=None,
             session: str | None = None, og_session: str | None = None, stream_end: dict | None = None,
             error: tuple[str, str] | None = None) -> tuple[str, str]:
        """One exchange (its request, answer, stream end or error); returns (receipt_id, logical_id)."""
        rid = uuid7()
        lid = lid or rid
        req = {"logical_id": lid, "app": app, "client": "127.0.0.1", "method": "POST", "scheme": scheme,
               "host": host, "port": port, "path": "/v1/chat/completions", "model": "m-1"}
        if secrets:
            req["secrets_in_clear"] = secrets
        if session:
            req["upto_session"] = session
        if payment is not None:
            req["payment"] = {"header": "PAYMENT-SIGNATURE", "scheme": "exact", "network": BASE, "payer": PAYER,
                              "pay_to": PAYEE, "asset": USDC, "amount": "10000", "decimals": 6, "symbol": "USDC",
                              "valid_before": int(self.t) + 600, **payment}
        self.events.append(Event("request", rid, req, ts=self._at()))
        if status is not None:
            resp = {"status": status, "model": "m-1",
                    "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8} if usage is True else usage}
            if settlement is not None:
                resp["settlement"] = {"header": "PAYMENT-RESPONSE", "success": True, "network": BASE, "payer": PAYER,
                                      **settlement}
            if offers is not None:
                resp["challenge"] = {"x402_version": 2, "accepts": offers}
            if og_session:
                resp["og"] = {"upto_session": og_session}
            self.events.append(Event("response", rid, resp, ts=self._at()))
        if stream_end is not None:
            self.events.append(Event("stream_end", rid, stream_end, ts=self._at()))
        if error is not None:
            self.events.append(Event("error", rid, {"kind": error[0], "message": error[1], "phase": "response"},
                                     ts=self._at()))
        return rid, lid

    def checks(self, lid: str, *checks: dict, verdict: tuple | None = None, tx: str | None = None,
               session_amount: str | None = None) -> None:
        """One check event of the verifier: the checks that changed, and the verdict if it did."""
        items = [{"result": "pass", "reason": None, "detail": {}, "block": 1, **c} for c in checks]
        if verdict:
            status, resolution, reason = verdict
            items.append({"check": "verdict", "result": status, "status": status, "resolution": resolution,
                          "reason": reason, "detail": {c["check"]: c.get("result", "pass") for c in checks},
                          "tx": tx, "session_amount": session_amount})
        self.events.append(Event("check", lid, {"checks": items}, ts=self._at()))

    def refusal(self, client: str, host: str) -> None:
        self.events.append(Event("error", uuid7(), {"kind": "client_tls_refused", "phase": "tls", "client": client,
                                                    "host": host, "message": "alert 48: unknown ca"}, ts=self._at()))

    def record(self, data_dir) -> None:
        """Into the journal, folded (the journal folds what it sealed when it closes)."""
        with Journal(data_dir, "proxy", seal_interval=3600) as j:
            j.write(self.events)

    def tail(self, data_dir, name: str = "late-000001.jsonl") -> None:
        """Into a segment the fold has not read: the audit sees it through the connection's tail."""
        segment = data_dir / "journal" / name
        segment.write_bytes(b"".join(orjson.dumps(e.envelope("late", i)) + b"\n" for i, e in enumerate(self.events)))


def offer(amount: int, network: str = BASE, asset: str = USDC, scheme: str = "exact") -> dict:
    return {"scheme": scheme, "network": network, "asset": asset, "amount": str(amount), "pay_to": PAYEE}


def paid_call(t: Traffic, *, price: int = 10000, pay: dict | None = None, status: int = 200,
              settlement: dict | None = None, offers: list[dict] | None = None, **kw) -> str:
    """A 402 and its paid retry; returns the logical id."""
    _, lid = t.call(status=402, offers=offers or [offer(price)], usage=None, **kw)
    t.call(lid, status=status, payment=pay or {"amount": str(price)}, settlement=settlement, **kw)
    return lid


def rows_by(rows: list[dict], key: str) -> dict:
    return {r[key]: r for r in rows}


# ---- the audit's tables and the views --------------------------------------------------------------
def test_the_audit_gives_the_views_values_over_kept_rows_and_a_tail(tmp_path):
    generate(tmp_path, 3000, seed=5, days=2)
    assert fold.fold(tmp_path) > 3000
    t = Traffic()  # not folded: the cases where the audit's own read of the journal differed from the views
    t.call(usage={})  # usage reported, with no token counts: `provider`
    t.call(app="late-app/1", host="late.example", scheme="http", port=80, secrets=["x-api-key"])
    bare = paid_call(t, settlement={"success": False, "error_reason": "insufficient_funds"})  # a settlement with no tx
    _, twice = t.call(status=402, offers=[offer(10000)], usage=None)
    t.call(twice, status=500, payment={})
    t.call(twice, status=200, payment={"payer": None, "decimals": None})  # the latest payment names no payer
    _, unpaid = t.call(status=402, offers=[offer(1000, SEPOLIA, SEPOLIA_USDC)], usage=None)  # network from the 402
    t.tail(tmp_path)

    with audit.connect(tmp_path) as con:
        audit.build(con)
        for table, view, fields, key, least in (("audit_sessions", "sessions", SESSION_FIELDS, "session_id", 20),):
            got = con.execute(f"SELECT {', '.join(a for a, _ in fields)} FROM {table} ORDER BY 1").fetchall()
            want = con.execute(f"SELECT {', '.join(b for _, b in fields)} FROM {view} ORDER BY {key}").fetchall()
            assert len(got) == len(want) > least, table
            assert got == want, (table, next((g, w) for g, w in zip(got, want) if g != w))
        kinds = con.execute("SELECT count(DISTINCT proof_status), count(DISTINCT resolution), count(DISTINCT reason), "
                            "count(DISTINCT scheme), count(*) FILTER (WHERE settlements > 1) FROM audit_receipts").fetchone()
        assert kinds[0] == 4 and kinds[1] >= 3 and kinds[2] >= 10 and kinds[3] == 2 and kinds[4] > 0, kinds
        # with one offer in the 402, the offer the payment answers is the challenge the view keeps
        offered = con.execute("""SELECT count(*), count(*) FILTER (WHERE a.challenge.amount = r.max_amount_required)
                                 FROM audit_receipts a JOIN receipts r ON r.receipt_id = a.logical_id
                                 WHERE r.max_amount_required IS NOT NULL""").fetchone()
        assert offered[0] == offered[1] > 100
        edge = {lid: con.execute("SELECT payer, network, settlements, proof_status FROM audit_receipts "
                                 "WHERE logical_id = $l", {"l": lid}).fetchone() for lid in (bare, twice, unpaid)}
    assert edge[bare] == (PAYER, BASE, 0, "pending")
    assert edge[twice] == (PAYER, BASE, 0, "pending")
    assert edge[unpaid] == (None, SEPOLIA, 0, "unpaid")

    rep = audit.report(tmp_path)
    assert_every_section_and_column(rep)
    assert rep["summary"]["calls"] == 3000 + 8
    late = rows_by(rep["secrets_in_clear"], "host")["late.example"]
    assert (late["app_name"], late["secrets"], late["port"]) == ("late-app/1", ["x-api-key"], 80)
    assert [r["host"] for r in rep["no_usage"] if r["app_name"] in ("agent/1", "late-app/1")] == [], \
        "an answer that reported usage without counts, or a 402 without usage, is not listed"
    assert sum(r["refusals"] for r in rep["pinned_clients"]) == 3

    # the evidence of the rows shown (`receipts audit --limit N`): theirs, as the whole report has it
    shown = audit.report(tmp_path, shown=2)
    named = {r["receipt_id"] for s in ("risky_failed", "overcharges", "double_charges") for r in rep[s][:2]}
    named |= {r["key"] for r in rep["never_settled"][:2] if r["kind"] == "x402"}
    assert set(shown["evidence"]) == named & set(rep["evidence"]) and len(shown["evidence"]) >= 3
    assert shown["evidence"] == {k: rep["evidence"][k] for k in named if k in rep["evidence"]}
    assert len(rep["evidence"]) > 2 * len(shown["evidence"])
    assert {k: v for k, v in shown.items() if k != "evidence"} == {k: v for k, v in rep.items() if k != "evidence"}


# ---- the rules, one at a time ------------------------------------------------------------------------
def test_the_offer_a_payment_answers_is_the_one_for_its_asset_and_network(tmp_path):
    t = Traffic()
    two = [offer(10000), offer(1000, SEPOLIA, SEPOLIA_USDC)]
    fair_base = paid_call(t, offers=two, pay={"amount": "10000"})
    fair_sepolia = paid_call(t, offers=two, pay={"amount": "1000", "network": SEPOLIA, "asset": SEPOLIA_USDC.lower()})
    over_sepolia = paid_call(t, offers=two, pay={"amount": "2000", "network": SEPOLIA, "asset": SEPOLIA_USDC})
    elsewhere = paid_call(t, offers=two, pay={"amount": "20000", "network": "eip155:1"})  # no offer: the first one
    upto = paid_call(t, offers=[offer(10000, scheme="upto")], pay={"scheme": "upto", "amount": "30000"})
    settled_more = paid_call(t, pay={"amount": "10000"}, settlement={"tx_hash": "0x" + "1" * 64, "amount": "15000"})
    t.record(tmp_path)

    over = rows_by(audit.report(tmp_path)["overcharges"], "receipt_id")
    assert fair_base not in over and fair_sepolia not in over
    assert (over[over_sepolia]["challenge_amount"], over[over_sepolia]["charged"], over[over_sepolia]["excess"]) \
        == (1000, 2000, 1000)
    assert (over[elsewhere]["challenge_amount"], over[elsewhere]["excess"]) == (10000, 10000)
    assert (over[upto]["charged"], over[upto]["scheme"]) == (30000, "upto"), "an upto cap above the price"
    assert (over[settled_more]["charged"], over[settled_more]["excess"]) == (15000, 5000)
    assert set(over) == {over_sepolia, elsewhere, upto, settled_more}


def test_double_charges_server_errors_and_the_totals(tmp_path):
    t = Traffic()
    tx = ["0x" + c * 64 for c in "ABCDEF"]
    # paid, the server failed after settling, retried and settled again: a double charge
    _, double = t.call(status=402, offers=[offer(10000)], usage=None)
    t.call(double, status=500, payment={}, settlement={"tx_hash": tx[0], "amount": "10000"})
    t.call(double, status=200, payment={}, settlement={"tx_hash": tx[1]})  # (its amount: the signed one)
    t.checks(double, {"check": "settlement_tx"}, verdict=("passed", "risky", "double_settlement"))
    # paid, the server failed after settling, no retry: money moved for nothing
    failed = paid_call(t, status=500, settlement={"tx_hash": tx[2], "amount": "10000"})
    t.checks(failed, {"check": "settlement_tx"}, verdict=("passed", "risky", "paid_but_server_error"))
    # overcharged: the verdict failed it; its settlement was confirmed later, with no new verdict
    over = paid_call(t, pay={"amount": "20000"}, settlement={"tx_hash": tx[3]})
    t.checks(over, {"check": "terms", "result": "fail", "reason": "overcharged", "detail": {"why": "signed 20000"}},
             {"check": "settlement_tx", "result": "pending", "reason": "awaiting_confirmations"},
             verdict=("failed", None, "overcharged"))
    t.checks(over, {"check": "settlement_tx"})
    # a settlement the verifier found reverted moved nothing
    reverted = paid_call(t, settlement={"tx_hash": tx[4]})
    t.checks(reverted, {"check": "settlement_tx", "result": "fail", "reason": "tx_reverted"},
             verdict=("failed", None, "tx_reverted"))
    # reported by the server, not verified yet
    paid_call(t, settlement={"tx_hash": tx[5], "amount": "10000"})  # (so neither risky nor failed: not below)
    t.record(tmp_path)

    rep = audit.report(tmp_path)
    (d,) = rep["double_charges"]
    assert (d["receipt_id"], d["settlements"], d["txs"], d["charged"]) == (double, 2, sorted(x.lower() for x in tx[:2]), 20000)
    risky = rows_by(rep["risky_failed"], "receipt_id")
    assert set(risky) == {double, failed, over, reverted}
    assert (risky[failed]["reason"], risky[failed]["last_status"], risky[failed]["amount"]) == ("paid_but_server_error", 500, 10000)
    assert (risky[over]["proof_status"], risky[over]["amount"], risky[over]["txs"]) == ("failed", 20000, [tx[3].lower()])
    evidence = rows_by(rep["evidence"][over], "check")
    assert (evidence["terms"]["result"], evidence["terms"]["reason"]) == ("fail", "overcharged")
    assert orjson.loads(evidence["terms"]["detail"]) == {"why": "signed 20000"}
    assert evidence["settlement_tx"]["result"] == "pass", "the latest observation of each check"
    (total,) = rep["totals"]
    assert (total["verified"], total["reported"], total["authorized"]) == (10000 + 10000 + 10000 + 20000, 10000, 0)
    assert (total["paid_calls"], total["settlements"], total["unknown_amounts"]) == (5, 5, 0)
    assert rep["never_settled"] == [] and [r["receipt_id"] for r in rep["overcharges"]] == [over]
    assert rep["summary"]["not_verified"] == 1


def test_never_settled_and_sessions(tmp_path):
    t = Traffic()
    waiting = paid_call(t, price=2500, pay={"amount": "2500", "valid_before": 1234})  # paid, answered, no settlement known
    refused = paid_call(t, status=402)  # the paid attempt answered 402: refused, nothing to settle
    lost = paid_call(t, settlement={"tx_hash": "0x" + "9" * 64})
    t.checks(lost, {"check": "settlement_tx", "result": "fail", "reason": "tx_not_found"},
             verdict=("failed", None, "tx_not_found"))
    found = paid_call(t, price=2500)  # the verifier found the settlement on chain by itself
    t.checks(found, {"check": "settlement_tx"}, verdict=("passed", None, None), tx="0x" + "8" * 64)
    # an OpenGradient session: its opener pays a cap, three calls under it (one failed), never settled
    sid = "sess-1"
    cap = {"scheme": "upto", "amount": "100000000000000000", "asset": "0x" + "fb" * 20, "decimals": 18,
           "symbol": "OPG", "deadline": int(T0) + 3600}
    _, opener = t.call(status=402, offers=[offer(10 ** 17, scheme="upto")], usage=None, app="og-bot/1")
    t.call(opener, payment=cap, og_session=sid, app="og-bot/1")
    for status in (200, 200, 500):
        t.call(session=sid, status=status, app="og-bot/1")
    # a second session, settled and verified
    _, opener2 = t.call(status=402, offers=[offer(10 ** 17, scheme="upto")], usage=None, app="og-bot/1")
    t.call(opener2, payment=cap, og_session="sess-2", app="og-bot/1")
    t.checks(opener2, {"check": "session_settlement"}, verdict=("passed", None, None), tx="0x" + "7" * 64,
             session_amount="3000")
    t.record(tmp_path)

    rep = audit.report(tmp_path)
    never = rows_by(rep["never_settled"], "key")
    assert set(never) == {waiting, lost, sid}, "refused and found are settled or had nothing to settle"
    assert (never[waiting]["amount"], never[waiting]["reason"], never[waiting]["deadline"]) == (2500, "not_verified", 1234)
    assert never[lost]["reason"] == "tx_not_found" and never[lost]["txs"] == ["0x" + "9" * 64]
    s = never[sid]
    assert (s["kind"], s["amount"], s["symbol"], s["calls"], s["reason"], s["app_name"]) \
        == ("session", 10 ** 17, "OPG", 3, "not_verified", "og-bot/1"), "calls: the exchanges answered below 400"
    totals = {t["symbol"]: t for t in rep["totals"]}
    assert (totals["OPG"]["verified"], totals["OPG"]["authorized"], totals["OPG"]["paid_calls"]) == (3000, 10 ** 17, 2)
    assert (totals["USDC"]["verified"], totals["USDC"]["reported"], totals["USDC"]["authorized"]) == (2500, 0, 2500)
    assert refused not in {r["key"] for r in rep["never_settled"]}


def test_secrets_pinning_clients_and_answers_without_usage(tmp_path):
    t = Traffic()
    t.call(scheme="http", host="llm.lan", port=8000, secrets=["authorization"], app="curl/8")
    t.call(scheme="http", host="llm.lan", port=8000, secrets=["authorization", "x-api-key"], app="curl/8")
    t.call(scheme="http", host="llm.lan", port=8000, app="curl/8")  # nothing secret sent
    t.refusal("10.0.0.7", "pinned.example")
    t.refusal("10.0.0.7", "pinned.example")
    silent, _ = t.call(usage=None, host="free.example", app="bot/2")
    t.call(usage=None, status=500, host="free.example", app="bot/2")  # not answered: not listed
    t.call(usage=None, stream_end={"done": True, "usage": {"total_tokens": 4}}, host="free.example", app="bot/2")
    t.call(usage={}, host="free.example", app="bot/2")  # reported, without counts (as the calls view says)
    t.call(status=None, error=("upstream_timeout", "timed out"), host="free.example", app="bot/2")
    t.record(tmp_path)

    rep = audit.report(tmp_path)
    assert sorted((r["secrets"], r["calls"], r["port"]) for r in rep["secrets_in_clear"]) \
        == [(["authorization"], 1, 8000), (["authorization", "x-api-key"], 1, 8000)]
    (pinned,) = rep["pinned_clients"]
    assert (pinned["client"], pinned["host"], pinned["refusals"], pinned["message"]) \
        == ("10.0.0.7", "pinned.example", 2, "alert 48: unknown ca")
    (none,) = rep["no_usage"]
    assert (none["host"], none["calls"], none["example_receipt"]) == ("free.example", 1, silent)
    http = {(r["app_name"], r["status"], r["error"]): r["calls"] for r in rep["http_statuses"]}
    assert http[("bot/2", None, "upstream_timeout")] == 1 and http[("bot/2", 200, None)] == 3

    only = audit.report(tmp_path, app="bot/2")
    assert only["secrets_in_clear"] == [] and len(only["pinned_clients"]) == 1, "refusals name no app"
    assert only["summary"]["calls"] == 5 and only["known_apps"] == ["bot/2", "curl/8"]
    import datetime
    later = audit.report(tmp_path, since=datetime.datetime(2100, 1, 1))
    assert later["pinned_clients"] == [] and later["summary"]["calls"] == 0


def test_the_audit_opens_no_journal_file(tmp_path):
    t = Traffic()
    t.call()
    t.record(tmp_path)
    with audit.connect(tmp_path) as con, pytest.raises(Exception, match="(?i)permission|not allowed|disabled"):
        con.execute("SELECT * FROM read_text($p)", {"p": str(db.journal_dir(tmp_path) / "_anchor.jsonl")}).fetchall()
    assert not any(word in text for text in audit.statements().values()
                   for word in ("read_json", "read_csv", "read_parquet", "read_text", "data->>"))


def test_kept_receipts_are_read_through_a_view_with_the_same_report(tmp_path, monkeypatch):
    """Over kept rows (no tail), `audit_receipts` is a view of them, not a copy; the report is the same
    as through the copy, which is what the audit makes when `receipts` computes its rows."""
    generate(tmp_path, 2000, seed=9, days=2)
    fold.fold(tmp_path)
    with audit.connect(tmp_path) as con:
        audit.build(con)
        kinds = dict(con.execute("SELECT table_name, table_type FROM information_schema.tables "
                                 "WHERE table_name LIKE 'audit_%'").fetchall())
    assert kinds["audit_receipts"] == "VIEW" and kinds["audit_calls"] == "LOCAL TEMPORARY", kinds
    through_view = audit.report(tmp_path)
    monkeypatch.setattr(audit, "_reads_kept_files", lambda con: False)
    with audit.connect(tmp_path) as con:
        audit.build(con)
        kind = con.execute("SELECT table_type FROM information_schema.tables "
                           "WHERE table_name = 'audit_receipts'").fetchone()[0]
    assert kind == "LOCAL TEMPORARY"
    through_copy = audit.report(tmp_path)
    assert through_view["summary"]["receipts"] > 1000 and len(through_view["risky_failed"]) > 10
    assert through_view == through_copy
