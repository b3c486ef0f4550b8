"""Provider adapters, one file per provider family, chosen per route."""

from __future__ import annotations

from xrouter_core.adapters.base import Adapter, UpstreamRequest
from xrouter_core.adapters.openai import OpenAIAdapter
from xrouter_core.config import Route

# Provider types that speak OpenAI's wire format; "" (or "auto") is detected per route.
OPENAI_WIRE = (
    "openai",
    "openai_compatible",
    "xrouter",
    "mistral",
    "groq",
    "together",
    "perplexity",
)

_ADAPTERS: dict[str, Adapter] = {name: OpenAIAdapter(name) for name in OPENAI_WIRE}


def known_provider(name: str) -> bool:
    return name in ("", "auto") or name in _ADAPTERS


def detect_provider(route: Route) -> str:
    """The provider type for a route whose type was left empty or 'auto'."""
    return "openai_compatible"


def adapter_for(route: Route) -> Adapter:
    name = route.provider if route.provider not in ("", "auto") else detect_provider(route)
    return _ADAPTERS[name]


__all__ = ["Adapter", "UpstreamRequest", "adapter_for", "detect_provider", "known_provider"]
