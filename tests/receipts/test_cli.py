"""The CLI's faces: one-line errors, read-only SQL, and the doctor's plain words."""
import json
import os
import re
import subprocess
import sys

import pytest

from support.proc import BIN, ProxyProcess, receipts_cli, wait_for


@pytest.mark.parametrize("flags, words", [
    (["--listen-port", "99999"], "listen_port must be a number from 0 to 65535"),
    (["--bodies", "some"], "bodies must be one of none, hash, full"),
    (["--durability", "maybe"], "durability must be one of full, strict, relaxed"),
    (["--listen-host", "not a host"], "listen_host must be an IP address"),
    (["--config", "/nonexistent.yaml"], "config file /nonexistent.yaml does not exist"),
    (["--rule", "a/b/c", "--ai-path", "no-slash"], "capture.ai_paths must be a list of paths starting with '/'"),
])
def test_bad_settings_give_one_sentence_and_exit_1(tmp_path, flags, words):
    out = receipts_cli("proxy", *flags, data=tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [f"Error: {out.stderr.strip()[7:]}"] and words in out.stderr


def test_bad_yaml_value(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("capture:\n  x402: perhaps\n")
    out = receipts_cli("proxy", "--config", str(bad), data=tmp_path)
    assert out.returncode == 1 and "capture.x402 must be true or false, not 'perhaps'" in out.stderr


def test_show_list_audit_and_verify_print_and_keep_all_before_they_end(tmp_path):
    """`show`, `list`, `audit` and `verify` end their process as soon as they are done (`cli._end_now`,
    without tearing Python down): what they print through a pipe, block-buffered, is whole, the exit
    status theirs, and every check the verifier wrote is there."""
    from testbed.synthetic import generate

    from receipts import render
    from receipts.storage import db, queries

    generate(tmp_path, 120, seed=5, days=1.0)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # (a pipe's buffering)

    def run(*args):
        return subprocess.run([str(BIN / "receipts"), *args, "--data", str(tmp_path)], capture_output=True,
                              text=True, timeout=60, env=env)

    listed = run("list", "--json", "--limit", "500")
    assert listed.returncode == 0, listed.stderr
    with db.connect(tmp_path, journal=False) as con:
        every = queries.list_receipts(con, limit=500)
        one = every[len(every) // 2]["receipt_id"]
        (row, details), = queries.found(con, one)
    assert [x["receipt_id"] for x in json.loads(listed.stdout)] == [x["receipt_id"] for x in every]
    assert len(every) > 80
    shown = run("show", "--json", one)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == json.loads(render.to_json(render.receipt_document(row, details)))
    missing = run("show", "no-such-receipt")
    assert missing.returncode == 1 and missing.stderr.startswith("Error: no receipt matches")
    audited = run("audit", "--format", "json")
    assert audited.returncode == 0, audited.stderr
    assert json.loads(audited.stdout)["summary"]["receipts"] == len(every)
    no_nodes = tmp_path / "no-nodes.yaml"  # (no chain is read: what the verifier writes is what matters)
    no_nodes.write_text(json.dumps({"networks": {}}))
    verdicts = "SELECT count(*) FROM checks WHERE \"check\" = 'verdict'"
    with db.connect(tmp_path, journal=False) as con:
        before = con.execute(verdicts).fetchone()[0]
    verified = run("verify", "--once", "--config", str(no_nodes))
    changed = int(re.search(r"; (\d+) changed", verified.stdout).group(1))
    with db.connect(tmp_path, journal=False) as con:
        written = con.execute(verdicts).fetchone()[0] - before
    assert changed > 20 and written == changed, (verified.stdout, verified.stderr, written)


WATCH_DUCKDB = """
import json, os, sys
seen = []
class Watch:  # what DUCKDB_JE_MALLOC_CONF holds when duckdb is first imported
    def find_spec(self, name, path=None, target=None):
        if name == "duckdb" and not seen:
            seen.append(os.environ.get("DUCKDB_JE_MALLOC_CONF"))
sys.meta_path.insert(0, Watch())
from receipts import cli
status = cli.main(sys.argv[1:])
print(json.dumps({"status": status, "at_import": seen}))
"""


@pytest.mark.parametrize("own", [None, "dirty_decay_ms:1000"])
def test_verify_has_duckdb_give_freed_memory_back_unless_told_otherwise(tmp_path, own):
    """`receipts verify` sets jemalloc's decay (cli.VERIFIER_ALLOCATOR) before DuckDB loads, which is when
    DuckDB reads it; a value the user set is kept."""
    from testbed.synthetic import generate

    from receipts import cli

    generate(tmp_path, 20, seed=3, days=1.0)
    no_nodes = tmp_path / "no-nodes.yaml"
    no_nodes.write_text(json.dumps({"networks": {}}))
    env = {k: v for k, v in os.environ.items() if k != "DUCKDB_JE_MALLOC_CONF"} | (
        {"DUCKDB_JE_MALLOC_CONF": own} if own else {})
    out = subprocess.run([sys.executable, "-c", WATCH_DUCKDB, "verify", "--once", "--config", str(no_nodes),
                          "--data", str(tmp_path)], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == {"status": 0, "at_import": [own or cli.VERIFIER_ALLOCATOR]}


def test_sql_only_reads(tmp_path):
    (tmp_path / "journal").mkdir()
    for statement in ("CREATE TABLE x AS SELECT 1", "COPY (SELECT 1) TO '/tmp/x.csv'", "DROP VIEW calls",
                      "INSTALL httpfs", "ATTACH 'x.db'"):
        out = receipts_cli("sql", statement, data=tmp_path)
        assert out.returncode == 1 and out.stderr.startswith("Error: only queries are allowed"), statement
    ok = receipts_cli("sql", "--csv", "SELECT count(*) AS n FROM receipts", data=tmp_path)
    assert ok.returncode == 0 and ok.stdout.split() == ["n", "0"]
    bad = receipts_cli("sql", "SELEC nonsense", data=tmp_path)
    assert bad.returncode == 1 and bad.stderr.startswith("Error: ") and len(bad.stderr.splitlines()) == 1


def test_show_and_list_errors(tmp_path):
    (tmp_path / "journal").mkdir()
    assert receipts_cli("show", "0xdeadbeef", data=tmp_path).stderr.startswith("Error: no receipt matches")
    assert "--since takes a duration" in receipts_cli("list", "--since", "yesterday-ish", data=tmp_path).stderr
    missing = receipts_cli("list", data=tmp_path / "nowhere")
    assert missing.returncode == 1 and "no data directory" in missing.stderr


def _post_ok(url: str, ca: str):
    import requests

    try:
        r = requests.post(url, json={"model": "gpt-4o-mini", "messages": []}, verify=ca, timeout=5,
                          proxies={"https": None, "http": None})
    except requests.RequestException:
        return None
    return r if r.status_code == 200 else None


def test_doctor_explains_an_untrusted_ca_and_then_passes(tmp_path, tls, upstream):
    with ProxyProcess(tmp_path / "data", "--seal-interval", "0.1", upstream_ca=tls["ca"]) as proxy:
        env = {k: v for k, v in os.environ.items() if k not in proxy.client_env()}
        # an app that was not told about the CA: its TLS handshake with the proxy fails
        subprocess.run(["curl", "-sS", "-x", proxy.url, f"{upstream}/v1/chat/completions"], env=env,
                       capture_output=True, timeout=30)
        doctor = ["doctor", "--proxy", proxy.url]
        bad = subprocess.run([str(proxy.cmd[0]), *doctor, "--data", str(proxy.data)], capture_output=True,
                             text=True, env=env, timeout=60)
        assert bad.returncode == 1
        assert "SSL_CERT_FILE is not set to the proxy's CA" in bad.stdout
        assert "HTTPS_PROXY is not set" in bad.stdout
        assert "refused the proxy's certificate for localhost" in bad.stdout
        printed = re.search(r"`(receipts proxy --reverse [^`]+)`", bad.stdout).group(1)  # for a pinning client
        assert printed == f"receipts proxy --reverse {upstream} --listen-port 8443"
        assert f"ok    a proxy is listening on 127.0.0.1:{proxy.port}" in bad.stdout
        good = subprocess.run([str(proxy.cmd[0]), *doctor, "--data", str(proxy.data)], capture_output=True,
                              text=True, env={**env, **proxy.client_env()}, timeout=60)
        assert "FAIL  SSL_CERT_FILE" not in good.stdout and "ok    HTTPS_PROXY" in good.stdout
        assert "refused the proxy's certificate for localhost" in good.stdout  # no call has gone through since
        # the client, now trusting the CA, calls through the proxy: the old refusal is history
        subprocess.run(["curl", "-sS", "-x", proxy.url, f"{upstream}/v1/chat/completions", "-d", "{}"],
                       env={**env, **proxy.client_env()}, capture_output=True, timeout=30, check=True)
        for _ in range(50):  # (bounded: the call is sealed within 0.1 s)
            fixed = subprocess.run([str(proxy.cmd[0]), *doctor, "--data", str(proxy.data)], capture_output=True,
                                   text=True, env={**env, **proxy.client_env()}, timeout=60)
            if "refused the proxy's certificate" not in fixed.stdout:
                break
        assert "refused the proxy's certificate" not in fixed.stdout and fixed.returncode == 0, fixed.stdout
    stopped = subprocess.run([str(proxy.cmd[0]), *doctor, "--data", str(proxy.data)], capture_output=True,
                             text=True, env={**env, **proxy.client_env()}, timeout=60)
    assert f"nothing listens on 127.0.0.1:{proxy.port}" in stopped.stdout and stopped.returncode == 1

    # the printed command works as printed (plus this test's upstream CA), beside the proxy, on its data
    reverse = [str(BIN / "receipts"), *printed.split()[1:], "--data", str(tmp_path / "data"), "--upstream-ca", tls["ca"]]
    with subprocess.Popen(reverse, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as rp:
        try:
            answer = wait_for(lambda: _post_ok("https://127.0.0.1:8443/v1/free/chat/completions",
                                               str(tmp_path / "data" / "ca" / "mitmproxy-ca-cert.pem")), timeout=30)
        finally:
            rp.terminate()
    assert answer.headers["x-receipt-id"]

def test_doctor_makes_nothing_and_says_when_no_settings_file_is_found(tmp_path):
    # run where there is no data directory, by a `receipts` whose default settings file is missing (as in an
    # install outside the checkout: the one constant is pointed elsewhere, the rest is the real command):
    # the doctor creates no directory, and does not call the built-in defaults a valid file
    missing = tmp_path / "nowhere" / "mitm_config.yaml"
    work = tmp_path / "work"
    work.mkdir()
    code = ("import sys; from pathlib import Path; from receipts.storage import config; "
            f"config.DEFAULT_CONFIG = Path({str(missing)!r}); from receipts.cli import main; sys.exit(main())")
    out = subprocess.run([sys.executable, "-c", code, "doctor", "--proxy", "127.0.0.1:9"], cwd=work,
                         capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k != "RECEIPTS_DATA"})
    assert out.returncode == 1, out.stderr
    assert f"FAIL  no settings file: {missing} is not there" in out.stdout
    assert f"note  there is no data directory at {work / 'data'} yet" in out.stdout
    assert os.listdir(work) == []


def test_doctor_explains_an_unwritable_data_dir_and_bad_settings(tmp_path):
    data = tmp_path / "locked"
    data.mkdir()
    subprocess.run(["chattr", "+i", str(data)], check=True)  # read-only even for root
    try:
        bad = tmp_path / "bad.yaml"
        bad.write_text("bodies: everything\n")
        out = receipts_cli("doctor", "--config", str(bad), "--proxy", "127.0.0.1:9", data=data)
    finally:
        subprocess.run(["chattr", "-i", str(data)], check=True)
    assert out.returncode == 1
    assert "FAIL  the settings are wrong: bodies must be one of none, hash, full, not 'everything'." in out.stdout
    assert f"FAIL  data directory {data} cannot be written (Operation not permitted)" in out.stdout
    assert "nothing listens on 127.0.0.1:9" in out.stdout


def test_show_takes_the_beginning_of_an_id_as_list_shortens_it(tmp_path):
    import time

    from receipts.storage.journal import Journal
    from receipts.storage.records import Event, uuid7

    t = time.time() - 60
    twins = [uuid7(t), uuid7(t)]  # the same millisecond: their first 13 characters are equal
    alone = uuid7(t + 3600)
    with Journal(tmp_path, seal_interval=3600) as j:
        for rid, provider in zip([*twins, alone], ["req_aaa111", "req_bbb222", "req_ccc333"]):
            j.write([Event("request", rid, {"logical_id": rid, "method": "POST", "host": "api.example",
                                            "path": "/v1/chat/completions", "model": "m"}),
                     Event("response", rid, {"status": 200, "provider_request_id": provider})])
    listed = receipts_cli("list", data=tmp_path).stdout
    shortened = next(w for line in listed.splitlines() for w in line.split() if w.startswith(alone[:8]))
    assert shortened.endswith("…") and shortened != alone  # what `list` prints, pasted as it is
    shown = receipts_cli("show", shortened, data=tmp_path)
    assert shown.returncode == 0 and alone in shown.stdout, shown.stderr
    assert alone in receipts_cli("show", "REQ_CCC", data=tmp_path).stdout  # any id's beginning, any case
    both = receipts_cli("show", twins[0][:13], data=tmp_path)
    assert both.returncode == 1 and "is the beginning of ids of 2 receipts" in both.stderr
    assert twins[0] in both.stderr and twins[1] in both.stderr
    short = receipts_cli("show", alone[:5], data=tmp_path)
    assert short.returncode == 1 and "needs 6 characters" in short.stderr


def test_version_and_unknown_status_values():
    version = receipts_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("receipts 0.")
    bad = receipts_cli("list", "--status", "paid")
    assert bad.returncode == 2 and "invalid choice: 'paid'" in bad.stderr
    assert all(s in bad.stderr for s in ("unpaid", "pending", "passed", "failed", "retried", "refunded", "risky"))


def test_a_reader_that_goes_away_is_no_error(tmp_path):
    (tmp_path / "journal").mkdir()
    proc = subprocess.Popen([str(BIN / "receipts"), "sql", "--csv",
                             "--data", str(tmp_path), "SELECT range AS n FROM range(200000)"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.read(10)
    proc.stdout.close()  # as `| head -1` does
    assert proc.wait(60) == 0 and b"Traceback" not in proc.stderr.read()


@pytest.mark.parametrize("locked", ["data", "journal"])
def test_a_read_only_data_directory_is_one_line_at_start(tmp_path, locked):
    data = tmp_path / "data"
    (data / "journal").mkdir(parents=True)
    target = data if locked == "data" else data / "journal"
    subprocess.run(["chattr", "+i", str(target)], check=True)  # read-only even for root
    try:
        out = receipts_cli("proxy", "--listen-port", "0", data=data, timeout=30)
    finally:
        subprocess.run(["chattr", "-i", str(target)], check=True)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines() == [out.stderr.strip()] and out.stderr.startswith("Error: cannot use the ")


def test_tail_follows_from_now_with_a_header_and_since_for_history(tmp_path):
    import time

    from receipts.storage.journal import Journal
    from receipts.storage.records import Event, uuid7

    def call(rid, at, host):
        return [Event("request", rid, {"logical_id": rid, "method": "POST", "host": host, "path": "/v1/chat/completions",
                                       "model": "m"}, ts=at),
                Event("response", rid, {"status": 200, "usage": {"total_tokens": 42}}, ts=at + 0.1)]

    old = uuid7(time.time() - 3600)
    with Journal(tmp_path, seal_interval=0.05) as j:
        j.write(call(old, time.time() - 3600, "old.example"))
        cmd = [str(BIN / "receipts"), "tail", "--data", str(tmp_path), "--interval", "0.2", "--seconds", "4"]
        follow = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        history = subprocess.Popen(cmd + ["--since", "2h"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)  # (both have started following)
        new = uuid7()
        j.write(call(new, time.time(), "new.example"))
        out, err = follow.communicate(timeout=30)
        past, _ = history.communicate(timeout=30)
    header = out.splitlines()[0].split()
    assert header[:3] == ["started", "(UTC)", "receipt"] and "status" in header and "tokens" in header, out
    assert new in out and "new.example" in out and " 42 " in out
    assert old not in out, out  # from now on: no history first
    assert old in past and new in past and past.index(old) < past.index(new)
    assert out.count(new) == 1 and follow.returncode == 0, err


def test_list_and_show_give_tokens_latency_and_what_each_call_cost(tmp_path):
    # a call billed by API key (priced by the table when recorded), one paid on chain, one the table
    # did not know: its cost is unknown, not 0
    import time

    from receipts.storage.journal import Journal
    from receipts.storage.records import Event, uuid7

    t = time.time() - 60
    keyed, paid, unknown = uuid7(t), uuid7(t + 1), uuid7(t + 2)
    usage = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}
    with Journal(tmp_path, seal_interval=3600) as j:
        for rid, extra, answer in (
                (keyed, {}, {"usage": usage, "cost": {"amount": "0.00021", "currency": "USD",
                                                      "table": "genai-prices 0.2.5"}}),
                (paid, {"payment": {"scheme": "exact", "amount": "10000", "decimals": 6, "symbol": "USDC",
                                    "network": "eip155:8453", "payer": "0x" + "ab" * 20}}, {"usage": usage}),
                (unknown, {}, {"usage": usage})):
            j.write([Event("request", rid, {"logical_id": rid, "method": "POST", "host": "api.example",
                                            "path": "/v1/chat/completions", "model": "m", **extra}, ts=t),
                     Event("response", rid, {"status": 200, "latency_ms": 812.4, **answer}, ts=t + 0.8)])
    listed = receipts_cli("list", data=tmp_path).stdout.splitlines()
    assert listed[0].split() == ["receipt", "first", "seen", "(UTC)", "endpoint", "model", "status", "proof",
                                 "tokens", "latency", "cost", "source", "payer", "tx"]
    rows = {line.split()[0][:13]: " ".join(line.split()) for line in listed[2:]}
    assert "1100" in rows[keyed[:13]] and "812 ms" in rows[keyed[:13]] and "0.00021 USD price_table" in rows[keyed[:13]]
    assert "0.01 USDC x402" in rows[paid[:13]]
    assert "unknown unknown" in rows[unknown[:13]]
    as_json = json.loads(receipts_cli("list", "--json", data=tmp_path).stdout)
    assert {r["receipt_id"]: r["cost"] for r in as_json} == {keyed: "0.00021", paid: "0.01", unknown: None}
    shown = receipts_cli("show", keyed, data=tmp_path).stdout
    assert "tokens 1100 (1000 in, 100 out)   latency 812 ms" in shown
    assert "Cost          0.00021 USD (list price, genai-prices 0.2.5)" in shown
    assert "Cost          0.01 USDC (paid on chain)" in receipts_cli("show", paid, data=tmp_path).stdout
    audit = json.loads(receipts_cli("audit", "--format", "json", data=tmp_path).stdout)
    usage = audit["usage"]
    assert [(u["model"], u["receipts"], u["tokens"], u["list_price"], u["paid_on_chain"], u["cost_unknown"])
            for u in usage] == [("m", 3, 3300, "0.00021", 1, 1)]
    markdown = receipts_cli("audit", data=tmp_path).stdout
    assert "Tokens and cost per app and model" in markdown and "0.00021 USD" in markdown
