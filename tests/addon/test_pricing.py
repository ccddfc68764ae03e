"""addon.pricing: the cost of a call from the price table (genai-prices, the real package), exact."""
from decimal import Decimal

from receipts.addon import pricing

USAGE = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}


def test_a_known_model_is_priced_exactly_by_its_provider_s_api():
    got = pricing.cost("gpt-4o-mini", USAGE, "api.openai.com", 1_764_000_000)
    # $0.15 per million input tokens, $0.60 per million output tokens
    assert Decimal(got["amount"]) == Decimal("0.15") * 1000 / 10**6 + Decimal("0.6") * 100 / 10**6
    assert (got["currency"], got["provider"]) == ("USD", "openai")
    assert got["table"].startswith("genai-prices ")
    assert "E" not in got["amount"] and got["amount"] == "0.00021"


def test_a_gateway_or_local_host_is_priced_by_the_model_name():
    assert pricing.cost("claude-sonnet-4", USAGE, "localhost", None)["provider"] == "anthropic"


def test_what_cannot_be_priced_is_none_never_zero():
    assert pricing.cost("my-own-finetune-7b", USAGE, "localhost", None) is None
    assert pricing.cost("gpt-4o-mini", None, "api.openai.com", None) is None
    assert pricing.cost(None, USAGE, "api.openai.com", None) is None
    assert pricing.cost("gpt-4o-mini", {"prompt_tokens": None, "completion_tokens": None,
                                        "total_tokens": 5}, "api.openai.com", None) is None


def test_the_recorded_answer_carries_its_cost():
    from receipts.addon import exchange as X
    from receipts.storage.config import Settings

    body = b'{"id": "chatcmpl-1", "model": "gpt-4o-mini", "usage": {"prompt_tokens": 1000, "completion_tokens": 100}}'
    resp = X.Resp(status=200, reason="OK", headers=[("content-type", "application/json")], body=body, ts_start=1.0,
                  ts_end=1.5)
    data = X.response_data(resp, 1.0, Settings(), call=("api.openai.com", "gpt-4o-mini"))
    assert data["cost"]["amount"] == "0.00021"
