"""Cached prompt tokens and their prices: read from each provider's documented answer and
stream shapes, rendered back to OpenAI and Anthropic clients, counted per tier and model
in /usage and /metrics, and priced with genai-prices, through real routers whose fake
providers listen on 127.0.0.2 (a host the router does not count as local, so it prices
them)."""

from __future__ import annotations

import json

import httpx
import pytest
from conftest import Router, unique
from fakes import (
    FakeAnthropicProvider,
    FakeGeminiProvider,
    FakeOpenAIProvider,
    anthropic_stream,
    gemini_stream,
    openai_stream,
)
from genai_prices import Usage as GenaiUsage
from genai_prices import calc_price

from xrouter_core.wire import canonical as ev
from xrouter_core.wire.adapters.anthropic import AnthropicAdapter
from xrouter_core.wire.adapters.gemini import GeminiAdapter
from xrouter_core.wire.adapters.openai import OpenAIAdapter
from xrouter_core.wire.sse import iter_events

CHAT = "/v1/chat/completions"
HOST = "127.0.0.2"
# What each fake reports: (prompt tokens in total, read from the cache, written to it).
ANTHROPIC = (11 + 100 + 20, 100, 20)  # input_tokens 11 leaves the cached ones out
GEMINI = (11, 4, 0)  # cachedContentTokenCount is part of promptTokenCount
OPENAI = (11, 6, 0)  # prompt_tokens_details.cached_tokens is part of prompt_tokens


def genai_cost(model: str, provider: str, counts: tuple[int, int, int], output: int = 7) -> float:
    prompt, read, write = counts
    usage = GenaiUsage(
        input_tokens=prompt, cache_read_tokens=read, cache_write_tokens=write, output_tokens=output
    )
    return float(calc_price(usage, model, provider_id=provider).total_price)


# ---- the readers, on the documented shapes, in any chunking ---------------------------


def decode_bytewise(decoder, chunks: list[str]) -> list[ev.StreamEvent]:
    events: list[ev.StreamEvent] = []
    for byte in "".join(chunks).encode():
        events += decoder.feed(bytes([byte]))
    return events + decoder.finish()


def usage_of(events: list[ev.StreamEvent]) -> ev.Usage:
    (usage,) = [e for e in events if isinstance(e, ev.Usage)]
    return usage


@pytest.mark.parametrize("cumulative", [False, True])
def test_anthropic_cache_counts_from_message_start_and_message_delta(cumulative):
    chunks = anthropic_stream("Hello there", cache=(100, 20), cumulative_delta=cumulative)
    usage = usage_of(decode_bytewise(AnthropicAdapter().stream_decoder(), chunks))
    assert usage == ev.Usage(131, 7, 100, 20)


def test_anthropic_message_delta_alone_may_carry_the_cache_counts():
    """A message_start with zeros and a cumulative message_delta: the later counts win."""
    chunks = anthropic_stream("Hi", cache=(0, 0))
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"cache_read_input_tokens": 50, "output_tokens": 7},
    }
    chunks[-2] = f"event: message_delta\ndata: {json.dumps(delta)}\n\n"
    usage = usage_of(decode_bytewise(AnthropicAdapter().stream_decoder(), chunks))
    assert usage == ev.Usage(61, 7, 50, 0)


def test_whole_answers_and_streams_of_each_provider_carry_the_cached_tokens():
    from fakes import anthropic_message, gemini_chunk, gemini_usage, openai_completion

    whole = AnthropicAdapter().parse_response(
        json.dumps(anthropic_message("Hi", "claude-x", False, cache=(100, 20))).encode()
    )
    assert ev.usage_from_openai(whole["usage"]) == ev.Usage(131, 7, 100, 20)
    assert whole["usage"]["prompt_tokens_details"]["cached_tokens"] == 100

    body = gemini_chunk([{"text": "Hi"}], "STOP", gemini_usage(7, cached=4), "gemini-x")
    whole = GeminiAdapter().parse_response(json.dumps(body).encode())
    assert ev.usage_from_openai(whole["usage"]) == ev.Usage(11, 7, 4, 0)
    streamed = decode_bytewise(
        GeminiAdapter().stream_decoder(), gemini_stream("Hello you", cached=4)
    )
    assert usage_of(streamed) == ev.Usage(11, 7, 4, 0)

    whole = OpenAIAdapter().parse_response(
        json.dumps(openai_completion("Hi", cached_tokens=6)).encode()
    )
    assert ev.usage_from_openai(whole["usage"]) == ev.Usage(11, 7, 6, 0)
    streamed = decode_bytewise(
        OpenAIAdapter().stream_decoder(), openai_stream(["Hi"], cached_tokens=6)
    )
    assert usage_of(streamed) == ev.Usage(11, 7, 6, 0)
    # No details at all (most OpenAI-compatible servers): no cached tokens.
    assert ev.usage_from_openai(openai_completion("Hi")["usage"]) == ev.Usage(11, 7)


def test_responses_api_usage_reader():
    # The usage object of a Responses API answer and of its response.completed event.
    usage = {
        "input_tokens": 2006,
        "input_tokens_details": {"cached_tokens": 1920},
        "output_tokens": 300,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 2306,
    }
    assert ev.usage_from_responses(usage) == ev.Usage(2006, 300, 1920, 0)
    assert ev.usage_from_responses({"input_tokens": 5, "output_tokens": 1}) == ev.Usage(5, 1)
    assert ev.usage_from_responses(None) is None


# ---- real routers ----------------------------------------------------------------------


class Fakes:
    def __init__(self) -> None:
        self.anthropic = FakeAnthropicProvider("anthropic", host=HOST)
        self.anthropic.cache = (100, 20)
        self.gemini = FakeGeminiProvider("gemini", host=HOST)
        self.gemini.cached = 4
        self.openai = FakeOpenAIProvider("openai", host=HOST)
        self.openai.cached_tokens = 6

    def env(self, upstreams) -> dict[str, str]:
        return {
            "CLASSIFIER_BASE_URL": upstreams.classifier.url + "/v1",
            "CLASSIFIER_MODEL": "tiny-classifier",
            "FALLBACK_ENABLED": "false",
            "CHEAP_BASE_URL": self.anthropic.url,
            "CHEAP_API_KEY": "sk-ant-api03-test-key-0001",
            "CHEAP_MODEL": "claude-sonnet-4-5",
            # No model: the client's model is used, so a test can send an unknown one.
            "MEDIUM_BASE_URL": self.gemini.url,
            "MEDIUM_API_KEY": "AIzaSy-test-key-0002",
            "FRONTIER_BASE_URL": self.openai.url + "/v1",
            "FRONTIER_API_KEY": "sk-frontier-secret-0003",
            "FRONTIER_MODEL": "gpt-4o",
        }

    def close(self) -> None:
        for fake in (self.anthropic, self.gemini, self.openai):
            fake.close()


@pytest.fixture(scope="module")
def fakes():
    servers = Fakes()
    yield servers
    servers.close()


@pytest.fixture
def router(fakes, upstreams, tmp_path):
    instance = Router({**fakes.env(upstreams), "XROUTER_DATA_DIR": str(tmp_path / "d")}, tmp_path)
    yield instance
    instance.stop()


def chat(client: httpx.Client, model: str = "gpt-4o", **extra) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": unique("hi")}], **extra}
    reply = client.post(CHAT, json=body)
    assert reply.status_code == 200, reply.text
    return reply


def stream_usage(reply: httpx.Response) -> dict:
    chunks = [json.loads(e.data) for e in iter_events(reply.content) if e.data != "[DONE]"]
    (usage,) = [c["usage"] for c in chunks if c.get("usage")]
    return usage


def messages(client: httpx.Client, stream: bool = False) -> httpx.Response:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": unique("hi")}],
        "stream": stream,
    }
    reply = client.post("/v1/messages", json=body)
    assert reply.status_code == 200, reply.text
    return reply


def anthropic_stream_usage(reply: httpx.Response) -> dict:
    """Anthropic's stream usage as its documents define it: message_start's, updated by
    message_delta's (which, from Anthropic itself, may carry the output count alone)."""
    docs = [json.loads(e.data) for e in iter_events(reply.content)]
    (start,) = [d for d in docs if d.get("type") == "message_start"]
    (delta,) = [d for d in docs if d.get("type") == "message_delta"]
    return {**start["message"]["usage"], **delta["usage"]}


def test_cached_tokens_reach_clients_usage_metrics_and_cost(router, upstreams):
    upstreams.classifier.digit = "0"  # Anthropic, 100 read and 20 written
    with router.client() as client:
        whole = chat(client).json()["usage"]
        streamed = stream_usage(chat(client, stream=True, stream_options={"include_usage": True}))
        as_anthropic = messages(client).json()["usage"]
        as_anthropic_stream = anthropic_stream_usage(messages(client, stream=True))
    for usage in (whole, streamed):
        assert usage["prompt_tokens"] == 131 and usage["completion_tokens"] == 7
        assert usage["prompt_tokens_details"]["cached_tokens"] == 100
    # An Anthropic client gets Anthropic's own split back: input_tokens without the cache.
    for usage in (as_anthropic, as_anthropic_stream):
        assert usage["input_tokens"] == 11 and usage["output_tokens"] == 7
        assert usage["cache_read_input_tokens"] == 100
        assert usage["cache_creation_input_tokens"] == 20

    upstreams.classifier.digit = "1"  # Gemini, 4 cached
    with router.client() as client:
        whole = chat(client, model="gemini-2.5-flash").json()["usage"]
        streamed = stream_usage(
            chat(
                client,
                model="gemini-2.5-flash",
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        chat(client, model="my-own-finetune")  # a model no price list knows
    for usage in (whole, streamed):
        assert usage["prompt_tokens"] == 11 and usage["prompt_tokens_details"]["cached_tokens"] == 4

    upstreams.classifier.digit = "2"  # OpenAI wire, 6 cached: passed through as sent
    with router.client() as client:
        whole = chat(client).json()["usage"]
        streamed = stream_usage(chat(client, stream=True, stream_options={"include_usage": True}))
        as_anthropic = messages(client).json()["usage"]
    assert whole["prompt_tokens_details"]["cached_tokens"] == 6
    assert streamed["prompt_tokens_details"]["cached_tokens"] == 6
    assert as_anthropic == {
        "input_tokens": 5,
        "output_tokens": 7,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 6,
    }

    with router.client() as client:
        doc = client.get("/usage").json()
        metrics = client.get("/metrics").text
    tiers = doc["tiers"]
    assert (tiers["cheap"]["cacheReadTokens"], tiers["cheap"]["cacheWriteTokens"]) == (400, 80)
    assert tiers["cheap"]["promptTokens"] == 4 * 131
    assert (tiers["medium"]["cacheReadTokens"], tiers["medium"]["cacheWriteTokens"]) == (12, 0)
    assert (tiers["frontier"]["cacheReadTokens"], tiers["frontier"]["promptTokens"]) == (18, 33)
    rows = {(m["tier"], m["model"]): m for m in doc["models"]}
    claude = rows[("cheap", "claude-sonnet-4-5")]
    assert (claude["cacheReadTokens"], claude["cacheWriteTokens"], claude["requests"]) == (
        400,
        80,
        4,
    )
    assert claude["priced"] is True and claude["priceSource"] == "genai-prices"
    # Each request priced at Anthropic's rates for input, cache read, cache write, output.
    assert claude["costUsd"] == pytest.approx(
        4 * genai_cost("claude-sonnet-4-5", "anthropic", ANTHROPIC), abs=1e-8
    )
    assert claude["cacheReadPrice"] < claude["inputPrice"] < claude["cacheWritePrice"]
    flash = rows[("medium", "gemini-2.5-flash")]
    assert flash["cacheReadTokens"] == 8 and flash["priced"] is True
    assert flash["costUsd"] == pytest.approx(
        2 * genai_cost("gemini-2.5-flash", "google", GEMINI), abs=1e-8
    )
    gpt = rows[("frontier", "gpt-4o")]
    assert gpt["costUsd"] == pytest.approx(3 * genai_cost("gpt-4o", "openai", OPENAI), abs=1e-8)
    assert gpt["costUsd"] < 3 * genai_cost("gpt-4o", "openai", (11, 0, 0))  # the cache saved
    unknown = rows[("medium", "my-own-finetune")]
    assert unknown["priced"] is False and unknown["priceSource"] == "unknown"
    assert unknown["costUsd"] == 0 and unknown["unpricedRequests"] == 1
    assert doc["cost"]["unpricedModels"] == ["my-own-finetune"]
    assert doc["cost"]["prices"].startswith("genai-prices ")
    assert doc["cost"]["totalUsd"] == pytest.approx(
        claude["costUsd"] + flash["costUsd"] + gpt["costUsd"], abs=3e-6
    )
    # All on frontier: every request's own counts at gpt-4o's rates.
    frontier_equiv = (
        4 * genai_cost("gpt-4o", "openai", ANTHROPIC)
        + 3 * genai_cost("gpt-4o", "openai", GEMINI)
        + 3 * genai_cost("gpt-4o", "openai", OPENAI)
    )
    assert doc["cost"]["frontierEquivalentUsd"] == pytest.approx(frontier_equiv, abs=1e-8)
    assert doc["recent"][0]["cacheReadTokens"] == 6

    assert 'xrouter_cached_tokens_total{tier="cheap",kind="read"} 400' in metrics
    assert 'xrouter_cached_tokens_total{tier="cheap",kind="write"} 80' in metrics
    assert 'xrouter_cached_tokens_total{tier="frontier",kind="read"} 18' in metrics
    assert (
        'xrouter_model_cached_tokens_total{tier="medium",provider="gemini",'
        'model="gemini-2.5-flash",kind="read"} 8' in metrics
    )
    assert (
        'xrouter_model_unpriced_requests_total{tier="medium",provider="gemini",'
        'model="my-own-finetune"} 1' in metrics
    )
    cheap_cost = float(
        next(
            line.split()[-1]
            for line in metrics.splitlines()
            if line.startswith('xrouter_cost_usd_total{tier="cheap"}')
        )
    )
    assert cheap_cost == pytest.approx(claude["costUsd"], abs=1e-8)

    # Counted with the request, so a restart (the disk store) keeps costs and cache counts.
    router.stop()
    again = Router(router.env, router.tmp)
    try:
        with again.client() as client:
            after = client.get("/usage").json()
    finally:
        again.stop()
    assert after["tiers"] == doc["tiers"] and after["cost"] == doc["cost"]


def test_a_route_price_wins_and_cached_tokens_pay_its_input_rate(fakes, upstreams, tmp_path):
    env = {
        **fakes.env(upstreams),
        "XROUTER_DATA_DIR": str(tmp_path / "d"),
        "MEDIUM_MODEL": "gemini-2.5-flash",
        "MEDIUM_INPUT_PRICE": "1",
        "MEDIUM_OUTPUT_PRICE": "2",
    }
    router = Router(env, tmp_path)
    upstreams.classifier.digit = "1"
    try:
        with router.client() as client:
            chat(client)
            doc = client.get("/usage").json()
    finally:
        router.stop()
    (row,) = [m for m in doc["models"] if m["tier"] == "medium"]
    assert row["priceSource"] == "route" and (row["inputPrice"], row["outputPrice"]) == (1, 2)
    assert row["cacheReadTokens"] == 4
    assert row["costUsd"] == pytest.approx((11 * 1 + 7 * 2) / 1e6, abs=1e-9)
    assert row["costUsd"] != pytest.approx(genai_cost("gemini-2.5-flash", "google", GEMINI))
