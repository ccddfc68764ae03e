"""MPP `session` intents end to end: the real mppx 0.11.0 client and server run a session (a payment channel on
Tempo: open, a voucher per call, a top-up, close) through a real `receipts proxy` (HTTPS, its CA), on anvil at
chain 4217 with the test bed's channel reserve (testbed/mpp_session.py).

Every step is recorded with the payer, the channel and the cumulative amount its voucher signs; the receipts'
running `spent` and the channel's transactions are kept as the channel's (never as one call's payment); no
voucher signature or signed transaction is kept; and the verifier says such a step is not verified yet rather
than judge a channel transaction as a transfer."""
import json

import pytest

from support.proc import ProxyProcess, receipts_cli, wait_for
from testbed.mpp_session import mpp_session_stack

PRICE, DEPOSIT, CALLS = 10_000, 30_000, 4  # the fourth call needs a top-up


@pytest.fixture(scope="module")
def stack(tls):
    with mpp_session_stack(price=PRICE, suggested_deposit=DEPOSIT, tls=tls) as s:
        yield s


def sql(data, query) -> list[dict]:
    out = receipts_cli("sql", "--json", query, data=data)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_session_is_recorded_step_by_step_and_linked_by_its_channel(stack, tls, tmp_path):
    with ProxyProcess(tmp_path / "data", "--seal-interval", "0.1", upstream_ca=tls["ca"]) as proxy:
        run = stack.run_session(calls=CALLS, proxy=proxy.url, verify=proxy.ca)
        assert [c.status for c in run.calls] == [200] * CALLS
        channel = run.channel_id.lower()
        sent = [a for c in run.calls + [run.close] for a in c.authorizations()]
        rows = wait_for(lambda: (r := sql(proxy.data, "SELECT p.kind, p.payer, p.channel_id, p.voucher_amount, "
                                                      "p.deposit_amount, p.amount, p.payment_tx, p.signature_sha256 "
                                                      "FROM payments p ORDER BY sent_at")) and len(r) >= len(sent) and r,
                        timeout=30)
        assert {r["channel_id"] for r in rows} == {channel}
        assert {r["payer"].lower() for r in rows} == {stack.payer.address.lower()}
        kinds = [r["kind"] for r in rows]
        assert kinds[0] == "tempo_session_open" and "tempo_session_topUp" in kinds and kinds[-1] == "tempo_session_close"
        vouchers = [int(r["voucher_amount"]) for r in rows if r["voucher_amount"] is not None]
        assert vouchers == sorted(vouchers) and vouchers[-1] == PRICE * CALLS  # cumulative, as signed
        assert [int(r["deposit_amount"]) for r in rows if r["deposit_amount"]] == [DEPOSIT]  # the top-up
        assert all(r["amount"] is None for r in rows)  # a step's own charge is not in its credential
        assert rows[0]["payment_tx"] and all(r["signature_sha256"] for r in rows if r["voucher_amount"])

        settled = sql(proxy.data, "SELECT channel_id, channel_tx, charged_cumulative, tx_hash FROM settlements "
                                  "WHERE channel_id IS NOT NULL")
        assert settled and {s["channel_id"] for s in settled} == {channel}
        assert all(s["tx_hash"] is None for s in settled)  # the reference is the channel, not a transaction
        assert max(int(s["charged_cumulative"]) for s in settled) == PRICE * CALLS
        assert any(s["channel_tx"] for s in settled)  # the open's, the top-up's or the close's
        receipts = sql(proxy.data, "SELECT receipt_id, payment_hash FROM receipts WHERE channel_id IS NOT NULL")
        assert receipts and all(r["payment_hash"] != channel for r in receipts)

        secrets = [a["payload"].get(k) for a in sent for k in ("signature", "transaction") if a["payload"].get(k)]
        events = "".join(p.read_text(errors="replace") for p in (proxy.data / "journal").rglob("*.jsonl")) \
            + sql(proxy.data, "SELECT string_agg(data::VARCHAR, '') AS d FROM events")[0]["d"]
        assert secrets and not [s for s in secrets if s[2:40] in events]

        config = tmp_path / "receipts.yaml"
        config.write_text(json.dumps({"networks": {"eip155:4217": {"rpc": stack.rpc_url, "confirmations": 1}}}))
        out = receipts_cli("verify", "--once", "--config", str(config), data=proxy.data, timeout=120)
        assert out.returncode == 0, out.stderr
        statuses = sql(proxy.data, "SELECT DISTINCT proof_status, reason FROM receipts WHERE channel_id IS NOT NULL")
        assert statuses == [{"proof_status": "pending", "reason": "unsupported_payment"}]
