"""The rule chain: an ordered list of rules, the first that matches a request chooses its
routes. The classifier is the rule `tier`, the default and the implicit last one, so a
configuration without rules routes as before.

Rules come from upstreams.json's `"rules": [...]` or ROUTING_RULES (the same JSON list),
and are checked at start (`parse_rules`: one problem per line, naming the rule). Every
rule may have a `name` (default `<kind>#<n>`), `if_tags` (it applies only to requests
with one of these tags) and, to pin where it sends, `route` (a route's name or key, e.g.
`cheap#2`) or `tier`, with `model` (a model name; `*` = the requested one).

Kinds (RULE_KINDS, a registry: a new kind is a class with `parse` and `select`, a
TextRule that matches on one string of its own, or a PoolRule whose `order` sorts its
pool):
  prefix    the requested model name starts with `prefix` → the pinned route or tier
  tag       the request has tag `tag` → the pinned route or tier
  tier      the classifier decides the tier (the default)
  discover  the requested model is one an Ollama server (`base_url`) lists in /api/tags,
            refreshed every `refresh_s` → that server, with that model
  price     the cheapest route of its pool (`routes`/`tiers`, default all), optionally
            only those at most `max_price` USD per 1M input + output tokens
  latency   the route of its pool with the lowest measured p50 time to first byte
  throughput  the route of its pool with the highest measured p50 output tokens/s
            (both as the tier strategies of the same names, routing/route_stats.py:
            the pool's order until each of its routes has ROUTE_STATS_MIN_SAMPLES
            samples, one request in EXPLORE_EVERY lent to one that lacks them)
  score     the best of its pool by quality_bias·quality − (1−quality_bias)·cost, cost
            being the route's input + output price over the pool's highest (0..1)
  random    one of its pool at random, or by `weights` ([{route, model?, weight}]);
            `seed` makes the draws repeatable
A pool rule's chain is its pool in its order (the next one is tried when one fails); a
pinned rule's chain is its route, then that route's tier's fallback chain.

No mitmproxy, no I/O but the discover rule's refresh (the shared httpx client, in a
task of the addon's): plain data in, a Selection out. Prices and the measured order
come in as functions (`RuleEnv.price_of`, `RuleEnv.measured_order`), so this module
depends on nothing of accounting's or route_stats'.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from xrouter_core.tiers import CHEAP, TIER_INDEX, TIERS

if TYPE_CHECKING:
    import httpx

    from xrouter_core.config import Route
    from xrouter_core.routing.classifier import Decision
    from xrouter_core.routing.route_stats import Figures

log = logging.getLogger("xrouter.rules")

COMMON_KEYS = frozenset({"kind", "name", "if_tags", "route", "tier", "model"})
REQUESTED = "*"


# ---- what a rule sees, and what it gives ----------------------------------------------


@dataclass(slots=True)
class RuleInput:
    """One request as the rules read it."""

    model: str  # the requested model name, as sent
    tags: tuple[str, ...]
    classify: Callable[[], Awaitable[Decision]]  # the classifier, asked only by `tier`


@dataclass(slots=True)
class Considered:
    """A route a rule weighed, for /v1/route/explain."""

    route: Route
    price: float | None = None  # USD per 1M input + output tokens, None when unknown
    score: float | None = None  # the score rule's score
    weight: float | None = None  # the random rule's weight


@dataclass(slots=True)
class Selection:
    """What the matching rule chose: a tier (the decision), and either the routes to try
    (`chain`, a pool rule), a first route (`first`, then its tier's chain) or neither
    (the tier's own chain). `decision` is the classifier's, for the tier rule."""

    rule: Rule
    tier: int
    chain: list[Route] | None = None
    first: Route | None = None
    decision: Decision | None = None
    considered: list[Considered] = field(default_factory=list)
    detail: str = ""


@dataclass
class RuleEnv:
    """What the rules need at run time, built once per configuration by the addon."""

    price_of: Callable[[Route], float | None]
    # A measured rule's pool in the order to try it now (RouteStats.rule_order), by
    # rule name; None: not ranked (no figures kept, a pool of one), the pool's order.
    measured_order: Callable[[str], Sequence[Route] | None] = lambda name: None
    # Per rule name: the random rule's generator, the discover rule's models.
    rngs: dict[str, random.Random] = field(default_factory=dict)
    discovered: dict[str, dict[str, Route]] = field(default_factory=dict)
    refreshed: dict[str, float] = field(default_factory=dict)


class RuleError(ValueError):
    """A rule that cannot be read: the message names what is wrong."""


# ---- the rules ------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A rule as configured: its kind's class holds its own fields."""

    KIND: ClassVar[str] = ""
    KEYS: ClassVar[frozenset[str]] = frozenset()
    name: str
    if_tags: frozenset[str] = frozenset()
    target: Route | None = None  # a pinned route (its model too)
    target_tier: str = ""
    pass_model: bool = False  # model "*": the requested name

    @classmethod
    def parse(cls, doc: Mapping[str, Any], common: dict[str, Any], index: RouteIndex) -> Rule:
        return cls(**common)

    def applies(self, request: RuleInput) -> bool:
        return not self.if_tags or not self.if_tags.isdisjoint(request.tags)

    def matches(self, request: RuleInput, env: RuleEnv) -> str | None:
        """Why it does not match (None: it does)."""
        return None

    def select(self, request: RuleInput, env: RuleEnv) -> Selection | None:
        """The rule's choice for this request, None when it does not match. Plain
        (not async): walking ten rules costs function calls only; the tier rule's
        classifier is awaited by the chain."""
        if self.matches(request, env) is not None:
            return None
        return self.pinned(request.model)

    def pinned(self, requested: str) -> Selection:
        route = self.target
        if route is not None and self.pass_model and requested:
            route = with_model(route, self.model_for(requested))
        tier = route.tier if route is not None else self.target_tier
        return Selection(self, TIER_INDEX[tier], first=route)

    def model_for(self, requested: str) -> str:
        return requested

    def public(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "kind": self.KIND}
        if self.if_tags:
            doc["if_tags"] = sorted(self.if_tags)
        if self.target is not None:
            doc["route"] = self.target.breaker_key
            doc["model"] = REQUESTED if self.pass_model else self.target.model
        elif self.target_tier:
            doc["tier"] = self.target_tier
        return doc


RULE_KINDS: dict[str, type[Rule]] = {}


def rule_kind(cls: type[Rule]) -> type[Rule]:
    """Register a kind of rule under its KIND."""
    RULE_KINDS[cls.KIND] = cls
    return cls


def with_model(route: Route, model: str) -> Route:
    """The route sending another model: its own breaker key, so one model's failures do
    not cool the route's other models down."""
    if not model or model == route.model:
        return route
    return replace(route, model=model, key=f"{route.breaker_key}@{model}")


@dataclass(frozen=True)
class TextRule(Rule):
    """A pinned rule matched by one non-empty string of its own, its one KEYS field,
    kept lowercase (the prefix of `prefix`, the tag of `tag`)."""

    @classmethod
    def parse(cls, doc, common, index):
        (key,) = cls.KEYS
        text = doc.get(key)
        if not isinstance(text, str) or not text:
            raise RuleError(f"{key} must be a non-empty string")
        need_target(common)
        return cls(**common, **{key: text.lower()})

    def public(self):
        (key,) = self.KEYS
        return {**super().public(), key: getattr(self, key)}


@rule_kind
@dataclass(frozen=True)
class PrefixRule(TextRule):
    KIND: ClassVar[str] = "prefix"
    KEYS: ClassVar[frozenset[str]] = frozenset({"prefix"})
    prefix: str = ""

    def matches(self, request, env):
        if request.model.lower().startswith(self.prefix):
            return None
        return f"model {request.model or '(none)'!r} does not start with {self.prefix!r}"

    def model_for(self, requested: str) -> str:
        return requested[len(self.prefix) :] or requested


@rule_kind
@dataclass(frozen=True)
class TagRule(TextRule):
    KIND: ClassVar[str] = "tag"
    KEYS: ClassVar[frozenset[str]] = frozenset({"tag"})
    tag: str = ""

    def matches(self, request, env):
        return None if self.tag in request.tags else f"no tag {self.tag!r}"


@rule_kind
@dataclass(frozen=True)
class TierRule(Rule):
    """The classifier (and the decision cache, tool-loop stickiness): today's routing."""

    KIND: ClassVar[str] = "tier"

    @classmethod
    def parse(cls, doc, common, index):
        if common["target"] is not None or common["target_tier"]:
            raise RuleError("a tier rule takes no route or tier: the classifier chooses")
        return cls(**common)

    def select(self, request, env):
        raise TypeError("the tier rule is asked by RuleChain.select, which awaits it")

    async def decide(self, request: RuleInput) -> Selection:
        decision = await request.classify()
        return Selection(self, decision.tier, decision=decision)


@rule_kind
@dataclass(frozen=True)
class DiscoverRule(Rule):
    KIND: ClassVar[str] = "discover"
    KEYS: ClassVar[frozenset[str]] = frozenset({"base_url", "refresh_s", "api_key", "prefix"})
    base_url: str = ""
    api_key: str = ""
    refresh_s: float = 60.0
    prefix: str = ""

    @classmethod
    def parse(cls, doc, common, index):
        base_url = str(doc.get("base_url") or "").rstrip("/")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RuleError(
                f"base_url must be an http(s) URL of an Ollama server, not {base_url!r}"
            )
        base_url = base_url.removesuffix("/v1")
        refresh = doc.get("refresh_s", 60)
        if isinstance(refresh, bool) or not isinstance(refresh, int | float) or refresh < 1:
            raise RuleError(f"refresh_s must be a number of seconds, at least 1, not {refresh!r}")
        if common["target"] is not None:
            raise RuleError("a discover rule sends to its own server: give tier, not route")
        prefix = doc.get("prefix", "")
        if not isinstance(prefix, str):
            raise RuleError("prefix must be a string")
        common["target_tier"] = common["target_tier"] or CHEAP
        return cls(
            **common,
            base_url=base_url,
            api_key=str(doc.get("api_key") or ""),
            refresh_s=float(refresh),
            prefix=prefix.lower(),
        )

    def wanted(self, model: str) -> str:
        lowered = model.lower()
        if self.prefix:
            return model[len(self.prefix) :] if lowered.startswith(self.prefix) else ""
        return model

    def matches(self, request, env):
        models = env.discovered.get(self.name)
        if models is None:
            return f"{self.base_url} has not been listed yet"
        name = self.wanted(request.model)
        if name and name in models:
            return None
        listed = len({id(route) for route in models.values()})
        return (
            f"{request.model or '(none)'!r} is not one of the {listed} models {self.base_url} lists"
        )

    def select(self, request, env):
        if self.matches(request, env) is not None:
            return None
        route = env.discovered[self.name][self.wanted(request.model)]
        return Selection(self, TIER_INDEX[route.tier], first=route)

    def route_for(self, model: str) -> Route:
        from xrouter_core.config import Route  # here: config imports this module

        return Route(
            tier=self.target_tier,
            base_url=self.base_url + "/v1",  # Ollama's OpenAI-compatible API
            api_key=self.api_key,
            name=f"{self.name}/{model}",
            model=model,
            provider="openai_compatible",
            key=f"{self.name}:{model}",
        )

    async def refresh(self, client: httpx.AsyncClient, env: RuleEnv) -> None:
        """List the server's models (GET /api/tags) and keep one route per model; a
        failure keeps the last list (or none) and says why, once per change."""
        headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            reply = await client.get(self.base_url + "/api/tags", headers=headers, timeout=5.0)
            reply.raise_for_status()
            names = [
                m["name"]
                for m in reply.json().get("models") or []
                if isinstance(m, dict) and isinstance(m.get("name"), str)
            ]
        except Exception as exc:  # noqa: BLE001 - a server that is away is not the router's failure
            log.warning("rule %s: %s/api/tags not listed: %s", self.name, self.base_url, exc)
            return
        known = env.discovered.get(self.name, {})
        models: dict[str, Route] = {}
        for name in names:
            route = known.get(name) or self.route_for(name)
            models[name] = route
            if name.endswith(":latest"):  # `llama3` asks for `llama3:latest`
                models.setdefault(name.removesuffix(":latest"), route)
        if set(models) != set(known):
            log.info("rule %s: %s lists %d models", self.name, self.base_url, len(names))
        env.discovered[self.name] = models
        env.refreshed[self.name] = time.time()

    def public(self):
        return {**super().public(), "base_url": self.base_url, "refresh_s": self.refresh_s}


@dataclass(frozen=True)
class PoolRule(Rule):
    """A rule that chooses among routes (its pool): a subclass orders them."""

    KEYS: ClassVar[frozenset[str]] = frozenset({"routes", "tiers"})
    # Its order moves with each request it orders (a random draw, a measured turn): the
    # chain asks for it only once the pool is known to be usable for the request.
    MOVES: ClassVar[bool] = False
    pool: tuple[Route, ...] = ()

    @classmethod
    def parse(cls, doc, common, index):
        return cls(**common, **cls.fields(doc, index), pool=read_pool(doc, common, index))

    @classmethod
    def fields(cls, doc: Mapping[str, Any], index: RouteIndex) -> dict[str, Any]:
        return {}

    def order(self, pool: Sequence[Route], env: RuleEnv) -> list[Considered]:
        raise NotImplementedError

    def select(self, request, env):
        considered = self.order(self.pool, env)
        if not considered:
            return None
        chain = [c.route for c in considered]
        return Selection(self, TIER_INDEX[chain[0].tier], chain=chain, considered=considered)

    def unordered(self) -> Selection:
        """Its pool as configured, to check whether the request can use it before
        ordering it (which routes are usable does not depend on their order)."""
        return Selection(self, TIER_INDEX[self.pool[0].tier], chain=list(self.pool))

    def public(self):
        return {**super().public(), "pool": [r.breaker_key for r in self.pool]}


@rule_kind
@dataclass(frozen=True)
class PriceRule(PoolRule):
    KIND: ClassVar[str] = "price"
    KEYS: ClassVar[frozenset[str]] = PoolRule.KEYS | {"max_price"}
    max_price: float | None = None

    @classmethod
    def fields(cls, doc, index):
        ceiling = doc.get("max_price")
        if ceiling is not None and (
            isinstance(ceiling, bool) or not isinstance(ceiling, int | float) or ceiling < 0
        ):
            raise RuleError(f"max_price must be USD per 1M tokens (0 or more), not {ceiling!r}")
        return {"max_price": None if ceiling is None else float(ceiling)}

    def order(self, pool, env):
        rows = [Considered(route, env.price_of(route)) for route in pool]
        if self.max_price is not None:  # an unknown price is never proven under the ceiling
            rows = [c for c in rows if c.price is not None and c.price <= self.max_price]
        # Stable: ties keep the pool's order; unpriced ones last.
        return sorted(rows, key=lambda c: (c.price is None, c.price or 0.0))

    def public(self):
        return {**super().public(), "max_price": self.max_price}


@dataclass(frozen=True)
class MeasuredRule(PoolRule):
    """A pool ranked by this router's measured figures: RouteStats ranks it beside the
    measured tiers (after each sync, so a request only looks the order up)."""

    MOVES: ClassVar[bool] = True  # a turn of the exploration of unmeasured routes

    def order(self, pool, env):
        ranked = env.measured_order(self.name) or pool
        return [Considered(route, env.price_of(route)) for route in ranked]


@rule_kind
@dataclass(frozen=True)
class LatencyRule(MeasuredRule):
    KIND: ClassVar[str] = "latency"


@rule_kind
@dataclass(frozen=True)
class ThroughputRule(MeasuredRule):
    KIND: ClassVar[str] = "throughput"


@rule_kind
@dataclass(frozen=True)
class ScoreRule(PoolRule):
    KIND: ClassVar[str] = "score"
    KEYS: ClassVar[frozenset[str]] = PoolRule.KEYS | {"quality_bias"}
    quality_bias: float = 0.5
    # A route that gives no `quality`.
    DEFAULT_QUALITY: ClassVar[float] = 0.5

    @classmethod
    def fields(cls, doc, index):
        bias = doc.get("quality_bias", 0.5)
        if isinstance(bias, bool) or not isinstance(bias, int | float) or not 0 <= bias <= 1:
            raise RuleError(f"quality_bias must be a number from 0 to 1, not {bias!r}")
        return {"quality_bias": float(bias)}

    def order(self, pool, env):
        prices = [env.price_of(route) for route in pool]
        highest = max((p for p in prices if p is not None), default=0.0)
        rows = []
        for route, price in zip(pool, prices, strict=True):
            # Cost over the pool's highest price; an unknown price counts as the highest.
            cost = 1.0 if price is None else (price / highest if highest > 0 else 0.0)
            quality = route.quality if route.quality is not None else self.DEFAULT_QUALITY
            q = self.quality_bias
            rows.append(Considered(route, price, score=q * quality - (1 - q) * cost))
        return sorted(rows, key=lambda c: -(c.score or 0.0))

    def public(self):
        return {**super().public(), "quality_bias": self.quality_bias}


@rule_kind
@dataclass(frozen=True)
class RandomRule(PoolRule):
    KIND: ClassVar[str] = "random"
    KEYS: ClassVar[frozenset[str]] = PoolRule.KEYS | {"weights", "seed"}
    MOVES: ClassVar[bool] = True  # a draw of its generator
    weights: tuple[float, ...] = ()
    seed: int | None = None

    @classmethod
    def parse(cls, doc, common, index):
        seed = doc.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise RuleError(f"seed must be a whole number, not {seed!r}")
        pairs = doc.get("weights")
        if pairs is None:
            pool = read_pool(doc, common, index)
            return cls(**common, pool=pool, weights=(1.0,) * len(pool), seed=seed)
        if "routes" in doc or "tiers" in doc:
            raise RuleError("give weights or routes/tiers, not both")
        if not isinstance(pairs, list) or not pairs:
            raise RuleError("weights must be a non-empty list of {route, model?, weight}")
        pool, weights = [], []
        for n, pair in enumerate(pairs):
            if not isinstance(pair, dict) or set(pair) - {"route", "model", "weight"}:
                raise RuleError(f"weights[{n}] must be an object of route, model, weight")
            route = index.find(pair.get("route"), f"weights[{n}].route")
            weight = pair.get("weight", 1)
            if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
                raise RuleError(f"weights[{n}].weight must be a number above 0, not {weight!r}")
            model = pair.get("model")
            if model is not None and (not isinstance(model, str) or not model):
                raise RuleError(f"weights[{n}].model must be a model name")
            pool.append(with_model(route, model or ""))
            weights.append(float(weight))
        return cls(**common, pool=tuple(pool), weights=tuple(weights), seed=seed)

    def order(self, pool, env):
        rng = env.rngs.setdefault(self.name, random.Random(self.seed))
        first = rng.choices(range(len(pool)), weights=self.weights)[0]
        # The drawn one first; the others, heaviest first, are its fallbacks.
        rest = sorted((i for i in range(len(pool)) if i != first), key=lambda i: -self.weights[i])
        return [
            Considered(pool[i], env.price_of(pool[i]), weight=self.weights[i])
            for i in (first, *rest)
        ]

    def public(self):
        return {**super().public(), "weights": list(self.weights), "seed": self.seed}


# ---- reading the configuration ---------------------------------------------------------


class RouteIndex:
    """Every configured route by its name, its key (`cheap#2`, or the tier for a tier's
    only route) and its label (provider/model)."""

    def __init__(self, candidates: Mapping[str, Sequence[Route]]):
        self.routes: list[Route] = [r for tier in TIERS for r in candidates.get(tier, ())]
        self.by_name: dict[str, Route] = {}
        for route in self.routes:
            for name in (route.name, route.breaker_key, route.label):
                if name:
                    self.by_name.setdefault(name, route)

    def find(self, name: Any, where: str) -> Route:
        if not isinstance(name, str) or name not in self.by_name:
            known = ", ".join(sorted(self.by_name)) or "none"
            raise RuleError(f"{where} {name!r} names no configured route (known: {known})")
        return self.by_name[name]


def need_target(common: Mapping[str, Any]) -> None:
    if common["target"] is None and not common["target_tier"]:
        raise RuleError("give the route or the tier it sends to")


def read_pool(doc: Mapping[str, Any], common: Mapping[str, Any], index: RouteIndex) -> tuple:
    if common["target"] is not None or common["target_tier"]:
        raise RuleError("a pool rule chooses its route: give routes or tiers, not route or tier")
    names, tiers = doc.get("routes"), doc.get("tiers")
    if names is not None and tiers is not None:
        raise RuleError("give routes or tiers, not both")
    if names is not None:
        if not isinstance(names, list) or not names:
            raise RuleError("routes must be a non-empty list of route names or keys")
        pool = [index.find(name, f"routes[{n}]") for n, name in enumerate(names)]
    elif tiers is not None:
        if not isinstance(tiers, list) or not tiers or any(t not in TIERS for t in tiers):
            raise RuleError(f"tiers must be a non-empty list of {', '.join(TIERS)}")
        pool = [r for r in index.routes if r.tier in tiers]
    else:
        pool = list(index.routes)
    if not pool:
        raise RuleError("its pool holds no configured route")
    seen: set[str] = set()
    return tuple(r for r in pool if not (r.breaker_key in seen or seen.add(r.breaker_key)))


def read_rule(doc: Any, number: int, index: RouteIndex) -> Rule:
    if not isinstance(doc, dict):
        raise RuleError("must be an object with a kind")
    kind = doc.get("kind")
    cls = RULE_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise RuleError(f"kind must be one of {', '.join(RULE_KINDS)}, not {kind!r}")
    unknown = sorted(set(doc) - COMMON_KEYS - cls.KEYS)
    if unknown:
        raise RuleError(f"unknown keys {unknown} for a {kind} rule")
    name = doc.get("name", f"{kind}#{number}")
    if not isinstance(name, str) or not name or any(c in name for c in " ,|\r\n"):
        raise RuleError(f"name must be a word without spaces or commas, not {name!r}")
    if_tags = doc.get("if_tags", [])
    if isinstance(if_tags, str):
        if_tags = [if_tags]
    if not isinstance(if_tags, list) or not all(isinstance(t, str) and t for t in if_tags):
        raise RuleError("if_tags must be a list of tags")
    target = index.find(doc["route"], "route") if "route" in doc else None
    tier = doc.get("tier", "")
    if tier and tier not in TIERS:
        raise RuleError(f"tier must be one of {', '.join(TIERS)}, not {tier!r}")
    if target is not None and tier:
        raise RuleError("give route or tier, not both")
    model = doc.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise RuleError("model must be a model name, or * for the requested one")
    if model and target is None and tier:
        target = next((r for r in index.routes if r.tier == tier), None)
        if target is None:
            raise RuleError(f"tier {tier!r} has no route to send model {model!r} to")
        tier = ""
    pass_model = model == REQUESTED
    if target is not None and model and not pass_model:
        target = with_model(target, model)
    common = {
        "name": name,
        "if_tags": frozenset(t.lower() for t in if_tags),
        "target": target,
        "target_tier": tier,
        "pass_model": pass_model,
    }
    return cls.parse(doc, common, index)


def parse_rules(
    docs: Any, candidates: Mapping[str, Sequence[Route]], problems: list[str]
) -> tuple[Rule, ...]:
    """The configured rules, checked; the tier rule is added at the end when absent.
    Every problem goes to `problems`, as `ROUTING_RULES[2] (code-first): …`."""
    if docs is None:
        docs = []
    if not isinstance(docs, list):
        problems.append("ROUTING_RULES must be a JSON list of rule objects")
        return (TierRule(name="tier"),)
    index = RouteIndex(candidates)
    rules: list[Rule] = []
    names: set[str] = set()
    for number, doc in enumerate(docs, start=1):
        label = doc.get("name") if isinstance(doc, dict) else None
        where = f"ROUTING_RULES[{number - 1}]" + (f" ({label})" if isinstance(label, str) else "")
        try:
            rule = read_rule(doc, number, index)
        except RuleError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if rule.name in names:
            problems.append(f"{where}: the name {rule.name!r} is used twice")
            continue
        names.add(rule.name)
        if rules and isinstance(rules[-1], TierRule) and not rules[-1].if_tags:
            problems.append(
                f"{where}: it comes after the tier rule {rules[-1].name!r}, which always matches"
            )
            continue
        rules.append(rule)
    if not rules or not isinstance(rules[-1], TierRule) or rules[-1].if_tags:
        rules.append(TierRule(name="tier" if "tier" not in names else "tier#default"))
    return tuple(rules)


def rules_from_text(raw: str, candidates, problems: list[str]) -> tuple[Rule, ...]:
    """ROUTING_RULES as given (JSON text)."""
    if not raw.strip():
        return parse_rules([], candidates, problems)
    try:
        docs = json.loads(raw)
    except ValueError as exc:
        problems.append(f"ROUTING_RULES is not valid JSON: {exc}")
        return parse_rules([], candidates, problems)
    return parse_rules(docs, candidates, problems)


# ---- at run time ------------------------------------------------------------------------


@dataclass(slots=True)
class Trace:
    """For /v1/route/explain: each rule tried, and why it did not match."""

    rows: list[dict[str, Any]] = field(default_factory=list)


class RuleChain:
    """The configured rules with their run-time state; `select` walks them."""

    def __init__(self, rules: Sequence[Rule], env: RuleEnv):
        self.rules = tuple(rules)
        self.env = env
        # Only the default rule: the classifier as before, nothing else to walk.
        self.only_tier = len(self.rules) == 1 and isinstance(self.rules[0], TierRule)
        self.discover = [r for r in self.rules if isinstance(r, DiscoverRule)]

    async def select(
        self,
        request: RuleInput,
        usable: Callable[[Selection], bool] = lambda s: True,
        trace: Trace | None = None,
    ) -> Selection:
        """The first rule that applies, matches and (by `usable`: vision, a key's
        ceiling) can serve the request. The last rule is the tier rule, which always
        gives a selection."""
        for rule in self.rules:
            if not rule.applies(request):
                if trace is not None:
                    trace.rows.append(
                        _row(rule, False, "only for tags " + ", ".join(sorted(rule.if_tags)))
                    )
                continue
            if isinstance(rule, TierRule):
                selection: Selection | None = await rule.decide(request)
            elif isinstance(rule, PoolRule) and rule.MOVES and not usable(rule.unordered()):
                # No draw and no turn for a request the rule then cannot serve: the
                # requests it does serve get its draws in their sequence (a seed's).
                selection = None
            else:
                selection = rule.select(request, self.env)
            if selection is None or not usable(selection):
                if trace is not None:
                    why = rule.matches(request, self.env) if selection is None else None
                    trace.rows.append(_row(rule, False, why or "no usable route"))
                continue
            if trace is not None:
                trace.rows.append(_row(rule, True, selection.detail))
            return selection
        raise AssertionError("the last rule is the tier rule, which always matches")

    def routes(self) -> list[Route]:
        """Every route a rule may send to, known now (for breaker keys and timeouts)."""
        found: list[Route] = []
        for rule in self.rules:
            if rule.target is not None:
                found.append(rule.target)
            if isinstance(rule, PoolRule):
                found.extend(rule.pool)
        for models in self.env.discovered.values():
            found.extend(models.values())
        return found

    def measured_pools(self) -> dict[str, tuple[str, tuple[Route, ...]]]:
        """The latency and throughput rules' pools, for RouteStats to rank: rule name →
        (its kind, its pool)."""
        return {
            rule.name: (rule.KIND, rule.pool)
            for rule in self.rules
            if isinstance(rule, MeasuredRule)
        }

    async def keep_discovering(self, client: httpx.AsyncClient, on_change: Callable[[], None]):
        """The discover rules' refresh: each lists its server at once, then every
        refresh_s (a task of the addon's; cancelled with it)."""
        if not self.discover:
            return
        next_at = dict.fromkeys((r.name for r in self.discover), 0.0)
        while True:
            now = time.monotonic()
            due = [r for r in self.discover if next_at[r.name] <= now]
            if due:
                await asyncio.gather(*(r.refresh(client, self.env) for r in due))
                for rule in due:
                    next_at[rule.name] = time.monotonic() + rule.refresh_s
                on_change()
            await asyncio.sleep(max(0.05, min(next_at.values()) - time.monotonic()))

    def public(self) -> list[dict[str, Any]]:
        """For /health: each rule as configured (route keys, never keys), and the models
        each discover rule found."""
        rows = []
        for rule in self.rules:
            row = rule.public()
            if isinstance(rule, DiscoverRule):
                row["models"] = sorted(self.env.discovered.get(rule.name, {}))
            rows.append(row)
        return rows


def _row(rule: Rule, matched: bool, why: str) -> dict[str, Any]:
    row: dict[str, Any] = {"name": rule.name, "kind": rule.KIND, "matched": matched}
    if why:
        row["why"] = why
    return row


def explain_document(
    selection: Selection | None,
    decision: Decision,
    chain: Sequence[Route],
    chosen: int,
    tags: Sequence[str],
    trace: Trace,
    classifier: Decision | None,
    prices: Callable[[Route], tuple[float, float, bool]],
    circuit_open: Callable[[str], bool],
    figures: Callable[[Route], Figures] | None = None,
) -> dict[str, Any]:
    """POST /v1/route/explain's answer: the rule that matched (None: the tier was pinned
    by name or header), each rule tried, the classifier's view, the tags, every route
    the request would try in order with its price (USD per 1M tokens; null when
    unknown) and its measured figures (`figures`: samples in the window, p50 time to
    first byte in ms, p50 output tokens/s; null when not measured), and the one that
    would be tried first."""
    extra = {c.route.breaker_key: c for c in (selection.considered if selection else ())}
    rows = []
    for n, route in enumerate(chain):
        input_price, output_price, priced = prices(route)
        row: dict[str, Any] = {
            "key": route.breaker_key,
            "label": route.label,
            "tier": route.tier,
            "provider": route.provider or "auto",
            "model": route.model or None,
            "input_price": input_price if priced else None,
            "output_price": output_price if priced else None,
            "circuit": "open" if circuit_open(route.breaker_key) else "closed",
            "chosen": n == chosen,
        }
        if figures is not None:
            measured = figures(route).public()
            row["samples"] = measured["samples"]
            row["p50_ttfb_ms"] = measured["p50_ttfb_ms"]
            row["tokens_per_s"] = measured["tokens_per_s"]
        found = extra.get(route.breaker_key)
        if found is not None and found.score is not None:
            row["score"] = round(found.score, 4)
        if found is not None and found.weight is not None:
            row["weight"] = found.weight
        rows.append(row)
    return {
        "rule": None
        if selection is None
        else {"name": selection.rule.name, "kind": selection.rule.KIND},
        "rules": trace.rows,
        "decision": {
            "tier": TIERS[decision.tier],
            "index": decision.tier,
            "source": decision.source,
        },
        "classifier": None
        if classifier is None
        else {
            "tier": TIERS[classifier.tier],
            "source": classifier.source,
            "score": None if classifier.score is None else round(classifier.score, 3),
            "ms": round(classifier.ms, 1),
        },
        "tags": list(tags),
        "candidates": rows,
        "chosen": rows[chosen] if 0 <= chosen < len(rows) else None,
    }
