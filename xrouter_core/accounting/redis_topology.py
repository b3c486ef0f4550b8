"""Redis as it is deployed: one server, a primary with replicas watched by Sentinel, or a
Cluster, named by REDIS_URL and reached through redis-py's own support for each.

    redis://[user:password@]host:port/db          one server (also rediss://, unix://)
    redis+sentinel://[user:password@]host:port[,host:port...]/<primary name>[/db]
    redis+cluster://[user:password@]host:port[,host:port...]

A Sentinel URL lists the sentinels (the password is the primary's; add
`?sentinel_password=...` when the sentinels have their own); the client asks them for the
primary and asks again after a failover. A Cluster URL lists one or more nodes to start
from; the client learns the slots. What the router stores is Cluster-safe: every script
and multi-key command touches keys of one hash tag ({usage}, {key:<name>}), and the live
feed uses sharded pub/sub (SPUBLISH/SSUBSCRIBE on a hash-tagged channel) there.

A failover shows as connection errors (or READONLY from a demoted primary) for a moment:
`retried` repeats a write that is safe to repeat (the router's scripts carry ids that make
a repeat a no-op) for up to FAILOVER_S on Sentinel and Cluster. On one server a repeat
would only wait for an outage, so it is not tried.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote

SINGLE, SENTINEL, CLUSTER = "single", "sentinel", "cluster"
SCHEMES = {
    "redis": SINGLE,
    "rediss": SINGLE,
    "unix": SINGLE,
    "redis+sentinel": SENTINEL,
    "redis+cluster": CLUSTER,
}
# How long a write that is safe to repeat is retried through a failover.
FAILOVER_S = 10.0
CONNECT_TIMEOUT_S = 0.5

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed REDIS_URL."""

    kind: str  # SINGLE, SENTINEL or CLUSTER
    url: str
    nodes: tuple[tuple[str, int], ...] = ()  # sentinels, or cluster nodes to start from
    service: str = ""  # the primary's name (Sentinel)
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None

    @property
    def failover(self) -> bool:
        """Whether a failover can happen under the client (then writes are retried)."""
        return self.kind != SINGLE


def parse_redis_url(url: str) -> RedisTarget:
    """RedisTarget, or ValueError with the reason (config.py shows it)."""
    scheme, sep, rest = url.partition("://")
    kind = SCHEMES.get(scheme.lower()) if sep else None
    if kind is None:
        raise ValueError(
            "REDIS_URL must be a redis://, rediss://, unix://, redis+sentinel:// or"
            f" redis+cluster:// URL, not {url!r}"
        )
    if kind == SINGLE:
        return RedisTarget(SINGLE, url)
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        auth, _, netloc = netloc.rpartition("@")
        user, has_password, secret = auth.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    nodes = []
    for part in netloc.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"REDIS_URL: {part!r} must be host:port ({scheme}://h1:p1,h2:p2...)")
        nodes.append((host.strip("[]"), int(port)))
    parts = [p for p in path.split("/") if p]
    service, db = "", 0
    if kind == SENTINEL:
        if not parts:
            raise ValueError(
                "REDIS_URL: a redis+sentinel:// URL names the primary after the sentinels"
                " (redis+sentinel://host:26379/mymaster)"
            )
        service = unquote(parts[0])
        parts = parts[1:]
    if parts:
        if not parts[0].isdigit() or len(parts) > 1:
            raise ValueError(f"REDIS_URL: the database must be a number, not {'/'.join(parts)!r}")
        db = int(parts[0])
        if kind == CLUSTER and db:
            raise ValueError("REDIS_URL: a Redis Cluster has only database 0")
    options = parse_qs(query)
    sentinel_password = options.get("sentinel_password", [None])[0]
    return RedisTarget(kind, url, tuple(nodes), service, db, username, password, sentinel_password)


def redact_url(url: str) -> str:
    """A Redis URL without its passwords."""
    scheme, sep, rest = url.partition("://")
    rest, qmark, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        auth, _, hosts = netloc.rpartition("@")
        user, has_password, _ = auth.partition(":")
        netloc = f"{user}:***@{hosts}" if has_password else netloc
    if "sentinel_password=" in query:
        query = "&".join(
            "sentinel_password=***" if q.startswith("sentinel_password=") else q
            for q in query.split("&")
        )
    return f"{scheme}{sep}{netloc}{slash}{path}{qmark}{query}"


def redis_client(url: str, timeout: float | None = 0.5) -> Any:
    """An asyncio client for REDIS_URL that fails fast, so an outage costs a request
    nothing (`timeout` None: reads may wait, as a pub/sub listener's do)."""
    return _client(url, timeout, "redis.asyncio")


def redis_client_sync(url: str, timeout: float = 5.0) -> Any:
    """A blocking client: the last usage flush at shutdown (when the loop is gone), and
    the x402 ledger, which runs in worker threads."""
    return _client(url, timeout, "redis")


def _client(url: str, timeout: float | None, package: str) -> Any:
    """A client of REDIS_URL's topology from `package`, redis-py's asyncio or blocking
    API (the same classes in each); only the module of that topology is imported. A
    Sentinel or Cluster client carries its target, for `retried` and pub/sub."""
    target = parse_redis_url(url)
    if target.kind == SINGLE:
        return importlib.import_module(package).Redis.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=timeout,
            retry_on_timeout=False,
        )
    if target.kind == SENTINEL:
        sentinel = importlib.import_module(f"{package}.sentinel").Sentinel(
            list(target.nodes),
            sentinel_kwargs={
                "socket_connect_timeout": CONNECT_TIMEOUT_S,
                "socket_timeout": CONNECT_TIMEOUT_S,
                "password": target.sentinel_password,
                # Asked once each: the discovery goes on to the next sentinel itself, and
                # a write is repeated through a failover by `retried`. redis-py's default
                # (ten retries with backoff) made every call while the sentinels were
                # gone wait some 4 s per sentinel, a request's and a shutdown's alike.
                "retry": _no_retry(package),
            },
        )
        client = sentinel.master_for(
            target.service,
            db=target.db,
            username=target.username,
            password=target.password,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=timeout,
        )
    else:
        cluster = importlib.import_module(f"{package}.cluster")
        client = cluster.RedisCluster(
            startup_nodes=[cluster.ClusterNode(host, port) for host, port in target.nodes],
            username=target.username,
            password=target.password,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=timeout,
        )
    client.xrouter_target = target
    return client


def _no_retry(package: str) -> Any:
    """A redis-py Retry (of `package`'s API) that does not retry."""
    backoff = importlib.import_module("redis.backoff").NoBackoff()
    retry_module = "redis.asyncio.retry" if package == "redis.asyncio" else "redis.retry"
    return importlib.import_module(retry_module).Retry(backoff, 0)


# At shutdown, what is still on its way to Redis (the last usage flush, the client keys'
# budget settlements) gets this long in all, so that a router whose Redis is gone or
# frozen still exits well within docker's and Kubernetes' grace (10 s, 30 s) before
# SIGKILL. What has not landed by then is kept where an outage keeps it: usage counts on
# disk (moved into Redis at the next start); a settlement leaves its estimate charged.
SHUTDOWN_REDIS_S = 3.0


class Deadline:
    """A point in time that several steps share (e.g. SHUTDOWN_REDIS_S for a shutdown's
    Redis writes): each asks how long is left."""

    __slots__ = ("at",)

    def __init__(self, seconds: float):
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left, 0 once passed."""
        return max(self.at - time.monotonic(), 0.0)


# A client a reload replaced is closed this long after: what it is still doing (a
# request's count, a write retried through a failover) ends first.
CLOSE_GRACE_S = FAILOVER_S + 1.0
# The closes scheduled and not yet done (the loop holds tasks only weakly).
_closing: set[asyncio.Task[None]] = set()


def close_later(client: Any, sync: bool = False) -> None:
    """Close a replaced store's Redis client, CLOSE_GRACE_S from now, in the background:
    its connections go back to the server instead of staying open until the process
    ends, and the caller (a mitmproxy hook) does not wait. An asyncio client is closed
    on the loop; a blocking one (`sync`) in a worker thread, as it may block. Without a
    running loop the process is ending: a blocking client is closed at once, an asyncio
    one goes with its loop. Cancelled (the loop stopping), a close is not needed."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        if sync:
            with contextlib.suppress(*REDIS_ERRORS):
                client.close()
        return
    task = loop.create_task(_close(client, sync))
    _closing.add(task)
    task.add_done_callback(_closing.discard)


async def _close(client: Any, sync: bool) -> None:
    await asyncio.sleep(CLOSE_GRACE_S)
    with contextlib.suppress(*REDIS_ERRORS):
        if sync:
            await asyncio.to_thread(client.close)
        else:
            await client.aclose()


def target_of(client: Any) -> RedisTarget | None:
    return getattr(client, "xrouter_target", None)


def is_cluster(client: Any) -> bool:
    target = target_of(client)
    return target is not None and target.kind == CLUSTER


REDIS_ERRORS: tuple[type[BaseException], ...]
FAILOVER_ERRORS: tuple[type[BaseException], ...]
try:
    import redis.exceptions as _errors

    REDIS_ERRORS = (_errors.RedisError, OSError, TimeoutError)
    # What a failover looks like from a client: the primary gone, or demoted (READONLY),
    # or a Cluster still electing (CLUSTERDOWN, TRYAGAIN, MASTERDOWN).
    FAILOVER_ERRORS = (
        _errors.ConnectionError,
        _errors.TimeoutError,
        _errors.ReadOnlyError,
        _errors.ClusterDownError,
        _errors.TryAgainError,
        _errors.MasterDownError,
        _errors.SlotNotCoveredError,
        OSError,
        TimeoutError,
    )
except ImportError:  # pragma: no cover - redis is a dependency
    REDIS_ERRORS = FAILOVER_ERRORS = (OSError, TimeoutError)


async def retried(client: Any, call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, repeated through a failover for up to FAILOVER_S on Sentinel and
    Cluster (only for writes that are safe to repeat). On one server: once."""
    target = target_of(client)
    if target is None or not target.failover:
        return await call()
    deadline = time.monotonic() + FAILOVER_S
    pause = 0.05
    while True:
        try:
            return await call()
        except FAILOVER_ERRORS:
            if time.monotonic() + pause > deadline:
                raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)


# A primary seen without replicas is not asked to WAIT for this long (each WAIT would
# then take its whole timeout).
NO_REPLICA_RECHECK_S = 5.0


async def eval_replicated(
    client: Any, script: str, keys: list[str], args: list[Any], wait_ms: int = 100
) -> tuple[Any, bool]:
    """Run a script; (its answer, whether a failover that follows cannot lose it). On a
    Sentinel primary, WAIT on the same connection asks a replica to confirm the write
    within `wait_ms` (keep it below the client's socket timeout); a primary without
    replicas confirms it (nothing could be promoted over it). On other topologies: True
    (one server has no failover; a Cluster's are not waited for)."""
    target = target_of(client)
    alone_until = getattr(client, "xrouter_alone_until", 0.0)
    if target is None or target.kind != SENTINEL or time.monotonic() < alone_until:
        return await client.eval(script, len(keys), *keys, *args), True
    async with client.pipeline(transaction=False) as pipe:
        pipe.eval(script, len(keys), *keys, *args)
        pipe.wait(1, wait_ms)
        result, acked = await pipe.execute()
    if int(acked) >= 1:
        return result, True
    info = await client.info("replication")
    if int(info.get("connected_slaves", 0)) == 0:
        client.xrouter_alone_until = time.monotonic() + NO_REPLICA_RECHECK_S
        return result, True
    return result, False


# Between two tries of a write a replica has not confirmed yet (replicated()).
CONFIRM_PAUSE_S = 0.2


async def replicated(
    client: Any, script: str, keys: list[str], args: list[Any], wait_ms: int = 300
) -> Any:
    """Run a script that may be repeated (its id makes a repeat a no-op) until a replica
    has confirmed it or FAILOVER_S has passed, repeating it through a failover: a write
    the old primary acknowledged but never replicated is so made again on the promoted
    one. For background writes (a settlement, a reservation's confirmation), which no
    request waits for. The answer is the last run's. `wait_ms` stays below the 0.5 s
    socket timeout of `redis_client`."""
    deadline = time.monotonic() + FAILOVER_S
    while True:
        result, confirmed = await retried(
            client, lambda: eval_replicated(client, script, keys, args, wait_ms)
        )
        if confirmed or time.monotonic() + CONFIRM_PAUSE_S > deadline:
            return result
        await asyncio.sleep(CONFIRM_PAUSE_S)


# ---- pub/sub --------------------------------------------------------------------------
# On a Cluster, classic PUBLISH reaches every node and PUBSUB NUMSUB counts one node's
# listeners only; sharded pub/sub keeps a hash-tagged channel on its slot's node, where
# SHARDNUMSUB counts all of them.


async def publish(client: Any, channel: str, data: bytes) -> None:
    if is_cluster(client):
        await client.spublish(channel, data)
    else:
        await client.publish(channel, data)


async def listeners(client: Any, channel: str) -> int:
    """How many listen on `channel`."""
    if is_cluster(client):
        # Asked of the channel's own node: another one knows none of its listeners.
        await client.initialize()
        node = client.get_node_from_key(channel)
        counts = await client.pubsub_shardnumsub(channel, target_nodes=node)
    else:
        counts = await client.pubsub_numsub(channel)
    if isinstance(counts, dict):  # some versions answer {channel: n}
        return int(sum(int(n) for n in counts.values()))
    return int(counts[0][1]) if counts else 0


class Subscription:
    """One channel, listened to on any topology."""

    def __init__(self, client: Any, channel: str):
        self.sharded = is_cluster(client)
        self.client = client
        self.channel = channel
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)

    async def open(self) -> None:
        if self.sharded:
            # The node is looked up from the slot map, which a new client has yet to load.
            await self.client.initialize()
            await self.pubsub.ssubscribe(self.channel)
        else:
            await self.pubsub.subscribe(self.channel)

    async def next(self, timeout: float) -> bytes | None:
        """The next message's data, or None when none came within `timeout`."""
        if self.sharded:
            message = await self.pubsub.get_sharded_message(timeout=timeout)
            if message is None:
                await asyncio.sleep(0)  # sharded reads may return at once when idle
        else:
            message = await self.pubsub.get_message(timeout=timeout)
        if message is None or message.get("type") not in ("message", "smessage"):
            return None
        return message["data"]

    async def close(self) -> None:
        await self.pubsub.aclose()
