"""What an API-key-billed call cost, from a maintained price table: genai-prices (Pydantic's table of
model prices per provider, with price changes over time; exact `Decimal` results; a snapshot ships in
the package, so nothing is fetched).

Why this table: it is maintained upstream and versioned on PyPI, prices providers by their API URL as
well as by model name, knows when prices changed, and computes in `Decimal`. LiteLLM's cost map comes
with a large SDK, and tokencost reads LiteLLM's map and needs tiktoken.

A call paid on chain (x402) costs what was settled; that is the `receipts` view's business. Here:
what the price table says a call's tokens cost, or nothing (`cost_source` is then `unknown`, never 0).
The import of the table (about half a second, Pydantic) is started in the background when the proxy
starts (`warm_up`), so that the first priced call does not wait for all of it.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from functools import lru_cache

CURRENCY = "USD"  # the table's prices are in US dollars


def cost(model: str | None, usage: dict | None, host: str | None, ts: float | None) -> dict | None:
    """{amount (exact decimal text), currency, table (name and version), provider, model} for this many
    tokens of this model, as billed at `ts`; None when there is nothing to price or the table does not
    know the model."""
    if not model or not usage or (usage.get("prompt_tokens") is None and usage.get("completion_tokens") is None):
        return None
    table = _table()
    if table is None:
        return None
    calc_price, Usage, version = table
    tokens = Usage(input_tokens=usage.get("prompt_tokens") or 0, output_tokens=usage.get("completion_tokens") or 0)
    when = datetime.fromtimestamp(ts, UTC) if ts else None
    for api_url in ((f"https://{host}",) if host else ()) + (None,):  # by the provider's API URL, else by model
        try:
            found = calc_price(tokens, model, provider_api_url=api_url, genai_request_timestamp=when)
        except (LookupError, ValueError):
            continue
        return {
            "amount": _text(found.total_price),
            "currency": CURRENCY,
            "table": version,
            "provider": found.provider.id,
            "model": found.model.id,
        }
    return None


def warm_up() -> None:
    """Import the table in a background thread (the first priced call then waits for the rest, if any)."""
    threading.Thread(target=_table, name="receipts-prices", daemon=True).start()


@lru_cache(maxsize=1)
def _table():
    try:
        from importlib.metadata import version

        from genai_prices import Usage, calc_price
    except ImportError:  # (a runtime dependency; a broken install prices nothing rather than failing calls)
        return None
    return calc_price, Usage, f"genai-prices {version('genai-prices')}"


def _text(amount) -> str:
    """Exact decimal text, never in exponent form (Decimal('0E-7') -> '0', 2.1E-4 -> '0.00021')."""
    text = format(amount, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
