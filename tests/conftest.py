"""Shared fixtures: fake upstreams on loopback and a real router process in front of them."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# eth_account's py_ecc raises the recursion limit to 100,000 when first imported, which
# lets a deeply nested JSON body crash json's C decoder (tests/test_fuzz.py) instead of
# raising RecursionError. The router imports it through payments.wallet, which keeps the
# limit; the tests that import it directly get the same here, once, before any of them.
from xrouter_core.payments.wallet import import_eth_account  # noqa: E402

import_eth_account()

from fakes import FakeClassifier, FakeOpenAIProvider  # noqa: E402

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Router:
    """A real router process on 127.0.0.1: `mitmdump -s addons/xrouter.py` or `xrouter`."""

    def __init__(
        self,
        env: dict[str, str],
        tmp: Path,
        args: list[str] | None = None,
        launcher: str = "mitmdump",
        wait: bool = True,
    ):
        self.port = int(env.get("PORT") or free_port())
        self.tmp = tmp
        self.log_path = tmp / f"router-{self.port}.log"
        self.confdir = tmp / "mitmproxy-conf"
        self.confdir.mkdir(exist_ok=True)
        full_env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(tmp),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "XROUTER_ENV_FILE": str(tmp / "no.env"),
            "UPSTREAMS_FILE": str(tmp / "no-upstreams.json"),
            "CLASSIFIER_WARMUP": "false",
            "PYTHONUNBUFFERED": "1",
        }
        full_env.update(env)
        full_env["PORT"] = str(self.port)
        # None: left out of the environment (e.g. HOST and PORT read from .env only).
        for name in [name for name, value in env.items() if value is None]:
            full_env.pop(name, None)
        self.env = full_env
        self.launcher = launcher
        if launcher == "mitmdump":
            start = [str(BIN / "mitmdump"), "-s", str(ROOT / "addons" / "xrouter.py")]
        elif launcher == "xrouter":
            # `python -m xrouter_core` is what the `xrouter` console script runs.
            start = [sys.executable, "-m", "xrouter_core"]
            full_env["PYTHONPATH"] = str(ROOT)
        else:
            raise ValueError(f"unknown launcher {launcher!r}")
        command = [*start, "--set", f"confdir={self.confdir}", *(args or [])]
        self.log_file = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            command,
            cwd=tmp,
            env=full_env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"router exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(self.url + "/health", timeout=1, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"router did not start:\n{self.logs()}")

    def wait_for_proxy(self, port: int, timeout: float = 10.0) -> Path:
        """Regular (proxy) mode has no /health of its own: wait until mitmproxy wrote its
        CA and accepts connections on the proxy port; returns the CA file."""
        ca = self.confdir / "mitmproxy-ca-cert.pem"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ca.exists():
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    return ca
                except OSError:
                    pass
            time.sleep(0.1)
        return ca

    def logs(self) -> str:
        if self.proc.poll() is None:
            self.settle()
        if not self.log_file.closed:
            self.log_file.flush()
        return self.log_path.read_text(errors="replace")

    def settle(self) -> None:
        """A routed flow's log line is written just after its answer is sent: one round
        trip through the router's event loop makes sure every such line is written."""
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(self.url + "/health", timeout=2, trust_env=False)

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, trust_env=False, timeout=kwargs.pop("timeout", 20), **kwargs
        )

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log_file.close()
        return self.proc.returncode


class Upstreams:
    """A fake classifier and one fake OpenAI provider per tier."""

    def __init__(self) -> None:
        self.classifier = FakeClassifier("1")
        self.cheap = FakeOpenAIProvider("cheap")
        self.medium = FakeOpenAIProvider("medium")
        self.frontier = FakeOpenAIProvider("frontier")

    def env(self) -> dict[str, str]:
        return {
            "CLASSIFIER_BASE_URL": self.classifier.url + "/v1",
            "CLASSIFIER_MODEL": "tiny-classifier",
            "CHEAP_BASE_URL": self.cheap.url + "/v1",
            "CHEAP_MODEL": "cheap-model",
            "CHEAP_API_KEY": "sk-cheap-secret-0001",
            "MEDIUM_BASE_URL": self.medium.url + "/v1",
            "MEDIUM_MODEL": "medium-model",
            "MEDIUM_API_KEY": "sk-medium-secret-0002",
            "FRONTIER_BASE_URL": self.frontier.url + "/v1",
            "FRONTIER_MODEL": "frontier-model",
            "FRONTIER_API_KEY": "sk-frontier-secret-0003",
        }

    def reset(self) -> None:
        for server in (self.classifier, self.cheap, self.medium, self.frontier):
            server.requests.clear()
            server.client_closed.clear()
        self.classifier.digit = "1"
        self.classifier.by_text.clear()
        self.classifier.tail_seconds = self.classifier.delay_seconds = 0.0
        self.classifier.failure = None
        for provider in (self.cheap, self.medium, self.frontier):
            provider.override = None
            provider.cached_tokens = None

    def close(self) -> None:
        for server in (self.classifier, self.cheap, self.medium, self.frontier):
            server.close()


LAUNCHERS = ["mitmdump", "xrouter"]


@pytest.fixture(scope="session")
def upstreams_session() -> Iterator[Upstreams]:
    servers = Upstreams()
    yield servers
    servers.close()


@pytest.fixture
def upstreams(upstreams_session: Upstreams) -> Iterator[Upstreams]:
    upstreams_session.reset()
    yield upstreams_session
    upstreams_session.reset()


@pytest.fixture(scope="session", params=LAUNCHERS)
def router(request, upstreams_session: Upstreams, tmp_path_factory) -> Iterator[Router]:
    """One shared router over the session's fake upstreams (decision cache: use unique prompts)."""
    tmp = tmp_path_factory.mktemp(f"router-{request.param}")
    instance = Router(upstreams_session.env(), tmp, launcher=request.param)
    yield instance
    instance.stop()


@pytest.fixture(params=LAUNCHERS)
def launcher(request) -> str:
    """Each test that starts its own router runs once per form."""
    return request.param


@pytest.fixture
def start_router(upstreams_session: Upstreams, tmp_path: Path, launcher: str):
    """Start a router with extra settings; stopped at the end of the test."""
    started: list[Router] = []

    def start(
        extra_env: dict[str, str] | None = None,
        args: list[str] | None = None,
        base: bool = True,
        wait: bool = True,
    ) -> Router:
        env = upstreams_session.env() if base else {}
        env.update(extra_env or {})
        directory = tmp_path / f"r{len(started)}"
        directory.mkdir()
        instance = Router(env, directory, args=args, launcher=launcher, wait=wait)
        started.append(instance)
        return instance

    yield start
    for instance in started:
        instance.stop()


def reassemble(chunks) -> dict:
    """An OpenAI SDK chunk stream put back together: the tool calls by index, the text,
    the usage and the finish reason."""
    calls: dict[int, dict] = {}
    text, usage, finish = "", None, None
    for chunk in chunks:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                entry = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += delta.id or ""
                if delta.function:
                    entry["name"] += delta.function.name or ""
                    entry["arguments"] += delta.function.arguments or ""
    return {"calls": calls, "text": text, "usage": usage, "finish": finish}


def unique(text: str) -> str:
    """A prompt no earlier test used, so the decision cache does not answer it."""
    unique.counter += 1
    return f"{text} [{unique.counter}-{time.time_ns()}]"


unique.counter = 0


@pytest.fixture
def redis_server(tmp_path: Path):
    """A real redis-server on a free loopback port, killed after the test."""
    from helpers import RedisServer

    if not (shutil.which("redis-server") or Path("/usr/bin/redis-server").exists()):
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    server = RedisServer(tmp_path)
    yield server
    server.kill()
