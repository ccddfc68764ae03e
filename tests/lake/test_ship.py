"""`receipts ship`: real recorder processes take paid and unpaid calls from a real client (httpx through
HTTPS_PROXY, x402 payments against the test upstream), and ship to a real lake (DuckLake: PostgreSQL
catalog, SeaweedFS over S3). Every X-Receipt-Id a client received is in the lake exactly once, through
every fault: a kill -9 of the shipper at each point of a commit (a real SIGKILL the shipper sends itself
at that point: RECEIPTS_SHIP_FAULT, the only way to stop it exactly there), a store that refuses or
stalls, a catalog that restarts, and a second shipper for one name."""
import json
import time
import uuid

import httpx
import pytest

from support import upstream as U
from support import x402_wire as W
from support.proc import ProxyProcess, receipts_cli, wait_for

TABLES = ("events", "requests", "payments", "responses", "offers", "settlements", "stream_ends", "errors", "checks",
          "ids")


def make_calls(proxy: ProxyProcess, upstream: str, n: int) -> list[str]:
    """n logical calls through the proxy (a third paid with x402 after a 402, a third streamed); the
    X-Receipt-Id of every answer."""
    seen = []
    with httpx.Client(proxy=proxy.url, verify=proxy.ca, timeout=30) as client:
        for i in range(n):
            body = {"model": "fake-model", "messages": [{"role": "user", "content": f"call {i} {uuid.uuid4()}"}]}
            if i % 3 == 0:
                first = client.post(f"{upstream}/v1/chat/completions", json=body)
                assert first.status_code == 402
                seen.append(first.headers["x-receipt-id"])
                accepted = W.unb64json(first.headers["payment-required"])["accepts"][0]
                pay = W.payment_v2_eip3009(accepted, W.random_address(), U.AMOUNT, W.random_nonce_hex(), 0, 2**31,
                                           W.random_signature())
                r = client.post(f"{upstream}/v1/chat/completions", json=body, headers={"PAYMENT-SIGNATURE": W.b64json(pay)})
            elif i % 3 == 1:
                r = client.post(f"{upstream}/v1/free/chat/completions", json={**body, "stream": True})
            else:
                r = client.post(f"{upstream}/v1/free/chat/completions", json=body)
            assert r.status_code == 200, r.text
            seen.append(r.headers["x-receipt-id"])
    return seen


def local_ids(data) -> list[str]:
    out = receipts_cli("sql", "--json", "SELECT receipt_id FROM calls", data=data)
    assert out.returncode == 0, out.stderr
    return [r["receipt_id"] for r in json.loads(out.stdout)]


def recorded(proxy: ProxyProcess, ids: list[str]) -> None:
    wait_for(lambda: set(ids) <= set(local_ids(proxy.data)), timeout=30, interval=0.3)


def assert_exactly_once(lake, ids: list[str]) -> None:
    """Every id in the lake's `calls` once, no (writer, seq) twice, and every scan of every table works (no
    object overwritten or missing): one query, one process (each `--lake` process loads three extensions)."""
    scans = ", ".join(f"(SELECT count(*) FROM folded.{t}) AS {t}" for t in TABLES)
    (row,) = lake.sql("SELECT (SELECT map(list(receipt_id), list(n)) FROM (SELECT receipt_id, count(*) AS n FROM calls "
                      "GROUP BY 1)) AS counts, (SELECT count(*) FROM (SELECT writer, seq FROM events GROUP BY ALL "
                      f"HAVING count(*) > 1)) AS doubled, {scans}")
    counts = row["counts"] or {}
    assert not [i for i in ids if counts.get(i) != 1], {i: counts.get(i) for i in ids if counts.get(i) != 1}
    assert row["doubled"] == 0
    assert all(row[t] >= 0 for t in TABLES)


def test_four_recorders_ship_every_call_exactly_once(tmp_path, tls, upstream, lake):
    proxies = [ProxyProcess(tmp_path / f"data{k}", "--seal-interval", "0.2", upstream_ca=tls["ca"]).start()
               for k in range(4)]
    shippers = []
    try:
        # the shippers run while the calls come in, as they would on four hosts
        shippers = [lake.shipping(p.data, 0.5, 240) for p in proxies]
        ids = []
        for p in proxies:
            ids += make_calls(p, upstream, 9)
        for p, own in zip(proxies, [ids[k * 12:(k + 1) * 12] for k in range(4)]):
            recorded(p, own)
        wait_for(lambda: len(lake.sql("SELECT receipt_id FROM calls")) >= len(ids), timeout=120, interval=1)
    finally:
        for s in shippers:
            s.terminate()
        logs = [s.communicate(timeout=60)[0] for s in shippers]
        for p in proxies:
            p.stop()
    assert all(s.returncode == 0 for s in shippers), logs
    assert len(ids) == 4 * 12 and len(set(ids)) == len(ids)
    assert_exactly_once(lake, ids)
    # four names, one per data directory, each shipping its own writers
    names = lake.sql("SELECT name FROM lake.ship_names")
    assert len({r["name"] for r in names}) == 4 == len(names)
    writers = {r["w"] for r in lake.sql("SELECT DISTINCT split_part(writer, '/', 1) AS w FROM events")}
    assert writers == {r["name"] for r in names}


def test_the_lake_gives_the_same_receipts_as_the_data_directory(recorder, upstream, lake):
    ids = make_calls(recorder, upstream, 12)
    recorded(recorder, ids)
    assert lake.ship(recorder.data).returncode == 0
    query = "SELECT * EXCLUDE (ids), list_sort(ids) AS ids FROM receipts ORDER BY receipt_id"
    local = json.loads(receipts_cli("sql", "--json", query, data=recorder.data).stdout)
    assert local and lake.sql(query) == local
    for view in ("calls", "payments", "settlements", "challenges", "checks", "sessions"):
        q = f"SELECT * FROM {view} ORDER BY ALL"
        assert lake.sql(q) == json.loads(receipts_cli("sql", "--json", q, data=recorder.data).stdout), view

    # maintenance keeps the receipts in the lake; later shipments change kept ones (a verify pass's checks
    # of the paid calls) and add new ones, and the lake still gives what the data directory gives
    out = lake.cli("lake", "maintain", "--older-than", "0")
    assert out.returncode == 0 and "kept receipts: " in out.stderr, out.stderr
    assert lake.sql(query) == local
    config = recorder.data.parent / "no-nodes.yaml"  # (no node: the checks say so; nothing leaves 127.0.0.1)
    config.write_text(json.dumps({"networks": {}}))
    verified = receipts_cli("verify", "--once", "--config", str(config), data=recorder.data, timeout=120)
    assert "Traceback" not in verified.stderr, verified.stderr
    more = make_calls(recorder, upstream, 3)
    recorded(recorder, more)
    assert lake.ship(recorder.data).returncode == 0
    local = json.loads(receipts_cli("sql", "--json", query, data=recorder.data).stdout)
    changed = [r for r in local if r["receipt_id"] in ids and r["status"] != "not_verified"]
    assert changed and len(local) > len(ids) // 2  # (kept receipts did change, and new ones came)
    assert lake.sql(query) == local


@pytest.mark.parametrize("point", ["before_upload", "after_upload", "after_commit"])
def test_a_shipper_killed_at_any_point_of_a_commit_loses_and_doubles_nothing(recorder, upstream, lake, point):
    ids = make_calls(recorder, upstream, 6)
    recorded(recorder, ids)
    killed = lake.ship(recorder.data, env={"RECEIPTS_SHIP_FAULT": point})
    assert killed.returncode == -9, killed.stderr
    landed = {r["receipt_id"] for r in lake.sql("SELECT receipt_id FROM calls")}
    assert landed == (set(ids) if point == "after_commit" else set())
    again = lake.ship(recorder.data)
    assert again.returncode == 0, again.stderr
    assert ("shipped 0 events" in again.stderr) == (point == "after_commit"), again.stderr
    assert_exactly_once(lake, ids)


def test_a_second_owner_of_a_name_is_refused(tmp_path, recorder, upstream, lake):
    ids = make_calls(recorder, upstream, 3)
    recorded(recorder, ids)
    assert lake.ship(recorder.data, "--name", "host-a").returncode == 0
    other = tmp_path / "other"
    other.mkdir()
    refused = lake.ship(other, "--name", "host-a")
    assert refused.returncode == 1 and "belongs to another data directory" in refused.stderr, refused.stderr
    # one data directory, one name: it keeps the name it shipped under
    renamed = lake.ship(recorder.data, "--name", "host-b")
    assert renamed.returncode == 1 and "ships as 'host-a'" in renamed.stderr
    # and one shipper at a time on a data directory
    started = time.time()
    running = lake.shipping(recorder.data, 0.5, 60)
    try:  # (it holds the data directory once it has shipped: its report is newer than its start)
        wait_for(lambda: (running.poll() is None and json.loads((recorder.data / "ship.json").read_text()).get("shipped_at", 0)
                          > started), timeout=30, interval=0.2)
        second = lake.ship(recorder.data)
        assert second.returncode == 1 and "already ships" in second.stderr, second.stderr
    finally:
        running.terminate()
        running.communicate(timeout=30)
    assert_exactly_once(lake, ids)


def test_a_store_that_refuses_then_stalls_and_a_catalog_restart(recorder, upstream, lake):
    s3, pg = lake.s3, lake.pg
    ids = make_calls(recorder, upstream, 12)  # (more rows than DuckLake keeps inline in the catalog: S3 is needed)
    recorded(recorder, ids)
    s3.stop()  # refuses: nothing listens
    try:
        gave_up = lake.ship(recorder.data, "--tries", "2")
        assert gave_up.returncode == 1 and "gave up after 2 tries" in gave_up.stderr, gave_up.stderr
    finally:
        s3.start()
    assert lake.sql("SELECT count(*) AS n FROM calls")[0]["n"] == 0
    # a shipper keeps going while the store stalls and the catalog restarts under it
    loop = lake.shipping(recorder.data, 0.5, 180)
    try:
        wait_for(lambda: len(lake.sql("SELECT receipt_id FROM calls")) == len(ids), timeout=60, interval=0.5)
        more = make_calls(recorder, upstream, 3)
        s3.pause()
        time.sleep(3)
        s3.resume()
        pg.restart()
        more += make_calls(recorder, upstream, 3)
        recorded(recorder, more)
        wait_for(lambda: len(lake.sql("SELECT receipt_id FROM calls")) >= len(ids + more), timeout=120, interval=1)
    finally:
        loop.terminate()
        log = loop.communicate(timeout=60)[0]
    assert loop.returncode == 0, log
    assert_exactly_once(lake, ids + more)
