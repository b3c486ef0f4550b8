"""Requests-per-minute limits of client keys (client_keys.py), counted per calendar
minute. With Redis, one INCR per request on a key that expires after the minute: atomic,
so N routers sharing Redis let exactly `rpm` requests of a key through per minute. Without
Redis, or while it is away, each process counts on its own."""

from __future__ import annotations

import math
import time

from xrouter_core.accounting.cache import REDIS_ERRORS, RedisHealth, redis_client

PREFIX = "xrouter:rpm:"


class RateLimits:
    def __init__(self, redis_url: str = "", health: RedisHealth | None = None):
        self.redis = redis_client(redis_url) if redis_url else None
        self.health = health
        # name → requests counted here this minute (no Redis, or Redis away).
        self.local: dict[str, int] = {}
        self.minute = 0

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
                async with self.redis.pipeline(transaction=True) as pipe:
                    count, _ = await pipe.incr(key).expire(key, 120).execute()
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


def retry_after(seconds: float) -> str:
    """The Retry-After header value: whole seconds, rounded up."""
    return str(max(math.ceil(seconds), 1))
