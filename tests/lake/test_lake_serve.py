"""`receipts serve --lake` in headless Chromium: the page lists what the lake holds, a receipt page opens
from it, and a shipment made while it runs appears (the catalog's snapshot is what it watches)."""
from support.proc import wait_for
from support.serve import ServeProcess, chromium

from test_ship import make_calls, recorded


def test_the_page_reads_the_lake_and_follows_new_shipments(recorder, upstream, lake, tmp_path):
    from playwright.sync_api import sync_playwright

    first = make_calls(recorder, upstream, 3)
    recorded(recorder, first)
    assert lake.ship(recorder.data).returncode == 0
    with ServeProcess(tmp_path / "nothing-here", "--lake", lake.url, env=lake.env) as serve, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(serve.url + "/")
        rows = page.eval_on_selector_all("#rows tr[data-id]", "trs => trs.map(tr => tr.dataset.id)")
        assert len(rows) == 3  # three logical calls (the 402 and its paid retry are one)
        page.goto(serve.url + f"/receipt/{rows[0]}")
        assert rows[0] in page.content()

        more = make_calls(recorder, upstream, 3)
        recorded(recorder, more)
        assert lake.ship(recorder.data).returncode == 0

        def listed():
            page.goto(serve.url + "/")
            return len(page.eval_on_selector_all("#rows tr[data-id]", "trs => trs")) == 6

        wait_for(listed, timeout=30, interval=0.5)
        browser.close()
