"""How well must a router rank prompts to reach a given APGR on each source, and how well does it?

    python -m xrouter_core.quality.ceiling                     # every source, markdown on stdout
    python -m xrouter_core.quality.ceiling --source alpaca_eval arena_hard_v1 --seeds 3

APGR depends on the source as much as on the router: where the strong model is better on
almost every prompt (Arena-Hard, alpaca_eval), even a perfect ranking gains little over
sending everything to it, and a small error costs most of that. To separate the two, each
source's prompts are scored by a "noisy oracle", the prompt's real gain (strong - weak)
plus Gaussian noise of a given size, and for each noise size the tool measures the
ranking's AUC (how often a prompt the strong model did better on outscores one it did
not) and the APGR it reaches. Interpolating that curve gives the AUC a router needs for a
target APGR on that source; "unreachable" means even the noise-free oracle falls short.

A second ceiling, nearer to what any router could know: the **cross-model oracle**. Where
a source's files grade many models on each prompt (ZeroEval, Arena-Hard v1, LLMRouter,
alpaca_eval), it scores a prompt by how the *other* graded models did on it, never the
pair itself: P(a model like the strong one gets it right) x P(a model like the weak one
gets it wrong), the expected gain when the two outcomes are independent. A model is
"like the weak one" when its mean score over the source is nearer the weak model's mean
than the strong model's; where no model is like the strong one (alpaca_eval's strong side
is the judge's baseline), the first factor is left out. It knows each prompt's difficulty
as well as dozens of models can tell it, which a prompt classifier can at best learn, but
not whether the weak model's own attempt happened to fail: what is left is the luck of one
sample, which no router sees before the call.

Beside them stands the built-in classifier's leave-one-source-out AUC and APGR (the
headline protocol of `quality.evaluate`, without intervals), so a reader sees how far
each source's target is from what the router ranks today. The noisy oracle is one model
of ranking error, not the only one: read the AUCs as the order of magnitude needed.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from xrouter_core.quality import evaluate, routing_metrics, sources

# Noise sizes from almost none to so much that the ranking is a coin (gains are in [-1, 1]).
NOISE = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 1000.0)
TARGETS = (0.55, 0.65)


@dataclass(frozen=True, slots=True)
class CurvePoint:
    noise: float
    auc: float
    apgr: float


def noisy_oracle_curve(
    weak: Sequence[float],
    strong: Sequence[float],
    noise: Sequence[float] = NOISE,
    seeds: int = 5,
    bins: int = routing_metrics.DEFAULT_BINS,
) -> list[CurvePoint]:
    """AUC and APGR (each the mean over `seeds` draws) of gain + noise, per noise size."""
    gains = [s - w for s, w in zip(strong, weak, strict=True)]
    better = [g > 0 for g in gains]
    curve = []
    for size in noise:
        aucs, apgrs = [], []
        for seed in range(seeds):
            draw = random.Random(f"{seed}:{size}")
            scores = [g + size * draw.gauss(0.0, 1.0) for g in gains]
            found = routing_metrics.auc(scores, better)
            if found is None:
                raise ValueError("AUC needs prompts on both sides of strong > weak")
            aucs.append(found)
            apgrs.append(
                routing_metrics.apgr(routing_metrics.fast_points(scores, weak, strong, bins))
            )
        curve.append(CurvePoint(size, statistics.fmean(aucs), statistics.fmean(apgrs)))
    return curve


def auc_needed(curve: Sequence[CurvePoint], target: float) -> float | None:
    """The AUC at which the curve first reaches `target` APGR (linear between its points,
    from the noisiest up); None when even its least noisy point stays below."""
    ordered = sorted(curve, key=lambda point: point.auc)
    if ordered[0].apgr >= target:
        return ordered[0].auc
    for low, high in zip(ordered, ordered[1:], strict=False):
        if low.apgr < target <= high.apgr:
            return low.auc + (high.auc - low.auc) * (target - low.apgr) / (high.apgr - low.apgr)
    return None


@dataclass(frozen=True, slots=True)
class CrossModel:
    scores: list[float]
    strong_like: int  # graded models on the strong model's side
    weak_like: int


# A model counts as a peer when it is graded on at least this share of a source's prompts.
PEER_COVERAGE = 0.9


def cross_model_scores(
    weak: Sequence[float],
    strong: Sequence[float],
    grades: Sequence[Mapping[str, float] | None],
) -> CrossModel | None:
    """Each prompt's expected gain as the source's other graded models tell it (the
    module docstring); None when the source grades no other model like the weak one."""
    counts: dict[str, int] = {}
    for graded in grades:
        for name in graded or ():
            counts[name] = counts.get(name, 0) + 1

    def column(name: str) -> list[tuple[int, float]]:
        return [(i, g[name]) for i, g in enumerate(grades) if g and name in g]

    def is_pair(name: str) -> bool:
        """The pair's own column: the strong's or the weak's score wherever graded."""
        cells = column(name)
        return all(v == strong[i] for i, v in cells) or all(v == weak[i] for i, v in cells)

    peers = sorted(
        name
        for name, count in counts.items()
        if count >= PEER_COVERAGE * len(grades) and not is_pair(name)
    )
    strong_mean, weak_mean = statistics.fmean(strong), statistics.fmean(weak)
    # A preference between the two (alpaca_eval: strong = 1 - weak) has no strong side of
    # its own: the strong model is the judge's baseline every peer was compared with.
    complementary = all(abs(s + w - 1.0) < 1e-9 for s, w in zip(strong, weak, strict=True))
    weak_like: list[str] = []
    strong_like: list[str] = []
    for name in peers:
        mean = statistics.fmean(v for _, v in column(name))
        if abs(mean - weak_mean) < abs(mean - strong_mean):
            weak_like.append(name)
        elif not complementary:
            strong_like.append(name)
    if not weak_like:
        return None

    def side_mean(graded: Mapping[str, float] | None, side: list[str]) -> float | None:
        values = [graded[name] for name in side if graded and name in graded]
        return statistics.fmean(values) if values else None

    overall_fail = 1.0 - statistics.fmean(v for name in weak_like for _, v in column(name))
    scores = []
    for graded in grades:
        seen = side_mean(graded, weak_like)
        fails = overall_fail if seen is None else 1.0 - seen
        solves = side_mean(graded, strong_like) if strong_like else 1.0
        scores.append((1.0 if solves is None else solves) * fails)
    return CrossModel(scores, len(strong_like), len(weak_like))


def measure(
    chosen: Sequence[str] | None = None,
    seeds: int = 5,
    targets: Sequence[float] = TARGETS,
    log=lambda line: print(line, file=sys.stderr),
) -> dict[str, dict]:
    """Per measurable source: the AUC needed for each target, the noise-free oracle's
    APGR, and the built-in classifier's leave-one-source-out AUC and APGR."""
    report = evaluate.run(("builtin",), chosen_sources=chosen, resamples=0, log=log)
    everything = sources.load_all()
    grades = sources.model_grades()
    found: dict[str, dict] = {}
    for name, entry in report["sources"].items():
        if not entry["measurable"]:
            continue
        rows = everything[name]
        weak, strong = [r.weak for r in rows], [r.strong for r in rows]
        curve = noisy_oracle_curve(weak, strong, seeds=seeds)
        gains = [s - w for s, w in zip(strong, weak, strict=True)]
        builtin = entry["routers"]["builtin"]
        graded = [grades.get(sources.normalise(r.prompt)) for r in rows]
        cross = cross_model_scores(weak, strong, graded)
        better = [g > 0 for g in gains]
        found[name] = {
            "prompts": len(rows),
            "strong_better": entry["strong_better"],
            "oracle_apgr": routing_metrics.apgr(routing_metrics.fast_points(gains, weak, strong)),
            "needed": {str(t): auc_needed(curve, t) for t in targets},
            "cross_model": None
            if cross is None
            else {
                "apgr": routing_metrics.apgr(
                    routing_metrics.fast_points(cross.scores, weak, strong)
                ),
                "auc": routing_metrics.auc(cross.scores, better),
                "strong_like": cross.strong_like,
                "weak_like": cross.weak_like,
            },
            "builtin_auc": builtin["auc"],
            "builtin_apgr": builtin["apgr"],
        }
    return found


def markdown(found: dict[str, dict], targets: Sequence[float] = TARGETS) -> str:
    def num(value: float | None) -> str:
        return "unreachable" if value is None else f"{value:.3f}"

    head = " | ".join(f"AUC for APGR {t:.2f}" for t in targets)
    lines = [
        f"| source | prompts | strong > weak | oracle APGR | {head} | cross-model oracle "
        "APGR (AUC; models like strong/weak) | built-in AUC | built-in APGR |",
        "|---|---:|---:|---:|" + "---:|" * len(targets) + "---:|---:|---:|",
    ]
    for name, item in found.items():
        needed = " | ".join(num(item["needed"][str(t)]) for t in targets)
        cross = item["cross_model"]
        across = (
            "–"
            if cross is None
            else f"{cross['apgr']:.3f} ({num(cross['auc'])}; "
            f"{cross['strong_like']}/{cross['weak_like']})"
        )
        lines.append(
            f"| {name} | {item['prompts']} | {item['strong_better']:.0%} | "
            f"{item['oracle_apgr']:.3f} | {needed} | {across} | {num(item['builtin_auc'])} | "
            f"{item['builtin_apgr']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xrouter_core.quality.ceiling",
        description=(__doc__ or "").split("\n")[0],
    )
    parser.add_argument("--source", nargs="+", default=None, help="default: every source")
    parser.add_argument("--seeds", type=int, default=5, help="noise draws per noise size")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    print(markdown(measure(args.source, args.seeds)), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
