"""The SDK's sign-in-with-x (SIWX) on the test bed: the real x402 server extension, storage and hooks on the
resource server, the real client extension signing in with the payer's key (EIP-191), through the real
facilitator and anvil."""

import http.client
import http.server
import threading
import time
import urllib.parse

import pytest

import x402  # noqa: F401  (installed by scripts/bootstrap: a missing package must fail, not skip)

from eth_account import Account
from eth_account.messages import encode_defunct
from x402.extensions.sign_in_with_x import format_siwe_message

from testbed.client import forged_siwx_signer
from testbed.stack import paid_stack

CHAT = {"model": "testbed-echo-1", "messages": [{"role": "user", "content": "sign me in"}]}
OTHER = Account.from_key("0x" + "5a" * 32)  # a wallet that never paid


@pytest.fixture(scope="module")
def stack():
    with paid_stack(chain_id=8453, siwx=True) as s:
        yield s


@pytest.fixture(scope="module")
def first(stack):
    """The payer's first call with SIWX on: the sign-in is refused (not paid yet), so the SDK pays."""
    before = (stack.balance(stack.payer), stack.balance(stack.payee))
    call = stack.pay(stack.chat_url, CHAT, siwx=True)
    return call, before, (stack.balance(stack.payer), stack.balance(stack.payee))


def _balances(s):
    return s.balance(s.payer), s.balance(s.payee)


def _signer_of(payload: dict) -> str:
    """The address that really signed a SIWX payload (EIP-191 over the SDK's SIWE message)."""
    message = format_siwe_message(payload, payload["address"])
    return Account.recover_message(encode_defunct(text=message), signature=payload["signature"])


def test_challenge_declares_siwx(stack, first):
    call, _, _ = first
    ext = call.siwx_challenge
    host = urllib.parse.urlsplit(stack.server_url).netloc
    assert ext["info"]["domain"] == host
    assert ext["info"]["uri"] == stack.chat_url and ext["info"]["resources"] == [stack.chat_url]
    assert ext["info"]["version"] == "1" and len(ext["info"]["nonce"]) == 32 and ext["info"]["issuedAt"]
    assert ext["supportedChains"] == [{"chainId": "eip155:8453", "type": "eip191"}]
    assert "signature" in ext["schema"]["required"]


def test_first_call_pays_then_siwx_is_free(stack, first):
    call, before, after = first
    assert call.status == 200, call.text
    # 402 → SIGN-IN-WITH-X retry → 402 (this wallet has not paid) → PAYMENT-SIGNATURE → 200
    assert [e.status for e in call.exchanges] == [402, 402, 200]
    assert call.exchanges[1].request_header("SIGN-IN-WITH-X")
    assert not call.exchanges[1].request_header("PAYMENT-SIGNATURE")
    assert call.paid is call.exchanges[2] and not call.exchanges[2].request_header("SIGN-IN-WITH-X")
    assert call.tx_hash and call.payment_response["payer"] == stack.payer.address
    assert after == (before[0] - stack.price, before[1] + stack.price)

    # the second call to the same resource: signed in, served, not paid
    again = stack.pay(stack.chat_url, CHAT, siwx=True)
    assert again.status == 200, again.text
    assert again.json()["choices"][0]["message"]["content"] == "You said: sign me in"
    assert [e.status for e in again.exchanges] == [402, 200]
    assert not any(e.request_header("PAYMENT-SIGNATURE") or e.request_header("X-PAYMENT") for e in again.exchanges)
    assert again.paid is None and again.payment_response is None
    assert _balances(stack) == after

    proof = again.sign_in_with_x
    assert proof["address"] == stack.payer.address and proof["type"] == "eip191"
    assert proof["chainId"] == "eip155:8453" and proof["uri"] == stack.chat_url
    assert proof["nonce"] == again.siwx_challenge["info"]["nonce"]  # this 402's fresh challenge
    assert _signer_of(proof) == stack.payer.address

    # sign_in(): the SIWX retry only, never a payment
    signed = stack.sign_in(stack.chat_url, CHAT)
    assert signed.status == 200 and [e.status for e in signed.exchanges] == [402, 200]
    assert _balances(stack) == after

    events = stack.siwx_events()["events"]
    assert {"type": "payment_recorded", "resource": "/v1/chat/completions",
            "address": stack.payer.address} in events
    assert [e["type"] for e in events].count("access_granted") >= 2


def test_forged_siwx_is_refused(stack, first):
    before = _balances(stack)
    forged = stack.sign_in(stack.chat_url, CHAT, signer=forged_siwx_signer(stack.payer.address, OTHER.key.hex()))
    assert forged.status == 402
    assert [e.status for e in forged.exchanges] == [402, 402]
    proof = forged.sign_in_with_x
    assert proof["address"] == stack.payer.address       # claims the wallet that paid…
    assert _signer_of(proof) == OTHER.address             # …but another key signed it
    assert not any(e.request_header("PAYMENT-SIGNATURE") for e in forged.exchanges)
    assert forged.payment_required["accepts"]            # the 402 again, still asking for money
    assert _balances(stack) == before
    last = stack.siwx_events()["events"][-1]
    assert last == {"type": "validation_failed", "resource": "/v1/chat/completions",
                    "error": "Signature verification failed"}

    # an honest sign-in by a wallet that never paid is no better
    unpaid = stack.sign_in(stack.chat_url, CHAT, private_key=OTHER.key.hex())
    assert unpaid.status == 402 and [e.status for e in unpaid.exchanges] == [402, 402]
    assert unpaid.sign_in_with_x["address"] == OTHER.address and _signer_of(unpaid.sign_in_with_x) == OTHER.address


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
                proxy.seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
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


def test_siwx_through_a_proxy(stack, first, monkeypatch):
    proxy = _ForwardProxy()
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        before = _balances(stack)
        call = stack.pay(stack.chat_url, CHAT, proxy=proxy.url, siwx=True)
        assert call.status == 200 and [e.status for e in call.exchanges] == [402, 200]
        assert [(m, u) for m, u, _ in proxy.seen] == [("POST", stack.chat_url)] * 2
        assert "sign-in-with-x" in proxy.seen[1][2] and "payment-signature" not in proxy.seen[1][2]

        # sign_in() from the environment's proxy, as pay() does
        for var in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("http_proxy", proxy.url)
        assert stack.sign_in(stack.chat_url, CHAT).status == 200 and len(proxy.seen) == 4
        assert stack.sign_in(stack.chat_url, CHAT, proxy=False).status == 200 and len(proxy.seen) == 4
        assert _balances(stack) == before
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_siwx_over_https(tls):
    t0 = time.monotonic()
    with paid_stack(chain_id=84532, price=2_500, tls=tls, siwx=True) as s:
        paid = s.pay(s.chat_url, CHAT, verify=tls["ca"], siwx=True)
        assert paid.status == 200 and paid.tx_hash and [e.status for e in paid.exchanges] == [402, 402, 200]
        assert paid.siwx_challenge["info"]["domain"] == urllib.parse.urlsplit(s.server_url).netloc
        assert paid.siwx_challenge["info"]["uri"].startswith("https://localhost:")
        balances = _balances(s)
        free = s.pay(s.chat_url, CHAT, verify=tls["ca"], siwx=True)
        assert free.status == 200 and free.paid is None and [e.status for e in free.exchanges] == [402, 200]
        assert free.sign_in_with_x["chainId"] == "eip155:84532"
        assert _balances(s) == balances
    assert time.monotonic() - t0 < 15
