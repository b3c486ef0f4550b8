"""Caches behind one small async interface, so backends (memory, diskcache, Redis) drop in.

Values are bytes or str; keys are short strings (callers hash long inputs).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Protocol


class Cache(Protocol):
    async def get(self, key: str) -> bytes | str | None: ...

    async def set(self, key: str, value: bytes | str, ttl: float | None = None) -> None: ...


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

    def __len__(self) -> int:
        return len(self._items)
