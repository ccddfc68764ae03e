"""Confidential chat calls with the real OpenGradient SDK (``opengradient==1.1.4``, ``og.ConfidentialLLM``)
through an Oblivious HTTP relay, one JSON line per call.

Runs in the SDK's environment, ``.venv-og``::

    .venv-og/bin/python testbed/og_ohttp_client.py --relay https://127.0.0.1:PORT --rpc http://127.0.0.1:PORT \\
        --registry 0x… --token TOKEN [--calls 2] [--stream] [--plan JSON] [--ca relay-cert.pem]

The client is ``og.ConfidentialLLM(relay_url, rpc_url=…, registry_address=…, auth_headers=…, session=…)``,
the SDK's public constructor: it reads the registry (``getActiveTEEs``, the TEE's ``ohttpConfig`` and RSA
signing key), HPKE-encrypts each request to that key and POSTs it to ``{relay}/api/v1/chat/ohttp``; every
answer is decrypted and its TEE signature verified by the SDK before it is returned (a failure is a
failed call). ``--stream`` uses ``chat(stream=True)``: the SDK buffers the chunked response, verifies it,
then hands back the SSE frames.

Proxy and TLS: the relay calls honour ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` (``requests`` reads them).
The registry read happens with the proxy variables removed for its duration: it is a JSON-RPC read of a
local chain, not a paid call. The CA bundle is ``--ca`` (e.g. the relay's own certificate, to go direct);
without it ``$REQUESTS_CA_BUNDLE``/``$CURL_CA_BUNDLE`` (``requests``' own rule), else ``$SSL_CERT_FILE``, so a
recording proxy's ``client_env()`` works as is.

Each line: ``ok``, ``stream``, ``request`` (the body given to the SDK), ``answer``, ``finish_reason``,
``usage``, ``proof`` (the SDK's verified ``TeeProof``: tee_id, request_hash, output_hash, timestamp,
signature), ``frames`` (streams: the decrypted SSE frames), ``tee`` (what discovery found) and ``wire``:
the HTTP exchanges as ``requests`` sent and got them (url, request headers, body sha256 and length,
status, response headers, response body sha256 and length).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import time
from typing import Any

DEFAULT_MODEL = "openai/gpt-4.1-mini"
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def _wire_session():
    import requests

    class WireSession(requests.Session):
        """A ``requests.Session`` that notes what went on the wire (the SDK is given it as ``session``)."""

        def __init__(self) -> None:
            super().__init__()
            self.wire: list[dict] = []

        def send(self, request, **kwargs):
            body = request.body or b""
            if isinstance(body, str):
                body = body.encode()
            entry: dict[str, Any] = {"method": request.method, "url": request.url,
                                     "request_headers": dict(request.headers),
                                     "request_sha256": hashlib.sha256(body).hexdigest(), "request_length": len(body)}
            self.wire.append(entry)
            response = super().send(request, **kwargs)
            entry.update(status=response.status_code, response_headers=dict(response.headers))
            if not kwargs.get("stream"):
                entry.update(response_sha256=hashlib.sha256(response.content).hexdigest(),
                             response_length=len(response.content))
                return response
            digest, read = hashlib.sha256(), [0, 0]
            original = response.iter_content

            def iter_content(chunk_size=1, decode_unicode=False):
                for chunk in original(chunk_size=chunk_size, decode_unicode=decode_unicode):
                    digest.update(chunk if isinstance(chunk, bytes) else chunk.encode())
                    read[0] += len(chunk)
                    read[1] += 1
                    entry.update(response_sha256=digest.hexdigest(), response_length=read[0], reads=read[1])
                    yield chunk

            response.iter_content = iter_content
            return response

    return WireSession()


@contextlib.contextmanager
def _without_proxy_env():
    saved = {k: v for k, v in os.environ.items() if k.lower() in PROXY_VARS}
    for k in saved:
        del os.environ[k]
    try:
        yield
    finally:
        os.environ.update(saved)


def _proof(proof) -> dict:
    return {"tee_id": proof.tee_id, "request_hash": proof.request_hash, "output_hash": proof.output_hash,
            "timestamp": proof.timestamp, "signature": proof.signature}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="confidential chat calls with og.ConfidentialLLM, one JSON line each")
    ap.add_argument("--relay", required=True, help="the relay's base URL, https://…")
    ap.add_argument("--rpc", required=True, help="the OpenGradient chain's RPC (the TEE registry)")
    ap.add_argument("--registry", required=True, help="the TEE registry's address")
    ap.add_argument("--token", help="the relay's bearer token (default: $OG_RELAY_TOKEN)")
    ap.add_argument("--ca", help="a CA bundle the relay's certificate verifies against")
    ap.add_argument("--calls", type=int, default=1)
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--plan", help='JSON list of calls, e.g. [{"stream": true, "prompt": "hi"}]')
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--prompt", default="hello over oblivious http")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--strict", action="store_true", help="exit 1 when any call failed")
    args = ap.parse_args(argv)

    import opengradient as og

    token = args.token or os.environ.get("OG_RELAY_TOKEN")
    session = _wire_session()
    if args.ca:  # given explicitly: it wins over requests' own $REQUESTS_CA_BUNDLE/$CURL_CA_BUNDLE
        for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            os.environ.pop(name, None)
    ca = args.ca or os.environ.get("SSL_CERT_FILE")
    if ca:
        session.verify = ca
    auth = (lambda: {"Authorization": f"Bearer {token}"}) if token else None
    with _without_proxy_env():
        llm = og.ConfidentialLLM(args.relay, rpc_url=args.rpc, registry_address=args.registry, auth_headers=auth,
                                 session=session, timeout=args.timeout)
    tee = llm.tee
    cfg = tee.ohttp_config
    tee_info = {"tee_id": tee.tee_id, "endpoint": tee.endpoint, "relay_url": llm.relay_url,
                "ohttp": None if cfg is None else {"key_id": cfg.key_id, "kem_id": cfg.kem_id, "kdf_id": cfg.kdf_id,
                                                   "aead_id": cfg.aead_id, "public_key": cfg.public_key.hex(),
                                                   "key_config": cfg.key_config.hex()}}
    plan = json.loads(args.plan) if args.plan else [{"stream": args.stream} for _ in range(args.calls)]
    failed = 0
    for i, step in enumerate(plan, 1):
        stream = bool(step.get("stream", args.stream))
        text = str(step.get("prompt") or f"{args.prompt} #{i}")
        model = str(step.get("model") or args.model)
        messages = [{"role": "user", "content": text}]
        line: dict[str, Any] = {"call": i, "stream": stream,
                                "request": {"model": model, "messages": messages, "max_tokens": 100,
                                            "temperature": 0.0}}
        session.wire.clear()
        started = time.monotonic()
        try:
            result = llm.chat(model=model, messages=messages, max_tokens=100, temperature=0.0, stream=stream)
            choice = (result.body.get("choices") or [{}])[0]
            line.update(ok=True, answer=result.content, finish_reason=choice.get("finish_reason"),
                        usage=result.body.get("usage"), proof=_proof(result.proof), frames=result.stream_frames)
        except Exception as e:
            failed += 1
            line.update(ok=False, error=f"{type(e).__name__}: {e}")
        line.update(seconds=round(time.monotonic() - started, 3), tee=tee_info, wire=list(session.wire))
        print(json.dumps(line, default=str), flush=True)
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
