"""Configuration changed while the router runs: a real mitmdump with the addon, fake
upstreams on loopback, and mitmproxy's own `set` command to change the options.

mitmdump has no prompt to type `:set` at, so each router here also loads a small test
addon (CONTROL, written to the test's directory) that runs mitmproxy's `set` command
for a request to /control/set on the router's port, as mitmproxy's console would for
`:set option=value`, and answers with the error (if any) and the option's value after.

The settings are read from env files named by `xrouter_env_file`: the router process
gets none of them from its environment, which would outrank every file.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import Router, Upstreams, unique
from fakes import Reply
from helpers import CONTROL, ENTRY, RedisServer, router_connections, wait_for

from xrouter_core.accounting.redis_topology import CLOSE_GRACE_S

CHAT = "/v1/chat/completions"
ROUTER_KEY = "xr-client-router-key-7781"
FRONTIER_KEY = "sk-frontier-secret-0003"


def env_text(values: dict[str, str]) -> str:
    return "".join(f"{name}={value}\n" for name, value in values.items())


def good_env(upstreams: Upstreams, **changes: str) -> str:
    return env_text({**upstreams.env(), "ROUTER_API_KEY": ROUTER_KEY, **changes})


# Two problems at once: both must be reported, one per line.
BROKEN = {"FRONTIER_HEADERS": "not json", "MEDIUM_BASE_URL": ""}
BROKEN_PROBLEMS = [
    "FRONTIER_HEADERS is not a JSON object of string values",
    "MEDIUM_BASE_URL is required when the classifier is enabled",
]


def ask(text: str) -> dict:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}


class Controlled:
    """A real router started from an env file, with CONTROL loaded after the addon."""

    def __init__(self, upstreams: Upstreams, tmp: Path) -> None:
        self.tmp = tmp
        self.env_file = tmp / "good.env"
        self.env_file.write_text(good_env(upstreams))
        control = tmp / "control.py"
        control.write_text(CONTROL)
        self.router = Router(
            {},
            tmp,
            args=["-s", str(control), "--set", f"xrouter_env_file={self.env_file}"],
        )
        self.http = self.router.client(headers={"authorization": f"Bearer {ROUTER_KEY}"})

    def set(self, option: str, *values: str) -> dict:
        reply = self.http.get("/control/set", params={"option": option, "value": list(values)})
        assert reply.status_code == 200, reply.text
        return reply.json()

    def chat(self, text: str, **headers: str) -> httpx.Response:
        return self.http.post(CHAT, json=ask(unique(text)), headers=headers)

    def close(self) -> None:
        self.http.close()
        self.router.stop()


@pytest.fixture
def controlled(upstreams: Upstreams, tmp_path: Path):
    instance = Controlled(upstreams, tmp_path)
    yield instance
    instance.close()


def assert_routed(reply: httpx.Response, upstreams: Upstreams, tier: str, model: str) -> None:
    """The answer came from `tier`'s fake, which got the router's rewrite of the request:
    the route's model and key, not the client's."""
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-xrouter-upstream"] == tier
    assert reply.json()["choices"][0]["message"]["content"] == f"Hello from {tier}!"
    received = getattr(upstreams, tier).requests[-1]
    assert received.path == CHAT
    assert received.json["model"] == model
    key = upstreams.env()[f"{tier.upper()}_API_KEY"]
    assert received.headers["authorization"] == f"Bearer {key}"


def assert_nothing_unrouted(upstreams: Upstreams) -> None:
    """No upstream, and above all not the frontier host (the reverse-mode target), ever
    saw the client's router key or a request the router did not rewrite."""
    for fake in (upstreams.classifier, upstreams.cheap, upstreams.medium, upstreams.frontier):
        for received in fake.requests:
            assert ROUTER_KEY not in str(received.headers)
            assert ROUTER_KEY.encode() not in received.body
    for fake in (upstreams.cheap, upstreams.medium, upstreams.frontier):
        for received in fake.requests:
            assert received.json["model"].startswith(f"{fake.name}-model")
    for received in upstreams.frontier.requests:
        assert received.headers["authorization"] == f"Bearer {FRONTIER_KEY}"


def test_a_broken_env_file_set_at_run_time_is_refused_and_routing_goes_on(
    controlled: Controlled, upstreams: Upstreams
):
    assert_routed(controlled.chat("before"), upstreams, "medium", "medium-model")
    pinned = controlled.chat("before, pinned", **{"x-xrouter-tier": "frontier"})
    assert_routed(pinned, upstreams, "frontier", "frontier-model")

    # The file in use is edited in place, but not set again: a refused change must not
    # pick that up either (mitmproxy's rollback is not a reload).
    controlled.env_file.write_text(good_env(upstreams, MEDIUM_MODEL="medium-model-unannounced"))
    broken = controlled.tmp / "broken.env"
    broken.write_text(good_env(upstreams, **BROKEN))
    answer = controlled.set("xrouter_env_file", str(broken))
    # Refused with every problem, one per line; the option keeps its old value.
    assert answer["error"] is not None and answer["error"].splitlines() == BROKEN_PROBLEMS
    assert answer["value"] == str(controlled.env_file)

    # The settings in use keep routing, and the router still rewrites every request.
    assert_routed(controlled.chat("after"), upstreams, "medium", "medium-model")
    pinned = controlled.chat("after, pinned", **{"x-xrouter-tier": "frontier"})
    assert_routed(pinned, upstreams, "frontier", "frontier-model")
    assert controlled.http.get("/health").json()["status"] == "ok"
    assert_nothing_unrouted(upstreams)
    logs = controlled.router.logs()
    for problem in BROKEN_PROBLEMS:
        assert f"configuration change refused: {problem}" in logs


def test_a_broken_upstreams_file_set_at_run_time_is_refused(
    controlled: Controlled, upstreams: Upstreams
):
    bad = controlled.tmp / "upstreams.json"
    bad.write_text('{"routes": {"huge": {"base_url": "http://127.0.0.1:9/v1"}}}')
    answer = controlled.set("xrouter_upstreams", str(bad))
    assert answer["error"] is not None and "unknown route 'huge'" in answer["error"]
    assert answer["value"] == ""
    assert_routed(controlled.chat("upstreams refused"), upstreams, "medium", "medium-model")
    assert_nothing_unrouted(upstreams)


def test_a_good_env_file_set_at_run_time_takes_effect(controlled: Controlled, upstreams: Upstreams):
    broken = controlled.tmp / "broken.env"
    broken.write_text(good_env(upstreams, **BROKEN))
    assert controlled.set("xrouter_env_file", str(broken))["error"] is not None

    reloaded = controlled.tmp / "reloaded.env"
    reloaded.write_text(good_env(upstreams, MEDIUM_MODEL="medium-model-reloaded"))
    answer = controlled.set("xrouter_env_file", str(reloaded))
    assert answer == {"error": None, "value": str(reloaded)}
    assert_routed(controlled.chat("reloaded"), upstreams, "medium", "medium-model-reloaded")
    # Setting the same file again re-reads it: an edit in place takes effect too.
    reloaded.write_text(good_env(upstreams, MEDIUM_MODEL="medium-model-edited"))
    assert controlled.set("xrouter_env_file", str(reloaded))["error"] is None
    assert_routed(controlled.chat("edited"), upstreams, "medium", "medium-model-edited")
    assert_nothing_unrouted(upstreams)


def wait_for_line(router: Router, text: str, count: int = 1, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while router.logs().count(text) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not logged {count} time(s):\n{router.logs()}")
        time.sleep(0.1)


def test_an_addon_without_settings_answers_503_and_forwards_nothing(
    controlled: Controlled, upstreams: Upstreams
):
    """mitmdump loads a new instance of the addon when its script changes; if the env file
    is broken by then, that instance has no settings while the reverse listener (pointed
    at the frontier host) stays up. It must answer, not pass requests on unrouted."""
    assert_routed(controlled.chat("before"), upstreams, "medium", "medium-model")
    controlled.env_file.write_text(good_env(upstreams, **BROKEN))  # broken in place
    entry = controlled.tmp / "xrouter_entry.py"
    entry.write_text(ENTRY)
    answer = controlled.set("scripts", str(entry), str(controlled.tmp / "control.py"))
    assert answer["error"] is None
    wait_for_line(controlled.router, f"configuration: {BROKEN_PROBLEMS[1]}")
    before = [
        len(fake.requests) for fake in (upstreams.cheap, upstreams.medium, upstreams.frontier)
    ]

    reply = controlled.chat("unconfigured")
    assert reply.status_code == 503
    assert reply.json()["error"]["code"] == "not_configured"
    assert "not configured" in reply.json()["error"]["message"]
    anthropic = controlled.http.post(
        "/v1/messages",
        json={"model": "claude", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]},
    )
    assert anthropic.status_code == 503 and anthropic.json()["type"] == "error"
    assert controlled.http.get("/health").status_code == 503
    assert controlled.http.get("/v1/anything/else").status_code == 503
    after = [len(fake.requests) for fake in (upstreams.cheap, upstreams.medium, upstreams.frontier)]
    assert after == before
    assert_nothing_unrouted(upstreams)

    # A good file then configures the new instance, and it routes.
    fixed = controlled.tmp / "fixed.env"
    fixed.write_text(good_env(upstreams))
    assert controlled.set("xrouter_env_file", str(fixed))["error"] is None
    assert_routed(controlled.chat("fixed"), upstreams, "medium", "medium-model")


def test_unknown_paths_and_bad_bodies_are_answered_never_forwarded(
    controlled: Controlled, upstreams: Upstreams
):
    """Every request reverse mode cannot route is answered by the router: none reaches
    the reverse target (the frontier host) or another upstream."""
    before = [len(f.requests) for f in (upstreams.cheap, upstreams.medium, upstreams.frontier)]
    http = controlled.http
    for method, path in (
        ("GET", "/nowhere"),
        ("POST", "/v1/completions/legacy"),
        ("GET", "/v1/chat/completions/extra"),
        ("DELETE", "/v1/models/gpt-4o"),
    ):
        reply = http.request(method, path)
        assert reply.status_code in (404, 405), (method, path, reply.text)
        assert reply.json()["error"]["code"] in ("not_found", "method_not_allowed")
    for content, status in (
        (b"{not json", 400),
        (b"[1, 2]", 400),
        (b"\xff\xfe{}", 400),
        (b'{"model": "gpt-4o"}', 400),
    ):
        reply = http.post(CHAT, content=content, headers={"content-type": "application/json"})
        assert reply.status_code == status, (content, reply.text)
        assert reply.json()["error"]["type"] == "invalid_request_error"
    bad = http.post("/v1/messages", content=b"{", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["type"] == "error"
    after = [len(f.requests) for f in (upstreams.cheap, upstreams.medium, upstreams.frontier)]
    assert after == before
    assert_nothing_unrouted(upstreams)
    assert "Traceback" not in controlled.router.logs()


def frontier_requests(controlled: Controlled) -> int:
    controlled.router.settle()
    reply = controlled.http.get("/usage")
    assert reply.status_code == 200, reply.text
    return reply.json()["tiers"]["frontier"]["requests"]


def test_no_count_is_lost_or_doubled_across_reloads_under_traffic(
    upstreams: Upstreams, tmp_path: Path
):
    """Reloads replace the usage counters' tracker while requests keep finishing and its
    flushes (every 10 ms here) keep writing: every answered request is counted once."""
    controlled = Controlled(upstreams, tmp_path)
    try:
        envs = [tmp_path / "a.env", tmp_path / "b.env"]
        for index, env in enumerate(envs):
            env.write_text(good_env(upstreams, USAGE_FLUSH_MS="10", MEDIUM_MODEL=f"m-{index}"))
        assert controlled.set("xrouter_env_file", str(envs[0]))["error"] is None
        before = frontier_requests(controlled)
        stop = threading.Event()
        answered: list[str] = []
        failed: list[str] = []

        def traffic() -> None:
            with controlled.router.client(
                headers={"authorization": f"Bearer {ROUTER_KEY}", "x-xrouter-tier": "frontier"}
            ) as client:
                while not stop.is_set():
                    reply = client.post(CHAT, json=ask(unique("traffic")))
                    (answered if reply.status_code == 200 else failed).append(reply.text)

        workers = [threading.Thread(target=traffic) for _ in range(4)]
        for worker in workers:
            worker.start()
        for reload in range(16):
            time.sleep(0.05)
            assert controlled.set("xrouter_env_file", str(envs[reload % 2 - 1]))["error"] is None
        stop.set()
        for worker in workers:
            worker.join(30)
        assert not failed and len(answered) > 50
        assert frontier_requests(controlled) - before == len(answered)
    finally:
        controlled.close()


def breaker_states(controlled: Controlled) -> dict:
    return controlled.http.get("/health").json()["fallback"]["circuit_breaker"]


def test_a_reload_keeps_the_breaker_state_of_routes_it_did_not_change(
    upstreams: Upstreams, tmp_path: Path
):
    controlled = Controlled(upstreams, tmp_path)
    try:
        settings = {"FALLBACK_ENABLED": "false", "BREAKER_FAILURES": "1"}
        first = tmp_path / "first.env"
        first.write_text(good_env(upstreams, **settings))
        assert controlled.set("xrouter_env_file", str(first))["error"] is None
        upstreams.frontier.override = lambda r: Reply(500, {"error": {"message": "down"}})
        assert controlled.chat("fail", **{"x-xrouter-tier": "frontier"}).status_code == 500
        assert breaker_states(controlled)["frontier"]["state"] == "open"

        # Another tier's model changes: the frontier route is the same, and stays open.
        other = tmp_path / "other.env"
        other.write_text(good_env(upstreams, MEDIUM_MODEL="medium-model-2", **settings))
        assert controlled.set("xrouter_env_file", str(other))["error"] is None
        assert breaker_states(controlled)["frontier"]["state"] == "open"
        assert_routed(controlled.chat("medium"), upstreams, "medium", "medium-model-2")

        # The frontier route itself changes: a new route starts closed.
        changed = tmp_path / "changed.env"
        changed.write_text(good_env(upstreams, FRONTIER_MODEL="frontier-model-2", **settings))
        assert controlled.set("xrouter_env_file", str(changed))["error"] is None
        assert "frontier" not in breaker_states(controlled)
    finally:
        upstreams.frontier.override = None
        controlled.close()


def open_files(router: Router, name: str) -> int:
    """How many descriptors of the router process are open on files called `name`."""
    return sum(1 for f in psutil.Process(router.proc.pid).open_files() if Path(f.path).name == name)


def test_reloads_close_the_stores_they_replace(upstreams: Upstreams, tmp_path: Path):
    """Each reload makes new caches and counters on disk; the ones it replaces close their
    SQLite files (in every thread that opened them), so reloads do not pile them up."""
    controlled = Controlled(upstreams, tmp_path)
    try:
        envs = [tmp_path / "a.env", tmp_path / "b.env"]
        for index, env in enumerate(envs):
            env.write_text(
                good_env(
                    upstreams,
                    CACHE_BACKEND="disk",
                    CACHE_RESPONSES="true",
                    MEDIUM_MODEL=f"medium-model-{index}",
                )
            )
        counts = []
        for reload in range(6):
            assert controlled.set("xrouter_env_file", str(envs[reload % 2]))["error"] is None
            for _ in range(3):
                assert controlled.chat("stores").status_code == 200
            assert controlled.http.get("/usage").status_code == 200
            counts.append(open_files(controlled.router, "cache.db"))
        assert counts[0] > 0
        assert max(counts) <= counts[0], counts
    finally:
        controlled.close()


@pytest.mark.parametrize("backend", ["disk", "redis"])
def test_a_response_cache_write_started_just_before_a_reload_lands(
    upstreams: Upstreams, tmp_path: Path, backend: str
):
    """A reload just after an answer is recorded, before the response-cache write the
    record started has had a turn: the answer still lands in the store the write was
    started on, so the same question after the reload is a hit, not a second call."""
    server = RedisServer(tmp_path) if backend == "redis" else None
    controlled = Controlled(upstreams, tmp_path)
    try:
        store = {"CACHE_BACKEND": backend, "CACHE_RESPONSES": "true"}
        if server is not None:
            store["REDIS_URL"] = f"redis://127.0.0.1:{server.port}/0"
        envs = [tmp_path / "a.env", tmp_path / "b.env"]
        for index, env in enumerate(envs):
            env.write_text(good_env(upstreams, MEDIUM_MODEL=f"medium-model-{index}", **store))
        assert controlled.set("xrouter_env_file", str(envs[0]))["error"] is None
        question = ask(unique("cached across a reload"))
        pinned = {"x-xrouter-tier": "frontier"}
        first = controlled.http.post(
            CHAT, json=question, headers={**pinned, "x-control-reload-to": str(envs[1])}
        )
        assert_routed(first, upstreams, "frontier", "frontier-model")
        assert first.headers["x-xrouter-cache"] == "miss"
        # The reload has run.
        medium = controlled.chat("after the reload", **{"x-xrouter-tier": "medium"})
        assert_routed(medium, upstreams, "medium", "medium-model-1")
        asked = len(upstreams.frontier.requests)
        again = controlled.http.post(CHAT, json=question, headers=pinned)
        assert again.status_code == 200, again.text
        assert again.headers["x-xrouter-cache"] == "hit"
        assert again.json() == first.json()
        assert len(upstreams.frontier.requests) == asked
    finally:
        controlled.close()
        if server is not None:
            server.kill()


def upstream_connections(router: Router, port: int) -> int:
    return sum(
        1
        for c in psutil.Process(router.proc.pid).net_connections("tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


def test_an_unloaded_addon_closes_its_upstream_connections(
    controlled: Controlled, upstreams: Upstreams
):
    """mitmdump loads a new instance when the addon's script changes: the old instance's
    httpx client (its keep-alive connection to the embeddings route, here the cheap
    fake) is closed, not left open."""
    controlled.env_file.write_text(
        good_env(upstreams, EMBEDDINGS_BASE_URL=upstreams.cheap.url + "/v1")
    )
    assert controlled.set("xrouter_env_file", str(controlled.env_file))["error"] is None
    port = upstreams.cheap.port

    def embed() -> None:
        reply = controlled.http.post("/v1/embeddings", json={"model": "e", "input": "x"})
        assert reply.status_code == 200, reply.text

    embed()
    assert upstream_connections(controlled.router, port) == 1
    control = controlled.tmp / "control.py"
    for index in range(3):
        copy = controlled.tmp / f"xrouter_entry_{index}.py"
        copy.write_text(ENTRY)
        assert controlled.set("scripts", str(copy), str(control))["error"] is None
        embed()
    deadline = time.monotonic() + 10
    while upstream_connections(controlled.router, port) > 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert upstream_connections(controlled.router, port) == 1


def test_reloads_close_the_redis_clients_they_replace(
    upstreams: Upstreams, tmp_path: Path, redis_server: RedisServer
):
    """Each reload builds new counters, caches, limits and budgets, each with its Redis
    client; the ones it replaces close theirs, so the Redis server's connections do not
    grow with reloads. Every store is used between reloads: the usage counters and the
    response cache, and a client key's requests per minute and budget."""
    from test_client_keys import create

    keys_file = tmp_path / "keys.json"
    client_key = create(keys_file, "metered", "--rpm", "1000", "--daily-usd", "100")
    controlled = Controlled(upstreams, tmp_path)
    try:
        envs = [tmp_path / "a.env", tmp_path / "b.env"]
        for index, env in enumerate(envs):
            env.write_text(
                good_env(
                    upstreams,
                    REDIS_URL=f"redis://127.0.0.1:{redis_server.port}/0",
                    ROUTER_KEYS_FILE=str(keys_file),
                    CACHE_RESPONSES="true",
                    USAGE_FLUSH_MS="10",
                    MEDIUM_MODEL=f"medium-model-{index}",
                )
            )

        def use_every_store() -> None:
            for text in ("same question", unique("another")):
                reply = controlled.http.post(
                    CHAT, json=ask(text), headers={"authorization": f"Bearer {client_key}"}
                )
                assert reply.status_code == 200, reply.text
            assert controlled.http.get("/usage").status_code == 200
            time.sleep(0.2)  # a flush or two

        assert controlled.set("xrouter_env_file", str(envs[0]))["error"] is None
        use_every_store()
        one_configuration = router_connections(redis_server.port)
        assert one_configuration >= 5  # counters, two caches, limits, budgets, the feed
        for reload in range(1, 9):
            assert controlled.set("xrouter_env_file", str(envs[reload % 2]))["error"] is None
            use_every_store()
        # A replaced client is closed once its last commands are done (CLOSE_GRACE_S).
        deadline = time.monotonic() + CLOSE_GRACE_S + 10
        while time.monotonic() < deadline:
            now = router_connections(redis_server.port)
            if now <= one_configuration:
                break
            time.sleep(0.5)
        assert now <= one_configuration, (now, one_configuration)
        use_every_store()  # the configuration in use still has its clients
        controlled.router.stop()  # with closes still scheduled: none complains
        logs = controlled.router.log_path.read_text()
        for complaint in ("Traceback", "Task was destroyed", "unavailable", "Unclosed"):
            assert complaint not in logs, logs
        logs = controlled.router.logs()
        assert "Traceback" not in logs and "unavailable" not in logs, logs
    finally:
        controlled.close()


def test_a_reload_keeps_the_client_keys_counts_of_this_minute(upstreams: Upstreams, tmp_path: Path):
    """Without Redis each process counts a key's requests and tokens per minute itself:
    a reload goes on counting (it is not a new minute), so reloading the settings does
    not let a key past its limits."""
    from helpers import in_one_minute
    from test_budgets import ask as ask_18_tokens
    from test_client_keys import create

    # The counts are of one minute: a second pair of keys in case the first minute ends.
    keys_file = tmp_path / "keys.json"
    pairs = [
        (
            create(keys_file, f"by-requests-{attempt}", "--rpm", "2"),
            create(keys_file, f"by-tokens-{attempt}", "--tpm", str(2 * 18)),
        )
        for attempt in range(2)
    ]
    controlled = Controlled(upstreams, tmp_path)
    try:
        envs = [tmp_path / "a.env", tmp_path / "b.env"]
        for index, env in enumerate(envs):
            env.write_text(
                good_env(upstreams, ROUTER_KEYS_FILE=str(keys_file), MEDIUM_MODEL=f"m-{index}")
            )
        assert controlled.set("xrouter_env_file", str(envs[0]))["error"] is None

        def chat(key: str) -> httpx.Response:
            return controlled.http.post(
                CHAT,
                json=ask_18_tokens("limited"),
                headers={"authorization": f"Bearer {key}"},
            )

        def up_to_the_limits_then_reloads(attempt: int) -> tuple[list, list]:
            """Two requests of each key, then per reload one more of each."""
            by_requests, by_tokens = pairs[attempt]
            first = [chat(key).status_code for key in (by_requests, by_tokens) for _ in range(2)]
            after_reloads = []
            for reload in (1, 2):
                assert controlled.set("xrouter_env_file", str(envs[reload % 2]))["error"] is None
                after_reloads.append((chat(by_requests), chat(by_tokens)))
            return first, after_reloads

        _, (first, after_reloads) = in_one_minute(up_to_the_limits_then_reloads, needed=15)
        assert first == [200, 200, 200, 200]
        for over_rpm, over_tpm in after_reloads:
            assert over_rpm.status_code == 429, over_rpm.text
            assert "2 requests per minute" in over_rpm.json()["error"]["message"]
            assert over_tpm.status_code == 429, over_tpm.text
            assert "36 tokens per minute" in over_tpm.json()["error"]["message"]
    finally:
        controlled.close()


def test_a_reload_keeps_the_samples_of_the_routes_it_leaves_as_they_were(
    upstreams: Upstreams, tmp_path: Path
):
    """cheap = [a, b] by latency: the samples that rank them survive a reload that
    changes another tier, and the measured order with them; a reload that changes b's
    model starts b's samples (a new route) from none, and keeps a's."""
    from fakes import FakeOpenAIProvider
    from helpers import measured_env

    pair = {"a": FakeOpenAIProvider("a"), "b": FakeOpenAIProvider("b")}
    controlled = Controlled(upstreams, tmp_path)
    try:
        base = {**measured_env(upstreams, pair, "latency"), "ROUTER_API_KEY": ROUTER_KEY}
        first, other_tier = tmp_path / "first.env", tmp_path / "other.env"
        first.write_text(env_text(base))
        other_tier.write_text(env_text({**base, "MEDIUM_MODEL": "medium-model-2"}))
        new_b = json.loads(base["UPSTREAMS_JSON"])
        new_b["providers"]["b"]["models"] = ["b-model-2"]
        changed_b = tmp_path / "changed-b.env"
        changed_b.write_text(env_text({**base, "UPSTREAMS_JSON": json.dumps(new_b)}))

        def stats() -> dict:
            return controlled.http.get("/health").json()["route_stats"]

        assert controlled.set("xrouter_env_file", str(first))["error"] is None
        for n in range(40):
            reply = controlled.chat(f"measure {n}", **{"x-xrouter-tier": "cheap"})
            assert reply.status_code == 200, reply.text
            if not stats()["measuring"]:
                break

        def settled() -> dict | None:
            # A request's sample is recorded as its answer ends, and ranked at the next
            # refresh (every 100 ms): compare two reads 300 ms apart, so `before` holds
            # every sample and the ranking made from them.
            first = stats()
            time.sleep(0.3)
            return first if stats() == first else None

        before = wait_for(settled)
        measured = [before["routes"][key]["samples"] for key in ("cheap#1", "cheap#2")]
        assert min(measured) >= 2, before
        assert not before["measuring"], before

        assert controlled.set("xrouter_env_file", str(other_tier))["error"] is None
        after = stats()
        for key in ("cheap#1", "cheap#2"):
            assert after["routes"][key] == before["routes"][key], (before, after)
        assert after["order"] == before["order"] and not after["measuring"], after

        assert controlled.set("xrouter_env_file", str(changed_b))["error"] is None
        changed = stats()
        assert changed["routes"]["cheap#1"] == before["routes"]["cheap#1"], changed
        assert changed["routes"]["cheap#2"]["samples"] == 0, changed
        assert changed["measuring"] == {"cheap": ["cheap#2"]}, changed
    finally:
        controlled.close()
        for server in pair.values():
            server.close()
