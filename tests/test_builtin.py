"""The built-in classifier: its score, its settings, its training, and the router using it."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import httpx
import pytest
from conftest import free_port, unique

from xrouter_core.config import DEFAULT_THRESHOLDS, ConfigError, load_settings
from xrouter_core.quality import sources, train_builtin
from xrouter_core.quality.routellm_data import BENCHMARKS, load_benchmark, routed_text, split_of
from xrouter_core.routing import builtin
from xrouter_core.routing.builtin import (
    BUILTIN_THRESHOLDS,
    BuiltinClassifier,
    analyse,
    apply_rules,
    tier_for,
)
from xrouter_core.routing.classifier import LLMClassifier

CHAT = "/v1/chat/completions"
SIMPLE = "hi, how are you today?"
HARD = (
    "Prove that there are infinitely many primes of the form 4k+3, then derive an upper bound "
    "on the gap between consecutive such primes and explain the proof step by step."
)
ARCHITECTURE = (
    "Design the architecture of a distributed, horizontally scalable rate limiter for a "
    "multi-region API gateway and discuss the trade-offs between consistency and latency."
)


def ask(text: str) -> dict:
    return {"model": "xrouter/auto", "messages": [{"role": "user", "content": text}]}


# ---- the score -----------------------------------------------------------------


def test_score_is_a_deterministic_difficulty_in_0_1():
    classifier = BuiltinClassifier()
    texts = [SIMPLE, HARD, ARCHITECTURE, "", "x" * 20_000, "Janet has 3 apples and buys 5."]
    scores = [classifier.score(text) for text in texts]
    assert all(0.0 <= score <= 1.0 for score in scores)
    assert scores == [classifier.score(text) for text in texts]


def test_simple_chat_is_cheap_and_hard_asks_are_frontier():
    classifier = BuiltinClassifier()
    for text in (
        SIMPLE,
        "Thanks!",
        "What is the capital of France?",
        "Translate 'good night' into Italian.",
    ):
        assert classifier.decide(text).tier == 0, text
    for text in (HARD, ARCHITECTURE):
        assert classifier.decide(text).tier == 2, text
    assert classifier.score(SIMPLE) < classifier.score(HARD)


def test_learned_part_ranks_strong_model_prompts_higher_on_training_data():
    """Without the everyday rules, prompts where the strong model beat the weak one score
    higher on average than the others, in most sources (in-sample: a sanity check only;
    the out-of-source figures come from quality.evaluate)."""
    classifier = BuiltinClassifier(rules=False)
    everything = sources.load_all()
    higher = 0
    for name in sources.trainable(everything):
        rows = everything[name][:1500]
        gain = [classifier.score(routed_text(r.prompt)) for r in rows if r.strong > r.weak]
        rest = [classifier.score(routed_text(r.prompt)) for r in rows if r.strong <= r.weak]
        higher += sum(gain) / len(gain) > sum(rest) / len(rest)
    assert higher >= len(sources.trainable(everything)) - 1


def test_rules_cap_short_messages_and_floor_code_and_hard_asks():
    short = analyse("hello, can you help me?")
    assert (
        apply_rules(0.9, short) <= builtin.SHORT_CAP
        and apply_rules(1.0, short) == builtin.SHORT_CAP
    )
    code = analyse("Why does this fail?\n```python\ndef f(x):\n    return x +\n```")
    assert code.code and apply_rules(0.0, code) == builtin.CODE_FLOOR
    one = analyse(
        "Please refactor the module that handles invoices so that it reads better and keeps its behaviour."
    )
    assert one.hard_asks == 1 and apply_rules(0.0, one) == builtin.HARD_FLOOR[0]
    assert analyse(HARD).hard_asks >= 2 and apply_rules(0.0, analyse(HARD)) == builtin.HARD_FLOOR[1]
    for analysis in (short, code, one, analyse(HARD)):
        # Monotone: the rules never reorder two prompts they touch alike.
        mapped = [apply_rules(s / 10, analysis) for s in range(11)]
        assert mapped == sorted(mapped) and len(set(mapped)) == 11
    assert apply_rules(0.95, analyse(HARD)) >= 0.95  # floors never lower a score


def test_tier_boundaries_and_threshold_validation():
    assert [tier_for(s, (0.3, 0.7)) for s in (0.0, 0.299, 0.3, 0.699, 0.7, 1.0)] == [
        0,
        0,
        1,
        1,
        2,
        2,
    ]
    assert tier_for(0.5, (0.5, 0.5)) == 2  # equal thresholds: no medium tier
    for bad in ((0.7, 0.3), (-0.1, 0.5), (0.2, 1.5), (0.5,)):
        with pytest.raises(ValueError):
            BuiltinClassifier(bad)


def test_classify_matches_the_llm_classifier_interface():
    decision = asyncio.run(BuiltinClassifier((0.1, 0.2)).classify(HARD))
    assert decision is not None
    assert (decision.tier, decision.source) == (2, "builtin")
    assert decision.ms >= 0 and decision.detail.startswith("score=")


# ---- training ------------------------------------------------------------------


def test_split_is_fixed_and_disjoint():
    for benchmark in BENCHMARKS:
        calibration = {e.prompt for e in load_benchmark(benchmark, "calibration")}
        held_out = {e.prompt for e in load_benchmark(benchmark, "heldout")}
        everything = load_benchmark(benchmark, "all")
        assert calibration and held_out and not calibration & held_out
        assert len(calibration) + len(held_out) == len({e.prompt for e in everything})
    assert split_of("What is 2+2?") == split_of("What is 2+2?")


def test_bundled_weights_are_what_the_training_script_makes(tmp_path):
    """Reproducible: training on every trainable source gives the committed file exactly."""
    out = tmp_path / "weights.json"
    assert train_builtin.main(["--out", str(out)]) == 0
    made = json.loads(out.read_text())
    bundled = json.loads(builtin.WEIGHTS_PATH.read_text())
    assert made == bundled
    everything = sources.load_all()
    assert bundled["meta"]["prompts"] == sources.counts(sources.all_training_rows(everything))
    assert "alpaca_eval" not in bundled["meta"]["prompts"]
    assert builtin.WEIGHTS_PATH.stat().st_size < 5_000_000


def test_sources_are_deduplicated_across_and_within_sources():
    raw = sources.raw_rows()
    everything = sources.deduplicate(raw)
    keys = [sources.normalise(r.prompt) for rows in everything.values() for r in rows]
    assert len(keys) == len(set(keys))  # no prompt twice, in any pair of sources
    # GSM8K's test set is in RouteLLM and ZeroEval: kept once, as zeroeval_gsm.
    gsm = {sources.normalise(r.prompt) for r in raw["zeroeval_gsm"]}
    routellm_gsm = {sources.normalise(r.prompt) for r in raw["routellm_gsm8k"]}
    assert len(gsm & routellm_gsm) > 1000
    assert len(everything["zeroeval_gsm"]) == len(raw["zeroeval_gsm"])
    assert len(everything["routellm_gsm8k"]) == len(routellm_gsm - gsm)
    assert "routellm_gsm8k" not in sources.load_all()  # too few left to report
    # A normalised duplicate (case, spacing) is a duplicate.
    row = raw["arena_hard_v1"][0]
    twin = sources.Row("llmrouter_math", "x", "  " + row.prompt.upper() + "\n", 1.0, 0.0)
    merged = sources.deduplicate({"arena_hard_v1": [row], "llmrouter_math": [twin]})
    assert merged["arena_hard_v1"] == [row] and merged["llmrouter_math"] == []


def test_loso_split_never_trains_on_the_held_out_source_or_alpaca_eval():
    everything = sources.load_all()
    assert "alpaca_eval" in everything and "alpaca_eval" not in sources.trainable(everything)
    for held_out in sources.trainable(everything):
        train, test = sources.loso_split(everything, held_out)
        assert test == everything[held_out]
        assert {r.source for r in train} == set(sources.trainable(everything)) - {held_out}
        test_keys = {sources.normalise(r.prompt) for r in test}
        assert not test_keys & {sources.normalise(r.prompt) for r in train}
    alpaca = {sources.normalise(r.prompt) for r in everything["alpaca_eval"]}
    assert not alpaca & {sources.normalise(r.prompt) for r in sources.all_training_rows(everything)}
    with pytest.raises(ValueError, match="test-only"):
        train_builtin.train(everything["alpaca_eval"][:10])


def test_training_is_deterministic_and_learns_a_planted_signal():
    rows = [
        sources.Row(
            src,
            "t",
            f"{'hard tricky' if i % 3 == 0 else 'plain'} question {i} {src}",
            float(i % 3 == 0),
            0.0,
        )
        for src in ("a_one", "b_two")
        for i in range(60)
    ]
    config = train_builtin.TrainConfig(min_count=2, words=True)
    first, second = train_builtin.train(rows, config), train_builtin.train(rows, config)
    assert first == second
    assert first.weights["w:tricky"] > 0.5 > first.weights.get("w:plain", 0.0)


def _flip_rows() -> list[sources.Row]:
    """Two sources where the word "steady" always raises the label and "flip" raises it in
    one source and lowers it in the other (every prompt has four distinct words)."""
    rows = []
    for src in ("a_one", "b_two"):
        for i in range(80):
            steady, flip = i % 2 == 0, (i // 2) % 2 == 0
            hard = (steady or flip) if src == "a_one" else (steady and not flip)
            prompt = f"{'steady' if steady else 'calm'} {'flip' if flip else 'flop'} item {i}"
            rows.append(sources.Row(src, "t", prompt, float(hard), 0.0))
    return rows


def test_per_source_directions_are_measured_within_each_source():
    rows = _flip_rows()
    vectors = [train_builtin.features_of(r.prompt) for r in rows]
    labels = [train_builtin.label(r) for r in rows]
    found = train_builtin.source_directions(
        vectors, labels, [r.source for r in rows], ["w:steady", "w:flip", "w:item"], 2, 1.0
    )
    assert found["w:steady"] == {"a_one": 1, "b_two": 1}
    assert found["w:flip"] == {"a_one": 1, "b_two": -1}
    assert found["w:item"] == {"a_one": 0, "b_two": 0}  # in every prompt, at one value
    assert train_builtin.agreed_signs(found, 1.0, 2) == {"w:steady": 1}
    # With a third source that agrees, two of three is enough at agreement 0.6, not at 1.
    found["w:flip"]["c_three"] = 1
    assert train_builtin.agreed_signs(found, 0.6, 2) == {"w:steady": 1, "w:flip": 1}
    assert train_builtin.agreed_signs(found, 1.0, 2) == {"w:steady": 1}


def test_sign_invariance_drops_a_feature_that_flips_and_holds_the_others_to_their_sign():
    rows = _flip_rows()
    plain = train_builtin.train(rows, train_builtin.TrainConfig(min_count=2, words=True))
    config = train_builtin.TrainConfig(min_count=2, words=True, invariance="sign")
    invariant = train_builtin.train(rows, config)
    assert "w:flip" in plain.weights  # the pooled fit does use it
    assert "w:flip" not in invariant.weights and "w:flop" not in invariant.weights
    assert invariant.weights["w:steady"] > 0.3 and invariant.weights["w:calm"] < -0.3
    assert invariant == train_builtin.train(rows, config)
    with pytest.raises(ValueError, match="invariance"):
        train_builtin.TrainConfig(invariance="maybe")


def test_group_dro_moves_the_weights_toward_the_worse_fitted_source():
    """With every prompt weighing the same, the big source decides the sign of "flip";
    group-DRO raises the small source's weight, whose "flip" goes the other way."""
    rows = [r for r in _flip_rows() if r.source == "a_one" or int(r.prompt.split()[-1]) < 16]
    base = train_builtin.TrainConfig(min_count=2, words=True, balance=0.0)
    plain = train_builtin.train(rows, base)
    robust = train_builtin.train(rows, replace(base, dro=3.0))
    assert robust.weights.get("w:flip", 0.0) < 0.5 * plain.weights["w:flip"]


def test_a_shared_intercept_lets_the_weights_learn_which_source_kind_is_harder():
    """Source "hard_kind" always needs the strong model, "easy_kind" never does, and every
    prompt of a kind says so by one word. Per-source intercepts absorb the difference (the
    word's weight stays small); one shared intercept must put it in the word."""
    rows = [
        sources.Row(src, "t", f"{word} question number {i}", float(src == "hard_kind"), 0.0)
        for src, word in (("hard_kind", "prove"), ("easy_kind", "hello"))
        for i in range(60)
    ]
    base = train_builtin.TrainConfig(min_count=2, words=True)
    per_source = train_builtin.train(rows, base)
    shared = train_builtin.train(rows, replace(base, intercepts="shared"))
    lift = shared.weights["w:prove"] - shared.weights["w:hello"]
    assert lift > 3.0
    assert lift > 2 * abs(
        per_source.weights.get("w:prove", 0.0) - per_source.weights.get("w:hello", 0.0)
    )
    with pytest.raises(ValueError, match="intercepts"):
        train_builtin.TrainConfig(intercepts="none")


# ---- settings ------------------------------------------------------------------

ROUTES = {
    "CHEAP_BASE_URL": "http://127.0.0.1:1/v1",
    "MEDIUM_BASE_URL": "http://127.0.0.1:2/v1",
    "FRONTIER_BASE_URL": "http://127.0.0.1:3/v1",
}


def load(env, tmp_path, upstreams=None):
    path = tmp_path / "upstreams.json"
    if upstreams is not None:
        path.write_text(json.dumps(upstreams))
    return load_settings(env, env_file=tmp_path / "none.env", upstreams_file=path)


def test_hybrid_is_the_default_and_needs_no_llm_server(tmp_path):
    settings = load(ROUTES, tmp_path)
    classifier = settings.classifier
    # No thresholds set: each classifier takes its own (the LLM's read like its digit, the
    # built-in one's were calibrated for its score).
    assert (classifier.mode, classifier.thresholds) == ("hybrid", None)
    assert classifier.uses_builtin and not classifier.uses_llm
    assert settings.public()["classifier"]["mode"] == "hybrid"
    assert settings.public()["classifier"]["thresholds"] == "default"
    assert BuiltinClassifier().thresholds == BUILTIN_THRESHOLDS
    llm = LLMClassifier(replace(classifier, base_url="http://127.0.0.1:4"), httpx.AsyncClient())
    assert llm.thresholds == DEFAULT_THRESHOLDS
    # Set once, they apply to both.
    chosen = load({**ROUTES, "CLASSIFIER_THRESHOLDS": "0.2,0.5"}, tmp_path).classifier
    assert BuiltinClassifier(chosen.thresholds).thresholds == (0.2, 0.5)
    assert LLMClassifier(
        replace(chosen, base_url="http://127.0.0.1:4"), httpx.AsyncClient()
    ).thresholds == (0.2, 0.5)


def test_llm_mode_still_requires_the_base_url(tmp_path):
    with pytest.raises(
        ConfigError, match="CLASSIFIER_BASE_URL is required when CLASSIFIER_MODE is llm"
    ):
        load({**ROUTES, "CLASSIFIER_MODE": "llm"}, tmp_path)
    settings = load(
        {**ROUTES, "CLASSIFIER_MODE": "LLM", "CLASSIFIER_BASE_URL": "http://127.0.0.1:4"}, tmp_path
    )
    assert settings.classifier.uses_llm and not settings.classifier.uses_builtin


def test_thresholds_from_env_and_upstreams_json(tmp_path):
    settings = load({**ROUTES, "CLASSIFIER_THRESHOLDS": " 0.2, 0.5 "}, tmp_path)
    assert settings.classifier.thresholds == (0.2, 0.5)
    settings = load(ROUTES, tmp_path, {"classifier": {"mode": "builtin", "thresholds": [0.1, 0.9]}})
    assert (settings.classifier.mode, settings.classifier.thresholds) == ("builtin", (0.1, 0.9))


def test_bad_mode_and_thresholds_are_reported_together(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load({**ROUTES, "CLASSIFIER_MODE": "oracle", "CLASSIFIER_THRESHOLDS": "0.8,0.2"}, tmp_path)
    text = "\n".join(caught.value.problems)
    assert "CLASSIFIER_MODE must be one of llm, builtin, hybrid, not 'oracle'" in text
    assert "CLASSIFIER_THRESHOLDS: thresholds must satisfy 0 <= low <= high <= 1" in text
    with pytest.raises(ConfigError, match="two numbers"):
        load({**ROUTES, "CLASSIFIER_THRESHOLDS": "low,high"}, tmp_path)


def test_disabled_classifier_uses_neither(tmp_path):
    settings = load(
        {"CLASSIFIER_ENABLED": "false", "FRONTIER_BASE_URL": "http://127.0.0.1:3/v1"}, tmp_path
    )
    assert not settings.classifier.uses_builtin and not settings.classifier.uses_llm


# ---- the router, end to end (real mitmdump, fake providers) ---------------------


def routes_env(upstreams) -> dict[str, str]:
    env = upstreams.env()
    del env["CLASSIFIER_BASE_URL"], env["CLASSIFIER_MODEL"]
    return env


def decision_lines(router, marker: str) -> list[str]:
    return [
        line for line in router.logs().splitlines() if "routed decision=" in line and marker in line
    ]


def test_without_an_llm_server_simple_and_hard_prompts_go_to_different_tiers(
    start_router, upstreams
):
    router = start_router(routes_env(upstreams), base=False)
    with router.client() as client:
        simple = client.post(CHAT, json=ask(unique(SIMPLE)))
        hard = client.post(CHAT, json=ask(unique(HARD)))
        health = client.get("/health").json()
    assert simple.status_code == hard.status_code == 200
    assert simple.headers["x-xrouter-upstream"] == "cheap"
    assert hard.headers["x-xrouter-upstream"] == "frontier"
    assert simple.json()["model"] == "cheap-model" and hard.json()["model"] == "frontier-model"
    assert upstreams.classifier.requests == []
    assert health["classifier"]["mode"] == "hybrid"
    lines = [line for line in router.logs().splitlines() if "routed decision=" in line]
    assert len(lines) == 2 and all("source=builtin " in line for line in lines)


@pytest.mark.parametrize("failure", ["refused", "error_500"])
def test_hybrid_falls_back_to_builtin_when_the_llm_fails(start_router, upstreams, failure):
    env = {"CLASSIFIER_TIMEOUT_MS": "700"}
    if failure == "refused":
        env["CLASSIFIER_BASE_URL"] = f"http://127.0.0.1:{free_port()}/v1"
    else:
        from fakes import Reply

        upstreams.classifier.failure = Reply(status=500, body={"error": {"message": "boom"}})
    router = start_router(env)
    upstreams.classifier.digit = "2"  # would send everything to frontier if it answered
    with router.client() as client:
        simple = client.post(CHAT, json=ask(unique(SIMPLE)))
        hard = client.post(CHAT, json=ask(unique(HARD)))
        health = client.get("/health").json()
    assert simple.headers["x-xrouter-upstream"] == "cheap"
    assert hard.headers["x-xrouter-upstream"] == "frontier"
    assert health["classifier"]["last_call_ok"] is False
    assert len(decision_lines(router, "source=builtin_fallback")) == 2
    assert "the built-in classifier decides" in router.logs()
    if failure == "error_500":
        assert len(upstreams.classifier.requests) == 2  # the LLM was asked each time


def test_hybrid_uses_the_llm_when_it_answers(start_router, upstreams):
    router = start_router({})
    upstreams.classifier.digit = "1"
    with router.client() as client:
        reply = client.post(CHAT, json=ask(unique(SIMPLE)))
    assert reply.headers["x-xrouter-upstream"] == "medium"  # the LLM's 1, not the built-in 0
    assert len(decision_lines(router, "source=llm ")) == 1


def test_builtin_mode_never_asks_the_llm(start_router, upstreams):
    router = start_router({"CLASSIFIER_MODE": "builtin", "CLASSIFIER_THRESHOLDS": "0.0,0.0"})
    with router.client() as client:
        reply = client.post(CHAT, json=ask(unique(SIMPLE)))
    # Both thresholds at 0: every score reaches frontier.
    assert reply.headers["x-xrouter-upstream"] == "frontier"
    assert upstreams.classifier.requests == []
    assert len(decision_lines(router, "source=builtin ")) == 1
