"""One receipt by any of its ids (storage/queries.py), as `receipts show` and the receipt pages of
`receipts serve` find and compute it, against the plain views: the narrow folded tables name every id
of every receipt, and the views computed over only a receipt's rows equal the whole views' rows — over
folded Parquet files and over a tail folded on the fly."""
import json
import random

import duckdb
import pytest

from receipts import render
from receipts.storage import db, fold, queries


@pytest.fixture(scope="module", params=["folded", "tail"])
def data(request, tmp_path_factory):
    from testbed.synthetic import generate

    path = tmp_path_factory.mktemp(request.param) / "data"
    generate(path, 900, seed=21, days=1.0)
    if request.param == "folded":
        fold.fold(path)  # (else the event Parquet files are the tail, folded by every connect)
    return path


def document(row, details):
    doc = json.loads(render.to_json(render.receipt_document(row, details)))
    doc["receipt"]["ids"] = sorted(doc["receipt"]["ids"])
    for name in queries.DETAILS:
        doc[name] = sorted(doc[name], key=lambda x: json.dumps(x, sort_keys=True))
    return doc


def test_every_id_of_every_receipt_is_found_in_the_folded_tables(data):
    with db.connect(data, journal=False) as con:
        pairs = con.execute("SELECT receipt_id, unnest(ids) AS id FROM receipts ORDER BY ALL").fetchall()
        sessions = con.execute("SELECT receipt_id, session_id FROM receipts WHERE session_id IS NOT NULL").fetchall()
        assert len(pairs) > 2000 and len(sessions) > 10
        rnd = random.Random(3)
        sample = rnd.sample(pairs, 300) + rnd.sample(sessions, 5)
        for receipt_id, ident in sample:
            assert receipt_id in queries.candidates(con, ident.upper()), (receipt_id, ident)


def test_what_an_id_finds_is_what_the_views_find(data):
    with db.connect(data, journal=False) as con:
        idents = [r[0] for r in con.execute("""
            SELECT any_value(id) FROM (SELECT unnest(ids) AS id, session_id IS NOT NULL AS s, attempts, proof_status,
                                              len(id) AS n, left(id, 2) AS p FROM receipts)
            GROUP BY s, attempts, proof_status, n, p ORDER BY ALL""").fetchall()]
        idents += [r[0] for r in con.execute("SELECT payer FROM receipts WHERE payer IS NOT NULL LIMIT 2").fetchall()]
        assert len(idents) > 30
        for view in ("receipts", *queries.DETAILS):  # (the views' rows, computed once)
            con.execute(f"CREATE TABLE every_{view} AS SELECT * FROM {view}")
        find = queries.FIND.replace("FROM receipts", "FROM every_receipts") + " ORDER BY first_seen, receipt_id"
        plain_sql = {name: sql.replace(f"FROM {name}", f"FROM every_{name}") for name, sql in queries.DETAILS.items()}
        for ident in idents + ["no-such-id", "  "]:
            want = queries.dicts(con, find, {"id": ident})
            got = queries.found(con, ident)
            assert [r["receipt_id"] for r, _ in got] == [r["receipt_id"] for r in want], ident
            for (row, details), plain in zip(got, want):
                plain_details = {name: queries.dicts(con, sql, {"id": plain["receipt_id"]})
                                 for name, sql in plain_sql.items()}
                assert document(row, details) == document(plain, plain_details), ident
        assert queries.receipt(con, "no-such-receipt") is None


def test_a_paid_request_is_one_with_a_payment_row(data):
    """`computed()` copies payments for the paid requests only: fold.sql makes one from the other."""
    with db.connect(data, journal=False) as con:
        assert con.execute("""SELECT count(*) FILTER (WHERE paid), count(*) FROM folded.requests r
                              FULL JOIN (SELECT DISTINCT receipt_id FROM folded.payments) p USING (receipt_id)
                              WHERE r.paid IS DISTINCT FROM (p.receipt_id IS NOT NULL)""").fetchone() == (0, 0)
        assert con.execute("SELECT count(*) FROM folded.payments").fetchone()[0] > 100


def test_receipt_pages_from_a_pool_of_scratch_databases_equal_the_views(data):
    """`receipts serve` keeps its scratch databases between receipt pages: each is emptied after use, so a
    page never shows another receipt's rows (sessions, attempts and checks included)."""
    with db.connect(data, journal=False) as con:
        ids = [r[0] for r in con.execute("""
            SELECT min(receipt_id) FROM receipts GROUP BY session_id IS NOT NULL, attempts, proof_status, resolution
            UNION (SELECT receipt_id FROM receipts ORDER BY hash(receipt_id) LIMIT 10) ORDER BY ALL""").fetchall()]
        assert len(ids) > 15
        for view in ("receipts", *queries.DETAILS):
            con.execute(f"CREATE TABLE every_{view} AS SELECT * FROM {view}")
        pool: list[str] = []
        for receipt_id in ids + ids[::-1]:
            row, details = queries.one_receipt(con, receipt_id, pool)
            plain = queries.dicts(con, "SELECT * FROM every_receipts WHERE receipt_id = $id", {"id": receipt_id})[0]
            plain_details = {name: queries.dicts(con, sql.replace(f"FROM {name}", f"FROM every_{name}"), {"id": receipt_id})
                             for name, sql in queries.DETAILS.items()}
            assert document(row, details) == document(plain, plain_details), receipt_id
            assert len(pool) == 1, "one scratch database, used again"
        assert queries.one_receipt(con, "no-such-receipt", pool) is None


def test_a_kept_row_is_the_row_the_scratch_computes(data):
    """`receipts show` connects with KEPT_RECEIPTS: where `receipts` is the rows the fold kept, a call's row
    is read from them (no view but `receipts` is bound), and only its details are computed. The scratch
    computes the same rows and details from the calls' own rows."""
    with db.connect(data, journal=False, views=db.KEPT_RECEIPTS) as con:
        assert db.kept_only(con) is (data.parent.name.startswith("folded"))  # (the tail: nothing kept)
        ids = [r[0] for r in con.execute("""
            (SELECT logical_id FROM folded.requests WHERE upto_session IS NOT NULL ORDER BY hash(logical_id) LIMIT 5)
            UNION (SELECT logical_id FROM folded.requests ORDER BY hash(logical_id) LIMIT 60)""").fetchall()]
        got = queries.computed(con, ids)
        con.execute(f"SET VARIABLE {db.KEPT_ONLY} = false")  # (so that the scratch computes every row)
        want = queries.computed(con, ids)
    assert len(want) > 40
    assert [document(*x) for x in got] == [document(*x) for x in want]


def test_the_calls_tail_prints_are_the_views_calls_since_then(data):
    """`receipts tail` computes the calls started after a moment alone (`calls_of(…, started_after)`): the rows
    of the `calls` view that started after it, at any moment (the synthetic calls span a day)."""
    with db.connect(data, journal=False) as con:
        moments = [r[0] for r in con.execute("SELECT started_at FROM calls ORDER BY started_at").fetchall()]
        assert len(moments) >= 900
        for at in [moments[0], moments[len(moments) // 3], moments[-40], moments[-1], None]:
            got = queries.new_calls(con, at)
            want = queries.dicts(
                con,
                "SELECT receipt_id, logical_id, started_at, method, host, path, status, model, total_tokens, paid, "
                "error FROM calls WHERE $at IS NULL OR started_at > $at ORDER BY started_at, receipt_id",
                {"at": at},
            )
            assert sorted(got, key=lambda r: (r["started_at"], r["receipt_id"])) == want
            assert any(r["status"] for r in got) or at == moments[-1], "their answers are found too"


def test_queries_run_at_once_answer_in_their_order_and_raise_what_fails():
    """`queries.at_once` (a receipt's copies and details): each statement on a cursor of its own, in a
    thread; the answers in the statements' order whatever ends first, in the database named, and an error
    raised once every statement has ended (the others' writes are done)."""
    with duckdb.connect() as con:
        con.execute("ATTACH ':memory:' AS other")
        con.execute("CREATE TABLE other.t (x INTEGER)")
        slow = "SELECT count(*) AS n FROM range(30000000) WHERE range % 7 = 0"
        got = queries.at_once(con, [slow, "SELECT 2 AS n", "INSERT INTO t VALUES (1), (2)"], database="other")
        assert got == [[{"n": 4285715}], [{"n": 2}], [{"Count": 2}]]
        with pytest.raises(duckdb.CatalogException):
            queries.at_once(con, ["INSERT INTO other.t SELECT * FROM range(3)", "SELECT * FROM no_such_table"])
        assert con.execute("SELECT count(*) FROM other.t").fetchone()[0] == 5
