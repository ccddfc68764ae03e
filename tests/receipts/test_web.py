"""`receipts serve` without a browser: the pure rendering (escaping, links, charts), the filters, and the
real server over a synthetic journal (every page of every kind of receipt, the JSON equal to
`receipts show --json`, nothing written into the data directory)."""
import hashlib
import json
from datetime import datetime

import httpx
import pytest

from receipts.web import charts, pages
from receipts.web.server import BadRequest, parse_filters
from storage import config as cfg
from support.proc import receipts_cli
from support.serve import ServeProcess

EVIL = '<script>alert(1)</script>"\'&\u202e\x1b[31m'


def test_h_escapes_markup_quotes_and_makes_control_characters_visible():
    out = pages.h(EVIL)
    assert "<" not in out and ">" not in out and '"' not in out and "'" not in out
    assert "&lt;script&gt;" in out and "\\u202e" in out and "\\x1b" in out
    assert pages.h(None) == "—"


def test_a_crafted_row_renders_as_text_in_every_cell():
    row = {"receipt_id": EVIL, "first_seen": datetime(2026, 1, 1), "app_name": EVIL, "host": EVIL, "path": EVIL,
           "model": EVIL, "status": 200, "proof_status": EVIL, "resolution": EVIL, "reason": EVIL, "amount": 5,
           "decimals": 0, "symbol": EVIL, "asset": EVIL, "payer": EVIL, "pay_to": EVIL, "payment_hash": EVIL}
    html = pages.cells_html(pages.list_row(row), row["receipt_id"])
    assert "<script" not in html and "<img" not in html
    assert html.count("<a ") == 1 and 'href="/receipt/%3Cscript%3E' in html, "the link is percent-encoded"
    svg = charts.spend_by([{"key": EVIL, "asset": EVIL, "network": EVIL, "symbol": EVIL, "decimals": 6,
                            "spend": 10**6, "calls": 1}])
    assert "<script" not in svg and svg.startswith("<svg")


def test_explorer_links_only_for_real_hashes_and_http_templates():
    tx = "0x" + "ab" * 32
    assert pages.explorer_link("https://basescan.org/tx/{tx}", tx) == f"https://basescan.org/tx/{tx}"
    assert pages.explorer_link("https://basescan.org/tx/{tx}", "payment-123") is None
    assert pages.explorer_link("javascript:alert(1)//{tx}", tx) is None
    with pytest.raises(cfg.ConfigError, match="explorer must be an http"):
        cfg._networks({"eip155:8453": {"explorer": "javascript:alert(1)"}})
    assert cfg._networks({"eip155:8453": {"explorer": "https://basescan.org/tx/{tx}"}})[0].explorer


def test_filters_are_parsed_or_refused_in_one_sentence():
    f = parse_filters({"app": [" a "], "since": ["2h"], "until": ["2026-11-24"], "limit": ["9999"]})
    assert f["app"] == "a" and isinstance(f["since"], datetime) and f["until"] == datetime(2026, 11, 24)
    assert f["limit"] == 500 and f["since_text"] == "2h"
    with pytest.raises(BadRequest, match="since takes a duration"):
        parse_filters({"since": ["yesterday-ish"]})


def test_the_timeline_orders_attempts_checks_and_verdicts():
    t = lambda s: datetime(2026, 1, 1, 0, 0, s)  # noqa: E731
    details = {"calls": [{"receipt_id": "a", "started_at": t(1), "ended_at": t(2), "method": "POST", "status": 402},
                         {"receipt_id": "b", "started_at": t(3), "ended_at": t(4), "method": "POST", "status": 200, "paid": True}],
               "checks": [{"check": "verdict", "proof_status": "passed", "observed_at": t(9), "detail": "{}"},
                          {"check": "settlement_tx", "result": "pass", "observed_at": t(9), "detail": '{"block": 7}'},
                          {"check": "verdict", "proof_status": "pending", "reason": "awaiting_confirmations",
                           "observed_at": t(5), "detail": None}]}
    steps = pages.timeline({}, details)
    assert [s["kind"] for s in steps] == ["request", "answer", "request", "answer", "verdict", "verdict"]
    assert steps[-2]["title"] == "status → pending (awaiting_confirmations)" and steps[-1]["checks"][0]["check"] == "settlement_tx"


def _fingerprint(root):
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from testbed.synthetic import generate

    root = tmp_path_factory.mktemp("web")
    generate(root / "data", 1500, seed=11, days=2.0)
    before = _fingerprint(root / "data")
    with ServeProcess(root / "data", root / "cache.duckdb", "--refresh", "0.2") as serve:
        yield serve, root / "data", before


def test_a_receipt_page_of_every_kind_renders_and_its_json_is_receipts_show_json(served):
    serve, data, _ = served
    kinds = json.loads(receipts_cli("sql", "--json", """
        SELECT arg_min(receipt_id, first_seen) AS receipt_id, proof_status, resolution, reason, scheme, settlement_type,
               session_id IS NOT NULL AS session, attempts > 1 AS retried
        FROM receipts GROUP BY ALL""", data=data).stdout)
    assert {"passed", "failed", "pending", "unpaid"} <= {k["proof_status"] for k in kinds}
    assert {"risky", "retried"} <= {k["resolution"] for k in kinds} and len(kinds) > 10
    with httpx.Client(base_url=serve.url) as http:
        for k in kinds:
            page = http.get("/receipt/" + k["receipt_id"])
            assert page.status_code == 200 and k["receipt_id"] in page.text, k
            assert ('id="tee"' in page.text) == bool(k["settlement_type"]), k
    for k in kinds[::3]:
        api = serve.get("/api/receipt/" + k["receipt_id"]).json()
        cli = json.loads(receipts_cli("show", "--json", k["receipt_id"], data=data).stdout)
        for doc in (api, cli):
            doc["receipt"]["ids"] = sorted(doc["receipt"]["ids"])
            for name in ("calls", "challenges", "payments", "settlements", "checks"):
                doc[name] = sorted(doc[name], key=lambda x: json.dumps(x, sort_keys=True))
        assert api == cli


def test_the_list_api_pages_and_charts(served):
    serve, data, _ = served
    total = json.loads(receipts_cli("sql", "--json", "SELECT count(*) AS n FROM receipts", data=data).stdout)[0]["n"]
    first = serve.get("/api/receipts?limit=100").json()
    assert first["total"] == total and len(first["rows"]) == 100
    assert serve.get(f"/api/receipts?limit=100&v={first['version']}").json() == {"version": first["version"], "changed": False}
    html = serve.get("/?limit=100").text
    assert html.count("<tr data-id=") == 100 and 'id="older"' in html
    older = html.split('id="older" href="')[1].split('"')[0].replace("&amp;", "&")
    second = serve.get(older).text
    assert second.count("<tr data-id=") == 100
    assert not set(first_ids := [r["id"] for r in first["rows"]]) & set(
        x.split('"')[0] for x in second.split('<tr data-id="')[1:]), "the next page starts after the first"
    risky = serve.get("/api/receipts?status=risky&limit=500").json()
    want = json.loads(receipts_cli("sql", "--json", "SELECT count(*) AS n FROM receipts WHERE resolution = 'risky' "
                                   "OR proof_status = 'risky'", data=data).stdout)[0]["n"]
    assert risky["total"] == want > 0 and all("risky" in r["cells"][5]["t"] for r in risky["rows"])
    for name in ("spend-app", "spend-payee-time", "spend-payee", "status"):
        r = serve.get(f"/chart/{name}.svg")
        assert r.status_code == 200 and r.headers["content-type"] == "image/svg+xml" and r.text.startswith("<svg")
        assert "script-src" not in r.headers["content-security-policy"] and "<rect" in r.text
    assert "USDC" in serve.get("/chart/spend-payee.svg").text and "OPG" in serve.get("/chart/spend-app.svg").text
    assert first_ids


def test_an_id_that_names_one_receipt_goes_to_it_and_unknown_ones_say_so(served):
    serve, data, _ = served
    r = json.loads(receipts_cli("sql", "--json", "SELECT receipt_id, payment_hash FROM receipts WHERE payment_hash "
                                "IS NOT NULL AND settlement_count = 1 LIMIT 1", data=data).stdout)[0]
    found = serve.get("/?q=" + r["payment_hash"].upper(), follow_redirects=False)
    assert found.status_code == 302 and found.headers["location"] == "/receipt/" + r["receipt_id"]
    assert serve.get("/receipt/" + r["payment_hash"], follow_redirects=False).headers["location"] == "/receipt/" + r["receipt_id"]
    assert serve.get("/receipt/nothing-like-this").status_code == 404
    assert serve.get("/?since=whenever").status_code == 400
    assert serve.get("/nope").status_code == 404
    assert serve.get("/static/../../etc/passwd").status_code == 404


def test_serving_writes_nothing_into_the_data_directory(served):
    serve, data, before = served
    for path in ("/", "/?status=failed", "/api/receipts", "/chart/status.svg", "/api/status"):
        assert serve.get(path).status_code == 200
    assert serve.status()["last_refresh"]["new_events"] == 0
    assert _fingerprint(data) == before


def test_a_bad_host_or_port_is_one_line():
    out = receipts_cli("serve", "--host", "example.com", "--port", "0", "--data", ".")
    assert out.returncode == 1 and out.stderr.strip().startswith("Error: --host must be an IP address")
