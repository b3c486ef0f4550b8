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

Beside it stands the built-in classifier's leave-one-source-out AUC and APGR (the
headline protocol of `quality.evaluate`, without intervals), so a reader sees how far
each source's target is from what the router ranks today. The noisy oracle is one model
of ranking error, not the only one: read the AUCs as the order of magnitude needed.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from collections.abc import Sequence
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
    found: dict[str, dict] = {}
    for name, entry in report["sources"].items():
        if not entry["measurable"]:
            continue
        rows = everything[name]
        weak, strong = [r.weak for r in rows], [r.strong for r in rows]
        curve = noisy_oracle_curve(weak, strong, seeds=seeds)
        gains = [s - w for s, w in zip(strong, weak, strict=True)]
        builtin = entry["routers"]["builtin"]
        found[name] = {
            "prompts": len(rows),
            "strong_better": entry["strong_better"],
            "oracle_apgr": routing_metrics.apgr(routing_metrics.fast_points(gains, weak, strong)),
            "needed": {str(t): auc_needed(curve, t) for t in targets},
            "builtin_auc": builtin["auc"],
            "builtin_apgr": builtin["apgr"],
        }
    return found


def markdown(found: dict[str, dict], targets: Sequence[float] = TARGETS) -> str:
    def num(value: float | None) -> str:
        return "unreachable" if value is None else f"{value:.3f}"

    head = " | ".join(f"AUC for APGR {t:.2f}" for t in targets)
    lines = [
        f"| source | prompts | strong > weak | oracle APGR | {head} | built-in AUC | built-in APGR |",
        "|---|---:|---:|---:|" + "---:|" * len(targets) + "---:|---:|",
    ]
    for name, item in found.items():
        needed = " | ".join(num(item["needed"][str(t)]) for t in targets)
        lines.append(
            f"| {name} | {item['prompts']} | {item['strong_better']:.0%} | "
            f"{item['oracle_apgr']:.3f} | {needed} | {num(item['builtin_auc'])} | "
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
