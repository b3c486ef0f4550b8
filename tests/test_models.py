"""Logical model names, the X-Xrouter-tier header, and the vision and tools rules,
on a real mitmdump with fake providers; plus the plain functions behind them."""

from __future__ import annotations

import pytest
from conftest import unique

from xrouter_core.config import RoutingSettings
from xrouter_core.routing.models import DEFAULT_CATEGORIES, logical_model_names, pinned_tier

CHAT = "/v1/chat/completions"
ROUTING = RoutingSettings(categories=DEFAULT_CATEGORIES)


def ask(text: str, model: str, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def image_message(text: str) -> dict:
    return {
        "role": "user",
        "content": [
            {"type": "text", "text": text},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ],
    }


@pytest.mark.parametrize(
    "model, header, tier",
    [
        ("xrouter/auto", None, None),
        ("gpt-4o", None, None),
        ("xrouter/cheap", None, "cheap"),
        ("XROUTER/Frontier", None, "frontier"),
        ("llmrouter/coding", None, "medium"),
        ("coding", None, "medium"),
        ("simple", None, "cheap"),
        ("xrouter/reasoning", None, "frontier"),
        ("llmrouter/vision", None, "frontier"),
        ("xrouter/cheap", "frontier", "frontier"),
        ("xrouter/auto", "1", "medium"),
    ],
)
def test_pinned_tier(model, header, tier):
    assert pinned_tier(model, header, ROUTING) == tier


def test_unknown_names_can_go_to_a_tier():
    routing = RoutingSettings(categories=DEFAULT_CATEGORIES, unknown_model="frontier")
    assert pinned_tier("gpt-4o", None, routing) == "frontier"
    assert pinned_tier("xrouter/auto", None, routing) is None


@pytest.mark.parametrize(
    "model, tier",
    [("xrouter/cheap", "cheap"), ("llmrouter/coding", "medium"), ("reasoning", "frontier")],
)
def test_pinned_names_skip_the_classifier(router, upstreams, model, tier):
    upstreams.classifier.digit = "0"
    for stream in (False, True):
        with router.client() as client:
            reply = client.post(CHAT, json=ask(unique("pinned"), model, stream=stream))
        assert reply.status_code == 200
        assert reply.headers["x-xrouter-upstream"] == tier
    assert not upstreams.classifier.requests


def test_tier_header_pins_and_a_bad_one_is_a_400(router, upstreams):
    upstreams.classifier.digit = "0"
    with router.client() as client:
        reply = client.post(
            CHAT, json=ask(unique("header"), "xrouter/auto"), headers={"X-Xrouter-Tier": "medium"}
        )
        assert reply.headers["x-xrouter-upstream"] == "medium"
        bad = client.post(
            CHAT, json=ask(unique("header"), "xrouter/auto"), headers={"X-Xrouter-Tier": "huge"}
        )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_tier"
    assert not upstreams.classifier.requests
    # The header is the router's own: it never reaches the provider.
    assert "x-xrouter-tier" not in upstreams.medium.requests[-1].headers


def test_auto_and_unknown_names_are_classified(router, upstreams):
    upstreams.classifier.digit = "0"
    with router.client() as client:
        for model in ("xrouter/auto", "some-unknown-model"):
            reply = client.post(CHAT, json=ask(unique("classify me"), model))
            assert reply.headers["x-xrouter-upstream"] == "cheap"
    assert len(upstreams.classifier.requests) == 2


def test_models_endpoint_lists_the_logical_names(router):
    with router.client() as client:
        ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == logical_model_names(ROUTING)
    assert {"xrouter/auto", "xrouter/cheap", "xrouter/coding", "xrouter/vision"} <= set(ids)


def test_images_go_only_to_vision_routes(router, upstreams):
    """Frontier is vision-capable by default, cheap and medium are not."""
    upstreams.classifier.digit = "0"
    body = {"model": "xrouter/auto", "messages": [image_message(unique("what is this"))]}
    with router.client() as client:
        reply = client.post(CHAT, json=body)
        assert reply.headers["x-xrouter-upstream"] == "frontier"
        pinned = client.post(CHAT, json={**body, "model": "xrouter/cheap"})
        assert pinned.headers["x-xrouter-upstream"] == "frontier"
    image = upstreams.frontier.requests[-1].json["messages"][0]["content"][1]
    assert image["type"] == "image_url"


def test_vision_routes_tools_minimum_categories_and_requested_name(start_router, upstreams):
    router = start_router(
        {
            "CHEAP_VISION": "true",
            "FRONTIER_VISION": "false",
            "TOOLS_MIN_TIER": "medium",
            "MODEL_CATEGORIES": '{"coding": "frontier", "chat": "cheap"}',
            "KEEP_REQUESTED_MODEL": "true",
        }
    )
    upstreams.classifier.digit = "0"
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    with router.client() as client:
        # Images: cheap can see; medium and frontier cannot, so a medium pin has no route.
        image = {"model": "xrouter/auto", "messages": [image_message(unique("look"))]}
        assert client.post(CHAT, json=image).headers["x-xrouter-upstream"] == "cheap"
        none = client.post(CHAT, json={**image, "model": "xrouter/medium"})
        assert none.status_code == 400 and none.json()["error"]["code"] == "no_vision_route"
        # Tools lift a cheap decision to medium.
        reply = client.post(CHAT, json=ask(unique("use a tool"), "xrouter/auto", tools=tools))
        assert reply.headers["x-xrouter-upstream"] == "medium"
        assert reply.headers["x-xrouter-decision"] == "1"
        # The category table is configurable.
        assert (
            client.post(CHAT, json=ask(unique("c"), "llmrouter/coding")).headers[
                "x-xrouter-upstream"
            ]
            == "frontier"
        )
        chat = client.post(CHAT, json=ask(unique("c"), "xrouter/chat"))
        assert chat.headers["x-xrouter-upstream"] == "cheap"
        # The client's model name is kept, streamed and not.
        assert chat.json()["model"] == "xrouter/chat"
        streamed = client.post(CHAT, json=ask(unique("s"), "xrouter/chat", stream=True))
        models = {
            line.split('"model":"')[1].split('"')[0]
            for line in streamed.text.splitlines()
            if '"model":"' in line
        }
        assert models == {"xrouter/chat"}
        assert "xrouter/chat" in [m["id"] for m in client.get("/v1/models").json()["data"]]


def test_bad_routing_settings_stop_the_router(start_router):
    router = start_router(
        {
            "FALLBACK_CHAIN": "cheap,huge",
            "TOOLS_MIN_TIER": "big",
            "MODEL_CATEGORIES": '{"x": "nowhere"}',
        },
        wait=False,
    )
    router.proc.wait(30)
    logs = router.logs()
    assert router.proc.returncode != 0
    for word in ("FALLBACK_CHAIN", "TOOLS_MIN_TIER", "MODEL_CATEGORIES"):
        assert word in logs


def test_chains_escalate_and_never_silently_downgrade():
    from xrouter_core.config import Route
    from xrouter_core.routing.fallback import CircuitBreaker, chain_for, next_route

    routes = {
        t: Route(t, f"http://127.0.0.1:1/{t}", vision=t == "frontier")
        for t in ("cheap", "medium", "frontier")
    }

    def tiers(tier, **kwargs):
        routing = RoutingSettings(**kwargs)
        return [r.tier for r in chain_for(tier, routes, routing)]

    assert tiers("cheap") == ["cheap", "medium", "frontier"]
    assert tiers("medium") == ["medium", "frontier"]
    assert tiers("frontier") == ["frontier"]
    assert tiers("cheap", fallback_chain=("cheap", "frontier")) == ["cheap", "frontier"]
    assert tiers("medium", fallback_chain=("cheap", "frontier")) == ["medium", "frontier"]
    assert tiers("cheap", fallback_enabled=False) == ["cheap"]
    vision = chain_for("cheap", routes, RoutingSettings(), needs_vision=True)
    assert [r.tier for r in vision] == ["frontier"]

    now = [0.0]
    breaker = CircuitBreaker(threshold=2, cooldown=10, clock=lambda: now[0])
    chain = chain_for("cheap", routes, RoutingSettings())
    breaker.failure("cheap", "cheap:503")
    assert next_route(chain, 0, breaker) == (0, [])
    breaker.failure("cheap", "cheap:503")
    assert next_route(chain, 0, breaker) == (1, ["cheap"])
    for tier in ("medium", "frontier"):
        breaker.failure(tier, "x")
        breaker.failure(tier, "x")
    assert next_route(chain, 0, breaker) == (2, ["cheap", "medium"])  # the last is tried
    now[0] = 11
    assert next_route(chain, 0, breaker) == (0, [])  # half-open after the cool-down
    breaker.failure("cheap", "again")
    assert breaker.is_open("cheap")  # one more failure re-opens it


def test_route_settings_from_upstreams_json(tmp_path):
    import json

    from xrouter_core.config import load_settings

    upstreams = tmp_path / "upstreams.json"
    upstreams.write_text(
        json.dumps(
            {
                "classifier": {"enabled": False},
                "routes": {
                    "medium": {"base_url": "http://127.0.0.1:1/v1", "vision": True},
                    "frontier": {
                        "base_url": "http://127.0.0.1:2/v1",
                        "vision": False,
                        "first_byte_timeout_ms": 9000,
                    },
                },
            }
        )
    )
    settings = load_settings(
        {"CONNECT_TIMEOUT_MS": "1500", "FALLBACK_CHAIN": "medium,frontier"},
        env_file=tmp_path / "none.env",
        upstreams_file=upstreams,
    )
    medium, frontier = settings.routes["medium"], settings.routes["frontier"]
    assert medium.vision and not frontier.vision
    assert medium.connect_timeout_ms == frontier.connect_timeout_ms == 1500
    assert frontier.first_byte_timeout_ms == 9000 and medium.first_byte_timeout_ms == 120_000
    assert settings.routing.fallback_chain == ("medium", "frontier")
    assert settings.routing.categories["coding"] == "medium"
