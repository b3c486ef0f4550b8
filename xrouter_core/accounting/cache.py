"""Caches behind one small async interface: memory LRU, diskcache (the embedded default)
and Redis (shared by several routers), with the local backend serving while Redis is away.

Values are bytes or str; keys are short strings (callers hash long inputs).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

# Redis connections (URL forms, topologies, errors) live in redis_topology.py.
from xrouter_core.accounting.redis_topology import (
    CLOSE_GRACE_S,
    REDIS_ERRORS,
    close_later,
    redact_url,
    redis_client,
)
from xrouter_core.tasks import Tasks

log = logging.getLogger("xrouter.cache")
T = TypeVar("T")

# How long a replaced store waits for the writes started on it before it closes: as long
# as a Redis client is kept for its last commands (a write may retry through a failover).
WRITE_GRACE_S = CLOSE_GRACE_S
_closing = Tasks()


class Closeable(Protocol):
    def close(self) -> None: ...


class Cache(Closeable, Protocol):
    async def get(self, key: str) -> bytes | str | None: ...

    async def set(self, key: str, value: bytes | str, ttl: float | None = None) -> None: ...


def close_after(writes: Tasks, store: Closeable) -> None:
    """Close `store` (a cache, the session store, an x402 ledger) once the writes started
    on it (`writes`) are done, waiting at most WRITE_GRACE_S, in the background: a
    reload replaces the store while a request's write is on its way, and the write must
    land where it started, while the caller (a mitmproxy hook) does not wait. With no
    write pending, or no running loop (the process ending), at once: SQLite's unix VFS
    keeps a closed connection's descriptor open while another connection of the process
    holds the file, so a store closed after its replacement opened leaves one behind.
    Cancelled (the loop stopping), it still closes."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        store.close()
        return
    if not writes:
        store.close()
        return
    _closing.spawn(_close_after(writes, store))


async def _close_after(writes: Tasks, store: Closeable) -> None:
    try:
        await writes.wait(WRITE_GRACE_S)
    finally:
        store.close()


def cache_key(namespace: str, text: str) -> str:
    return f"{namespace}:{hashlib.blake2b(text.encode(), digest_size=16).hexdigest()}"


class MemoryCache:
    """A bounded LRU with per-entry expiry; the default for classifier decisions."""

    def __init__(self, max_entries: int = 10_000, default_ttl: float | None = 3600.0):
        self.max_entries = max_entries
        self.default_ttl = default_ttl
        self._items: OrderedDict[str, tuple[float, bytes | str]] = OrderedDict()

    def get_now(self, key: str) -> bytes | str | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, value = item
        if expires and expires < time.monotonic():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return value

    def set_now(self, key: str, value: bytes | str, ttl: float | None = None) -> None:
        ttl = self.default_ttl if ttl is None else ttl
        expires = time.monotonic() + ttl if ttl else 0.0
        self._items[key] = (expires, value)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    async def get(self, key: str) -> bytes | str | None:
        return self.get_now(key)

    async def set(self, key: str, value: bytes | str, ttl: float | None = None) -> None:
        self.set_now(key, value, ttl)

    def close(self) -> None:
        """Nothing to let go of."""


class DiskThread:
    """The one worker thread a diskcache store's calls run in. diskcache opens an SQLite
    connection in each thread that uses a store and `close()` closes only the calling
    thread's: with every call in this thread, `close` really closes the store (at
    shutdown, and for the stores a reload replaces, which would otherwise keep their
    connections open). A call after that runs in a default worker thread: a late count
    is still stored."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="xrouter-disk")
        self.closed = False

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self.closed:
            return await asyncio.to_thread(fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self, store: Any) -> None:
        """Close `store` in this thread, once the calls queued are done, and in the
        calling one."""
        if not self.closed:
            self.closed = True
            self._executor.submit(store.close)
            self._executor.shutdown(wait=True)
        store.close()


class DiskCache:
    """diskcache on disk: persistent, shared by processes on one machine. Every call runs
    in the cache's worker thread, so SQLite never blocks the event loop."""

    def __init__(self, directory: str | Path, max_entries: int = 100_000):
        import diskcache

        Path(directory).mkdir(parents=True, exist_ok=True)
        # diskcache bounds by bytes; about 4 KB per entry covers cached answers.
        self.store = diskcache.Cache(str(directory), size_limit=max_entries * 4096)
        self.thread = DiskThread()

    async def get(self, key: str) -> bytes | str | None:
        return await self.thread.run(self.store.get, key)

    async def set(self, key: str, value: bytes | str, ttl: float | None = None) -> None:
        await self.thread.run(self.store.set, key, value, ttl or None)

    def close(self) -> None:
        self.thread.close(self.store)


class RedisHealth:
    """Whether Redis is usable now: after a failure it is skipped for `retry_s`, then tried
    again. The outage and the recovery are each logged once; `meanwhile` says what is
    done while it is away."""

    def __init__(self, url: str, retry_s: float = 2.0, meanwhile: str = "using the local backend"):
        self.url = url
        self.retry_s = retry_s
        self.meanwhile = meanwhile
        self.down_since: float | None = None
        self._retry_at = 0.0

    @property
    def usable(self) -> bool:
        return self.down_since is None or time.monotonic() >= self._retry_at

    def failed(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning(
                "Redis at %s is unavailable (%s); %s until it returns",
                redact_url(self.url),
                type(exc).__name__,
                self.meanwhile,
            )
        self._retry_at = time.monotonic() + self.retry_s

    def succeeded(self) -> None:
        if self.down_since is not None:
            log.info("Redis at %s is back; using it again", redact_url(self.url))
            self.down_since = None


class RedisCache:
    """Redis first; while it is away, the local cache answers (and takes the writes)."""

    def __init__(self, client, local: Cache, health: RedisHealth, prefix: str = "xrouter:"):
        self.client = client
        self.local = local
        self.health = health
        self.prefix = prefix

    async def get(self, key: str) -> bytes | str | None:
        if self.health.usable:
            try:
                value = await self.client.get(self.prefix + key)
                self.health.succeeded()
                return value
            except REDIS_ERRORS as exc:
                self.health.failed(exc)
        return await self.local.get(key)

    async def set(self, key: str, value: bytes | str, ttl: float | None = None) -> None:
        if self.health.usable:
            try:
                await self.client.set(self.prefix + key, value, px=int(ttl * 1000) if ttl else None)
                self.health.succeeded()
                return
            except REDIS_ERRORS as exc:
                self.health.failed(exc)
        await self.local.set(key, value, ttl)

    def close(self) -> None:
        """The local cache behind it, and the Redis client (after its last commands)."""
        self.local.close()
        close_later(self.client)


class LayeredCache:
    """A small memory LRU in front of a shared or persistent backend: repeated keys are
    answered without a thread hop or a network round trip."""

    def __init__(self, front: MemoryCache, back: Cache):
        self.front = front
        self.back = back
        self._writes = Tasks()

    async def get(self, key: str) -> bytes | str | None:
        value = self.front.get_now(key)
        if value is None:
            # In a task of its own: the router may have started this in the connection's
            # task and finish it in another (Xrouter.route_chat), and the Redis client's
            # timeouts belong to the task they start in.
            value = await asyncio.ensure_future(self.back.get(key))
            if value is not None:
                self.front.set_now(key, value)
            else:
                # Set while the backend was asked (by the request whose classifier call
                # this one would otherwise repeat): the backend's write may not have landed.
                value = self.front.get_now(key)
        return value

    async def set(self, key: str, value: bytes | str, ttl: float | None = None) -> None:
        """The front answers at once; the backend write happens in the background, so the
        request that produced the value does not wait for disk or network."""
        self.front.set_now(key, value, ttl)
        self._writes.spawn(self.back.set(key, value, ttl))

    def close(self) -> None:
        """The backend, once the writes on their way to it have landed (close_after)."""
        close_after(self._writes, self.back)


def build_cache(
    backend: str,
    data_dir: str,
    redis_url: str,
    max_entries: int,
    default_ttl: float,
    health: RedisHealth | None = None,
) -> Cache:
    """The cache a setting asks for: memory, disk, redis (with disk behind it), or auto
    (redis when a URL is given, else disk)."""
    front = MemoryCache(max_entries=max_entries, default_ttl=default_ttl)
    if backend == "memory":
        return front
    disk = DiskCache(Path(data_dir) / "cache", max_entries=max_entries * 10)
    if backend == "redis" or (backend == "auto" and redis_url):
        shared = RedisCache(redis_client(redis_url), disk, health or RedisHealth(redis_url))
        return LayeredCache(front, shared)
    return LayeredCache(front, disk)
