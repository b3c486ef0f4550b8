"""Provider adapters, one file per provider family, chosen per route."""

from __future__ import annotations

from xrouter_core.config import Route
from xrouter_core.wire.adapters.anthropic import AnthropicAdapter
from xrouter_core.wire.adapters.base import Adapter, UpstreamRequest
from xrouter_core.wire.adapters.cohere import CohereAdapter
from xrouter_core.wire.adapters.gemini import GeminiAdapter
from xrouter_core.wire.adapters.ollama import OllamaAdapter
from xrouter_core.wire.adapters.openai import AzureOpenAIAdapter, OpenAIAdapter
from xrouter_core.wire.adapters.openai_responses import OpenAIResponsesAdapter
from xrouter_core.wire.providers import OPENAI_WIRE, PROVIDERS, provider_name

_ADAPTERS: dict[str, Adapter] = {name: OpenAIAdapter(name) for name in OPENAI_WIRE}
_ADAPTERS.update(
    {
        "azure": AzureOpenAIAdapter(),
        "anthropic": AnthropicAdapter(),
        "gemini": GeminiAdapter(),
        "cohere": CohereAdapter(),
        "openai_responses": OpenAIResponsesAdapter(),
        "ollama": OllamaAdapter(),
    }
)
assert tuple(_ADAPTERS) == PROVIDERS, "wire/providers.py and the adapters must name the same"


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


__all__ = ["Adapter", "UpstreamRequest", "adapter_for"]
