"""Price lookups and the settings that override them (plain functions, no router)."""

from __future__ import annotations

import pytest
from genai_prices import Usage as GenaiUsage
from genai_prices import calc_price

from xrouter_core.accounting.prices import Price, Pricing, genai_price
from xrouter_core.config import ConfigError, Route, load_settings

BASE = {
    "CLASSIFIER_BASE_URL": "http://127.0.0.1:11434/v1",
    "CLASSIFIER_MODEL": "qwen2.5:0.5b",
    "MEDIUM_BASE_URL": "https://api.groq.com/openai/v1",
    "MEDIUM_MODEL": "llama-3.3-70b-versatile",
    "FRONTIER_BASE_URL": "https://api.anthropic.com",
    "FRONTIER_MODEL": "claude-sonnet-4-5",
}


def settings(**extra: str):
    return load_settings({**BASE, **extra}, env_file="/nonexistent", upstreams_file="/nonexistent")


# (model, route URL, genai-prices provider): models the old table priced at $0 among them.
MODELS = [
    ("gpt-5", "https://api.openai.com/v1", "openai"),
    ("gpt-4o-2024-08-06", "https://api.openai.com/v1", "openai"),
    ("claude-sonnet-4-5", "https://api.anthropic.com", "anthropic"),
    ("claude-opus-4-5", "https://api.anthropic.com", "anthropic"),
    ("gemini-2.5-pro", "https://generativelanguage.googleapis.com", "google"),
    ("gemini-3-pro-preview", "https://generativelanguage.googleapis.com", "google"),
    ("llama-3.3-70b-versatile", "https://api.groq.com/openai/v1", "groq"),
]
# (prompt, completion, cache read, cache write): a small request, a cached one, and a
# long-context one past the 200k-token tier of Claude and Gemini Pro.
COUNTS = [(10, 5, 0, 0), (1200, 50, 1000, 0), (4000, 300, 2000, 1500), (250_000, 900, 100_000, 0)]


@pytest.mark.parametrize(("model", "url", "provider"), MODELS)
def test_costs_match_genai_prices_own_computation(model, url, provider):
    price = genai_price(model, Route("frontier", url))
    assert price is not None and price.priced and price.input > 0
    for prompt, completion, read, write in COUNTS:
        if write and price.cache_write is None:
            continue  # this provider has no cache writes
        usage = GenaiUsage(
            input_tokens=prompt,
            output_tokens=completion,
            cache_read_tokens=read,
            cache_write_tokens=write,
        )
        theirs = float(calc_price(usage, model, provider_id=provider).total_price)
        assert price.cost(prompt, completion, read, write) == pytest.approx(theirs, rel=1e-9)


def test_cache_reads_cost_less_and_long_context_pays_its_tier():
    claude = genai_price("claude-sonnet-4-5", Route("frontier", "https://api.anthropic.com"))
    assert claude is not None and claude.cache_read is not None and claude.cache_write
    assert claude.cost(1000, 0, 1000, 0) < claude.cost(1000, 0) < claude.cost(1000, 0, 0, 1000)
    # Past 200k prompt tokens every token pays the higher rate, as Anthropic bills it.
    assert claude.cost(200_001, 0) > 200_001 / 200_000 * claude.cost(200_000, 0) * 1.5


def test_route_by_url_provider_type_or_model_name():
    # A gateway URL genai-prices does not know: the provider type, then the name alone.
    assert genai_price("gpt-4o", Route("x", "https://gateway.example/v1")).model == "gpt-4o"
    assert genai_price("openai/gpt-4o", Route("x", "https://gateway.example/v1")).input > 0
    routed = Route("x", "https://gateway.example", provider="anthropic")
    assert genai_price("claude-sonnet-4-5", routed).model == "claude-sonnet-4-5"
    assert genai_price("my-own-finetune", Route("x", "https://gateway.example/v1")) is None


def test_local_route_is_free_overrides_win_and_unknown_is_marked():
    pricing = Pricing(settings())
    cheap = pricing.for_tier("cheap")
    assert cheap.source == "local" and cheap.cost(1000, 1000) == 0 and cheap.priced
    assert pricing.for_tier("medium").source == "genai-prices"
    assert pricing.for_tier("medium").input == pytest.approx(0.59)
    assert pricing.for_model("medium", "my-own-finetune") == Price(0.0, 0.0, "unknown")
    assert not pricing.for_model("medium", "my-own-finetune").priced
    priced = Pricing(settings(CHEAP_INPUT_PRICE="0.02", FRONTIER_OUTPUT_PRICE="12"))
    assert priced.for_tier("cheap").input == 0.02 and priced.for_tier("cheap").source == "route"
    frontier = priced.for_tier("frontier")
    assert (frontier.source, frontier.input, frontier.output) == ("route", 0.0, 12.0)
    # With a configured price, cached tokens pay its input rate.
    overridden = Pricing(settings(FRONTIER_INPUT_PRICE="3", FRONTIER_OUTPUT_PRICE="15"))
    route = overridden.for_tier("frontier")
    assert route.cost(1000, 10, 800, 100) == pytest.approx((1000 * 3 + 10 * 15) / 1e6)


def test_a_price_is_resolved_once_per_tier_and_model(monkeypatch):
    pricing = Pricing(settings())
    calls: list[tuple[str, str]] = []
    resolve = pricing.resolve

    def counting(tier: str, model: str) -> Price:
        calls.append((tier, model))
        return resolve(tier, model)

    monkeypatch.setattr(pricing, "resolve", counting)
    first = pricing.for_model("frontier", "claude-sonnet-4-5")
    for _ in range(100):
        assert pricing.for_model("frontier", "claude-sonnet-4-5") is first
    pricing.for_model("medium", "llama-3.3-70b-versatile")
    assert calls == [("frontier", "claude-sonnet-4-5"), ("medium", "llama-3.3-70b-versatile")]


def test_upstreams_json_prices_and_bad_values(tmp_path):
    upstreams = tmp_path / "upstreams.json"
    upstreams.write_text('{"routes": {"medium": {"input_price": 0.5, "output_price": 1.5}}}')
    loaded = load_settings(BASE, env_file="/nonexistent", upstreams_file=upstreams)
    assert (loaded.route("medium").input_price, loaded.route("medium").output_price) == (0.5, 1.5)
    with pytest.raises(ConfigError) as info:
        settings(MEDIUM_INPUT_PRICE="cheap", CACHE_BACKEND="floppy", REDIS_URL="http://x")
    text = str(info.value)
    assert "MEDIUM_INPUT_PRICE" in text and "CACHE_BACKEND" in text and "REDIS_URL" in text
