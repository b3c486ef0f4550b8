"""The original Node Xrouter's configuration, read as it is (issue 16, point 1).

The unit tests load settings from Node-shaped sources; the end-to-end tests start real
routers (both launchers) from the fixture in tests/fixtures/node_xrouter/: an
`env.example` and an `upstreams.json` in the original's shape, written from its
documented variables, with the fake providers' URLs filled in.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from conftest import Router, unique
from fakes import Reply

from xrouter_core.accounting.cache import MemoryCache
from xrouter_core.config import ClassifierSettings, ConfigError, load_settings
from xrouter_core.routing.builtin import BuiltinClassifier
from xrouter_core.routing.classifier import LLMClassifier
from xrouter_core.routing.policy import Policy, classifier_identity
from xrouter_core.wire.adapters import adapter_for
from xrouter_core.wire.inbound import parse_openai_chat

FIXTURE = Path(__file__).parent / "fixtures" / "node_xrouter"

BASE = {
    "CLASSIFIER_BASE_URL": "http://127.0.0.1:11434",
    "CLASSIFIER_MODEL": "qwen2.5:0.5b",
    "MEDIUM_BASE_URL": "https://api.groq.com/openai/v1",
    "FRONTIER_BASE_URL": "https://api.openai.com/v1",
}


def load(env, tmp_path, dotenv=None, upstreams=None):
    env_file = tmp_path / ".env"
    ups = tmp_path / "upstreams.json"
    if dotenv is not None:
        env_file.write_text(dotenv)
    if upstreams is not None:
        ups.write_text(json.dumps(upstreams))
    return load_settings(env, env_file=env_file, upstreams_file=ups)


def test_warn_is_a_log_level(tmp_path):
    assert load({**BASE, "LOG_LEVEL": "warn"}, tmp_path).log_level == "warning"
    assert load({**BASE, "LOG_LEVEL": "WARN"}, tmp_path).log_level == "warning"
    with pytest.raises(ConfigError, match="LOG_LEVEL must be one of"):
        load({**BASE, "LOG_LEVEL": "loud"}, tmp_path)


NODE_UPSTREAMS = {
    "cheap": {"baseUrl": "http://127.0.0.1:11434", "model": "llama3.2:1b", "name": "local"},
    "medium": {
        "provider": "azure",
        "baseUrl": "https://my.openai.azure.com",
        "apiKey": "az-key-0000000001",
        "deployment": "gpt-4o-mini",
        "apiVersion": "2024-06-01",
        "timeoutMs": 45000,
        "headers": {"X-Team": "core"},
    },
    "frontier": {
        "provider": "anthropic",
        "baseUrl": "https://api.anthropic.com",
        "apiKey": "sk-ant-0000000002",
        "model": "claude-sonnet-4-5",
        "name": "claude",
    },
}


def test_the_node_upstreams_file_is_read(tmp_path):
    settings = load(
        {"CLASSIFIER_BASE_URL": "http://127.0.0.1:11434", "CLASSIFIER_MODEL": "qwen"},
        tmp_path,
        upstreams=NODE_UPSTREAMS,
    )
    cheap, medium, frontier = (settings.route(t) for t in ("cheap", "medium", "frontier"))
    assert (cheap.model, cheap.name) == ("llama3.2:1b", "local")
    assert (medium.provider, medium.deployment, medium.api_version) == (
        "azure",
        "gpt-4o-mini",
        "2024-06-01",
    )
    assert medium.api_key == "az-key-0000000001" and medium.headers == {"X-Team": "core"}
    assert medium.first_byte_timeout_ms == 45000
    assert (frontier.provider, frontier.model, frontier.name) == (
        "anthropic",
        "claude-sonnet-4-5",
        "claude",
    )
    assert "sk-ant-0000000002" in settings.secrets
    assert any("timeoutMs is read as <TIER>_FIRST_BYTE_TIMEOUT_MS" in n for n in settings.notes)


def test_node_file_values_outrank_the_variables_as_in_the_original(tmp_path):
    """The original merged `file ?? env` per field: a placeholder left in .env from its
    env.example does not replace what its wizard wrote to upstreams.json."""
    settings = load(
        {**BASE, "FRONTIER_MODEL": "from-env", "FRONTIER_API_KEY": "sk-env-key-000003"},
        tmp_path,
        dotenv="FRONTIER_BASE_URL=https://placeholder.example/v1\n",
        upstreams={"frontier": {"baseUrl": "https://api.openai.com/v1", "model": None}},
    )
    frontier = settings.route("frontier")
    assert frontier.base_url == "https://api.openai.com/v1"
    assert frontier.model == "from-env"  # null in the file: the variable's value stays
    assert frontier.api_key == "sk-env-key-000003"  # not in the file at all


def test_null_tier_means_no_route_and_bad_shapes_are_named(tmp_path):
    with pytest.raises(ConfigError, match="MEDIUM_BASE_URL is required"):
        load(BASE, tmp_path, upstreams={"medium": None})
    # No cheap upstream: cheap is the classifier's engine, as without CHEAP_BASE_URL.
    env = {**BASE, "CHEAP_BASE_URL": "https://cheap.example/v1"}
    settings = load(env, tmp_path, upstreams={"cheap": None})
    assert settings.route("cheap").base_url == BASE["CLASSIFIER_BASE_URL"]
    with pytest.raises(ConfigError, match="medium must be an object"):
        load(BASE, tmp_path, upstreams={"medium": "https://x"})
    with pytest.raises(ConfigError, match=r"frontier.timeoutMs must be a whole number"):
        load(BASE, tmp_path, upstreams={"frontier": {"timeoutMs": "soon"}})


def test_unknown_keys_in_the_node_shape_are_noted_not_fatal(tmp_path):
    doc = {"frontier": {"baseUrl": "https://api.openai.com/v1", "label": "x"}, "wizard": 2}
    settings = load(BASE, tmp_path, upstreams=doc)
    assert any("frontier.label is not a setting" in n for n in settings.notes)
    assert any("['wizard']" in n for n in settings.notes)
    # This router's own shape stays strict: a typo there stops the router.
    with pytest.raises(ConfigError, match="unknown keys"):
        load(BASE, tmp_path, upstreams={"routes": {}, "wizard": 2})


def test_upstreams_json_variable_when_there_is_no_file(tmp_path):
    inline = json.dumps({"frontier": {"baseUrl": "https://inline.example/v1", "model": "m"}})
    settings = load({**BASE, "UPSTREAMS_JSON": inline}, tmp_path)
    assert settings.route("frontier").base_url == "https://inline.example/v1"
    # This router's shape works there too.
    inline = json.dumps({"routes": {"frontier": {"base_url": "https://own.example/v1"}}})
    no_frontier = {k: v for k, v in BASE.items() if k != "FRONTIER_BASE_URL"}
    settings = load({**no_frontier, "UPSTREAMS_JSON": inline}, tmp_path)
    assert settings.route("frontier").base_url == "https://own.example/v1"
    with pytest.raises(ConfigError, match="UPSTREAMS_JSON is not valid JSON"):
        load({**BASE, "UPSTREAMS_JSON": "{cheap:"}, tmp_path)
    # With a file, the file is read (the original's order) and the variable is noted.
    settings = load(
        {**BASE, "UPSTREAMS_JSON": inline},
        tmp_path,
        upstreams={"frontier": {"baseUrl": "https://file.example/v1"}},
    )
    assert settings.route("frontier").base_url == "https://file.example/v1"
    assert any("UPSTREAMS_JSON is ignored" in n for n in settings.notes)


def test_renamed_variables_map_onto_the_new_settings_with_a_note(tmp_path):
    env = {
        **BASE,
        "BODY_LIMIT": "5000000",
        "CACHE_ENABLED": "false",
        "CACHE_TTL_MS": "90500",
        "CACHE_MAX": "50000",
        "UPSTREAM_TIMEOUT_MS": "30000",
        "FRONTIER_TIMEOUT_MS": "60000",
    }
    settings = load(env, tmp_path)
    assert settings.max_body_bytes == 5_000_000
    assert settings.decision_cache_enabled is False
    assert settings.decision_cache_ttl == 91  # seconds, rounded up
    assert settings.decision_cache_max == 50_000
    assert settings.route("medium").first_byte_timeout_ms == 30_000
    assert settings.route("frontier").first_byte_timeout_ms == 60_000
    notes = "\n".join(settings.notes)
    for old, new in (
        ("BODY_LIMIT", "MAX_BODY_BYTES"),
        ("CACHE_ENABLED", "DECISION_CACHE_ENABLED"),
        ("CACHE_TTL_MS", "DECISION_CACHE_TTL"),
        ("CACHE_MAX", "DECISION_CACHE_MAX"),
        ("UPSTREAM_TIMEOUT_MS", "FIRST_BYTE_TIMEOUT_MS"),
        ("FRONTIER_TIMEOUT_MS", "FRONTIER_FIRST_BYTE_TIMEOUT_MS"),
    ):
        assert f"{old}=" in notes and f"read as {new}=" in notes
    # The new name wins when both are set, and says so.
    settings = load({**BASE, "BODY_LIMIT": "5", "MAX_BODY_BYTES": "7"}, tmp_path)
    assert settings.max_body_bytes == 7
    assert any("MAX_BODY_BYTES is set and wins" in n for n in settings.notes)
    with pytest.raises(ConfigError, match="CACHE_TTL_MS must be a whole number"):
        load({**BASE, "CACHE_TTL_MS": "1h"}, tmp_path)


def test_provider_names_of_other_configurations_are_read(tmp_path):
    env = {**BASE, "MEDIUM_PROVIDER": "Ollama", "FRONTIER_PROVIDER": "google"}
    settings = load(env, tmp_path)
    assert settings.route("medium").provider == "openai_compatible"
    assert settings.route("frontier").provider == "gemini"
    assert any("FRONTIER_PROVIDER=google is read as gemini" in n for n in settings.notes)
    with pytest.raises(ConfigError, match="is not a known provider type"):
        load({**BASE, "MEDIUM_PROVIDER": "nonesuch"}, tmp_path)


def test_classifier_request_settings(tmp_path):
    env = {
        **BASE,
        "CLASSIFIER_STRATEGY": "all_user",
        "CLASSIFIER_MAX_CHARS": "8000",
        "CLASSIFIER_MAX_TOKENS": "1",
        "CLASSIFIER_TEMPERATURE": "0.2",
        "CLASSIFIER_LOGIT_BIAS": '{"15": 100, "16": 100, "17": 100}',
    }
    c = load(env, tmp_path).classifier
    assert (c.strategy, c.max_chars, c.max_tokens, c.temperature) == ("all_user", 8000, 1, 0.2)
    assert c.logit_bias == {"15": 100, "16": 100, "17": 100}
    defaults = load(BASE, tmp_path).classifier
    assert (defaults.strategy, defaults.max_tokens, defaults.temperature) == ("last_user", 0, None)
    for name, value, message in (
        ("CLASSIFIER_STRATEGY", "everything", "CLASSIFIER_STRATEGY must be one of"),
        ("CLASSIFIER_TEMPERATURE", "hot", "CLASSIFIER_TEMPERATURE must be"),
        ("CLASSIFIER_LOGIT_BIAS", "[1]", "CLASSIFIER_LOGIT_BIAS must be"),
        ("CLASSIFIER_LOGIT_BIAS", '{"15": 500}', "CLASSIFIER_LOGIT_BIAS must be"),
    ):
        with pytest.raises(ConfigError, match=message):
            load({**BASE, name: value}, tmp_path)


def test_header_names_route_names_and_api_versions(tmp_path):
    env = {
        **BASE,
        "DECISION_HEADER": "X-OpenRouter-Decision",
        "UPSTREAM_HEADER": "x-openrouter-upstream",
        "MEDIUM_NAME": "groq-llama",
        "AZURE_API_VERSION": "2024-02-01",
        "ANTHROPIC_VERSION": "2023-01-01",
        "CHEAP_BASE_URL": "https://x.openai.azure.com",
        "CHEAP_DEPLOYMENT": "mini",
        "FRONTIER_BASE_URL": "https://api.anthropic.com",
    }
    settings = load(env, tmp_path)
    assert (settings.decision_header, settings.upstream_header) == (
        "x-openrouter-decision",
        "x-openrouter-upstream",
    )
    assert settings.route("medium").name == "groq-llama"
    assert settings.route("medium").public()["name"] == "groq-llama"
    assert settings.route("cheap").api_version == "2024-02-01"
    frontier = settings.route("frontier")
    assert (frontier.provider, frontier.api_version) == ("anthropic", "2023-01-01")
    assert settings.route("medium").api_version == ""  # Groq has no API version
    with pytest.raises(ConfigError, match="DECISION_HEADER must be a header name"):
        load({**BASE, "DECISION_HEADER": "bad header: x"}, tmp_path)

    # The versions reach the providers: Anthropic's header, Azure's query parameter.
    chat = parse_openai_chat(b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}')
    sent = adapter_for(frontier).build_request(frontier, chat, [])
    assert sent.headers["anthropic-version"] == "2023-01-01"
    cheap = settings.route("cheap")
    assert "api-version=2024-02-01" in adapter_for(cheap).build_request(cheap, chat, []).url
    plain = load({**BASE, "FRONTIER_BASE_URL": "https://api.anthropic.com"}, tmp_path)
    route = plain.route("frontier")
    assert adapter_for(route).build_request(route, chat, []).headers["anthropic-version"] == (
        "2023-06-01"
    )


def test_the_classifier_request_takes_the_node_settings():
    plain = ClassifierSettings(base_url="http://127.0.0.1:9/v1", model="m", api="chat")
    tuned = ClassifierSettings(
        base_url=plain.base_url,
        model="m",
        api="chat",
        max_tokens=1,
        temperature=0.5,
        logit_bias={"15": 100},
    )
    client = httpx.AsyncClient()
    own, node = (
        LLMClassifier(plain, client)._payload("q"),
        LLMClassifier(tuned, client)._payload("q"),
    )
    assert (own["max_tokens"], own["temperature"], "logit_bias" in own) == (4, 0, False)
    assert (node["max_tokens"], node["temperature"], node["logit_bias"]) == (1, 0.5, {"15": 100})
    # Decisions made under other request settings are not reused from the cache.
    assert classifier_identity(plain, LLMClassifier(plain, client), None) != classifier_identity(
        tuned, LLMClassifier(tuned, client), None
    )


def conversation(*texts: str):
    messages = []
    for text in texts:
        messages += [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]
    return parse_openai_chat(json.dumps({"messages": messages[:-1]}).encode())


def test_strategy_max_chars_and_an_off_decision_cache():
    request = conversation("first ask " * 3, "second ask")
    last = Policy(None, MemoryCache(), settings=ClassifierSettings())
    every = Policy(None, MemoryCache(), settings=ClassifierSettings(strategy="all_user"))
    assert last.input_of(request).endswith("second ask")
    assert "first ask" in every.input_of(request) and "second ask" in every.input_of(request)
    short = Policy(None, MemoryCache(), settings=ClassifierSettings(max_chars=40))
    assert len(short.input_of(conversation("word " * 100))) <= 40

    async def decide_twice(cache_decisions: bool) -> list[str]:
        settings = ClassifierSettings(mode="builtin")
        policy = Policy(
            None,
            MemoryCache(),
            builtin=BuiltinClassifier(settings.thresholds),
            settings=settings,
            cache_decisions=cache_decisions,
        )
        ask = conversation("Write a haiku about tea")
        return [(await policy.decide_fresh(ask)).source for _ in range(2)]

    assert asyncio.run(decide_twice(True)) == ["builtin", "cache"]
    assert asyncio.run(decide_twice(False)) == ["builtin", "builtin"]


# ---- end to end: the fixture, a real router ---------------------------------------------


def write_node_fixture(directory: Path, upstreams, extra_env: str = "") -> None:
    """The fixture with the fake providers' URLs in place, as `.env` and `upstreams.json`."""
    urls = {
        "{CLASSIFIER_URL}": upstreams.classifier.url,
        "{CHEAP_URL}": upstreams.cheap.url,
        "{MEDIUM_URL}": upstreams.medium.url,
        "{FRONTIER_URL}": upstreams.frontier.url,
    }
    for source, target in (("env.example", ".env"), ("upstreams.json", "upstreams.json")):
        text = (FIXTURE / source).read_text()
        for placeholder, url in urls.items():
            text = text.replace(placeholder, url)
        if target == ".env":
            text += extra_env
        (directory / target).write_text(text)


def node_router(tmp_path: Path, upstreams, launcher: str, extra_env: str = "") -> Router:
    directory = tmp_path / "node"
    directory.mkdir()
    write_node_fixture(directory, upstreams, extra_env)
    # Only what the test harness needs in the environment: the rest comes from the files,
    # found where the original found them (./.env and ./upstreams.json).
    env = {"XROUTER_ENV_FILE": ".env", "UPSTREAMS_FILE": "upstreams.json"}
    return Router(env, directory, launcher=launcher)


def test_the_node_fixture_starts_and_routes(tmp_path, upstreams, launcher):
    upstreams.classifier.digit = "0"
    router = node_router(tmp_path, upstreams, launcher)
    try:
        with router.client() as client:
            health = client.get("/health").json()
            assert health["routes"]["cheap"]["name"] == "local-llama"
            answer = client.post(
                "/v1/chat/completions",
                json={"model": "auto", "messages": [{"role": "user", "content": unique("hi")}]},
            )
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-openrouter-decision"] == "0"
        assert answer.headers["x-openrouter-upstream"] == "local-llama"
        assert answer.headers["x-xrouter-upstream"] == "cheap"
        assert "Hello from cheap" in answer.json()["choices"][0]["message"]["content"]
        # upstreams.json outranks the placeholder URL and the model .env holds.
        sent = upstreams.cheap.requests[-1]
        assert sent.json["model"] == "llama3.2:1b"
        # The classifier was asked the way the Node settings say.
        asked = upstreams.classifier.requests[-1].json
        assert asked["max_tokens"] == 1 and asked["temperature"] == 0
        logs = router.logs()
        assert "Traceback" not in logs
        # LOG_LEVEL=warn: the info lines (the notes among them) are not written.
        assert "routed decision=" not in logs
        assert "sk-node" not in logs
    finally:
        assert router.stop() == 0


def test_the_node_fixture_notes_each_mapping_once(tmp_path, upstreams, launcher):
    router = node_router(tmp_path, upstreams, launcher, extra_env="LOG_LEVEL=info\n")
    try:
        logs = router.logs()
        for old, new in (
            ("BODY_LIMIT", "MAX_BODY_BYTES"),
            ("CACHE_TTL_MS", "DECISION_CACHE_TTL"),
            ("CACHE_MAX", "DECISION_CACHE_MAX"),
            ("CACHE_ENABLED", "DECISION_CACHE_ENABLED"),
            ("UPSTREAM_TIMEOUT_MS", "FIRST_BYTE_TIMEOUT_MS"),
        ):
            lines = [line for line in logs.splitlines() if f"{old}=" in line]
            assert len(lines) == 1, (old, lines)
            assert f"read as {new}=" in lines[0]
        assert "sk-node" not in logs
        with router.client() as client:
            assert client.get("/health").status_code == 200
    finally:
        assert router.stop() == 0


def test_node_header_names_on_streams_and_errors(tmp_path, upstreams, launcher):
    upstreams.classifier.digit = "2"
    router = node_router(tmp_path, upstreams, launcher)
    try:
        body = {
            "model": "auto",
            "stream": True,
            "messages": [{"role": "user", "content": unique("stream please")}],
        }
        with (
            router.client() as client,
            client.stream("POST", "/v1/chat/completions", json=body) as answer,
        ):
            text = "".join(answer.iter_text())
            assert answer.status_code == 200
            assert answer.headers["x-openrouter-decision"] == "2"
            assert answer.headers["x-openrouter-upstream"] == "frontier-gpt"
        assert "[DONE]" in text
        upstreams.frontier.override = lambda request: Reply(
            status=400, body={"error": {"message": "bad request", "type": "invalid"}}
        )
        with router.client() as client:
            failed = client.post(
                "/v1/chat/completions",
                json={"model": "auto", "messages": [{"role": "user", "content": unique("x")}]},
            )
        assert failed.status_code == 400
        assert failed.headers["x-openrouter-decision"] == "2"
        assert failed.headers["x-openrouter-upstream"] == "frontier-gpt"
    finally:
        router.stop()


def test_a_placeholder_url_is_not_what_the_router_calls(tmp_path, upstreams):
    """The fixture's .env names an address nothing listens on: had the variable outranked
    upstreams.json, this router would answer 502 instead of routing."""
    directory = tmp_path / "n"
    directory.mkdir()
    write_node_fixture(directory, upstreams)
    settings = load_settings({}, directory / ".env", directory / "upstreams.json")
    assert settings.route("cheap").base_url == upstreams.cheap.url + "/v1"
    assert "127.0.0.1:9" in (directory / ".env").read_text()


def test_node_header_names_on_response_cache_hits(tmp_path, upstreams, launcher):
    upstreams.classifier.digit = "1"
    extra = f"CACHE_RESPONSES=true\nXROUTER_DATA_DIR={tmp_path / 'data'}\n"
    router = node_router(tmp_path, upstreams, launcher, extra_env=extra)
    try:
        body = {"model": "auto", "messages": [{"role": "user", "content": unique("same")}]}
        with router.client() as client:
            first = client.post("/v1/chat/completions", json=body)
            again = client.post("/v1/chat/completions", json=body)
        assert first.headers["x-xrouter-cache"] == "miss"
        assert again.headers["x-xrouter-cache"] == "hit"
        for answer in (first, again):
            assert answer.headers["x-openrouter-decision"] == "1"
            assert answer.headers["x-openrouter-upstream"] == "medium-mini"
    finally:
        router.stop()
