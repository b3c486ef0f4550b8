"""The live event feed behind `GET /events`: each routed request as it happens.

Four events per request, in this order (a fallback repeats `routed`):

    start       the request arrived and parsed (format, model asked for, stream, prompt)
    classified  the decision (source, score, tier, classifier ms)
    routed      the route it is sent to (route, provider, model, fallbacks so far)
    complete    the answer went out (status, tokens incl. cached, cost, total ms, error)

and a `stats` event every few seconds (and one at connect). Each event is one SSE frame
whose data is a JSON object with the request's `id` and the `worker` (process id) that
saw it.

mitmproxy cannot stream an answer an addon makes itself, so the feed has a small HTTP
server of its own on 127.0.0.1 (started at the first subscription): the addon points
the `/events` flow at it, after checking the router's key, and mitmproxy streams its
answer like any upstream's. A random path token keeps other local processes from
reading the feed through that port without the key.

Publishing is synchronous and never waits: an event is encoded once and appended to
each subscriber's bounded queue; a subscriber whose queue is full (a slow reader; the
backpressure reaches here through mitmproxy) loses that event, and is told how many it
lost (`dropped`) when it catches up. With nobody subscribed each event costs one check.
Events are written in batches (at most BATCH_S late), which is what keeps mitmproxy's
relaying cheap under load.

With Redis (REDIS_URL, the cache backend auto or redis), the router processes that share
it share their feeds (`RedisRelay`): a process with subscribers listens on a pub/sub
channel, and the others publish their events there, in batches, while the channel has a
listener besides themselves (checked every RELAY_CHECK_S). On a Redis Cluster the
channel is sharded (SPUBLISH/SSUBSCRIBE; its hash tag puts it on one node).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from xrouter_core.accounting.cache import REDIS_ERRORS, RedisHealth, redis_client
from xrouter_core.accounting.redis_topology import Subscription, listeners, publish
from xrouter_core.accounting.usage import Outcome
from xrouter_core.config import Route
from xrouter_core.routing.classifier import Decision
from xrouter_core.routing.extract import classifier_input, reading_of
from xrouter_core.routing.fallback import Attempt
from xrouter_core.wire.inbound import ChatRequest
from xrouter_core.wire.sse import encode_json

log = logging.getLogger("xrouter")

QUEUE_MAX = 512  # frames kept per subscriber; past that, events are dropped for it
STATS_S = 5.0
KEEPALIVE_S = 15.0
# After the first event of a quiet spell, wait this long for more before writing: under
# load, one write carries many requests' events. mitmproxy's cost is per piece it relays
# (not per byte), so this is what makes many subscribers cheap.
BATCH_S = 0.1
PROMPT_MAX = 2000  # characters of the person's text an event carries
HEAD_MAX = 16_384
CHANNEL = "xrouter:{events}"
RELAY_CHECK_S = 2.0


class Subscriber:
    """One listener: a bounded queue of encoded frames and a count of those it lost."""

    __slots__ = ("frames", "limit", "dropped", "wake", "closed")

    def __init__(self, limit: int = QUEUE_MAX) -> None:
        self.frames: deque[bytes] = deque()
        self.limit = limit
        self.dropped = 0
        self.wake = asyncio.Event()
        self.closed = False

    def put(self, frame: bytes) -> None:
        if len(self.frames) >= self.limit:
            self.dropped += 1
            return
        self.frames.append(frame)
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()

    async def take(self, timeout: float, batch: float = 0.0) -> list[bytes]:
        """The frames waiting (a `dropped` notice first, when some were lost), gathered
        for `batch` seconds after the first; [] after `timeout` seconds with none, or
        once closed."""
        if not self.frames and not self.closed:
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)
            if batch and self.frames and not self.closed:
                await asyncio.sleep(batch)
        frames = list(self.frames)
        self.frames.clear()
        if self.dropped:
            frames.insert(0, encode_json({"count": self.dropped}, "dropped"))
            self.dropped = 0
        return frames


def chunk(data: bytes) -> bytes:
    """One piece of a chunked HTTP/1.1 body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class EventFeed:
    """The subscribers, the four request events, the periodic stats and the local server."""

    def __init__(
        self, queue_max: int = QUEUE_MAX, stats_s: float = STATS_S, batch_s: float = BATCH_S
    ) -> None:
        self.subscribers: list[Subscriber] = []
        self.queue_max = queue_max
        self.stats_s = stats_s
        self.batch_s = batch_s
        self.worker = os.getpid()
        self.ids = itertools.count(1)
        # Whether events carry the person's text (REQUEST_LOG_PROMPTS, like the request log).
        self.prompts = False
        # What a `stats` event says: set by the addon to the accounting in use.
        self.stats_source: Callable[[], Awaitable[dict[str, Any]]] | None = None
        self.token = secrets.token_urlsafe(24)
        self._server: asyncio.Future[asyncio.Server] | None = None
        self._stats_task: asyncio.Task | None = None
        # Shares events with the other processes on the same Redis; `remote`: someone
        # listens there, so events are built even with no subscriber here.
        self.relay: RedisRelay | None = None
        self.remote = False

    def next_id(self) -> int:
        return next(self.ids)

    @property
    def listened(self) -> bool:
        """Whether anyone listens, here or (over Redis) in another process."""
        return bool(self.subscribers) or self.remote

    # ---- publishing: called on the request path ---------------------------------

    def publish(self, kind: str, doc: dict[str, Any]) -> None:
        doc["worker"] = self.worker
        frame = encode_json(doc, kind)
        for subscriber in self.subscribers:
            subscriber.put(frame)
        if self.remote and self.relay is not None:
            self.relay.send(frame)

    def deliver(self, frames: bytes) -> None:
        """Events of another process (from the relay) to this one's subscribers."""
        for subscriber in self.subscribers:
            subscriber.put(frames)

    def start(self, rid: int, chat: ChatRequest) -> None:
        if not self.subscribers and not self.remote:
            return
        doc: dict[str, Any] = {
            "id": rid,
            "time": time.time(),
            "format": chat.client_format,
            "model": chat.model,
            "stream": chat.stream,
        }
        if self.prompts:
            doc["prompt"] = classifier_input(chat.messages, reading_of(chat))[:PROMPT_MAX]
        self.publish("start", doc)

    def classified(
        self, rid: int, decision: Decision, tags: Sequence[str] = (), rule: str = ""
    ) -> None:
        if not self.subscribers and not self.remote:
            return
        score = decision.score
        doc = {
            "id": rid,
            "source": decision.source,
            "score": None if score is None else round(score, 3),
            "tier": decision.tier,
            "classifier_ms": round(decision.ms, 1),
            "tags": list(tags),
        }
        if rule:
            doc["rule"] = rule
        self.publish("classified", doc)

    def routed(self, rid: int, route: Route, provider: str, attempts: Sequence[Attempt]) -> None:
        if not self.subscribers and not self.remote:
            return
        self.publish(
            "routed",
            {
                "id": rid,
                "route": route.tier,
                "provider": provider,
                "model": route.model,
                "fallbacks": [a.label() for a in attempts],
            },
        )

    def complete(
        self,
        rid: int,
        status: int,
        outcome: Outcome | None = None,
        error: str = "",
        first_byte_ms: float | None = None,
    ) -> None:
        """The request's end: with its counted outcome, or (refused before it was routed)
        only its status and error."""
        if not self.subscribers and not self.remote:
            return
        doc: dict[str, Any] = {"id": rid, "status": status, "error": error or None}
        if first_byte_ms is not None:
            doc["first_byte_ms"] = round(first_byte_ms, 1)
        if outcome is not None:
            doc.update(
                route=outcome.tier,
                provider=outcome.provider,
                model=outcome.model,
                prompt_tokens=outcome.prompt_tokens,
                completion_tokens=outcome.completion_tokens,
                cache_read_tokens=outcome.cache_read_tokens,
                cache_write_tokens=outcome.cache_write_tokens,
                estimated=outcome.estimated,
                cache_hit=outcome.cache_hit,
                cost_usd=round(outcome.cost_usd, 9),
                total_ms=round(outcome.total_ms, 1),
                response_tags=list(outcome.response_tags),
            )
        self.publish("complete", doc)

    # ---- subscribing --------------------------------------------------------------

    def subscribe(self) -> Subscriber:
        subscriber = Subscriber(self.queue_max)
        self.subscribers.append(subscriber)
        if self.relay is not None:
            self.relay.wake()
        if self._stats_task is None or self._stats_task.done():
            self._stats_task = asyncio.get_running_loop().create_task(self._stats_forever())
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with contextlib.suppress(ValueError):
            self.subscribers.remove(subscriber)
        subscriber.close()

    async def stats_frame(self) -> bytes:
        doc: dict[str, Any] = {}
        if self.stats_source is not None:
            try:
                doc = await self.stats_source()
            except Exception as exc:  # noqa: BLE001 - the feed goes on without its stats
                log.warning("events: stats unavailable: %s", exc)
        doc["worker"] = self.worker
        doc["subscribers"] = len(self.subscribers)
        doc["time"] = time.time()
        return encode_json(doc, "stats")

    async def _stats_forever(self) -> None:
        """A `stats` event every `stats_s` seconds, while anyone listens."""
        while self.subscribers:
            await asyncio.sleep(self.stats_s)
            if not self.subscribers:
                break
            frame = await self.stats_frame()
            for subscriber in self.subscribers:
                subscriber.put(frame)

    # ---- the local server mitmproxy forwards /events to ---------------------------

    async def listen(self) -> tuple[str, int]:
        """The (host, port) of the local server, started on first use."""
        if self._server is None:
            self._server = asyncio.ensure_future(
                asyncio.start_server(self.serve, "127.0.0.1", 0, limit=HEAD_MAX)
            )
        try:
            server = await asyncio.shield(self._server)
        except OSError:
            self._server = None  # tried again at the next subscription
            raise
        host, port = server.sockets[0].getsockname()[:2]
        return host, port

    def path(self, query: str) -> str:
        """The path the addon sends a subscription to (the token, then the client's query)."""
        return f"/{self.token}" + (f"?{query}" if query else "")

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One HTTP/1.1 request from mitmproxy: the stream of events until either side ends."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            writer.close()
            return
        method, _, rest = head.partition(b" ")
        target = rest.split(b" ", 1)[0].split(b"?", 1)[0]
        if not secrets.compare_digest(target, b"/" + self.token.encode()):
            writer.write(
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            with contextlib.suppress(OSError):
                await writer.drain()
            writer.close()
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-store\r\n"
            b"x-accel-buffering: no\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        if method == b"HEAD":
            with contextlib.suppress(OSError):
                await writer.drain()
            writer.close()
            return
        subscriber = self.subscribe()
        # mitmproxy closes this connection when the client goes: that ends the stream.
        gone = asyncio.ensure_future(reader.read())
        gone.add_done_callback(lambda _: subscriber.close())
        try:
            writer.write(chunk(b"retry: 2000\n\n" + await self.stats_frame()))
            await writer.drain()
            while not subscriber.closed:
                frames = await subscriber.take(KEEPALIVE_S, self.batch_s)
                if subscriber.closed:
                    break
                writer.write(chunk(b"".join(frames) if frames else b": keep-alive\n\n"))
                await writer.drain()
            if not gone.done():  # the router is stopping: end the body cleanly
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except OSError:
            pass
        finally:
            self.unsubscribe(subscriber)
            gone.cancel()
            writer.close()

    # ---- sharing over Redis ---------------------------------------------------------

    def use_redis(self, url: str, health: RedisHealth | None = None) -> None:
        """Share this feed over Redis at `url` ("" for none): at start and on reload.
        `health` is the accounting's, so an outage is logged once for all its users."""
        if self.relay is not None and self.relay.url == url:
            self.relay.health = health or self.relay.health
            return
        if self.relay is not None:
            self.relay.close()
        self.relay = RedisRelay(self, url, health) if url else None
        self.remote = False

    def start_relay(self) -> None:
        if self.relay is not None:
            self.relay.start()

    def close(self) -> None:
        """At shutdown: every stream ends, the server stops."""
        if self.relay is not None:
            self.relay.close()
            self.relay = None
        for subscriber in list(self.subscribers):
            subscriber.close()
        if self._stats_task is not None:
            self._stats_task.cancel()
        if self._server is not None and self._server.done() and not self._server.cancelled():
            self._server.result().close()
        self._server = None


class RedisRelay:
    """The feed shared between router processes over one Redis pub/sub channel.

    Every RELAY_CHECK_S it asks Redis how many listen on the channel (PUBSUB NUMSUB),
    and sets `feed.remote` when any listener is not this process: then this process's
    events are also published, gathered for BATCH_S into one message. While this
    process has subscribers of its own, it listens on the channel and hands the other
    processes' events to them. A message is this relay's id, a newline, and SSE frames.
    """

    def __init__(self, feed: EventFeed, url: str, health: RedisHealth | None = None) -> None:
        self.feed = feed
        self.url = url
        self.health = health or RedisHealth(url)
        self.id = secrets.token_hex(8).encode()
        self.client = redis_client(url, timeout=1.0)
        self.listener = redis_client(url, timeout=None)  # waits for messages
        self.outbox: list[bytes] = []
        self.listening = False
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._loop_task: asyncio.Task | None = None

    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._check_forever())

    def wake(self) -> None:
        """A local subscriber came: start listening at once, not at the next check."""
        self._wake.set()

    def send(self, frame: bytes) -> None:
        if not self.outbox:
            asyncio.get_running_loop().call_later(BATCH_S, self._flush)
        self.outbox.append(frame)

    def _flush(self) -> None:
        frames, self.outbox = self.outbox, []
        if frames:
            task = asyncio.get_running_loop().create_task(self._publish(b"".join(frames)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _publish(self, frames: bytes) -> None:
        try:
            await publish(self.client, CHANNEL, self.id + b"\n" + frames)
        except REDIS_ERRORS as exc:
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        """Redis failed: the feed shows this process only until it is back (the outage
        is logged once, by the shared health)."""
        self.feed.remote = False
        self.health.failed(exc)

    async def _check_forever(self) -> None:
        while True:
            try:
                if self.health.usable:
                    if self.feed.subscribers and not self.listening:
                        self._spawn(self._listen())
                    count = await listeners(self.client, CHANNEL)
                    # (A success is not reported: the counters' writes say when Redis
                    # is back, and a read that works does not prove that they do.)
                    self.feed.remote = count - (1 if self.listening else 0) > 0
            except REDIS_ERRORS as exc:
                self._failed(exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), RELAY_CHECK_S)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _listen(self) -> None:
        """Hand the other processes' events to this one's subscribers, while it has any."""
        self.listening = True
        pubsub = Subscription(self.listener, CHANNEL)
        try:
            await pubsub.open()
            while self.feed.subscribers:
                try:
                    data = await pubsub.next(timeout=1.0)
                except TimeoutError:
                    continue
                if data is None:
                    continue
                sender, _, frames = data.partition(b"\n")
                if sender != self.id and frames:
                    self.feed.deliver(frames)
        except REDIS_ERRORS as exc:
            self._failed(exc)
        finally:
            self.listening = False
            with contextlib.suppress(*REDIS_ERRORS):
                await pubsub.close()

    def close(self) -> None:
        self.feed.remote = False
        for task in [self._loop_task, *self._tasks]:
            if task is not None:
                task.cancel()
        self._loop_task = None
        with contextlib.suppress(RuntimeError):
            loop = asyncio.get_running_loop()
            for client in (self.client, self.listener):
                loop.create_task(client.aclose())
