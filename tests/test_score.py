"""The classifier's score: on the answer (X-Xrouter-score), in the log line and the request
log; the decision cache keyed on who decided, and keeping the score it was made with."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path

import diskcache
import openclaw_shapes as oc
import pytest
from conftest import unique
from mitmproxy.test import taddons

from xrouter_core.config import ClassifierSettings
from xrouter_core.proxy.addon import Xrouter
from xrouter_core.routing.builtin import BUILTIN_THRESHOLDS, BuiltinClassifier, Weights
from xrouter_core.routing.classifier import LLMClassifier
from xrouter_core.routing.extract import classifier_input
from xrouter_core.routing.policy import Policy, classifier_identity
from xrouter_core.wire.inbound import ChatRequest, parse_openai_chat

CHAT = "/v1/chat/completions"
SIMPLE = "hi, how are you today?"
HARD = (
    "Prove that there are infinitely many primes of the form 4k+3, then derive an upper bound "
    "on the gap between consecutive such primes and explain the proof step by step."
)


def ask(text: str, model: str = "xrouter/auto", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def expected_score(body: dict) -> float:
    """What the built-in classifier scores for this request, computed here in the test."""
    return BuiltinClassifier().score(classifier_input(body["messages"]))


def routes_only(upstreams) -> dict[str, str]:
    """The fake providers, no LLM classifier."""
    env = upstreams.env()
    del env["CLASSIFIER_BASE_URL"], env["CLASSIFIER_MODEL"]
    return env


def routed_lines(router, marker: str) -> list[str]:
    return [line for line in router.logs().splitlines() if " routed " in line and marker in line]


# ---- the score on the answer, in the log line, in the request log -----------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_classified_answer_carries_its_score_and_a_pinned_one_none(
    start_router, upstreams, tmp_path, stream
):
    log_path = tmp_path / "requests.jsonl"
    router = start_router(
        {**routes_only(upstreams), "CLASSIFIER_MODE": "builtin", "REQUEST_LOG": str(log_path)},
        base=False,
    )
    hard, simple = ask(unique(HARD), stream=stream), ask(unique(SIMPLE), stream=stream)
    pinned = ask(unique(HARD), model="xrouter/medium", stream=stream)
    replies = {}
    with router.client() as client:
        for name, body in (("hard", hard), ("simple", simple), ("pinned", pinned)):
            reply = client.post(CHAT, json=body)
            reply.read()
            assert reply.status_code == 200, reply.text
            replies[name] = reply
    scores = {"hard": expected_score(hard), "simple": expected_score(simple)}
    low, high = BUILTIN_THRESHOLDS
    assert scores["hard"] >= high > low > scores["simple"]  # two different tiers
    for name, score in scores.items():
        assert replies[name].headers["x-xrouter-score"] == f"{score:.3f}"
    assert replies["hard"].headers["x-xrouter-upstream"] == "frontier"
    assert replies["simple"].headers["x-xrouter-upstream"] == "cheap"
    # Pinned: no classifier scored, so no header, and `-` in the log line.
    assert "x-xrouter-score" not in replies["pinned"].headers
    assert replies["pinned"].headers["x-xrouter-upstream"] == "medium"

    lines = routed_lines(router, "source=")
    assert len(lines) == 3
    by_source = {line.split(" source=")[1].split()[0]: line for line in lines}
    assert set(by_source) == {"builtin", "pinned"}
    assert "score=-" in by_source["pinned"].split()
    builtin_scores = sorted(
        line.split(" score=")[1].split()[0] for line in lines if " source=builtin " in line
    )
    assert builtin_scores == sorted(f"{s:.3f}" for s in scores.values())
    # The other fields are where they were: the score follows tokens=; the rule and tags, when any, come after it.
    assert re.search(r" total_ms=[\d.]+ tokens=\S+ score=-(?: |$)", by_source["pinned"])

    router.stop()  # the request log is complete once the router has stopped
    logged = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert sorted((row["source"], row["score"]) for row in logged) == sorted(
        [
            ("builtin", round(scores["hard"], 3)),
            ("builtin", round(scores["simple"], 3)),
            ("pinned", None),
        ]
    )


# ---- the decision cache: keyed on who decided, across restarts --------------------------


def decision_keys(data_dir: Path, at_least: int) -> list[str]:
    """The decision cache's keys on disk, once there are `at_least` of them (the router
    writes the disk behind its memory cache in the background)."""
    deadline = time.monotonic() + 15
    while True:
        with diskcache.Cache(str(data_dir / "cache")) as cache:
            keys = sorted(str(k) for k in cache.iterkeys() if str(k).startswith("decision:"))
        if len(keys) >= at_least or time.monotonic() > deadline:
            return keys
        time.sleep(0.05)


def one_request(router, body: dict) -> tuple[str, dict[str, str]]:
    """(the source= of its log line, the answer's headers) of a router's only request."""
    with router.client() as client:
        reply = client.post(CHAT, json=body)
    assert reply.status_code == 200, reply.text
    lines = [line for line in router.logs().splitlines() if " routed " in line]
    assert len(lines) == 1, router.logs()
    return lines[-1].split(" source=")[1].split()[0], dict(reply.headers)


@pytest.mark.parametrize("launcher", ["xrouter"])
def test_a_decision_cached_under_other_thresholds_is_not_reused_after_a_restart(
    start_router, upstreams, tmp_path
):
    data_dir = tmp_path / "data"
    env = {
        **routes_only(upstreams),
        "CLASSIFIER_MODE": "builtin",
        "CACHE_BACKEND": "disk",
        "XROUTER_DATA_DIR": str(data_dir),
    }
    body = ask(unique(SIMPLE))
    score = f"{expected_score(body):.3f}"

    first = start_router({**env, "CLASSIFIER_THRESHOLDS": "0.33,0.66"}, base=False)
    source, headers = one_request(first, body)
    assert (source, headers["x-xrouter-upstream"]) == ("builtin", "cheap")
    assert len(decision_keys(data_dir, 1)) == 1
    first.stop()

    # Other thresholds: the cached decision is not theirs, so the classifier decides again.
    other = start_router({**env, "CLASSIFIER_THRESHOLDS": "0.0,0.0"}, base=False)
    source, headers = one_request(other, body)
    assert (source, headers["x-xrouter-upstream"]) == ("builtin", "frontier")
    assert headers["x-xrouter-score"] == score
    assert len(decision_keys(data_dir, 2)) == 2  # one entry per identity
    other.stop()

    # The first thresholds again: their decision is reused, with the score it was made with.
    again = start_router({**env, "CLASSIFIER_THRESHOLDS": "0.33,0.66"}, base=False)
    source, headers = one_request(again, body)
    assert (source, headers["x-xrouter-upstream"]) == ("cache", "cheap")
    assert headers["x-xrouter-score"] == score
    assert routed_lines(again, "source=cache")[-1].split(" score=")[1].split()[0] == score


@pytest.mark.parametrize("launcher", ["xrouter"])
def test_a_decision_cached_under_another_mode_is_not_reused_after_a_restart(
    start_router, upstreams, tmp_path
):
    data_dir = tmp_path / "data"
    env = {"CACHE_BACKEND": "disk", "XROUTER_DATA_DIR": str(data_dir)}
    body = ask(unique(SIMPLE))
    upstreams.classifier.digit = "2"  # the built-in classifier would say cheap

    first = start_router({**env, "CLASSIFIER_MODE": "llm"})
    source, headers = one_request(first, body)
    assert (source, headers["x-xrouter-upstream"]) == ("llm", "frontier")
    assert len(upstreams.classifier.requests) == 1
    assert len(decision_keys(data_dir, 1)) == 1
    first.stop()

    # Hybrid asks the same LLM, but it is another mode: the LLM is asked again.
    hybrid = start_router({**env, "CLASSIFIER_MODE": "hybrid"})
    source, _ = one_request(hybrid, body)
    assert source == "llm" and len(upstreams.classifier.requests) == 2
    hybrid.stop()

    # builtin mode: neither LLM decision is its own.
    builtin = start_router({**env, "CLASSIFIER_MODE": "builtin"})
    source, headers = one_request(builtin, body)
    assert (source, headers["x-xrouter-upstream"]) == ("builtin", "cheap")
    builtin.stop()

    again = start_router({**env, "CLASSIFIER_MODE": "llm"})
    source, headers = one_request(again, body)
    assert (source, headers["x-xrouter-upstream"]) == ("cache", "frontier")
    assert len(upstreams.classifier.requests) == 2  # answered from the cache
    assert len(decision_keys(data_dir, 3)) == 3


# ---- in process: the cache's values, the identity, the tool loop -------------------------


class DictCache:
    """The Cache interface over a dict, so a test can read and plant entries."""

    def __init__(self) -> None:
        self.items: dict[str, bytes | str] = {}

    async def get(self, key: str) -> bytes | str | None:
        return self.items.get(key)

    async def set(self, key: str, value: bytes | str, ttl: float | None = None) -> None:
        self.items[key] = value


def chat(body: dict) -> ChatRequest:
    return parse_openai_chat(json.dumps(body).encode())


def builtin_policy(cache: DictCache, thresholds=None) -> Policy:
    settings = ClassifierSettings(mode="builtin", thresholds=thresholds)
    return Policy(None, cache, builtin=BuiltinClassifier(thresholds), settings=settings)


def test_cached_entries_keep_their_score_and_entries_without_one_still_read():
    cache = DictCache()
    policy = builtin_policy(cache)
    request = chat(ask(HARD))
    score = expected_score(ask(HARD))

    async def scenario():
        fresh = await policy.decide(request)
        assert (fresh.tier, fresh.source, fresh.score) == (2, "builtin", score)
        (key,) = cache.items
        assert key.startswith(f"decision:{policy.identity}:")
        cached = await policy.decide(request)
        assert (cached.tier, cached.source, cached.score) == (2, "cache", score)
        # Entries written before scores (and the LLM's, until it gives one): the tier alone.
        found = []
        for old in ("1", b"0", b"2 0.5"):  # Redis answers bytes
            cache.items[key] = old
            decision = await policy.decide(request)
            found.append((decision.tier, decision.source, decision.score))
        return found

    assert asyncio.run(scenario()) == [(1, "cache", None), (0, "cache", None), (2, "cache", 0.5)]


def test_the_identity_names_every_setting_that_decides(tmp_path):
    import httpx

    client = httpx.AsyncClient()
    base = ClassifierSettings(base_url="http://127.0.0.1:9/v1", model="m", mode="hybrid")

    def identity(settings: ClassifierSettings, weights: Weights | None = None) -> str:
        llm = LLMClassifier(settings, client) if settings.uses_llm else None
        builtin = (
            BuiltinClassifier(settings.thresholds, weights=weights)
            if settings.uses_builtin
            else None
        )
        return classifier_identity(settings, llm, builtin)

    changed = {
        "mode": ClassifierSettings(base_url=base.base_url, model="m", mode="llm"),
        "base URL": ClassifierSettings(base_url="http://127.0.0.1:8/v1", model="m"),
        "model": ClassifierSettings(base_url=base.base_url, model="other"),
        "prompt": ClassifierSettings(base_url=base.base_url, model="m", system_prompt="Say 0."),
        "thresholds": ClassifierSettings(base_url=base.base_url, model="m", thresholds=(0.2, 0.5)),
    }
    reference = identity(base)
    assert identity(ClassifierSettings(base_url=base.base_url, model="m")) == reference
    for name, settings in changed.items():
        assert identity(settings) != reference, name
    # Other weights than the bundled file's are another classifier.
    bundled = BuiltinClassifier().weights
    other = Weights(bundled.bias + 0.5, bundled.weights)
    assert identity(base, other) != reference
    asyncio.run(client.aclose())


@pytest.fixture
def clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings from the test's env file alone. A fixture, not the test's body: pytest then
    sets PYTEST_CURRENT_TEST in this environment, which mitmproxy's log handlers read to
    retire themselves after the test."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "environ", {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)})


def test_a_tool_loop_keeps_its_score_and_not_past_a_settings_change(tmp_path, clean_environment):
    """A follow-up keeps its task's tier and score; once the classifier's settings change
    (a new Policy), the task is decided again under the new ones."""

    def env_file(name: str, thresholds: str) -> str:
        path = tmp_path / name
        path.write_text(
            "FRONTIER_BASE_URL=http://127.0.0.1:8103/v1\nMEDIUM_BASE_URL=http://127.0.0.1:8102/v1\n"
            f"CHEAP_BASE_URL=http://127.0.0.1:8101/v1\nCLASSIFIER_MODE=builtin\n"
            f"CLASSIFIER_THRESHOLDS={thresholds}\nCACHE_BACKEND=memory\n"
            f"XROUTER_DATA_DIR={tmp_path / 'data'}\n"
            f"UPSTREAMS_FILE={tmp_path / 'absent.json'}\n"
        )
        return str(path)

    text = "Rename the variable x to count in main.py and run the tests"
    first = oc.request(text)
    follow = oc.request(text, loop=[(oc.tool_call(1), "ok")])
    score = BuiltinClassifier().score(classifier_input(first["messages"]))

    async def scenario() -> list[tuple[int, str, float | None]]:
        addon = Xrouter()
        seen = []
        with taddons.context(addon) as tctx:
            tctx.configure(
                addon,
                confdir=str(tmp_path / "mitmproxy"),
                xrouter_env_file=env_file("a.env", "0.33,0.66"),
            )
            try:
                for body in (first, follow):
                    decision, _ = await addon.plan(chat(body), None)
                    seen.append((decision.tier, decision.source, decision.score))
                tctx.configure(addon, xrouter_env_file=env_file("b.env", "0.0,0.0"))
                decision, _ = await addon.plan(chat(follow), None)
                seen.append((decision.tier, decision.source, decision.score))
            finally:
                addon.done()
                if addon.client is not None:
                    await addon.client.aclose()
        return seen

    seen = asyncio.run(scenario())
    assert seen[0][1:] == ("builtin", score) and seen[0][0] < 2
    assert seen[1] == (seen[0][0], "tool_loop", score)
    assert seen[2] == (2, "builtin", score)
