"""Failing providers and classifiers in front of a real router: the client always gets a
clear answer (never a hang or a cut body), the router keeps serving the others, and it
recovers by itself when the failure ends."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest
from conftest import LAUNCHERS, Router, free_port, unique
from fakes import FakeOpenAIProvider, Pause, Reply, openai_stream

from xrouter_core.wire.sse import iter_events

CHAT = "/v1/chat/completions"


def ask(text: str, **extra) -> dict:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], **extra}


@pytest.fixture(scope="module", params=LAUNCHERS)
def router(request, upstreams_session, tmp_path_factory):
    """These tests are about how one failing route is answered: fallback to the next route
    (tested in test_fallback.py) is off here."""
    env = {**upstreams_session.env(), "FALLBACK_ENABLED": "false"}
    instance = Router(
        env, tmp_path_factory.mktemp(f"faults-{request.param}"), launcher=request.param
    )
    yield instance
    instance.stop()


def healthy(router, tier: str = "medium") -> None:
    with router.client() as client:
        assert client.get("/health").status_code == 200
        reply = client.post(CHAT, json=ask(unique("still fine")))
    assert reply.status_code == 200
    assert reply.headers["x-xrouter-upstream"] == tier


# ---- providers -----------------------------------------------------------------------------


def test_provider_refuses_then_comes_back(start_router, upstreams):
    """Nothing listens on the medium route: a clear 502; once a provider listens, the same
    router serves it without a restart."""
    port = free_port()
    router = start_router(
        {"MEDIUM_BASE_URL": f"http://127.0.0.1:{port}/v1", "FALLBACK_ENABLED": "false"}
    )
    upstreams.classifier.digit = "1"
    with router.client() as client:
        for stream in (False, True):
            reply = client.post(CHAT, json=ask(unique("refused"), stream=stream))
            assert reply.status_code == 502
            assert reply.json()["error"]["type"] == "upstream_unreachable"
    revived = FakeOpenAIProvider("revived", port=port)
    try:
        with router.client() as client:
            reply = client.post(CHAT, json=ask(unique("back")))
        assert reply.status_code == 200
        assert reply.json()["choices"][0]["message"]["content"] == "Hello from revived!"
    finally:
        revived.close()


@pytest.mark.parametrize("status", [429, 500, 503])
@pytest.mark.parametrize("stream", [False, True])
def test_provider_error_statuses(router, upstreams, status, stream):
    upstreams.classifier.digit = "1"
    upstreams.medium.override = lambda request: Reply(
        status=status,
        headers={"retry-after": "3"} if status != 500 else {},
        body={"error": {"message": f"busy {status}", "type": "server_error", "code": None}},
    )
    with router.client() as client:
        reply = client.post(CHAT, json=ask(unique(f"status {status}"), stream=stream))
    assert reply.status_code == status
    assert reply.headers["content-type"].startswith("application/json")
    error = reply.json()["error"]
    assert f"busy {status}" in error["message"] and "'medium'" in error["message"]
    if status != 500:
        assert reply.headers["retry-after"] == "3"
    upstreams.medium.override = None
    healthy(router)


def test_provider_resets_before_answering(router, upstreams):
    upstreams.classifier.digit = "1"
    upstreams.medium.override = lambda request: Reply(action="reset")
    with router.client() as client:
        for stream in (False, True):
            reply = client.post(CHAT, json=ask(unique("reset early"), stream=stream))
            assert reply.status_code == 502
            assert reply.json()["error"]["code"] == "upstream_502"
    upstreams.medium.override = None
    healthy(router)


def test_provider_hangs_before_headers_without_blocking_others(router, upstreams):
    """A provider that never answers holds only its own request: the router keeps
    answering everyone else, and the client that gives up frees its flow."""
    upstreams.classifier.by_text["HANG"] = "1"
    upstreams.classifier.digit = "2"
    release = threading.Event()

    def hang(request):
        release.wait(20)
        return Reply(action="reset")

    upstreams.medium.override = hang
    try:
        with router.client(timeout=1.5) as client, pytest.raises(httpx.ReadTimeout):
            client.post(CHAT, json=ask(unique("HANG please")))
        started = time.monotonic()
        healthy(router, tier="frontier")
        assert time.monotonic() - started < 5
    finally:
        release.set()
        upstreams.classifier.by_text.clear()
        upstreams.classifier.digit = "1"
        upstreams.medium.override = None
    healthy(router)


def test_provider_resets_mid_stream(router, upstreams):
    """The client gets the chunks sent so far, an OpenAI-style error event, and a clean
    end of the body; the log line says what happened."""
    upstreams.classifier.digit = "1"
    chunks = openai_stream(["one ", "two ", "three"], model="medium-model")[:3]
    upstreams.medium.override = lambda request: Reply(chunks=chunks, action="reset_after_chunks")
    prompt = unique("reset mid-stream")
    with router.client(timeout=10) as client:
        reply = client.post(CHAT, json=ask(prompt, stream=True))  # raises if the body is cut
    assert reply.status_code == 200
    events = [json.loads(e.data) for e in iter_events(reply.content) if e.data != "[DONE]"]
    text = "".join(
        (e["choices"][0]["delta"].get("content") or "") for e in events if e.get("choices")
    )
    assert text == "one two "
    assert events[-1]["error"]["code"] == "upstream_stream_interrupted"
    assert events[-1]["error"]["type"] == "upstream_error"

    # The OpenAI SDK sees the error as an exception, not a hang.
    sdk = openai.OpenAI(
        base_url=router.url + "/v1",
        api_key="x",
        http_client=openai.DefaultHttpxClient(trust_env=False, timeout=10),
        max_retries=0,
    )
    with pytest.raises(openai.APIError):
        for _ in sdk.chat.completions.create(**ask(unique("sdk reset")), stream=True):
            pass
    upstreams.medium.override = None
    healthy(router)
    deadline = time.monotonic() + 5
    while "status=502" not in router.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "upstream_stream_interrupted" not in router.logs()  # the log says it in words
    assert "status=502" in router.logs() and "closed the stream" in router.logs()


def test_provider_resets_mid_stream_for_an_anthropic_client(router, upstreams):
    """A /v1/messages client gets the error in Anthropic's own event format."""
    import anthropic

    upstreams.classifier.digit = "1"
    chunks = openai_stream(["one ", "two ", "three"], model="medium-model")[:3]
    upstreams.medium.override = lambda request: Reply(chunks=chunks, action="reset_after_chunks")
    with router.client(timeout=10) as client:
        reply = client.post(
            "/v1/messages",
            json={
                "model": "claude-x",
                "max_tokens": 50,
                "stream": True,
                "messages": [{"role": "user", "content": unique("anthropic reset")}],
            },
        )
    assert reply.status_code == 200
    events = list(iter_events(reply.content))
    assert events[-1].event == "error"
    assert json.loads(events[-1].data)["type"] == "error"
    sdk = anthropic.Anthropic(
        base_url=router.url,
        api_key="x",
        max_retries=0,
        http_client=anthropic.DefaultHttpxClient(trust_env=False, timeout=10),
    )
    with (
        pytest.raises(anthropic.APIError),
        sdk.messages.stream(
            model="claude-x",
            max_tokens=50,
            messages=[{"role": "user", "content": unique("anthropic sdk reset")}],
        ) as stream,
    ):
        for _ in stream:
            pass
    upstreams.medium.override = None
    healthy(router)


def test_slow_provider_stream_keeps_flowing(router, upstreams):
    upstreams.classifier.digit = "1"
    upstreams.medium.override = lambda request: Reply(
        chunks=openai_stream(["slow", " but", " sure"], pause=Pause(0.5))
    )
    with router.client() as client:
        reply = client.post(CHAT, json=ask(unique("slow"), stream=True))
    assert reply.status_code == 200 and reply.text.rstrip().endswith("data: [DONE]")
    upstreams.medium.override = None


# ---- classifier ----------------------------------------------------------------------------


def test_classifier_failures_then_recovery(start_router, upstreams):
    """Refuses, hangs, garbage, slow: each request still gets an answer from frontier
    within the timeout, and once the classifier behaves the router uses it again."""
    # llm mode: failures go to frontier (hybrid's fallback is tested in test_builtin.py).
    router = start_router({"CLASSIFIER_TIMEOUT_MS": "400", "CLASSIFIER_MODE": "llm"})
    upstreams.classifier.digit = "0"
    failures = [
        Reply(action="reset"),
        Reply(action="hang"),
        Reply(body="garbage, not json", headers={"content-type": "text/plain"}),
        Reply(status=500, body={"error": {"message": "boom"}}),
    ]
    with router.client(timeout=10) as client:
        for failure in failures:
            upstreams.classifier.failure = failure
            started = time.monotonic()
            reply = client.post(CHAT, json=ask(unique("classifier down")))
            assert reply.status_code == 200
            assert reply.headers["x-xrouter-upstream"] == "frontier"
            assert time.monotonic() - started < 3
        upstreams.classifier.failure = None
        # Slow but within the timeout: still its decision.
        upstreams.classifier.delay_seconds = 0.15
        reply = client.post(CHAT, json=ask(unique("slow classifier")))
        assert reply.headers["x-xrouter-upstream"] == "cheap"
        # Slower than the timeout: frontier, and the next fast answer is used again.
        upstreams.classifier.delay_seconds = 1.0
        reply = client.post(CHAT, json=ask(unique("too slow")))
        assert reply.headers["x-xrouter-upstream"] == "frontier"
        upstreams.classifier.delay_seconds = 0.0
        reply = client.post(CHAT, json=ask(unique("recovered")))
        assert reply.headers["x-xrouter-upstream"] == "cheap"
        assert client.get("/health").json()["classifier"]["last_call_ok"] is True
    assert "Traceback" not in router.logs()


def test_unusable_data_directory_keeps_the_router_counting(start_router, upstreams, tmp_path):
    """A file where the data directory should be: the router starts anyway, warns once,
    and counts in a private temporary directory."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("in the way")
    router = start_router({"XROUTER_DATA_DIR": str(blocker / "data")})
    with router.client() as client:
        # The fallback directory is shared by the user's routers, so count from here.
        before = client.get("/usage").json()["totalRequests"]
        for _ in range(3):
            assert (
                client.post(
                    "/v1/chat/completions",
                    json={"messages": [{"role": "user", "content": unique("count me")}]},
                ).status_code
                == 200
            )
        deadline = time.monotonic() + 10
        while (
            client.get("/usage").json()["totalRequests"] < before + 3
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert client.get("/usage").json()["totalRequests"] == before + 3
    assert router.logs().count("is not usable") == 1
