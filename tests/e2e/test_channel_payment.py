"""Payment channels (x402 `batch-settlement`) end to end: the real x402 SDK's batch-settlement client →
a real `receipts proxy` (HTTPS, its CA) → the testbed's paid chat server (the SDK's server scheme and
channel manager, charging each call what `X-Testbed-Charge` says) and the SDK's facilitator, on anvil with
the test bed's channel contracts at the SDK's addresses (testbed/contracts/TestChannels.sol: ours,
written against the SDK's ABI; every signature and every token movement is real).

One channel for the module: a deposit call and two voucher calls, each charged less than the price; then
`receipts verify` while the channel is open (pending), after the server claims (passed, the claim as
payment hash), and after the payer's refund (the refund passes: deposit less claims came back). Then the
failure paths: a voucher that goes backwards, and a claim above every voucher the proxy saw.
"""
import base64
import json

import httpx
import pytest

from support.proc import ProxyProcess, receipts_cli, wait_for
from testbed.client import decode_header
from testbed.stack import channel_stack

pytestmark = pytest.mark.filterwarnings("ignore:Client is deprecated:FutureWarning")

PRICE = 10_000
CHARGES = (7_000, 2_500, 1_234)
BODY = {"model": "testbed-echo-1", "messages": [{"role": "user", "content": "pay as you go"}]}


@pytest.fixture(scope="module")
def stack(tls):
    with channel_stack(price=PRICE, tls=tls) as s:
        yield s


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, tls):
    with ProxyProcess(tmp_path_factory.mktemp("data"), "--seal-interval", "0.1", upstream_ca=tls["ca"]) as p:
        yield p


@pytest.fixture(scope="module")
def config(stack, tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "receipts.yaml"
    path.write_text(json.dumps(stack.receipts_config(confirmations=1)))
    return path


def sql(proxy, query) -> list[dict]:
    out = receipts_cli("sql", "--json", query, data=proxy.data)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def receipt(proxy, key) -> dict | None:
    out = receipts_cli("show", "--json", key, data=proxy.data)
    return json.loads(out.stdout)["receipt"] if out.returncode == 0 else None


def verify(proxy, config) -> None:
    out = receipts_cli("verify", "--once", "--config", str(config), data=proxy.data, timeout=120)
    assert out.returncode == 0, out.stderr


def by_request(proxy) -> dict[str, dict]:
    """Every receipt of a channel call, by each of its ids (the answer's `id` among them)."""
    rows = sql(proxy, "SELECT * FROM receipts WHERE channel_id IS NOT NULL")
    return {i: r for r in rows for i in r["ids"]}


@pytest.fixture(scope="module")
def calls(stack, proxy):
    """The channel's three paid calls, through the proxy; with the payee's balance before."""
    before = stack.balance(stack.payee)
    out = []
    for n, charge in enumerate(CHARGES):  # (each its own question: the same body again would be a retry)
        body = {**BODY, "messages": [{"role": "user", "content": f"question {n}"}]}
        call = stack.pay(body=body, proxy=proxy.url, verify=proxy.ca, charge=charge)
        assert call.status == 200, (call.status, call.text)
        out.append(call)
    ids = [c.json()["id"] for c in out]
    wait_for(lambda: all(i in by_request(proxy) for i in ids) or None, timeout=20)
    return {"calls": out, "ids": ids, "payee_before": before, "deposit_tx": out[0].payment_response["transaction"]}


def test_each_call_is_filed_with_its_charge_not_the_deposit(stack, proxy, calls):
    rows = by_request(proxy)
    channel = stack.channel_id()
    for request_id, charge, kind in zip(calls["ids"], CHARGES, ("channel_deposit", "channel_voucher", "channel_voucher")):
        r = rows[request_id]
        assert (r["kind"], r["scheme"], r["channel_id"]) == (kind, "batch-settlement", channel), r
        assert (r["payer"].lower(), r["pay_to"].lower()) == (stack.payer.address.lower(), stack.payee.address.lower())
        assert int(r["amount"]) == charge, r  # (the deposit call's answer said 100000: what was deposited)
        assert r["signer"].lower() == stack.payer.address.lower()
        assert r["payment_hash"] is None and r["proof_status"] == "pending"
    first = rows[calls["ids"][0]]
    assert (first["channel_tx"], int(first["deposit_amount"])) == (calls["deposit_tx"].lower(), int(first["channel_tx_amount"]))
    assert [int(rows[i]["charged_cumulative"]) for i in calls["ids"]] == [7_000, 9_500, 10_734]
    assert receipt(proxy, calls["deposit_tx"])["receipt_id"] == first["receipt_id"]  # the deposit tx finds its call


def test_the_channels_view_sums_the_channel(stack, proxy, calls):
    (row,) = sql(proxy, f"SELECT * FROM channels WHERE channel_id = '{stack.channel_id()}'")
    assert (row["calls"], int(row["charged"]), int(row["voucher_amount"])) == (3, sum(CHARGES), 7_000 + 2_500 + PRICE)
    assert int(row["deposited"]) == stack.channel()["balance"]


def test_without_an_rpc_every_call_says_so(proxy, calls, tmp_path):
    """A verify pass leaves no channel call `not_verified`: with no RPC for its network, it says why."""
    bare = tmp_path / "bare.yaml"
    bare.write_text(json.dumps({"networks": {}}))
    verify(proxy, bare)
    rows = by_request(proxy)
    assert {(rows[i]["proof_status"], rows[i]["reason"]) for i in calls["ids"]} == {("pending", "no_rpc_configured")}


def test_open_then_claimed_then_refunded(stack, proxy, calls, config):
    verify(proxy, config)
    rows = by_request(proxy)
    for request_id in calls["ids"]:
        assert (rows[request_id]["proof_status"], rows[request_id]["reason"]) == ("pending", "channel_open"), rows[request_id]
    checks = sql(proxy, "SELECT \"check\", result FROM checks c JOIN receipts r USING (receipt_id) "
                        f"WHERE list_contains(r.ids, '{calls['ids'][0]}') AND \"check\" = 'deposit'")
    assert checks == [{"check": "deposit", "result": "pass"}]

    claimed = stack.claim_and_settle()
    verify(proxy, config)
    rows = by_request(proxy)
    claim_tx = {r["payment_hash"] for r in (rows[i] for i in calls["ids"])}
    assert len(claim_tx) == 1 and None not in claim_tx, claim_tx
    (tx,) = claim_tx
    assert tx in json.dumps(claimed).lower()  # the claim the server's channel manager sent
    for request_id in calls["ids"]:
        r = rows[request_id]
        assert (r["proof_status"], r["resolution"], r["settlement_check"], r["trust"]) == \
            ("passed", None, "pass", "single-node"), r
    assert stack.balance(stack.payee) - calls["payee_before"] == sum(CHARGES)

    payer_before = stack.balance(stack.payer)
    refund = stack.refund(proxy=proxy.url, verify=proxy.ca)
    assert refund.ok, refund
    refunded = stack.balance(stack.payer) - payer_before
    assert refunded == int(by_request(proxy)[calls["ids"][0]]["deposit_amount"]) - sum(CHARGES)
    rows = wait_for(lambda: [r for r in sql(proxy, "SELECT * FROM receipts WHERE kind = 'channel_refund'")] or None,
                    timeout=20)
    verify(proxy, config)
    (r,) = sql(proxy, "SELECT * FROM receipts WHERE kind = 'channel_refund'")
    assert (r["proof_status"], r["reason"], int(r["channel_tx_amount"])) == ("passed", None, refunded), r
    detail = sql(proxy, "SELECT detail FROM checks WHERE \"check\" = 'refund' AND receipt_id = "
                        f"'{r['receipt_id']}'")[0]["detail"]
    detail = json.loads(detail) if isinstance(detail, str) else detail
    assert int(detail["due"]) == refunded and int(detail["claimed"]) == sum(CHARGES)


def b64(obj) -> str:
    return base64.b64encode(json.dumps(obj).encode()).decode()


def test_a_voucher_that_goes_backwards_fails(stack, proxy, config):
    """A second channel: one honest call, then a hand-made voucher (signed by the payer, for the channel)
    promising less than the channel was already charged. The server refuses it; the receipt says why."""
    salt = "0x" + "0b" * 32
    client = stack.new_client(salt=salt)
    body = {**BODY, "messages": [{"role": "user", "content": "backwards"}]}
    honest = stack.pay(body=BODY, proxy=proxy.url, verify=proxy.ca, charge=4_000, client=client)
    assert honest.status == 200
    config_ = stack.channel_config(salt=salt)
    voucher = stack.sign_voucher(1_000, channel_id=stack.channel_id(config_))
    with httpx.Client(proxy=proxy.url, verify=proxy.ca, trust_env=False, timeout=30) as c:
        challenge = c.post(stack.chat_url, json=body)
        assert challenge.status_code == 402
        required = decode_header(challenge.headers["payment-required"])
        payment = {"x402Version": 2, "accepted": required["accepts"][0], "resource": required.get("resource"),
                   "payload": {"type": "voucher", "channelConfig": config_.to_dict(), "voucher": voucher}}
        refused = c.post(stack.chat_url, json=body, headers={"PAYMENT-SIGNATURE": b64(payment)})
    assert refused.status_code != 200
    wait_for(lambda: sql(proxy, "SELECT * FROM receipts WHERE voucher_amount = 1000") or None, timeout=20)
    verify(proxy, config)
    (r,) = sql(proxy, "SELECT * FROM receipts WHERE voucher_amount = 1000")
    assert (r["proof_status"], r["reason"]) == ("failed", "voucher_backwards"), r


def test_a_claim_above_every_voucher_seen_is_risky(stack, proxy, config):
    """A third channel: one call through the proxy charged 3000; the payee then claims 50000 with a voucher
    the payer signed outside the proxy. The contract accepts it (it is the payer's signature); the
    receipts of that channel become risky."""
    salt = "0x" + "0c" * 32
    client = stack.new_client(salt=salt)
    body = {**BODY, "messages": [{"role": "user", "content": "claimed above"}]}
    call = stack.pay(body=body, proxy=proxy.url, verify=proxy.ca, charge=3_000, client=client)
    assert call.status == 200
    config_ = stack.channel_config(salt=salt)
    outside = stack.sign_voucher(50_000, channel_id=stack.channel_id(config_))
    stack.claim_on_chain([stack.voucher_claim(outside, config=config_)], with_signature=True)
    wait_for(lambda: receipt(proxy, call.json()["id"]), timeout=20)
    verify(proxy, config)
    r = receipt(proxy, call.json()["id"])
    assert (r["proof_status"], r["resolution"], r["reason"]) == ("passed", "risky", "claim_above_vouchers"), r
