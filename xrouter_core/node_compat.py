"""The original Node Xrouter's configuration, read as this router's settings.

A user of the Node router keeps their `.env` and `upstreams.json`: `config.py` calls the
two functions here and nothing else. What they do:

- `node_upstreams_to_env`: its `upstreams.json` (and `UPSTREAMS_JSON`) shape, top-level
  `cheap`/`medium`/`frontier` objects with camelCase keys, flattened into the variable
  names they stand for. As in the original, values from such a document outrank the
  variables of the same route (the original merges `file ?? env` per field).
- `translate_node_env`: its variables that have another name here (`BODY_LIMIT`,
  `CACHE_TTL_MS`, `UPSTREAM_TIMEOUT_MS`, …) written under the new name, in this router's
  units, with one info line each naming the new setting. The new name wins when both
  are set. Variables this router reads under their original name (`CLASSIFIER_MAX_CHARS`,
  `DECISION_HEADER`, `<TIER>_NAME`, …) are read by `config.py` itself.

Nothing here reads the environment or a file: it works on the merged values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from xrouter_core.tiers import TIERS

# An upstream object's keys (camelCase, as the original writes them) → the variable's
# suffix after `<TIER>_`. timeoutMs is the original's per-upstream timeout.
UPSTREAM_KEYS: dict[str, str] = {
    "baseUrl": "BASE_URL",
    "apiKey": "API_KEY",
    "model": "MODEL",
    "provider": "PROVIDER",
    "apiVersion": "API_VERSION",
    "deployment": "DEPLOYMENT",
    "headers": "HEADERS",
    "timeoutMs": "FIRST_BYTE_TIMEOUT_MS",
    "name": "NAME",
}

# Original name → (this router's name, how the value converts).
_SAME = "same"  # the same number, the same unit
_MS_TO_S = "ms_to_s"  # milliseconds to whole seconds, rounded up
_FLAG = "flag"  # the original's envBool: "true" or "1" is true, anything else false
RENAMED: dict[str, tuple[str, str]] = {
    "BODY_LIMIT": ("MAX_BODY_BYTES", _SAME),
    "CACHE_ENABLED": ("DECISION_CACHE_ENABLED", _FLAG),
    "CACHE_TTL_MS": ("DECISION_CACHE_TTL", _MS_TO_S),
    "CACHE_MAX": ("DECISION_CACHE_MAX", _SAME),
    "UPSTREAM_TIMEOUT_MS": ("FIRST_BYTE_TIMEOUT_MS", _SAME),
    **{f"{t.upper()}_TIMEOUT_MS": (f"{t.upper()}_FIRST_BYTE_TIMEOUT_MS", _SAME) for t in TIERS},
}


# Provider names other routers' configurations use for what has another name here;
# read only where the name is not one of this router's (which stops the router).
PROVIDER_ALIASES: dict[str, str] = {
    "google": "gemini",
    "azure_openai": "azure",
    "azure-openai": "azure",
    "openai-compatible": "openai_compatible",
    "openai_compat": "openai_compatible",
    "compatible": "openai_compatible",
    "custom": "openai_compatible",
    "local": "openai_compatible",
    # With a base URL ending in /v1 (Ollama's OpenAI-compatible API), as the Node
    # Xrouter read it; else Ollama's native /api/chat (wire/adapters/ollama.py).
    "ollama": "openai_compatible",
    "vllm": "openai_compatible",
    "lmstudio": "openai_compatible",
    "llamacpp": "openai_compatible",
    "llama.cpp": "openai_compatible",
    "openrouter": "openai_compatible",
    "deepseek": "openai_compatible",
}


def is_node_upstreams(doc: Mapping[str, Any]) -> bool:
    """The original's shape: a top-level tier object instead of this router's `routes`."""
    return any(tier in doc for tier in TIERS)


def node_upstreams_to_env(
    doc: Mapping[str, Any], where: str, problems: list[str], notes: list[str]
) -> dict[str, str]:
    """The original's upstreams document as `<TIER>_*` values.

    `null` for a tier means no route for it (as in the original). A key it does not know
    is left out with a note: the original ignored such keys, so refusing them would stop
    a configuration that worked there."""
    flat: dict[str, str] = {}
    for tier in TIERS:
        if tier not in doc:
            continue
        upstream = doc[tier]
        prefix = tier.upper() + "_"
        if upstream is None:
            flat[prefix + "BASE_URL"] = ""
            continue
        if not isinstance(upstream, dict):
            problems.append(f"{where}: {tier} must be an object with baseUrl, model, …")
            continue
        for key, value in upstream.items():
            suffix = UPSTREAM_KEYS.get(key)
            if suffix is None:
                notes.append(
                    f"{where}: {tier}.{key} is not a setting this router reads; ignored"
                    f" (known: {', '.join(UPSTREAM_KEYS)})"
                )
                continue
            if value is None:  # the original's `??`: the variable's value stays
                continue
            if key == "headers" and not isinstance(value, dict):
                problems.append(f"{where}: {tier}.headers must be an object of strings")
                continue
            if key == "timeoutMs" and (isinstance(value, bool) or not isinstance(value, int)):
                problems.append(f"{where}: {tier}.timeoutMs must be a whole number of ms")
                continue
            flat[prefix + suffix] = json.dumps(value) if isinstance(value, dict) else str(value)
    if any(key.endswith("FIRST_BYTE_TIMEOUT_MS") for key in flat):
        notes.append(
            f"{where}: timeoutMs is read as <TIER>_FIRST_BYTE_TIMEOUT_MS (the time until"
            " the route's answer begins; a stream may run longer)"
        )
    return flat


def translate_node_env(
    values: Mapping[str, str], problems: list[str], notes: list[str]
) -> dict[str, str]:
    """The merged values with the original's renamed variables under this router's names."""
    out = dict(values)
    for old, (new, kind) in RENAMED.items():
        raw = values.get(old, "").strip()
        if not raw:
            continue
        if values.get(new, "").strip():
            notes.append(f"{old} is the Node Xrouter's name for {new}; {new} is set and wins")
            continue
        if kind == _FLAG:
            converted = "true" if raw.lower() == "true" or raw == "1" else "false"
        else:
            try:
                number = int(raw)
            except ValueError:
                problems.append(f"{old} must be a whole number, not {raw!r}")
                continue
            if number < 0:
                problems.append(f"{old} must be at least 0, not {number}")
                continue
            converted = str(math.ceil(number / 1000) if kind == _MS_TO_S else number)
        out[new] = converted
        unit = " (seconds here)" if kind == _MS_TO_S else ""
        notes.append(f"{old}={raw} is read as {new}={converted}{unit}: {new} is its name here")
    for tier in TIERS:
        name = f"{tier.upper()}_PROVIDER"
        given = values.get(name, "").strip().lower()
        base_url = values.get(f"{tier.upper()}_BASE_URL", "").strip().rstrip("/")
        if given == "ollama" and not base_url.endswith("/v1"):
            continue  # this router's own adapter for Ollama's native /api/chat
        if given in PROVIDER_ALIASES:
            out[name] = PROVIDER_ALIASES[given]
            notes.append(f"{name}={given} is read as {PROVIDER_ALIASES[given]}")
    return out
