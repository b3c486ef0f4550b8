"""What happens around a routed request besides routing it: usage counters, the request
log, the response cache and the pages that show them. The addon calls this with a few
lines per hook; everything here is plain Python."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from xrouter_core.accounting.cache import (
    REDIS_ERRORS,
    Cache,
    MemoryCache,
    RedisCache,
    RedisHealth,
    build_cache,
    close_after,
    redis_client,
)
from xrouter_core.accounting.events import EventFeed
from xrouter_core.accounting.limits import (
    Budgets,
    RateLimits,
    Refusal,
    Reservation,
    counters_health,
    retry_after,
)
from xrouter_core.accounting.metrics import CONTENT_TYPE as METRICS_TYPE
from xrouter_core.accounting.metrics import render_metrics
from xrouter_core.accounting.pages import dashboard_page, plotly_script
from xrouter_core.accounting.prices import Pricing
from xrouter_core.accounting.redis_topology import Deadline
from xrouter_core.accounting.requestlog import RequestLog
from xrouter_core.accounting.responsecache import RecordingStream, entry, read_entry, response_key
from xrouter_core.accounting.traces import RequestSpan, Tracing, start_tracing
from xrouter_core.accounting.usage import (
    NANO_USD,
    Outcome,
    UsageTracker,
    estimate_tokens,
    usage_document,
)
from xrouter_core.client_keys import ClientKey
from xrouter_core.config import Route, Settings
from xrouter_core.routing.classifier import Decision
from xrouter_core.routing.extract import classifier_input, reading_of
from xrouter_core.routing.fallback import fallback_header
from xrouter_core.routing.sessions import SESSION_TTL_S, SessionRouting
from xrouter_core.tasks import Tasks
from xrouter_core.tiers import FRONTIER, TIERS
from xrouter_core.wire.canonical import Usage, usage_from_openai
from xrouter_core.wire.errors import RouterError
from xrouter_core.wire.headers import (
    CACHE_HEADER,
    MODEL_HEADER,
    PROVIDER_HEADER,
    RESPONSE_TAGS_HEADER,
    ROUTE_HEADER,
    RULE_HEADER,
    TAGS_HEADER,
    HeaderAliases,
    routing_headers,
)
from xrouter_core.wire.inbound import ChatRequest, content_text
from xrouter_core.wire.local import PLOTLY_PATH, LocalResponse
from xrouter_core.wire.render_openai import completion_as_sse
from xrouter_core.wire.stream import StreamTranslator

log = logging.getLogger("xrouter")

USAGE_PAGES = frozenset({"/usage", "/usage/reset", "/metrics", "/dashboard", PLOTLY_PATH})


def prompt_chars(chat: ChatRequest) -> int:
    return sum(len(content_text(m.get("content"))) for m in chat.messages)


def usable_data_dir(configured: str) -> str:
    """The data directory, or a private temporary one when it cannot be created or
    written (a file in the way, a read-only mount): counting goes on, with a warning,
    instead of the router failing to start."""
    directory = Path(configured)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".xrouter-write-test"
        probe.write_bytes(b"")
        probe.unlink()
        return str(directory)
    except OSError as exc:
        fallback = Path(tempfile.gettempdir()) / f"xrouter-data-{os.getuid()}"
        fallback.mkdir(mode=0o700, exist_ok=True)
        log.warning(
            "XROUTER_DATA_DIR %s is not usable (%s); counting in %s instead, which does not"
            " survive a reboot",
            configured,
            exc.strerror or exc,
            fallback,
        )
        return str(fallback)


def request_span(
    routed: Any,
    status: int,
    usage: Usage | None,
    total_ms: float,
    stream: StreamTranslator | None,
    completion: Any,
    error: str,
) -> RequestSpan:
    """What the trace of a finished routed request says (accounting/traces.py). The
    response's model, id and finish reasons are known for whole answers and for streams
    that end with a whole response (Responses); a passed-through stream leaves them out."""
    answer = completion if isinstance(completion, dict) else None
    if answer is None and stream is not None:
        final = getattr(stream, "final", None)
        answer = final if isinstance(final, dict) else None
    reasons: tuple[str, ...] = ()
    if answer is not None:
        choices = answer.get("choices")
        if isinstance(choices, list):
            reasons = tuple(
                str(c["finish_reason"])
                for c in choices
                if isinstance(c, dict) and c.get("finish_reason")
            )
        elif isinstance(answer.get("status"), str):  # a Responses object
            reasons = (answer["status"],)
    route = routed.route
    return RequestSpan(
        requested_model=routed.chat.model or "",
        model=route.model or routed.chat.model or "unknown",
        response_model=str((answer or {}).get("model") or ""),
        provider=routed.adapter.name,
        tier=route.tier,
        decision=TIERS[routed.decision.tier],
        source=routed.decision.source,
        score=routed.decision.score,
        status=status,
        input_tokens=usage.prompt_tokens if usage else None,
        output_tokens=usage.completion_tokens if usage else None,
        cache_read_tokens=usage.cache_read_tokens if usage else 0,
        cache_write_tokens=usage.cache_write_tokens if usage else 0,
        finish_reasons=reasons,
        response_id=str((answer or {}).get("id") or ""),
        fallbacks=len(routed.attempts),
        fallback=fallback_header(routed.attempts) if routed.attempts else "",
        stream=routed.chat.stream,
        server_address=route.host,
        server_port=route.port,
        classifier_ms=routed.decision.ms,
        total_ms=total_ms,
        error=error,
    )


def origin_headers(routed: Any) -> dict[str, str]:
    """Where a routed answer came from, as its X-Xrouter-* headers said (route, rule, tags,
    provider, model, the answer's tags): kept with a cached answer, sent again on a hit.
    No token counts: a hit spends none."""
    headers = {
        ROUTE_HEADER: routed.route.label,
        TAGS_HEADER: ",".join(routed.tags),
        RESPONSE_TAGS_HEADER: ",".join(routed.response_tags),
        PROVIDER_HEADER: routed.adapter.name,
        MODEL_HEADER: routed.route.model or routed.chat.model,
    }
    if routed.rule:
        headers[RULE_HEADER] = routed.rule
    return headers


def session_store(settings: Settings, health: RedisHealth | None) -> Cache:
    """Where agent sessions' cache state lives: Redis when the counters use it (with a
    memory cache serving while it is away), else this process's memory."""
    local = MemoryCache(max_entries=10_000, default_ttl=SESSION_TTL_S)
    if settings.redis_url and settings.cache_backend in ("auto", "redis") and health:
        return RedisCache(redis_client(settings.redis_url), local, health)
    return local


class Accounting:
    def __init__(
        self,
        settings: Settings,
        feed: EventFeed | None = None,
        replaced: Accounting | None = None,
    ):
        """`replaced`: the Accounting a reload replaces, whose client keys' limits and
        budgets counted in this process go on here."""
        self.settings = settings
        # The live feed (/events) outlives a reload: the addon owns it and hands it over.
        self.feed = feed if feed is not None else EventFeed()
        self.feed.prompts = settings.request_log_prompts
        self.feed.stats_source = self.live_stats
        data_dir = usable_data_dir(settings.data_dir)
        self.health = RedisHealth(settings.redis_url) if settings.redis_url else None
        backend = settings.cache_backend
        self.decisions: Cache = build_cache(
            backend,
            data_dir,
            settings.redis_url,
            settings.decision_cache_max,
            settings.decision_cache_ttl,
            self.health,
        )
        self.responses: Cache | None = (
            build_cache(
                backend,
                data_dir,
                settings.redis_url,
                1000,
                settings.response_cache_ttl,
                self.health,
            )
            if settings.cache_responses
            else None
        )
        self.usage = UsageTracker(
            data_dir,
            settings.redis_url if backend in ("auto", "redis") else "",
            settings.usage_flush_ms / 1000,
            self.health,
        )
        self.pricing = Pricing(settings)
        self.tasks = Tasks()
        # The response cache's and the sessions' state writes: a reload lets them land
        # before it closes the stores (close_after).
        self.writes = Tasks()
        # Agent sessions' cache state (routing/sessions.py): in Redis when there is one,
        # read there on every turn (no memory layer in front), so every worker agrees.
        self.sessions = SessionRouting(
            settings.session_cost_routing,
            session_store(settings, self.health),
            self.pricing,
            settings.routes,
            self.writes.spawn,
        )
        self.request_log = RequestLog(settings.request_log) if settings.request_log else None
        self.aliases = HeaderAliases(
            settings.decision_header,
            settings.upstream_header,
            {tier: route.name for tier, route in settings.routes.items() if route.name},
        )
        # Routers on one Redis share their live feeds (with the counters' backend).
        shared = settings.redis_url if backend in ("auto", "redis") else ""
        self.feed.use_redis(shared, self.health)
        # Client keys' requests per minute, counted in the shared Redis when there is one;
        # whether it is away is judged by their own calls, not the stores' (limits.py).
        counted = counters_health(shared) if shared else None
        self.limits = RateLimits(shared, counted)
        # Their tokens per minute and daily and monthly budgets: reserved, then settled.
        self.budgets = Budgets(shared, counted)
        if replaced is not None:
            self.limits.adopt(replaced.limits)
            self.budgets.adopt(replaced.budgets)
        # The client keys in use now (the addon's keyring), for the budgets /usage shows.
        self.client_keys: Callable[[], Iterable[ClientKey]] = tuple
        # OpenTelemetry spans, when an OTLP endpoint is configured (None: off, not imported).
        self.tracing: Tracing | None = (
            start_tracing(settings.otel_traces_endpoint, settings.otel_service_name)
            if settings.otel_traces_endpoint
            else None
        )

    def start(self) -> None:
        self.usage.start()
        self.feed.start_relay()
        # genai-prices takes a few hundred ms to import: off the event loop, before the
        # first request is priced.
        self.tasks.spawn(asyncio.to_thread(self.pricing.warm))

    def close(self, deadline: Deadline | None = None) -> None:
        """At shutdown, and for the Accounting a reload replaces: the last counts stored
        (into Redis within `deadline`, a shutdown's SHUTDOWN_REDIS_S, else on disk),
        and the stores' files and Redis clients closed (the new Accounting opens its
        own; a Redis client once its last commands are done, redis_topology.close_later;
        the response cache and the session store once the answers and session states on
        their way to them are stored, close_after)."""
        self.tasks.cancel()
        self.limits.close()
        self.budgets.close()
        self.usage.close(deadline)
        self.decisions.close()
        close_after(self.writes, self.sessions.store)
        if self.responses is not None:
            close_after(self.writes, self.responses)
        if self.request_log is not None:
            self.request_log.close()
        if self.tracing is not None:
            self.tracing.close()  # the queued spans exported
            self.tracing = None

    # ---- counting ---------------------------------------------------------------

    def finished(
        self,
        chat: ChatRequest,
        decision: Decision,
        tier: str,
        provider: str,
        model: str,
        status: int,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        completion_chars: int,
        total_ms: float,
        cache_hit: bool = False,
        response_text: str | None = None,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        event_id: int = 0,
        error: str = "",
        first_byte_ms: float | None = None,
        client: str = "",
        session: str = "",
        baseline_cost: float | None = None,
        tags: tuple[str, ...] = (),
        response_tags: tuple[str, ...] = (),
        rule: str = "",
        saved_cost: float = 0.0,
        partial: bool = False,
    ) -> Outcome:
        """One finished request: priced and counted in memory, logged off the loop, and
        told to the live feed (`event_id`: the id its other events carry; `client`: the
        client key's name; `session`: its agent session's label, with `baseline_cost`
        what it would have cost on frontier with frontier's cache for the session;
        `tags`, `response_tags`, `rule`: routing/tags.py, rules.py; `saved_cost`: a
        cache hit's, what its answer cost when first served; `partial`: a stream its
        client left, billed by the provider all the same, so estimated like an answer)."""
        estimated = False
        with_usage = prompt_tokens is not None and completion_tokens is not None
        if prompt_tokens is None or completion_tokens is None:
            prompt_tokens = completion_tokens = 0
            if (status < 400 or partial) and not cache_hit:
                # The provider reported no usage: estimate it, and say so.
                estimated = True
                prompt_tokens = estimate_tokens(prompt_chars(chat))
                completion_tokens = estimate_tokens(completion_chars)
        # A dictionary hit after the first request of a (tier, model): see prices.py.
        price = self.pricing.for_model(tier, model)
        frontier = self.pricing.for_tier(FRONTIER)
        counts = (prompt_tokens, completion_tokens, cache_read_tokens, cache_write_tokens)
        frontier_cost = frontier.cost(*counts)
        prompts = self.settings.request_log_prompts
        text = classifier_input(chat.messages, reading_of(chat)) if prompts else None
        outcome = Outcome(
            tier=tier,
            decision=decision.tier,
            source=decision.source,
            provider=provider,
            model=model,
            status=status,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_write_tokens,
            cost_usd=price.cost(*counts),
            frontier_cost_usd=frontier_cost,
            baseline_cost_usd=frontier_cost if baseline_cost is None else baseline_cost,
            session=session,
            priced=price.priced or cache_hit,
            estimated=estimated,
            with_usage=with_usage,
            cache_hit=cache_hit,
            saved_cost_usd=saved_cost,
            classifier_ms=decision.ms,
            upstream_ms=max(total_ms - decision.ms, 0.0),
            total_ms=total_ms,
            at=time.time(),
            prompt=text,
            client=client,
            tags=tags,
            response_tags=response_tags,
            rule=rule,
        )
        self.usage.record(outcome)
        self.feed.complete(event_id, status, outcome, error, first_byte_ms)
        if self.request_log is not None:
            line: dict[str, Any] = {
                "time": outcome.at,
                "decision": decision.tier,
                "source": decision.source,
                # The classifier's score (3 decimals), null where no classifier scored.
                "score": None if decision.score is None else round(decision.score, 3),
                "route": tier,
                "provider": provider,
                "model": model,
                "status": status,
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "cache_read_tokens": cache_read_tokens,
                "cache_write_tokens": cache_write_tokens,
                "cost_usd": round(outcome.cost_usd, 9),
                "estimated": estimated,
                "cache_hit": cache_hit,
                "classifier_ms": round(decision.ms, 1),
                "latency_ms": round(total_ms, 1),
                "stream": chat.stream,
            }
            if cache_hit:
                line["saved_usd"] = round(saved_cost, 9)
            if client:
                line["key"] = client
            if session:
                line["session"] = session
                line["baseline_cost_usd"] = round(outcome.baseline_cost_usd, 9)
            line["tags"] = list(tags)
            line["response_tags"] = list(response_tags)
            if rule:
                line["rule"] = rule
            if prompts:
                line["classifier_input"] = text
                line["messages"] = chat.messages
                if response_text is not None:
                    line["response"] = response_text
            self.request_log.write(line)
        return outcome

    def routed_finished(
        self,
        routed: Any,
        status: int,
        usage: Usage | None,
        total_ms: float,
        stream: StreamTranslator | None,
        completion: Any,
        error: str = "",
        body: bytes = b"",
    ) -> None:
        """The addon's RoutedFlow at its end: count it (its session's state updated, and
        its baseline priced, from the forwarded `body` and the usage), and cache a good
        answer."""
        completion_chars = 0
        response_text = None
        if isinstance(completion, dict):
            message = ((completion.get("choices") or [{}])[0] or {}).get("message") or {}
            response_text = content_text(message.get("content"))
            if usage is None:
                completion_chars = len(response_text) + len(
                    json.dumps(message.get("tool_calls") or "")
                )
        elif stream is not None and usage is None:
            completion_chars = stream.content_chars_estimate()
        # A stream its client left: the provider read the prompt and wrote what was sent.
        partial = stream is not None and status == 499
        session = routed.session
        baseline = None
        if session is not None and status < 400:
            baseline = self.sessions.finished(session, routed.route, usage, body)
        outcome = self.finished(
            routed.chat,
            routed.decision,
            routed.route.tier,
            routed.adapter.name,
            routed.route.model or routed.chat.model or "unknown",
            status,
            usage.prompt_tokens if usage else None,
            usage.completion_tokens if usage else None,
            completion_chars,
            total_ms,
            response_text=response_text,
            cache_read_tokens=usage.cache_read_tokens if usage else 0,
            cache_write_tokens=usage.cache_write_tokens if usage else 0,
            event_id=routed.event_id,
            error=error,
            first_byte_ms=routed.first_byte_ms,
            client=routed.client,
            session=session.id.label if session is not None else "",
            baseline_cost=baseline,
            tags=routed.tags,
            response_tags=routed.response_tags,
            rule=routed.rule,
            partial=partial,
        )
        if routed.reservation is not None:
            # What it really cost replaces the estimate (a failed request costs nothing; a
            # stream its client left costs what was read and written).
            self.budgets.settle(
                routed.reservation,
                round(outcome.cost_usd * NANO_USD),
                outcome.prompt_tokens + outcome.completion_tokens,
            )
        if self.tracing is not None:
            self.tracing.record(
                request_span(routed, status, usage, total_ms, stream, completion, error)
            )
        key = routed.cache_key
        if key is None or status >= 400:
            return
        if isinstance(stream, RecordingStream):
            completion = stream.completion()
        if isinstance(completion, dict):
            self.store_answer(
                key, completion, routed.route.tier, routed.decision.tier, origin_headers(routed)
            )

    # ---- client keys' budgets ---------------------------------------------------

    def estimate(self, chat: ChatRequest, route: Route) -> tuple[int, int]:
        """(nano-USD, tokens) a request is reserved at before it goes to `route`: its
        prompt at four characters a token, and its max_tokens (else KEY_OUTPUT_ESTIMATE)
        of completion, at the route's prices."""
        prompt = estimate_tokens(prompt_chars(chat))
        body = chat.body
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        completion = (
            limit
            if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0
            else self.settings.key_output_estimate
        )
        price = self.pricing.for_model(route.tier, route.model or chat.model or "unknown")
        return round(price.cost(prompt, completion) * NANO_USD), prompt + completion

    async def reserve(self, key: ClientKey, chat: ChatRequest, route: Route) -> Reservation:
        """Reserve a metered key's estimate for one request; RouterError 429 naming the
        limit, with Retry-After, when that would pass one."""
        nusd, tokens = self.estimate(chat, route)
        held = await self.budgets.reserve(key, nusd, tokens)
        if isinstance(held, Reservation):
            return held
        self.usage.count(f"k|{key.name}|limited")
        self.usage.count(f"k|{key.name}|over_{held.limit}")
        raise refusal_error(key.name, held)

    async def reserve_nothing(self, key: ClientKey) -> None:
        """A request that costs nothing (a cache hit) checked against a metered key's
        limits: refused (RouterError 429, counted) only when the key is over one already."""
        held = await self.budgets.reserve(key, 0, 0)
        if isinstance(held, Refusal):
            self.usage.count(f"k|{key.name}|limited")
            self.usage.count(f"k|{key.name}|over_{held.limit}")
            raise refusal_error(key.name, held)

    async def key_budgets(self) -> dict[str, dict[str, Any]]:
        """name → the budgets of each key that has one, and what is used of them now."""
        keys = {k.name: k for k in self.client_keys() if k.daily_usd or k.monthly_usd}
        spent = await self.budgets.spent(sorted(keys))
        rows = {}
        for name, (day, month) in spent.items():
            key = keys[name]
            rows[name] = {
                "dailyUsd": key.daily_usd or None,
                "spentTodayUsd": round(day / NANO_USD, 9),
                "monthlyUsd": key.monthly_usd or None,
                "spentThisMonthUsd": round(month / NANO_USD, 9),
            }
        return rows

    # ---- response cache ---------------------------------------------------------

    async def cached_answer(
        self,
        chat: ChatRequest,
        event_id: int = 0,
        client: str = "",
        metered: ClientKey | None = None,
    ) -> tuple[str | None, LocalResponse | None]:
        """(key, answer): the answer when the cache has one; the key to store under later.
        `metered`: the client's key when it has a budget or tokens per minute: a hit costs
        nothing, but a key already over a limit (its budget lowered, a request that cost
        more than its estimate) is refused it too, as every other request of it
        (RouterError 429, from `reserve`)."""
        if self.responses is None:
            return None, None
        key = response_key(chat)
        if key is None:
            return None, None
        raw = await self.responses.get(key)
        found = read_entry(raw) if raw is not None else None
        if found is None:
            self.usage.count("c|response|miss")
            return key, None
        completion, tier, digit, origin = found
        if metered is not None:
            await self.reserve_nothing(metered)
        self.usage.count("c|response|hit")
        headers = {
            CACHE_HEADER: "hit",
            **routing_headers(digit, tier),
            **origin,
            **self.aliases.headers(digit, tier),
        }
        copies = self.aliases.copies([(k.encode(), v.encode()) for k, v in origin.items()])
        headers.update((k.decode(), v.decode()) for k, v in copies)
        if chat.stream:
            body = completion_as_sse(completion, include_usage=chat.wants_usage)
            headers["content-type"] = "text/event-stream"
            headers["cache-control"] = "no-cache"
        else:
            body = json.dumps(completion).encode()
            headers["content-type"] = "application/json"
        # A hit costs nothing and is counted as a request of its key (its requests per
        # minute were taken before the lookup); what it saved is its answer's cost at
        # the price of the route that first served it.
        model = str(completion.get("model") or "")
        saved = 0.0
        spent = usage_from_openai(completion.get("usage"))
        if spent is not None:
            price = self.pricing.for_model(tier, origin.get(MODEL_HEADER) or model)
            saved = price.cost(
                spent.prompt_tokens,
                spent.completion_tokens,
                spent.cache_read_tokens,
                spent.cache_write_tokens,
            )
        self.finished(
            chat,
            Decision(digit, "response_cache"),
            tier,
            "cache",
            model,
            200,
            0,
            0,
            0,
            0.0,
            cache_hit=True,
            event_id=event_id,
            client=client,
            saved_cost=saved,
        )
        return key, LocalResponse(200, body, headers)

    def store_answer(
        self,
        key: str,
        completion: dict[str, Any],
        tier: str,
        decision: int,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Cache a good answer in the background (the client is not kept waiting), with
        the headers that said where it came from (`origin_headers`)."""
        if self.responses is None:
            return
        choices = completion.get("choices") or [{}]
        if choices[0].get("finish_reason") not in ("stop", "tool_calls", "end_turn"):
            return  # a cut-off or filtered answer is not worth replaying
        self.writes.spawn(self.responses.set(key, entry(completion, tier, decision, headers or {})))

    # ---- pages ------------------------------------------------------------------

    async def live_stats(self) -> dict[str, Any]:
        """What the live feed's `stats` event says: the totals /usage shows, in short."""
        doc = usage_document(await self.usage.stored(), self.pricing, 1)
        return {
            "requests": doc["totalRequests"],
            "tokens": doc["totalTrackedTokens"],
            "tiers": {
                tier: {"requests": row["requests"], "tokens": row["totalTokens"]}
                for tier, row in doc["tiers"].items()
            },
            "cost_usd": doc["cost"]["totalUsd"],
            "frontier_usd": doc["cost"]["frontierEquivalentUsd"],
            "savings_usd": doc["cost"]["savingsUsd"],
            "savings_percent": doc["cost"]["savingsPercent"],
            "fallbacks": doc["fallbacks"],
        }

    async def page(self, path: str, query: str) -> LocalResponse:
        """One of USAGE_PAGES (auth was checked by the caller)."""
        if path == "/usage":
            return await self.usage_page(query)
        if path == "/usage/reset":
            return await self.reset()
        if path == "/metrics":
            return await self.metrics_page()
        if path == "/dashboard":
            return dashboard_page()
        return plotly_script()

    async def usage_page(self, query: str) -> LocalResponse:
        minutes = 60
        values = parse_qs(query).get("minutes")
        if values and values[0].isdigit():
            minutes = min(max(int(values[0]), 1), 24 * 60)
        stored = await self.usage.stored()
        doc = usage_document(stored, self.pricing, minutes)
        for name, budget in (await self.key_budgets()).items():
            doc["keys"].setdefault(name, empty_key_row())["budget"] = budget
        return LocalResponse.json(doc)

    async def reset(self) -> LocalResponse:
        try:
            await self.usage.reset()
        except REDIS_ERRORS as exc:
            if self.health is not None:
                self.health.failed(exc)
            return LocalResponse.error(
                RouterError(
                    503,
                    "Redis is unavailable; the usage was not reset. Try again.",
                    type="server_error",
                    code="store_unavailable",
                )
            )
        log.info("usage counters reset")
        return LocalResponse.json({"reset": True})

    async def metrics_page(self) -> LocalResponse:
        stored = await self.usage.stored()
        body = render_metrics(stored, await self.key_budgets())
        return LocalResponse(200, body, {"content-type": METRICS_TYPE})


def usd(nano: int) -> str:
    return f"${nano / NANO_USD:.6g}"


def refusal_error(name: str, refused: Refusal) -> RouterError:
    """The 429 for a request a key's budget or tokens-per-minute limit turned away."""
    wait = retry_after(refused.retry_s)
    if refused.limit == "tpm":
        message = (
            f"Key {name!r} is over its limit of {refused.allowed} tokens per minute:"
            f" {refused.used} are used this minute (requests in flight included) and this"
            f" request is estimated at {refused.wanted}; retry in {wait} s."
        )
        return RouterError(
            429,
            message,
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers={"retry-after": wait},
        )
    period = "today" if refused.limit == "daily" else "this month"
    message = (
        f"Key {name!r} is over its {refused.limit} budget of {usd(refused.allowed)}:"
        f" {usd(refused.used)} is used {period} (requests in flight included) and this"
        f" request is estimated at {usd(refused.wanted)}; retry in {wait} s."
    )
    return RouterError(
        429,
        message,
        type="insufficient_quota",
        code="budget_exceeded",
        headers={"retry-after": wait},
    )


def empty_key_row() -> dict[str, Any]:
    return {
        "requests": 0,
        "promptTokens": 0,
        "completionTokens": 0,
        "totalTokens": 0,
        "costUsd": 0.0,
        "errors": 0,
        "rateLimited": 0,
        "overBudget": 0,
        "overTokens": 0,
        "cacheHits": 0,
        "cacheSavedUsd": 0.0,
    }
