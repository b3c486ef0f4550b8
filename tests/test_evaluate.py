"""Routing metrics against hand-computed cases, and the evaluate / calibrate commands."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from xrouter_core.config import load_settings
from xrouter_core.quality import routing_metrics as m
from xrouter_core.quality.calibrate import choose_thresholds, prompt_of, read_prompts
from xrouter_core.quality.routellm_data import load_benchmark, routed_text
from xrouter_core.routing.builtin import BuiltinClassifier, tier_for

# Four prompts. weak quality 2/4, strong quality 3/4.
SCORES = [0.9, 0.8, 0.3, 0.1]
WEAK = [False, True, False, True]
STRONG = [True, True, True, False]


def test_sweep_by_hand():
    """bins=2: edges 0.1 (min), 0.55 (median, interpolated), 0.9 (max), then > max.

    >= 0.1 : all strong                       -> 3/4 right, share 1
    >= 0.55: 0.9, 0.8 strong (T, T); F, T weak -> 3/4, share 0.5
    >= 0.9 : 0.9 strong (T); T, F, T weak      -> 3/4, share 0.25
    >  0.9 : all weak                          -> 2/4, share 0
    PGR = (quality - 0.5) / 0.25 -> 1, 1, 1, 0.
    """
    points = m.sweep(SCORES, WEAK, STRONG, bins=2)
    assert [p.threshold for p in points] == pytest.approx([0.9, 0.9, 0.55, 0.1])
    assert [p.strong_share for p in points] == [0.0, 0.25, 0.5, 1.0]
    assert [p.quality for p in points] == [0.5, 0.75, 0.75, 0.75]
    assert [p.pgr for p in points] == [0.0, 1.0, 1.0, 1.0]


def test_apgr_and_cpt_by_hand():
    """APGR by the trapezoid rule: 0.25*(0+1)/2 + 0.25*1 + 0.5*1 = 0.875.
    (The mean of the four PGRs, 0.75, would be wrong.) CPT(50 %) = 0.125, CPT(80 %) = 0.2."""
    points = m.sweep(SCORES, WEAK, STRONG, bins=2)
    assert m.apgr(points) == pytest.approx(0.875)
    # RouteLLM's form: (AUC - weak AUC) / (strong AUC - weak AUC) over the same points.
    auc = 0.25 * (0.5 + 0.75) / 2 + 0.25 * 0.75 + 0.5 * 0.75
    assert (auc - 0.5) / (0.75 - 0.5) == pytest.approx(m.apgr(points))
    assert m.cpt(points, 0.5) == pytest.approx(0.125)
    assert m.cpt(points, 0.8) == pytest.approx(0.2)
    assert m.cpt(points, 1.01) is None


def test_apgr_with_a_dip_and_cpt_takes_the_first_crossing():
    points = [
        m.OperatingPoint(1.0, 0.0, 0.5, 0.0),
        m.OperatingPoint(0.8, 0.2, 0.65, 0.6),
        m.OperatingPoint(0.6, 0.4, 0.6, 0.4),
        m.OperatingPoint(0.0, 1.0, 0.75, 1.0),
    ]
    # 0.2*0.3 + 0.2*0.5 + 0.6*0.7 = 0.58
    assert m.apgr(points) == pytest.approx(0.58)
    assert m.cpt(points, 0.5) == pytest.approx(0.2 * 0.5 / 0.6)


def test_quantiles_match_numpy_linear_interpolation():
    assert m.quantile([1, 2, 3, 4], 0.25) == pytest.approx(1.75)
    assert m.quantile([1, 2, 3, 4], 0.5) == pytest.approx(2.5)
    assert m.quantile_thresholds([3, 1, 2, 4, 5], bins=4) == [1, 2, 3, 4, 5]
    # Discrete scores (an LLM's tiers): equal edges are kept once; edges between two
    # tiers select the same prompts as the tier above them.
    edges = m.quantile_thresholds([0, 0, 0, 0.5, 1], bins=10)
    assert edges == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1])


def test_tiers_give_the_expected_operating_points():
    tiers = [2, 1, 0, 0]
    points = m.sweep([t / 2 for t in tiers], WEAK, STRONG)
    shares = sorted({p.strong_share for p in points})
    assert shares == [0.0, 0.25, 0.5, 1.0]


def test_random_router_is_near_half_and_optimal_is_bounded():
    weak = [i % 3 == 0 for i in range(6000)]
    strong = [i % 3 != 2 for i in range(6000)]
    result = m.summarize(m.random_scores(6000, seed=0), weak, strong)
    assert 0.45 < result["apgr"] < 0.55
    assert result["cpt50"] == pytest.approx(0.5, abs=0.06)
    assert m.random_scores(5, seed=1) == m.random_scores(5, seed=1)
    # Routing the 1/3 weak-wrong-strong-right prompts first reaches the strong quality at 1/3.
    assert m.optimal_quality(weak, strong, 1 / 3) == pytest.approx(sum(strong) / 6000)
    perfect = [1.0 if s and not w else 0.0 for w, s in zip(weak, strong, strict=True)]
    assert m.summarize(perfect, weak, strong)["apgr"] > 0.8


# ---- evaluate command ----------------------------------------------------------


def run_module(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=300,
    )


def test_evaluate_cli_on_real_data(tmp_path):
    report_path, table_path, chart_path = (
        tmp_path / "r.json",
        tmp_path / "r.md",
        tmp_path / "r.html",
    )
    done = run_module(
        "xrouter_core.quality.evaluate",
        "--sample", "120",
        "--json", str(report_path),
        "--markdown", str(table_path),
        "--chart", str(chart_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(report_path.read_text())
    assert report["split"] == "heldout" and report["sample"] == 120
    for benchmark in ("mmlu", "gsm8k"):
        entry = report["benchmarks"][benchmark]
        assert entry["prompts"] == 120
        assert set(entry["routers"]) == {"builtin", "random"}
        for result in entry["routers"].values():
            assert -1 < result["apgr"] < 2
            shares = [p["strong_share"] for p in result["points"]]
            assert shares[0] == 0.0 and shares[-1] == 1.0 and shares == sorted(shares)
        assert set(entry["routers"]["builtin"]["at_thresholds"]) == {
            "frontier_only",
            "medium_and_frontier",
        }
    table = table_path.read_text()
    assert "| mmlu | builtin | 120 |" in table and "| gsm8k | random | 120 |" in table
    assert done.stdout == table + "\n"
    assert "plotly" in chart_path.read_text()[:200_000].lower()


def test_evaluate_samples_only_from_the_held_out_split(tmp_path):
    from xrouter_core.quality.evaluate import sample

    held_out = load_benchmark("gsm8k", "heldout")
    chosen = sample(held_out, 50, seed=3)
    assert len(chosen) == 50 and chosen == sample(held_out, 50, seed=3)
    calibration = {e.prompt for e in load_benchmark("gsm8k", "calibration")}
    assert not calibration & {e.prompt for e in chosen}


def test_evaluate_llm_and_hybrid_against_an_endpoint(upstreams, tmp_path):
    """The LLM router asks the endpoint per prompt; hybrid replaces failures by built-in tiers."""
    upstreams.classifier.digit = "2"
    report_path = tmp_path / "r.json"
    done = run_module(
        "xrouter_core.quality.evaluate",
        "--router", "llm", "hybrid",
        "--benchmark", "gsm8k",
        "--sample", "15",
        "--llm-base-url", upstreams.classifier.url + "/v1",
        "--llm-model", "tiny",
        "--json", str(report_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    routers = json.loads(report_path.read_text())["benchmarks"]["gsm8k"]["routers"]
    assert routers["llm"]["tier_counts"] == {"0": 0, "1": 0, "2": 15}
    assert routers["llm"]["llm_failures"] == 0
    assert len(upstreams.classifier.requests) == 15  # hybrid reuses the answers
    assert upstreams.classifier.requests[0].json["model"] == "tiny"

    from fakes import Reply

    upstreams.classifier.failure = Reply(status=500, body={"error": {"message": "down"}})
    done = run_module(
        "xrouter_core.quality.evaluate",
        "--router", "llm", "hybrid",
        "--benchmark", "gsm8k",
        "--sample", "15",
        "--llm-base-url", upstreams.classifier.url,
        "--json", str(report_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    routers = json.loads(report_path.read_text())["benchmarks"]["gsm8k"]["routers"]
    assert routers["llm"]["llm_failures"] == 15
    assert routers["llm"]["tier_counts"]["2"] == 15  # llm mode: failures go to frontier
    examples = __import__("xrouter_core.quality.evaluate", fromlist=["sample"]).sample(
        load_benchmark("gsm8k", "heldout"), 15, 0
    )
    builtin = BuiltinClassifier()
    expected = [builtin.decide(routed_text(e.prompt)).tier for e in examples]
    assert routers["hybrid"]["tier_counts"] == {str(t): expected.count(t) for t in (0, 1, 2)}


def test_evaluate_rejects_llm_without_endpoint():
    done = run_module("xrouter_core.quality.evaluate", "--router", "llm")
    assert done.returncode == 2 and "--llm-base-url" in done.stderr


# ---- calibrate command ---------------------------------------------------------


def test_log_lines_give_prompts():
    assert prompt_of('{"classifier_input": "a", "prompt": "b"}') == "a"
    assert prompt_of('{"prompt": "b", "status": 200}') == "b"
    assert prompt_of('{"messages": [{"role": "user", "content": "c"}]}') == "c"
    assert prompt_of('{"status": 200}') is None
    assert prompt_of("  plain text prompt \n") == "plain text prompt"
    assert prompt_of("{not json") == "{not json"
    found = read_prompts(["one\n", "\n", '{"x": 1}\n', '{"prompt": "two"}\n'])
    assert (found.texts, found.skipped) == (["one", "two"], 1)


def synthetic_log(path: Path) -> list[str]:
    """A mixed log: benchmark questions as JSON lines, chat as plain text, junk lines."""
    prompts = [e.prompt for e in load_benchmark("mmlu", "calibration")[:250]]
    prompts += [e.prompt for e in load_benchmark("gsm8k", "calibration")[:150]]
    chat = [
        f"Write a friendly note to colleague number {i} about the team lunch on Friday."
        for i in range(50)
    ]
    lines = [json.dumps({"prompt": p, "tier": 1}) for p in prompts] + chat
    lines += ['{"status": 499}', ""]
    path.write_text("\n".join(lines) + "\n")
    return prompts + chat


@pytest.mark.parametrize("target", [0.1, 0.2, 0.5])
def test_calibrate_hits_the_target_on_a_synthetic_log(tmp_path, target):
    log = tmp_path / "requests.jsonl"
    prompts = synthetic_log(log)
    done = run_module(
        "xrouter_core.quality.calibrate", "--target-frontier", str(target), "--log", str(log)
    )
    assert done.returncode == 0, done.stderr
    assert f"{len(prompts)} prompts" in done.stdout and "skipped: 1" in done.stdout
    line = re.search(r"^CLASSIFIER_THRESHOLDS=(\S+)$", done.stdout, re.M)
    assert line
    # The printed line is valid configuration, and it meets the target on this traffic.
    env_file = tmp_path / ".env"
    env_file.write_text(
        line.group(0)
        + "\nFRONTIER_BASE_URL=http://127.0.0.1:1\nCHEAP_BASE_URL=http://127.0.0.1:2\nMEDIUM_BASE_URL=http://127.0.0.1:3\n"
    )
    thresholds = load_settings(
        {}, env_file=env_file, upstreams_file=tmp_path / "none.json"
    ).classifier.thresholds
    classifier = BuiltinClassifier(thresholds)
    tiers = [tier_for(classifier.score(p), thresholds) for p in prompts]
    assert tiers.count(2) / len(tiers) == pytest.approx(target, abs=0.02)


def test_calibrate_with_a_cheap_target_and_ties():
    scores = [0.0] * 40 + [i / 60 for i in range(60)]
    low, high = choose_thresholds(scores, 0.25, target_cheap=0.5)
    tiers = [tier_for(s, (low, high)) for s in scores]
    assert tiers.count(2) == 25 and tiers.count(0) == 50
    # 40 tied scores cannot be split: the share comes as close as ties allow.
    low, high = choose_thresholds(scores, 0.8)
    assert [tier_for(s, (low, high)) for s in scores].count(2) == 100
    assert choose_thresholds(scores, 0.0) == (0.33, 1.0)
