"""Logical model names and the rules that bound a request's tier.

`xrouter/auto` (and, by default, any name that is not a logical one) lets the
classifier decide; `xrouter/cheap|medium|frontier` pin a tier; the categories
`simple`, `coding`, `reasoning`, `vision` (bare or with an `xrouter/` or
`llmrouter/` prefix) map to tiers through a configurable table (MODEL_CATEGORIES).
Each name has an alias without a slash (`xrouter-auto`, `xrouter-cheap`,
`xrouter-coding`, …) for SDKs that read `prefix/` as a provider (the OpenAI Agents SDK).
A header `X-Xrouter-tier` pins a tier too. After the decision, requests with tools
can be raised to a minimum tier, and requests with images may only go to routes
marked vision-capable. No mitmproxy here: plain functions on plain data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from xrouter_core.tiers import CHEAP, FRONTIER, MEDIUM, TIER_INDEX, TIERS

if TYPE_CHECKING:
    from xrouter_core.config import RoutingSettings

PREFIXES = ("xrouter/", "llmrouter/", "xrouter-")
AUTO = "auto"
# Category → tier; MODEL_CATEGORIES (a JSON object) overrides or adds entries.
DEFAULT_CATEGORIES: dict[str, str] = {
    "simple": CHEAP,
    "coding": MEDIUM,
    "reasoning": FRONTIER,
    "vision": FRONTIER,
}


def logical_model_names(routing: RoutingSettings | None = None) -> list[str]:
    """Every name the router offers in GET /v1/models."""
    categories = routing.categories if routing is not None else DEFAULT_CATEGORIES
    names = [AUTO, *TIERS, *categories]
    return [*(f"xrouter/{name}" for name in names), *(f"xrouter-{name}" for name in names)]


def is_logical_name(model: str, routing: RoutingSettings) -> bool:
    """Is this one of the names GET /v1/models lists (any case, any of the prefixes)?"""
    lowered = model.strip().lower()
    name = strip_prefix(lowered)
    return name != lowered and (name == AUTO or name in TIERS or name in routing.categories)


def strip_prefix(model: str) -> str:
    lowered = model.strip().lower()
    for prefix in PREFIXES:
        if lowered.startswith(prefix):
            return lowered[len(prefix) :]
    return lowered


def header_tier(header: str, routing: RoutingSettings) -> str | None:
    """The tier an X-Xrouter-tier value names: a tier, a tier's index or a category."""
    name = strip_prefix(header)
    if name in TIERS:
        return name
    if name.isdigit() and int(name) < len(TIERS):
        return TIERS[int(name)]
    return routing.categories.get(name)


def pinned_tier(model: str, header: str | None, routing: RoutingSettings) -> str | None:
    """The tier the request pins (header first, then model name), or None to classify."""
    if header:
        tier = header_tier(header, routing)
        if tier is not None:
            return tier
    name = strip_prefix(model)
    if name in TIERS:
        return name
    if name in routing.categories:
        return routing.categories[name]
    if not name or name == AUTO or routing.unknown_model == "classify":
        return None
    return routing.unknown_model


def bad_tier_header(header: str | None, routing: RoutingSettings) -> bool:
    """A header that names no tier is a client mistake worth a 400, not a silent guess."""
    return header_tier(header, routing) is None if header else False


def has_tools(body: Mapping[str, Any]) -> bool:
    return bool(body.get("tools")) or bool(body.get("functions"))


def has_images(messages: list[dict[str, Any]]) -> bool:
    """OpenAI image parts (`image_url`, `input_image`) or Anthropic-style `image` blocks."""
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") in (
                    "image_url",
                    "input_image",
                    "image",
                ):
                    return True
    return False


def raise_for_tools(tier: int, body: Mapping[str, Any], routing: RoutingSettings) -> int:
    """Tool-using agents need a capable model: apply TOOLS_MIN_TIER."""
    if routing.tools_min_tier and has_tools(body):
        return max(tier, TIER_INDEX[routing.tools_min_tier])
    return tier
