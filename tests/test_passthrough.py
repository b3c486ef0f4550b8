"""Same-format pass-through and tolerant translation, on a real router.

Frontier is a fake Anthropic provider, cheap and medium fake OpenAI providers. An
Anthropic client on an Anthropic route gets its body forwarded as sent (only `model`
replaced) and the provider's answer back byte for byte; an OpenAI chat client on an
OpenAI route keeps every field. Where a request is translated, what the other format
cannot say is left out, never refused.
"""

from __future__ import annotations

import json

import pytest
from conftest import Router, unique
from fakes import FakeAnthropicProvider, Reply, anthropic_message, anthropic_stream

ROUTE_MODEL = "claude-route-model"
BETAS = "mid-conversation-system-2026-04-07,prompt-caching-2024-07-31"


def compact(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.fixture(scope="module")
def anthropic_fake():
    fake = FakeAnthropicProvider("anthropic")
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def same_format_router(anthropic_fake, upstreams_session, tmp_path_factory):
    env = {
        **upstreams_session.env(),
        "FRONTIER_BASE_URL": anthropic_fake.url,
        "FRONTIER_API_KEY": "sk-ant-route-key-0009",
        "FRONTIER_MODEL": ROUTE_MODEL,
        "LOG_LEVEL": "debug",
    }
    # mitmdump shows debug lines only at its own debug verbosity.
    router = Router(
        env, tmp_path_factory.mktemp("passthrough"), args=["--set", "termlog_verbosity=debug"]
    )
    yield router
    router.stop()


@pytest.fixture(autouse=True)
def fresh(anthropic_fake):
    anthropic_fake.requests.clear()
    anthropic_fake.override = None
    yield
    anthropic_fake.override = None


def claude_code_body(text: str, stream: bool) -> dict:
    """What Claude Code 2.1 sends, in its order: cache marks, thinking with a signed
    block in the history, a system message inside the conversation, top_k, metadata."""
    return {
        "model": "xrouter/frontier",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "first question"}]},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "thinking",
                        "thinking": "let me see",
                        "signature": "EqQBCkYIBxgCKkDa==",
                    },
                    {"type": "text", "text": "first answer"},
                ],
            },
            {"role": "system", "content": "The user switched to plan mode."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": text, "cache_control": {"type": "ephemeral"}},
                ],
            },
        ],
        "system": [
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}
        ],
        "tools": [
            {
                "name": "Read",
                "description": "Read a file — “quoted”",
                "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
                "cache_control": {"type": "ephemeral", "ttl": "1h"},
            }
        ],
        "metadata": {"user_id": "user_abc_account_def_session_1"},
        "max_tokens": 32000,
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "top_k": 40,
        "service_tier": "auto",
        "stream": stream,
    }


def headers(**extra: str) -> dict[str, str]:
    return {
        "x-api-key": "client-key",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": BETAS,
        "content-type": "application/json",
        **extra,
    }


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_anthropic_body_headers_and_answer_pass_through(same_format_router, anthropic_fake, stream):
    sent = claude_code_body(unique("pass me through"), stream)
    with same_format_router.client() as client:
        reply = client.post("/v1/messages", content=compact(sent), headers=headers())
    assert reply.status_code == 200, reply.text
    received = anthropic_fake.requests[-1]
    # The body as sent, key for key and byte for byte, but for the route's model.
    assert received.body == compact({**sent, "model": ROUTE_MODEL})
    assert received.headers["anthropic-beta"] == BETAS
    assert received.headers["anthropic-version"] == "2023-06-01"
    assert received.headers["x-api-key"] == "sk-ant-route-key-0009"
    # The provider's answer (a tool call: tools were offered), untouched, plus the
    # routing headers.
    if stream:
        assert reply.content == "".join(anthropic_stream("", ROUTE_MODEL, tool=True)).encode()
        assert reply.headers["content-type"].startswith("text/event-stream")
    else:
        assert reply.content == json.dumps(anthropic_message("", ROUTE_MODEL, True)).encode()
    assert reply.headers["x-xrouter-upstream"] == "frontier"
    # Usage was read on the side: 11 in (message_start), 7 out (message_delta).
    assert f"model={ROUTE_MODEL} status=200" in same_format_router.logs().split("tokens=11+7")[-2]


def test_unknown_future_fields_and_client_version_arrive(same_format_router, anthropic_fake):
    anthropic_fake.override = lambda request: Reply(chunks=anthropic_stream("ok", ROUTE_MODEL))
    sent = {
        "model": "xrouter-frontier",
        "messages": [{"role": "user", "content": unique("future")}],
        "max_tokens": 10,
        "future_field": {"nested": [1, 2.5, None, True]},
        "stream": True,
    }
    with same_format_router.client() as client:
        reply = client.post(
            "/v1/messages",
            content=compact(sent),
            headers=headers(**{"anthropic-version": "2027-01-01"}),
        )
    assert reply.status_code == 200, reply.text
    received = anthropic_fake.requests[-1]
    assert received.body == compact({**sent, "model": ROUTE_MODEL})
    assert received.headers["anthropic-version"] == "2027-01-01"


def content_length(received) -> int:
    return int(next(v for k, v in received.headers.items() if k.lower() == "content-length"))


def test_client_s_own_bytes_arrive_but_for_the_model(same_format_router, anthropic_fake):
    """The client's spacing, escapes and key order (model last) reach the provider as
    written: only the bytes of the model's value are the route's."""
    anthropic_fake.override = lambda request: Reply(chunks=anthropic_stream("ok", ROUTE_MODEL))
    text = unique("spaced")
    raw = (
        '{\n\t"messages" : [ { "role" : "user", "content" : "' + text + ' caf\\u00e9 \\"q\\"" } ],'
        '\r\n  "max_tokens":\t10 ,  "stream" : true,\n  "model"  :  "xrouter/frontier"\n}\n'
    ).encode()
    with same_format_router.client() as client:
        reply = client.post("/v1/messages", content=raw, headers=headers())
    assert reply.status_code == 200, reply.text
    received = anthropic_fake.requests[-1]
    assert received.body == raw.replace(b'"xrouter/frontier"', b'"' + ROUTE_MODEL.encode() + b'"')
    assert content_length(received) == len(received.body)


def claude_code_tools() -> list[dict]:
    """Tools as Claude Code 2.1 offers them: its Agent tool's schema has a property named
    model (the subagent's), and descriptions quote JSON."""
    return [
        {
            "name": "Agent",
            "description": 'Launch a subagent. Example input: {"model": "sonnet"}',
            "input_schema": {
                "type": "object",
                "properties": {
                    "prompt": {"type": "string"},
                    "model": {"type": "string", "enum": ["sonnet", "opus", "haiku"]},
                },
                "required": ["prompt"],
                "additionalProperties": False,
                "$schema": "http://json-schema.org/draft-07/schema#",
            },
        },
        {
            "name": "Read",
            "description": 'Read a file — “quoted”, with \\ and "escapes"',
            "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}},
            "cache_control": {"type": "ephemeral"},
        },
    ]


def test_a_claude_code_shaped_body_arrives_as_sent_but_for_the_model(
    same_format_router, anthropic_fake
):
    """A body with `"model"` nested in a tool schema and inside strings, spaced as no
    re-serialisation would space it: the provider gets the client's bytes with only the
    top-level model's value replaced."""
    anthropic_fake.override = lambda request: Reply(chunks=anthropic_stream("ok", ROUTE_MODEL))
    sent = claude_code_body(unique('nested "model": ') + "caf\u00e9", True)
    sent["tools"] = claude_code_tools()
    raw = json.dumps(sent, indent=2).encode()
    assert raw.count(b'"model"') == 2 and raw.count(b'\\"model\\"') == 2
    with same_format_router.client() as client:
        reply = client.post("/v1/messages", content=raw, headers=headers())
    assert reply.status_code == 200, reply.text
    received = anthropic_fake.requests[-1]
    old_value = b'\n  "model": "xrouter/frontier",'
    assert raw.count(old_value) == 1
    assert received.body == raw.replace(old_value, b'\n  "model": "' + ROUTE_MODEL.encode() + b'",')
    assert content_length(received) == len(received.body)


def test_a_body_with_a_duplicate_model_key_is_reserialised(same_format_router, anthropic_fake):
    """Two top-level model keys: which one a provider reads is the parser's choice, so
    the body is re-serialised (compact) with the one key the router parsed, replaced."""
    anthropic_fake.override = lambda request: Reply(chunks=anthropic_stream("ok", ROUTE_MODEL))
    sent = {
        "messages": [{"role": "user", "content": unique("duplicate")}],
        "tools": claude_code_tools(),
        "max_tokens": 10,
        "stream": True,
        "model": "xrouter/frontier",
    }
    raw = b'{"model": "xrouter-cheap", ' + json.dumps(sent, indent=2).encode()[1:]
    with same_format_router.client() as client:
        reply = client.post("/v1/messages", content=raw, headers=headers())
    assert reply.status_code == 200, reply.text
    received = anthropic_fake.requests[-1]
    parsed = json.loads(raw)  # the last model wins, in the first one's place
    assert received.body == compact({**parsed, "model": ROUTE_MODEL})
    assert received.body.count(b'"model"') == 2  # the top-level one and the Agent tool's
    assert content_length(received) == len(received.body)


def test_anthropic_client_on_an_openai_route_is_translated_tolerantly(
    same_format_router, upstreams
):
    """The same Claude Code body to cheap (OpenAI wire): the system message stays in
    place, what OpenAI cannot take is dropped (one debug line names it), no 400."""
    sent = claude_code_body(unique("translate me"), True)
    sent["model"] = "xrouter-cheap"
    sent["messages"].append({"role": "critic", "content": "an unknown role"})
    sent["messages"][0]["content"].append({"type": "future_block", "x": 1})
    with same_format_router.client() as client:
        reply = client.post("/v1/messages", content=compact(sent), headers=headers())
    assert reply.status_code == 200, reply.text
    assert "Hello from cheap" in reply.text
    body = upstreams.cheap.requests[-1].json
    assert [m["role"] for m in body["messages"]] == [
        "system",
        "user",
        "assistant",
        "system",
        "user",
    ]
    assert body["messages"][3]["content"] == "The user switched to plan mode."
    assert body["messages"][2]["content"] == "first answer"
    for name in ("thinking", "top_k", "service_tier", "metadata"):
        assert name not in body
    line = next(line for line in same_format_router.logs().splitlines() if "cannot take" in line)
    for name in ("thinking", "top_k", "service_tier", "cache_control", "'critic'", "future_block"):
        assert name in line, line
    assert "translate me" not in line


def test_openai_client_system_message_moves_to_anthropic_system(same_format_router, anthropic_fake):
    sent = {
        "model": "xrouter/frontier",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": unique("hello")},
            {"role": "assistant", "content": "Hi."},
            {"role": "system", "content": "Now answer in French."},
            {"role": "critic", "content": "an unknown role"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "again"},
                    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                ],
            },
        ],
        "service_tier": "auto",
        "seed": 3,
    }
    with same_format_router.client() as client:
        reply = client.post("/v1/chat/completions", json=sent)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == "Hello from anthropic!"
    body = anthropic_fake.requests[-1].json
    assert [b["text"] for b in body["system"]] == ["Be brief.", "Now answer in French."]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert "service_tier" not in body and "seed" not in body
    # A session's translated prompt is marked for Anthropic's cache (docs/sessions.md).
    mark = {"cache_control": {"type": "ephemeral"}}
    assert body["messages"][-1]["content"] == [{"type": "text", "text": "again", **mark}]
    assert body["system"][-1]["cache_control"] == mark["cache_control"]
    line = [line for line in same_format_router.logs().splitlines() if "cannot take" in line][-1]
    assert line.endswith("dropped: service_tier, seed, role 'critic', input_audio part"), line


def test_openai_client_on_an_openai_route_keeps_every_field(same_format_router, upstreams):
    sent = {
        "model": "xrouter-medium",
        "messages": [
            {"role": "developer", "content": "Rules."},
            {"role": "user", "content": unique("fields")},
            {"role": "system", "content": "mid-conversation"},
        ],
        "metadata": {"k": "v"},
        "service_tier": "flex",
        "future_field": [1, {"a": None}],
        "temperature": 0.5,
    }
    with same_format_router.client() as client:
        reply = client.post("/v1/chat/completions", content=compact(sent))
    assert reply.status_code == 200, reply.text
    received = upstreams.medium.requests[-1]
    assert received.body == compact({**sent, "model": "medium-model"})


def test_an_anthropic_error_document_with_a_200_is_an_anthropic_502(
    same_format_router, anthropic_fake
):
    """An Anthropic route that reports an overload in a 200's body: the Anthropic client
    gets a 502 in Anthropic's error shape with the provider's message, not a 200 its SDK
    would read as a message without content."""
    anthropic_fake.override = lambda request: Reply(
        200, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    with same_format_router.client() as client:
        reply = client.post(
            "/v1/messages", content=compact(claude_code_body("hi", False)), headers=headers()
        )
    assert reply.status_code == 502, reply.text
    doc = reply.json()
    assert doc["type"] == "error" and doc["error"]["type"] == "api_error"
    assert "Overloaded" in doc["error"]["message"] and "'frontier'" in doc["error"]["message"]
    assert "sk-ant-route-key-0009" not in reply.text + same_format_router.logs()
