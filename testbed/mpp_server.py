"""A paid, OpenAI-compatible resource server behind the real ``pympp`` SDK (MPP, the ``Payment`` HTTP
authentication scheme), charging each call with the ``tempo`` method's ``charge`` intent.

``POST /v1/chat/completions`` costs ``price`` atomic units of a TIP-20 token (default pathUSD, 6 decimals)
paid to ``recipient`` on the Tempo chain behind ``rpc_url``. Without a credential the SDK answers 402 with
``WWW-Authenticate: Payment id=…, realm=…, method="tempo", intent="charge", request=…, expires=…,
opaque=…``; with ``Authorization: Payment <credential>`` (the client's signed type-0x76 transaction) the SDK
checks it, broadcasts it with ``eth_sendRawTransactionSync``, checks the receipt's TIP-20 transfer logs,
then the handler runs and the answer carries ``Payment-Receipt`` (reference = the transaction hash).

The answer is the x402 server's deterministic fake chat completion (:func:`testbed.server.chat_completion`);
``"stream": true`` gives the same Server-Sent Events, sent at once after the payment.

Failure modes, asked for with request headers (the SDK's client repeats the caller's headers on the paid
retry, so setting one on the call is enough):

- ``X-Testbed-Fake-Reference: random``  the credential is validated (the SDK's non-mutating
                                         ``validate_credential``) but **not broadcast**: no money moves, and
                                         the 200 answer carries a ``Payment-Receipt`` whose reference is a
                                         random 32-byte hash that is on no chain.
- ``X-Testbed-Fake-Reference: unsent``   the same, with the reference set to the hash of the client's own
                                         signed transaction (what a real receipt would say), never sent.
- ``X-Testbed-Fail: after-settle``       the payment **is settled**, then the server answers 5xx
                                         (``X-Testbed-Fail-Status``, default 500) and keeps ``Payment-Receipt``.
- ``X-Testbed-Hide-Receipt: 1``          settled, but the answer carries no ``Payment-Receipt``.

Free routes: ``GET /healthz``, ``GET /v1/models``. Every answer carries a fresh ``x-request-id``.

The HMAC secret of the challenges comes from ``$MPP_SECRET_KEY`` (the SDK's own variable).
"""

# no "from __future__ import annotations": FastAPI must see the real Request annotation
import argparse
import json
import os
import secrets
import sys
import uuid
from decimal import Decimal

CHAT_PATH = "/v1/chat/completions"
FAKE_REFERENCE_HEADER = "X-Testbed-Fake-Reference"
FAIL_HEADER = "X-Testbed-Fail"
FAIL_STATUS_HEADER = "X-Testbed-Fail-Status"
HIDE_RECEIPT_HEADER = "X-Testbed-Hide-Receipt"
PATH_USD = "0x20c0000000000000000000000000000000000000"


def decimal_amount(atomic: int, decimals: int = 6) -> str:
    """``atomic`` base units as the decimal string the SDK's route options take (10000 -> "0.01")."""
    text = format(Decimal(int(atomic)).scaleb(-decimals), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def create_app(*, rpc_url: str, recipient: str, currency: str = PATH_USD, price: int = 10_000,
               chain_id: int = 4217, realm: str = "127.0.0.1", secret_key: str | None = None,
               decimals: int = 6):
    """The resource server (a FastAPI app). ``price`` is in atomic units of ``currency``."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from mpp import Credential, Receipt
    from mpp.methods.tempo import server as tempo
    from eth_hash.auto import keccak
    from mpp.server import Mpp, PaymentRequired
    from mpp.server.decorator import to_framework_response, to_request
    from mpp.store import MemoryStore

    from .server import MODEL, chat_completion, chat_stream_events

    server = Mpp(methods=tempo.charge(recipient=recipient, chain_id=chain_id, rpc_url=rpc_url,
                                      currencies=[currency], decimals=decimals),
                 realm=realm, secret_key=secret_key or os.environ.get("MPP_SECRET_KEY") or secrets.token_hex(32),
                 store=MemoryStore())
    route = server.charge(amount=decimal_amount(price, decimals))
    app = FastAPI(title="testbed paid chat (MPP)")

    def answer(req: dict):
        if req.get("stream"):
            return Response("".join(chat_stream_events(req)), media_type="text/event-stream")
        return JSONResponse(chat_completion(req))

    def unsent_hash(credential) -> str:
        """What the receipt would say: the hash of the client's signed transaction (never sent)."""
        raw = credential.payload.get("signature") if isinstance(credential.payload, dict) else None
        if not isinstance(raw, str):
            return "0x" + secrets.token_hex(32)
        return "0x" + keccak(bytes.fromhex(raw.removeprefix("0x"))).hex()

    @app.middleware("http")
    async def request_id(request: Request, call_next):
        response = await call_next(request)
        response.headers["x-request-id"] = "req_" + uuid.uuid4().hex
        return response

    @app.get("/healthz")
    async def healthz():
        return {"ok": True}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "testbed"}]}

    @app.post(CHAT_PATH)
    async def chat(request: Request):
        raw = await request.body()
        try:
            req = json.loads(raw or b"{}")
        except ValueError:
            req = {}
        req = req if isinstance(req, dict) else {}
        fake = (request.headers.get(FAKE_REFERENCE_HEADER) or "").strip().lower()
        authorization = request.headers.get("authorization") or ""
        if fake and authorization.lower().startswith("payment "):
            # A server that lies: checks the credential, never broadcasts it, and claims it settled.
            credential = Credential.from_authorization(authorization)
            await server.validate_credential(credential)
            reference = unsent_hash(credential) if fake == "unsent" else "0x" + secrets.token_hex(32)
            response = answer(req)
            response.headers["Payment-Receipt"] = Receipt.success(reference).to_payment_receipt()
            response.headers["Cache-Control"] = "private"
            return response

        result = await route(await to_request(request))
        if isinstance(result, PaymentRequired):
            return to_framework_response(result.challenge)
        if request.headers.get(FAIL_HEADER, "").lower() == "after-settle":
            status = int(request.headers.get(FAIL_STATUS_HEADER) or 500)
            return result.with_receipt(JSONResponse({"error": {"message": "testbed: failed after settlement",
                                                               "type": "server_error"}}, status_code=status))
        if request.headers.get(HIDE_RECEIPT_HEADER):
            return answer(req)
        return result.with_receipt(answer(req))

    return app


def start_mpp_server(*, rpc_url: str, recipient: str, currency: str = PATH_USD, price: int = 10_000,
                     chain_id: int = 4217, realm: str | None = None, secret_key: str | None = None,
                     tls: dict | None = None, url_host: str | None = None, timeout: float = 30.0,
                     wait: bool = True):
    """Start the server as a child process; returns a :class:`~testbed.service.Service`.

    ``tls={"cert": path, "key": path}`` serves HTTPS (URL host ``localhost``). ``realm`` defaults to the URL's
    host. The secret goes to the child in ``$MPP_SECRET_KEY`` (not on its command line).
    """
    from .service import start_service

    host = url_host or ("localhost" if tls else "127.0.0.1")
    args = ["--rpc-url", rpc_url, "--recipient", recipient, "--currency", currency, "--price", str(int(price)),
            "--chain-id", str(int(chain_id)), "--realm", realm or host]
    if tls:
        args += ["--ssl-certfile", str(tls["cert"]), "--ssl-keyfile", str(tls["key"])]
    env = {"MPP_SECRET_KEY": secret_key or secrets.token_hex(32)}
    return start_service("mpp-server", "testbed.mpp_server", args, tls=bool(tls), env=env,
                         url_host=url_host or ("localhost" if tls else None), timeout=timeout, wait=wait)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.mpp_server", description="paid fake chat server (MPP)")
    ap.add_argument("--rpc-url", required=True, help="the Tempo chain's JSON-RPC (the server broadcasts there)")
    ap.add_argument("--recipient", required=True)
    ap.add_argument("--currency", default=PATH_USD, help="TIP-20 token address (default pathUSD)")
    ap.add_argument("--price", type=int, default=10_000, help="atomic units")
    ap.add_argument("--chain-id", type=int, default=4217)
    ap.add_argument("--realm", default="127.0.0.1")
    ap.add_argument("--fd", type=int, help="serve this inherited listening socket")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ssl-certfile")
    ap.add_argument("--ssl-keyfile")
    args = ap.parse_args(argv)

    from .service import serve_fd

    app = create_app(rpc_url=args.rpc_url, recipient=args.recipient, currency=args.currency, price=args.price,
                     chain_id=args.chain_id, realm=args.realm)
    serve_fd(app, args.fd, host=args.host, port=args.port, ssl_certfile=args.ssl_certfile,
             ssl_keyfile=args.ssl_keyfile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
