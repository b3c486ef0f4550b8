"""Measure how well a classifier routes across sources it never saw, with RouteLLM's metrics.

    python -m xrouter_core.quality.evaluate                    # leave-one-source-out, built-in vs random vs oracle
    python -m xrouter_core.quality.evaluate --chart docs/evaluation.html --markdown report.md
    python -m xrouter_core.quality.evaluate --protocol in-distribution    # 50/50 split within each source
    python -m xrouter_core.quality.evaluate --protocol own-traffic --own-labels 0 100 300 1000
    python -m xrouter_core.quality.evaluate --mode llm --llm-url http://127.0.0.1:8080/v1 \\
        --llm-model gemma --sample 200
    python -m xrouter_core.quality.evaluate --mode builtin embedding \\
        --embedding-url http://127.0.0.1:11434/v1 --embedding-model all-minilm
    python -m xrouter_core.quality.evaluate --router builtin linear linear_hand random \\
        --vectors gemma.npz --vectors-partial --sample 250

Data: every source of `quality.sources` (datasets/, deduplicated by normalised prompt).
Each row says how well the strong and the weak model answered the prompt (correctness,
or a judge's grade in [0, 1]).

Protocols:
  - `loso` (the headline): for each trainable source, the built-in classifier is trained
    (`train_builtin.train`) on all the other trainable sources and scored on this one,
    which it never saw. alpaca_eval (CC-BY-NC-4.0) is test only: it is scored by the
    model trained on every trainable source, the configuration of the bundled weights.
  - `in-distribution`: each source is split by a hash of the prompt
    (`routellm_data.split_of`); one model is trained on every calibration half and scored
    on the held-out halves. Easier, and shown only beside the headline.
  - `own-traffic`: would labelling some of one's own traffic help? Each source stands for
    a user's traffic. Its rows are shuffled by a seeded hash (`own_traffic_halves`); the
    first half is its test set, fixed for every K. For each K of `--own-labels` the
    built-in classifier is trained on what loso trains that source's fold on, plus the
    first K rows of the other half relabelled as one extra source, "traffic" (so it gets
    its own intercept, like every source). A K beyond the other half is capped, and the
    count used is reported. Same sources as loso; alpaca_eval's other half is trained on
    too, as "traffic": these weights live only in memory for the measurement and are never
    written or bundled (its licence, CC-BY-NC-4.0, is why the bundled weights never read
    it). The top-level "sources" of its report are those of the largest K; every K's are
    under "by_labels", with the mean's paired gain over the smallest K.

Routers: `builtin` (the fold's model with the router's rules on; `--no-rules` drops
them), `random` (RouteLLM's baseline: a seeded uniform score), `oracle` (the prompt's
real gain, strong - weak: the best any router could do), and, with `--llm-url`, `llm`
(an OpenAI-compatible endpoint asked for 0/1/2, as the router does; a failed call
counts as frontier) and `hybrid` (the LLM, the fold's built-in classifier when it fails),
and, with `--embedding-url`, `embedding` (quality/embedding.py: the engine embeds a bank
of labelled prompts less the held-out source, and each test prompt's neighbours score it),
and, with `--vectors FILE.npz`, `linear` (quality/linear_head.py: a ridge head with one
intercept per source over each prompt's precomputed vector, trained on the fold's
training rows, its strength chosen by leave-one-source-out within them) and `linear_hand`
(the same head with the built-in classifier's hand features appended to each vector);
with `--vectors-partial` the file may cover only a sample (say, the `--sample` of every
source with the same `--seed`) and the heads train on the training rows it covers. Three
variants of the built-in classifier are trained in the same folds: `invariant` (only the
features whose direction agrees in every training source, held to that sign:
TrainConfig.invariance = "sign"), `dro` (group-DRO over the training sources,
TrainConfig.dro, `--dro`), and `shared` (one intercept for every training source instead
of one each: TrainConfig.intercepts = "shared").
Every prompt is given as the router's classifier would see it (`routellm_data.routed_text`).

Figures per source and router (routing_metrics.py): APGR (area under PGR over the
strong-call share, thresholds at RouteLLM's 10 equal-count bins of the scores), CPT(50 %)
and CPT(80 %) (the strong-call share needed for that PGR), each with a 95 % bootstrap
interval over the prompts (`--bootstrap` resamples), and every operating point. Every
router is resampled alike within a source, so the mean APGR over sources gets an interval
too, and so does each router's lead over builtin (a paired interval).

Secondary figure, `pooled held-out sources` (loso only): each source's prompts keep the
scores of the fold that never saw that source, and every measurable source is pooled into
one mixture where each source weighs the same (routing_metrics.pooled). Real traffic mixes
tasks: this asks whether a router tells the kinds of prompt apart (maths against chat)
without having seen the kind, which the per-source figures cannot show. It never replaces
the per-source headline.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from xrouter_core.config import ClassifierSettings, parse_thresholds
from xrouter_core.quality import embedding, linear_head, routing_metrics, sources, train_builtin
from xrouter_core.quality.progress import progress
from xrouter_core.quality.routellm_data import routed_text, split_of
from xrouter_core.routing.builtin import BUILTIN_THRESHOLDS, BuiltinClassifier, Weights, tier_for
from xrouter_core.tiers import FRONTIER_INDEX, TIERS

ROUTERS = (
    "builtin",
    "random",
    "oracle",
    "llm",
    "hybrid",
    "embedding",
    "linear",
    "linear_hand",
    "invariant",
    "dro",
    "shared",
)
# Routers that are the built-in classifier trained with another TrainConfig (in the same
# folds as `builtin`): the change each makes to the run's configuration.
TRAINING_VARIANTS: dict[str, dict[str, Any]] = {
    "invariant": {"invariance": "sign"},
    "dro": {"dro": 1.0},
    "shared": {"intercepts": "shared"},
}
# Routers whose score comes from a trained model (shown with bootstrap intervals).
LEARNED = ("builtin", "llm", "hybrid", "linear", "linear_hand", *TRAINING_VARIANTS)
DEFAULT_ROUTERS = ("builtin", "random", "oracle")
PROTOCOLS = ("loso", "in-distribution", "own-traffic")
# own-traffic: the labelled rows of the user's own traffic trained on, and their source.
OWN_LABELS = (0, 100, 300, 1000)
TRAFFIC = "traffic"
# PGR divides by (strong quality - weak quality): a source where the strong model is not
# clearly better (llmrouter_openqa: 0.28 vs 0.31) has no meaningful PGR, so it is listed
# but left out of the figures (its prompts are still trained on in the other folds).
MIN_QUALITY_GAP = 0.02
# The best learned routers of the RouteLLM paper (APGR; Ong et al. 2024, arXiv 2406.18665),
# in distribution on its own MMLU and GSM8K data.
ROUTELLM_BEST_APGR = {"mmlu": 0.603, "gsm8k": 0.622}


def sample(rows: Sequence[Any], size: int | None, seed: int) -> list[Any]:
    """A deterministic subset: the `size` rows with the smallest seeded hash, in file order."""
    if not size or size >= len(rows):
        return list(rows)

    def rank(row: Any) -> bytes:
        return hashlib.sha256(f"{seed}:".encode() + row.prompt.encode("utf-8")).digest()

    chosen = set(map(id, sorted(rows, key=rank)[:size]))
    return [row for row in rows if id(row) in chosen]


class LLMScorer:
    """Asks an OpenAI-compatible endpoint for each prompt's tier with the router's own client."""

    def __init__(self, settings: ClassifierSettings, concurrency: int = 1):
        self.settings = settings
        self.concurrency = max(1, concurrency)
        # Answers by prompt, so llm and hybrid on the same prompts ask only once.
        self.answers: dict[str, tuple[int | None, float | None]] = {}

    async def tiers(
        self, texts: Sequence[str], progress: Callable[[int], None]
    ) -> tuple[list[int | None], list[float]]:
        import httpx

        from xrouter_core.routing.classifier import LLMClassifier

        results: list[int | None] = [None] * len(texts)
        times: list[float] = []
        gate = asyncio.Semaphore(self.concurrency)
        done = 0
        async with httpx.AsyncClient(
            trust_env=False, timeout=httpx.Timeout(60.0, connect=5.0)
        ) as client:
            classifier = LLMClassifier(self.settings, client)

            async def one(index: int, text: str) -> None:
                nonlocal done
                if text not in self.answers:
                    async with gate:
                        decision = await classifier.classify(text)
                    self.answers[text] = (decision.tier, decision.ms) if decision else (None, None)
                tier, ms = self.answers[text]
                results[index] = tier
                if ms is not None:
                    times.append(ms)
                done += 1
                progress(done)

            await asyncio.gather(*(one(i, text) for i, text in enumerate(texts)))
        return results, times


@dataclass(frozen=True)
class EmbeddingEngine:
    """Where the embedding router's vectors come from (`--embedding-*`)."""

    base_url: str
    model: str = ""
    api_key: str = ""
    neighbours: int = embedding.NEIGHBOURS


class EmbeddingScorer:
    """The embedding classifier's scores (quality/embedding.py).

    Every text (the bank's and the test prompts') is embedded once per run, or read from
    `cache` (a .npz keyed by the text's digest; keep one file per engine and model). In a
    leave-one-source-out fold the bank is the whole bank less the held-out source."""

    def __init__(self, engine: EmbeddingEngine, bank: embedding.Bank, cache: Path | None = None):
        self.engine = engine
        self.bank = bank
        self.cache = cache
        self.vectors: dict[str, Any] = {}
        self.ms: list[float] = []
        if cache is not None and cache.is_file():
            import numpy as np

            with np.load(cache, allow_pickle=False) as stored:
                self.vectors = {key: stored[key] for key in stored.files}

    @staticmethod
    def key(text: str) -> str:
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()

    async def _embed(self, texts: Sequence[str], log: Callable[[str], None]) -> None:
        import httpx

        wanted = list(dict.fromkeys(t for t in texts if self.key(t) not in self.vectors))
        if not wanted:
            return
        async with httpx.AsyncClient(
            trust_env=False, timeout=httpx.Timeout(120.0, connect=5.0)
        ) as client:
            for start in range(0, len(wanted), embedding.BATCH):
                batch = wanted[start : start + embedding.BATCH]
                began = time.perf_counter()
                found = await embedding.embed(
                    client, self.engine.base_url, self.engine.model, batch, self.engine.api_key
                )
                self.ms.append((time.perf_counter() - began) * 1000 / len(batch))
                for text, row in zip(batch, embedding.unit_rows(found), strict=True):
                    self.vectors[self.key(text)] = row
                done = start + len(batch)
                if done % (embedding.BATCH * 8) < embedding.BATCH or done == len(wanted):
                    log(f"  embedding: {done}/{len(wanted)}")
        if self.cache is not None:
            import numpy as np

            self.cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(self.cache, **self.vectors)

    def scores(
        self, held_out: str, texts: Sequence[str], log: Callable[[str], None]
    ) -> list[float]:
        import numpy as np

        bank = self.bank.without(held_out)
        try:
            asyncio.run(self._embed([*bank.texts, *texts], log))
        except embedding.EngineError as exc:
            raise SystemExit(f"embedding engine: {exc}") from None
        matrix = np.stack([self.vectors[self.key(t)] for t in bank.texts])
        if matrix.shape[1] != len(self.vectors[self.key(texts[0])]):
            raise SystemExit("embedding engine: the vectors changed size (another model?)")
        labels = np.asarray(bank.labels, dtype=np.float32)
        k = self.engine.neighbours
        return [
            embedding.knn_score(matrix, labels, bank.base, self.vectors[self.key(t)], k)
            for t in texts
        ]


def _linear_scores(
    features: linear_head.Features,
    heads: dict[tuple[str, ...], tuple[linear_head.Head, list[str]]],
    rows: Sequence[sources.Row],
    train: Sequence[sources.Row],
    bins: int,
) -> tuple[list[float], dict[str, Any]]:
    """The linear head of this fold's training rows (trained once per set of sources)."""
    train = features.training(train)
    key = (str(features.hand), *sorted(sources.counts(train)))
    try:
        if not train:
            raise KeyError("no training prompt has a vector in the file")
        if key not in heads:
            names = features.hand_names(train)
            heads[key] = (
                linear_head.train(
                    features.matrix(train, names), train, bins=bins, min_gap=MIN_QUALITY_GAP
                ),
                names,
            )
        head, names = heads[key]
        scores = head.scores(features.matrix(rows, names))
    except KeyError as exc:
        raise SystemExit(f"--vectors: {exc.args[0]}") from None
    return scores, {"alpha": head.alpha, "inner_apgr": head.inner_apgr, "train_rows": len(train)}


def operating_points(tiers: Sequence[int], rows: Sequence[sources.Row]) -> dict[str, dict]:
    """The configured thresholds' two readings of a tiered decision."""
    weak = [r.weak for r in rows]
    strong = [r.strong for r in rows]
    return {
        "frontier_only": routing_metrics.operating_point(tiers, weak, strong, 2).as_dict(),
        "medium_and_frontier": routing_metrics.operating_point(tiers, weak, strong, 1).as_dict(),
    }


def summarize(
    scores: Sequence[float],
    rows: Sequence[sources.Row],
    bins: int,
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    weak = [r.weak for r in rows]
    strong = [r.strong for r in rows]
    points = routing_metrics.fast_points(scores, weak, strong, bins)
    strong_quality = routing_metrics.accuracy(strong)
    result: dict[str, Any] = {
        **routing_metrics.curve_figures(points, strong_quality),
        # How often a prompt the strong model did better on outscores one it did not.
        "auc": routing_metrics.auc(scores, [s > w for s, w in zip(strong, weak, strict=True)]),
    }
    if resamples:
        found = routing_metrics.resampled(scores, weak, strong, resamples, seed, bins)
        result["ci95"] = routing_metrics.intervals(found)
        result["apgr_resamples"] = found["apgr"]
    return result


class Evaluation:
    """The routers' scores of one test set, given the model of its fold."""

    def __init__(
        self,
        thresholds: tuple[float, float],
        rules: bool,
        llm: LLMScorer | None,
        seed: int,
        bins: int,
        resamples: int,
        log: Callable[[str], None],
        embedder: EmbeddingScorer | None = None,
        features: linear_head.Features | None = None,
    ):
        self.features = features
        self.heads: dict[tuple[str, ...], tuple[linear_head.Head, list[str]]] = {}
        # The built-in classifier's models by (training rows, config), for every fold of
        # the run (own-traffic: a K capped to the same rows as another K reuses its model).
        self.models: dict[tuple[Any, ...], Weights] = {}
        self.thresholds = thresholds
        self.rules = rules
        self.llm = llm
        self.embedder = embedder
        self.seed = seed
        self.bins = bins
        self.resamples = resamples
        self.log = log

    def linear(
        self, rows: Sequence[sources.Row], train: Sequence[sources.Row], hand: bool = False
    ) -> tuple[list[float], dict[str, Any]]:
        if self.features is None:
            raise SystemExit("--router linear needs --vectors")
        features = self.features.with_hand() if hand else self.features
        return _linear_scores(features, self.heads, rows, train, self.bins)

    def router(
        self,
        name: str,
        rows: Sequence[sources.Row],
        weights: Weights | None,
        held_out: str = "",
        train: Sequence[sources.Row] = (),
    ) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        texts = [routed_text(r.prompt) for r in rows]
        builtin = (
            BuiltinClassifier(self.thresholds, weights=weights, rules=self.rules)
            if weights is not None
            else None
        )
        if name == "random":
            scores = routing_metrics.random_scores(len(rows), self.seed)
        elif name == "oracle":
            scores = [r.gain for r in rows]
        elif name == "builtin":
            assert builtin is not None
            started = time.perf_counter()
            scores = [builtin.score(text) for text in texts]
            extra["ms_per_decision"] = (time.perf_counter() - started) * 1000 / len(rows)
            extra["at_thresholds"] = operating_points(
                [tier_for(s, self.thresholds) for s in scores], rows
            )
        elif name in ("linear", "linear_hand"):
            scores, extra = self.linear(rows, train, hand=name == "linear_hand")
        elif name == "embedding":
            if self.embedder is None:
                raise SystemExit("--router embedding needs --embedding-url")
            scores = self.embedder.scores(held_out, texts, self.log)
            if self.embedder.ms:
                extra["embedding_ms_per_text"] = routing_metrics.quantile(
                    sorted(self.embedder.ms), 0.5
                )
        else:
            if self.llm is None:
                raise SystemExit(f"--router {name} needs --llm-url")

            def progress(count: int) -> None:
                if count % 25 == 0 or count == len(rows):
                    self.log(f"  {name}: {count}/{len(rows)}")

            answers, times = asyncio.run(self.llm.tiers(texts, progress))
            if name == "hybrid":
                assert builtin is not None
                tiers = [
                    a if a is not None else builtin.decide(text).tier
                    for a, text in zip(answers, texts, strict=True)
                ]
            else:
                tiers = [a if a is not None else FRONTIER_INDEX for a in answers]
            scores = [tier / FRONTIER_INDEX for tier in tiers]
            extra["llm_failures"] = sum(answer is None for answer in answers)
            extra["tier_counts"] = {str(t): tiers.count(t) for t in range(len(TIERS))}
            if times:
                extra["llm_ms_median"] = routing_metrics.quantile(sorted(times), 0.5)
            extra["at_thresholds"] = operating_points(tiers, rows)
        return {
            **summarize(scores, rows, self.bins, self.resamples, self.seed),
            **extra,
            "scores": scores,
        }


def own_traffic_halves(
    rows: Sequence[sources.Row], name: str, seed: int = 0
) -> tuple[list[sources.Row], list[sources.Row]]:
    """A source's rows shuffled by a hash of the seed, its name and each prompt, then cut in
    two: (test half, the other half whose first rows are the own labels). The test half
    does not depend on K, so every K of own-traffic is scored on the same prompts."""

    def rank(row: sources.Row) -> bytes:
        return hashlib.sha256(f"{seed}:{name}:".encode() + row.prompt.encode("utf-8")).digest()

    shuffled = sorted(rows, key=rank)
    middle = (len(shuffled) + 1) // 2
    return shuffled[:middle], shuffled[middle:]


def folds(
    protocol: str,
    everything: dict[str, list[sources.Row]],
    chosen: Sequence[str],
    own_labels: int = 0,
    seed: int = 0,
) -> list[tuple[str, list[sources.Row], list[sources.Row]]]:
    """(test source, training rows, test rows) for each source evaluated.

    `own_labels` and `seed` matter to own-traffic only: K, and the shuffle of the halves."""
    found = []
    if protocol == "own-traffic":
        if own_labels < 0:
            raise ValueError("own_labels must be >= 0")
        for name in chosen:
            test, rest = own_traffic_halves(everything[name], name, seed)
            if name in sources.TEST_ONLY:
                others = sources.all_training_rows(everything)
            else:
                others, _ = sources.loso_split(everything, name)
            # Relabelled, the rows get an intercept of their own. (train() refuses rows
            # whose source is test-only; as "traffic" alpaca_eval's are accepted, on
            # purpose: these weights are never written, see the module docstring.)
            traffic = [replace(row, source=TRAFFIC) for row in rest[:own_labels]]
            found.append((name, others + traffic, test))
        return found
    if protocol == "loso":
        for name in chosen:
            if name in sources.TEST_ONLY:
                found.append((name, sources.all_training_rows(everything), everything[name]))
            else:
                train, test = sources.loso_split(everything, name)
                found.append((name, train, test))
        return found
    train = [
        r for r in sources.all_training_rows(everything) if split_of(r.prompt) == "calibration"
    ]
    for name in chosen:
        test = [r for r in everything[name] if split_of(r.prompt) == "heldout"]
        found.append((name, train, test))
    return found


def run(
    routers: Sequence[str],
    protocol: str = "loso",
    chosen_sources: Sequence[str] | None = None,
    sample_size: int | None = None,
    seed: int = 0,
    bins: int = routing_metrics.DEFAULT_BINS,
    resamples: int = 200,
    thresholds: tuple[float, float] = BUILTIN_THRESHOLDS,
    rules: bool = True,
    llm: LLMScorer | None = None,
    config: train_builtin.TrainConfig | None = None,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    embedder: EmbeddingScorer | None = None,
    features: linear_head.Features | None = None,
    dro: float | None = None,
    own_labels: Sequence[int] = OWN_LABELS,
    data: dict[str, list[sources.Row]] | None = None,
) -> dict[str, Any]:
    """Every chosen source's figures under `protocol`. `data`: the sources' rows (default:
    `sources.load_all()`); `own_labels`: the K of own-traffic (sorted, each once)."""
    everything = sources.load_all() if data is None else data
    chosen = list(chosen_sources or everything)
    unknown = [name for name in chosen if name not in everything]
    if unknown:
        raise SystemExit(f"unknown source(s) {', '.join(unknown)} (use {', '.join(everything)})")
    config = config or train_builtin.TrainConfig()
    configs = {"builtin": config, "hybrid": config}
    for router, change in TRAINING_VARIANTS.items():
        configs[router] = replace(config, **change)
    if dro:
        configs["dro"] = replace(config, dro=dro)
    evaluation = Evaluation(thresholds, rules, llm, seed, bins, resamples, log, embedder, features)
    report: dict[str, Any] = {
        "protocol": protocol,
        "sample": sample_size,
        "seed": seed,
        "bins": bins,
        "bootstrap_resamples": resamples,
        "thresholds": list(thresholds),
        "rules": rules,
        "train_config": asdict(config),
        "variant_configs": {
            router: asdict(configs[router]) for router in routers if router in TRAINING_VARIANTS
        },
        "routellm_best_apgr_in_distribution": ROUTELLM_BEST_APGR,
        "sources": {},
    }
    if llm is not None:
        report["llm"] = {"base_url": llm.settings.base_url, "model": llm.settings.model}
    if embedder is not None:
        report["embedding"] = {
            "base_url": embedder.engine.base_url,
            "model": embedder.engine.model,
            "neighbours": embedder.engine.neighbours,
            "bank_prompts": len(embedder.bank.texts),
        }

    def evaluated(chosen_folds: list, title: str, log_line: Callable[[str], None]) -> dict:
        with progress(title) as bar:
            return _evaluate_folds(
                bar(chosen_folds, label="sources", total=len(chosen_folds)),
                routers,
                protocol,
                sample_size,
                seed,
                configs,
                evaluation,
                log_line,
            )

    if protocol == "own-traffic":
        labels = sorted(set(own_labels))
        if not labels or labels[0] < 0:
            raise SystemExit("--own-labels: one or more counts >= 0")
        report["own_labels"] = labels
        report["by_labels"] = []
        for k in labels:
            found = evaluated(
                folds(protocol, everything, chosen, own_labels=k, seed=seed),
                f"Evaluating ({protocol}, K = {k})",
                lambda line, k=k: log(f"K = {k}: {line}"),
            )
            for name, entry in found.items():
                entry.pop("scored")
                entry["own_labels_available"] = len(
                    own_traffic_halves(everything[name], name, seed)[1]
                )
            report["by_labels"].append(_summarised({"own_labels": k, "sources": found}, routers))
        _own_label_gains(report["by_labels"], routers)
        largest = report["by_labels"][-1]
        for key in ("sources", "mean_apgr", "min_apgr"):
            report[key] = largest[key]
        return report
    report["sources"] = evaluated(
        folds(protocol, everything, chosen), f"Evaluating ({protocol})", log
    )
    pool = {name: entry.pop("scored") for name, entry in report["sources"].items()}
    if protocol == "loso":
        report["pooled"] = _pooled(report, pool, routers, bins, resamples, seed)
    return _summarised(report, routers)


def _own_label_gains(by_labels: Sequence[dict[str, Any]], routers: Sequence[str]) -> None:
    """Each K's lead in mean APGR over the smallest K, per router, with a paired interval.

    Every K scores the same test halves with the same seed, so the k-th resample of a
    source draws the same prompts under every K: the leads' intervals are paired."""
    first = by_labels[0]
    for run in by_labels:
        run["mean_apgr_minus_first"] = {
            router: run["mean_apgr"][router] - first["mean_apgr"][router] for router in routers
        }
        measured = [e for e in run["sources"].values() if e["measurable"]]
        base = [e for e in first["sources"].values() if e["measurable"]]
        if not all("apgr_resamples" in e["routers"][r] for e in measured for r in routers):
            continue
        run["mean_apgr_minus_first_ci95"] = {}
        for router in routers:
            leads = [
                (sum(now) - sum(then)) / len(measured)
                for now, then in zip(
                    zip(*(e["routers"][router]["apgr_resamples"] for e in measured), strict=True),
                    zip(*(e["routers"][router]["apgr_resamples"] for e in base), strict=True),
                    strict=True,
                )
            ]
            run["mean_apgr_minus_first_ci95"][router] = routing_metrics.intervals({"apgr": leads})[
                "apgr"
            ]


def _pooled(
    report: dict[str, Any],
    pool: dict[str, dict[str, tuple[list[float], list[float], list[float]]]],
    routers: Sequence[str],
    bins: int,
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """Every router's figures on the mixture of the measurable held-out sources."""
    names = [name for name, entry in report["sources"].items() if entry["measurable"]]
    result: dict[str, Any] = {"sources": names, "routers": {}}
    if not names:
        return result
    for router in routers:
        result["routers"][router] = routing_metrics.pooled(
            [pool[name][router] for name in names], bins, resamples, seed
        )
    first = result["routers"][routers[0]]
    result["weak_quality"] = first["weak_quality"]
    result["strong_quality"] = first["strong_quality"]
    result["prompts"] = first["prompts"]
    return result


def _evaluate_folds(
    chosen_folds: Iterable[tuple[str, list[sources.Row], list[sources.Row]]],
    routers: Sequence[str],
    protocol: str,
    sample_size: int | None,
    seed: int,
    configs: dict[str, train_builtin.TrainConfig],
    evaluation: Evaluation,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Each fold's entry: its data's figures, every router's results, and (under "scored",
    for the pooled figure) every router's scores with the prompts' weak and strong quality."""
    found: dict[str, Any] = {}
    trained = evaluation.models
    for name, train, test in chosen_folds:
        test = sample(test, sample_size, seed)
        weights: dict[str, Weights] = {}
        digest = _rows_digest(train)
        for router in routers:
            if router not in configs:
                continue
            key = (digest, configs[router])
            if key not in trained:
                trained[key] = train_builtin.train(train, configs[router])
            weights[router] = trained[key]
        entry: dict[str, Any] = {
            "prompts": len(test),
            "train_prompts": len(train),
            "train_sources": sorted(sources.counts(train)),
            "test_only": name in sources.TEST_ONLY,
            "weak_quality": routing_metrics.accuracy([r.weak for r in test]),
            "strong_quality": routing_metrics.accuracy([r.strong for r in test]),
            "strong_better": sum(r.strong > r.weak for r in test) / len(test),
            "routers": {},
            "scored": {},
        }
        if protocol in ("loso", "own-traffic"):
            assert name not in entry["train_sources"]
        if protocol == "own-traffic":
            # Only the other half is trained on (as "traffic"): never a test prompt.
            traffic = [r.prompt for r in train if r.source == TRAFFIC]
            assert not set(traffic) & {r.prompt for r in test}
            entry["own_labels_used"] = len(traffic)
        entry["measurable"] = entry["strong_quality"] - entry["weak_quality"] >= MIN_QUALITY_GAP
        if not entry["measurable"]:
            log(f"{name}: strong quality not above weak quality, no PGR")
            found[name] = entry
            continue
        for router in routers:
            result = evaluation.router(
                "builtin" if router in TRAINING_VARIANTS else router,
                test,
                weights.get(router, weights.get("builtin")),
                name,
                train,
            )
            entry["scored"][router] = (
                result.pop("scores"),
                [r.weak for r in test],
                [r.strong for r in test],
            )
            entry["routers"][router] = result
        log(
            f"{name}: {len(test)} prompts, "
            + ", ".join(f"{r} APGR {entry['routers'][r]['apgr']:.3f}" for r in routers)
        )
        found[name] = entry
    return found


def _rows_digest(rows: Sequence[sources.Row]) -> bytes:
    """Names a training set by its rows, so a fold reuses a model trained on the same rows
    (in-distribution: one for all) and never one trained on others with the same sources
    (own-traffic: every K has the sources of K = 1)."""
    found = hashlib.blake2b(digest_size=16)
    for row in rows:
        found.update(f"{row.source}\x00{row.prompt}\x01".encode("utf-8", "surrogatepass"))
    return found.digest()


def _summarised(report: dict[str, Any], routers: Sequence[str]) -> dict[str, Any]:
    """The report with its mean and lowest APGR per router."""
    measured = [e for e in report["sources"].values() if e["measurable"]]
    if not measured:
        raise SystemExit("no source with a strong model better than its weak model")
    report["mean_apgr"] = {
        router: sum(e["routers"][router]["apgr"] for e in measured) / len(measured)
        for router in routers
    }
    report["min_apgr"] = {
        router: min(e["routers"][router]["apgr"] for e in measured) for router in routers
    }
    if all("apgr_resamples" in e["routers"][r] for e in measured for r in routers):
        # Every router is resampled alike within a source (the same seed and prompts), and
        # the sources independently: intervals of the mean, and of its lead over builtin.
        means = {
            router: [
                sum(values) / len(values)
                for values in zip(
                    *(e["routers"][router]["apgr_resamples"] for e in measured), strict=True
                )
            ]
            for router in routers
        }
        report["mean_apgr_ci95"] = {
            router: routing_metrics.intervals({"apgr": values})["apgr"]
            for router, values in means.items()
        }
        if "builtin" in means:
            report["mean_apgr_minus_builtin_ci95"] = {
                router: routing_metrics.intervals(
                    {"apgr": [a - b for a, b in zip(values, means["builtin"], strict=True)]}
                )["apgr"]
                for router, values in means.items()
                if router != "builtin"
            }
    return report


def percent(value: float | None) -> str:
    return "never" if value is None else f"{value * 100:.1f} %"


def _ci(result: dict, name: str, scale: float = 1.0, digits: int = 3) -> str:
    low, high = result.get("ci95", {}).get(name, [None, None])
    if low is None:
        return ""
    return f" [{low * scale:.{digits}f}, {high * scale:.{digits}f}]"


def _pooled_markdown(report: dict[str, Any]) -> list[str]:
    """The secondary table: the routers on the pooled held-out sources."""
    pool = report.get("pooled")
    if not pool or not pool["routers"]:
        return []
    lines = [
        "",
        f"### Secondary: pooled held-out sources ({len(pool['sources'])} sources, "
        "each weighing the same)",
        "",
        "Not the headline. Each prompt keeps the score of the fold that never saw its "
        "source; the measurable sources are pooled into one mixture in which each source "
        f"weighs 1/{len(pool['sources'])}. Weak quality {pool['weak_quality']:.3f}, strong "
        f"quality {pool['strong_quality']:.3f}, {pool['prompts']} prompts.",
        "",
        "| router | APGR | CPT(50 %) | CPT(80 %) |",
        "|---|---:|---:|---:|",
    ]
    for router, result in pool["routers"].items():
        cpts = [
            f"{percent(result[key])}{_ci(result, key, 100, 1).replace(']', ' %]')}"
            for key in ("cpt50", "cpt80")
        ]
        lines.append(
            f"| {router} | {result['apgr']:.3f}{_ci(result, 'apgr')} | {cpts[0]} | {cpts[1]} |"
        )
    return lines


def _own_traffic_markdown(report: dict[str, Any]) -> str:
    """own-traffic's table: one row per source, the built-in APGR at every K side by side,
    then the routers that do not depend on K (random, oracle: the same test half)."""
    runs = report["by_labels"]
    routers = list(report["mean_apgr"])
    learned = [r for r in routers if r in LEARNED]
    fixed = [r for r in routers if r not in LEARNED]
    sample_note = (
        f", sample of {report['sample']} test prompts per source" if report["sample"] else ""
    )
    rules = "on" if report["rules"] else "off"
    columns = [(router, run) for router in learned for run in runs]
    heads = [f"APGR {r} K={run['own_labels']}" for r, run in columns]
    heads += [f"APGR {r}" for r in fixed]
    lines = [
        f"Protocol: own-traffic{sample_note}; each source's test half fixed by a seeded "
        f"shuffle (seed {report['seed']}); the built-in classifier trained on the other "
        'sources plus the first K rows of the other half as one more source, "traffic"; '
        f"built-in rules {rules}; 95 % bootstrap intervals over "
        f"{report['bootstrap_resamples']} resamples. A cell marked (n): the other half has only n rows, so K was capped at n.",
        "",
        "| source | test prompts | other half | strong > weak | " + " | ".join(heads) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(heads),
    ]
    for name in runs[0]["sources"]:
        entries = [run["sources"][name] for run in runs]
        first = entries[0]
        label = f"{name} (test only)" if first["test_only"] else name
        head = (
            f"| {label} | {first['prompts']} | {first['own_labels_available']} | "
            f"{first['strong_better'] * 100:.0f} % | "
        )
        if not first["measurable"]:
            lines.append(
                head
                + " | ".join("n/a" for _ in heads[:-1])
                + f" | strong quality {first['strong_quality']:.2f} ≤ weak "
                f"{first['weak_quality']:.2f}: no PGR |"
            )
            continue
        cells = []
        for router, run in columns:
            entry = run["sources"][name]
            result = entry["routers"][router]
            used = entry["own_labels_used"]
            capped = f" ({used})" if used != run["own_labels"] else ""
            cells.append(f"{result['apgr']:.3f}{_ci(result, 'apgr')}{capped}")
        cells += [f"{first['routers'][r]['apgr']:.3f}" for r in fixed]
        lines.append(head + " | ".join(cells) + " |")
    count = sum(e["measurable"] for e in runs[0]["sources"].values())
    blank = "| | | |"

    def row(title: str, cell: Callable[[str, dict[str, Any]], str]) -> str:
        cells = [cell(r, run) for r, run in columns] + [cell(r, runs[0]) for r in fixed]
        return f"| {title} {blank} " + " | ".join(cells) + " |"

    lines.append(
        row(f"**mean over {count} sources**", lambda r, run: f"**{run['mean_apgr'][r]:.3f}**")
    )
    lines.append(row("min", lambda r, run: f"{run['min_apgr'][r]:.3f}"))
    if all("mean_apgr_ci95" in run for run in runs):
        lines.append(
            row(
                "mean, 95 % interval",
                lambda r, run: "[{:.3f}, {:.3f}]".format(*run["mean_apgr_ci95"][r]),
            )
        )
    if all("mean_apgr_minus_first_ci95" in run for run in runs[1:]):
        k0 = runs[0]["own_labels"]

        def lead(router: str, run: dict[str, Any]) -> str:
            if router in fixed or run is runs[0]:
                return ""
            low, high = run["mean_apgr_minus_first_ci95"][router]
            return f"{run['mean_apgr_minus_first'][router]:+.3f} [{low:+.3f}, {high:+.3f}]"

        lines.append(row(f"mean − K={k0}, 95 % interval", lead))
    return "\n".join(lines) + "\n"


def markdown(report: dict[str, Any]) -> str:
    """The summary table (one row per source), then each router's points."""
    if report["protocol"] == "own-traffic":
        return _own_traffic_markdown(report)
    routers = list(report["mean_apgr"])
    sample_note = f", sample of {report['sample']} per source" if report["sample"] else ""
    rules = "on" if report["rules"] else "off"
    lines = [
        f"Protocol: {report['protocol']}{sample_note}; built-in rules {rules}; "
        f"95 % bootstrap intervals over {report['bootstrap_resamples']} resamples.",
        "",
        "| source | prompts | strong > weak | "
        + " | ".join(f"APGR {r}" for r in routers)
        + " | CPT(50 %) builtin | CPT(80 %) builtin |",
        "|---|---:|---:|" + "---:|" * len(routers) + "---:|---:|",
    ]
    for name, entry in report["sources"].items():
        label = f"{name} (test only)" if entry["test_only"] else name
        if not entry["measurable"]:
            lines.append(
                f"| {label} | {entry['prompts']} | {entry['strong_better'] * 100:.0f} % | "
                + " | ".join("n/a" for _ in routers)
                + f" | strong quality {entry['strong_quality']:.2f} ≤ weak "
                f"{entry['weak_quality']:.2f}: no PGR | |"
            )
            continue
        cells = []
        for router in routers:
            result = entry["routers"][router]
            ci = _ci(result, "apgr") if router in LEARNED else ""
            cells.append(f"{result['apgr']:.3f}{ci}")
        main = entry["routers"].get("builtin") or entry["routers"][routers[0]]
        cpts = [
            f"{percent(main[key])}{_ci(main, key, 100, 1).replace(']', ' %]')}"
            for key in ("cpt50", "cpt80")
        ]
        lines.append(
            f"| {label} | {entry['prompts']} | {entry['strong_better'] * 100:.0f} % | "
            + " | ".join(cells)
            + f" | {cpts[0]} | {cpts[1]} |"
        )
    means = " | ".join(f"**{report['mean_apgr'][r]:.3f}**" for r in routers)
    mins = " | ".join(f"{report['min_apgr'][r]:.3f}" for r in routers)
    count = sum(e["measurable"] for e in report["sources"].values())
    lines += [
        f"| **mean over {count} sources** | | | {means} | | |",
        f"| min | | | {mins} | | |",
    ]
    if "mean_apgr_ci95" in report:
        cells = " | ".join("[{:.3f}, {:.3f}]".format(*report["mean_apgr_ci95"][r]) for r in routers)
        lines.append(f"| mean, 95 % interval | | | {cells} | | |")
    if "mean_apgr_minus_builtin_ci95" in report:
        leads = report["mean_apgr_minus_builtin_ci95"]
        cells = " | ".join(
            "{:+.3f} [{:+.3f}, {:+.3f}]".format(
                report["mean_apgr"][r] - report["mean_apgr"]["builtin"], *leads[r]
            )
            if r in leads
            else ""
            for r in routers
        )
        lines.append(f"| mean − builtin, 95 % interval | | | {cells} | | |")
    lines += _pooled_markdown(report)
    for name, entry in report["sources"].items():
        if not entry["measurable"]:
            continue
        lines += [
            "",
            f"### {name}: weak quality {entry['weak_quality']:.3f}, strong quality "
            f"{entry['strong_quality']:.3f}, trained on {entry['train_prompts']} prompts",
            "",
            "| router | threshold | strong share | quality | quality retained | PGR |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for router, result in entry["routers"].items():
            for point in result["points"]:
                lines.append(
                    f"| {router} | {point['threshold']:.4g} | {percent(point['strong_share'])} "
                    f"| {point['quality']:.3f} | {point['quality_retained']:.3f} | {point['pgr']:.3f} |"
                )
    return "\n".join(lines) + "\n"


COLOURS = {
    "builtin": "#1f77b4",
    "random": "#7f7f7f",
    "oracle": "#2ca02c",
    "llm": "#d62728",
    "hybrid": "#9467bd",
    "linear": "#ff7f0e",
    "linear_hand": "#e377c2",
    "invariant": "#17becf",
    "dro": "#8c564b",
}


def _drawn(report: dict[str, Any]) -> dict[str, Any]:
    """What a chart draws: the report, or under own-traffic its run with the largest K."""
    if report["protocol"] != "own-traffic":
        return report
    largest = report["by_labels"][-1]
    return {**largest, "protocol": f"own-traffic, K = {largest['own_labels']}"}


def svg_chart(report: dict[str, Any]) -> str:
    """The PGR panels as a standalone SVG (no plotting library needed)."""
    report = _drawn(report)
    names = [name for name, entry in report["sources"].items() if entry["measurable"]]
    columns, width, height, pad = 4, 300, 220, 36
    rows = (len(names) + columns - 1) // columns
    total_w, total_h = columns * width, rows * height + 60
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{total_h}" '
        f'font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/>',
        f'<text x="10" y="18" font-size="14">PGR vs strong-call share, {report["protocol"]} '
        f"(built-in mean APGR {report['mean_apgr'].get('builtin', float('nan')):.3f})</text>",
    ]
    legend_x = 10
    for router in report["mean_apgr"]:
        colour = COLOURS.get(router, "#000")
        out.append(
            f'<line x1="{legend_x}" y1="34" x2="{legend_x + 20}" y2="34" stroke="{colour}" '
            f'stroke-width="2"/><text x="{legend_x + 24}" y="38">{router}</text>'
        )
        legend_x += 90
    for index, name in enumerate(names):
        entry = report["sources"][name]
        left = (index % columns) * width + pad
        top = (index // columns) * height + 60
        inner_w, inner_h = width - pad - 10, height - pad - 24
        pgrs = [p["pgr"] for r in entry["routers"].values() for p in r["points"]]
        low, high = min(0.0, *pgrs), max(1.0, *pgrs)

        def y_of(value: float, top=top, inner_h=inner_h, low=low, high=high) -> float:
            return top + 16 + inner_h * (1 - (value - low) / (high - low))

        apgr = entry["routers"].get("builtin", {}).get("apgr")
        title = f"{name}" + (f" (APGR {apgr:.2f})" if apgr is not None else "")
        out.append(f'<text x="{left}" y="{top + 10}">{title}</text>')
        out.append(
            f'<rect x="{left}" y="{top + 16}" width="{inner_w}" height="{inner_h}" '
            f'fill="none" stroke="#ccc"/>'
        )
        for value in (0.0, 1.0):
            y = y_of(value)
            out.append(
                f'<line x1="{left}" y1="{y:.1f}" x2="{left + inner_w}" y2="{y:.1f}" '
                f'stroke="#eee"/><text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">'
                f"{value:g}</text>"
            )
        bottom = top + 16 + inner_h
        out.append(f'<text x="{left}" y="{bottom + 14}">0 %</text>')
        out.append(f'<text x="{left + inner_w}" y="{bottom + 14}" text-anchor="end">100 %</text>')
        out.append(
            f'<text x="{left + inner_w / 2}" y="{bottom + 14}" text-anchor="middle">'
            "strong calls</text>"
        )
        for router, result in entry["routers"].items():
            coords = " ".join(
                f"{left + inner_w * p['strong_share']:.1f},{y_of(p['pgr']):.1f}"
                for p in result["points"]
            )
            out.append(
                f'<polyline points="{coords}" fill="none" stroke="{COLOURS.get(router, "#000")}" '
                f'stroke-width="1.5"/>'
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def svg_to_png(svg: Path, png: Path) -> Path | None:
    """The SVG rendered to PNG by a headless Chromium, when one is installed (kaleido
    is plotly's own exporter, but it fetches a browser of its own at run time)."""
    import shutil
    import subprocess
    import tempfile

    browser = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if browser is None:
        return None
    text = svg.read_text(encoding="utf-8")
    width = text.split('width="', 1)[1].split('"', 1)[0] if 'width="' in text else "1200"
    height = text.split('height="', 1)[1].split('"', 1)[0] if 'height="' in text else "800"
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={png.resolve()}",
                svg.resolve().as_uri(),
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
    return png if done.returncode == 0 and png.is_file() and png.stat().st_size else None


def chart(report: dict[str, Any], path: Path) -> Path:
    """PGR against strong-call share, one panel per source.

    .svg: a standalone SVG. .png: plotly's image export when kaleido is installed, else
    the SVG beside it, rendered to the PNG by a headless Chromium when there is one. Anything else: plotly HTML (plotly.js from its CDN when the name
    ends in .cdn.html, else embedded). Returns the path written."""
    if path.suffix == ".svg":
        path.write_text(svg_chart(report), encoding="utf-8")
        return path
    report = _drawn(report)
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = [name for name, entry in report["sources"].items() if entry["measurable"]]
    columns = 4
    rows = (len(names) + columns - 1) // columns
    figure = make_subplots(
        rows=rows,
        cols=columns,
        subplot_titles=[
            f"{n} (APGR {report['sources'][n]['routers'].get('builtin', {}).get('apgr', 0):.2f})"
            for n in names
        ],
    )
    for index, name in enumerate(names):
        row, column = index // columns + 1, index % columns + 1
        for router, result in report["sources"][name]["routers"].items():
            points = result["points"]
            figure.add_trace(
                go.Scatter(
                    x=[p["strong_share"] * 100 for p in points],
                    y=[p["pgr"] for p in points],
                    mode="lines+markers",
                    name=router,
                    legendgroup=router,
                    showlegend=index == 0,
                    line={"color": COLOURS.get(router)},
                ),
                row=row,
                col=column,
            )
        figure.update_xaxes(title_text="strong calls (%)", row=row, col=column)
        figure.update_yaxes(title_text="PGR", row=row, col=column)
    figure.update_layout(
        title=f"PGR vs strong-call share, {report['protocol']} (built-in mean APGR "
        f"{report['mean_apgr'].get('builtin', float('nan')):.3f})",
        height=330 * rows,
        width=1400,
    )
    if path.suffix == ".png":
        try:
            figure.write_image(str(path))
            return path
        except (ValueError, ImportError, RuntimeError):
            svg = chart(report, path.with_suffix(".svg"))
            return svg_to_png(svg, path) or svg
    figure.write_html(
        str(path), include_plotlyjs="cdn" if path.name.endswith(".cdn.html") else True
    )
    return path


def llm_settings(args: argparse.Namespace) -> ClassifierSettings:
    return ClassifierSettings(
        base_url=args.llm_url,
        model=args.llm_model,
        api_key=args.llm_api_key,
        timeout_ms=args.llm_timeout_ms,
        force_stream=not args.llm_no_stream,
        mode="llm",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xrouter_core.quality.evaluate",
        description="Routing quality across sources, with the RouteLLM paper's metrics.",
    )
    parser.add_argument("--protocol", choices=PROTOCOLS, default="loso")
    parser.add_argument(
        "--own-labels",
        type=int,
        nargs="+",
        default=None,
        metavar="K",
        help="--protocol own-traffic: how many labelled rows of the source's other half to "
        "train on, one run per K (default: " + " ".join(map(str, OWN_LABELS)) + ")",
    )
    parser.add_argument(
        "--router",
        "--mode",
        dest="router",
        nargs="+",
        choices=ROUTERS,
        default=None,
        help="default: builtin random oracle (with --llm-url: llm too)",
    )
    parser.add_argument("--source", nargs="+", default=None, help="default: every source")
    parser.add_argument(
        "--sample", type=int, default=None, help="at most N test prompts per source"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="for --sample, random and the bootstrap"
    )
    parser.add_argument("--bins", type=int, default=routing_metrics.DEFAULT_BINS)
    parser.add_argument("--bootstrap", type=int, default=200, help="resamples (0: no intervals)")
    parser.add_argument("--no-rules", action="store_true", help="the learned score alone")
    parser.add_argument(
        "--thresholds",
        type=parse_thresholds,
        default=BUILTIN_THRESHOLDS,
        help="built-in classifier thresholds (default: its own, "
        + ",".join(map(str, BUILTIN_THRESHOLDS))
        + ")",
    )
    parser.add_argument(
        "--llm-url",
        "--llm-base-url",
        dest="llm_url",
        default="",
        help="OpenAI-compatible endpoint of the LLM classifier",
    )
    parser.add_argument("--llm-model", default="")
    parser.add_argument("--llm-api-key", default="")
    parser.add_argument("--llm-timeout-ms", type=int, default=60000)
    parser.add_argument("--llm-no-stream", action="store_true", help="ask without streaming")
    parser.add_argument("--concurrency", type=int, default=1, help="parallel LLM calls")
    parser.add_argument(
        "--embedding-url",
        default="",
        help="OpenAI-compatible base URL serving /embeddings, for --router embedding",
    )
    parser.add_argument("--embedding-model", default="")
    parser.add_argument("--embedding-api-key", default="")
    parser.add_argument("--embedding-neighbours", type=int, default=embedding.NEIGHBOURS)
    parser.add_argument(
        "--embedding-cache", type=Path, default=None, help=".npz of vectors kept between runs"
    )
    parser.add_argument(
        "--vectors",
        type=Path,
        nargs="+",
        default=None,
        help="for --router linear: .npz of one vector per prompt, keyed by "
        "linear_head.vector_key of the text the classifier sees (several files: their union)",
    )
    parser.add_argument(
        "--vectors-hand",
        action="store_true",
        help="--router linear: append the built-in classifier's hand features to each vector "
        "(--router linear_hand always does, so both can be measured in one run)",
    )
    parser.add_argument(
        "--vectors-partial",
        action="store_true",
        help="the --vectors file covers only some prompts (say, one --sample with the same "
        "--seed): the linear heads train on the fold's training prompts that have a vector; "
        "every test prompt still needs one",
    )
    parser.add_argument(
        "--dro",
        type=float,
        default=TRAINING_VARIANTS["dro"]["dro"],
        help="group-DRO step of --router dro",
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="write the full report as JSON ('-' for stdout)"
    )
    parser.add_argument("--markdown", type=Path, default=None, help="write the tables as markdown")
    parser.add_argument(
        "--chart",
        type=Path,
        default=None,
        help="write the PGR chart: .svg, .html, or .png (needs kaleido; else .svg)",
    )
    args = parser.parse_args(argv)
    if args.own_labels is not None:
        if args.protocol != "own-traffic":
            parser.error("--own-labels needs --protocol own-traffic")
        if min(args.own_labels) < 0:
            parser.error("--own-labels: counts must be >= 0")

    routers = args.router or [
        *DEFAULT_ROUTERS,
        *(["llm"] if args.llm_url else []),
        *(["embedding"] if args.embedding_url else []),
    ]
    embedder = None
    if args.embedding_url:
        embedder = EmbeddingScorer(
            EmbeddingEngine(
                args.embedding_url,
                args.embedding_model,
                args.embedding_api_key,
                args.embedding_neighbours,
            ),
            embedding.build_bank(sources.load_all()),
            args.embedding_cache,
        )
    elif "embedding" in routers:
        parser.error("--router embedding needs --embedding-url")
    features = None
    if args.vectors is not None:
        vectors = {k: v for path in args.vectors for k, v in linear_head.load_vectors(path).items()}
        features = linear_head.Features(vectors, args.vectors_hand, args.vectors_partial)
    elif {"linear", "linear_hand"} & set(routers):
        parser.error("--router linear/linear_hand needs --vectors")
    llm = None
    if args.llm_url:
        llm = LLMScorer(llm_settings(args), args.concurrency)
    elif {"llm", "hybrid"} & set(routers):
        parser.error("--router llm/hybrid needs --llm-url")
    report = run(
        routers,
        args.protocol,
        args.source,
        args.sample,
        args.seed,
        args.bins,
        args.bootstrap,
        args.thresholds,
        not args.no_rules,
        llm,
        embedder=embedder,
        features=features,
        dro=args.dro,
        own_labels=args.own_labels or OWN_LABELS,
    )
    table = markdown(report)
    if args.json is not None:
        text = json.dumps(report, indent=2)
        if str(args.json) == "-":
            print(text)
        else:
            args.json.write_text(text + "\n", encoding="utf-8")
    if args.markdown is not None:
        args.markdown.write_text(table, encoding="utf-8")
    if args.chart is not None:
        written = chart(report, args.chart)
        print(f"chart: {written}", file=sys.stderr)
    if str(args.json) != "-":
        print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
