"""The limits of client keys (client_keys.py): requests per minute (`RateLimits`), and
tokens per minute and daily and monthly USD budgets (`Budgets`), each counted per UTC
calendar minute, day or month.

Requests per minute: with Redis, one INCR per request on a key that expires after the
minute: atomic, so N routers sharing Redis let exactly `rpm` requests of a key through
per minute. Budgets and tokens: reserved before forwarding, settled after (see Budgets).
Without Redis, or while it is away, each process counts on its own.

Whether Redis is away is judged by the limits' own calls (`counters_health`), which wait
up to COUNT_TIMEOUT_S for an answer: a cache read that timed out in a burst does not
switch the limits to counting in each process, which would let up to N times a limit
through."""

from __future__ import annotations

import calendar
import logging
import math
import secrets
import time
from dataclasses import dataclass

from xrouter_core.accounting.cache import RedisHealth
from xrouter_core.accounting.redis_topology import (
    REDIS_ERRORS,
    SHUTDOWN_REDIS_S,
    Deadline,
    close_later,
    eval_replicated,
    redis_client,
    replicated,
    retried,
)
from xrouter_core.accounting.usage import NANO_USD
from xrouter_core.client_keys import ClientKey
from xrouter_core.tasks import Tasks

log = logging.getLogger("xrouter")

# A count or reservation decides whether a request goes on, so a Redis that is slow for
# a moment (a burst, a fork for a snapshot) is waited for this long rather than counted
# around. One that cannot be reached still fails within the connect timeout (0.5 s), and
# while it is away (RETRY_S after a failure) requests do not wait for it at all.
COUNT_TIMEOUT_S = 2.0
RETRY_S = 2.0  # after a limit's Redis call failed (through retries): local this long


def counters_health(redis_url: str) -> RedisHealth:
    """The breaker of the limits and budgets, apart from the stores': see the module."""
    return RedisHealth(redis_url, RETRY_S, "the client keys' limits count in each process")


PREFIX = "xrouter:rpm:"
COUNT_REQUEST = """
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return n
"""


class RateLimits:
    def __init__(self, redis_url: str = "", health: RedisHealth | None = None):
        """`health`: the limits' breaker (counters_health), shared with the budgets."""
        self.redis = redis_client(redis_url, COUNT_TIMEOUT_S) if redis_url else None
        self.health = health or (counters_health(redis_url) if redis_url else None)
        # name → requests counted here this minute (no Redis, or Redis away).
        self.local: dict[str, int] = {}
        self.minute = 0

    def adopt(self, replaced: RateLimits) -> None:
        """Go on counting where the limits a reload replaces left off (this minute's
        counts of this process, by key name): a reload does not give a key a new minute."""
        self.local, self.minute = replaced.local, replaced.minute

    async def take(self, name: str, rpm: int) -> float | None:
        """Count one request of `name`; None when it is within `rpm`, else the seconds
        until the next minute, when it may try again."""
        now = time.time()
        minute = int(now // 60)
        count = await self._count(name, minute)
        if count <= rpm:
            return None
        return max(60 - (now - minute * 60), 0.001)

    async def _count(self, name: str, minute: int) -> int:
        if self.redis is not None and (self.health is None or self.health.usable):
            key = f"{PREFIX}{name}:{minute}"
            try:
                # One key, one script: atomic on every topology (a Cluster included).
                count = await self.redis.eval(COUNT_REQUEST, 1, key, 120)
                if self.health is not None:
                    self.health.succeeded()
                return int(count)
            except REDIS_ERRORS as exc:
                if self.health is not None:
                    self.health.failed(exc)
        if minute != self.minute:
            self.local, self.minute = {}, minute
        count = self.local[name] = self.local.get(name, 0) + 1
        return count

    def close(self) -> None:
        """For the limits a reload replaces, and at shutdown: the Redis client closed."""
        if self.redis is not None:
            close_later(self.redis)


def retry_after(seconds: float) -> str:
    """The Retry-After header value: whole seconds, rounded up."""
    return str(max(math.ceil(seconds), 1))


# ---- budgets and tokens per minute ----------------------------------------------------

# Per key, one Redis hash tag: a request's day, month and minute counters sit in one
# Cluster slot, so one script may read and change all three.
BUDGET_PREFIX = "xrouter:{key:%s}:"
DAY_TTL_S = 2 * 86400
MONTH_TTL_S = 32 * 86400
MINUTE_TTL_S = 120
# The ids that make a retried reservation or settlement a no-op: kept past the retries
# (FAILOVER_S), no longer (one small key per request).
ID_TTL_S = 60
# The limits a reservation is held to, in the order the script checks them.
LIMITS = ("daily", "monthly", "tpm")

# KEYS: day, month, minute counters, the reservation's id. ARGV: nano-USD, tokens, the
# three limits (0: none), the three expiries, the id's expiry (ID_TTL_S). Refuses
# (returns {index, used}) when any limit would be passed, else adds the reservation to
# every limited counter and returns {0, 0}: check and charge in one step, so no two
# routers can both take the last of a budget. The id makes a retry of a reservation that
# did land (an answer lost in a failover) a no-op.
RESERVE = """
if redis.call('EXISTS', KEYS[4]) == 1 then return {0, 0} end
local adds = {tonumber(ARGV[1]), tonumber(ARGV[1]), tonumber(ARGV[2])}
local used = {}
for i = 1, 3 do
  local limit = tonumber(ARGV[2 + i])
  if limit > 0 then
    used[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
    if used[i] + adds[i] > limit then return {i, used[i]} end
  end
end
for i = 1, 3 do
  if tonumber(ARGV[2 + i]) > 0 then
    redis.call('INCRBY', KEYS[i], adds[i])
    redis.call('EXPIRE', KEYS[i], ARGV[5 + i])
  end
end
redis.call('SET', KEYS[4], '1', 'EX', ARGV[9])
return {0, 0}
"""

# KEYS: the settlement's id, then the counters a reservation charged. ARGV: per counter,
# the change and its expiry. Applied at most once (the id), so it may be retried.
SETTLE = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', 60) then return 0 end  -- ID_TTL_S
for i = 2, #KEYS do
  local delta = tonumber(ARGV[2 * i - 3])
  if delta ~= 0 then
    redis.call('INCRBY', KEYS[i], delta)
    if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ARGV[2 * i - 2]) end
  end
end
return 1
"""


def period_keys(name: str, now: float) -> tuple[tuple[str, str, str], tuple[float, float, float]]:
    """The day, month and minute counters of key `name` at `now` (UTC), and the seconds
    until each period ends."""
    t = time.gmtime(now)
    base = BUDGET_PREFIX % name
    day_end = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0)) + 86400
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    month_end = calendar.timegm((year, month, 1, 0, 0, 0))
    minute = int(now // 60)
    keys = (
        f"{base}usd:d:{t.tm_year:04d}{t.tm_mon:02d}{t.tm_mday:02d}",
        f"{base}usd:m:{t.tm_year:04d}{t.tm_mon:02d}",
        f"{base}tok:{minute}",
    )
    return keys, (day_end - now, month_end - now, (minute + 1) * 60 - now)


@dataclass(slots=True)
class Reservation:
    """What one request of a metered key holds until it is settled."""

    keys: tuple[str, ...]  # the counters charged
    ttls: tuple[int, ...]
    nusd: int
    tokens: int
    shared: bool  # charged in Redis (else in this process)
    id: str = ""  # the reservation's Redis key; settled under id + ":s"
    settled: bool = False


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request a limit turned away: which one, its figures, and when to try again."""

    limit: str  # one of LIMITS
    allowed: int  # nano-USD or tokens
    used: int
    wanted: int
    retry_s: float


class Budgets:
    """Daily and monthly USD budgets and tokens-per-minute limits of client keys.

    Before a request is forwarded, `reserve` charges an estimate of its cost and tokens
    (a Redis script: checked and charged atomically, so routers sharing Redis never
    together let a budget be passed by a reservation); when it ends, `settle` replaces
    the estimate with what it really cost. A request is let through when what is used
    (settled costs plus the estimates of requests in flight) plus its own estimate stays
    within the limit: the limit is reached exactly, never passed, as long as estimates
    are not below the real cost. Without Redis, or while it is away, each process
    counts on its own (N processes then let up to N times the limit through)."""

    def __init__(self, redis_url: str = "", health: RedisHealth | None = None):
        """`health`: the limits' breaker (counters_health), shared with RateLimits."""
        self.redis = redis_client(redis_url, COUNT_TIMEOUT_S) if redis_url else None
        self.health = health or (counters_health(redis_url) if redis_url else None)
        self.local: dict[str, tuple[float, int]] = {}  # key → (expires, value)
        self.tasks = Tasks()

    def adopt(self, replaced: Budgets) -> None:
        """Go on from what the budgets a reload replaces hold in this process (without
        Redis, or while it is away): the same counters, so a reload neither resets a
        key's spend nor loses a settlement of a request in flight."""
        self.local = replaced.local

    def _shared(self) -> bool:
        return self.redis is not None and (self.health is None or self.health.usable)

    def _failed(self, exc: BaseException) -> None:
        if self.health is not None:
            self.health.failed(exc)

    async def reserve(
        self, key: ClientKey, nusd: int, tokens: int, now: float | None = None
    ) -> Reservation | Refusal:
        now = time.time() if now is None else now
        names, left = period_keys(key.name, now)
        limits = (
            round(key.daily_usd * NANO_USD),
            round(key.monthly_usd * NANO_USD),
            key.tpm,
        )
        ttls = (DAY_TTL_S, MONTH_TTL_S, MINUTE_TTL_S)
        charged = tuple(i for i in range(3) if limits[i])
        wanted = (nusd, nusd, tokens)
        refused = used = 0
        shared = self._shared()
        rid = f"{BUDGET_PREFIX % key.name}r:{secrets.token_hex(8)}"
        if shared:
            assert self.redis is not None
            try:
                redis = self.redis
                # On Sentinel, confirmed by a replica before the request goes on; one
                # that does not answer in 100 ms does not stop it: the reservation is
                # then made again in the background until one confirms it (the id makes
                # a repeat a no-op), so a failover right now cannot lose it.
                args = [nusd, tokens, *limits, *ttls, ID_TTL_S]
                (refused, used), confirmed = await retried(
                    redis, lambda: eval_replicated(redis, RESERVE, [*names, rid], args)
                )
                if not confirmed and not refused:
                    self.tasks.spawn(self._confirm_shared(RESERVE, [*names, rid], args))
                if self.health is not None:
                    self.health.succeeded()
            except REDIS_ERRORS as exc:
                self._failed(exc)
                shared = False
        if not shared:
            refused, used = self._reserve_here(names, limits, wanted, ttls, now)
        if refused:
            i = int(refused) - 1
            return Refusal(LIMITS[i], limits[i], int(used), wanted[i], max(left[i], 0.001))
        return Reservation(
            tuple(names[i] for i in charged),
            tuple(ttls[i] for i in charged),
            nusd,
            tokens,
            shared,
            rid,
        )

    def _reserve_here(self, names, limits, wanted, ttls, now) -> tuple[int, int]:
        """RESERVE, in this process."""
        used = [0, 0, 0]
        for i in range(3):
            if limits[i]:
                expires, value = self.local.get(names[i], (0.0, 0))
                used[i] = value if expires > now else 0
                if used[i] + wanted[i] > limits[i]:
                    return i + 1, used[i]
        for i in range(3):
            if limits[i]:
                self.local[names[i]] = (now + ttls[i], used[i] + wanted[i])
        if len(self.local) > 10_000:
            self.local = {k: v for k, v in self.local.items() if v[0] > now}
        return 0, 0

    def settle(self, reservation: Reservation, nusd: int, tokens: int) -> None:
        """Replace the reservation's estimate with the request's real cost and tokens
        (in the background; a failed write leaves the estimate charged, the safe side)."""
        if reservation.settled:
            return
        reservation.settled = True
        deltas = [
            tokens - reservation.tokens if ":tok:" in key else nusd - reservation.nusd
            for key in reservation.keys
        ]
        if not any(deltas):
            return
        if not reservation.shared or self.redis is None:
            now = time.time()
            for key, delta, ttl in zip(reservation.keys, deltas, reservation.ttls, strict=True):
                expires, value = self.local.get(key, (now + ttl, 0))
                self.local[key] = (expires, value + delta)
            return
        args: list[int] = []
        for delta, ttl in zip(deltas, reservation.ttls, strict=True):
            args += [delta, ttl]
        keys = (reservation.id + ":s", *reservation.keys)
        self.tasks.spawn(self._confirm_shared(SETTLE, list(keys), args, "settled"))

    async def _confirm_shared(
        self, script: str, keys: list[str], args: list[int], what: str = "confirmed"
    ) -> None:
        """A budget write, in the background, until a replica confirms it (replicated)."""
        assert self.redis is not None
        try:
            await replicated(self.redis, script, keys, args)
        except REDIS_ERRORS as exc:
            self._failed(exc)
            log.warning("a budget reservation was not %s (%s)", what, type(exc).__name__)

    async def spent(self, names: list[str], now: float | None = None) -> dict[str, tuple[int, int]]:
        """name → (nano-USD used today, this month), in-flight estimates included."""
        now = time.time() if now is None else now
        keys = {name: period_keys(name, now)[0][:2] for name in names}
        if self._shared() and names:
            assert self.redis is not None
            try:
                found: dict[str, tuple[int, int]] = {}
                for name, (day, month) in keys.items():
                    # One slot per key name: read in one call per key (Cluster-safe).
                    values = await self.redis.mget(day, month)
                    found[name] = (int(values[0] or 0), int(values[1] or 0))
                return found
            except REDIS_ERRORS as exc:
                self._failed(exc)

        def here(key: str) -> int:
            expires, value = self.local.get(key, (0.0, 0))
            return value if expires > now else 0

        return {name: (here(day), here(month)) for name, (day, month) in keys.items()}

    def close(self) -> None:
        """For the budgets a reload replaces, and at shutdown. The settlements on their
        way to Redis go on (retried through a failover for up to FAILOVER_S): the client
        closes only after them (close_later), so a reload loses none of them; at
        shutdown, settle_last waits for them within the shutdown's Redis deadline."""
        if self.redis is not None:
            close_later(self.redis)

    async def settle_last(self, deadline: Deadline) -> None:
        """At shutdown: the reservations' confirmations and settlements still on their
        way to Redis, waited for until `deadline` (SHUTDOWN_REDIS_S for all of a
        shutdown's Redis writes), not at all when none is. Those left are given up with
        one log line: their estimates stay charged in Redis (the safe side; a key is
        never let past its budget for them), and the stopping loop cancels them."""
        if self.tasks:
            await self.tasks.wait(deadline.left())
        if self.tasks:
            log.warning(
                "%d budget write(s) did not reach Redis within %ss of shutdown; their"
                " estimates stay charged",
                len(self.tasks),
                SHUTDOWN_REDIS_S,
            )
