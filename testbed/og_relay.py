"""An OpenGradient-style Oblivious HTTP relay for the test bed (what ``chat-api`` is to the real chat app).

Runs in the SDK's environment, ``.venv-og`` (it pays with the ``opengradient`` SDK's own x402 stack)::

    .venv-og/bin/python testbed/og_relay.py --config CONFIG.json

Started by :mod:`testbed.og_ohttp_bed`, which reads its ready line (``OG_RELAY_READY {json}``: port,
the relay's TLS certificate as base64 DER, the payer's address).

``POST /api/v1/chat/ohttp`` (the path ``og.ConfidentialLLM`` posts to):

1. ``Authorization: Bearer <token>`` must name one of the configured tokens (401 otherwise),
   ``Content-Type: message/ohttp-req`` (415), ``X-TEE-ID`` present (400).
2. The TEE is looked up by that id in the on-chain registry with the SDK's ``TEERegistry``
   (``getActiveTEEs``; 404 if it is not active): its endpoint and its pinned TLS certificate.
3. The request body, unchanged, is POSTed to ``{endpoint}/v1/ohttp`` with ``Content-Type:
   message/ohttp-req``, the client's ``Accept`` and ``X-OHTTP-Stream`` (if sent), ``X-TEE-ID`` and
   ``X-SETTLEMENT-TYPE`` (default ``private``: the gateway cannot read a ciphertext answer to anchor its
   proof). The client's ``Authorization`` is not passed on. Payment: the SDK's x402 client
   (``opengradient.client.llm.LLM._build_x402_client``: exact + upto on eip155:8453, signed by the relay's
   key) inside the SDK's ``x402AsyncTransport``, so the 402 challenge is answered with a Permit2 upto
   permit (``PAYMENT-SIGNATURE``) and the gateway's ``X-Upto-Session`` is reused for later calls, exactly
   as ``og.LLM`` pays the chat route.
4. The answer goes back: ``message/ohttp-res`` bytes unchanged; ``message/ohttp-chunked-res`` streamed
   chunk by chunk with the gateway's plaintext billing frame removed (:class:`og_ohttp.ChunkedStreamFilter`);
   other statuses pass through as they came (plaintext). No x402 or cost header is passed to the client.

The outbound call honours ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` minus ``NO_PROXY`` as they were in
the environment at start (the SDK's transport alone would ignore them), and trusts the registry's
pinned certificate plus, if set, ``SSL_CERT_FILE``/``REQUESTS_CA_BUNDLE`` (a recording proxy's CA).
``POST /_testbed/config`` may change ``proxy``, ``ca``, ``settlement_type`` and ``tokens`` later. Nothing
else in this process uses the proxy: the variables are removed from its environment at start, so the
registry reads (JSON-RPC) go direct.

Test controls (no token): ``GET /_testbed/state`` (every relayed call: what came in, each outbound
exchange with its headers and body sha256, what went back), ``POST /_testbed/config``, ``GET /health``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextvars
import datetime as _dt
import hashlib
import ipaddress
import json
import logging
import os
import signal
import ssl
import sys
import time
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from og_ohttp import (CHUNKED_RESPONSE_MEDIA_TYPE, MAX_REQUEST_BYTES, OHTTP_PATH, REQUEST_MEDIA_TYPE,
                      RESPONSE_MEDIA_TYPE, ChunkedStreamFilter)

log = logging.getLogger("og_relay")

RELAY_PATH = "/api/v1/chat/ohttp"
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
CA_VARS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
TEE_CACHE_SECONDS = 30.0
EXCHANGES: contextvars.ContextVar[list | None] = contextvars.ContextVar("og_relay_exchanges", default=None)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _norm_tee_id(value: str | None) -> str:
    v = (value or "").strip().lower()
    return v if v.startswith("0x") or not v else "0x" + v


def make_certificate(directory: str) -> tuple[str, str, bytes]:
    """A self-signed certificate for 127.0.0.1 / localhost: (cert path, key path, DER)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "og-testbed-relay")])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path = os.path.join(directory, "relay-cert.pem")
    key_path = os.path.join(directory, "relay-key.pem")
    with open(cert_path, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    return cert_path, key_path, cert.public_bytes(serialization.Encoding.DER)


class RecordingTransport:
    """Wraps the real transport under the SDK's x402 transport: notes every exchange on the wire (the 402,
    the paid retry, a session reuse) in the current relayed call's record."""

    def __init__(self, inner):
        self._inner = inner

    async def handle_async_request(self, request):
        content = request.content
        exchange: dict[str, Any] = {"at": time.time(), "method": request.method, "url": str(request.url),
                                    "headers": dict(request.headers), "body_sha256": _sha256(content),
                                    "body_length": len(content)}
        target = EXCHANGES.get()
        if target is not None:
            target.append(exchange)
        try:
            response = await self._inner.handle_async_request(request)
        except Exception as e:
            exchange["error"] = f"{type(e).__name__}: {e}"
            raise
        exchange["status"] = response.status_code
        exchange["response_headers"] = dict(response.headers)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class Relay:
    def __init__(self, cfg: dict, env_proxies: dict[str, str], env_ca: str | None):
        self.cfg = cfg
        self.env_proxies = env_proxies
        self.env_ca = env_ca
        self.tokens = set(cfg.get("tokens") or [])
        self.settlement_type = cfg.get("settlement_type", "private")
        self.proxy_override: Any = cfg.get("proxy")  # None: the environment's; "" or False: none; else a URL
        self.ca_override: str | None = cfg.get("ca")
        self.calls: list[dict] = []
        self._clients: dict[tuple, Any] = {}
        self._tees: dict[str, tuple[float, Any]] = {}
        self._registry = None
        from eth_account import Account
        from opengradient.client.llm import LLM

        self.address = Account.from_key(cfg["private_key"]).address
        # the SDK's own payment stack (what og.LLM pays the chat route with)
        self._x402 = LLM._build_x402_client(cfg["private_key"], rpc_url=cfg["base_rpc"])

    # -- where the outbound call goes ------------------------------------------------------------
    def proxy_for(self, url: str) -> str | None:
        if self.proxy_override is not None:
            return self.proxy_override or None
        host = urlsplit(url).hostname or ""
        if host and urllib.request.proxy_bypass_environment(host, self.env_proxies):
            return None
        return self.env_proxies.get(urlsplit(url).scheme) or self.env_proxies.get("all") or None

    def ca_file(self) -> str | None:
        return self.ca_override or self.env_ca

    def _ssl_context(self, tee) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=ssl.DER_cert_to_PEM_cert(bytes(tee.tls_cert_der)))
        if self.ca_file():
            ctx.load_verify_locations(cafile=self.ca_file())
        return ctx

    def client_for(self, tee):
        import httpx
        from x402.http.clients.httpx import x402AsyncTransport

        proxy = self.proxy_for(tee.endpoint)
        key = (tee.tee_id, tee.endpoint, bytes(tee.tls_cert_der), proxy, self.ca_file())
        client = self._clients.get(key)
        if client is None:
            inner = httpx.AsyncHTTPTransport(verify=self._ssl_context(tee), proxy=proxy)
            transport = x402AsyncTransport(self._x402, transport=RecordingTransport(inner))
            client = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(90.0, connect=10.0))
            self._clients[key] = client
        return client, proxy

    # -- the registry ----------------------------------------------------------------------------
    def _active_tees(self) -> list:
        from opengradient.client.tee_registry import TEE_TYPE_LLM_PROXY, TEERegistry

        if self._registry is None:
            self._registry = TEERegistry(rpc_url=self.cfg["og_rpc"], registry_address=self.cfg["registry"])
        return self._registry.get_active_tees_by_type(TEE_TYPE_LLM_PROXY)

    async def resolve(self, tee_id: str):
        wanted = _norm_tee_id(tee_id)
        cached = self._tees.get(wanted)
        if cached and time.monotonic() - cached[0] < TEE_CACHE_SECONDS:
            return cached[1]
        tees = await asyncio.to_thread(self._active_tees)
        found = next((t for t in tees if _norm_tee_id(t.tee_id) == wanted), None)
        self._tees[wanted] = (time.monotonic(), found)
        return found

    def state(self) -> dict:
        return {"address": self.address, "tokens": sorted(self.tokens), "settlement_type": self.settlement_type,
                "proxy_override": self.proxy_override, "env_proxies": self.env_proxies, "ca": self.ca_file(),
                "calls": json.loads(json.dumps(self.calls, default=str))}

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()


def build_app(relay: Relay):
    from aiohttp import web

    def problem(entry: dict, status: int, detail: str):
        entry.update(status=status, error=detail)
        return web.json_response({"detail": detail}, status=status)

    async def chat_ohttp(request: web.Request):
        entry: dict[str, Any] = {"n": len(relay.calls) + 1, "received_at": time.time(), "path": request.path,
                                 "client_headers": dict(request.headers), "outbound": []}
        relay.calls.append(entry)
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not token or token not in relay.tokens:
            return problem(entry, 401, "missing or unknown bearer token")
        if request.headers.get("Content-Type", "").split(";")[0].strip().lower() != REQUEST_MEDIA_TYPE:
            return problem(entry, 415, f"Content-Type must be {REQUEST_MEDIA_TYPE}")
        tee_id = request.headers.get("X-TEE-ID", "").strip()
        if not tee_id:
            return problem(entry, 400, "X-TEE-ID is required")
        body = await request.read()
        entry.update(tee_id=tee_id, request_sha256=_sha256(body), request_length=len(body))
        if not body or len(body) > MAX_REQUEST_BYTES:
            return problem(entry, 400 if not body else 413, "empty or too large encapsulated request")
        try:
            tee = await relay.resolve(tee_id)
        except Exception as e:
            return problem(entry, 502, f"registry lookup failed: {type(e).__name__}: {e}")
        if tee is None:
            return problem(entry, 404, f"TEE {tee_id} is not active in the registry")
        url = tee.endpoint.rstrip("/") + OHTTP_PATH
        headers = {"Content-Type": REQUEST_MEDIA_TYPE, "X-TEE-ID": tee_id,
                   "Accept": request.headers.get("Accept", RESPONSE_MEDIA_TYPE)}
        if request.headers.get("X-OHTTP-Stream"):
            headers["X-OHTTP-Stream"] = request.headers["X-OHTTP-Stream"]
        if relay.settlement_type:
            headers["X-SETTLEMENT-TYPE"] = relay.settlement_type
        client, proxy = relay.client_for(tee)
        entry.update(endpoint=tee.endpoint, upstream_url=url, proxy=proxy, payer=relay.address)
        marker = EXCHANGES.set(entry["outbound"])
        try:
            upstream = await client.send(client.build_request("POST", url, content=body, headers=headers),
                                         stream=True)
        except Exception as e:
            return problem(entry, 502, f"gateway unreachable or payment failed: {type(e).__name__}: {e}")
        finally:
            EXCHANGES.reset(marker)
        content_type = upstream.headers.get("content-type", "")
        media = content_type.split(";")[0].strip().lower()
        entry.update(upstream_status=upstream.status_code, upstream_content_type=content_type,
                     upstream_headers=dict(upstream.headers))
        try:
            if media != CHUNKED_RESPONSE_MEDIA_TYPE or not 200 <= upstream.status_code < 300:
                data = await upstream.aread()
                entry.update(upstream_sha256=_sha256(data), upstream_length=len(data),
                             downstream_sha256=_sha256(data), downstream_length=len(data),
                             status=upstream.status_code)
                if 200 <= upstream.status_code < 300 and media == RESPONSE_MEDIA_TYPE:
                    return web.Response(body=data, status=upstream.status_code,
                                        headers={"Content-Type": RESPONSE_MEDIA_TYPE})
                return web.Response(body=data, status=upstream.status_code,
                                    headers={"Content-Type": content_type or "application/json"})
            response = web.StreamResponse(status=upstream.status_code,
                                          headers={"Content-Type": CHUNKED_RESPONSE_MEDIA_TYPE,
                                                   "Cache-Control": "no-cache"})
            await response.prepare(request)
            frames = ChunkedStreamFilter()
            up, down = hashlib.sha256(), hashlib.sha256()
            up_len = down_len = 0
            async for data in upstream.aiter_bytes():
                up.update(data)
                up_len += len(data)
                out = frames.feed(data)
                if out:
                    down.update(out)
                    down_len += len(out)
                    await response.write(out)
            out = frames.finish()
            if out:
                down.update(out)
                down_len += len(out)
                await response.write(out)
            await response.write_eof()
            entry.update(status=upstream.status_code, upstream_sha256=up.hexdigest(), upstream_length=up_len,
                         downstream_sha256=down.hexdigest(), downstream_length=down_len, billing=frames.billing,
                         stripped_bytes=frames.stripped, chunks=frames.chunks, malformed=frames.malformed)
            return response
        finally:
            await upstream.aclose()
            entry["finished_at"] = time.time()

    async def state(_request):
        return web.json_response(relay.state())

    async def configure(request):
        spec = await request.json()
        unknown = set(spec) - {"proxy", "ca", "settlement_type", "tokens"}
        if unknown:
            return web.json_response({"error": f"unknown settings {sorted(unknown)}"}, status=400)
        if "proxy" in spec:
            relay.proxy_override = spec["proxy"]
        if "ca" in spec:
            relay.ca_override = spec["ca"] or None
        if "settlement_type" in spec:
            relay.settlement_type = spec["settlement_type"]
        if "tokens" in spec:
            relay.tokens = set(spec["tokens"])
        return web.json_response(relay.state() | {"calls": len(relay.calls)})

    async def health(_request):
        return web.json_response({"status": "OK"})

    app = web.Application(client_max_size=MAX_REQUEST_BYTES + 1024)
    app.router.add_post(RELAY_PATH, chat_ohttp)
    app.router.add_get("/_testbed/state", state)
    app.router.add_post("/_testbed/config", configure)
    app.router.add_get("/health", health)
    return app


def _take_proxy_env() -> tuple[dict[str, str], str | None]:
    """The proxy settings and CA the environment gives, then removed from it (only the paid outbound call
    uses them)."""
    proxies = urllib.request.getproxies_environment()
    ca = next((os.environ[v] for v in CA_VARS if os.environ.get(v)), None)
    for name in list(os.environ):
        if name.lower() in PROXY_VARS:
            del os.environ[name]
    return proxies, ca


async def serve(cfg: dict) -> None:
    from aiohttp import web

    env_proxies, env_ca = _take_proxy_env()
    os.environ["BASE_MAINNET_RPC"] = cfg["base_rpc"]
    relay = Relay(cfg, env_proxies, env_ca)
    cert_path, key_path, cert_der = make_certificate(cfg["workdir"])
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_path, key_path)
    runner = web.AppRunner(build_app(relay), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, cfg.get("host", "127.0.0.1"), int(cfg.get("port", 0)), ssl_context=tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("OG_RELAY_READY " + json.dumps({"port": port, "tls_cert_der": base64.b64encode(cert_der).decode(),
                                          "cert_path": cert_path, "address": relay.address,
                                          "env_proxies": env_proxies, "ca": env_ca}), flush=True)
    try:
        await stop.wait()
    finally:
        await relay.close()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="JSON file with the relay's settings")
    args = ap.parse_args(argv)
    with open(args.config) as fh:
        cfg = json.load(fh)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("x402").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(serve(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
