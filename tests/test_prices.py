"""Price lookups and the settings that override them (plain functions, no router)."""

from __future__ import annotations

import pytest

from xrouter_core.accounting.prices import Pricing, price_table, table_price
from xrouter_core.config import ConfigError, load_settings

BASE = {
    "CLASSIFIER_BASE_URL": "http://127.0.0.1:11434/v1",
    "CLASSIFIER_MODEL": "qwen2.5:0.5b",
    "MEDIUM_BASE_URL": "https://api.groq.com/openai/v1",
    "MEDIUM_MODEL": "llama-3.3-70b-versatile",
    "FRONTIER_BASE_URL": "https://api.openai.com/v1",
    "FRONTIER_MODEL": "gpt-4o-2024-08-06",
}


def settings(**extra: str):
    return load_settings({**BASE, **extra}, env_file="/nonexistent", upstreams_file="/nonexistent")


def test_table_is_dated_and_prefix_lookup_prefers_the_longest_name():
    assert price_table()["updated"]
    assert table_price("gpt-4o-mini-2024-07-18").input == 0.15
    assert table_price("gpt-4o-2024-08-06").output == 10.0
    assert table_price("openai/gpt-4o").input == 2.5
    assert table_price("my-own-finetune") is None


def test_local_cheap_route_is_free_and_overrides_win():
    pricing = Pricing(settings())
    assert pricing.for_tier("cheap").source == "local" and pricing.for_tier("cheap").input == 0
    assert pricing.for_tier("medium").input == 0.59
    assert pricing.for_tier("frontier").cost(1_000_000, 1_000_000) == pytest.approx(12.5)
    priced = Pricing(settings(CHEAP_INPUT_PRICE="0.02", FRONTIER_OUTPUT_PRICE="12"))
    assert priced.for_tier("cheap").input == 0.02 and priced.for_tier("cheap").source == "route"
    assert priced.for_tier("frontier").output == 12.0


def test_upstreams_json_prices_and_bad_values(tmp_path):
    upstreams = tmp_path / "upstreams.json"
    upstreams.write_text('{"routes": {"medium": {"input_price": 0.5, "output_price": 1.5}}}')
    loaded = load_settings(BASE, env_file="/nonexistent", upstreams_file=upstreams)
    assert (loaded.route("medium").input_price, loaded.route("medium").output_price) == (0.5, 1.5)
    with pytest.raises(ConfigError) as info:
        settings(MEDIUM_INPUT_PRICE="cheap", CACHE_BACKEND="floppy", REDIS_URL="http://x")
    text = str(info.value)
    assert "MEDIUM_INPUT_PRICE" in text and "CACHE_BACKEND" in text and "REDIS_URL" in text
