"""Measured figures per route: time to first byte and output tokens per second, over a
sliding window of this router's own requests, shared by the workers of one Redis.

What the `latency` and `throughput` strategies and rules rank by (and what /health and
/v1/route/explain show):

- `record` is called once per answered request (status < 400) with what it took: the
  time from sending the request upstream to its response headers (for a stream, its
  first byte; a whole answer's headers come when it is complete), and the output tokens
  over the time they took. It appends to a per-route deque: nothing else per request.
- A route's window is its last ROUTE_STATS_WINDOW samples, none older than
  ROUTE_STATS_WINDOW_S. `figures` gives its p50 time to first byte and its p50 tokens/s.
- With Redis (REDIS_URL, and a tier whose strategy reads these figures), every
  ROUTE_STATS_SYNC_MS a background task pushes the samples taken since the last push
  to one Redis list per route (trimmed to the window) and reads every route's list back
  in the same pipeline: each worker ranks by every worker's samples, and a request never
  waits for Redis. While Redis is away, the local samples are used.
- `order` is what a request asks: the tier's candidates ranked at the last refresh (one
  dictionary lookup). Until every candidate of the tier has ROUTE_STATS_MIN_SAMPLES
  samples in the window, the ranking is the configured (`ordered`) order, and one
  request in EXPLORE_EVERY goes to a candidate that lacks samples first, so that it gets
  measured; a candidate whose samples aged out is measured again the same way. A
  `latency` or `throughput` rule's pool is ranked the same way, under the key
  `rule:<name>` (`rule_order`).

Routes are told apart across workers by a digest of name, base URL and model (no key,
no secret goes into Redis); the same model serving two tiers shares its figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from xrouter_core.accounting.cache import REDIS_ERRORS, RedisHealth, redis_client
from xrouter_core.config import MEASURED_STRATEGIES, Route, RoutingSettings

log = logging.getLogger("xrouter.route_stats")

# One request in this many goes first to a candidate without enough samples.
EXPLORE_EVERY = 4
# What a measured rule's pool is ranked under, beside the tiers.
RULE_PREFIX = "rule:"
# Redis keys: one list per route, hash-tagged so a cluster keeps them on one slot.
REDIS_PREFIX = "xrouter:{routestats}:"


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # wall-clock seconds (workers on several machines compare them)
    ttfb_ms: float
    tokens_per_s: float | None

    def encode(self) -> str:
        tps = "" if self.tokens_per_s is None else f"{self.tokens_per_s:.3f}"
        return f"{self.at:.3f},{self.ttfb_ms:.3f},{tps}"

    @classmethod
    def decode(cls, raw: bytes | str) -> Sample | None:
        text = raw.decode() if isinstance(raw, bytes) else raw
        try:
            at, ttfb, tps = text.split(",")
            return cls(float(at), float(ttfb), float(tps) if tps else None)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class Figures:
    """One route's window: how many samples, its p50 time to first byte (ms) and its
    p50 output tokens per second (None when nothing was measured)."""

    samples: int
    p50_ttfb_ms: float | None
    tokens_per_s: float | None
    throughput_samples: int

    def public(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "p50_ttfb_ms": None if self.p50_ttfb_ms is None else round(self.p50_ttfb_ms, 1),
            "tokens_per_s": None if self.tokens_per_s is None else round(self.tokens_per_s, 1),
            "throughput_samples": self.throughput_samples,
        }


EMPTY = Figures(0, None, None, 0)


def route_id(route: Route) -> str:
    """The route's name across workers: no key or header value goes into it. Not its
    tier: a model that serves two tiers is measured by the requests of both."""
    text = "|".join((route.name, route.base_url, route.model))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def figures_of(samples: Iterable[Sample], window: int, oldest: float) -> Figures:
    kept = sorted((s for s in samples if s.at >= oldest), key=lambda s: s.at)[-window:]
    if not kept:
        return EMPTY
    tps = [s.tokens_per_s for s in kept if s.tokens_per_s is not None]
    return Figures(
        len(kept),
        statistics.median(s.ttfb_ms for s in kept),
        statistics.median(tps) if tps else None,
        len(tps),
    )


class RouteStats:
    """The measured figures of every route, and each measured tier's current order."""

    def __init__(
        self,
        routing: RoutingSettings,
        candidates: Mapping[str, Sequence[Route]],
        redis_url: str = "",
        health: RedisHealth | None = None,
        clock: Callable[[], float] = time.time,
        pools: Mapping[str, tuple[str, Sequence[Route]]] | None = None,
    ):
        """`pools`: the measured rules' pools, rule name → (its strategy, its routes)."""
        self.routing = routing
        self.window = routing.stats_window
        self.window_s = float(routing.stats_window_s)
        self.min_samples = routing.stats_min_samples
        self.clock = clock
        # Tier (or `rule:<name>`) → its candidates as configured, and its strategy, for
        # the tiers whose strategy measures and the measured rules.
        self.strategies = {
            tier: routing.strategies[tier]
            for tier, found in candidates.items()
            if len(found) > 1 and routing.strategies.get(tier) in MEASURED_STRATEGIES
        }
        self.measured = {tier: tuple(candidates[tier]) for tier in self.strategies}
        for name, (strategy, pool) in (pools or {}).items():
            if len(pool) > 1 and strategy in MEASURED_STRATEGIES:
                self.strategies[RULE_PREFIX + name] = strategy
                self.measured[RULE_PREFIX + name] = tuple(pool)
        self.all_routes = [r for found in candidates.values() for r in found]
        self._ids = {id(r): route_id(r) for r in self.all_routes}
        for found in self.measured.values():  # a pool's routes are the candidates' own
            self._ids.update((id(r), route_id(r)) for r in found if id(r) not in self._ids)
        self.routes = {rid: None for rid in self._ids.values()}
        self.local: dict[str, deque[Sample]] = {
            rid: deque(maxlen=self.window) for rid in self.routes
        }
        self.unsent: dict[str, list[Sample]] = {}
        # What Redis held at the last sync (every worker's samples), per route.
        self.shared: dict[str, list[Sample]] | None = None
        self.redis_url = redis_url if self.measured else ""
        self.health = health or (RedisHealth(redis_url) if self.redis_url else None)
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        # Tier → (order to try, candidates without enough samples), set by refresh.
        self.ranked: dict[str, tuple[Route, ...]] = dict(self.measured)
        self.unmeasured: dict[str, tuple[Route, ...]] = dict(self.measured)
        self.turns: dict[str, int] = dict.fromkeys(self.measured, 0)
        self.last_sync_error = ""

    def adopt(self, replaced: RouteStats) -> None:
        """Keep the samples of the routes a reload leaves as they were (a route is its
        name, base URL and model, `route_id`), so their figures and the measured order
        survive it, and re-rank (once, at the reload)."""
        for rid, window in self.local.items():
            window.extend(replaced.local.get(rid, ()))
            unsent = replaced.unsent.get(rid)
            if unsent and self.redis_url:
                self.unsent[rid] = unsent[-self.window :]
        if replaced.shared is not None and self.redis_url:
            self.shared = {rid: replaced.shared.get(rid, []) for rid in self.routes}
        self.refresh()

    # ---- per request ------------------------------------------------------------

    def record(self, route: Route, ttfb_ms: float, tokens: int, seconds: float) -> None:
        """One answered request of `route`: time to first byte, and `tokens` output
        tokens generated in `seconds` (no throughput sample when either is 0)."""
        rid = self._ids.get(id(route))
        if rid is None:
            return
        tps = tokens / seconds if tokens > 0 and seconds > 0 else None
        sample = Sample(self.clock(), ttfb_ms, tps)
        self.local[rid].append(sample)
        if self.redis_url:
            pending = self.unsent.setdefault(rid, [])
            pending.append(sample)
            del pending[: -self.window]

    def order(self, tier: str) -> tuple[Route, ...] | None:
        """The candidates of a measured tier in the order to try them now; None for a
        tier whose strategy does not measure."""
        ranked = self.ranked.get(tier)
        if ranked is None:
            return None
        lacking = self.unmeasured[tier]
        if not lacking:
            return ranked
        turn = self.turns[tier] = self.turns[tier] + 1
        if turn % EXPLORE_EVERY:
            return ranked
        first = lacking[(turn // EXPLORE_EVERY) % len(lacking)]
        return (first, *(r for r in ranked if r is not first))

    def rule_order(self, name: str) -> tuple[Route, ...] | None:
        """A measured rule's pool in the order to try it now (as `order`); None for a
        rule that is not measured (a pool of one)."""
        return self.order(RULE_PREFIX + name)

    # ---- figures and ranking ------------------------------------------------------

    def samples(self, rid: str) -> list[Sample]:
        if self.shared is None or self.health is None or self.health.down_since is not None:
            return list(self.local.get(rid, ()))
        return [*self.shared.get(rid, ()), *self.unsent.get(rid, ())]

    def figures(self, route: Route) -> Figures:
        rid = self._ids.get(id(route))
        if rid is None:
            return EMPTY
        return figures_of(self.samples(rid), self.window, self.clock() - self.window_s)

    def refresh(self) -> None:
        """Rank each measured tier and rule pool by the current figures (after each
        sync)."""
        for tier, found in self.measured.items():
            strategy = self.strategies[tier]
            figures = [self.figures(route) for route in found]
            if strategy == "latency":
                lacking = [f.samples < self.min_samples for f in figures]
                keys = [f.p50_ttfb_ms or 0.0 for f in figures]
            else:
                lacking = [f.throughput_samples < self.min_samples for f in figures]
                keys = [-(f.tokens_per_s or 0.0) for f in figures]
            self.unmeasured[tier] = tuple(r for r, lack in zip(found, lacking, strict=True) if lack)
            if any(lacking):
                self.ranked[tier] = found
            else:
                order = sorted(range(len(found)), key=lambda i: (keys[i], i))
                self.ranked[tier] = tuple(found[i] for i in order)

    # ---- sharing -------------------------------------------------------------------

    def start(self) -> None:
        if self.measured and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._sync_forever())

    async def _sync_forever(self) -> None:
        interval = self.routing.stats_sync_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                if self.redis_url:
                    await self.sync()
                self.refresh()
            except Exception:  # noqa: BLE001 - the figures stay as they were
                log.exception("route stats: refresh failed")

    async def sync(self) -> None:
        """Push the samples taken since the last sync and read every route's window."""
        assert self.health is not None
        if not self.health.usable:
            return
        if self._client is None:
            self._client = redis_client(self.redis_url)
        unsent, self.unsent = self.unsent, {}
        ids = list(self.routes)
        try:
            pipe = self._client.pipeline(transaction=False)
            for rid, samples in unsent.items():
                key = REDIS_PREFIX + rid
                pipe.rpush(key, *(s.encode() for s in samples))
                pipe.ltrim(key, -self.window, -1)
                pipe.expire(key, int(self.window_s) + 60)
            for rid in ids:
                pipe.lrange(REDIS_PREFIX + rid, 0, -1)
            replies = await pipe.execute()
        except REDIS_ERRORS as exc:
            self.health.failed(exc)
            self.last_sync_error = type(exc).__name__
            for rid, samples in unsent.items():  # kept for the next sync
                self.unsent[rid] = [*samples, *self.unsent.get(rid, [])][-self.window :]
            return
        self.health.succeeded()
        self.last_sync_error = ""
        lists = replies[-len(ids) :] if ids else []
        self.shared = {
            rid: [s for s in map(Sample.decode, raw or ()) if s is not None]
            for rid, raw in zip(ids, lists, strict=True)
        }

    def public(self) -> dict[str, Any]:
        """For /health: each route's figures by its breaker key, and each measured
        tier's (and rule's, as `rule:<name>`) current order."""
        return {
            "window": {
                "samples": self.window,
                "seconds": int(self.window_s),
                "min_samples": self.min_samples,
            },
            # True while the figures are every worker's (Redis read at the last sync).
            "shared": bool(self.redis_url)
            and self.shared is not None
            and self.health is not None
            and self.health.down_since is None,
            "routes": {
                route.breaker_key: {"label": route.label, **self.figures(route).public()}
                for route in self.all_routes
            },
            "order": {
                tier: [route.breaker_key for route in ranked]
                for tier, ranked in self.ranked.items()
            },
            "measuring": {
                tier: [route.breaker_key for route in lacking]
                for tier, lacking in self.unmeasured.items()
                if lacking
            },
        }

    def close(self) -> None:
        """Stop syncing (on reload and at shutdown); the Redis client closes in the
        background when a loop runs."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._client is not None:
            client, self._client = self._client, None
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            loop.create_task(_quiet_close(client))


async def _quiet_close(client: Any) -> None:
    with contextlib.suppress(*REDIS_ERRORS):
        await client.aclose()


__all__ = [
    "EXPLORE_EVERY",
    "RULE_PREFIX",
    "Figures",
    "RouteStats",
    "Sample",
    "figures_of",
    "route_id",
]
