"""Usage counters: requests, tokens, errors, cache hits and latency per tier and per
(provider, model), shared by every router process that uses the same store.

Each finished request only adds to an in-memory accumulator (no I/O on the event
loop). A background task flushes it USAGE_FLUSH_MS (0.1 s) after the first count since
the last flush (an idle router does no I/O), and `close()` flushes
it at shutdown: into SQLite (in a worker thread, one transaction that adds the batch to
the rows it touched: the cost follows what changed, not what is stored) or
into Redis (one server-side script per batch: HINCRBYs applied atomically, and at most
once, since each batch carries an id and a retried batch is skipped). Both are atomic
across processes, so N requests over several routers count exactly N. The trade-off: a
router killed with SIGKILL loses at most the counts of the last interval (measured with
bench/crash_loss.py); a normal shutdown loses nothing. While Redis is away, counts stay in memory (they are a bounded
set of counters, not a list of requests), /usage shows them, and they are sent when
Redis returns; a router stopped during an outage writes them to its disk store, and they
are moved into Redis at its next start (as are counts kept on disk before REDIS_URL was
set).

Stored values are integers only (latency in microseconds, cost in nano-USD). Cost is
priced per request when it is counted, at that request's rates (cached tokens and
long-context tiers included, see prices.py), and stored with the counts; so is what the
same request would have cost on the frontier route.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pickle
import sqlite3
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xrouter_core.accounting.cache import REDIS_ERRORS, DiskThread, RedisHealth, redis_client
from xrouter_core.accounting.prices import Pricing, genai_version
from xrouter_core.accounting.redis_topology import (
    SHUTDOWN_REDIS_S,
    Deadline,
    close_later,
    eval_replicated,
    redis_client_sync,
)
from xrouter_core.config import Route
from xrouter_core.tiers import FRONTIER, TIER_INDEX, TIERS

log = logging.getLogger("xrouter.usage")

# Latency histogram bucket bounds in milliseconds (Prometheus gets seconds).
BUCKETS_MS: tuple[float, ...] = (25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
RECENT_MAX = 100
SERIES_KEEP_MINUTES = 24 * 60
CHARS_PER_TOKEN = 4
# Costs are stored as integers in this unit (1e-9 USD): a request's rounding error stays
# below a nano-dollar, and an int64 counter holds billions of dollars.
NANO_USD = 1_000_000_000

# Decisions a classifier made (routing/policy.py names the sources); their time is counted.
CLASSIFIED_SOURCES = frozenset({"llm", "builtin", "builtin_fallback"})


def estimate_tokens(chars: int) -> int:
    """About four characters per token for English text and code; no tokenizer files."""
    return (chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN if chars > 0 else 0


def bucket_of(ms: float) -> str:
    for bound in BUCKETS_MS:
        if ms <= bound:
            return str(bound)
    return "inf"


@dataclass(slots=True)
class Outcome:
    """One finished request, as the addon reports it."""

    tier: str  # the route that served it
    decision: int
    source: str
    provider: str
    model: str
    status: int
    prompt_tokens: int = 0  # every prompt token, the cached ones too
    completion_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    frontier_cost_usd: float = 0.0  # the same tokens at the frontier route's price
    # The honest baseline: on frontier with frontier's own prompt cache for the session
    # (routing/sessions.py), else frontier_cost_usd.
    baseline_cost_usd: float = 0.0
    session: str = ""  # the agent session's label, "" when none was identified
    priced: bool = True  # False: no price known for the model, counted at zero
    estimated: bool = False
    # The answer reported its token counts (the Node Xrouter's `withUsage`).
    with_usage: bool = False
    cache_hit: bool = False
    # A response-cache hit: what the answer cost when it was first served (the hit costs 0).
    saved_cost_usd: float = 0.0
    classifier_ms: float = 0.0
    upstream_ms: float = 0.0
    total_ms: float = 0.0
    at: float = 0.0
    prompt: str | None = None  # only when prompt logging is on
    client: str = ""  # the client key's name (client_keys.py), "" for ROUTER_API_KEY or none
    tags: tuple[str, ...] = ()  # the request's tags (routing/tags.py)
    response_tags: tuple[str, ...] = ()  # the answer's
    rule: str = ""  # the rule that chose the route (routing/rules.py), "" without rules

    def recent_row(self) -> dict[str, Any]:
        row = {
            "time": self.at,
            "decision": self.decision,
            "source": self.source,
            "route": self.tier,
            "model": self.model,
            "status": self.status,
            "promptTokens": self.prompt_tokens,
            "completionTokens": self.completion_tokens,
            "cacheReadTokens": self.cache_read_tokens,
            "cacheWriteTokens": self.cache_write_tokens,
            "costUsd": round(self.cost_usd, 9),
            "estimated": self.estimated,
            "cacheHit": self.cache_hit,
            "ms": round(self.total_ms, 1),
            "tags": list(self.tags),
            "responseTags": list(self.response_tags),
        }
        if self.session:
            row["session"] = self.session
            row["baselineCostUsd"] = round(self.baseline_cost_usd, 9)
        if self.cache_hit:
            row["savedUsd"] = round(self.saved_cost_usd, 9)
        if self.rule:
            row["rule"] = self.rule
        if self.prompt is not None:
            row["prompt"] = self.prompt[:300]
        return row


class Batch:
    """What accumulates between two flushes."""

    __slots__ = ("counters", "series", "recent", "updated", "id")

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex
        self.counters: defaultdict[str, int] = defaultdict(int)
        self.series: defaultdict[str, int] = defaultdict(int)
        self.recent: list[dict[str, Any]] = []
        self.updated = 0.0

    def __bool__(self) -> bool:
        return bool(self.counters or self.series or self.recent)

    def merge(self, other: Batch) -> None:
        add_counts(self.counters, self.series, other)
        self.recent = (other.recent + self.recent)[-RECENT_MAX:]
        self.updated = max(self.updated, other.updated)


def add_counts(counters: dict[str, int], series: dict[str, int], part: Batch | Stored) -> None:
    """Sum a batch's or a view's counters and per-minute series into these."""
    for key, value in part.counters.items():
        counters[key] = counters.get(key, 0) + value
    for key, value in part.series.items():
        series[key] = series.get(key, 0) + value


def add_outcome(batch: Batch, o: Outcome) -> None:
    c = batch.counters
    tokens = o.prompt_tokens + o.completion_tokens
    error = o.status >= 400
    for prefix in (f"t|{o.tier}|", f"m|{o.tier}|{o.provider}|{o.model}|"):
        c[prefix + "requests"] += 1
        c[prefix + "prompt"] += o.prompt_tokens
        c[prefix + "completion"] += o.completion_tokens
        # Stored whenever a request is counted, even at zero: a row with these keys was
        # priced when counted (rows from before they existed are priced when read).
        c[prefix + "cost_nusd"] += round(o.cost_usd * NANO_USD)
        c[prefix + "frontier_nusd"] += round(o.frontier_cost_usd * NANO_USD)
        if o.cache_read_tokens:
            c[prefix + "cache_read"] += o.cache_read_tokens
        if o.cache_write_tokens:
            c[prefix + "cache_write"] += o.cache_write_tokens
        if not o.priced:
            c[prefix + "unpriced"] += 1
        if error:
            c[prefix + "errors"] += 1
        if o.estimated:
            c[prefix + "estimated"] += 1
        if o.with_usage:
            c[prefix + "with_usage"] += 1
        if o.cache_hit:
            c[prefix + "cache_hits"] += 1
            c[prefix + "cache_saved_nusd"] += round(o.saved_cost_usd * NANO_USD)
    if o.client:
        k = f"k|{o.client}|"
        c[k + "requests"] += 1
        c[k + "prompt"] += o.prompt_tokens
        c[k + "completion"] += o.completion_tokens
        c[k + "cost_nusd"] += round(o.cost_usd * NANO_USD)
        if error:
            c[k + "errors"] += 1
        if o.cache_hit:
            c[k + "cache_hits"] += 1
            c[k + "cache_saved_nusd"] += round(o.saved_cost_usd * NANO_USD)
    if o.status < 400 and not o.cache_hit:
        # Actual cost against the all-frontier baseline with its caching, in total and
        # per session (the counters b|… and s|<session>|…).
        cost, baseline = round(o.cost_usd * NANO_USD), round(o.baseline_cost_usd * NANO_USD)
        c["b|requests"] += 1
        c["b|cost_nusd"] += cost
        c["b|baseline_nusd"] += baseline
        if o.session:
            s = f"s|{o.session}|"
            c[s + "requests"] += 1
            c[s + "cost_nusd"] += cost
            c[s + "baseline_nusd"] += baseline
            c[s + "cache_read"] += o.cache_read_tokens
            c[s + "prompt"] += o.prompt_tokens
    for tag in o.tags:
        c[f"g|request|{tag}"] += 1
    for tag in o.response_tags:
        c[f"g|response|{tag}"] += 1
    if o.rule:
        c[f"r|{o.rule}"] += 1
    t = f"t|{o.tier}|"
    c[f"d|{o.source}|{o.decision}"] += 1
    if o.source in CLASSIFIED_SOURCES:
        c[t + "classified"] += 1
        c[t + "classifier_us"] += int(o.classifier_ms * 1000)
        c[f"h|classifier|all|{bucket_of(o.classifier_ms)}"] += 1
    if not o.cache_hit:
        c[t + "upstream_n"] += 1
        c[t + "upstream_us"] += int(o.upstream_ms * 1000)
        c[f"h|upstream|{o.tier}|{bucket_of(o.upstream_ms)}"] += 1
    minute = int(o.at // 60)
    batch.series[f"{minute}|{o.tier}|requests"] += 1
    batch.series[f"{minute}|{o.tier}|tokens"] += tokens
    batch.recent.append(o.recent_row())
    if len(batch.recent) > RECENT_MAX:
        del batch.recent[0]
    batch.updated = max(batch.updated, o.at)


@dataclass(slots=True)
class Stored:
    counters: dict[str, int]
    series: dict[str, int]
    recent: list[dict[str, Any]]
    updated: float

    def add(self, part: Stored | Batch) -> None:
        """Sum another view (or a batch) into this one; `recent` is sorted by the reader."""
        add_counts(self.counters, self.series, part)
        self.recent.extend(part.recent)
        self.updated = max(self.updated, part.updated)


def prune_series(series: dict[str, int], now: float) -> list[str]:
    oldest = int(now // 60) - SERIES_KEEP_MINUTES
    return [key for key in series if int(key.split("|", 1)[0]) < oldest]


# The disk backend's tables, in one SQLite file beside the diskcache store (cache.db) of
# earlier versions, whose counts are imported once (`_import_diskcache`). Each counter is a
# row, so a flush writes only the rows its batch touched: its cost follows what changed,
# not how much is stored.
SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS series (
  key TEXT PRIMARY KEY, minute INTEGER NOT NULL, value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS series_minute ON series (minute);
CREATE TABLE IF NOT EXISTS recent (id INTEGER PRIMARY KEY AUTOINCREMENT, row BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value) WITHOUT ROWID;
"""
ADD_COUNTER = "INSERT INTO counters VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = value + excluded.value"
ADD_SERIES = "INSERT INTO series VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET value = value + excluded.value"
RAISE_UPDATED = (
    "INSERT INTO meta VALUES ('updated', ?) ON CONFLICT(name) DO UPDATE"
    " SET value = max(value, excluded.value)"
)
STORE_FILE = "counters.sqlite3"
# Recent rows are pickled (a fifth of json.dumps' instructions for a row), as diskcache
# pickled them: the file is the router's own, like the diskcache stores beside it.
PICKLE_PROTOCOL = 5
# Set in the transaction that imports a diskcache store's counts: they are imported once.
IMPORTED = "imported_diskcache"


class DiskCounters:
    """Counters in SQLite; every method is synchronous and meant for a worker thread.
    Each batch is added in one `BEGIN IMMEDIATE` transaction (SQLite's write lock), so
    concurrent processes add up exactly, and a committed batch survives SIGKILL (WAL)."""

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / STORE_FILE
        self._lock = threading.Lock()  # one connection, used by the worker and by close
        self._db: sqlite3.Connection | None = None
        self._pruned_at = 0.0
        for attempt in range(50):  # processes starting together: one makes the file WAL
            try:
                self._db = self._connect()
                self._db.executescript(SCHEMA)
                break
            except sqlite3.OperationalError:
                if attempt == 49:
                    raise
                self.close()
                time.sleep(0.1)
        self._import_diskcache(directory)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL: a process crash loses nothing
        return db

    @contextlib.contextmanager
    def _transaction(self, immediate: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction on the connection, under its lock: committed when the block
        ends, rolled back when it raises. A count after close (a reload) reopens it."""
        with self._lock:
            if self._db is None:
                self._db = self._connect()
            db = self._db
            db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _import_diskcache(self, directory: Path) -> None:
        """Counts an earlier version kept in diskcache (cache.db here), added once: the
        flag is set in the same transaction, so a crash halfway imports them again whole."""
        assert self._db is not None
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM meta WHERE name = ?", (IMPORTED,)).fetchone():
                return
            if (directory / "cache.db").exists():
                import diskcache

                old = diskcache.Cache(str(directory))
                try:
                    with old.transact():
                        batch = Batch()
                        batch.counters.update(old.get("counters", {}))
                        batch.series.update(old.get("series", {}))
                        batch.recent = list(old.get("recent", []))
                        batch.updated = float(old.get("updated", 0.0))
                finally:
                    old.close()
                self._add(db, batch)
            db.execute("INSERT INTO meta VALUES (?, 1)", (IMPORTED,))

    def _add(self, db: sqlite3.Connection, batch: Batch) -> None:
        if batch.counters:
            db.executemany(ADD_COUNTER, batch.counters.items())
        if batch.series:
            db.executemany(
                ADD_SERIES,
                [(key, int(key.split("|", 1)[0]), n) for key, n in batch.series.items()],
            )
        if batch.recent:
            db.executemany(
                "INSERT INTO recent (row) VALUES (?)",
                [(pickle.dumps(row, PICKLE_PROTOCOL),) for row in batch.recent],
            )
            db.execute(
                "DELETE FROM recent WHERE id <= (SELECT max(id) FROM recent) - ?", (RECENT_MAX,)
            )
        if batch.updated:
            db.execute(RAISE_UPDATED, (batch.updated,))
        now = time.time()
        if now - self._pruned_at > 60:  # the minutes past SERIES_KEEP_MINUTES, once a minute
            self._pruned_at = now
            oldest = int(now // 60) - SERIES_KEEP_MINUTES
            db.execute("DELETE FROM series WHERE minute < ?", (oldest,))

    def add(self, batch: Batch) -> None:
        with self._transaction() as db:
            self._add(db, batch)

    def _read(self, db: sqlite3.Connection) -> Stored:
        updated = db.execute("SELECT value FROM meta WHERE name = 'updated'").fetchone()
        return Stored(
            dict(db.execute("SELECT key, value FROM counters")),
            dict(db.execute("SELECT key, value FROM series")),
            [pickle.loads(row) for (row,) in db.execute("SELECT row FROM recent ORDER BY id")],
            float(updated[0]) if updated else 0.0,
        )

    def read(self) -> Stored:
        with self._transaction(immediate=False) as db:  # one snapshot of every table
            return self._read(db)

    def take(self) -> Batch:
        """Remove and return everything (used to move a Redis-outage spill into Redis)."""
        batch = Batch()
        with self._transaction() as db:
            stored = self._read(db)
            self._clear(db)
        batch.counters.update(stored.counters)
        batch.series.update(stored.series)
        batch.recent = stored.recent
        batch.updated = stored.updated
        return batch

    @staticmethod
    def _clear(db: sqlite3.Connection) -> None:
        for table in ("counters", "series", "recent"):
            db.execute(f"DELETE FROM {table}")  # noqa: S608 - the table names above
        db.execute("DELETE FROM meta WHERE name = 'updated'")

    def reset(self) -> None:
        with self._transaction() as db:
            self._clear(db)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


# Applies one batch atomically and at most once: a batch retried after a timeout (when
# Redis may or may not have applied it) is recognised by its id and skipped.
APPLY_BATCH = """
if not redis.call('SET', KEYS[5], '1', 'NX', 'EX', 3600) then return 0 end
local i = 1
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]); i = i + 2 end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1]); i = i + 2 end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('RPUSH', KEYS[3], ARGV[i]); i = i + 1 end
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[i]), -1); i = i + 1
if tonumber(ARGV[i]) > tonumber(redis.call('GET', KEYS[4]) or '0') then
  redis.call('SET', KEYS[4], ARGV[i])
end
return 1
"""


class RedisCounters:
    """Counters in Redis hashes, each batch applied by one server-side script. The keys
    share one hash tag, so Redis Cluster accepts the script too."""

    def __init__(self, url: str, prefix: str = "xrouter:{usage}:"):
        self.url = url
        # Flushes run in the background: a generous timeout avoids needless retries.
        self.client = redis_client(url, timeout=5.0)
        self.k_counters = prefix + "counters"
        self.k_series = prefix + "series"
        self.k_recent = prefix + "recent"
        self.k_updated = prefix + "updated"
        self.k_batch = prefix + "batch:"
        self._pruned_at = 0.0

    def _script_args(self, batch: Batch) -> tuple[list[str], list[Any]]:
        keys = [self.k_counters, self.k_series, self.k_recent, self.k_updated]
        keys.append(self.k_batch + batch.id)
        args: list[Any] = [len(batch.counters)]
        for key, value in batch.counters.items():
            args += [key, value]
        args.append(len(batch.series))
        for key, value in batch.series.items():
            args += [key, value]
        args.append(len(batch.recent))
        args += [json.dumps(row) for row in batch.recent]
        args += [RECENT_MAX, repr(batch.updated)]
        return keys, args

    async def add(self, batch: Batch) -> bool:
        """Apply a batch; False when it may not survive a failover yet (a Sentinel
        primary whose replicas have not confirmed it): then it is sent again later, a
        no-op where it did land."""
        keys, args = self._script_args(batch)
        _, confirmed = await eval_replicated(self.client, APPLY_BATCH, keys, args, 1000)
        if not confirmed:
            return False
        if time.monotonic() - self._pruned_at > 60:
            self._pruned_at = time.monotonic()
            names = [k.decode() for k in await self.client.hkeys(self.k_series)]
            old = prune_series(dict.fromkeys(names, 0), time.time())
            if old:
                await self.client.hdel(self.k_series, *old)
        return True

    async def read(self) -> Stored:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.k_counters)
            pipe.hgetall(self.k_series)
            pipe.lrange(self.k_recent, 0, -1)
            pipe.get(self.k_updated)
            counters, series, recent, updated = await pipe.execute()
        return Stored(
            {k.decode(): int(v) for k, v in counters.items()},
            {k.decode(): int(v) for k, v in series.items()},
            [json.loads(row) for row in recent],
            float(updated or 0.0),
        )

    async def reset(self) -> None:
        await self.client.delete(self.k_counters, self.k_series, self.k_recent, self.k_updated)

    def add_sync(
        self, batches: list[Batch], deadline: Deadline
    ) -> tuple[list[Batch], BaseException | None]:
        """The last flush at shutdown, when the event loop is no longer ours to use: the
        batches applied in order, each call allowed only what is left of `deadline`
        (connection and answer), stopping at the first that fails or times out. Returns
        those not applied, and why."""
        left = list(batches)
        client = redis_client_sync(self.url, timeout=max(deadline.left(), 0.05))
        try:
            while left:
                if not deadline.left():
                    return left, TimeoutError(f"over {SHUTDOWN_REDIS_S}s")
                keys, args = self._script_args(left[0])
                client.eval(APPLY_BATCH, len(keys), *keys, *args)
                left.pop(0)
        except REDIS_ERRORS as exc:
            return left, exc
        finally:
            with contextlib.suppress(*REDIS_ERRORS):
                client.close()
        return left, None


class UsageTracker:
    """Counts finished requests and answers /usage and /metrics from the shared store."""

    def __init__(
        self,
        data_dir: str | Path,
        redis_url: str = "",
        flush_interval: float = 0.1,
        health: RedisHealth | None = None,
    ):
        self.disk = DiskCounters(Path(data_dir) / "usage")
        self.disk_thread = DiskThread()  # every disk call but close's own writes
        self.redis = RedisCounters(redis_url) if redis_url else None
        self.health = health or (RedisHealth(redis_url) if redis_url else None)
        self.flush_interval = flush_interval
        self.pending = Batch()
        self.inflight = Batch()  # taken from pending, being written to disk
        self.unsent: Batch | None = None  # for Redis: sent or to be sent, not confirmed
        self._last_redis: Stored | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        # Held by a worker thread while it moves a batch to or from disk, and by `close`:
        # a flush cancelled by a reload or shutdown may still be writing in its thread,
        # and each batch must be stored exactly once (by that thread or by `close`).
        self._disk_lock = threading.Lock()
        # Counts of a Redis-outage spill taken off disk and not yet confirmed by Redis.
        self._draining: Batch | None = None
        # Set by every count, and at start (a spill of an earlier run may wait in Redis's stead).
        self._dirty = asyncio.Event()
        self._dirty.set()

    # ---- recording: in memory only, called on the event loop -----------------

    def record(self, outcome: Outcome) -> None:
        add_outcome(self.pending, outcome)
        self._dirty.set()
        if self._task is None:
            self.start()  # e.g. after a reconfigure replaced the tracker

    def count(self, key: str) -> None:
        """One more of a free-form counter, e.g. response-cache misses or fallbacks."""
        self.pending.counters[key] += 1
        self._dirty.set()

    def _payment_count(self, route: Route, field: str, amount: int = 1) -> None:
        """One x402 counter of a route, under its tier (p|) and the route itself (pr|)."""
        c = self.pending.counters
        c[f"p|{route.tier}|{field}"] += amount
        c[f"pr|{route.breaker_key}|{route.tier}|{field}"] += amount
        self._dirty.set()

    def record_payment(self, route: Route, micro_usd: int) -> None:
        """An x402 payment signed for a route (payments/): one more, and its amount."""
        self._payment_count(route, "payments")
        self._payment_count(route, "paid_uusd", micro_usd)

    def record_settlement(self, route: Route) -> None:
        """A paid answer whose settlement header said success."""
        self._payment_count(route, "settled")

    def record_refusal(self, route: Route, reason: str) -> None:
        """A 402 of a paying route answered unpaid, by reason (payments/x402.py's
        REFUSAL_REASONS, a closed set, so the counters stay few)."""
        self._payment_count(route, f"refused:{reason}")

    def record_fallback(self, from_tier: str, to_tier: str, reason: str = "") -> None:
        """For the fallback chain: one call per fallback taken."""
        self.count(f"f|{from_tier}|{to_tier}|{reason or 'error'}")

    # ---- flushing -------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        """Flush one interval after the first count since the last flush: a quiet router
        does no I/O, a busy one writes one batch per interval (not one per request), and a
        crash loses at most an interval's counts."""
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.flush_interval)
            self._dirty.clear()
            try:
                await self.flush()
            except Exception:  # noqa: BLE001 - counting must never stop the router
                log.exception("usage flush failed; the counts are kept for the next one")
            if self.pending or self.unsent or (self.redis is not None and self._spilled):
                self._dirty.set()  # not all written (Redis away, an error): try again

    async def flush(self) -> None:
        async with self._lock:
            if self.redis is None:
                await self._flush_to_disk()
                return
            assert self.health is not None
            if not self.health.usable:
                return  # kept in memory (and written to disk at shutdown)
            await self._drain_spill()
            if self.unsent is None:
                if not self.pending:
                    return
                self.unsent, self.pending = self.pending, Batch()
            try:
                # A batch that failed is retried as is: its id makes a retry of one that
                # Redis did apply (a timeout after the fact) a no-op, so nothing counts twice.
                confirmed = await self.redis.add(self.unsent)
            except REDIS_ERRORS as exc:
                self.health.failed(exc)
                return
            if not confirmed:
                return  # kept in `unsent`, sent again at the next flush
            self.health.succeeded()
            self._written_to_redis(self.unsent)
            self.unsent = None

    def _written_to_redis(self, batch: Batch) -> None:
        """Keep the last Redis view current with this router's own writes, so counts that
        left memory after that read still show if Redis goes away before the next one."""
        view = self._last_redis
        if view is None:
            return
        view.add(batch)
        # Bounded as Redis keeps it: without reads in between, flushes keep arriving.
        view.recent = view.recent[-RECENT_MAX:]
        for key in prune_series(view.series, time.time()):
            del view.series[key]

    async def _flush_to_disk(self) -> None:
        if not self.pending:
            return
        batch = self.inflight = self.pending
        self.pending = Batch()
        try:
            await self.disk_thread.run(self._write_inflight, batch)
        except Exception:
            if self.inflight is batch:  # not written: counted again with the next flush
                self.pending.merge(batch)
                self.inflight = Batch()
            raise
        # Cancelled (close): the thread writes the batch, or close does if it got there first.

    def _write_inflight(self, batch: Batch) -> None:
        """In a worker thread: store the batch being flushed, unless `close` took it."""
        with self._disk_lock:
            if self.inflight is batch:
                self.disk.add(batch)
                self.inflight = Batch()

    def _put_back(self, spill: Batch) -> None:
        """In a worker thread: a spill Redis did not take, back on disk (unless `close`
        stored it)."""
        with self._disk_lock:
            if self._draining is spill:
                self.disk.add(spill)
                self._draining = None

    def _take_spill(self) -> Batch:
        """In a worker thread: the spill off disk, held where `close` finds it."""
        with self._disk_lock:
            spill = self._draining = self.disk.take()
            return spill

    async def _drain_spill(self) -> None:
        """Move counts kept locally during a Redis outage into Redis."""
        assert self.redis is not None and self.health is not None
        if not self._spilled:
            return
        spill = await self.disk_thread.run(self._take_spill)
        self._spilled = False
        if not spill:
            self._draining = None
            return
        try:
            await self.redis.add(spill)
            self.health.succeeded()
            self._written_to_redis(spill)
            log.info("moved usage counted during the Redis outage into Redis")
        except REDIS_ERRORS as exc:
            self.health.failed(exc)
            await self.disk_thread.run(self._put_back, spill)
            self._spilled = True
        finally:
            if self._draining is spill:
                self._draining = None

    _spilled = True  # at start: a previous run may have left a spill behind

    def close(self, deadline: Deadline | None = None) -> None:
        """At shutdown (synchronous), and for the tracker a reload replaces: store what
        is left; nothing counted is lost. Into Redis within `deadline` (a fresh
        SHUTDOWN_REDIS_S when none is given), and not tried at all while Redis is known
        to be away: what does not land there goes to the disk store, as during an
        outage, and is moved into Redis at the next start (one log line)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        with self._disk_lock:  # a cancelled flush's write in its thread ends first
            batches = [b for b in (self._draining, self.unsent, self.inflight, self.pending) if b]
            self.pending, self.inflight, self.unsent = Batch(), Batch(), None
            self._draining = None
        if self.redis is not None and batches:
            away = self.health is not None and self.health.down_since is not None
            if away:
                log.warning("Redis unavailable at shutdown; usage counts kept on disk")
            else:
                batches, error = self.redis.add_sync(
                    batches, deadline or Deadline(SHUTDOWN_REDIS_S)
                )
                if error is not None:
                    log.warning(
                        "Redis unavailable at shutdown (%s); usage counts kept on disk",
                        type(error).__name__,
                    )
        for batch in batches:
            self.disk.add(batch)
        self.disk_thread.close(self.disk)
        if self.redis is not None:
            close_later(self.redis.client)

    # ---- reading --------------------------------------------------------------

    async def stored(self) -> Stored:
        """Everything counted: the store, a Redis-outage spill and this process's unflushed
        counts, so a router's own requests show at once."""
        async with self._lock:
            return await self._stored()

    async def _stored(self) -> Stored:
        parts: list[Stored | Batch] = []
        if self.redis is not None and self.health is not None:
            if self.health.usable:
                try:
                    self._last_redis = await self.redis.read()
                    self.health.succeeded()
                except REDIS_ERRORS as exc:
                    self.health.failed(exc)
            if self._last_redis is not None:
                parts.append(self._last_redis)
        parts.append(await self.disk_thread.run(self.disk.read))
        parts += [self.unsent or Batch(), self.inflight, self.pending]
        total = Stored({}, {}, [], 0.0)
        for part in parts:
            total.add(part)
        total.recent.sort(key=lambda row: row.get("time", 0))
        total.recent = total.recent[-RECENT_MAX:]
        return total

    async def reset(self) -> None:
        async with self._lock:
            self.pending, self.inflight, self.unsent = Batch(), Batch(), None
            self._last_redis = None
            if self.redis is not None:
                await self.redis.reset()
            await self.disk_thread.run(self.disk.reset)


# ---- the /usage document ----------------------------------------------------------


def _tier_row(c: dict[str, int], prefix: str) -> dict[str, Any]:
    prompt, completion = c.get(prefix + "prompt", 0), c.get(prefix + "completion", 0)
    return {
        "requests": c.get(prefix + "requests", 0),
        "promptTokens": prompt,
        "completionTokens": completion,
        "totalTokens": prompt + completion,
        "cacheReadTokens": c.get(prefix + "cache_read", 0),
        "cacheWriteTokens": c.get(prefix + "cache_write", 0),
        "errors": c.get(prefix + "errors", 0),
        "cacheHits": c.get(prefix + "cache_hits", 0),
        "cacheSavedUsd": round(c.get(prefix + "cache_saved_nusd", 0) / NANO_USD, 9),
        "estimatedRequests": c.get(prefix + "estimated", 0),
    }


def _avg_ms(c: dict[str, int], total_key: str, count_key: str) -> float | None:
    count = c.get(count_key, 0)
    return round(c.get(total_key, 0) / count / 1000, 1) if count else None


def _pct(part: float, whole: float) -> float:
    return round(100 * part / whole, 2) if whole else 0.0


def node_totals(c: dict[str, int]) -> dict[str, dict[str, int]]:
    """`totals` as the Node Xrouter's /usage has it, per tier and `unknown` (counts under
    a tier name that is none of the three: none are written today, so zeros)."""
    fields = ("requests", "prompt", "completion", "with_usage")
    totals = {tier: dict.fromkeys(fields, 0) for tier in (*TIERS, "unknown")}
    for key, value in c.items():
        if not key.startswith("t|"):
            continue
        _, tier, name = key.split("|", 2)
        if name in fields:
            row = totals[tier if tier in TIERS else "unknown"]
            row[name] += value
    return {
        tier: {
            "promptTokens": row["prompt"],
            "completionTokens": row["completion"],
            "totalTokens": row["prompt"] + row["completion"],
            "requests": row["requests"],
            "withUsage": row["with_usage"],
        }
        for tier, row in totals.items()
    }


def _payment_row(fields: Mapping[str, int]) -> dict[str, Any]:
    refused = {
        name.removeprefix("refused:"): n
        for name, n in sorted(fields.items())
        if name.startswith("refused:") and n
    }
    return {
        "payments": fields.get("payments", 0),
        "paidUsd": round(fields.get("paid_uusd", 0) / 1_000_000, 6),
        "paidMicroUsd": fields.get("paid_uusd", 0),
        "settled": fields.get("settled", 0),
        "refused": sum(refused.values()),
        "refusedBy": refused,
    }


def payment_fields(c: Mapping[str, int]) -> tuple[dict[str, dict[str, int]], dict[str, Any]]:
    """The x402 counters by tier (p|<tier>|<field>) and by route (pr|<key>|<tier>|<field>)."""
    tiers: dict[str, dict[str, int]] = {}
    routes: dict[str, dict[str, Any]] = {}
    for key, value in c.items():
        if key.startswith("p|"):
            _, tier, name = key.split("|", 2)
            tiers.setdefault(tier, {})[name] = value
        elif key.startswith("pr|"):
            _, route, tier, name = key.split("|", 3)
            routes.setdefault(route, {"tier": tier, "fields": {}})["fields"][name] = value
    return tiers, routes


def x402_totals(c: Mapping[str, int]) -> dict[str, Any]:
    """The x402 payments signed (see docs/payments.md), their amount in USD, how many the
    upstream said it settled, and the 402s answered unpaid by reason: in all, per tier and
    per route (the route's key: its tier, or `tier#n` for a tier's n-th candidate)."""
    tiers, routes = payment_fields(c)
    total: dict[str, int] = {}
    for fields in tiers.values():
        for name, n in fields.items():
            total[name] = total.get(name, 0) + n
    return {
        **_payment_row(total),
        "byTier": {
            tier: _payment_row(tiers[tier])
            for tier in sorted(tiers, key=lambda t: TIER_INDEX.get(t, len(TIERS)))
        },
        "byRoute": {
            key: {"tier": row["tier"], **_payment_row(row["fields"])}
            for key, row in sorted(routes.items())
        },
    }


def usage_document(stored: Stored, pricing: Pricing, minutes: int = 60) -> dict[str, Any]:
    """The JSON of GET /usage (its shape is documented in docs/usage.md)."""
    c = stored.counters
    tiers = {tier: _tier_row(c, f"t|{tier}|") for tier in TIERS}
    total_tokens = sum(row["totalTokens"] for row in tiers.values())
    total_requests = sum(row["requests"] for row in tiers.values())
    frontier_price = pricing.for_tier(FRONTIER)

    models: list[dict[str, Any]] = []
    for key in c:
        if key.startswith("m|") and key.endswith("|requests"):
            _, tier, provider, rest = key.split("|", 3)
            model = rest.rsplit("|", 1)[0]
            prefix = f"m|{tier}|{provider}|{model}|"
            row = _tier_row(c, prefix)
            price = pricing.for_model(tier, model)
            if prefix + "cost_nusd" in c:
                cost = c[prefix + "cost_nusd"] / NANO_USD
                if_frontier = c.get(prefix + "frontier_nusd", 0) / NANO_USD
            else:  # counted before costs were stored: priced now, by its totals
                cost = price.cost(row["promptTokens"], row["completionTokens"])
                if_frontier = frontier_price.cost(row["promptTokens"], row["completionTokens"])
            models.append(
                {
                    "tier": tier,
                    "provider": provider,
                    "model": model,
                    **row,
                    "inputPrice": price.input,
                    "outputPrice": price.output,
                    "cacheReadPrice": price.input if price.cache_read is None else price.cache_read,
                    "cacheWritePrice": price.input
                    if price.cache_write is None
                    else price.cache_write,
                    "priceSource": price.source,
                    "pricedModel": price.model or None,
                    "priced": price.priced and not c.get(prefix + "unpriced", 0),
                    "unpricedRequests": c.get(prefix + "unpriced", 0),
                    "costUsd": round(cost, 9),
                    "frontierCostUsd": round(if_frontier, 9),
                }
            )
    models.sort(key=lambda m: (TIER_INDEX.get(m["tier"], len(TIERS)), m["model"]))

    cost_by_tier = {tier: 0.0 for tier in TIERS}
    frontier_equiv = 0.0
    for m in models:
        cost_by_tier[m["tier"]] = cost_by_tier.get(m["tier"], 0.0) + m["costUsd"]
        frontier_equiv += m["frontierCostUsd"]
    actual = sum(cost_by_tier.values())
    for tier, row in tiers.items():
        row["costUsd"] = round(cost_by_tier.get(tier, 0.0), 9)
        row["avgClassifierMs"] = _avg_ms(c, f"t|{tier}|classifier_us", f"t|{tier}|classified")
        row["avgUpstreamMs"] = _avg_ms(c, f"t|{tier}|upstream_us", f"t|{tier}|upstream_n")

    now_minute = int(time.time() // 60)
    first = now_minute - max(1, minutes) + 1
    series = []
    for minute in range(first, now_minute + 1):
        point: dict[str, Any] = {"time": minute * 60}
        for tier in TIERS:
            point[tier] = {
                "requests": stored.series.get(f"{minute}|{tier}|requests", 0),
                "tokens": stored.series.get(f"{minute}|{tier}|tokens", 0),
            }
        series.append(point)

    decisions: dict[str, dict[str, int]] = {}
    for key, value in c.items():
        if key.startswith("d|"):
            _, source, digit = key.split("|", 2)
            decisions.setdefault(source, {})[digit] = value
    return {
        # The Node Xrouter's fields, as it had them: scripts written for it keep working.
        "totals": node_totals(c),
        "percentages": {
            tier: _pct(row["totalTokens"], total_tokens) for tier, row in tiers.items()
        },
        "tiers": tiers,
        "shares": {
            tier: {
                "tokens": _pct(row["totalTokens"], total_tokens),
                "requests": _pct(row["requests"], total_requests),
            }
            for tier, row in tiers.items()
        },
        "totalTrackedTokens": total_tokens,
        "totalRequests": total_requests,
        "lastUpdated": stored.updated or None,
        "models": models,
        "cost": {
            "currency": "USD",
            "totalUsd": round(actual, 9),
            "byTier": {tier: round(v, 9) for tier, v in cost_by_tier.items()},
            "frontierEquivalentUsd": round(frontier_equiv, 9),
            "savingsUsd": round(frontier_equiv - actual, 9),
            "savingsPercent": _pct(frontier_equiv - actual, frontier_equiv),
            # The honest baseline (docs/sessions.md): every request on frontier with
            # frontier's own prompt cache per session, from the same token counts.
            "cachedFrontierUsd": round(c.get("b|baseline_nusd", 0) / NANO_USD, 9),
            "cachedFrontierSavingsUsd": round(
                (c.get("b|baseline_nusd", 0) - c.get("b|cost_nusd", 0)) / NANO_USD, 9
            ),
            "cachedFrontierSavingsPercent": _pct(
                c.get("b|baseline_nusd", 0) - c.get("b|cost_nusd", 0), c.get("b|baseline_nusd", 0)
            ),
            "unpricedModels": sorted({m["model"] for m in models if not m["priced"]}),
            "prices": prices_name(),
        },
        "decisions": decisions,
        "cache": {
            "responseHits": c.get("c|response|hit", 0),
            "responseMisses": c.get("c|response|miss", 0),
            "responseSavedUsd": round(sum(row["cacheSavedUsd"] for row in tiers.values()), 9),
            "decisionHits": sum(decisions.get("cache", {}).values()),
        },
        "fallbacks": sum(v for k, v in c.items() if k.startswith("f|")),
        "tags": tag_counts(c),
        "rules": {k[2:]: v for k, v in sorted(c.items()) if k.startswith("r|")},
        "x402": x402_totals(c),
        "keys": key_rows(c),
        "sessions": session_rows(c),
        "series": series,
        "recent": list(reversed(stored.recent)),
    }


SESSION_FIELDS = ("requests", "cost_nusd", "baseline_nusd", "cache_read", "prompt")
SESSIONS_SHOWN = 50


def session_rows(c: Mapping[str, int]) -> dict[str, Any]:
    """Agent sessions (counters s|<session>|<field>): per session, its actual cost, what
    staying on frontier with frontier's caching would have cost, and the difference
    (negative where routing cost more: `dearer`). The SESSIONS_SHOWN sessions with the
    most requests are listed; the totals cover all."""
    names = {key.split("|", 2)[1] for key in c if key.startswith("s|") and key.count("|") == 2}
    rows = []
    for name in names:
        get = {field: c.get(f"s|{name}|{field}", 0) for field in SESSION_FIELDS}
        saved = get["baseline_nusd"] - get["cost_nusd"]
        rows.append(
            {
                "session": name,
                "requests": get["requests"],
                "promptTokens": get["prompt"],
                "cacheReadTokens": get["cache_read"],
                "costUsd": round(get["cost_nusd"] / NANO_USD, 9),
                "cachedFrontierUsd": round(get["baseline_nusd"] / NANO_USD, 9),
                "savingsUsd": round(saved / NANO_USD, 9),
                "savingsPercent": _pct(saved, get["baseline_nusd"]),
                "dearer": saved < 0,
            }
        )
    rows.sort(key=lambda row: (-row["requests"], row["session"]))
    cost = sum(row["costUsd"] for row in rows)
    baseline = sum(row["cachedFrontierUsd"] for row in rows)
    return {
        "count": len(rows),
        "dearer": sum(1 for row in rows if row["dearer"]),
        "costUsd": round(cost, 9),
        "cachedFrontierUsd": round(baseline, 9),
        "savingsUsd": round(baseline - cost, 9),
        "savingsPercent": _pct(baseline - cost, baseline),
        "rows": rows[:SESSIONS_SHOWN],
    }


def tag_counts(c: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """Requests per request tag and per response tag (counters g|request|<tag>, …)."""
    counts: dict[str, dict[str, int]] = {"request": {}, "response": {}}
    for key, value in sorted(c.items()):
        if key.startswith("g|"):
            _, side, tag = key.split("|", 2)
            counts.setdefault(side, {})[tag] = value
    return counts


KEY_FIELDS = (
    "requests",
    "prompt",
    "completion",
    "cost_nusd",
    "errors",
    "limited",
    "over_daily",
    "over_monthly",
    "over_tpm",
    "cache_hits",
    "cache_saved_nusd",
)


def key_rows(c: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    """Per client key: requests, tokens, cost, errors and requests refused over a limit
    (rateLimited: any limit; overBudget: its daily or monthly budget; overTokens: its
    tokens per minute), from the counters k|<name>|<field>."""
    names = sorted(
        {key.split("|", 2)[1] for key in c if key.startswith("k|") and key.count("|") == 2}
    )
    rows = {}
    for name in names:
        get = {field: c.get(f"k|{name}|{field}", 0) for field in KEY_FIELDS}
        rows[name] = {
            "requests": get["requests"],
            "promptTokens": get["prompt"],
            "completionTokens": get["completion"],
            "totalTokens": get["prompt"] + get["completion"],
            "costUsd": round(get["cost_nusd"] / NANO_USD, 9),
            "errors": get["errors"],
            "rateLimited": get["limited"],
            "overBudget": get["over_daily"] + get["over_monthly"],
            "overTokens": get["over_tpm"],
            "cacheHits": get["cache_hits"],
            "cacheSavedUsd": round(get["cache_saved_nusd"] / NANO_USD, 9),
        }
    return rows


def prices_name() -> str:
    """Where prices come from, for the document and the dashboard."""
    version = genai_version()
    return f"genai-prices {version}" if version else "genai-prices (not installed)"
