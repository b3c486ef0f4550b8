"""Settings for the router, read once at start.

Sources, highest precedence first:
  1. the process environment,
  2. a `.env` file (path in XROUTER_ENV_FILE, default `./.env`),
  3. `upstreams.json` (path in UPSTREAMS_FILE, default `./upstreams.json`), or when there
     is no such file, UPSTREAMS_JSON,
  4. built-in defaults, and for a tier nobody configured, a default route from a provider
     key in those sources (default_routes.py; XROUTER_AUTO_ROUTES=false turns it off).
The original Node Xrouter's configuration is read too (node_compat.py): its
upstreams.json shape, which outranks the variables as it did there, and its variable names.

Nothing else in the package reads the environment: modules get a `Settings`.
Every problem is collected and reported at once, one line each, so a bad
configuration stops the router at start instead of failing per request.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from xrouter_core import default_routes, node_compat
from xrouter_core.accounting.redis_topology import parse_redis_url
from xrouter_core.catalog import CATALOG_VARIABLE, read_catalog
from xrouter_core.client_keys import ClientKey, read_keys
from xrouter_core.default_routes import DefaultRoute
from xrouter_core.routing.models import DEFAULT_CATEGORIES
from xrouter_core.routing.rules import DiscoverRule, Rule, rules_from_text
from xrouter_core.tiers import CHEAP, FRONTIER, MEDIUM, TIERS
from xrouter_core.wire.providers import PROVIDERS, known_provider, provider_name

ROUTE_FIELDS: tuple[str, ...] = (
    "base_url",
    "api_key",
    "model",
    "provider",
    "headers",
    "deployment",
    "api_version",
    "vision",
    "connect_timeout_ms",
    "first_byte_timeout_ms",
    "input_price",
    "output_price",
    # The catalog's fields (catalog.py), for a tier's own route too.
    "cached_price",
    "quality",
    "tools",
    "weight",
    "api_key_env",
)
CLASSIFIER_FIELDS: tuple[str, ...] = (
    "enabled",
    "base_url",
    "model",
    "system_prompt",
    "timeout_ms",
    "force_stream",
    "warmup",
    "warmup_delay_ms",
    "keep_alive_ms",
    "loading_retry_ms",
    "loading_max_retries",
    "mode",
    "thresholds",
    "api",
    "hybrid_llm",
)
CLASSIFIER_MODES: tuple[str, ...] = ("llm", "builtin", "hybrid")
# How the LLM classifier asks (routing/classifier.py): a raw /v1/completions prompt in the
# model's chat template, /v1/chat/completions, or auto (completions for a known family).
CLASSIFIER_APIS: tuple[str, ...] = ("auto", "completions", "chat")
# Which prompts hybrid mode asks the LLM about: open_ended (not code, maths or multiple
# choice, where the LLM measured no better than the built-in classifier) or all.
HYBRID_LLM_SCOPES: tuple[str, ...] = ("open_ended", "all")
# Score (0..1) boundaries: cheap below the first, frontier from the second. These are the LLM
# classifier's: its score P(2) + P(1)/2 reads like its digit. The built-in classifier has its
# own, calibrated on the evaluation data (routing/builtin.py, BUILTIN_THRESHOLDS).
# CLASSIFIER_THRESHOLDS, when set, applies to every classifier.
DEFAULT_THRESHOLDS: tuple[float, float] = (0.33, 0.66)
LOG_LEVELS = ("debug", "info", "warning", "error")
# Other spellings of a level: `warn` is the Node Xrouter's.
LOG_LEVEL_ALIASES = {"warn": "warning"}
# What the LLM classifier is shown (CLASSIFIER_STRATEGY, the Node Xrouter's setting):
# the latest request the person wrote, or every user message of the conversation.
CLASSIFIER_STRATEGIES = ("last_user", "all_user")
# How a tier with several candidates picks one (<TIER>_STRATEGY): the first healthy one
# as listed, the cheapest healthy one by input + output price per 1M tokens, the lowest
# measured p50 time to first byte, the highest measured output tokens/s (both from
# routing/route_stats.py), or at random by weight.
CANDIDATE_STRATEGIES = ("ordered", "price", "latency", "throughput", "weighted")
# The strategies that read measured figures (routing/route_stats.py).
MEASURED_STRATEGIES = frozenset({"latency", "throughput"})
# What a further candidate (<TIER>_CANDIDATES, or a tier's list in upstreams.json) may
# set: a route's fields and its name.
CANDIDATE_FIELDS = frozenset({*ROUTE_FIELDS, "name"})
# ROUTER_KEYS_SOURCE: where client keys live (client_keys.py).
KEY_SOURCES = ("file", "redis")
# auto: Redis when REDIS_URL is set, else diskcache in XROUTER_DATA_DIR.
CACHE_BACKENDS = ("auto", "memory", "disk", "redis")
# SESSION_COST_ROUTING (routing/sessions.py): on (an agent session's turn goes to the
# acceptable tier with the lowest expected cost, its prompt cache counted), observe (the
# sessions are tracked and their honest savings shown, routing is as without it), off.
SESSION_MODES: tuple[str, ...] = ("on", "observe", "off")
# <TIER>_X402: off, or the one network the route may be paid on (base-sepolia = testnet).
X402_CHOICES = ("off", "base", "base-sepolia")
# The order of secp256k1's group: a private key is a number in 1 .. order - 1.
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class ConfigError(Exception):
    """Raised with every configuration problem found, one line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class NoConfiguration(ConfigError):
    """Nothing is configured at all: no route and no provider key. A first run: the
    launchers print the one message and exit with code 2 before opening a listener."""

    def __init__(self, message: str):
        super().__init__([message])
        self.message = message


@dataclass(frozen=True)
class Route:
    """One upstream a tier is sent to."""

    tier: str
    base_url: str
    api_key: str = ""
    # What UPSTREAM_HEADER names this route (<TIER>_NAME); the tier when empty.
    name: str = ""
    model: str = ""
    provider: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    deployment: str = ""
    api_version: str = ""
    # Can this route's model read images? Requests with images go only to such routes.
    vision: bool = False
    connect_timeout_ms: int = 5000
    # Until the response headers: a non-streamed answer's headers come when it is complete.
    first_byte_timeout_ms: int = 120_000
    # USD per 1M tokens; None means "look the model up in genai-prices".
    input_price: float | None = None
    output_price: float | None = None
    # USD per 1M cached (cache-read) input tokens; None: genai-prices', else the input rate.
    cached_price: float | None = None
    # The catalog's quality score (0..1, higher is better), for rules that weigh it.
    quality: float | None = None
    # Can this route's model call tools? None: not said (never skipped for tools).
    tools: bool | None = None
    # The `weighted` strategy's weight (relative; 0 is tried only after the others).
    weight: float = 1.0
    # Which candidate of its tier this is, for the circuit breaker and the fallback
    # header: the tier itself when it is the tier's only route, else `cheap#2` (its place
    # in the tier's list, from 1).
    key: str = ""

    @property
    def breaker_key(self) -> str:
        return self.key or self.tier

    @cached_property
    def label(self) -> str:
        """What X-Xrouter-route says served: the route's name, else provider/model."""
        return self.name or "/".join(p for p in (provider_name(self), self.model) if p)

    # x402: the network this route may be paid on when it answers 402 with a challenge
    # (<TIER>_X402: "base", or "base-sepolia" for a testnet route); "" never pays.
    x402: str = ""

    # Parsed once per route (they are read for every request); fields stay frozen.
    @cached_property
    def scheme(self) -> str:
        return urlsplit(self.base_url).scheme

    @cached_property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or ""

    @cached_property
    def port(self) -> int:
        parts = urlsplit(self.base_url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @cached_property
    def base_path(self) -> str:
        return urlsplit(self.base_url).path.rstrip("/")

    def public(self) -> dict[str, Any]:
        """What /health may show: never the key or header values (they may hold secrets)."""
        return {
            "tier": self.tier,
            "name": self.name or self.tier,
            "base_url": self.base_url,
            "provider": self.provider or "auto",
            "model": self.model or None,
            "has_api_key": bool(self.api_key),
            "vision": self.vision,
            "tools": self.tools,
            "quality": self.quality,
            "weight": self.weight,
            "key": self.breaker_key,
            "label": self.label,
            "x402": self.x402 or None,
        }


@dataclass(frozen=True)
class ClassifierSettings:
    enabled: bool = True
    base_url: str = ""
    model: str = ""
    system_prompt: str = ""
    timeout_ms: int = 2000
    force_stream: bool = True
    warmup: bool = True
    warmup_delay_ms: int = 0
    keep_alive_ms: int = 0
    loading_retry_ms: int = 1000
    loading_max_retries: int = 5
    api_key: str = ""
    # llm: the LLM decides, frontier when it fails; builtin: the in-process classifier
    # decides; hybrid: the LLM when configured and answering, else the built-in one.
    mode: str = "hybrid"
    # None: each classifier's own default (DEFAULT_THRESHOLDS, builtin.BUILTIN_THRESHOLDS).
    thresholds: tuple[float, float] | None = None
    api: str = "auto"
    hybrid_llm: str = "open_ended"
    # The Node Xrouter's knobs for the LLM request (0 / None / empty: this router's own).
    strategy: str = "last_user"
    max_chars: int = 0
    max_tokens: int = 0
    temperature: float | None = None
    logit_bias: Mapping[str, float] = field(default_factory=dict)

    @property
    def uses_llm(self) -> bool:
        return self.enabled and self.mode != "builtin" and bool(self.base_url)

    @property
    def uses_builtin(self) -> bool:
        return self.enabled and self.mode != "llm"


@dataclass(frozen=True)
class RoutingSettings:
    """Fallback, circuit breaker and logical model names (routing/fallback.py, models.py)."""

    fallback_enabled: bool = True
    # Order of escalation; a tier's chain is itself, then the tiers after it here.
    fallback_chain: tuple[str, ...] = TIERS
    breaker_failures: int = 3
    breaker_cooldown_s: int = 30
    # Requests that carry tools go at least to this tier ("" = no minimum).
    tools_min_tier: str = ""
    # Model names that are not logical names: "classify" them, or send them to a tier.
    unknown_model: str = "classify"
    # Answer with the model name the client asked for instead of the real one.
    keep_requested_model: bool = False
    # Category names (after the xrouter/ or llmrouter/ prefix) → tier.
    categories: Mapping[str, str] = field(default_factory=dict)
    # Tier → how its candidates are ordered (CANDIDATE_STRATEGIES; "ordered" when absent).
    strategies: Mapping[str, str] = field(default_factory=dict)
    # The measured strategies' window (routing/route_stats.py): the last this many
    # samples per route, none older than stats_window_s; a route with fewer than
    # stats_min_samples is not ranked yet; workers merge theirs every stats_sync_ms.
    stats_window: int = 20
    stats_window_s: int = 300
    stats_min_samples: int = 3
    stats_sync_ms: int = 1000


@dataclass(frozen=True)
class PaymentSettings:
    """x402 payments (xrouter_core/payments/, docs/payments.md). Caps are in USDC's
    atomic units (micro-dollars), so the ledger adds whole numbers."""

    # LLM_ROUTER_WALLET_KEY, checked to be a secp256k1 private key; "" = the key file.
    wallet_key: str = ""
    # Where the key file is read from or created (always under the data dir unless the
    # OpenClaw one exists; see payments/wallet.py).
    openclaw_key_file: str = ""
    max_per_request: int = 0
    max_per_day: int = 0
    # Network → the JSON-RPC URL GET /wallet reads the USDC balance from (X402_RPC_URL,
    # or X402_RPC_URL_BASE / X402_RPC_URL_BASE_SEPOLIA for one network); none: not shown.
    rpc_urls: Mapping[str, str] = field(default_factory=dict)

    @property
    def capped(self) -> bool:
        """Payment is on only when both caps are set: there is no unlimited default."""
        return self.max_per_request > 0 and self.max_per_day > 0


@dataclass(frozen=True)
class PluginSpec:
    """One entry of XROUTER_PLUGINS (or upstreams.json's `plugins`): what to load, a
    built-in name (`response-healing`, `pareto`), `pkg.module:Class`, `pkg.module` (its
    `addons` list, as mitmproxy scripts have) or a file path (`plugin.py`, `plugin.py:Class`),
    and the keyword arguments its class is made with. Loaded by xrouter_core/plugins."""

    use: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 3000
    router_api_key: str = ""
    log_level: str = "info"
    log_to_file: bool = False
    log_dir: str = "logs"
    redis_url: str = ""
    # Usage counters, caches and the request log (accounting/usage.py, cache.py, requestlog.py).
    data_dir: str = "data"
    cache_backend: str = "auto"
    decision_cache_enabled: bool = True
    decision_cache_ttl: int = 3600
    decision_cache_max: int = 10_000
    cache_responses: bool = False
    response_cache_ttl: int = 3600
    usage_flush_ms: int = 100
    session_cost_routing: str = "on"
    request_log: str = ""
    request_log_prompts: bool = False
    # ROUTER_KEYS_FILE (client_keys.py): the file, and its keys by SHA-256 digest.
    keys_file: str = ""
    # ROUTER_KEYS_SOURCE: "file" (ROUTER_KEYS_FILE, when set), or "redis" (the keys in a
    # hash on REDIS_URL, read by the running router: client_keys.RedisKeyRing).
    keys_source: str = "file"
    client_keys: Mapping[str, ClientKey] = field(default_factory=dict)
    # The completion tokens a metered key's request is reserved at when it sets no
    # max_tokens (accounting/limits.py Budgets).
    key_output_estimate: int = 1024
    # OpenTelemetry (accounting/traces.py): the OTLP/HTTP traces URL, "" when tracing is off.
    otel_traces_endpoint: str = ""
    otel_service_name: str = "xrouter"
    # Request bodies above this many bytes get a 413 on the router's listener (0: no limit).
    max_body_bytes: int = 10_000_000
    classifier: ClassifierSettings = field(default_factory=ClassifierSettings)
    routes: Mapping[str, Route] = field(default_factory=dict)
    # Tier → every route that may serve it, as configured; the first is routes[tier].
    candidates: Mapping[str, tuple[Route, ...]] = field(default_factory=dict)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    # Where POST /v1/embeddings goes (an OpenAI-wire server), if anywhere.
    embeddings: Route | None = None
    payments: PaymentSettings = field(default_factory=PaymentSettings)
    # Every value that must never be printed, so logs can redact them.
    secrets: tuple[str, ...] = ()
    # The tiers filled from a provider key (default_routes.py), with why.
    default_routes: Mapping[str, DefaultRoute] = field(default_factory=dict)
    # Extra names for the decision and upstream headers (DECISION_HEADER, UPSTREAM_HEADER,
    # the Node Xrouter's), sent beside X-Xrouter-decision and X-Xrouter-upstream.
    decision_header: str = ""
    upstream_header: str = ""
    # XROUTER_PLUGINS: the plugins to load, in the order their hooks run.
    plugins: tuple[PluginSpec, ...] = ()
    # The rule chain (routing/rules.py, ROUTING_RULES), the tier rule last; empty: the
    # tier rule alone (the classifier), as without rules.
    rules: tuple[Rule, ...] = ()
    # TAG_WORDS: tag → words, applied over routing/tags.py's defaults (empty list: off).
    tag_words: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # HEADER_ALIASES: one of the router's X-Xrouter-* answer headers → one more name for it.
    header_aliases: Mapping[str, str] = field(default_factory=dict)
    # Info lines about how the configuration was read (a Node Xrouter name mapped, …),
    # logged once when the settings are put in use.
    notes: tuple[str, ...] = ()
    # Warning lines of the same kind: a catalog provider skipped for its missing key.
    warnings: tuple[str, ...] = ()

    def route(self, tier: str) -> Route | None:
        return self.routes.get(tier)

    def tier_candidates(self, tier: str) -> tuple[Route, ...]:
        """Every route of a tier, the first one first (none when the tier has none)."""
        found = self.candidates.get(tier)
        if found:
            return found
        route = self.routes.get(tier)
        return (route,) if route is not None else ()

    def all_routes(self) -> list[Route]:
        return [route for tier in self.routes for route in self.tier_candidates(tier)]

    def public(self) -> dict[str, Any]:
        return {
            "routes": {tier: route.public() for tier, route in self.routes.items()},
            "candidates": {
                tier: [route.public() for route in found]
                for tier, found in self.candidates.items()
                if len(found) > 1
            },
            "classifier": {
                "enabled": self.classifier.enabled,
                "mode": self.classifier.mode,
                "thresholds": (
                    list(self.classifier.thresholds) if self.classifier.thresholds else "default"
                ),
                "base_url": self.classifier.base_url or None,
                "model": self.classifier.model or None,
            },
            "default_routes": {tier: d.public() for tier, d in self.default_routes.items()},
        }


def parse_dotenv(text: str) -> dict[str, str]:
    """A `.env` file: KEY=VALUE lines, `export` prefix, quotes and # comments allowed."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def upstreams_to_env(doc: Mapping[str, Any]) -> dict[str, str]:
    """Flatten upstreams.json into the environment variable names it stands for.

    Schema (every key optional):
      {"classifier": {"enabled": true, "mode": "hybrid", "thresholds": [0.33, 0.66],
                      "base_url": "...", "model": "...", ...},
       "routes": {"cheap": {"base_url", "api_key", "model", "provider",
                            "headers": {...}, "deployment", "api_version"},
                  "medium": {...}, "frontier": {...}},
       "redis_url": "..."}
    """
    flat: dict[str, str] = {}
    classifier = doc.get("classifier") or {}
    for key, value in classifier.items():
        flat[f"CLASSIFIER_{key.upper()}"] = _to_env_text(value)
    for tier, route in (doc.get("routes") or {}).items():
        if isinstance(route, list):
            flat.update(_candidates_to_env(str(tier), route))
            continue
        for key, value in (route or {}).items():
            flat[f"{str(tier).upper()}_{key.upper()}"] = _to_env_text(value)
    flat.update(_strategies_to_env(doc.get("strategies")))
    if doc.get("plugins") is not None:
        flat["XROUTER_PLUGINS"] = json.dumps(doc["plugins"])
    if doc.get("providers") is not None:  # the catalog (catalog.py), read as a whole
        flat[CATALOG_VARIABLE] = json.dumps(doc["providers"])
    for key, variable in UPSTREAMS_JSON_SETTINGS.items():
        if key in doc:
            flat[variable] = json.dumps(doc[key])
    if doc.get("redis_url"):
        flat["REDIS_URL"] = str(doc["redis_url"])
    return flat


def _to_env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return "" if value is None else str(value)


UPSTREAMS_KEYS = frozenset(
    {
        "classifier",
        "routes",
        "strategies",
        "providers",
        "plugins",
        "rules",
        "tags",
        "header_aliases",
        "redis_url",
        "$schema",
        "version",
    }
)
# upstreams.json's keys that stand for one JSON-valued setting each.
UPSTREAMS_JSON_SETTINGS = {
    "rules": "ROUTING_RULES",
    "tags": "TAG_WORDS",
    "header_aliases": "HEADER_ALIASES",
}


# ---- several candidates per tier -------------------------------------------------------


def _candidates_to_env(tier: str, candidates: list[Any]) -> dict[str, str]:
    """A tier given as a list of routes: the first one becomes <TIER>_* as a single route
    would (so the variables still configure it), the others <TIER>_CANDIDATES (JSON)."""
    if not candidates:
        return {}
    first, rest = candidates[0], candidates[1:]
    if not isinstance(first, dict):
        raise AttributeError(f"routes.{tier}[0] is not an object")
    flat = {f"{tier.upper()}_{key.upper()}": _to_env_text(value) for key, value in first.items()}
    if rest:
        flat[f"{tier.upper()}_CANDIDATES"] = json.dumps(rest)
    return flat


def _strategies_to_env(strategies: Any) -> dict[str, str]:
    """upstreams.json's `"strategies": {"cheap": "price"}` as <TIER>_STRATEGY."""
    if strategies is None:
        return {}
    if not isinstance(strategies, dict):
        raise AttributeError("strategies must be an object of tier → strategy")
    unknown = sorted(str(tier) for tier in strategies if tier not in TIERS)
    if unknown:
        raise AttributeError(f"strategies: unknown tiers {unknown} (use {', '.join(TIERS)})")
    return {f"{str(tier).upper()}_STRATEGY": _to_env_text(v) for tier, v in strategies.items()}


def _read_candidates(
    tier: str,
    first: Route | None,
    read: _Reader,
    catalog: list[tuple[str, dict[str, Any]]],
    skipped: list[str],
) -> tuple[Route, ...]:
    """The tier's routes: `first` (from <TIER>_*, None when it has none or was skipped),
    each of <TIER>_CANDIDATES (a JSON list of route objects with the fields of
    CANDIDATE_FIELDS), then the catalog's (catalog.py). With more than one, each gets its
    key (`cheap#1`, `cheap#2`, …) so the circuit breaker tells them apart. A candidate
    whose key variable is unset is left out, with one warning, and named in `skipped`."""
    found = [first] if first is not None else []
    variable = tier.upper() + "_CANDIDATES"
    raw = read.values.get(variable, "").strip()
    doc: Any = []
    if raw:
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if not isinstance(doc, list) or not all(isinstance(item, dict) for item in doc):
            read.problems.append(f"{variable} must be a JSON list of route objects")
            doc = []
    listed: list[tuple[str, dict[str, Any]]] = []
    for number, item in enumerate(doc, start=2):
        where = f"routes.{tier}[{number - 1}]"
        unknown = sorted(set(item) - CANDIDATE_FIELDS)
        if unknown:
            read.problems.append(f"{where}: unknown keys {unknown}")
            continue
        listed.append((where, item))
    for where, item in [*listed, *catalog]:
        route = _candidate_route(tier, where, item, read, skipped)
        if route is not None:
            found.append(route)
    if len(found) <= 1:
        return tuple(found)
    return tuple(replace(route, key=f"{tier}#{n}") for n, route in enumerate(found, start=1))


def _key_of(read: _Reader, where: str, key_name: str, variable_name: str) -> str | None:
    """A route's key: given as such, or read from the variable its `api_key_env` names;
    None when that variable is unset or empty (the route is then skipped)."""
    variable = read.text(variable_name)
    if not variable:
        return read.text(key_name)
    if read.text(key_name):
        read.problems.append(f"{where}: give api_key or api_key_env, not both")
        return ""
    return read.text(variable) or None


def _candidate_route(
    tier: str,
    where: str,
    item: Mapping[str, Any],
    read: _Reader,
    skipped: list[str] | None = None,
) -> Route | None:
    """One further candidate, read with the same checks as <TIER>_* (problems name it as
    `routes.cheap[1].base_url`); the timeouts default to the global ones."""
    values = {f"{where}.{key}": _to_env_text(value) for key, value in item.items()}
    one = _Reader({**read.values, **values}, read.problems)
    base_url = one.url(f"{where}.base_url")
    if not base_url:
        read.problems.append(f"{where}: base_url is required")
        return None
    provider = one.text(f"{where}.provider").lower()
    if provider and not known_provider(provider):
        read.problems.append(
            f"{where}.provider {provider!r} is not a known provider type"
            f" (use auto or one of: {', '.join(PROVIDERS)})"
        )
        return None
    api_key = _key_of(one, where, f"{where}.api_key", f"{where}.api_key_env")
    if api_key is None:
        variable = one.text(f"{where}.api_key_env")
        why = f"route {where} (its key variable {variable} is not set)"
        read.warnings.append(f"{why} is skipped")
        if skipped is not None:
            skipped.append(why)
        return None
    route = Route(
        tier=tier,
        base_url=base_url,
        api_key=api_key,
        name=one.text(f"{where}.name"),
        model=one.text(f"{where}.model"),
        provider=provider,
        headers=one.headers(f"{where}.headers"),
        deployment=one.text(f"{where}.deployment"),
        api_version=one.text(f"{where}.api_version"),
        vision=one.flag(f"{where}.vision", tier == FRONTIER),
        connect_timeout_ms=one.integer(
            f"{where}.connect_timeout_ms", read.integer("CONNECT_TIMEOUT_MS", 5000), 0
        ),
        first_byte_timeout_ms=one.integer(
            f"{where}.first_byte_timeout_ms", read.integer("FIRST_BYTE_TIMEOUT_MS", 120_000), 0
        ),
        input_price=one.price(f"{where}.input_price"),
        output_price=one.price(f"{where}.output_price"),
        **_catalog_fields(one, where + "."),
    )
    return _with_default_versions(route, read)


def _catalog_fields(read: _Reader, prefix: str) -> dict[str, Any]:
    """The Route fields the catalog added: cached price, quality, tools, weight (read as
    `<prefix>cached_price`, or `CHEAP_CACHED_PRICE` for a prefix in capitals)."""

    def name(field: str) -> str:
        return prefix + (field.upper() if prefix.isupper() else field)

    return {
        "cached_price": read.price(name("cached_price")),
        "quality": read.fraction(name("quality")),
        "tools": read.optional_flag(name("tools")),
        "weight": read.weight(name("weight")),
    }


def _read_strategies(read: _Reader) -> dict[str, str]:
    """<TIER>_STRATEGY for each tier (CANDIDATE_STRATEGIES; ordered when unset)."""
    strategies = {}
    for tier in TIERS:
        strategy = read.choice(tier.upper() + "_STRATEGY", CANDIDATE_STRATEGIES, "ordered")
        if strategy != "ordered":
            strategies[tier] = strategy
    return strategies


def _read_sources(
    environ: Mapping[str, str],
    env_file: Path | None,
    upstreams_file: Path | None,
    notes: list[str] | None = None,
) -> tuple[dict[str, str], list[str]]:
    problems: list[str] = []
    notes = [] if notes is None else notes
    merged: dict[str, str] = {}
    over_env: dict[str, str] = {}  # the Node shape's values: they outrank the variables
    found_file = upstreams_file is not None and upstreams_file.is_file()
    if found_file:
        assert upstreams_file is not None
        try:
            doc = json.loads(upstreams_file.read_text(encoding="utf-8"))
        except ValueError as exc:
            problems.append(f"{upstreams_file} is not valid: {exc}")
        else:
            under, over_env = _upstreams_doc(doc, str(upstreams_file), problems, notes)
            merged.update(under)
    if env_file is not None and env_file.is_file():
        merged.update(parse_dotenv(env_file.read_text(encoding="utf-8")))
    merged.update(environ)
    inline = merged.get("UPSTREAMS_JSON", "").strip()
    if inline and not found_file:  # the Node Xrouter's order: the file, else the variable
        try:
            doc = json.loads(inline)
        except ValueError as exc:
            problems.append(f"UPSTREAMS_JSON is not valid JSON: {exc}")
        else:
            under, over_env = _upstreams_doc(doc, "UPSTREAMS_JSON", problems, notes)
            merged = {**under, **merged}
    elif inline:
        notes.append(f"UPSTREAMS_JSON is ignored: {upstreams_file} is read instead")
    merged.update(over_env)
    return merged, problems


def _upstreams_doc(
    doc: Any, where: str, problems: list[str], notes: list[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """One upstreams document, in this router's shape or the Node Xrouter's (or both), as
    (values below the variables, values above them)."""
    if not isinstance(doc, dict):
        problems.append(f"{where} is not valid: the top level is not an object")
        return {}, {}
    node = node_compat.is_node_upstreams(doc)
    unknown = set(doc) - UPSTREAMS_KEYS - set(TIERS)
    if unknown and node:  # the Node Xrouter ignored what it did not read
        notes.append(f"{where}: keys {sorted(unknown)} are not settings here; ignored")
    elif unknown:
        problems.append(f"{where}: unknown keys {sorted(unknown)}")
    routes = doc.get("routes") or {}
    if not isinstance(routes, dict):
        problems.append(f"{where}: routes must be an object of cheap, medium, frontier")
        return {}, {}
    for tier in routes:
        if tier not in TIERS:
            problems.append(f"{where}: unknown route {tier!r} (use {TIERS})")
    try:
        under = upstreams_to_env({k: v for k, v in doc.items() if k not in TIERS})
    except AttributeError as exc:
        problems.append(f"{where} is not valid: {exc}")
        under = {}
    over = node_compat.node_upstreams_to_env(doc, where, problems, notes) if node else {}
    return under, over


class _Reader:
    """Typed reads from the merged sources that record problems instead of raising."""

    def __init__(
        self, values: Mapping[str, str], problems: list[str], warnings: list[str] | None = None
    ):
        self.values = values
        self.problems = problems
        self.warnings = [] if warnings is None else warnings

    def text(self, name: str, default: str = "") -> str:
        return self.values.get(name, default).strip() or default

    def flag(self, name: str, default: bool) -> bool:
        raw = self.values.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        self.problems.append(f"{name} must be true or false, not {raw!r}")
        return default

    def optional_flag(self, name: str) -> bool | None:
        """true, false, or None when not set (the catalog's `tools`: not said)."""
        if not self.values.get(name, "").strip():
            return None
        return self.flag(name, False)

    def number(
        self, name: str, ok: Callable[[float], bool], what: str, default: float | None = None
    ) -> float | None:
        """A number that passes `ok`; `default` when not set, or (with a problem saying it
        must be `what`) when it is not such a number."""
        raw = self.values.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = math.nan  # passes no bound
        if not ok(value):
            self.problems.append(f"{name} must be {what}, not {raw!r}")
            return default
        return value

    def fraction(self, name: str) -> float | None:
        """A number 0..1 (a quality score), None when not set."""
        return self.number(name, lambda v: 0.0 <= v <= 1.0, "a number 0..1")

    def weight(self, name: str) -> float:
        """A `weighted` strategy's weight: a number >= 0, 1 when not set."""
        value = self.number(name, lambda v: 0.0 <= v < math.inf, "a weight >= 0", 1.0)
        assert value is not None
        return value

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        raw = self.values.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            self.problems.append(f"{name} must be a whole number, not {raw!r}")
            return default
        if value < minimum:
            self.problems.append(f"{name} must be at least {minimum}, not {value}")
            return default
        return value

    def price(self, name: str) -> float | None:
        return self.number(name, lambda v: 0.0 <= v < math.inf, "a price in USD per 1M tokens")

    def url(self, name: str, default: str = "") -> str:
        value = self.text(name, default).rstrip("/")
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                self.problems.append(f"{name} must be an http(s) URL, not {value!r}")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.text(name, default).lower()
        if value not in choices:
            self.problems.append(f"{name} must be one of {', '.join(choices)}, not {value!r}")
            return default
        return value

    def thresholds(
        self, name: str, default: tuple[float, float] | None
    ) -> tuple[float, float] | None:
        """Two numbers 0 <= low <= high <= 1, written "0.33,0.66" or as a JSON list."""
        raw = self.values.get(name, "").strip()
        if not raw:
            return default
        try:
            parsed = parse_thresholds(raw)
        except ValueError as exc:
            self.problems.append(f"{name}: {exc}")
            return default
        return parsed

    def headers(self, name: str) -> dict[str, str]:
        raw = self.values.get(name, "").strip()
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            self.problems.append(f"{name} is not a JSON object of string values")
            return {}
        for key, val in value.items():
            if any(c in key + val for c in "\r\n"):
                self.problems.append(f"{name}: header {key!r} contains a line break")
                return {}
        return value


def parse_thresholds(raw: str) -> tuple[float, float]:
    """'0.33,0.66' or '[0.33, 0.66]' -> (0.33, 0.66), or ValueError saying what is wrong."""
    parts = [part.strip() for part in raw.strip().strip("[]").split(",") if part.strip()]
    try:
        values = [float(part) for part in parts]
    except ValueError:
        raise ValueError(f"thresholds must be two numbers like 0.33,0.66, not {raw!r}") from None
    return check_thresholds(values)


def check_thresholds(values) -> tuple[float, float]:
    if len(values) != 2:
        raise ValueError(
            f"two thresholds are needed (cheap|medium, medium|frontier), not {len(values)}"
        )
    low, high = float(values[0]), float(values[1])
    if not (0.0 <= low <= high <= 1.0):
        raise ValueError(f"thresholds must satisfy 0 <= low <= high <= 1, not {low}, {high}")
    return low, high


def load_settings(
    environ: Mapping[str, str] | None = None,
    env_file: str | Path | None = None,
    upstreams_file: str | Path | None = None,
) -> Settings:
    """Merge the sources, validate everything, and return Settings or raise ConfigError."""
    environ = dict(os.environ if environ is None else environ)
    if env_file is None:
        env_file = environ.get("XROUTER_ENV_FILE", ".env")
    if upstreams_file is None:
        upstreams_file = environ.get("UPSTREAMS_FILE", "upstreams.json")
    notes: list[str] = []
    values, problems = _read_sources(environ, Path(env_file), Path(upstreams_file), notes)
    values = node_compat.translate_node_env(values, problems, notes)
    warnings: list[str] = []
    read = _Reader(values, problems, warnings)

    log_level = read.text("LOG_LEVEL", "info").lower()
    log_level = LOG_LEVEL_ALIASES.get(log_level, log_level)
    if log_level not in LOG_LEVELS:
        problems.append(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}")
        log_level = "info"
    port = read.integer("PORT", 3000, minimum=0)
    if port > 65535:
        problems.append(f"PORT must be at most 65535, not {port}")

    classifier = ClassifierSettings(
        enabled=read.flag("CLASSIFIER_ENABLED", True),
        base_url=read.url("CLASSIFIER_BASE_URL"),
        model=read.text("CLASSIFIER_MODEL"),
        system_prompt=read.text("CLASSIFIER_SYSTEM_PROMPT"),
        timeout_ms=read.integer("CLASSIFIER_TIMEOUT_MS", 2000, minimum=1),
        force_stream=read.flag("CLASSIFIER_FORCE_STREAM", True),
        warmup=read.flag("CLASSIFIER_WARMUP", True),
        warmup_delay_ms=read.integer("CLASSIFIER_WARMUP_DELAY_MS", 0),
        keep_alive_ms=read.integer("CLASSIFIER_KEEP_ALIVE_MS", 0),
        loading_retry_ms=read.integer("CLASSIFIER_LOADING_RETRY_MS", 1000),
        loading_max_retries=read.integer("CLASSIFIER_LOADING_MAX_RETRIES", 5),
        api_key=read.text("CLASSIFIER_API_KEY"),
        mode=read.choice("CLASSIFIER_MODE", CLASSIFIER_MODES, "hybrid"),
        thresholds=read.thresholds("CLASSIFIER_THRESHOLDS", None),
        api=read.choice("CLASSIFIER_API", CLASSIFIER_APIS, "auto"),
        hybrid_llm=read.choice("CLASSIFIER_HYBRID_LLM", HYBRID_LLM_SCOPES, "open_ended"),
        **_read_classifier_request(read),
    )

    # Tiers without a base URL of their own get one from a provider key, if any is set.
    auto = default_routes.choose(
        values, read.flag("XROUTER_AUTO_ROUTES", True), classifier.base_url, port
    )
    problems.extend(auto.problems)

    catalog = read_catalog(read.text(CATALOG_VARIABLE), values, problems, warnings)
    routes: dict[str, Route] = {}
    candidates: dict[str, tuple[Route, ...]] = {}
    # Tiers left with no route because every one that would serve them was skipped.
    emptied: dict[str, list[str]] = {}
    for tier in TIERS:
        prefix = tier.upper() + "_"
        base_url = read.url(prefix + "BASE_URL")
        model = read.text(prefix + "MODEL")
        skipped = list(catalog.skipped.get(tier, ()))
        in_catalog = tier in catalog.named
        if tier == CHEAP and not base_url and classifier.base_url and not in_catalog:
            base_url = classifier.base_url
        if tier == CHEAP and base_url and base_url == classifier.base_url and not model:
            # One model on the local engine: no swapping between classifier and cheap.
            model = classifier.model
        # A tier the catalog serves is not filled from a provider key.
        default = None if base_url or in_catalog else auto.use(tier, model)
        if default is not None:
            base_url, model = default.base_url, default.model
        provider = read.text(prefix + "PROVIDER").lower() or (
            default.route_provider if default else ""
        )
        provider_problem = bool(provider) and not known_provider(provider)
        if provider_problem:
            problems.append(
                f"{prefix}PROVIDER {provider!r} is not a known provider type"
                f" (use auto or one of: {', '.join(PROVIDERS)})"
            )
        api_key = _key_of(read, tier, prefix + "API_KEY", prefix + "API_KEY_ENV")
        if api_key is None and base_url:
            why = f"route {tier} (its key variable {read.text(prefix + 'API_KEY_ENV')} is not set)"
            warnings.append(f"{why} is skipped")
            skipped.append(why)
        route = Route(
            tier=tier,
            base_url=base_url,
            api_key=api_key or (default.api_key if default else ""),
            name=read.text(prefix + "NAME"),
            model=model,
            provider=provider,
            headers=read.headers(prefix + "HEADERS"),
            deployment=read.text(prefix + "DEPLOYMENT"),
            api_version=read.text(prefix + "API_VERSION"),
            vision=read.flag(prefix + "VISION", tier == FRONTIER),
            connect_timeout_ms=read.integer(
                prefix + "CONNECT_TIMEOUT_MS", read.integer("CONNECT_TIMEOUT_MS", 5000), 0
            ),
            first_byte_timeout_ms=read.integer(
                prefix + "FIRST_BYTE_TIMEOUT_MS",
                read.integer("FIRST_BYTE_TIMEOUT_MS", 120_000),
                0,
            ),
            input_price=read.price(prefix + "INPUT_PRICE"),
            output_price=read.price(prefix + "OUTPUT_PRICE"),
            x402=read.choice(prefix + "X402", X402_CHOICES, "off").replace("off", ""),
            **_catalog_fields(read, prefix),
        )
        first = None
        if base_url and api_key is not None:
            first = _with_default_versions(route, read) if not provider_problem else route
        found = _read_candidates(tier, first, read, catalog.by_tier[tier], skipped)
        if found:
            routes[tier] = found[0]
            candidates[tier] = found
        elif skipped:
            emptied[tier] = skipped

    def missing(tier: str, problem: str) -> None:
        """A required tier without a route; named by what was skipped, if anything."""
        if tier in emptied:
            problem = (
                f"tier {tier} has no route: every one that could serve it was skipped"
                f" ({'; '.join(emptied[tier])})"
            )
        problems.append(problem)

    if not routes and not problems and not emptied:
        raise NoConfiguration(default_routes.no_configuration_message(auto.enabled))
    if FRONTIER not in routes:
        missing(FRONTIER, "FRONTIER_BASE_URL is required: every request can end up on frontier")
    if classifier.enabled:
        if classifier.mode == "llm" and not classifier.base_url:
            problems.append(
                "CLASSIFIER_BASE_URL is required when CLASSIFIER_MODE is llm"
                " (CLASSIFIER_MODE=builtin or hybrid need no LLM server)"
            )
        if MEDIUM not in routes:
            missing(MEDIUM, "MEDIUM_BASE_URL is required when the classifier is enabled")
        if CHEAP not in routes:
            missing(
                CHEAP,
                "CHEAP_BASE_URL is required when the classifier is enabled"
                " (it defaults to CLASSIFIER_BASE_URL)",
            )

    routing = replace(_read_routing(read, problems), strategies=_read_strategies(read))
    embeddings_url = read.url("EMBEDDINGS_BASE_URL")
    embeddings = (
        Route(
            tier="embeddings",
            base_url=embeddings_url,
            api_key=read.text("EMBEDDINGS_API_KEY"),
            model=read.text("EMBEDDINGS_MODEL"),
        )
        if embeddings_url
        else None
    )
    cache_backend = read.text("CACHE_BACKEND", "auto").lower()
    if cache_backend not in CACHE_BACKENDS:
        problems.append(
            f"CACHE_BACKEND must be one of {', '.join(CACHE_BACKENDS)}, not {cache_backend!r}"
        )
    redis_url = read.text("REDIS_URL")
    if redis_url:
        try:
            parse_redis_url(redis_url)
        except ValueError as exc:
            problems.append(str(exc))
    if cache_backend == "redis" and not redis_url:
        problems.append("CACHE_BACKEND=redis needs REDIS_URL")

    otel_traces_endpoint = _read_otel_endpoint(read)
    keys_file = read.text("ROUTER_KEYS_FILE")
    keys_source = read.choice("ROUTER_KEYS_SOURCE", KEY_SOURCES, "file")
    if keys_source == "redis" and not redis_url:
        problems.append("ROUTER_KEYS_SOURCE=redis needs REDIS_URL")
    if keys_source == "redis" and keys_file:
        problems.append(
            "ROUTER_KEYS_SOURCE=redis keeps the client keys in Redis: unset ROUTER_KEYS_FILE"
        )
    client_keys: dict[str, ClientKey] = {}
    if keys_file and keys_source == "file":
        try:
            client_keys = read_keys(keys_file)
        except ValueError as exc:
            problems.append(f"ROUTER_KEYS_FILE: {exc}")
    headers = _read_header_names(read)
    rules = rules_from_text(read.text("ROUTING_RULES"), candidates, problems)
    tag_words = _read_tag_words(read)
    header_aliases = _read_header_aliases(read)
    payments = _read_payments(read, routes)
    plugins = _read_plugins(read)
    session_cost_routing = read.choice("SESSION_COST_ROUTING", SESSION_MODES, "on")
    if problems:
        raise ConfigError(problems)

    secrets = tuple(
        s
        for s in (
            read.text("ROUTER_API_KEY"),
            payments.wallet_key,
            payments.wallet_key.removeprefix("0x"),
            *payments.rpc_urls.values(),  # an RPC URL often carries its provider's key
            classifier.api_key,
            *(r.api_key for found in candidates.values() for r in found),
            embeddings.api_key if embeddings else "",
            *(r.api_key for r in rules if isinstance(r, DiscoverRule)),
            *(v for f in candidates.values() for r in f for v in r.headers.values() if len(v) >= 8),
        )
        if s
    )
    return Settings(
        # Default routes hold the user's provider keys: without a router key they are
        # served to this machine only, unless HOST says otherwise.
        host=read.text(
            "HOST",
            "127.0.0.1"
            if auto.used
            and not (read.text("ROUTER_API_KEY") or keys_file or keys_source == "redis")
            else "0.0.0.0",
        ),
        port=port,
        router_api_key=read.text("ROUTER_API_KEY"),
        log_level=log_level,
        log_to_file=read.flag("LOG_TO_FILE", False),
        log_dir=read.text("LOG_DIR", "logs"),
        redis_url=redis_url,
        data_dir=read.text("XROUTER_DATA_DIR", "data"),
        cache_backend=cache_backend,
        decision_cache_enabled=read.flag("DECISION_CACHE_ENABLED", True),
        decision_cache_ttl=read.integer("DECISION_CACHE_TTL", 3600),
        decision_cache_max=read.integer("DECISION_CACHE_MAX", 10_000, minimum=1),
        cache_responses=read.flag("CACHE_RESPONSES", False),
        response_cache_ttl=read.integer("CACHE_RESPONSES_TTL", 3600),
        usage_flush_ms=read.integer("USAGE_FLUSH_MS", 100, minimum=10),
        session_cost_routing=session_cost_routing,
        request_log=read.text("REQUEST_LOG"),
        request_log_prompts=read.flag("REQUEST_LOG_PROMPTS", False),
        max_body_bytes=read.integer("MAX_BODY_BYTES", 10_000_000),
        otel_traces_endpoint=otel_traces_endpoint,
        keys_file=keys_file,
        keys_source=keys_source,
        client_keys=client_keys,
        key_output_estimate=read.integer("KEY_OUTPUT_ESTIMATE", 1024, minimum=1),
        otel_service_name=read.text("OTEL_SERVICE_NAME", "xrouter"),
        classifier=classifier,
        routes=routes,
        candidates=candidates,
        routing=routing,
        embeddings=embeddings,
        payments=payments,
        secrets=secrets,
        default_routes=auto.used,
        decision_header=headers[0],
        upstream_header=headers[1],
        rules=rules,
        tag_words=tag_words,
        header_aliases=header_aliases,
        notes=tuple(dict.fromkeys(notes)),
        plugins=plugins,
        warnings=tuple(dict.fromkeys(warnings)),
    )


def _read_plugins(read: _Reader) -> tuple[PluginSpec, ...]:
    """XROUTER_PLUGINS: a JSON list (upstreams.json's `plugins`) whose items are a string
    (what to load) or an object `{"use": ..., <option>: <value>, ...}`; or, in a variable, a
    comma-separated list of strings. Only the shape is checked here: each plugin is loaded
    (and its options checked by its class) when the router starts."""
    raw = read.values.get("XROUTER_PLUGINS", "").strip()
    if not raw:
        return ()
    if raw.startswith("["):
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            read.problems.append(f"XROUTER_PLUGINS is not a valid JSON list: {exc}")
            return ()
    else:
        doc = [part.strip() for part in raw.split(",") if part.strip()]
    if not isinstance(doc, list):
        read.problems.append("plugins must be a list")
        return ()
    found: list[PluginSpec] = []
    for number, item in enumerate(doc):
        if isinstance(item, str) and item.strip():
            found.append(PluginSpec(item.strip()))
        elif isinstance(item, dict) and isinstance(item.get("use"), str) and item["use"].strip():
            options = {k: v for k, v in item.items() if k != "use"}
            found.append(PluginSpec(item["use"].strip(), options))
        else:
            read.problems.append(
                f"plugins[{number}] must be a name, a module path or a file path, or an "
                f'object with "use" naming one (and its options), not {json.dumps(item)[:80]}'
            )
    return tuple(found)


def _read_otel_endpoint(read: _Reader) -> str:
    """The OTLP/HTTP traces URL, as the OpenTelemetry SDK reads its variables:
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is the whole URL, OTEL_EXPORTER_OTLP_ENDPOINT the
    collector's base, to which /v1/traces is added. Read here (not by the SDK) so that a
    value in .env or upstreams.json turns tracing on too; OTEL_SDK_DISABLED=true keeps it
    off."""
    if read.flag("OTEL_SDK_DISABLED", False):
        return ""
    traces = read.url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if traces:
        return traces
    base = read.url("OTEL_EXPORTER_OTLP_ENDPOINT")
    return base + "/v1/traces" if base else ""


def _read_routing(read: _Reader, problems: list[str]) -> RoutingSettings:
    chain = tuple(t.strip().lower() for t in read.text("FALLBACK_CHAIN").split(",") if t.strip())
    for tier in chain:
        if tier not in TIERS:
            problems.append(f"FALLBACK_CHAIN: unknown tier {tier!r} (use {', '.join(TIERS)})")
    if len(set(chain)) != len(chain):
        problems.append("FALLBACK_CHAIN names a tier twice")
    tools_min = read.text("TOOLS_MIN_TIER").lower()
    if tools_min and tools_min not in TIERS:
        problems.append(f"TOOLS_MIN_TIER must be one of {', '.join(TIERS)}, not {tools_min!r}")
    unknown = read.text("UNKNOWN_MODEL", "classify").lower()
    if unknown != "classify" and unknown not in TIERS:
        problems.append(f"UNKNOWN_MODEL must be classify or a tier, not {unknown!r}")
    categories = dict(DEFAULT_CATEGORIES)
    for name, tier in read.headers("MODEL_CATEGORIES").items():
        if tier.lower() not in TIERS:
            problems.append(f"MODEL_CATEGORIES: {name!r} maps to unknown tier {tier!r}")
        categories[name.lower()] = tier.lower()
    return RoutingSettings(
        fallback_enabled=read.flag("FALLBACK_ENABLED", True),
        fallback_chain=chain or TIERS,
        breaker_failures=read.integer("BREAKER_FAILURES", 3, minimum=1),
        breaker_cooldown_s=read.integer("BREAKER_COOLDOWN_S", 30),
        tools_min_tier=tools_min,
        unknown_model=unknown,
        keep_requested_model=read.flag("KEEP_REQUESTED_MODEL", False),
        categories=categories,
        stats_window=read.integer("ROUTE_STATS_WINDOW", 20, minimum=1),
        stats_window_s=read.integer("ROUTE_STATS_WINDOW_S", 300, minimum=1),
        stats_min_samples=read.integer("ROUTE_STATS_MIN_SAMPLES", 3, minimum=1),
        stats_sync_ms=read.integer("ROUTE_STATS_SYNC_MS", 1000, minimum=10),
    )


# ---- the Node Xrouter's settings that have a place of their own here -------------------


def _read_classifier_request(read: _Reader) -> dict[str, Any]:
    """CLASSIFIER_STRATEGY, _MAX_CHARS, _MAX_TOKENS, _TEMPERATURE, _LOGIT_BIAS: how the
    LLM classifier is asked, as the Node Xrouter let them be set."""
    temperature: float | None = None
    raw = read.values.get("CLASSIFIER_TEMPERATURE", "").strip()
    if raw:
        try:
            temperature = float(raw)
        except ValueError:
            temperature = -1.0
        if not 0.0 <= temperature <= 2.0:
            read.problems.append(f"CLASSIFIER_TEMPERATURE must be a number 0..2, not {raw!r}")
            temperature = None
    bias: dict[str, float] = {}
    raw = read.values.get("CLASSIFIER_LOGIT_BIAS", "").strip()
    if raw:
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and all(
            isinstance(v, int | float) and not isinstance(v, bool) and -100 <= v <= 100
            for v in doc.values()
        ):
            bias = {str(k): v for k, v in doc.items()}
        else:
            read.problems.append(
                "CLASSIFIER_LOGIT_BIAS must be a JSON object of token id → bias (-100..100)"
            )
    return {
        "strategy": read.choice("CLASSIFIER_STRATEGY", CLASSIFIER_STRATEGIES, "last_user"),
        "max_chars": read.integer("CLASSIFIER_MAX_CHARS", 0),
        "max_tokens": read.integer("CLASSIFIER_MAX_TOKENS", 0),
        "temperature": temperature,
        "logit_bias": bias,
    }


def _usd_cap(read: _Reader, name: str) -> int:
    """A cap in USD (e.g. 0.05) as USDC atomic units (6 decimals); 0 when unset."""
    raw = read.values.get(name, "").strip()
    if not raw:
        return 0
    try:
        value = Decimal(raw)
    except InvalidOperation:
        value = Decimal(-1)
    if not value.is_finite() or value <= 0 or value > 1_000_000:
        read.problems.append(f"{name} must be an amount in USD above 0, not {raw!r}")
        return 0
    return int((value * 1_000_000).to_integral_value(rounding=ROUND_DOWN))


def _read_payments(read: _Reader, routes: Mapping[str, Route]) -> PaymentSettings:
    """LLM_ROUTER_WALLET_KEY and the two caps; a paying route needs both caps. The key is
    checked here (never echoed) so a malformed one stops the router at start."""
    key = read.values.get("LLM_ROUTER_WALLET_KEY", "").strip()
    if key:
        digits = key.removeprefix("0x")
        valid = len(digits) == 64 and all(c in "0123456789abcdefABCDEF" for c in digits)
        if not valid or not 0 < int(digits, 16) < SECP256K1_ORDER:
            read.problems.append(
                "LLM_ROUTER_WALLET_KEY is not a private key (64 hex digits, 0x optional);"
                " its value is not shown"
            )
            key = ""
        else:
            key = "0x" + digits.lower()
    per_request = _usd_cap(read, "X402_MAX_PER_REQUEST_USD")
    per_day = _usd_cap(read, "X402_MAX_PER_DAY_USD")
    if per_request and per_day and per_request > per_day:
        read.problems.append("X402_MAX_PER_REQUEST_USD must not be above X402_MAX_PER_DAY_USD")
    paying = [r.tier for r in routes.values() if r.x402]
    if paying and not (per_request and per_day):
        read.problems.append(
            f"{paying[0].upper()}_X402 pays upstreams: set both X402_MAX_PER_REQUEST_USD and"
            " X402_MAX_PER_DAY_USD (payment has no unlimited default)"
        )
    rpc_urls = {}
    every = read.url("X402_RPC_URL")
    for network in X402_CHOICES[1:]:
        url = read.url("X402_RPC_URL_" + network.upper().replace("-", "_")) or every
        if url:
            rpc_urls[network] = url
    return PaymentSettings(
        wallet_key=key,
        rpc_urls=rpc_urls,
        openclaw_key_file=str(
            Path(read.text("HOME") or Path.home()) / ".openclaw" / "llmrouter" / "wallet.key"
        ),
        max_per_request=per_request,
        max_per_day=per_day,
    )


def _read_header_names(read: _Reader) -> tuple[str, str]:
    """DECISION_HEADER and UPSTREAM_HEADER: header names, lower case, or empty."""
    names = []
    for variable in ("DECISION_HEADER", "UPSTREAM_HEADER"):
        name = read.text(variable).lower()
        if name and not all(c.isalnum() or c in "-_" for c in name):
            read.problems.append(
                f"{variable} must be a header name (letters, digits, -), not {name!r}"
            )
            name = ""
        names.append(name)
    return names[0], names[1]


def _json_setting(read: _Reader, name: str) -> Any:
    raw = read.text(name)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        read.problems.append(f"{name} is not valid JSON: {exc}")
        return None


def _read_tag_words(read: _Reader) -> dict[str, tuple[str, ...]]:
    """TAG_WORDS: a JSON object of tag → list of words (routing/tags.py)."""
    doc = _json_setting(read, "TAG_WORDS")
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        read.problems.append("TAG_WORDS must be a JSON object of tag → list of words")
        return {}
    words: dict[str, tuple[str, ...]] = {}
    for tag, found in doc.items():
        if not tag or any(c in tag for c in " ,|\r\n") or tag != tag.lower():
            read.problems.append(f"TAG_WORDS: tag {tag!r} must be one lower-case word")
        elif not isinstance(found, list) or not all(isinstance(w, str) and w for w in found):
            read.problems.append(f"TAG_WORDS: {tag!r} must map to a list of words")
        else:
            words[tag] = tuple(w.strip().lower() for w in found)
    return words


# The answer headers HEADER_ALIASES may give another name (wire/headers.py).
ALIASED_HEADERS = frozenset(
    {
        "x-xrouter-decision",
        "x-xrouter-score",
        "x-xrouter-upstream",
        "x-xrouter-route",
        "x-xrouter-fallback",
        "x-xrouter-rule",
        "x-xrouter-tags",
        "x-xrouter-response-tags",
        "x-xrouter-provider",
        "x-xrouter-model",
        "x-xrouter-input-tokens",
        "x-xrouter-output-tokens",
    }
)


def _read_header_aliases(read: _Reader) -> dict[str, str]:
    """HEADER_ALIASES: {"x-xrouter-provider": "x-router-provider", ...}."""
    doc = _json_setting(read, "HEADER_ALIASES")
    if doc is None:
        return {}
    if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
        read.problems.append("HEADER_ALIASES must be a JSON object of header name → header name")
        return {}
    aliases = {}
    for own, alias in doc.items():
        own, alias = own.lower(), alias.lower()
        if own not in ALIASED_HEADERS:
            read.problems.append(
                f"HEADER_ALIASES: {own!r} is not one of {', '.join(sorted(ALIASED_HEADERS))}"
            )
        elif not alias or not all(c.isalnum() or c in "-_" for c in alias):
            read.problems.append(f"HEADER_ALIASES: {alias!r} is not a header name")
        elif alias.startswith("x-xrouter-"):
            read.problems.append(f"HEADER_ALIASES: {alias!r} is one of the router's own names")
        else:
            aliases[own] = alias
    return aliases


def _with_default_versions(route: Route, read: _Reader) -> Route:
    """AZURE_API_VERSION and ANTHROPIC_VERSION: the API version of every Azure or
    Anthropic route that names none of its own (<TIER>_API_VERSION)."""
    if route.api_version:
        return route
    provider = provider_name(route)
    variable = {"azure": "AZURE_API_VERSION", "anthropic": "ANTHROPIC_VERSION"}.get(provider)
    version = read.text(variable) if variable else ""
    if not version:
        return route
    if any(c in version for c in "\r\n"):
        read.problems.append(f"{variable} contains a line break")
        return route
    # The provider is written down: an API version alone would make `auto` detect Azure.
    return replace(route, provider=provider, api_version=version)
