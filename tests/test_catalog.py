"""The provider catalog (upstreams.json `providers`) on real routers: a missing key
skipped with one warning, capabilities (tools, vision) choosing the candidate, the
`weighted` strategy, and Ollama's native /api/chat adapter, streamed and not; plus the
catalog's settings read by load_settings (tiers, prices, problems)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import Router, free_port, unique
from fakes import (
    COMPLETION_TOKENS,
    PROMPT_TOKENS,
    TOOL_ARGS,
    TOOL_NAME,
    FakeOllamaProvider,
    FakeOpenAIProvider,
    ollama_error,
)
from test_fallback import ask, stream_text

from xrouter_core.accounting.prices import Pricing
from xrouter_core.config import ConfigError, load_settings

CHAT = "/v1/chat/completions"
PNG = "data:image/png;base64,iVBORw0KGgo="
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
PLAIN_KEY = "sk-plain-secret-0042"


def catalog_env(upstreams, providers: dict, strategies: dict | None = None) -> dict[str, str]:
    """The session's classifier, and every tier from the catalog alone."""
    env = {k: v for k, v in upstreams.env().items() if k.startswith("CLASSIFIER_")}
    doc: dict = {"providers": providers}
    if strategies:
        doc["strategies"] = strategies
    env["UPSTREAMS_JSON"] = json.dumps(doc)
    return env


@pytest.fixture(scope="module")
def fakes():
    servers = {
        "ollama": FakeOllamaProvider("ollama"),
        "plain": FakeOpenAIProvider("plain"),
        "able": FakeOpenAIProvider("able"),
        "heavy": FakeOpenAIProvider("heavy"),
        "light": FakeOpenAIProvider("light"),
    }
    yield servers
    for server in servers.values():
        server.close()


@pytest.fixture(autouse=True)
def clean(fakes):
    for server in fakes.values():
        server.requests.clear()
        server.override = None
    yield


def providers_of(fakes) -> dict:
    return {
        "local": {
            "type": "ollama",
            "base_url": fakes["ollama"].url,
            "tiers": ["cheap"],
            "tools": True,
            "vision": True,
            "models": ["qwen2.5:7b"],
        },
        "gone": {
            "type": "openai",
            "base_url": f"http://127.0.0.1:{free_port()}/v1",
            "api_key_env": "GONE_API_KEY",
            "tiers": ["medium"],
            "models": ["gpt-4o-mini"],
        },
        "plain": {
            "type": "openai_compatible",
            "base_url": fakes["plain"].url + "/v1",
            "api_key_env": "PLAIN_KEY",
            "models": [
                {
                    "model": "plain-model",
                    "tiers": ["medium"],
                    "tools": False,
                    "vision": False,
                    "quality": 0.4,
                    "input_price": 0.1,
                    "output_price": 0.2,
                }
            ],
        },
        "able": {
            "type": "openai_compatible",
            "base_url": fakes["able"].url + "/v1",
            "tools": True,
            "vision": True,
            "quality": 0.8,
            "models": [{"model": "able-model", "tiers": ["medium", "frontier"], "weight": 0}],
        },
        "big": {
            "base_url": fakes["heavy"].url + "/v1",
            "tiers": ["frontier"],
            "models": [{"model": "heavy-model", "weight": 3}],
        },
        "small": {
            "base_url": fakes["light"].url + "/v1",
            "tiers": ["frontier"],
            "models": [{"model": "light-model", "weight": 1}],
        },
    }


@pytest.fixture(scope="module")
def router(upstreams_session, fakes, tmp_path_factory):
    env = catalog_env(upstreams_session, providers_of(fakes), {"frontier": "weighted"})
    env["PLAIN_KEY"] = PLAIN_KEY
    router = Router(env, tmp_path_factory.mktemp("catalog"))
    yield router
    router.stop()


def pinned(tier: str) -> dict[str, str]:
    return {"x-xrouter-tier": tier}


def test_a_provider_without_its_key_is_skipped_with_one_warning(router):
    logs = router.logs()
    lines = [line for line in logs.splitlines() if "'gone'" in line]
    assert len(lines) == 1, lines
    assert "GONE_API_KEY is not set" in lines[0] and "medium" in lines[0]
    health = router.client().get("/health").json()
    medium = [(c["key"], c["label"]) for c in health["candidates"]["medium"]]
    assert medium == [("medium#1", "plain/plain-model"), ("medium#2", "able/able-model")]
    assert "gpt-4o-mini" not in json.dumps(health)
    assert PLAIN_KEY not in json.dumps(health) and PLAIN_KEY not in logs
    # What the catalog said of each candidate is shown (never the key).
    plain, able = health["candidates"]["medium"]
    assert (plain["tools"], plain["vision"], plain["quality"], plain["has_api_key"]) == (
        False,
        False,
        0.4,
        True,
    )
    assert (able["tools"], able["vision"], able["quality"]) == (True, True, 0.8)
    assert health["strategies"] == {"cheap": "ordered", "medium": "ordered", "frontier": "weighted"}


def test_tools_and_images_skip_candidates_without_them(router, fakes, upstreams):
    with router.client() as client:
        plain = client.post(CHAT, json=ask(unique("plain")), headers=pinned("medium"))
        tools = client.post(CHAT, json=ask(unique("tools"), tools=TOOLS), headers=pinned("medium"))
        image = {
            "model": "xrouter/auto",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": unique("what is this")},
                        {"type": "image_url", "image_url": {"url": PNG}},
                    ],
                }
            ],
        }
        seen = client.post(CHAT, json=image, headers=pinned("medium"))
    assert plain.status_code == tools.status_code == seen.status_code == 200, plain.text
    assert plain.headers["x-xrouter-route"] == "plain/plain-model"
    assert fakes["plain"].requests[0].headers["authorization"] == f"Bearer {PLAIN_KEY}"
    # Not a failure and a fallback: the candidate without tools / vision is not tried.
    for reply in (tools, seen):
        assert reply.headers["x-xrouter-route"] == "able/able-model"
        assert reply.headers["x-xrouter-upstream"] == "medium"
        assert "x-xrouter-fallback" not in reply.headers
    assert len(fakes["plain"].requests) == 1
    assert not upstreams.frontier.requests


def test_weighted_picks_by_weight(router, fakes):
    served: Counter[str] = Counter()
    with router.client() as client:
        for n in range(80):
            reply = client.post(CHAT, json=ask(unique(f"weighted {n}")), headers=pinned("frontier"))
            assert reply.status_code == 200, reply.text
            served[reply.headers["x-xrouter-route"]] += 1
    # 3 : 1 (the chance that light gets as many as heavy in 80 draws is below 1e-6);
    # weight 0 comes after every other candidate.
    assert served["big/heavy-model"] > served["small/light-model"] > 0, served
    assert served["able/able-model"] == 0
    assert not fakes["able"].requests


def test_ollama_whole_answer(router, fakes):
    with router.client() as client:
        reply = client.post(
            CHAT,
            json=ask(unique("ollama whole"), max_tokens=20, temperature=0.1, stop=["END"]),
            headers=pinned("cheap"),
        )
    assert reply.status_code == 200, reply.text
    doc = reply.json()
    assert doc["object"] == "chat.completion"
    assert doc["choices"][0]["message"]["content"] == "Hello from ollama!"
    assert doc["choices"][0]["finish_reason"] == "stop"
    assert doc["usage"]["prompt_tokens"] == PROMPT_TOKENS
    assert doc["usage"]["completion_tokens"] == COMPLETION_TOKENS
    assert doc["model"] == "qwen2.5:7b"
    assert reply.headers["x-xrouter-route"] == "local/qwen2.5:7b"
    sent = fakes["ollama"].requests[-1]
    assert sent.path == "/api/chat"
    assert sent.json["stream"] is False
    assert sent.json["options"] == {"temperature": 0.1, "num_predict": 20, "stop": ["END"]}


def test_ollama_stream_is_translated_and_counted(router, fakes):
    with router.client() as client:
        reply = client.post(
            CHAT,
            json=ask(unique("ollama stream"), stream=True, stream_options={"include_usage": True}),
            headers=pinned("cheap"),
        )
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"].startswith("text/event-stream")
        assert stream_text(reply) == "Hello from ollama!"
        chunks = [
            json.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: {")
        ]
        usage = [c["usage"] for c in chunks if c.get("usage")]
        assert usage[-1]["prompt_tokens"] == PROMPT_TOKENS
        assert usage[-1]["completion_tokens"] == COMPLETION_TOKENS
        assert fakes["ollama"].requests[-1].json["stream"] is True
        router.settle()
        rows = client.get("/usage").json()["models"]
    row = next(r for r in rows if r["model"] == "qwen2.5:7b")
    assert row["requests"] >= 1 and row["completionTokens"] >= COMPLETION_TOKENS


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_ollama_tool_calls_and_images(router, fakes, stream):
    body = {
        "model": "xrouter/auto",
        "stream": stream,
        "tools": TOOLS,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": unique("weather here?")},
                    {"type": "image_url", "image_url": {"url": PNG}},
                ],
            }
        ],
    }
    with router.client() as client:
        reply = client.post(CHAT, json=body, headers=pinned("cheap"))
    assert reply.status_code == 200, reply.text
    if stream:
        calls: dict[int, dict] = {}
        reasons = []
        for line in reply.text.splitlines():
            if not line.startswith("data: {"):
                continue
            for choice in json.loads(line[6:]).get("choices") or []:
                reasons.append(choice.get("finish_reason"))
                for call in (choice.get("delta") or {}).get("tool_calls") or []:
                    entry = calls.setdefault(call["index"], {"name": "", "arguments": ""})
                    entry["name"] += call.get("function", {}).get("name") or ""
                    entry["arguments"] += call.get("function", {}).get("arguments") or ""
        assert [c["name"] for c in calls.values()] == [TOOL_NAME]
        assert json.loads(calls[0]["arguments"]) == TOOL_ARGS
        assert "tool_calls" in reasons
    else:
        choice = reply.json()["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        call = choice["message"]["tool_calls"][0]
        assert call["function"]["name"] == TOOL_NAME and call["id"].startswith("call_")
        assert json.loads(call["function"]["arguments"]) == TOOL_ARGS
    sent = fakes["ollama"].requests[-1].json
    assert sent["messages"][0]["images"] == ["iVBORw0KGgo="]
    assert sent["tools"][0]["function"]["name"] == TOOL_NAME


def test_ollama_tool_results_go_back_natively(router, fakes):
    body = {
        "model": "xrouter/auto",
        "tools": TOOLS,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": unique("weather in Paris?")},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": TOOL_NAME, "arguments": json.dumps(TOOL_ARGS)},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
        ],
    }
    with router.client() as client:
        reply = client.post(CHAT, json=body, headers=pinned("cheap"))
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == "Hello from ollama!"
    sent = fakes["ollama"].requests[-1].json["messages"]
    assert sent[2]["tool_calls"] == [{"function": {"name": TOOL_NAME, "arguments": TOOL_ARGS}}]
    assert sent[3] == {"role": "tool", "content": "18 C, sunny", "tool_name": TOOL_NAME}


def test_an_anthropic_client_streams_from_ollama(router, fakes):
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": unique("anthropic to ollama")}],
    }
    with router.client() as client:
        reply = client.post(
            "/v1/messages",
            json=body,
            headers={**pinned("cheap"), "anthropic-version": "2023-06-01"},
        )
    assert reply.status_code == 200, reply.text
    text = "".join(
        (json.loads(line[6:]).get("delta") or {}).get("text") or ""
        for line in reply.text.splitlines()
        if line.startswith("data: {")
    )
    assert text == "Hello from ollama!"
    assert "event: message_stop" in reply.text
    assert fakes["ollama"].requests[-1].path == "/api/chat"


def test_an_ollama_error_falls_back_with_its_message(router, fakes):
    fakes["ollama"].override = lambda request: ollama_error(
        404, 'model "qwen2.5:7b" not found, try pulling it first'
    )
    with router.client() as client:
        reply = client.post(CHAT, json=ask(unique("ollama 404")), headers=pinned("cheap"))
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-xrouter-fallback"] == "cheap:404"
    assert reply.headers["x-xrouter-upstream"] == "medium"


# ---- the catalog's settings ------------------------------------------------------------


def settings_of(doc: dict, **env: str):
    return load_settings(
        {"UPSTREAMS_JSON": json.dumps(doc), "XROUTER_AUTO_ROUTES": "false", **env},
        env_file="/nonexistent/.env",
        upstreams_file="/nonexistent/upstreams.json",
    )


def test_the_catalog_shape_with_prices_and_capabilities():
    doc = {
        "routes": {"frontier": {"base_url": "http://127.0.0.1:9/v1", "model": "frontier-model"}},
        "providers": {
            "openai": {
                "type": "openai",
                "base_url": "https://api.openai.com/v1",
                "api_key_env": "OPENAI_API_KEY",
                "vision": True,
                "models": {
                    "gpt-4o-mini": {"tiers": ["cheap", "medium"], "tools": True},
                    "gpt-4.1": {"tiers": ["frontier"], "cached_price": 0.25, "quality": 0.9},
                },
            },
            "local": {
                "type": "ollama",
                "base_url": "http://127.0.0.1:11434",
                "tiers": "cheap",
                "models": ["qwen2.5:7b", {"model": "llama3.2:3b", "tools": False}],
            },
        },
    }
    settings = settings_of(
        doc, OPENAI_API_KEY="sk-test-openai-key-1234", CLASSIFIER_ENABLED="false"
    )
    cheap = settings.tier_candidates("cheap")
    assert [(r.key, r.name, r.provider, r.model) for r in cheap] == [
        ("cheap#1", "openai/gpt-4o-mini", "openai", "gpt-4o-mini"),
        ("cheap#2", "local/qwen2.5:7b", "ollama", "qwen2.5:7b"),
        ("cheap#3", "local/llama3.2:3b", "ollama", "llama3.2:3b"),
    ]
    assert [(r.vision, r.tools) for r in cheap] == [(True, True), (False, None), (False, False)]
    assert cheap[0].api_key == "sk-test-openai-key-1234"
    # The tier's own route first, then the catalog's.
    frontier = settings.tier_candidates("frontier")
    assert [r.label for r in frontier] == ["openai_compatible/frontier-model", "openai/gpt-4.1"]
    assert frontier[1].quality == 0.9
    # Prices left out come from genai-prices; a catalog's cached price replaces its rate.
    pricing = Pricing(settings)
    mini = pricing.resolve_route(cheap[0], "gpt-4o-mini")
    assert mini.source == "genai-prices" and mini.input > 0 and mini.output > mini.input
    gpt41 = pricing.resolve_route(frontier[1], "gpt-4.1")
    assert gpt41.source == "genai-prices" and gpt41.cache_read == 0.25
    assert pricing.resolve_route(cheap[1], "qwen2.5:7b").source == "local"
    assert "sk-test-openai-key-1234" in settings.secrets


def test_a_tier_whose_providers_all_lack_their_keys_stops_the_router():
    doc = {
        "providers": {
            "groq": {
                "base_url": "https://api.groq.com/openai/v1",
                "api_key_env": "GROQ_API_KEY",
                "tiers": ["cheap", "medium", "frontier"],
                "models": ["llama-3.1-8b-instant"],
            }
        }
    }
    with pytest.raises(ConfigError) as caught:
        settings_of(doc, GROQ_API_KEY="", CLASSIFIER_ENABLED="false")
    problems = caught.value.problems
    assert any(
        p.startswith("tier frontier has no route") and "'groq'" in p and "GROQ_API_KEY" in p
        for p in problems
    ), problems


@pytest.mark.parametrize(
    ("providers", "expected"),
    [
        ({"x": {"base_url": "http://h/v1", "models": ["m"]}}, "which tiers may it serve"),
        ({"x": {"base_url": "http://h/v1", "tiers": ["huge"], "models": ["m"]}}, "unknown tiers"),
        ({"x": {"base_url": "http://h/v1", "tiers": ["cheap"], "models": []}}, "non-empty list"),
        ({"x": {"base_url": "http://h/v1", "tier": ["cheap"], "models": ["m"]}}, "unknown keys"),
        (
            {"x": {"type": "nope", "base_url": "http://h/v1", "tiers": ["cheap"], "models": ["m"]}},
            "not a known provider type",
        ),
        (
            {
                "x": {
                    "base_url": "http://h/v1",
                    "tiers": "cheap",
                    "models": [{"model": "m", "quality": 3}],
                }
            },
            "must be a number 0..1",
        ),
        (
            {
                "x": {
                    "base_url": "http://h/v1",
                    "tiers": "cheap",
                    "api_key": "k",
                    "api_key_env": "K",
                    "models": ["m"],
                }
            },
            "not both",
        ),
    ],
)
def test_catalog_problems_are_named(providers, expected):
    doc = {"routes": {"frontier": {"base_url": "http://127.0.0.1:9/v1"}}, "providers": providers}
    with pytest.raises(ConfigError) as caught:
        settings_of(doc, CLASSIFIER_ENABLED="false")
    assert any(expected in p and "providers.x" in p for p in caught.value.problems), (
        caught.value.problems
    )


def test_a_routes_candidate_with_api_key_env_is_skipped_too():
    doc = {
        "routes": {
            "frontier": [
                {"base_url": "http://127.0.0.1:9/v1", "model": "a"},
                {"base_url": "http://127.0.0.1:8/v1", "model": "b", "api_key_env": "B_KEY"},
            ]
        }
    }
    settings = settings_of(doc, CLASSIFIER_ENABLED="false")
    assert [r.model for r in settings.tier_candidates("frontier")] == ["a"]
    assert settings.warnings == (
        "route routes.frontier[1] (its key variable B_KEY is not set) is skipped",
    )
    found = settings_of(doc, CLASSIFIER_ENABLED="false", B_KEY="sk-b-key-0001")
    assert [r.api_key for r in found.tier_candidates("frontier")] == ["", "sk-b-key-0001"]


def documented_catalogs(page: str) -> list[dict]:
    from conftest import ROOT

    text = (ROOT / "docs" / page).read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```json\n")[1:]]
    return [json.loads(b) for b in blocks if '"providers"' in b]


def test_the_documented_catalogs_read_as_the_docs_say():
    (sample,) = documented_catalogs("configuration.md")
    settings = settings_of(sample, OPENAI_API_KEY="sk-doc-openai-0001", CLASSIFIER_ENABLED="false")
    assert len(settings.warnings) == 2
    assert all("GROQ_API_KEY" in w or "ANTHROPIC_API_KEY" in w for w in settings.warnings)
    assert [r.name for r in settings.tier_candidates("cheap")] == [
        "local/qwen2.5:7b",
        "local/llama3.2:3b",
    ]
    assert [r.name for r in settings.tier_candidates("medium")] == ["openai/gpt-5.4-mini"]
    assert [r.name for r in settings.tier_candidates("frontier")] == ["openai/gpt-5.4"]
    assert settings.routing.strategies == {"cheap": "latency", "medium": "price"}
    (fallback,) = documented_catalogs("fallback.md")
    both = settings_of(fallback, OPENAI_API_KEY="sk-doc-openai-0001", GROQ_API_KEY="gsk_doc_0001")
    assert [r.name for r in both.tier_candidates("cheap")] == [
        "groq/llama-3.1-8b-instant",
        "local/qwen2.5:7b",
    ]


def test_a_node_ollama_provider_keeps_its_meaning():
    """The Node Xrouter's `ollama` was OpenAI-compatible: with a /v1 URL it still is;
    at the server's root it is Ollama's native API (both are served by Ollama)."""
    base = {"FRONTIER_BASE_URL": "http://127.0.0.1:9/v1", "CLASSIFIER_ENABLED": "false"}
    compat = settings_of({}, **base, FRONTIER_PROVIDER="ollama")
    assert compat.route("frontier").provider == "openai_compatible"
    native = settings_of(
        {}, **{**base, "FRONTIER_BASE_URL": "http://127.0.0.1:11434"}, FRONTIER_PROVIDER="ollama"
    )
    assert native.route("frontier").provider == "ollama"


def test_the_ollama_stream_decoder_takes_any_chunking_and_error_lines():
    from xrouter_core.wire import canonical as ev
    from xrouter_core.wire.adapters.ollama import OllamaAdapter

    fake = FakeOllamaProvider("split")
    try:
        body = {"model": "qwen2.5:7b", "messages": [{"role": "user", "content": "hi"}]}
        reply = fake.answer(fakes_recorded(body))
    finally:
        fake.close()
    data = "".join(reply.chunks).encode()
    whole = OllamaAdapter().stream_decoder()
    expected = whole.feed(data) + whole.finish()
    for size in (1, 3, 7, 64):
        decoder = OllamaAdapter().stream_decoder()
        events = []
        for i in range(0, len(data), size):
            events += decoder.feed(data[i : i + size])
        events += decoder.finish()
        assert events == expected
    text = "".join(e.text for e in expected if isinstance(e, ev.TextDelta))
    assert text == "Hello from split!"
    assert [type(e) for e in expected[-2:]] == [ev.Finish, ev.Usage]
    assert expected[-1] == ev.Usage(PROMPT_TOKENS, COMPLETION_TOKENS)
    # A server that fails mid-answer says so in a line of its own.
    broken = OllamaAdapter().stream_decoder()
    events = broken.feed(data.split(b"\n")[0] + b'\n{"error":"an unexpected EOF"}\n')
    assert isinstance(events[-1], ev.StreamError) and events[-1].message == "an unexpected EOF"


def fakes_recorded(body: dict):
    from fakes import Recorded

    return Recorded("POST", "/api/chat", {}, json.dumps(body).encode())
