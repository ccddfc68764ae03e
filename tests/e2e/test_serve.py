"""`receipts serve` in a real headless Chromium (Debian's, driven by Playwright), over data recorded by the
real flows: the x402 client → `receipts proxy` → x402 server and facilitator on anvil, and the
opengradient SDK → `receipts proxy --reverse` → the TEE gateway on two anvil chains, both into one data
directory, verified with `receipts verify` (once before the settlements had their confirmations, once
after). One call carries a model name, a request id and a user agent crafted to inject script."""
import json
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.png import pixels
from support.proc import ProxyProcess, receipts_cli, wait_for
from support.serve import ServeProcess, chromium
from testbed.chain import FACILITATOR
from testbed.og_stack import start_og_stack
from testbed.stack import paid_stack

INJECT_MODEL = '<img src=x onerror="window.__pwned=1;alert(1)">'
INJECT_ID = 'inj-</script><script>window.__pwned=2;alert(2)</script>'
INJECT_UA = '"><svg onload=window.__pwned=3>'
EXPLORER = "https://sepolia.basescan.org/tx/{tx}"
CONFIRMATIONS = 2


@dataclass
class World:
    data: Path
    config: Path
    serve: ServeProcess
    x402: object
    proxy: ProxyProcess
    plain_tx: str
    risky_tx: str
    inject_tx: str
    session: str
    og_app: str

    def sql(self, query):
        out = receipts_cli("sql", "--json", query, data=self.data)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def show(self, ident):
        out = receipts_cli("show", "--json", ident, data=self.data)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


def _verify(data, config):
    out = receipts_cli("verify", "--once", "--config", str(config), data=data)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    data, config = root / "data", root / "config.yaml"
    with paid_stack(chain_id=84532) as x402, start_og_stack(session_idle=1.0) as og:
        config.write_text(json.dumps({
            "assets": [{"network": x402.network, "address": x402.token, "symbol": "tUSDC", "decimals": 6},
                       {"network": "eip155:8453", "address": og.chains.opg, "symbol": "OPG", "decimals": 18}],
            "networks": {x402.network: {"rpc": x402.rpc_url, "confirmations": CONFIRMATIONS, "explorer": EXPLORER,
                                        "facilitators": [FACILITATOR.address], "rpc_timeout": 2},
                         "eip155:8453": {"rpc": og.base_url, "confirmations": 1},
                         "eip155:10740": {"rpc": og.og_url, "confirmations": 1}},
            "opengradient": {"registry": og.registry, "relay": og.relay, "blob_url": og.blob_url}}))
        common = ("--config", str(config), "--seal-interval", "0.2")
        with ProxyProcess(data, *common) as fwd, ProxyProcess(data, *common, "--reverse", og.url) as rev:
            settled_before = len(og.state()["settled_sessions"])
            ask = lambda text: {"model": "testbed-echo-1", "messages": [{"role": "user", "content": text}]}
            risky = x402.pay(body=ask("risky"), proxy=fwd.url,
                             headers={"X-Testbed-Fail": "after-settle", "X-Request-Id": "serve-risky-1"})
            inject = x402.pay(body={"model": INJECT_MODEL, "messages": [{"role": "user", "content": "hi"}]},
                              proxy=fwd.url, headers={"X-Request-Id": INJECT_ID, "User-Agent": INJECT_UA})
            plain = x402.pay(body=ask("plain"), proxy=fwd.url, headers={"X-Request-Id": "serve-plain-1"})  # last: 1 confirmation
            assert plain.status == 200 and risky.status >= 500 and inject.status == 200
            lines = og.run_client(f"https://127.0.0.1:{rev.port}", calls=3, settlement="private",
                                  prompt=f"prompt {uuid.uuid4()}")
            assert all(line["ok"] for line in lines), lines
            og.wait_for(lambda s: len(s["settled_sessions"]) > settled_before, timeout=30, what="a settled session")
            w = World(data, config, None, x402, fwd, plain.tx_hash, risky.tx_hash, inject.tx_hash, "", "")
            wait_for(lambda: len(w.sql("SELECT receipt_id FROM receipts")) >= 6, timeout=30)
            _verify(data, config)          # the x402 settlements: pending, awaiting confirmations
            x402.anvil.mine(CONFIRMATIONS)
            _verify(data, config)          # now passed
            og_rows = w.sql("SELECT session_id, app_name FROM receipts WHERE session_id IS NOT NULL")
            assert len(og_rows) == 3 and len({r["session_id"] for r in og_rows}) == 1
            w.session, w.og_app = og_rows[0]["session_id"], og_rows[0]["app_name"]
            with ServeProcess(data, "--config", str(config), "--refresh", "0.3") as serve:
                w.serve = serve
                yield w


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, world):
    """A fresh page that records dialogs, script errors and CSP violations."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=world.serve.url)
    pg = context.new_page()
    pg.dialogs, pg.console = [], []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.on("console", lambda m: pg.console.append(m.text))
    pg.on("pageerror", lambda e: pg.console.append(str(e)))
    yield pg
    context.close()


def submit(pg):
    with pg.expect_navigation():
        pg.click("#filters button[type=submit]")


def rows_of(pg):
    return pg.eval_on_selector_all("#rows tr[data-id]", "trs => trs.map(tr => [tr.dataset.id, "
                                   "Array.from(tr.cells).map(td => td.textContent)])")


def test_the_list_is_newest_first_and_its_filters_narrow_it(page, world):
    page.goto(world.serve.url + "/")
    want = world.sql("SELECT receipt_id, app_name, model, first_seen FROM receipts ORDER BY first_seen DESC, receipt_id DESC")
    got = rows_of(page)
    assert [r[0] for r in got] == [r["receipt_id"] for r in want]
    assert page.text_content("#total") == str(len(want))

    page.select_option("#f-app", world.og_app)
    submit(page)
    got = rows_of(page)
    assert len(got) == 3 and {cells[1] for _, cells in got} == {world.og_app}
    assert all(cells[8].startswith("session ") for _, cells in got), "a session call's share is not invented"

    page.goto(world.serve.url + "/")
    page.select_option("#f-status", "risky")
    submit(page)
    risky = world.show(world.risky_tx)["receipt"]["receipt_id"]
    assert [r[0] for r in rows_of(page)] == [risky]
    assert "passed · risky" in rows_of(page)[0][1][5]

    page.goto(world.serve.url + "/")
    page.select_option("#f-model", INJECT_MODEL)
    submit(page)
    assert [r[1][3] for r in rows_of(page)] == [INJECT_MODEL]

    # a time range: from the OpenGradient session's first call on, then before anything was recorded
    first_og = world.sql("SELECT min(first_seen) AS t FROM receipts WHERE session_id IS NOT NULL")[0]["t"]
    later = world.sql(f"SELECT count(*) AS n FROM receipts WHERE first_seen >= TIMESTAMP '{first_og}'")[0]["n"]
    page.goto(world.serve.url + "/")
    page.fill("#f-since", first_og)
    submit(page)
    assert len(rows_of(page)) == later and 3 <= later < len(want)
    page.fill("#f-since", "")
    page.fill("#f-until", "2020-01-01")
    submit(page)
    assert rows_of(page) == [] and page.text_content("#total") == "0"
    assert not page.dialogs


def test_the_search_finds_a_receipt_by_tx_hash_and_by_session_id(page, world):
    page.goto(world.serve.url + "/")
    page.fill("#f-q", world.plain_tx.upper().replace("0X", "0x"))  # ids are found whatever their case
    submit(page)
    assert page.text_content("#tx-hash") == world.plain_tx
    # the chain is local (anvil): a public explorer has no such transaction, so there is no link
    assert page.query_selector("#explorer") is None
    assert page.text_content("#receipt-id") == world.show(world.plain_tx)["receipt"]["receipt_id"]

    page.goto(world.serve.url + "/")
    page.fill("#f-q", world.session)
    submit(page)
    members = {r["receipt_id"] for r in world.sql(f"SELECT receipt_id FROM receipts WHERE session_id = '{world.session}'")}
    assert {r[0] for r in rows_of(page)} == members and len(members) == 3


def test_the_receipt_page_shows_the_transfer_and_the_timeline(page, world):
    doc = world.show(world.plain_tx)
    page.goto(world.serve.url + "/receipt/" + doc["receipt"]["receipt_id"])
    assert page.text_content("#status") == "passed"
    assert "0.01 tUSDC" in page.text_content("#amount")
    transfer = page.text_content("section.card")
    for fact in (doc["receipt"]["payer"], doc["receipt"]["pay_to"], "Base Sepolia", "10000 atomic units, 6 decimals",
                 f"{CONFIRMATIONS + 1} of {CONFIRMATIONS} required"):
        assert fact in transfer, fact
    steps = page.eval_on_selector_all("#timeline > li", "lis => lis.map(li => li.querySelector('.title').textContent)")
    assert steps[0].startswith("attempt 1: POST") and "402 challenge" in " ".join(steps)
    verdicts = [s for s in steps if s.startswith("status →")]
    assert verdicts == ["status → pending (awaiting_confirmations)", "status → passed"]
    evidence = page.text_content("#timeline > li:last-child .evidence")
    assert "settlement_tx" in evidence and "pass" in evidence and "confirmations=3" in evidence

    og = world.sql(f"SELECT receipt_id FROM receipts WHERE session_id = '{world.session}' ORDER BY first_seen")[-1]
    page.goto(world.serve.url + "/receipt/" + og["receipt_id"])
    results = page.eval_on_selector_all("#tee .res", "els => els.map(e => e.textContent)")
    assert results == ["pass", "pass", "pass"], "request hash, output hash, signature"
    assert "gateway-2026-03" in page.text_content("#tee")
    assert "session" in page.text_content("#amount") and world.session in page.text_content("#session")


def test_copy_as_json_gives_what_receipts_show_json_prints(page, world):
    doc = world.show(world.risky_tx)
    page.goto(world.serve.url + "/receipt/" + doc["receipt"]["receipt_id"])
    page.click("#copy-json")
    page.wait_for_selector("#copied:not([hidden])")
    copied = json.loads(page.evaluate("navigator.clipboard.readText()"))

    def canonical(d):
        d = json.loads(json.dumps(d))
        d["receipt"]["ids"] = sorted(d["receipt"]["ids"])
        for k, v in d.items():
            if isinstance(v, list):
                d[k] = sorted(v, key=lambda x: json.dumps(x, sort_keys=True))
        return d
    assert canonical(copied) == canonical(doc)


def test_a_chart_renders(page, world):
    page.goto(world.serve.url + "/")
    page.wait_for_function("document.getElementById('chart-spend-app').complete && "
                           "document.getElementById('chart-spend-app').naturalWidth > 0")
    width, height, px = pixels(page.locator("#chart-spend-app").screenshot())
    colors = Counter(px)
    ink = sum(n for c, n in colors.items() if c != (255, 255, 255))
    assert width > 300 and height > 100
    assert ink > 0.03 * len(px), "the chart's region is not blank"
    bars = {c for c in colors if c[2] > 200 and c[0] < 80}  # the first series' blue (#2563eb) and its antialiasing
    assert bars, "bars are drawn"
    svg = world.serve.get("/chart/spend-app.svg").text
    assert "tUSDC" in svg and "OPG" in svg and "<script" not in svg


def test_new_calls_appear_without_a_reload(page, world):
    page.goto(world.serve.url + "/")
    before = len(rows_of(page))
    page.evaluate("window.__sameDocument = 'yes'")
    live = f"serve-live-{uuid.uuid4()}"
    call = world.x402.pay(body={"model": "testbed-echo-1", "messages": [{"role": "user", "content": live}]},
                          proxy=world.proxy.url, headers={"X-Request-Id": live})
    assert call.status == 200
    rid = wait_for(lambda: (d := receipts_cli("show", "--json", call.tx_hash, data=world.data)).returncode == 0
                   and json.loads(d.stdout)["receipt"]["receipt_id"], timeout=20)
    page.wait_for_selector(f'#rows tr[data-id="{rid}"]', timeout=20_000)
    assert page.evaluate("window.__sameDocument") == "yes", "the page was not reloaded"
    assert rows_of(page)[0][0] == rid and len(rows_of(page)) == before + 1
    assert page.text_content("#total") == str(before + 1)
    # the rows are now drawn by app.js from the JSON: the crafted model name is text there too
    inject = world.show(world.inject_tx)["receipt"]["receipt_id"]
    assert dict(rows_of(page))[inject][3] == INJECT_MODEL
    assert page.evaluate("typeof window.__pwned") == "undefined" and page.dialogs == []
    assert page.evaluate("document.querySelectorAll('#rows img, #rows svg, #rows script').length") == 0


def test_script_in_captured_data_does_not_run_and_shows_as_text(page, world):
    rid = world.show(world.inject_tx)["receipt"]["receipt_id"]
    page.goto(world.serve.url + "/")
    row = dict(rows_of(page))[rid]
    assert row[3] == INJECT_MODEL
    page.goto(world.serve.url + "/receipt/" + rid)
    main = page.text_content("#main")
    assert INJECT_ID in main
    assert INJECT_UA in main and INJECT_MODEL in main
    assert INJECT_ID in page.text_content("#receipt-json")
    page.goto(world.serve.url + "/?" + "q=" + '%22%3E%3Cscript%3Ewindow.__pwned%3D4%3C%2Fscript%3E')
    assert page.input_value("#f-q") == '"><script>window.__pwned=4</script>'
    page.goto(world.serve.url + "/api/receipt/" + rid)  # the raw JSON, opened as a page
    for path in ("/", "/receipt/" + rid, "/?model=" + INJECT_MODEL.replace("<", "%3C").replace(" ", "%20")):
        page.goto(world.serve.url + path)
        page.wait_for_timeout(300)
        assert page.evaluate("typeof window.__pwned") == "undefined", path
        assert page.evaluate("document.querySelectorAll('img[src=\"x\"], svg[onload], script:not([src])').length") == 0
    assert page.dialogs == []
    assert not [m for m in page.console if "Content Security Policy" in m], page.console
    headers = world.serve.get("/receipt/" + rid).headers
    assert "script-src 'self'" in headers["content-security-policy"] and "unsafe-inline" not in headers["content-security-policy"]


def test_the_server_answers_only_reads_from_its_own_host(world):
    import httpx

    assert world.serve.get("/").status_code == 200
    assert httpx.post(world.serve.url + "/", timeout=10).status_code == 405
    assert world.serve.get("/", headers={"Host": "attacker.example"}).status_code == 403
    assert not [p for p in world.data.rglob("*") if "serve" in p.name], "serve writes nothing into the data directory"


def test_a_page_other_machines_can_reach_needs_its_token(browser, world, tmp_path):
    """`receipts serve --host 0.0.0.0`: without the token, 401; the printed link's token sets an HttpOnly,
    SameSite=Strict cookie that the page's own requests carry (script, style, charts, live updates, links),
    and the token leaves the address bar."""
    with ServeProcess(world.data, "--host", "0.0.0.0", "--config", str(world.config)) as serve:
        context = browser.new_context()
        pg = context.new_page()
        try:
            assert pg.goto(serve.url + "/").status == 401 and "needs its token" in pg.text_content("body")
            assert pg.goto(serve.url + "/?token=" + "x" * len(serve.token)).status == 401
            assert pg.goto(f"{serve.url}/?token={serve.token}").status == 200
            # (polled from here: a predicate polled inside the page is eval'd, which its CSP forbids)
            wait_for(lambda: "token" not in pg.evaluate("window.location.search"), timeout=10)
            assert serve.token not in pg.evaluate("window.location.href")
            assert len(rows_of(pg)) >= 6
            wait_for(lambda: pg.evaluate("document.getElementById('chart-spend-app').complete && "
                                         "document.getElementById('chart-spend-app').naturalWidth > 0"), timeout=10)
            assert pg.evaluate("document.styleSheets[0].cssRules.length") > 0, "the stylesheet came with the cookie"
            with pg.expect_response(lambda r: "/api/receipts" in r.url, timeout=10_000) as live:
                pass
            assert live.value.status == 200, "the live updates carry the cookie"
            [cookie] = [c for c in context.cookies() if c["name"] == f"receipts_token_{serve.port}"]
            assert cookie["value"] == serve.token and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            assert pg.evaluate("document.cookie") == "", "no script can read it"
            with pg.expect_navigation():
                pg.click("#rows tr[data-id] a")
            assert pg.text_content("#receipt-id")
        finally:
            context.close()
        stranger = browser.new_context()
        try:
            assert stranger.new_page().goto(serve.url + "/receipt/" + world.show(world.plain_tx)["receipt"]["receipt_id"]).status == 401
        finally:
            stranger.close()
