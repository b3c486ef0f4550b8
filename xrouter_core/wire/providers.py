"""Provider families by name, and how a route or a proxied host is matched to one.

Plain names and host lists only (no adapters), so that settings can validate a route's
provider without importing the adapters that depend on settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xrouter_core.config import Route

# Provider types that speak OpenAI's wire format; "" (or "auto") is detected per route.
OPENAI_WIRE: tuple[str, ...] = (
    "openai",
    "openai_compatible",
    "xrouter",
    "mistral",
    "groq",
    "together",
    "perplexity",
)
# Every provider type a route may name, each with an adapter in wire/adapters/.
# `openai_responses`: OpenAI, with Responses clients sent to its Responses API natively.
# `ollama`: Ollama's native /api/chat (NDJSON streams); its /v1 is OpenAI-compatible.
PROVIDERS: tuple[str, ...] = (
    *OPENAI_WIRE,
    "azure",
    "anthropic",
    "gemini",
    "cohere",
    "openai_responses",
    "ollama",
)

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

# HTTPS-proxy mode: hosts whose OpenAI-style chat calls are routed (everything else on
# them, and every other host, passes through untouched).
OPENAI_STYLE_HOSTS = frozenset(
    {
        "api.openai.com",
        "api.groq.com",
        "api.mistral.ai",
        "api.together.xyz",
        "api.perplexity.ai",
        "openrouter.ai",
        "api.deepseek.com",
        "api.x.ai",
        "api.fireworks.ai",
    }
)
# HTTPS-proxy mode: Anthropic clients (Claude Code) get their Messages calls routed too.
ANTHROPIC_HOST = "api.anthropic.com"
# Hosts that are this machine (or, from a container, its host): a route or engine there
# runs locally.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", "host.docker.internal"})


def known_provider(name: str) -> bool:
    return name in ("", "auto") or name in PROVIDERS


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
