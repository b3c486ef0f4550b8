"""Prices in USD per 1M tokens: the bundled table (prices.json, dated), per-route
overrides, and zero for models that run locally unless a price is configured."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from xrouter_core.config import Route, Settings
from xrouter_core.wire.providers import LOCAL_HOSTS


@dataclass(frozen=True, slots=True)
class Price:
    input: float
    output: float
    source: str  # "route", "table", "local" or "unknown"

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


@cache
def price_table() -> dict:
    return json.loads((Path(__file__).with_name("prices.json")).read_text(encoding="utf-8"))


def table_price(model: str) -> Price | None:
    """Exact name first, then the longest known prefix ("gpt-4o-2024-08-06" → gpt-4o),
    ignoring a vendor prefix such as "openai/"."""
    models = price_table()["models"]
    name = model.lower().rsplit("/", 1)[-1]
    entry = models.get(name)
    if entry is None:
        prefixes = [known for known in models if name.startswith(known)]
        if not prefixes:
            return None
        entry = models[max(prefixes, key=len)]
    return Price(float(entry["input"]), float(entry["output"]), "table")


def is_local(route: Route, settings: Settings) -> bool:
    classifier_url = settings.classifier.base_url
    return route.host in LOCAL_HOSTS or bool(
        classifier_url and route.base_url.rstrip("/") == classifier_url.rstrip("/")
    )


class Pricing:
    """Price lookups for the current settings."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def for_model(self, tier: str, model: str) -> Price:
        route = self.settings.route(tier)
        if route is not None and (route.input_price is not None or route.output_price is not None):
            return Price(route.input_price or 0.0, route.output_price or 0.0, "route")
        if route is not None and is_local(route, self.settings):
            return Price(0.0, 0.0, "local")
        found = table_price(model) if model else None
        return found or Price(0.0, 0.0, "unknown")

    def for_tier(self, tier: str) -> Price:
        route = self.settings.route(tier)
        return self.for_model(tier, route.model if route else "")
