"""Paid calls with the ``x402`` package's own httpx client (exact EVM scheme, EIP-3009 signatures).

:func:`pay` sends a request; on 402 the x402 transport signs the challenge with the payer's key and
retries with ``PAYMENT-SIGNATURE``. The result (:class:`PaidCall`) holds the final response and
every HTTP exchange on the way (the 402, the paid retry), with decoded x402 headers.

Proxy: the x402 httpx client passes its own transport, and httpx then ignores ``HTTP(S)_PROXY``; so
this module resolves the proxy itself: ``proxy="http://127.0.0.1:8080"`` explicitly, ``proxy=None``
(default) from ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` honouring ``NO_PROXY``, ``proxy=False`` for
a direct connection. TLS verification: ``verify`` (bool, CA file path or ``ssl.SSLContext``); by
default the ``SSL_CERT_FILE`` CA if set (as for a recording proxy's CA), else the system default.

Payment channels (the SDK's ``batch-settlement`` scheme): :func:`batch_settlement_client` builds an
``x402Client`` with the scheme's client registered (pass it to :func:`pay` as ``x402_client``; keep it for
the channel's later calls, it holds the channel state), and :func:`refund` sends the client's cooperative
refund request the same way (same proxy and TLS rules), recording its exchanges.

Sign-in-with-x (the SDK's ``sign-in-with-x`` extension, on a server started with ``siwx=True``):
``pay(..., siwx=True)`` registers the SDK's SIWX client extension (``create_siwx_client_extension``) on the
x402 client: on a 402 that declares it, the SDK first retries with a ``SIGN-IN-WITH-X`` header (the
challenge signed with the payer's key, EIP-191), and pays only if that retry is refused too. So a wallet
that already paid for the resource gets it without paying again. :func:`sign_in` does the sign-in retry
only and never pays (the refused retry's 402 is the answer); with :func:`forged_siwx_signer` it sends a
forged proof (another key's signature over a message naming the victim's address). Both keep ``proxy``
and ``verify`` exactly as :func:`pay` does.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import os
import ssl
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .chain import PAYER

PAYMENT_REQUIRED = "PAYMENT-REQUIRED"
PAYMENT_SIGNATURE = "PAYMENT-SIGNATURE"
PAYMENT_RESPONSE = "PAYMENT-RESPONSE"
SIGN_IN_WITH_X = "SIGN-IN-WITH-X"


def decode_header(value: str | None) -> Any:
    """An x402 header value (standard base64 of UTF-8 JSON) as Python data; None stays None."""
    if value is None:
        return None
    raw = value.strip()
    return json.loads(base64.b64decode(raw + "=" * (-len(raw) % 4)).decode("utf-8"))


def _get(headers: list[tuple[str, str]], name: str) -> str | None:
    name = name.lower()
    return next((v for k, v in headers if k.lower() == name), None)


@dataclass
class Exchange:
    """One HTTP request/response pair as the client saw it (headers keep their wire case)."""

    method: str
    url: str
    request_headers: list[tuple[str, str]]
    status: int
    response_headers: list[tuple[str, str]]

    def request_header(self, name: str) -> str | None:
        return _get(self.request_headers, name)

    def response_header(self, name: str) -> str | None:
        return _get(self.response_headers, name)


@dataclass
class PaidCall:
    """What a paid call came to: the final response, and the exchanges that led to it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    exchanges: list[Exchange] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        return _get(self.headers, name)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def challenge(self) -> Exchange | None:
        """The exchange that got the 402."""
        return next((e for e in self.exchanges if e.status == 402), None)

    @property
    def paid(self) -> Exchange | None:
        """The exchange that carried the payment (``PAYMENT-SIGNATURE`` or ``X-PAYMENT``)."""
        return next((e for e in reversed(self.exchanges)
                     if e.request_header(PAYMENT_SIGNATURE) or e.request_header("X-PAYMENT")), None)

    @property
    def payment_required(self) -> dict | None:
        """Decoded ``PAYMENT-REQUIRED`` of the 402."""
        c = self.challenge
        return decode_header(c.response_header(PAYMENT_REQUIRED)) if c else None

    @property
    def payment_signature(self) -> dict | None:
        """Decoded ``PAYMENT-SIGNATURE`` the client sent (holds a live signature: a secret)."""
        p = self.paid
        return decode_header(p.request_header(PAYMENT_SIGNATURE) or p.request_header("X-PAYMENT")) if p else None

    @property
    def payment_response(self) -> dict | None:
        """Decoded ``PAYMENT-RESPONSE`` of the final response."""
        return decode_header(self.header(PAYMENT_RESPONSE) or self.header("X-PAYMENT-RESPONSE"))

    @property
    def tx_hash(self) -> str | None:
        pr = self.payment_response or {}
        tx = pr.get("transaction")
        return tx if isinstance(tx, str) and len(tx) == 66 and tx.startswith("0x") else None

    @property
    def signed_in(self) -> Exchange | None:
        """The (last) exchange that carried a ``SIGN-IN-WITH-X`` proof."""
        return next((e for e in reversed(self.exchanges) if e.request_header(SIGN_IN_WITH_X)), None)

    @property
    def sign_in_with_x(self) -> dict | None:
        """Decoded ``SIGN-IN-WITH-X`` the client sent (the SIWX payload: domain, address, nonce, signature…)."""
        s = self.signed_in
        return decode_header(s.request_header(SIGN_IN_WITH_X)) if s else None

    @property
    def siwx_challenge(self) -> dict | None:
        """The ``sign-in-with-x`` extension the 402 declared (info, supportedChains, schema)."""
        return ((self.payment_required or {}).get("extensions") or {}).get("sign-in-with-x")


def env_proxy(url: str) -> str | None:
    """The proxy the environment asks for ``url`` (``<SCHEME>_PROXY``/``ALL_PROXY``, minus ``NO_PROXY``)."""
    proxies = urllib.request.getproxies_environment()
    parts = urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass_environment(parts.hostname, proxies):
        return None
    return proxies.get(parts.scheme) or proxies.get("all") or None


def _ssl_verify(verify: Any) -> Any:
    if isinstance(verify, ssl.SSLContext) or verify is False:
        return verify
    if isinstance(verify, (str, os.PathLike)):
        return ssl.create_default_context(cafile=os.fspath(verify))
    cafile = os.environ.get("SSL_CERT_FILE")
    if verify is None and cafile:
        return ssl.create_default_context(cafile=cafile)
    return True


def _x402_client(private_key: str, spend_controls: Any):
    from eth_account import Account
    from x402 import x402Client
    from x402.mechanisms.evm.exact import register_exact_evm_client
    from x402.mechanisms.evm.signers import EthAccountSigner

    client = x402Client()
    client.set_spend_controls(spend_controls)
    register_exact_evm_client(client, EthAccountSigner(Account.from_key(private_key)))
    return client


def batch_settlement_client(private_key: str = PAYER.private_key, *, network: str, spend_controls: Any = None,
                            salt: str | None = None, deposit_multiplier: int | None = None,
                            deposit_strategy: Any = None):
    """``(x402Client, scheme)``: an async x402 client paying ``network`` with the SDK's batch-settlement client
    scheme (EIP-712 vouchers and deposits signed with ``private_key``; the channel state in the scheme's
    in-memory storage). ``salt`` (bytes32 hex, default zero) picks the channel among those with the same
    parties; ``deposit_multiplier`` (≥ 3) and ``deposit_strategy`` size the deposits (the SDK's options);
    ``spend_controls`` as for :func:`pay_async` (default: any asset, no cap)."""
    from eth_account import Account
    from x402 import x402Client
    from x402.mechanisms.evm.batch_settlement.client import (
        BatchSettlementDepositPolicy,
        BatchSettlementEvmScheme,
        BatchSettlementEvmSchemeOptions,
    )
    from x402.mechanisms.evm.signers import EthAccountSigner

    scheme = BatchSettlementEvmScheme(EthAccountSigner(Account.from_key(private_key)), BatchSettlementEvmSchemeOptions(
        deposit_policy=BatchSettlementDepositPolicy(deposit_multiplier) if deposit_multiplier else None,
        deposit_strategy=deposit_strategy, salt=salt))
    client = x402Client()
    client.set_spend_controls(spend_controls or {"allowed_assets": True})
    client.register(network, scheme)
    return client, scheme


@dataclass
class RefundCall:
    """A batch-settlement refund request as the client made it: the probe (402) and the signed request."""

    settle_response: dict | None
    """Decoded ``PAYMENT-RESPONSE`` of the refund (None if the SDK gave up, see ``error``)."""
    exchanges: list[Exchange] = field(default_factory=list)
    body: bytes = b""
    """The last answer's body."""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool((self.settle_response or {}).get("success"))

    @property
    def paid(self) -> Exchange | None:
        return next((e for e in reversed(self.exchanges) if e.request_header(PAYMENT_SIGNATURE)), None)

    @property
    def payment_signature(self) -> dict | None:
        """Decoded ``PAYMENT-SIGNATURE`` of the refund request (the refund voucher)."""
        p = self.paid
        return decode_header(p.request_header(PAYMENT_SIGNATURE)) if p else None

    @property
    def tx_hash(self) -> str | None:
        tx = (self.settle_response or {}).get("transaction")
        return tx if isinstance(tx, str) and len(tx) == 66 and tx.startswith("0x") else None


def refund(url: str, scheme: Any, body: Any = None, *, amount: int | str | None = None, method: str = "POST",
           proxy: str | None | bool = None, verify: Any = None, headers: dict[str, str] | None = None,
           timeout: float = 60.0) -> RefundCall:
    """Ask the server behind ``url`` for a cooperative refund of ``scheme``'s channel (the SDK's
    ``BatchSettlementEvmScheme.refund``: a probe that must answer 402, then the same request with a
    zero-charge refund voucher in ``PAYMENT-SIGNATURE``). ``amount`` (atomic units) asks for part of the
    remainder, default all of it. The requests are ``method`` with ``body`` as JSON (the paid route's own
    method: the SDK's default fetch would send GET). Never raises for a refused refund: see ``error``."""
    import httpx
    from x402.mechanisms.evm.batch_settlement.client import RefundOptions
    from x402.mechanisms.evm.batch_settlement.client.refund import _RefundResponse

    if proxy is None:
        proxy = env_proxy(url)
    exchanges: list[Exchange] = []
    last_body: list[bytes] = [b""]
    kwargs: dict[str, Any] = {}
    if isinstance(body, (bytes, str)):
        kwargs["content"] = body
    elif body is not None:
        kwargs["json"] = body

    with httpx.Client(proxy=proxy or None, verify=_ssl_verify(verify), trust_env=False, timeout=timeout) as http:
        def fetch(target: str, extra: dict[str, str]) -> Any:
            response = http.request(method, target, headers={**(headers or {}), **extra}, **kwargs)
            request = response.request
            exchanges.append(Exchange(
                request.method, str(request.url),
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw],
                response.status_code,
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw],
            ))
            last_body[0] = response.content
            return _RefundResponse(status=response.status_code, headers=dict(response.headers))

        try:
            settled = scheme.refund(url, RefundOptions(amount=None if amount is None else str(int(amount)), fetch=fetch))
        except Exception as e:  # the SDK raises RuntimeError for a refused refund
            return RefundCall(None, exchanges, last_body[0], f"{type(e).__name__}: {e}")
    return RefundCall(settled.model_dump(by_alias=True, exclude_none=True, mode="json"), exchanges, last_body[0])


async def pay_async(
    url: str,
    body: Any = None,
    *,
    method: str = "POST",
    private_key: str = PAYER.private_key,
    proxy: str | None | bool = None,
    verify: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
    spend_controls: Any = None,
    x402_client: Any = None,
    siwx: Any = False,
) -> PaidCall:
    """Make a paid call (see module doc for ``proxy`` and ``verify``). ``body`` is sent as JSON
    unless it is ``bytes``/``str``.

    ``spend_controls`` is the x402 client's guard (its default only pays known mainnet/testnet
    assets); here the default is ``{"allowed_assets": True}`` (any token, no cap), since the test
    token is unknown to x402. Pass e.g. ``{"allowed_assets": [{"network": "eip155:8453", "asset": TOKEN,
    "max_amount_per_payment": "10000"}]}`` to keep a cap.

    ``x402_client``: an ``x402.x402Client`` of your own (e.g. with the exact SVM scheme registered) to pay
    with, instead of the EVM one built from ``private_key`` and ``spend_controls``.

    ``siwx``: False (default) pays as always; True registers the SDK's sign-in-with-x client extension
    signing with ``private_key`` (on ``x402_client`` too, if given); a signer (anything the SDK's
    ``create_siwx_client_hook`` takes, e.g. :func:`forged_siwx_signer`) signs in with that. On a 402 that
    declares SIWX the SDK first retries with ``SIGN-IN-WITH-X``, and pays only if that is refused."""
    import httpx
    from x402.http.clients.httpx import x402AsyncTransport

    if proxy is None:
        proxy = env_proxy(url)
    inner = httpx.AsyncHTTPTransport(proxy=proxy or None, verify=_ssl_verify(verify), trust_env=False)
    exchanges: list[Exchange] = []

    class _Recording(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await inner.handle_async_request(request)
            exchanges.append(Exchange(
                request.method, str(request.url),
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw],
                response.status_code,
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw],
            ))
            return response

        async def aclose(self) -> None:
            await inner.aclose()

    if x402_client is None:
        x402_client = _x402_client(private_key, spend_controls or {"allowed_assets": True})
    if siwx is not False and siwx is not None:
        x402_client.register_extension(siwx_client_extension(private_key if siwx is True else siwx))
    transport = x402AsyncTransport(x402_client, transport=_Recording())
    kwargs: dict[str, Any] = {}
    if isinstance(body, (bytes, str)):
        kwargs["content"] = body
    elif body is not None:
        kwargs["json"] = body
    async with httpx.AsyncClient(transport=transport, timeout=timeout, trust_env=False) as http:
        response = await http.request(method, url, headers=headers, **kwargs)
        content = await response.aread()
    return PaidCall(
        status=response.status_code,
        headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw],
        body=content,
        exchanges=exchanges,
    )


def pay(url: str, body: Any = None, **kwargs: Any) -> PaidCall:
    """Blocking :func:`pay_async` (runs its own event loop; in a worker thread if one is running here)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(pay_async(url, body, **kwargs))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, pay_async(url, body, **kwargs)).result()


# ---------------------------------------------------------------------------------------------
# Sign-in-with-x (the SDK's ``sign-in-with-x`` extension)
# ---------------------------------------------------------------------------------------------


def siwx_signer(private_key: str = PAYER.private_key) -> Any:
    """The SDK's EVM signer for ``private_key`` (EIP-191 ``personal_sign`` of the SIWE message)."""
    from eth_account import Account
    from x402.mechanisms.evm.signers import EthAccountSigner

    return EthAccountSigner(Account.from_key(private_key))


def forged_siwx_signer(claimed_address: str, private_key: str) -> Any:
    """A lying SIWX signer for failure tests: it tells the SDK it is ``claimed_address`` (so the SIWE message
    and the payload's ``address`` name that wallet) but signs with ``private_key``, another key."""
    from eth_account import Account
    from x402.mechanisms.evm.signers import EthAccountSigner

    class _Claiming(EthAccountSigner):
        @property
        def address(self) -> str:
            return claimed_address

    return _Claiming(Account.from_key(private_key))


def siwx_client_extension(signer: Any = PAYER.private_key) -> Any:
    """The SDK's SIWX client extension (``create_siwx_client_extension``) for ``signer`` (a private key hex
    string, or a signer object the SDK takes)."""
    from x402.extensions.sign_in_with_x import CreateSIWxClientExtensionOptions, create_siwx_client_extension

    if isinstance(signer, str):
        signer = siwx_signer(signer)
    return create_siwx_client_extension(CreateSIWxClientExtensionOptions(signers=[signer]))


async def sign_in_async(
    url: str,
    body: Any = None,
    *,
    method: str = "POST",
    private_key: str = PAYER.private_key,
    signer: Any = None,
    proxy: str | None | bool = None,
    verify: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> PaidCall:
    """Sign in with x, never pay: send the request; on a 402 the SDK's HTTP client runs its SIWX client
    extension (``signer``, default the SDK signer of ``private_key``) on the challenge, and the request is sent
    again with the ``SIGN-IN-WITH-X`` header it made. The answer is that retry's (200 if the server granted
    access, else its 402), or the first answer if it was no 402 or the hook made no header.
    ``proxy``/``verify``/``headers``/``body`` as for :func:`pay_async`."""
    import httpx
    from x402 import x402Client
    from x402.http import x402HTTPClient

    if proxy is None:
        proxy = env_proxy(url)
    inner = httpx.AsyncHTTPTransport(proxy=proxy or None, verify=_ssl_verify(verify), trust_env=False)
    exchanges: list[Exchange] = []

    class _Recording(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await inner.handle_async_request(request)
            exchanges.append(Exchange(
                request.method, str(request.url),
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw],
                response.status_code,
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw],
            ))
            return response

        async def aclose(self) -> None:
            await inner.aclose()

    x402_http = x402HTTPClient(x402Client().register_extension(siwx_client_extension(signer or private_key)))
    kwargs: dict[str, Any] = {}
    if isinstance(body, (bytes, str)):
        kwargs["content"] = body
    elif body is not None:
        kwargs["json"] = body
    async with httpx.AsyncClient(transport=_Recording(), timeout=timeout, trust_env=False) as http:
        response = await http.request(method, url, headers=headers, **kwargs)
        await response.aread()
        if response.status_code == 402:
            try:
                data = response.json()
            except ValueError:
                data = None
            required = x402_http.get_payment_required_response(response.headers.get, data)
            extra = await x402_http.handle_payment_required(required, str(response.url))
            if extra:
                response = await http.request(method, url, headers={**(headers or {}), **extra}, **kwargs)
                await response.aread()
        content = response.content
    return PaidCall(
        status=response.status_code,
        headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw],
        body=content,
        exchanges=exchanges,
    )


def sign_in(url: str, body: Any = None, **kwargs: Any) -> PaidCall:
    """Blocking :func:`sign_in_async`."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(sign_in_async(url, body, **kwargs))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, sign_in_async(url, body, **kwargs)).result()
