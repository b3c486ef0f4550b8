"""Provider adapters, one file per provider family, chosen per route."""

from __future__ import annotations

from xrouter_core.adapters.anthropic import AnthropicAdapter
from xrouter_core.adapters.base import Adapter, UpstreamRequest
from xrouter_core.adapters.cohere import CohereAdapter
from xrouter_core.adapters.gemini import GeminiAdapter
from xrouter_core.adapters.openai import AzureOpenAIAdapter, OpenAIAdapter
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
_ADAPTERS.update(
    {
        "azure": AzureOpenAIAdapter(),
        "anthropic": AnthropicAdapter(),
        "gemini": GeminiAdapter(),
        "cohere": CohereAdapter(),
    }
)
PROVIDERS: tuple[str, ...] = tuple(_ADAPTERS)

# Host suffix → provider type, checked in order.
HOSTS: tuple[tuple[str, str], ...] = (
    ("anthropic.com", "anthropic"),
    ("generativelanguage.googleapis.com", "gemini"),
    ("cohere.com", "cohere"),
    ("cohere.ai", "cohere"),
    ("openai.azure.com", "azure"),
    ("cognitiveservices.azure.com", "azure"),
    ("mistral.ai", "mistral"),
    ("groq.com", "groq"),
    ("together.xyz", "together"),
    ("together.ai", "together"),
    ("perplexity.ai", "perplexity"),
    ("openai.com", "openai"),
)
# API-key prefix → provider type, for hosts that say nothing (gateways, tests, proxies).
KEY_PREFIXES: tuple[tuple[str, str], ...] = (
    ("sk-ant-", "anthropic"),
    ("AIza", "gemini"),
    ("gsk_", "groq"),
    ("pplx-", "perplexity"),
)


def known_provider(name: str) -> bool:
    return name in ("", "auto") or name in _ADAPTERS


def detect_provider(route: Route) -> str:
    """The provider type for a route whose type was left empty or 'auto': the base URL's
    host first, then Azure's own settings, then the key's prefix; else OpenAI-compatible."""
    host = route.host.lower()
    for suffix, name in HOSTS:
        if host == suffix or host.endswith("." + suffix):
            return name
    if route.deployment or route.api_version:
        return "azure"
    for prefix, name in KEY_PREFIXES:
        if route.api_key.startswith(prefix):
            return name
    return "openai_compatible"


def provider_name(route: Route) -> str:
    return route.provider if route.provider not in ("", "auto") else detect_provider(route)


# Route → its adapter, looked up once per route object (a route's fields never change).
_resolved: dict[int, tuple[Route, Adapter]] = {}


def adapter_for(route: Route) -> Adapter:
    found = _resolved.get(id(route))
    if found is not None and found[0] is route:
        return found[1]
    adapter = _ADAPTERS[provider_name(route)]
    if len(_resolved) > 1024:  # routes are replaced only on reconfigure
        _resolved.clear()
    _resolved[id(route)] = (route, adapter)
    return adapter


__all__ = [
    "PROVIDERS",
    "Adapter",
    "UpstreamRequest",
    "adapter_for",
    "detect_provider",
    "known_provider",
    "provider_name",
]
