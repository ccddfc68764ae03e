"""The chain test bed: real anvil, the test USDC, and the real x402 client, server and facilitator."""

import http.client
import http.server
import re
import secrets
import threading
import time
import urllib.parse

import pytest

import x402  # noqa: F401  (installed by scripts/bootstrap: a missing package must fail, not skip)

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import keccak
from web3.exceptions import ContractLogicError

from testbed import chain
from testbed.client import decode_header, env_proxy
from testbed.contracts.build import compile_contract, load_artifact, source_sha256
from testbed.node import ensure_node_tools, start_anvil
from testbed.stack import paid_stack

CHAT = {"model": "testbed-echo-1", "messages": [{"role": "user", "content": "how much is this?"}]}
TX_HASH = re.compile(r"0x[0-9a-f]{64}")


@pytest.fixture(scope="module")
def stack():
    with paid_stack(chain_id=8453) as s:
        yield s


def _token_logs(receipt: dict, token: str) -> list[dict]:
    return [log for log in receipt["logs"] if log["address"].lower() == token.lower()]


# --------------------------------------------------------------------------------------------
# The whole paid flow
# --------------------------------------------------------------------------------------------


def test_paid_call_settles_on_anvil(stack):
    payer_before, payee_before = stack.balance(stack.payer), stack.balance(stack.payee)

    call = stack.pay(stack.chat_url, CHAT)

    assert call.status == 200, call.text
    assert call.json()["choices"][0]["message"]["content"] == "You said: how much is this?"
    assert [e.status for e in call.exchanges] == [402, 200]

    # the challenge the real x402 middleware sent
    required = call.payment_required
    assert required["x402Version"] == 2
    assert required["accepts"] == [{
        "scheme": "exact", "network": "eip155:8453", "asset": stack.token, "amount": "10000",
        "payTo": stack.payee.address, "maxTimeoutSeconds": 300, "extra": {"name": "USD Coin", "version": "2"},
    }]
    # the payment the real x402 client signed
    sent = call.payment_signature
    auth = sent["payload"]["authorization"]
    assert sent["accepted"] == required["accepts"][0]
    assert (auth["from"], auth["to"], auth["value"]) == (stack.payer.address, stack.payee.address, "10000")
    assert re.fullmatch(r"0x[0-9a-f]{64}", auth["nonce"])

    # the settlement the real facilitator made
    settled = call.payment_response
    assert settled["success"] is True
    assert settled["network"] == "eip155:8453"
    assert settled["payer"] == stack.payer.address
    tx_hash = settled["transaction"]
    assert TX_HASH.fullmatch(tx_hash)

    receipt = stack.anvil.receipt(tx_hash)
    assert int(receipt["status"], 16) == 1
    tx = stack.anvil.rpc("eth_getTransactionByHash", tx_hash)
    assert tx["from"] == stack.facilitator.address.lower()
    assert tx["to"] == stack.token.lower()
    assert tx["input"][:10] == "0xe3ee160e"  # transferWithAuthorization(..., v, r, s)

    logs = _token_logs(receipt, stack.token)
    transfers = [log for log in logs if log["topics"][0] == chain.TRANSFER_TOPIC]
    assert [(t["topics"][1], t["topics"][2], int(t["data"], 16)) for t in transfers] == [
        (chain.topic_address(stack.payer.address), chain.topic_address(stack.payee.address), 10_000)]
    used = [log for log in logs if log["topics"][0] == chain.AUTHORIZATION_USED_TOPIC]
    assert [log["topics"][1:] for log in used] == [[chain.topic_address(stack.payer.address), auth["nonce"]]]

    assert stack.balance(stack.payer) == payer_before - 10_000
    assert stack.balance(stack.payee) == payee_before + 10_000
    assert chain.authorization_state(stack.rpc_url, stack.token, stack.payer.address, auth["nonce"]) is True
    assert tx_hash in [s["transaction"] for s in stack.settlements()]


def test_snapshot_revert_erases_the_settlement(stack):
    snap = stack.anvil.snapshot()
    before = stack.balance(stack.payer)
    call = stack.pay(stack.chat_url, CHAT)
    tx_hash = call.tx_hash
    assert tx_hash and int(stack.anvil.receipt(tx_hash)["status"], 16) == 1
    assert stack.balance(stack.payer) == before - 10_000

    stack.anvil.revert(snap)

    assert stack.anvil.receipt(tx_hash) is None
    assert stack.rpc_url and stack.anvil.rpc("eth_getTransactionByHash", tx_hash) is None
    assert stack.balance(stack.payer) == before
    # the facilitator's nonce follows the chain back, so the next payment settles at once
    again = stack.pay(stack.chat_url, CHAT)
    assert again.status == 200 and int(stack.anvil.receipt(again.tx_hash)["status"], 16) == 1


def test_streaming_answer_is_paid_too(stack):
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    call = stack.pay(stack.chat_url, body)
    assert call.status == 200
    assert call.header("content-type").startswith("text/event-stream")
    events = [line[len("data: "):] for line in call.text.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert '"usage"' in events[-2]
    assert call.payment_response["success"] is True and call.tx_hash


def test_handler_failure_is_not_settled(stack):
    before = stack.balance(stack.payer)
    call = stack.pay(stack.chat_url, CHAT, headers={"X-Testbed-Fail": "handler", "X-Testbed-Fail-Status": "503"})
    assert call.status == 503
    assert call.payment_response is None
    assert call.payment_signature is not None  # the client did sign and send a payment
    assert stack.balance(stack.payer) == before


def test_failure_after_settlement_keeps_the_receipt(stack):
    before = stack.balance(stack.payer)
    call = stack.pay(stack.chat_url, CHAT, headers={"X-Testbed-Fail": "after-settle"})
    assert call.status == 500
    assert call.json()["error"]["type"] == "server_error"
    assert call.payment_response["success"] is True
    assert int(stack.anvil.receipt(call.tx_hash)["status"], 16) == 1
    assert stack.balance(stack.payer) == before - 10_000


def test_unfunded_payer_is_refused_before_settlement(stack):
    call = stack.pay(stack.chat_url, CHAT, private_key=Account.create().key.hex())
    assert [e.status for e in call.exchanges] == [402, 402]  # the x402 client retries once, then gives up
    assert call.status == 402 and call.payment_response is None
    assert decode_header(call.header("PAYMENT-REQUIRED"))["error"] == "invalid_exact_evm_insufficient_balance"


class _ForwardProxy(http.server.ThreadingHTTPServer):
    """A tiny plain-HTTP forward proxy that remembers what went through it."""

    daemon_threads = True

    def __init__(self):
        self.seen: list[tuple[str, str, dict]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _forward(self):
                url = urllib.parse.urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
                proxy.seen.append((self.command, self.path, dict(self.headers)))
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
                conn.request(self.command, url.path + (f"?{url.query}" if url.query else ""), body, headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _forward

        proxy = self
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def forward_proxy():
    proxy = _ForwardProxy()
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    yield proxy
    proxy.shutdown()
    proxy.server_close()


def test_paid_call_through_a_proxy(stack, forward_proxy, monkeypatch):
    call = stack.pay(stack.chat_url, CHAT, proxy=forward_proxy.url)
    assert call.status == 200 and call.tx_hash
    assert [(m, u) for m, u, _ in forward_proxy.seen] == [("POST", stack.chat_url)] * 2
    assert "PAYMENT-SIGNATURE" in forward_proxy.seen[1][2]

    # the same, from the environment (what an app pointed at a recording proxy does)
    for var in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    monkeypatch.setenv("http_proxy", forward_proxy.url)
    call = stack.pay(stack.chat_url, CHAT)
    assert call.status == 200 and len(forward_proxy.seen) == 4


def test_env_proxy_resolution(monkeypatch):
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
                "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    assert env_proxy("https://api.example.com/v1") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:8080")
    assert env_proxy("https://api.example.com/v1") == "http://127.0.0.1:8080"
    assert env_proxy("http://api.example.com/v1") is None
    monkeypatch.setenv("NO_PROXY", "example.com")
    assert env_proxy("https://api.example.com/v1") is None


def test_https_server(tls):
    with paid_stack(chain_id=84532, price=2_500, tls=tls) as s:
        assert s.server_url.startswith("https://localhost:")
        call = s.pay(s.chat_url, CHAT, verify=tls["ca"])
        assert call.status == 200
        assert call.payment_required["accepts"][0]["network"] == "eip155:84532"
        assert call.payment_required["resource"]["url"] == s.chat_url
        receipt = s.anvil.receipt(call.tx_hash)
        transfer = next(log for log in receipt["logs"] if log["topics"][0] == chain.TRANSFER_TOPIC)
        assert int(transfer["data"], 16) == 2_500


# --------------------------------------------------------------------------------------------
# The token, the accounts, anvil, the tools
# --------------------------------------------------------------------------------------------


def test_dev_accounts_are_anvils(stack):
    accounts = stack.anvil.accounts()
    for acct in chain.ACCOUNTS.values():
        assert accounts[acct.index] == acct.address.lower()
        assert Account.from_key(acct.private_key).address == acct.address


def test_token_is_usdc_like(stack):
    c = chain.token_contract(stack.rpc_url, stack.token)
    assert (c.functions.name().call(), c.functions.version().call(), c.functions.decimals().call()) == (
        "USD Coin", "2", 6)
    domain = keccak(abi_encode(
        ["bytes32", "bytes32", "bytes32", "uint256", "address"],
        [keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
         keccak(text="USD Coin"), keccak(text="2"), 8453, stack.token]))
    assert c.functions.DOMAIN_SEPARATOR().call() == domain
    assert chain.TRANSFER_TOPIC == "0x" + keccak(text="Transfer(address,address,uint256)").hex()
    assert chain.AUTHORIZATION_USED_TOPIC == "0x" + keccak(text="AuthorizationUsed(address,bytes32)").hex()


def _authorization(stack, value=1234, valid_before=None, typ="TransferWithAuthorization"):
    msg = {"from": stack.payer.address, "to": stack.payee.address, "value": value, "validAfter": 0,
           "validBefore": valid_before or int(time.time()) + 600, "nonce": "0x" + secrets.token_hex(32)}
    fields = [{"name": "from", "type": "address"}, {"name": "to", "type": "address"},
              {"name": "value", "type": "uint256"}, {"name": "validAfter", "type": "uint256"},
              {"name": "validBefore", "type": "uint256"}, {"name": "nonce", "type": "bytes32"}]
    signed = Account.sign_typed_data(
        stack.payer.private_key,
        {"name": "USD Coin", "version": "2", "chainId": stack.chain_id, "verifyingContract": stack.token},
        {typ: fields}, msg)
    args = [msg["from"], msg["to"], msg["value"], msg["validAfter"], msg["validBefore"],
            bytes.fromhex(msg["nonce"][2:])]
    return args, signed


def test_bytes_signature_variant_and_revert_reasons(stack):
    w3 = stack.w3()
    c = chain.token_contract(w3, stack.token)
    by_bytes = c.get_function_by_signature(
        "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)")
    args, signed = _authorization(stack)
    tx_hash = by_bytes(*args, signed.signature).transact({"from": stack.facilitator.address})
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10)
    assert receipt["status"] == 1
    assert w3.eth.get_transaction(tx_hash)["input"][:4].hex() == "cf092995"
    topics = [log["topics"][0].to_0x_hex() for log in receipt["logs"]]
    assert topics == [chain.AUTHORIZATION_USED_TOPIC, chain.TRANSFER_TOPIC]

    # the phrases the x402 facilitator maps to its error codes
    with pytest.raises(ContractLogicError, match="authorization is used or canceled"):
        by_bytes(*args, signed.signature).call({"from": stack.facilitator.address})
    args, signed = _authorization(stack, valid_before=int(time.time()) - 10)
    with pytest.raises(ContractLogicError, match="authorization is expired"):
        by_bytes(*args, signed.signature).call()
    args, signed = _authorization(stack)
    with pytest.raises(ContractLogicError, match="invalid signature"):
        by_bytes(*args, signed.signature[:-1] + bytes([signed.signature[-1] ^ 1])).call()
    args, signed = _authorization(stack, value=10**18)
    with pytest.raises(ContractLogicError, match="transfer amount exceeds balance"):
        by_bytes(*args, signed.signature).call()

    # receiveWithAuthorization: only the payee may submit it
    receive = c.get_function_by_signature(
        "receiveWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)")
    args, signed = _authorization(stack, typ="ReceiveWithAuthorization")
    with pytest.raises(ContractLogicError, match="caller must be the payee"):
        receive(*args, signed.signature).call({"from": stack.facilitator.address})
    receive(*args, signed.signature).call({"from": stack.payee.address})


def test_anvil_mining_controls_and_stop():
    with start_anvil(chain_id=31337) as node:
        assert node.network == "eip155:31337"
        node.set_automine(False)
        tx_hash = node.rpc("eth_sendTransaction", {"from": chain.DEPLOYER.address, "to": chain.PAYEE.address,
                                                   "value": "0x1"})
        assert node.receipt(tx_hash) is None  # pending
        node.mine(2)
        assert node.receipt(tx_hash) is not None and node.block_number() == 2
        node.set_automine(True)
        proc = node.process
    assert proc.poll() is not None  # stopped on exit


def test_node_tools_install_is_idempotent():
    t0 = time.monotonic()
    tools = ensure_node_tools()
    assert tools.anvil.exists() and tools.solcjs.exists()
    assert ensure_node_tools() == tools
    assert time.monotonic() - t0 < 60


def test_committed_artifact_matches_a_rebuild():
    committed = load_artifact()
    assert committed["sourceSha256"] == source_sha256(), "TestUSDC.sol changed: run python -m testbed.contracts.build"
    selectors = {"0x" + keccak(text=f"{f['name']}({','.join(i['type'] for i in f['inputs'])})")[:4].hex()
                 for f in committed["abi"] if f["type"] == "function"}
    assert {"0xe3ee160e", "0xcf092995"} <= selectors
    fresh = compile_contract()
    assert fresh["bytecode"] == committed["bytecode"]
    assert fresh["abi"] == committed["abi"]
    wallet = load_artifact("TestWallet")
    assert wallet["sourceSha256"] == source_sha256("TestWallet"), "TestWallet.sol changed: run python -m testbed.contracts.build"
    assert compile_contract("TestWallet")["bytecode"] == wallet["bytecode"]


def test_decode_header_tolerates_missing_padding():
    assert decode_header("eyJhIjoxfQ") == {"a": 1}
    assert decode_header(None) is None
