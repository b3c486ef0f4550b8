"""The ranking-ceiling tool: the noisy oracle's curve, the AUC read off it, and its report."""

import pytest

from xrouter_core.quality import ceiling


def _pairs(count: int, gain_every: int) -> tuple[list[float], list[float]]:
    """`count` prompts where the strong model alone is right on every `gain_every`-th."""
    weak = [0.0 if i % gain_every == 0 else 1.0 for i in range(count)]
    return weak, [1.0] * count


def test_less_noise_ranks_better_and_reaches_a_higher_apgr():
    weak, strong = _pairs(400, 4)
    curve = ceiling.noisy_oracle_curve(weak, strong, noise=(0.02, 0.5, 1000.0), seeds=3)
    sharp, middle, coin = curve
    assert sharp.auc > 0.99 and sharp.apgr > 0.85  # PGR 1 once the 25 % that gain are sent
    assert 0.5 < middle.auc < sharp.auc and coin.apgr < middle.apgr < sharp.apgr
    assert abs(coin.auc - 0.5) < 0.06 and abs(coin.apgr - 0.5) < 0.08
    assert curve == ceiling.noisy_oracle_curve(weak, strong, noise=(0.02, 0.5, 1000.0), seeds=3)


def test_the_auc_needed_is_read_between_the_points_and_none_when_out_of_reach():
    curve = [
        ceiling.CurvePoint(1000.0, 0.5, 0.5),
        ceiling.CurvePoint(0.5, 0.7, 0.6),
        ceiling.CurvePoint(0.02, 1.0, 0.9),
    ]
    assert ceiling.auc_needed(curve, 0.55) == pytest.approx(0.6)
    assert ceiling.auc_needed(curve, 0.75) == pytest.approx(0.85)
    assert ceiling.auc_needed(curve, 0.4) == 0.5
    assert ceiling.auc_needed(curve, 0.95) is None


def test_a_source_where_the_strong_model_always_wins_has_no_auc():
    with pytest.raises(ValueError, match="both sides"):
        ceiling.noisy_oracle_curve([0.0] * 10, [1.0] * 10, seeds=1)


def test_the_report_stands_the_built_in_classifier_beside_what_each_target_needs(capsys):
    assert ceiling.main(["--source", "llmrouter_code", "--seeds", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| source | prompts | strong > weak | oracle APGR | AUC for APGR 0.55")
    row = out[2].split(" | ")
    assert row[0] == "| llmrouter_code" and row[1] == "164"
    oracle, needed_55, needed_65 = (float(cell) for cell in row[3:6])
    cross, builtin_auc, builtin_apgr = row[6], float(row[7]), float(row[8].strip(" |"))
    assert oracle > 0.65 and 1.0 > needed_65 > needed_55 > 0.5  # a higher target, a higher AUC
    # LLMRouter grades 9 models: the 7 besides the pair split by their mean score.
    apgr, rest = cross.split(" (")
    auc, split = rest.rstrip(")").split("; ")
    strong_like, weak_like = (int(n) for n in split.split("/"))
    assert strong_like + weak_like == 7 and weak_like >= 1
    assert 0.5 < float(apgr) < oracle and 0.5 < float(auc) <= 1.0
    assert 0.3 < builtin_auc < 0.7 and 0.3 < builtin_apgr < 0.7


def test_seeds_must_be_positive():
    with pytest.raises(SystemExit):
        ceiling.main(["--seeds", "0"])


def _graded(difficulty: list[float], models: dict[str, float]) -> list[dict[str, float]]:
    """Each model right on a prompt when its skill passes the prompt's difficulty."""
    return [{name: float(skill > d) for name, skill in models.items()} for d in difficulty]


def test_the_cross_model_oracle_ranks_by_the_other_models_and_never_reads_the_pair():
    difficulty = [i / 100 for i in range(100)]
    # Peers: two strong ones (skill 0.9, 0.95), two weak ones (0.3, 0.4).
    grades = _graded(difficulty, {"big1": 0.9, "big2": 0.95, "small1": 0.3, "small2": 0.4})
    strong = [float(d < 0.8) for d in difficulty]
    # The weak model's own outcome is noise the peers cannot see: it fails a few easy ones.
    weak = [float(d < 0.35 and i % 10 != 3) for i, d in enumerate(difficulty)]
    for graded, s, w in zip(grades, strong, weak, strict=True):
        graded["the-strong"], graded["the-weak"] = s, w  # the pair, as the files list it
    found = ceiling.cross_model_scores(weak, strong, grades)
    assert found is not None and (found.strong_like, found.weak_like) == (2, 2)
    # Both peers like the weak one fail from 0.4 up, the strong-like ones solve up to 0.9.
    assert found.scores[10] == 0.0 and found.scores[50] == 1.0 and found.scores[95] == 0.0
    assert found.scores[35] == 0.5  # one of the two weak-like peers fails it
    assert found.scores[3] == 0.0  # the weak model's own slip is not seen


def test_the_cross_model_oracle_needs_a_peer_like_the_weak_model_and_enough_coverage():
    weak, strong = [0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]
    only_pair = [{"s": s, "w": w} for s, w in zip(strong, weak, strict=True)]
    assert ceiling.cross_model_scores(weak, strong, only_pair) is None
    # A peer graded on too few prompts does not count.
    sparse = [dict(g) for g in only_pair]
    sparse[0]["peer"] = 0.0
    assert ceiling.cross_model_scores(weak, strong, sparse) is None
    assert ceiling.cross_model_scores(weak, strong, [None] * 4) is None


def test_a_preference_between_the_pair_has_no_strong_side():
    # alpaca_eval: strong = 1 - weak, every model judged against the strong baseline.
    weak = [0.1, 0.2, 0.9, 0.0]
    strong = [1 - w for w in weak]
    grades = [{"m1": min(w + 0.1, 1.0), "m2": w / 2, "champion": 0.95} for w in weak]
    found = ceiling.cross_model_scores(weak, strong, grades)
    assert found is not None and found.strong_like == 0 and found.weak_like == 2
    assert found.scores == pytest.approx([0.875, 0.8, 0.275, 0.95])
