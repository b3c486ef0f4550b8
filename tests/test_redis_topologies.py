"""REDIS_URL naming Sentinel (redis+sentinel://) and Cluster (redis+cluster://), against
real redis-server processes on loopback: a primary, a replica and a sentinel (also three
sentinels with quorum 2, one killed with the primary, client keys in Redis); and three
cluster masters made with `redis-cli --cluster create`. On each, a `--workers 2` router
counts usage exactly, caches decisions and answers, holds a client key's limits and
budget, and shares its live feed between the workers over pub/sub (sharded on Cluster).
The primary is killed (SIGKILL) under load: after Sentinel promotes the replica, every
answered request is counted exactly once and the budget's spend is exact."""

from __future__ import annotations

import concurrent.futures
import contextlib
import queue
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import free_port, unique
from helpers import redis_server_args, slowed, wait_for
from test_budgets import COST, PRICES, ask
from test_client_keys import CHAT, bearer, create, wait_for_a_fresh_minute
from test_events import Feed, feeds  # noqa: F401 - the fixture

SERVICE = "xmaster"


def redis_binary(name: str) -> str:
    found = shutil.which(name) or f"/usr/bin/{name}"
    if not Path(found).exists():
        pytest.fail(f"{name} is not installed (.ci/run installs it)")
    return found


class Node:
    """One redis-server (or sentinel) on loopback, in its own directory."""

    def __init__(self, directory: Path, *args: str, config: str | None = None):
        self.port = free_port()
        self.directory = directory / f"n{self.port}"
        self.directory.mkdir(parents=True)
        command = [redis_binary("redis-server")]
        if config is not None:
            path = self.directory / "sentinel.conf"
            path.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\n{config}")
            command += [str(path), "--sentinel"]
        else:
            command += [*redis_server_args(self.port, self.directory), *args]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.ping, timeout=10)

    def client(self):
        import redis

        return redis.Redis(port=self.port, socket_timeout=2)

    def ping(self) -> bool:
        import redis

        try:
            return bool(self.client().ping())
        except redis.exceptions.RedisError:
            return False

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)


@contextlib.contextmanager
def nodes_stopped(nodes: list[Node]):
    try:
        yield nodes
    finally:
        for node in nodes:
            node.kill()


def sentinel_set(tmp_path: Path) -> tuple[Node, Node, Node]:
    """A primary, its replica, and one sentinel watching them (quorum 1)."""
    primary = Node(tmp_path)
    replica = Node(tmp_path, "--replicaof", "127.0.0.1", str(primary.port))
    sentinel = Node(
        tmp_path,
        config=(
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
        ),
    )

    def replica_known() -> bool:
        replicas = sentinel.client().execute_command("SENTINEL", "REPLICAS", SERVICE)
        link = replica.client().info("replication").get("master_link_status")
        return bool(replicas) and link == "up"

    wait_for(replica_known, timeout=20)
    return primary, replica, sentinel


def cluster(tmp_path: Path) -> list[Node]:
    masters = [
        Node(
            tmp_path,
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
            # The bus would be port + 10000, past 65535 for a high free port.
            "--cluster-port",
            str(free_port()),
        )
        for _ in range(3)
    ]
    made = subprocess.run(
        [
            redis_binary("redis-cli"),
            "--cluster",
            "create",
            *(f"127.0.0.1:{m.port}" for m in masters),
            "--cluster-yes",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert made.returncode == 0, made.stdout + made.stderr

    def ready() -> bool:
        return all(m.client().cluster("info")["cluster_state"] == "ok" for m in masters)

    wait_for(ready, timeout=20)
    return masters


def usage_doc(router, key: str) -> dict:
    return httpx.get(router.url + "/usage", headers=bearer(key), trust_env=False).json()


def post(router, key: str, body: dict) -> httpx.Response:
    return httpx.post(
        router.url + CHAT, json=body, headers=bearer(key), timeout=30, trust_env=False
    )


def exercise(router, key: str, tight: str, feed: Feed) -> int:
    """On a router over some topology: both caches, a key's limit, the live feed across
    the workers. Returns how many requests of `key` were answered."""
    text = unique("cached answer")
    body = {**ask("c"), "messages": [{"role": "user", "content": text}]}
    assert post(router, key, body).status_code == 200
    again = post(router, key, body)
    assert again.status_code == 200 and again.headers.get("x-xrouter-cache") == "hit"
    wait_for_a_fresh_minute(5)
    limited = [post(router, tight, ask("tight")).status_code for _ in range(8)]
    assert limited == [200] * 5 + [429] * 3, limited
    # One subscription sees both workers' requests: they meet over pub/sub.
    sent = 2
    workers: set[int] = set()
    deadline = time.monotonic() + 30
    while len(workers) < 2:
        assert time.monotonic() < deadline, f"saw only workers {workers}"
        assert post(router, key, ask("feed")).status_code == 200  # a new connection each
        sent += 1
        with contextlib.suppress(AssertionError, queue.Empty):
            workers.add(feed.next("complete", timeout=1.0)[1]["worker"])
    return sent


def load(router, key: str, stop: threading.Event, statuses: list[int]) -> None:
    while not stop.is_set():
        try:
            statuses.append(post(router, key, ask("load")).status_code)
        except httpx.HTTPError:  # a request the router did not answer
            statuses.append(-1)


def stored_requests(client) -> int:
    """Requests counted in Redis (every tier's), read straight from a node."""
    counters = client.hgetall("xrouter:{usage}:counters")
    return sum(
        int(v) for k, v in counters.items() if k.startswith(b"t|") and k.endswith(b"|requests")
    )


def cache_entries(clients) -> tuple[int, int]:
    """(decision cache entries, response cache entries) stored in Redis."""
    decisions = sum(len(list(c.scan_iter("xrouter:decision:*"))) for c in clients)
    responses = sum(len(list(c.scan_iter("xrouter:response:*"))) for c in clients)
    return decisions, responses


def check_exact(router, key: str, answered: int, priced: int) -> dict:
    """/usage counts every answered request once, and the day's spend is exact."""

    seen: list = []

    def exact() -> dict | None:
        doc = usage_doc(router, key)
        seen[:] = [doc["totalRequests"], doc["keys"]]
        row = doc["keys"].get("team", {})
        spent = row.get("budget", {}).get("spentTodayUsd")
        done = doc["totalRequests"] == answered + 5 and row.get("requests") == answered
        return doc if done and spent == pytest.approx(priced * COST, abs=1e-9) else None

    try:
        doc = wait_for(exact, timeout=30)
    except AssertionError:
        print(router.logs()[-5000:])
        raise AssertionError(f"answered {answered}, priced {priced}; /usage: {seen}") from None
    row = doc["keys"]["team"]
    assert row["costUsd"] == pytest.approx(priced * COST, abs=1e-9)
    assert doc["keys"]["tight"]["requests"] == 5 and doc["keys"]["tight"]["rateLimited"] == 3
    return doc


def router_env(file: Path, url: str) -> dict[str, str]:
    return {**PRICES, "ROUTER_KEYS_FILE": str(file), "CACHE_RESPONSES": "true", "REDIS_URL": url}


@pytest.mark.parametrize("launcher", ["xrouter"])
def test_sentinel_with_the_primary_killed_under_load(start_router, upstreams, tmp_path, feeds):  # noqa: F811
    primary, replica, sentinel = sentinel_set(tmp_path)
    with nodes_stopped([sentinel, replica, primary]):
        file = tmp_path / "keys.json"
        key = create(file, "team", "--daily-usd", "1000")
        tight = create(file, "tight", "--rpm", "5")
        url = f"redis+sentinel://127.0.0.1:{sentinel.port}/{SERVICE}/0"
        router = start_router(router_env(file, url), ["--workers", "2"])
        feeds.append(Feed(router.url, key))
        feeds[0].next("stats")
        sent = exercise(router, key, tight, feeds[0])
        # Counted and cached in the primary: the URL reached it through the sentinel.
        wait_for(lambda: stored_requests(primary.client()) > 0, timeout=10)
        decisions, responses = cache_entries([primary.client()])
        assert decisions >= 1 and responses >= 1

        stop, statuses = threading.Event(), []
        threads = [
            threading.Thread(target=load, args=(router, key, stop, statuses)) for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(statuses) >= 20, timeout=30)
        killed_at = len(statuses)
        primary.kill()
        killed = time.monotonic()
        wait_for(lambda: replica.client().info("replication")["role"] == "master", timeout=30)
        promoted_at = len(statuses)
        print(f"promoted {time.monotonic() - killed:.1f} s after the kill")
        wait_for(lambda: len(statuses) >= promoted_at + 20, timeout=30)  # on the new one
        stop.set()
        for thread in threads:
            thread.join(60)
        assert set(statuses) == {200}, sorted(set(statuses))
        assert killed_at > 0 and len(statuses) > promoted_at
        answered = sent + len(statuses)
        check_exact(router, key, answered, answered - 1)  # the cache hit cost nothing
        # Exact in the promoted replica itself, not only in the routers' view.
        # /usage counts what a router has not flushed yet: Redis may lag by one flush.
        wait_for(lambda: stored_requests(replica.client()) == answered + 5, timeout=15)
        print(
            f"sentinel failover: {len(statuses)} requests under load, {killed_at} before the kill"
        )
        assert "Traceback" not in router.logs()


@pytest.mark.parametrize("launcher", ["xrouter"])
def test_cluster_of_three_masters(start_router, upstreams, tmp_path, feeds):  # noqa: F811
    masters = cluster(tmp_path)
    with nodes_stopped(masters):
        file = tmp_path / "keys.json"
        key = create(file, "team", "--daily-usd", "1000")
        tight = create(file, "tight", "--rpm", "5")
        url = f"redis+cluster://127.0.0.1:{masters[0].port},127.0.0.1:{masters[1].port}"
        router = start_router(router_env(file, url), ["--workers", "2"])
        feeds.append(Feed(router.url, key))
        feeds[0].next("stats")
        sent = exercise(router, key, tight, feeds[0])
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            statuses = list(
                pool.map(lambda _: post(router, key, ask("load")).status_code, range(100))
            )
        assert set(statuses) == {200}
        answered = sent + len(statuses)
        check_exact(router, key, answered, answered - 1)
        # The keys are spread over the nodes by their hash tags, each on its slot's node.
        import redis

        nodes = redis.RedisCluster(host="127.0.0.1", port=masters[0].port)
        wait_for(lambda: stored_requests(nodes) == answered + 5, timeout=15)  # one flush late
        decisions, responses = cache_entries([m.client() for m in masters])
        assert decisions >= 1 and responses >= 1
        holders = {m.port for m in masters if m.client().execute_command("DBSIZE") > 0}
        assert len(holders) >= 2, "every key landed on one node"
        nodes.close()
        assert "Traceback" not in router.logs()


def test_redis_urls_are_parsed_and_redacted():
    from xrouter_core.accounting.redis_topology import parse_redis_url, redact_url
    from xrouter_core.config import ConfigError, load_settings

    sentinel = parse_redis_url("redis+sentinel://:pw@h1:26379,h2:26380/main/2?sentinel_password=sp")
    assert sentinel.kind == "sentinel" and sentinel.nodes == (("h1", 26379), ("h2", 26380))
    assert (sentinel.service, sentinel.db, sentinel.password) == ("main", 2, "pw")
    assert sentinel.sentinel_password == "sp"
    assert parse_redis_url("redis+cluster://a:7000,b:7001").nodes == (("a", 7000), ("b", 7001))
    assert parse_redis_url("redis://x:6379/0").kind == "single"
    assert redact_url("redis+sentinel://u:pw@h:1/m?sentinel_password=sp") == (
        "redis+sentinel://u:***@h:1/m?sentinel_password=***"
    )
    for bad, reason in (
        ("http://x", "must be a redis://"),
        ("redis+sentinel://h:1", "names the primary"),
        ("redis+cluster://h", "must be host:port"),
        ("redis+cluster://h:1/3", "only database 0"),
    ):
        with pytest.raises(ValueError, match=reason):
            parse_redis_url(bad)
    settings = {"OPENAI_API_KEY": "sk-test-0000", "REDIS_URL": "redis+sentinel://h:1"}
    with pytest.raises(ConfigError, match="names the primary"):
        load_settings(settings, env_file="/nonexistent", upstreams_file="/nonexistent")


def sentinel_quorum(tmp_path: Path, count: int = 3, quorum: int = 2):
    """A primary, its replica, and `count` sentinels that must agree `quorum` strong
    before one fails the primary over (the deployment Sentinel's docs recommend)."""
    primary = Node(tmp_path)
    replica = Node(tmp_path, "--replicaof", "127.0.0.1", str(primary.port))
    config = (
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} {quorum}\n"
        f"sentinel down-after-milliseconds {SERVICE} 1000\n"
        f"sentinel failover-timeout {SERVICE} 5000\n"
    )
    sentinels = [Node(tmp_path, config=config) for _ in range(count)]

    def all_known() -> bool:
        link = replica.client().info("replication").get("master_link_status")
        for sentinel in sentinels:
            seen = sentinel.client().sentinel_master(SERVICE)
            if seen.get("num-other-sentinels") != count - 1 or seen.get("num-slaves") != 1:
                return False
        return link == "up"

    wait_for(all_known, timeout=30)
    return primary, replica, sentinels


@pytest.mark.parametrize("launcher", ["xrouter"])
def test_three_sentinels_fail_over_with_keys_in_redis(start_router, upstreams, tmp_path):
    """Three sentinels (quorum 2) and client keys kept in Redis: the primary and the first
    sentinel the URL lists are killed under load; the two others promote the replica,
    every answered request is counted once and priced exactly in it, and a key revoked
    through the sentinels afterwards is refused."""
    from test_client_keys_redis import keys

    primary, replica, sentinels = sentinel_quorum(tmp_path)
    with nodes_stopped([*sentinels, replica, primary]):
        listed = ",".join(f"127.0.0.1:{s.port}" for s in sentinels)
        url = f"redis+sentinel://{listed}/{SERVICE}/0"
        env = {**PRICES, "REDIS_URL": url, "ROUTER_KEYS_SOURCE": "redis"}
        made = keys("create", "team", "--daily-usd", "1000", env=env)
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip()
        router = start_router(env)
        wait_for(lambda: post(router, key, ask("first")).status_code == 200, timeout=10)
        sent = 1

        stop, statuses = threading.Event(), []
        threads = [
            threading.Thread(target=load, args=(router, key, stop, statuses)) for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(statuses) >= 20, timeout=30)
        killed_at = len(statuses)
        primary.kill()
        sentinels[0].kill()  # the first one the URL lists: the client asks the others
        killed = time.monotonic()
        wait_for(lambda: replica.client().info("replication")["role"] == "master", timeout=30)
        promoted_at = len(statuses)
        promoted_after = time.monotonic() - killed
        wait_for(lambda: len(statuses) >= promoted_at + 20, timeout=30)  # on the new one
        stop.set()
        for thread in threads:
            thread.join(60)
        assert set(statuses) == {200}, sorted(set(statuses))
        answered = sent + len(statuses)

        seen: list = []

        def exact() -> bool:
            doc = usage_doc(router, key)
            row = doc["keys"].get("team", {})
            seen[:] = [doc["totalRequests"], row]
            spent = row.get("budget", {}).get("spentTodayUsd")
            return (
                doc["totalRequests"] == answered
                and row.get("requests") == answered
                and spent == pytest.approx(answered * COST, abs=1e-9)
            )

        try:
            wait_for(exact, timeout=30)
        except AssertionError:
            raise AssertionError(f"answered {answered}; /usage: {seen}") from None
        # In the promoted replica itself (/usage adds this router's counts not yet flushed).
        promoted = replica.client()
        wait_for(lambda: stored_requests(promoted) == answered, timeout=15)
        # The keys moved with the data: revoked through the two sentinels left, refused.
        assert keys("revoke", "team", env=env).returncode == 0
        wait_for(lambda: post(router, key, ask("revoked")).status_code == 401, timeout=10)
        print(
            f"three sentinels: promoted {promoted_after:.1f} s after the kill;"
            f" {len(statuses)} requests under load, {killed_at} before the kill"
        )
        logs = router.logs()
        assert "Traceback" not in logs and key not in logs


@pytest.mark.parametrize("outage", ["sentinels killed", "server frozen"])
def test_a_router_stops_on_its_own_with_its_redis_gone(start_router, upstreams, tmp_path, outage):
    """Redis goes away while paid requests of a key with a budget are in flight (every
    sentinel and node killed; or one redis-server frozen with SIGSTOP, so calls time out
    instead of being refused), then the router is told to stop (SIGINT). It exits by
    itself with code 0 within the conftest stop's wait (SIGKILLed it would be -9), with no
    traceback: the shutdown's Redis writes share one short deadline (SHUTDOWN_REDIS_S),
    and what did not reach Redis is kept on disk. A router started afterwards on the same
    data directory finds every request counted since Redis left, and their cost."""
    if outage == "sentinels killed":
        primary, replica, sentinels = sentinel_quorum(tmp_path)
        nodes = [*sentinels, replica, primary]
        listed = ",".join(f"127.0.0.1:{s.port}" for s in sentinels)
        url = f"redis+sentinel://{listed}/{SERVICE}/0"
    else:
        primary = Node(tmp_path)
        nodes = [primary]
        url = f"redis://127.0.0.1:{primary.port}/0"
    with nodes_stopped(nodes):
        file = tmp_path / "keys.json"
        key = create(file, "team", "--daily-usd", "5")
        data = tmp_path / "data"
        env = {**PRICES, "ROUTER_KEYS_FILE": str(file), "XROUTER_DATA_DIR": str(data)}
        router = start_router({**env, "REDIS_URL": url})
        for _ in range(2):
            assert post(router, key, ask("before")).status_code == 200
        wait_for(lambda: stored_requests(primary.client()) == 2, timeout=15)

        # Answered after Redis left: settled and counted with no Redis to take them.
        upstreams.medium.override = slowed(upstreams.medium, 1.5)
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            in_flight = [pool.submit(post, router, key, ask("in flight")) for _ in range(3)]
            wait_for(lambda: len(upstreams.medium.requests) >= 5, timeout=10)
            for node in nodes:
                if outage == "server frozen":
                    node.proc.send_signal(signal.SIGSTOP)
                else:
                    node.kill()
            assert [f.result().status_code for f in in_flight] == [200] * 3
        upstreams.medium.override = None
        late = httpx.post(
            router.url + CHAT, json=ask("after"), headers=bearer(key), timeout=60, trust_env=False
        )
        assert late.status_code == 200

        assert router.stop() == 0
        logs = router.log_path.read_text(errors="replace")
        assert "Traceback" not in logs, logs[-3000:]
        assert "usage counts kept on disk" in logs, logs[-3000:]

    # The four counted while Redis was gone, kept on disk (moved into Redis at a start
    # with Redis back; read from disk here, by a router without it).
    after = start_router(env)
    doc = usage_doc(after, key)
    assert doc["totalRequests"] == 4, doc["totalRequests"]
    assert doc["keys"]["team"]["costUsd"] == pytest.approx(4 * COST, abs=1e-9)
