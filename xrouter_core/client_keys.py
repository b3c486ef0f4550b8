"""Client keys: besides ROUTER_API_KEY, named keys for users or teams, each with optional
limits (requests and tokens per minute, a daily and a monthly budget in USD) and an
optional tier ceiling (e.g. never frontier). accounting/limits.py enforces the limits.

They live in a JSON file (ROUTER_KEYS_FILE) or, with ROUTER_KEYS_SOURCE=redis, in a Redis
hash on REDIS_URL (any of its forms), stored as SHA-256 digests only: the key is printed
once, when it is created, and never written anywhere. Keys are long random tokens, so
one fast hash is enough (a slow password hash guards guessable secrets, which these are
not). `xrouter keys create|list|revoke` manages the file or the hash; a running router
notices a change within KEYRING_CHECK_S (a revoked key stops working then): one stat of
the file, or one GET of the hash's version on Redis, per interval, never per request.

Plain Python (no mitmproxy): config.py reads the file at start, the addon asks a KeyRing
(or a RedisKeyRing) per request, the launcher runs `main` for `xrouter keys`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xrouter_core.tiers import TIERS

log = logging.getLogger(__name__)

KEY_PREFIX = "xr-"
# Names go into counter keys, Redis keys and metric labels: kept to these characters.
NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
# How often a running router looks at the file's modification time (one stat), or at the
# Redis hash's version (one GET).
KEYRING_CHECK_S = 2.0
# ROUTER_KEYS_SOURCE=redis: the keys by name (each the file's entry, as JSON), and a
# counter every change increments (what routers poll). One hash tag: Cluster-safe scripts.
REDIS_KEYS = "xrouter:{clientkeys}:keys"
REDIS_VERSION = "xrouter:{clientkeys}:version"


@dataclass(frozen=True)
class ClientKey:
    """One client key as the router enforces it (the key itself is not kept)."""

    name: str
    digest: str
    rpm: int = 0  # requests per minute, 0: no limit
    max_tier: str = ""  # the highest tier it may reach, "": any
    tpm: int = 0  # tokens per minute (prompt + completion), 0: no limit
    daily_usd: float = 0.0  # USD per UTC day, 0: no budget
    monthly_usd: float = 0.0  # USD per UTC calendar month, 0: no budget

    @property
    def metered(self) -> bool:
        """Whether its requests reserve tokens or cost before they are forwarded."""
        return bool(self.tpm or self.daily_usd or self.monthly_usd)


def digest_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def read_keys(path: str | Path) -> dict[str, ClientKey]:
    """digest → ClientKey; ValueError with a one-line reason for a bad file."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(
            f"{path} does not exist (create a key: xrouter keys create NAME)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not readable JSON ({exc})") from exc
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f'{path} must be {{"keys": [...]}}')
    keys: dict[str, ClientKey] = {}
    for entry in entries:
        key = parse_entry(entry, str(path))
        keys[key.digest] = key
    return keys


def parse_entry(entry: Any, where: str) -> ClientKey:
    """One stored key (a file's entry, or a Redis hash's value, decoded); ValueError with
    a one-line reason naming `where`."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: every key must be an object")
    name, digest = entry.get("name"), entry.get("sha256")
    rpm, tier = entry.get("rpm", 0), entry.get("max_tier", "") or ""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(f"{where}: a key's name must be 1-64 of A-Z a-z 0-9 . _ -")
    if not isinstance(digest, str) or len(digest) != 64:
        raise ValueError(f"{where}: key {name!r} has no sha256 digest")
    if not isinstance(rpm, int) or isinstance(rpm, bool) or rpm < 0:
        raise ValueError(f"{where}: key {name!r}: rpm must be a whole number >= 0")
    if tier and tier not in TIERS:
        raise ValueError(f"{where}: key {name!r}: max_tier must be one of {', '.join(TIERS)}")
    tpm = entry.get("tpm", 0)
    if not isinstance(tpm, int) or isinstance(tpm, bool) or tpm < 0:
        raise ValueError(f"{where}: key {name!r}: tpm must be a whole number >= 0")
    budgets = []
    for field in ("daily_usd", "monthly_usd"):
        value = entry.get(field, 0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e6:
            raise ValueError(f"{where}: key {name!r}: {field} must be USD from 0 to 999999")
        budgets.append(float(value))
    return ClientKey(name, digest, rpm, tier, tpm, *budgets)


class KeyRing:
    """The keys of ROUTER_KEYS_FILE, re-read when the file changes (checked at most every
    KEYRING_CHECK_S). A file that turns bad keeps the keys read before, with one warning
    through `warn`."""

    def __init__(self, path: str, keys: Mapping[str, ClientKey], warn=None):
        self.path = path
        self.keys = dict(keys)
        self.warn = warn
        self.checked = time.monotonic()
        self.mtime = self._mtime()

    def _mtime(self) -> float:
        try:
            return os.stat(self.path).st_mtime_ns
        except OSError:
            return -1

    def find(self, key: str) -> ClientKey | None:
        now = time.monotonic()
        if now - self.checked >= KEYRING_CHECK_S:
            self.checked = now
            mtime = self._mtime()
            if mtime != self.mtime:
                self.mtime = mtime
                try:
                    self.keys = read_keys(self.path)
                except ValueError as exc:
                    if self.warn is not None:
                        self.warn(f"ROUTER_KEYS_FILE not re-read, the keys before stay: {exc}")
        return self.keys.get(digest_of(key))


def keys_from_hash(stored: Mapping[Any, Any], warn=None) -> dict[str, ClientKey]:
    """digest → ClientKey from the Redis hash's values; a bad entry is left out (one
    warning through `warn`), the others stay usable."""
    keys: dict[str, ClientKey] = {}
    for raw in stored.values():
        try:
            entry = json.loads(raw)
            key = parse_entry(entry, "ROUTER_KEYS_SOURCE=redis")
        except ValueError as exc:  # json.JSONDecodeError is one
            if warn is not None:
                warn(f"a client key in Redis is left out: {exc}")
            continue
        keys[key.digest] = key
    return keys


class RedisKeyRing:
    """The keys of ROUTER_KEYS_SOURCE=redis, kept in this process: `find` is a dict lookup
    (no Redis round trip per request). `watch` (started with the router's background
    work) GETs the hash's version every KEYRING_CHECK_S and re-reads the hash when it
    moved, so a created or revoked key takes effect on every router within about
    KEYRING_CHECK_S. Until the first read, no client key is known (401); while Redis is
    away, the keys read before stay, with one warning."""

    def __init__(self, redis_url: str, warn=None):
        self.redis_url = redis_url
        self.keys: dict[str, ClientKey] = {}
        self.warn = warn
        self.version: bytes | None = None
        self.loaded = asyncio.Event()  # set after the first read
        self.task: asyncio.Task | None = None
        self.client: Any = None

    def find(self, key: str) -> ClientKey | None:
        return self.keys.get(digest_of(key))

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self.watch())

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def refresh(self) -> bool:
        """One check: the keys re-read if the version moved. True when they changed."""
        version = await self.client.get(REDIS_VERSION)
        if version == self.version and self.loaded.is_set():
            return False
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(REDIS_KEYS)
            pipe.get(REDIS_VERSION)
            stored, version = await pipe.execute()
        self.keys = keys_from_hash(stored, self.warn)
        self.version = version
        self.loaded.set()
        return True

    async def watch(self) -> None:
        from xrouter_core.accounting.redis_topology import REDIS_ERRORS, redis_client

        self.client = redis_client(self.redis_url)
        away = False
        try:
            while True:
                try:
                    if await self.refresh():
                        log.info("client keys read from Redis: %d", len(self.keys))
                    if away:
                        away = False
                        log.info("client keys: Redis is back")
                except REDIS_ERRORS as exc:
                    if not away and self.warn is not None:
                        self.warn(
                            "client keys not re-read from Redis, the keys before stay:"
                            f" {type(exc).__name__}"
                        )
                    away = True
                await asyncio.sleep(KEYRING_CHECK_S)
        finally:
            client, self.client = self.client, None
            if client is not None:
                with contextlib.suppress(REDIS_ERRORS):
                    await client.aclose()


# ---- xrouter keys -------------------------------------------------------------------


class FileStore:
    """ROUTER_KEYS_FILE, for `xrouter keys`."""

    def __init__(self, path: Path):
        self.path = path

    def entries(self) -> list[dict]:
        if not self.path.exists():
            return []
        read_keys(self.path)  # refuse to rewrite a file that is not valid
        return json.loads(self.path.read_text(encoding="utf-8"))["keys"]

    def add(self, entry: dict) -> bool:
        entries = self.entries()
        if any(e["name"] == entry["name"] for e in entries):
            return False
        self._save([*entries, entry])
        return True

    def remove(self, name: str) -> bool:
        entries = self.entries()
        kept = [e for e in entries if e["name"] != name]
        if len(kept) == len(entries):
            return False
        self._save(kept)
        return True

    def _save(self, entries: list[dict]) -> None:
        """Atomically, readable by its owner only."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".keys-")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"keys": entries}, out, indent=2)
            out.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)


# Each change and the version's increment in one script: a router that sees the new
# version reads the new keys. Both keys carry the {clientkeys} tag (one Cluster slot).
_CREATE = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('INCR', KEYS[2])
return 1
"""
_REVOKE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('INCR', KEYS[2])
return 1
"""


class RedisStore:
    """ROUTER_KEYS_SOURCE=redis: the hash on REDIS_URL, for `xrouter keys`."""

    def __init__(self, url: str):
        from xrouter_core.accounting.redis_topology import redis_client_sync

        self.client = redis_client_sync(url)

    def entries(self) -> list[dict]:
        stored = self.client.hgetall(REDIS_KEYS)
        entries = [json.loads(raw) for raw in stored.values()]
        return sorted(entries, key=lambda e: (e.get("created", 0), e.get("name", "")))

    def add(self, entry: dict) -> bool:
        line = json.dumps(entry, separators=(",", ":"))
        return bool(self.client.eval(_CREATE, 2, REDIS_KEYS, REDIS_VERSION, entry["name"], line))

    def remove(self, name: str) -> bool:
        return bool(self.client.eval(_REVOKE, 2, REDIS_KEYS, REDIS_VERSION, name))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="xrouter keys",
        description=(
            "Client keys with their own limits, stored hashed in ROUTER_KEYS_FILE or"
            " (--redis, or ROUTER_KEYS_SOURCE=redis) in Redis at REDIS_URL."
        ),
    )
    parser.add_argument(
        "--file",
        default=os.environ.get("ROUTER_KEYS_FILE", "keys.json"),
        help="the keys file (default: ROUTER_KEYS_FILE or ./keys.json)",
    )
    parser.add_argument(
        "--redis",
        action="store_true",
        default=os.environ.get("ROUTER_KEYS_SOURCE", "").strip().lower() == "redis",
        help="keep the keys in Redis at REDIS_URL (default when ROUTER_KEYS_SOURCE=redis)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a key; it is printed once")
    create.add_argument("name")
    create.add_argument("--rpm", type=int, default=0, help="requests per minute (0: no limit)")
    create.add_argument("--max-tier", choices=TIERS, default="", help="the highest tier")
    create.add_argument("--tpm", type=int, default=0, help="tokens per minute (0: no limit)")
    create.add_argument("--daily-usd", type=float, default=0.0, help="USD per UTC day (0: none)")
    create.add_argument(
        "--monthly-usd", type=float, default=0.0, help="USD per UTC month (0: none)"
    )
    commands.add_parser("list", help="the keys' names and limits (never the keys)")
    revoke = commands.add_parser("revoke", help="remove a key")
    revoke.add_argument("name")
    args = parser.parse_args(argv)
    if args.command == "create":
        if args.rpm < 0 or args.tpm < 0:
            parser.error("--rpm and --tpm must be 0 or more")
        if not (0 <= args.daily_usd < 1e6 and 0 <= args.monthly_usd < 1e6):
            parser.error("--daily-usd and --monthly-usd must be USD from 0 to 999999")
        if not NAME.fullmatch(args.name):
            parser.error("a key's name must be 1-64 of A-Z a-z 0-9 . _ -")
    try:
        return _run(args)
    except ValueError as exc:
        print(f"xrouter keys: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    """The command on the file or in Redis; ValueError with the reason for the user."""
    store: FileStore | RedisStore
    if args.redis:
        from xrouter_core.accounting.redis_topology import REDIS_ERRORS, redact_url

        url = os.environ.get("REDIS_URL", "").strip()
        if not url:
            raise ValueError("--redis (ROUTER_KEYS_SOURCE=redis) needs REDIS_URL")
        try:
            store = RedisStore(url)
            return _command(args, store)
        except REDIS_ERRORS as exc:
            raise ValueError(f"Redis at {redact_url(url)}: {type(exc).__name__}: {exc}") from None
    return _command(args, FileStore(Path(args.file)))


def _command(args: argparse.Namespace, store: FileStore | RedisStore) -> int:
    if args.command == "create":
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        entry = {"name": args.name, "sha256": digest_of(key), "created": int(time.time())}
        if args.rpm:
            entry["rpm"] = args.rpm
        if args.max_tier:
            entry["max_tier"] = args.max_tier
        for field in ("tpm", "daily_usd", "monthly_usd"):
            if getattr(args, field):
                entry[field] = getattr(args, field)
        if not store.add(entry):
            print(f"xrouter keys: a key named {args.name!r} exists already", file=sys.stderr)
            return 1
        print(key)
        return 0
    if args.command == "list":
        for e in store.entries():
            parts = [e["name"]]
            if e.get("rpm"):
                parts.append(f"rpm={e['rpm']}")
            if e.get("max_tier"):
                parts.append(f"max_tier={e['max_tier']}")
            for field in ("tpm", "daily_usd", "monthly_usd"):
                if e.get(field):
                    parts.append(f"{field}={e[field]:g}")
            print("\t".join(parts))
        return 0
    if not store.remove(args.name):
        print(f"xrouter keys: no key named {args.name!r}", file=sys.stderr)
        return 1
    return 0
