"""The mitmproxy addon: hooks that read like the protocol, wiring the plain modules.

request          → local pages, auth, parse, policy, adapter rewrite
responseheaders  → routing headers, stream translator for SSE
response         → whole answers translated, upstream errors made OpenAI-style
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from mitmproxy import ctx, http
from mitmproxy import log as mitm_log
from mitmproxy.addonmanager import Loader
from mitmproxy.exceptions import OptionsError
from mitmproxy.proxy.mode_specs import ProxyMode, ReverseMode

from xrouter_core import __version__
from xrouter_core.accounting.cache import close_after
from xrouter_core.accounting.events import EventFeed
from xrouter_core.accounting.limits import Budgets, Reservation, retry_after
from xrouter_core.accounting.redis_topology import (
    SHUTDOWN_REDIS_S,
    Deadline,
    close_later,
    redis_client_sync,
)
from xrouter_core.accounting.responsecache import RecordingStream
from xrouter_core.accounting.service import USAGE_PAGES, Accounting
from xrouter_core.client_keys import ClientKey, KeyRing, RedisKeyRing
from xrouter_core.config import ConfigError, NoConfiguration, Route, Settings, load_settings
from xrouter_core.payments.caps import CapExceeded, RedisSpendLedger, usd
from xrouter_core.payments.payer import Payer
from xrouter_core.payments.x402 import (
    REQUIRED_HEADER_V2,
    SETTLEMENT_HEADER,
    SETTLEMENT_HEADER_V2,
    PaymentRefused,
    settlement,
)
from xrouter_core.plugins.api import PluginAnswer, PluginRequest, Reject
from xrouter_core.plugins.manager import Plugins, load_plugins
from xrouter_core.proxy import dispatch, mitm_compat
from xrouter_core.proxy.logs import log_rejected, quiet_cancelled_callbacks, setup_logging
from xrouter_core.routing.builtin import BuiltinClassifier
from xrouter_core.routing.classifier import Decision, LLMClassifier
from xrouter_core.routing.fallback import (
    Attempt,
    CircuitBreaker,
    TierOrders,
    all_failed_error,
    chain_for,
    fallback_header,
    first_route,
    next_route,
    order_candidates,
    should_fall_back,
    weighted_order,
)
from xrouter_core.routing.models import (
    bad_tier_header,
    has_images,
    has_tools,
    logical_model_names,
    pinned_tier,
    raise_for_tools,
)
from xrouter_core.routing.policy import Policy
from xrouter_core.routing.route_stats import RouteStats
from xrouter_core.routing.rules import (
    RuleChain,
    RuleEnv,
    RuleInput,
    Selection,
    TierRule,
    Trace,
    explain_document,
)
from xrouter_core.routing.sessions import Session, worth_caching
from xrouter_core.routing.tags import (
    KeywordTagger,
    completion_tags,
    header_value,
    merged_words,
    request_tags,
    stream_tags,
)
from xrouter_core.tasks import Tasks
from xrouter_core.tiers import FRONTIER, FRONTIER_INDEX, TIER_INDEX, TIERS
from xrouter_core.wire.adapters import Adapter, adapter_for
from xrouter_core.wire.adapters.anthropic import AnthropicAdapter
from xrouter_core.wire.canonical import (
    Usage,
    error_in_answer,
    not_a_chat_completion,
    usage_from_openai,
)
from xrouter_core.wire.errors import RouterError, error_body, redact
from xrouter_core.wire.headers import (
    ANSWER_FIELDS,
    CACHE_MISS_FIELD,
    DECISION_HEADER,
    FALLBACK_HEADER,
    INPUT_TOKENS_HEADER,
    MODEL_HEADER,
    OUTPUT_TOKENS_HEADER,
    PROVIDER_HEADER,
    RESPONSE_TAGS_HEADER,
    ROUTE_HEADER,
    RULE_HEADER,
    SCORE_HEADER,
    TAGS_HEADER,
    TIER_HEADER,
    UPSTREAM_HEADER,
    HeaderAliases,
    header_lookup,
    routing_fields,
    routing_headers,
    score_text,
)
from xrouter_core.wire.inbound import (
    ANTHROPIC,
    OPENAI,
    RESPONSES,
    ChatRequest,
    load_json_object,
    parse_anthropic_messages,
    parse_openai_chat,
)
from xrouter_core.wire.jsontext import json_bytes
from xrouter_core.wire.local import (
    CHAT_PATHS,
    COUNT_TOKENS_PATH,
    EMBEDDINGS_PATH,
    EVENTS_PATH,
    EXPLAIN_PATH,
    JSON,
    MESSAGES_PATH,
    MODEL_PREFIX,
    RESPONSES_PATH,
    WALLET_PATH,
    LocalResponse,
    body_error,
    check_auth,
    check_header_values,
    check_method,
    count_tokens_estimate,
    model_page,
    models_page,
    no_embeddings_route,
    root_page,
)
from xrouter_core.wire.model_lists import ListingError, fetch_models
from xrouter_core.wire.providers import ANTHROPIC_HOST, OPENAI_STYLE_HOSTS, provider_name
from xrouter_core.wire.render_anthropic import anthropic_error, anthropic_message
from xrouter_core.wire.render_openai import OpenAIChunkRenderer
from xrouter_core.wire.responses import (
    ResponseStore,
    parse_responses,
    remember,
    response_object,
    usage_of_response,
)
from xrouter_core.wire.stream import (
    AssemblingDecoder,
    StreamTranslator,
    TranslatingStream,
    assembling_translator,
    can_assemble,
    translator_for,
)

log = logging.getLogger("xrouter")

META = "xrouter"
# Marks the /events flow, pointed at the feed's local server and streamed.
EVENTS = "xrouter.events"
# flow.metadata: the client key (client_keys.py) a request came with.
CLIENT = "xrouter.client_key"

# The options naming the files the settings are read from.
SETTINGS_OPTIONS = frozenset({"xrouter_env_file", "xrouter_upstreams"})

# Without settings nothing can be routed, and nothing may be forwarded unrouted.
NOT_CONFIGURED = RouterError(
    503,
    "xrouter is not configured: its configuration has errors (see the router's log), and "
    "requests are not forwarded until they are fixed.",
    type="server_error",
    code="not_configured",
)

# GET /events when the feed's local server cannot be started.
FEED_UNAVAILABLE = RouterError(
    503, "The live feed is unavailable (see the router's log).", "server_error", "feed_unavailable"
)

# A failure inside the router while it routed a request: answered, never passed on.
ROUTING_FAILED = RouterError(
    500,
    "xrouter failed while routing this request (see the router's log); it was not forwarded.",
    type="server_error",
    code="routing_failed",
)


@dataclass(slots=True)
class Plan:
    """Where a request goes: the decision, the routes to try in order, its tags, and the
    rule that chose ("" when pinned or without rules)."""

    decision: Decision
    chain: list[Route]
    tags: tuple[str, ...] = ()
    rule: str = ""
    selection: Selection | None = None

    def __iter__(self):
        """`decision, chain = plan`, as plan() answered before it had tags and rules."""
        return iter((self.decision, self.chain))


@dataclass(slots=True)
class RoutedFlow:
    """What the router knows about one routed flow, kept in flow.metadata."""

    chat: ChatRequest
    decision: Decision
    route: Route
    adapter: Adapter
    started: float
    # Fallback: the routes this request may try, which one is being tried, what failed.
    chain: list[Route] = field(default_factory=list)
    index: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    client_headers: list[tuple[str, str]] = field(default_factory=list)
    intercepted: bool = False
    original_host: str = ""
    translator: StreamTranslator | None = None
    # The response that got the routing headers (a fallback's answer is a new one).
    headers_on: http.Response | None = None
    done: bool = False
    # The response-cache key to store a good answer under (response caching on).
    cache_key: str | None = None
    # DECISION_HEADER / UPSTREAM_HEADER: more names for the routing headers.
    aliases: HeaderAliases | None = None
    # The id the live feed's events for this request carry, and (while anyone listens)
    # when the answer's headers came, in ms since the request came.
    event_id: int = 0
    first_byte_ms: float | None = None
    # perf_counter() when the current attempt was sent upstream, and when its response
    # headers came: the route's measured time to first byte (routing/route_stats.py).
    sent_at: float = 0.0
    headers_at: float = 0.0
    # x402: what this request paid (USDC atomic units); a second 402 is never paid.
    paid: int = 0
    # The client key's name (client_keys.py), "" for ROUTER_API_KEY or none.
    client: str = ""
    # What the plugins saw of the request (None when no plugin has request hooks), and
    # whether their post_response saw the answer already (once per request).
    plugin_request: PluginRequest | None = None
    answered: bool = False
    # The agent session it belongs to (routing/sessions.py), None when none or off.
    session: Session | None = None
    # The request's tags, the answer's (routing/tags.py), the rule that chose the route
    # ("" without rules: the classifier as ever).
    tags: tuple[str, ...] = ()
    response_tags: tuple[str, ...] = ()
    rule: str = ""
    # A metered key's reservation (accounting/limits.py), settled when the flow ends.
    reservation: Reservation | None = None


def router_line_or_warning(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or not record.name.startswith("xrouter")


def keep_request_lines_out_of_add_log() -> None:
    """mitmproxy re-dispatches every log record to its deprecated `add_log` hook (a second
    format, a wake-up of the event loop and a pass over every addon: ~4 % of the proxy's
    CPU for the router's one line per request). The router's info lines skip that path;
    the terminal, mitmweb's event log and files still get them, warnings still go
    everywhere."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, mitm_log.LegacyLogEvents):
            handler.addFilter(router_line_or_warning)  # a no-op when already there


@functools.lru_cache(maxsize=256)
def netloc_of(url: str) -> bytes:
    return urlsplit(url).netloc.encode()


# nginx's status for a request whose client closed the connection before its answer.
CLIENT_CLOSED = 499

# The header fields responseheaders adds to a stream it translates.
CHUNKED_FIELD = (b"transfer-encoding", b"chunked")
EVENT_STREAM_FIELD = (b"content-type", b"text/event-stream")
CONTENT_LENGTH = frozenset({b"content-length"})
# What an error answer keeps of the upstream's (or the routing) headers.
KEPT_ON_ERROR = frozenset(
    {
        "retry-after",
        DECISION_HEADER,
        SCORE_HEADER,
        UPSTREAM_HEADER,
        ROUTE_HEADER,
        FALLBACK_HEADER,
        RULE_HEADER,
        TAGS_HEADER,
        PROVIDER_HEADER,
        MODEL_HEADER,
    }
)
# What an error after several attempts keeps of the routing headers set on the last one.
DESCRIBED = frozenset({RULE_HEADER, TAGS_HEADER, PROVIDER_HEADER, MODEL_HEADER})
ROUTE_FIELD_NAME = ROUTE_HEADER.encode()
RULE_FIELD_NAME = RULE_HEADER.encode()
TAGS_FIELD_NAME = TAGS_HEADER.encode()
PROVIDER_FIELD_NAME = PROVIDER_HEADER.encode()
MODEL_FIELD_NAME = MODEL_HEADER.encode()


# The error code of a 200 answer a translation cannot read as a chat completion.
NOT_A_COMPLETION = "not_a_chat_completion"


def translated(routed: RoutedFlow) -> bool:
    """Whether the client's answer is rendered from the route's chat completion (another
    format than the route's), rather than passed on as the route sent it."""
    client, adapter = routed.chat.client_format, routed.adapter
    if client == OPENAI:
        return not adapter.openai_wire
    if client == ANTHROPIC:
        return not adapter.same_format(routed.chat)
    return not (client == RESPONSES and adapter.responses_wire)


# How long shutdown waits for the settlements on their way to the ledger before it closes
# it: each is one ledger update (the small file rewritten under its lock, or one Redis
# transaction), queued behind the others when several paid answers came at once or a
# router beside this one holds the lock. Two seconds covers a busy ledger and keeps a stop
# prompt; with none on its way, there is no wait.
SETTLE_GRACE_S = 2.0


def close_ledger(payer: Payer) -> None:
    """The Redis client of a payer a reload replaces or an unloaded addon leaves: closed
    once its last commands are done (close_later), so neither leaves its connections
    open on the Redis server. It was made here (redis_client_sync); a file ledger holds
    nothing open between its updates."""
    if isinstance(payer.ledger, RedisSpendLedger):
        close_later(payer.ledger.client, sync=True)


class PayerLedger:
    """A payer's ledger as close_after closes it (close_ledger), once the settlements on
    their way to it are recorded."""

    __slots__ = ("payer",)

    def __init__(self, payer: Payer) -> None:
        self.payer = payer

    def close(self) -> None:
        close_ledger(self.payer)


def has_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def not_a_completion_message(routed: RoutedFlow, why: str) -> str:
    """What the client is told of such an answer: the route by its tier (never its key)."""
    return (
        f"Upstream '{routed.route.tier}' answered HTTP 200 with something that is not a "
        f"chat completion ({why})."
    )


def set_routing_headers(
    response: http.Response,
    routed: RoutedFlow,
    extra: Sequence[tuple[bytes, bytes]] = (),
    drop: frozenset[bytes] = frozenset(),
) -> None:
    """The X-Xrouter-* headers (and the `extra` fields, without `drop`) in one pass over
    the fields; an upstream's own headers of those names are replaced."""
    added = routing_fields(
        routed.decision.tier,
        routed.route.tier,
        fallback_header(routed.attempts) if routed.attempts else "",
        routed.decision.score,
    )
    added.append((ROUTE_FIELD_NAME, routed.route.label.encode("utf-8", "replace")))
    if routed.rule:
        added.append((RULE_FIELD_NAME, routed.rule.encode()))
    added.append((TAGS_FIELD_NAME, header_value(routed.tags).encode()))
    added.append((PROVIDER_FIELD_NAME, routed.adapter.name.encode()))
    model = routed.route.model or routed.chat.model
    added.append((MODEL_FIELD_NAME, model.encode("utf-8", "replace")))
    replaced = ANSWER_FIELDS
    if routed.aliases:
        extra = (
            *extra,
            *routed.aliases.fields(routed.decision.tier, routed.route.tier, routed.route.name),
            *routed.aliases.copies(added),
        )
    if extra or drop:
        added.extend(extra)
        replaced = replaced | drop | {name for name, _ in extra}
    kept = tuple(f for f in response.headers.fields if f[0].lower() not in replaced)
    response.headers.fields = kept + tuple(added)
    routed.headers_on = response


def is_loopback(host: str) -> bool:
    """Whether a listen address is reachable from this machine only ("" is every one)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warnings(
    modes: Sequence[str],
    listen_host: str,
    listen_port: int | None,
    router_api_key: str,
    proxyauth: str,
) -> list[str]:
    """One warning per listener that others on the network can reach without a key:
    the API (reverse mode) without ROUTER_API_KEY, a proxy mode without --proxyauth.
    Either spends the provider keys of whoever runs the router."""
    warnings = []
    for spec in modes:
        try:
            mode = ProxyMode.parse(spec)
        except ValueError:
            continue  # mitmproxy itself refuses it
        host = mode.listen_host(listen_host)
        if is_loopback(host):
            continue
        where = f"{host or 'every interface'}:{mode.listen_port(listen_port)}"
        if isinstance(mode, ReverseMode):
            if not router_api_key:
                warnings.append(
                    f"the API listens on {where} without ROUTER_API_KEY: anyone who can reach "
                    "it can spend your provider keys. Set ROUTER_API_KEY, or HOST=127.0.0.1 "
                    "to listen on this machine only."
                )
        elif not proxyauth:
            warnings.append(
                f"the proxy ({mode.type_name} mode) listens on {where} without --proxyauth: "
                "anyone who can reach it can use it, and spend your provider keys. Set "
                "--proxyauth, or HOST=127.0.0.1 to listen on this machine only."
            )
    return warnings


def local_response(flow: http.HTTPFlow, answer: LocalResponse) -> None:
    body = answer.body
    if answer.status >= 400:
        request = flow.request
        log_rejected(answer.status, request.method, request.path, answer.reason)
        path = request.path.split("?", 1)[0]
        if path == MESSAGES_PATH or path.startswith(MESSAGES_PATH + "/"):
            body = anthropic_error(answer.status, body)  # Anthropic clients get their shape
    if flow.request.method == "HEAD":  # the headers of the GET answer, and no body
        flow.response = http.Response.make(answer.status, b"", answer.headers)
        flow.response.headers["content-length"] = str(len(body))
        return
    flow.response = http.Response.make(answer.status, body, answer.headers)


def intercepted_chat(request: http.Request) -> str | None:
    """In proxy mode, the client format of a provider's chat call (routed), or None for
    anything else (passed through untouched)."""
    if request.method != "POST":
        return None
    path = request.path.split("?", 1)[0]
    host = request.pretty_host
    if host in OPENAI_STYLE_HOSTS and path.endswith("/chat/completions"):
        return OPENAI
    if host in OPENAI_STYLE_HOSTS and path.endswith("/responses"):
        return RESPONSES
    if host == ANTHROPIC_HOST and path == MESSAGES_PATH:
        return ANTHROPIC
    return None


def is_count_tokens_call(request: http.Request) -> bool:
    """In proxy mode: Claude Code's token count on api.anthropic.com (answered here)."""
    return (
        request.method == "POST"
        and request.pretty_host == ANTHROPIC_HOST
        and request.path.split("?", 1)[0] == COUNT_TOKENS_PATH
    )


class Xrouter:
    def __init__(self, announces: bool = True) -> None:
        """`announces`: whether this process logs what is the same in every worker of
        one launch (the configuration's notes and warnings, a listener open without a
        key); under `xrouter --workers N` only the first worker does, so each such line
        comes once per start."""
        self.announces = announces
        self.settings: Settings | None = None
        self.client: httpx.AsyncClient | None = None
        self.classifier: LLMClassifier | None = None
        self.policy: Policy | None = None
        self.accounting: Accounting | None = None
        self.tasks = Tasks()
        # The classifier's warm-up and keep-alive, replaced with the classifier on reload.
        self.classifier_tasks = Tasks()
        self.is_running = False
        self.breaker = CircuitBreaker()
        # Tiers with several candidates → them in the order to try (order_tiers), and
        # every route by its breaker key (the tier, or `cheap#2`).
        self.tier_candidates: dict[str, tuple[Route, ...]] = {}
        # Tiers whose order changes per request (weighted) or with measurements.
        self.moving_tiers: dict[str, str] = {}
        self.route_stats: RouteStats | None = None
        self.routes_by_key: dict[str, Route] = {}
        self.fallback_ready = False
        # (host, port) of every route → its connect timeout in seconds.
        self.connect_timeouts: dict[tuple[str, int], float] = {}
        # Finished flows whose log line and counts are written after the answer is sent.
        self.unrecorded: list[Callable[[], None]] = []
        # The (xrouter_env_file, xrouter_upstreams) values the settings in use were read with.
        self.settings_source: tuple[str, str] | None = None
        # Set while mitmproxy rolls a refused options change back (see options_errored).
        self.rolling_back = False
        # The router's own Responses answers, for a follow-up's previous_response_id.
        self.response_store = ResponseStore()
        # Tier → what the provider's model list said of its default route's model.
        self.model_checks: dict[str, str] = {}
        self.header_aliases: HeaderAliases | None = None
        # The configuration notes logged already (each once per process).
        self.notes_logged: set[str] = set()
        # GET /events: kept across reloads, so subscribers stay connected.
        self.feed = EventFeed()
        # x402: the wallet and the spend ledger (payments/), made with the settings.
        self.payer: Payer | None = None
        # The settled amounts on their way to the ledger (record_settled): not cancelled
        # with the other background work; a replaced ledger closes once they are in
        # (close_after), and shutdown waits for them (SETTLE_GRACE_S).
        self.ledger_writes = Tasks()
        # The client keys of ROUTER_KEYS_FILE or of Redis (ROUTER_KEYS_SOURCE=redis); their
        # limits are counted by accounting.
        self.keyring: KeyRing | RedisKeyRing | None = None
        # XROUTER_PLUGINS (plugins/): loaded with the settings, their hooks found once.
        self.plugins = Plugins()
        # The request tagger and the rule chain (routing/tags.py, rules.py), made with the
        # settings; the discover rules' refresh runs in rule_tasks.
        self.tagger = KeywordTagger(merged_words(None))
        self.rules = RuleChain((TierRule(name="tier"),), RuleEnv(lambda route: None))
        self.rule_tasks = Tasks()

    # ---- lifecycle -------------------------------------------------------------

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "xrouter_env_file",
            str,
            "",
            "Path of the .env file to read (default: XROUTER_ENV_FILE or ./.env).",
        )
        loader.add_option(
            "xrouter_fast_dispatch",
            bool,
            True,
            "Look each hook's handlers up once instead of on every flow event (all addons "
            "of this mitmproxy process get faster; false keeps mitmproxy's own dispatch).",
        )
        loader.add_option(
            "xrouter_upstreams",
            str,
            "",
            "Path of upstreams.json (default: UPSTREAMS_FILE or ./upstreams.json).",
        )
        loader.master.options.errored.connect(self.options_errored)

    def options_errored(self, exc: Exception) -> None:
        """An options change was refused (by this addon or another one): mitmproxy restores
        the values from before it and configures every addon with them right after. If
        those are the values the settings in use were read with, there is nothing to redo
        (re-reading could even pick up a file edited since)."""
        self.rolling_back = True

    def configure(self, updated: set[str]) -> None:
        """Read the settings at start, and again when an option naming their files is set.

        At start a bad configuration is logged, one error line per problem, and mitmproxy
        exits on those (mitmdump's errorcheck addon, the lean launcher's too). Once settings
        are in use, a change that gives a bad configuration raises OptionsError (the
        problems, one per line): mitmproxy rolls the option back and the settings in use
        keep routing. Dropping them would leave a router that routes nothing."""
        quiet_cancelled_callbacks()  # before mitmproxy's Master.run: see logs.py
        rolling_back, self.rolling_back = self.rolling_back, False
        if updated & SETTINGS_OPTIONS or self.settings is None:
            source = (ctx.options.xrouter_env_file, ctx.options.xrouter_upstreams)
            if not (rolling_back and source == self.settings_source):
                try:
                    settings = load_settings(
                        env_file=source[0] or None, upstreams_file=source[1] or None
                    )
                    # The wallet: a bad key file stops here too.
                    payer = Payer(settings, redis_client_sync)
                    plugins = load_plugins(settings.plugins, settings.secrets)
                except ConfigError as exc:
                    if self.settings is None:
                        self.refuse_to_start(exc)
                        return
                    for problem in exc.problems:
                        log.warning("configuration change refused: %s", problem)
                    raise OptionsError("\n".join(exc.problems)) from exc
                self.settings_source = source
                replaced, self.payer = self.payer, payer
                if replaced is not None:
                    close_after(self.ledger_writes, PayerLedger(replaced))
                self.use_plugins(plugins)
                self.apply(settings)
        if "mode" in updated or "xrouter_env_file" in updated:
            self.listen_by_default()

    def refuse_to_start(self, exc: ConfigError) -> None:
        """No settings to keep: one error line per problem. While mitmproxy is starting,
        leave at once, before it opens a listener: under mitmdump the addon is configured
        in the script loader's task, while mitmdump brings up its default proxy port
        (*:8080), and its errorcheck would only exit after that. Nothing configured at all
        is a first run: its one message, and exit code 2. An instance loaded into a
        running mitmdump (its script changed) stays, and answers 503 (NOT_CONFIGURED)."""
        proxyserver = ctx.master.addons.get("proxyserver")
        starting = not getattr(proxyserver, "is_running", False)
        if starting and isinstance(exc, NoConfiguration):
            print(exc.message, file=sys.stderr, flush=True)
            raise SystemExit(2)
        for problem in exc.problems:
            log.error("configuration: %s", problem)
        if starting:
            for handler in logging.getLogger().handlers:
                handler.flush()  # the lean launcher writes its lines once per loop pass
            raise SystemExit(1)

    def use_plugins(self, plugins: Plugins) -> None:
        """Put loaded plugins in use: a reload at run time ends the old ones first."""
        if self.is_running:
            self.plugins.end()
        self.plugins = plugins
        if plugins.loaded:
            log.info("plugins: %s", ", ".join(plugins.names()))
        if self.is_running:
            plugins.start(self.tasks.spawn)

    def apply(self, settings: Settings) -> None:
        """Put checked settings in use: at start, and for each accepted change after."""
        self.settings = settings
        setup_logging(settings)
        for note in settings.notes:
            if note not in self.notes_logged:
                self.notes_logged.add(note)
                if self.announces:
                    log.info("configuration: %s", note)
        for warning in settings.warnings:
            if warning not in self.notes_logged:
                self.notes_logged.add(warning)
                if self.announces:
                    log.warning("configuration: %s", warning)
        aliases = HeaderAliases(
            settings.decision_header,
            settings.upstream_header,
            {tier: route.name for tier, route in settings.routes.items() if route.name},
            settings.header_aliases,
        )
        self.header_aliases = aliases if aliases else None
        self.tagger = KeywordTagger(merged_words(settings.tag_words))
        self.fallback_ready = mitm_compat.install(settings.max_body_bytes)
        old_ring = self.keyring
        if isinstance(old_ring, RedisKeyRing):
            old_ring.close()  # a reload: the new settings' ring polls from now on
        if settings.keys_source == "redis":
            self.keyring = RedisKeyRing(settings.redis_url, log.warning)
            if isinstance(old_ring, RedisKeyRing) and old_ring.redis_url == settings.redis_url:
                self.keyring.keys = old_ring.keys  # no 401s until its first read
        elif settings.keys_file:
            self.keyring = KeyRing(settings.keys_file, settings.client_keys, log.warning)
        else:
            self.keyring = None
        breaker = CircuitBreaker(
            settings.routing.breaker_failures, float(settings.routing.breaker_cooldown_s)
        )
        # A reload keeps what the breaker knows of each route it did not change (still
        # self.routes_by_key's, order_tiers below replaces them).
        for route in settings.all_routes():
            state = self.breaker.states.get(route.breaker_key)
            if state is not None and self.routes_by_key.get(route.breaker_key) == route:
                breaker.states[route.breaker_key] = state
        self.breaker = breaker
        self.connect_timeouts = {
            (r.host, r.port): r.connect_timeout_ms / 1000 for r in settings.all_routes()
        }
        # Lazy connections: eager ones break offline and when an upstream is down. Each
        # option only where the addon that declares it is loaded (proxyserver, dumper).
        options: dict[str, Any] = {}
        if "connection_strategy" in ctx.options:
            options["connection_strategy"] = "lazy"
        if "flow_detail" in ctx.options and not ctx.options.has_changed("flow_detail"):
            options["flow_detail"] = 0  # mitmproxy's own per-flow lines would flood the log
        ctx.options.update(**options)
        if self.client is None:
            self.client = httpx.AsyncClient(
                trust_env=False, timeout=httpx.Timeout(30.0, connect=5.0)
            )
        self.classifier_tasks.cancel()  # the old classifier's pings go with it
        self.classifier = (
            LLMClassifier(settings.classifier, self.client)
            if settings.classifier.uses_llm
            else None
        )
        builtin = (
            BuiltinClassifier(settings.classifier.thresholds)
            if settings.classifier.uses_builtin
            else None
        )
        replaced = self.accounting
        if replaced is not None:
            replaced.close()
        # Its client keys' counts in this process go on in the new one.
        self.accounting = Accounting(settings, self.feed, replaced)
        keyring = self.keyring
        if keyring is not None:
            self.accounting.client_keys = lambda: keyring.keys.values()
        self.model_checks = {tier: "checking" for tier in settings.default_routes}
        self.policy = Policy(
            self.classifier,
            self.accounting.decisions,
            settings.decision_cache_ttl,
            builtin=builtin,
            settings=settings.classifier,
            cache_decisions=settings.decision_cache_enabled,
        )
        self.order_tiers(settings)
        if self.is_running:  # a reload at run time: `running` will not come again
            self.start_background_work()

    def order_tiers(self, settings: Settings) -> None:
        """Each tier's candidates in the order its strategy tries them (routing/fallback.py),
        once per configuration: prices do not change while the router runs."""
        assert self.accounting is not None
        pricing = self.accounting.pricing

        def price_of(route: Route) -> float | None:
            price = pricing.resolve_route(route, route.model)
            return price.input + price.output if price.priced else None

        self.tier_candidates = {
            tier: order_candidates(
                found, settings.routing.strategies.get(tier, "ordered"), price_of
            )
            for tier, found in settings.candidates.items()
            if len(found) > 1
        }
        self.rule_tasks.cancel()  # the old rules' discovery goes with them
        env = RuleEnv(price_of)
        self.rules = RuleChain(settings.rules or (TierRule(name="tier"),), env)
        self.routes_by_key = {route.breaker_key: route for route in settings.all_routes()}
        self.moving_tiers = {
            tier: strategy
            for tier, strategy in settings.routing.strategies.items()
            if strategy in ("weighted", "latency", "throughput") and tier in self.tier_candidates
        }
        shared = settings.redis_url if settings.cache_backend in ("auto", "redis") else ""
        replaced_stats, self.route_stats = (
            self.route_stats,
            RouteStats(
                settings.routing,
                settings.candidates,
                shared,
                self.accounting.health,
                pools=self.rules.measured_pools(),
            ),
        )
        if replaced_stats is not None:
            self.route_stats.adopt(replaced_stats)  # the routes a reload keeps stay measured
            replaced_stats.close()
        env.measured_order = self.route_stats.rule_order
        self.note_rule_routes()
        if not self.rules.only_tier:
            log.info(
                "rules: %s",
                ", ".join(f"{rule.name}={rule.KIND}" for rule in self.rules.rules),
            )
        for tier, found in self.tier_candidates.items():
            log.info(
                "tier %s: %d candidates, %s: %s",
                tier,
                len(found),
                settings.routing.strategies.get(tier, "ordered"),
                ", ".join(f"{route.breaker_key}={route.label}" for route in found),
            )

    def note_rule_routes(self) -> None:
        """The routes rules send to (a pinned model, a discovered server's models) get
        their connect timeout and are named in errors by their breaker key."""
        for route in self.rules.routes():
            self.routes_by_key.setdefault(route.breaker_key, route)
            self.connect_timeouts.setdefault(
                (route.host, route.port), route.connect_timeout_ms / 1000
            )

    def listen_by_default(self) -> None:
        """Plain `mitmdump -s addons/xrouter.py` serves the API on HOST:PORT in reverse mode."""
        if self.settings is None:
            return
        if ctx.options.has_changed("mode"):
            self.listen_on_host()
            return
        frontier = self.settings.route(FRONTIER)
        # The reverse target is never contacted as such: every request is answered or rewritten.
        target = (
            f"{frontier.scheme}://{urlsplit(frontier.base_url).netloc}"
            if frontier
            else "http://127.0.0.1:9"
        )
        host = self.settings.host
        listen = f"[{host}]" if ":" in host else host
        ctx.options.update(mode=[f"reverse:{target}@{listen}:{self.settings.port}"])
        self.chose_mode = True

    def listen_on_host(self) -> None:
        """A mode the user chose (`--mode regular@8080`) listens on HOST, as the API does,
        not on every interface (mitmproxy's default): unless `listen_host` is set."""
        assert self.settings is not None
        if "listen_host" not in ctx.options:
            return
        if ctx.options.has_changed("listen_host") and not getattr(self, "chose_host", False):
            return
        if ctx.options.listen_host != self.settings.host:
            self.chose_host = True
            ctx.options.update(listen_host=self.settings.host)

    def warn_if_exposed(self) -> None:
        assert self.settings is not None
        if not self.announces:
            return
        options = ctx.options
        for warning in exposure_warnings(
            options.mode,
            options.listen_host if "listen_host" in options else "",
            options.listen_port if "listen_port" in options else None,
            self.settings.router_api_key or ("client keys" if self.keyring is not None else ""),
            options.proxyauth if "proxyauth" in options else "",
        ):
            log.warning(warning)

    def running(self) -> None:
        if self.settings is None:
            return
        self.warn_if_exposed()
        keep_request_lines_out_of_add_log()
        if ctx.options.xrouter_fast_dispatch:
            dispatch.speed_up(ctx.master.addons)
        proxyserver = ctx.master.addons.get("proxyserver")
        if getattr(self, "chose_mode", False) and proxyserver is not None:
            # On Python 3.12+ mitmproxy may bring its servers up from the mode it had before
            # this addon chose one; bring them in line (a no-op where they already are).
            self.tasks.spawn(proxyserver.setup_servers())
        for default in self.settings.default_routes.values():
            log.info(
                "default route %s: %s %s (%s)",
                default.tier,
                default.provider,
                default.model,
                default.why,
            )
        log.info(
            "xrouter ready: %s",
            ", ".join(f"{t}={r.base_url}" for t, r in self.settings.routes.items()),
        )
        self.is_running = True
        self.plugins.start(self.tasks.spawn)
        self.start_background_work()

    def start_background_work(self) -> None:
        """The usage flusher and the classifier's warm-up and keep-alive: once the proxy
        runs, and again for the new ones a reload at run time puts in place."""
        assert self.settings is not None
        if self.accounting is not None:
            self.accounting.start()
        if isinstance(self.keyring, RedisKeyRing):
            self.keyring.start()
        if self.route_stats is not None:
            self.route_stats.start()
        if self.classifier is not None and self.settings.classifier.warmup:
            self.classifier_tasks.spawn(self.classifier.warm_up())
        if self.classifier is not None and self.settings.classifier.keep_alive_ms > 0:
            self.classifier_tasks.spawn(self.classifier.keep_alive())
        if self.settings.default_routes:
            self.tasks.spawn(self.check_default_models(self.settings))
        if self.rules.discover and self.client is not None:
            self.rule_tasks.spawn(self.rules.keep_discovering(self.client, self.note_rule_routes))

    async def check_default_models(self, settings: Settings) -> None:
        """Each default route's model against its provider's own model list, read in a
        thread (wire/model_lists.py is blocking httpx; the proxy's loop goes on). A list
        that cannot be read leaves the router running, and says it was not checked."""
        by_provider: dict[str, list] = {}
        for default in settings.default_routes.values():
            by_provider.setdefault(default.provider, []).append(default)
        for provider, chosen in by_provider.items():
            first = chosen[0]
            try:
                listed = await asyncio.to_thread(
                    fetch_models, first.listing, first.base_url, first.api_key, 5.0
                )
            except ListingError as exc:
                problem = redact(str(exc), settings.secrets)
                if self.settings is settings:
                    self.model_checks.update({d.tier: f"not checked: {problem}" for d in chosen})
                log.warning(
                    "model list of %s not checked (%s): %s used unconfirmed",
                    provider,
                    problem,
                    ", ".join(f"{d.tier}={d.model}" for d in chosen),
                )
                continue
            missing = [d for d in chosen if d.model not in listed]
            if self.settings is settings:
                self.model_checks.update(
                    {d.tier: "not listed" if d in missing else "listed" for d in chosen}
                )
            for default in missing:
                log.warning(
                    "%s does not list %s (%s): that tier's requests will fail until %s_MODEL "
                    "names a model it offers",
                    provider,
                    default.model,
                    default.tier,
                    default.tier.upper(),
                )
            if len(missing) < len(chosen):
                log.info(
                    "model list of %s checked: %s listed",
                    provider,
                    ", ".join(dict.fromkeys(d.model for d in chosen if d not in missing)),
                )

    def done(self) -> Awaitable[None] | None:
        """At shutdown (and when mitmproxy unloads this addon): the last counts and log
        lines written, background work stopped, the stores' files closed. At shutdown,
        also what is left to await: the open client connections ended
        (mitm_compat.end_connections), the budget writes on their way to Redis and the
        settlements on their way to the ledger recorded (Budgets.settle_last,
        settle_last), then the upstream connections (the shared httpx client). The
        shutdown's Redis writes (the last usage flush, the budget writes) share one
        deadline, SHUTDOWN_REDIS_S, so a router whose Redis is gone still exits promptly.
        An unloaded addon's client is closed in a task of its own, and its ledger once
        its settlements are in (close_after)."""
        should_exit = getattr(ctx.master, "should_exit", None)
        stopping = should_exit is not None and should_exit.is_set()
        deadline = Deadline(SHUTDOWN_REDIS_S)
        self.tasks.cancel()
        self.classifier_tasks.cancel()
        self.rule_tasks.cancel()
        if isinstance(self.keyring, RedisKeyRing):
            self.keyring.close()
        self.record_finished()
        self.plugins.end()
        self.feed.close()
        if self.route_stats is not None:
            self.route_stats.close()
        budgets = None
        if self.accounting is not None:
            budgets = self.accounting.budgets
            self.accounting.close(deadline)  # the last usage counts and request log lines
            self.accounting = None
        client, self.client = self.client, None
        if not stopping:
            # A script reload: the client connections stay, the new instance has its own
            # httpx client and payer.
            if client is not None and has_running_loop():
                self.tasks.spawn(client.aclose())
            if self.payer is not None:
                close_after(self.ledger_writes, PayerLedger(self.payer))
            return None
        return self.shut_down(
            mitm_compat.open_connection_tasks(), client, self.payer, budgets, deadline
        )

    async def shut_down(
        self,
        connections: list[asyncio.Task],
        client: httpx.AsyncClient | None,
        payer: Payer | None,
        budgets: Budgets | None = None,
        deadline: Deadline | None = None,
    ) -> None:
        if connections:
            await mitm_compat.end_connections(connections)
        if budgets is not None:
            await budgets.settle_last(deadline or Deadline(SHUTDOWN_REDIS_S))
        if payer is not None:
            await self.settle_last(payer)
        if client is not None:
            await client.aclose()

    async def settle_last(self, payer: Payer) -> None:
        """At shutdown, after the client connections are ended: the settlements on their
        way to the ledger recorded, waiting at most SETTLE_GRACE_S and not at all when
        none is, then the ledger closed. The wait is
        logged (it delays the exit), and so is a settlement still on its way after it:
        its payment stays counted as spent, not settled."""
        if self.ledger_writes:
            log.info(
                "x402: waiting for %d settlement(s) to reach the ledger (at most %ss)",
                len(self.ledger_writes),
                SETTLE_GRACE_S,
            )
            await self.ledger_writes.wait(SETTLE_GRACE_S)
        if self.ledger_writes:
            log.warning(
                "x402: %d settlement(s) not recorded in the ledger within %ss of shutdown;"
                " their payments stay counted as spent, not as settled",
                len(self.ledger_writes),
                SETTLE_GRACE_S,
            )
        close_ledger(payer)

    # ---- request ---------------------------------------------------------------

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        """A plain function, so that the lean launcher can run it inline (mitm_compat point
        5): a chat request whose answer or route needs no waiting is done before this
        returns. Otherwise it returns what is left, and mitmproxy awaits that."""
        if flow.response is not None:
            return None
        reverse = isinstance(flow.client_conn.proxy_mode, ReverseMode)
        if self.settings is None:
            # The reverse target is the frontier host: passing a request on would hand it
            # the client's router key, unrouted. Such requests, and the chat calls proxy
            # mode routes, are answered instead; other proxy traffic passes as ever.
            if reverse or intercepted_chat(flow.request) is not None:
                local_response(flow, LocalResponse.error(NOT_CONFIGURED))
            return None
        if reverse:
            try:
                pending = self.serve_own_endpoint(flow)
            except Exception:  # noqa: BLE001 - nothing may be forwarded unrouted
                self.answer_unrouted(flow, failed=True)
                return None
            if pending is None:
                self.answer_unrouted(flow)
                return None
            return self.finish_own_endpoint(flow, pending)
        kind = intercepted_chat(flow.request)
        if kind is None:
            if is_count_tokens_call(flow.request):
                return dispatch.run_until_it_waits(self.count_tokens(flow, intercepted=True))
            return None  # Anything else in proxy mode passes through untouched.
        return dispatch.run_until_it_waits(
            self.route_chat(flow, intercepted=True, client_format=kind)
        )

    async def finish_own_endpoint(self, flow: http.HTTPFlow, pending: Awaitable[None]) -> None:
        """The rest of a reverse-mode request that had to wait, under the same guard."""
        try:
            await pending
        except Exception:  # noqa: BLE001 - nothing may be forwarded unrouted
            self.answer_unrouted(flow, failed=True)
            return
        self.answer_unrouted(flow)

    def answer_unrouted(self, flow: http.HTTPFlow, failed: bool = False) -> None:
        """Reverse mode's last guard: a request that leaves the request hook neither
        answered nor routed would go on to the reverse target (the frontier host) as the
        client sent it, router key and all. It is answered instead: 500 after a failure
        (logged with its traceback), else 404 (a path no handler took)."""
        if flow.response is not None and not failed:
            return
        if failed:
            log.exception("request failed: %s %s", flow.request.method, flow.request.path[:200])
        elif META in flow.metadata:
            return  # routed: the request was rewritten for its route
        elif flow.metadata.get(EVENTS):
            return  # GET /events, pointed at the live feed's own loopback server
        flow.metadata.pop(META, None)
        flow.metadata.pop(mitm_compat.MARK, None)
        if failed:
            local_response(flow, LocalResponse.error(ROUTING_FAILED))
        else:
            path = flow.request.path.split("?", 1)[0]
            error = RouterError(404, f"Unknown path {path[:200]!r}.", code="not_found")
            local_response(flow, LocalResponse.error(error))

    def serve_own_endpoint(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        assert self.settings is not None
        path = flow.request.path.split("?", 1)[0]
        try:
            check_method(path, flow.request.method)
            client = check_auth(
                path,
                flow.request.headers,
                self.settings.router_api_key,
                self.keyring.find if self.keyring is not None else None,
                # The usage pages (and explain) want ROUTER_API_KEY, where there is one.
                client_keys_allowed=(path not in USAGE_PAGES and path != EXPLAIN_PATH)
                or not self.settings.router_api_key,
            )
            check_header_values(flow.request.headers.fields)
            if client is not None:
                flow.metadata[CLIENT] = client
        except RouterError as exc:
            local_response(flow, LocalResponse.error(exc))
            return None
        if path in CHAT_PATHS:
            return dispatch.run_until_it_waits(self.route_chat(flow, intercepted=False))
        if path == MESSAGES_PATH:
            return dispatch.run_until_it_waits(
                self.route_chat(flow, intercepted=False, client_format=ANTHROPIC)
            )
        if path == RESPONSES_PATH:
            return dispatch.run_until_it_waits(
                self.route_chat(flow, intercepted=False, client_format=RESPONSES)
            )
        if path in USAGE_PAGES:
            return self.serve_usage_page(flow, path)
        if path == EVENTS_PATH:
            return self.serve_events(flow)
        if path == WALLET_PATH:
            return self.serve_wallet(flow)
        if path == COUNT_TOKENS_PATH:
            return dispatch.run_until_it_waits(self.count_tokens(flow, intercepted=False))
        if path == EMBEDDINGS_PATH:
            return dispatch.run_until_it_waits(self.embeddings(flow))
        if path == EXPLAIN_PATH:
            return dispatch.run_until_it_waits(self.explain(flow))
        if path == "/health":
            local_response(flow, LocalResponse.json(self.health()))
        elif path == "/v1/models":
            local_response(flow, models_page(logical_model_names(self.settings.routing)))
        elif path.startswith(MODEL_PREFIX):
            local_response(flow, model_page(path, logical_model_names(self.settings.routing)))
        elif path == "/":
            local_response(flow, root_page(__version__))
        return None

    def anthropic_route(self) -> Route | None:
        """The route count_tokens asks: an Anthropic one a request would be sent to,
        frontier first. Each tier's candidates are taken in the order its strategy tries
        them, past those whose circuit is open (as a chat's first attempt is)."""
        assert self.settings is not None
        for tier in reversed(TIERS):
            route = self.settings.route(tier)
            if route is None:
                continue
            for candidate in self.tier_candidates.get(tier) or (route,):
                if self.breaker.is_open(candidate.breaker_key):
                    continue
                if provider_name(candidate) == "anthropic":
                    return candidate
        return None

    async def count_tokens(self, flow: http.HTTPFlow, intercepted: bool) -> None:
        """POST /v1/messages/count_tokens: asked of an Anthropic route if there is one,
        else (or when it fails) estimated, and marked so."""
        try:
            doc = load_json_object(flow.request.get_content(strict=False))
        except RouterError as exc:
            content_type = flow.request.headers.get("content-type", "")
            local_response(flow, LocalResponse.error(body_error(content_type, exc)))
            return
        route = self.anthropic_route()
        if route is not None and self.client is not None:
            adapter = adapter_for(route)
            assert isinstance(adapter, AnthropicAdapter)
            upstream = adapter.count_tokens_request(
                route,
                doc,
                flow.request.headers.items(multi=True),
                keep_client_auth=intercepted
                and not route.api_key
                and route.host == flow.request.pretty_host,
            )
            try:
                # In a task of its own: this may run on in another task (run_until_it_waits).
                answer = await asyncio.ensure_future(
                    self.client.post(upstream.url, headers=upstream.headers, content=upstream.body)
                )
            except httpx.HTTPError as exc:
                log.info("count_tokens: route %s is unreachable (%s); estimating", route.tier, exc)
            else:
                if answer.status_code == 200:
                    local_response(flow, LocalResponse(200, answer.content, {"content-type": JSON}))
                    return
                log.info(
                    "count_tokens: route %s answered HTTP %d; estimating",
                    route.tier,
                    answer.status_code,
                )
        local_response(flow, count_tokens_estimate(doc))

    async def embeddings(self, flow: http.HTTPFlow) -> None:
        """POST /v1/embeddings, forwarded to the EMBEDDINGS_* route (OpenAI wire)."""
        assert self.settings is not None
        route = self.settings.embeddings
        if route is None or self.client is None:
            local_response(flow, no_embeddings_route())
            return
        raw = flow.request.get_content(strict=False) or b""
        if route.model:
            try:
                raw = json_bytes({**load_json_object(raw), "model": route.model})
            except RouterError as exc:
                content_type = flow.request.headers.get("content-type", "")
                local_response(flow, LocalResponse.error(body_error(content_type, exc)))
                return
        path = "/embeddings" if route.base_path else "/v1/embeddings"
        headers = {"content-type": JSON}
        if route.api_key:
            headers["authorization"] = f"Bearer {route.api_key}"
        try:
            answer = await asyncio.ensure_future(
                self.client.post(route.base_url + path, headers=headers, content=raw, timeout=120)
            )
        except httpx.HTTPError as exc:
            message = f"The embeddings route ({route.base_url}) is unreachable: {exc}"
            error = RouterError(
                502, redact(message, self.settings.secrets), "upstream_unreachable", "upstream_502"
            )
            local_response(flow, LocalResponse.error(error))
            return
        content_type = answer.headers.get("content-type", JSON)
        flow.response = http.Response.make(
            answer.status_code, answer.content, {"content-type": content_type}
        )
        if answer.status_code >= 400:
            log_rejected(answer.status_code, "POST", EMBEDDINGS_PATH, "upstream_error")

    async def explain(self, flow: http.HTTPFlow) -> None:
        """POST /v1/route/explain: a chat completions body (or {"text": ...}) planned as
        if it were sent, without calling a provider: the rule that matched, the
        classifier's score, the tags, the routes in the order they would be tried."""
        assert self.policy is not None and self.accounting is not None
        try:
            doc = load_json_object(flow.request.get_content(strict=False))
            if "messages" not in doc and isinstance(doc.get("text"), str):
                doc = {**doc, "messages": [{"role": "user", "content": doc["text"]}]}
                doc.pop("text")
            chat = parse_openai_chat(json_bytes(doc))
            trace = Trace()
            plan = await self.plan(chat, flow.request.headers.get(TIER_HEADER), trace=trace)
        except RouterError as exc:
            content_type = flow.request.headers.get("content-type", "")
            local_response(flow, LocalResponse.error(body_error(content_type, exc)))
            return
        selection = plan.selection
        if selection is None and not plan.decision.source.startswith("pinned"):
            # No rules configured: the tier rule alone decided, as the classifier.
            selection = Selection(self.rules.rules[0], plan.decision.tier, decision=plan.decision)
            trace.rows.append({"name": selection.rule.name, "kind": "tier", "matched": True})
        classifier = selection.decision if selection else None
        if classifier is None:
            classifier = await self.policy.decide_fresh(chat)  # shown, not used
        pricing = self.accounting.pricing

        def prices(route: Route) -> tuple[float, float, bool]:
            price = pricing.resolve_route(route, route.model)
            return price.input, price.output, price.priced

        index, _ = first_route(plan.chain, self.breaker)
        local_response(
            flow,
            LocalResponse.json(
                explain_document(
                    selection,
                    plan.decision,
                    plan.chain,
                    index,
                    plan.tags,
                    trace,
                    classifier,
                    prices,
                    self.breaker.is_open,
                    None if self.route_stats is None else self.route_stats.figures,
                )
            ),
        )

    async def serve_usage_page(self, flow: http.HTTPFlow, path: str) -> None:
        assert self.accounting is not None
        query = flow.request.path.partition("?")[2]
        local_response(flow, await self.accounting.page(path, query))

    async def serve_wallet(self, flow: http.HTTPFlow) -> None:
        """GET /wallet: the address, today's spend and caps (the ledger read in a worker
        thread: it may be a file or Redis) and, with an RPC URL, the USDC balance."""
        payer = self.payer
        local_response(flow, LocalResponse.json(await payer.page(self.client) if payer else {}))

    async def serve_events(self, flow: http.HTTPFlow) -> None:
        """GET /events: the flow goes to the feed's local server (its key was checked),
        and its answer is streamed (see responseheaders)."""
        try:
            host, port = await self.feed.listen()
        except OSError as exc:  # answered: left alone, the flow would go to the reverse target
            log.warning("events: the feed's local server cannot listen: %s", exc)
            local_response(flow, LocalResponse.error(FEED_UNAVAILABLE))
            return
        request = flow.request
        query = request.path.partition("?")[2]
        request.headers.fields = ((b"host", f"{host}:{port}".encode()),)
        request.scheme, request.host, request.port = "http", host, port
        request.path = self.feed.path(query)
        flow.metadata[EVENTS] = True

    def health(self) -> dict[str, Any]:
        assert self.settings is not None
        doc = {"status": "ok", **self.settings.public()}
        for tier, check in self.model_checks.items():
            doc["default_routes"][tier]["model_list"] = check
        for tier, route in self.settings.routes.items():
            doc["routes"][tier]["adapter"] = provider_name(route)  # what `auto` resolved to
        doc["classifier"]["last_call_ok"] = self.classifier.last_ok if self.classifier else None
        doc["classifier"]["last_error"] = self.classifier.last_error if self.classifier else None
        doc["plugins"] = self.plugins.names()
        doc["fallback"] = {
            "enabled": self.settings.routing.fallback_enabled and self.fallback_ready,
            "chain": list(self.settings.routing.fallback_chain),
            "circuit_breaker": self.breaker.public(),
        }
        doc["strategies"] = {
            tier: self.settings.routing.strategies.get(tier, "ordered")
            for tier in self.settings.routes
        }
        if self.route_stats is not None:
            doc["route_stats"] = self.route_stats.public()
        if not self.rules.only_tier:
            doc["rules"] = self.rules.public()
        return doc

    def server_connect(self, data) -> None:
        """Connect timeout per route (mitmproxy has none of its own)."""
        timeout = self.connect_timeouts.get(data.server.address)
        if timeout:
            mitm_compat.guard_connect(data.server, timeout)

    async def route_chat(
        self, flow: http.HTTPFlow, intercepted: bool, client_format: str = OPENAI
    ) -> None:
        """Route one chat request; a failure of the router's own (a bug, a backend's
        surprise) is answered 500. Left to mitmproxy, the flow would go on unrouted: to the
        reverse target, the frontier host, with the client's router key."""
        try:
            await self.route_chat_unguarded(flow, intercepted, client_format)
        except Exception:  # noqa: BLE001 - nothing may be forwarded unrouted
            log.exception("routing failed for %s %s", flow.request.method, flow.request.path)
            # Even once marked routed (a failure while the request was rewritten): the
            # request may be half-rewritten, so it is answered, not sent.
            flow.metadata.pop(META, None)
            flow.metadata.pop(mitm_compat.MARK, None)
            local_response(flow, LocalResponse.error(ROUTING_FAILED))

    async def route_chat_unguarded(
        self, flow: http.HTTPFlow, intercepted: bool, client_format: str = OPENAI
    ) -> None:
        """Parse, answer from the response cache or decide, and point the flow at its route.

        `request` starts this in the connection's task and, at its first real wait, hands
        the rest to another (dispatch.run_until_it_waits): what it awaits must not be bound
        to the task it started in. Backend I/O runs in tasks of its own (the caches'
        backends, the classifier)."""
        assert self.settings is not None and self.policy is not None
        started = time.perf_counter()
        client_headers = list(flow.request.headers.items(multi=True))
        headers = header_lookup(client_headers)
        try:
            # get_content's own look-up of content-encoding is a scan of the fields.
            content = (
                flow.request.get_content(strict=False)
                if "content-encoding" in headers
                else flow.request.raw_content
            )
            if client_format == RESPONSES:
                chat = parse_responses(content, self.response_store.get, self.response_store.item)
            elif client_format == ANTHROPIC:
                chat = parse_anthropic_messages(content)
            else:
                chat = parse_openai_chat(content)
        except RouterError as exc:
            content_type = flow.request.headers.get("content-type", "")
            local_response(flow, LocalResponse.error(body_error(content_type, exc)))
            return
        assert self.accounting is not None
        client: ClientKey | None = flow.metadata.get(CLIENT)
        if client is not None and client.rpm:
            wait = await self.accounting.limits.take(client.name, client.rpm)
            if wait is not None:
                self.accounting.usage.count(f"k|{client.name}|limited")
                error = RouterError(
                    429,
                    f"Key {client.name!r} is over its limit of {client.rpm} requests per"
                    f" minute; retry in {retry_after(wait)} s.",
                    type="rate_limit_error",
                    code="rate_limit_exceeded",
                    headers={"retry-after": retry_after(wait)},
                )
                local_response(flow, LocalResponse.error(error))
                return
        request = None
        if self.plugins.pre_request or self.plugins.post_response:
            request = PluginRequest(chat, {k.lower(): v for k, v in client_headers})
            try:
                await self.plugins.before(request)
            except Reject as exc:
                error = RouterError(exc.status, exc.message, code=exc.code)
                local_response(flow, LocalResponse.error(error))
                return
            if request.changed:
                chat.original, chat.raw = None, b""  # the edited body goes, translated
        event_id = self.feed.next_id()
        self.feed.start(event_id, chat)
        name = client.name if client is not None else ""
        metered = client if client is not None and client.metered else None
        try:
            cache_key, cached = await self.accounting.cached_answer(chat, event_id, name, metered)
        except RouterError as exc:  # a hit for a key over its budget
            local_response(flow, LocalResponse.error(exc))
            self.feed.complete(event_id, exc.status, error=exc.code)
            return
        if cached is not None:
            local_response(flow, cached)
            return
        session = await self.accounting.sessions.begin(chat, headers, len(content))
        if session is not None:
            # A translating route marks the prompt for its provider's cache.
            chat.cache_prefix = worth_caching(chat, session.id)
        try:
            ceiling = TIER_INDEX[client.max_tier] if client and client.max_tier else None
            plan = await self.plan(
                chat,
                headers.get(TIER_HEADER),
                ceiling,
                request.tier if request is not None else None,
                request.forced_by if request is not None else "",
                session,
            )
            decision, chain = plan.decision, plan.chain
            if chat.responses is not None and chat.responses.native_only is not None:
                # A hosted tool: only routes that speak Responses can serve it.
                chain = [r for r in chain if adapter_for(r).responses_wire]
                if not chain:
                    raise chat.responses.native_only
        except RouterError as exc:
            local_response(flow, LocalResponse.error(exc))
            self.feed.complete(event_id, exc.status, error=exc.message)
            return
        self.feed.classified(event_id, decision, plan.tags, plan.rule)
        index, skipped = first_route(chain, self.breaker)
        reservation = None
        if client is not None and client.metered:
            try:
                reservation = await self.accounting.reserve(client, chat, chain[index])
            except RouterError as exc:
                local_response(flow, LocalResponse.error(exc))
                self.feed.complete(event_id, exc.status, error=exc.code)
                return
        routed = RoutedFlow(
            chat,
            decision,
            chain[index],
            adapter_for(chain[index]),
            started,
            chain,
            index,
            [Attempt(t, error="circuit_open") for t in skipped],
            client_headers,
            intercepted,
            flow.request.pretty_host if intercepted else "",
            cache_key=cache_key,
            aliases=self.header_aliases,
            event_id=event_id,
            client=name,
            plugin_request=request,
            session=session,
            tags=plan.tags,
            rule=plan.rule,
            reservation=reservation,
        )
        flow.metadata[mitm_compat.MARK] = True
        flow.metadata[META] = routed
        self.point_at(flow, routed, chain[index])
        self.feed.routed(event_id, routed.route, routed.adapter.name, routed.attempts)

    async def plan(
        self,
        chat: ChatRequest,
        tier_header: str | None,
        ceiling: int | None = None,
        forced: Any = None,
        forced_by: str = "",
        session: Session | None = None,
        trace: Trace | None = None,
    ) -> Plan:
        """The tier (forced by a plugin, pinned by name or header, else chosen by the rule
        chain, whose last rule is the classifier; tools may raise a classified tier; an
        agent session may stay on a higher tier it is cached on, when that is cheaper) and
        the routes to try in order; RouterError when the request cannot be served.
        `ceiling`: the highest tier the client's key may reach, which wins over everything
        else. `trace`: for /v1/route/explain, each rule tried."""
        assert self.settings is not None and self.policy is not None
        routing = self.settings.routing
        if bad_tier_header(tier_header, routing):
            raise RouterError(
                400,
                f"X-Xrouter-tier must name a tier ({', '.join(TIERS)}) or a category"
                f" ({', '.join(routing.categories)}), not {tier_header!r}.",
                code="invalid_tier",
            )
        text = self.policy.input_of(chat)
        tags = request_tags(self.tagger, text, chat.body, chat.messages)
        needs_vision = has_images(chat.messages)
        pinned = forced or pinned_tier(chat.model, tier_header, routing)
        selection: Selection | None = None
        if forced:
            decision = Decision(TIER_INDEX[forced], f"plugin:{forced_by}")
        elif pinned is not None:
            decision = Decision(TIER_INDEX[pinned], "pinned")
        elif self.rules.only_tier:
            decision = await self.policy.decide(chat, text)  # no rules: as ever
        else:
            chains: dict[int, list[Route]] = {}

            def usable(found: Selection) -> bool:
                if isinstance(found.rule, TierRule):
                    return True  # the classifier's tier: served or refused as ever
                chain = self.rule_chain(found, needs_vision, ceiling)
                chains[id(found)] = chain
                return bool(chain)

            request = RuleInput(chat.model or "", tags, lambda: self.policy.decide(chat, text))
            selection = await self.rules.select(request, usable, trace)
            if not isinstance(selection.rule, TierRule):
                decision = Decision(selection.tier, "rule", detail=selection.rule.name)
                plan = Plan(decision, chains[id(selection)], tags, selection.rule.name)
                plan.selection = selection
                return plan
            assert selection.decision is not None
            decision = selection.decision
        tier = raise_for_tools(decision.tier, chat.body, routing)
        if tier != decision.tier:
            decision = Decision(
                tier, decision.source + "+tools", decision.ms, decision.detail, decision.score
            )
        if ceiling is not None and tier > ceiling:
            tier = ceiling
            decision = Decision(
                tier, decision.source + "+ceiling", decision.ms, decision.detail, decision.score
            )
        if session is not None and pinned is None and not needs_vision:
            assert self.accounting is not None
            top = FRONTIER_INDEX if ceiling is None else ceiling
            decision = self.accounting.sessions.adjust(session, decision, top)
            tier = decision.tier
        needs_tools = has_tools(chat.body)
        candidates: Mapping[str, Sequence[Route]] = self.tier_candidates
        if self.moving_tiers:
            candidates = TierOrders(candidates, self.moving_tiers, self.tier_order)
        chain = chain_for(
            TIERS[tier],
            self.settings.routes,
            routing,
            needs_vision,
            candidates,
            needs_tools,
            ceiling,
        )
        if ceiling is not None and not chain:
            raise RouterError(
                403,
                f"This key may use tiers up to '{TIERS[ceiling]}', and no route at or"
                " below it can serve the request.",
                code="tier_ceiling",
            )
        if chain:
            plan = Plan(decision, chain, tags, selection.rule.name if selection else "")
            plan.selection = selection
            return plan
        if needs_vision:
            raise RouterError(
                400,
                "The request carries images and no route at or above tier "
                f"'{TIERS[tier]}' is marked vision-capable (set <TIER>_VISION=true).",
                code="no_vision_route",
            )
        if needs_tools:
            raise RouterError(
                400,
                "The request carries tools and every route at or above tier "
                f"'{TIERS[tier]}' is marked as unable to call them (tools: false).",
                code="no_tools_route",
            )
        raise RouterError(500, "No route is configured.", type="server_error")

    def tier_order(self, tier: str) -> tuple[Route, ...]:
        """A weighted or measured tier's candidates in the order to try for this request."""
        found = self.tier_candidates[tier]
        if self.moving_tiers[tier] == "weighted":
            return weighted_order(found)
        assert self.route_stats is not None
        return self.route_stats.order(tier) or found

    def rule_chain(
        self, selection: Selection, needs_vision: bool, ceiling: int | None
    ) -> list[Route]:
        """The routes a rule's selection tries: its pool in order; or its route, then
        that route's tier's chain; or its tier's chain, each tier's candidates in the
        order of its strategy (a weighted or measured one's for this request, as the
        classifier's path, asked only of a tier the chain can use). Only vision routes
        for images, only routes at or below a key's ceiling."""
        assert self.settings is not None

        def fits(route: Route) -> bool:
            return (not needs_vision or route.vision) and (
                ceiling is None or TIER_INDEX[route.tier] <= ceiling
            )

        if selection.chain is not None:
            return [route for route in selection.chain if fits(route)]
        first = selection.first
        tier = first.tier if first is not None else TIERS[selection.tier]
        candidates: Mapping[str, Sequence[Route]] = self.tier_candidates
        if self.moving_tiers:
            candidates = TierOrders(candidates, self.moving_tiers, self.tier_order)
        routes, routing = self.settings.routes, self.settings.routing
        rest = chain_for(tier, routes, routing, needs_vision, candidates, ceiling=ceiling)
        if first is None or not fits(first):
            return rest
        return [first, *(r for r in rest if r.breaker_key != first.breaker_key)]

    def point_at(self, flow: http.HTTPFlow, routed: RoutedFlow, route: Route) -> None:
        """Rewrite the flow's request for a route (the first one, or a fallback)."""
        adapter = adapter_for(route)
        routed.route, routed.adapter = route, adapter
        upstream = adapter.build_request(
            route,
            routed.chat,
            routed.client_headers,
            keep_client_auth=routed.intercepted
            and not route.api_key
            and route.host == routed.original_host,
        )
        request = flow.request
        # The headers (the client's are in routed.client_headers) are emptied first and
        # set last in one go: with no Host header in place, pointing the request at its
        # route rewrites none, and each header write would scan every field.
        request.headers.fields = ()
        mitm_compat.point_request(request, upstream.url)
        fields = [
            (k.encode(), v.encode("utf-8", "surrogateescape"))
            for k, v in upstream.headers.items()
            if k.lower() not in ("host", "content-length")
        ]
        fields.append((b"host", netloc_of(upstream.url)))
        fields.append((b"content-length", str(len(upstream.body)).encode()))
        request.headers.fields = tuple(fields)
        request.raw_content = upstream.body
        if log.isEnabledFor(logging.DEBUG):
            chat = routed.chat
            dropped = upstream.dropped + (() if adapter.same_format(chat) else chat.dropped)
            if dropped:
                log.debug("route %s cannot take, dropped: %s", route.tier, ", ".join(dropped))
        flow.metadata[mitm_compat.FIRST_BYTE_TIMEOUT] = route.first_byte_timeout_ms / 1000
        routed.sent_at = time.perf_counter()

    # ---- response --------------------------------------------------------------

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        routed: RoutedFlow | None = flow.metadata.get(META)
        if routed is None or flow.response is None:
            if flow.response is not None and flow.metadata.get(EVENTS):
                flow.response.stream = True  # the live feed: each event as it comes
            return
        response = flow.response
        routed.headers_at = time.perf_counter()
        if self.feed.listened:
            routed.first_byte_ms = (routed.headers_at - routed.started) * 1000
        if not should_fall_back(response.status_code, False):
            self.breaker.success(routed.route.breaker_key)
        extra: tuple[tuple[bytes, bytes], ...] = (
            (CACHE_MISS_FIELD,) if routed.cache_key is not None else ()
        )
        # Errors and whole answers are buffered: the response hook translates them. An SSE
        # stream is text/event-stream (application/stream+json for some providers).
        content_type = response.headers.get("content-type", "")
        streaming = (
            response.status_code < 400
            and routed.chat.stream
            and routed.adapter.streams(content_type)
        )
        if not streaming:
            set_routing_headers(response, routed, extra)
            return
        if routed.paid:
            self.log_settlement(flow, routed)  # a stream's settlement is in its headers
        # The body length changes (usage chunk, translation): always chunked to the client.
        extra += (CHUNKED_FIELD,)
        if routed.chat.client_format != OPENAI or "event-stream" not in content_type:
            extra += (EVENT_STREAM_FIELD,)  # e.g. Ollama's NDJSON, rendered as SSE
        set_routing_headers(response, routed, extra, drop=CONTENT_LENGTH)
        keep_name = bool(self.settings and self.settings.routing.keep_requested_model)
        model = routed.chat.model if keep_name and routed.chat.model else routed.route.model
        translator: StreamTranslator
        request = routed.plugin_request
        if (
            request is not None
            and request.follow_stream
            and can_assemble(routed.adapter, routed.chat)
        ):
            translator = assembling_translator(
                routed.adapter,
                routed.chat,
                model,
                functools.partial(self.stream_end, routed, request),
            )
        elif keep_name and routed.adapter.openai_wire and routed.chat.client_format == OPENAI:
            # Re-rendered (not passed through) so every chunk carries the requested name.
            renderer = OpenAIChunkRenderer(model, include_usage=routed.chat.wants_usage)
            translator = TranslatingStream(routed.adapter.stream_decoder(), renderer)
        else:
            translator = translator_for(routed.adapter, routed.chat, model, rename=keep_name)
        if isinstance(translator, TranslatingStream) and translated(routed):
            translator.not_chat_error = not_a_completion_message(
                routed, "a stream without chat completion chunks"
            )
        if routed.cache_key is not None:
            translator = RecordingStream(translator)

        def on_finish(t: StreamTranslator) -> None:
            final = getattr(t, "final", None)
            if routed.chat.responses is not None and final is not None:
                minted = not routed.adapter.responses_wire  # else the route's own answer
                remember(self.response_store, routed.chat.responses, final, minted)
            routed.response_tags = stream_tags(t.head)  # headers went long ago: log, /usage
            self.finished(flow, routed, 502 if t.error else 200, t.usage, error=t.error, stream=t)

        translator.on_finish = on_finish
        routed.translator = translator
        response.stream = translator

    def stream_end(
        self, routed: RoutedFlow, request: PluginRequest, decoder: AssemblingDecoder
    ) -> str:
        """A followed stream's end, before its finish: post_response sees the answer put
        together, and what the plugins append is sent as the last delta."""
        routed.answered = True
        answer = PluginAnswer(
            request,
            200,
            decoder.completion(),
            routed.route.label,
            routed.route.tier,
            streamed=True,
            usage=decoder.usage,
            open_stream=True,
        )
        self.plugins.after(answer)
        answer.open = False
        return "".join(answer.appended)

    def answer_plugins(
        self,
        routed: RoutedFlow,
        status: int,
        completion: Any = None,
        usage: Usage | None = None,
        error: str = "",
        streamed: bool = False,
    ) -> bool:
        """post_response, once per request (whole answers before they are rendered);
        whether a plugin changed the answer."""
        if routed.plugin_request is None or routed.answered or not self.plugins.post_response:
            return False
        routed.answered = True
        answer = PluginAnswer(
            routed.plugin_request,
            status,
            completion if isinstance(completion, dict) else None,
            routed.route.label,
            routed.route.tier,
            streamed=streamed,
            usage=usage,
            error=error,
        )
        self.plugins.after(answer)
        return answer.changed

    def response(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        routed: RoutedFlow | None = flow.metadata.get(META)
        if routed is None or flow.response is None or routed.translator is not None:
            return None
        response = flow.response
        if routed.headers_on is not response:  # e.g. the placeholder for a failed connect
            set_routing_headers(response, routed)
        if response.status_code == 402 and routed.route.x402:
            # Awaited, so the hook goes mitmproxy's way under either launcher: the retry
            # then finds the 402's connection to the same upstream done with, as a
            # fallback to another host does (inline, the lean launcher would reuse it
            # mid-response). The ledger's lock and file are off the event loop too.
            return self.pay_or_refuse(flow, routed)
        if routed.paid:
            self.log_settlement(flow, routed)
        if response.status_code >= 400:
            if self.try_next_route(flow, routed):
                return None  # mitm_compat re-sends the rewritten request on this flow
            self.answer_upstream_error(flow, routed)
            self.finished(flow, routed, response.status_code, None)
            return None
        usage = None
        if routed.chat.client_format == RESPONSES and routed.adapter.responses_wire:
            self.native_response(flow, routed)
            return None
        completion, why = self.read_answer(routed, response.get_content(strict=False) or b"")
        if completion is None:
            self.refuse_answer(flow, routed, why)
            return None
        try:
            if not routed.adapter.openai_wire and not completion.get("model"):
                completion["model"] = routed.route.model or routed.chat.model  # Cohere omits it
            keep_name = bool(self.settings and self.settings.routing.keep_requested_model)
            if keep_name and routed.chat.model:
                completion["model"] = routed.chat.model
            changed = routed.plugin_request is not None and self.answer_plugins(
                routed,
                response.status_code,
                completion,
                usage_from_openai(completion.get("usage")),
            )
            if routed.chat.client_format == ANTHROPIC:
                # Anthropic's own answer goes back as it came (its usage was read above).
                if not routed.adapter.same_format(routed.chat) or keep_name or changed:
                    answer = anthropic_message(
                        completion, completion.get("model") or routed.chat.model
                    )
                    response.set_content(json.dumps(answer).encode())
                    response.headers["content-type"] = "application/json"
            elif routed.chat.client_format == RESPONSES:
                answer = response_object(completion, routed.chat.responses, routed.route.model)
                remember(self.response_store, routed.chat.responses, answer)
                response.set_content(json.dumps(answer).encode())
                response.headers["content-type"] = "application/json"
            elif not routed.adapter.openai_wire or (keep_name and routed.chat.model) or changed:
                response.set_content(json.dumps(completion).encode())
                response.headers["content-type"] = "application/json"
            usage = usage_from_openai(completion.get("usage"))
            routed.response_tags = completion_tags(completion)
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            if translated(routed):
                # Nothing to render the client's format from: an error in that format, not
                # an empty answer (its log line is the request's, with the error).
                self.answer_not_a_completion(flow, routed, str(exc))
                self.finished(flow, routed, 502, None, error=NOT_A_COMPLETION)
                return None
            log.warning(
                "route %s answered something that is not a chat completion: %s",
                routed.route.tier,
                exc,
            )
        self.answer_headers(response, routed, usage)
        self.finished(flow, routed, response.status_code, usage, completion=completion)
        return None

    def read_answer(self, routed: RoutedFlow, content: bytes) -> tuple[dict | None, str]:
        """A 200 whole answer as a chat completion, or None and why it is no answer: an
        error document (a gateway that puts the status in the body), a body the route's
        format cannot read, or, where the client's format is rendered from it, no
        completion to render."""
        if why := error_in_answer(content):
            return None, why
        try:
            completion = routed.adapter.parse_response(content)
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            return None, str(exc) or type(exc).__name__
        if not isinstance(completion, dict):
            return None, "not a JSON object"
        if translated(routed) and (why := not_a_chat_completion(completion)):
            return None, why
        return completion, ""

    def refuse_answer(self, flow: http.HTTPFlow, routed: RoutedFlow, why: str) -> None:
        """A 200 that is no answer fails its route as a 5xx does: the breaker counts it and
        the next route gets the request when fallback allows (mitm_compat re-sends it on
        this flow). Otherwise the client gets a 502 in its own format saying why (or, after
        other routes failed first, the one error listing them all)."""
        assert flow.response is not None
        if self.try_next_route(flow, routed, Attempt(routed.route.breaker_key, 200, why)):
            return
        if len(routed.attempts) > 1:
            self.answer_upstream_error(flow, routed)
        else:
            self.answer_not_a_completion(flow, routed, why)
        self.finished(flow, routed, flow.response.status_code, None, error=NOT_A_COMPLETION)

    def answer_headers(
        self, response: http.Response, routed: RoutedFlow, usage: Usage | None
    ) -> None:
        """A whole answer's tags and token counts: known only once it is read, and sent
        before its body (a stream's headers go before its body: it gets none of these)."""
        fields = [(RESPONSE_TAGS_HEADER.encode(), header_value(routed.response_tags).encode())]
        if usage is not None:
            fields.append((INPUT_TOKENS_HEADER.encode(), str(usage.prompt_tokens).encode()))
            fields.append((OUTPUT_TOKENS_HEADER.encode(), str(usage.completion_tokens).encode()))
        if routed.aliases:
            fields += routed.aliases.copies(fields)
        names = {name for name, _ in fields}
        kept = tuple(f for f in response.headers.fields if f[0].lower() not in names)
        response.headers.fields = kept + tuple(fields)

    def answer_not_a_completion(self, flow: http.HTTPFlow, routed: RoutedFlow, why: str) -> None:
        """A 502 in the client's format for a 200 the translation cannot read."""
        assert self.settings is not None and flow.response is not None
        message = redact(not_a_completion_message(routed, why), self.settings.secrets)
        body = error_body(message, "upstream_error", NOT_A_COMPLETION)
        if routed.chat.client_format == ANTHROPIC:
            body = anthropic_error(502, body)
        keep = {k: v for k, v in flow.response.headers.items() if k.lower() in KEPT_ON_ERROR}
        flow.response = http.Response.make(502, body, {"content-type": "application/json", **keep})

    async def pay_or_refuse(self, flow: http.HTTPFlow, routed: RoutedFlow) -> None:
        if not await self.pay_and_retry(flow, routed):
            self.finished(flow, routed, 402, None, error="payment_refused")
        # else mitm_compat re-sends the request, now with X-PAYMENT

    async def pay_and_retry(self, flow: http.HTTPFlow, routed: RoutedFlow) -> bool:
        """A paying route answered 402: pay its x402 challenge within the caps and ask for
        the same request again, once. Otherwise answer the client 402 saying why."""
        assert flow.response is not None
        route = routed.route
        if routed.paid:
            reason = (
                f"Upstream '{route.tier}' answered 402 again after a payment of"
                f" {usd(routed.paid)} USD; it is not paid twice"
            )
            why = "second_402"
        elif self.payer is None or not self.fallback_ready:
            reason = f"Upstream '{route.tier}' asks for payment, and this router cannot pay it"
            why = "not_set_up"
        else:
            try:
                payment = await asyncio.to_thread(
                    self.payer.pay,
                    route,
                    flow.response.get_content(strict=False) or b"",
                    flow.response.headers.get(REQUIRED_HEADER_V2, ""),
                )
            except (PaymentRefused, CapExceeded) as exc:
                reason = f"Upstream '{route.tier}' asks for payment; {exc}"
                why = exc.reason
            else:
                routed.paid = payment.amount
                if self.accounting is not None:
                    self.accounting.usage.record_payment(route, payment.amount)
                flow.request.headers[payment.header] = payment.value
                log.info(
                    "x402 paying route=%s amount_usd=%s network=%s pay_to=%s header=%s",
                    route.tier,
                    usd(payment.amount),
                    route.x402,
                    payment.pay_to,
                    payment.header,
                )
                flow.metadata[mitm_compat.RETRY] = True
                return True
        log.warning("x402 not paid route=%s reason=%s: %s", route.tier, why, reason)
        if self.accounting is not None:
            self.accounting.usage.record_refusal(route, why)
        assert self.settings is not None
        body = error_body(
            redact(reason, self.settings.secrets), "payment_required", "x402_not_paid"
        )
        if routed.chat.client_format == ANTHROPIC:
            body = anthropic_error(402, body)
        flow.response = http.Response.make(402, body, {"content-type": "application/json"})
        set_routing_headers(flow.response, routed)
        return False

    def log_settlement(self, flow: http.HTTPFlow, routed: RoutedFlow) -> None:
        """The paid answer's X-PAYMENT-RESPONSE (the facilitator's settlement), logged."""
        assert flow.response is not None
        headers = flow.response.headers
        doc = settlement(
            headers.get(SETTLEMENT_HEADER, "") or headers.get(SETTLEMENT_HEADER_V2, "")
        )
        log.info(
            "x402 paid route=%s amount_usd=%s status=%s settled=%s transaction=%s",
            routed.route.tier,
            usd(routed.paid),
            flow.response.status_code,
            doc.get("success", "unknown"),
            doc.get("transaction", "-"),
        )
        if doc.get("success") is True and self.payer is not None:
            if self.accounting is not None:
                self.accounting.usage.record_settlement(routed.route)
            self.ledger_writes.spawn(self.record_settled(self.payer, routed.paid))

    async def record_settled(self, payer: Payer, amount: int) -> None:
        """The settled part of today's spend, in the ledger (off the event loop)."""
        try:
            await asyncio.to_thread(payer.settled, amount)
        except CapExceeded as exc:  # the ledger is away: the spend stays counted as reserved
            log.warning("x402 settlement not recorded in the ledger: %s", exc)

    def native_response(self, flow: http.HTTPFlow, routed: RoutedFlow) -> None:
        """A Responses route's whole answer: passed back as it is, its usage counted and
        the answer kept for a follow-up's previous_response_id."""
        assert flow.response is not None
        usage = None
        try:
            doc = json.loads(flow.response.get_content(strict=False) or b"")
        except ValueError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("id"), str):
            usage = usage_of_response(doc)
            remember(self.response_store, routed.chat.responses, doc, minted=False)
        self.finished(flow, routed, flow.response.status_code, usage)

    def try_next_route(
        self, flow: http.HTTPFlow, routed: RoutedFlow, attempt: Attempt | None = None
    ) -> bool:
        """Record the failure (`attempt`, or what the response says); when a route is left,
        point the flow at it and ask for a retry."""
        assert self.settings is not None and flow.response is not None
        response = flow.response
        if attempt is None:
            failure = flow.metadata.get(mitm_compat.UPSTREAM_ERROR)
            if not should_fall_back(response.status_code, bool(failure)):
                return False
            if failure:
                attempt = Attempt(routed.route.breaker_key, error=str(failure))
            else:
                attempt = Attempt(
                    routed.route.breaker_key,
                    response.status_code,
                    routed.adapter.error_message(
                        response.status_code, response.get_content(strict=False) or b""
                    ),
                    response.headers.get("retry-after", ""),
                )
        routed.attempts.append(attempt)
        self.breaker.failure(routed.route.breaker_key, attempt.label())
        if not self.fallback_ready or not self.settings.routing.fallback_enabled:
            return False
        index, skipped = next_route(routed.chain, routed.index + 1, self.breaker)
        routed.attempts.extend(Attempt(t, error="circuit_open") for t in skipped)
        if index < 0:
            return False
        routed.index = index
        self.count_fallback(attempt, routed.chain[index])
        self.point_at(flow, routed, routed.chain[index])
        self.feed.routed(routed.event_id, routed.route, routed.adapter.name, routed.attempts)
        flow.metadata[mitm_compat.RETRY] = True
        return True

    def count_fallback(self, attempt: Attempt, to: Route) -> None:
        """The one place a fallback happens: log it and count it in the usage counters."""
        to_key = to.breaker_key
        log.info("fallback from=%s reason=%s to=%s", attempt.route, attempt.reason, to_key)
        if self.accounting is not None:
            self.accounting.usage.record_fallback(attempt.route, to_key, attempt.reason)

    def describe_attempt(self, attempt: Attempt) -> str:
        route = self.routes_by_key.get(attempt.route)
        where = f"'{attempt.route}' ({route.base_url})" if route else f"'{attempt.route}'"
        if attempt.status:
            return f"{where} answered HTTP {attempt.status}: {attempt.error}"
        if attempt.error == "circuit_open":
            return f"{where} skipped: it failed repeatedly and is cooling down"
        return f"{where} is unreachable: {attempt.error}"

    def answer_upstream_error(self, flow: http.HTTPFlow, routed: RoutedFlow) -> None:
        assert self.settings is not None and flow.response is not None
        response = flow.response
        failure = flow.metadata.get(mitm_compat.UPSTREAM_ERROR)
        secrets = self.settings.secrets
        if len(routed.attempts) > 1:
            error = all_failed_error(routed.attempts, self.breaker, self.describe_attempt)
            status, message, type_, code = error.status, error.message, error.type, error.code
            keep = {
                **routing_headers(
                    routed.decision.tier, routed.route.tier, score=routed.decision.score
                ),
                **(
                    routed.aliases.headers(
                        routed.decision.tier, routed.route.tier, routed.route.name
                    )
                    if routed.aliases
                    else {}
                ),
                **{k: v for k, v in response.headers.items() if k.lower() in DESCRIBED},
                **error.headers,
            }
        else:
            if failure:
                message = f"Upstream '{routed.route.tier}' ({routed.route.base_url}) is unreachable: {failure}"
                status, type_ = 502, "upstream_unreachable"
            else:
                provider_message = routed.adapter.error_message(
                    response.status_code, response.get_content(strict=False) or b""
                )
                message = f"Upstream '{routed.route.tier}' answered HTTP {response.status_code}: {provider_message}"
                status, type_ = response.status_code, "upstream_error"
            code = f"upstream_{status}"
            kept = KEPT_ON_ERROR
            if routed.aliases:
                kept = kept | {n.decode() for n in routed.aliases.fields_replaced}
            keep = {k: v for k, v in response.headers.items() if k.lower() in kept}
        body = error_body(redact(message, secrets), type_, code)
        if routed.chat.client_format == ANTHROPIC:
            body = anthropic_error(status, body)
        flow.response = http.Response.make(
            status, body, {"content-type": "application/json", **keep}
        )

    def error(self, flow: http.HTTPFlow) -> None:
        """The flow ended without an answer: mostly a client that left. One that leaves a
        stream after its answer's end (some SDKs stop reading at the finish) was answered:
        a 200. One that leaves mid-stream is a 499 that still counts what the provider
        read and wrote, as the provider bills it."""
        routed: RoutedFlow | None = flow.metadata.get(META)
        if routed is None or routed.done:
            return
        why = flow.error.msg if flow.error else "error"
        stream = routed.translator
        if stream is None:
            self.finished(flow, routed, CLIENT_CLOSED, None, error=why)
            return
        if stream.abandon():
            routed.response_tags = stream_tags(stream.head)
            self.finished(flow, routed, 200, stream.usage, stream=stream)
        else:
            self.finished(flow, routed, CLIENT_CLOSED, stream.usage, error=why, stream=stream)

    def finished(
        self,
        flow: http.HTTPFlow,
        routed: RoutedFlow,
        status: int,
        usage: Usage | None,
        error: str = "",
        stream: StreamTranslator | None = None,
        completion: Any = None,
    ) -> None:
        """Once per routed flow: the one log line, the usage counters, the request log.

        Recorded just after the hook returns, so the client's answer is sent first
        (`done` records what is still pending, so no count is lost at shutdown)."""
        if routed.done:
            return
        routed.done = True
        if routed.plugin_request is not None and not routed.answered:
            self.answer_plugins(routed, status, completion, usage, error, stream is not None)
        total_ms = (time.perf_counter() - routed.started) * 1000
        if not self.unrecorded:
            asyncio.get_running_loop().call_soon(self.record_finished)
        self.unrecorded.append(
            functools.partial(
                self.record, flow, routed, status, usage, total_ms, error, stream, completion
            )
        )

    def record_finished(self) -> None:
        unrecorded, self.unrecorded = self.unrecorded, []
        for record in unrecorded:
            record()

    def record(
        self,
        flow: http.HTTPFlow,
        routed: RoutedFlow,
        status: int,
        usage: Usage | None,
        total_ms: float,
        error: str,
        stream: StreamTranslator | None,
        completion: Any,
    ) -> None:
        tokens = f"{usage.prompt_tokens}+{usage.completion_tokens}" if usage else "-"
        score = routed.decision.score
        session = routed.session
        about, body = "", b""
        if session is not None:
            body = flow.request.raw_content or b""  # what was forwarded (cache marks, ttl)
            about = f" session={session.id.label}"
            if usage is not None:
                about += f" cache={usage.cache_read_tokens}r+{usage.cache_write_tokens}w"
            if session.choice is not None:  # source=cache_cost: the figures it chose by
                about += f" expected={session.choice.figures()}"
        log.info(
            "routed decision=%d source=%s route=%s model=%s status=%s classifier_ms=%.1f total_ms=%.1f tokens=%s score=%s%s%s%s%s%s%s%s",
            routed.decision.tier,
            routed.decision.source,
            routed.route.tier,
            routed.route.model or routed.chat.model or "-",
            status,
            routed.decision.ms,
            total_ms,
            tokens,
            "-" if score is None else score_text(score),
            (
                f" candidate={routed.route.key} via={routed.route.label.replace(' ', '_')}"
                if routed.route.key
                else ""
            ),
            f" fallback={fallback_header(routed.attempts)}" if routed.attempts else "",
            f" error={error}" if error else "",
            f" rule={routed.rule}" if routed.rule else "",
            f" tags={header_value(routed.tags)}" if routed.tags else "",
            f" response_tags={header_value(routed.response_tags)}" if routed.response_tags else "",
            about,
        )
        if self.route_stats is not None and status < 400 and routed.headers_at:
            # Measured for the latency and throughput strategies: the served attempt's
            # first byte, and its output tokens over the time they were streamed (a
            # whole answer: over the attempt's whole time).
            ended = routed.started + total_ms / 1000
            since = routed.headers_at if routed.translator is not None else routed.sent_at
            self.route_stats.record(
                routed.route,
                (routed.headers_at - routed.sent_at) * 1000,
                usage.completion_tokens if usage else 0,
                ended - since,
            )
        if self.accounting is not None:
            if status >= 400 and not error and routed.attempts:
                error = fallback_header(routed.attempts)  # what the live feed says failed
            self.accounting.routed_finished(
                routed, status, usage, total_ms, stream, completion, error, body
            )
        # Let go of the parsed request now: its many small objects are freed at once, even
        # where the flow itself still waits for the cyclic garbage collector (a stream that
        # mitm_compat could not release, or mitmdump on Python 3.12 without -O).
        flow.metadata.pop(META, None)
