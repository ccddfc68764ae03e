"""`receipts audit` and `receipts export` on captured sessions: real clients through a real `receipts proxy`
to the real x402 server and facilitator settling on anvil (over HTTPS), the test upstream, curl; then
`receipts verify` against the chain, then the report.

The planted session holds one of each problem: a double charge (a paid call the server fails after
settling, retried and settled again), an overcharge (a payment signed for twice what the 402 asked),
a secret sent over plain HTTP, a client that refuses the proxy's certificate, and an answer without
usage whose model name is crafted to inject markup and terminal escapes. The clean session holds
only paid calls that pass and answers with usage: the report finds nothing."""
import html.parser
import re
import json
import os
import subprocess
import uuid

import duckdb
import httpx
import pytest

from support import upstream as U
from support import x402_wire as W
from support.proc import BIN, ROOT, ProxyProcess, receipts_cli, wait_for
from testbed.stack import paid_stack

CONFIRMATIONS = 2
SECRET = "sk-audit-" + uuid.uuid4().hex  # sent over plain HTTP; must never appear in a report or export
CRAFTED = '<script>alert("owned")</script>|cell\n\x1b[31mRED[x](javascript:alert(1))'
PROBLEM_SECTIONS = ("risky_failed", "overcharges", "never_settled", "double_charges", "secrets_in_clear",
                    "pinned_clients", "no_usage")


@pytest.fixture(scope="module")
def stack(tls):
    with paid_stack(chain_id=8453, tls={"cert": tls["cert"], "key": tls["key"]}) as s:
        yield s


@pytest.fixture(scope="module")
def config(tmp_path_factory, stack):
    path = tmp_path_factory.mktemp("cfg") / "receipts.yaml"
    path.write_text(json.dumps(stack.receipts_config(CONFIRMATIONS, rpc_timeout=2, deadline_grace=1)))  # YAML ⊇ JSON
    return str(path)


def cli(data, *args, check=True):
    out = subprocess.run([str(BIN / "receipts"), *args, "--data", str(data)], capture_output=True, text=True,
                         timeout=180, cwd=ROOT)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def calls_recorded(data, n):
    return wait_for(lambda: int(cli(data, "sql", "--csv", "SELECT count(*) FROM calls").stdout.split()[1]) >= n,
                    timeout=20)


def verify(stack, data, config):
    stack.anvil.mine(CONFIRMATIONS + 1)
    out = cli(data, "verify", "--once", "--config", config, check=False)
    assert "fault" not in out.stdout, out.stdout
    assert out.returncode == 0, out.stderr  # a verifier that crashed leaves no verdict: the audit would miss them
    return out


def audit(data, *args):
    return json.loads(cli(data, "audit", "--format", "json", *args).stdout)


def curl(*args, env):
    return subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=30, env=env)


@pytest.fixture(scope="module")
def planted(tmp_path_factory, stack, config, tls, upstream):
    """A session with planted problems, verified against the chain; yields what was planted."""
    from support.upstream import start_upstream

    data = tmp_path_factory.mktemp("planted")
    plain, plain_port = start_upstream(0)  # plain HTTP
    facts = {}
    try:
        with ProxyProcess(data, "--config", config, "--seal-interval", "0.1", upstream_ca=tls["ca"]) as proxy:
            good = stack.pay(proxy=proxy.url, verify=proxy.ca)
            assert good.status == 200 and good.tx_hash
            body = {"model": "testbed-echo-1", "messages": [{"role": "user", "content": f"twice {uuid.uuid4()}"}]}
            first = stack.pay(body=body, proxy=proxy.url, verify=proxy.ca, headers={"X-Testbed-Fail": "after-settle"})
            second = stack.pay(body=body, proxy=proxy.url, verify=proxy.ca)
            assert first.status >= 500 and first.tx_hash and second.tx_hash and first.tx_hash != second.tx_hash
            facts["double"] = sorted(t.lower() for t in (first.tx_hash, second.tx_hash))
            facts["good"] = good.tx_hash.lower()

            # an overcharge: the client signs 20000 where the 402 asked U.AMOUNT (10000)
            from eth_account import Account

            key = Account.create()
            over = W.signed_eip3009(key.key, key.address, token=U.ASSET, pay_to=U.PAY_TO, value=2 * U.AMOUNT)
            chat = {"model": "m", "messages": [{"role": "user", "content": "overcharge"}]}
            with httpx.Client(proxy=proxy.url, verify=proxy.ca, timeout=30) as c:
                assert c.post(f"{upstream}/v1/chat/completions", json=chat).status_code == 402
                paid = c.post(f"{upstream}/v1/chat/completions", json=chat,
                              headers={"PAYMENT-SIGNATURE": W.b64json(over), "X-Test-Tx": W.random_tx_hash(),
                                       "X-Request-Id": "overcharge-1"})
                assert paid.status_code == 200
                # an answer without usage, with a model name crafted against the report's formats
                crafted = c.post(f"{upstream}/v1/free/chat/completions", headers={"X-Test-Status": "200"},
                                 json={"model": CRAFTED, "messages": [{"role": "user", "content": "hi"}]})
                assert crafted.status_code == 200
            # a secret over plain HTTP, sent by curl (found by its process)
            env = proxy.client_env()
            sent = curl("-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                        f"http://127.0.0.1:{plain_port}/v1/free/chat/completions", "-H", f"Authorization: Bearer {SECRET}",
                        "-H", "content-type: application/json", "-d", json.dumps(chat), env=env)
            assert sent.stdout == "200", sent.stderr
            # a client that refuses the proxy's certificate (it does not trust the CA: as a pinning client does)
            refusing = {k: v for k, v in os.environ.items() if k not in env} | {"HTTPS_PROXY": proxy.url}
            refused = curl(f"{upstream}/v1/chat/completions", env=refusing)
            assert refused.returncode != 0 and "certificate" in refused.stderr.lower()
            calls_recorded(data, 10)
        facts["over"] = json.loads(cli(data, "show", "--json", "overcharge-1").stdout)["receipt"]["receipt_id"]
        facts["double_id"] = json.loads(cli(data, "show", "--json", facts["double"][0]).stdout)["receipt"]["receipt_id"]
        verify(stack, data, config)
        yield data, facts
    finally:
        plain.shutdown()


@pytest.fixture(scope="module")
def clean(tmp_path_factory, stack, config, tls, upstream):
    """Only good traffic: two paid calls that settle and pass, and a free answer with usage."""
    data = tmp_path_factory.mktemp("clean")
    with ProxyProcess(data, "--config", config, "--seal-interval", "0.1", upstream_ca=tls["ca"]) as proxy:
        for i in range(2):
            call = stack.pay(body={"model": "testbed-echo-1", "messages": [{"role": "user", "content": f"clean {i}"}]},
                             proxy=proxy.url, verify=proxy.ca)
            assert call.status == 200 and call.tx_hash
        with httpx.Client(proxy=proxy.url, verify=proxy.ca, timeout=30) as c:
            ok = c.post(f"{upstream}/v1/free/chat/completions", json={"model": "m", "messages": []})
            assert ok.status_code == 200 and ok.json()["usage"]["total_tokens"] > 0
        calls_recorded(data, 5)
    verify(stack, data, config)
    return data


def test_the_audit_reports_each_planted_problem(planted, stack):
    data, facts = planted
    rep = audit(data, "--limit", "0")
    counts = rep["problem_counts"]
    assert counts == {"risky_failed": 2, "overcharges": 1, "never_settled": 0, "double_charges": 1,
                      "secrets_in_clear": 1, "pinned_clients": 1, "no_usage": 1}, counts

    (double,) = rep["double_charges"]
    assert double["receipt_id"] == facts["double_id"] and double["txs"] == facts["double"]
    assert (double["settlements"], double["charged"], double["charged_human"]) == (2, "20000", "0.02")
    assert (double["resolution"], double["reason"]) == ("risky", "double_settlement")

    (over,) = rep["overcharges"]
    assert over["receipt_id"] == facts["over"]
    assert (over["challenge_amount"], over["charged"], over["excess"]) == ("10000", "20000", "10000")
    assert (over["proof_status"], over["reason"]) == ("failed", "overcharged")

    risky = {r["receipt_id"]: r for r in rep["risky_failed"]}
    assert set(risky) == {facts["double_id"], facts["over"]}
    evidence = {c["check"]: c for c in rep["evidence"][facts["over"]]}
    assert (evidence["terms"]["result"], evidence["terms"]["reason"]) == ("fail", "overcharged")
    assert "signed 20000, the challenge asked 10000" in evidence["terms"]["detail"]
    settled = {c["check"]: c for c in rep["evidence"][facts["double_id"]]}["settlement_tx"]
    assert settled["result"] == "pass"

    (secret,) = rep["secrets_in_clear"]
    assert (secret["host"], secret["secrets"], secret["calls"]) == ("127.0.0.1", ["authorization"], 1)
    assert secret["app_name"].startswith("curl"), secret  # the curl process, found by its socket

    (pinned,) = rep["pinned_clients"]
    assert (pinned["client"], pinned["host"]) == ("127.0.0.1", "localhost") and pinned["refusals"] >= 1

    (no_usage,) = rep["no_usage"]
    assert no_usage["model"] == CRAFTED and no_usage["calls"] == 1

    # totals: the payee of the test bed got 10000 (the good call) + 2 × 10000 (the double charge), all
    # verified on chain; the lying server's overcharge is reported, not verified (its tx is not on chain)
    totals = {(t["pay_to"].lower(), t["asset"].lower()): t for t in rep["totals"]}
    ours = totals[(stack.payee.address.lower(), stack.token.lower())]
    assert (ours["verified"], ours["verified_human"], ours["symbol"], ours["settlements"]) == ("30000", "0.03", "tUSDC", 3)
    assert (ours["reported"], ours["authorized"]) == ("0", "0")
    lying = totals[(U.PAY_TO.lower(), U.ASSET.lower())]
    assert (lying["verified"], lying["reported"], lying["reported_human"]) == ("0", "20000", None), "decimals unknown"
    assert rep["summary"]["calls"] == 10


def test_the_report_shows_crafted_values_as_text(planted):
    data, _ = planted
    md = cli(data, "audit", "--limit", "0").stdout
    page = cli(data, "audit", "--format", "html").stdout
    for text in (md, page):
        assert "\x1b" not in text and "<script>alert" not in text and SECRET not in text
        assert "\\x1b" in text and "\\x0a" in text  # the escape sequence and the newline are shown, not acted on
    assert "&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt;" in page

    class Elements(html.parser.HTMLParser):
        tags: list = []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)

    parser = Elements()
    parser.feed(page)
    assert "script" not in parser.tags and "a" not in parser.tags
    assert "default-src 'none'" in page  # and even so, a CSP that allows no script
    # the report's own sentences: `code` is set as code, not shown as backticks; headers wrap between words only
    notes = re.findall(r'<p class="(?:note|none)">(.*?)</p>', page)
    assert notes and not any("`" in n for n in notes) and "<code>receipts verify</code>" in page
    assert re.search(r"th\{[^}]*word-break:normal", page) and not re.search(r"th\{[^}]*break-all", page)

    # Markdown: the crafted cell stays one cell of one row; no HTML, no link
    row = next(line for line in md.splitlines() if "owned" in line)
    assert "\\<script\\>" in row and "\\|cell" in row and "\\[x\\]" in row
    cells = [c for c in row.replace("\\|", "").split("|")]
    header = md.splitlines()[md.splitlines().index(row) - 2]
    assert len(cells) == len(header.split("|")), (row, header)


def test_a_clean_session_reports_nothing(clean, stack):
    rep = audit(clean)
    assert all(rep[s] == [] for s in PROBLEM_SECTIONS), {s: rep[s] for s in PROBLEM_SECTIONS if rep[s]}
    assert sum(rep["problem_counts"].values()) == 0
    (total,) = rep["totals"]
    assert (total["pay_to"].lower(), total["asset"].lower()) == (stack.payee.address.lower(), stack.token.lower())
    assert (total["verified"], total["verified_human"], total["paid_calls"], total["settlements"]) == ("20000", "0.02", 2, 2)
    statuses = {(s["proof_status"], s["resolution"]): s["receipts"] for s in rep["statuses"]}
    assert statuses == {("passed", None): 2, ("unpaid", None): 1}
    md = cli(clean, "audit").stdout
    assert md.count("None found.") == len(PROBLEM_SECTIONS) and "0.02 tUSDC (20000)" in md


def test_filters_by_app_and_time(planted):
    data, _ = planted
    apps = [a["app_name"] for a in audit(data)["apps"]]
    curl_app = next(a for a in apps if a.startswith("curl"))
    only = audit(data, "--app", curl_app)
    assert [a["app_name"] for a in only["apps"]] == [curl_app] and only["summary"]["calls"] == 1
    assert len(only["secrets_in_clear"]) == 1 and only["double_charges"] == [] and only["totals"] == []
    later = audit(data, "--since", "2999-01-01")
    assert later["summary"]["receipts"] == 0 and all(later[s] == [] for s in PROBLEM_SECTIONS)
    unknown = cli(data, "audit", "--app", "no-such-app", check=False)
    assert unknown.returncode == 1 and "no calls from app 'no-such-app'" in unknown.stderr and curl_app in unknown.stderr


def test_the_secret_on_curls_command_line_is_nowhere(planted, tmp_path):
    """curl ran with `-H "Authorization: Bearer <SECRET>"` on its command line: the call still names curl
    (its executable, its app name), and the secret is in no file of the data directory, no export, no
    report and no query output; its command line is kept with the secret's tag in its place."""
    data, _ = planted
    (c,) = json.loads(cli(data, "sql", "--json", "SELECT * FROM calls WHERE client_exe LIKE '%/curl' "
                                                 "AND secrets_in_clear IS NOT NULL").stdout)
    assert c["app_name"] == "curl" and c["client_pid"] > 0
    assert c["client_cmdline"].startswith("curl -sS") and f"http://127.0.0.1:{c['port']}/v1" in c["client_cmdline"]
    assert "-H Authorization: [redacted sha256:" in c["client_cmdline"]
    outputs = {"sql": cli(data, "sql", "--json", "SELECT * FROM calls").stdout,
               "sql csv": cli(data, "sql", "--csv", "SELECT * FROM calls").stdout}
    for fmt in ("md", "html", "json"):
        report = tmp_path / f"audit.{fmt}"
        cli(data, "audit", "--format", fmt, "--limit", "0", "--out", str(report))
        outputs[f"audit {fmt}"] = report.read_text()
    for fmt in ("jsonl", "csv", "har"):
        export = tmp_path / f"calls.{fmt}"
        cli(data, "export", "--format", fmt, "--view", "calls", "--out", str(export))
        outputs[f"export {fmt}"] = export.read_text()
    assert "curl" in outputs["audit json"] and "[redacted sha256:" in outputs["export jsonl"]
    leaks = [name for name, text in outputs.items() if SECRET in text]
    leaks += [str(p) for p in data.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaks == []


def test_exports_round_trip_and_keep_secrets_out(planted, tmp_path):
    data, _ = planted
    from receipts.storage import db

    con = db.connect(data)
    files = duckdb.connect()  # (the views' connection is sandboxed: it opens no file outside the journal)
    types = con.execute("DESCRIBE SELECT * FROM receipts").fetchall()
    columns = "{" + ", ".join(f"'{n}': '{t}'" for n, t, *_ in types) + "}"
    # `ids` is a set (its order is not defined): compare it sorted
    cols = ", ".join("list_sort(ids) AS ids" if n == "ids" else f'"{n}"' for n, *_ in types)
    want = con.execute(f"SELECT {cols} FROM receipts ORDER BY receipt_id").fetchall()
    assert len(want) == 5  # the good call, the double charge, the overcharge, the crafted answer, the secret
    readers = {"parquet": lambda f: f"read_parquet('{f}')",
               "csv": lambda f: f"read_csv('{f}', header = true, columns = {columns})",
               "jsonl": lambda f: f"read_json('{f}', format = 'newline_delimited', columns = {columns})"}
    for fmt, reader in readers.items():
        out = tmp_path / f"receipts.{fmt}"
        done = cli(data, "export", "--format", fmt, "--out", str(out))
        assert f"{len(want)} receipts rows as {fmt}" in done.stderr
        got = files.execute(f"SELECT {cols} FROM {reader(out)} ORDER BY receipt_id").fetchall()
        assert got == want, fmt
        assert SECRET.encode() not in out.read_bytes()
    jsonl = (tmp_path / "receipts.jsonl").read_text().splitlines()
    assert any('"amount":"20000"' in line for line in jsonl), "amounts are exact strings in JSON lines"
    assert any('"cost":"0.010000000000000000"' in line for line in jsonl), "and so are costs"

    har = tmp_path / "calls.har"
    cli(data, "export", "--format", "har", "--out", str(har))
    doc = json.loads(har.read_text())
    assert len(doc["log"]["entries"]) == 10 and SECRET not in har.read_text()
    sent = next(e for e in doc["log"]["entries"] if e["request"]["url"].startswith("http://127.0.0.1"))
    auth = next(h["value"] for h in sent["request"]["headers"] if h["name"] == "authorization")
    assert auth.startswith("[redacted sha256:"), auth
    again = tmp_path / "again"
    ingested = receipts_cli("ingest", str(har), data=again)
    assert ingested.returncode == 0 and "recorded 10 new calls" in ingested.stdout, ingested.stdout + ingested.stderr
    hosts = lambda d: cli(d, "sql", "--csv", "SELECT host, path, status FROM calls ORDER BY ALL").stdout
    assert hosts(again) == hosts(data)
    assert SECRET.encode() not in b"".join(p.read_bytes() for p in again.rglob("*") if p.is_file())

    piped = cli(data, "export", "--format", "csv", "--since", "2999-01-01")
    assert piped.stdout.splitlines() == [",".join(n for n, *_ in types)]
    refused = cli(data, "export", "--format", "parquet", check=False)
    assert refused.returncode == 1 and "needs a file" in refused.stderr
