"""The provider catalog: every provider and model a user can use, and which tiers each
model may serve, read into each tier's candidate routes for `config.py`.

upstreams.json's `providers` (or the XROUTER_PROVIDERS variable, the same JSON):

    "providers": {
      "groq": {"type": "groq", "base_url": "https://api.groq.com/openai/v1",
               "api_key_env": "GROQ_API_KEY", "tools": true,
               "models": [{"model": "llama-3.1-8b-instant", "tiers": ["cheap"],
                           "quality": 0.55, "input_price": 0.05, "output_price": 0.08}]},
      "local": {"type": "ollama", "base_url": "http://127.0.0.1:11434",
                "models": ["qwen2.5:7b"], "tiers": ["cheap"]}
    }

A provider's `tiers`, `vision`, `tools` and `quality` are its models' defaults; a model
is a name or an object (a `models` object of name → object works too). Each (model,
tier) becomes one candidate route named `<provider>/<model>`, after the tier's routes of
`routes` (and <TIER>_*), in catalog order. Prices left out come from genai-prices.

A provider whose key is missing (`api_key_env` names a variable that is unset or empty)
is skipped with one warning naming the provider and the variable, never a key. Like
node_compat.py, this module reads no environment and no file: it works on the merged
values, and hands config.py plain candidate objects that it checks as any other.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from xrouter_core.tiers import TIERS

# The variable upstreams.json's `providers` is flattened into (a JSON object).
CATALOG_VARIABLE = "XROUTER_PROVIDERS"
# A provider's fields that every route of it shares; `type` is the route's `provider`.
SHARED_FIELDS = (
    "base_url",
    "api_key",
    "headers",
    "deployment",
    "api_version",
    "connect_timeout_ms",
    "first_byte_timeout_ms",
)
# Defaults a provider gives its models, each model may say otherwise.
MODEL_DEFAULTS = ("tiers", "vision", "tools", "quality")
PROVIDER_KEYS = frozenset({"type", "api_key_env", "models", *SHARED_FIELDS, *MODEL_DEFAULTS})
MODEL_KEYS = frozenset(
    {"model", "input_price", "output_price", "cached_price", "weight", *MODEL_DEFAULTS}
)


@dataclass
class Catalog:
    """What the catalog gives config.py: tier → [(where, candidate object)] in catalog
    order; the tiers it names; tier → the providers skipped for it (missing keys)."""

    by_tier: dict[str, list[tuple[str, dict[str, Any]]]] = field(
        default_factory=lambda: {tier: [] for tier in TIERS}
    )
    named: set[str] = field(default_factory=set)
    skipped: dict[str, list[str]] = field(default_factory=dict)


def key_variable_missing(values: Mapping[str, str], variable: str) -> bool:
    return not values.get(variable, "").strip()


def _unknown_keys(
    where: str, doc: Mapping[str, Any], known: frozenset[str], problems: list[str]
) -> bool:
    """Whether `doc` has keys outside `known`; if so, one problem naming them and the
    known ones."""
    unknown = sorted(set(doc) - known)
    if unknown:
        problems.append(f"{where}: unknown keys {unknown} (known: {', '.join(sorted(known))})")
    return bool(unknown)


def _models(provider: str, raw: Any, problems: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """A provider's `models` as (where, object with `model`) pairs."""
    where = f"providers.{provider}.models"
    if isinstance(raw, dict):
        raw = [
            {"model": name, **(spec or {})} if isinstance(spec, dict | None) else spec
            for name, spec in raw.items()
        ]
    if not isinstance(raw, list) or not raw:
        problems.append(f"{where} must be a non-empty list of model names or objects")
        return []
    found = []
    for index, item in enumerate(raw):
        here = f"{where}[{index}]"
        if isinstance(item, str) and item.strip():
            item = {"model": item.strip()}
        if not isinstance(item, dict) or not str(item.get("model") or "").strip():
            problems.append(f"{here} must be a model name or an object with `model`")
            continue
        if _unknown_keys(here, item, MODEL_KEYS, problems):
            continue
        found.append((here, item))
    return found


def _tiers(where: str, raw: Any, problems: list[str]) -> list[str]:
    if isinstance(raw, str):
        raw = [raw]
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
        problems.append(f"{where}.tiers must be a list of tiers ({', '.join(TIERS)})")
        return []
    tiers = [t.strip().lower() for t in raw]
    bad = [t for t in tiers if t not in TIERS]
    if bad:
        problems.append(f"{where}.tiers: unknown tiers {bad} (use {', '.join(TIERS)})")
        return []
    return list(dict.fromkeys(tiers))


def read_catalog(
    raw: str, values: Mapping[str, str], problems: list[str], warnings: list[str]
) -> Catalog:
    """The catalog's candidates per tier, each an object with the fields of a tier's
    candidate in `routes` (config.py's CANDIDATE_FIELDS), read with the same checks.
    The tiers it names include those whose every candidate was skipped for a missing
    key: config.py stops the router for such a tier, naming the skipped providers."""
    found = Catalog()
    by_tier, named = found.by_tier, found.named
    if not raw.strip():
        return found
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        problems.append(f"providers ({CATALOG_VARIABLE}) is not valid JSON: {exc}")
        return found
    if not isinstance(doc, dict):
        problems.append("providers must be an object of provider name → provider")
        return found
    for provider, spec in doc.items():
        where = f"providers.{provider}"
        if not isinstance(spec, dict):
            problems.append(f"{where} must be an object with type, base_url, models, …")
            continue
        if _unknown_keys(where, spec, PROVIDER_KEYS, problems):
            continue
        if "/" in provider or not provider.strip():
            problems.append(f"{where}: a provider's name may not be empty or hold '/'")
            continue
        models = _models(provider, spec.get("models"), problems)
        default_tiers = _tiers(where, spec.get("tiers"), problems)
        shared: dict[str, Any] = {k: spec[k] for k in SHARED_FIELDS if k in spec}
        if "type" in spec:
            shared["provider"] = spec["type"]
        plans = []
        for here, model in models:
            tiers = _tiers(here, model["tiers"], problems) if "tiers" in model else default_tiers
            if not tiers and "tiers" not in model:
                problems.append(
                    f"{here}: which tiers may it serve? Set tiers on the model or the provider"
                )
            named.update(tiers)
            item = {**shared, "name": f"{provider}/{model['model']}"}
            for key in ("vision", "tools", "quality"):
                if key in model or key in spec:
                    item[key] = model.get(key, spec.get(key))
            item.update({k: v for k, v in model.items() if k != "tiers"})
            plans.append((here, tiers, item))
        variable = spec.get("api_key_env")
        if variable is not None:
            if not isinstance(variable, str) or not variable.strip():
                problems.append(f"{where}.api_key_env must name an environment variable")
                continue
            if "api_key" in spec:
                problems.append(f"{where}: give api_key or api_key_env, not both")
                continue
            if key_variable_missing(values, variable.strip()):
                served = sorted({t for _, tiers, _ in plans for t in tiers}, key=TIERS.index)
                why = f"provider {provider!r} (its key variable {variable.strip()} is not set)"
                warnings.append(
                    f"catalog: {why} is skipped"
                    + (f"; it would serve {', '.join(served)}" if served else "")
                )
                for tier in served:
                    found.skipped.setdefault(tier, []).append(why)
                continue
            shared_key = values[variable.strip()].strip()
            for _, _, item in plans:
                item["api_key"] = shared_key
        for here, tiers, item in plans:
            for tier in tiers:
                by_tier[tier].append((here, item))
    return found


__all__ = ["CATALOG_VARIABLE", "Catalog", "read_catalog"]
