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
Options meant to keep only what holds in every source (off by default, see
docs/classifiers.md, "How good is it?"):
  - `invariance="sign"`: before training, each feature's direction is measured in each
    training source on its own (the sign of its correlation with the label, counted only
    where it is credible: |r|·sqrt(n) >= `sign_z`); a feature is kept only when at least
    `min_sources` sources vote and a share `agreement` of them agree, and its weight is then
    held to that sign (projected gradient: a step that crosses zero stops at zero);
  - `dro` > 0: group-DRO, after each pass every source's weight is multiplied by
    exp(dro * its mean log-loss) (then renormalised), so the worst-fitted source counts most.
  - `intercepts="shared"`: one intercept for every source instead of one each, so the
    weights may also learn which kinds of prompt need the strong model more often.
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
    # "off", or "sign": keep only features whose per-source direction agrees, and hold each
    # weight to that direction (module docstring).
    invariance: str = "off"
    agreement: float = 1.0  # share of the voting sources that must agree on a direction
    sign_z: float = 1.0  # a source votes when |correlation| * sqrt(prompts) >= this
    min_sources: int = 2  # a feature needs this many voting sources
    dro: float = 0.0  # group-DRO step on the per-source weights (0: off)
    # "source": one intercept per source, so the weights learn what is harder within a
    # source; "shared": one intercept for all, so the weights may also learn which kinds of
    # prompt (maths, code, chat) need the strong model more often.
    intercepts: str = "source"

    def __post_init__(self) -> None:
        if self.invariance not in INVARIANCE:
            raise ValueError(f"invariance must be one of {', '.join(INVARIANCE)}")
        if not 0.5 <= self.agreement <= 1.0:
            raise ValueError("agreement must be in [0.5, 1]")
        if self.dro < 0:
            raise ValueError("dro must be >= 0")
        if self.intercepts not in INTERCEPTS:
            raise ValueError(f"intercepts must be one of {', '.join(INTERCEPTS)}")


INVARIANCE = ("off", "sign")
INTERCEPTS = ("source", "shared")


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


def source_directions(
    vectors: Sequence[dict[str, float]],
    labels: Sequence[float],
    groups: Sequence[str],
    names: Iterable[str],
    min_count: int,
    sign_z: float,
) -> dict[str, dict[str, int]]:
    """Each feature's direction in each source, measured on that source alone.

    +1 / -1: the sign of the Pearson correlation between the feature's value (0 where the
    prompt lacks it) and the label, when |r| * sqrt(n) >= sign_z; 0 (no vote) when it is
    weaker, or when the feature does not vary there (fewer than `min_count` prompts with it,
    or with it absent while its value is constant)."""
    wanted = set(names)
    by_source: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        by_source.setdefault(group, []).append(i)
    found: dict[str, dict[str, int]] = {name: {} for name in wanted}
    for group, members in sorted(by_source.items()):
        n = len(members)
        mean_y = sum(labels[i] for i in members) / n
        var_y = sum((labels[i] - mean_y) ** 2 for i in members)
        sums: dict[str, list[float]] = {}  # count, sum x, sum x^2, sum x*y
        for i in members:
            y = labels[i]
            for name, x in vectors[i].items():
                if name in wanted:
                    acc = sums.setdefault(name, [0.0, 0.0, 0.0, 0.0])
                    acc[0] += 1
                    acc[1] += x
                    acc[2] += x * x
                    acc[3] += x * y
        for name in wanted:
            count, sx, sxx, sxy = sums.get(name, (0.0, 0.0, 0.0, 0.0))
            var_x = sxx - sx * sx / n
            varies = count >= min_count and (n - count >= min_count or var_x > 1e-12 * n)
            if not varies or var_x <= 0 or var_y <= 0:
                found[name][group] = 0
                continue
            r = (sxy - sx * mean_y) / math.sqrt(var_x * var_y)
            found[name][group] = (r > 0) - (r < 0) if abs(r) * math.sqrt(n) >= sign_z else 0
    return found


def agreed_signs(
    directions: dict[str, dict[str, int]], agreement: float, min_sources: int
) -> dict[str, int]:
    """The features whose voting sources agree (a share >= agreement), with that sign."""
    kept: dict[str, int] = {}
    for name, votes in directions.items():
        cast = [v for v in votes.values() if v]
        if len(cast) < max(min_sources, 1):
            continue
        up = sum(v > 0 for v in cast)
        majority = 1 if up * 2 > len(cast) else -1 if up * 2 < len(cast) else 0
        if majority and max(up, len(cast) - up) >= agreement * len(cast):
            kept[name] = majority
    return kept


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
    labels = [label(row, config.label) for row in rows]
    signs: list[int] = []
    if config.invariance == "sign":
        directions = source_directions(
            vectors,
            labels,
            [row.source for row in rows],
            vocabulary,
            config.min_count,
            config.sign_z,
        )
        agreed = agreed_signs(directions, config.agreement, config.min_sources)
        vocabulary = [name for name in vocabulary if name in agreed]
        signs = [agreed[name] for name in vocabulary]
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
    keys = [f"{row.source}\x00{row.prompt}" for row in rows]
    l2, rate = config.l2, config.rate
    groups = [source_index[row.source] for row in rows]
    # With a shared intercept every row updates intercept 0 (started at the mean log-odds).
    biases = [0] * len(rows) if config.intercepts == "shared" else groups
    if config.intercepts == "shared":
        intercepts = [sum(intercepts) / len(intercepts)] + intercepts[1:]
    # Group-DRO's weight of each source (all 1 when it is off).
    emphasis = [1.0] * len(names)
    for step in passes(range(config.passes)):
        order = sorted(range(len(rows)), key=lambda i, s=step: _order(keys[i], f"pass{s}"))
        for i in order:
            s = groups[i]
            b = biases[i]
            total = intercepts[b]
            for j, value in sparse[i]:
                total += weights[j] * value
            predicted = 1.0 / (1.0 + math.exp(-max(min(total, 30.0), -30.0)))
            error = (predicted - labels[i]) * sample_weight[rows[i].source] * emphasis[s]
            bias_squares[b] += error * error
            intercepts[b] -= rate * error / math.sqrt(bias_squares[b])
            for j, value in sparse[i]:
                gradient = error * value + l2 * weights[j]
                squares[j] += gradient * gradient
                weights[j] -= rate * gradient / math.sqrt(squares[j])
                if signs and weights[j] * signs[j] < 0:
                    weights[j] = 0.0
        if config.dro:
            losses = _source_losses(sparse, labels, groups, intercepts, weights, len(names))
            raised = [
                e * math.exp(config.dro * loss) for e, loss in zip(emphasis, losses, strict=True)
            ]
            emphasis = [len(names) * e / sum(raised) for e in raised]
    digits = config.digits
    table = {
        name: round(w, digits)
        for name, w in zip(vocabulary, weights, strict=True)
        if round(w, digits)
    }
    bias = intercepts[0] if config.intercepts == "shared" else sum(intercepts) / len(intercepts)
    return Weights(bias=round(bias, digits), weights=table)


def _source_losses(
    sparse: Sequence[Sequence[tuple[int, float]]],
    labels: Sequence[float],
    groups: Sequence[int],
    intercepts: Sequence[float],
    weights: Sequence[float],
    count: int,
) -> list[float]:
    """Each source's mean log-loss under the current weights (for group-DRO)."""
    totals = [0.0] * count
    sizes = [0] * count
    for features, y, s in zip(sparse, labels, groups, strict=True):
        z = intercepts[s] + sum(weights[j] * value for j, value in features)
        p = 1.0 / (1.0 + math.exp(-max(min(z, 30.0), -30.0)))
        p = min(max(p, 1e-9), 1 - 1e-9)
        totals[s] -= y * math.log(p) + (1 - y) * math.log(1 - p)
        sizes[s] += 1
    return [total / size for total, size in zip(totals, sizes, strict=True)]


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
    parser.add_argument("--invariance", choices=INVARIANCE, default=defaults.invariance)
    parser.add_argument("--agreement", type=float, default=defaults.agreement)
    parser.add_argument("--sign-z", type=float, default=defaults.sign_z)
    parser.add_argument("--min-sources", type=int, default=defaults.min_sources)
    parser.add_argument("--dro", type=float, default=defaults.dro)
    parser.add_argument("--intercepts", choices=INTERCEPTS, default=defaults.intercepts)
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    args = parser.parse_args(argv)
    config = TrainConfig(
        min_count=args.min_count,
        l2=args.l2,
        passes=args.passes,
        rate=args.rate,
        balance=args.balance,
        invariance=args.invariance,
        agreement=args.agreement,
        sign_z=args.sign_z,
        min_sources=args.min_sources,
        dro=args.dro,
        intercepts=args.intercepts,
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
