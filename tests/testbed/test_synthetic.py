"""The synthetic journal (testbed/synthetic.py): exactly N calls, read by the views like a capture,
the same events for the same seed, and every kind of traffic the benchmarks rely on."""
import duckdb

from receipts.storage import db
from testbed.synthetic import generate

END = 1_800_000_000.0


def test_n_calls_every_kind_and_the_same_events_for_the_same_seed(tmp_path):
    one, two, other = tmp_path / "one", tmp_path / "two", tmp_path / "other"
    made = generate(one, 5000, seed=11, days=3, end=END)
    generate(two, 5000, seed=11, days=3, end=END)
    generate(other, 5000, seed=12, days=3, end=END)
    assert made["calls"] == 5000 and made["files"] == 8  # two writers, three days (and the edge of a fourth)
    read = "SELECT id, type, ts, receipt_id, data::VARCHAR FROM read_parquet('{}/journal/parquet/*/synthetic-*.parquet') ORDER BY id"
    with duckdb.connect() as con:
        assert con.execute(read.format(one)).fetchall() == con.execute(read.format(two)).fetchall()
        assert con.execute(read.format(one)).fetchall() != con.execute(read.format(other)).fetchall()
        # each file in time order, as compaction writes a writer's segments: row groups then span short
        # ranges of ids, which the folded tables keep and lookups skip by
        back = con.execute(f"""SELECT count(*) FILTER (WHERE ts < before), count(*) FROM (
            SELECT ts, lag(ts) OVER (PARTITION BY filename ORDER BY file_row_number) AS before
            FROM read_parquet('{one}/journal/parquet/*/synthetic-*.parquet', filename = true, file_row_number = true))
            """).fetchone()
        assert back == (0, made["events"])
    with db.connect(one) as con:
        q = lambda sql: con.execute(sql).fetchall()
        assert q("SELECT count(*), count(DISTINCT receipt_id), max(started_at) < make_timestamp(1800000000000000) FROM calls") \
            == [(5000, 5000, True)]
        assert q("SELECT count(*) FROM receipts") == [(made["receipts"],)]
        statuses = {r[0] for r in q("SELECT DISTINCT proof_status FROM receipts")}
        resolutions = {r[0] for r in q("SELECT DISTINCT resolution FROM receipts")}
        assert statuses == {"unpaid", "pending", "passed", "failed"} and {"risky", "retried", "refunded"} <= resolutions
        assert q("SELECT count(*) > 0 FROM receipts WHERE settlement_count = 2") == [(True,)]
        assert q("SELECT count(*), min(calls) FROM sessions") == [(made["plan"]["session"], 7)]
        assert q("SELECT count(DISTINCT app_name), count(DISTINCT host), count(DISTINCT pay_to) FROM calls c "
                 "LEFT JOIN payments p USING (receipt_id)")[0] >= (5, 8, 4)
        assert q("SELECT count(*) > 0 FROM calls WHERE secrets_in_clear = ['authorization'] AND scheme = 'http'") == [(True,)]
        assert q("SELECT count(*) FROM events WHERE type = 'error' AND (data->>'$.kind') = 'client_tls_refused'") == [(5,)]
        assert q("SELECT count(*) FILTER (WHERE usage_source = 'missing' AND status = 200) > 0, "
                 "count(*) FILTER (WHERE stream) > 0 FROM calls") == [(True, True)]
