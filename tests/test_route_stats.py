"""The measured strategies on real routers: `latency` follows the measured time to first
byte when one candidate slows down, and two workers sharing Redis agree on it; the
`throughput` strategy follows measured tokens/s even against time to first byte. Plus
RouteStats itself: the window, the ordered start and the exploration of new routes."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from conftest import Router, unique
from fakes import FakeOpenAIProvider, Pause, Reply, openai_stream
from helpers import Clock, RedisServer, measured_env, routes, slowed, stats, wait_for
from test_fallback import ask, stream_text

from xrouter_core.config import Route, RoutingSettings
from xrouter_core.routing.route_stats import EXPLORE_EVERY, RouteStats, Sample, route_id

CHAT = "/v1/chat/completions"
CHEAP = {"x-xrouter-tier": "cheap"}


@pytest.fixture(scope="module")
def pair():
    servers = {"a": FakeOpenAIProvider("a"), "b": FakeOpenAIProvider("b")}
    yield servers
    for server in servers.values():
        server.close()


@pytest.fixture(scope="module")
def workers(upstreams_session, pair, tmp_path_factory):
    """Two routers (one per launcher) on one Redis, cheap = [a, b] by latency."""
    tmp = tmp_path_factory.mktemp("latency")
    redis_server = RedisServer(tmp)
    env = measured_env(upstreams_session, pair, "latency")
    env["REDIS_URL"] = f"redis://127.0.0.1:{redis_server.port}/0"
    (tmp / "one").mkdir()
    (tmp / "two").mkdir()
    first = Router(env, tmp / "one")
    second = Router(env, tmp / "two", launcher="xrouter")
    yield first, second
    first.stop()
    second.stop()
    redis_server.proc.terminate()
    redis_server.proc.wait(10)


def served_by(router: Router, text: str, stream: bool = False) -> str:
    with router.client() as client:
        reply = client.post(CHAT, json=ask(unique(text), stream=stream), headers=CHEAP)
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-xrouter-upstream"] == "cheap"
    return reply.headers["x-xrouter-route"]


def drive_until(router: Router, done, limit: int = 60, stream: bool = False) -> Counter:
    """Requests through `router` until done(route_stats) holds (checked after each)."""
    served: Counter[str] = Counter()
    for n in range(limit):
        served[served_by(router, f"drive {n}", stream)] += 1
        time.sleep(0.03)  # a sync or two (100 ms) now and then
        if done(stats(router)):
            return served
    raise AssertionError(f"not reached after {limit} requests: {stats(router)}, {served}")


def test_latency_follows_the_measured_first_byte_across_workers(workers, pair, upstreams):
    first, second = workers
    pair["a"].override = slowed(pair["a"], 0.15)
    # Until both are measured: the configured order (a), with one request in
    # EXPLORE_EVERY lent to b so that it gets measured.
    assert stats(first)["order"]["cheap"] == ["cheap#1", "cheap#2"]
    served = drive_until(first, lambda s: s["order"]["cheap"] == ["cheap#2", "cheap#1"])
    assert served["a/a-model"] > served["b/b-model"] > 0, served
    figures = stats(first)["routes"]
    assert figures["cheap#1"]["p50_ttfb_ms"] > 100 > figures["cheap#2"]["p50_ttfb_ms"]
    assert served_by(first, "fast one") == "b/b-model"
    # The second worker served nothing, and ranks by the first one's samples.
    wait_for(lambda: stats(second)["order"]["cheap"] == ["cheap#2", "cheap#1"], timeout=5)
    shared = stats(second)
    assert shared["shared"] is True
    assert shared["routes"]["cheap#1"]["samples"] >= 2
    assert served_by(second, "second worker", stream=True) == "b/b-model"

    # b slows down (a is fast now): once b's p50 passes a's, a is chosen again.
    pair["a"].override = None
    pair["b"].override = slowed(pair["b"], 0.3)
    drive_until(first, lambda s: s["order"]["cheap"] == ["cheap#1", "cheap#2"])
    assert served_by(first, "a again") == "a/a-model"
    wait_for(lambda: stats(second)["order"]["cheap"] == ["cheap#1", "cheap#2"], timeout=5)
    assert served_by(second, "second agrees") == "a/a-model"
    assert not upstreams.medium.requests and not upstreams.frontier.requests


@pytest.fixture(scope="module")
def throughput_router(upstreams_session, pair, tmp_path_factory):
    router = Router(
        measured_env(upstreams_session, pair, "throughput"),
        tmp_path_factory.mktemp("throughput"),
    )
    yield router
    router.stop()


def test_throughput_follows_tokens_per_second_not_first_byte(throughput_router, pair):
    """a answers at once but streams slowly; b starts late and streams at once."""

    def trickle(request):
        model = request.json["model"]
        chunks = openai_stream(["Hello from a", "!"], model, pause=Pause(0.3))
        return Reply(chunks=chunks)

    pair["a"].override = trickle
    pair["b"].override = slowed(pair["b"], 0.1)
    drive_until(
        throughput_router,
        lambda s: s["order"]["cheap"] == ["cheap#2", "cheap#1"],
        stream=True,
    )
    figures = stats(throughput_router)["routes"]
    a, b = figures["cheap#1"], figures["cheap#2"]
    assert a["p50_ttfb_ms"] < b["p50_ttfb_ms"]  # latency would pick a
    assert a["tokens_per_s"] < b["tokens_per_s"]
    with throughput_router.client() as client:
        reply = client.post(CHAT, json=ask(unique("fastest stream"), stream=True), headers=CHEAP)
    assert reply.headers["x-xrouter-route"] == "b/b-model"
    assert stream_text(reply) == "Hello from b!"


# ---- RouteStats on its own ---------------------------------------------------------------


def test_ordered_until_measured_then_ranked_and_samples_age_out():
    found = routes()
    clock = Clock()
    routing = RoutingSettings(
        strategies={"cheap": "latency"}, stats_window=3, stats_window_s=60, stats_min_samples=2
    )
    stats_ = RouteStats(routing, {"cheap": found}, clock=clock)
    assert stats_.order("cheap") == found
    for ms, route in ((50, found[0]), (40, found[0]), (30, found[1]), (35, found[1])):
        stats_.record(route, ms, 10, 0.5)
    stats_.refresh()
    # found[2] is unmeasured: the configured order, one request in EXPLORE_EVERY to it.
    firsts = [stats_.order("cheap")[0] for _ in range(EXPLORE_EVERY * 2)]
    assert firsts.count(found[2]) == 2 and firsts.count(found[0]) == EXPLORE_EVERY * 2 - 2
    stats_.record(found[2], 10, 10, 0.1)
    stats_.record(found[2], 12, 10, 0.1)
    stats_.refresh()
    assert stats_.order("cheap") == (found[2], found[1], found[0])
    assert [stats_.order("cheap")[0] for _ in range(8)] == [found[2]] * 8  # no exploring
    # The window keeps the last 3 samples: found[2] slowing down shows after 2 of them.
    stats_.record(found[2], 90, 10, 0.1)
    stats_.record(found[2], 95, 10, 0.1)
    stats_.refresh()
    assert stats_.order("cheap")[0] == found[1]
    assert stats_.figures(found[2]).p50_ttfb_ms == 90
    # A minute on, every sample aged out: back to the configured order.
    clock.now += 61
    stats_.refresh()
    assert stats_.ranked["cheap"] == found and stats_.unmeasured["cheap"] == found
    assert stats_.figures(found[0]).samples == 0


def test_samples_round_trip_and_ids_hold_no_secret():
    sample = Sample(1733100000.123, 41.5, 88.25)
    assert Sample.decode(sample.encode()) == sample
    assert Sample.decode(b"1733100000.1,41.5,") == Sample(1733100000.1, 41.5, None)
    assert Sample.decode("garbage") is None
    route = Route(tier="cheap", base_url="http://h/v1", api_key="sk-secret-0001", model="m")
    assert route_id(route) == route_id(Route(tier="cheap", base_url="http://h/v1", model="m"))


def test_workers_merge_through_redis(tmp_path):
    import asyncio

    redis_server = RedisServer(tmp_path)
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    found = routes()[:2]
    routing = RoutingSettings(strategies={"cheap": "latency"}, stats_min_samples=2)

    async def run() -> None:
        one = RouteStats(routing, {"cheap": found}, url)
        two = RouteStats(routing, {"cheap": found}, url)
        for ms in (80, 90):
            one.record(found[0], ms, 0, 0)
        for ms in (20, 30):
            one.record(found[1], ms, 0, 0)
        await one.sync()
        await two.sync()
        two.refresh()
        assert two.order("cheap") == (found[1], found[0])
        assert two.figures(found[0]).samples == 2 and two.figures(found[0]).p50_ttfb_ms == 85
        # Redis goes away: each worker ranks by its own samples (two has none).
        redis_server.proc.terminate()
        redis_server.proc.wait(10)
        one.record(found[0], 10, 0, 0)
        await one.sync()
        assert one.health is not None and one.health.down_since is not None
        assert one.figures(found[0]).samples == 3
        one.close()
        two.close()

    asyncio.run(run())


def test_a_moving_order_is_asked_only_for_tiers_the_chain_reaches():
    from xrouter_core.routing.fallback import TierOrders, chain_for, weighted_order

    cheap = routes()
    frontier = tuple(
        Route(tier="frontier", base_url=f"http://127.0.0.1:{9100 + n}/v1", key=f"frontier#{n}")
        for n in (1, 2)
    )
    single = {"cheap": cheap[0], "frontier": frontier[0]}
    asked: list[str] = []

    def order(tier: str):
        asked.append(tier)
        return tuple(reversed(cheap))

    orders = TierOrders({"cheap": cheap, "frontier": frontier}, {"cheap": "latency"}, order)
    chain = chain_for("frontier", single, RoutingSettings(), candidates=orders)
    assert chain == list(frontier) and asked == []
    chain = chain_for("cheap", single, RoutingSettings(), candidates=orders)
    assert chain == [*reversed(cheap), *frontier] and asked == ["cheap"]
    # weighted: weight 0 always last; the draw decides among the others.
    weighted = (
        Route(tier="cheap", base_url="http://a/v1", weight=0),
        Route(tier="cheap", base_url="http://b/v1", weight=1),
        Route(tier="cheap", base_url="http://c/v1", weight=3),
    )
    draws = iter([0.5, 0.9])  # b, c (a weight of 0 draws nothing)
    assert weighted_order(weighted, lambda: next(draws)) == (weighted[2], weighted[1], weighted[0])
    draws = iter([0.99, 0.1])
    assert weighted_order(weighted, lambda: next(draws))[:2] == (weighted[1], weighted[2])


def test_one_model_serving_two_tiers_is_measured_once():
    cheap = Route(tier="cheap", base_url="http://h/v1", model="m", name="p/m", key="cheap#1")
    medium = Route(tier="medium", base_url="http://h/v1", model="m", name="p/m", key="medium#2")
    other = Route(tier="medium", base_url="http://o/v1", model="o", key="medium#1")
    stats_ = RouteStats(RoutingSettings(), {"cheap": (cheap,), "medium": (other, medium)})
    stats_.record(cheap, 10, 0, 0)
    stats_.record(medium, 30, 0, 0)
    assert stats_.figures(cheap) == stats_.figures(medium)
    assert stats_.figures(medium).samples == 2 and stats_.figures(other).samples == 0
    shown = stats_.public()["routes"]
    assert shown["cheap#1"]["samples"] == shown["medium#2"]["samples"] == 2
