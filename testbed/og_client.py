"""Paid chat calls with the real OpenGradient SDK (``opengradient==1.1.4``), one JSON line per call.

Runs in the SDK's environment, ``.venv-og``::

    .venv-og/bin/python testbed/og_client.py --url https://127.0.0.1:PORT --calls 3 \\
        [--stream] [--settlement private|batch|individual] [--plan JSON] [--wire]

The client is ``og.LLM.from_url(private_key, llm_server_url=URL)``, the SDK's own "self-hosted TEE"
constructor: no registry lookup and **no TLS verification**. All calls go through one ``LLM``, so
they share the SDK's x402 transport and with it the upto session (``X-Upto-Session``) it keeps per
endpoint. The private key comes from ``OG_TESTBED_PRIVATE_KEY`` (default: anvil's dev account 1, the
test bed's payer, a publicly known key).

Each line has what the SDK hands back: the answer (``chat_output`` / streamed deltas),
``finish_reason``, ``usage``, ``tee_signature``, ``tee_timestamp``, ``tee_id`` / ``tee_endpoint`` /
``tee_payment_address`` (None with ``from_url``: they come from the registry),
``data_settlement_transaction_hash`` and ``data_settlement_blob_id``; plus ``request``, the JSON body
the SDK sent. With ``--wire`` also ``wire``: the final response's status and proof headers as httpx saw
them (``X-Upto-Session``, ``X-TEE-*``, ``X-Settlement-*``; the 402 exchange happens inside the SDK's
x402 transport and is not visible here) and, for non-streamed calls, the body's ``tee_*`` fields.

``--settlement individual``: SDK 1.1.4's ``x402SettlementMode`` has only ``private`` and ``batch``;
the SDK sends ``X-SETTLEMENT-TYPE: <mode>.value`` without checking, so a stand-in enum member with
value ``individual`` is passed for that mode.

``BASE_MAINNET_RPC`` (read by the SDK at import) is set to ``--base-rpc`` when given, so nothing the
SDK's payment code reads leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from enum import Enum
from typing import Any

PAYER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
"""anvil's dev account 1 (the test bed's payer): a publicly known key, for local chains only."""
DEFAULT_MODEL = "openai/gpt-4.1-mini"
PROOF_HEADERS = ("x-upto-session", "x-tee-signature", "x-tee-id", "x-tee-timestamp", "x-tee-request-hash",
                 "x-tee-output-hash", "x-settlement-tx-hash", "x-settlement-walrus-blob-id",
                 "x-settlement-job-id", "x-settlement-queue", "x-settlement-status", "x-settlement-type",
                 "x-settlement-queue-nonce", "x-settlement-signer-address", "payment-response",
                 "x-payment-response", "content-type")
TEE_FIELDS = ("tee_signature", "tee_request_hash", "tee_output_hash", "tee_timestamp", "tee_id")


class _StandInMode(str, Enum):
    """A settlement mode SDK 1.1.4 does not list (it only ever uses ``.value``)."""

    INDIVIDUAL = "individual"


def settlement_mode(name: str):
    from opengradient.types import x402SettlementMode

    for member in x402SettlementMode:
        if member.value == name:
            return member
    if name == "individual":
        return _StandInMode.INDIVIDUAL
    raise SystemExit(f"unknown settlement type {name!r} (private, batch, individual)")


def _install_wire_hooks(llm, wire: list[dict]) -> None:
    """httpx event hooks on the SDK's client: the request body and the final response's proof headers."""
    client = llm._tee.get().http_client

    async def on_request(request):
        try:
            body = json.loads(request.content or b"null")
        except ValueError:
            body = None
        wire.append({"method": request.method, "url": str(request.url), "request": body})

    async def on_response(response):
        entry = wire[-1] if wire else {}
        entry["status"] = response.status_code
        entry["headers"] = {k: v for k, v in response.headers.items() if k.lower() in PROOF_HEADERS}
        if "text/event-stream" not in response.headers.get("content-type", ""):
            await response.aread()
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict):
                entry["body_tee"] = {k: body.get(k) for k in TEE_FIELDS if k in body}

    client.event_hooks = {"request": [on_request], "response": [on_response]}


async def _one_call(llm, model: str, text: str, stream: bool, settlement: str) -> dict[str, Any]:
    messages = [{"role": "user", "content": text}]
    mode = settlement_mode(settlement)
    request = {"model": model.split("/", 1)[1], "messages": messages, "max_tokens": 100, "temperature": 0.0}
    if stream:
        request["stream"] = True
    out: dict[str, Any] = {"stream": stream, "settlement": settlement, "request": request}
    if not stream:
        result = await llm.chat(model=model, messages=messages, max_tokens=100, temperature=0.0,
                                x402_settlement_mode=mode)
        message = result.chat_output or {}
        out.update(
            answer=message.get("content"), finish_reason=result.finish_reason, usage=result.usage,
            tee_signature=result.tee_signature, tee_timestamp=result.tee_timestamp, tee_id=result.tee_id,
            tee_endpoint=result.tee_endpoint, tee_payment_address=result.tee_payment_address,
            data_settlement_transaction_hash=result.data_settlement_transaction_hash,
            data_settlement_blob_id=result.data_settlement_blob_id,
        )
        return out
    chunks = await llm.chat(model=model, messages=messages, max_tokens=100, temperature=0.0,
                            x402_settlement_mode=mode, stream=True)
    text_parts: list[str] = []
    final = None
    n = 0
    async for chunk in chunks:
        n += 1
        for choice in chunk.choices:
            if choice.delta.content:
                text_parts.append(choice.delta.content)
        if chunk.is_final:
            final = chunk
    out.update(answer="".join(text_parts), chunks=n)
    if final is not None:
        out.update(
            finish_reason=final.choices[0].finish_reason if final.choices else None,
            usage=None if final.usage is None else {"prompt_tokens": final.usage.prompt_tokens,
                                                     "completion_tokens": final.usage.completion_tokens,
                                                     "total_tokens": final.usage.total_tokens},
            tee_signature=final.tee_signature, tee_timestamp=final.tee_timestamp, tee_id=final.tee_id,
            tee_endpoint=final.tee_endpoint, tee_payment_address=final.tee_payment_address,
            data_settlement_transaction_hash=final.data_settlement_transaction_hash,
            data_settlement_blob_id=final.data_settlement_blob_id,
        )
    return out


async def run(args: argparse.Namespace) -> int:
    import opengradient as og

    key = os.environ.get("OG_TESTBED_PRIVATE_KEY") or PAYER_KEY
    llm = og.LLM.from_url(key, llm_server_url=args.url)
    wire: list[dict] = []
    if args.wire:
        _install_wire_hooks(llm, wire)
    plan = json.loads(args.plan) if args.plan else [
        {"stream": args.stream, "settlement": args.settlement} for _ in range(args.calls)]
    failed = 0
    try:
        for i, step in enumerate(plan, 1):
            stream = bool(step.get("stream", args.stream))
            settlement = str(step.get("settlement", args.settlement))
            text = str(step.get("prompt") or f"{args.prompt} #{i}")
            started = time.monotonic()
            wire.clear()
            try:
                line = await _one_call(llm, step.get("model") or args.model, text, stream, settlement)
                line["ok"] = True
            except Exception as e:
                failed += 1
                line = {"stream": stream, "settlement": settlement, "ok": False,
                        "error": f"{type(e).__name__}: {e}"}
            line["call"] = i
            line["seconds"] = round(time.monotonic() - started, 3)
            if args.wire:
                line["wire"] = list(wire)
            print(json.dumps(line, default=str), flush=True)
    finally:
        await llm.close()
    return 1 if failed and args.strict else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="paid chat calls with the opengradient SDK, one JSON line each")
    ap.add_argument("--url", required=True, help="the TEE (or the recorder in front of it), https://…")
    ap.add_argument("--calls", type=int, default=1)
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--settlement", default="batch", help="private, batch (the SDK's default) or individual")
    ap.add_argument("--plan", help='JSON list of calls, e.g. [{"stream": true, "settlement": "private"}]')
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--prompt", default="hello from the test bed")
    ap.add_argument("--base-rpc", help="the local Base RPC the SDK may read (BASE_MAINNET_RPC)")
    ap.add_argument("--wire", action="store_true", help="add the final response's proof headers to each line")
    ap.add_argument("--strict", action="store_true", help="exit 1 when any call failed")
    args = ap.parse_args(argv)
    if args.base_rpc:
        os.environ["BASE_MAINNET_RPC"] = args.base_rpc
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
