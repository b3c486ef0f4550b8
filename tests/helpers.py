"""Helpers several test files share: polling, a real redis-server, headless Chromium,
the measured-route fixtures of the route-stats tests, and the control addon that runs
mitmproxy's `set` command in a running router (reloads and addon unloads)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cdp import HEADLESS_FLAGS
from conftest import ROOT, Router, free_port
from fakes import FakeOpenAIProvider

from xrouter_core.config import Route

T = TypeVar("T")


def wait_for(check, timeout: float = 15.0, interval: float = 0.1):
    """Poll until check() returns something truthy (flushes are periodic); return it."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met in {timeout}s (last: {last!r})")


# ---- the calendar minute of the per-minute limits ----------------------------------


def minute_left() -> float:
    return 60 - time.time() % 60


def wait_for_a_fresh_minute(needed: float) -> None:
    """The limits count per calendar minute: start where `needed` seconds remain in it."""
    if minute_left() < needed:
        time.sleep(minute_left() + 0.05)


def in_one_minute(body: Callable[[int], T], needed: float) -> tuple[int, T]:
    """Run body(attempt) inside one calendar minute, as the per-minute limits count.

    It starts where `needed` seconds remain (what the body takes, with margin); if its
    minute ended while it ran all the same, body(1) runs once more, from the start of a
    new minute. Returns the attempt that held in one minute and what it returned. Each
    attempt must use keys of its own, so the first one's counts leave the second's alone;
    the body returns what it saw and the caller asserts on that attempt's answers only.
    A short wait and a rare redo cost less than waiting out `needed` for a long body."""
    for attempt in range(2):
        wait_for_a_fresh_minute(needed)
        minute = int(time.time() // 60)
        result = body(attempt)
        if int(time.time() // 60) == minute:
            return attempt, result
    raise AssertionError("both attempts crossed a minute boundary")


# ---- redis-server ------------------------------------------------------------------


def redis_server_args(port: int, directory: Path) -> list[str]:
    """A throw-away redis-server on loopback: this port, nothing saved, files in `directory`."""
    return [
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
    ]


class RedisServer:
    def __init__(self, directory: Path, port: int | None = None):
        self.port = port or free_port()
        self.directory = directory
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "/usr/bin/redis-server",
                *redis_server_args(self.port, self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: self.ping(), timeout=10)

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.5).ping())
        except redis.exceptions.RedisError:
            return False

    def stop_saving(self) -> None:
        """SHUTDOWN SAVE: the data survives (to dump.rdb) although --save is off."""
        import redis

        with contextlib.suppress(redis.exceptions.ConnectionError):
            redis.Redis(port=self.port).shutdown(save=True)
        self.proc.wait(10)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def router_connections(redis_port: int) -> int:
    """The connections redis-server has open, but the one asking (CLIENT LIST)."""
    import redis

    client = redis.Redis(port=redis_port, socket_timeout=2)
    try:
        return len(client.client_list()) - 1
    finally:
        client.close()


# ---- headless Chromium --------------------------------------------------------------


def chromium(
    url: str, tmp: Path, *extra: str, budget_ms: int = 3000
) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium") or "/usr/bin/chromium"
    profile = tmp / f"chromium-profile-{time.time_ns()}"
    return subprocess.run(
        [
            binary,
            *HEADLESS_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            *extra,
            url,
        ],
        capture_output=True,
        timeout=90,
    )


# ---- measured routes (route_stats) ----------------------------------------------------


def slowed(server: FakeOpenAIProvider, seconds: float):
    """The fake's own answer, its headers `seconds` late (a slower time to first byte)."""

    def answer(request):
        time.sleep(seconds)
        server.override = None
        try:
            return server.route(request)
        finally:
            server.override = answer

    return answer


def measured_env(upstreams, servers: dict, strategy: str) -> dict[str, str]:
    env = {k: v for k, v in upstreams.env().items() if not k.startswith("CHEAP_")}
    env["UPSTREAMS_JSON"] = json.dumps(
        {
            "providers": {
                name: {
                    "base_url": server.url + "/v1",
                    "tiers": ["cheap"],
                    "models": [f"{name}-model"],
                }
                for name, server in servers.items()
            },
            "strategies": {"cheap": strategy},
        }
    )
    env.update(
        ROUTE_STATS_WINDOW="4",
        ROUTE_STATS_MIN_SAMPLES="2",
        ROUTE_STATS_SYNC_MS="100",
    )
    return env


def stats(router: Router) -> dict:
    """The router's measured routes, as /health shows them."""
    return router.client().get("/health").json()["route_stats"]


def routes() -> tuple[Route, ...]:
    """Three cheap routes for RouteStats in process (nothing listens on their ports)."""
    return tuple(
        Route(
            tier="cheap",
            base_url=f"http://127.0.0.1:{9000 + n}/v1",
            model=f"m{n}",
            key=f"cheap#{n}",
        )
        for n in (1, 2, 3)
    )


class Clock:
    """A clock the test sets (`now`), for RouteStats' window in seconds."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---- a running router's options, changed from a test ---------------------------------

CONTROL = '''\
"""Test control: mitmproxy's `set` command for GET /control/set?option=..&value=..; a
reload to the env file a request names in `x-control-reload-to`, once its answer is ready;
and the scripts it names in `x-control-scripts`, as its answer is ready."""

import asyncio
import json

from mitmproxy import ctx, exceptions, http


class Control:
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # requestheaders runs before the router's request hook, which then skips the flow.
        if flow.request.path.split("?", 1)[0] != "/control/set":
            return
        option = flow.request.query["option"]
        try:
            ctx.master.commands.call_strings(
                "set", [option, *flow.request.query.get_all("value")]
            )
            error = None
        except exceptions.CommandError as exc:
            error = str(exc)
        doc = {"error": error, "value": getattr(ctx.options, option)}
        flow.response = http.Response.make(
            200, json.dumps(doc), {"content-type": "application/json"}
        )


    def response(self, flow: http.HTTPFlow) -> None:
        # Loaded after the router, whose response hook has just queued the flow's record
        # (call_soon): the reload is queued after it, so it runs once the record has
        # started its background writes (the response cache's) and before they run.
        env_file = flow.request.headers.get("x-control-reload-to")
        if env_file:
            asyncio.get_running_loop().call_soon(
                ctx.master.commands.call_strings, "set", ["xrouter_env_file", env_file]
            )
        # The scripts a request names in `x-control-scripts` (a JSON list), loaded once its
        # answer is a 200 (not a 402 the router pays), in the same loop pass as the
        # router's response hook: the instance they replace is unloaded before any task
        # that hook started has run.
        scripts = flow.request.headers.get("x-control-scripts")
        if scripts and flow.response is not None and flow.response.status_code == 200:
            ctx.master.commands.call_strings("set", ["scripts", *json.loads(scripts)])


addons = [Control()]
'''

# A copy of addons/xrouter.py's entry point at another path: setting `scripts` to it
# loads a new instance of the addon, as mitmdump does when the script file changes.
ENTRY = f"""\
import sys

sys.path.insert(0, {str(ROOT)!r})

from xrouter_core.proxy.addon import Xrouter  # noqa: E402

addons = [Xrouter()]
"""
