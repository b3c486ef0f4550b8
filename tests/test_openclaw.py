"""OpenClaw-shaped requests (tests/openclaw_shapes.py) through a real router, end to end:
the classifier sees the person's text, a tool loop stays on one tier, and the streamed
answer parses with the OpenAI SDK, usage chunk included."""

from __future__ import annotations

import json
import time

import openai
import openclaw_shapes as oc
from conftest import unique


def sdk(router) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=router.url + "/v1",
        api_key="client-key",
        http_client=openai.DefaultHttpxClient(trust_env=False, timeout=20),
        max_retries=0,
    )


def stream(client: openai.OpenAI, body: dict) -> dict:
    """Send a request the way OpenClaw does and assemble the streamed answer."""
    with client.chat.completions.with_streaming_response.create(**body) as response:
        routed = {
            "decision": response.headers["x-xrouter-decision"],
            "upstream": response.headers["x-xrouter-upstream"],
        }
        text, calls, usage, finish = "", {}, None, None
        for chunk in response.parse():
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
                for call in choice.delta.tool_calls or []:
                    entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                    entry["id"] = call.id or entry["id"]
                    if call.function is not None:
                        entry["name"] = call.function.name or entry["name"]
                        entry["arguments"] += call.function.arguments or ""
    return {**routed, "text": text, "calls": list(calls.values()), "usage": usage, "finish": finish}


def routed_lines(router, since: int, count: int) -> list[str]:
    """The router's `routed …` log lines written after offset `since` (waits for `count`)."""
    deadline = time.monotonic() + 5
    while True:
        lines = [x for x in router.logs()[since:].splitlines() if " routed decision=" in x]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_classifier_gets_the_persons_text_and_the_stream_parses(router, upstreams):
    ask = unique("Summarize the release notes in two sentences")
    upstreams.classifier.by_text[ask] = "0"
    answer = stream(sdk(router), oc.request(ask))

    assert upstreams.classifier.texts() == [ask]
    assert (answer["decision"], answer["upstream"]) == ("0", "cheap")
    assert answer["text"] == "Hello from cheap!" and answer["finish"] == "stop"
    assert answer["usage"] is not None and answer["usage"].total_tokens == 18

    sent = upstreams.cheap.requests[-1].json
    assert sent["model"] == "cheap-model"
    # An OpenAI-compatible route gets the limit as max_tokens (local engines know only that).
    assert sent["max_tokens"] == 8192 and "max_completion_tokens" not in sent
    assert len(sent["tools"]) == 11 and sent["tool_choice"] == "auto"
    assert sent["stream_options"] == {"include_usage": True}
    # The client's messages travel unchanged: list-form content, context block and all.
    assert sent["messages"][2] == oc.context_message()


def test_a_retried_request_hits_the_decision_cache(router, upstreams):
    ask = unique("Draft a polite reply declining the meeting")
    upstreams.classifier.by_text[ask] = "1"
    client = sdk(router)
    first = stream(client, oc.request(ask, when="Sat 2026-11-21 22:13 UTC"))
    # A new run: another timestamp, another session id, the next day's system prompt.
    again = stream(client, oc.request(ask, when="Sun 2026-11-22 08:02 UTC", date="2026-11-22"))
    assert first["upstream"] == again["upstream"] == "medium"
    assert upstreams.classifier.texts() == [ask]


def test_a_tool_loop_stays_on_the_tier_of_its_first_request(router, upstreams):
    ask = unique("List the files here, then read the notes and summarize them")
    upstreams.classifier.by_text[ask] = "0"
    upstreams.cheap.override = oc.agent_turns(
        [("ls", {"path": "."}), ("read", {"path": "notes.md"})], "The notes say hello."
    )
    client = sdk(router)
    session = "8a0f5f7e-1c2b-4d3e-9f40-5a6b7c8d9e0f"
    offset = len(router.logs())

    first = stream(client, oc.request(ask, session=session))
    assert first["upstream"] == "cheap" and first["finish"] == "tool_calls"
    assert first["calls"] == [{"id": "call_1", "name": "ls", "arguments": '{"path": "."}'}]
    assert first["usage"].prompt_tokens == 900

    # Were the follow-ups classified again, they would now go to frontier.
    upstreams.classifier.by_text[ask] = "2"
    loop = [(oc.tool_call(1, "ls", {"path": "."}), "notes.md\nsrc/")]
    second = stream(client, oc.request(ask, session=session, loop=loop))
    assert second["upstream"] == "cheap"
    assert second["calls"][0]["name"] == "read"

    loop.append((oc.tool_call(2, "read", {"path": "notes.md"}), "hello"))
    third = stream(client, oc.request(ask, session=session, loop=loop))
    assert (third["decision"], third["upstream"]) == ("0", "cheap")
    assert third["text"] == "The notes say hello." and third["usage"].total_tokens == 958

    assert upstreams.classifier.texts() == [ask]
    assert not upstreams.frontier.requests
    sent = upstreams.cheap.requests[-1].json
    assert [m["role"] for m in sent["messages"]] == [
        "system", "user", "assistant", "tool", "assistant", "tool", "user"
    ]  # fmt: skip
    lines = routed_lines(router, offset, 3)
    assert ["source=llm" in lines[0], "source=tool_loop" in lines[1]] == [True, True]
    assert "source=tool_loop" in lines[2] and all("route=cheap" in x for x in lines)

    # The person writes again: a new task, classified again (now as frontier).
    upstreams.cheap.override = None
    follow = oc.request(ask, session=session, loop=loop)
    follow["messages"][-1:] = [
        {"role": "assistant", "content": "The notes say hello."},
        oc.person_message("Now rewrite them as a haiku", session=session),
        oc.context_message(),
    ]
    upstreams.classifier.by_text["Now rewrite them as a haiku"] = "2"
    after = stream(client, follow)
    assert after["upstream"] == "frontier"
    assert upstreams.classifier.texts()[-1].endswith("\n\nNow rewrite them as a haiku")
    assert "(previous answer: The notes say hello.)" in upstreams.classifier.texts()[-1]


def test_context_block_alone_is_not_classified(router, upstreams):
    """A request with nothing the person wrote (only client context) goes to frontier
    without asking the classifier."""
    body = oc.request("x")
    body["messages"] = [body["messages"][0], oc.context_message()]
    with router.client() as client:
        reply = client.post("/v1/chat/completions", json={**body, "stream": False})
    assert reply.status_code == 200
    assert reply.headers["x-xrouter-upstream"] == "frontier"
    assert not upstreams.classifier.requests
    assert json.loads(reply.text)["choices"][0]["message"]["content"] == "Hello from frontier!"
