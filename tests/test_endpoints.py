"""The endpoints clients call besides chat, on a real router: `HEAD /` and `GET /`,
`POST /v1/messages/count_tokens` (asked of an Anthropic route, else estimated),
`GET /v1/models/{id}`, `POST /v1/embeddings` (forwarded to its own route), the model
aliases without a slash, and the one log line of every refused request."""

from __future__ import annotations

import json
import ssl

import anthropic
import pytest
from conftest import free_port, unique
from fakes import FakeAnthropicProvider, FakeServer, Reply

from xrouter_core import __version__


def test_root_names_the_service(router):
    with router.client() as client:
        got = client.get("/")
        head = client.head("/")
        wrong = client.post("/", json={})
    assert got.status_code == 200 and got.json() == {"service": "xrouter", "version": __version__}
    assert head.status_code == 200 and head.content == b""
    assert wrong.status_code == 405


def test_one_model_by_name_and_the_aliases(router):
    with router.client() as client:
        ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
        dashed = client.get("/v1/models/xrouter-coding")
        slashed = client.get("/v1/models/xrouter/auto")
        missing = client.get("/v1/models/gpt-9")
    assert {"xrouter-auto", "xrouter-cheap", "xrouter-frontier", "xrouter-coding"} <= set(ids)
    assert dashed.json() == {
        "id": "xrouter-coding",
        "object": "model",
        "created": 0,
        "owned_by": "xrouter",
    }
    assert slashed.json()["id"] == "xrouter/auto"
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    assert "gpt-9" in missing.json()["error"]["message"]


@pytest.mark.parametrize(
    ("model", "tier"), [("xrouter-cheap", "cheap"), ("xrouter-coding", "medium")]
)
def test_dashed_aliases_pin_like_the_slashed_names(router, upstreams, model, tier):
    with router.client() as client:
        reply = client.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": unique("alias")}]},
        )
    assert reply.headers["x-xrouter-upstream"] == tier
    assert upstreams.classifier.requests == []


def count_body(text: str) -> dict:
    return {
        "model": "claude-sonnet-4-5",
        "system": [
            {"type": "text", "text": "You are helpful.", "cache_control": {"type": "ephemeral"}}
        ],
        "messages": [{"role": "user", "content": text}],
    }


def test_count_tokens_without_an_anthropic_route_is_an_estimate(router):
    with router.client() as client:
        reply = client.post("/v1/messages/count_tokens", json=count_body("x" * 400))
    assert reply.status_code == 200, reply.text
    doc = reply.json()
    assert doc["estimated"] is True and 100 <= doc["input_tokens"] <= 130


def test_count_tokens_asks_the_anthropic_route(start_router):
    fake = FakeAnthropicProvider("anthropic")
    try:
        router = start_router(
            {
                "FRONTIER_BASE_URL": fake.url,
                "FRONTIER_API_KEY": "sk-ant-count-0005",
                "FRONTIER_MODEL": "claude-route",
            }
        )
        with router.client() as client:
            reply = client.post(
                "/v1/messages/count_tokens",
                json=count_body("hello"),
                headers={"anthropic-beta": "token-counting-2024-11-01"},
            )
            assert reply.json() == {"input_tokens": 1001}
            sent = fake.requests[-1]
            assert sent.path == "/v1/messages/count_tokens"
            assert sent.headers["x-api-key"] == "sk-ant-count-0005"
            assert sent.headers["anthropic-beta"] == "token-counting-2024-11-01"
            assert sent.json == {**count_body("hello"), "model": "claude-route"}
            # A failing route: the client still gets a count, marked as an estimate.
            fake.override = lambda request: Reply(500, {"type": "error", "error": {}})
            failed = client.post("/v1/messages/count_tokens", json=count_body("hello"))
            assert failed.status_code == 200 and failed.json()["estimated"] is True
        assert "count_tokens: route frontier answered HTTP 500; estimating" in router.logs()
    finally:
        fake.close()


def test_count_tokens_asks_the_candidate_a_request_would_go_to(start_router):
    """A tier with several Anthropic candidates: count_tokens asks the one its requests
    go to, in the order its strategy tries them and past one whose circuit is open."""
    first, second = FakeAnthropicProvider("first"), FakeAnthropicProvider("second")
    try:
        router = start_router(
            {
                "FRONTIER_BASE_URL": first.url,
                "FRONTIER_API_KEY": "sk-ant-first-0006",
                "FRONTIER_MODEL": "claude-first",
                "FRONTIER_CANDIDATES": json.dumps(
                    [
                        {
                            "base_url": second.url,
                            "api_key": "sk-ant-second-0007",
                            "model": "claude-second",
                        }
                    ]
                ),
                "BREAKER_FAILURES": "1",
            }
        )

        def count(client) -> None:
            reply = client.post("/v1/messages/count_tokens", json=count_body("hello"))
            assert reply.json() == {"input_tokens": 1001}, reply.text

        with router.client() as client:
            count(client)
            assert [r.path for r in first.requests] == ["/v1/messages/count_tokens"]
            assert second.requests == []
            # The first candidate fails a chat: its circuit opens, the chat goes on to the
            # second, and so does the next count.
            first.override = lambda request: Reply(500, {"type": "error", "error": {}})
            chat = client.post(
                "/v1/messages",
                json={
                    "model": "claude-sonnet-4-5",
                    "max_tokens": 16,
                    "messages": [{"role": "user", "content": unique("open it")}],
                },
                headers={"x-xrouter-tier": "frontier"},
            )
            assert chat.status_code == 200, chat.text
            health = client.get("/health").json()["fallback"]["circuit_breaker"]
            assert health["frontier#1"]["state"] == "open"
            count(client)
            assert second.requests[-1].path == "/v1/messages/count_tokens"
            assert second.requests[-1].headers["x-api-key"] == "sk-ant-second-0007"
            assert second.requests[-1].json["model"] == "claude-second"
            assert len(first.requests) == 2  # the count and the failed chat, no second count
    finally:
        first.close()
        second.close()


def test_count_tokens_is_intercepted_in_proxy_mode(start_router):
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
    counted = client.messages.count_tokens(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "y" * 80}]
    )
    assert 20 <= counted.input_tokens <= 30


class FakeEmbeddings(FakeServer):
    """OpenAI's POST /v1/embeddings."""

    def __init__(self) -> None:
        super().__init__(self.answer)

    def answer(self, request):
        if request.path != "/v1/embeddings":
            return Reply(404, {"error": {"message": "no such path"}})
        body = request.json
        return Reply(
            body={
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5]}],
                "model": body["model"],
                "usage": {"prompt_tokens": 2, "total_tokens": 2},
            }
        )


def test_embeddings_go_to_their_route(start_router):
    fake = FakeEmbeddings()
    try:
        configured = start_router(
            {
                "EMBEDDINGS_BASE_URL": fake.url,
                "EMBEDDINGS_API_KEY": "sk-embed-secret-0006",
                "EMBEDDINGS_MODEL": "text-embedding-3-small",
            }
        )
        with configured.client() as client:
            reply = client.post("/v1/embeddings", json={"model": "xrouter/auto", "input": "hi"})
        assert reply.status_code == 200, reply.text
        assert reply.json()["data"][0]["embedding"] == [0.25, -0.5]
        sent = fake.requests[-1]
        assert sent.headers["authorization"] == "Bearer sk-embed-secret-0006"
        assert sent.json == {"model": "text-embedding-3-small", "input": "hi"}
    finally:
        fake.close()


def test_embeddings_without_a_route_get_a_404_naming_what_is_served(router):
    with router.client() as client:
        missing = client.post("/v1/embeddings", json={"model": "m", "input": "hi"})
    assert missing.status_code == 404
    assert "EMBEDDINGS_BASE_URL" in missing.json()["error"]["message"]
    assert "POST /v1/chat/completions" in missing.json()["error"]["message"]


def test_every_refused_request_logs_one_line(router):
    secret_text = unique("never-in-the-log")
    with router.client() as client:
        client.post("/v1/chat/completions", content=b'{"messages": "' + secret_text.encode())
        client.get("/nowhere?key=sk-query-secret")
        client.post("/v1/messages", json={"messages": []})
    logs = router.logs()
    assert "rejected status=400 method=POST path=/v1/chat/completions reason=invalid_json" in logs
    assert "rejected status=404 method=GET path=/nowhere reason=not_found" in logs
    assert "rejected status=400 method=POST path=/v1/messages reason=invalid_messages" in logs
    assert secret_text not in logs and "sk-query-secret" not in logs
