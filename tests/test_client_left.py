"""A client that closes its connection mid-stream, through real routers: one that leaves
after its answer's finish (some SDKs stop reading there) was answered, a 200; one that
leaves before it is a 499 whose prompt and streamed tokens still count, as the provider
bills them. Before, both were a 499 that counted nothing."""

from __future__ import annotations

import threading

import httpx
import pytest
from conftest import unique
from fakes import FakeAnthropicProvider, Pause, Reply, anthropic_stream, openai_stream
from helpers import wait_for

KEY = "router-key-client-left"
PRICES = {"MEDIUM_INPUT_PRICE": "1", "MEDIUM_OUTPUT_PRICE": "2"}
AUTH = {"authorization": f"Bearer {KEY}"}


def leave_after(router, path: str, body: dict, marker: bytes, headers: dict) -> bytes:
    """Stream `body`, read until `marker` has come, then close the connection."""
    seen = b""
    with (
        httpx.Client(trust_env=False, timeout=30) as client,
        client.stream("POST", router.url + path, json=body, headers=headers) as reply,
    ):
        assert reply.status_code == 200
        for chunk in reply.iter_raw():
            seen += chunk
            if marker in seen:
                break
    return seen


def routed_line(router, text: str) -> str:
    """The router's log line of the one request, once it is written."""

    def line() -> str | None:
        lines = [x for x in router.logs().splitlines() if "routed decision=" in x]
        return lines[-1] if lines else None

    found = wait_for(line, timeout=15)
    assert found, router.logs()
    return found


def medium_usage(router) -> dict:
    def read() -> dict | None:
        with router.client(headers=AUTH) as client:
            tier = client.get("/usage").json()["tiers"]["medium"]
        return tier if tier["requests"] == 1 else None

    found = wait_for(read, timeout=15)
    assert found
    return found


def held(chunks: list, at: int, release: threading.Event) -> list:
    """The chunks with a pause at `at` that lasts until the client has left."""
    return [*chunks[:at], Pause(30, release), *chunks[at:]]


def test_a_client_that_leaves_after_the_finish_was_answered(start_router, upstreams):
    release = threading.Event()
    chunks = openai_stream(["Hello from medium", "!"])
    # role, two pieces, the finish; then a pause before the usage chunk and [DONE].
    upstreams.medium.override = lambda request: Reply(chunks=held(chunks, 4, release))
    router = start_router({**PRICES, "ROUTER_API_KEY": KEY})
    text = unique("leaves at the finish")
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], "stream": True}
    try:
        seen = leave_after(router, "/v1/chat/completions", body, b'"finish_reason": "stop"', AUTH)
    finally:
        release.set()
    assert b"Hello from medium" in seen and b"[DONE]" not in seen
    line = routed_line(router, text)
    assert " status=200 " in line and "error=" not in line, line
    tier = medium_usage(router)
    assert tier["errors"] == 0 and tier["estimatedRequests"] == 1
    assert tier["promptTokens"] == (len(text) + 3) // 4
    assert tier["completionTokens"] >= 1  # what was streamed, estimated


def test_a_client_that_leaves_mid_stream_is_a_499_that_counts(start_router, upstreams):
    release = threading.Event()
    chunks = openai_stream(["Hello from medium", "and more", "!"])
    upstreams.medium.override = lambda request: Reply(chunks=held(chunks, 3, release))
    router = start_router({**PRICES, "ROUTER_API_KEY": KEY})
    text = unique("leaves mid-stream")
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], "stream": True}
    try:
        seen = leave_after(router, "/v1/chat/completions", body, b"Hello from medium", AUTH)
    finally:
        release.set()
    assert b'"finish_reason": "stop"' not in seen
    line = routed_line(router, text)
    assert " status=499 " in line and "error=" in line, line
    tier = medium_usage(router)
    assert tier["errors"] == 1
    assert tier["promptTokens"] == (len(text) + 3) // 4  # billed, so counted
    assert tier["costUsd"] > 0


@pytest.fixture
def anthropic_fake():
    fake = FakeAnthropicProvider("anthropic")
    yield fake
    fake.close()


def test_an_anthropic_client_leaving_a_pass_through_stream_keeps_its_usage(
    start_router, upstreams, anthropic_fake
):
    """message_start's prompt count (11) and the output so far are the provider's own."""
    release = threading.Event()
    events = anthropic_stream("Hello from anthropic")
    # message_start, ping, content_block_start, the text's delta; then the pause.
    anthropic_fake.override = lambda request: Reply(
        chunks=held(events, 4, release), headers={"content-type": "text/event-stream"}
    )
    router = start_router(
        {
            **PRICES,
            "ROUTER_API_KEY": KEY,
            "MEDIUM_PROVIDER": "anthropic",
            "MEDIUM_BASE_URL": anthropic_fake.url,
            "MEDIUM_API_KEY": "sk-ant-api03-client-left-0001",
            "MEDIUM_MODEL": "claude-sonnet-4-5",
        }
    )
    text = unique("an anthropic client leaves")
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": text}],
    }
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    try:
        seen = leave_after(router, "/v1/messages", body, b"text_delta", headers)
    finally:
        release.set()
    assert b"message_stop" not in seen
    line = routed_line(router, text)
    assert " status=499 " in line and " tokens=11+1 " in line, line
    tier = medium_usage(router)
    assert (tier["promptTokens"], tier["completionTokens"]) == (11, 1)
    assert tier["estimatedRequests"] == 0 and tier["errors"] == 1
