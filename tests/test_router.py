"""The core router end to end: a real mitmdump with the addon, fake upstreams on loopback."""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import threading
import time

import httpx
import openai
import pytest
from conftest import free_port, unique
from fakes import FakeServer, Pause, Reply, openai_stream

from xrouter_core.wire.sse import iter_events

CHAT = "/v1/chat/completions"


def ask(text: str, **extra) -> dict:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], **extra}


def sdk(router, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=router.url + "/v1",
        api_key=kwargs.pop("api_key", "client-key"),
        http_client=openai.DefaultHttpxClient(trust_env=False),
        max_retries=0,
        **kwargs,
    )


# ---- routing -------------------------------------------------------------------------


@pytest.mark.parametrize("digit,tier", [("0", "cheap"), ("1", "medium"), ("2", "frontier")])
def test_each_digit_routes_to_its_tier_streamed_and_not(router, upstreams, digit, tier):
    upstreams.classifier.digit = digit
    client = sdk(router)
    raw = client.chat.completions.with_raw_response.create(**ask(unique("route me")))
    assert raw.headers["x-xrouter-decision"] == digit
    assert raw.headers["x-xrouter-upstream"] == tier
    completion = raw.parse()
    assert completion.choices[0].message.content == f"Hello from {tier}!"
    assert completion.model == f"{tier}-model"
    assert completion.usage.total_tokens == 18

    with client.chat.completions.with_streaming_response.create(
        **ask(unique("stream me")), stream=True
    ) as response:
        assert response.headers["x-xrouter-decision"] == digit
        assert response.headers["x-xrouter-upstream"] == tier
        text = "".join(
            chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices
        )
    assert text == f"Hello from {tier}!"


def test_request_is_rewritten_for_the_route(router, upstreams):
    upstreams.classifier.digit = "1"
    with router.client() as client:
        reply = client.post(
            CHAT,
            json=ask(unique("rewrite")),
            headers={
                "authorization": "Bearer client-own-key",
                "x-api-key": "client-anthropic-key",
                "user-agent": "test-agent/1.0",
                "x-custom": "kept",
            },
        )
    assert reply.status_code == 200
    seen = upstreams.medium.requests[-1]
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == "Bearer sk-medium-secret-0002"
    assert "client-own-key" not in json.dumps(seen.headers)
    assert "x-api-key" not in seen.headers
    assert seen.headers["user-agent"] == "test-agent/1.0"
    assert seen.headers["x-custom"] == "kept"
    assert seen.headers["host"] == f"127.0.0.1:{upstreams.medium.port}"
    assert seen.json["model"] == "medium-model"
    assert seen.json["messages"][0]["content"].startswith("rewrite")


def test_a_gzipped_body_and_headers_in_any_case_are_read(router, upstreams):
    """The request's headers are read once per request (wire/headers.py header_lookup):
    Content-Encoding still has the body decoded, X-Xrouter-Tier still pins in any case."""
    body = json.dumps(ask(unique("gzipped"))).encode()
    with router.client() as client:
        reply = client.post(
            CHAT,
            content=gzip.compress(body),
            headers={
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
                "X-Xrouter-Tier": "cheap",
            },
        )
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-xrouter-upstream"] == "cheap"
    assert reply.headers["x-xrouter-decision"] == "0"
    seen = upstreams.cheap.requests[-1]
    assert "content-encoding" not in seen.headers
    assert seen.json["messages"] == json.loads(body)["messages"]


def test_route_headers_and_base_url_without_v1(start_router, upstreams):
    router = start_router(
        {
            "MEDIUM_BASE_URL": upstreams.medium.url,  # no /v1: the adapter adds it
            "MEDIUM_HEADERS": json.dumps({"X-Org": "acme", "X-Team-Token": "team-secret-value"}),
            "CLASSIFIER_BASE_URL": upstreams.classifier.url,  # no /v1 either
        }
    )
    upstreams.classifier.digit = "1"
    with router.client() as client:
        assert client.post(CHAT, json=ask(unique("headers"))).status_code == 200
    seen = upstreams.medium.requests[-1]
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["x-org"] == "acme"
    assert upstreams.classifier.requests[-1].path == "/v1/chat/completions"
    assert "team-secret-value" not in router.logs()


# ---- classifier ----------------------------------------------------------------------


def test_classifier_sees_last_user_message_with_context(router, upstreams):
    question = unique("Prove that there are infinitely many primes.")
    body = {
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "earlier question"},
            {"role": "assistant", "content": "an earlier answer"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": question},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
        ]
    }
    with router.client() as client:
        client.post(CHAT, json=body)
    sent = upstreams.classifier.requests[-1].json
    assert sent["stream"] is True
    assert sent["model"] == "tiny-classifier"
    assert sent["messages"][0]["role"] == "system" and "0" in sent["messages"][0]["content"]
    text = sent["messages"][-1]["content"]
    assert question in text and "an earlier answer" in text
    assert "data:image" not in text and "You are helpful" not in text


def test_decision_cache_classifies_a_question_once(router, upstreams):
    question = unique("What is the capital of France?")
    with router.client() as client:
        for _ in range(3):
            reply = client.post(CHAT, json=ask(question))
            assert reply.status_code == 200
    assert sum(question in text for text in upstreams.classifier.texts()) == 1


def test_early_abort_closes_the_classifier_stream(router, upstreams):
    """The classifier sends its digit, then keeps generating for 3 s: the router must
    decide on the digit and close the connection instead of reading to the end."""
    upstreams.classifier.digit = "0"
    upstreams.classifier.tail_seconds = 3.0
    with router.client() as client:
        reply = client.post(CHAT, json=ask(unique("abort early")))
    assert reply.headers["x-xrouter-upstream"] == "cheap"
    # The fake notices the closed connection on its next write, after one tail step.
    assert upstreams.classifier.client_closed.wait(5)
    line = [x for x in router.logs().splitlines() if "abort early" not in x and "source=llm" in x][
        -1
    ]
    classifier_ms = float(line.split("classifier_ms=")[1].split()[0])
    assert classifier_ms < 3000  # a full read would take the whole 3 s tail


def test_non_streaming_classifier(start_router, upstreams):
    router = start_router({"CLASSIFIER_FORCE_STREAM": "false"})
    upstreams.classifier.digit = "2"
    with router.client() as client:
        reply = client.post(CHAT, json=ask(unique("no stream")))
    assert reply.headers["x-xrouter-upstream"] == "frontier"
    assert upstreams.classifier.requests[-1].json["stream"] is False


@pytest.mark.parametrize("failure", ["refused", "garbage", "no_digit", "error_500", "timeout"])
def test_classifier_failures_route_to_frontier(start_router, upstreams, failure):
    # llm mode: no built-in fallback (hybrid, the default, is tested in test_builtin.py).
    env = {"CLASSIFIER_TIMEOUT_MS": "700", "CLASSIFIER_MODE": "llm"}
    if failure == "refused":
        env["CLASSIFIER_BASE_URL"] = f"http://127.0.0.1:{free_port()}/v1"
        env["CHEAP_BASE_URL"] = upstreams.cheap.url + "/v1"
    router = start_router(env)
    upstreams.classifier.failure = {
        "garbage": Reply(body="<html>not json</html>", headers={"content-type": "text/html"}),
        "no_digit": Reply(
            chunks=[
                "data: " + json.dumps({"choices": [{"delta": {"content": "hmm"}}]}) + "\n\n",
                "data: [DONE]\n\n",
            ]
        ),
        "error_500": Reply(status=500, body={"error": {"message": "boom"}}),
        "timeout": Reply(action="hang"),
        "refused": None,
    }[failure]
    upstreams.classifier.digit = "0"
    with router.client() as client:
        for _ in range(2):
            reply = client.post(CHAT, json=ask(unique("fail")))
            assert reply.status_code == 200
            assert reply.headers["x-xrouter-decision"] == "2"
            assert reply.headers["x-xrouter-upstream"] == "frontier"
        health = client.get("/health").json()
    assert health["classifier"]["last_call_ok"] is False
    # Logged once per cause, not once per request.
    assert router.logs().count("classifier failed") == 1


def test_loading_model_is_retried(start_router, upstreams):
    """llama.cpp answers 503 'Loading model' until the model is in memory."""
    router = start_router(
        {"CLASSIFIER_LOADING_RETRY_MS": "100", "CLASSIFIER_LOADING_MAX_RETRIES": "5"}
    )
    answers = iter(
        [
            Reply(
                status=503,
                body={
                    "error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}
                },
            )
        ]
        * 2
    )
    original = upstreams.classifier.answer
    upstreams.classifier.handler = lambda request: next(answers, None) or original(request)
    upstreams.classifier.digit = "0"
    try:
        with router.client() as client:
            reply = client.post(CHAT, json=ask(unique("loading")))
    finally:
        upstreams.classifier.handler = original
    assert reply.headers["x-xrouter-upstream"] == "cheap"
    assert len(upstreams.classifier.requests) == 3


def test_warm_up_and_keep_alive(start_router, upstreams):
    router = start_router(
        {
            "CLASSIFIER_WARMUP": "true",
            "CLASSIFIER_WARMUP_DELAY_MS": "50",
            "CLASSIFIER_KEEP_ALIVE_MS": "200",
        }
    )
    deadline = time.monotonic() + 10
    while len(upstreams.classifier.requests) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(upstreams.classifier.requests) >= 3  # one warm-up, then keep-alive pings
    assert "classifier warmed up" in router.logs()


def test_classifier_disabled_sends_everything_to_frontier(start_router, upstreams):
    router = start_router({"CLASSIFIER_ENABLED": "false"})
    with router.client() as client:
        reply = client.post(CHAT, json=ask(unique("anything")))
    assert reply.headers["x-xrouter-decision"] == "2"
    assert reply.headers["x-xrouter-upstream"] == "frontier"
    assert upstreams.classifier.requests == []


# ---- streaming -----------------------------------------------------------------------


def test_stream_passes_through_chunk_by_chunk(router, upstreams):
    """The provider sends its first chunk, then waits until the client has it: a router
    that buffered the stream would deadlock here and the test would time out."""
    first_chunk_seen = threading.Event()
    upstreams.classifier.digit = "1"
    upstreams.medium.override = lambda request: Reply(
        chunks=openai_stream(
            ["first", " second"], include_usage=True, pause=Pause(15, first_chunk_seen)
        )
    )
    pieces = []
    with (
        router.client() as client,
        client.stream("POST", CHAT, json=ask(unique("stream"), stream=True)) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
                if delta:
                    pieces.append(delta)
                    first_chunk_seen.set()
    assert pieces == ["first", " second"]
    assert not upstreams.medium.client_closed.is_set()


def test_usage_chunk_only_when_the_client_asks(router, upstreams):
    with router.client() as client:
        plain = client.post(CHAT, json=ask(unique("u1"), stream=True)).content
        asked = client.post(
            CHAT, json=ask(unique("u2"), stream=True, stream_options={"include_usage": True})
        ).content
    assert upstreams.medium.requests[-2].json["stream_options"] == {"include_usage": True}
    plain_chunks = [json.loads(e.data) for e in iter_events(plain) if e.data != "[DONE]"]
    asked_chunks = [json.loads(e.data) for e in iter_events(asked) if e.data != "[DONE]"]
    assert all(c["choices"] for c in plain_chunks)
    assert asked_chunks[-1]["usage"]["total_tokens"] == 18


def test_client_disconnect_mid_stream_leaves_router_healthy(router, upstreams):
    upstreams.medium.override = lambda request: Reply(
        chunks=openai_stream(["a"] * 3, pause=Pause(2.0)) + [Pause(0.5), "data: {}\n\n"] * 4
    )
    sock = socket.create_connection(("127.0.0.1", router.port))
    body = json.dumps(ask(unique("leave"), stream=True)).encode()
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    assert b"200" in sock.recv(65536)
    sock.close()
    assert upstreams.medium.client_closed.wait(10), "the upstream stream should be closed too"
    upstreams.medium.override = None
    with router.client() as client:
        assert client.get("/health").status_code == 200
        assert client.post(CHAT, json=ask(unique("after"))).status_code == 200


# ---- auth, errors, health, logs ------------------------------------------------------


def test_router_api_key(start_router, upstreams):
    router = start_router({"ROUTER_API_KEY": "router-key-123"})
    with router.client() as client:
        assert client.get("/health").status_code == 200
        for headers in (
            {},
            {"authorization": "Bearer wrong"},
            {"authorization": "Basic router-key-123"},
            {"authorization": "Bearer"},
            {"authorization": "bearer router-key-1234"},
        ):
            reply = client.post(CHAT, json=ask("hi"), headers=headers)
            assert reply.status_code == 401
            assert reply.json()["error"]["type"] == "authentication_error"
            assert "router-key-123" not in reply.text
        assert client.get("/v1/models").status_code == 401
        ok = client.post(
            CHAT, json=ask(unique("authed")), headers={"authorization": "Bearer router-key-123"}
        )
        assert ok.status_code == 200
    # The SDK sends the key as a bearer token.
    assert (
        sdk(router, api_key="router-key-123").chat.completions.create(**ask(unique("sdk"))).choices
    )


@pytest.mark.parametrize(
    "method,path,body,status,code",
    [
        ("POST", CHAT, b"{not json", 400, "invalid_json"),
        ("POST", CHAT, b'{"model": "x"}', 400, "missing_messages"),
        ("POST", CHAT, b'{"messages": "hello"}', 400, "invalid_messages"),
        ("POST", CHAT, b"[1, 2]", 400, "invalid_json"),
        ("POST", CHAT, b"\xff\xfe\x00", 400, "invalid_encoding"),
        ("GET", CHAT, b"", 405, "method_not_allowed"),
        ("POST", "/v1/nowhere", b"{}", 404, "not_found"),
        ("DELETE", "/health", b"", 405, "method_not_allowed"),
    ],
)
def test_bad_requests_get_openai_style_errors(router, method, path, body, status, code):
    with router.client() as client:
        reply = client.request(
            method, path, content=body, headers={"content-type": "application/json"}
        )
    assert reply.status_code == status
    error = reply.json()["error"]
    assert error["code"] == code and error["message"] and error["type"]
    assert "Traceback" not in reply.text and "<html" not in reply.text.lower()


def test_unreachable_upstream_is_a_502_naming_the_route(start_router, upstreams):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    router = start_router(
        {
            "MEDIUM_BASE_URL": dead,
            "MEDIUM_API_KEY": "sk-never-shown-9999",
            "FALLBACK_ENABLED": "false",
        }
    )
    upstreams.classifier.digit = "1"
    with router.client() as client:
        for stream in (False, True):
            reply = client.post(CHAT, json=ask(unique("dead"), stream=stream))
            assert reply.status_code == 502
            error = reply.json()["error"]
            assert "'medium'" in error["message"] and dead in error["message"]
            assert "sk-never-shown-9999" not in reply.text
            assert reply.headers["x-xrouter-upstream"] == "medium"
    assert "sk-never-shown-9999" not in router.logs()


def test_provider_error_is_passed_on_openai_style_without_keys(router, upstreams):
    # Pinned to frontier, the last route: no fallback, the provider's error is passed on.
    upstreams.frontier.override = lambda request: Reply(
        status=429,
        headers={"retry-after": "7"},
        body={
            "error": {
                "message": "Rate limit reached for key sk-frontier-secret-0003",
                "type": "rate_limit",
                "code": "x",
            }
        },
    )
    with router.client() as client:
        reply = client.post(CHAT, json={**ask(unique("limited")), "model": "xrouter/frontier"})
    assert reply.status_code == 429
    assert reply.headers["retry-after"] == "7"
    error = reply.json()["error"]
    assert "Rate limit reached" in error["message"] and "'frontier'" in error["message"]
    assert "sk-frontier-secret-0003" not in reply.text


def test_health_lists_routes_without_keys(router):
    with router.client() as client:
        health = client.get("/health").json()
    assert set(health["routes"]) == {"cheap", "medium", "frontier"}
    assert health["routes"]["medium"]["model"] == "medium-model"
    assert health["routes"]["medium"]["provider"] == "auto"
    assert "secret" not in json.dumps(health)
    assert health["classifier"]["enabled"] is True


def test_one_log_line_per_request_and_file_logging(start_router, upstreams, tmp_path):
    router = start_router({"LOG_TO_FILE": "true", "LOG_DIR": str(tmp_path / "logs")})
    upstreams.classifier.digit = "0"
    with router.client() as client:
        client.post(CHAT, json=ask(unique("log me")))
        client.post(CHAT, json=ask(unique("log me too"), stream=True))
    router.stop()
    logs = router.logs()
    lines = [line for line in logs.splitlines() if "routed decision=" in line]
    assert len(lines) == 2
    assert (
        "route=cheap" in lines[0]
        and "model=cheap-model" in lines[0]
        and "classifier_ms=" in lines[0]
    )
    assert "total_ms=" in lines[1] and "tokens=11+7" in lines[1]
    assert "client connect" not in logs and "POST http" not in logs
    file_text = (tmp_path / "logs" / "xrouter.log").read_text()
    assert file_text.count("routed decision=") == 2
    for secret in ("sk-cheap-secret-0001", "sk-medium-secret-0002", "sk-frontier-secret-0003"):
        assert secret not in logs and secret not in file_text


def test_invalid_configuration_stops_the_router(start_router, upstreams):
    router = start_router({"FRONTIER_HEADERS": "not json", "MEDIUM_BASE_URL": ""}, wait=False)
    assert router.proc.wait(20) != 0
    logs = router.logs()
    assert "FRONTIER_HEADERS is not a JSON object" in logs
    assert "MEDIUM_BASE_URL is required when the classifier is enabled" in logs


# ---- listening modes -----------------------------------------------------------------


def test_user_reverse_mode(start_router, upstreams):
    port = free_port()
    router = start_router(
        {"PORT": str(port)}, args=["--mode", f"reverse:{upstreams.frontier.url}@127.0.0.1:{port}"]
    )
    with router.client() as client:
        reply = client.post(CHAT, json=ask(unique("user mode")))
    assert reply.status_code == 200 and reply.headers["x-xrouter-upstream"] == "medium"


def test_regular_proxy_mode_routes_provider_hosts_and_passes_others(start_router, upstreams):
    """Clients set HTTPS_PROXY and trust the mitmproxy CA: calls to api.openai.com are
    routed (the real host is never contacted), other hosts pass through untouched."""
    proxy_port = free_port()
    router = start_router(args=["--mode", f"regular@127.0.0.1:{proxy_port}"], wait=False)
    other = FakeServer(lambda request: Reply(body={"untouched": True, "path": request.path}))
    try:
        ca = router.wait_for_proxy(proxy_port)
        proxy = f"http://127.0.0.1:{proxy_port}"
        client = openai.OpenAI(
            api_key="sk-client-openai-key",
            max_retries=0,
            http_client=openai.DefaultHttpxClient(
                proxy=proxy, trust_env=False, verify=ssl.create_default_context(cafile=str(ca))
            ),
        )
        upstreams.classifier.digit = "0"
        raw = client.chat.completions.with_raw_response.create(**ask(unique("via proxy")))
        assert raw.headers["x-xrouter-upstream"] == "cheap"
        assert raw.parse().choices[0].message.content == "Hello from cheap!"
        assert (
            upstreams.cheap.requests[-1].headers["authorization"] == "Bearer sk-cheap-secret-0001"
        )
        with httpx.Client(proxy=proxy, trust_env=False) as plain:
            passed = plain.post(
                other.url + "/v1/chat/completions?x=1", json={"messages": "not parsed"}
            )
        assert passed.json() == {"untouched": True, "path": "/v1/chat/completions?x=1"}
        assert "x-xrouter-decision" not in passed.headers
    finally:
        other.close()
