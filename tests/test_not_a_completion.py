"""A translated route that answers 200 with something that is not a chat completion: a
Responses or Anthropic Messages client routed to an OpenAI chat route gets a clear 502
error in its own format (naming the route's tier, never its key), whole or streamed, with
one log line, and the request is counted as an error in /usage.

A real router over the session's fake upstreams; the cheap tier's fake answers the odd
bodies (a JSON object without `choices`, text that is not JSON, a stream that is not chat
completion chunks)."""

from __future__ import annotations

import json

import pytest
from conftest import LAUNCHERS, Router, unique
from fakes import Reply, sse

CHEAP_KEY = "sk-cheap-secret-0001"
NOT_A_COMPLETION = "not_a_chat_completion"

# 200 answers a translation cannot read as a chat completion.
BODIES = {
    "json_without_choices": Reply(body={"foo": 1}),
    "completion_without_choices": Reply(
        body={"id": "chatcmpl-1", "object": "chat.completion", "model": "cheap-model"}
    ),
    "empty_choices": Reply(body={"id": "chatcmpl-2", "choices": []}),
    "not_json": Reply(
        body="<html>upstream gateway page</html>", headers={"content-type": "text/html"}
    ),
    # A gateway that puts the status in the body: an error document with a 200.
    "error_document": Reply(
        body={"error": {"message": "The model is overloaded", "type": "server_error"}}
    ),
}
# What a route of the client's own format (no translation) may not pass on as an answer.
NO_ANSWER = ("not_json", "error_document")
STREAMS = {
    "json_without_choices": Reply(chunks=[sse({"foo": 1}), sse("[DONE]")]),
    "not_sse": Reply(chunks=["hello, this is not an event stream\n\n"]),
}


@pytest.fixture(scope="module", params=LAUNCHERS)
def router(request, upstreams_session, tmp_path_factory):
    env = {**upstreams_session.env(), "FALLBACK_ENABLED": "false"}
    instance = Router(env, tmp_path_factory.mktemp("not-a-completion"), launcher=request.param)
    yield instance
    instance.stop()


@pytest.fixture
def cheap(upstreams):
    upstreams.classifier.digit = "0"  # everything to the cheap tier (the fake OpenAI chat)
    return upstreams.cheap


def responses_call(text: str, stream: bool = False) -> tuple[str, dict]:
    return "/v1/responses", {"model": "xrouter/auto", "input": text, "stream": stream}


def messages_call(text: str, stream: bool = False) -> tuple[str, dict]:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
    }
    return "/v1/messages", body


CALLS = {"responses": responses_call, "anthropic": messages_call}


def cheap_errors(router: Router) -> int:
    router.settle()
    with router.client() as client:
        reply = client.get("/usage")
    assert reply.status_code == 200, reply.text
    return reply.json()["tiers"]["cheap"]["errors"]


def complaint_lines(router: Router) -> list[str]:
    """The router's log lines that say an answer was not a chat completion."""
    return [
        line
        for line in router.logs().splitlines()
        if NOT_A_COMPLETION in line or "not a chat completion" in line
    ]


def check_counted_once(router: Router, errors_before: int, lines_before: int) -> None:
    """The request counted as one cheap-tier error, with one log line, and no key shown."""
    assert cheap_errors(router) == errors_before + 1
    lines = complaint_lines(router)
    assert len(lines) == lines_before + 1  # one log line for the request
    assert "route=cheap" in lines[-1] and "status=502" in lines[-1]
    assert CHEAP_KEY not in router.logs()


def check_error_message(message: str) -> None:
    assert "'cheap'" in message and "not a chat completion" in message
    assert CHEAP_KEY not in message


@pytest.mark.parametrize("client_format", CALLS)
@pytest.mark.parametrize("answer", BODIES)
def test_a_whole_answer_that_is_not_a_completion_is_a_502(router, cheap, client_format, answer):
    cheap.override = lambda r: BODIES[answer]
    errors_before = cheap_errors(router)
    lines_before = len(complaint_lines(router))
    path, body = CALLS[client_format](unique("odd answer"))
    with router.client() as client:
        reply = client.post(path, json=body)
    assert reply.status_code == 502, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    doc = reply.json()
    if client_format == "anthropic":
        assert doc["type"] == "error" and doc["error"]["type"] == "api_error"
        message = doc["error"]["message"]
    else:
        assert doc["error"]["code"] == NOT_A_COMPLETION
        assert doc["error"]["type"] == "upstream_error"
        message = doc["error"]["message"]
    check_error_message(message)
    assert reply.headers["x-xrouter-upstream"] == "cheap"
    check_counted_once(router, errors_before, lines_before)


@pytest.mark.parametrize("answer", NO_ANSWER)
def test_an_error_or_garbage_with_a_200_is_a_502_on_a_route_of_the_clients_format(
    router, cheap, answer
):
    """An OpenAI client on an OpenAI route gets the route's answer as it came, except a
    200 that is no answer at all: the client's SDK would read it as an empty completion."""
    cheap.override = lambda r: BODIES[answer]
    errors_before = cheap_errors(router)
    lines_before = len(complaint_lines(router))
    body = {"model": "xrouter/auto", "messages": [{"role": "user", "content": unique("odd")}]}
    with router.client() as client:
        reply = client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 502, reply.text
    error = reply.json()["error"]
    assert error["code"] == NOT_A_COMPLETION and error["type"] == "upstream_error"
    check_error_message(error["message"])
    if answer == "error_document":
        assert "The model is overloaded" in error["message"]
    assert reply.headers["x-xrouter-upstream"] == "cheap"
    check_counted_once(router, errors_before, lines_before)


def test_an_unknown_json_answer_on_a_route_of_the_clients_format_still_goes_through(router, cheap):
    """A JSON object that is no error is the route's business (an extension, a new
    shape): passed on as it came."""
    cheap.override = lambda r: BODIES["json_without_choices"]
    body = {"model": "xrouter/auto", "messages": [{"role": "user", "content": unique("odd")}]}
    with router.client() as client:
        reply = client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200 and reply.json() == {"foo": 1}


def events_of(text: str) -> list[tuple[str, dict]]:
    """An SSE body as (event name, data) pairs."""
    out = []
    for block in text.split("\n\n"):
        name, data = "", ""
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
        if data:
            out.append((name, json.loads(data)))
    return out


@pytest.mark.parametrize("client_format", CALLS)
@pytest.mark.parametrize("answer", STREAMS)
def test_a_stream_that_is_not_chat_chunks_ends_in_an_error(router, cheap, client_format, answer):
    cheap.override = lambda r: STREAMS[answer]
    errors_before = cheap_errors(router)
    lines_before = len(complaint_lines(router))
    path, body = CALLS[client_format](unique("odd stream"), stream=True)
    with router.client() as client:
        reply = client.post(path, json=body)
    assert reply.status_code == 200  # the stream's headers were sent before its body
    events = events_of(reply.text)
    names = [name for name, _ in events]
    if client_format == "anthropic":
        assert names[-1] == "error", names
        assert "message_stop" not in names and "content_block_start" not in names
        message = events[-1][1]["error"]["message"]
    else:
        assert names[-2:] == ["error", "response.failed"], names
        assert "response.completed" not in names
        failed = events[-1][1]["response"]
        assert failed["status"] == "failed" and failed["output"] == []
        message = failed["error"]["message"]
        assert events[-2][1]["message"] == message
    check_error_message(message)
    check_counted_once(router, errors_before, lines_before)


def test_a_good_answer_still_goes_through(router, cheap):
    """The check does not get in the way of real completions, whole or streamed."""
    for client_format, call in CALLS.items():
        for stream in (False, True):
            path, body = call(unique("fine"), stream=stream)
            with router.client() as client:
                reply = client.post(path, json=body)
            assert reply.status_code == 200, reply.text
            assert "Hello from cheap" in reply.text, (client_format, stream, reply.text)
            assert NOT_A_COMPLETION not in reply.text and "not a chat completion" not in reply.text
