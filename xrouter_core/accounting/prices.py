"""Prices in USD per 1M tokens: the maintained `genai-prices` library (bundled data, no
network), per-route overrides, and zero for models that run locally unless a price is
configured.

A request is priced when it is counted, at its provider's rates for uncached input,
cache reads, cache writes and output, including long-context tiers (a prompt over a
tier's start pays that tier's rates on all its tokens, as the providers bill it). The
library's model lookup (tens of µs to a few ms) runs once per (route, model) and is
cached; pricing a request is then a few float operations (see docs/usage.md)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from xrouter_core.config import Route, Settings
from xrouter_core.wire.providers import LOCAL_HOSTS, detect_provider

log = logging.getLogger("xrouter.prices")

# xrouter provider type → genai-prices provider id (when the URL does not say).
GENAI_PROVIDERS = {
    "openai": "openai",
    "azure": "azure",
    "anthropic": "anthropic",
    "gemini": "google",
    "cohere": "cohere",
    "groq": "groq",
    "mistral": "mistral",
    "together": "together",
    "perplexity": "perplexity",
}
# A resolved price is kept this long: genai-prices has prices that change on a date.
PRICE_TTL_S = 3600.0
# Model names come from clients too: the cache of resolved prices stays bounded.
PRICE_CACHE_MAX = 1024

# ((start, USD per 1M), ...): a prompt of more than `start` tokens pays that rate.
Tiers = tuple[tuple[int, float], ...]


@dataclass(frozen=True, slots=True)
class Price:
    """One model's rates in USD per 1M tokens. A cache rate of None means those tokens
    pay the input rate (the provider has no separate price for them)."""

    input: float
    output: float
    source: str  # "route", "genai-prices", "local" or "unknown"
    cache_read: float | None = None
    cache_write: float | None = None
    per_request: float = 0.0  # USD, a fee some providers add per call
    # Long-context tiers per rate: (("input", ((200000, 6.0),)), ...), empty for most.
    tiers: tuple[tuple[str, Tiers], ...] = ()
    # The lowest tier start: a prompt up to it pays the base rates (the common case).
    tiers_from: int = 0
    model: str = ""  # the model genai-prices matched

    @property
    def priced(self) -> bool:
        return self.source != "unknown"

    def _rate(self, name: str, base: float, prompt_tokens: int) -> float:
        for field, tiers in self.tiers:
            if field == name:
                for start, rate in reversed(tiers):
                    if prompt_tokens > start:
                        return rate
        return base

    def cost(
        self,
        prompt_tokens: int,
        completion_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> float:
        """USD for one request; `prompt_tokens` counts every prompt token, cached or not."""
        read_base = self.input if self.cache_read is None else self.cache_read
        write_base = self.input if self.cache_write is None else self.cache_write
        uncached = max(prompt_tokens - cache_read_tokens - cache_write_tokens, 0)
        if not self.tiers or prompt_tokens <= self.tiers_from:
            total = (
                uncached * self.input
                + cache_read_tokens * read_base
                + cache_write_tokens * write_base
                + completion_tokens * self.output
            )
            return total / 1_000_000 + (self.per_request if prompt_tokens else 0.0)
        n = prompt_tokens
        input_rate = self._rate("input", self.input, n)
        read_rate = (
            input_rate if self.cache_read is None else self._rate("cache_read", read_base, n)
        )
        write_rate = (
            input_rate if self.cache_write is None else self._rate("cache_write", write_base, n)
        )
        total = (
            uncached * input_rate
            + cache_read_tokens * read_rate
            + cache_write_tokens * write_rate
            + completion_tokens * self._rate("output", self.output, n)
        )
        return total / 1_000_000 + (self.per_request if prompt_tokens else 0.0)


FREE = Price(0.0, 0.0, "local")
UNKNOWN = Price(0.0, 0.0, "unknown")


def is_local(route: Route, settings: Settings) -> bool:
    classifier_url = settings.classifier.base_url
    return route.host in LOCAL_HOSTS or bool(
        classifier_url and route.base_url.rstrip("/") == classifier_url.rstrip("/")
    )


def genai_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("genai-prices")
    except PackageNotFoundError:
        return ""


def _snapshot() -> Any:
    from genai_prices import data_snapshot

    return data_snapshot.get_snapshot()


def find_model(model: str, route: Route | None) -> Any | None:
    """genai-prices' ModelInfo for this model on this route: by the route's URL, then by
    its provider type, then by the model name alone; None when nothing matches."""
    snapshot = _snapshot()
    names = [model]
    if "/" in model:
        names.append(model.rsplit("/", 1)[-1])  # "openai/gpt-4o" → "gpt-4o"
    lookups: list[tuple[str | None, str | None]] = []
    if route is not None:
        lookups.append((None, route.base_url))
        provider = GENAI_PROVIDERS.get(route.provider or detect_provider(route))
        if provider:
            lookups.append((provider, None))
    lookups.append((None, None))
    for name in names:
        for provider_id, url in lookups:
            try:
                return snapshot.find_provider_model(name, None, provider_id, url)[1]
            except LookupError:
                continue
    return None


def _rate_of(value: Any) -> tuple[float | None, Tiers]:
    """A genai-prices rate (Decimal, TieredPrices or None) as (base, tiers)."""
    if value is None:
        return None, ()
    if isinstance(value, Decimal | int | float):
        return float(value), ()
    base = getattr(value, "base", None)
    tiers = getattr(value, "tiers", None)
    if base is None or tiers is None:
        raise TypeError(f"unknown genai-prices rate {value!r}")
    steps = sorted((int(t.start), float(t.price)) for t in tiers)
    return float(base), tuple(steps)


def genai_price(model: str, route: Route | None) -> Price | None:
    """The model's current rates from genai-prices, or None when it does not know them."""
    info = find_model(model, route) if model else None
    if info is None:
        return None
    prices = info.get_prices(datetime.now(UTC))
    rates: dict[str, float | None] = {}
    tiers: list[tuple[str, Tiers]] = []
    for name in ("input", "output", "cache_read", "cache_write"):
        base, steps = _rate_of(getattr(prices, f"{name}_mtok", None))
        rates[name] = base
        if steps:
            tiers.append((name, steps))
    per_request = getattr(prices, "requests_kcount", None)
    return Price(
        rates["input"] or 0.0,
        rates["output"] or 0.0,
        "genai-prices",
        cache_read=rates["cache_read"],
        cache_write=rates["cache_write"],
        per_request=float(per_request) / 1000 if per_request else 0.0,
        tiers=tuple(tiers),
        tiers_from=min((steps[0][0] for _, steps in tiers), default=0),
        model=str(info.id),
    )


class Pricing:
    """Price lookups for the current settings, resolved once per (tier, model) and kept
    PRICE_TTL_S: `for_model` is a dictionary hit on every request but the first."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._resolved: dict[tuple[str, str], tuple[float, Price]] = {}

    def for_model(self, tier: str, model: str) -> Price:
        key = (tier, model)
        now = time.monotonic()
        hit = self._resolved.get(key)
        if hit is not None and now - hit[0] < PRICE_TTL_S:
            return hit[1]
        price = self.resolve(tier, model)
        if len(self._resolved) >= PRICE_CACHE_MAX:
            self._resolved.clear()
        self._resolved[key] = (now, price)
        return price

    def resolve(self, tier: str, model: str) -> Price:
        """The uncached lookup: the route's own price, free for a local route, else
        genai-prices, else unknown (priced at zero, and marked so)."""
        # A tier with several candidates: the one serving this model (its own price).
        route = next(
            (r for r in self.settings.tier_candidates(tier) if r.model == model),
            self.settings.route(tier),
        )
        return self.resolve_route(route, model)

    def resolve_route(self, route: Route | None, model: str) -> Price:
        """`resolve` for a route known already (a candidate of a tier)."""
        if route is not None and (route.input_price is not None or route.output_price is not None):
            # The configured price is the whole story: cached tokens pay its cached rate
            # (the catalog's cached_price), else its input rate.
            return Price(
                route.input_price or 0.0,
                route.output_price or 0.0,
                "route",
                cache_read=route.cached_price,
            )
        if route is not None and is_local(route, self.settings):
            return FREE
        try:
            found = genai_price(model, route)
        except Exception:  # noqa: BLE001 - a price lookup must never fail a request
            log.exception("genai-prices could not price %s; counted at zero", model)
            found = None
        if found is not None and route is not None and route.cached_price is not None:
            found = replace(found, cache_read=route.cached_price)
        return found or UNKNOWN

    def warm(self) -> None:
        """Load genai-prices and resolve each route's own model (run in a thread at start)."""
        try:
            _snapshot()
        except Exception:  # noqa: BLE001 - pricing then says "unknown", routing goes on
            log.exception("genai-prices is not usable; costs are counted at zero")
            return
        for tier in self.settings.routes:
            self.for_tier(tier)

    def for_tier(self, tier: str) -> Price:
        route = self.settings.route(tier)
        return self.for_model(tier, route.model if route else "")
