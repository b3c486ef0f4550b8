"""Zero-config start: default routes from the provider keys in the environment.

The choice itself on plain settings, then real routers under both launchers in front of
fake providers that the standard base-URL variables (OPENAI_BASE_URL, ANTHROPIC_BASE_URL,
GOOGLE_GEMINI_BASE_URL) point at: one key, several keys, an explicit override, a list that
cannot be read, a base URL that points at the router, and no configuration at all.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from conftest import Router, unique
from fakes import (
    FakeAnthropicProvider,
    FakeGeminiProvider,
    FakeModelProvider,
    Reply,
    gemini_models_page,
)

from xrouter_core.config import ConfigError, NoConfiguration, load_settings
from xrouter_core.default_routes import blended_price, key_variables, tier_map

OPENAI_KEY = "sk-openai-default-0001"
ANTHROPIC_KEY = "sk-ant-default-0002"
GEMINI_KEY = "AIza-default-0003"
OPENAI = tier_map()["providers"]["openai"]["tiers"]
ANTHROPIC = tier_map()["providers"]["anthropic"]["tiers"]
GEMINI = tier_map()["providers"]["gemini"]["tiers"]


def load(env: dict[str, str], tmp_path):
    return load_settings(
        env, env_file=tmp_path / "none.env", upstreams_file=tmp_path / "upstreams.json"
    )


# ---- the choice ------------------------------------------------------------------------


def test_one_key_fills_every_tier_from_its_provider_with_the_builtin_classifier(tmp_path):
    settings = load({"ANTHROPIC_API_KEY": ANTHROPIC_KEY}, tmp_path)
    for tier in ("cheap", "medium", "frontier"):
        route = settings.route(tier)
        assert (route.base_url, route.provider, route.api_key) == (
            "https://api.anthropic.com",
            "anthropic",
            ANTHROPIC_KEY,
        )
        assert route.model == ANTHROPIC[tier]
        assert "ANTHROPIC_API_KEY is the only provider key" in settings.default_routes[tier].why
    assert settings.classifier.uses_builtin and not settings.classifier.uses_llm
    # The provider key is served to this machine only, unless HOST or a router key says so.
    assert settings.host == "127.0.0.1"
    assert load({"OPENAI_API_KEY": OPENAI_KEY, "HOST": "0.0.0.0"}, tmp_path).host == "0.0.0.0"
    keyed = {"OPENAI_API_KEY": OPENAI_KEY, "ROUTER_API_KEY": "a-long-router-key"}
    assert load(keyed, tmp_path).host == "0.0.0.0"
    assert ANTHROPIC_KEY in settings.secrets
    assert ANTHROPIC_KEY not in json.dumps(settings.public())


def test_several_keys_each_tier_takes_the_cheapest_model_of_that_tier(tmp_path):
    settings = load({"OPENAI_API_KEY": OPENAI_KEY, "GEMINI_API_KEY": GEMINI_KEY}, tmp_path)
    providers = tier_map()["providers"]
    for tier in ("cheap", "medium", "frontier"):
        prices = {
            name: blended_price(providers[name], providers[name]["tiers"][tier])
            for name in ("openai", "gemini")
        }
        assert None not in prices.values()  # both priced by genai-prices
        cheapest = min(prices, key=lambda name: prices[name])
        chosen = settings.default_routes[tier]
        assert chosen.provider == cheapest
        assert settings.route(tier).model == providers[cheapest]["tiers"][tier]
        assert "cheapest" in chosen.why and "genai-prices" in chosen.why
    # Today's prices put the tiers on different providers: the rule really picks per tier.
    assert len({settings.default_routes[t].provider for t in settings.routes}) == 2


def test_explicit_settings_replace_the_defaults_tier_by_tier(tmp_path):
    upstreams = {"routes": {"frontier": {"base_url": "http://127.0.0.1:9/v1", "model": "mine"}}}
    (tmp_path / "upstreams.json").write_text(json.dumps(upstreams))
    env = {
        "OPENAI_API_KEY": OPENAI_KEY,
        "CHEAP_BASE_URL": "http://127.0.0.1:8/v1",
        "MEDIUM_MODEL": "gpt-custom-medium",
    }
    settings = load(env, tmp_path)
    assert settings.route("cheap").base_url == "http://127.0.0.1:8/v1"
    assert settings.route("cheap").api_key == ""  # the provider key is not handed elsewhere
    assert settings.route("frontier").model == "mine"
    medium = settings.route("medium")
    assert (medium.base_url, medium.model) == ("https://api.openai.com/v1", "gpt-custom-medium")
    assert list(settings.default_routes) == ["medium"]
    assert settings.default_routes["medium"].model == "gpt-custom-medium"
    assert settings.default_routes["medium"].why == "MEDIUM_MODEL on openai's default route"


def test_auto_routes_off_and_no_configuration_give_the_one_message(tmp_path):
    with pytest.raises(NoConfiguration) as nothing:
        load({}, tmp_path)
    message = nothing.value.message
    assert "./run python configure.py" in message
    assert all(var in message for var in key_variables())
    with pytest.raises(NoConfiguration) as off:
        load({"OPENAI_API_KEY": OPENAI_KEY, "XROUTER_AUTO_ROUTES": "false"}, tmp_path)
    assert "XROUTER_AUTO_ROUTES=false" in off.value.message
    assert "./run python configure.py" in off.value.message


def test_a_base_url_that_points_at_the_router_is_refused(tmp_path):
    env = {"ANTHROPIC_API_KEY": ANTHROPIC_KEY, "PORT": "3000"}
    for url in ("http://localhost:3000", "http://127.0.0.1:3000/", "http://0.0.0.0:3000"):
        with pytest.raises(ConfigError) as caught:
            load({**env, "ANTHROPIC_BASE_URL": url}, tmp_path)
        [problem] = caught.value.problems
        assert "ANTHROPIC_BASE_URL" in problem and "points at this router itself" in problem
    # Another port, or a router on another address, is another server.
    assert load({**env, "ANTHROPIC_BASE_URL": "http://localhost:3001"}, tmp_path).routes
    other = {**env, "HOST": "10.1.2.3", "ANTHROPIC_BASE_URL": "http://127.0.0.1:3000"}
    assert load(other, tmp_path).route("frontier").base_url == "http://127.0.0.1:3000"


def test_base_url_variables_as_the_sdks_read_them(tmp_path):
    # The groq SDK's GROQ_BASE_URL is the host: its calls add /openai/v1.
    groq = load({"GROQ_API_KEY": "gsk_default", "GROQ_BASE_URL": "http://127.0.0.1:7"}, tmp_path)
    assert groq.route("cheap").base_url == "http://127.0.0.1:7/openai/v1"
    assert groq.route("cheap").provider == "groq"
    # google-genai reads GOOGLE_API_KEY as well as GEMINI_API_KEY.
    env = {"GOOGLE_API_KEY": GEMINI_KEY, "GOOGLE_GEMINI_BASE_URL": "http://127.0.0.1:6"}
    gemini = load(env, tmp_path)
    assert gemini.route("frontier").base_url == "http://127.0.0.1:6"
    assert gemini.default_routes["frontier"].base_url_var == "GOOGLE_GEMINI_BASE_URL"
    assert gemini.default_routes["frontier"].key_var == "GOOGLE_API_KEY"
    with pytest.raises(ConfigError) as caught:
        load({"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": "ftp://nowhere"}, tmp_path)
    assert caught.value.problems == ["OPENAI_BASE_URL must be an http(s) URL, not 'ftp://nowhere'"]


# ---- real routers ------------------------------------------------------------------------


class ListingGemini(FakeGeminiProvider):
    """The Gemini fake, also answering GET /v1beta/models (key checked as Google does)."""

    def __init__(self, models: list[str]):
        self.models = models
        super().__init__("gemini")

    def answer(self, request):
        if request.method == "GET" and request.path.startswith("/v1beta/models"):
            if request.headers.get("x-goog-api-key") != GEMINI_KEY:
                return Reply(status=400, body={"error": {"message": "API key not valid."}})
            return Reply(body=gemini_models_page([(m, ["generateContent"]) for m in self.models]))
        return super().answer(request)


@pytest.fixture
def fakes():
    started = []

    def start(server):
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def start(env: dict[str, str], tmp_path, launcher: str, args: list[str] | None = None) -> Router:
    return Router(env, tmp_path, args=args, launcher=launcher)


def health_when_checked(router: Router, timeout: float = 20.0) -> dict:
    """/health once every default route's model list check has finished."""
    deadline = time.monotonic() + timeout
    while True:
        doc = router.client().get("/health").json()
        checks = [d.get("model_list") for d in doc["default_routes"].values()]
        if "checking" not in checks or time.monotonic() > deadline:
            return doc
        time.sleep(0.1)


def chat(router: Router, tier: str) -> dict:
    body = {"model": f"xrouter/{tier}", "messages": [{"role": "user", "content": unique("hi")}]}
    answer = router.client().post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_one_openai_key_starts_a_router_that_routes_to_it(launcher, tmp_path, fakes):
    provider = fakes(FakeModelProvider("openai", list(OPENAI.values()), key=OPENAI_KEY))
    env = {"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": provider.url + "/v1"}
    router = start(env, tmp_path, launcher)
    try:
        doc = health_when_checked(router)
        for tier in ("cheap", "medium", "frontier"):
            chosen = doc["default_routes"][tier]
            assert (chosen["provider"], chosen["model"]) == ("openai", OPENAI[tier])
            assert chosen["key_variable"] == "OPENAI_API_KEY"
            assert chosen["base_url_variable"] == "OPENAI_BASE_URL"
            assert "only provider key" in chosen["why"] and chosen["model_list"] == "listed"
        assert doc["classifier"]["mode"] == "hybrid" and doc["classifier"]["base_url"] is None
        chat(router, "medium")
        sent = [r for r in provider.requests if r.method == "POST"][-1]
        assert sent.json["model"] == OPENAI["medium"]
        assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"
        logs = router.logs()
        assert f"default route cheap: openai {OPENAI['cheap']} (OPENAI_API_KEY is the only" in logs
        assert "model list of openai checked" in logs
        assert OPENAI_KEY not in logs and OPENAI_KEY not in json.dumps(doc)
    finally:
        router.stop()


def test_several_keys_split_the_tiers_and_each_provider_is_checked(launcher, tmp_path, fakes):
    openai_fake = fakes(FakeModelProvider("openai", list(OPENAI.values()), key=OPENAI_KEY))
    gemini_fake = fakes(ListingGemini([GEMINI["medium"]]))  # lists medium, not frontier
    env = {
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": openai_fake.url + "/v1",
        "GEMINI_API_KEY": GEMINI_KEY,
        "GOOGLE_GEMINI_BASE_URL": gemini_fake.url,
    }
    expected = load(env, tmp_path).default_routes  # the rule, from today's prices
    router = start(env, tmp_path, launcher)
    try:
        doc = health_when_checked(router)
        for tier, chosen in expected.items():
            assert doc["default_routes"][tier]["provider"] == chosen.provider
            assert doc["default_routes"][tier]["model"] == chosen.model
        assert {c.provider for c in expected.values()} == {"openai", "gemini"}
        for tier, chosen in expected.items():
            listed = chosen.provider == "openai" or chosen.model == GEMINI["medium"]
            assert doc["default_routes"][tier]["model_list"] == (
                "listed" if listed else "not listed"
            )
            answer = chat(router, tier)
            text = answer["choices"][0]["message"]["content"]
            assert ("gemini" in text) == (chosen.provider == "gemini")
        logs = router.logs()
        if any(c.provider == "gemini" and c.model != GEMINI["medium"] for c in expected.values()):
            assert "gemini does not list" in logs
    finally:
        router.stop()


def test_an_explicit_route_wins_over_the_default(launcher, tmp_path, fakes, upstreams):
    provider = fakes(FakeModelProvider("openai", list(OPENAI.values()), key=OPENAI_KEY))
    env = {
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": provider.url + "/v1",
        "FRONTIER_BASE_URL": upstreams.frontier.url + "/v1",
        "FRONTIER_MODEL": "frontier-model",
    }
    router = start(env, tmp_path, launcher)
    try:
        doc = health_when_checked(router)
        assert sorted(doc["default_routes"]) == ["cheap", "medium"]
        assert doc["routes"]["frontier"]["base_url"] == upstreams.frontier.url + "/v1"
        assert "frontier" in chat(router, "frontier")["choices"][0]["message"]["content"]
        assert "authorization" not in upstreams.frontier.requests[-1].headers
        chat(router, "cheap")
        assert [r for r in provider.requests if r.method == "POST"][-1].json["model"] == (
            OPENAI["cheap"]
        )
    finally:
        router.stop()


def test_a_model_list_that_cannot_be_read_still_starts_and_says_so(launcher, tmp_path, fakes):
    # The Anthropic fake answers Messages but has no model list: GET /v1/models is a 404.
    provider = fakes(FakeAnthropicProvider("anthropic"))
    env = {"ANTHROPIC_API_KEY": ANTHROPIC_KEY, "ANTHROPIC_BASE_URL": provider.url}
    router = start(env, tmp_path, launcher)
    try:
        doc = health_when_checked(router)
        for tier in ("cheap", "medium", "frontier"):
            check = doc["default_routes"][tier]["model_list"]
            assert check.startswith("not checked:") and "HTTP 404" in check
        assert "Hello from anthropic" in chat(router, "cheap")["choices"][0]["message"]["content"]
        sent = [r for r in provider.requests if r.path == "/v1/messages"][-1]
        assert sent.json["model"] == ANTHROPIC["cheap"]
        assert sent.headers["x-api-key"] == ANTHROPIC_KEY
        assert "model list of anthropic not checked" in router.logs()
    finally:
        router.stop()


@pytest.fixture
def held_ports():
    """Two ports held open by the test (the API port and mitmproxy's proxy port): a router
    that tried to listen on either would log that it could not, so its log says whether
    it ever tried."""
    held = []
    for _ in range(2):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        held.append(sock)
    yield [s.getsockname()[1] for s in held]
    for sock in held:
        sock.close()


def test_a_base_url_pointing_at_the_router_stops_it_before_listening(
    launcher, tmp_path, held_ports
):
    port, proxy_port = held_ports
    env = {
        "PORT": str(port),
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "ANTHROPIC_BASE_URL": f"http://localhost:{port}",
    }
    args = ["--set", f"listen_port={proxy_port}"]
    router = Router(env, tmp_path, args=args, launcher=launcher, wait=False)
    try:
        assert router.proc.wait(30) == 1
        logs = router.logs()
        assert logs.count("points at this router itself") == 1
        assert "Unset ANTHROPIC_BASE_URL for the router" in logs
        assert "is required" not in logs and "Traceback" not in logs
        assert "listen" not in logs
        assert ANTHROPIC_KEY not in logs
    finally:
        router.stop()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_no_configuration_at_all_prints_one_message_and_opens_no_listener(
    launcher, tmp_path, workers, held_ports
):
    if launcher == "mitmdump" and workers == "2":
        pytest.skip("--workers is the lean launcher's option")
    port, proxy_port = held_ports
    args = ["--set", f"listen_port={proxy_port}"]
    if workers == "2":
        args += ["--workers", "2"]
    router = Router({"PORT": str(port)}, tmp_path, args=args, launcher=launcher, wait=False)
    try:
        assert router.proc.wait(30) == 2
        logs = router.logs()
        lines = [line for line in logs.splitlines() if "Loading script" not in line]
        assert len(lines) == 1, logs
        assert "OPENAI_API_KEY" in lines[0] and "./run python configure.py" in lines[0]
        assert "listen" not in logs and "Traceback" not in logs and "Error" not in logs
    finally:
        router.stop()
