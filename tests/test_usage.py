"""Usage counting, cost, the response cache, Redis sharing and the dashboard, on real
routers (mitmdump), a real redis-server and real headless Chromium, all on 127.0.0.1."""

from __future__ import annotations

import json
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import free_port, unique
from fakes import Reply, openai_stream
from helpers import chromium, wait_for

from xrouter_core.wire.sse import iter_events

CHAT = "/v1/chat/completions"
PRICES = {
    "MEDIUM_INPUT_PRICE": "1",
    "MEDIUM_OUTPUT_PRICE": "2",
    "FRONTIER_INPUT_PRICE": "10",
    "FRONTIER_OUTPUT_PRICE": "30",
}


def ask(text: str, **extra) -> dict:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], **extra}


def send(client: httpx.Client, body: dict, **kwargs) -> httpx.Response:
    """One request, read to the end (streams too)."""
    response = client.post(CHAT, json=body, **kwargs)
    response.read()
    return response


def usage(router, key: str | None = None) -> dict:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    with router.client() as client:
        reply = client.get("/usage", headers=headers)
    assert reply.status_code == 200, reply.text
    return reply.json()


def by_text(upstreams) -> None:
    upstreams.classifier.by_text.update({"easy": "0", "middling": "1", "hard": "2"})


# ---- exact sums, cost, restart, reset, request log, metrics ---------------------------


def test_usage_sums_cost_restart_and_reset(start_router, upstreams, tmp_path):
    by_text(upstreams)
    data_dir = tmp_path / "data"
    log_path = tmp_path / "requests.jsonl"
    env = {
        **PRICES,
        "XROUTER_DATA_DIR": str(data_dir),
        "ROUTER_API_KEY": "router-key-123456",
        "REQUEST_LOG": str(log_path),
    }
    router = start_router(env)
    auth = {"authorization": "Bearer router-key-123456"}
    no_usage_text = unique("hard question whose stream reports no usage")

    def no_usage_stream(request):
        return Reply(chunks=openai_stream(["Hello from frontier", "!"], include_usage=False))

    with router.client(headers=auth) as client:
        for _ in range(3):
            assert send(client, ask(unique("easy"))).status_code == 200
        for _ in range(2):
            reply = send(client, ask(unique("middling"), stream=True))
            assert reply.status_code == 200
        assert send(client, ask(unique("hard"))).status_code == 200
        upstreams.frontier.override = no_usage_stream
        reply = send(client, ask(no_usage_text, stream=True))
        assert reply.status_code == 200 and b"Hello from frontier" in reply.content
        upstreams.frontier.override = None

    doc = usage(router, "router-key-123456")
    tiers = doc["tiers"]
    assert {t: tiers[t]["requests"] for t in tiers} == {"cheap": 3, "medium": 2, "frontier": 2}
    assert (tiers["cheap"]["promptTokens"], tiers["cheap"]["completionTokens"]) == (33, 21)
    assert (tiers["medium"]["promptTokens"], tiers["medium"]["completionTokens"]) == (22, 14)
    assert tiers["cheap"]["totalTokens"] == 54 and tiers["medium"]["totalTokens"] == 36
    # One frontier answer reported 11+7; the other was estimated at ~4 characters a token.
    assert tiers["frontier"]["estimatedRequests"] == 1
    estimated_prompt = (len(no_usage_text) + 3) // 4
    assert tiers["frontier"]["promptTokens"] == 11 + estimated_prompt
    estimated_completion = tiers["frontier"]["completionTokens"] - 7
    assert 3 <= estimated_completion <= 10  # "Hello from frontier!" is 20 characters
    frontier_total = tiers["frontier"]["totalTokens"]
    total = 54 + 36 + frontier_total
    assert doc["totalTrackedTokens"] == total
    assert doc["totalRequests"] == 7
    assert doc["shares"]["cheap"]["tokens"] == round(100 * 54 / total, 2)
    assert doc["shares"]["medium"]["requests"] == round(100 * 2 / 7, 2)
    # The Node Xrouter's shape beside it: numeric token percentages and `totals`.
    assert doc["percentages"] == {
        "cheap": round(100 * 54 / total, 2),
        "medium": round(100 * 36 / total, 2),
        "frontier": round(100 * frontier_total / total, 2),
    }
    totals = doc["totals"]
    assert set(totals) == {"cheap", "medium", "frontier", "unknown"}
    assert totals["cheap"] == {
        "promptTokens": 33,
        "completionTokens": 21,
        "totalTokens": 54,
        "requests": 3,
        "withUsage": 3,
    }
    assert (totals["frontier"]["requests"], totals["frontier"]["withUsage"]) == (2, 1)
    assert totals["frontier"]["totalTokens"] == frontier_total
    assert totals["unknown"] == dict.fromkeys(totals["unknown"], 0)
    assert doc["lastUpdated"] and abs(doc["lastUpdated"] - time.time()) < 60

    rows = {(m["tier"], m["model"]): m for m in doc["models"]}
    assert set(rows) == {
        ("cheap", "cheap-model"),
        ("medium", "medium-model"),
        ("frontier", "frontier-model"),
    }
    assert rows[("cheap", "cheap-model")]["priceSource"] == "local"
    assert rows[("medium", "medium-model")]["priceSource"] == "route"
    fp, fc = tiers["frontier"]["promptTokens"], tiers["frontier"]["completionTokens"]
    medium_cost = (22 * 1 + 14 * 2) / 1e6
    frontier_cost = (fp * 10 + fc * 30) / 1e6
    all_frontier = ((33 + 22 + fp) * 10 + (21 + 14 + fc) * 30) / 1e6
    cost = doc["cost"]
    assert cost["byTier"]["cheap"] == 0
    assert cost["byTier"]["medium"] == pytest.approx(medium_cost, abs=2e-6)
    assert cost["totalUsd"] == pytest.approx(medium_cost + frontier_cost, abs=2e-6)
    assert cost["frontierEquivalentUsd"] == pytest.approx(all_frontier, abs=2e-6)
    assert cost["savingsUsd"] == pytest.approx(all_frontier - medium_cost - frontier_cost, abs=3e-6)
    assert sum(p[t]["requests"] for p in doc["series"] for t in tiers) == 7
    assert len(doc["recent"]) == 7 and doc["recent"][0]["route"] == "frontier"
    assert all("prompt" not in row for row in doc["recent"])  # prompt logging is off

    with router.client() as client:
        assert client.get("/usage").status_code == 401  # the data needs the key
        assert client.get("/metrics").status_code == 401
        assert client.post("/usage/reset").status_code == 401
        assert client.get("/dashboard").status_code == 200  # the page itself holds no data
        metrics = client.get("/metrics", headers=auth)
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = metrics.text
    assert 'xrouter_requests_total{tier="cheap"} 3' in text
    assert 'xrouter_tokens_total{tier="medium",kind="prompt"} 22' in text
    assert 'xrouter_upstream_latency_seconds_count{tier="frontier"} 2' in text
    assert 'xrouter_upstream_latency_seconds_bucket{tier="cheap",le="+Inf"} 3' in text
    assert 'xrouter_decisions_total{source="llm",decision="0"} 3' in text
    assert (
        'xrouter_model_requests_total{tier="medium",provider="openai_compatible",'
        'model="medium-model"} 2' in text
    )

    router.stop()  # a normal shutdown writes everything: nothing counted is lost
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert len(lines) == 7
    assert {line["route"] for line in lines} == {"cheap", "medium", "frontier"}
    assert sum(line["total_tokens"] for line in lines) == total
    assert all("classifier_input" not in line and "messages" not in line for line in lines)
    assert "easy" not in log_path.read_text()

    again = start_router(env)
    after = usage(again, "router-key-123456")
    assert after["tiers"] == doc["tiers"] and after["cost"] == doc["cost"]
    with again.client(headers=auth) as client:
        assert client.post("/usage/reset").json() == {"reset": True}
    cleared = usage(again, "router-key-123456")
    assert cleared["totalTrackedTokens"] == 0 and cleared["totalRequests"] == 0
    assert cleared["recent"] == [] and cleared["models"] == []


def test_request_log_with_prompts(start_router, upstreams, tmp_path):
    log_path = tmp_path / "prompts.jsonl"
    router = start_router(
        {
            "XROUTER_DATA_DIR": str(tmp_path / "data"),
            "REQUEST_LOG": str(log_path),
            "REQUEST_LOG_PROMPTS": "true",
        }
    )
    text = unique("log this prompt")
    with router.client() as client:
        assert send(client, ask(text)).status_code == 200
    assert usage(router)["recent"][0]["prompt"] == text
    router.stop()
    (line,) = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert line["classifier_input"] == text
    assert line["messages"][0]["content"] == text
    assert line["response"] == "Hello from medium!"
    assert line["route"] == "medium" and line["status"] == 200 and line["total_tokens"] == 18


# ---- response cache --------------------------------------------------------------------


def test_response_cache_answers_identical_deterministic_requests(start_router, upstreams, tmp_path):
    router = start_router({"CACHE_RESPONSES": "true", "XROUTER_DATA_DIR": str(tmp_path / "d")})
    body = ask(unique("cache me a python function"), temperature=0)
    origin = ("x-xrouter-route", "x-xrouter-tags", "x-xrouter-provider", "x-xrouter-model")
    with router.client() as client:
        first = send(client, body)
        assert first.headers["x-xrouter-cache"] == "miss"
        second = send(client, body)
        assert second.headers["x-xrouter-cache"] == "hit"
        assert second.headers["x-xrouter-upstream"] == "medium"
        # Where the answer came from, as the routed answer said.
        assert [second.headers.get(name) for name in origin] == [
            first.headers[name] for name in origin
        ]
        assert second.headers["x-xrouter-tags"] == "code"
        assert second.headers["x-xrouter-model"] == "medium-model"
        assert second.headers["x-xrouter-response-tags"] == ""
        assert "x-xrouter-output-tokens" not in second.headers  # a hit spends none
        assert second.json()["choices"][0]["message"]["content"] == "Hello from medium!"
        streamed = send(client, {**body, "stream": True, "stream_options": {"include_usage": True}})
        warm = send(client, ask(unique("not cached"), temperature=0.7))
    assert len(upstreams.medium.requests) == 2  # the first request and the warm one
    assert streamed.headers["x-xrouter-cache"] == "hit"
    assert streamed.headers["x-xrouter-provider"] == first.headers["x-xrouter-provider"]
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = list(iter_events(streamed.content))
    assert events[-1].data == "[DONE]"
    chunks = [json.loads(e.data) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello from medium!"
    assert chunks[-1]["usage"]["total_tokens"] == 18
    assert "x-xrouter-cache" not in warm.headers  # temperature 0.7 is not cacheable

    # A streamed answer is cached too, and replayed as a whole answer or a stream.
    stream_body = ask(unique("stream cache"), stream=True)
    with router.client() as client:
        assert send(client, stream_body).headers["x-xrouter-cache"] == "miss"
        replay = wait_for(
            lambda: (r := send(client, stream_body)).headers.get("x-xrouter-cache") == "hit" and r
        )
        whole = send(client, {**stream_body, "stream": False})
    assert b"Hello from medium" in replay.content and replay.content.endswith(b"data: [DONE]\n\n")
    assert whole.json()["choices"][0]["message"]["content"] == "Hello from medium!"
    doc = usage(router)
    assert doc["cache"]["responseHits"] >= 4 and doc["cache"]["responseMisses"] == 2
    assert doc["tiers"]["medium"]["cacheHits"] == doc["cache"]["responseHits"]


# ---- Redis: two routers, exact counts, an outage -----------------------------------------


@pytest.mark.parametrize("launcher", ["xrouter"])  # one form is enough: the store is shared code
def test_two_routers_share_redis_exactly_and_survive_an_outage(
    start_router, upstreams, redis_server, tmp_path
):
    env = {"REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/0", "CLASSIFIER_ENABLED": "false"}
    routers = [
        start_router({**env, "XROUTER_DATA_DIR": str(tmp_path / f"data{i}")}) for i in (0, 1)
    ]
    upstreams.frontier.cached_tokens = 6  # the cache counters take the same paths
    clients = [r.client(limits=httpx.Limits(max_connections=16)) for r in routers]

    def one(index: int) -> int:
        body = ask(f"concurrent {index}", stream=index % 3 == 0)
        return send(clients[index % 2], body).status_code

    try:
        with ThreadPoolExecutor(24) as pool:
            statuses = list(pool.map(one, range(200)))
        assert statuses == [200] * 200

        def counted(expected: int):
            docs = [usage(r) for r in routers]
            ok = all(d["tiers"]["frontier"]["requests"] == expected for d in docs)
            return docs if ok else None

        docs = wait_for(lambda: counted(200))
        for doc in docs:
            assert doc["tiers"]["frontier"]["totalTokens"] == 200 * 18
            assert doc["totalTrackedTokens"] == 200 * 18
            assert doc["tiers"]["frontier"]["cacheReadTokens"] == 200 * 6

        # Redis goes away mid-run: requests keep working, counts are kept locally and
        # moved into Redis when it is back.
        redis_server.stop_saving()
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(one, range(200, 240)))
        assert statuses == [200] * 40
        during = [usage(r)["tiers"]["frontier"]["requests"] for r in routers]
        assert all(n >= 200 for n in during)
        redis_server.start()
        docs = wait_for(lambda: counted(240))
        assert docs[0]["totalTrackedTokens"] == 240 * 18
        assert docs[1]["tiers"]["frontier"]["cacheReadTokens"] == 240 * 6
    finally:
        for client in clients:
            client.close()
    for router in routers:
        logs = router.logs()
        assert logs.count("is unavailable") == 1, logs
        assert "is back" in logs
        assert "Traceback" not in logs


# ---- the dashboard in real headless Chromium ----------------------------------------------


@pytest.mark.parametrize("launcher", ["mitmdump"])  # the page does not depend on the form
def test_dashboard_renders_usage_in_headless_chromium(start_router, upstreams, tmp_path):
    if not (shutil.which("chromium") or Path("/usr/bin/chromium").exists()):
        pytest.fail("chromium is not installed (.ci/run installs it)")
    by_text(upstreams)
    key = "dash-key-7890abc"
    router = start_router(
        {**PRICES, "ROUTER_API_KEY": key, "XROUTER_DATA_DIR": str(tmp_path / "d")}
    )
    upstreams.cheap.cached_tokens = 3
    with router.client(headers={"authorization": f"Bearer {key}"}) as client:
        for text in ("easy", "easy", "easy", "middling", "middling", "hard"):
            assert send(client, ask(unique(text))).status_code == 200
    doc = usage(router, key)
    expected_tokens = [doc["tiers"][t]["totalTokens"] for t in ("cheap", "medium", "frontier")]
    assert expected_tokens == [54, 36, 18]

    # Without the key the page shows the key form and no numbers.
    locked = chromium(router.url + "/dashboard", tmp_path, "--dump-dom")
    assert locked.returncode == 0, locked.stderr.decode()[-2000:]
    assert "API key needed" in locked.stdout.decode()
    assert "data-rendered-tokens" not in locked.stdout.decode()

    # 7 s of page time: the first render and the 5-second refresh (no reload).
    dom = chromium(router.url + f"/dashboard#key={key}", tmp_path, "--dump-dom", budget_ms=7000)
    html = dom.stdout.decode()
    assert dom.returncode == 0, dom.stderr.decode()[-2000:]
    rendered = re.search(r'data-rendered-tokens="([^"]*)"', html)
    assert rendered, html[-3000:]
    assert json.loads(rendered.group(1).replace("&quot;", '"')) == expected_tokens
    cost = json.loads(re.search(r'data-rendered-cost="([^"]*)"', html).group(1))
    assert cost == pytest.approx(
        [doc["cost"]["totalUsd"], doc["cost"]["frontierEquivalentUsd"], doc["cost"]["savingsUsd"]]
    )
    assert re.search(r'data-rendered-requests="6"', html)
    cached = json.loads(re.search(r'data-rendered-cached="([^"]*)"', html).group(1))
    assert cached == [9, 0]  # three cheap answers with 3 cached prompt tokens each
    assert '<div class="value" id="cached-tokens">9 · 0</div>' in html
    assert int(re.search(r'data-render-count="(\d+)"', html).group(1)) >= 2
    # Every chart drew its SVG, and the cards and the table carry the same numbers.
    for chart in ("tokens", "cost", "requests-time", "tokens-time", "latency"):
        section = html.split(f'id="chart-{chart}"', 1)[1][:3000]
        assert "main-svg" in section, chart
    assert '<div class="value" id="total-tokens">108</div>' in html
    assert html.count("<td>medium-model</td>") == 2 and html.count("<td>cheap-model</td>") == 3
    assert key not in html  # the key stays in localStorage, not in the page

    shot = tmp_path / "dashboard.png"
    taken = chromium(
        router.url + f"/dashboard#key={key}",
        tmp_path,
        f"--screenshot={shot}",
        "--window-size=1400,1500",
        "--hide-scrollbars",
    )
    assert taken.returncode == 0 and shot.stat().st_size > 20_000, taken.stderr.decode()[-2000:]
    print(f"dashboard screenshot: {shot}")


@pytest.mark.parametrize("launcher", ["xrouter"])
def test_redis_down_at_start_serves_from_the_local_backend(start_router, upstreams, tmp_path):
    dead = free_port()  # nothing listens here
    router = start_router(
        {"REDIS_URL": f"redis://127.0.0.1:{dead}/0", "XROUTER_DATA_DIR": str(tmp_path / "d")}
    )
    text = unique("no redis today")
    with router.client() as client:
        for _ in range(3):  # the second and third take their decision from the local cache
            assert send(client, ask(text)).status_code == 200
    assert len(upstreams.classifier.requests) == 1
    doc = wait_for(lambda: (d := usage(router))["tiers"]["medium"]["requests"] == 3 and d)
    assert doc["tiers"]["medium"]["totalTokens"] == 3 * 18
    assert doc["decisions"] == {"llm": {"1": 1}, "cache": {"1": 2}}
    logs = router.logs()
    assert logs.count("is unavailable") == 1 and "Traceback" not in logs


def test_a_retried_redis_batch_counts_once(redis_server, tmp_path):
    """A flush retried after a timeout (Redis may have applied it) must not count twice."""
    import asyncio

    from xrouter_core.accounting.usage import Batch, Outcome, RedisCounters, add_outcome

    async def scenario() -> dict[str, int]:
        counters = RedisCounters(f"redis://127.0.0.1:{redis_server.port}/0")
        batch = Batch()
        for _ in range(3):
            one = Outcome("cheap", 0, "llm", "p", "m", 200, 5, 2, 3, 1, cost_usd=2.5e-6, at=1.0)
            add_outcome(batch, one)
        await counters.add(batch)
        await counters.add(batch)  # the retry
        await counters.add(Batch())  # an empty batch changes nothing
        stored = await counters.read()
        await counters.client.aclose()
        return stored.counters

    counters = asyncio.run(scenario())
    assert counters["t|cheap|requests"] == 3 and counters["t|cheap|prompt"] == 15
    assert counters["m|cheap|p|m|cache_read"] == 9 and counters["m|cheap|p|m|cache_write"] == 3
    assert counters["m|cheap|p|m|cost_nusd"] == 3 * 2500


def test_counts_flushed_after_the_last_read_still_show_during_an_outage(redis_server, tmp_path):
    """The /usage view in an outage is the last Redis read plus what this router has written
    since: a flush that landed after that read must not drop out of it."""
    import asyncio

    from xrouter_core.accounting.usage import Outcome, UsageTracker

    async def scenario() -> tuple[int, int]:
        tracker = UsageTracker(tmp_path / "data", f"redis://127.0.0.1:{redis_server.port}/0")
        before = (await tracker.stored()).counters.get("t|cheap|requests", 0)
        for _ in range(3):
            tracker.record(Outcome("cheap", 0, "llm", "p", "m", 200, 5, 2, 4, at=time.time()))
        await tracker.flush()  # lands in Redis; nothing has read it back yet
        redis_server.stop_saving()
        during = (await tracker.stored()).counters
        tracker.close()
        return before, during.get("t|cheap|requests", 0), during.get("t|cheap|cache_read", 0)

    assert asyncio.run(scenario()) == (0, 3, 12)


def test_the_outage_view_stays_bounded_between_reads(redis_server, tmp_path):
    """Flushes keep adding to the last Redis view while nobody reads /usage: it keeps the
    counts but only the newest request rows, as Redis does."""
    import asyncio

    from xrouter_core.accounting.usage import RECENT_MAX, Outcome, UsageTracker

    async def scenario() -> tuple[int, int]:
        tracker = UsageTracker(tmp_path / "data", f"redis://127.0.0.1:{redis_server.port}/0")
        await tracker.stored()  # the view that the flushes below keep current
        for _ in range(3):
            for _ in range(RECENT_MAX):
                tracker.record(Outcome("cheap", 0, "llm", "p", "m", 200, 5, 2, at=time.time()))
            await tracker.flush()
        view = tracker._last_redis
        assert view is not None
        tracker.close()
        return view.counters["t|cheap|requests"], len(view.recent)

    requests, rows = asyncio.run(scenario())
    assert requests == 3 * RECENT_MAX and rows == RECENT_MAX


# ---- the store's format: an earlier version's diskcache store is imported once --------

# Written by the diskcache store of commit 38133df through its own UsageTracker
# (tests/fixtures/usage_diskcache/write.py): 3 cheap, 1 medium and 1 frontier request
# (a 502), a client key `team-a`, one agent session and one response-cache miss.
OLD_STORE = Path(__file__).parent / "fixtures" / "usage_diskcache"


def test_counts_in_an_earlier_versions_store_are_kept_once(start_router, upstreams, tmp_path):
    by_text(upstreams)
    data_dir = tmp_path / "data"
    shutil.copytree(OLD_STORE, data_dir, ignore=shutil.ignore_patterns("*.py"))
    env = {"XROUTER_DATA_DIR": str(data_dir)}
    router = start_router(env)
    doc = usage(router)
    assert {t: doc["tiers"][t]["requests"] for t in doc["tiers"]} == {
        "cheap": 3,
        "medium": 1,
        "frontier": 1,
    }
    assert (doc["tiers"]["cheap"]["promptTokens"], doc["tiers"]["frontier"]["errors"]) == (33, 1)
    assert doc["keys"]["team-a"]["requests"] == 3
    assert doc["sessions"]["rows"][0]["session"] == "claude-code:77e1-42"
    assert doc["sessions"]["rows"][0]["requests"] == 3
    assert doc["cache"]["responseMisses"] == 1
    assert doc["tags"]["request"] == {"code": 3}
    assert [row["route"] for row in doc["recent"]] == [
        "medium", "frontier", "cheap", "cheap", "cheap"
    ]  # fmt: skip
    assert doc["lastUpdated"] == 1_796_000_020.0
    with router.client() as client:
        assert send(client, ask(unique("easy"))).status_code == 200
    wait_for(lambda: usage(router)["tiers"]["cheap"]["requests"] == 4)
    router.stop()

    again = start_router(env)  # imported once: a restart does not add the old counts again
    after = usage(again)
    assert {t: after["tiers"][t]["requests"] for t in after["tiers"]} == {
        "cheap": 4,
        "medium": 1,
        "frontier": 1,
    }
    assert len(after["recent"]) == 6 and after["recent"][0]["route"] == "cheap"
    assert after["lastUpdated"] > 1_796_000_020.0
