"""The real Codex CLI (npm `@openai/codex` 0.171.0) through a real router, over the
Responses API (`wire_api = "responses"`), to a fake OpenAI-chat provider.

The install lives outside the repository: `$XROUTER_CODEX_DIR`, else
`${XDG_CACHE_HOME:-~/.cache}/xrouter-ci/codex` (what `.ci/install-codex` fills). The test
skips only when that install is absent. Codex runs with a throw-away CODEX_HOME holding
its config.toml and an empty workspace; the fake provider asks it to run one `echo`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import Router, unique
from fakes import Reply, openai_chunk, openai_stream, usage_chunk

CODEX_VERSION = "0.171.0"
PROOF = "xrouter-codex-tool-ran"


def install_dir() -> Path:
    explicit = os.environ.get("XROUTER_CODEX_DIR")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "xrouter-ci" / "codex"


def codex_command() -> tuple[Path, Path]:
    """(node's bin folder, the codex launcher), or a skip naming what is missing."""
    base = install_dir() / "node_modules"
    nodes = sorted(base.glob("node-linux-*/bin/node"))
    launcher = base / ".bin" / "codex"
    missing = [what for what, ok in (("Node", nodes), ("codex", launcher.exists())) if not ok]
    if missing:
        pytest.skip(
            f"Codex CLI is not installed: no {' and no '.join(missing)} under {base} "
            "(.ci/install-codex installs both; or set XROUTER_CODEX_DIR)"
        )
    return nodes[0].parent, launcher


def run_codex(tmp_path: Path, router: Router, prompt: str) -> subprocess.CompletedProcess:
    node_bin, launcher = codex_command()
    home = tmp_path / "codex-home"
    home.mkdir()
    # web_search is a hosted tool no chat provider can run: the router refuses it (400),
    # so Codex is told not to offer it.
    (home / "config.toml").write_text(
        f"""model = "xrouter/auto"
model_provider = "xrouter"
web_search = "disabled"

[model_providers.xrouter]
name = "Xrouter"
base_url = "{router.url}/v1"
wire_api = "responses"
env_key = "XROUTER_TEST_KEY"
"""
    )
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    env = {
        "PATH": f"{node_bin}:{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "CODEX_HOME": str(home),
        "XROUTER_TEST_KEY": "router-test-key",
    }
    return subprocess.run(
        [
            str(launcher),
            "exec",
            "--skip-git-repo-check",
            # The fake's one command is an echo in a throw-away folder; the sandbox needs
            # user namespaces that containers often lack.
            "--dangerously-bypass-approvals-and-sandbox",
            prompt,
        ],
        cwd=workspace,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )


def exec_call_stream(model: str) -> list[str]:
    """An OpenAI chat stream calling Codex's exec_command tool."""
    arguments = json.dumps({"cmd": f"echo {PROOF}"})
    start = {
        "index": 0,
        "id": "call_codex1",
        "type": "function",
        "function": {"name": "exec_command", "arguments": ""},
    }
    return [
        openai_chunk({"role": "assistant", "content": None, "tool_calls": [start]}, model),
        openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]}, model),
        openai_chunk({}, model, finish_reason="tool_calls"),
        usage_chunk(model, 11, 7),
        "data: [DONE]\n\n",
    ]


def test_codex_exec_runs_a_tool_through_the_router(start_router, upstreams, tmp_path):
    def answer(request) -> Reply:
        body = request.json
        last = body["messages"][-1]
        if last["role"] == "tool":
            return Reply(chunks=openai_stream([f"Codex saw: {last['content'].strip()[-60:]}"]))
        return Reply(chunks=exec_call_stream(body["model"]))

    upstreams.cheap.override = answer
    upstreams.classifier.digit = "0"
    router = start_router()
    ask = unique("Run the proof command")
    done = run_codex(tmp_path, router, ask)
    assert done.returncode == 0, done.stderr[-3000:]
    # What the fake received: Codex's request as a chat request, the tool offered as a
    # chat function, then the tool's output as the answer to its call id.
    first, second = (r.json for r in upstreams.cheap.requests[:2])
    assert first["stream"] is True
    assert first["messages"][0]["role"] == "system"
    assert ask in json.dumps(first["messages"])
    names = {tool["function"]["name"] for tool in first["tools"]}
    assert "exec_command" in names
    assert second["messages"][-2]["tool_calls"][0]["id"] == "call_codex1"
    result = second["messages"][-1]
    assert result["role"] == "tool" and result["tool_call_id"] == "call_codex1"
    assert PROOF in result["content"]
    # What Codex printed: the model's last message on stdout.
    assert "Codex saw:" in done.stdout and PROOF in done.stdout
    # The classifier saw the person's words once; the tool loop's follow-up stayed put.
    texts = upstreams.classifier.texts()
    assert len(texts) == 1 and ask in texts[0] and "environment_context" not in texts[0]
    router.settle()
    assert "source=tool_loop" in router.logs()
    # Codex's session-id header named the session of both requests (docs/sessions.md).
    labels = set(re.findall(r"session=(\S+)", router.logs()))
    assert len(labels) == 1 and re.fullmatch(r"codex:[0-9a-f-]{13}", labels.pop())


def test_codex_exec_on_an_anthropic_route(start_router, upstreams, tmp_path):
    """The same tool loop translated the other way: Codex's Responses requests reach an
    Anthropic route as Messages (its functions as Anthropic tools, the command's output
    as a tool_result), and the streamed tool_use comes back as a function call Codex runs."""
    from fakes import FakeAnthropicProvider, anthropic_stream
    from test_claude_code_real import tool_results, tool_use_stream

    fake = FakeAnthropicProvider("anthropic")

    def answer(request) -> Reply:
        body = request.json
        problem = fake.check(body, request.headers.get("anthropic-beta", ""))
        if problem:
            error = {"type": "invalid_request_error", "message": problem}
            return Reply(400, {"type": "error", "error": error})
        results = tool_results(body)
        if results:
            text = f"Codex saw: {json.dumps(results[0]['content'])[-60:]}"
            return Reply(chunks=anthropic_stream(text, body["model"]))
        return Reply(
            chunks=tool_use_stream(body["model"], "exec_command", {"cmd": f"echo {PROOF}"})
        )

    fake.override = answer
    try:
        router = start_router(
            {
                "CHEAP_BASE_URL": fake.url,
                "CHEAP_API_KEY": "sk-ant-api03-codex-0001",
                "CHEAP_MODEL": "claude-haiku-4-5",
                "FALLBACK_ENABLED": "false",
            }
        )
        upstreams.classifier.digit = "0"
        done = run_codex(tmp_path, router, unique("Run the proof command"))
        assert done.returncode == 0, done.stderr[-3000:]
        first, second = (r.json for r in fake.requests[:2])
        assert first["stream"] is True and first["model"] == "claude-haiku-4-5"
        assert "exec_command" in {tool["name"] for tool in first["tools"]}
        result = tool_results(second)[0]
        assert result["tool_use_id"] == "toolu_01ReadTheNote000000000"
        assert PROOF in json.dumps(result["content"])
        assert "Codex saw:" in done.stdout and PROOF in done.stdout
        router.settle()
        assert "route=cheap" in router.logs() and "source=tool_loop" in router.logs()
    finally:
        fake.close()
