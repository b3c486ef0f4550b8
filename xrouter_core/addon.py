"""The mitmproxy addon: hooks that read like the protocol, wiring the plain modules.

request          → local pages, auth, parse, policy, adapter rewrite
responseheaders  → routing headers, stream translator for SSE
response         → whole answers translated, upstream errors made OpenAI-style
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from mitmproxy import ctx, http
from mitmproxy.proxy.mode_specs import ReverseMode

from xrouter_core import mitm_compat
from xrouter_core.accounting import CACHE_HEADER, USAGE_PAGES, Accounting
from xrouter_core.adapters import Adapter, adapter_for, provider_name
from xrouter_core.canonical import Usage
from xrouter_core.classifier import Decision, LLMClassifier
from xrouter_core.config import ConfigError, Route, Settings, load_settings
from xrouter_core.errors import RouterError, error_body, redact
from xrouter_core.inbound import ANTHROPIC, ChatRequest, parse_anthropic_messages, parse_openai_chat
from xrouter_core.logs import setup_logging
from xrouter_core.policy import LOGICAL_MODELS, TIER_NAMES, Policy
from xrouter_core.render_anthropic import anthropic_error, anthropic_message
from xrouter_core.responsecache import RecordingStream
from xrouter_core.stream import StreamTranslator, translator_for
from xrouter_core.web import (
    CHAT_PATHS,
    MESSAGES_PATH,
    LocalResponse,
    body_error,
    check_auth,
    check_header_values,
    check_method,
    models_page,
)

log = logging.getLogger("xrouter")

META = "xrouter"
# Hosts whose chat calls are routed when clients use the router as an HTTPS proxy.
PROVIDER_HOSTS = frozenset(
    {
        "api.openai.com",
        "api.groq.com",
        "api.mistral.ai",
        "api.together.xyz",
        "api.perplexity.ai",
        "openrouter.ai",
        "api.deepseek.com",
        "api.x.ai",
        "api.fireworks.ai",
    }
)

# Anthropic clients (Claude Code) behind the proxy: their Messages calls are routed too.
ANTHROPIC_HOST = "api.anthropic.com"


@dataclass(slots=True)
class RoutedFlow:
    """What the router knows about one routed flow, kept in flow.metadata."""

    chat: ChatRequest
    decision: Decision
    route: Route
    adapter: Adapter
    started: float
    translator: StreamTranslator | None = None
    done: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def local_response(flow: http.HTTPFlow, answer: LocalResponse) -> None:
    body = answer.body
    if answer.status >= 400 and flow.request.path.split("?", 1)[0] == MESSAGES_PATH:
        body = anthropic_error(answer.status, body)  # Anthropic clients get their shape
    flow.response = http.Response.make(answer.status, body, answer.headers)


class Xrouter:
    def __init__(self) -> None:
        self.settings: Settings | None = None
        self.client: httpx.AsyncClient | None = None
        self.classifier: LLMClassifier | None = None
        self.policy: Policy | None = None
        self.accounting: Accounting | None = None
        self.background: set[asyncio.Task] = set()

    # ---- lifecycle -------------------------------------------------------------

    def load(self, loader) -> None:
        loader.add_option(
            "xrouter_env_file",
            str,
            "",
            "Path of the .env file to read (default: XROUTER_ENV_FILE or ./.env).",
        )
        loader.add_option(
            "xrouter_upstreams",
            str,
            "",
            "Path of upstreams.json (default: UPSTREAMS_FILE or ./upstreams.json).",
        )

    def configure(self, updated: set[str]) -> None:
        if updated & {"xrouter_env_file", "xrouter_upstreams"} or self.settings is None:
            try:
                settings = load_settings(
                    env_file=ctx.options.xrouter_env_file or None,
                    upstreams_file=ctx.options.xrouter_upstreams or None,
                )
            except ConfigError as exc:
                for problem in exc.problems:
                    log.error("configuration: %s", problem)
                self.settings = None
                return
            self.apply(settings)
        if "mode" in updated or "xrouter_env_file" in updated:
            self.listen_by_default()

    def apply(self, settings: Settings) -> None:
        self.settings = settings
        setup_logging(settings)
        mitm_compat.install(settings.max_body_bytes)
        # Lazy connections: eager ones break offline and when an upstream is down.
        options: dict[str, Any] = {"connection_strategy": "lazy"}
        if hasattr(ctx.options, "flow_detail") and not ctx.options.has_changed("flow_detail"):
            options["flow_detail"] = 0  # mitmproxy's own per-flow lines would flood the log
        ctx.options.update(**options)
        if self.client is None:
            self.client = httpx.AsyncClient(
                trust_env=False, timeout=httpx.Timeout(30.0, connect=5.0)
            )
        self.classifier = (
            LLMClassifier(settings.classifier, self.client) if settings.classifier.enabled else None
        )
        if self.accounting is not None:
            self.accounting.close()
        self.accounting = Accounting(settings)
        self.policy = Policy(
            self.classifier, self.accounting.decisions, settings.decision_cache_ttl
        )

    def listen_by_default(self) -> None:
        """Plain `mitmdump -s addons/xrouter.py` serves the API on HOST:PORT in reverse mode."""
        if self.settings is None or ctx.options.has_changed("mode"):
            return
        frontier = self.settings.route("frontier")
        # The reverse target is never contacted as such: every request is answered or rewritten.
        target = (
            f"{frontier.scheme}://{urlsplit(frontier.base_url).netloc}"
            if frontier
            else "http://127.0.0.1:9"
        )
        host = self.settings.host
        listen = f"[{host}]" if ":" in host else host
        ctx.options.update(mode=[f"reverse:{target}@{listen}:{self.settings.port}"])

    def running(self) -> None:
        if self.settings is None:
            return
        log.info(
            "xrouter ready: %s",
            ", ".join(f"{t}={r.base_url}" for t, r in self.settings.routes.items()),
        )
        if self.accounting is not None:
            self.accounting.start()
        if self.classifier is not None and self.settings.classifier.warmup:
            self.spawn(self.classifier.warm_up())
        if self.classifier is not None and self.settings.classifier.keep_alive_ms > 0:
            self.spawn(self.classifier.keep_alive())

    def done(self) -> None:
        for task in self.background:
            task.cancel()
        if self.accounting is not None:
            self.accounting.close()  # the last usage counts and request log lines
            self.accounting = None

    def spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # ---- request ---------------------------------------------------------------

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or self.settings is None:
            return
        if isinstance(flow.client_conn.proxy_mode, ReverseMode):
            await self.serve_own_endpoint(flow)
        elif (
            flow.request.pretty_host in PROVIDER_HOSTS
            and flow.request.path.split("?", 1)[0].endswith("/chat/completions")
            and flow.request.method == "POST"
        ):
            await self.route_chat(flow, intercepted=True)
        elif (
            flow.request.pretty_host == ANTHROPIC_HOST
            and flow.request.path.split("?", 1)[0] == MESSAGES_PATH
            and flow.request.method == "POST"
        ):
            await self.route_chat(flow, intercepted=True, anthropic=True)
        # Anything else in proxy mode passes through untouched.

    async def serve_own_endpoint(self, flow: http.HTTPFlow) -> None:
        assert self.settings is not None
        path = flow.request.path.split("?", 1)[0]
        try:
            check_method(path, flow.request.method)
            check_auth(path, flow.request.headers, self.settings.router_api_key)
            check_header_values(flow.request.headers.fields)
        except RouterError as exc:
            local_response(flow, LocalResponse.error(exc))
            return
        if path in CHAT_PATHS:
            await self.route_chat(flow, intercepted=False)
        elif path == MESSAGES_PATH:
            await self.route_chat(flow, intercepted=False, anthropic=True)
        elif path == "/health":
            local_response(flow, LocalResponse.json(self.health()))
        elif path in USAGE_PAGES:
            assert self.accounting is not None
            query = flow.request.path.partition("?")[2]
            local_response(flow, await self.accounting.page(path, query))
        elif path == "/v1/models":
            local_response(flow, models_page(list(LOGICAL_MODELS)))

    def health(self) -> dict[str, Any]:
        assert self.settings is not None
        doc = {"status": "ok", **self.settings.public()}
        for tier, route in self.settings.routes.items():
            doc["routes"][tier]["adapter"] = provider_name(route)  # what `auto` resolved to
        doc["classifier"]["last_call_ok"] = self.classifier.last_ok if self.classifier else None
        doc["classifier"]["last_error"] = self.classifier.last_error if self.classifier else None
        return doc

    def route_for(self, tier: int) -> Route:
        """The route of a tier, or the next configured one above it."""
        assert self.settings is not None
        for name in TIER_NAMES[tier:]:
            route = self.settings.route(name)
            if route is not None:
                return route
        raise RouterError(500, "No route is configured.", type="server_error")

    async def route_chat(
        self, flow: http.HTTPFlow, intercepted: bool, anthropic: bool = False
    ) -> None:
        assert self.settings is not None and self.policy is not None
        started = time.perf_counter()
        parse = parse_anthropic_messages if anthropic else parse_openai_chat
        try:
            chat = parse(flow.request.get_content(strict=False))
        except RouterError as exc:
            content_type = flow.request.headers.get("content-type", "")
            local_response(flow, LocalResponse.error(body_error(content_type, exc)))
            return
        assert self.accounting is not None
        cache_key, cached = await self.accounting.cached_answer(chat)
        if cached is not None:
            local_response(flow, cached)
            return
        decision = await self.policy.decide(chat)
        route = self.route_for(decision.tier)
        adapter = adapter_for(route)
        original_host = flow.request.pretty_host if intercepted else ""
        upstream = adapter.build_request(
            route,
            chat,
            flow.request.headers.items(multi=True),
            keep_client_auth=intercepted and not route.api_key and route.host == original_host,
        )
        request = flow.request
        # Not `request.url = ...`: that parses the URL on every request (~35 µs).
        request.scheme, request.host, request.port, request.path = mitm_compat.split_url(
            upstream.url
        )
        request.headers = http.Headers(
            [
                (k.encode(), v.encode("utf-8", "surrogateescape"))
                for k, v in upstream.headers.items()
            ]
        )
        request.headers["host"] = urlsplit(upstream.url).netloc
        request.raw_content = upstream.body
        request.headers["content-length"] = str(len(upstream.body))
        flow.metadata[mitm_compat.MARK] = True
        flow.metadata[META] = RoutedFlow(chat, decision, route, adapter, started)
        if cache_key is not None:
            flow.metadata[META].extra["cache_key"] = cache_key

    # ---- response --------------------------------------------------------------

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        routed: RoutedFlow | None = flow.metadata.get(META)
        if routed is None or flow.response is None:
            return
        response = flow.response
        response.headers["x-xrouter-decision"] = str(routed.decision.tier)
        response.headers["x-xrouter-upstream"] = routed.route.tier
        if "cache_key" in routed.extra:
            response.headers[CACHE_HEADER] = "miss"
        if response.status_code >= 400 or not routed.chat.stream:
            return  # buffered: the response hook translates it
        if "stream" not in response.headers.get("content-type", ""):
            return  # text/event-stream (application/stream+json for some providers)
        translator = translator_for(routed.adapter, routed.chat, routed.route.model)
        if routed.chat.client_format == ANTHROPIC:
            response.headers["content-type"] = "text/event-stream"
        if "cache_key" in routed.extra:
            translator = RecordingStream(translator)
        translator.on_finish = lambda t: self.finished(
            flow, routed, 502 if t.error else 200, t.usage, error=t.error, stream=t
        )
        routed.translator = translator
        # The body length changes (usage chunk, translation): always chunked to the client.
        response.headers.pop("content-length", None)
        response.headers["transfer-encoding"] = "chunked"
        response.stream = translator

    async def response(self, flow: http.HTTPFlow) -> None:
        routed: RoutedFlow | None = flow.metadata.get(META)
        if routed is None or flow.response is None or routed.translator is not None:
            return
        response = flow.response
        response.headers["x-xrouter-decision"] = str(routed.decision.tier)
        response.headers["x-xrouter-upstream"] = routed.route.tier
        if response.status_code >= 400:
            self.answer_upstream_error(flow, routed)
            self.finished(flow, routed, response.status_code, None)
            return
        usage = None
        completion = None
        try:
            completion = routed.adapter.parse_response(response.get_content(strict=False) or b"")
            if not routed.adapter.openai_wire and not completion.get("model"):
                completion["model"] = routed.route.model or routed.chat.model  # Cohere omits it
            if routed.chat.client_format == ANTHROPIC:
                answer = anthropic_message(completion, routed.route.model or routed.chat.model)
                response.set_content(json.dumps(answer).encode())
                response.headers["content-type"] = "application/json"
            elif not routed.adapter.openai_wire:
                response.set_content(json.dumps(completion).encode())
                response.headers["content-type"] = "application/json"
            raw_usage = completion.get("usage") if isinstance(completion, dict) else None
            if isinstance(raw_usage, dict):
                usage = Usage(
                    int(raw_usage.get("prompt_tokens") or 0),
                    int(raw_usage.get("completion_tokens") or 0),
                )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning(
                "route %s answered something that is not a chat completion: %s",
                routed.route.tier,
                exc,
            )
        self.finished(flow, routed, response.status_code, usage, completion=completion)

    def answer_upstream_error(self, flow: http.HTTPFlow, routed: RoutedFlow) -> None:
        assert self.settings is not None and flow.response is not None
        response = flow.response
        failure = flow.metadata.get(mitm_compat.UPSTREAM_ERROR)
        secrets = self.settings.secrets
        if failure:
            message = f"Upstream '{routed.route.tier}' ({routed.route.base_url}) is unreachable: {failure}"
            status, type_ = 502, "upstream_unreachable"
        else:
            provider_message = routed.adapter.error_message(
                response.status_code, response.get_content(strict=False) or b""
            )
            message = f"Upstream '{routed.route.tier}' answered HTTP {response.status_code}: {provider_message}"
            status, type_ = response.status_code, "upstream_error"
        keep = {
            k: v
            for k, v in response.headers.items()
            if k.lower() in ("retry-after", "x-xrouter-decision", "x-xrouter-upstream")
        }
        body = error_body(redact(message, secrets), type_, f"upstream_{status}")
        if routed.chat.client_format == ANTHROPIC:
            body = anthropic_error(status, body)
        flow.response = http.Response.make(
            status, body, {"content-type": "application/json", **keep}
        )

    def error(self, flow: http.HTTPFlow) -> None:
        routed: RoutedFlow | None = flow.metadata.get(META)
        if routed is not None and not routed.done:
            self.finished(flow, routed, 499, None, error=flow.error.msg if flow.error else "error")

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
        """Once per routed flow: the one log line, the usage counters, the request log."""
        if routed.done:
            return
        routed.done = True
        total_ms = (time.perf_counter() - routed.started) * 1000
        tokens = f"{usage.prompt_tokens}+{usage.completion_tokens}" if usage else "-"
        log.info(
            "routed decision=%d source=%s route=%s model=%s status=%s classifier_ms=%.1f total_ms=%.1f tokens=%s%s",
            routed.decision.tier,
            routed.decision.source,
            routed.route.tier,
            routed.route.model or routed.chat.model or "-",
            status,
            routed.decision.ms,
            total_ms,
            tokens,
            f" error={error}" if error else "",
        )
        if self.accounting is not None:
            self.accounting.routed_finished(routed, status, usage, total_ms, stream, completion)
