"""Which models a provider offers: its own list endpoint first, the bundled catalog second.

The list endpoints are read by wire/model_lists.py (shared with the running router);
this module adds the bundled catalog.json, which the wizard falls back to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from xrouter_core.wire.model_lists import ListingError, fetch_models, strip_suffix

__all__ = [
    "ListingError",
    "ModelListing",
    "catalog",
    "fetch_models",
    "models_for",
    "provider_info",
    "strip_suffix",
]


@dataclass(frozen=True)
class ModelListing:
    models: list[str]
    source: str  # "provider" or "catalog"
    problem: str = ""  # why the provider's own list was not used


@cache
def catalog() -> dict[str, Any]:
    """The bundled catalog.json: provider types, default base URLs, fallback models."""
    text = (
        resources.files("xrouter_core.setup").joinpath("catalog.json").read_text(encoding="utf-8")
    )
    return json.loads(text)


def provider_info(name: str) -> dict[str, Any]:
    doc = catalog()
    return doc["providers"].get(name) or doc["local_engines"].get(name) or {}


def models_for(
    provider: str, base_url: str, api_key: str = "", timeout: float = 5.0
) -> ModelListing:
    """Live list when possible, else the bundled catalog with the reason."""
    info = provider_info(provider)
    try:
        models = fetch_models(info.get("listing", "openai"), base_url, api_key, timeout)
        if models:
            return ModelListing(models, "provider")
        problem = "the provider listed no models"
    except ListingError as exc:
        problem = str(exc)
    return ModelListing(list(info.get("models") or []), "catalog", problem)
