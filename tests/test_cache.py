"""The decision and response caches' layering: a memory LRU in front of disk or Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path

from xrouter_core.accounting.cache import DiskCache, LayeredCache, MemoryCache


class SlowBackend:
    """A real disk cache whose reads wait until the test lets them go on."""

    def __init__(self, path: Path):
        self.disk = DiskCache(path)
        self.asked = asyncio.Event()
        self.release = asyncio.Event()

    async def get(self, key: str) -> bytes | str | None:
        value = await self.disk.get(key)  # read now: what the backend held when asked
        self.asked.set()
        await self.release.wait()
        return value

    async def set(self, key: str, value: bytes | str, ttl: float | None = None) -> None:
        await self.release.wait()  # the background write lands late too
        await self.disk.set(key, value, ttl)


def test_a_value_set_while_the_backend_is_read_is_what_the_read_returns(tmp_path: Path):
    """Two requests with the same question: the first decides while the second waits on
    the backend's miss. The second must see that decision, not ask the classifier again."""

    async def scenario() -> None:
        back = SlowBackend(tmp_path / "cache")
        cache = LayeredCache(MemoryCache(max_entries=10), back)
        reading = asyncio.ensure_future(cache.get("decision|q"))
        await back.asked.wait()  # the read has its miss and waits to return it
        await cache.set("decision|q", "2")
        back.release.set()
        assert await reading == "2"
        assert await cache.get("decision|q") == "2"

    asyncio.run(scenario())


def test_a_miss_stays_a_miss(tmp_path: Path):
    async def scenario() -> None:
        back = SlowBackend(tmp_path / "cache")
        back.release.set()
        cache = LayeredCache(MemoryCache(max_entries=10), back)
        assert await cache.get("decision|absent") is None

    asyncio.run(scenario())
