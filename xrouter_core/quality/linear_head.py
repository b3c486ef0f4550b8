"""A linear head over precomputed prompt vectors, for measurement (`evaluate --router linear`).

    python -m xrouter_core.quality.evaluate --router builtin linear random oracle \\
        --vectors vectors.npz [--vectors-hand]

Given one vector per prompt (any embedding model's, made offline: a .npz keyed by
`vector_key` of the text the router's classifier sees, `routed_text`), the head is a ridge
regression of the label the built-in classifier learns (max(strong - weak, 0)) trained as
the built-in one is, to carry across sources:
  - one intercept per source: vectors and labels are centred within each source, so the
    weights learn what makes a prompt harder than its source's usual, not which source
    it came from;
  - every source weighs the same; features are standardised on the training rows;
  - the ridge strength is chosen by an inner leave-one-source-out over the training
    sources only (mean APGR), so the held-out source never picks a hyper-parameter.
With `hand=True` the built-in classifier's hand features (`builtin.analyse`) are
appended to each vector. Only the ranking of a source's prompts matters to APGR, so the
score is the raw linear output.

It is not a router mode: measured leave-one-source-out, static and MiniLM embeddings
with this head did not beat the built-in classifier (docs/evaluation/linear_heads.md),
nor did Gemma-3-270M's uncertainty on the prompt (docs/evaluation/gemma_proxy.md).
numpy does the arithmetic (the `evaluation` extra).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from xrouter_core.quality import routing_metrics, sources

if TYPE_CHECKING:
    import numpy as np

ALPHAS = (1.0, 10.0, 100.0, 1000.0, 10000.0)  # ridge strengths tried (on standardised features)
RIDGE_SCALE = 1e-3  # alpha is per unit of a source's mean scatter (each source weighs 1)


def vector_key(text: str) -> str:
    """The key of a text's vector in a --vectors file (the embedding cache's digest)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def load_vectors(path: Path) -> dict[str, np.ndarray]:
    import numpy as np

    with np.load(path, allow_pickle=False) as stored:
        return {key: np.asarray(stored[key], dtype=np.float64) for key in stored.files}


def label(row: sources.Row) -> float:
    return min(max(row.gain, 0.0), 1.0)


@dataclass(frozen=True)
class Head:
    """Weights on the raw features, the ridge strength and its inner-LOSO mean APGR."""

    weights: np.ndarray
    alpha: float
    inner_apgr: float | None

    def scores(self, matrix: np.ndarray) -> list[float]:
        return [float(value) for value in matrix @ self.weights]


class _Stats:
    """Each source's centred scatter and moments, so any union of sources fits in O(d³)."""

    def __init__(self, matrix: np.ndarray, labels: np.ndarray, groups: Sequence[str]):
        import numpy as np

        self.by_group: dict[str, tuple] = {}
        names = np.asarray(groups)
        for name in dict.fromkeys(groups):
            mask = names == name
            x, y = matrix[mask], labels[mask]
            xc, yc = x - x.mean(0), y - y.mean()
            count = int(mask.sum())
            self.by_group[name] = (
                xc.T @ xc / count,
                xc.T @ yc / count,
                count,
                x.sum(0),
                (x * x).sum(0),
            )

    def fit(self, chosen: Sequence[str], alpha: float) -> np.ndarray:
        import numpy as np

        parts = [self.by_group[name] for name in chosen]
        count = sum(p[2] for p in parts)
        mean = sum(p[3] for p in parts) / count
        sd = np.sqrt(np.maximum(sum(p[4] for p in parts) / count - mean**2, 0.0)) + 1e-6
        scatter = sum(p[0] for p in parts) / len(parts) / np.outer(sd, sd)
        cross = sum(p[1] for p in parts) / len(parts) / sd
        solved = np.linalg.solve(scatter + alpha * RIDGE_SCALE * np.eye(len(cross)), cross)
        return solved / sd


def train(
    matrix: np.ndarray,
    rows: Sequence[sources.Row],
    alphas: Sequence[float] = ALPHAS,
    bins: int = routing_metrics.DEFAULT_BINS,
    min_gap: float = 0.02,
) -> Head:
    """The head on these rows, its ridge strength chosen by leave-one-source-out within them."""
    import numpy as np

    if any(row.source in sources.TEST_ONLY for row in rows):
        raise ValueError("test-only sources (alpaca_eval) are never trained on")
    groups = [row.source for row in rows]
    labels = np.asarray([label(row) for row in rows], dtype=np.float64)
    stats = _Stats(matrix, labels, groups)
    names = list(dict.fromkeys(groups))
    members: Mapping[str, list[int]] = {
        name: [i for i, g in enumerate(groups) if g == name] for name in names
    }

    def measurable(name: str) -> bool:
        picked = [rows[i] for i in members[name]]
        gap = sum(r.strong - r.weak for r in picked) / len(picked)
        return gap >= min_gap

    inner = [name for name in names if measurable(name)] if len(names) > 2 else []
    best: tuple[float, float | None] = (alphas[0], None)
    for alpha in alphas if inner else ():
        values = []
        for held in inner:
            weights = stats.fit([n for n in names if n != held], alpha)
            picked = members[held]
            points = routing_metrics.fast_points(
                [float(v) for v in matrix[picked] @ weights],
                [rows[i].weak for i in picked],
                [rows[i].strong for i in picked],
                bins,
            )
            values.append(routing_metrics.apgr(points))
        mean = sum(values) / len(values)
        if best[1] is None or mean > best[1]:
            best = (alpha, mean)
    return Head(stats.fit(names, best[0]), best[0], best[1])


class Features:
    """Each prompt's row: its vector from the --vectors file, then (with `hand`) the
    built-in classifier's hand features, as the router's classifier sees the prompt.

    With `partial`, the file need not cover every training prompt (vectors that are slow
    to make, written for a per-source sample): `training` keeps the rows that have one.
    Test rows must always have one."""

    def __init__(
        self, vectors: Mapping[str, np.ndarray], hand: bool = False, partial: bool = False
    ):
        self.vectors = vectors
        self.hand = hand
        self.partial = partial

    def with_hand(self) -> Features:
        """The same vectors with the hand features appended."""
        return Features(self.vectors, True, self.partial)

    def training(self, rows: Sequence[sources.Row]) -> list[sources.Row]:
        """The rows a head may train on: all of them, or with `partial` those with a vector."""
        if not self.partial:
            return list(rows)
        from xrouter_core.quality.routellm_data import routed_text

        return [row for row in rows if vector_key(routed_text(row.prompt)) in self.vectors]

    @staticmethod
    def _hand(row: sources.Row) -> dict[str, float]:
        from xrouter_core.quality.train_builtin import features_of

        return {k: v for k, v in features_of(row.prompt).items() if not k.startswith("w:")}

    def hand_names(self, rows: Sequence[sources.Row]) -> list[str]:
        """The hand features seen in these (training) rows."""
        if not self.hand:
            return []
        return sorted({name for row in rows for name in self._hand(row)})

    def matrix(self, rows: Sequence[sources.Row], hand_names: Sequence[str]) -> np.ndarray:
        import numpy as np

        from xrouter_core.quality.routellm_data import routed_text

        keys = [vector_key(routed_text(row.prompt)) for row in rows]
        missing = sum(key not in self.vectors for key in keys)
        if missing:
            raise KeyError(f"{missing} of {len(rows)} prompts have no vector in the file")
        vectors = np.stack([self.vectors[key] for key in keys])
        if not hand_names:
            return vectors
        index = {name: j for j, name in enumerate(hand_names)}
        hand = np.zeros((len(rows), len(hand_names)))
        for i, row in enumerate(rows):
            for name, value in self._hand(row).items():
                if name in index:
                    hand[i, index[name]] = value
        return np.hstack([vectors, hand])
