"""Client keys (ROUTER_KEYS_FILE): created, listed and revoked with `xrouter keys`, stored
hashed; real routers under both launchers accept them beside ROUTER_API_KEY, hold each
key to its requests per minute (429 with Retry-After naming the limit) and its tier
ceiling, keep the usage pages for ROUTER_API_KEY, and drop a revoked key; two routers on
one real redis-server let exactly a key's limit through under 100 concurrent requests."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, unique
from helpers import RedisServer, in_one_minute, wait_for, wait_for_a_fresh_minute

ADMIN = "rk-admin-key-for-tests"
CHAT = "/v1/chat/completions"


def keys(*args: str, file: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xrouter_core", "keys", "--file", str(file), *args],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
        timeout=60,
    )


def create(file: Path, name: str, *limits: str) -> str:
    done = keys("create", name, *limits, file=file)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith("xr-") and len(key) > 40
    return key


def ask(text: str) -> dict:
    return {"model": "auto", "messages": [{"role": "user", "content": text}]}


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_the_keys_command_stores_only_digests(tmp_path):
    file = tmp_path / "keys.json"
    key = create(file, "team-a", "--rpm", "5", "--max-tier", "medium")
    create(file, "team-b")
    stored = file.read_text()
    assert key not in stored
    doc = json.loads(stored)
    assert [e["name"] for e in doc["keys"]] == ["team-a", "team-b"]
    assert doc["keys"][0]["rpm"] == 5 and doc["keys"][0]["max_tier"] == "medium"
    assert oct(file.stat().st_mode & 0o777) == "0o600"
    listed = keys("list", file=file)
    assert listed.stdout.splitlines() == ["team-a\trpm=5\tmax_tier=medium", "team-b"]
    assert key not in listed.stdout
    bad_name = keys("create", "team a|b", file=file)
    assert bad_name.returncode == 2 and "name must be" in bad_name.stderr
    again = keys("create", "team-a", file=file)
    assert again.returncode == 1 and "exists already" in again.stderr
    assert keys("revoke", "team-a", file=file).returncode == 0
    assert keys("list", file=file).stdout.splitlines() == ["team-b"]
    missing = keys("revoke", "nobody", file=file)
    assert missing.returncode == 1 and "no key named 'nobody'" in missing.stderr
    file.write_text("{not json")
    broken = keys("list", file=file)
    assert broken.returncode == 1 and "not readable JSON" in broken.stderr


def test_a_bad_keys_file_stops_the_router(start_router, tmp_path):
    file = tmp_path / "keys.json"
    file.write_text(json.dumps({"keys": [{"name": "x", "sha256": "ab"}]}))
    router = start_router({"ROUTER_KEYS_FILE": str(file)}, wait=False)
    assert router.proc.wait(30) == 1
    assert "ROUTER_KEYS_FILE" in router.logs() and "no sha256 digest" in router.logs()


def test_client_keys_with_their_limits(start_router, upstreams, tmp_path):
    file = tmp_path / "keys.json"
    # team-a's limit is counted in one minute: a second key in case its first minute ends.
    names = ["team-a", "team-a-again"]
    limited_keys = [create(file, name, "--rpm", "3", "--max-tier", "medium") for name in names]
    free = create(file, "team-b")
    upstreams.classifier.digit = "2"  # every request is a frontier one
    router = start_router({"ROUTER_API_KEY": ADMIN, "ROUTER_KEYS_FILE": str(file)})
    with router.client() as client:

        def up_to_the_limit_and_over(attempt: int) -> list[httpx.Response]:
            limited = limited_keys[attempt]
            replies = [
                client.post(CHAT, json=ask(unique(text)), headers=bearer(limited))
                for text in ("capped", "capped", "capped", "one too many")
            ]
            # Anthropic clients get their own error shape, with the same limit.
            messages = client.post(
                "/v1/messages",
                json={
                    "model": "auto",
                    "max_tokens": 5,
                    "messages": [{"role": "user", "content": "x"}],
                },
                headers={"x-api-key": limited, "anthropic-version": "2023-06-01"},
            )
            return [*replies, messages]

        attempt, replies = in_one_minute(up_to_the_limit_and_over, needed=10)
        name = names[attempt]
        *capped, over, messages = replies
        for reply in capped:
            assert reply.status_code == 200, reply.text
            # The ceiling: frontier was decided, medium answered.
            assert reply.headers["x-xrouter-upstream"] == "medium"
            assert reply.headers["x-xrouter-decision"] == "1"
        assert over.status_code == 429
        assert over.json()["error"]["code"] == "rate_limit_exceeded"
        assert f"'{name}'" in over.json()["error"]["message"]
        assert "3 requests per minute" in over.json()["error"]["message"]
        assert 1 <= int(over.headers["retry-after"]) <= 60
        assert messages.status_code == 429
        assert messages.json()["type"] == "error"
        assert "retry-after" in messages.headers
        # Other keys are not held by team-a's limit; no ceiling: frontier.
        for key in (free, ADMIN):
            reply = client.post(CHAT, json=ask(unique("free")), headers=bearer(key))
            assert reply.status_code == 200, reply.text
            assert reply.headers["x-xrouter-upstream"] == "frontier"
        # The usage pages want ROUTER_API_KEY; a client key lists models.
        assert client.get("/usage", headers=bearer(free)).status_code == 401
        assert client.get("/usage", headers=bearer(ADMIN)).status_code == 200
        assert client.get("/v1/models", headers=bearer(free)).status_code == 200
        assert client.post(CHAT, json=ask("x"), headers=bearer("xr-unknown")).status_code == 401

        # Spend and refusals per key, in /usage and /metrics.
        def team_a() -> dict | None:
            doc = client.get("/usage", headers=bearer(ADMIN)).json()
            row = doc["keys"].get(name)
            return doc if row and row["requests"] == 3 and row["rateLimited"] == 2 else None

        usage = wait_for(team_a, timeout=10)
        assert usage, client.get("/usage", headers=bearer(ADMIN)).json()["keys"]
        row = usage["keys"][name]
        assert row["promptTokens"] == 33 and row["completionTokens"] == 21
        assert usage["keys"]["team-b"]["requests"] == 1
        # ROUTER_API_KEY is not a key.
        assert set(usage["keys"]) == {*names[: attempt + 1], "team-b"}
        metrics = client.get("/metrics", headers=bearer(ADMIN)).text
        assert f'xrouter_key_requests_total{{key="{name}"}} 3' in metrics
        assert f'xrouter_key_rate_limited_total{{key="{name}"}} 2' in metrics
        # Revoked: refused within the keyring's check interval.
        assert keys("revoke", "team-b", file=file).returncode == 0
        deadline = time.monotonic() + 15
        while True:
            status = client.post(CHAT, json=ask(unique("revoked")), headers=bearer(free))
            if status.status_code == 401:
                break
            assert time.monotonic() < deadline, "the revoked key still works"
            time.sleep(0.3)
    logs = router.logs()
    assert not any(key in logs for key in (*limited_keys, free, ADMIN))
    assert "Traceback" not in logs


@pytest.mark.parametrize("launcher", ["xrouter"])
def test_a_limit_holds_exactly_across_routers_sharing_redis(start_router, upstreams, tmp_path):
    """Two routers (with two workers each) on one Redis, 100 concurrent requests of one
    key whose limit is 37 a minute: exactly 37 are served, 63 get 429."""
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    redis_server = RedisServer(tmp_path)
    try:
        file = tmp_path / "keys.json"
        # Counted in one minute: a second key in case the burst's first minute ends.
        names = ["agent", "agent-again"]
        agent_keys = [create(file, name, "--rpm", "37") for name in names]
        env = {
            "ROUTER_KEYS_FILE": str(file),
            "REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/0",
        }
        routers = [
            start_router({**env, "XROUTER_DATA_DIR": str(tmp_path / f"d{i}")}, ["--workers", "2"])
            for i in range(2)
        ]

        def burst(attempt: int) -> list[int]:
            def one(i: int) -> int:
                url = routers[i % 2].url
                reply = httpx.post(
                    url + CHAT,
                    json=ask(f"burst {i} {unique('b')}"),
                    headers=bearer(agent_keys[attempt]),
                    timeout=30,
                    trust_env=False,
                )
                return reply.status_code

            with concurrent.futures.ThreadPoolExecutor(100) as pool:
                return list(pool.map(one, range(100)))

        # The burst crossed no minute boundary: in_one_minute redoes it once if it did.
        attempt, statuses = in_one_minute(burst, needed=15)
        key, name = agent_keys[attempt], names[attempt]
        served = statuses.count(200), statuses.count(429)
        assert served == (37, 63), (served, [r.logs()[-3000:] for r in routers])

        # Both routers' counts of the key, summed in Redis, read from either.
        def counted() -> dict | None:
            # Without ROUTER_API_KEY, a client key opens the usage pages.
            page = httpx.get(routers[1].url + "/usage", headers=bearer(key), trust_env=False)
            row = page.json()["keys"]
            row = row.get(name)
            return row if row and row["requests"] + row["rateLimited"] == 100 else None

        row = wait_for(counted, timeout=15)
        assert row and row["requests"] == 37 and row["rateLimited"] == 63, row
    finally:
        redis_server.kill()


def test_a_ceiling_with_no_route_under_it_is_a_403(start_router, upstreams, tmp_path):
    file = tmp_path / "keys.json"
    key = create(file, "cheap-only", "--max-tier", "cheap")
    # No cheap route (allowed with the classifier off).
    router = start_router(
        {
            "ROUTER_KEYS_FILE": str(file),
            "CLASSIFIER_ENABLED": "false",
            **dict.fromkeys(("CHEAP_BASE_URL", "CHEAP_MODEL", "CLASSIFIER_BASE_URL")),
        }
    )
    with router.client() as client:
        reply = client.post(CHAT, json=ask(unique("no cheap route")), headers=bearer(key))
    assert reply.status_code == 403, reply.text
    assert reply.json()["error"]["code"] == "tier_ceiling"
    assert "'cheap'" in reply.json()["error"]["message"]
    assert upstreams.medium.requests == [] and upstreams.frontier.requests == []


def test_a_redis_that_stalls_for_a_moment_is_waited_for(tmp_path):
    """A redis-server stopped for 1 s (as a burst or a fork for a snapshot can stall it):
    the count waits for its answer. Counted in this process instead, the second router
    would find the key's minute empty and let a request over the limit through."""
    import asyncio
    import os
    import signal

    from xrouter_core.accounting.limits import RateLimits

    redis_server = RedisServer(tmp_path)
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    first, second = RateLimits(url), RateLimits(url)
    pid = redis_server.proc.pid

    async def takes() -> tuple[float | None, float | None]:
        assert await second.take("warm-up", 5) is None  # its connection is open
        taken = await first.take("k", 1)
        os.kill(pid, signal.SIGSTOP)
        try:
            asyncio.get_running_loop().call_later(1.0, os.kill, pid, signal.SIGCONT)
            return taken, await second.take("k", 1)
        finally:
            os.kill(pid, signal.SIGCONT)
            await first.redis.aclose()
            await second.redis.aclose()

    try:
        wait_for_a_fresh_minute(10)
        taken, over = asyncio.run(takes())
        assert taken is None
        assert over is not None and 0 < over <= 60
    finally:
        redis_server.kill()


def test_a_store_that_times_out_leaves_the_limits_counting_in_redis(tmp_path):
    """A cache read or usage flush that timed out marks Redis away for the stores for a
    while; the client keys' limits go on counting in the shared Redis, since their own
    calls decide, so another router's requests still count against the key."""
    import asyncio

    from xrouter_core.accounting.limits import RateLimits
    from xrouter_core.accounting.service import Accounting
    from xrouter_core.config import load_settings

    redis_server = RedisServer(tmp_path)
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    env = {f"{tier}_BASE_URL": "http://127.0.0.1:9/v1" for tier in ("CHEAP", "MEDIUM", "FRONTIER")}
    env |= {"CLASSIFIER_MODE": "builtin", "XROUTER_DATA_DIR": str(tmp_path), "REDIS_URL": url}
    settings = load_settings(env, str(tmp_path / "no.env"), str(tmp_path / "no.json"))
    accounting = Accounting(settings)
    other = RateLimits(url)

    async def takes() -> float | None:
        try:
            assert await other.take("k", 1) is None
            assert accounting.health is not None
            accounting.health.failed(TimeoutError("a store's read timed out"))
            assert not accounting.health.usable
            return await accounting.limits.take("k", 1)
        finally:
            await other.redis.aclose()
            await accounting.limits.redis.aclose()

    try:
        wait_for_a_fresh_minute(10)
        over = asyncio.run(takes())
        assert over is not None and 0 < over <= 60
    finally:
        accounting.close()
        redis_server.kill()


def test_with_redis_away_each_process_counts_on_its_own():
    """A Redis that cannot be reached: the limit still holds, counted in this process."""
    import asyncio

    from conftest import free_port

    from xrouter_core.accounting.cache import RedisHealth
    from xrouter_core.accounting.limits import RateLimits

    url = f"redis://127.0.0.1:{free_port()}/0"
    limits = RateLimits(url, RedisHealth(url))

    async def takes() -> list[float | None]:
        return [await limits.take("k", 2) for _ in range(3)]

    wait_for_a_fresh_minute(5)
    first, second, third = asyncio.run(takes())
    assert first is None and second is None
    assert third is not None and 0 < third <= 60
