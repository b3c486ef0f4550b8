"""What the benchmark measures: the provider directly, and each proxy in front of it.

A target starts its process (if any) in front of the fake provider and says where to
send requests. Adding one is a subclass and an entry in TARGETS; `--targets` picks them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
# The tiers the passthrough phase names: an OpenAI-wire route and an Anthropic one.
OPENAI_TIER_MODEL = "xrouter/medium"
ANTHROPIC_TIER_MODEL = "xrouter/frontier"
LITELLM_VENV = ROOT / "bench" / ".litellm-venv"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Unavailable(Exception):
    """The target cannot run here; the message says why (shown in the report)."""


class Target:
    name = ""
    description = ""
    # Does a process of ours sit in the path (so RSS means something)?
    proxy = True
    # Run the 20,000-request memory phase on it (LiteLLM is too slow for that here).
    memory = True
    # The `model` clients send: the router's logical model, or the name a gateway knows.
    request_model = "xrouter/auto"
    # The bearer token clients send (only LiteLLM checks one: it refuses to start without).
    client_key = "client-key"
    # Does it take Anthropic's POST /v1/messages (the passthrough phase)?
    messages = True

    def __init__(self, provider_url: str, workdir: Path):
        self.provider_url = provider_url
        self.workdir = workdir.resolve() / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log_path = self.workdir / "process.log"

    # ---- to override ----------------------------------------------------------

    def command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def ready_path(self) -> str:
        return "/health"

    # ---- common ----------------------------------------------------------------

    @property
    def host_port(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def base_env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.workdir),
            "PYTHONUNBUFFERED": "1",
            "LANG": "C.UTF-8",
        }

    def start(self, timeout: float = 60.0) -> None:
        self.port = free_port()
        command, env = self.command()
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process' life
        self.proc = subprocess.Popen(
            command,
            cwd=self.workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}{self.ready_path()}"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.logs()[-3000:]}")
            try:
                if httpx.get(url, timeout=1, trust_env=False).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not start in {timeout:.0f} s:\n{self.logs()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Direct(Target):
    name = "direct"
    description = "the fake provider itself (the reference)"
    proxy = False

    def start(self, timeout: float = 60.0) -> None:
        self.port = int(self.provider_url.rsplit(":", 1)[1])

    def stop(self) -> None:
        pass

    @property
    def pid(self) -> int | None:
        return None


class PlainMitmdump(Target):
    name = "mitmdump"
    description = "mitmdump in reverse mode with a no-op rewrite addon, flow_detail=0"

    def ready_path(self) -> str:
        return "/v1/models"

    def command(self) -> tuple[list[str], dict[str, str]]:
        return [
            str(BIN / "mitmdump"),
            "--mode",
            f"reverse:{self.provider_url}@127.0.0.1:{self.port}",
            "-s",
            str(ROOT / "bench" / "noop_addon.py"),
            "--set",
            f"confdir={self.workdir / 'conf'}",
            "--set",
            "flow_detail=0",
            "--set",
            "connection_strategy=lazy",
        ], self.base_env()


def router_env(target: Target) -> dict[str, str]:
    """Every tier and the classifier on the fake provider; the router does its real work.

    Frontier is an Anthropic route (the fake answers Messages there), so an Anthropic
    client naming it is passed through in its own format; cheap and medium speak
    OpenAI's wire. The latency phase's prompt is decided cheap or medium, never frontier."""
    provider = target.provider_url
    return {
        **target.base_env(),
        "HOST": "127.0.0.1",
        "PORT": str(target.port),
        "XROUTER_ENV_FILE": str(target.workdir / "none.env"),
        "UPSTREAMS_FILE": str(target.workdir / "none.json"),
        "CLASSIFIER_BASE_URL": provider + "/v1",
        "CLASSIFIER_MODEL": "bench-classifier",
        "CLASSIFIER_WARMUP": "false",
        "CHEAP_BASE_URL": provider + "/v1",
        "CHEAP_MODEL": "bench-cheap",
        "CHEAP_API_KEY": "sk-bench-cheap",
        "MEDIUM_BASE_URL": provider + "/v1",
        "MEDIUM_MODEL": "bench-medium",
        "MEDIUM_API_KEY": "sk-bench-medium",
        "FRONTIER_BASE_URL": provider + "/v1",
        "FRONTIER_PROVIDER": "anthropic",
        "FRONTIER_MODEL": "bench-frontier",
        "FRONTIER_API_KEY": "sk-ant-bench-frontier",
    }


class Router(Target):
    name = "router"
    description = "mitmdump -s addons/xrouter.py (decision cache, rewrite, headers, usage)"
    # The checkout whose router runs (another one for before/after figures: at_checkout).
    root = ROOT

    def command(self) -> tuple[list[str], dict[str, str]]:
        return [
            str(BIN / "mitmdump"),
            "-s",
            str(self.root / "addons" / "xrouter.py"),
            "--set",
            f"confdir={self.workdir / 'conf'}",
        ], router_env(self)


class LeanRouter(Target):
    name = "xrouter"
    description = "the lean launcher, python -m xrouter_core"
    root = ROOT

    def command(self) -> tuple[list[str], dict[str, str]]:
        if not (self.root / "xrouter_core" / "__main__.py").exists():
            raise Unavailable("xrouter_core/__main__.py is not on this branch yet (issue 8)")
        env = router_env(self)
        env["PYTHONPATH"] = str(self.root)
        return [
            sys.executable,
            "-m",
            "xrouter_core",
            "--set",
            f"confdir={self.workdir / 'conf'}",
        ], env


class WatchedLeanRouter(LeanRouter):
    """The lean launcher with 5 subscribers on GET /events (bench/subscribers.py), to set
    beside `xrouter` (nobody subscribed) in the same rounds."""

    name = "xrouter-watched"
    description = "xrouter with 5 subscribers reading GET /events"
    subscribers = 5

    def start(self, timeout: float = 60.0) -> None:
        super().start(timeout)
        self.watchers = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "subscribers.py"),
                "127.0.0.1",
                str(self.port),
                str(self.subscribers),
            ],
            stdout=subprocess.PIPE,
        )
        assert self.watchers.stdout is not None
        if self.watchers.stdout.readline().strip() != b"ready":
            self.stop()
            raise RuntimeError(f"{self.name}: the subscribers did not connect")

    def stop(self) -> None:
        watchers = getattr(self, "watchers", None)
        if watchers is not None and watchers.poll() is None:
            watchers.kill()
            watchers.wait(5)
        super().stop()


class PluginLeanRouter(LeanRouter):
    """The lean launcher with the two built-in plugins loaded, to set beside `xrouter`
    (no plugin) in the same rounds: what plugins cost a request that asks nothing of
    them (pareto reads one header, response-healing looks for response_format)."""

    name = "xrouter-plugins"
    description = "xrouter with XROUTER_PLUGINS=response-healing,pareto"

    def command(self) -> tuple[list[str], dict[str, str]]:
        command, env = super().command()
        return command, {**env, "XROUTER_PLUGINS": "response-healing,pareto"}


def at_checkout(form: type[Router] | type[LeanRouter], checkout: Path) -> type[Target]:
    """A form of the router run from another checkout, for before/after figures in one run."""
    return type(
        f"{form.__name__}At",
        (form,),
        {
            "name": f"{form.name}@{checkout.name}",
            "description": f"{form.description}, from {checkout}",
            "root": checkout,
        },
    )


class LiteLLM(Target):
    name = "litellm"
    description = "LiteLLM's proxy (pip install 'litellm[proxy]' into bench/.litellm-venv)"
    request_model = "bench-model"
    client_key = "sk-bench-litellm-master-key-0001"
    memory = False
    messages = False

    def ready_path(self) -> str:
        return "/health/liveliness"

    def command(self) -> tuple[list[str], dict[str, str]]:
        ensure_litellm()
        config = self.workdir / "litellm.yaml"
        config.write_text(
            "model_list:\n"
            "  - model_name: bench-model\n"
            "    litellm_params:\n"
            "      model: openai/bench-frontier\n"
            f"      api_base: {self.provider_url}/v1\n"
            "      api_key: sk-bench-frontier\n"
            "litellm_settings:\n"
            "  drop_params: true\n"
            "  telemetry: false\n"
        )
        env = {
            **self.base_env(),
            "LITELLM_TELEMETRY": "False",
            "LITELLM_LOG": "ERROR",
            "LITELLM_MASTER_KEY": self.client_key,
        }
        return [
            str(LITELLM_VENV / "bin" / "litellm"),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--num_workers",
            "1",
        ], env

    def start(self, timeout: float = 180.0) -> None:
        super().start(timeout)


def ensure_litellm() -> None:
    """Create the separate venv and install LiteLLM's proxy, once, only when asked."""
    executable = LITELLM_VENV / "bin" / "litellm"
    if executable.exists():
        return
    print(f"installing litellm[proxy] into {LITELLM_VENV} (first use only) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    subprocess.run(
        [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True
    )
    if not executable.exists():
        raise Unavailable("litellm installed but its `litellm` command is missing")


TARGETS: dict[str, type[Target]] = {
    cls.name: cls
    for cls in (
        Direct,
        PlainMitmdump,
        Router,
        LeanRouter,
        WatchedLeanRouter,
        PluginLeanRouter,
        LiteLLM,
    )
}
DEFAULT_TARGETS = ("direct", "mitmdump", "router", "xrouter")
