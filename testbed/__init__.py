"""A local blockchain test bed for paid AI calls.

Everything here is started by code (tests, ``scripts/demo``), never by hand:

- :mod:`testbed.node`        anvil (a real local Ethereum node) and solc-js, installed from npm on demand
- :mod:`testbed.chain`       the test USDC token (EIP-3009) and anvil's funded dev accounts
- :mod:`testbed.facilitator` a real x402 facilitator (the ``x402`` package's exact EVM scheme) over HTTP
- :mod:`testbed.server`      a resource server behind the ``x402`` FastAPI middleware, serving a fake
                             OpenAI-compatible chat completion
- :mod:`testbed.client`      a paid call with the ``x402`` httpx client (through a proxy if asked)
- :mod:`testbed.stack`       ``paid_stack()``: all of the above, started and stopped together
- :mod:`testbed.channels`    ``channel_stack()``: x402 payment channels (the ``batch-settlement`` scheme of
                             the SDK's client, server and facilitator) on the test bed's channel contracts
- :mod:`testbed.mcp_bed`     ``mcp_stack()``: x402 over MCP (the ``mcp`` SDK's server and client, x402's
                             MCP payment wrapper and client; :mod:`testbed.mcp_server`, :mod:`testbed.mcp_client`)
- :mod:`testbed.a2a_bed`     ``a2a_stack()``: x402 over A2A (the ``a2a-sdk`` client and a paid agent on the
                             ``a2a-sdk`` server, :mod:`testbed.a2a_agent`)
- :mod:`testbed.mpp`         ``mpp_stack()``: MPP with the ``pympp`` client and server (:mod:`testbed.mpp_server`)
                             on anvil's Tempo mode (chain 4217)
- :mod:`testbed.l402`        ``l402_stack()``: an Aperture-style L402 server (signed BOLT11 invoices, macaroons),
                             the ``l402-requests`` client, and a wallet that simulates only the Lightning payment;
                             :mod:`testbed.crawler`: Cloudflare pay-per-crawl routes on the same server

Only 127.0.0.1 is used. The modules that need the ``x402`` package import it lazily, so
``testbed.node`` and ``testbed.chain`` work without it.
"""

from __future__ import annotations

__all__ = ["ROOT"]

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The repository root (where ``node_modules`` goes)."""
