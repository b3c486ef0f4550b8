"""Fallback: which routes a request may try, in order, and what to tell the client.

A request is served by the first route of its chain that answers. A tier may have several
candidates (config.Settings.candidates): the chain holds every candidate of a tier, in
its strategy's order, before the next tier, so a failing candidate is replaced by
another of the same tier before the request escalates. A route fails when
it cannot be reached, times out before the first byte, or answers one of
FALLBACK_STATUSES before anything was sent to the client. A route that keeps failing
is skipped for a cool-down (a circuit breaker), visible in /health. The retry itself
happens on the same mitmproxy flow (proxy/mitm_compat.py), so fallback answers stream.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from xrouter_core.config import Route, RoutingSettings
from xrouter_core.tiers import TIER_INDEX, TIERS
from xrouter_core.wire.errors import RouterError
from xrouter_core.wire.headers import FALLBACK_HEADER

FALLBACK_STATUSES = frozenset({404, 408, 409, 425, 429})


def should_fall_back(status: int, unreachable: bool) -> bool:
    return unreachable or status in FALLBACK_STATUSES or status >= 500


def order_candidates(
    candidates: Sequence[Route], strategy: str, price_of: Callable[[Route], float | None]
) -> tuple[Route, ...]:
    """A tier's candidates in the order they are tried. `ordered`: as configured; `price`:
    by `price_of` (USD per 1M input + output tokens), cheapest first, unpriced ones last,
    ties as configured. Open circuits are skipped when the chain is walked (next_route),
    so the first one tried is the first (or cheapest) healthy one."""
    if strategy != "price" or len(candidates) < 2:
        return tuple(candidates)
    prices = [price_of(route) for route in candidates]
    order = sorted(
        range(len(candidates)),
        key=lambda i: (prices[i] is None, prices[i] or 0.0, i),
    )
    return tuple(candidates[i] for i in order)


def weighted_order(
    candidates: Sequence[Route], draw: Callable[[], float] = random.random
) -> tuple[Route, ...]:
    """The `weighted` strategy: a random order in which each candidate comes first with
    a chance proportional to its weight (and so on down the list: each key is
    u ** (1 / weight), largest first). A weight of 0 comes after every other."""
    keys = [
        (draw() ** (1.0 / route.weight) if route.weight > 0 else -1.0, -i)
        for i, route in enumerate(candidates)
    ]
    order = sorted(range(len(candidates)), key=lambda i: keys[i], reverse=True)
    return tuple(candidates[i] for i in order)


class TierOrders(Mapping[str, Sequence[Route]]):
    """Each tier's candidates in the order to try them, for chain_for: the fixed orders
    (ordered, price) as they are, and a moving tier's (weighted, latency, throughput)
    asked of `order` only when a chain takes that tier, so a request never advances the
    order of a tier it cannot reach."""

    __slots__ = ("fixed", "moving", "order")

    def __init__(
        self,
        fixed: Mapping[str, Sequence[Route]],
        moving: Mapping[str, str],
        order: Callable[[str], Sequence[Route]],
    ):
        self.fixed = fixed
        self.moving = moving
        self.order = order

    def __getitem__(self, tier: str) -> Sequence[Route]:
        if tier in self.moving:
            return self.order(tier)
        return self.fixed[tier]

    def __iter__(self) -> Iterator[str]:
        return iter(self.fixed)

    def __len__(self) -> int:
        return len(self.fixed)


def chain_for(
    tier: str,
    routes: Mapping[str, Route],
    routing: RoutingSettings,
    needs_vision: bool = False,
    candidates: Mapping[str, Sequence[Route]] | None = None,
    needs_tools: bool = False,
    ceiling: int | None = None,
) -> list[Route]:
    """The chosen tier, then the tiers after it in FALLBACK_CHAIN (default: the tiers above
    it, ending at frontier); each tier as its `candidates` (in the order to try them), or
    its one route. Only configured routes; only vision routes for images; for a request
    with tools, no route the catalog says cannot call them (`tools: false`); no tier
    above `ceiling` (a client key's). A moving tier's order (TierOrders) is asked only
    for a tier the chain takes a route of, so a request never advances the order (a
    draw, a turn) of a tier it cannot use."""
    rank = TIER_INDEX[tier]
    if not routing.fallback_enabled:
        # One attempt: the tier, or the next configured one above it.
        names = [t for t in TIERS[rank:] if t in routes][:1]
    elif tier in routing.fallback_chain:
        names = list(routing.fallback_chain[routing.fallback_chain.index(tier) :])
    else:
        names = [tier, *(t for t in routing.fallback_chain if TIER_INDEX[t] > rank)]
    if ceiling is not None:
        names = [name for name in names if TIER_INDEX[name] <= ceiling]
    candidates = candidates or {}
    # What is usable does not depend on the order: it is checked on the fixed one.
    fixed = candidates.fixed if isinstance(candidates, TierOrders) else candidates

    def usable(route: Route) -> bool:
        return (not needs_vision or route.vision) and (not needs_tools or route.tools is not False)

    chain: list[Route] = []
    for name in names:
        if name not in routes:
            continue
        if (needs_vision or needs_tools) and not any(
            usable(route) for route in (fixed.get(name) or (routes[name],))
        ):
            continue
        chain.extend(route for route in candidates.get(name) or (routes[name],) if usable(route))
    return chain


@dataclass(slots=True)
class Attempt:
    """One route that failed: its breaker key (the tier, or `cheap#2` for a tier's second
    candidate) and why (an HTTP status or a short error)."""

    route: str
    status: int = 0  # 200: it answered, but not with a chat completion (error says why)
    error: str = ""
    retry_after: str = ""

    @property
    def reason(self) -> str:
        if self.status == 200:
            return "not_a_completion"
        if self.status:
            return str(self.status)
        if "timeout" in self.error:
            return "timeout"
        if self.error == "circuit_open":
            return "circuit_open"
        return "unreachable"

    def label(self) -> str:
        return f"{self.route}:{self.reason}"


def fallback_header(attempts: list[Attempt]) -> str:
    """`X-Xrouter-fallback: cheap:503, medium:timeout` — every route that failed first."""
    return ", ".join(attempt.label() for attempt in attempts)


@dataclass
class BreakerState:
    failures: int = 0
    open_until: float = 0.0
    last_error: str = ""


@dataclass
class CircuitBreaker:
    """Per route: after `threshold` failures in a row the route is skipped for `cooldown`
    seconds; then one request may try it again (half-open), and a success closes it."""

    threshold: int = 3
    cooldown: float = 30.0
    clock: Callable[[], float] = time.monotonic
    states: dict[str, BreakerState] = field(default_factory=dict)

    def is_open(self, route: str) -> bool:
        state = self.states.get(route)
        if state is None or state.open_until <= 0:
            return False
        if self.clock() >= state.open_until:
            state.open_until = 0.0  # half-open: let the next request try
            state.failures = self.threshold - 1
            return False
        return True

    def remaining(self, route: str) -> float:
        state = self.states.get(route)
        return max(0.0, state.open_until - self.clock()) if state else 0.0

    def failure(self, route: str, error: str) -> None:
        state = self.states.setdefault(route, BreakerState())
        state.failures += 1
        state.last_error = error
        if state.failures >= self.threshold:
            state.open_until = self.clock() + self.cooldown

    def success(self, route: str) -> None:
        state = self.states.get(route)
        if state is not None and (state.failures or state.open_until):
            state.failures = 0
            state.open_until = 0.0

    def public(self) -> dict[str, Any]:
        """For /health: which routes are cooling down, and why."""
        return {
            route: {
                "state": "open" if self.is_open(route) else "closed",
                "consecutive_failures": state.failures,
                "retry_in_s": round(self.remaining(route), 1),
                "last_error": state.last_error or None,
            }
            for route, state in self.states.items()
        }


def next_route(chain: list[Route], tried: int, breaker: CircuitBreaker) -> tuple[int, list[str]]:
    """Index of the next route to try after `tried` routes, skipping open circuits; the
    last route of the chain is tried even when open (better than no attempt). Returns
    (index or -1, the breaker keys of the routes skipped)."""
    skipped: list[str] = []
    for index in range(tried, len(chain)):
        key = chain[index].breaker_key
        if breaker.is_open(key) and index < len(chain) - 1:
            skipped.append(key)
            continue
        return index, skipped
    return -1, skipped


def first_route(chain: list[Route], breaker: CircuitBreaker) -> tuple[int, list[str]]:
    return next_route(chain, 0, breaker)


def all_failed_error(
    attempts: list[Attempt], breaker: CircuitBreaker, describe: Callable[[Attempt], str]
) -> RouterError:
    """The one error the client sees when every route failed, listing the attempts.

    Statuses are chosen for clients that retry on their own (OpenAI SDKs, OpenClaw):
    429 with Retry-After when a provider rate-limited, 503 with Retry-After for outages
    and timeouts (a retry later can help), 404 when every route said not found (a retry
    cannot help; SDKs do not retry 4xx)."""
    statuses = {a.status for a in attempts if a.status}
    detail = "; ".join(describe(attempt) for attempt in attempts)
    message = f"Every route failed: {detail}"
    headers = {FALLBACK_HEADER: fallback_header(attempts)}
    if 429 in statuses:
        after = [a.retry_after for a in attempts if a.status == 429 and a.retry_after.isdigit()]
        headers["retry-after"] = min(after, key=int) if after else "1"
        return RouterError(429, message, "rate_limit_error", "all_routes_rate_limited", headers)
    if statuses == {404} and all(a.status == 404 for a in attempts):
        return RouterError(404, message, "invalid_request_error", "all_routes_not_found", headers)
    cooling = [breaker.remaining(a.route) for a in attempts]
    headers["retry-after"] = str(max(1, int(min((c for c in cooling if c > 0), default=1))))
    return RouterError(503, message, "upstream_unavailable", "all_routes_failed", headers)


__all__ = [
    "Attempt",
    "CircuitBreaker",
    "TierOrders",
    "FALLBACK_STATUSES",
    "all_failed_error",
    "chain_for",
    "fallback_header",
    "first_route",
    "next_route",
    "order_candidates",
    "should_fall_back",
    "weighted_order",
]
