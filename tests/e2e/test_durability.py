"""Nothing lost, nothing leaked: kill -9 under load, readers while capturing, a full disk, secrets."""
import json
import os
import random
import ssl
import stat
import subprocess
import sys
import threading
import time
import uuid

import duckdb
import httpx
import pytest

from support import upstream as U
from support import x402_wire as W
from support.proc import ProxyProcess, receipts_cli, wait_for


def load(proxy, url, stop, received, ca, paid_every=0):
    """One app thread: sequential calls with unique X-Request-Id until stopped or the proxy dies."""
    n = 0
    with httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=ca), timeout=10) as c:
        while not stop.is_set():
            rid, n = str(uuid.uuid4()), n + 1
            headers = {"X-Request-Id": rid}
            if paid_every and n % paid_every == 0:
                pay = W.payment_v2_eip3009({"payTo": U.PAY_TO, "asset": U.ASSET, "scheme": "exact",
                                            "network": U.NETWORK, "amount": str(U.AMOUNT)}, W.random_address(),
                                           U.AMOUNT, W.random_nonce_hex(), 0, 2**31, W.random_signature())
                headers["PAYMENT-SIGNATURE"] = W.b64json(pay)
            try:
                r = c.post(url, json={"model": "m", "messages": [{"role": "user", "content": rid}]}, headers=headers)
            except httpx.HTTPError:
                return
            if r.status_code == 200:
                received.add(rid)


def run_load(proxy, url, seconds, ca, threads=4, paid_every=0):
    stop, received = threading.Event(), set()
    workers = [threading.Thread(target=load, args=(proxy, url, stop, received, ca, paid_every)) for _ in range(threads)]
    for w in workers:
        w.start()
    return stop, received, workers


@pytest.mark.parametrize("moment, extra, kills", [
    ("under load", (), 20),
    ("during folds", ("--seal-interval", "0.05", "--compact-after", "2", "--compact-grace", "0.3"), 12)])
def test_kill_9_at_random_moments_loses_nothing(tmp_path, tls, upstream, fault_report, moment, extra, kills):
    data = tmp_path / "data"
    proxy = ProxyProcess(data, "--seal-interval", "0.2", *extra, upstream_ca=tls["ca"])
    rng = random.Random(20261124)
    reached, received = set(), set()
    for _ in range(kills):
        httpx.delete(f"{upstream}/_seen", verify=ssl.create_default_context(cafile=tls["ca"]))
        proxy.start()
        stop, got, workers = run_load(proxy, f"{upstream}/v1/chat/completions", 0, proxy.ca, paid_every=3)
        time.sleep(rng.uniform(0.3, 1.2))
        proxy.kill()
        stop.set()
        for w in workers:
            w.join(15)
        received |= got
        seen = httpx.get(f"{upstream}/_seen", verify=ssl.create_default_context(cafile=tls["ca"])).json()
        reached |= {s["headers"]["x-request-id"] for s in seen if "x-request-id" in s["headers"]}
    proxy.start()  # recovers what the last kill left unsealed
    proxy.stop()

    con = duckdb.connect(str(data / "receipts.duckdb"), read_only=True)
    requests = {r for (r,) in con.execute(
        "SELECT data->>'$.ids.client_request_id' FROM events WHERE type = 'request'").fetchall()}
    answered = {r for (r,) in con.execute(
        "SELECT q.data->>'$.ids.client_request_id' FROM events q JOIN events a USING (receipt_id) "
        "WHERE q.type = 'request' AND a.type = 'response' AND (a.data->>'$.status')::INT = 200").fetchall()}
    total, distinct = con.execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone()
    per_writer = con.execute("SELECT count(*), count(DISTINCT seq) FROM events WHERE writer = 'proxy'").fetchone()
    partial = con.execute("SELECT count(*) FROM events WHERE type = 'request' AND "
                          "((data->>'$.method') IS NULL OR (data->>'$.logical_id') IS NULL)").fetchone()[0]
    parquet = list((data / "tables").glob("*/*.parquet"))
    orphans = list(data.rglob("*.tmp"))
    assert len(reached) > 100 and len(received) > 100
    assert reached - requests == set(), "a request reached the upstream but is not in the journal"
    assert received - answered == set(), "a response reached the client but is not in the journal"
    assert total == distinct and per_writer[0] == per_writer[1], "duplicated records"
    assert partial == 0
    assert orphans == [], "temporary files of interrupted folds are gone after a restart"
    if moment == "during folds":
        assert len(parquet) >= kills // 2, "the fold ran between the kills"
    fault_report(f"kill -9 {moment}", kills=kills, requests_upstream=len(reached), answers_client=len(received),
                 lost=len(reached - requests) + len(received - answered), duplicated=total - distinct,
                 parquet_files=len(parquet))


def test_queries_never_fail_and_counts_never_go_back_while_capturing(tmp_path, tls, upstream):
    data = tmp_path / "data"
    with ProxyProcess(data, "--seal-interval", "0.1", "--compact-after", "5", "--compact-grace", "1",
                      upstream_ca=tls["ca"]) as proxy:
        stop, received, workers = run_load(proxy, f"{upstream}/v1/free/chat/completions", 0, proxy.ca)
        cli_counts, api_counts, errors = [], [], []
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                out = receipts_cli("sql", "--csv", "SELECT count(*) AS n FROM calls", data=data)
                if out.returncode:
                    errors.append(out.stderr)
                else:
                    cli_counts.append(int(out.stdout.split()[1]))
                for _ in range(5):  # the file is a snapshot of the last fold: each open sees the newest
                    try:
                        with duckdb.connect(str(data / "receipts.duckdb"), read_only=True) as con:
                            api_counts.append(con.execute("SELECT count(*) FROM calls").fetchone()[0])
                    except duckdb.Error as exc:
                        errors.append(str(exc))
        finally:
            stop.set()
            for w in workers:
                w.join(15)
    compacted = list((data / "tables" / "events").glob("*.parquet"))
    assert errors == []
    assert len(cli_counts) > 3 and len(api_counts) > 15
    assert cli_counts == sorted(cli_counts) and api_counts == sorted(api_counts)
    assert api_counts[-1] > api_counts[0], "the file's counts grew with the folds while the proxy captured"
    assert cli_counts[-1] > cli_counts[0], "the CLI's counts (tables and tail) grew while the proxy captured"
    assert len(compacted) >= 2, "the fold ran during the test"
    final = duckdb.connect(str(data / "receipts.duckdb"), read_only=True)
    assert final.execute("SELECT count(*), count(DISTINCT receipt_id) FROM calls").fetchone()[0] >= len(received)


SECRETS = {
    "authorization": "Bearer sk-live-TOPSECRET-4f9a8b7c6d5e",
    "x-api-key": "sk-ant-SECRETKEY-0192837465",
    "cookie": "session=COOKIESECRET-77aa99bb",
    "api-key": "AZURE-KEY-SECRET-5566",
    "x-session-tok": "SESSIONTOK-SECRET-3141",
}
# an app of its own, with secrets on its command line as flags and as NAME=value (python -c: argv[1:4] are its inputs)
CLIENT = """import sys, httpx
proxy, ca, url = sys.argv[1:4]
with httpx.Client(proxy=proxy, verify=ca, timeout=10) as c:
    c.post(url, json={"model": "m", "messages": []})
"""


@pytest.mark.parametrize("bodies", ["hash", "full"])
def test_no_secret_reaches_the_data_directory(tmp_path, tls, upstream, bodies, fault_report):
    data = tmp_path / "data"
    signature = W.random_signature()
    approval_tx = "0x02f8" + "ab" * 100
    on_command_lines = ["sk-cmdline-" + uuid.uuid4().hex, "CMDFLAG-SECRET-" + uuid.uuid4().hex,
                        "CMDENV-SECRET-" + uuid.uuid4().hex]
    free = f"{upstream}/v1/free/chat/completions"
    with ProxyProcess(data, "--seal-interval", "0.1", "--bodies", bodies, upstream_ca=tls["ca"]) as proxy:
        with httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=proxy.ca), timeout=10) as c:
            accepted = W.unb64json(c.post(f"{upstream}/v1/chat/completions", json={"model": "m"})
                                   .headers["payment-required"])["accepts"][0]
            pay = W.payment_v2_eip3009(accepted, W.random_address(), U.AMOUNT, W.random_nonce_hex(), 0, 2**31, signature)
            pay["extensions"] = {"erc20ApprovalGasSponsoring": {"info": {"signedTransaction": approval_tx}}}
            header = W.b64json(pay)
            in_string = json.dumps({"token": "JSONSTRING-SECRET-1618", "note": "kept"})
            r = c.post(f"{upstream}/v1/chat/completions?api_key=QUERYSECRET-1234&x_session_tok=QUERYTOK-2718",
                       json={"model": "m", "api_key": "BODYSECRET-9988", "messages": [
                           {"role": "user", "content": "kept"}, {"role": "user", "content": in_string}]},
                       headers={**SECRETS, "PAYMENT-SIGNATURE": header})
            assert r.status_code == 200
            c.post(f"{upstream}/v1/legacy/chat/completions", json={"model": "m"},
                   headers={**SECRETS, "X-PAYMENT": header, "Proxy-Authorization": "Basic UFJPWFlTRUNSRVQ="})
            c.post(free, content=b"model=m&api_key=FORMSECRET-5772&prompt=kept",
                   headers={"content-type": "application/x-www-form-urlencoded"})
        sent = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-H", f"Authorization: Bearer {on_command_lines[0]}",
                               "-H", "content-type: application/json", "-d", '{"model": "m", "messages": []}', free],
                              env=proxy.client_env(), capture_output=True, text=True, timeout=30)
        assert sent.returncode == 0, sent.stderr
        sent = subprocess.run([sys.executable, "-c", CLIENT, proxy.url, proxy.ca, free, "--api-key", on_command_lines[1],
                               f"OPENAI_API_KEY={on_command_lines[2]}"], capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        wait_for(lambda: receipts_cli("sql", "--csv", "SELECT count(*) FROM payments", data=data).stdout.split()[1] == "2"
                 and receipts_cli("sql", "--csv", "SELECT count(*) FROM calls", data=data).stdout.split()[1] == "6")
    apps = {r["app_name"]: r for r in json.loads(receipts_cli(
        "sql", "--json", "SELECT app_name, client_exe, client_cmdline FROM calls", data=data).stdout)}
    assert apps["curl"]["client_exe"].endswith("/curl") and "Authorization: [redacted sha256:" in apps["curl"]["client_cmdline"]
    script = next(r for name, r in apps.items() if name.startswith("python") and "--api-key" in r["client_cmdline"])
    assert "--api-key [redacted sha256:" in script["client_cmdline"] and "OPENAI_API_KEY=[redacted" in script["client_cmdline"]
    needles = [v.encode() for v in SECRETS.values()] + [s.encode() for s in on_command_lines] + [
        b"TOPSECRET", b"QUERYSECRET-1234", b"QUERYTOK-2718", b"BODYSECRET-9988", b"JSONSTRING-SECRET-1618",
        b"FORMSECRET-5772", b"SESSIONTOK-SECRET", b"UFJPWFlTRUNSRVQ=", signature.encode(), signature[2:].encode(),
        approval_tx.encode(), header.encode(), header[:60].encode()]
    files = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.suffix == ".jsonl" and p.stat().st_size for p in files)
    kept = b"".join(p.read_bytes() for p in files if p.suffix == ".jsonl")
    assert (b"kept" in kept) == (bodies == "full"), "full mode keeps the (redacted) bodies, hash mode does not"
    exports = tmp_path / "exports"
    exports.mkdir()
    for fmt, view in (("jsonl", "calls"), ("csv", "calls"), ("har", "calls"), ("jsonl", "payments"), ("jsonl", "receipts")):
        done = receipts_cli("export", "--format", fmt, "--view", view, "--out", str(exports / f"{view}.{fmt}"), data=data)
        assert done.returncode == 0, done.stderr
    outputs = [receipts_cli("sql", "--json", "SELECT * FROM calls", data=data).stdout.encode(),
               receipts_cli("audit", "--format", "json", data=data).stdout.encode()]
    assert b"[redacted sha256:" in outputs[0]
    for path, blob in [*((p, p.read_bytes()) for p in files + sorted(exports.iterdir())),
                       ("receipts sql", outputs[0]), ("receipts audit", outputs[1])]:
        for needle in needles:
            assert needle not in blob, f"{needle[:20]!r} found in {path}"
    fault_report(f"secrets scan (bodies: {bodies})", secrets_sent=len(needles), files_scanned=len(files), found=0)


def _open_to_others(*roots) -> list[str]:
    """Every path under `roots` (and the roots) that its group or other users can read, write or enter."""
    paths = [p for r in roots for p in (r, *r.rglob("*"))]
    return sorted(f"{oct(stat.S_IMODE(p.lstat().st_mode))} {p}" for p in paths
                  if not p.is_symlink() and p.lstat().st_mode & 0o077)


def test_everything_written_is_private_secrets_included(tmp_path, tls, upstream):
    """A proxy run with traffic and compaction, a verify pass, exports, an audit report and `receipts serve`:
    no file is readable, no directory enterable, by anyone but the user."""
    from support.serve import ServeProcess

    data, out = tmp_path / "data", tmp_path / "out"
    with ProxyProcess(data, "--seal-interval", "0.1", "--compact-after", "2", "--compact-grace", "0.3",
                      upstream_ca=tls["ca"]) as proxy:
        with httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=proxy.ca), timeout=10) as c:
            for i in range(10):
                assert c.post(f"{upstream}/v1/free/chat/completions", json={"model": "m", "messages": []}).status_code == 200
                time.sleep(0.15)  # one sealed segment each
        journal = data / "journal"
        wait_for(lambda: list((data / "tables").glob("*/*.parquet"))
                 and [p for p in journal.glob("proxy-*.jsonl") if p.stat().st_size == 0], timeout=20)  # emptied slots
    assert receipts_cli("verify", "--once", data=data).returncode in (0, 1)
    out.mkdir()
    for fmt in ("parquet", "csv", "har"):
        assert receipts_cli("export", "--format", fmt, "--out", str(out / f"receipts.{fmt}"), data=data).returncode == 0
    assert receipts_cli("audit", "--format", "html", "--out", str(out / "audit.html"), data=data).returncode == 0
    serve = ServeProcess(data).start()
    serve.stop()
    names = {p.name for p in data.rglob("*")}
    assert {"receipts.duckdb", "proxy.state", "verifier.lock", "mitmproxy-ca.pem", "mitmproxy-ca-cert.pem"} <= names
    assert len(list(out.iterdir())) == 4
    assert _open_to_others(data, *out.iterdir()) == []


def test_an_old_world_readable_data_directory_keeps_its_secrets_private_at_start(tmp_path, tls, upstream):
    """A data directory an older version left 0755/0644 is made private when the recorder starts, here
    under the user's own `mitmdump -s addon/script.py` (the addon sets the umask itself)."""
    data = tmp_path / "data"
    with ProxyProcess(data, "--seal-interval", "0.1", upstream_ca=tls["ca"]) as proxy:
        with httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=proxy.ca), timeout=10) as c:
            c.post(f"{upstream}/v1/free/chat/completions", json={"model": "m", "messages": []})
    notes = data / "notes.txt"  # the user's own file beside the data: not the project's to change
    notes.write_text("mine")
    for p in (data, *data.rglob("*")):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    assert len(_open_to_others(data)) > 10
    with ProxyProcess(data, upstream_ca=tls["ca"], mitmdump=True) as proxy:
        with httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=proxy.ca), timeout=10) as c:
            assert c.post(f"{upstream}/v1/free/chat/completions", json={"model": "m", "messages": []}).status_code == 200
        wait_for(lambda: receipts_cli("sql", "--csv", "SELECT count(*) FROM calls", data=data).stdout.split()[1] == "2")
    assert _open_to_others(data) == [f"0o644 {notes}"]
    assert proxy.output().count("was readable by other users; made") == 1, proxy.output()


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 2 MiB filesystem, so the journal meets a real ENOSPC (needs root, as CI has)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.fail(f"this test needs to mount a tmpfs (root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_refuses_paid_requests_and_lets_unpaid_through(tiny_disk, tls, upstream, fault_report):
    data = tiny_disk / "data"
    with ProxyProcess(data, "--seal-interval", "0.1", upstream_ca=tls["ca"]) as proxy:
        filler = tiny_disk / "filler"
        with open(filler, "wb") as f:  # fill the disk to the last byte
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        with httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=proxy.ca), timeout=10) as c:
            for _ in range(3):  # small writes may still fit in a partly used block: fill those too
                c.post(f"{upstream}/v1/free/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x" * 3000}]})
            pay = W.payment_v2_eip3009({"payTo": U.PAY_TO, "asset": U.ASSET, "scheme": "exact", "network": U.NETWORK,
                                        "amount": "1"}, W.random_address(), U.AMOUNT, W.random_nonce_hex(), 0, 2**31,
                                       W.random_signature())
            httpx.delete(f"{upstream}/_seen", verify=ssl.create_default_context(cafile=tls["ca"]))
            paid = c.post(f"{upstream}/v1/chat/completions", json={"model": "m"}, headers={"PAYMENT-SIGNATURE": W.b64json(pay)})
            free = c.post(f"{upstream}/v1/free/chat/completions", json={"model": "m"})
        seen = httpx.get(f"{upstream}/_seen", verify=ssl.create_default_context(cafile=tls["ca"])).json()
        assert paid.status_code == 503 and paid.headers["x-receipts-error"] == "journal-unavailable"
        assert "did not forward this paid request" in paid.json()["error"]["message"]
        assert free.status_code == 200, "unpaid traffic keeps flowing"
        assert "x-receipt-id" not in free.headers, "no receipt id for a call that could not be recorded"
        assert [s["path"] for s in seen] == ["/v1/free/chat/completions"], "the paid request never left"
        assert "JOURNAL WRITE FAILED" in wait_for(lambda: "JOURNAL WRITE FAILED" in proxy.output() and proxy.output())
        filler.unlink()
        with httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=proxy.ca), timeout=10) as c:
            again = wait_for(lambda: (r := c.post(f"{upstream}/v1/chat/completions", json={"model": "m"},
                                                  headers={"PAYMENT-SIGNATURE": W.b64json(pay)})).status_code == 200 and r)
        assert "x-receipt-id" in again.headers, "recording resumes once there is room again"
    fault_report("disk full", paid_refused=int(paid.status_code == 503), paid_reached_upstream=len(seen) - 1,
                 unpaid_passed=int(free.status_code == 200), stamped_unrecorded=int("x-receipt-id" in free.headers))
