"""The addon's hooks in process, with mitmproxy's own test helpers (taddons, tflow).

No sockets: flows are built with tflow/tutils, the request hook rewrites them, and the
tests read what mitmproxy would send. The routes' URLs are on 127.0.0.1 and never
contacted; the classifier is the built-in one (no LLM server).

Settings come from an env file named by the `xrouter_env_file` option. The process
environment outranks every file, so each test runs with a clean one (and in tmp_path,
so no ./.env or ./upstreams.json of the checkout is read and no ./data is written).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from mitmproxy import http
from mitmproxy.exceptions import OptionsError
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow, tutils

from xrouter_core.proxy import mitm_compat
from xrouter_core.proxy.addon import META, RoutedFlow, Xrouter
from xrouter_core.wire.errors import RouterError
from xrouter_core.wire.inbound import ChatRequest, parse_openai_chat

T = TypeVar("T")

ROUTER_KEY = "xr-router-key-0004"
CHEAP_KEY = "sk-cheap-secret-0001"
MEDIUM_KEY = "sk-ant-medium-secret-0002"
FRONTIER_KEY = "sk-frontier-secret-0003"
ROUTES = {
    # cheap: an OpenAI-compatible server; medium: Anthropic's API (TLS); frontier: OpenAI.
    "CHEAP_BASE_URL": "http://127.0.0.1:8101/v1",
    "CHEAP_MODEL": "cheap-model",
    "CHEAP_API_KEY": CHEAP_KEY,
    "MEDIUM_BASE_URL": "https://127.0.0.1:8443",
    "MEDIUM_PROVIDER": "anthropic",
    "MEDIUM_MODEL": "claude-medium",
    "MEDIUM_API_KEY": MEDIUM_KEY,
    "FRONTIER_BASE_URL": "http://127.0.0.1:8103/v1",
    "FRONTIER_MODEL": "frontier-model",
    "FRONTIER_API_KEY": FRONTIER_KEY,
    "ROUTER_API_KEY": ROUTER_KEY,
    "CLASSIFIER_MODE": "builtin",
    "TOOLS_MIN_TIER": "medium",
    "CACHE_BACKEND": "memory",
    "HOST": "127.0.0.1",
    "PORT": "3000",
}
CHAT = "/v1/chat/completions"
REVERSE = ProxyMode.parse("reverse:http://127.0.0.1:8103@127.0.0.1:3000")


@pytest.fixture(autouse=True)
def clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        os,
        "environ",
        {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(tmp_path),
            "XROUTER_ENV_FILE": str(tmp_path / "absent.env"),
            "UPSTREAMS_FILE": str(tmp_path / "absent.json"),
        },
    )
    yield


def write_env(tmp_path: Path, name: str = "router.env", **changes: str) -> Path:
    """An env file with ROUTES, `changes` applied (an empty value removes a setting)."""
    values = {**ROUTES, "XROUTER_DATA_DIR": str(tmp_path / "data"), **changes}
    path = tmp_path / name
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items() if v))
    return path


def with_router(
    tmp_path: Path,
    scenario: Callable[[taddons.context, Xrouter], Awaitable[T]],
    **env: str,
) -> T:
    """Run `scenario(tctx, addon)` on a fresh event loop (the addon's hooks need one
    running), the addon configured from an env file with ROUTES and `env`, and
    mitmproxy's confdir in tmp_path."""

    async def main() -> T:
        addon = Xrouter()
        with taddons.context(addon) as tctx:
            tctx.configure(
                addon,
                confdir=str(tmp_path / "mitmproxy"),
                xrouter_env_file=str(write_env(tmp_path, **env)),
            )
            assert addon.settings is not None, "the test's settings must be valid"
            try:
                return await scenario(tctx, addon)
            finally:
                addon.done()
                if addon.client is not None:
                    await addon.client.aclose()

    return asyncio.run(main())


async def run_request_hook(addon: Xrouter, flow: http.HTTPFlow) -> None:
    """The request hook as mitmproxy runs it: a plain call, then what it returned awaited."""
    waiting = addon.request(flow)
    if waiting is not None:
        await waiting


def chat_flow(
    body: dict[str, Any],
    path: str = CHAT,
    headers: dict[str, str] | None = None,
    reverse: bool = True,
) -> http.HTTPFlow:
    """A client's POST to the router (reverse mode) or, through the proxy, to OpenAI."""
    content = json.dumps(body).encode()
    fields = {
        "host": "127.0.0.1:3000" if reverse else "api.openai.com",
        "content-type": "application/json",
        "authorization": f"Bearer {ROUTER_KEY}" if reverse else "Bearer sk-client-own-key",
        "content-length": str(len(content)),
        **(headers or {}),
    }
    request = tutils.treq(
        scheme=b"http" if reverse else b"https",
        host="127.0.0.1" if reverse else "api.openai.com",
        port=3000 if reverse else 443,
        method=b"POST",
        path=path.encode(),
        headers=http.Headers([(k.encode(), v.encode()) for k, v in fields.items()]),
        content=content,
    )
    flow = tflow.tflow(req=request)
    if reverse:
        flow.client_conn.proxy_mode = REVERSE
    return flow


def ask(text: str = "hello there", model: str = "xrouter/auto", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def chat(body: dict[str, Any]) -> ChatRequest:
    return parse_openai_chat(json.dumps(body).encode())


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
IMAGE = [
    {"type": "text", "text": "what is in this picture?"},
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
]


# ---- configure: options changed at run time ------------------------------------------


def test_a_bad_configuration_at_run_time_raises_options_error_and_keeps_the_settings(
    tmp_path: Path,
):
    async def scenario(tctx: taddons.context, addon: Xrouter) -> None:
        good, settings = tctx.options.xrouter_env_file, addon.settings
        broken = write_env(tmp_path, "broken.env", FRONTIER_HEADERS="not json", MEDIUM_BASE_URL="")
        with pytest.raises(OptionsError) as refused:
            tctx.configure(addon, xrouter_env_file=str(broken))
        assert str(refused.value).splitlines() == [
            "FRONTIER_HEADERS is not a JSON object of string values",
            "MEDIUM_BASE_URL is required when the classifier is enabled",
        ]
        # mitmproxy rolled the option back; the settings in use are the same ones.
        assert tctx.options.xrouter_env_file == good
        assert addon.settings is settings
        flow = chat_flow(ask(model="xrouter/cheap"))
        await run_request_hook(addon, flow)
        assert flow.response is None and flow.request.port == 8101

        # A broken upstreams.json is refused the same way.
        upstreams = tmp_path / "upstreams.json"
        upstreams.write_text("{not json")
        with pytest.raises(OptionsError, match="upstreams.json is not valid"):
            tctx.configure(addon, xrouter_upstreams=str(upstreams))
        assert tctx.options.xrouter_upstreams == "" and addon.settings is settings

        # A good file is taken.
        renamed = write_env(tmp_path, "renamed.env", CHEAP_MODEL="cheap-model-2")
        tctx.configure(addon, xrouter_env_file=str(renamed))
        assert addon.settings is not settings
        assert (
            addon.settings is not None and addon.settings.routes["cheap"].model == "cheap-model-2"
        )

    with_router(tmp_path, scenario)


def test_a_reload_at_run_time_starts_the_new_background_work_and_stops_the_old(
    tmp_path: Path,
):
    """`running` comes once: the usage flusher and classifier pings of the settings a
    reload puts in place are started by the reload, and the old classifier's stop."""
    engine = "http://127.0.0.1:9/v1"  # never answers: the pings only have to be scheduled
    llm = {"CLASSIFIER_MODE": "hybrid", "CLASSIFIER_BASE_URL": engine, "CLASSIFIER_MODEL": "m"}
    llm |= {"CLASSIFIER_KEEP_ALIVE_MS": "60000", "CLASSIFIER_WARMUP": "false"}

    async def scenario(tctx: taddons.context, addon: Xrouter) -> None:
        addon.running()
        first_usage, first_pings = addon.accounting.usage, set(addon.classifier_tasks._running)
        assert first_usage._task is not None and len(first_pings) == 1

        tctx.configure(addon, xrouter_env_file=str(write_env(tmp_path, "new.env", **llm)))
        await asyncio.sleep(0)  # let the cancelled task see its cancellation
        assert addon.accounting.usage is not first_usage
        assert addon.accounting.usage._task is not None, "the new counters are flushed"
        assert all(task.done() for task in first_pings), "the old classifier is not pinged"
        assert len([t for t in addon.classifier_tasks._running if not t.done()]) == 1

    with_router(tmp_path, scenario, **llm)


def test_a_bad_configuration_at_start_logs_each_problem_and_exits_before_listening(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """At start there are no settings to keep: the addon exits from configure, before
    mitmproxy opens a listener (tests/test_router.py::test_invalid_configuration_stops_the_router,
    tests/test_default_routes.py for the listener)."""
    broken = write_env(tmp_path, FRONTIER_BASE_URL="", MEDIUM_BASE_URL="")
    addon = Xrouter()
    with taddons.context(addon) as tctx, pytest.raises(SystemExit) as exited:
        tctx.configure(addon, confdir=str(tmp_path / "mitmproxy"), xrouter_env_file=str(broken))
    assert exited.value.code == 1
    assert addon.settings is None
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert (
        "configuration: FRONTIER_BASE_URL is required: every request can end up on frontier"
        in errors
    )
    assert "configuration: MEDIUM_BASE_URL is required when the classifier is enabled" in errors


def test_without_settings_nothing_is_forwarded_unrouted(tmp_path: Path):
    """Reverse mode forwards to the frontier host: a request passed on would carry the
    client's router key there. Every request is answered 503 instead, in the client's
    shape; in proxy mode the chat calls it would route are too, other traffic passes."""

    async def scenario() -> None:
        addon = Xrouter()
        with taddons.context(addon):
            assert addon.settings is None
            openai = chat_flow(ask())
            await run_request_hook(addon, openai)
            assert openai.response is not None and openai.response.status_code == 503
            assert json.loads(openai.response.content)["error"]["code"] == "not_configured"
            assert "not configured" in json.loads(openai.response.content)["error"]["message"]

            anthropic = chat_flow({"model": "claude", "max_tokens": 5}, path="/v1/messages")
            await run_request_hook(addon, anthropic)
            assert anthropic.response is not None and anthropic.response.status_code == 503
            assert json.loads(anthropic.response.content)["type"] == "error"

            other = tflow.tflow(req=tutils.treq(host="127.0.0.1", port=3000, path=b"/health"))
            other.client_conn.proxy_mode = REVERSE
            await run_request_hook(addon, other)
            assert other.response is not None and other.response.status_code == 503

            intercepted = chat_flow(ask(), reverse=False)
            await run_request_hook(addon, intercepted)
            assert intercepted.response is not None and intercepted.response.status_code == 503
            passing = tflow.tflow(req=tutils.treq(host="example.org", port=443, path=b"/"))
            await run_request_hook(addon, passing)
            assert passing.response is None

    asyncio.run(scenario())


def test_a_failure_while_routing_is_answered_and_nothing_is_forwarded(tmp_path: Path):
    """mitmproxy lets a flow go on when an addon's hook fails: here that would send the
    client's request, router key and all, unrouted to the reverse target."""

    async def scenario(tctx: taddons.context, addon: Xrouter) -> None:
        async def broken(chat: ChatRequest) -> None:
            raise RuntimeError("a backend's surprise")

        assert addon.policy is not None
        addon.policy.decide = broken  # type: ignore[method-assign]
        flow = chat_flow(ask())
        await run_request_hook(addon, flow)
        assert flow.response is not None and flow.response.status_code == 500
        assert json.loads(flow.response.content)["error"]["code"] == "routing_failed"
        assert META not in flow.metadata and flow.request.port == 3000

    with_router(tmp_path, scenario)


def reverse_get(path: str) -> http.HTTPFlow:
    flow = tflow.tflow(req=tutils.treq(host="127.0.0.1", port=3000, path=path.encode()))
    flow.request.headers["authorization"] = f"Bearer {ROUTER_KEY}"
    flow.client_conn.proxy_mode = REVERSE
    return flow


def test_every_reverse_mode_path_is_answered_or_routed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    """Reverse mode's guard (issue 16): whatever leaves the request hook was answered or
    routed. Each case here went on unrouted, to the reverse target, without it."""
    from xrouter_core.wire import local

    async def scenario(tctx: taddons.context, addon: Xrouter) -> None:
        # A path the router knows but no handler serves (a new endpoint half added).
        monkeypatch.setitem(local.ENDPOINTS, "/v1/half-added", ("GET",))
        flow = reverse_get("/v1/half-added")
        await run_request_hook(addon, flow)
        assert flow.response is not None and flow.response.status_code == 404
        # A handler that fails at once (synchronously) …
        monkeypatch.setattr(addon, "health", lambda: 1 / 0)
        flow = reverse_get("/health")
        await run_request_hook(addon, flow)
        assert flow.response is not None and flow.response.status_code == 500
        assert json.loads(flow.response.content)["error"]["code"] == "routing_failed"

        # … or after a wait.
        async def page(path: str, query: str) -> None:
            await asyncio.sleep(0)
            raise RuntimeError("the store went away")

        assert addon.accounting is not None
        monkeypatch.setattr(addon.accounting, "page", page)
        flow = reverse_get("/usage")
        await run_request_hook(addon, flow)
        assert flow.response is not None and flow.response.status_code == 500

        # A failure while the request is rewritten for its route, once marked routed.
        def half_rewrite(flow: http.HTTPFlow, routed: RoutedFlow, route: Any) -> None:
            flow.request.host = route.host
            raise KeyError("a provider's surprise")

        monkeypatch.setattr(addon, "point_at", half_rewrite)
        flow = chat_flow(ask())
        await run_request_hook(addon, flow)
        assert flow.response is not None and flow.response.status_code == 500
        assert META not in flow.metadata and mitm_compat.MARK not in flow.metadata
        # Unknown paths and bad bodies were answered before; they stay answered.
        for path in ("/nowhere", "/v1/chat/completions/x", "/../v1/chat/completions"):
            flow = reverse_get(path)
            await run_request_hook(addon, flow)
            assert flow.response is not None and flow.response.status_code == 404, path
        flow = chat_flow(ask())
        flow.request.content = b"{not json"
        await run_request_hook(addon, flow)
        assert flow.response is not None and flow.response.status_code == 400

    with_router(tmp_path, scenario, ROUTER_API_KEY=ROUTER_KEY)
    failures = [r for r in caplog.records if r.levelname == "ERROR" and r.exc_info]
    assert len(failures) == 3  # one line (with its traceback) per failure


# ---- plan: the tier and the routes to try ----------------------------------------------


def test_plan_pins_the_tier_by_model_name_and_by_header(tmp_path: Path):
    async def scenario(tctx: taddons.context, addon: Xrouter) -> None:
        decision, chain = await addon.plan(chat(ask(model="xrouter/frontier")), None)
        assert (decision.tier, decision.source) == (2, "pinned")
        assert [r.tier for r in chain] == ["frontier"]
        decision, chain = await addon.plan(chat(ask(model="cheap")), None)
        assert (decision.tier, decision.source) == (0, "pinned")
        assert [r.tier for r in chain] == ["cheap", "medium", "frontier"]  # the fallbacks
        # The header outranks the model name, and may name a category.
        decision, chain = await addon.plan(chat(ask(model="xrouter/cheap")), "medium")
        assert (decision.tier, [r.tier for r in chain]) == (1, ["medium", "frontier"])
        decision, _ = await addon.plan(chat(ask()), "xrouter/reasoning")
        assert (decision.tier, decision.source) == (2, "pinned")
        # No pin: the classifier decides.
        decision, _ = await addon.plan(chat(ask()), None)
        assert decision.source == "builtin"

    with_router(tmp_path, scenario)


def test_a_bad_tier_header_is_a_400_router_error(tmp_path: Path):
    async def scenario(tctx: taddons.context, addon: Xrouter) -> None:
        with pytest.raises(RouterError) as bad:
            await addon.plan(chat(ask()), "huge")
        assert bad.value.status == 400 and bad.value.code == "invalid_tier"
        assert "'huge'" in bad.value.message
        # Through the hook: answered, never sent.
        flow = chat_flow(ask(), headers={"x-xrouter-tier": "huge"})
        await run_request_hook(addon, flow)
        assert flow.response is not None and flow.response.status_code == 400
        assert json.loads(flow.response.content)["error"]["code"] == "invalid_tier"
        assert flow.request.host == "127.0.0.1" and flow.request.port == 3000

    with_router(tmp_path, scenario)


def test_tools_raise_the_tier_to_tools_min_tier(tmp_path: Path):
    async def scenario(tctx: taddons.context, addon: Xrouter) -> None:
        decision, chain = await addon.plan(chat(ask(model="xrouter/cheap", tools=TOOLS)), None)
        assert (decision.tier, decision.source) == (1, "pinned+tools")
        assert chain[0].tier == "medium"
        decision, _ = await addon.plan(chat(ask(model="xrouter/cheap")), None)
        assert decision.tier == 0  # no tools, no raise
        decision, _ = await addon.plan(chat(ask(model="xrouter/frontier", tools=TOOLS)), None)
        assert decision.tier == 2  # never lowered

    with_router(tmp_path, scenario)


def test_images_go_only_to_vision_routes(tmp_path: Path):
    async def scenario(tctx: taddons.context, addon: Xrouter) -> None:
        body = {"model": "xrouter/cheap", "messages": [{"role": "user", "content": IMAGE}]}
        decision, chain = await addon.plan(chat(body), None)
        assert decision.tier == 0
        assert [r.tier for r in chain] == ["medium", "frontier"]  # cheap cannot see

    with_router(tmp_path, scenario, MEDIUM_VISION="true")


def test_images_without_a_vision_route_are_a_400(tmp_path: Path):
    async def scenario(tctx: taddons.context, addon: Xrouter) -> None:
        body = {"model": "xrouter/cheap", "messages": [{"role": "user", "content": IMAGE}]}
        with pytest.raises(RouterError) as refused:
            await addon.plan(chat(body), None)
        assert refused.value.status == 400 and refused.value.code == "no_vision_route"

    with_router(tmp_path, scenario, FRONTIER_VISION="false")


# ---- point_at: the flow as it goes upstream --------------------------------------------


def assert_no_client_secrets(flow: http.HTTPFlow) -> None:
    sent = repr(flow.request.headers.fields).encode() + (flow.request.raw_content or b"")
    assert ROUTER_KEY.encode() not in sent and b"sk-client-own-key" not in sent
    assert b"x-xrouter-tier" not in repr(flow.request.headers.fields).lower().encode()


def test_point_at_an_openai_route(tmp_path: Path):
    async def scenario(tctx: taddons.context, addon: Xrouter) -> None:
        flow = chat_flow(
            ask(model="gpt-4o", temperature=0.2),
            headers={"x-xrouter-tier": "cheap", "x-request-id": "req-42"},
        )
        await run_request_hook(addon, flow)
        assert flow.response is None  # it goes upstream
        request = flow.request
        assert (request.scheme, request.host, request.port) == ("http", "127.0.0.1", 8101)
        assert request.path == "/v1/chat/completions"
        assert request.headers["host"] == "127.0.0.1:8101"
        assert request.headers["authorization"] == f"Bearer {CHEAP_KEY}"
        assert request.headers["content-length"] == str(len(request.raw_content or b""))
        assert request.headers["x-request-id"] == "req-42"  # other client headers travel
        body = json.loads(request.raw_content or b"")
        assert body == {
            "model": "cheap-model",
            "messages": [{"role": "user", "content": "hello there"}],
            "temperature": 0.2,
        }
        assert request.headers.get_all("host") == ["127.0.0.1:8101"]
        assert_no_client_secrets(flow)
        routed: RoutedFlow = flow.metadata[META]
        assert routed.route.tier == "cheap" and flow.metadata[mitm_compat.MARK] is True
        assert flow.metadata[mitm_compat.FIRST_BYTE_TIMEOUT] == 120.0

    with_router(tmp_path, scenario)


def test_point_at_an_anthropic_route(tmp_path: Path):
    async def scenario(tctx: taddons.context, addon: Xrouter) -> None:
        flow = chat_flow(ask(model="xrouter/medium", max_tokens=64))
        await run_request_hook(addon, flow)
        request = flow.request
        assert (request.scheme, request.host, request.port) == ("https", "127.0.0.1", 8443)
        assert request.path == "/v1/messages"
        assert request.headers["host"] == "127.0.0.1:8443"
        assert request.headers["x-api-key"] == MEDIUM_KEY
        assert request.headers["anthropic-version"] == "2023-06-01"
        assert "authorization" not in request.headers
        assert request.headers["content-length"] == str(len(request.raw_content or b""))
        body = json.loads(request.raw_content or b"")
        assert body["model"] == "claude-medium" and body["max_tokens"] == 64
        assert body["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "hello there"}]}
        ]
        assert_no_client_secrets(flow)

    with_router(tmp_path, scenario)


def test_an_intercepted_openai_call_is_routed_without_the_clients_key(tmp_path: Path):
    """Proxy mode: a call to api.openai.com goes to the chosen route with its key."""

    async def scenario(tctx: taddons.context, addon: Xrouter) -> None:
        flow = chat_flow(ask(model="xrouter/frontier"), reverse=False)
        await run_request_hook(addon, flow)
        request = flow.request
        assert (request.host, request.port, request.path) == ("127.0.0.1", 8103, CHAT)
        assert request.headers["host"] == "127.0.0.1:8103"
        assert request.headers["authorization"] == f"Bearer {FRONTIER_KEY}"
        assert_no_client_secrets(flow)
        # Not a chat call: passes untouched.
        other = tflow.tflow(req=tutils.treq(host="api.openai.com", port=443, path=b"/v1/files"))
        await run_request_hook(addon, other)
        assert other.response is None and other.request.host == "api.openai.com"
        assert META not in other.metadata

    with_router(tmp_path, scenario)


# ---- fallback: which route is next ----------------------------------------------------


def upstream_answer(status: int, message: str, **headers: str) -> http.Response:
    content = json.dumps({"error": {"message": message, "type": "server_error"}}).encode()
    fields = {"content-type": "application/json", "content-length": str(len(content)), **headers}
    return tutils.tresp(
        status_code=status,
        headers=http.Headers([(k.encode(), v.encode()) for k, v in fields.items()]),
        content=content,
    )


def test_a_5xx_points_the_flow_at_the_next_route_and_asks_for_a_retry(tmp_path: Path):
    async def scenario(tctx: taddons.context, addon: Xrouter) -> None:
        flow = chat_flow(ask(model="xrouter/cheap"))
        await run_request_hook(addon, flow)
        routed: RoutedFlow = flow.metadata[META]
        flow.response = upstream_answer(502, "bad gateway")
        assert addon.try_next_route(flow, routed) is True
        assert flow.metadata[mitm_compat.RETRY] is True
        assert routed.index == 1 and routed.route.tier == "medium"
        assert [(a.route, a.status) for a in routed.attempts] == [("cheap", 502)]
        # Rewritten for the Anthropic route: URL, key, body, Host and Content-Length.
        request = flow.request
        assert (request.scheme, request.host, request.port) == ("https", "127.0.0.1", 8443)
        assert request.path == "/v1/messages" and request.headers["host"] == "127.0.0.1:8443"
        assert request.headers["x-api-key"] == MEDIUM_KEY
        assert "authorization" not in request.headers  # the cheap route's key is gone
        assert request.headers["content-length"] == str(len(request.raw_content or b""))
        assert json.loads(request.raw_content or b"")["model"] == "claude-medium"
        assert_no_client_secrets(flow)

    with_router(tmp_path, scenario)


def test_a_4xx_is_not_retried(tmp_path: Path):
    async def scenario(tctx: taddons.context, addon: Xrouter) -> None:
        flow = chat_flow(ask(model="xrouter/cheap"))
        await run_request_hook(addon, flow)
        routed: RoutedFlow = flow.metadata[META]
        flow.response = upstream_answer(400, "bad request")
        assert addon.try_next_route(flow, routed) is False
        assert mitm_compat.RETRY not in flow.metadata
        assert routed.index == 0 and routed.route.tier == "cheap"
        assert (flow.request.host, flow.request.port) == ("127.0.0.1", 8101)

    with_router(tmp_path, scenario)


def test_the_last_route_failing_leaves_nothing_to_retry(tmp_path: Path):
    async def scenario(tctx: taddons.context, addon: Xrouter) -> None:
        flow = chat_flow(ask(model="xrouter/frontier"))
        await run_request_hook(addon, flow)
        routed: RoutedFlow = flow.metadata[META]
        flow.response = upstream_answer(503, "overloaded")
        assert addon.try_next_route(flow, routed) is False
        assert mitm_compat.RETRY not in flow.metadata
        assert [(a.route, a.status) for a in routed.attempts] == [("frontier", 503)]

    with_router(tmp_path, scenario)


# ---- error answers ---------------------------------------------------------------------


def test_an_upstream_error_is_answered_openai_shaped_with_keys_redacted(tmp_path: Path):
    async def scenario(tctx: taddons.context, addon: Xrouter) -> None:
        flow = chat_flow(ask(model="xrouter/cheap"))
        await run_request_hook(addon, flow)
        routed: RoutedFlow = flow.metadata[META]
        # A provider that echoes the key it was sent (some do, on 401s).
        flow.response = upstream_answer(401, f"Incorrect API key provided: {CHEAP_KEY}")
        assert addon.try_next_route(flow, routed) is False
        addon.answer_upstream_error(flow, routed)
        assert flow.response is not None and flow.response.status_code == 401
        assert flow.response.headers["content-type"] == "application/json"
        assert json.loads(flow.response.content) == {
            "error": {
                "message": "Upstream 'cheap' answered HTTP 401: Incorrect API key provided: ***",
                "type": "upstream_error",
                "code": "upstream_401",
            }
        }
        assert CHEAP_KEY.encode() not in flow.response.content

    with_router(tmp_path, scenario)


def test_an_anthropic_client_gets_an_anthropic_shaped_error(tmp_path: Path):
    async def scenario(tctx: taddons.context, addon: Xrouter) -> None:
        body = {
            "model": "xrouter/cheap",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "hello there"}],
        }
        flow = chat_flow(body, path="/v1/messages", headers={"x-api-key": ROUTER_KEY})
        await run_request_hook(addon, flow)
        routed: RoutedFlow = flow.metadata[META]
        assert routed.route.tier == "cheap"
        flow.response = upstream_answer(400, f"context too long for key {CHEAP_KEY}")
        assert addon.try_next_route(flow, routed) is False
        addon.answer_upstream_error(flow, routed)
        assert flow.response is not None and flow.response.status_code == 400
        assert json.loads(flow.response.content) == {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": "Upstream 'cheap' answered HTTP 400: context too long for key ***",
            },
        }

    with_router(tmp_path, scenario)


def test_when_every_route_failed_the_answer_lists_them_redacted(tmp_path: Path):
    async def scenario(tctx: taddons.context, addon: Xrouter) -> None:
        flow = chat_flow(ask(model="xrouter/medium"))
        await run_request_hook(addon, flow)
        routed: RoutedFlow = flow.metadata[META]
        flow.response = upstream_answer(500, f"internal error, key {MEDIUM_KEY}")
        assert addon.try_next_route(flow, routed) is True  # on to frontier
        flow.response = upstream_answer(503, "overloaded", **{"retry-after": "7"})
        assert addon.try_next_route(flow, routed) is False
        addon.answer_upstream_error(flow, routed)
        assert flow.response is not None and flow.response.status_code == 503
        error = json.loads(flow.response.content)["error"]
        assert error["code"] == "all_routes_failed"
        assert "'medium'" in error["message"] and "'frontier'" in error["message"]
        assert MEDIUM_KEY not in error["message"] and "***" in error["message"]
        assert flow.response.headers["x-xrouter-fallback"]
        assert flow.response.headers["retry-after"].isdigit()

    with_router(tmp_path, scenario)
