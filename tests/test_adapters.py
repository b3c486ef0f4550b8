"""Provider adapters as plain code: requests out, whole answers and streams (fed in
every chunking down to single bytes) back, and the Anthropic client format."""

from __future__ import annotations

import json

import pytest
from fakes import (
    COMPLETION_TOKENS,
    GEMINI_SIGNATURE,
    PROMPT_TOKENS,
    TOOL_ARGS,
    TOOL_NAME,
    FakeAnthropicProvider,
    FakeCohereProvider,
    FakeGeminiProvider,
    anthropic_message,
    anthropic_stream,
    cohere_stream,
    gemini_chunk,
    gemini_stream,
    gemini_usage,
    openai_tool_stream,
)

from xrouter_core.config import Route
from xrouter_core.wire import canonical as ev
from xrouter_core.wire.adapters import adapter_for
from xrouter_core.wire.adapters.anthropic import AnthropicAdapter
from xrouter_core.wire.adapters.cohere import CohereAdapter
from xrouter_core.wire.adapters.gemini import GeminiAdapter
from xrouter_core.wire.adapters.ollama import OllamaAdapter
from xrouter_core.wire.adapters.openai import AzureOpenAIAdapter, OpenAIAdapter, OpenAIStreamDecoder
from xrouter_core.wire.inbound import ANTHROPIC, ChatRequest, parse_anthropic_messages
from xrouter_core.wire.providers import detect_provider, known_provider
from xrouter_core.wire.render_anthropic import AnthropicEventRenderer
from xrouter_core.wire.render_anthropic import anthropic_message as to_anthropic
from xrouter_core.wire.render_openai import OpenAIChunkRenderer
from xrouter_core.wire.sse import iter_events
from xrouter_core.wire.stream import TranslatingStream

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "description": "Weather of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
]
PNG = "data:image/png;base64,iVBORw0KGgo="
# One agent turn as OpenClaw sends it: list-form content, an image, a finished tool loop
# with an id Anthropic would refuse, and max_completion_tokens.
CONVERSATION = {
    "model": "xrouter/auto",
    "max_completion_tokens": 300,
    "temperature": 0.2,
    "stop": "END",
    "tools": TOOLS,
    "tool_choice": "auto",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather in Paris?"},
                {"type": "image_url", "image_url": {"url": PNG}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call:1/abc",
                    "type": "function",
                    "function": {"name": TOOL_NAME, "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call:1/abc", "content": '{"temp": 21}'},
        {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]},
    ],
}


def route(provider: str = "", **kw) -> Route:
    values = {
        "tier": "frontier",
        "base_url": "https://example.test",
        "api_key": "k-123",
        "model": "m1",
    }
    values.update(kw)
    return Route(provider=provider, **values)


def build(adapter, body: dict, **route_kw):
    upstream = adapter.build_request(route(**route_kw), ChatRequest(body=body), [("x-client", "1")])
    return upstream, json.loads(upstream.body)


def run(translator, data: bytes, size: int) -> bytes:
    pieces = [out for i in range(0, len(data), size) for out in translator(data[i : i + size])]
    pieces += translator(b"")
    assert all(pieces), "an empty chunk would end the client's chunked body"
    return b"".join(pieces)


def openai_view(out: bytes) -> tuple[str, str, str, str | None, dict | None]:
    """(text, tool name, tool arguments, finish_reason, usage) of an OpenAI chunk stream."""
    events = [e.data for e in iter_events(out)]
    assert events[-1] == "[DONE]"
    text = name = args = ""
    finish = usage = None
    for data in events[:-1]:
        chunk = json.loads(data)
        assert chunk["object"] == "chat.completion.chunk"
        usage = chunk.get("usage") or usage
        for choice in chunk["choices"]:
            delta = choice["delta"]
            text += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                assert call["index"] == 0
                name += call.get("function", {}).get("name") or ""
                args += call.get("function", {}).get("arguments") or ""
            finish = choice["finish_reason"] or finish
    return text, name, args, finish, usage


STREAMS = {
    "anthropic": (AnthropicAdapter(), anthropic_stream, (PROMPT_TOKENS, COMPLETION_TOKENS)),
    "gemini": (GeminiAdapter(), gemini_stream, (PROMPT_TOKENS, COMPLETION_TOKENS)),
    "cohere": (CohereAdapter(), lambda text, tool=False: cohere_stream(text, tool), (211, 7)),
}


@pytest.mark.parametrize("provider", STREAMS)
@pytest.mark.parametrize("tool", [False, True], ids=["text", "tool"])
def test_provider_stream_becomes_openai_chunks_at_any_boundary(provider, tool):
    adapter, make, tokens = STREAMS[provider]
    data = "".join(make("Hello, streamed world!" if not tool else "", tool=tool)).encode()
    for size in (1, 3, 17, len(data)):
        stream = TranslatingStream(
            adapter.stream_decoder(), OpenAIChunkRenderer("m", include_usage=True)
        )
        text, name, args, finish, usage = openai_view(run(stream, data, size))
        if tool:
            assert (text, name, json.loads(args), finish) == (
                "",
                TOOL_NAME,
                TOOL_ARGS,
                "tool_calls",
            )
        else:
            assert (text, name, finish) == ("Hello, streamed world!", "", "stop")
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == tokens
        assert (stream.usage.prompt_tokens, stream.usage.completion_tokens) == tokens


@pytest.mark.parametrize("provider", STREAMS)
def test_provider_stream_becomes_anthropic_events(provider):
    adapter, make, tokens = STREAMS[provider]
    data = "".join(make("Hi there", tool=True)).encode()
    stream = TranslatingStream(adapter.stream_decoder(), AnthropicEventRenderer("m"))
    events = [(e.event, json.loads(e.data)) for e in iter_events(run(stream, data, 2))]
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert all(doc["type"] == name for name, doc in events)
    starts = [doc["content_block"]["type"] for name, doc in events if name == "content_block_start"]
    assert starts[0] == "text" and "tool_use" in starts
    assert names.count("content_block_start") == names.count("content_block_stop")
    partial = "".join(
        doc["delta"].get("partial_json", "")
        for name, doc in events
        if name == "content_block_delta"
    )
    assert json.loads(partial) == TOOL_ARGS
    assert events[-2][1]["usage"]["output_tokens"] == stream.usage.completion_tokens


def test_anthropic_stream_ping_error_and_thinking():
    data = (
        anthropic_stream("Hi")[0]
        + 'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}\n\n'
        + 'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}\n\n'
        + 'event: ping\ndata: {"type": "ping"}\n\n'
        + 'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
    ).encode()
    events = AnthropicAdapter().stream_decoder().feed(data)
    assert not any(isinstance(e, ev.TextDelta) for e in events), "thinking is dropped"
    assert ev.StreamError("Overloaded", "overloaded_error") in events


def test_gemini_usage_is_the_last_cumulative_count_and_finish_reasons_map():
    decoder = GeminiAdapter().stream_decoder()
    chunks = [
        gemini_chunk([{"text": "a"}], None, gemini_usage(1), "g"),
        gemini_chunk([{"text": "b"}], "MAX_TOKENS", gemini_usage(5), "g"),
    ]
    events = decoder.feed("".join("data: " + json.dumps(c) + "\r\n\r\n" for c in chunks).encode())
    events += decoder.finish()
    assert ev.Finish("length") in events
    assert [e for e in events if isinstance(e, ev.Usage)] == [ev.Usage(PROMPT_TOKENS, 5)]
    blocked = GeminiAdapter().parse_response(
        json.dumps(
            {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": gemini_usage(0)}
        ).encode()
    )
    assert blocked["choices"][0]["finish_reason"] == "content_filter"


def test_whole_answers_become_openai_completions():
    anthropic = AnthropicAdapter().parse_response(
        json.dumps(anthropic_message("", "c", True)).encode()
    )
    gemini = GeminiAdapter().parse_response(
        json.dumps(
            gemini_chunk(
                [{"functionCall": {"name": TOOL_NAME, "args": TOOL_ARGS}}],
                "STOP",
                gemini_usage(7),
                "g",
            )
        ).encode()
    )
    for completion in (anthropic, gemini):
        message = completion["choices"][0]["message"]
        assert completion["choices"][0]["finish_reason"] == "tool_calls"
        assert message["tool_calls"][0]["function"]["name"] == TOOL_NAME
        assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == TOOL_ARGS
        assert completion["usage"] == {
            "prompt_tokens": 11,
            "completion_tokens": 7,
            "total_tokens": 18,
        }
    text = AnthropicAdapter().parse_response(
        json.dumps(anthropic_message("Yes", "c", False)).encode()
    )
    assert text["choices"][0]["message"]["content"] == "Yes"
    assert text["choices"][0]["finish_reason"] == "stop"


# ---- requests out -----------------------------------------------------------------


def test_anthropic_request_translation():
    upstream, body = build(AnthropicAdapter(), CONVERSATION, base_url="https://api.anthropic.com")
    assert upstream.url == "https://api.anthropic.com/v1/messages"
    assert upstream.headers["x-api-key"] == "k-123" and "authorization" not in upstream.headers
    assert upstream.headers["anthropic-version"] == "2023-06-01"
    assert body["system"] == [{"type": "text", "text": "Be brief."}]
    assert body["max_tokens"] == 300 and body["stop_sequences"] == ["END"]
    assert body["tools"][0]["input_schema"]["required"] == ["city"]
    assert body["tool_choice"] == {"type": "auto"}
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"][1]["source"] == {
        "type": "base64",
        "media_type": "image/png",
        "data": "iVBORw0KGgo=",
    }
    tool_use = body["messages"][1]["content"][0]
    result = body["messages"][2]["content"][0]
    assert tool_use["id"] == result["tool_use_id"] == "call_1_abc"
    assert tool_use["input"] == {"city": "Paris"}
    assert FakeAnthropicProvider.check(body) == ""
    _, plain = build(AnthropicAdapter(), {"messages": [{"role": "user", "content": "hi"}]})
    assert plain["max_tokens"] == 4096, "Messages requires max_tokens: the documented default"
    _, forced = build(
        AnthropicAdapter(),
        {**CONVERSATION, "tool_choice": "required", "parallel_tool_calls": False},
    )
    assert forced["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


def test_gemini_request_translation():
    upstream, body = build(
        GeminiAdapter(),
        CONVERSATION,
        base_url="https://generativelanguage.googleapis.com",
        model="gemini-2.0-flash",
    )
    assert (
        upstream.url
        == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent"
    )
    assert upstream.headers["x-goog-api-key"] == "k-123"
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["generationConfig"] == {
        "temperature": 0.2,
        "maxOutputTokens": 300,
        "stopSequences": ["END"],
    }
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][2]["parts"][0] == {
        "functionResponse": {"name": TOOL_NAME, "response": {"temp": 21}}
    }
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    assert FakeGeminiProvider.check(body) == ""
    streamed = GeminiAdapter().build_request(
        route(), ChatRequest(body={**CONVERSATION, "stream": True}), []
    )
    assert streamed.url.endswith("/v1beta/models/m1:streamGenerateContent?alt=sse")


def test_cohere_request_translation():
    upstream, body = build(
        CohereAdapter(),
        {**CONVERSATION, "top_p": 0.9, "tool_choice": "required"},
        base_url="https://api.cohere.com",
    )
    assert upstream.url == "https://api.cohere.com/v2/chat"
    assert upstream.headers["authorization"] == "Bearer k-123"
    assert body["p"] == 0.9 and body["max_tokens"] == 300 and body["stop_sequences"] == ["END"]
    assert body["tool_choice"] == "REQUIRED"
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool", "user"]
    assert body["messages"][1]["content"][1] == {"type": "image_url", "image_url": {"url": PNG}}
    assert FakeCohereProvider.check(body) == ""


# Every sampling option OpenAI has, then the edge values each adapter must skip: a bool
# (an int to Python), a string, None, an empty stop, a zero limit (max_tokens wins then).
SAMPLING_FULL = {
    "messages": [{"role": "user", "content": "hi"}],
    "temperature": 1.5,
    "top_p": 0.9,
    "seed": 7,
    "frequency_penalty": 0.5,
    "presence_penalty": -0.25,
    "max_tokens": 100,
    "max_completion_tokens": 300,
    "stop": ["END", "", "STOP"],
    "response_format": {"type": "json_object"},
    "n": 2,
    "logprobs": True,
}
SAMPLING_EDGE = {
    "messages": [{"role": "user", "content": "hi"}],
    "temperature": 0,
    "top_p": True,
    "seed": "7",
    "frequency_penalty": None,
    "max_tokens": 100,
    "max_completion_tokens": 0,
    "stop": "",
}
HI = b'"messages":[{"role":"user","content":"hi"}]'
ANTHROPIC_HI = b'"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]'
GEMINI_HI = b'"contents":[{"role":"user","parts":[{"text":"hi"}]}]'


@pytest.mark.parametrize(
    ("adapter", "body", "wire", "dropped"),
    [
        (
            AnthropicAdapter(),
            SAMPLING_FULL,
            b'{"model":"m1","max_tokens":300,' + ANTHROPIC_HI + b',"temperature":1.0,'
            b'"top_p":0.9,"stop_sequences":["END","STOP"]}',
            ("seed", "frequency_penalty", "presence_penalty", "response_format", "n", "logprobs"),
        ),
        (
            AnthropicAdapter(),
            SAMPLING_EDGE,
            b'{"model":"m1","max_tokens":100,' + ANTHROPIC_HI + b',"temperature":0}',
            ("seed", "frequency_penalty"),
        ),
        (
            CohereAdapter(),
            SAMPLING_FULL,
            b'{"model":"m1",' + HI + b',"temperature":1.5,"p":0.9,"seed":7,'
            b'"frequency_penalty":0.5,"presence_penalty":-0.25,"max_tokens":300,'
            b'"stop_sequences":["END","STOP"],"response_format":{"type":"json_object"},'
            b'"stream":false}',
            (),
        ),
        (
            CohereAdapter(),
            SAMPLING_EDGE,
            b'{"model":"m1",' + HI + b',"temperature":0,"max_tokens":100,"stream":false}',
            (),
        ),
        (
            GeminiAdapter(),
            SAMPLING_FULL,
            b"{" + GEMINI_HI + b',"generationConfig":{"temperature":1.5,"topP":0.9,'
            b'"maxOutputTokens":300,"stopSequences":["END","STOP"],'
            b'"responseMimeType":"application/json"}}',
            (),
        ),
        (
            GeminiAdapter(),
            SAMPLING_EDGE,
            b"{" + GEMINI_HI + b',"generationConfig":{"temperature":0,"maxOutputTokens":100}}',
            (),
        ),
        (
            OllamaAdapter(),
            SAMPLING_FULL,
            b'{"model":"m1",' + HI + b',"stream":false,"options":{"temperature":1.5,'
            b'"top_p":0.9,"seed":7,"frequency_penalty":0.5,"presence_penalty":-0.25,'
            b'"num_predict":300,"stop":["END","STOP"]},"format":"json"}',
            ("n", "logprobs"),
        ),
        (
            OllamaAdapter(),
            SAMPLING_EDGE,
            b'{"model":"m1",' + HI + b',"stream":false,"options":{"temperature":0,'
            b'"num_predict":100}}',
            (),
        ),
    ],
    ids=[
        f"{name}-{case}"
        for name in ("anthropic", "cohere", "gemini", "ollama")
        for case in ("full", "edge")
    ],
)
def test_sampling_options_reach_each_provider_byte_for_byte(adapter, body, wire, dropped):
    """The exact request body: each provider's names for OpenAI's sampling options, in
    its order, with what it cannot take left out and named."""
    upstream = adapter.build_request(route(), ChatRequest(body=body), [])
    assert upstream.body == wire
    assert upstream.dropped == dropped


def test_azure_request_translation():
    upstream, body = build(
        AzureOpenAIAdapter(),
        {"messages": [{"role": "user", "content": "hi"}], "stream": True},
        base_url="https://res.openai.azure.com",
        model="gpt-4o",
    )
    assert (
        upstream.url
        == "https://res.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
    )
    assert upstream.headers["api-key"] == "k-123" and "authorization" not in upstream.headers
    assert "model" not in body and body["stream_options"] == {"include_usage": True}
    upstream, _ = build(
        AzureOpenAIAdapter(),
        {"messages": []},
        deployment="prod-4o",
        api_version="2025-01-01-preview",
    )
    assert "/deployments/prod-4o/" in upstream.url and upstream.url.endswith("=2025-01-01-preview")


@pytest.mark.parametrize(
    "model", ["o1", "o3-mini", "o4-mini-2025-04-16", "gpt-5", "gpt-5-mini", "openai/o3"]
)
def test_reasoning_models_get_valid_requests(model):
    request = {
        "model": "x",
        "max_tokens": 50,
        "temperature": 0.7,
        "top_p": 0.5,
        "presence_penalty": 1,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
    }
    _, body = build(OpenAIAdapter("openai"), request, model=model)
    assert body["max_completion_tokens"] == 50 and "max_tokens" not in body
    assert not {"temperature", "top_p", "presence_penalty"} & set(body)
    assert body["messages"][0]["role"] == "developer"


def test_non_reasoning_models_keep_their_parameters():
    request = {
        "max_completion_tokens": 50,
        "temperature": 0.7,
        "messages": [{"role": "system", "content": "s"}],
    }
    _, body = build(OpenAIAdapter("openai"), request, model="gpt-4o")
    assert body["temperature"] == 0.7 and body["messages"][0]["role"] == "system"
    assert body["max_completion_tokens"] == 50
    _, local = build(OpenAIAdapter("openai_compatible"), request, model="qwen2.5")
    assert local["max_tokens"] == 50 and "max_completion_tokens" not in local
    _, old = build(
        OpenAIAdapter("openai"), {"messages": [{"role": "system", "content": "s"}]}, model="o1-mini"
    )
    assert old["messages"][0]["role"] == "user"


def test_auto_detection_by_host_then_key():
    assert detect_provider(route(base_url="https://api.anthropic.com")) == "anthropic"
    assert (
        detect_provider(route(base_url="https://generativelanguage.googleapis.com/v1beta"))
        == "gemini"
    )
    assert detect_provider(route(base_url="https://api.cohere.ai")) == "cohere"
    assert detect_provider(route(base_url="https://x.openai.azure.com")) == "azure"
    assert detect_provider(route(base_url="https://api.groq.com/openai/v1")) == "groq"
    assert detect_provider(route(base_url="https://api.openai.com/v1")) == "openai"
    assert (
        detect_provider(route(base_url="http://127.0.0.1:9", api_key="sk-ant-api03-x"))
        == "anthropic"
    )
    assert detect_provider(route(base_url="http://127.0.0.1:9", api_key="AIzaSyX")) == "gemini"
    assert detect_provider(route(base_url="http://127.0.0.1:9", deployment="d")) == "azure"
    assert (
        detect_provider(route(base_url="http://127.0.0.1:9", api_key="whatever"))
        == "openai_compatible"
    )
    assert isinstance(
        adapter_for(route("auto", base_url="https://api.anthropic.com")), AnthropicAdapter
    )
    assert known_provider("cohere") and not known_provider("bedrock")


# ---- the Anthropic client format ----------------------------------------------------------


def test_anthropic_inbound_becomes_openai_shape():
    chat = parse_anthropic_messages(
        json.dumps(
            {
                "model": "claude-x",
                "max_tokens": 100,
                "system": [{"type": "text", "text": "Sys"}],
                "stop_sequences": ["Z"],
                "tools": [
                    {"name": TOOL_NAME, "description": "d", "input_schema": {"type": "object"}}
                ],
                "tool_choice": {
                    "type": "tool",
                    "name": TOOL_NAME,
                    "disable_parallel_tool_use": True,
                },
                "messages": [
                    {"role": "user", "content": "Weather?"},
                    {
                        "role": "assistant",
                        "content": [
                            {
                                "type": "tool_use",
                                "id": "toolu_1",
                                "name": TOOL_NAME,
                                "input": {"city": "Oslo"},
                            }
                        ],
                    },
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "toolu_1",
                                "content": [{"type": "text", "text": "21C"}],
                            },
                            {"type": "text", "text": "Thanks"},
                            {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                        ],
                    },
                ],
            }
        ).encode()
    )
    body = chat.body
    assert chat.client_format == ANTHROPIC and chat.model == "claude-x"
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool", "user"]
    assert body["messages"][2]["tool_calls"][0]["function"] == {
        "name": TOOL_NAME,
        "arguments": '{"city": "Oslo"}',
    }
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "toolu_1", "content": "21C"}
    assert body["messages"][4]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "https://x/y.png"},
    }
    assert body["tool_choice"] == {"type": "function", "function": {"name": TOOL_NAME}}
    assert (
        body["parallel_tool_calls"] is False and body["stop"] == ["Z"] and body["max_tokens"] == 100
    )


def test_openai_completion_as_anthropic_message():
    stream = TranslatingStream(OpenAIStreamDecoder(), OpenAIChunkRenderer("m", include_usage=True))
    out = run(stream, "".join(openai_tool_stream("m", True)).encode(), 5)
    assert openai_view(out)[1] == TOOL_NAME
    message = to_anthropic(
        {
            "id": "chatcmpl-1",
            "model": "gpt",
            "choices": [
                {
                    "message": {
                        "content": "ok",
                        "tool_calls": [
                            {"id": "call_1", "function": {"name": "f", "arguments": '{"a":1}'}}
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4},
        }
    )
    assert message["content"] == [
        {"type": "text", "text": "ok"},
        {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
    ]
    assert message["stop_reason"] == "tool_use" and message["usage"] == {
        "input_tokens": 3,
        "output_tokens": 4,
    }


def test_agent_sized_requests_translate_for_every_provider():
    """What OpenClaw sends: 12 tools, a named tool_choice, list-form content, tool-call ids
    with characters Anthropic refuses, and max_completion_tokens."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": f"tool_{n}",
                "description": f"Tool number {n}",
                "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}},
            },
        }
        for n in range(12)
    ]
    body = {
        **CONVERSATION,
        "tools": tools,
        "tool_choice": {"type": "function", "function": {"name": "tool_7"}},
    }
    _, claude = build(AnthropicAdapter(), body)
    assert len(claude["tools"]) == 12 and claude["tool_choice"] == {
        "type": "tool",
        "name": "tool_7",
    }
    assert claude["max_tokens"] == 300 and FakeAnthropicProvider.check(claude) == ""
    _, gemini = build(GeminiAdapter(), body)
    assert len(gemini["tools"][0]["functionDeclarations"]) == 12
    assert gemini["toolConfig"]["functionCallingConfig"] == {
        "mode": "ANY",
        "allowedFunctionNames": ["tool_7"],
    }
    assert FakeGeminiProvider.check(gemini) == ""
    _, cohere = build(CohereAdapter(), body)
    assert len(cohere["tools"]) == 12 and cohere["tool_choice"] == "REQUIRED"
    assert FakeCohereProvider.check(cohere) == ""
    _, azure = build(AzureOpenAIAdapter(), body)
    assert azure["tool_choice"] == body["tool_choice"] and azure["max_completion_tokens"] == 300


def test_gemini_signatures_survive_the_round_trip_and_long_ids_fit_openai():
    decoder = GeminiAdapter().stream_decoder()
    events = decoder.feed("".join(gemini_stream("", tool=True)).encode()) + decoder.finish()
    call_id = next(e.id for e in events if isinstance(e, ev.ToolCallStart))
    assert set(call_id) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
    history = {
        "messages": [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": TOOL_NAME, "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": "21C"},
        ]
    }
    _, body = build(GeminiAdapter(), history)
    assert body["contents"][1]["parts"][0]["thoughtSignature"] == GEMINI_SIGNATURE
    assert body["contents"][2]["parts"][0]["functionResponse"]["name"] == TOOL_NAME
    _, claude = build(AnthropicAdapter(), history)
    assert FakeAnthropicProvider.check(claude) == ""
    _, gpt = build(OpenAIAdapter("openai"), history)
    short = gpt["messages"][1]["tool_calls"][0]["id"]
    assert len(short) <= 40 and gpt["messages"][2]["tool_call_id"] == short
    assert history["messages"][1]["tool_calls"][0]["id"] == call_id, (
        "the client's request is untouched"
    )
    foreign = {**history, "messages": [{**m} for m in history["messages"]]}
    foreign["messages"][1]["tool_calls"] = [
        {"id": "toolu_01", "function": {"name": TOOL_NAME, "arguments": "{}"}}
    ]
    _, body = build(GeminiAdapter(), foreign)
    assert body["contents"][1]["parts"][0]["thoughtSignature"] == "skip_thought_signature_validator"


@pytest.mark.parametrize(
    "adapter,body,message",
    [
        (
            AnthropicAdapter(),
            {"type": "error", "error": {"type": "rate_limit_error", "message": "Slow down"}},
            "Slow down",
        ),
        (
            GeminiAdapter(),
            {"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT"}},
            "API key not valid.",
        ),
        (
            CohereAdapter(),
            {"id": "e", "message": "invalid request: model"},
            "invalid request: model",
        ),
        (
            AzureOpenAIAdapter(),
            {"error": {"code": "DeploymentNotFound", "message": "No deployment"}},
            "No deployment",
        ),
    ],
)
def test_provider_error_messages_are_found(adapter, body, message):
    assert adapter.error_message(400, json.dumps(body).encode()) == message
