"""Client keys with budgets and tokens per minute (accounting/limits.py Budgets): created
with `xrouter keys`, reserved before forwarding at an estimate and settled at the real
cost after, held exactly across two routers (two workers each) sharing a real
redis-server under 100 concurrent requests, refused with a 429 that names the limit (in
the client's format) and Retry-After, and shown per key in /usage and /metrics."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import shutil
import time

import httpx
import pytest
from conftest import unique
from helpers import RedisServer, chromium, in_one_minute, wait_for, wait_for_a_fresh_minute
from test_client_keys import CHAT, bearer, create, keys

# Every tier at these prices (USD per 1M tokens). The fake providers answer every request
# with 11 prompt and 7 completion tokens: 11 * 1000 + 7 * 2000 = 25000 per 1M, $0.025.
PRICES = {
    f"{tier}_{kind}_PRICE": price
    for tier in ("CHEAP", "MEDIUM", "FRONTIER")
    for kind, price in (("INPUT", "1000"), ("OUTPUT", "2000"))
}
COST = 0.025


def prompt(tag: str) -> str:
    """44 characters: reserved at 11 prompt tokens (four characters a token), which is
    what the fake providers report."""
    text = f"{tag} {unique('')}"[-44:]
    return text.rjust(44, "x")


def ask(tag: str, max_tokens: int = 7) -> dict:
    return {
        "model": "auto",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": prompt(tag)}],
    }


def seconds_to_utc_midnight() -> float:
    return 86400 - time.time() % 86400


def test_the_keys_command_takes_budgets(tmp_path):
    file = tmp_path / "keys.json"
    create(file, "team-a", "--daily-usd", "5", "--monthly-usd", "100.5", "--tpm", "20000")
    entry = json.loads(file.read_text())["keys"][0]
    assert entry["daily_usd"] == 5 and entry["monthly_usd"] == 100.5 and entry["tpm"] == 20000
    listed = keys("list", file=file).stdout.splitlines()
    assert listed == ["team-a\ttpm=20000\tdaily_usd=5\tmonthly_usd=100.5"]
    bad = keys("create", "team-b", "--daily-usd", "-1", file=file)
    assert bad.returncode == 2 and "--daily-usd" in bad.stderr
    file.write_text(json.dumps({"keys": [{**entry, "daily_usd": "lots"}]}))
    assert "daily_usd must be USD" in keys("list", file=file).stderr


@pytest.mark.parametrize("launcher", ["xrouter"])
def test_budgets_hold_exactly_across_routers_sharing_redis(start_router, upstreams, tmp_path):
    """A daily budget of exactly 37 requests' cost, 100 concurrent requests over two
    routers: exactly 37 are served, 63 refused, and the day's spend is the budget to the
    nano-dollar. With estimates above the real cost, settling gives the difference back:
    the budget fills to within one estimate and is never passed. Tokens per minute: the
    same, counted in tokens."""
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    redis_server = RedisServer(tmp_path)
    try:
        file = tmp_path / "keys.json"
        exact = create(file, "exact", "--daily-usd", "0.925", "--monthly-usd", "50")
        over = create(file, "over", "--monthly-usd", "1")
        # Tokens are counted in one minute: a second key in case the burst's minute ends.
        tokens_names = ["tokens", "tokens-again"]
        tokens_keys = [create(file, name, "--tpm", str(10 * 18)) for name in tokens_names]
        env = {
            **PRICES,
            "ROUTER_KEYS_FILE": str(file),
            "REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/0",
        }
        routers = [
            start_router({**env, "XROUTER_DATA_DIR": str(tmp_path / f"d{i}")}, ["--workers", "2"])
            for i in range(2)
        ]

        def burst(key: str, n: int, max_tokens: int = 7) -> list[httpx.Response]:
            def one(i: int) -> httpx.Response:
                return httpx.post(
                    routers[i % 2].url + CHAT,
                    json=ask(f"b{i}", max_tokens),
                    headers=bearer(key),
                    timeout=30,
                    trust_env=False,
                )

            with concurrent.futures.ThreadPoolExecutor(n) as pool:
                return list(pool.map(one, range(n)))

        replies = burst(exact, 100)
        statuses = [r.status_code for r in replies]
        assert statuses.count(200) == 37, statuses
        assert statuses.count(429) == 63, statuses
        refused = next(r for r in replies if r.status_code == 429)
        error = refused.json()["error"]
        assert error["code"] == "budget_exceeded" and error["type"] == "insufficient_quota"
        assert "'exact'" in error["message"] and "daily budget of $0.925" in error["message"]
        assert abs(int(refused.headers["retry-after"]) - seconds_to_utc_midnight()) < 30

        # Anthropic clients get their own shape, naming the same limit.
        messages = httpx.post(
            routers[0].url + "/v1/messages",
            json={"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
            headers={"x-api-key": exact, "anthropic-version": "2023-06-01"},
            trust_env=False,
        )
        assert messages.status_code == 429 and messages.json()["type"] == "error"
        assert "daily budget" in messages.json()["error"]["message"]
        assert "retry-after" in messages.headers

        # Reserved at 11 + 100 tokens ($0.211), costing $0.025: the estimates that did
        # not come true are given back, so more fit than the estimates alone would let.
        first = [r.status_code for r in burst(over, 20, max_tokens=100)]
        assert set(first) <= {200, 429} and first.count(200) >= 4, first
        served = first.count(200)

        def month_spent() -> float:
            page = httpx.get(routers[0].url + "/usage", headers=bearer(exact), trust_env=False)
            return page.json()["keys"]["over"]["budget"]["spentThisMonthUsd"]

        def settled() -> bool:  # the settlements land in the background
            return month_spent() == pytest.approx(served * COST, abs=1e-9)

        while True:
            wait_for(settled, timeout=15)
            reply = httpx.post(
                routers[served % 2].url + CHAT,
                json=ask("one more", 100),
                headers=bearer(over),
                trust_env=False,
            )
            if reply.status_code == 429:
                break
            assert reply.status_code == 200, reply.text
            served += 1
            assert served * COST <= 1.0, "the monthly budget was passed"
        # Refused only when one more estimate would not fit.
        assert served * COST + 0.211 > 1.0, served

        def tokens_burst(attempt: int) -> tuple[list[int], httpx.Response]:
            statuses = [r.status_code for r in burst(tokens_keys[attempt], 30)]
            refused = httpx.post(
                routers[1].url + CHAT,
                json=ask("tpm"),
                headers=bearer(tokens_keys[attempt]),
                trust_env=False,
            )
            return statuses, refused

        attempt, (token_statuses, refused_tpm) = in_one_minute(tokens_burst, needed=15)
        tokens = tokens_names[attempt]
        assert token_statuses.count(200) == 10, token_statuses
        assert refused_tpm.status_code == 429
        assert "180 tokens per minute" in refused_tpm.json()["error"]["message"]
        assert 1 <= int(refused_tpm.headers["retry-after"]) <= 60

        def counted() -> dict | None:
            page = httpx.get(routers[1].url + "/usage", headers=bearer(exact), trust_env=False)
            rows = page.json()["keys"]
            done = (
                rows.get("exact", {}).get("requests") == 37
                and rows.get("exact", {}).get("overBudget") == 64
                and rows.get("over", {}).get("requests") == served
                and rows.get(tokens, {}).get("requests") == 10
                and rows.get(tokens, {}).get("overTokens") == 21
            )
            return rows if done else None

        rows = wait_for(counted, timeout=15)
        assert rows["exact"]["costUsd"] == pytest.approx(37 * COST, abs=1e-9)
        assert rows["exact"]["budget"] == {
            "dailyUsd": 0.925,
            "spentTodayUsd": 0.925,
            "monthlyUsd": 50.0,
            "spentThisMonthUsd": 0.925,
        }
        assert rows["over"]["budget"]["spentThisMonthUsd"] == pytest.approx(served * COST)
        assert "budget" not in rows[tokens]
        metrics = httpx.get(routers[0].url + "/metrics", headers=bearer(exact), trust_env=False)
        assert 'xrouter_key_spend_usd{key="exact",period="day"} 0.925' in metrics.text
        assert 'xrouter_key_budget_usd{key="exact",period="day"} 0.925' in metrics.text
        assert 'xrouter_key_refused_total{key="exact",limit="budget"} 64' in metrics.text
        # The dashboard's keys table, in real headless Chromium.
        dom = chromium(routers[0].url + f"/dashboard#key={exact}", tmp_path, "--dump-dom")
        assert dom.returncode == 0, dom.stderr.decode()[-2000:]
        row = re.search(r'<tr data-key="exact">(.*?)</tr>', dom.stdout.decode())
        assert row, dom.stdout.decode()[-3000:]
        cells = re.findall(r"<td[^>]*>([^<]*)</td>", row.group(1))
        assert cells == [
            "exact",
            "37",
            "666",
            "$0.925",
            "$0.925 / $0.925 (100%)",
            "$0.925 / $50 (1.9%)",
            "64",
            "0",
            "$0",
        ], cells
        for router in routers:
            logs = router.logs()
            assert exact not in logs and "Traceback" not in logs
    finally:
        redis_server.kill()


def test_without_redis_a_process_keeps_the_budget_itself():
    """No Redis: reserved and settled in this process, with the same boundary."""
    from xrouter_core.accounting.limits import Budgets, Refusal, Reservation
    from xrouter_core.client_keys import ClientKey

    budgets = Budgets()
    key = ClientKey("solo", "0" * 64, daily_usd=1e-6)  # 1000 nano-USD

    async def run() -> None:
        held = [await budgets.reserve(key, 400, 10) for _ in range(3)]
        assert isinstance(held[0], Reservation) and isinstance(held[1], Reservation)
        assert isinstance(held[2], Refusal) and held[2].limit == "daily"
        assert held[2].used == 800 and held[2].allowed == 1000 and held[2].wanted == 400
        budgets.settle(held[0], 100, 10)  # it cost less: 300 given back
        assert isinstance(await budgets.reserve(key, 400, 10), Reservation)
        assert (await budgets.spent(["solo"]))["solo"] == (900, 0)
        budgets.settle(held[0], 0, 0)  # settled once only
        assert (await budgets.spent(["solo"]))["solo"] == (900, 0)

    asyncio.run(run())


@pytest.mark.parametrize("launcher", ["xrouter"])
def test_a_metered_keys_cache_hits_cost_nothing_and_every_counter_sees_them(
    start_router, upstreams, tmp_path
):
    """As LiteLLM counts them: a response-cache hit of a key with a budget is a request of
    the key (its requests per minute and its usage rows count it) that costs $0, and
    /usage, /metrics and the request log say it was a hit and what it saved (what the
    answer cost when it was first served). A key already over its budget is refused a
    hit too, as LiteLLM and OpenRouter refuse every request of such a key."""
    file = tmp_path / "keys.json"
    key = create(file, "team", "--daily-usd", "5", "--rpm", "3")
    # Reserved at 11 prompt + 1 completion token ($0.013), it costs $0.025: over $0.02.
    spent = create(file, "spent", "--daily-usd", "0.02")
    log = tmp_path / "requests.jsonl"
    router = start_router(
        {
            **PRICES,
            "ROUTER_KEYS_FILE": str(file),
            "CACHE_RESPONSES": "true",
            "CACHE_BACKEND": "memory",
            "REQUEST_LOG": str(log),
        }
    )
    # The four requests of `team` count in one minute (3 a minute): they take well under
    # a second; redone they would find the cache filled, so they wait for 10 s instead.
    wait_for_a_fresh_minute(10)
    body = ask("cached")
    with router.client(headers=bearer(key)) as client:
        replies = [client.post(CHAT, json=body) for _ in range(2)]
        replies.append(client.post(CHAT, json={**body, "stream": True}))
        replies.append(client.post(CHAT, json=body))  # the fourth this minute: over rpm
        assert [r.status_code for r in replies] == [200, 200, 200, 429], replies[-1].text
        assert [r.headers.get("x-xrouter-cache") for r in replies[:3]] == ["miss", "hit", "hit"]
        assert replies[3].json()["error"]["code"] == "rate_limit_exceeded"
        short = ask("over budget", max_tokens=1)
        first = client.post(CHAT, json=short, headers=bearer(spent))
        assert first.status_code == 200 and first.headers["x-xrouter-cache"] == "miss"
        again = client.post(CHAT, json=short, headers=bearer(spent))
        assert again.status_code == 429, again.text
        assert again.json()["error"]["code"] == "budget_exceeded"
        assert "$0.025 is used today" in again.json()["error"]["message"]
        router.settle()
        doc = client.get("/usage").json()
        metrics = client.get("/metrics").text
    over = doc["keys"]["spent"]
    assert over["requests"] == 1 and over["overBudget"] == 1 and over["cacheHits"] == 0, over
    row = doc["keys"]["team"]
    assert row["requests"] == 3 and row["rateLimited"] == 1, row
    assert row["cacheHits"] == 2 and row["cacheSavedUsd"] == pytest.approx(2 * COST), row
    assert row["costUsd"] == pytest.approx(COST), row  # the miss only
    assert row["budget"]["spentTodayUsd"] == pytest.approx(COST), row
    tier = doc["tiers"]["medium"]
    assert tier["requests"] == 4 and tier["cacheHits"] == 2, tier  # 2 misses, 2 hits
    assert tier["cacheSavedUsd"] == pytest.approx(2 * COST), tier
    assert doc["cache"]["responseHits"] == 2
    assert doc["cache"]["responseSavedUsd"] == pytest.approx(2 * COST), doc["cache"]
    assert 'xrouter_key_requests_total{key="team"} 3' in metrics
    assert 'xrouter_key_cache_hits_total{key="team"} 2' in metrics
    assert re.search(r'xrouter_key_cache_saved_usd_total\{key="team"\} 0\.05\b', metrics)
    assert re.search(r'xrouter_cache_saved_usd_total\{tier="medium"\} 0\.05\b', metrics)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    hits = [line for line in lines if line["cache_hit"]]
    assert len(hits) == 2 and all(line["key"] == "team" for line in hits), lines
    assert all(line["cost_usd"] == 0 for line in hits)
    assert all(line["saved_usd"] == pytest.approx(COST) for line in hits), hits


@pytest.mark.parametrize("launcher", ["xrouter"])
def test_the_dashboard_shows_a_keys_cache_hits_and_what_they_saved(
    start_router, upstreams, tmp_path
):
    """The same request twice from one client key: the second is a response-cache hit,
    and the dashboard, in real headless Chromium, shows it in the key's row (1 hit, the
    $0.025 the first answer cost) and in the response-cache card."""
    file = tmp_path / "keys.json"
    key = create(file, "team")
    router = start_router(
        {
            **PRICES,
            "ROUTER_KEYS_FILE": str(file),
            "CACHE_RESPONSES": "true",
            "CACHE_BACKEND": "memory",
        }
    )
    body = ask("dashboard cache")
    with router.client(headers=bearer(key)) as client:
        replies = [client.post(CHAT, json=body) for _ in range(2)]
        assert [r.status_code for r in replies] == [200, 200], replies[-1].text
        assert [r.headers.get("x-xrouter-cache") for r in replies] == ["miss", "hit"]
        router.settle()
        row = client.get("/usage").json()["keys"]["team"]
    assert row["cacheHits"] == 1 and row["cacheSavedUsd"] == pytest.approx(COST), row
    dom = chromium(router.url + f"/dashboard#key={key}", tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr.decode()[-2000:]
    html = dom.stdout.decode()
    found = re.search(r'<tr data-key="team">(.*?)</tr>', html)
    assert found, html[-3000:]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", found.group(1))
    # Key, requests, tokens (the miss's 18), cost (the miss only), no daily or monthly
    # budget, refused, cache hits, saved by the cache.
    assert cells == ["team", "2", "18", "$0.025", "–", "–", "0", "1", "$0.025"], cells
    assert '<div class="value" id="response-cache">1 · $0.025</div>' in html
    assert key not in router.logs()


def test_a_settlement_in_flight_when_a_reload_closes_the_budgets_still_lands(tmp_path):
    """A reload closes the Budgets it replaces just as a request's settlement is on its
    way to Redis: it still lands (the client closes only after CLOSE_GRACE_S), so the
    day's spend is the request's real cost, not its estimate."""
    from xrouter_core.accounting.limits import Budgets, Reservation
    from xrouter_core.client_keys import ClientKey

    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    redis_server = RedisServer(tmp_path)
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    key = ClientKey("reloaded", "0" * 64, daily_usd=1.0)

    async def run() -> tuple[int, int]:
        replaced = Budgets(url)
        held = await replaced.reserve(key, 5000, 10)
        assert isinstance(held, Reservation) and held.shared
        replaced.settle(held, 2000, 10)  # in the background
        replaced.close()  # the reload, at once
        fresh = Budgets(url)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            spent = (await fresh.spent(["reloaded"]))["reloaded"]
            if spent != (5000, 0):
                break
            await asyncio.sleep(0.05)
        return spent

    try:
        assert asyncio.run(run()) == (2000, 0)  # no monthly budget
    finally:
        redis_server.kill()
