"""`receipts serve` for calls that are not paid on chain (the common API-key case), in headless Chromium:
calls made through a real `receipts proxy` to the local OpenAI-compatible upstream, one of them failing.
The list shows tokens, latency and cost; the charts are the usage ones (tokens, cost, latency, failures),
drawn at a size whose labels can be read; the receipt page leaves out what does not apply; a 420 px wide
screen holds the list without scrolling sideways."""
import requests

import pytest

from support.proc import ProxyProcess, receipts_cli, wait_for
from support.serve import ServeProcess, chromium


@pytest.fixture(scope="module")
def served(tmp_path_factory, tls, upstream):
    data = tmp_path_factory.mktemp("unpaid") / "data"
    with ProxyProcess(data, "--seal-interval", "0.1", upstream_ca=tls["ca"]) as proxy:
        for i, model in enumerate(["gpt-4o-mini", "gpt-4o-mini", "claude-sonnet-4"]):
            r = requests.post(f"{upstream}/v1/free/chat/completions", proxies={"https": proxy.url}, verify=proxy.ca,
                              json={"model": model, "messages": [{"role": "user", "content": "x" * (10 * i)}]},
                              timeout=30)
            assert r.status_code == 200
        failed = requests.post(f"{upstream}/v1/free/chat/completions", proxies={"https": proxy.url},
                               verify=proxy.ca, headers={"X-Test-Status": "500"}, timeout=30,
                               json={"model": "gpt-4o-mini", "messages": []})
        assert failed.status_code == 500
        wait_for(lambda: receipts_cli("sql", "SELECT count(*) FROM calls WHERE status IS NOT NULL",
                                      data=data).stdout.split()[-1] == "4", timeout=30)
    with ServeProcess(data) as serve:
        yield serve, data


def _page(served, width: int):
    from playwright.sync_api import sync_playwright

    serve, _ = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), headless=True)
        page = browser.new_page(viewport={"width": width, "height": 900})
        yield page
        browser.close()


def test_the_list_shows_usage_and_the_usage_charts(served):
    serve, _ = served
    for page in _page(served, 1400):
        page.goto(serve.url + "/")
        head = page.eval_on_selector_all("table.receipts th", "ths => ths.map(th => th.textContent)")
        rows = page.eval_on_selector_all("#rows tr[data-id]", "trs => trs.map(tr => Array.from(tr.cells)"
                                                              ".map(td => td.textContent))")
        charts = page.eval_on_selector_all("#charts img", "imgs => imgs.map(i => [i.id, i.naturalWidth, "
                                                          "i.getBoundingClientRect().width])")
        tokens_svg = page.request.get(serve.url + "/chart/tokens-model.svg").text()
        errors_svg = page.request.get(serve.url + "/chart/errors-app.svg").text()
    assert head[6:9] == ["tokens", "latency", "cost"]
    assert len(rows) == 4
    priced = [r for r in rows if r[8].endswith(" USD")]
    assert len(priced) == 3 and all(float(r[8].split()[0]) > 0 and r[6] != "—" for r in priced)
    assert all(r[7].endswith(" ms") for r in rows)
    ids = [c[0] for c in charts]
    assert ids == ["chart-tokens-model", "chart-cost-app", "chart-latency-model", "chart-errors-app", "chart-status"]
    assert all(natural == 600 and shown == 600 for _, natural, shown in charts), charts  # never shrunk
    assert "gpt-4o-mini" in tokens_svg and "claude-sonnet-4" in tokens_svg and 'font-size="12"' in tokens_svg
    assert "no calls" not in errors_svg and "total 1" in errors_svg


def test_an_unpaid_receipt_page_leaves_out_the_transfer(served):
    serve, data = served
    rid = receipts_cli("sql", "--csv", "SELECT receipt_id FROM receipts WHERE model = 'claude-sonnet-4'",
                       data=data).stdout.split()[-1]
    for page in _page(served, 1400):
        page.goto(f"{serve.url}/receipt/{rid}")
        cards = page.eval_on_selector_all("section.card h2", "hs => hs.map(h => h.textContent)")
        labels = page.eval_on_selector_all("table.kv th", "ths => ths.map(th => th.textContent)")
        cost = page.text_content("#cost")
    assert "Transfer" not in cards and "Call" in cards
    assert {"Model", "Tokens", "Latency", "Cost"} <= set(labels)
    assert not {"Amount", "From (payer)", "Transaction hash", "Block"} & set(labels)
    assert cost.endswith("(list price, " + cost.split("(list price, ")[1]) and " USD " in cost


def test_a_420_px_screen_holds_the_list(served):
    serve, _ = served
    for page in _page(served, 420):
        page.goto(serve.url + "/")
        table_width = page.evaluate("document.querySelector('table.receipts').getBoundingClientRect().width")
        page_width = page.evaluate("document.documentElement.scrollWidth")
        visible = page.eval_on_selector_all("table.receipts th", "ths => ths.filter(th => th.offsetParent)"
                                                                  ".map(th => th.textContent)")
    assert table_width <= 420 and page_width <= 420, (table_width, page_width)
    assert visible == ["first seen (UTC)", "model", "proof", "tokens", "cost"]
