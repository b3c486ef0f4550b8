"""The real Vercel AI SDK (npm `ai` 7.0.173 + `@ai-sdk/openai` 4.0.118) through a real
router: `generateText` and `streamText` with one tool, by `tests/ai_sdk_client.mjs` on Node.

`openai(model)`, the SDK's default, speaks the Responses API; `openai.chat(model)` speaks
chat completions; both are run. Behind the router: frontier speaks the Responses API
natively (`openai_responses`), cheap chat completions, medium Anthropic Messages, each a
fake on 127.0.0.1 that calls the tool and then answers with its result.

The install lives outside the repository: `$XROUTER_AI_SDK_DIR`, else
`${XDG_CACHE_HOME:-~/.cache}/xrouter-ci/ai-sdk` (what `.ci/install-ai-sdk` fills). The
test skips only when that install is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import Router, free_port, unique
from fakes import (
    COMPLETION_TOKENS,
    PROMPT_TOKENS,
    TOOL_ARGS,
    TOOL_NAME,
    FakeAnthropicProvider,
    anthropic_tool_loop,
    chat_tool_loop,
    responses_tool_loop,
    tool_loop_echo,
    tool_loop_said,
)

SCRIPT = Path(__file__).with_name("ai_sdk_client.mjs")
PACKAGES = {"ai": "7.0.173", "@ai-sdk/openai": "4.0.118"}
TOOL_RESULT = "xrouter-ai-sdk-tool-ran: 21 degrees celsius in Paris"


def install_dir() -> Path:
    explicit = os.environ.get("XROUTER_AI_SDK_DIR")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "xrouter-ci" / "ai-sdk"


def node_binary() -> Path:
    """The Node that .ci/install-ai-sdk put beside the SDK, or a skip naming what is missing."""
    base = install_dir() / "node_modules"
    nodes = sorted(base.glob("node-linux-*/bin/node"))
    missing = [
        name
        for name in ("ai", "@ai-sdk/openai", "zod")
        if not (base / name / "package.json").exists()
    ]
    if not nodes:
        missing.insert(0, "Node")
    if missing:
        pytest.skip(
            f"the AI SDK is not installed: no {', '.join(missing)} under {base} "
            "(.ci/install-ai-sdk installs them; or set XROUTER_AI_SDK_DIR)"
        )
    for name, version in PACKAGES.items():
        found = json.loads((base / name / "package.json").read_text())["version"]
        assert found == version, f"{name} {found} installed; this test is for {version}"
    return nodes[0]


@pytest.fixture(scope="module")
def anthropic_fake():
    fake = FakeAnthropicProvider("anthropic")
    fake.override = anthropic_tool_loop
    yield fake
    fake.close()


@pytest.fixture
def router(start_router, upstreams, anthropic_fake):
    upstreams.frontier.override = responses_tool_loop
    upstreams.cheap.override = chat_tool_loop
    return start_router(
        {
            "FRONTIER_PROVIDER": "openai_responses",
            "MEDIUM_BASE_URL": anthropic_fake.url,
            "MEDIUM_API_KEY": "sk-ant-api03-ai-sdk-0001",
            "MEDIUM_MODEL": "claude-sonnet-4-5",
            "FALLBACK_ENABLED": "false",
        }
    )


def run_sdk(
    router, api: str, model: str, prompt: str, base_url: str = "", env: dict | None = None
) -> dict[str, dict]:
    node = node_binary()
    done = subprocess.run(
        [str(node), str(SCRIPT), base_url or router.url + "/v1", api, model, prompt],
        env={
            "PATH": f"{node.parent}:{os.environ.get('PATH', '')}",
            "HOME": os.environ.get("HOME", ""),
            "XROUTER_AI_SDK_DIR": str(install_dir()),
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    logs = router.log_path.read_text(errors="replace")
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-3000:]}\n{logs[-3000:]}"
    return {record["run"]: record for record in map(json.loads, done.stdout.splitlines())}


# (the SDK's API, the tier's route): Responses natively, Responses translated to chat and
# to Anthropic, chat completions as they are.
CASES = [
    ("responses", "frontier"),
    ("responses", "cheap"),
    ("responses", "medium"),
    ("chat", "cheap"),
]


@pytest.mark.parametrize("api,tier", CASES, ids=[f"{a}-{t}" for a, t in CASES])
def test_generate_and_stream_text_with_a_tool(router, upstreams, anthropic_fake, api, tier):
    anthropic_fake.requests.clear()
    prompt = unique("What is the weather in Paris?")
    runs = run_sdk(router, api, f"xrouter-{tier}", prompt)
    for name in ("generateText", "streamText"):
        run = runs[name]
        # The SDK executed the tool with the model's arguments and printed the answer.
        assert run["calls"] == [TOOL_ARGS], run
        assert run["text"] == tool_loop_said(TOOL_RESULT), run
        assert run["steps"] == 2 and run["upstreams"] == [tier, tier], run
        # The usage the SDK reports: the providers' 11 + 7 per step.
        usage = run["usage"]
        assert usage["inputTokens"] == 2 * PROMPT_TOKENS, usage
        assert usage["outputTokens"] == 2 * COMPLETION_TOKENS, usage
        assert usage["totalTokens"] == 2 * (PROMPT_TOKENS + COMPLETION_TOKENS), usage
    parts = runs["streamText"]["parts"]
    for kind in ("tool-call", "tool-result", "text-delta", "finish"):
        assert kind in parts, parts
    # What reached the provider: the client's format on a same-format route.
    fake = {"frontier": upstreams.frontier, "cheap": upstreams.cheap, "medium": anthropic_fake}
    sent = [r for r in fake[tier].requests if prompt in r.body.decode()]
    assert len(sent) == 5, [r.path for r in sent]
    paths = {r.path for r in sent}
    expected = {
        "frontier": "/v1/responses",
        "cheap": "/v1/chat/completions",
        "medium": "/v1/messages",
    }
    assert paths == {expected[tier]}
    first = sent[0].json
    names = [t.get("name") or t.get("function", {}).get("name") for t in first["tools"]]
    assert names == [TOOL_NAME]
    # The second turn (no tools) carries turn one's answer; on the Responses API the SDK
    # sends it as an item_reference: the router reads the items it made itself, a
    # Responses route gets its own as sent.
    second = runs["secondTurn"]
    assert second["text"] == tool_loop_echo("Thanks. And in Lyon?"), second
    assert second["upstreams"] == [tier] and second["usage"]["inputTokens"] == PROMPT_TOKENS
    last = sent[-1].json
    answer = tool_loop_said(TOOL_RESULT)
    if tier == "frontier":
        assert {"type": "item_reference", "id": "msg_fake1"} in last["input"], last
    elif tier == "cheap":
        assert {"role": "assistant", "content": answer} in last["messages"], last
    else:
        assert {"role": "assistant", "content": [{"type": "text", "text": answer}]} in (
            last["messages"]
        ), last
    router.settle()
    logs = router.logs()
    assert logs.count(f"route={tier}") == 5 and "tokens=11+7" in logs


def test_https_proxy_mode_routes_the_sdks_calls_to_api_openai_com(upstreams, tmp_path):
    """The SDK left on its default base URL (https://api.openai.com/v1), Node's fetch sent
    through the router by HTTPS_PROXY (NODE_USE_ENV_PROXY=1) trusting mitmproxy's CA:
    its /v1/responses calls are classified and routed to the fake on loopback;
    tests/loopback_guard.py would stop anything the router let through."""
    node_binary()
    upstreams.cheap.override = chat_tool_loop
    upstreams.classifier.digit = "0"
    proxy_port = free_port()
    guard = Path(__file__).with_name("loopback_guard.py")
    router = Router(
        upstreams.env(),
        tmp_path,
        args=["--mode", f"regular@127.0.0.1:{proxy_port}", "-s", str(guard)],
        wait=False,
    )
    try:
        ca = router.wait_for_proxy(proxy_port)
        proxy = {
            "HTTPS_PROXY": f"http://127.0.0.1:{proxy_port}",
            "NODE_USE_ENV_PROXY": "1",
            "NODE_EXTRA_CA_CERTS": str(ca),
        }
        prompt = unique("What is the weather in Paris?")
        runs = run_sdk(
            router, "responses", "gpt-5-mini", prompt, "https://api.openai.com/v1", proxy
        )
        for name in ("generateText", "streamText"):
            assert runs[name]["text"] == tool_loop_said(TOOL_RESULT), runs[name]
            assert runs[name]["upstreams"] == ["cheap", "cheap"], runs[name]
        assert runs["secondTurn"]["text"] == tool_loop_echo("Thanks. And in Lyon?")
        sent = [r for r in upstreams.cheap.requests if prompt in r.body.decode()]
        assert len(sent) == 5
        assert all(r.headers["authorization"] == "Bearer sk-cheap-secret-0001" for r in sent)
        logs = router.log_path.read_text(errors="replace")
        assert logs.count("route=cheap") == 5 and "loopback-guard: blocked" not in logs
    finally:
        router.stop()
