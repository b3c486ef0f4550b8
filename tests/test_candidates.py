"""Several candidates per tier on a real router: the `ordered` and `price` strategies, a
dead or failing candidate replaced by another of the same tier (never escalated while one
is left), streamed and not, and the answer, log line and /usage saying which one served."""

from __future__ import annotations

import json

import pytest
from conftest import LAUNCHERS, Router, free_port, unique
from fakes import FakeOpenAIProvider, Reply
from test_fallback import ask, stream_text

from xrouter_core.config import ConfigError, load_settings

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def extra_providers():
    """Two more fake providers beside the session's one per tier."""
    servers = {"b": FakeOpenAIProvider("cheap-b"), "c": FakeOpenAIProvider("cheap-c")}
    yield servers
    for server in servers.values():
        server.close()


@pytest.fixture(autouse=True)
def clean_extra(extra_providers):
    for server in extra_providers.values():
        server.requests.clear()
        server.override = None
    yield
    for server in extra_providers.values():
        server.override = None


def catalog(upstreams, routes: dict, strategies: dict | None = None) -> dict[str, str]:
    """The session's settings with `routes` (upstreams.json's shape) as UPSTREAMS_JSON; the
    session's <TIER>_* variables of those tiers are left out so the document says it all."""
    env = upstreams.env()
    for tier in routes:
        for name in ("BASE_URL", "MODEL", "API_KEY"):
            env.pop(f"{tier.upper()}_{name}")
    doc: dict = {"routes": routes}
    if strategies:
        doc["strategies"] = strategies
    env["UPSTREAMS_JSON"] = json.dumps(doc)
    return env


def route(server, model: str, **extra) -> dict:
    return {"base_url": server.url + "/v1", "model": model, **extra}


@pytest.fixture(scope="module", params=LAUNCHERS)
def dead_first(request, upstreams_session, extra_providers, tmp_path_factory):
    """Cheap is [a closed port, cheap-b], ordered: the first candidate refuses connections."""
    dead = f"http://127.0.0.1:{free_port()}/v1"
    env = catalog(
        upstreams_session,
        {
            "cheap": [
                {"base_url": dead, "model": "dead-model", "api_key": "sk-dead-secret-0009"},
                route(extra_providers["b"], "cheap-b-model", name="cheap-b"),
            ]
        },
    )
    env["UPSTREAM_HEADER"] = "x-openrouter-upstream"  # the Node Xrouter's route-name header
    router = Router(
        env, tmp_path_factory.mktemp(f"dead-first-{request.param}"), launcher=request.param
    )
    yield router
    router.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_dead_candidate_costs_nothing_and_does_not_escalate(
    dead_first, upstreams, extra_providers, stream
):
    replies = []
    with dead_first.client() as client:
        for n in range(20):
            body = ask(unique(f"dead candidate {n}"), stream=stream, max_tokens=5)
            replies.append(client.post(CHAT, json=body, headers={"x-xrouter-tier": "cheap"}))
    assert [r.status_code for r in replies] == [200] * 20, replies[0].text
    for reply in replies:
        assert reply.headers["x-xrouter-upstream"] == "cheap"
        assert reply.headers["x-xrouter-route"] == "cheap-b"
        assert reply.headers["x-openrouter-upstream"] == "cheap-b"
        # cheap#1 failed (unreachable) or, once its breaker opened, was skipped.
        assert reply.headers["x-xrouter-fallback"] in (
            "cheap#1:unreachable",
            "cheap#1:circuit_open",
        )
        if stream:
            assert stream_text(reply) == "Hello from cheap-b!"
        else:
            assert reply.json()["choices"][0]["message"]["content"] == "Hello from cheap-b!"
            assert reply.json()["model"] == "cheap-b-model"
    assert len(extra_providers["b"].requests) == 20
    assert not upstreams.medium.requests and not upstreams.frontier.requests
    sent = extra_providers["b"].requests[-1]
    assert sent.json["model"] == "cheap-b-model"
    assert "authorization" not in sent.headers  # cheap-b has no key; the dead one's stays home
    # The breaker opened for the dead candidate only.
    health = dead_first.client().get("/health").json()
    breaker = health["fallback"]["circuit_breaker"]
    assert breaker["cheap#1"]["state"] == "open"
    assert "cheap#2" not in breaker or breaker["cheap#2"]["state"] == "closed"
    listed = health["candidates"]["cheap"]
    assert [(c["key"], c["label"], c["has_api_key"]) for c in listed] == [
        ("cheap#1", "openai_compatible/dead-model", True),
        ("cheap#2", "cheap-b", False),
    ]
    assert "sk-dead-secret-0009" not in json.dumps(health)
    logs = dead_first.logs()
    lines = [
        line for line in logs.splitlines() if "routed decision=" in line and "status=200" in line
    ]
    assert lines and all("route=cheap " in line for line in lines[-20:])
    assert all("candidate=cheap#2 via=cheap-b" in line for line in lines[-20:])
    assert "sk-dead-secret-0009" not in logs
    assert "Traceback" not in logs


def test_usage_counts_the_candidate_that_served(dead_first):
    with dead_first.client() as client:
        reply = client.post(
            CHAT, json=ask(unique("usage candidate")), headers={"x-xrouter-tier": "cheap"}
        )
        assert reply.status_code == 200
        dead_first.settle()
        usage = client.get("/usage").json()
    models = {(row["tier"], row["model"]): row for row in usage["models"]}
    assert models[("cheap", "cheap-b-model")]["requests"] >= 1
    assert ("cheap", "dead-model") not in models


@pytest.fixture(scope="module")
def priced(upstreams_session, extra_providers, tmp_path_factory):
    """Cheap by price: cheap-c (listed first, 6 $/1M), a dead one (0.2), cheap-b (2).
    Medium ordered: the session's medium, then cheap-c serving medium too."""
    dead = f"http://127.0.0.1:{free_port()}/v1"
    b, c = extra_providers["b"], extra_providers["c"]
    env = catalog(
        upstreams_session,
        {
            "cheap": [
                route(c, "cheap-c-model", input_price=3, output_price=3),
                {"base_url": dead, "model": "dead-model", "input_price": 0.1, "output_price": 0.1},
                route(b, "cheap-b-model", input_price=1, output_price=1),
            ],
            "medium": [
                route(upstreams_session.medium, "medium-model", name="medium-main"),
                route(c, "medium-spare-model", name="medium-spare"),
            ],
        },
        strategies={"cheap": "price"},
    )
    env["BREAKER_FAILURES"] = "1000"  # the dead candidate is tried on every request
    router = Router(env, tmp_path_factory.mktemp("priced"))
    yield router
    router.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_price_picks_the_cheapest_healthy_candidate(priced, upstreams, extra_providers, stream):
    upstreams.classifier.digit = "0"  # classified cheap, not pinned
    with priced.client() as client:
        reply = client.post(CHAT, json=ask(unique("price"), stream=stream))
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-xrouter-upstream"] == "cheap"
    assert reply.headers["x-xrouter-route"] == "openai_compatible/cheap-b-model"
    # The cheapest (dead) one was tried first, then the next cheapest; cheap-c never.
    assert reply.headers["x-xrouter-fallback"] == "cheap#2:unreachable"
    text = stream_text(reply) if stream else reply.json()["choices"][0]["message"]["content"]
    assert text == "Hello from cheap-b!"
    assert not extra_providers["c"].requests
    assert not upstreams.medium.requests
    # /usage prices the candidate that served at its own price, not the tier's first one's.
    priced.settle()
    with priced.client() as client:
        rows = client.get("/usage").json()["models"]
    row = next(r for r in rows if (r["tier"], r["model"]) == ("cheap", "cheap-b-model"))
    assert (row["inputPrice"], row["outputPrice"]) == (1.0, 1.0)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_ordered_takes_the_first_and_falls_back_within_the_tier(
    priced, upstreams, extra_providers, stream
):
    with priced.client() as client:
        first = client.post(
            CHAT, json=ask(unique("ordered"), stream=stream), headers={"x-xrouter-tier": "medium"}
        )
        assert first.status_code == 200, first.text
        assert first.headers["x-xrouter-route"] == "medium-main"
        assert "x-xrouter-fallback" not in first.headers
        assert not extra_providers["c"].requests

        upstreams.medium.override = lambda request: Reply(
            status=503, body={"error": {"message": "fake 503", "type": "x"}}
        )
        second = client.post(
            CHAT,
            json=ask(unique("ordered 503"), stream=stream),
            headers={"x-xrouter-tier": "medium"},
        )
    assert second.status_code == 200, second.text
    assert second.headers["x-xrouter-upstream"] == "medium"
    assert second.headers["x-xrouter-route"] == "medium-spare"
    assert second.headers["x-xrouter-fallback"] == "medium#1:503"
    text = stream_text(second) if stream else second.json()["choices"][0]["message"]["content"]
    assert text == "Hello from cheap-c!"
    assert extra_providers["c"].requests[-1].json["model"] == "medium-spare-model"
    assert not upstreams.frontier.requests
    logs = priced.logs()
    assert "fallback from=medium#1 reason=503 to=medium#2" in logs
    with priced.client() as client:
        metrics = client.get("/metrics").text
    assert any(
        line.startswith("xrouter_fallbacks_total{")
        and 'from="medium#1"' in line
        and 'to="medium#2"' in line
        for line in metrics.splitlines()
    ), metrics
    assert "tier cheap: 3 candidates, price:" in logs


def test_every_candidate_failing_escalates_to_the_next_tier(priced, upstreams, extra_providers):
    failing = lambda request: Reply(  # noqa: E731
        status=503, body={"error": {"message": "fake 503", "type": "x"}}
    )
    upstreams.medium.override = failing
    extra_providers["c"].override = failing
    with priced.client() as client:
        reply = client.post(
            CHAT, json=ask(unique("all medium fail")), headers={"x-xrouter-tier": "medium"}
        )
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-xrouter-upstream"] == "frontier"
    assert reply.headers["x-xrouter-fallback"] == "medium#1:503, medium#2:503"


def test_a_single_route_tier_keeps_its_names(router, upstreams):
    """Today's configuration: the breaker key is the tier, and the route header says
    provider/model."""
    upstreams.classifier.digit = "0"
    with router.client() as client:
        reply = client.post(CHAT, json=ask(unique("single route")))
    assert reply.status_code == 200
    assert reply.headers["x-xrouter-upstream"] == "cheap"
    assert reply.headers["x-xrouter-route"] == "openai_compatible/cheap-model"
    assert "candidate=" not in router.logs()


# ---- configuration ----------------------------------------------------------------------

BASE = {
    "XROUTER_ENV_FILE": "/nonexistent/.env",
    "UPSTREAMS_FILE": "/nonexistent/upstreams.json",
    "CLASSIFIER_ENABLED": "false",
    "XROUTER_AUTO_ROUTES": "false",
    "FRONTIER_BASE_URL": "http://127.0.0.1:9/v1",
}


def settings_from(doc: dict, **env):
    return load_settings({**BASE, "UPSTREAMS_JSON": json.dumps(doc), **env})


def test_a_tier_list_reads_as_candidates_and_the_variables_set_the_first():
    settings = settings_from(
        {
            "routes": {
                "cheap": [
                    {"base_url": "http://127.0.0.1:1/v1", "model": "one"},
                    {
                        "base_url": "http://127.0.0.1:2/v1",
                        "model": "two",
                        "api_key": "sk-two-000002",
                    },
                ]
            },
            "strategies": {"cheap": "price"},
        },
        CHEAP_MODEL="one-from-env",
        CHEAP_API_KEY="sk-one-000001",
    )
    cheap = settings.tier_candidates("cheap")
    assert [r.model for r in cheap] == ["one-from-env", "two"]
    assert [r.breaker_key for r in cheap] == ["cheap#1", "cheap#2"]
    assert settings.route("cheap") is cheap[0]
    assert settings.routing.strategies == {"cheap": "price"}
    assert {"sk-one-000001", "sk-two-000002"} <= set(settings.secrets)
    frontier = settings.tier_candidates("frontier")
    assert len(frontier) == 1 and frontier[0].breaker_key == "frontier"
    assert "sk-two" not in json.dumps(settings.public())


def test_candidates_and_strategy_from_the_environment():
    settings = load_settings(
        {
            **BASE,
            "CHEAP_BASE_URL": "http://127.0.0.1:1/v1",
            "CHEAP_CANDIDATES": json.dumps([{"base_url": "http://127.0.0.1:2/v1", "name": "x"}]),
            "CHEAP_STRATEGY": "price",
        }
    )
    assert [r.label for r in settings.tier_candidates("cheap")][1] == "x"
    assert settings.routing.strategies["cheap"] == "price"


@pytest.mark.parametrize(
    ("doc", "env", "problem"),
    [
        (
            {"routes": {"cheap": [{"base_url": "http://127.0.0.1:1"}, {"model": "m"}]}},
            {},
            "routes.cheap[1]: base_url is required",
        ),
        (
            {"routes": {"cheap": [{"base_url": "http://127.0.0.1:1"}, {"base_url": "ftp://x"}]}},
            {},
            "routes.cheap[1].base_url must be an http(s) URL",
        ),
        (
            {
                "routes": {
                    "cheap": [
                        {"base_url": "http://127.0.0.1:1"},
                        {"base_url": "http://h", "colour": 1},
                    ]
                }
            },
            {},
            "routes.cheap[1]: unknown keys ['colour']",
        ),
        (
            {
                "routes": {
                    "cheap": [
                        {"base_url": "http://127.0.0.1:1"},
                        {"base_url": "http://h", "input_price": "x"},
                    ]
                }
            },
            {},
            "routes.cheap[1].input_price must be a price",
        ),
        ({"strategies": {"cheep": "price"}}, {}, "strategies: unknown tiers ['cheep']"),
        ({}, {"MEDIUM_STRATEGY": "fastest"}, "MEDIUM_STRATEGY must be one of ordered, price"),
        (
            {},
            {"CHEAP_BASE_URL": "http://h", "CHEAP_CANDIDATES": "{}"},
            "CHEAP_CANDIDATES must be a JSON list",
        ),
    ],
)
def test_bad_candidates_are_refused_at_start(doc, env, problem):
    with pytest.raises(ConfigError) as caught:
        settings_from(doc, **env)
    assert any(problem in line for line in caught.value.problems), caught.value.problems


@pytest.mark.parametrize("status", [404, 429, 500])
def test_each_failing_status_stays_in_the_tier(priced, upstreams, extra_providers, status):
    upstreams.medium.override = lambda request: Reply(
        status=status, body={"error": {"message": f"fake {status}", "type": "x"}}
    )
    with priced.client() as client:
        reply = client.post(
            CHAT, json=ask(unique(f"status {status}")), headers={"x-xrouter-tier": "medium"}
        )
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-xrouter-route"] == "medium-spare"
    assert reply.headers["x-xrouter-fallback"] == f"medium#1:{status}"
    assert not upstreams.frontier.requests
