"""Train the built-in classifier's table from the calibration half of the RouteLLM data.

    python -m xrouter_core.quality.train_builtin              # writes xrouter_core/routing/builtin_weights.json
    python -m xrouter_core.quality.train_builtin --cv 4       # cross-validated APGR, writes nothing

What it learns: the gain of sending a prompt to the strong model, i.e. the strong
model's correctness minus the weak model's (+1, 0 or -1); routing the prompts of highest
expected gain first is what maximizes quality for a given share of strong calls
(RouteLLM's metrics reward exactly that ordering). For each style of prompt (see
`builtin.analyse`) and each token seen in at least `min_count` training prompts, the
table holds the mean gain of the prompts containing it, pulled toward the style's
mean by `smoothing` pseudo-prompts, minus that mean. (A linear model per word and a
regression over the shape were tried first and ranked worse in cross-validation.)

Prompts are read as the router's classifier sees them (`routellm_data.routed_text`).
Only prompts of the calibration split (`routellm_data.split_of`, a hash of the prompt)
are read; the held-out split is left for `xrouter_core.quality.evaluate`. Nothing is random
(folds come from salted hashes of the prompts), so the same data gives the same file
on every machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from xrouter_core.quality import routing_metrics
from xrouter_core.quality.routellm_data import (
    BENCHMARKS,
    CALIBRATION_PERCENT,
    Example,
    load_benchmark,
    routed_text,
)
from xrouter_core.routing.builtin import WEIGHTS_PATH, Analysis, Weights, analyse

REFERENCE_POINTS = 201
# Candidate gains per doubling of the prompt's length; one is chosen per style.
LENGTH_SLOPES = (0.0, 0.005, 0.01, 0.02, 0.04)


@dataclass(frozen=True)
class TrainConfig:
    # A token must occur in this many training prompts of its style to get an entry.
    min_count: int = 3
    # Pseudo-prompts at the style's mean gain added to every token's average.
    smoothing: float = 10.0
    # The reference distribution uses out-of-fold predictions from this many folds.
    folds: int = 5


def gain(example: Example) -> float:
    return float(example.strong_correct) - float(example.weak_correct)


def fold_of(prompt: str, folds: int, salt: bytes = b"cv:") -> int:
    """A fold from a salted hash of the prompt, so it is unrelated to the split."""
    digest = hashlib.sha256(salt + prompt.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % folds


def fit(examples: Sequence[Example], analyses: Sequence[Analysis], config: TrainConfig) -> Weights:
    """Per style: mean gain, and each frequent token's smoothed mean gain relative to it."""
    base: dict[str, float] = {}
    tables: dict[str, dict[str, float]] = {}
    for style in sorted({analysis.style for analysis in analyses}):
        chosen = [i for i, analysis in enumerate(analyses) if analysis.style == style]
        mean = sum(gain(examples[i]) for i in chosen) / len(chosen)
        seen: Counter[str] = Counter()
        total: Counter[str] = Counter()
        for i in chosen:
            value = gain(examples[i])
            for token in analyses[i].tokens:
                seen[token] += 1
                total[token] += value
        a = config.smoothing
        base[style] = mean
        tables[style] = {
            token: (total[token] + a * mean) / (count + a) - mean
            for token, count in sorted(seen.items())
            if count >= config.min_count
        }
    return Weights(base=base, tables=tables, length_slope={}, reference={})


def out_of_fold_gains(
    examples: Sequence[Example], analyses: Sequence[Analysis], config: TrainConfig
) -> list[float]:
    """Each prompt's expected gain from a table that never saw it."""
    folds = [fold_of(example.prompt, config.folds, salt=b"reference:") for example in examples]
    gains = [0.0] * len(examples)
    for fold in range(config.folds):
        inside = [i for i, f in enumerate(folds) if f != fold]
        weights = fit([examples[i] for i in inside], [analyses[i] for i in inside], config)
        for i, f in enumerate(folds):
            if f == fold:
                gains[i] = weights.expected_gain(analyses[i])
    return gains


def choose_length_slopes(
    examples: Sequence[Example], analyses: Sequence[Analysis], gains: Sequence[float]
) -> dict[str, float]:
    """Per style, the slope of LENGTH_SLOPES whose out-of-fold ranking has the best APGR."""
    slopes: dict[str, float] = {}
    for style in sorted({analysis.style for analysis in analyses}):
        chosen = [i for i, analysis in enumerate(analyses) if analysis.style == style]
        weak = [examples[i].weak_correct for i in chosen]
        strong = [examples[i].strong_correct for i in chosen]

        def apgr_with(slope: float, chosen: list[int] = chosen, weak=weak, strong=strong) -> float:
            scores = [gains[i] + slope * math.log2(analyses[i].chars + 1) for i in chosen]
            return routing_metrics.apgr(routing_metrics.sweep(scores, weak, strong))

        slopes[style] = max(LENGTH_SLOPES, key=apgr_with)
    return slopes


def apgr_by_benchmark(
    weights: Weights, examples: Sequence[Example], analyses: Sequence[Analysis]
) -> dict[str, float]:
    result: dict[str, float] = {}
    for benchmark in BENCHMARKS:
        chosen = [i for i, example in enumerate(examples) if example.benchmark == benchmark]
        if chosen:
            points = routing_metrics.sweep(
                [weights.expected_gain(analyses[i]) for i in chosen],
                [examples[i].weak_correct for i in chosen],
                [examples[i].strong_correct for i in chosen],
            )
            result[benchmark] = routing_metrics.apgr(points)
    return result


def cross_validate(
    examples: Sequence[Example], config: TrainConfig, folds: int
) -> dict[str, float]:
    """Mean APGR per benchmark over K folds of the calibration split (for choosing settings)."""
    analyses = [analyse(routed_text(example.prompt)) for example in examples]
    totals: Counter[str] = Counter()
    for fold in range(folds):
        inside = [i for i, e in enumerate(examples) if fold_of(e.prompt, folds) != fold]
        outside = [i for i, e in enumerate(examples) if fold_of(e.prompt, folds) == fold]
        weights = fit([examples[i] for i in inside], [analyses[i] for i in inside], config)
        scores = apgr_by_benchmark(
            weights, [examples[i] for i in outside], [analyses[i] for i in outside]
        )
        for benchmark, value in scores.items():
            totals[benchmark] += value / folds
    return dict(totals)


def build(examples: Sequence[Example], config: TrainConfig) -> dict:
    """The JSON document builtin.Weights reads, rounded to keep it small."""
    analyses = [analyse(routed_text(example.prompt)) for example in examples]
    weights = fit(examples, analyses, config)
    gains = out_of_fold_gains(examples, analyses, config)
    slopes = choose_length_slopes(examples, analyses, gains)
    gains = [
        g + slopes[a.style] * math.log2(a.chars + 1) for g, a in zip(gains, analyses, strict=True)
    ]
    reference: dict[str, list[float]] = {}
    for style in weights.base:
        ordered = sorted(g for g, a in zip(gains, analyses, strict=True) if a.style == style)
        reference[style] = [
            round(routing_metrics.quantile(ordered, i / (REFERENCE_POINTS - 1)), 6)
            for i in range(REFERENCE_POINTS)
        ]
    return {
        "meta": {
            "made_by": "python -m xrouter_core.quality.train_builtin",
            "data": "RouteLLM MMLU + GSM8K, calibration split only "
            f"(sha256(prompt) % 100 < {CALIBRATION_PERCENT}), contaminated prompts excluded",
            "prompts": dict(sorted(Counter(e.benchmark for e in examples).items())),
            "config": asdict(config),
        },
        "base": {style: round(value, 6) for style, value in weights.base.items()},
        "tables": {
            style: {token: round(value, 4) for token, value in table.items() if round(value, 4)}
            for style, table in weights.tables.items()
        },
        "length_slope": slopes,
        "reference": reference,
    }


def main(argv: list[str] | None = None) -> int:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m xrouter_core.quality.train_builtin",
        description=(__doc__ or "").split("\n")[0],
    )
    parser.add_argument(
        "--cv", type=int, default=0, help="report K-fold cross-validated APGR, write nothing"
    )
    parser.add_argument("--min-count", type=int, default=defaults.min_count)
    parser.add_argument("--smoothing", type=float, default=defaults.smoothing)
    parser.add_argument("--folds", type=int, default=defaults.folds)
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    args = parser.parse_args(argv)
    config = TrainConfig(min_count=args.min_count, smoothing=args.smoothing, folds=args.folds)
    examples = [e for benchmark in BENCHMARKS for e in load_benchmark(benchmark, "calibration")]
    print(
        f"calibration prompts: {dict(Counter(e.benchmark for e in examples))}; {config}",
        file=sys.stderr,
    )
    if args.cv:
        print(
            json.dumps(
                {"config": asdict(config), "cv_apgr": cross_validate(examples, config, args.cv)}
            )
        )
        return 0
    doc = build(examples, config)
    args.out.write_text(json.dumps(doc, separators=(",", ":")) + "\n", encoding="utf-8")
    words = sum(map(len, doc["tables"].values()))
    print(f"wrote {args.out}: {words} tokens, {args.out.stat().st_size} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
