"""The rule chain, request and response tags, their headers and POST /v1/route/explain, on
real routers over fake providers: each kind of rule (prefix, tag, tier, discover against
a fake Ollama, price with a ceiling, score, seeded random), tags in headers, the log
line, /usage, the live feed, `xrouter explain`, and rules refused at start."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time

import pytest
from conftest import LAUNCHERS, ROOT, Router, unique
from fakes import FakeModelProvider, FakeOpenAIProvider, Reply, openai_completion, openai_stream
from test_events import Feed
from test_fallback import ask, stream_text

from xrouter_core.config import ConfigError, load_settings
from xrouter_core.routing.route_stats import EXPLORE_EVERY
from xrouter_core.routing.tags import KeywordTagger, merged_words

CHAT = "/v1/chat/completions"
EXPLAIN = "/v1/route/explain"
KEY = "router-key-rules-0001"
AUTH = {"authorization": f"Bearer {KEY}"}
REFUSAL = "I'm sorry, but I can't help with that."

RULES = [
    {"kind": "discover", "name": "local", "base_url": "", "prefix": "ollama/", "refresh_s": 1},
    {"kind": "prefix", "name": "openai-names", "prefix": "openai/", "route": "frontier-main", "model": "*"},
    {"kind": "tag", "name": "code-first", "tag": "code", "route": "medium-main"},
    {"kind": "tag", "name": "translate-cheap", "tag": "translation", "tier": "cheap"},
    {"kind": "price", "name": "cheapest-math", "if_tags": ["math"], "max_price": 1},
    {"kind": "score", "name": "best-summary", "if_tags": ["summary"], "quality_bias": 0.9},
    {
        "kind": "random",
        "name": "creative-mix",
        "if_tags": ["creative"],
        "seed": 7,
        "weights": [{"route": "cheap-b", "weight": 1}, {"route": "medium-main", "weight": 3}],
    },
]  # fmt: skip


@pytest.fixture(scope="module")
def fakes():
    servers = {
        "b": FakeOpenAIProvider("cheap-b"),
        "ollama": FakeModelProvider("ollama", ["llama3:latest", "qwen2:0.5b"]),
    }
    yield servers
    for server in servers.values():
        server.close()


@pytest.fixture(autouse=True)
def clean(fakes, upstreams):
    for server in fakes.values():
        server.requests.clear()
        server.override = None
    yield
    for server in fakes.values():
        server.override = None


def rules_env(upstreams, fakes) -> dict[str, str]:
    """Cheap: the session's (2 $/1M, quality 0.2) and cheap-b (0.2, quality 0.3); medium
    (6, 0.7) and frontier (40, 0.95) named; RULES over them, the classifier last."""
    env = upstreams.env()
    for tier in ("CHEAP", "MEDIUM", "FRONTIER"):
        for name in ("BASE_URL", "MODEL", "API_KEY"):
            env.pop(f"{tier}_{name}")

    def route(server, model, name, price_in, price_out, quality):
        return {
            "base_url": server.url + "/v1",
            "model": model,
            "name": name,
            "input_price": price_in,
            "output_price": price_out,
            "quality": quality,
        }

    rules = json.loads(json.dumps(RULES))
    rules[0]["base_url"] = fakes["ollama"].url
    doc = {
        "routes": {
            "cheap": [
                route(upstreams.cheap, "cheap-model", "cheap-a", 1, 1, 0.2),
                route(fakes["b"], "cheap-b-model", "cheap-b", 0.1, 0.1, 0.3),
            ],
            "medium": route(upstreams.medium, "medium-model", "medium-main", 3, 3, 0.7),
            "frontier": {
                **route(upstreams.frontier, "frontier-model", "frontier-main", 10, 30, 0.95),
                "vision": True,
            },
        },
        "rules": rules,
        # A tag of its own; creative's default list replaced (no "story" any more).
        "tags": {"legal": ["contract", "lawsuit"], "creative": ["poem", "haiku"]},
        "header_aliases": {"x-xrouter-provider": "x-router-provider", "x-xrouter-tags": "x-router-request-tags"},
    }  # fmt: skip
    env["UPSTREAMS_JSON"] = json.dumps(doc)
    env["ROUTER_API_KEY"] = KEY
    return env


@pytest.fixture(scope="module", params=LAUNCHERS)
def ruled(request, upstreams_session, fakes, tmp_path_factory):
    router = Router(
        rules_env(upstreams_session, fakes),
        tmp_path_factory.mktemp(f"rules-{request.param}"),
        launcher=request.param,
    )
    # The discover rule lists the fake Ollama at start.
    deadline = time.monotonic() + 10
    while "lists 2 models" not in router.logs() and time.monotonic() < deadline:
        time.sleep(0.1)
    yield router
    router.stop()


def post(router, body, **headers):
    with router.client() as client:
        return client.post(CHAT, json=body, headers={**AUTH, **headers})


def answer_text(reply, stream: bool) -> str:
    return stream_text(reply) if stream else reply.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_tag_rule_pins_its_route_and_every_answer_says_so(ruled, upstreams, fakes, stream):
    reply = post(ruled, ask(unique("fix this python function for me"), stream=stream))
    assert reply.status_code == 200, reply.text
    h = reply.headers
    assert h["x-xrouter-rule"] == "code-first"
    assert h["x-xrouter-route"] == "medium-main"
    assert h["x-xrouter-upstream"] == "medium"
    assert h["x-xrouter-tags"] == "code"
    assert h["x-router-request-tags"] == "code"  # HEADER_ALIASES
    assert h["x-xrouter-provider"] == h["x-router-provider"] == "openai_compatible"
    assert h["x-xrouter-model"] == "medium-model"
    assert answer_text(reply, stream) == "Hello from medium!"
    assert not upstreams.classifier.requests  # a rule decided: nobody asked the classifier
    if stream:  # a stream's headers go before its body: no tokens, no answer tags
        assert "x-xrouter-input-tokens" not in h and "x-xrouter-response-tags" not in h
    else:
        assert (h["x-xrouter-input-tokens"], h["x-xrouter-output-tokens"]) == ("11", "7")
        assert h["x-xrouter-response-tags"] == ""
    line = [x for x in ruled.logs().splitlines() if "routed decision=" in x][-1]
    assert "source=rule" in line and "rule=code-first" in line and "tags=code" in line


def test_the_classifier_is_the_last_rule(ruled, upstreams):
    upstreams.classifier.digit = "2"
    reply = post(ruled, ask(unique("tell me about the history of rome")))
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-xrouter-rule"] == "tier"
    assert reply.headers["x-xrouter-upstream"] == "frontier"
    assert reply.headers["x-xrouter-tags"] == ""
    assert upstreams.classifier.requests


def test_a_tier_rule_and_the_tier_s_candidates(ruled, upstreams, fakes):
    reply = post(ruled, ask(unique("translate this sentence into french please")))
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-xrouter-rule"] == "translate-cheap"
    assert reply.headers["x-xrouter-route"] == "cheap-a"  # cheap's first candidate
    assert reply.headers["x-xrouter-tags"] == "translation"


def test_a_prefix_rule_sends_the_requested_model_to_its_route(ruled, upstreams):
    reply = post(ruled, ask(unique("hello"), model="openai/gpt-4o-mini"))
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-xrouter-rule"] == "openai-names"
    assert reply.headers["x-xrouter-upstream"] == "frontier"
    assert reply.headers["x-xrouter-model"] == "gpt-4o-mini"
    assert upstreams.frontier.requests[-1].json["model"] == "gpt-4o-mini"
    # The route has no key: the client's router key stays home.
    assert "authorization" not in upstreams.frontier.requests[-1].headers


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_discover_routes_the_models_an_ollama_server_lists(ruled, upstreams, fakes, stream):
    reply = post(ruled, ask(unique("hi"), model="ollama/llama3", stream=stream))
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-xrouter-rule"] == "local"
    assert reply.headers["x-xrouter-model"] == "llama3:latest"
    assert reply.headers["x-xrouter-route"] == "local/llama3:latest"
    assert answer_text(reply, stream) == "Hello from ollama-provider!"
    sent = fakes["ollama"].requests[-1]
    assert sent.path == "/v1/chat/completions" and sent.json["model"] == "llama3:latest"
    # A model it does not have goes on down the chain (to the classifier).
    reply = post(ruled, ask(unique("hi"), model="ollama/mistral"))
    assert reply.headers["x-xrouter-rule"] == "tier"


def test_health_lists_the_rules_and_what_discover_found(ruled):
    with ruled.client() as client:
        rules = client.get("/health").json()["rules"]
    assert [r["name"] for r in rules] == [r["name"] for r in RULES] + ["tier"]
    assert "llama3:latest" in rules[0]["models"] and "qwen2:0.5b" in rules[0]["models"]
    assert rules[2] == {
        "name": "code-first",
        "kind": "tag",
        "route": "medium",
        "model": "medium-model",
        "tag": "code",
    }
    assert rules[4]["pool"] == ["cheap#1", "cheap#2", "medium", "frontier"]


def test_discover_sees_a_model_pulled_later(ruled, fakes):
    fakes["ollama"].models.append("phi3:mini")
    try:
        deadline = time.monotonic() + 10
        while "lists 3 models" not in ruled.logs():
            assert time.monotonic() < deadline, ruled.logs()[-2000:]
            time.sleep(0.2)
        reply = post(ruled, ask(unique("hi"), model="ollama/phi3:mini"))
        assert reply.headers["x-xrouter-rule"] == "local"
        assert fakes["ollama"].requests[-1].json["model"] == "phi3:mini"
    finally:
        fakes["ollama"].models.remove("phi3:mini")


def test_price_takes_the_cheapest_route_under_its_ceiling(ruled, fakes):
    reply = post(ruled, ask(unique("what is the derivative of x squared")))
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-xrouter-rule"] == "cheapest-math"
    assert reply.headers["x-xrouter-route"] == "cheap-b"  # 0.2 $/1M; cheap-a (2) is above 1
    assert reply.json()["choices"][0]["message"]["content"] == "Hello from cheap-b!"


def test_price_falls_through_when_nothing_is_under_the_ceiling(ruled, fakes, upstreams):
    """cheap-b is the only route under the ceiling: when it fails the chain holds no
    other, and the client sees its error."""
    fakes["b"].override = lambda request: Reply(status=503, body={"error": {"message": "down"}})
    reply = post(ruled, ask(unique("solve for x in this equation")))
    assert reply.headers["x-xrouter-rule"] == "cheapest-math"
    assert reply.status_code == 503
    assert reply.headers["x-xrouter-tags"] == "math"  # errors say how they were routed too
    assert reply.json()["error"]["code"] == "upstream_503"
    assert not upstreams.cheap.requests and not upstreams.medium.requests


def test_score_weighs_quality_against_cost(ruled, upstreams):
    # bias 0.9: frontier 0.9·0.95 − 0.1·1 = 0.755 beats medium 0.9·0.7 − 0.1·0.15 = 0.615.
    reply = post(ruled, ask(unique("summarize this article in three key points")))
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-xrouter-rule"] == "best-summary"
    assert reply.headers["x-xrouter-route"] == "frontier-main"


def test_random_draws_by_weight_repeatably_with_its_seed(ruled):
    picks = []
    for n in range(12):
        reply = post(ruled, ask(unique(f"write a short poem number {n}")))
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-xrouter-rule"] == "creative-mix"
        picks.append(reply.headers["x-xrouter-route"])
    rng = random.Random(7)
    expected = [
        ["cheap-b", "medium-main"][rng.choices(range(2), weights=[1.0, 3.0])[0]] for _ in picks
    ]
    assert picks == expected
    assert set(picks) == {"cheap-b", "medium-main"}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_refusal_is_tagged_in_the_header_the_log_and_usage(ruled, fakes, stream):
    def refuse(request):
        if request.json.get("stream"):
            return Reply(chunks=openai_stream([REFUSAL], "cheap-b-model", False))
        return Reply(body=openai_completion(REFUSAL, "cheap-b-model"))

    fakes["b"].override = refuse
    with ruled.client() as client:
        before = client.get("/usage", headers=AUTH).json()["tags"]["response"].get("refusal", 0)
    reply = post(ruled, ask(unique("prove this theorem about primes"), stream=stream))
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-xrouter-route"] == "cheap-b"
    if not stream:
        assert reply.headers["x-xrouter-response-tags"] == "refusal"
    else:
        assert stream_text(reply) == REFUSAL
    ruled.settle()
    line = [x for x in ruled.logs().splitlines() if "routed decision=" in x][-1]
    assert "response_tags=refusal" in line and "tags=math" in line
    time.sleep(0.3)  # the usage flush
    with ruled.client() as client:
        usage = client.get("/usage", headers=AUTH).json()
    assert usage["tags"]["response"]["refusal"] == before + 1
    assert usage["tags"]["request"]["math"] >= 1
    assert usage["rules"]["cheapest-math"] >= 1
    assert usage["recent"][0]["responseTags"] == ["refusal"]


def test_tag_words_from_the_configuration(ruled):
    reply = post(ruled, ask(unique("please review this contract and tell me a story")))
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-xrouter-tags"] == "legal"
    assert reply.headers["x-xrouter-rule"] == "tier"  # no rule for legal: the classifier


def test_a_phrase_tags_only_its_words_in_a_row():
    """Phrases match whole words in order, across case, punctuation and spacing; a
    phrase's words apart, or joined into one word, do not."""
    tagger = KeywordTagger(
        merged_words({"legal": ["due diligence", "contract"], "loop": ["a b a"]})
    )
    assert tagger.tags("Paste the Stack-Trace here") == ["code"]
    assert tagger.tags("a stack\n\t trace, please") == ["code"]
    assert tagger.tags("TL;DR of this: one line") == ["summary"]
    assert tagger.tags("say it in  French!") == ["translation"]
    assert tagger.tags("a stacktrace, a stack of trace, french in, infrench") == []
    assert tagger.tags("Due diligence, then the contract") == ["legal"]
    assert tagger.tags("b a b a b") == ["loop"] and tagger.tags("a b b a") == []
    assert tagger.tags("fix the bug in the stack trace and summarize it in english") == [
        "code",
        "translation",
        "summary",
    ]


def test_an_anthropic_stream_is_tagged_when_it_ends(ruled, fakes):
    fakes["b"].override = lambda request: Reply(
        chunks=openai_stream(["I'm sorry,", " but I can't help with that."], "cheap-b-model", False)
    )
    body = {
        "model": "xrouter/auto",
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": unique("what is the probability of rain")}],
    }
    with ruled.client() as client:
        reply = client.post("/v1/messages", json=body, headers=AUTH)
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-xrouter-rule"] == "cheapest-math"
    assert "event: content_block_delta" in reply.text and "I'm sorry," in reply.text
    ruled.settle()
    line = [x for x in ruled.logs().splitlines() if "routed decision=" in x][-1]
    assert "response_tags=refusal" in line


def test_capability_tags_and_the_live_feed(ruled, upstreams):
    feed = Feed(ruled.url, KEY)
    try:
        body = ask("", tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
        body["messages"][0]["content"] = [
            {"type": "text", "text": unique("what is in this picture")},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ]
        reply = post(ruled, body)
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-xrouter-tags"] == "vision,tools"
        # Only frontier reads images: the classifier's tier is raised to a vision route.
        assert reply.headers["x-xrouter-upstream"] == "frontier"
        events = dict((name, doc) for name, doc in feed.request_events())
        assert events["classified"]["tags"] == ["vision", "tools"]
        assert events["classified"]["rule"] == "tier"
        assert events["complete"]["response_tags"] == []
    finally:
        feed.close()


def test_explain_says_which_rule_and_routes_without_calling_a_provider(ruled, upstreams, fakes):
    upstreams.classifier.digit = "1"
    with ruled.client() as client:
        refused = client.post(EXPLAIN, json={"text": "hi"})
        assert refused.status_code == 401
        code = client.post(EXPLAIN, json={"text": "refactor this python class"}, headers=AUTH)
        math = client.post(EXPLAIN, json={"text": "compute the integral of sin x"}, headers=AUTH)
        plain = client.post(
            EXPLAIN,
            json={"model": "xrouter/auto", "messages": [{"role": "user", "content": "hello"}]},
            headers=AUTH,
        )
        bad = client.post(EXPLAIN, content=b"{not json", headers=AUTH)
        empty = client.post(EXPLAIN, json={"messages": []}, headers=AUTH)
    assert not upstreams.cheap.requests and not upstreams.medium.requests
    assert not upstreams.frontier.requests and not fakes["b"].requests
    doc = code.json()
    assert doc["rule"] == {"name": "code-first", "kind": "tag"}
    assert doc["tags"] == ["code"]
    assert [r["name"] for r in doc["rules"]] == ["local", "openai-names", "code-first"]
    assert doc["rules"][0]["matched"] is False and re.search(
        r"is not one of the \d models .* lists", doc["rules"][0]["why"]
    )
    assert doc["chosen"]["label"] == "medium-main"
    assert [c["key"] for c in doc["candidates"]] == ["medium", "frontier"]
    assert doc["classifier"]["tier"] == "medium"  # shown, though the rule decided
    doc = math.json()
    assert doc["rule"]["name"] == "cheapest-math"
    assert [(c["label"], c["input_price"]) for c in doc["candidates"]] == [("cheap-b", 0.1)]
    doc = plain.json()
    assert doc["rule"] == {"name": "tier", "kind": "tier"}
    assert doc["decision"]["tier"] == "medium"
    assert doc["classifier"]["score"] is not None
    assert [c["label"] for c in doc["candidates"]] == ["medium-main", "frontier-main"]
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    assert empty.status_code == 400 and empty.json()["error"]["type"] == "invalid_request_error"


def test_xrouter_explain_prints_the_router_s_answer(ruled):
    command = [sys.executable, "-m", "xrouter_core", "explain", "--url", ruled.url, "--key", KEY]
    done = subprocess.run(
        [*command, "please", "debug", "this", "javascript"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["rule", "code-first", "(tag)"]
    assert any(line.startswith("candidates  * medium") for line in lines), done.stdout
    wrong = subprocess.run(
        [*command[:-1], "wrong-key", "hi"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert wrong.returncode == 1 and "HTTP 401" in wrong.stderr


def test_a_config_without_rules_routes_as_before_with_tags(router, upstreams):
    """The session's router has no rules: no rule header, the classifier decides, tags
    and the provider still come."""
    with router.client() as client:
        reply = client.post(
            CHAT, json=ask(unique("write a sql query for me")), headers={"x-xrouter-tier": "cheap"}
        )
    assert reply.status_code == 200, reply.text
    assert "x-xrouter-rule" not in reply.headers
    assert reply.headers["x-xrouter-upstream"] == "cheap"
    assert reply.headers["x-xrouter-tags"] == "code"
    assert reply.headers["x-xrouter-provider"] == "openai_compatible"
    assert reply.headers["x-xrouter-model"] == "cheap-model"


def base_env() -> dict[str, str]:
    return {
        "CHEAP_BASE_URL": "http://127.0.0.1:9/v1",
        "MEDIUM_BASE_URL": "http://127.0.0.1:9/v1",
        "FRONTIER_BASE_URL": "http://127.0.0.1:9/v1",
        "FRONTIER_NAME": "big",
        "CLASSIFIER_MODE": "builtin",
    }


def problems_of(rules, **extra) -> list[str]:
    env = {**base_env(), "ROUTING_RULES": json.dumps(rules), **extra}
    with pytest.raises(ConfigError) as caught:
        load_settings(env, "/nonexistent.env", "/nonexistent.json")
    return caught.value.problems


def test_bad_rules_are_refused_at_start_one_line_each(tmp_path):
    problems = problems_of(
        [
            {"kind": "bogus"},
            {"kind": "tag", "tag": "code"},
            {"kind": "prefix", "prefix": "x/", "route": "nowhere"},
            {"kind": "price", "max_price": -1},
            {"kind": "score", "quality_bias": 2},
            {"kind": "random", "weights": [{"route": "big", "weight": 0}]},
            {"kind": "discover", "base_url": "ftp://x"},
            {"kind": "tier", "name": "t"},
            {"kind": "tag", "tag": "math", "tier": "cheap"},
        ],
        TAG_WORDS='{"Bad Tag": ["x"]}',
        HEADER_ALIASES='{"x-xrouter-nope": "x-a"}',
    )
    text = "\n".join(problems)
    assert "ROUTING_RULES[0]: kind must be one of prefix, tag, tier, discover" in text
    assert "ROUTING_RULES[1]: give the route or the tier it sends to" in text
    assert "ROUTING_RULES[2]: route 'nowhere' names no configured route" in text
    assert "ROUTING_RULES[3]: max_price must be USD per 1M tokens" in text
    assert "ROUTING_RULES[4]: quality_bias must be a number from 0 to 1" in text
    assert "ROUTING_RULES[5]: weights[0].weight must be a number above 0" in text
    assert "ROUTING_RULES[6]: base_url must be an http(s) URL" in text
    assert "ROUTING_RULES[8]: it comes after the tier rule 't'" in text
    assert "TAG_WORDS: tag 'Bad Tag' must be one lower-case word" in text
    assert "HEADER_ALIASES: 'x-xrouter-nope' is not one of" in text
    assert problems_of("not a list") == ["ROUTING_RULES must be a JSON list of rule objects"]
    # A router with a bad rule does not start, and says why.
    env = {**base_env(), "ROUTING_RULES": '[{"kind": "tag", "tag": "code"}]'}
    router = Router(env, tmp_path, wait=False)
    assert router.proc.wait(30) == 1
    assert "configuration: ROUTING_RULES[0]: give the route or the tier" in router.logs()
    router.stop()


def test_settings_read_rules_and_tags_from_upstreams_json(tmp_path):
    path = tmp_path / "upstreams.json"
    doc = {
        "rules": [{"kind": "tag", "tag": "legal", "route": "big", "model": "law-model"}],
        "tags": {"legal": ["contract", "lawsuit"], "creative": []},
    }
    path.write_text(json.dumps(doc))
    settings = load_settings(base_env(), "/nonexistent.env", path)
    assert [rule.name for rule in settings.rules] == ["tag#1", "tier"]
    assert settings.rules[0].target.model == "law-model"
    assert settings.tag_words == {"legal": ("contract", "lawsuit"), "creative": ()}


def with_image(text: str) -> dict:
    content = [
        {"type": "text", "text": text},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    return {"model": "xrouter/auto", "messages": [{"role": "user", "content": content}]}


def test_a_rule_that_cannot_serve_a_request_draws_nothing_and_turns_nothing(
    start_router, upstreams, tmp_path
):
    """Requests with an image skip the rules (no route of theirs is vision-capable) and go
    to frontier: the seeded random rule's draws and the latency tier's exploration turns
    (one request in EXPLORE_EVERY tries an unmeasured candidate first) go on only with
    the requests they serve, as if the image requests had not come."""
    fake_a, fake_b = FakeOpenAIProvider("cheap-a"), FakeOpenAIProvider("cheap-b")
    env = upstreams.env()
    for tier in ("CHEAP", "MEDIUM", "FRONTIER"):
        for name in ("BASE_URL", "MODEL", "API_KEY"):
            env.pop(f"{tier}_{name}")

    def route(server, name: str) -> dict:
        return {"base_url": server.url + "/v1", "model": f"{name}-model", "name": name}

    doc = {
        "routes": {
            "cheap": [route(fake_a, "cheap-a"), route(fake_b, "cheap-b")],
            "medium": route(upstreams.medium, "medium-main"),
            "frontier": {**route(upstreams.frontier, "frontier-main"), "vision": True},
        },
        "strategies": {"cheap": "latency"},
        "rules": [
            {
                "kind": "random",
                "name": "mix",
                "if_tags": ["creative"],
                "seed": 7,
                "weights": [
                    {"route": "cheap-b", "weight": 1},
                    {"route": "medium-main", "weight": 3},
                ],
            },
            {"kind": "tag", "name": "to-cheap", "tag": "translation", "tier": "cheap"},
        ],
        "tags": {"creative": ["poem"], "translation": ["translate"]},
    }
    env["UPSTREAMS_JSON"] = json.dumps(doc)
    env["ROUTER_API_KEY"] = KEY
    env["ROUTE_STATS_MIN_SAMPLES"] = "1000"  # cheap stays unmeasured: it keeps exploring
    upstreams.classifier.digit = "0"  # the image requests' tier is cheap too
    router = start_router(env)
    try:
        picks, firsts = [], []
        for n in range(12):
            skipped = post(router, with_image(unique(f"a poem about this picture {n}")))
            assert skipped.status_code == 200, skipped.text
            assert skipped.headers["x-xrouter-route"] == "frontier-main"
            assert skipped.headers["x-xrouter-rule"] == "tier"  # the classifier's
            served = post(router, ask(unique(f"write a poem number {n}")))
            assert served.headers["x-xrouter-rule"] == "mix", served.headers
            picks.append(served.headers["x-xrouter-route"])
        for n in range(2 * EXPLORE_EVERY):
            skipped = post(router, with_image(unique(f"translate the sign in this picture {n}")))
            assert skipped.headers["x-xrouter-route"] == "frontier-main"
            served = post(router, ask(unique(f"translate this sentence {n}")))
            assert served.headers["x-xrouter-rule"] == "to-cheap", served.headers
            firsts.append(served.headers["x-xrouter-route"])
    finally:
        fake_a.close()
        fake_b.close()
    rng = random.Random(7)
    expected = [["cheap-b", "medium-main"][rng.choices(range(2), weights=[1, 3])[0]] for _ in picks]
    assert picks == expected
    # Turns 1..8 of cheap: the 4th tries the unmeasured candidates' second (b) first.
    explored = ["cheap-a"] * (2 * EXPLORE_EVERY)
    explored[EXPLORE_EVERY - 1] = "cheap-b"
    assert firsts == explored
