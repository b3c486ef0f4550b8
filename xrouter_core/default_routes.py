"""Zero-config start: routes for the tiers nobody configured, from the provider keys a
user already has in the environment (OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY, …).

The tier map is data (default_routes.json: per provider its key and base-URL variables,
its API and one model per tier, with the date and sources). The rule, also in
docs/configuration.md:

- one provider key: that provider fills cheap, medium and frontier;
- several: each tier takes the model of that tier that is cheapest among the providers
  whose keys are set, priced by genai-prices at start as 3 input tokens to 1 output token
  (USD per 1M); a model genai-prices cannot price comes last, ties keep the file's order;
- a provider's base-URL variable (OPENAI_BASE_URL, ANTHROPIC_BASE_URL, …, as its SDK reads
  it) replaces its URL; one that points at this router itself is refused;
- a tier with its own base URL (environment, .env, upstreams.json: what the wizard writes)
  is not touched, and XROUTER_AUTO_ROUTES=false turns all of this off.

config.py calls `choose` while it reads the settings; this module reads no environment of
its own (it gets the merged values) and builds plain data, so config.py stays the one place
that makes Routes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from xrouter_core.tiers import CHEAP, TIERS
from xrouter_core.wire.providers import LOCAL_HOSTS

# The wizard, for the message a first run without any configuration gets.
WIZARD = "./run python configure.py"
# The router's own host when it listens on every interface: any local name reaches it.
ANY_HOST = frozenset({"", "*", "0.0.0.0", "::"})


@dataclass(frozen=True)
class DefaultRoute:
    """One tier filled from a provider key: where it goes, and why it was chosen."""

    tier: str
    provider: str  # the key in default_routes.json: "openai", "anthropic", …
    label: str
    base_url: str
    model: str
    route_provider: str  # the Route's provider type (its adapter)
    listing: str  # how wire/model_lists.py reads this provider's model list
    key_var: str
    base_url_var: str  # "" when the provider's own URL is used
    why: str
    api_key: str = field(default="", repr=False)

    def public(self) -> dict[str, Any]:
        """What /health shows: never the key."""
        return {
            "provider": self.provider,
            "model": self.model,
            "base_url": self.base_url,
            "key_variable": self.key_var,
            "base_url_variable": self.base_url_var or None,
            "why": self.why,
        }


@dataclass
class Choice:
    """What `choose` found: the routes and the problems (one line each); `used` collects
    the routes config.py takes (`use`)."""

    enabled: bool = True
    routes: dict[str, DefaultRoute] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    used: dict[str, DefaultRoute] = field(default_factory=dict)

    def use(self, tier: str, model: str = "") -> DefaultRoute | None:
        """The default route of `tier`, if there is one, with `<TIER>_MODEL` (`model`)
        in place of the map's model: recorded in `used` (what /health shows)."""
        default = self.routes.get(tier)
        if default is None:
            return None
        if model and model != default.model:
            why = f"{tier.upper()}_MODEL on {default.provider}'s default route"
            default = replace(default, model=model, why=why)
        self.used[tier] = default
        return default


@cache
def tier_map() -> dict[str, Any]:
    """default_routes.json, read once."""
    text = (
        resources.files("xrouter_core").joinpath("default_routes.json").read_text(encoding="utf-8")
    )
    return json.loads(text)


def key_variables() -> list[str]:
    """Every variable a provider key is read from, in the file's order."""
    return [var for entry in tier_map()["providers"].values() for var in entry["key_vars"]]


def no_configuration_message(auto_routes: bool) -> str:
    """The one message a first run without any route gets (exit code 2, no listener)."""
    if not auto_routes:
        return (
            "xrouter: no route is configured, and XROUTER_AUTO_ROUTES=false keeps provider "
            "keys from being used. Set CHEAP_BASE_URL, MEDIUM_BASE_URL and FRONTIER_BASE_URL "
            f"(or unset XROUTER_AUTO_ROUTES), or run the wizard: {WIZARD}"
        )
    keys = key_variables()
    named = ", ".join(keys[:-1]) + " or " + keys[-1]
    return (
        "xrouter: nothing to route to yet. Set a provider key, for example "
        f"OPENAI_API_KEY=sk-... (any of {named}), and start again; or run the wizard "
        f"to choose providers and models: {WIZARD}"
    )


def points_at_router(url: str, router_host: str, router_port: int) -> bool:
    """Would a request to `url` come back to this router (same host, same port)?"""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    if port != router_port:
        return False
    router_host = router_host.strip("[]").lower()
    if host == router_host:
        return True
    return host in LOCAL_HOSTS and (router_host in ANY_HOST or router_host in LOCAL_HOSTS)


def blended_price(entry: Mapping[str, Any], model: str) -> float | None:
    """USD per 1M tokens at the file's input:output blend, from genai-prices (looked up by
    the provider's own URL, so a base URL pointed elsewhere still prices the provider's
    model); None when genai-prices does not know the model."""
    # At call time: prices.py imports config, which imports this module.
    from xrouter_core.accounting.prices import genai_price
    from xrouter_core.config import Route

    route = Route(tier="", base_url=entry["base_url"], provider=entry["route_provider"])
    try:
        price = genai_price(model, route)
    except Exception:  # noqa: BLE001 - an unpriceable model is only ranked last
        return None
    if price is None:
        return None
    blend = tier_map()["price_blend"]
    weight = blend["input"] + blend["output"]
    return (price.input * blend["input"] + price.output * blend["output"]) / weight


@dataclass(frozen=True)
class OpenProvider:
    """A provider whose key is set: its entry in the map, and where its key came from."""

    name: str
    entry: Mapping[str, Any]
    key_var: str
    key: str
    base_url: str
    base_url_var: str

    def model(self, tier: str) -> str:
        return self.entry["tiers"].get(tier, "")


def _open_providers(
    values: Mapping[str, str], router_host: str, router_port: int, choice: Choice
) -> list[OpenProvider]:
    """Each provider whose key is set, in the map's order; a base URL that is not http(s)
    or points at this router is a problem."""
    found = []
    for name, entry in tier_map()["providers"].items():
        key_var = next((v for v in entry["key_vars"] if values.get(v, "").strip()), "")
        if not key_var:
            continue
        url_var = next((v for v in entry["base_url_vars"] if values.get(v, "").strip()), "")
        base_url = entry["base_url"]
        if url_var:
            base_url = values[url_var].strip().rstrip("/")
            parts = urlsplit(base_url)
            # A refused URL is a problem (the settings are refused); its provider still
            # counts, so that the tiers it would fill do not add "required" problems.
            if parts.scheme not in ("http", "https") or not parts.hostname:
                choice.problems.append(f"{url_var} must be an http(s) URL, not {base_url!r}")
            elif points_at_router(base_url, router_host, router_port):
                choice.problems.append(
                    f"{url_var}={base_url} points at this router itself (port "
                    f"{router_port}): requests for {key_var}'s provider would come back "
                    f"here. Unset {url_var} for the router (it then uses "
                    f"{entry['base_url']}), or point it at the provider"
                )
            path = entry.get("base_url_path", "")
            if path and not parts.path.rstrip("/").endswith(path):
                base_url += path  # the SDK's variable is the host; its calls add the path
        found.append(OpenProvider(name, entry, key_var, values[key_var].strip(), base_url, url_var))
    return found


def choose(
    values: Mapping[str, str], enabled: bool, classifier_url: str, router_port: int
) -> Choice:
    """Default routes for the tiers without a base URL of their own (cheap has the
    classifier's when CLASSIFIER_BASE_URL is set), by the rule above, from the merged
    settings' `values`; none when XROUTER_AUTO_ROUTES is off (`enabled`)."""
    choice = Choice(enabled=enabled)
    wanted = [t for t in TIERS if not values.get(f"{t.upper()}_BASE_URL", "").strip()]
    wanted = [t for t in wanted if t != CHEAP or not classifier_url]
    if not enabled or not wanted:
        return choice
    router_host = values.get("HOST", "").strip() or "0.0.0.0"
    providers = _open_providers(values, router_host, router_port, choice)
    if not providers:
        return choice
    blend = tier_map()["price_blend"]
    for tier in wanted:
        candidates = [p for p in providers if p.model(tier)]
        if not candidates:
            continue
        if len(candidates) == 1:
            chosen = candidates[0]
            why = f"{chosen.key_var} is the only provider key set; {chosen.name}'s {tier} model"
        else:
            priced = [(blended_price(p.entry, p.model(tier)), p) for p in candidates]
            # Cheapest first, the unpriced last; sorted() keeps the map's order on ties.
            priced = sorted(priced, key=lambda item: (item[0] is None, item[0] or 0.0))
            chosen = priced[0][1]
            ranking = ", ".join(
                f"{p.name} {p.model(tier)} " + ("unpriced" if price is None else f"${price:.2f}")
                for price, p in priced
            )
            why = (
                f"the cheapest {tier} model of the providers whose keys are set; genai-prices, "
                f"USD per 1M tokens at {blend['input']} input : {blend['output']} output: "
                f"{ranking}"
            )
        choice.routes[tier] = DefaultRoute(
            tier=tier,
            provider=chosen.name,
            label=chosen.entry["label"],
            base_url=chosen.base_url,
            model=chosen.model(tier),
            route_provider=chosen.entry["route_provider"],
            listing=chosen.entry["listing"],
            key_var=chosen.key_var,
            base_url_var=chosen.base_url_var,
            why=why,
            api_key=chosen.key,
        )
    return choice
