"""POST /v1/responses: OpenAI's Responses API in, through a real router, to fake OpenAI-chat
and Anthropic providers, with the real openai SDK as the client (whole answers, streams
with the event lifecycle, the SDK's stream helper, tool-call round trips,
previous_response_id, errors, and HTTPS-proxy mode)."""

from __future__ import annotations

import json
import ssl

import openai
import pytest
from conftest import LAUNCHERS, Router, free_port, unique
from fakes import (
    TOOL_ARGS,
    TOOL_NAME,
    FakeAnthropicProvider,
    Reply,
    openai_chunk,
    openai_completion,
    openai_reply,
    openai_stream,
)

# provider → (classifier digit, the tier's text, its fake)
PROVIDERS = {"openai": "0", "anthropic": "1"}
TOOLS = [
    {
        "type": "function",
        "name": TOOL_NAME,
        "description": "Current weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city"],
        },
    }
]
# The lifecycle of one text answer, after the deltas are folded into one.
TEXT_LIFECYCLE = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]
CALL_LIFECYCLE = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture(scope="module")
def anthropic_fake():
    fake = FakeAnthropicProvider("anthropic")
    yield fake
    fake.close()


@pytest.fixture(scope="module", params=LAUNCHERS)
def router(request, upstreams_session, anthropic_fake, tmp_path_factory):
    """cheap = the fake OpenAI-chat provider, medium = the fake Anthropic provider."""
    env = {
        **upstreams_session.env(),
        "FALLBACK_ENABLED": "false",
        "MEDIUM_BASE_URL": anthropic_fake.url,
        "MEDIUM_API_KEY": "sk-ant-api03-test-key-0001",
        "MEDIUM_MODEL": "claude-sonnet-4-5",
    }
    instance = Router(env, tmp_path_factory.mktemp("responses"), launcher=request.param)
    yield instance
    instance.stop()


@pytest.fixture
def fakes(upstreams, anthropic_fake):
    """The fakes by provider name; tool-calling OpenAI answers; overrides undone after."""
    upstreams.cheap.override = lambda r: openai_reply(r.json, r.json["model"], "Hello from cheap!")
    anthropic_fake.requests.clear()
    yield {"openai": upstreams.cheap, "anthropic": anthropic_fake}
    anthropic_fake.override = None


def client_for(router: Router) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=router.url + "/v1",
        api_key="anything",
        max_retries=0,
        http_client=openai.DefaultHttpxClient(trust_env=False, timeout=20),
    )


def use(upstreams, provider: str) -> str:
    upstreams.classifier.digit = PROVIDERS[provider]
    return f"Hello from {'cheap' if provider == 'openai' else 'anthropic'}!"


def folded(types: list[str]) -> list[str]:
    """Event types with runs of the same delta event folded into one."""
    out: list[str] = []
    for kind in types:
        if not (out and out[-1] == kind and kind.endswith(".delta")):
            out.append(kind)
    return out


@pytest.mark.parametrize("provider", PROVIDERS)
def test_whole_answer_is_a_response_object(router, upstreams, fakes, provider):
    text = use(upstreams, provider)
    client = client_for(router)
    raw = client.responses.with_raw_response.create(
        model="xrouter/auto",
        instructions="Answer briefly.",
        input=unique("Say hello"),
        max_output_tokens=64,
        metadata={"run": "t1"},
    )
    response = raw.parse()
    assert raw.headers["x-xrouter-upstream"] == ("cheap" if provider == "openai" else "medium")
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.output_text == text
    assert [item.type for item in response.output] == ["message"]
    assert response.output[0].content[0].type == "output_text"
    assert response.usage.input_tokens == 11 and response.usage.output_tokens == 7
    assert response.usage.total_tokens == 18
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    assert response.instructions == "Answer briefly." and response.metadata == {"run": "t1"}
    assert response.max_output_tokens == 64
    sent = fakes[provider].requests[-1].json
    if provider == "openai":
        assert sent["messages"][0] == {"role": "system", "content": "Answer briefly."}
        assert (
            sent["messages"][1]["role"] == "user" and "Say hello" in sent["messages"][1]["content"]
        )
        assert sent["max_tokens"] == 64
    else:
        assert sent["system"] == [{"type": "text", "text": "Answer briefly."}]
        assert sent["max_tokens"] == 64 and "Say hello" in json.dumps(sent["messages"])
    # The classifier saw the person's words, not the instructions.
    assert any("Say hello" in t and "Answer briefly" not in t for t in upstreams.classifier.texts())


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_has_the_event_lifecycle_in_order(router, upstreams, fakes, provider):
    text = use(upstreams, provider)
    events = list(
        client_for(router).responses.create(
            model="xrouter/auto", input=unique("Stream a hello"), stream=True
        )
    )
    types = [event.type for event in events]
    assert folded(types) == TEXT_LIFECYCLE
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == text
    item_id = events[2].item.id
    assert all(getattr(e, "item_id", item_id) == item_id for e in events)
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == text
    completed = events[-1].response
    assert completed.status == "completed" and completed.output_text == text
    assert completed.id == events[0].response.id
    assert completed.usage.input_tokens == 11 and completed.usage.output_tokens == 7
    assert completed.usage.total_tokens == 18


def test_stream_frames_name_their_event(router, upstreams, fakes):
    """Each SSE frame's `event:` line names the type in its data (what Codex reads)."""
    use(upstreams, "openai")
    body = {"model": "xrouter/auto", "input": unique("raw frames"), "stream": True}
    with router.client() as client:
        reply = client.post("/v1/responses", json=body)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in reply.text.split("\n\n") if f.strip()]
    for frame in frames:
        event_line, data_line = frame.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        assert json.loads(data_line[6:])["type"] == event_line[7:]
    assert "[DONE]" not in reply.text


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_sdk_stream_helper(router, upstreams, fakes, provider):
    text = use(upstreams, provider)
    with client_for(router).responses.stream(
        model="xrouter/auto", input=unique("helper hello")
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == text
    assert final.output_text == text and final.usage.output_tokens == 7


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_function_call_round_trip(router, upstreams, fakes, provider, stream):
    """function_call out, function_call_output back in; the follow-up stays on the task's
    tier even when the classifier would now say otherwise (routing/toolloop.py)."""
    use(upstreams, provider)
    client = client_for(router)
    ask = {"role": "user", "content": unique("What is the weather in Paris?")}
    if stream:
        with client.responses.stream(model="xrouter/auto", input=[ask], tools=TOOLS) as events:
            types = [e.type for e in events]
            first = events.get_final_response()
        assert folded(types) == CALL_LIFECYCLE
    else:
        first = client.responses.create(model="xrouter/auto", input=[ask], tools=TOOLS)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == TOOL_NAME
    assert json.loads(calls[0].arguments) == TOOL_ARGS and calls[0].call_id
    classified = len(upstreams.classifier.requests)
    upstreams.classifier.digit = "2"  # a re-classification would move it to frontier
    follow_up = [
        ask,
        *[item.model_dump(exclude_none=True) for item in first.output],
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "22 C, sunny"},
    ]
    raw = client.responses.with_raw_response.create(
        model="xrouter/auto", input=follow_up, tools=TOOLS
    )
    second = raw.parse()
    assert raw.headers["x-xrouter-upstream"] == ("cheap" if provider == "openai" else "medium")
    assert len(upstreams.classifier.requests) == classified
    assert second.output_text.startswith("Hello from")
    sent = fakes[provider].requests[-1].json
    if provider == "openai":
        assistant, result = sent["messages"][-2:]
        assert assistant["tool_calls"][0]["id"] == calls[0].call_id
        assert assistant["tool_calls"][0]["function"]["name"] == TOOL_NAME
        assert result == {
            "role": "tool",
            "tool_call_id": calls[0].call_id,
            "content": "22 C, sunny",
        }
        assert sent["tools"][0]["function"]["name"] == TOOL_NAME
    else:
        use_block = sent["messages"][-2]["content"][-1]
        result = sent["messages"][-1]["content"][-1]
        assert use_block["type"] == "tool_use" and use_block["id"] == calls[0].call_id
        assert result["type"] == "tool_result" and result["tool_use_id"] == calls[0].call_id


def test_request_fields_are_translated_and_echoed(router, upstreams, fakes):
    use(upstreams, "openai")
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    response = client_for(router).responses.create(
        model="xrouter/auto",
        input=[
            {"role": "developer", "content": "Be terse."},
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": unique("json please")}],
            },
        ],
        temperature=0.2,
        top_p=0.9,
        reasoning={"effort": "low"},
        text={
            "format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}
        },
        tool_choice="none",
        tools=TOOLS,
        store=True,
        include=["reasoning.encrypted_content"],
    )
    sent = upstreams.cheap.requests[-1].json
    assert sent["messages"][0] == {"role": "system", "content": "Be terse."}
    assert sent["temperature"] == 0.2 and sent["top_p"] == 0.9
    assert sent["reasoning_effort"] == "low" and sent["tool_choice"] == "none"
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema, "strict": True},
    }
    assert response.temperature == 0.2 and response.text.format.type == "json_schema"
    assert response.tool_choice == "none" and response.tools[0].name == TOOL_NAME


def test_previous_response_id_continues_the_conversation(router, upstreams, fakes):
    """The router keeps its own answers (streamed ones too); the instructions of the
    earlier turn are not carried over, as on OpenAI."""
    use(upstreams, "openai")
    client = client_for(router)
    name = unique("My name is Ada.")
    with client.responses.stream(
        model="xrouter/auto", input=name, instructions="Old instructions."
    ) as stream:
        first = stream.get_final_response()
    second = client.responses.create(
        model="xrouter/auto", previous_response_id=first.id, input="What is my name?"
    )
    assert second.previous_response_id == first.id
    sent = upstreams.cheap.requests[-1].json["messages"]
    assert sent == [
        {"role": "user", "content": name},
        {"role": "assistant", "content": "Hello from cheap!"},
        {"role": "user", "content": "What is my name?"},
    ]
    third = client.responses.create(
        model="xrouter/auto", previous_response_id=second.id, input="And again?"
    )
    assert len(upstreams.cheap.requests[-1].json["messages"]) == 5
    assert third.output_text == "Hello from cheap!"


def test_unknown_or_unstored_previous_response_is_a_400(router, upstreams, fakes):
    use(upstreams, "openai")
    client = client_for(router)
    with pytest.raises(openai.BadRequestError) as unknown:
        client.responses.create(
            model="xrouter/auto", previous_response_id="resp_never_made", input="hi"
        )
    assert unknown.value.body["code"] == "previous_response_not_found"
    assert "resp_never_made" in unknown.value.message
    unstored = client.responses.create(model="xrouter/auto", input=unique("hi"), store=False)
    with pytest.raises(openai.BadRequestError, match="not found"):
        client.responses.create(
            model="xrouter/auto", previous_response_id=unstored.id, input="again"
        )


def test_item_references_to_the_routers_answers_are_read_as_the_items(router, upstreams, fakes):
    """What the Vercel AI SDK sends on a second turn (store defaults to true): its earlier
    answer as `{"type": "item_reference", "id": …}`, to be resolved by whoever made it."""
    use(upstreams, "openai")
    client = client_for(router)
    ask = unique("Hello there")
    first = client.responses.create(model="xrouter/cheap", input=ask)
    reference = {"type": "item_reference", "id": first.output[0].id}
    question = {"role": "user", "content": [{"type": "input_text", "text": "And then?"}]}
    user = {"role": "user", "content": [{"type": "input_text", "text": ask}]}
    second = client.responses.create(model="xrouter/cheap", input=[user, reference, question])
    assert second.output_text == "Hello from cheap!"
    assert upstreams.cheap.requests[-1].json["messages"] == [
        {"role": "user", "content": ask},
        {"role": "assistant", "content": "Hello from cheap!"},
        {"role": "user", "content": "And then?"},
    ]
    # A reference the router never made or no longer holds: a 400 naming it, one log line.
    before = len(upstreams.cheap.requests)
    with pytest.raises(openai.BadRequestError) as error:
        client.responses.create(
            model="xrouter/cheap",
            input=[user, {"type": "item_reference", "id": "msg_gone"}, question],
        )
    assert error.value.body["code"] == "item_not_found" and "'msg_gone'" in error.value.message
    assert len(upstreams.cheap.requests) == before
    router.settle()
    assert "rejected status=400 method=POST path=/v1/responses reason=item_not_found" in (
        router.logs()
    )


def test_response_store_forgets_the_items_of_an_answer_it_drops():
    from xrouter_core.wire.responses import ResponseStore

    store = ResponseStore(max_entries=1)
    item = {"id": "msg_a", "type": "message", "role": "assistant", "content": []}
    store.put("resp_a", [{"role": "assistant", "content": "a"}], [item], minted=False)
    found = store.item("msg_a")
    assert found is not None and found.item == item and found.minted is False
    found.item["content"].append("changed")
    assert store.item("msg_a").item == item  # a copy is handed out
    store.put("resp_b", [{"role": "assistant", "content": "b"}], [{**item, "id": "msg_b"}])
    assert store.item("msg_a") is None and store.get("resp_a") is None
    assert store.item("msg_b").minted is True


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"model": "xrouter/auto"}, "'input' is required"),
        ({"input": 5}, "'input' must be a string or an array"),
        ({"input": "hi", "tools": [{"type": "web_search"}]}, "'web_search'"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "item_reference to 'x'"),
        ({"input": "hi", "max_output_tokens": 0}, "'max_output_tokens'"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "'input_file'",
        ),
    ],
)
def test_bad_input_is_a_400_that_says_why(router, upstreams, fakes, body, words):
    before = len(upstreams.cheap.requests)
    with pytest.raises(openai.BadRequestError) as error:
        client_for(router).responses.create(**body)
    assert words in error.value.message
    assert error.value.body["type"] == "invalid_request_error"
    assert len(upstreams.cheap.requests) == before


def test_not_json_is_a_400(router):
    with router.client() as client:
        reply = client.post(
            "/v1/responses", content=b"{nope", headers={"content-type": "application/json"}
        )
    assert reply.status_code == 400 and "not valid JSON" in reply.json()["error"]["message"]
    with router.client() as client:
        assert client.get("/v1/responses").status_code == 405


def test_upstream_error_status_reaches_the_sdk(router, upstreams, fakes):
    use(upstreams, "openai")
    upstreams.cheap.override = lambda r: Reply(500, {"error": {"message": "engine exploded"}})
    client = client_for(router)
    with pytest.raises(openai.InternalServerError, match="engine exploded"):
        client.responses.create(model="xrouter/auto", input=unique("boom"))
    with pytest.raises(openai.InternalServerError, match="engine exploded"):
        list(client.responses.create(model="xrouter/auto", input=unique("boom"), stream=True))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_upstream_dying_mid_stream_is_response_failed(router, upstreams, fakes, provider):
    use(upstreams, provider)
    if provider == "openai":
        chunks = openai_stream(["Hel", "lo"])[:2]
        upstreams.cheap.override = lambda r: Reply(chunks=chunks, action="reset_after_chunks")
    else:
        error = 'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
        fakes["anthropic"].override = lambda r: Reply(chunks=[error])
    events = list(
        client_for(router).responses.create(model="xrouter/auto", input=unique("die"), stream=True)
    )
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-2:] == ["error", "response.failed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    failed = events[-1].response
    assert failed.status == "failed" and failed.error.code == "server_error"
    expected = "closed the stream" if provider == "openai" else "Overloaded"
    assert expected in failed.error.message and expected in events[-2].message


def test_proxy_mode_routes_responses_calls(start_router, upstreams):
    """HTTPS_PROXY clients: POST https://api.openai.com/v1/responses is routed (the real
    host is never contacted, the route's key replaces the client's)."""
    proxy_port = free_port()
    router = start_router(args=["--mode", f"regular@127.0.0.1:{proxy_port}"], wait=False)
    ca = router.wait_for_proxy(proxy_port)
    client = openai.OpenAI(
        api_key="sk-client-openai-key",
        max_retries=0,
        http_client=openai.DefaultHttpxClient(
            proxy=f"http://127.0.0.1:{proxy_port}",
            trust_env=False,
            verify=ssl.create_default_context(cafile=str(ca)),
        ),
    )
    upstreams.classifier.digit = "0"
    raw = client.responses.with_raw_response.create(model="gpt-5", input=unique("proxied"))
    assert raw.headers["x-xrouter-upstream"] == "cheap"
    assert raw.parse().output_text == "Hello from cheap!"
    request = upstreams.cheap.requests[-1]
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-cheap-secret-0001"


def test_the_router_key_guards_responses(start_router, upstreams):
    router = start_router({"ROUTER_API_KEY": "router-key-1"})
    with router.client() as client:
        assert client.post("/v1/responses", json={"input": "hi"}).status_code == 401
        ok = client.post(
            "/v1/responses",
            json={"input": unique("hi")},
            headers={"authorization": "Bearer router-key-1"},
        )
    assert ok.status_code == 200 and ok.json()["object"] == "response"


def test_namespace_tools_are_offered_flat_and_named_back(router, upstreams, fakes):
    """Codex offers functions grouped in `namespace` tools: chat providers get them flat
    (`<namespace>__<name>`), the client gets calls back with name and namespace."""
    use(upstreams, "openai")

    def call_first_tool(request) -> Reply:
        body = request.json
        if body["messages"][-1]["role"] == "tool":
            return openai_reply(body, body["model"], "Hello from cheap!")
        call = {
            "id": "call_ns1",
            "type": "function",
            "function": {"name": body["tools"][0]["function"]["name"], "arguments": "{}"},
        }
        return Reply(body=openai_completion("", body["model"], tool_calls=[call]))

    upstreams.cheap.override = call_first_tool
    tools = [{"type": "namespace", "name": "weather", "description": "Weather", "tools": TOOLS}]
    client = client_for(router)
    ask = {"role": "user", "content": unique("namespaced weather")}
    first = client.responses.create(model="xrouter/auto", input=[ask], tools=tools)
    assert (
        upstreams.cheap.requests[-1].json["tools"][0]["function"]["name"] == "weather__get_weather"
    )
    call = first.output[0]
    assert call.type == "function_call" and call.name == TOOL_NAME
    assert call.namespace == "weather"
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}
    client.responses.create(
        model="xrouter/auto",
        input=[ask, call.model_dump(exclude_none=True), output],
        tools=tools,
    )
    sent = upstreams.cheap.requests[-1].json["messages"]
    assert sent[-2]["tool_calls"][0]["function"]["name"] == "weather__get_weather"


# ---- a route that speaks Responses (provider openai_responses) -------------------------

NATIVE_USAGE = {
    "input_tokens": 21,
    "input_tokens_details": {"cached_tokens": 4},
    "output_tokens": 5,
    "output_tokens_details": {"reasoning_tokens": 2},
    "total_tokens": 26,
}


def native_response(model: str, status: str = "completed", text: str = "Native hi!") -> dict:
    message = {
        "id": "msg_native1",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    return {
        "id": "resp_native1",
        "object": "response",
        "created_at": 1_700_000_000,
        "status": status,
        "model": model,
        "output": [message] if status == "completed" else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": NATIVE_USAGE if status == "completed" else None,
    }


def native_stream(model: str) -> list[str]:
    """The documented event flow of one text answer, as OpenAI's Responses API sends it."""
    where = {"item_id": "msg_native1", "output_index": 0, "content_index": 0}
    part = {"type": "output_text", "text": "", "annotations": []}
    done = native_response(model)
    events = [
        ("response.created", {"response": native_response(model, "in_progress")}),
        ("response.in_progress", {"response": native_response(model, "in_progress")}),
        (
            "response.output_item.added",
            {
                "output_index": 0,
                "item": {**done["output"][0], "status": "in_progress", "content": []},
            },
        ),
        ("response.content_part.added", {**where, "part": part}),
        ("response.output_text.delta", {**where, "delta": "Native ", "logprobs": []}),
        ("response.output_text.delta", {**where, "delta": "hi!", "logprobs": []}),
        ("response.output_text.done", {**where, "text": "Native hi!", "logprobs": []}),
        ("response.content_part.done", {**where, "part": done["output"][0]["content"][0]}),
        ("response.output_item.done", {"output_index": 0, "item": done["output"][0]}),
        ("response.completed", {"response": done}),
    ]
    return [
        f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': n, **data})}\n\n"
        for n, (kind, data) in enumerate(events)
    ]


@pytest.fixture
def native(start_router, upstreams):
    """frontier = a fake OpenAI speaking the Responses API (and chat completions)."""

    def answer(request) -> Reply:
        body = request.json
        if request.path == "/v1/chat/completions":
            return openai_reply(body, body["model"], "Chat hi!")
        if request.path != "/v1/responses":
            return Reply(404, {"error": {"message": "not found"}})
        if body.get("stream"):
            return Reply(chunks=native_stream(body["model"]))
        return Reply(body=native_response(body["model"]))

    upstreams.frontier.override = answer
    return start_router({"FRONTIER_PROVIDER": "openai_responses", "FALLBACK_ENABLED": "false"})


def test_a_responses_route_gets_the_request_natively(native, upstreams):
    client = client_for(native)
    tools = [*TOOLS, {"type": "web_search"}]
    ask = unique("native please")
    raw = client.responses.with_raw_response.create(
        model="xrouter/frontier",
        input=ask,
        tools=tools,
        store=False,
        include=["reasoning.encrypted_content"],
    )
    response = raw.parse()
    assert raw.headers["x-xrouter-upstream"] == "frontier"
    sent = upstreams.frontier.requests[-1]
    assert sent.path == "/v1/responses"
    assert sent.headers["authorization"] == "Bearer sk-frontier-secret-0003"
    assert sent.json["input"] == ask and sent.json["tools"] == tools
    assert sent.json["model"] == "frontier-model" and sent.json["store"] is False
    assert sent.json["include"] == ["reasoning.encrypted_content"]
    # The provider's answer as it is: its id, its usage with cached and reasoning tokens.
    assert response.id == "resp_native1" and response.output_text == "Native hi!"
    assert response.usage.input_tokens_details.cached_tokens == 4
    assert response.usage.output_tokens_details.reasoning_tokens == 2
    # A hosted tool with no Responses route in reach is a 400 naming it.
    with pytest.raises(openai.BadRequestError, match="'web_search'"):
        client.responses.create(model="xrouter/cheap", input=unique("no native"), tools=tools)
    native.settle()
    assert "route=frontier" in native.logs() and "tokens=21+5" in native.logs()


def test_a_responses_route_streams_through_and_its_answers_continue(native, upstreams):
    client = client_for(native)
    events = list(client.responses.create(model="xrouter/frontier", input=unique("s"), stream=True))
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(10))
    assert events[-1].response.usage.total_tokens == 26
    first = events[-1].response.id
    # The native answer was kept: a follow-up on a chat route gets the conversation.
    client.responses.create(model="xrouter/cheap", previous_response_id=first, input="more")
    history = upstreams.cheap.requests[-1].json["messages"]
    assert history[-2:] == [
        {"role": "assistant", "content": "Native hi!"},
        {"role": "user", "content": "more"},
    ]
    # And on the Responses route, as input items (that route never saw the chat answer).
    second = client.responses.create(model="xrouter/cheap", input=unique("start"))
    client.responses.create(model="xrouter/frontier", previous_response_id=second.id, input="on")
    sent = upstreams.frontier.requests[-1].json
    assert "previous_response_id" not in sent
    assert sent["input"][1:] == [
        {
            "type": "message",
            "role": "assistant",
            "content": [
                {
                    "type": "output_text",
                    "text": "Hello from cheap!",
                    "annotations": [],
                    "logprobs": [],
                }
            ],
        },
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "on"}]},
    ]


def test_a_responses_route_gets_the_routers_items_and_its_own_references(native, upstreams):
    """On a Responses route, a reference to an item the router made (a translated answer
    the route never saw) is sent as that item; one to the route's own item goes as sent."""
    client = client_for(native)
    chat_answer = client.responses.create(model="xrouter/cheap", input=unique("hi"))
    own = client.responses.create(model="xrouter/frontier", input=unique("hi there"))
    made, theirs = chat_answer.output[0].id, own.output[0].id
    question = {"role": "user", "content": [{"type": "input_text", "text": "more"}]}
    client.responses.create(
        model="xrouter/frontier",
        input=[
            {"type": "item_reference", "id": made},
            {"type": "item_reference", "id": theirs},
            {"type": "item_reference", "id": "msg_only_the_provider_knows"},
            {"type": "item_reference", "id": 5},  # the provider's to refuse
            question,
        ],
    )
    sent = upstreams.frontier.requests[-1].json["input"]
    assert sent == [
        {
            "type": "message",
            "role": "assistant",
            "content": [
                {
                    "type": "output_text",
                    "text": "Hello from cheap!",
                    "annotations": [],
                    "logprobs": [],
                }
            ],
        },
        {"type": "item_reference", "id": theirs},
        {"type": "item_reference", "id": "msg_only_the_provider_knows"},
        {"type": "item_reference", "id": 5},
        question,
    ]


def test_an_answer_cut_at_the_limit_is_incomplete(router, upstreams, fakes):
    use(upstreams, "openai")
    upstreams.cheap.override = lambda r: Reply(
        body=openai_completion("Hello fr", r.json["model"], finish_reason="length")
    )
    client = client_for(router)
    whole = client.responses.create(model="xrouter/auto", input=unique("long"), max_output_tokens=3)
    assert whole.status == "incomplete" and whole.incomplete_details.reason == "max_output_tokens"
    assert whole.output_text == "Hello fr"
    upstreams.cheap.override = lambda r: Reply(
        chunks=[
            *openai_stream(["Hello fr"])[:2],
            openai_chunk({}, r.json["model"], finish_reason="length"),
            "data: [DONE]\n\n",
        ]
    )
    events = list(client.responses.create(model="xrouter/auto", input=unique("long"), stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"


def test_an_input_image_reaches_a_vision_route_as_an_image(router, upstreams, fakes):
    """Only frontier is vision-capable by default (and fallback is off here: a cheap
    decision would be a 400 no_vision_route)."""
    upstreams.classifier.digit = "2"
    url = "data:image/png;base64,iVBORw0KGgo="
    content = [
        {"type": "input_text", "text": unique("What is in this picture?")},
        {"type": "input_image", "image_url": url, "detail": "low"},
    ]
    raw = client_for(router).responses.with_raw_response.create(
        model="xrouter/auto", input=[{"role": "user", "content": content}]
    )
    assert raw.headers["x-xrouter-upstream"] == "frontier"
    sent = upstreams.frontier.requests[-1].json["messages"][-1]["content"]
    assert sent[1] == {"type": "image_url", "image_url": {"url": url, "detail": "low"}}
