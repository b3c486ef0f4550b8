"""Routing-quality metrics as the RouteLLM paper (Ong et al., 2024) defines them.

A router gives every prompt a score; a threshold sends the prompts scoring at or above
it to the strong model and the rest to the weak one. For one threshold:
  strong share  = share of prompts sent to the strong model,
  quality       = share answered correctly by the model each prompt was sent to,
  PGR           = (quality - weak quality) / (strong quality - weak quality).
Over the thresholds of a sweep (RouteLLM: the edges of 10 equal-count bins of the scores):
  APGR     = area under PGR as the strong share goes from its lowest to its highest
             value (trapezoid rule; RouteLLM computes (AUC - weak AUC) / (strong AUC - weak AUC),
             the same number),
  CPT(x %) = the strong share needed to reach PGR x % on the piecewise-linear curve.
RouteLLM reads CPT with numpy.interp over the curve sorted by strong share, which is the
same as the first crossing used here whenever quality rises with the strong share; when
it does not, the first crossing is the paper's "minimum share of strong calls".
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass

DEFAULT_BINS = 10


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    threshold: float
    strong_share: float
    quality: float
    pgr: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def accuracy(values: Sequence[bool]) -> float:
    return sum(values) / len(values) if values else 0.0


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's and pandas' default)."""
    if not sorted_values:
        raise ValueError("quantile of nothing")
    position = (len(sorted_values) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = position - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


def quantile_thresholds(scores: Sequence[float], bins: int = DEFAULT_BINS) -> list[float]:
    """The bin edges of pandas.qcut(scores, bins): minimum, inner quantiles, maximum.

    Equal edges (discrete scores such as an LLM's 0/1/2) are kept once: they are the
    same operating point.
    """
    ordered = sorted(scores)
    edges = [quantile(ordered, index / bins) for index in range(bins + 1)]
    unique: list[float] = []
    for edge in edges:
        if not unique or edge != unique[-1]:
            unique.append(edge)
    return unique


def pgr(quality: float, weak_quality: float, strong_quality: float) -> float:
    gap = strong_quality - weak_quality
    if gap == 0:
        return 0.0
    return (quality - weak_quality) / gap


def operating_point(
    scores: Sequence[float],
    weak: Sequence[bool],
    strong: Sequence[bool],
    threshold: float,
    strictly_above: bool = False,
) -> OperatingPoint:
    """Route score >= threshold (or > threshold) to the strong model and measure it."""
    total = len(scores)
    sent = 0
    correct = 0
    for score, weak_ok, strong_ok in zip(scores, weak, strong, strict=True):
        to_strong = score > threshold if strictly_above else score >= threshold
        sent += to_strong
        correct += strong_ok if to_strong else weak_ok
    quality = correct / total
    return OperatingPoint(
        threshold, sent / total, quality, pgr(quality, accuracy(weak), accuracy(strong))
    )


def sweep(
    scores: Sequence[float], weak: Sequence[bool], strong: Sequence[bool], bins: int = DEFAULT_BINS
) -> list[OperatingPoint]:
    """RouteLLM's sweep: score >= each bin edge, and > the last edge (no strong calls)."""
    if not scores:
        raise ValueError("no prompts to evaluate")
    edges = quantile_thresholds(scores, bins)
    points = [operating_point(scores, weak, strong, edge) for edge in edges]
    points.append(operating_point(scores, weak, strong, edges[-1], strictly_above=True))
    return sorted(points, key=lambda point: (point.strong_share, point.threshold))


def apgr(points: Sequence[OperatingPoint]) -> float:
    """Area under PGR over the strong share, divided by the share range swept (1 when 0..100 %)."""
    ordered = sorted(points, key=lambda point: point.strong_share)
    span = ordered[-1].strong_share - ordered[0].strong_share
    if span == 0:
        return ordered[0].pgr
    area = 0.0
    for left, right in zip(ordered, ordered[1:], strict=False):
        area += (right.strong_share - left.strong_share) * (left.pgr + right.pgr) / 2
    return area / span


def cpt(points: Sequence[OperatingPoint], target_pgr: float) -> float | None:
    """The smallest strong share at which the curve reaches target_pgr; None if it never does."""
    ordered = sorted(points, key=lambda point: point.strong_share)
    if ordered[0].pgr >= target_pgr:
        return ordered[0].strong_share
    for left, right in zip(ordered, ordered[1:], strict=False):
        if left.pgr < target_pgr <= right.pgr:
            fraction = (target_pgr - left.pgr) / (right.pgr - left.pgr)
            return left.strong_share + fraction * (right.strong_share - left.strong_share)
    return None


def optimal_quality(weak: Sequence[bool], strong: Sequence[bool], strong_share: float) -> float:
    """The best quality any router could reach with this strong share (RouteLLM's 'optimal')."""
    total = len(weak)
    gain = sum(1 for w, s in zip(weak, strong, strict=True) if s and not w)
    return (sum(weak) + min(strong_share * total, gain)) / total


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Mann-Whitney: P(score of a positive > score of a negative), ties count half."""
    ranked = sorted(zip(scores, labels, strict=True), key=lambda pair: pair[0])
    positives = sum(labels)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return None
    rank_sum = 0.0
    index = 0
    while index < len(ranked):
        end = index
        while end + 1 < len(ranked) and ranked[end + 1][0] == ranked[index][0]:
            end += 1
        mean_rank = (index + end) / 2 + 1
        rank_sum += mean_rank * sum(1 for _, label in ranked[index : end + 1] if label)
        index = end + 1
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def random_scores(count: int, seed: int = 0) -> list[float]:
    """RouteLLM's random router: a uniform draw per prompt, seeded for reproducibility."""
    rng = random.Random(seed)
    return [rng.uniform(0, 1) for _ in range(count)]


def summarize(
    scores: Sequence[float], weak: Sequence[bool], strong: Sequence[bool], bins: int = DEFAULT_BINS
) -> dict:
    """Every figure of one router on one benchmark, ready for JSON."""
    points = sweep(scores, weak, strong, bins)
    weak_quality, strong_quality = accuracy(weak), accuracy(strong)
    return {
        "prompts": len(scores),
        "weak_quality": weak_quality,
        "strong_quality": strong_quality,
        **curve_figures(points, strong_quality),
    }


def curve_figures(points: Sequence[OperatingPoint], strong_quality: float) -> dict:
    """APGR, CPT(50 %), CPT(80 %) and every point (with the quality it keeps of the
    strong model's) of one sweep, ready for JSON."""
    return {
        "apgr": apgr(points),
        "cpt50": cpt(points, 0.5),
        "cpt80": cpt(points, 0.8),
        "points": [
            {
                **point.as_dict(),
                "quality_retained": point.quality / strong_quality if strong_quality else 0.0,
            }
            for point in points
        ],
    }


def fast_points(
    scores: Sequence[float],
    weak: Sequence[float],
    strong: Sequence[float],
    bins: int = DEFAULT_BINS,
) -> list[OperatingPoint]:
    """The same points as `sweep`, from one sort and prefix sums (for bootstrap resamples).

    Scores may be any numbers; weak and strong may be 0/1 or graded in [0, 1]."""
    total = len(scores)
    if not total:
        raise ValueError("no prompts to evaluate")
    order = sorted(range(total), key=lambda i: scores[i], reverse=True)
    prefix = [0.0]
    for i in order:
        prefix.append(prefix[-1] + strong[i] - weak[i])
    ascending = sorted(scores)
    weak_quality = sum(weak) / total
    strong_quality = sum(strong) / total
    edges = quantile_thresholds(ascending, bins)
    points = []
    for edge in edges:
        sent = total - bisect.bisect_left(ascending, edge)
        quality = weak_quality + prefix[sent] / total
        points.append(
            OperatingPoint(edge, sent / total, quality, pgr(quality, weak_quality, strong_quality))
        )
    points.append(OperatingPoint(edges[-1], 0.0, weak_quality, 0.0))
    return sorted(points, key=lambda point: (point.strong_share, point.threshold))


def bootstrap(
    scores: Sequence[float],
    weak: Sequence[float],
    strong: Sequence[float],
    resamples: int = 200,
    seed: int = 0,
    bins: int = DEFAULT_BINS,
) -> dict[str, list[float | None]]:
    """95 % percentile intervals of APGR, CPT(50 %) and CPT(80 %) over prompt resamples."""
    return intervals(resampled(scores, weak, strong, resamples, seed, bins))


def resampled(
    scores: Sequence[float],
    weak: Sequence[float],
    strong: Sequence[float],
    resamples: int = 200,
    seed: int = 0,
    bins: int = DEFAULT_BINS,
) -> dict[str, list[float]]:
    """APGR, CPT(50 %) and CPT(80 %) of each prompt resample. The resamples depend only on
    the seed and the number of prompts, so two routers scored on the same prompts with the
    same seed are resampled alike: their k-th values are paired."""
    rng = random.Random(seed)
    total = len(scores)
    found: dict[str, list[float]] = {"apgr": [], "cpt50": [], "cpt80": []}
    for _ in range(resamples):
        picks = [rng.randrange(total) for _ in range(total)]
        points = fast_points(
            [scores[i] for i in picks], [weak[i] for i in picks], [strong[i] for i in picks], bins
        )
        found["apgr"].append(apgr(points))
        for name, target in (("cpt50", 0.5), ("cpt80", 0.8)):
            value = cpt(points, target)
            found[name].append(1.0 if value is None else value)
    return found


def intervals(found: dict[str, list[float]]) -> dict[str, list[float | None]]:
    """The 95 % percentile interval of each list of resampled values."""
    interval: dict[str, list[float | None]] = {}
    for name, values in found.items():
        if not values:
            interval[name] = [None, None]
            continue
        ordered = sorted(values)
        interval[name] = [quantile(ordered, 0.025), quantile(ordered, 0.975)]
    return interval


def weighted_points(
    scores: Sequence[float],
    weak: Sequence[float],
    strong: Sequence[float],
    weights: Sequence[float],
    bins: int = DEFAULT_BINS,
) -> list[OperatingPoint]:
    """The sweep over prompts that weigh differently (a mixture of sources, each weighing
    the same in total): strong share and quality are weighted means, and the thresholds are
    the scores at which the weight sent to the weak model first reaches each k / bins of the
    total (step quantiles: with weights, there is no order statistic to interpolate)."""
    total = len(scores)
    if not total:
        raise ValueError("no prompts to evaluate")
    order = sorted(range(total), key=lambda i: scores[i])
    ascending = [scores[i] for i in order]
    mass = sum(weights)
    below = [0.0]  # weight of the first k prompts in ascending order
    for i in order:
        below.append(below[-1] + weights[i])
    above = [0.0] * (total + 1)  # weighted strong - weak gain of the prompts from k on
    for k in range(total - 1, -1, -1):
        i = order[k]
        above[k] = above[k + 1] + weights[i] * (strong[i] - weak[i])
    weak_quality = sum(w * q for w, q in zip(weights, weak, strict=True)) / mass
    strong_quality = sum(w * q for w, q in zip(weights, strong, strict=True)) / mass
    slack = 1e-9 * mass
    edges: list[float] = []
    for index in range(bins + 1):
        reach = mass * index / bins - slack
        k = min(max(bisect.bisect_left(below, reach, lo=1) - 1, 0), total - 1)
        if not edges or ascending[k] != edges[-1]:
            edges.append(ascending[k])
    points = []
    for edge in edges:
        first = bisect.bisect_left(ascending, edge)
        quality = weak_quality + above[first] / mass
        points.append(
            OperatingPoint(
                edge,
                (mass - below[first]) / mass,
                quality,
                pgr(quality, weak_quality, strong_quality),
            )
        )
    points.append(OperatingPoint(edges[-1], 0.0, weak_quality, 0.0))
    return sorted(points, key=lambda point: (point.strong_share, point.threshold))


def pooled(
    groups: Sequence[tuple[Sequence[float], Sequence[float], Sequence[float]]],
    bins: int = DEFAULT_BINS,
    resamples: int = 200,
    seed: int = 0,
) -> dict:
    """APGR and CPT of one mixture of groups (scores, weak, strong), each group weighing
    the same in total whatever its size; the 95 % intervals resample within each group."""
    scores: list[float] = []
    weak: list[float] = []
    strong: list[float] = []
    weights: list[float] = []
    for group_scores, group_weak, group_strong in groups:
        scores += group_scores
        weak += group_weak
        strong += group_strong
        weights += [1.0 / len(group_scores)] * len(group_scores)
    points = weighted_points(scores, weak, strong, weights, bins)
    mass = sum(weights)
    strong_quality = sum(w * q for w, q in zip(weights, strong, strict=True)) / mass
    result: dict = {
        "groups": len(groups),
        "prompts": len(scores),
        "weak_quality": sum(w * q for w, q in zip(weights, weak, strict=True)) / mass,
        "strong_quality": strong_quality,
        **curve_figures(points, strong_quality),
    }
    if resamples:
        rng = random.Random(seed)
        found: dict[str, list[float]] = {"apgr": [], "cpt50": [], "cpt80": []}
        starts = []
        offset = 0
        for group_scores, _, _ in groups:
            starts.append((offset, len(group_scores)))
            offset += len(group_scores)
        for _ in range(resamples):
            picks = [start + rng.randrange(size) for start, size in starts for _ in range(size)]
            drawn = weighted_points(
                [scores[i] for i in picks],
                [weak[i] for i in picks],
                [strong[i] for i in picks],
                [weights[i] for i in picks],
                bins,
            )
            found["apgr"].append(apgr(drawn))
            for name, target in (("cpt50", 0.5), ("cpt80", 0.8)):
                value = cpt(drawn, target)
                found[name].append(1.0 if value is None else value)
        result["ci95"] = {
            name: [quantile(sorted(values), 0.025), quantile(sorted(values), 0.975)]
            for name, values in found.items()
        }
    return result
