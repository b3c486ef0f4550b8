"""Fallback on a real mitmdump: fake providers fail in each way fallback must handle,
streamed and not; the next route serves the request and the client never sees the failure."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from conftest import free_port, unique
from fakes import Pause, Reply

CHAT = "/v1/chat/completions"


def failing(status: int):
    """A provider that answers `status` with an OpenAI-style error body."""
    return lambda request: Reply(
        status=status, body={"error": {"message": f"fake {status}", "type": "x"}}
    )


FAILURES = {
    "refused": None,  # the route points at a closed port
    "reset": lambda request: Reply(action="reset"),
    "hang": lambda request: Reply(action="hang"),
    **{str(status): failing(status) for status in (404, 408, 409, 425, 429, 500, 503)},
    # 200s that are no answer: a gateway's error document, an HTML page.
    "error_in_200": lambda request: Reply(body={"error": {"message": "overloaded"}}),
    "html_in_200": lambda request: Reply(
        body="<html>gateway</html>", headers={"content-type": "text/html"}
    ),
}
REASONS = {
    "refused": "unreachable",
    "reset": "unreachable",
    "hang": "timeout",
    "error_in_200": "not_a_completion",
    "html_in_200": "not_a_completion",
}


def ask(text: str, model: str = "xrouter/auto", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def stream_text(reply) -> str:
    """The text of an OpenAI SSE stream, checking it ends with [DONE]."""
    text, done = [], False
    for line in reply.text.splitlines():
        if not line.startswith("data: "):
            continue
        data = line[len("data: ") :]
        if data == "[DONE]":
            done = True
            continue
        for choice in json.loads(data).get("choices") or []:
            text.append((choice.get("delta") or {}).get("content") or "")
    assert done, reply.text
    return "".join(text)


@pytest.fixture(scope="module")
def fallback_router(upstreams_session, tmp_path_factory):
    """Medium fails (as each test says) and falls back to frontier; the first-byte timeout
    is short so a hanging upstream costs the test half a second."""
    from conftest import Router

    dead = f"http://127.0.0.1:{free_port()}/v1"
    tmp = tmp_path_factory.mktemp("fallback")
    env = upstreams_session.env()
    env.update(
        {
            "MEDIUM_FIRST_BYTE_TIMEOUT_MS": "500",
            "BREAKER_FAILURES": "1000",  # these tests fail medium on purpose, many times
        }
    )
    router = Router(env, tmp)
    env_dead = {**env, "MEDIUM_BASE_URL": dead}
    dead_router = Router(env_dead, tmp_path_factory.mktemp("fallback-dead"))
    yield {"live": router, "dead": dead_router}
    router.stop()
    dead_router.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("failure", list(FAILURES))
def test_each_failure_falls_back_to_the_next_route(fallback_router, upstreams, failure, stream):
    upstreams.classifier.digit = "1"
    router = fallback_router["dead" if failure == "refused" else "live"]
    if FAILURES[failure] is not None:
        upstreams.medium.override = FAILURES[failure]
    with router.client() as client:
        reply = client.post(CHAT, json=ask(unique(f"fail {failure}"), stream=stream, max_tokens=5))
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-xrouter-upstream"] == "frontier"
    assert reply.headers["x-xrouter-decision"] == "1"
    reason = REASONS.get(failure, failure)
    assert reply.headers["x-xrouter-fallback"] == f"medium:{reason}"
    if stream:
        assert "text/event-stream" in reply.headers["content-type"]
        assert stream_text(reply) == "Hello from frontier!"
    else:
        body = reply.json()
        assert body["choices"][0]["message"]["content"] == "Hello from frontier!"
        # The response names the model that really answered.
        assert body["model"] == "frontier-model"
    # The fallback request was rewritten for the frontier route (its key and model).
    sent = upstreams.frontier.requests[-1]
    assert sent.headers["authorization"] == "Bearer sk-frontier-secret-0003"
    assert sent.json["model"] == "frontier-model" and sent.json["max_tokens"] == 5
    if failure != "refused":
        assert upstreams.medium.requests, "the medium route was tried first"
    assert "Traceback" not in router.logs()


def test_fallback_stream_is_streamed_not_buffered(fallback_router, upstreams):
    """The fallback route's answer reaches the client chunk by chunk: the first chunk
    arrives while the upstream still holds the rest back."""
    upstreams.classifier.digit = "1"
    upstreams.medium.override = FAILURES["503"]
    gate = threading.Event()
    from fakes import openai_stream

    upstreams.frontier.override = lambda request: Reply(
        chunks=openai_stream(["first", " second"], "frontier-model", pause=Pause(10, gate))
    )
    router = fallback_router["live"]
    with (
        router.client() as client,
        client.stream("POST", CHAT, json=ask(unique("streamed fallback"), stream=True)) as reply,
    ):
        assert reply.headers["x-xrouter-fallback"] == "medium:503"
        chunks = reply.iter_raw()
        seen = b""
        while b"first" not in seen:
            seen += next(chunks)
        assert not gate.is_set() and b"second" not in seen
        gate.set()
        rest = b"".join(chunks)
    assert b"second" in rest and rest.rstrip().endswith(b"data: [DONE]")


def test_every_route_failing_gives_one_error_listing_the_attempts(fallback_router, upstreams):
    upstreams.classifier.digit = "0"
    upstreams.cheap.override = FAILURES["500"]
    upstreams.medium.override = FAILURES["hang"]
    upstreams.frontier.override = lambda request: Reply(
        status=429,
        headers={"retry-after": "12"},
        body={"error": {"message": "slow down, sk-frontier-secret-0003", "type": "x"}},
    )
    router = fallback_router["live"]
    for stream in (False, True):
        with router.client() as client:
            reply = client.post(CHAT, json=ask(unique("all fail"), stream=stream))
        assert reply.status_code == 429  # a retry later can help: the client is told when
        assert reply.headers["retry-after"] == "12"
        assert reply.headers["x-xrouter-fallback"] == "cheap:500, medium:timeout, frontier:429"
        error = reply.json()["error"]
        assert error["code"] == "all_routes_failed" or error["code"] == "all_routes_rate_limited"
        for part in ("'cheap'", "HTTP 500", "'medium'", "first-byte timeout", "'frontier'"):
            assert part in error["message"]
        assert "sk-frontier-secret-0003" not in reply.text


def test_outage_everywhere_is_a_503_with_retry_after(fallback_router, upstreams):
    upstreams.classifier.digit = "1"
    upstreams.medium.override = FAILURES["reset"]
    upstreams.frontier.override = FAILURES["503"]
    with fallback_router["live"].client() as client:
        reply = client.post(CHAT, json=ask(unique("outage")))
    assert reply.status_code == 503 and int(reply.headers["retry-after"]) >= 1
    assert reply.json()["error"]["code"] == "all_routes_failed"


def test_not_found_everywhere_is_a_404_clients_do_not_retry(fallback_router, upstreams):
    upstreams.classifier.digit = "1"
    upstreams.medium.override = FAILURES["404"]
    upstreams.frontier.override = FAILURES["404"]
    with fallback_router["live"].client() as client:
        reply = client.post(CHAT, json=ask(unique("gone")))
    assert reply.status_code == 404 and "retry-after" not in reply.headers


def test_client_errors_are_not_retried(fallback_router, upstreams):
    upstreams.classifier.digit = "1"
    upstreams.medium.override = lambda request: Reply(
        status=400, body={"error": {"message": "bad max_tokens", "type": "invalid"}}
    )
    with fallback_router["live"].client() as client:
        reply = client.post(CHAT, json=ask(unique("bad request")))
    assert reply.status_code == 400 and "bad max_tokens" in reply.text
    assert not upstreams.frontier.requests


def test_long_healthy_stream_is_not_cut(fallback_router, upstreams):
    """The first-byte timeout (0.5 s on medium) ends at the headers: a stream that then
    pauses longer than that keeps going."""
    upstreams.classifier.digit = "1"
    from fakes import openai_stream

    upstreams.medium.override = lambda request: Reply(
        chunks=openai_stream(["slow", " stream"], "medium-model", pause=Pause(1.2))
    )
    with fallback_router["live"].client() as client:
        reply = client.post(CHAT, json=ask(unique("slow stream"), stream=True))
    assert reply.status_code == 200 and "x-xrouter-fallback" not in reply.headers
    assert stream_text(reply) == "slow stream"
    assert not upstreams.frontier.requests


def test_circuit_breaker_skips_a_failing_route_and_shows_it(start_router, upstreams):
    router = start_router({"BREAKER_FAILURES": "2", "BREAKER_COOLDOWN_S": "1"})
    upstreams.classifier.digit = "1"
    upstreams.medium.override = FAILURES["503"]
    with router.client() as client:
        for _ in range(2):
            assert client.post(CHAT, json=ask(unique("trip"))).status_code == 200
        tried = len(upstreams.medium.requests)
        health = client.get("/health").json()
        assert health["fallback"]["circuit_breaker"]["medium"]["state"] == "open"
        reply = client.post(CHAT, json=ask(unique("skipped")))
        assert reply.status_code == 200
        assert reply.headers["x-xrouter-fallback"] == "medium:circuit_open"
        assert len(upstreams.medium.requests) == tried  # not even tried
        time.sleep(1.1)  # the cool-down ends: medium may try again, and it works now
        upstreams.medium.override = None
        reply = client.post(CHAT, json=ask(unique("recovered")))
        assert reply.headers["x-xrouter-upstream"] == "medium"
        assert (
            client.get("/health").json()["fallback"]["circuit_breaker"]["medium"]["state"]
            == "closed"
        )
        # The two fallbacks taken (medium:503 → frontier) are in the usage counters.
        deadline = time.monotonic() + 5
        while client.get("/usage").json()["fallbacks"] < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/usage").json()["fallbacks"] == 2


def test_connect_timeout(start_router, upstreams):
    """A route whose TCP connect never completes (a full listen backlog drops the SYN)
    falls back after CONNECT_TIMEOUT_MS."""
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    port = blackhole.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue; later SYNs are dropped, connects hang
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.2)
        probe = socket.socket()
        probe.settimeout(0.5)
        try:
            probe.connect(("127.0.0.1", port))
            pytest.skip("this kernel completes connects to a full backlog")
        except (TimeoutError, OSError):
            pass
        finally:
            probe.close()
        router = start_router(
            {"MEDIUM_BASE_URL": f"http://127.0.0.1:{port}/v1", "MEDIUM_CONNECT_TIMEOUT_MS": "400"}
        )
        upstreams.classifier.digit = "1"
        with router.client() as client:
            started = time.monotonic()
            reply = client.post(CHAT, json=ask(unique("blackhole")))
            elapsed = time.monotonic() - started
        assert reply.status_code == 200
        assert reply.headers["x-xrouter-fallback"] == "medium:timeout"
        assert elapsed < 10  # far below the kernel's own connect timeout (minutes)
    finally:
        for filler in fillers:
            filler.close()
        blackhole.close()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("failure", ["503", "reset"])
def test_openai_route_falls_back_to_an_anthropic_route(start_router, upstreams, failure, stream):
    """The fallback request is translated for the next route's provider, and its answer
    translated back: OpenAI wire on medium, Anthropic Messages on frontier."""
    fakes = pytest.importorskip("fakes")
    if not hasattr(fakes, "FakeAnthropicProvider"):
        pytest.skip("pending: needs the Anthropic adapter and fake (adapters branch)")
    anthropic = fakes.FakeAnthropicProvider("anthropic")
    try:
        router = start_router(
            {
                "FRONTIER_BASE_URL": anthropic.url,
                "FRONTIER_PROVIDER": "anthropic",
                "FRONTIER_MODEL": "claude-fake-1",
                "FRONTIER_API_KEY": "sk-ant-fake-0004",
            }
        )
        upstreams.classifier.digit = "1"
        upstreams.medium.override = FAILURES[failure]
        with router.client() as client:
            reply = client.post(CHAT, json=ask(unique("cross"), stream=stream, max_tokens=50))
        assert reply.status_code == 200, reply.text
        reason = "unreachable" if failure == "reset" else failure
        assert reply.headers["x-xrouter-fallback"] == f"medium:{reason}"
        assert reply.headers["x-xrouter-upstream"] == "frontier"
        if stream:
            assert stream_text(reply) == "Hello from anthropic!"
        else:
            body = reply.json()
            assert body["object"] == "chat.completion"
            assert body["choices"][0]["message"]["content"] == "Hello from anthropic!"
        sent = anthropic.requests[-1]
        assert sent.path == "/v1/messages" and sent.headers["x-api-key"] == "sk-ant-fake-0004"
        assert sent.json["model"] == "claude-fake-1"
        assert sent.json["max_tokens"] == 50 and "authorization" not in sent.headers
    finally:
        anthropic.close()


def test_a_recovered_route_is_used_again_on_a_kept_alive_connection(start_router, upstreams):
    """mitmproxy remembers a failed upstream connection per client connection; a client
    that keeps its connection alive (OpenClaw, the SDKs) must still reach the route once
    it is back, after the breaker's cool-down."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from fakes import openai_completion

    port = free_port()
    router = start_router(
        {
            "MEDIUM_BASE_URL": f"http://127.0.0.1:{port}/v1",
            "BREAKER_FAILURES": "1",
            "BREAKER_COOLDOWN_S": "1",
        }
    )
    upstreams.classifier.digit = "1"

    class Medium(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            body = json.dumps(openai_completion("Hello from revived medium")).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with router.client() as client:
        down = client.post(CHAT, json=ask(unique("medium down")))
        assert down.headers["x-xrouter-fallback"] == "medium:unreachable"
        server = ThreadingHTTPServer(("127.0.0.1", port), Medium)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            time.sleep(1.1)
            back = client.post(CHAT, json=ask(unique("medium back")))
        finally:
            server.shutdown()
            server.server_close()
    assert back.headers["x-xrouter-upstream"] == "medium", back.headers
    assert back.json()["choices"][0]["message"]["content"] == "Hello from revived medium"
