"""The real OpenAI Agents SDK (pip `openai-agents`, 0.20 on the `openai<3` pin) through a
real router: an `Agent` with one function tool, run by `Runner.run` and streamed by
`Runner.run_streamed`, on its default model path (the Responses API, `xrouter-<tier>`
model names since the SDK reads `prefix/` as a provider).

Three routes behind the router, each a fake on 127.0.0.1 that calls the tool first and
then answers with what the tool returned: frontier speaks the Responses API natively
(`openai_responses`), cheap speaks chat completions, medium speaks Anthropic Messages; the
last two are reached by translation. The SDK's tracing export is off (and its client
ignores proxy settings), so nothing leaves loopback.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from conftest import unique
from fakes import (
    TOOL_ARGS,
    TOOL_NAME,
    FakeAnthropicProvider,
    anthropic_tool_loop,
    chat_tool_loop,
    responses_tool_loop,
    tool_loop_said,
)

agents = pytest.importorskip("agents", reason="openai-agents is in the test extras")
from agents import (  # noqa: E402
    Agent,
    Runner,
    function_tool,
    set_default_openai_api,
    set_default_openai_client,
    set_tracing_disabled,
)
from openai import AsyncOpenAI, DefaultAsyncHttpxClient  # noqa: E402

PROOF = "xrouter-agents-tool-ran"
TIERS = {"frontier": "responses", "cheap": "chat", "medium": "anthropic"}


def tool_output(city: str, unit: str) -> str:
    return f"{PROOF}: 21 degrees {unit} in {city}"


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
            "MEDIUM_API_KEY": "sk-ant-api03-agents-0001",
            "MEDIUM_MODEL": "claude-sonnet-4-5",
            "FALLBACK_ENABLED": "false",
        }
    )


class Seen:
    """What the SDK's HTTP client sent (each request body) and saw (each answer's
    routing headers)."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.headers: list[httpx.Headers] = []

    async def request(self, request: httpx.Request) -> None:
        self.bodies.append(json.loads(request.content))

    async def response(self, response: httpx.Response) -> None:
        self.headers.append(response.headers)


def make_agent(router, seen: Seen, model: str, calls: list[dict]) -> Agent:
    set_tracing_disabled(True)
    client = AsyncOpenAI(
        base_url=router.url + "/v1",
        api_key="anything",
        max_retries=0,
        http_client=DefaultAsyncHttpxClient(
            trust_env=False,
            timeout=30,
            event_hooks={"request": [seen.request], "response": [seen.response]},
        ),
    )
    # The SDK's defaults, with the router as its OpenAI: the Responses API.
    set_default_openai_client(client, use_for_tracing=False)
    set_default_openai_api("responses")

    @function_tool
    def get_weather(city: str, unit: str) -> str:
        """Current weather of a city."""
        calls.append({"city": city, "unit": unit})
        return tool_output(city, unit)

    return Agent(
        name="Weather",
        instructions="Answer with the tool's words.",
        tools=[get_weather],
        model=model,
    )


def sent_to(upstreams, anthropic_fake, tier: str) -> list[dict]:
    fake = {"frontier": upstreams.frontier, "cheap": upstreams.cheap, "medium": anthropic_fake}
    return [r.json for r in fake[tier].requests]


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
def test_an_agent_calls_its_tool_through_the_router(
    router, upstreams, anthropic_fake, tier, streamed
):
    anthropic_fake.requests.clear()
    seen, calls = Seen(), []
    agent = make_agent(router, seen, f"xrouter-{tier}", calls)
    ask = unique("What is the weather in Paris?")

    async def run():
        if not streamed:
            return await Runner.run(agent, ask), []
        result = Runner.run_streamed(agent, ask)
        kinds = [event.type async for event in result.stream_events()]
        return result, kinds

    result, kinds = asyncio.run(run())
    expected = tool_loop_said(tool_output(**TOOL_ARGS))
    # The SDK ran its tool once with the model's arguments, then printed the answer.
    assert calls == [TOOL_ARGS]
    assert result.final_output == expected
    if streamed:
        assert "raw_response_event" in kinds and "run_item_stream_event" in kinds
    # Two model turns, both routed to the tier named, with the router's headers.
    assert [h["x-xrouter-upstream"] for h in seen.headers] == [tier, tier]
    assert all(h["x-xrouter-decision"] for h in seen.headers)
    # The usage the SDK counted is the providers' (11 in + 7 out per turn).
    usage = result.context_wrapper.usage
    assert (usage.requests, usage.input_tokens, usage.output_tokens) == (2, 22, 14)
    # What reached the provider: the tool offered, then its output answering the call.
    first, second = sent_to(upstreams, anthropic_fake, tier)[-2:]
    if TIERS[tier] == "responses":
        # Same format: the SDK's own bodies, only the model replaced.
        for mine, theirs in zip(seen.bodies, (first, second), strict=True):
            assert theirs == {**mine, "model": "frontier-model"}
        assert first["tools"][0]["name"] == TOOL_NAME
        assert first.get("stream", False) is streamed
        outputs = [i for i in second["input"] if i.get("type") == "function_call_output"]
        assert outputs[0]["call_id"] == "call_resp1"
    elif TIERS[tier] == "chat":
        assert first["tools"][0]["function"]["name"] == TOOL_NAME
        assert second["messages"][-1]["role"] == "tool"
    else:
        assert first["tools"][0]["name"] == TOOL_NAME and first["model"] == "claude-sonnet-4-5"
        assert second["messages"][-1]["content"][0]["type"] == "tool_result"
    assert json.dumps(ask)[1:-1] in json.dumps(first)
    router.settle()
    logs = router.logs()
    assert f"route={tier}" in logs and "tokens=11+7" in logs


def test_auto_classifies_the_question_once_and_keeps_the_tool_loop(router, upstreams):
    """`xrouter-auto`: the classifier reads the person's words from the Responses input;
    the follow-up that carries the tool's output stays on the same route."""
    upstreams.classifier.digit = "2"
    seen, calls = Seen(), []
    agent = make_agent(router, seen, "xrouter-auto", calls)
    ask = unique("Weather in Paris please")
    result = asyncio.run(Runner.run(agent, ask))
    assert result.final_output == tool_loop_said(tool_output(**TOOL_ARGS)) and len(calls) == 1
    assert [h["x-xrouter-upstream"] for h in seen.headers] == ["frontier", "frontier"]
    texts = upstreams.classifier.texts()
    assert len(texts) == 1 and ask in texts[0] and PROOF not in texts[0]
    router.settle()
    assert "source=tool_loop" in router.logs()


@pytest.mark.parametrize("tier", TIERS)
def test_follow_up_turns_by_input_list_and_previous_response_id(
    router, upstreams, anthropic_fake, tier
):
    """The SDK's two ways to continue: its items back as input (`to_input_list()`), or
    `previous_response_id` (the router's store: the route never sees the id)."""
    seen, calls = Seen(), []
    agent = make_agent(router, seen, f"xrouter-{tier}", calls)

    async def run():
        first = await Runner.run(agent, unique("What is the weather in Paris?"))
        listed = await Runner.run(
            agent, [*first.to_input_list(), {"role": "user", "content": "Thanks!"}]
        )
        chained = await Runner.run(
            agent, "And in Lyon?", previous_response_id=first.last_response_id
        )
        return first, listed, chained

    first, listed, chained = asyncio.run(run())
    answer = tool_loop_said(tool_output(**TOOL_ARGS))
    assert first.final_output == listed.final_output == chained.final_output == answer
    assert len(calls) == 3 and set(h["x-xrouter-upstream"] for h in seen.headers) == {tier}
    # The chained turn reached the route with the whole conversation, no id it cannot know.
    last = sent_to(upstreams, anthropic_fake, tier)[-2]
    assert "previous_response_id" not in last
    assert answer in json.dumps(last) and "And in Lyon?" in json.dumps(last)
