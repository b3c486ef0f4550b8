"""Plugins on real routers: response-healing of truncated JSON in every client format
(streamed and whole), pareto forcing a tier by header or configuration, a broken plugin
that costs the client nothing, and plugins that cannot be loaded stopping the start."""

from __future__ import annotations

import json
import textwrap

import httpx
import pytest
from conftest import LAUNCHERS, Router, unique
from fakes import (
    FakeAnthropicProvider,
    Reply,
    openai_completion,
    openai_stream,
)

from xrouter_core.wire.sse import SSEParser

CHAT = "/v1/chat/completions"
CUT = '{"city": "Paris", "sights": ["Louvre", "Orsay'  # a JSON answer cut short
HEALED = {"city": "Paris", "sights": ["Louvre", "Orsay"]}
JSON_FORMAT = {"type": "json_object"}

BROKEN_PLUGIN = textwrap.dedent(
    """
    class Broken:
        def on_start(self):
            raise RuntimeError("cannot start with sk-cheap-secret-0001")

        def pre_request(self, request):
            raise KeyError("nothing here")

        def post_response(self, answer):
            raise ValueError("post went wrong")
    """
)

EDITING_PLUGIN = textwrap.dedent(
    """
    class Shout:
        def pre_request(self, request):
            if request.headers.get("x-shout"):
                body = request.edit()
                body["messages"].insert(0, {"role": "system", "content": "SHOUT"})
    """
)


def truncated_openai(request) -> Reply:
    body = request.json or {}
    pieces = [CUT[:10], CUT[10:30], CUT[30:]]
    if body.get("stream"):
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return Reply(chunks=openai_stream(pieces, body.get("model", "m"), usage))
    return Reply(body=openai_completion(CUT, body.get("model", "m"), finish_reason="length"))


@pytest.fixture(scope="module")
def anthropic_provider():
    server = FakeAnthropicProvider("claude-json")
    server.text = CUT
    yield server
    server.close()


@pytest.fixture(scope="module", params=LAUNCHERS)
def healing_router(request, upstreams_session, anthropic_provider, tmp_path_factory):
    """response-healing, pareto (header only, frontier not allowed), a broken plugin and
    one that edits the request; medium speaks Anthropic's Messages (the classifier says 1)."""
    tmp = tmp_path_factory.mktemp(f"plugins-{request.param}")
    (tmp / "broken.py").write_text(BROKEN_PLUGIN)
    (tmp / "shout.py").write_text(EDITING_PLUGIN)
    env = upstreams_session.env()
    env.update(
        {
            "MEDIUM_BASE_URL": anthropic_provider.url,
            "MEDIUM_PROVIDER": "anthropic",
            "MEDIUM_MODEL": "claude-json",
            "MEDIUM_API_KEY": "sk-ant-medium-secret-0002",
            "UPSTREAMS_JSON": json.dumps(
                {
                    "plugins": [
                        "response-healing",
                        {"use": "pareto", "allow": ["cheap", "medium"]},
                        str(tmp / "broken.py") + ":Broken",
                        "shout.py:Shout",
                    ]
                }
            ),
        }
    )
    router = Router(env, tmp, launcher=request.param)
    yield router
    router.stop()


@pytest.fixture
def cheap_truncates(upstreams):
    upstreams.cheap.override = truncated_openai
    upstreams.frontier.override = truncated_openai
    yield upstreams


def events_of(raw: bytes) -> list:
    parser = SSEParser()
    return parser.feed(raw) + parser.flush()


def openai_stream_text(raw: bytes) -> tuple[str, list[dict]]:
    chunks = [json.loads(e.data) for e in events_of(raw) if e.data and e.data != "[DONE]"]
    text = "".join(
        (c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices")
    )
    return text, chunks


def post(router: Router, path: str, body: dict, headers: dict | None = None) -> httpx.Response:
    with router.client() as client:
        return client.post(path, json=body, headers=headers or {})


def chat(text: str, stream: bool, json_mode: bool = True, tier: str = "cheap") -> dict:
    body: dict = {"model": "xrouter/auto", "messages": [{"role": "user", "content": unique(text)}]}
    if json_mode:
        body["response_format"] = JSON_FORMAT
    if stream:
        body["stream"] = True
    return body


PARETO = {"X-Xrouter-Pareto": "cheap"}


def test_a_truncated_openai_stream_gets_its_closing_part_before_the_finish(
    healing_router, cheap_truncates
):
    answer = post(healing_router, CHAT, chat("city as JSON", True), PARETO)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-xrouter-upstream"] == "cheap"
    text, chunks = openai_stream_text(answer.content)
    assert json.loads(text) == HEALED
    finish_at = next(i for i, c in enumerate(chunks) if c["choices"][0].get("finish_reason"))
    closing = chunks[finish_at - 1]["choices"][0]["delta"]["content"]
    assert closing == '"]}'
    assert chunks[finish_at]["choices"][0]["finish_reason"] == "stop"
    assert answer.content.endswith(b"data: [DONE]\n\n")
    logs = healing_router.logs()
    assert (
        'response-healing: completed the streamed JSON answer of route cheap with "\\"]}"' in logs
    )


def test_a_truncated_whole_openai_answer_is_repaired(healing_router, cheap_truncates):
    answer = post(healing_router, CHAT, chat("city as JSON", False), PARETO)
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert json.loads(doc["choices"][0]["message"]["content"]) == HEALED
    assert doc["choices"][0]["finish_reason"] == "length"
    assert "response-healing: repaired the JSON answer of route cheap" in healing_router.logs()


def test_answers_that_did_not_ask_for_json_are_untouched(healing_router, cheap_truncates):
    """The stream passes through byte for byte (the provider's own chunk ids), and the
    whole answer keeps its cut text."""
    streamed = post(healing_router, CHAT, chat("plain text", True, json_mode=False), PARETO)
    text, chunks = openai_stream_text(streamed.content)
    assert text == CUT
    assert {c["id"] for c in chunks} == {"chatcmpl-fake123"}
    whole = post(healing_router, CHAT, chat("plain text", False, json_mode=False), PARETO)
    assert whole.json()["choices"][0]["message"]["content"] == CUT


def anthropic_body(text: str, stream: bool) -> dict:
    body = {
        "model": "claude-json",
        "max_tokens": 200,
        "messages": [{"role": "user", "content": unique(text)}],
        "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
    }
    if stream:
        body["stream"] = True
    return body


def anthropic_text(raw: bytes) -> tuple[str, list[dict]]:
    events = [json.loads(e.data) for e in events_of(raw) if e.data]
    text = "".join(
        e["delta"]["text"]
        for e in events
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "text_delta"
    )
    return text, events


@pytest.mark.parametrize("tier", ["cheap", "medium"], ids=["from-openai", "from-anthropic"])
def test_a_truncated_anthropic_stream_is_completed_in_messages_events(
    healing_router, cheap_truncates, tier
):
    """An Anthropic client's structured output, from an OpenAI route (translated) and from
    an Anthropic route (same format: decoded and rendered again to be followed)."""
    answer = post(
        healing_router,
        "/v1/messages",
        anthropic_body("city as JSON", True),
        {"X-Xrouter-Pareto": tier},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-xrouter-upstream"] == tier
    text, events = anthropic_text(answer.content)
    assert json.loads(text) == HEALED
    kinds = [e["type"] for e in events]
    last_delta = max(i for i, k in enumerate(kinds) if k == "content_block_delta")
    assert events[last_delta]["delta"]["text"] == '"]}'
    assert kinds[last_delta + 1 :] == ["content_block_stop", "message_delta", "message_stop"]


def test_a_truncated_whole_anthropic_answer_is_repaired(healing_router, cheap_truncates):
    answer = post(
        healing_router,
        "/v1/messages",
        anthropic_body("city as JSON", False),
        {"X-Xrouter-Pareto": "medium"},
    )
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["type"] == "message"
    assert json.loads(doc["content"][0]["text"]) == HEALED


def test_a_truncated_responses_stream_is_completed_before_response_completed(
    healing_router, cheap_truncates
):
    body = {
        "model": "xrouter/auto",
        "input": unique("city as JSON"),
        "text": {"format": {"type": "json_object"}},
        "stream": True,
    }
    answer = post(healing_router, "/v1/responses", body, PARETO)
    assert answer.status_code == 200, answer.text
    events = [json.loads(e.data) for e in events_of(answer.content) if e.data]
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert json.loads("".join(deltas)) == HEALED and deltas[-1] == '"]}'
    done = next(e for e in events if e["type"] == "response.output_text.done")
    assert json.loads(done["text"]) == HEALED
    completed = events[-1]
    assert completed["type"] == "response.completed"
    assert json.loads(completed["response"]["output"][0]["content"][0]["text"]) == HEALED


def test_a_truncated_whole_responses_answer_is_repaired(healing_router, cheap_truncates):
    body = {
        "model": "xrouter/auto",
        "input": unique("city as JSON"),
        "text": {"format": {"type": "json_schema", "name": "city", "schema": {"type": "object"}}},
    }
    answer = post(healing_router, "/v1/responses", body, PARETO)
    assert answer.status_code == 200, answer.text
    assert json.loads(answer.json()["output"][0]["content"][0]["text"]) == HEALED


def test_pareto_forces_the_tier_its_header_names(healing_router, upstreams):
    for value, tier in (("cheap", "cheap"), ("0", "cheap"), ("1", "medium"), ("MEDIUM", "medium")):
        answer = post(
            healing_router,
            CHAT,
            chat("hi", False, json_mode=False),
            {"X-Xrouter-Pareto": value},
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-xrouter-upstream"] == tier
        assert answer.headers["x-xrouter-decision"] == str(["cheap", "medium"].index(tier))
    assert not upstreams.classifier.requests  # a forced tier asks no classifier
    assert "source=plugin:pareto" in healing_router.logs()


@pytest.mark.parametrize(
    ("value", "status", "says"),
    [
        ("premium", 400, "X-Xrouter-Pareto must be cheap, medium, frontier, 0, 1 or 2"),
        ("7", 400, "not '7'"),
        ("frontier", 403, "X-Xrouter-Pareto may choose cheap, medium, not 'frontier'"),
    ],
)
def test_pareto_refuses_a_header_that_names_no_allowed_tier(
    healing_router, upstreams, value, status, says
):
    answer = post(healing_router, CHAT, chat("hi", False), {"X-Xrouter-Pareto": value})
    assert answer.status_code == status
    assert says in answer.json()["error"]["message"]
    anthropic = post(
        healing_router, "/v1/messages", anthropic_body("hi", False), {"X-Xrouter-Pareto": value}
    )
    assert anthropic.status_code == status
    assert anthropic.json()["type"] == "error" and says in anthropic.json()["error"]["message"]
    assert not upstreams.cheap.requests and not upstreams.frontier.requests


def test_health_lists_the_plugins_in_use(healing_router):
    with healing_router.client() as client:
        plugins = client.get("/health").json()["plugins"]
    assert plugins[:2] == ["response-healing", "pareto"]
    assert plugins[2].endswith("broken.py:Broken") and plugins[3] == "shout.py:Shout"


def test_a_broken_plugin_costs_the_client_nothing(healing_router, upstreams):
    """Broken raises in on_start, pre_request and post_response: one line each time, no
    traceback, no secret, and every request answered as if it were not there."""
    for stream in (False, True):
        answer = post(healing_router, CHAT, chat("hello", stream, json_mode=False), PARETO)
        assert answer.status_code == 200, answer.text
        assert "Hello from cheap" in answer.text
    logs = healing_router.logs()
    assert "broken.py:Broken failed in on_start (ignored, the request goes on)" in logs
    assert "failed in pre_request (ignored, the request goes on): KeyError" in logs
    assert "failed in post_response (ignored, the request goes on): ValueError" in logs
    assert "Traceback" not in logs
    assert "sk-cheap-secret-0001" not in logs


def test_a_plugin_may_change_the_request(healing_router, upstreams, anthropic_provider):
    post(healing_router, CHAT, chat("hello", False, json_mode=False), {**PARETO, "X-Shout": "1"})
    sent = upstreams.cheap.requests[-1].json
    assert sent["messages"][0] == {"role": "system", "content": "SHOUT"}
    # An Anthropic client on an Anthropic route: the edited body goes, not the client's own.
    anthropic_provider.requests.clear()
    body = anthropic_body("hello", False)
    post(healing_router, "/v1/messages", body, {"X-Xrouter-Pareto": "medium", "X-Shout": "1"})
    assert "SHOUT" in json.dumps(anthropic_provider.requests[-1].json["system"])


def test_pareto_forces_the_configured_tier(start_router, upstreams):
    plugins = [{"use": "pareto", "tier": "frontier"}]
    router = start_router({"XROUTER_PLUGINS": json.dumps(plugins)})
    answer = post(router, CHAT, chat("hi", False, json_mode=False))
    assert answer.headers["x-xrouter-upstream"] == "frontier"
    header_wins = post(router, CHAT, chat("hi", False, json_mode=False), PARETO)
    assert header_wins.headers["x-xrouter-upstream"] == "cheap"


@pytest.mark.parametrize(
    ("plugins", "says"),
    [
        (
            "no_such_module_xyz:Plugin",
            "plugin 'no_such_module_xyz:Plugin' cannot be loaded: no module named 'no_such_module_xyz'",
        ),
        ("missing.py", "cannot be loaded: no such file: missing.py"),
        ("{tmp}/bad.py:Plugin", "bad.py failed to load: SyntaxError"),
        ("json:Nothing", "json has no class 'Nothing'"),
        (
            '[{"use": "pareto", "tier": "premium"}]',
            "plugin 'pareto' cannot be loaded: tier must be one of",
        ),
        ('[{"use": "response-healing", "colour": "red"}]', "bad options ['colour']"),
    ],
    ids=["module", "file", "syntax", "class", "option-value", "option-name"],
)
def test_a_plugin_that_cannot_be_loaded_stops_the_start(start_router, tmp_path, plugins, says):
    (tmp_path / "bad.py").write_text("class Plugin(:\n")
    router = start_router({"XROUTER_PLUGINS": plugins.replace("{tmp}", str(tmp_path))}, wait=False)
    code = router.proc.wait(30)
    logs = router.logs()
    assert code == 1, logs
    assert says in logs
    assert "Traceback" not in logs
