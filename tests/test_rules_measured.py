"""The measured rules on a real router over two fake cheap providers: a `latency` rule
and a `throughput` rule rank the same samples their own way and follow a provider that
slows down; a `tag` rule that sends to a tier takes that tier's candidates in its
strategy's (measured) order, as the classifier's path does; explain and `xrouter
explain` show each candidate's measured figures; RouteStats ranks rule pools on its own."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, Router, unique
from fakes import FakeOpenAIProvider, Pause, Reply, openai_stream
from helpers import Clock, measured_env, routes, slowed, stats
from test_fallback import ask, stream_text
from test_rules import problems_of

from xrouter_core.config import RoutingSettings
from xrouter_core.routing.route_stats import RouteStats

CHAT = "/v1/chat/completions"
EXPLAIN = "/v1/route/explain"
KEY = "router-key-measured-01"
AUTH = {"authorization": f"Bearer {KEY}"}
CODE = "fix this python function"  # tag code → the latency rule
SUMMARY = "summarize this article"  # tag summary → the throughput rule
TRANSLATION = "translate this into french"  # tag translation → tier cheap
RULES = [
    {"kind": "latency", "name": "fastest", "if_tags": ["code"], "tiers": ["cheap"]},
    {"kind": "throughput", "name": "quickest", "if_tags": ["summary"], "tiers": ["cheap"]},
    {"kind": "tag", "name": "translate-cheap", "tag": "translation", "tier": "cheap"},
]


@pytest.fixture(scope="module")
def pair():
    servers = {"a": FakeOpenAIProvider("a"), "b": FakeOpenAIProvider("b")}
    yield servers
    for server in servers.values():
        server.close()


@pytest.fixture(scope="module")
def measured(upstreams_session, pair, tmp_path_factory):
    """cheap = [a, b], its own strategy `latency`; the rules above; no Redis."""
    env = measured_env(upstreams_session, pair, "latency")
    doc = json.loads(env["UPSTREAMS_JSON"])
    doc["rules"] = RULES
    env["UPSTREAMS_JSON"] = json.dumps(doc)
    env["ROUTER_API_KEY"] = KEY
    router = Router(env, tmp_path_factory.mktemp("measured-rules"))
    yield router
    router.stop()


def trickle(request):
    """Its first byte at once, then the second chunk 0.3 s later: few tokens/s."""
    chunks = openai_stream(["Hello from a", "!"], request.json["model"], pause=Pause(0.3))
    return Reply(chunks=chunks)


def send(router: Router, text: str, stream: bool = True):
    with router.client() as client:
        reply = client.post(CHAT, json=ask(unique(text), stream=stream), headers=AUTH)
    assert reply.status_code == 200, reply.text
    return reply


def drive(router: Router, text: str, done):
    """Streamed requests of `text` until done(route_stats); each must come from cheap."""

    def one(n: int) -> str:
        reply = send(router, f"{text} {n}")
        assert reply.headers["x-xrouter-upstream"] == "cheap"
        stream_text(reply)
        return reply.headers["x-xrouter-route"]

    served = {}
    for n in range(60):
        route = one(n)
        served[route] = served.get(route, 0) + 1
        if done(stats(router)):
            return served
    raise AssertionError(f"not reached: {stats(router)}, {served}")


def test_latency_and_throughput_rules_follow_the_measured_figures(measured, pair, upstreams):
    a, b = pair["a"], pair["b"]
    # a answers at once and trickles; b starts 0.1 s late and streams at once.
    a.override = trickle
    b.override = slowed(b, 0.1)
    order = stats(measured)["order"]
    assert order["rule:fastest"] == order["rule:quickest"] == ["cheap#1", "cheap#2"]
    # Until both are measured the pool's order (a), one request in four lent to b.
    served = drive(measured, CODE, lambda s: s["order"]["rule:quickest"] == ["cheap#2", "cheap#1"])
    assert served["a/a-model"] > served.get("b/b-model", 0) > 0, served
    order = stats(measured)["order"]
    assert order["rule:fastest"] == ["cheap#1", "cheap#2"]  # a's first byte comes first
    reply = send(measured, CODE)
    assert reply.headers["x-xrouter-rule"] == "fastest"
    assert reply.headers["x-xrouter-route"] == "a/a-model"
    assert stream_text(reply) == "Hello from a!"
    reply = send(measured, SUMMARY)
    assert reply.headers["x-xrouter-rule"] == "quickest"
    assert reply.headers["x-xrouter-route"] == "b/b-model"  # the same samples, tokens/s
    assert stream_text(reply) == "Hello from b!"

    # a slows down (0.3 s to its first byte), b is prompt: the latency rule turns to b.
    a.override = slowed(a, 0.3)
    b.override = None
    drive(measured, CODE, lambda s: s["order"]["rule:fastest"] == ["cheap#2", "cheap#1"])
    assert send(measured, CODE).headers["x-xrouter-route"] == "b/b-model"
    figures = stats(measured)["routes"]
    # a's window: two prompt samples and two slow ones by now; b's: 0.1 s each.
    assert figures["cheap#1"]["p50_ttfb_ms"] > figures["cheap#2"]["p50_ttfb_ms"]

    # A tag rule sending to tier cheap tries cheap's candidates in its strategy's
    # (latency) order, as the classifier's path would: b first, not a as configured.
    assert stats(measured)["order"]["cheap"] == ["cheap#2", "cheap#1"]
    for stream in (False, True):
        reply = send(measured, TRANSLATION, stream=stream)
        assert reply.headers["x-xrouter-rule"] == "translate-cheap"
        assert reply.headers["x-xrouter-route"] == "b/b-model"

    # Explain shows each candidate's measured figures, and calls no provider.
    before = len(a.requests) + len(b.requests)
    with measured.client() as client:
        doc = client.post(EXPLAIN, json={"text": CODE}, headers=AUTH).json()
        tier = client.post(EXPLAIN, json={"text": TRANSLATION}, headers=AUTH).json()
    assert len(a.requests) + len(b.requests) == before
    assert doc["rule"] == {"name": "fastest", "kind": "latency"}
    rows = {row["key"]: row for row in doc["candidates"]}
    assert [row["key"] for row in doc["candidates"]] == ["cheap#2", "cheap#1"]
    assert doc["chosen"]["key"] == "cheap#2"
    assert rows["cheap#1"]["p50_ttfb_ms"] > rows["cheap#2"]["p50_ttfb_ms"]
    assert rows["cheap#1"]["samples"] >= 2 and rows["cheap#2"]["samples"] >= 2
    assert rows["cheap#2"]["tokens_per_s"] > 0
    assert [row["key"] for row in tier["candidates"]][:2] == ["cheap#2", "cheap#1"]
    unmeasured = [row for row in tier["candidates"] if row["tier"] != "cheap"]
    assert unmeasured and all(
        row["samples"] == 0 and row["p50_ttfb_ms"] is None for row in unmeasured
    )
    assert not upstreams.medium.requests and not upstreams.frontier.requests

    done = subprocess.run(
        [sys.executable, "-m", "xrouter_core", "explain", "--url", measured.url, "--key", KEY]
        + CODE.split(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if "a/a-model" in line]
    assert len(lines) == 1 and " ms " in lines[0] and "tok/s" in lines[0], done.stdout
    a.override = b.override = None


def test_health_lists_the_measured_rules_and_bad_ones_are_refused(measured):
    health = measured.client().get("/health").json()
    rules = {rule["name"]: rule for rule in health["rules"]}
    assert rules["fastest"]["kind"] == "latency"
    assert rules["quickest"]["pool"] == ["cheap#1", "cheap#2"]
    problems = problems_of(
        [{"kind": "latency", "route": "big"}, {"kind": "throughput", "window": 3}]
    )
    assert problems[0].startswith("ROUTING_RULES[0]: a pool rule chooses its route")
    assert problems[1] == "ROUTING_RULES[1]: unknown keys ['window'] for a throughput rule"


def test_route_stats_ranks_rule_pools_beside_the_tiers():
    """A rule's pool is ranked by its own strategy from the samples the routes share with
    their tiers (an `ordered` tier here); a pool of one is not ranked."""
    found = routes()
    routing = RoutingSettings(stats_window=4, stats_min_samples=1)
    pools = {
        "fast": ("latency", found),
        "wide": ("throughput", found[1:]),
        "lone": ("latency", found[:1]),
    }
    stats_ = RouteStats(routing, {"cheap": found}, clock=Clock(), pools=pools)
    assert stats_.order("cheap") is None  # the tier's own strategy is ordered
    assert stats_.rule_order("lone") is None
    assert stats_.rule_order("fast") == found  # unmeasured: the pool's order
    for ms, tokens, route in ((90, 100, found[0]), (10, 10, found[1]), (50, 50, found[2])):
        stats_.record(route, ms, tokens, 1.0)
    stats_.refresh()
    assert stats_.rule_order("fast") == (found[1], found[2], found[0])
    assert stats_.rule_order("wide") == (found[2], found[1])
    assert stats_.public()["order"] == {
        "rule:fast": ["cheap#2", "cheap#3", "cheap#1"],
        "rule:wide": ["cheap#3", "cheap#2"],
    }
