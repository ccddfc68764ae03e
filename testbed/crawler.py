"""Cloudflare's pay per crawl, as its headers say: a minimal origin written in this project (no public library
implements the protocol; Cloudflare runs it at its edge), and a helper that crawls it.

The wire (Cloudflare's "Crawl pages" and "Error codes" documentation):

- a crawler that shows no payment intent gets ``402`` with ``crawler-price: USD 0.01``;
- with ``crawler-exact-price: USD 0.01`` (equal to the price) or ``crawler-max-price: USD 0.05`` (at least
  the price) it gets ``200`` and ``crawler-charged: USD 0.01`` — the amount billed to its account
  (off-band: Cloudflare bills the crawler's account and pays the site owner; nothing settles on the wire);
- a wrong exact price gets ``402`` + ``crawler-error: InvalidCrawlerExactPrice`` (and the price), a max price
  below the price ``402`` + ``crawler-error: InvalidCrawlerMaxPrice``, both headers ``400`` +
  ``ConflictingPriceHeaders``, a malformed value ``400`` + ``InvalidCrawlerPriceValue``;
- ``/robots.txt`` is always free.

Not here: Web Bot Auth (the Ed25519 HTTP message signature Cloudflare requires on a paying crawler's request,
covering the price header), the crawler's verification, and the billing itself. Errors are never charged.

Routes (added to an app by :func:`add_crawler_routes`; the L402 test bed's server has them):
``GET /crawl/{slug}`` a priced HTML page, ``GET /robots.txt`` free.
"""

# no "from __future__ import annotations" here: FastAPI must see the real Request annotation
import html
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

PRICE = "crawler-price"
EXACT_PRICE = "crawler-exact-price"
MAX_PRICE = "crawler-max-price"
CHARGED = "crawler-charged"
ERROR = "crawler-error"
CRAWL_PATH = "/crawl"
DEFAULT_PRICE = "USD 0.01"

_PRICE_RE = re.compile(r"^\s*([A-Z]{3})\s+(\d+(?:\.\d+)?)\s*$")


def parse_price(value: str) -> tuple[str, Decimal]:
    """``"USD 0.01"`` → ``("USD", Decimal("0.01"))``; ValueError if it is not ``<ISO 4217 code> <decimal>``."""
    m = _PRICE_RE.match(value or "")
    if not m:
        raise ValueError(f"not a crawler price: {value!r}")
    try:
        return m.group(1), Decimal(m.group(2))
    except InvalidOperation as e:  # pragma: no cover - the regex admits only decimals
        raise ValueError(f"not a crawler price: {value!r}") from e


def decide(request_headers: Any, price: str) -> tuple[int, dict[str, str]]:
    """What the edge answers a crawl request carrying ``request_headers`` (any mapping with ``.get``) for a page
    priced ``price``: ``(status, headers to add)``. 200 means served and charged."""
    currency, amount = parse_price(price)
    exact, most = request_headers.get(EXACT_PRICE), request_headers.get(MAX_PRICE)
    if exact is not None and most is not None:
        return 400, {ERROR: "ConflictingPriceHeaders"}
    if exact is None and most is None:
        return 402, {PRICE: price}
    try:
        offered_currency, offered = parse_price(exact if exact is not None else most)
    except ValueError:
        return 400, {ERROR: "InvalidCrawlerPriceValue"}
    if offered_currency != currency:
        return 400, {ERROR: "InvalidCrawlerPriceValue"}
    if exact is not None and offered != amount:
        return 402, {ERROR: "InvalidCrawlerExactPrice", PRICE: price}
    if most is not None and offered < amount:
        return 402, {ERROR: "InvalidCrawlerMaxPrice", PRICE: price}
    return 200, {CHARGED: price}


def page(slug: str) -> str:
    """The (deterministic) HTML page at ``/crawl/<slug>``."""
    title = html.escape(slug.replace("-", " ").strip() or "index")
    return (f"<!doctype html><html><head><title>{title}</title></head><body><h1>{title}</h1>"
            f"<p>Testbed article about {title}.</p></body></html>")


def add_crawler_routes(app, price: str = DEFAULT_PRICE) -> None:
    """Add the pay-per-crawl routes to the FastAPI ``app``: every ``/crawl/…`` page costs ``price``."""
    from fastapi import Request
    from fastapi.responses import HTMLResponse, PlainTextResponse

    parse_price(price)  # fail at start, not per request

    @app.get("/robots.txt")
    async def robots():
        return PlainTextResponse("User-agent: *\nAllow: /\n")

    @app.get(CRAWL_PATH + "/{slug:path}")
    async def crawl_page(slug: str, request: Request):
        status, headers = decide(request.headers, price)
        if status == 200:
            return HTMLResponse(page(slug), headers=headers)
        return PlainTextResponse(headers.get(ERROR, ""), status_code=status, headers=headers)


@dataclass
class CrawlCall:
    """One crawl request as the crawler saw it (headers keep their wire order and case)."""

    status: int
    request_headers: list[tuple[str, str]]
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def price(self) -> str | None:
        return self.header(PRICE)

    @property
    def charged(self) -> str | None:
        return self.header(CHARGED)

    @property
    def error(self) -> str | None:
        return self.header(ERROR)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def crawl(url: str, *, exact_price: str | None = None, max_price: str | None = None,
          proxy: str | None | bool = None, verify: Any = None, headers: dict[str, str] | None = None,
          user_agent: str = "TestbedCrawler/1.0 (+https://example.invalid/bot)", timeout: float = 30.0) -> CrawlCall:
    """GET ``url`` as a crawler: with ``exact_price`` it sends ``crawler-exact-price``, with ``max_price``
    ``crawler-max-price`` (both: both, for the conflict). ``proxy`` and ``verify`` as in
    :func:`testbed.client.pay` (``None``: from the environment; ``proxy=False``: direct)."""
    import httpx

    from .client import _ssl_verify, env_proxy

    if proxy is None:
        proxy = env_proxy(url)
    sent = {"User-Agent": user_agent, **(headers or {})}
    if exact_price is not None:
        sent[EXACT_PRICE] = exact_price
    if max_price is not None:
        sent[MAX_PRICE] = max_price
    with httpx.Client(proxy=proxy or None, verify=_ssl_verify(verify), trust_env=False, timeout=timeout) as http:
        response = http.get(url, headers=sent)
    return CrawlCall(
        status=response.status_code,
        request_headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.request.headers.raw],
        headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw],
        body=response.content,
    )
