"""Cloudflare pay-per-crawl: a price in headers, charged off chain to the crawler's Cloudflare account.

- The site answers a crawler that offers nothing with 402 and `crawler-price: USD 0.01`.
- The crawler agrees to pay with `crawler-exact-price: USD 0.01` (that price) or `crawler-max-price: USD
  0.05` (up to it) on its request.
- A served request is answered with `crawler-charged: USD 0.01`; a refused one with `crawler-error`.
Cloudflare bills the charge to the crawler's account: nothing lands on a chain, so the receipt is
`off_chain` (network `cloudflare:pay-per-crawl`). Amounts are kept in millionths of the currency
(6 decimals), as USDC amounts are. Pure; none raises.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

NETWORK = "cloudflare:pay-per-crawl"
SCHEME = "pay-per-crawl"
DECIMALS = 6
OFFER_HEADERS = ("crawler-exact-price", "crawler-max-price")
_PRICE = re.compile(r"\s*([A-Za-z]{3})\s+([0-9]{1,18}(?:\.[0-9]{1,18})?)\s*")


def price(value: str | None) -> tuple[str, int] | None:
    """`USD 0.01` → ("USD", 10000): the currency and the amount in millionths; None if malformed or finer."""
    found = _PRICE.fullmatch(value or "")
    if not found:
        return None
    try:
        atomic = Decimal(found.group(2)) * 10**DECIMALS
    except InvalidOperation:
        return None
    return (found.group(1).upper(), int(atomic)) if atomic == atomic.to_integral_value() else None


def payment(get) -> tuple[dict | None, list[str]]:
    """The crawler's offer to pay (`get`: a header getter), as a payment; (None, []) when it makes none."""
    for name in OFFER_HEADERS:
        value = get(name)
        if value is None:
            continue
        found = price(value)
        errors: list[str] = []
        pay = {
            "scheme": SCHEME,
            "kind": name.removeprefix("crawler-").replace("-", "_"),
            "network": NETWORK,
            "asset": found[0] if found else None,
            "amount": str(found[1]) if found else None,
            "decimals": DECIMALS,
            "symbol": found[0] if found else None,
            "header": name,
            "errors": errors,
        }
        if not found:
            errors.append(f"{name}: not a price such as `USD 0.01`: {value[:80]!r}")
        return pay, errors
    return None, []


def challenge(status: int, get) -> dict | None:
    """A 402's `crawler-price`, as an offer."""
    found = price(get("crawler-price")) if status == 402 and get("crawler-price") is not None else None
    if not found:
        return None
    return {
        "source": "crawler-price",
        "x402_version": None,
        "error": None,
        "errors": [],
        "accepts": [
            {
                "scheme": SCHEME,
                "network": NETWORK,
                "asset": found[0],
                "amount": str(found[1]),
                "pay_to": None,
                "max_timeout_seconds": None,
                "resource": None,
            }
        ],
    }


def settlement(get) -> dict | None:
    """The charge (`crawler-charged`) or the refusal (`crawler-error`) of an answer."""
    charged, error = get("crawler-charged"), get("crawler-error")
    if charged is None and error is None:
        return None
    found = price(charged) if charged is not None else None
    return {
        "header": "crawler-charged" if charged is not None else "crawler-error",
        "success": found is not None,
        "network": NETWORK,
        "amount": str(found[1]) if found else None,
        "tx_hash": None,
        "job_id": None,
        "payer": None,
        "error_reason": (error or None) if found is None else None,
        "error_message": None,
        "errors": [] if found or charged is None else [f"crawler-charged: not a price: {charged[:80]!r}"],
    }
