"""Client keys kept in Redis (ROUTER_KEYS_SOURCE=redis): `xrouter keys --redis` writes
them to a real redis-server as SHA-256 digests with their limits; two routers on that
Redis accept a key created after they started and refuse it (401) once revoked, each
within the documented interval (client_keys.KEYRING_CHECK_S), with no Redis round trip
per request for it; the key is never stored in Redis nor logged."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time

import httpx
import pytest
from conftest import ROOT, free_port, unique
from helpers import wait_for
from test_client_keys import ask, bearer

from xrouter_core.client_keys import (
    KEYRING_CHECK_S,
    REDIS_KEYS,
    REDIS_VERSION,
    RedisKeyRing,
    digest_of,
)

CHAT = "/v1/chat/completions"
# What the docs promise (a change seen within KEYRING_CHECK_S), with room for a machine
# busy with other tests: the time it took is printed.
SEEN_WITHIN_S = KEYRING_CHECK_S + 3.0


def keys(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xrouter_core", "keys", *args],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "", **env},
        timeout=60,
    )


def everything_in(port: int) -> str:
    """Every key and value in the Redis, as text (to look for a plaintext key)."""
    import redis

    client = redis.Redis(port=port)
    dump = []
    for name in client.scan_iter():
        kind = client.type(name)
        if kind == b"hash":
            value = client.hgetall(name)
        elif kind == b"string":
            value = client.get(name)
        else:
            value = kind
        dump.append(f"{name!r}={value!r}")
    return "\n".join(dump)


def test_the_keys_command_writes_digests_to_redis(redis_server, tmp_path):
    import redis

    url = f"redis://127.0.0.1:{redis_server.port}/0"
    env = {"REDIS_URL": url}
    made = keys("--redis", "create", "team-a", "--rpm", "5", "--max-tier", "medium", env=env)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("xr-") and len(key) > 40
    # ROUTER_KEYS_SOURCE=redis stands for --redis, as it does for the router.
    source = {**env, "ROUTER_KEYS_SOURCE": "redis"}
    other = keys("create", "team-b", "--tpm", "1000", "--daily-usd", "2.5", env=source)
    assert other.returncode == 0, other.stderr
    assert not (tmp_path / "keys.json").exists()
    client = redis.Redis(port=redis_server.port)
    stored = {k.decode(): json.loads(v) for k, v in client.hgetall(REDIS_KEYS).items()}
    assert set(stored) == {"team-a", "team-b"}
    assert stored["team-a"]["sha256"] == digest_of(key)
    assert stored["team-a"]["rpm"] == 5 and stored["team-a"]["max_tier"] == "medium"
    assert stored["team-b"]["tpm"] == 1000 and stored["team-b"]["daily_usd"] == 2.5
    assert int(client.get(REDIS_VERSION)) == 2
    assert key not in everything_in(redis_server.port)
    listed = keys("list", env=source)
    assert listed.stdout.splitlines() == [
        "team-a\trpm=5\tmax_tier=medium",
        "team-b\ttpm=1000\tdaily_usd=2.5",
    ]
    again = keys("create", "team-a", env=source)
    assert again.returncode == 1 and "exists already" in again.stderr
    assert int(client.get(REDIS_VERSION)) == 2  # a refused change moves nothing
    assert keys("revoke", "team-a", env=source).returncode == 0
    assert keys("list", env=source).stdout.splitlines() == ["team-b\ttpm=1000\tdaily_usd=2.5"]
    assert int(client.get(REDIS_VERSION)) == 3
    missing = keys("revoke", "nobody", env=source)
    assert missing.returncode == 1 and "no key named 'nobody'" in missing.stderr
    no_url = keys("--redis", "list", env={})
    assert no_url.returncode == 1 and "needs REDIS_URL" in no_url.stderr
    away = keys(
        "--redis", "list", env={"REDIS_URL": f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"}
    )
    assert away.returncode == 1 and "ConnectionError" in away.stderr
    assert "s3cret-pw" not in away.stderr and "Traceback" not in away.stderr


@pytest.mark.parametrize("launcher", ["xrouter"])
def test_two_routers_see_a_created_and_a_revoked_key(start_router, upstreams, redis_server):
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    env = {"REDIS_URL": url, "ROUTER_KEYS_SOURCE": "redis"}
    routers = [start_router(env), start_router(env, ["--workers", "2"])]
    # Started before any key exists: client keys on, so a request without one is a 401.
    for router in routers:
        assert httpx.post(router.url + CHAT, json=ask("x"), trust_env=False).status_code == 401

    made = keys("create", "agent", "--max-tier", "medium", env=env)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    upstreams.classifier.digit = "2"  # frontier decided, the ceiling holds it to medium

    def statuses() -> list[int]:
        # Several requests per router: the second one's two workers each answer some.
        return [
            httpx.post(
                router.url + CHAT,
                json=ask(unique("redis key")),
                headers=bearer(key),
                trust_env=False,
                timeout=30,
            ).status_code
            for router in routers
            for _ in range(4)
        ]

    def within(expected: int) -> float:
        start = time.monotonic()
        while True:
            seen = statuses()
            if set(seen) == {expected}:
                return time.monotonic() - start
            assert time.monotonic() - start < SEEN_WITHIN_S, seen
            time.sleep(0.2)

    accepted_after = within(200)
    reply = httpx.post(
        routers[0].url + CHAT, json=ask(unique("ceiling")), headers=bearer(key), trust_env=False
    )
    assert reply.headers["x-xrouter-upstream"] == "medium"  # its tier ceiling, from Redis
    assert keys("revoke", "agent", env=env).returncode == 0
    refused_after = within(401)
    print(
        f"created: accepted after {accepted_after:.2f} s; revoked: refused after "
        f"{refused_after:.2f} s (KEYRING_CHECK_S={KEYRING_CHECK_S})"
    )
    # Stays refused: the ring does not bring it back.
    time.sleep(KEYRING_CHECK_S + 0.5)
    assert set(statuses()) == {401}
    for router in routers:
        logs = router.logs()
        assert key not in logs and "Traceback" not in logs
        assert "client keys read from Redis" in logs
    assert key not in everything_in(redis_server.port)


def test_a_bad_keys_source_stops_the_router(start_router, tmp_path):
    router = start_router({"ROUTER_KEYS_SOURCE": "redis"}, wait=False)
    assert router.proc.wait(30) == 1
    assert "ROUTER_KEYS_SOURCE=redis needs REDIS_URL" in router.logs()
    both = start_router(
        {
            "ROUTER_KEYS_SOURCE": "redis",
            "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "ROUTER_KEYS_FILE": str(tmp_path / "keys.json"),
        },
        wait=False,
    )
    assert both.proc.wait(30) == 1
    assert "unset ROUTER_KEYS_FILE" in both.logs()


def test_with_redis_away_the_keys_read_before_stay(redis_server, monkeypatch):
    """The ring's own loop: keys read, Redis killed (one warning, the keys stay, requests
    still answered from memory), Redis back on the same port (read again)."""
    import redis

    import xrouter_core.client_keys as client_keys

    monkeypatch.setattr(client_keys, "KEYRING_CHECK_S", 0.1)
    port = redis_server.port
    url = f"redis://127.0.0.1:{port}/0"
    entry = {"name": "kept", "sha256": digest_of("xr-kept"), "rpm": 3}
    client = redis.Redis(port=port)
    client.hset(REDIS_KEYS, "kept", json.dumps(entry))
    client.hset(REDIS_KEYS, "broken", "{not json")
    client.incr(REDIS_VERSION)
    warnings: list[str] = []

    async def scenario() -> None:
        ring = RedisKeyRing(url, warnings.append)
        assert ring.find("xr-kept") is None  # nothing known before the first read
        ring.start()
        await asyncio.wait_for(ring.loaded.wait(), 5)
        assert ring.find("xr-kept").rpm == 3
        assert len(ring.keys) == 1  # the broken entry is left out, with a warning
        redis_server.kill()
        await asyncio.sleep(0.6)
        assert ring.find("xr-kept") is not None
        away = [w for w in warnings if "not re-read from Redis" in w]
        assert len(away) == 1, warnings
        await asyncio.to_thread(redis_server.start)
        # An empty Redis (no version either): the keys are read again, none now.
        for _ in range(50):
            if ring.find("xr-kept") is None:
                break
            await asyncio.sleep(0.1)
        assert ring.find("xr-kept") is None
        ring.close()

    asyncio.run(scenario())
    assert any("left out" in w for w in warnings)
    assert "xr-kept" not in " ".join(warnings)


def test_a_reload_keeps_the_keys_and_polls_with_the_new_ring(upstreams, redis_server, tmp_path):
    """Configuration reloads under a client key's traffic (mitmproxy's `set`): no request
    of it is refused, the replaced rings stop polling,
    and a revocation after them still reaches the router."""
    import redis
    from test_reload import Controlled, good_env

    url = f"redis://127.0.0.1:{redis_server.port}/0"
    env = {"REDIS_URL": url, "ROUTER_KEYS_SOURCE": "redis"}
    made = keys("create", "steady", env=env)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    controlled = Controlled(upstreams, tmp_path)
    try:
        envs = [tmp_path / "a.env", tmp_path / "b.env"]
        for index, path in enumerate(envs):
            path.write_text(good_env(upstreams, **env, MEDIUM_MODEL=f"medium-model-{index}"))
        assert controlled.set("xrouter_env_file", str(envs[0]))["error"] is None
        client = controlled.router.client(headers=bearer(key))

        def status() -> int:
            return client.post(CHAT, json=ask(unique("steady"))).status_code

        wait_for(lambda: status() == 200, timeout=SEEN_WITHIN_S)
        stop, statuses = threading.Event(), []

        def traffic() -> None:
            with controlled.router.client(headers=bearer(key)) as own:
                while not stop.is_set():
                    statuses.append(own.post(CHAT, json=ask(unique("t"))).status_code)

        thread = threading.Thread(target=traffic)
        thread.start()
        try:
            for reload in range(1, 7):
                assert controlled.set("xrouter_env_file", str(envs[reload % 2]))["error"] is None
                time.sleep(0.3)
        finally:
            stop.set()
            thread.join(30)
        assert statuses and set(statuses) == {200}, statuses
        # Only the ring in use still polls: the replaced ones' GETs stopped (the others'
        # connections idle since the traffic ended, over a second before).
        time.sleep(KEYRING_CHECK_S + 1.5)
        polling = [
            c
            for c in redis.Redis(port=redis_server.port).client_list()
            if c["cmd"] == "get" and int(c["idle"]) <= KEYRING_CHECK_S
        ]
        assert len(polling) == 1, polling
        assert keys("revoke", "steady", env=env).returncode == 0
        wait_for(lambda: status() == 401, timeout=SEEN_WITHIN_S)
        client.close()
        assert key not in controlled.router.logs()
    finally:
        controlled.close()
