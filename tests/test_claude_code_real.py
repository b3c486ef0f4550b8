"""The real Claude Code (npm `@anthropic-ai/claude-code` 2.1.332) through a real router.

The install lives outside the repository: `$XROUTER_CLAUDE_CODE_DIR`, else
`${XDG_CACHE_HOME:-~/.cache}/xrouter-ci/claude-code` (what `.ci/install-claude-code`
fills). The test skips only when that install is absent. Claude Code runs one-shot
(`claude -p … --output-format json`) in a throw-away HOME, with ANTHROPIC_BASE_URL at
the router and its telemetry, updater and other traffic off, on its default model.

Every route is a fake Anthropic provider on 127.0.0.1 that records what it receives and
answers in the Messages streaming format: the same-format pass-through must hand it
Claude Code's body (cache_control marks, the system message inside the conversation,
thinking settings) and its anthropic-beta header as Claude Code sent them.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import Router
from fakes import FakeAnthropicProvider, Recorded, Reply, anthropic_stream, sse

CLAUDE_CODE_VERSION = "2.1.332"
ROUTER_KEY = "router-key-claude-code"
ROUTE_KEY = "sk-ant-route-key-0007"
NOTE = "The secret word is marmalade."


def install_dir() -> Path:
    explicit = os.environ.get("XROUTER_CLAUDE_CODE_DIR")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "xrouter-ci" / "claude-code"


def claude_binary() -> Path:
    """The `claude` the package's bin points at (a native binary its postinstall puts in
    place), or a skip naming what is missing."""
    package = install_dir() / "node_modules" / "@anthropic-ai" / "claude-code"
    binary = package / "bin" / "claude.exe"
    if not binary.exists():
        pytest.skip(
            f"Claude Code is not installed: no {binary} "
            "(.ci/install-claude-code installs it; or set XROUTER_CLAUDE_CODE_DIR)"
        )
    return binary


def tool_use_stream(model: str, name: str, arguments: dict) -> list[str]:
    """One tool_use block, streamed as the Messages docs show."""
    start = anthropic_stream("", model)[:2]  # message_start, ping
    block = {"type": "tool_use", "id": "toolu_01ReadTheNote000000000", "name": name, "input": {}}
    return [
        *start,
        sse(
            {"type": "content_block_start", "index": 0, "content_block": block},
            "content_block_start",
        ),
        sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": json.dumps(arguments)},
            },
            "content_block_delta",
        ),
        sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 9},
            },
            "message_delta",
        ),
        sse({"type": "message_stop"}, "message_stop"),
    ]


def tool_results(body: dict) -> list[dict]:
    last = body["messages"][-1]
    blocks = last["content"] if isinstance(last["content"], list) else []
    return [b for b in blocks if b.get("type") == "tool_result"]


class ClaudeCodeProvider(FakeAnthropicProvider):
    """Checks each request as the API does; asks for Read when the prompt says "note",
    then answers with what the tool result held; else a plain text answer."""

    def __init__(self, note_path: Path):
        super().__init__("anthropic")
        self.note_path = note_path

    def answer(self, request: Recorded) -> Reply:
        if request.path != "/v1/messages":
            return super().answer(request)
        body = request.json or {}
        problem = self.check(body, request.headers.get("anthropic-beta", ""))
        if problem:
            return Reply(
                400,
                {"type": "error", "error": {"type": "invalid_request_error", "message": problem}},
            )
        results = tool_results(body)
        prompt = json.dumps(body["messages"][0])
        if results:
            text = "The note says: " + json.dumps(results[0].get("content"))
        elif "note.txt" in prompt and body.get("tools"):
            return Reply(
                chunks=tool_use_stream(body["model"], "Read", {"file_path": str(self.note_path)})
            )
        else:
            text = "Hello from the fake Anthropic route!"
        return Reply(chunks=anthropic_stream(text, body["model"], cache=self.cache))


@pytest.fixture
def setup(tmp_path: Path):
    binary = claude_binary()
    home = tmp_path / "home"
    workspace = home / "work"
    workspace.mkdir(parents=True)
    note = workspace / "note.txt"
    note.write_text(NOTE + "\n")
    fake = ClaudeCodeProvider(note)
    env = {"CLASSIFIER_ENABLED": "false", "ROUTER_API_KEY": ROUTER_KEY}
    for tier in ("CHEAP", "MEDIUM", "FRONTIER"):
        env[f"{tier}_BASE_URL"] = fake.url
        env[f"{tier}_API_KEY"] = ROUTE_KEY
        env[f"{tier}_MODEL"] = f"claude-{tier.lower()}-route"
    router_dir = tmp_path / "router"
    router_dir.mkdir()
    router = Router(env, router_dir)
    yield binary, home, workspace, fake, router
    router.stop()
    fake.close()


def run_claude(binary: Path, home: Path, workspace: Path, router: Router, prompt: str) -> dict:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": router.url,
        "ANTHROPIC_API_KEY": ROUTER_KEY,
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    done = subprocess.run(
        [str(binary), "-p", prompt, "--output-format", "json"],
        env=env,
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{router.logs()}"
    return json.loads(done.stdout)


def test_claude_code_plain_turn_passes_through(setup):
    binary, home, workspace, fake, router = setup
    result = run_claude(binary, home, workspace, router, "Say hello")
    assert result["result"] == "Hello from the fake Anthropic route!", result
    assert not result["is_error"]
    sent = [r for r in fake.requests if r.path == "/v1/messages"]
    assert sent, router.logs()
    first = sent[0]
    body = first.json
    # The same-format route got Claude Code's own request.
    assert first.headers["x-api-key"] == ROUTE_KEY
    assert "claude-code-20250219" in first.headers["anthropic-beta"]
    assert first.headers["anthropic-version"] == "2023-06-01"
    assert body["model"] == "claude-frontier-route"
    marks = json.dumps(body["system"]) + json.dumps(body["messages"])
    assert '"cache_control": {"type": "ephemeral"' in marks
    assert "thinking" in body and "metadata" in body
    roles = [m["role"] for m in body["messages"]]
    if "per-turn-control" in first.headers["anthropic-beta"]:
        assert "system" in roles  # Claude Code's system message inside the conversation
    # Usage was read from the untouched stream.
    assert "status=200" in router.logs() and "tokens=11+7" in router.logs()
    # Claude Code's session id (its header, the same as metadata.user_id's session_id)
    # named the session (docs/sessions.md).
    session_id = json.loads(body["metadata"]["user_id"])["session_id"]
    assert first.headers.get("x-claude-code-session-id", session_id) == session_id
    assert f"session=claude-code:{session_id[:13]}" in router.logs()


def test_a_cached_claude_code_session_is_counted_and_priced_as_cached(setup):
    """Claude Code's cache_control marks reach the provider, whose prompt-cache reads and
    writes come back in the stream: Claude Code sees them as sent, and /usage counts them
    per tier and model beside the uncached input."""
    binary, home, workspace, fake, router = setup
    fake.cache = (1500, 250)  # tokens read from and written to the provider's cache
    results = [run_claude(binary, home, workspace, router, p) for p in ("Say hello", "Hi again")]
    calls = [r for r in fake.requests if r.path == "/v1/messages"]
    for result in results:
        assert result["usage"]["cache_read_input_tokens"] >= 1500, result
        assert result["usage"]["cache_creation_input_tokens"] >= 250, result
    router.settle()
    with router.client(headers={"authorization": f"Bearer {ROUTER_KEY}"}) as client:
        doc = client.get("/usage").json()
    frontier = doc["tiers"]["frontier"]
    assert frontier["requests"] == len(calls)
    assert (frontier["cacheReadTokens"], frontier["cacheWriteTokens"]) == (
        1500 * len(calls),
        250 * len(calls),
    )
    (row,) = [m for m in doc["models"] if m["model"] == "claude-frontier-route"]
    assert row["cacheReadTokens"] == 1500 * len(calls)


def test_claude_code_tool_turn(setup):
    binary, home, workspace, fake, router = setup
    result = run_claude(binary, home, workspace, router, "Read the note in note.txt")
    assert NOTE in result["result"], result
    sent = [r.json for r in fake.requests if r.path == "/v1/messages"]
    follow_up = next(body for body in sent if tool_results(body))
    result_block = tool_results(follow_up)[0]
    assert result_block["tool_use_id"] == "toolu_01ReadTheNote000000000"
    assert NOTE in json.dumps(result_block["content"])
    assert any(m["role"] == "assistant" for m in follow_up["messages"])


def test_claude_code_on_an_openai_route_is_translated(tmp_path: Path):
    """The same client on an OpenAI-wire route: its system message inside the
    conversation and the fields OpenAI has no word for no longer cause a 400."""
    from fakes import FakeOpenAIProvider

    binary = claude_binary()
    home = tmp_path / "home"
    workspace = home / "work"
    workspace.mkdir(parents=True)
    fake = FakeOpenAIProvider("openai-route")
    router_dir = tmp_path / "router"
    router_dir.mkdir()
    env = {"CLASSIFIER_ENABLED": "false", "ROUTER_API_KEY": ROUTER_KEY}
    for tier in ("CHEAP", "MEDIUM", "FRONTIER"):
        env[f"{tier}_BASE_URL"] = fake.url + "/v1"
        env[f"{tier}_MODEL"] = "gpt-route"
    router = Router(env, router_dir)
    try:
        result = run_claude(binary, home, workspace, router, "Say hello")
        assert result["result"] == "Hello from openai-route!", result
        body = fake.requests[0].json
        roles = [m["role"] for m in body["messages"]]
        assert body["model"] == "gpt-route" and roles[0] == "system"
        if "per-turn-control" in fake.requests[0].headers.get("anthropic-beta", ""):
            assert "system" in roles[1:], roles  # kept in place, where Claude Code put it
        assert "thinking" not in body and "cache_control" not in json.dumps(body)
    finally:
        router.stop()
        fake.close()


def test_claude_code_through_the_router_as_https_proxy(tmp_path: Path):
    """HTTPS-proxy mode: Claude Code keeps its own base URL (api.anthropic.com) and its
    own key; HTTPS_PROXY and NODE_EXTRA_CA_CERTS put the router in its path. Its
    /v1/messages calls are routed to the fake on loopback with the route's key; the
    other calls it makes to api.anthropic.com pass the router unrouted and are stopped by
    tests/loopback_guard.py (listed below), so nothing leaves loopback."""
    from conftest import free_port

    binary = claude_binary()
    home = tmp_path / "home"
    workspace = home / "work"
    workspace.mkdir(parents=True)
    note = workspace / "note.txt"
    note.write_text(NOTE + "\n")
    fake = ClaudeCodeProvider(note)
    env = {"CLASSIFIER_ENABLED": "false"}
    for tier in ("CHEAP", "MEDIUM", "FRONTIER"):
        env[f"{tier}_BASE_URL"] = fake.url
        env[f"{tier}_API_KEY"] = ROUTE_KEY
        env[f"{tier}_MODEL"] = f"claude-{tier.lower()}-route"
    router_dir = tmp_path / "router"
    router_dir.mkdir()
    proxy_port = free_port()
    guard = Path(__file__).with_name("loopback_guard.py")
    router = Router(
        env,
        router_dir,
        args=["--mode", f"regular@127.0.0.1:{proxy_port}", "-s", str(guard)],
        wait=False,
    )
    client_key = "sk-ant-api03-the-users-own-key-0042"
    try:
        ca = router.wait_for_proxy(proxy_port)
        done = subprocess.run(
            [str(binary), "-p", "Read the note in note.txt", "--output-format", "json"],
            env={
                "PATH": os.environ.get("PATH", ""),
                "HOME": str(home),
                "ANTHROPIC_API_KEY": client_key,
                "HTTPS_PROXY": f"http://127.0.0.1:{proxy_port}",
                "NODE_EXTRA_CA_CERTS": str(ca),
                "DISABLE_TELEMETRY": "1",
                "DISABLE_AUTOUPDATER": "1",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            },
            cwd=workspace,
            capture_output=True,
            text=True,
            timeout=240,
            stdin=subprocess.DEVNULL,
        )
        logs = router.log_path.read_text(errors="replace")
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{logs}"
        result = json.loads(done.stdout)
        assert NOTE in result["result"], result
        sent = [r for r in fake.requests if r.path.startswith("/v1/messages")]
        assert len(sent) == 2, [r.path for r in fake.requests]
        for request in sent:
            # Claude Code's own request (cache_control marks, its betas), the route's key.
            assert request.headers["x-api-key"] == ROUTE_KEY
            assert "claude-code-20250219" in request.headers["anthropic-beta"]
            assert request.json["model"] == "claude-frontier-route"
            assert '"cache_control": {"type": "ephemeral"' in json.dumps(request.json)
        assert tool_results(sent[1].json)[0]["tool_use_id"] == "toolu_01ReadTheNote000000000"
        assert logs.count("routed decision=") == 2 and "status=200" in logs
        # What passed the router unrouted: only Claude Code's settings calls, never a
        # /v1 call; the user's key is in no log line.
        blocked = [line for line in logs.splitlines() if "loopback-guard: blocked" in line]
        assert all("https://api.anthropic.com/api/claude_code/" in line for line in blocked), (
            blocked
        )
        assert client_key not in logs and ROUTE_KEY not in logs
    finally:
        router.stop()
        fake.close()
