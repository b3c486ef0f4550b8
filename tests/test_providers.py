"""Every provider behind a real router, with the official SDKs as clients: the openai SDK
on /v1/chat/completions and the anthropic SDK on /v1/messages must parse every answer
and stream (text, tool calls reassembled from deltas, finish reasons, usage)."""

from __future__ import annotations

import json
import ssl

import anthropic
import openai
import pytest
from conftest import Router, free_port, reassemble, unique
from fakes import (
    TOOL_ARGS,
    TOOL_NAME,
    FakeAnthropicProvider,
    FakeAzureProvider,
    FakeCohereProvider,
    FakeGeminiProvider,
    Reply,
    anthropic_stream,
    openai_reply,
)

# digit → (router, tier, the fake's name, (prompt, completion) tokens it reports)
CASES = {
    "anthropic": ("a", "0", (11, 7)),
    "gemini": ("a", "1", (11, 7)),
    "cohere": ("a", "2", (211, 7)),
    "azure": ("b", "2", (11, 7)),
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "description": "Current weather of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


class Providers:
    def __init__(self) -> None:
        self.anthropic = FakeAnthropicProvider("anthropic")
        self.gemini = FakeGeminiProvider("gemini")
        self.cohere = FakeCohereProvider("cohere")
        self.azure = FakeAzureProvider("azure")

    def close(self) -> None:
        for fake in (self.anthropic, self.gemini, self.cohere, self.azure):
            fake.close()


@pytest.fixture(scope="module")
def providers():
    fakes = Providers()
    yield fakes
    fakes.close()


@pytest.fixture(scope="module")
def routers(providers, upstreams_session, tmp_path_factory):
    """Router a: cheap=Anthropic and medium=Gemini found by key prefix, frontier=Cohere by
    PROVIDER. Router b: frontier=Azure found by its DEPLOYMENT setting."""
    base = upstreams_session.env()
    env_a = {
        **base,
        # Each adapter's own answers, errors included; fallback is tested in test_fallback.py.
        "FALLBACK_ENABLED": "false",
        "CHEAP_BASE_URL": providers.anthropic.url,
        "CHEAP_API_KEY": "sk-ant-api03-test-key-0001",
        "CHEAP_MODEL": "claude-sonnet-4-5",
        "MEDIUM_BASE_URL": providers.gemini.url,
        "MEDIUM_API_KEY": "AIzaSy-test-key-0002",
        "MEDIUM_MODEL": "gemini-2.5-flash",
        "FRONTIER_BASE_URL": providers.cohere.url,
        "FRONTIER_API_KEY": "cohere-test-key-0003",
        "FRONTIER_MODEL": "command-a-03-2025",
        "FRONTIER_PROVIDER": "cohere",
    }
    env_b = {
        **base,
        "FRONTIER_BASE_URL": providers.azure.url,
        "FRONTIER_API_KEY": "azure-test-key-0004",
        "FRONTIER_MODEL": "gpt-4o",
        "FRONTIER_DEPLOYMENT": "prod-gpt-4o",
    }
    started = {
        "a": Router(env_a, tmp_path_factory.mktemp("providers-a")),
        "b": Router(env_b, tmp_path_factory.mktemp("providers-b")),
    }
    yield started
    for router in started.values():
        router.stop()


def use(routers, upstreams, provider: str) -> tuple[Router, tuple[int, int]]:
    name, digit, tokens = CASES[provider]
    upstreams.classifier.digit = digit
    return routers[name], tokens


def openai_client(router: Router) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=router.url + "/v1",
        api_key="client-key",
        http_client=openai.DefaultHttpxClient(trust_env=False),
        max_retries=0,
    )


def anthropic_client(router: Router) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=router.url,
        api_key="client-key",
        http_client=anthropic.DefaultHttpxClient(trust_env=False),
        max_retries=0,
    )


def ask(text: str) -> list[dict]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": unique(text)}]


@pytest.mark.parametrize("provider", CASES)
def test_openai_sdk_parses_answers_and_streams(routers, upstreams, providers, provider):
    router, (prompt, completion) = use(routers, upstreams, provider)
    client = openai_client(router)
    expected = f"Hello from {provider}!"

    raw = client.chat.completions.with_raw_response.create(
        model="xrouter/auto", messages=ask("plain"), max_completion_tokens=64
    )
    assert (
        raw.headers["x-xrouter-upstream"]
        == {"0": "cheap", "1": "medium", "2": "frontier"}[CASES[provider][1]]
    )
    answer = raw.parse()
    assert answer.model and answer.choices[0].message.content == expected
    assert answer.choices[0].finish_reason == "stop"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (prompt, completion)

    stream = client.chat.completions.create(
        model="xrouter/auto",
        messages=ask("streamed"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert text == expected and finish == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == prompt + completion

    without = list(
        client.chat.completions.create(model="xrouter/auto", messages=ask("no usage"), stream=True)
    )
    assert all(c.usage is None for c in without), "usage only when the client asked"
    assert f"tokens={prompt}+{completion}" in router.logs(), "streamed usage reaches finished()"


@pytest.mark.parametrize("provider", CASES)
def test_openai_sdk_reassembles_tool_calls(routers, upstreams, providers, provider):
    router, (prompt, completion) = use(routers, upstreams, provider)
    client = openai_client(router)
    answer = client.chat.completions.create(
        model="xrouter/auto", messages=ask("weather?"), tools=TOOLS, tool_choice="auto"
    )
    call = answer.choices[0].message.tool_calls[0]
    assert answer.choices[0].finish_reason == "tool_calls"
    assert call.function.name == TOOL_NAME and json.loads(call.function.arguments) == TOOL_ARGS

    streamed = reassemble(
        client.chat.completions.create(
            model="xrouter/auto",
            messages=ask("weather, streamed?"),
            tools=TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    calls, finish, usage = streamed["calls"], streamed["finish"], streamed["usage"]
    assert list(calls) == [0] and calls[0]["id"] and calls[0]["name"] == TOOL_NAME
    assert json.loads(calls[0]["arguments"]) == TOOL_ARGS and finish == "tool_calls"
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt, completion)

    # The loop goes on: the tool result goes back to the same provider, valid for it.
    follow_up = [
        *ask("weather?"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": calls[0]["id"],
                    "type": "function",
                    "function": {"name": TOOL_NAME, "arguments": calls[0]["arguments"]},
                }
            ],
        },
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": '{"temp": 21}'},
    ]
    final = client.chat.completions.create(model="xrouter/auto", messages=follow_up, tools=TOOLS)
    assert final.choices[0].message.content == f"Hello from {provider}!"


@pytest.mark.parametrize("provider", [*CASES, "openai"])
def test_anthropic_sdk_on_messages_endpoint(routers, upstreams, providers, provider):
    if provider == "openai":
        router, tokens = routers["b"], (11, 7)
        upstreams.classifier.digit = "1"  # medium: the session's OpenAI fake, tools too
        upstreams.medium.override = lambda r: openai_reply(
            r.json, "medium-model", "Hello from medium!"
        )
        expected = "Hello from medium!"
    else:
        router, tokens = use(routers, upstreams, provider)
        expected = f"Hello from {provider}!"
    client = anthropic_client(router)
    message = client.messages.create(
        model="xrouter/auto",
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": unique("hi")}],
    )
    assert message.content[0].text == expected and message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == tokens

    with client.messages.stream(
        model="xrouter/auto",
        max_tokens=100,
        messages=[{"role": "user", "content": unique("stream")}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == expected and final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == tokens

    tools = [
        {
            "name": TOOL_NAME,
            "description": "Weather",
            "input_schema": TOOLS[0]["function"]["parameters"],
        }
    ]
    message = client.messages.create(
        model="xrouter/auto",
        max_tokens=100,
        tools=tools,
        messages=[{"role": "user", "content": unique("weather")}],
    )
    tool_use = [b for b in message.content if b.type == "tool_use"][0]
    assert (
        message.stop_reason == "tool_use"
        and tool_use.name == TOOL_NAME
        and tool_use.input == TOOL_ARGS
    )
    with client.messages.stream(
        model="xrouter/auto",
        max_tokens=100,
        tools=tools,
        messages=[{"role": "user", "content": unique("weather s")}],
    ) as stream:
        final = stream.get_final_message()
    tool_use = [b for b in final.content if b.type == "tool_use"][0]
    assert final.stop_reason == "tool_use" and tool_use.input == TOOL_ARGS and tool_use.id

    follow_up = client.messages.create(
        model="xrouter/auto",
        max_tokens=100,
        tools=tools,
        messages=[
            {"role": "user", "content": unique("weather")},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": tool_use.id, "name": TOOL_NAME, "input": TOOL_ARGS}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "21C"}],
            },
        ],
    )
    assert follow_up.content[0].text == expected


def test_provider_errors_keep_status_and_message(routers, upstreams, providers):
    router, _ = use(routers, upstreams, "anthropic")
    providers.anthropic.override = lambda request: Reply(
        429,
        {
            "type": "error",
            "error": {
                "type": "rate_limit_error",
                "message": "Number of requests has exceeded your rate limit",
            },
        },
    )
    try:
        with pytest.raises(openai.RateLimitError) as caught:
            openai_client(router).chat.completions.create(
                model="xrouter/auto", messages=ask("limited")
            )
        assert "exceeded your rate limit" in caught.value.message
        assert caught.value.body["type"] == "upstream_error"
        with pytest.raises(anthropic.RateLimitError) as caught_a:
            anthropic_client(router).messages.create(
                model="xrouter/auto",
                max_tokens=10,
                messages=[{"role": "user", "content": unique("limited")}],
            )
        assert caught_a.value.body["error"]["type"] == "rate_limit_error"
        assert "sk-ant-api03" not in json.dumps(caught_a.value.body)
    finally:
        providers.anthropic.override = None


def test_health_names_the_detected_adapters(routers):
    with routers["a"].client() as client:
        routes = client.get("/health").json()["routes"]
    assert {t: r["adapter"] for t, r in routes.items()} == {
        "cheap": "anthropic",
        "medium": "gemini",
        "frontier": "cohere",
    }
    assert "sk-ant-api03" not in json.dumps(routes)


def test_models_and_messages_auth(routers, start_router):
    router = start_router({"ROUTER_API_KEY": "router-secret-1"})
    with router.client() as client:
        models = client.get("/v1/models", headers={"x-api-key": "router-secret-1"}).json()
        assert [m["id"] for m in models["data"]][:4] == [
            "xrouter/auto",
            "xrouter/cheap",
            "xrouter/medium",
            "xrouter/frontier",
        ]
        denied = client.post("/v1/messages", json={"messages": []}, headers={"x-api-key": "wrong"})
        assert denied.status_code == 401 and denied.json()["type"] == "error"
        bad = client.post(
            "/v1/messages", json={"messages": []}, headers={"x-api-key": "router-secret-1"}
        )
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


def test_anthropic_clients_behind_the_proxy_are_routed(start_router, upstreams):
    """Claude Code style: HTTPS_PROXY to the router, api.anthropic.com is never contacted."""
    proxy_port = free_port()
    router = start_router(args=["--mode", f"regular@127.0.0.1:{proxy_port}"], wait=False)
    ca = router.wait_for_proxy(proxy_port)
    client = anthropic.Anthropic(
        api_key="sk-ant-client-key",
        max_retries=0,
        http_client=anthropic.DefaultHttpxClient(
            proxy=f"http://127.0.0.1:{proxy_port}",
            trust_env=False,
            verify=ssl.create_default_context(cafile=str(ca)),
        ),
    )
    upstreams.classifier.digit = "0"
    message = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=50,
        messages=[{"role": "user", "content": unique("proxied")}],
    )
    assert message.content[0].text == "Hello from cheap!"
    assert upstreams.cheap.requests[-1].headers["authorization"] == "Bearer sk-cheap-secret-0001"
    assert "x-api-key" not in upstreams.cheap.requests[-1].headers


def test_error_event_mid_stream_reaches_both_sdks(routers, upstreams, providers):
    """Anthropic's documented overloaded_error arriving after the stream began."""
    router, _ = use(routers, upstreams, "anthropic")
    error = 'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
    providers.anthropic.override = lambda request: Reply(
        chunks=[*anthropic_stream("Hel")[:4], error]
    )
    try:
        with pytest.raises(openai.APIError, match="Overloaded"):
            for _ in openai_client(router).chat.completions.create(
                model="xrouter/auto", messages=ask("overloaded"), stream=True
            ):
                pass
        client = anthropic_client(router)
        with (
            pytest.raises(anthropic.APIStatusError, match="Overloaded"),
            client.messages.stream(
                model="xrouter/auto",
                max_tokens=10,
                messages=[{"role": "user", "content": unique("overloaded")}],
            ) as stream,
        ):
            stream.get_final_message()
    finally:
        providers.anthropic.override = None
