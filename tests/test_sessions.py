"""Session cost routing (routing/sessions.py): session identity, cache state, the choice
by expected cost, the honest baseline on /usage and the cache marks of translated routes;
end to end through real routers to fake Anthropic providers that cache and bill like the
API (tests/cache_fakes.py), with the replay of bench/session_replay.py."""

from __future__ import annotations

import json
import re
import time

import pytest
from cache_fakes import CachingAnthropicProvider, CachingOpenAIProvider
from conftest import Router
from helpers import CONTROL, RedisServer
from mitmproxy.http import Headers

from bench import session_replay as replay
from xrouter_core.accounting.prices import Price, genai_price
from xrouter_core.config import ConfigError, Route, load_settings
from xrouter_core.routing.sessions import (
    RouteCache,
    SessionState,
    choose,
    expected_cost,
    marks_of,
    route_id,
    session_of,
    worth_caching,
)
from xrouter_core.wire.adapters.anthropic import AnthropicAdapter
from xrouter_core.wire.headers import header_lookup
from xrouter_core.wire.inbound import parse_anthropic_messages, parse_openai_chat
from xrouter_core.wire.responses import parse_responses

CHAT = "/v1/chat/completions"


def chat(messages: list[dict], **extra) -> object:
    return parse_openai_chat(json.dumps({"model": "m", "messages": messages, **extra}).encode())


# ---- identity -------------------------------------------------------------------------


def test_claude_code_session_header_and_metadata_name_the_session():
    body = {
        "model": "claude-opus-4-5",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
        "metadata": {
            "user_id": json.dumps(
                {"device_id": "d" * 64, "account_uuid": "", "session_id": "5f0c-aaaa-bb"}
            )
        },
    }
    request = parse_anthropic_messages(json.dumps(body).encode())
    by_metadata = session_of(request, {})
    assert by_metadata.source == "claude-code" and by_metadata.label == "claude-code:5f0c-aaaa-bb"
    header = {"x-claude-code-session-id": "5f0c-aaaa-bb"}
    assert session_of(request, header) == by_metadata  # the header and metadata agree
    legacy = {**body, "metadata": {"user_id": "user_abc_account_123_session_77e1-42"}}
    request = parse_anthropic_messages(json.dumps(legacy).encode())
    assert session_of(request, {}).label == "claude-code:77e1-42"


def test_codex_headers_and_prompt_cache_key_name_the_session():
    body = {"model": "gpt-5", "input": "hi", "prompt_cache_key": "01a2-thread"}
    request = parse_responses(json.dumps(body).encode(), lambda _: None, lambda _: None)
    by_key = session_of(request, {})
    assert by_key.label == "prompt_cache_key:01a2-thread"
    for header in ("session-id", "thread-id", "session_id", "conversation_id"):
        found = session_of(request, {header: "01a2-thread"})
        assert found.source == "codex" and found.label == "codex:01a2-thread"
    # An id with the counters' separator in it is shown without it.
    assert "|" not in session_of(request, {"session-id": "a|b"}).label


def test_the_routers_header_lookup_reads_as_mitmproxys_headers():
    """The router reads a request's headers once (header_lookup) instead of asking
    mitmproxy's Headers per name: any case, several fields of a name joined alike."""
    fields = [
        ("X-Claude-Code-Session-Id", "6c1f-aa"),
        ("Session-ID", "0199-a"),
        ("session-id", "0199-b"),
        ("Content-Type", "application/json"),
        ("X-Xrouter-Tier", "cheap"),
        ("thread-id", ""),
        ("\u212aey", "kelvin"),  # K (Kelvin sign): str.lower() makes it "key", bytes.lower() not
    ]
    mitm = Headers([(k.encode(), v.encode()) for k, v in fields])
    found = header_lookup(fields)
    for name in ("x-claude-code-session-id", "session-id", "content-type", "x-xrouter-tier"):
        assert found.get(name) == mitm.get(name)
    assert found["session-id"] == "0199-a, 0199-b" and found["thread-id"] == ""
    assert found.get("conversation_id") is None is mitm.get("conversation_id")
    assert found.get("key") is None is mitm.get("key")
    request = chat([{"role": "user", "content": "hi"}])
    assert session_of(request, found) == session_of(request, mitm)
    assert session_of(request, found).label == "claude-code:6c1f-aa"


def test_without_an_id_the_session_is_its_system_prompt_and_first_ask():
    system = {"role": "system", "content": "You are an agent. Today is 2026-12-02 10:00."}
    first = [system, {"role": "user", "content": "Fix the parser"}]
    later = [
        {**system, "content": "You are an agent. Today is 2026-12-03 09:15."},
        {"role": "user", "content": "Fix the parser"},
        {"role": "assistant", "content": "Done."},
        {"role": "user", "content": "Now the tests"},
    ]
    a, b = session_of(chat(first), {}), session_of(chat(later), {})
    assert a == b and a.source == "prompt"
    other = [system, {"role": "user", "content": "Write the docs"}]
    assert session_of(chat(other), {}) != a
    assert session_of(chat([system]), {}) is None  # nothing the person wrote


def test_state_round_trips_and_garbage_reads_as_fresh():
    state = SessionState({"frontier|m": RouteCache(5000, 1.5, 300.0)}, RouteCache(10, 2.0, 300))
    state.output, state.last, state.task_lengths[2], state.in_task = 512.0, "frontier|m", 2.5, 1
    again = SessionState.loads(state.dumps())
    assert again == state
    for raw in (b"not json", '{"r": 1}', None):
        assert SessionState.loads(raw) == SessionState()


# ---- the choice -------------------------------------------------------------------------

OPUS = genai_price("claude-opus-4-5", None)
HAIKU = genai_price("claude-haiku-4-5", None)
CHEAP_ROUTE = Route("cheap", "http://a", model="claude-haiku-4-5")
FRONTIER_ROUTE = Route("frontier", "http://b", model="claude-opus-4-5")


def test_the_issues_worked_example_stays_on_the_cached_frontier():
    """100k tokens cached on Opus 4.5: a turn there reads them ($0.05); moving it to a
    cold Haiku 4.5 writes them ($0.125). The classifier's cheap tier is not taken."""
    assert (OPUS.cache_read, HAIKU.cache_write) == (0.5, 1.25)
    now = time.time()
    state = SessionState({route_id(FRONTIER_ROUTE): RouteCache(100_000, now - 10, 300.0)})
    state.output = 0.0
    options = [(0, route_id(CHEAP_ROUTE), HAIKU), (2, route_id(FRONTIER_ROUTE), OPUS)]
    choice = choose(0, options, state, 100_000, now)
    assert choice.tier == 2
    assert choice.figures() == "cheap:0.125000/0,frontier:0.050000/100000"
    # The same frontier cache, expired: nothing holds the session, the cheap tier wins.
    state.routes[route_id(FRONTIER_ROUTE)].at = now - 301
    assert choose(0, options, state, 100_000, now).tier == 0
    # Warm on Haiku too: reading there is cheaper than reading on Opus.
    state.routes[route_id(FRONTIER_ROUTE)].at = now
    state.routes[route_id(CHEAP_ROUTE)] = RouteCache(90_000, now, 300.0)
    assert choose(0, options, state, 100_000, now).tier == 0


def test_a_switch_that_saves_nothing_is_not_made():
    same = Price(1.0, 1.0, "route")  # no cache rates: both routes cost the same
    now = time.time()
    state = SessionState({route_id(FRONTIER_ROUTE): RouteCache(0, now, 0)})
    state.last = route_id(FRONTIER_ROUTE)
    state.routes[route_id(FRONTIER_ROUTE)] = RouteCache(50_000, now, 300.0)
    options = [(0, route_id(CHEAP_ROUTE), same), (2, route_id(FRONTIER_ROUTE), same)]
    choice = choose(0, options, state, 50_000, now)
    assert choice.tier == 2  # a tie keeps the session where it is


def test_a_tool_loop_amortises_a_switch_over_its_requests():
    """A cold cache costs its write once; the task's later requests read it."""
    one = expected_cost(HAIKU, 40_000, 300, 0)[0]
    three = expected_cost(HAIKU, 40_000, 300, 0, horizon=3, growth=1500)[0]
    later = HAIKU.cost(41_500, 300, 40_000, 1500) + HAIKU.cost(43_000, 300, 41_500, 1500)
    assert three == pytest.approx(one + later)


# ---- settings and the translated route's marks -----------------------------------------


def anthropic_body(cache_control: dict, text: str = "hi", **dumps: object) -> bytes:
    """A Messages body with `cache_control` on its system block, serialized by `dumps`."""
    doc = {
        "model": "claude",
        "system": [{"type": "text", "text": "be brief", "cache_control": cache_control}],
        "messages": [{"role": "user", "content": text}],
    }
    return json.dumps(doc, **dumps).encode()


@pytest.mark.parametrize(
    "dumps",
    [
        {"separators": (",", ":")},  # compact, as SDKs send
        {},  # Python's default: '"ttl": "1h"'
        {"separators": (",", " : ")},
        {"indent": 2},  # pretty-printed: newlines between the members
        {"indent": "\t", "separators": (",", " :\n")},
    ],
)
def test_the_one_hour_lifetime_is_read_from_any_json_spacing(dumps):
    """Anthropic's cache_control is {"type": "ephemeral", "ttl": "5m" | "1h"}: the 1-hour
    lifetime is read whatever whitespace the client's JSON has, whatever the key order."""
    long = {"type": "ephemeral", "ttl": "1h"}
    assert marks_of(anthropic_body(long, **dumps)) == (True, True)
    assert marks_of(anthropic_body({"ttl": "1h", "type": "ephemeral"}, **dumps)) == (True, True)
    assert marks_of(anthropic_body({"type": "ephemeral", "ttl": "5m"}, **dumps)) == (True, False)
    assert marks_of(anthropic_body({"type": "ephemeral"}, **dumps)) == (True, False)


def test_a_ttl_or_cache_control_in_the_text_is_not_a_mark():
    """Words in a message, a tool's input or a key that merely contains the names are
    not the client's cache marks."""
    text = 'set "cache_control": {"type": "ephemeral", "ttl":"1h"} and "ttl" : "1h"'
    short = {"type": "ephemeral"}
    assert marks_of(anthropic_body(short, text)) == (True, False)
    assert marks_of(anthropic_body(short, text, indent=2)) == (True, False)
    plain = {"model": "m", "messages": [{"role": "user", "content": text}]}
    assert marks_of(json.dumps(plain).encode()) == (False, False)
    # A key whose name ends in the quoted word: its quote is escaped.
    odd = {"model": "m", "metadata": {'x"cache_control': {"ttl": "1h"}, 'y"ttl': "1h"}}
    assert marks_of(json.dumps(odd).encode()) == (False, False)
    # The 1-hour ttl outside a cache_control object (a tool's input) is not a mark's.
    tool_use = {
        "system": [{"type": "text", "text": "s", "cache_control": short}],
        "messages": [
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "n", "input": {"ttl": "1h"}}],
            }
        ],
    }
    assert marks_of(json.dumps(tool_use).encode()) == (True, False)


def test_session_cost_routing_setting_is_validated(tmp_path):
    base = {"FRONTIER_BASE_URL": "http://127.0.0.1:9/v1", "CLASSIFIER_ENABLED": "false"}
    files = {"env_file": tmp_path / "none.env", "upstreams_file": tmp_path / "none.json"}
    assert load_settings(base, **files).session_cost_routing == "on"
    assert (
        load_settings({**base, "SESSION_COST_ROUTING": "Observe"}, **files).session_cost_routing
        == "observe"
    )
    with pytest.raises(ConfigError) as raised:
        load_settings({**base, "SESSION_COST_ROUTING": "sometimes"}, **files)
    assert "SESSION_COST_ROUTING must be one of on, observe, off" in str(raised.value)


def test_a_translated_anthropic_route_marks_the_system_prompt_and_the_last_message():
    request = chat(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "and now?"},
        ]
    )
    route = Route("frontier", "https://api.anthropic.com", api_key="k", provider="anthropic")
    plain = json.loads(AnthropicAdapter().build_request(route, request, []).body)
    assert "cache_control" not in json.dumps(plain)
    request.cache_prefix = True
    body = json.loads(AnthropicAdapter().build_request(route, request, []).body)
    assert body["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert body["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert json.dumps(body).count("cache_control") == 2  # of the four breakpoints allowed


def test_only_requests_with_a_next_turn_are_marked_for_caching():
    """A marked prompt pays the write premium once: worth it for an agent's request (tools),
    a conversation (history) or a client that names its session; not for a one-off."""
    system = {"role": "system", "content": "Be brief."}
    one_off = chat([system, {"role": "user", "content": "What is 2+2?"}])
    assert not worth_caching(one_off, session_of(one_off, {}))
    assert worth_caching(one_off, session_of(one_off, {"session-id": "0199-abc"}))
    tool = {"type": "function", "function": {"name": "f", "parameters": {}}}
    agent = chat([system, {"role": "user", "content": "Fix it"}], tools=[tool])
    assert worth_caching(agent, session_of(agent, {}))
    talk = chat(
        [
            system,
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "more"},
        ]
    )
    assert worth_caching(talk, session_of(talk, {}))


# ---- end to end: the replay through real routers ----------------------------------------


@pytest.fixture(scope="module")
def fakes():
    servers = replay.Fakes()
    yield servers
    servers.close()


def test_replay_half_easy_turns_cost_at_most_08_of_staying_on_frontier(fakes, tmp_path):
    pattern = replay.PATTERNS["half"][:16]
    runs = replay.run_pattern(fakes, pattern, tmp_path, ("a", "c"))
    a, c = runs["a"], runs["c"]
    assert c.total <= 0.8 * a.total, replay.table({**runs, "b": c})
    # The translated routes cached: every turn after the first read from the cache.
    assert all(t.read > 0 for t in c.turns[1:])
    # /usage: the router's own pricing agrees with the fakes' bills, and its simulated
    # baseline (frontier with frontier's cache, from the same token counts) is what
    # staying on frontier really cost.
    assert c.usage["cost"]["totalUsd"] == pytest.approx(c.total, rel=1e-6)
    sessions = c.usage["sessions"]
    assert sessions["count"] == 1
    assert sessions["cachedFrontierUsd"] == pytest.approx(a.total, rel=0.01)
    (row,) = sessions["rows"]
    assert row["session"].startswith("prompt:") and not row["dearer"]
    assert row["savingsUsd"] == pytest.approx(a.total - c.total, rel=0.01)
    assert c.usage["cost"]["cachedFrontierUsd"] == pytest.approx(a.total, rel=0.01)


def test_replay_a_late_easy_ask_stays_on_the_cached_frontier(fakes, tmp_path):
    """Sixteen hard turns build the prefix on frontier; a quick easy question then costs
    less there than on a cold cheap tier: with the feature it stays (source=cache_cost,
    with the figures in the log line), without it the session costs more than staying,
    and /usage says so."""
    pattern = "H" * 16 + "Q" + "H" * 3
    runs = replay.run_pattern(fakes, pattern, tmp_path, ("a", "b", "c"))
    a, b, c = runs["a"].total, runs["b"].total, runs["c"].total
    table = replay.table(runs)
    assert c <= a * (1 + 1e-9) < b, table
    assert runs["b"].turns[16].tier == "cheap" and runs["c"].turns[16].tier == "frontier"
    line = next(line for line in runs["c"].log.splitlines() if "source=cache_cost" in line)
    assert re.search(r"decision=2 source=cache_cost route=frontier .*session=prompt:", line), line
    assert re.search(r"expected=cheap:\d+\.\d{6}/0,frontier:\d+\.\d{6}/\d+", line), line
    dearer = runs["b"].usage["sessions"]
    assert dearer["dearer"] == 1 and dearer["rows"][0]["dearer"]
    assert dearer["savingsUsd"] == pytest.approx(a - b, rel=0.02)
    assert runs["c"].usage["sessions"]["dearer"] == 0


def test_workers_on_one_redis_agree_on_the_session_cache(fakes, tmp_path):
    """Turns alternate between two routers on one Redis: the router that gets the easy
    question knows the frontier cache the other one's turns left."""
    redis = RedisServer(tmp_path)
    routers = []
    try:
        for name in ("one", "two"):
            directory = tmp_path / name
            directory.mkdir()
            env = fakes.env("on", directory / "data")
            env["REDIS_URL"] = f"redis://127.0.0.1:{redis.port}/0"
            routers.append(Router(env, directory))
        fakes.reset()
        turns = replay.replay(routers, fakes, "HHHHHQ")
        assert [t.tier for t in turns] == ["frontier"] * 6
        # The question (turn 5) went to the second router; the turn before to the first.
        assert "source=cache_cost" in routers[1].logs()
    finally:
        for router in routers:
            router.stop()
        redis.proc.terminate()
        redis.proc.wait(10)


def test_a_session_state_write_started_just_before_a_reload_lands(fakes, tmp_path):
    """A reload just after a turn is recorded, before the session-state write the record
    started has had a turn (CONTROL's x-control-reload-to): the state still lands in
    Redis, so the session's next turn, an easy question, knows the frontier cache the
    turn left and stays there (cache_cost) instead of writing the prefix on cold cheap."""
    redis = RedisServer(tmp_path)
    control = tmp_path / "control.py"
    control.write_text(CONTROL)
    envs = [tmp_path / "a.env", tmp_path / "b.env"]
    for env, medium in zip(envs, ("claude-sonnet-4-5", "claude-sonnet-4-0"), strict=True):
        values = {
            **fakes.env("on", tmp_path / "data"),
            "REDIS_URL": f"redis://127.0.0.1:{redis.port}/0",
            "MEDIUM_MODEL": medium,
        }
        env.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    fakes.reset()
    router = Router({}, tmp_path, args=["-s", str(control), "--set", f"xrouter_env_file={envs[0]}"])
    try:
        session = {"x-claude-code-session-id": "0e5a-reload-turns"}
        # One direct answer on frontier, ~40k tokens long: enough that a cold cheap tier
        # writing it costs more than frontier reading it.
        messages = [
            {"role": "system", "content": replay.SYSTEM},
            {"role": "user", "content": "HARD QUICK: read this. " + "context " * 20_000},
        ]
        with router.client(timeout=30) as client:
            first = client.post(
                CHAT,
                json={"model": "auto", "messages": messages},
                headers={**session, "x-control-reload-to": str(envs[1])},
            )
            assert first.status_code == 200, first.text
            assert first.headers["x-xrouter-upstream"] == "frontier"
            # The reload has run: the medium route has its new model.
            pinned = client.post(
                CHAT,
                json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
                headers={"x-xrouter-tier": "medium"},
            )
            assert pinned.status_code == 200, pinned.text
            assert fakes.tiers["medium"].requests[-1].json["model"] == "claude-sonnet-4-0"
            messages.append(first.json()["choices"][0]["message"])
            messages.append({"role": "user", "content": "EASY QUICK: which file was it?"})
            second = client.post(
                CHAT, json={"model": "auto", "messages": messages}, headers=session
            )
        assert second.status_code == 200, second.text
        assert second.headers["x-xrouter-upstream"] == "frontier", router.logs()
        assert not fakes.tiers["cheap"].requests
        assert fakes.tiers["frontier"].billed[-1].read > 0
        assert "source=cache_cost" in router.logs()
    finally:
        router.stop()
        redis.proc.terminate()
        redis.proc.wait(10)


def test_same_format_anthropic_requests_keep_the_clients_marks_and_its_session(fakes, tmp_path):
    """Claude Code's shape: its own cache_control marks go through untouched, its session
    header names the session, and the fake's cache reads come back counted."""
    fakes.reset()
    router = Router(fakes.env("on", tmp_path / "data"), tmp_path)
    try:
        system = [{"type": "text", "text": replay.SYSTEM, "cache_control": {"type": "ephemeral"}}]
        messages = [{"role": "user", "content": [{"type": "text", "text": "HARD: plan it"}]}]
        headers = {
            "x-api-key": "client-key",
            "anthropic-version": "2023-06-01",
            "x-claude-code-session-id": "6c1f2a3b-0d4e-4f5a-8b6c-7d8e9f0a1b2c",
        }
        with router.client() as client:
            for turn in range(2):
                messages[-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}
                body = {"model": "x", "max_tokens": 50, "system": system, "messages": messages}
                reply = client.post("/v1/messages", json=body, headers=headers)
                assert reply.status_code == 200, reply.text
                del messages[-1]["content"][-1]["cache_control"]
                messages.append({"role": "assistant", "content": reply.json()["content"]})
                messages.append(
                    {"role": "user", "content": [{"type": "text", "text": f"HARD {turn}"}]}
                )
        sent = [r.json for r in fakes.tiers["frontier"].requests]
        assert len(sent) == 2 and sent[0]["system"] == system
        assert json.dumps(sent[1]).count("cache_control") == 2  # the client's, no more
        assert fakes.tiers["frontier"].billed[1].read > 0
        router.settle()
        assert "session=claude-code:6c1f2a3b-0d4e" in router.logs()
        with router.client() as client:
            (row,) = client.get("/usage").json()["sessions"]["rows"]
        assert row["session"] == "claude-code:6c1f2a3b-0d4e" and row["requests"] == 2
        assert row["cacheReadTokens"] == fakes.tiers["frontier"].billed[1].read
    finally:
        router.stop()


def test_openai_automatic_caching_keeps_a_session_on_its_cached_route(tmp_path):
    """An OpenAI frontier caches automatically (prompt_tokens_details.cached_tokens): a
    session built there keeps an easy question there when a cold cheap Anthropic tier
    would write the prefix."""
    classifier = replay.LastAskClassifier("2")
    cheap = CachingAnthropicProvider("cheap", host=replay.HOST, output_tokens=50)
    frontier = CachingOpenAIProvider("frontier", host=replay.HOST, output_tokens=50)
    env = {
        "CLASSIFIER_MODE": "llm",
        "CLASSIFIER_BASE_URL": classifier.url + "/v1",
        "CLASSIFIER_MODEL": "tiny-classifier",
        "XROUTER_DATA_DIR": str(tmp_path / "data"),
        "CHEAP_BASE_URL": cheap.url,
        "CHEAP_PROVIDER": "anthropic",
        "CHEAP_MODEL": "claude-haiku-4-5",
        "CHEAP_API_KEY": "sk-ant-test",
        "MEDIUM_BASE_URL": cheap.url,
        "MEDIUM_PROVIDER": "anthropic",
        "MEDIUM_MODEL": "claude-sonnet-4-5",
        "MEDIUM_API_KEY": "sk-ant-test",
        "FRONTIER_BASE_URL": frontier.url + "/v1",
        "FRONTIER_MODEL": "gpt-4.1",
        "FRONTIER_API_KEY": "sk-frontier-test",
    }
    router = Router(env, tmp_path)
    try:
        messages = [{"role": "system", "content": replay.SYSTEM}]
        with router.client() as client:
            for ask in ("HARD one", "HARD two", "HARD three", "EASY: which file?"):
                messages.append({"role": "user", "content": ask + " " + "context " * 400})
                reply = client.post(CHAT, json={"model": "auto", "messages": messages})
                assert reply.status_code == 200, reply.text
                messages.append({"role": "assistant", "content": "noted " * 300})
        assert len(frontier.requests) == 4 and not cheap.requests, router.logs()
        last = frontier.billed[-1]
        assert last.read >= 0.8 * last.prompt  # all but the newest messages came cached
        assert "source=cache_cost" in router.logs()
    finally:
        router.stop()
        for server in (classifier, cheap, frontier):
            server.close()


def test_the_dashboard_shows_each_session_and_marks_a_dearer_one(fakes, tmp_path):
    """Per-request routing (observe) moves a quick question to a cold cheap tier: the
    session costs more than staying would have, and the dashboard says so."""
    from helpers import chromium

    fakes.reset()
    router = Router(fakes.env("observe", tmp_path / "data"), tmp_path)
    try:
        turns = replay.replay(router, fakes, "HHHHHHQ")
        assert turns[-1].tier == "cheap"
        router.settle()
        with router.client() as client:
            sessions = client.get("/usage").json()["sessions"]
        (row,) = sessions["rows"]
        assert row["dearer"] and row["savingsUsd"] < 0 and sessions["dearer"] == 1
        dom = chromium(router.url + "/dashboard", tmp_path, "--dump-dom", budget_ms=4000)
        html = dom.stdout.decode()
        assert dom.returncode == 0, dom.stderr.decode()[-2000:]
        rendered = re.search(r'data-rendered-sessions="([^"]*)"', html)
        assert rendered, html[-3000:]
        shown = json.loads(rendered.group(1).replace("&quot;", '"'))
        assert shown == [[row["session"], row["savingsUsd"], True]]
        assert '<tr class="dearer">' in html and "(routing cost more)" in html
    finally:
        router.stop()
