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
    oracle, needed_55, needed_65, builtin_auc, builtin_apgr = (
        float(cell.strip(" |")) for cell in row[3:8]
    )
    assert oracle > 0.65 and 1.0 > needed_65 > needed_55 > 0.5  # a higher target, a higher AUC
    assert 0.3 < builtin_auc < 0.7 and 0.3 < builtin_apgr < 0.7


def test_seeds_must_be_positive():
    with pytest.raises(SystemExit):
        ceiling.main(["--seeds", "0"])
