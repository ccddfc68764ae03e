"""A Solana x402 payment end to end: the real x402 httpx client with the exact SVM scheme → a real
`receipts proxy` (HTTPS, its CA) → the testbed's paid chat server, whose real x402 facilitator co-signs
the transaction as fee payer and lands it on a local SVM node (testbed/solana_node.py, LiteSVM).

One paid call is made for the whole module; the tests read what it moved on chain and what the recorder
filed: the decoded payment (payer = the token authority, asset = the mint, the amount, the fee payer),
the settlement's base58 signature as the payment hash, and none of the transaction's bytes or the
payer's signature anywhere in the data directory; then `receipts verify` over the node's JSON-RPC.

Real: the x402 SDK's client, server and facilitator; the SVM (LiteSVM) with the SPL programs; every
signature. Ours: the node's JSON-RPC layer, and commitment modelled by slots (testbed/solana_node.py).
"""
import base64
import json

import pytest
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from support.proc import ProxyProcess, receipts_cli, wait_for
from testbed.solana_node import b58decode
from testbed.stack import SOLANA_DEVNET, solana_stack

pytestmark = pytest.mark.filterwarnings("ignore:Client is deprecated:FutureWarning")

PRICE = 12_345  # 0.012345 test USDC
FUNDS = 5 * 10**6
BODY = {"model": "testbed-echo-1", "messages": [{"role": "user", "content": "pay me in SOL land"}]}


@pytest.fixture(scope="module")
def stack(tls):
    with solana_stack(price=PRICE, payer_funds=FUNDS, tls=tls) as s:
        yield s


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, tls):
    with ProxyProcess(tmp_path_factory.mktemp("data"), "--seal-interval", "0.1", upstream_ca=tls["ca"]) as p:
        yield p


def sql(proxy, query):
    out = receipts_cli("sql", "--json", query, data=proxy.data)
    assert out.returncode == 0, out.stderr
    return out.stdout


def show(proxy, key):
    out = receipts_cli("show", "--json", key, data=proxy.data)
    return json.loads(out.stdout) if out.returncode == 0 else None


@pytest.fixture(scope="module")
def paid(stack, proxy):
    """The one paid call (through the proxy, trusting its CA), with the balances around it and the receipt."""
    before = {"payee": stack.balance(stack.payee), "payer": stack.balance(stack.payer)}
    call = stack.pay(body=BODY, proxy=proxy.url, verify=proxy.ca)
    after = {"payee": stack.balance(stack.payee), "payer": stack.balance(stack.payer)}
    assert call.status == 200, (call.status, call.text, call.exchanges)
    signature = (call.payment_response or {}).get("transaction")
    assert signature, call.payment_response
    doc = wait_for(lambda: show(proxy, signature), timeout=20)
    return {"call": call, "signature": signature, "before": before, "after": after, "doc": doc}


def sent_transaction(call) -> tuple[str, VersionedTransaction]:
    """The client's partially signed transaction, as the base64 it sent and decoded."""
    wire = call.payment_signature["payload"]["transaction"]
    return wire, VersionedTransaction.from_bytes(base64.b64decode(wire))


def signature_of(tx: VersionedTransaction, pubkey) -> Signature:
    keys = list(tx.message.account_keys)[:tx.message.header.num_required_signatures]
    return tx.signatures[keys.index(pubkey)]


def test_the_paid_call_moves_the_price_to_the_payee(stack, paid):
    call, signature = paid["call"], paid["signature"]
    assert call.json()["choices"][0]["message"]["content"] == "You said: pay me in SOL land"
    assert [e.status for e in call.exchanges] == [402, 200]
    assert paid["after"]["payee"] - paid["before"]["payee"] == PRICE
    assert paid["before"]["payer"] - paid["after"]["payer"] == PRICE
    response = call.payment_response
    assert response["success"] is True and response["network"] == SOLANA_DEVNET
    assert response["payer"] == str(stack.payer.pubkey())
    # the settlement signature is the fee payer's signature of the very transaction the client signed
    landed = stack.node.transaction(signature)
    assert landed is not None and landed.err is None
    assert len(b58decode(signature)) == 64 and landed.tx.signatures[0] == Signature.from_string(signature)
    _, sent = sent_transaction(call)
    assert sent.message == landed.tx.message
    assert sent.signatures[0] == Signature.default(), "the client leaves the fee payer's slot empty"
    assert signature_of(sent, stack.payer.pubkey()) == signature_of(landed.tx, stack.payer.pubkey())
    assert stack.settlements()[-1]["transaction"] == signature


def test_the_receipt_names_the_solana_payment(stack, proxy, paid):
    signature = paid["signature"]
    r = paid["doc"]["receipt"]
    want = {
        "payer": str(stack.payer.pubkey()),     # the transfer's authority, base58
        "pay_to": str(stack.payee),             # the offer's payTo (the wallet, not its token account)
        "asset": str(stack.mint),
        "amount": PRICE,
        "network": SOLANA_DEVNET,
        "scheme": "exact",
        "kind": "svm",
        "payment_hash": signature,              # the settlement's signature, base58, case kept
    }
    assert {k: r.get(k) for k in want} == want, json.dumps(r, indent=2)
    assert r["status"] == 200 and r["settlement_success"] is True
    # the same rows through SQL: one receipt holds this payment
    rows = json.loads(sql(proxy, f"SELECT {', '.join(want)} FROM receipts WHERE payment_hash = '{signature}'"))
    assert rows == [want]


def test_no_transaction_or_payer_signature_is_kept(stack, proxy, paid):
    call = paid["call"]
    wire, sent = sent_transaction(call)
    payer_signature = bytes(signature_of(sent, stack.payer.pubkey()))
    secrets = {
        "the transaction (base64)": wire,
        "the PAYMENT-SIGNATURE header": call.paid.request_header("PAYMENT-SIGNATURE"),
        "the payer's signature (base58)": str(Signature.from_bytes(payer_signature)),
        "the payer's signature (base64)": base64.b64encode(payer_signature).decode(),
        "the payer's signature (hex)": payer_signature.hex(),
    }
    # every table and view `receipts sql` offers, each row as JSON
    tables = json.loads(sql(proxy, "SELECT DISTINCT table_schema, table_name FROM information_schema.tables"))
    assert {"events", "receipts", "payments", "requests"} <= {t["table_name"] for t in tables}
    union = " UNION ALL ".join(f"SELECT to_json(t)::VARCHAR AS j FROM \"{t['table_schema']}\".\"{t['table_name']}\" t"
                               for t in tables)
    surface = sql(proxy, f"SELECT string_agg(j, '\n') AS all_rows FROM ({union})")
    assert paid["signature"] in surface and str(stack.payer.pubkey()) in surface  # the query saw the receipt
    # and what the proxy wrote to disk as text (its journal)
    journal = "".join(f.read_text(errors="replace") for f in sorted(proxy.data.glob("journal/**/*.jsonl")))
    assert paid["signature"] in journal
    for name, secret in secrets.items():
        assert secret.lower() not in surface.lower(), f"{name} is in the query surface"
        assert secret.lower() not in journal.lower(), f"{name} is in the journal"


def test_receipts_verify_passes_it_once_finalized(stack, proxy, paid, tmp_path):
    """`receipts verify` over Solana JSON-RPC (the node's), with the facilitator's fee payer configured:
    pending while the transaction is only confirmed, passed once it is finalized."""
    config = tmp_path / "receipts.yaml"
    config.write_text(json.dumps({"networks": {SOLANA_DEVNET: {
        "rpc": stack.node.url, "facilitators": [str(stack.fee_payer.pubkey())]}}}))

    def verified():
        out = receipts_cli("verify", "--once", "--config", str(config), data=proxy.data, timeout=120)
        assert out.returncode == 0, out.stderr
        return show(proxy, paid["signature"])["receipt"]

    r = verified()
    assert (r["proof_status"], r["reason"]) == ("pending", "awaiting_finalization"), r
    stack.node.advance(32)
    r = verified()
    assert (r["proof_status"], r["reason"], r["trust"]) == ("passed", None, "single-node"), r
    latest = json.loads(sql(proxy, "SELECT \"check\", arg_max(result, observed_at) AS result FROM checks GROUP BY 1"))
    assert {c["check"]: c["result"] for c in latest} == {"signature": "pass", "terms": "pass", "settlement_tx": "pass",
                                                          "verdict": "passed"}
