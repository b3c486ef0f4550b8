"""Train the built-in classifier (a logistic regression) on every redistributable routing source.

    python -m xrouter_core.quality.train_builtin              # writes xrouter_core/routing/builtin_weights.json
    python -m xrouter_core.quality.train_builtin --holdout zeroeval_crux   # train without one source, write nothing

Data: `quality.sources` (deduplicated; alpaca_eval is never read, it is test only).
Label: the gain of sending the prompt to the strong model, max(strong - weak, 0) in
[0, 1] (a tie, or a prompt the weak model does better, is 0): the model's output is
P(strong needed). Features: `builtin.analyse`. Only features seen in at least
`min_count` training prompts get a weight.

The training, meant to carry across sources:
  - each source weighs the same in total (`balance` = 1; 0 would weigh each prompt the same),
  - each source has its own intercept, so the weights learn what makes a prompt harder
    within a source rather than which source it came from; the bundled bias is the mean
    of the intercepts,
  - L2 regularisation, AdaGrad steps, a fixed number of passes.
Nothing is random: every pass visits the prompts in the order of a salted hash of their
text, so the same data give the same file on every machine (tests/test_builtin.py checks it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from xrouter_core.quality import sources
from xrouter_core.quality.progress import progress
from xrouter_core.quality.routellm_data import routed_text
from xrouter_core.routing.builtin import WEIGHTS_PATH, Weights, analyse


@dataclass(frozen=True)
class TrainConfig:
    min_count: int = 5  # a feature must occur in this many training prompts
    l2: float = 1e-4  # per step, on the weights the step touches
    passes: int = 6
    rate: float = 0.2  # AdaGrad's base step
    balance: float = 1.0  # 1: every source weighs the same; 0: every prompt does
    digits: int = 4  # rounding of the stored weights
    # Word weights: True learns one per frequent word. Off by default: across sources they
    # ranked worse than the hand features alone (docs/classifiers.md, "How good is it?").
    words: bool = False
    # "pair": max(strong - weak, 0); "population": the strong model's mean margin over
    # every graded model of the source (less noisy where many models were graded).
    label: str = "pair"


def label(row: sources.Row, kind: str = "pair") -> float:
    if kind == "population" and row.population_gain is not None:
        return min(max(row.population_gain, 0.0), 1.0)
    return min(max(row.gain, 0.0), 1.0)


def _order(key: str, salt: str) -> bytes:
    return hashlib.sha256(f"{salt}:{key}".encode()).digest()[:8]


_FEATURES: dict[str, dict[str, float]] = {}


def features_of(prompt: str) -> dict[str, float]:
    """The classifier's features of the prompt as the router would see it (memoised)."""
    found = _FEATURES.get(prompt)
    if found is None:
        found = dict(analyse(routed_text(prompt)).features)
        _FEATURES[prompt] = found
    return found


def train(
    rows: Sequence[sources.Row],
    config: TrainConfig = TrainConfig(),
    passes: Callable[[Iterable[int]], Iterable[int]] = iter,
) -> Weights:
    """Fit the logistic regression on `rows` (any sources; test-only ones are refused)."""
    if any(row.source in sources.TEST_ONLY for row in rows):
        raise ValueError("test-only sources (alpaca_eval) are never trained on")
    vectors = [features_of(row.prompt) for row in rows]
    seen: Counter[str] = Counter()
    for vector in vectors:
        seen.update(vector.keys())
    vocabulary = sorted(
        name
        for name, count in seen.items()
        if count >= config.min_count and (config.words or not name.startswith("w:"))
    )
    index = {name: i for i, name in enumerate(vocabulary)}
    sparse = [
        [(index[name], value) for name, value in sorted(vector.items()) if name in index]
        for vector in vectors
    ]
    per_source = Counter(row.source for row in rows)
    names = sorted(per_source)
    source_index = {name: i for i, name in enumerate(names)}
    mean_size = len(rows) / len(names)
    sample_weight = {
        name: (mean_size / count) ** config.balance for name, count in per_source.items()
    }
    # Start each intercept at its source's log-odds, so the weights need not learn them.
    intercepts = []
    for name in names:
        mean = sum(label(r, config.label) for r in rows if r.source == name) / per_source[name]
        mean = min(max(mean, 0.01), 0.99)
        intercepts.append(math.log(mean / (1 - mean)))
    weights = [0.0] * len(vocabulary)
    squares = [1e-8] * len(vocabulary)
    bias_squares = [1e-8] * len(names)
    labels = [label(row, config.label) for row in rows]
    keys = [f"{row.source}\x00{row.prompt}" for row in rows]
    l2, rate = config.l2, config.rate
    for step in passes(range(config.passes)):
        order = sorted(range(len(rows)), key=lambda i, s=step: _order(keys[i], f"pass{s}"))
        for i in order:
            s = source_index[rows[i].source]
            total = intercepts[s]
            for j, value in sparse[i]:
                total += weights[j] * value
            predicted = 1.0 / (1.0 + math.exp(-max(min(total, 30.0), -30.0)))
            error = (predicted - labels[i]) * sample_weight[rows[i].source]
            bias_squares[s] += error * error
            intercepts[s] -= rate * error / math.sqrt(bias_squares[s])
            for j, value in sparse[i]:
                gradient = error * value + l2 * weights[j]
                squares[j] += gradient * gradient
                weights[j] -= rate * gradient / math.sqrt(squares[j])
    digits = config.digits
    table = {
        name: round(w, digits)
        for name, w in zip(vocabulary, weights, strict=True)
        if round(w, digits)
    }
    return Weights(bias=round(sum(intercepts) / len(intercepts), digits), weights=table)


def build(
    rows: Sequence[sources.Row],
    config: TrainConfig,
    passes: Callable[[Iterable[int]], Iterable[int]] = iter,
) -> dict:
    """The JSON document builtin.Weights reads."""
    weights = train(rows, config, passes)
    return {
        "meta": {
            "made_by": "python -m xrouter_core.quality.train_builtin",
            "model": "logistic regression, P(strong model better than weak)",
            "data": "datasets/: every source of quality.sources except the test-only "
            "alpaca_eval, deduplicated by normalised prompt",
            "prompts": sources.counts(rows),
            "config": asdict(config),
        },
        "bias": weights.bias,
        "weights": dict(sorted(weights.weights.items())),
    }


def top_features(weights: Weights, count: int = 15) -> dict[str, list]:
    ordered = sorted(weights.weights.items(), key=lambda item: item[1])
    return {"harder": ordered[::-1][:count], "easier": ordered[:count]}


def main(argv: list[str] | None = None) -> int:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m xrouter_core.quality.train_builtin",
        description=(__doc__ or "").split("\n")[0],
    )
    parser.add_argument("--holdout", default=None, help="leave this source out, write nothing")
    parser.add_argument("--min-count", type=int, default=defaults.min_count)
    parser.add_argument("--l2", type=float, default=defaults.l2)
    parser.add_argument("--passes", type=int, default=defaults.passes)
    parser.add_argument("--rate", type=float, default=defaults.rate)
    parser.add_argument("--balance", type=float, default=defaults.balance)
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    args = parser.parse_args(argv)
    config = TrainConfig(
        min_count=args.min_count,
        l2=args.l2,
        passes=args.passes,
        rate=args.rate,
        balance=args.balance,
    )
    everything = sources.load_all()
    if args.holdout:
        rows, _ = sources.loso_split(everything, args.holdout)
    else:
        rows = sources.all_training_rows(everything)
    print(f"training prompts: {sources.counts(rows)}; {config}", file=sys.stderr)
    with progress("Training the built-in classifier") as bar:
        doc = build(rows, config, lambda steps: bar(steps, label="passes", total=config.passes))
    if args.holdout:
        print(json.dumps(top_features(Weights.from_doc(doc)), indent=1))
        return 0
    args.out.write_text(json.dumps(doc, separators=(",", ":")) + "\n", encoding="utf-8")
    print(
        f"wrote {args.out}: {len(doc['weights'])} weights, {args.out.stat().st_size} bytes",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
