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
from xrouter_core.quality.calibrate import (
    choose_thresholds,
    prompt_of,
    read_prompts,
    threshold_for_quality,
)
from xrouter_core.quality.routellm_data import load_benchmark
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


def test_fast_points_match_the_sweep_and_take_graded_scores():
    """The prefix-sum sweep gives RouteLLM's points; graded (judge) scores work too."""
    points = m.fast_points(SCORES, WEAK, STRONG, bins=2)
    assert points == m.sweep(SCORES, WEAK, STRONG, bins=2)
    # Graded: weak 0.2, 0.5; strong 1.0, 0.5. Routing the first prompt alone is the oracle.
    graded = m.fast_points([0.9, 0.1], [0.2, 0.5], [1.0, 0.5], bins=1)
    assert [(p.strong_share, p.pgr) for p in graded] == [(0.0, 0.0), (0.5, 1.0), (1.0, 1.0)]
    assert m.apgr(graded) == pytest.approx(0.75)


def test_bootstrap_interval_brackets_the_estimate_and_is_seeded():
    weak = [i % 3 == 0 for i in range(600)]
    strong = [i % 3 != 2 for i in range(600)]
    scores = [
        1.0 if s and not w else (i % 7) / 7
        for i, (w, s) in enumerate(zip(weak, strong, strict=True))
    ]
    estimate = m.apgr(m.fast_points(scores, weak, strong))
    interval = m.bootstrap(scores, weak, strong, resamples=50, seed=1)
    assert interval["apgr"][0] <= estimate <= interval["apgr"][1]
    assert interval == m.bootstrap(scores, weak, strong, resamples=50, seed=1)
    assert interval["cpt50"][0] <= interval["cpt50"][1]
    # The resamples depend on the seed and the count only: two routers on the same prompts
    # are resampled alike, so the k-th values are paired (a router against itself: no gap).
    alike = m.resampled(scores, weak, strong, resamples=50, seed=1)
    assert m.intervals(alike) == interval
    other = m.resampled([1 - v for v in scores], weak, strong, resamples=50, seed=1)
    assert alike == m.resampled(scores, weak, strong, resamples=50, seed=1)
    assert alike["apgr"] != other["apgr"] and len(other["apgr"]) == 50
    assert m.resampled(scores, weak, strong, 50, seed=2)["apgr"] != alike["apgr"]


def test_pooled_mixture_weighs_each_source_the_same():
    """Source A: 1 prompt the strong model alone gets right; source B: 3 prompts both get
    right. A router that only tells the sources apart (A scores 1, B 0) sends A first: with
    each source weighing half, PGR is 0 at share 0 and 1 from share 1/2 on, so APGR
    = 1/2 * 1/2 + 1/2 * 1 = 0.75 and CPT(50 %) = 1/4. Weighing every prompt the same
    instead (fast_points on the four prompts) gives 0.875. The reverse order gives 0.25."""
    a = ([1.0], [0.0], [1.0])
    b = ([0.0] * 3, [1.0] * 3, [1.0] * 3)
    result = m.pooled([a, b], bins=10, resamples=0)
    assert result["apgr"] == pytest.approx(0.75)
    assert result["cpt50"] == pytest.approx(0.25)
    assert result["weak_quality"] == pytest.approx(0.5)
    assert result["strong_quality"] == pytest.approx(1.0)
    assert m.apgr(m.fast_points([1, 0, 0, 0], [0, 1, 1, 1], [1, 1, 1, 1])) == pytest.approx(0.875)
    reverse = m.pooled([([0.0], [0.0], [1.0]), ([1.0] * 3, [1.0] * 3, [1.0] * 3)], resamples=0)
    assert reverse["apgr"] == pytest.approx(0.25)


def test_weighted_points_equal_the_sweep_of_replicated_prompts():
    """A weight of 2 is the same as the prompt listed twice."""
    scores, weak, strong = [0.9, 0.7, 0.4, 0.2, 0.1], [0, 1, 0, 1, 1], [1, 1, 1, 0, 1]
    weights = [2.0, 1.0, 3.0, 1.0, 2.0]
    copies = [i for i, w in enumerate(weights) for _ in range(int(w))]
    weighted = m.weighted_points(scores, weak, strong, weights, bins=4)
    replicated = m.weighted_points(
        [scores[i] for i in copies],
        [weak[i] for i in copies],
        [strong[i] for i in copies],
        [1.0] * len(copies),
        bins=4,
    )

    def flat(points):
        return [value for p in points for value in (p.threshold, p.strong_share, p.pgr)]

    assert len(weighted) == len(replicated)
    assert flat(weighted) == pytest.approx(flat(replicated))
    assert weighted[0].strong_share == 0.0 and weighted[-1].strong_share == pytest.approx(1.0)


def test_pooled_interval_resamples_within_sources_and_is_seeded():
    groups = [
        ([(i % 5) / 5 for i in range(n)], [i % 2 for i in range(n)], [i % 3 != 0 for i in range(n)])
        for n in (40, 400)
    ]
    result = m.pooled(groups, resamples=40, seed=2)
    low, high = result["ci95"]["apgr"]
    assert low <= result["apgr"] <= high and low < high
    assert result == m.pooled(groups, resamples=40, seed=2)
    assert result["prompts"] == 440 and result["groups"] == 2


def test_variant_routers_train_in_the_same_folds_with_their_own_config():
    """Every source, cut to its first 400 rows: the folds and the configs are what is
    tested, and six trainings on all 20,000 training rows took half a minute."""
    from xrouter_core.quality import evaluate, sources

    report = evaluate.run(
        ["builtin", "invariant", "dro"],
        chosen_sources=["llmrouter_code", "llmrouter_other"],
        sample_size=80,
        resamples=0,
        log=lambda _line: None,
        dro=2.0,
        data={name: rows[:400] for name, rows in sources.load_all().items()},
    )
    assert report["variant_configs"]["invariant"]["invariance"] == "sign"
    assert report["variant_configs"]["dro"]["dro"] == 2.0
    assert report["train_config"]["invariance"] == "off" and report["train_config"]["dro"] == 0
    code = report["sources"]["llmrouter_code"]["routers"]
    assert code["invariant"]["points"] != code["builtin"]["points"]
    assert code["dro"]["points"] != code["builtin"]["points"]
    assert set(report["pooled"]["routers"]) == {"builtin", "invariant", "dro"}
    assert report["pooled"]["sources"] == ["llmrouter_code", "llmrouter_other"]


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


def test_evaluate_cli_leave_one_source_out(tmp_path):
    report_path, table_path, chart_path = (
        tmp_path / "r.json",
        tmp_path / "r.md",
        tmp_path / "r.html",
    )
    done = run_module(
        "xrouter_core.quality.evaluate",
        "--source", "zeroeval_crux", "alpaca_eval",
        "--sample", "120",
        "--bootstrap", "20",
        "--json", str(report_path),
        "--markdown", str(table_path),
        "--chart", str(chart_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(report_path.read_text())
    assert report["protocol"] == "loso" and report["sample"] == 120
    crux, alpaca = report["sources"]["zeroeval_crux"], report["sources"]["alpaca_eval"]
    assert (
        "zeroeval_crux" not in crux["train_sources"] and "alpaca_eval" not in crux["train_sources"]
    )
    assert alpaca["test_only"] and "alpaca_eval" not in alpaca["train_sources"]
    assert "zeroeval_crux" in alpaca["train_sources"]
    for entry in (crux, alpaca):
        assert entry["prompts"] == 120
        assert set(entry["routers"]) == {"builtin", "random", "oracle"}
        for result in entry["routers"].values():
            assert -1 < result["apgr"] < 2
            low, high = result["ci95"]["apgr"]
            assert low <= high
            shares = [p["strong_share"] for p in result["points"]]
            assert shares[0] == 0.0 and shares[-1] == 1.0 and shares == sorted(shares)
        # Nothing beats the oracle.
        assert entry["routers"]["oracle"]["apgr"] >= entry["routers"]["builtin"]["apgr"]
    # Intervals of the mean over sources, and of each router's lead over builtin, from the
    # paired resamples (every router resampled alike within a source).
    routers = ("builtin", "random", "oracle")
    means = {
        r: [
            (a + b) / 2
            for a, b in zip(
                *(e["routers"][r]["apgr_resamples"] for e in (crux, alpaca)), strict=True
            )
        ]
        for r in routers
    }
    for router in routers:
        low, high = report["mean_apgr_ci95"][router]
        assert low <= high and len(means[router]) == 20
    lead = sorted(a - b for a, b in zip(means["oracle"], means["builtin"], strict=True))
    assert report["mean_apgr_minus_builtin_ci95"]["oracle"] == pytest.approx(
        [m.quantile(lead, 0.025), m.quantile(lead, 0.975)]
    )
    assert set(report["mean_apgr_minus_builtin_ci95"]) == {"random", "oracle"}
    table = table_path.read_text()
    assert "| zeroeval_crux | 120 |" in table and "| alpaca_eval (test only) | 120 |" in table
    assert "| mean − builtin, 95 % interval |" in table
    assert done.stdout == table + "\n"
    # The secondary figure: both held-out sources pooled, each weighing half.
    pooled = report["pooled"]
    assert pooled["sources"] == ["zeroeval_crux", "alpaca_eval"] and pooled["prompts"] == 240
    assert set(pooled["routers"]) == {"builtin", "random", "oracle"}
    assert pooled["routers"]["oracle"]["apgr"] >= pooled["routers"]["builtin"]["apgr"]
    assert "### Secondary: pooled held-out sources (2 sources" in table
    assert "plotly" in chart_path.read_text()[:200_000].lower()


def test_in_distribution_protocol_tests_only_on_held_out_halves():
    from xrouter_core.quality import sources
    from xrouter_core.quality.evaluate import folds, sample
    from xrouter_core.quality.routellm_data import split_of

    everything = sources.load_all()
    for _name, train, test in folds("in-distribution", everything, ["zeroeval_gsm", "alpaca_eval"]):
        assert test and all(split_of(r.prompt) == "heldout" for r in test)
        assert not {r.prompt for r in test} & {r.prompt for r in train}
        assert "alpaca_eval" not in sources.counts(train)
        chosen = sample(test, 50, seed=3)
        assert len(chosen) == 50 and chosen == sample(test, 50, seed=3)


# ---- own-traffic protocol ------------------------------------------------------


def test_own_traffic_folds_train_on_the_other_half_only():
    """The test half is the same for every K; the first K rows of the other half, and only
    they, join the loso training rows, as the source "traffic"; K beyond the half is capped."""
    from xrouter_core.quality import sources
    from xrouter_core.quality.evaluate import TRAFFIC, folds, own_traffic_halves

    everything = sources.load_all()
    chosen = ["llmrouter_code", "alpaca_eval"]
    tests: dict[str, list] = {}
    for k in (0, 7, 10_000):
        for name, train, test in folds("own-traffic", everything, chosen, own_labels=k, seed=1):
            half, rest = own_traffic_halves(everything[name], name, seed=1)
            assert test == half and len(half) + len(rest) == len(everything[name])
            assert {r.prompt for r in half} | {r.prompt for r in rest} == {
                r.prompt for r in everything[name]
            }
            assert tests.setdefault(name, test) == test  # fixed across K
            assert not {r.prompt for r in test} & {r.prompt for r in train}
            traffic = [r for r in train if r.source == TRAFFIC]
            assert [r.prompt for r in traffic] == [r.prompt for r in rest[: min(k, len(rest))]]
            others = [r for r in train if r.source != TRAFFIC]
            if name == "alpaca_eval":
                assert others == sources.all_training_rows(everything)
            else:
                assert others == sources.loso_split(everything, name)[0]
            assert name not in sources.counts(train) and "alpaca_eval" not in sources.counts(train)
    assert len(tests["llmrouter_code"]) == 82
    # The seed draws the halves: the same seed the same halves, another seed others.
    assert (
        own_traffic_halves(everything["llmrouter_code"], "llmrouter_code", seed=1)[0]
        == (tests["llmrouter_code"])
    )
    assert (
        own_traffic_halves(everything["llmrouter_code"], "llmrouter_code", seed=2)[0]
        != (tests["llmrouter_code"])
    )


def synthetic_sources() -> dict[str, list]:
    """Source "own": the long prompts need the strong model and the short ones do not; "b"
    and "c": whether the strong model is needed has nothing to do with length. Only the
    own labels can teach the classifier that length matters on "own"."""
    import hashlib

    from xrouter_core.quality.sources import Row

    found: dict[str, list] = {}
    for name in ("own", "b", "c"):
        rows = []
        for i in range(120):
            length = 2 + (i * 37) % 90
            prompt = f"{name} case {i}: " + " ".join(f"w{j}" for j in range(length))
            if name == "own":
                needed = length > 45
            else:
                needed = hashlib.sha256(prompt.encode()).digest()[0] % 2 == 0
            rows.append(Row(name, name, prompt, 1.0, 0.0 if needed else 1.0))
        found[name] = rows
    return found


def test_own_traffic_run_trains_each_k_on_its_labels_and_never_on_the_test_half(monkeypatch):
    """run() trains once per K (a K beyond the other half is capped, and the model of an
    equal training set is reused), on rows that never include the fold's test prompts; and
    the own labels are what lets the classifier learn the source's own pattern."""
    from xrouter_core.quality import evaluate, train_builtin

    data = synthetic_sources()
    trained: list[list] = []
    real_train = train_builtin.train

    def recording(rows, *args, **kwargs):
        trained.append(list(rows))
        return real_train(rows, *args, **kwargs)

    monkeypatch.setattr(train_builtin, "train", recording)
    report = evaluate.run(
        ["builtin", "random", "oracle"],
        protocol="own-traffic",
        chosen_sources=["own"],
        resamples=20,
        rules=False,
        log=lambda _line: None,
        own_labels=[500, 0, 30, 60, 30],
        data=data,
    )
    assert report["own_labels"] == [0, 30, 60, 500]
    used = [run["sources"]["own"]["own_labels_used"] for run in report["by_labels"]]
    assert used == [0, 30, 60, 60]
    assert [run["sources"]["own"]["own_labels_available"] for run in report["by_labels"]] == [
        60
    ] * 4
    # 60 and 500 (capped at 60) train on the same rows: one model for both.
    assert [sum(r.source == evaluate.TRAFFIC for r in rows) for rows in trained] == [0, 30, 60]
    test, rest = evaluate.own_traffic_halves(data["own"], "own")
    for rows in trained:
        assert not {r.prompt for r in rows} & {r.prompt for r in test}
        assert {r.source for r in rows} <= {"b", "c", evaluate.TRAFFIC}
    assert [r.prompt for r in trained[-1] if r.source == evaluate.TRAFFIC] == [
        r.prompt for r in rest
    ]
    apgr = [run["sources"]["own"]["routers"]["builtin"]["apgr"] for run in report["by_labels"]]
    assert apgr[2] > apgr[0] + 0.2 and apgr[3] == apgr[2]
    # random and oracle score the same test half under every K.
    for router in ("random", "oracle"):
        assert len({run["mean_apgr"][router] for run in report["by_labels"]}) == 1
    # The lead over K = 0 is paired: K = 0 against itself has no spread.
    assert report["by_labels"][0]["mean_apgr_minus_first_ci95"]["builtin"] == [0.0, 0.0]
    low, high = report["by_labels"][2]["mean_apgr_minus_first_ci95"]["builtin"]
    assert low <= apgr[2] - apgr[0] <= high
    assert report["mean_apgr"] == report["by_labels"][-1]["mean_apgr"]
    table = evaluate.markdown(report)
    assert "| APGR builtin K=0 | APGR builtin K=30 | APGR builtin K=60 | APGR builtin K=500 |" in (
        table
    )
    assert " (60) |" in table and "| mean − K=0, 95 % interval |" in table


def test_evaluate_cli_own_traffic(tmp_path):
    report_path, table_path = tmp_path / "r.json", tmp_path / "r.md"
    done = run_module(
        "xrouter_core.quality.evaluate",
        "--protocol", "own-traffic",
        "--own-labels", "0", "1000",
        "--source", "llmrouter_code",
        "--sample", "40",
        "--bootstrap", "20",
        "--json", str(report_path),
        "--markdown", str(table_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(report_path.read_text())
    assert report["protocol"] == "own-traffic" and report["own_labels"] == [0, 1000]
    runs = [run["sources"]["llmrouter_code"] for run in report["by_labels"]]
    assert [entry["own_labels_used"] for entry in runs] == [0, 82]
    assert runs[0]["train_sources"] == sorted(set(runs[1]["train_sources"]) - {"traffic"})
    assert runs[1]["train_prompts"] == runs[0]["train_prompts"] + 82
    assert all(entry["prompts"] == 40 for entry in runs)
    table = table_path.read_text()
    assert done.stdout == table + "\n"
    assert "| llmrouter_code | 40 | 82 | " in table and " (82) | " in table
    assert "| mean − K=0, 95 % interval |" in table


def test_evaluate_rejects_own_labels_outside_own_traffic():
    done = run_module("xrouter_core.quality.evaluate", "--own-labels", "100")
    assert done.returncode == 2 and "--protocol own-traffic" in done.stderr
    done = run_module(
        "xrouter_core.quality.evaluate", "--protocol", "own-traffic", "--own-labels", "-1"
    )
    assert done.returncode == 2 and ">= 0" in done.stderr


def test_evaluate_llm_and_hybrid_against_an_endpoint(upstreams, tmp_path):
    """The LLM router asks the endpoint per prompt; hybrid replaces failures by built-in tiers."""
    upstreams.classifier.digit = "2"
    report_path = tmp_path / "r.json"
    done = run_module(
        "xrouter_core.quality.evaluate",
        "--mode", "llm", "hybrid",
        "--source", "arena_hard_v1",
        "--sample", "15",
        "--bootstrap", "0",
        "--llm-url", upstreams.classifier.url + "/v1",
        "--llm-model", "tiny",
        "--json", str(report_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    routers = json.loads(report_path.read_text())["sources"]["arena_hard_v1"]["routers"]
    assert routers["llm"]["tier_counts"] == {"0": 0, "1": 0, "2": 15}
    assert routers["llm"]["llm_failures"] == 0
    assert len(upstreams.classifier.requests) == 15  # hybrid reuses the answers
    assert upstreams.classifier.requests[0].json["model"] == "tiny"

    from fakes import Reply

    upstreams.classifier.failure = Reply(status=500, body={"error": {"message": "down"}})
    done = run_module(
        "xrouter_core.quality.evaluate",
        "--router", "llm",
        "--source", "arena_hard_v1",
        "--sample", "15",
        "--bootstrap", "0",
        "--llm-base-url", upstreams.classifier.url,
        "--json", str(report_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    routers = json.loads(report_path.read_text())["sources"]["arena_hard_v1"]["routers"]
    assert routers["llm"]["llm_failures"] == 15
    assert routers["llm"]["tier_counts"]["2"] == 15  # llm mode: failures go to frontier


def test_evaluate_rejects_llm_without_endpoint():
    done = run_module("xrouter_core.quality.evaluate", "--router", "llm")
    assert done.returncode == 2 and "--llm-url" in done.stderr


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
    topics = ["the team lunch", "the release", "a budget question", "the offsite", "a bug report"]
    chat = [
        f"Write a friendly note to colleague number {i} about {topics[i % 5]}"
        + " and the plan for next week" * (i % 4)
        + "."
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
    # No target for cheap: the low threshold stays the current one (the built-in's 0.24).
    assert choose_thresholds(scores, 0.0) == (0.24, 1.0)
    assert choose_thresholds(scores, 0.0, current=(0.1, 0.5)) == (0.1, 1.0)


def test_target_quality_picks_the_highest_threshold_that_keeps_it():
    from xrouter_core.quality.sources import Row

    # One source: strong right on all 4, weak on the two lowest-scored.
    rows = [Row("s", "t", f"p{i}", 1.0, float(i < 2)) for i in range(4)]
    scored = {"s": ([0.1, 0.2, 0.7, 0.9], rows)}
    assert threshold_for_quality(1.0, scored) == (0.7, 1.0, 0.5)
    assert threshold_for_quality(0.75, scored) == (0.9, 0.75, 0.25)
    assert threshold_for_quality(0.5, scored)[0] == 1.0  # weak alone keeps half


def test_calibrate_target_quality_prints_thresholds():
    done = run_module(
        "xrouter_core.quality.calibrate", "--target-quality", "0.9", "--source", "arena_hard_v1"
    )
    assert done.returncode == 0, done.stderr
    line = re.search(r"^CLASSIFIER_THRESHOLDS=([\d.]+),([\d.]+)$", done.stdout, re.M)
    assert line and 0 <= float(line.group(1)) <= float(line.group(2)) <= 1
    kept = re.search(r"score >= [\d.]+: ([\d.]+)% of the strong", done.stdout)
    assert kept and float(kept.group(1)) >= 90.0


def test_evaluate_embedding_router_embeds_each_text_once_and_leaves_the_source_out(tmp_path):
    """The embedding router asks the engine for the bank (less the held-out source) and the
    test prompts, once each; a second run reads them from --embedding-cache. The second
    run is of the embedding router alone: it needs the same vectors, without training the
    built-in classifier's fold again (12 s)."""
    import math

    from fakes import FakeEmbeddingEngine

    from xrouter_core.quality import sources
    from xrouter_core.quality.embedding import BATCH, build_bank

    engine = FakeEmbeddingEngine()
    cache = tmp_path / "vectors.npz"
    report_path = tmp_path / "r.json"
    common = (
        "--source", "llmrouter_code",
        "--sample", "30",
        "--bootstrap", "0",
        "--embedding-url", engine.url + "/v1",
        "--embedding-model", "all-minilm",
        "--embedding-cache", str(cache),
        "--json", str(report_path),
    )  # fmt: skip
    routers = ("--router", "embedding", "builtin")
    try:
        done = run_module("xrouter_core.quality.evaluate", *routers, *common)
        assert done.returncode == 0, done.stderr
        bank = build_bank(sources.load_all()).without("llmrouter_code")
        sent = engine.inputs()
        assert len(sent) == len(set(sent)) == len(set(bank.texts)) + 30
        assert len(engine.requests) == math.ceil(len(sent) / BATCH)
        report = json.loads(report_path.read_text())
        entry = report["sources"]["llmrouter_code"]
        assert set(entry["routers"]) == {"embedding", "builtin"}
        assert -1 < entry["routers"]["embedding"]["apgr"] < 2
        assert report["embedding"]["model"] == "all-minilm"
        engine.requests.clear()
        again = run_module("xrouter_core.quality.evaluate", "--router", "embedding", *common)
        assert again.returncode == 0, again.stderr
        assert engine.requests == []  # every vector came from the cache
        cached = json.loads(report_path.read_text())["sources"]["llmrouter_code"]["routers"]
        assert set(cached) == {"embedding"}
        assert cached["embedding"]["points"] == entry["routers"]["embedding"]["points"]
    finally:
        engine.close()


def test_evaluate_rejects_embedding_without_endpoint():
    done = run_module("xrouter_core.quality.evaluate", "--router", "embedding")
    assert done.returncode == 2 and "--embedding-url" in done.stderr


def test_a_png_chart_is_rendered_by_headless_chromium_without_kaleido(tmp_path):
    """--chart x.png: plotly's exporter needs kaleido (which fetches a browser of its own);
    without it the SVG is written and a headless Chromium renders it to the PNG."""
    import shutil

    from xrouter_core.quality.evaluate import BROWSERS, chart

    if not any(shutil.which(name) for name in BROWSERS):
        pytest.skip("needs chromium (Debian package chromium) to render the PNG")
    points = [{"strong_share": s / 10, "pgr": s / 10, "quality": 0.5} for s in range(11)]
    report = {
        "protocol": "loso",
        "mean_apgr": {"builtin": 0.5},
        "sources": {
            "one": {"measurable": True, "routers": {"builtin": {"apgr": 0.5, "points": points}}}
        },
    }
    written = chart(report, tmp_path / "pgr.png")
    assert written == tmp_path / "pgr.png"
    assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "pgr.svg").read_text().startswith("<svg")
