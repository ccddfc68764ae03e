"""`receipts serve` without a browser: the pure rendering (escaping, links, charts), the filters, the
snapshots it reads (swapped while requests use the old one), and the real server over a synthetic journal
(every page of every kind of receipt, its JSON equal to the plain views' rows, new calls shown, nothing
written into the data directory)."""
import hashlib
import json
import threading
import time
from datetime import datetime

import httpx
import pytest

from receipts import render
from receipts.web import charts, pages
from receipts.web.server import BadRequest, parse_filters
from receipts.web.snapshot import Snapshots
from receipts.storage import config as cfg
from receipts.storage import db, fold, queries
from receipts.storage.journal import Journal
from receipts.storage.records import Event
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
    t = lambda s: datetime(2026, 1, 1, 0, 0, s)
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


def synthetic(path, calls, seed, days, folded=True):
    """A synthetic journal (testbed/synthetic.py), folded as a recorder's writers would have folded it."""
    from testbed.synthetic import generate

    generate(path, calls, seed=seed, days=days)
    if folded:
        fold.fold(path)
    return path


def synthetic_events(path, calls, seed):
    """The events of a synthetic journal of the last minutes, oldest first, to append through a writer."""
    import duckdb

    synthetic(path, calls, seed, days=0.01, folded=False)  # (written as event Parquet files, not folded)
    rows = duckdb.connect().execute(f"SELECT id, type, ts, receipt_id, data FROM read_parquet("
                                    f"'{path}/journal/parquet/*/*.parquet') ORDER BY ts, id").fetchall()
    return [Event(t, rid, json.loads(d), ts, i) for i, t, ts, rid, d in rows]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    synthetic(root / "data", 1500, seed=11, days=2.0)
    before = _fingerprint(root / "data")
    with ServeProcess(root / "data", "--refresh", "0.2") as serve:
        yield serve, root / "data", before


def canonical(doc):
    """A receipt document with its lists in one order (their order is not defined)."""
    doc = json.loads(json.dumps(doc))
    doc["receipt"]["ids"] = sorted(doc["receipt"]["ids"])
    for name in ("calls", "challenges", "payments", "settlements", "checks"):
        doc[name] = sorted(doc[name], key=lambda x: json.dumps(x, sort_keys=True))
    return doc


# what a receipt's document holds besides its row, written here (not taken from queries.DETAILS, which the
# server uses): a section or a column the server's queries dropped makes the comparison fail
VIEW_DETAILS = {
    "calls": "SELECT * FROM calls WHERE logical_id = $id",
    "challenges": "SELECT * FROM challenges WHERE logical_id = $id",
    "payments": "SELECT * FROM payments WHERE logical_id = $id",
    "settlements": "SELECT * FROM settlements WHERE logical_id = $id",
    "checks": "SELECT * FROM checks WHERE receipt_id = $id",
}


def from_the_views(con, receipt_id):
    """A receipt's document made from plain queries of the views (the whole `receipts` view computed)."""
    [row] = queries.dicts(con, "SELECT * FROM receipts WHERE receipt_id = $id", {"id": receipt_id})
    details = {name: queries.dicts(con, sql, {"id": receipt_id}) for name, sql in VIEW_DETAILS.items()}
    return canonical(json.loads(render.to_json(render.receipt_document(row, details))))


def test_a_receipt_page_of_every_kind_renders_and_its_json_is_the_views_rows(served):
    serve, data, _ = served
    kinds = json.loads(receipts_cli("sql", "--json", """
        SELECT arg_min(receipt_id, first_seen) AS receipt_id, proof_status, resolution, reason, scheme, settlement_type,
               session_id IS NOT NULL AS session, attempts > 1 AS retried
        FROM receipts GROUP BY ALL""", data=data).stdout)
    assert {"passed", "failed", "pending", "unpaid"} <= {k["proof_status"] for k in kinds}
    assert {"risky", "retried"} <= {k["resolution"] for k in kinds} and len(kinds) > 10
    assert any(k["session"] for k in kinds) and any(k["retried"] for k in kinds)
    with httpx.Client(base_url=serve.url) as http:
        for k in kinds:
            page = http.get("/receipt/" + k["receipt_id"])
            assert page.status_code == 200 and k["receipt_id"] in page.text, k
            assert ('id="tee"' in page.text) == bool(k["settlement_type"]), k
    with db.connect(data, journal=False) as con:
        for k in kinds:
            api = canonical(serve.get("/api/receipt/" + k["receipt_id"]).json())
            assert api == from_the_views(con, k["receipt_id"]), k
    for k in kinds[::4]:  # `receipts show --json` computes it the same way
        cli = json.loads(receipts_cli("show", "--json", k["receipt_id"], data=data).stdout)
        assert canonical(cli) == canonical(serve.get("/api/receipt/" + k["receipt_id"]).json())


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
    session = json.loads(receipts_cli("sql", "--json", "SELECT session_id, list(receipt_id ORDER BY receipt_id) AS ids "
                                      "FROM receipts WHERE session_id IS NOT NULL GROUP BY 1 LIMIT 1", data=data).stdout)[0]
    listed = serve.get("/api/receipts?q=" + session["session_id"]).json()
    assert sorted(x["id"] for x in listed["rows"]) == session["ids"] and len(session["ids"]) > 1
    assert serve.get("/receipt/" + session["session_id"], follow_redirects=False).headers["location"] == \
        "/?q=" + session["session_id"]
    assert serve.get("/receipt/nothing-like-this").status_code == 404
    assert serve.get("/?since=whenever").status_code == 400
    assert serve.get("/nope").status_code == 404
    assert serve.get("/static/../../etc/passwd").status_code == 404


def test_serving_writes_nothing_into_the_data_directory(served):
    serve, data, before = served
    for path in ("/", "/?status=failed", "/api/receipts", "/chart/status.svg", "/api/status"):
        assert serve.get(path).status_code == 200
    status = serve.status()
    time.sleep(1.0)  # five checks: nothing changed, so no new snapshot
    again = serve.status()
    assert again["version"] == status["version"] and again["snapshot"] == status["snapshot"]
    assert again["snapshot"]["tail_segments"] == 0 and again["snapshot"]["generation"] == fold.Manifest.load(data).generation
    assert _fingerprint(data) == before


def test_new_calls_are_shown_once_sealed_and_again_once_folded(tmp_path):
    """A writer appends calls (sealed: the tail) and folds them (a new generation): each time the server
    reads a new snapshot, and the pages show them; the old snapshot's requests were not disturbed."""
    data = synthetic(tmp_path / "data", 300, seed=4, days=0.5)
    events = synthetic_events(tmp_path / "src", 200, seed=9)
    with ServeProcess(data, "--refresh", "0.2") as serve:
        first = serve.get("/api/receipts?limit=5").json()
        journal = Journal(data, "proxy", seal_interval=0.05, compact_after=10**6)  # (its fold: every 2 s)
        journal.start()
        try:
            journal.write(events)
            deadline = time.monotonic() + 30
            while serve.status()["receipts"] == first["total"]:
                assert time.monotonic() < deadline, serve.output()
                time.sleep(0.1)
            shown = serve.status()
            total = json.loads(receipts_cli("sql", "--json", "SELECT count(*) AS n FROM receipts", data=data).stdout)[0]["n"]
            assert shown["receipts"] == total > first["total"] and shown["version"] > first["version"]
            live = serve.get(f"/api/receipts?limit=5&v={first['version']}").json()
            assert live["changed"] and live["total"] == total and live["version"] == shown["version"]
        finally:
            journal.close()  # (folds what it sealed)
        wait = time.monotonic() + 30
        while serve.status()["snapshot"]["tail_segments"] or \
                serve.status()["snapshot"]["generation"] != fold.Manifest.load(data).generation:
            assert time.monotonic() < wait, serve.status()
            time.sleep(0.1)
        assert serve.status()["receipts"] == total
        tx = json.loads(receipts_cli("sql", "--json", "SELECT payment_hash, receipt_id FROM receipts WHERE payment_hash "
                                     "IS NOT NULL ORDER BY first_seen DESC LIMIT 1", data=data).stdout)[0]
        found = serve.get("/?q=" + tx["payment_hash"], follow_redirects=False)
        assert found.status_code == 302 and found.headers["location"] == "/receipt/" + tx["receipt_id"]


def test_a_snapshot_stays_open_for_the_request_that_uses_it(tmp_path):
    data = synthetic(tmp_path / "data", 200, seed=2, days=0.5)
    snaps = Snapshots(data, interval=0.05)
    assert snaps.refresh() and not snaps.refresh(), "a second check finds nothing new"
    with snaps.reading() as old:
        n = old.con.execute("SELECT count(*) FROM receipts").fetchone()[0]
        with Journal(data, "verifier", seal_interval=0.02) as j:  # (sealed, then folded at close)
            j.write([Event("check", "no-such-receipt", {"checks": []})])
        assert snaps.refresh() and snaps.version == old.version + 1
        with snaps.reading() as new:
            assert new.version == old.version + 1
        assert old.con.execute("SELECT count(*) FROM receipts").fetchone()[0] == n, "the old one still answers"
        assert queries.one_receipt(old.con, old.con.execute("SELECT min(receipt_id) FROM receipts").fetchone()[0])
    import duckdb
    with pytest.raises(duckdb.Error):
        old.con.execute("SELECT 1")  # closed once its request ended
    errors = []

    def reader():
        try:
            for _ in range(40):
                with snaps.reading() as r:
                    assert r.con.execute("SELECT count(*) FROM receipts").fetchone()[0] == n
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(5):
        snaps.refresh(force=True)
    for t in threads:
        t.join()
    assert not errors and snaps.version == old.version + 6
    snaps.close()


def test_a_requests_cursor_has_the_snapshots_settings(tmp_path):
    """Each request reads through a cursor of the snapshot's connection: the settings the snapshot is taken
    with (its memory, how many rows of a list page are read late) hold there too, not only on the
    connection (a plain SET does not reach a cursor)."""
    from receipts.web import snapshot

    data = synthetic(tmp_path / "data", 50, seed=4, days=0.5)
    snaps = Snapshots(data)
    snaps.refresh()
    with snaps.reading() as r:
        got = r.con.execute("SELECT current_setting('late_materialization_max_rows'), "
                            "current_setting('memory_limit')").fetchone()
    assert got[0] == snapshot.TOP_N_ROWS
    assert got[1] == "286.1 MiB"  # (300 MB, as DuckDB prints it)
    snaps.close()


def test_a_bad_host_or_port_is_one_line():
    out = receipts_cli("serve", "--host", "example.com", "--port", "0", "--data", ".")
    assert out.returncode == 1 and out.stderr.strip().startswith("Error: --host must be an IP address")


# ---- who is answered --------------------------------------------------------------------------------
SECURITY_HEADERS = ("content-security-policy", "x-content-type-options", "referrer-policy", "x-frame-options",
                    "cross-origin-resource-policy", "cross-origin-opener-policy", "cache-control")


def _secured(r) -> bool:
    from receipts.web.server import HEADERS

    return all(r.headers.get(k) == v for k, v in HEADERS.items())


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    synthetic(root / "data", 40, seed=5, days=0.5)
    return root


def test_every_other_method_gets_405_with_the_security_headers(served):
    serve, _, _ = served
    for method in ("OPTIONS", "TRACE", "PUT", "DELETE", "PATCH", "POST", "PROPFIND", "BREW"):
        r = httpx.request(method, serve.url + "/", timeout=10)
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD", method
        assert _secured(r), (method, dict(r.headers))
    assert set(SECURITY_HEADERS) <= {k.lower() for k in serve.get("/").headers}


def test_the_servers_own_refusals_carry_the_security_headers_too(served):
    import socket

    serve, _, _ = served
    for raw in (b"GET / HTTP/9.9\r\n\r\n", b"GET / HTTX/1.1\r\n\r\n", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
                b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n", b"NONSENSE\r\n\r\n",
                b"GET /\r\n\r\n"):  # (the last: HTTP/0.9, answered as HTTP/1.0 to carry the headers)
        with socket.create_connection(("127.0.0.1", serve.port), timeout=10) as s:
            s.sendall(raw)
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        assert lines[0].split()[1] in ("400", "403", "414", "431", "505"), lines[0]
        assert headers.get("content-security-policy", "").startswith("default-src 'none'"), lines
        assert headers.get("x-frame-options") == "DENY" and b"aaaa" not in body


def test_a_server_other_machines_can_reach_needs_its_token(small, tmp_path):
    with ServeProcess(small / "data", "--host", "0.0.0.0",
                      "--allow-host", "receipts.example", "--allow-host", "box.example:8443") as serve:
        token, url, port = serve.token, serve.url, serve.port
        assert token and len(token) >= 40 and serve.output().count(token) == 1, "made, and printed once"
        assert f"open http://{__import__('socket').gethostname()}:{port}/?token={token}" in serve.output()
        for path in ("/", "/api/status", "/static/app.js", "/favicon.ico", "/api/receipts"):
            r = serve.get(path, token=False)
            assert r.status_code == 401 and _secured(r) and r.headers["www-authenticate"].startswith("Bearer"), path
        wrong = "x" * len(token)
        for kw in ({"params": {"token": wrong}}, {"headers": {"Authorization": f"Bearer {wrong}"}},
                   {"headers": {"Cookie": f"receipts_token_{port}={wrong}"}},
                   {"headers": {"Cookie": f"receipts_token={token}"}},  # another port's cookie name
                   {"headers": {"Authorization": f"Basic {token}"}}):
            assert serve.get("/", token=False, **kw).status_code == 401, kw
        with httpx.Client(base_url=url, timeout=30) as browser:
            first = browser.get("/", params={"token": token})
            assert first.status_code == 200 and "<tr data-id=" in first.text
            cookie = first.headers["set-cookie"]
            assert cookie.startswith(f"receipts_token_{port}={token};")
            assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= {p.strip() for p in cookie.split(";")}
            again = browser.get("/api/receipts")  # no token in it: the cookie
            assert again.status_code == 200 and again.json()["total"] > 0 and "set-cookie" not in again.headers
            assert browser.get("/static/app.js").status_code == 200
            assert browser.get("/", headers={"Host": "attacker.example"}).status_code == 403, "a known token, a foreign Host"
            assert browser.request("OPTIONS", "/").status_code == 405
        assert serve.get("/api/status").status_code == 200  # Authorization: Bearer
        for host, code in ((f"receipts.example:{port}", 200), ("receipts.example", 200), ("box.example:8443", 200),
                           (f"box.example:{port}", 403), (f"attacker.example:{port}", 403), ("", 403),
                           (f"localhost:{port}", 200), (f"127.0.0.1:{port + 1}", 403)):
            assert serve.get("/api/status", headers={"Host": host}).status_code == code, host
        assert serve.get("/", token=False, headers={"Host": "attacker.example"}).status_code == 403


def test_a_token_can_be_given_and_then_loopback_needs_it_too(small, tmp_path):
    given = "given-token-" + "a1" * 10
    serve = ServeProcess(small / "data", env={"RECEIPTS_SERVE_TOKEN": given})
    serve.token = given  # (what get() sends)
    with serve:
        assert given not in serve.output(), "a token given is not printed"
        assert serve.get("/", token=False).status_code == 401
        assert serve.get("/").status_code == 200
    with ServeProcess(small / "data", "--cache", str(tmp_path / "old.duckdb")) as open_:
        assert open_.token is None and open_.get("/").status_code == 200, "loopback without a token, as before"
        assert "--cache is ignored" in open_.output() and not (tmp_path / "old.duckdb").exists()


@pytest.mark.parametrize("flags, words", [
    (["--token", "short"], "the token must be 16 to 200 letters"),
    (["--token", "has spaces in it, which no cookie takes"], "the token must be"),
    (["--allow-host", "evil.example/path"], "--allow-host takes a host name or an address"),
    (["--allow-host", "a b"], "--allow-host takes a host name or an address"),
])
def test_bad_tokens_and_host_names_are_one_line(tmp_path, flags, words):
    (tmp_path / "journal").mkdir()
    out = receipts_cli("serve", "--port", "0", *flags, data=tmp_path)
    assert out.returncode == 1 and out.stderr.startswith("Error: ") and words in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
