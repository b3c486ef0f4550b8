"""Measure how well a classifier routes, with the RouteLLM paper's metrics.

    python -m xrouter_core.quality.evaluate                       # built-in vs random, held-out split
    python -m xrouter_core.quality.evaluate --router builtin llm random \\
        --llm-base-url http://127.0.0.1:8080/v1 --llm-model gemma --sample 200
    python -m xrouter_core.quality.evaluate --json report.json --markdown report.md --chart report.html

Every router is given what the router's classifier would see for the prompt sent as
one user message (`routellm_data.routed_text`). Data: the RouteLLM MMLU and GSM8K files
(datasets/routellm in the checkout, or $XROUTER_ROUTELLM_DATA), contaminated prompts left
out, and by default only the held-out split, which neither `train_builtin` nor any
threshold choice ever reads. Each prompt says whether the weak model (Mixtral-8x7B) and
the strong one (GPT-4) answered it right.

Routers: `builtin` (the in-process score), `llm` (an OpenAI-compatible endpoint asked
for 0/1/2, as the router does; a failed call counts as frontier, as in llm mode),
`hybrid` (the LLM, the built-in classifier when the LLM fails) and `random`
(RouteLLM's baseline: a seeded uniform score). A router's score sends a prompt to the
strong model when it reaches a threshold; the thresholds swept are RouteLLM's (edges
of 10 equal-count bins of the scores). An LLM's 0/1/2 gives fewer distinct points:
all weak, tier 2 strong, tiers 1-2 strong, all strong. Figures (routing_metrics.py):
strong-call share, quality (share answered right), quality retained (quality / strong
model's quality), PGR per threshold, APGR, CPT(50 %), CPT(80 %). The tiered routers
also report the two operating points of their configured thresholds (frontier only;
medium and frontier) with the medium tier counted as the strong model in the second.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from xrouter_core.config import DEFAULT_THRESHOLDS, ClassifierSettings, parse_thresholds
from xrouter_core.quality import routing_metrics
from xrouter_core.quality.routellm_data import (
    BENCHMARKS,
    SPLITS,
    Example,
    default_data_dir,
    load_benchmark,
    routed_text,
)
from xrouter_core.routing.builtin import BuiltinClassifier, tier_for
from xrouter_core.tiers import FRONTIER_INDEX, TIERS

ROUTERS = ("builtin", "llm", "hybrid", "random")
# The best learned routers of the RouteLLM paper (APGR; Ong et al. 2024, arXiv 2406.18665).
ROUTELLM_BEST_APGR = {"mmlu": 0.603, "gsm8k": 0.622}


def sample(examples: Sequence[Example], size: int | None, seed: int) -> list[Example]:
    """A deterministic subset: the `size` prompts with the smallest seeded hash, in file order."""
    if not size or size >= len(examples):
        return list(examples)

    def rank(example: Example) -> bytes:
        return hashlib.sha256(f"{seed}:".encode() + example.prompt.encode("utf-8")).digest()

    chosen = set(map(id, sorted(examples, key=rank)[:size]))
    return [example for example in examples if id(example) in chosen]


def operating_points(
    tiers: Sequence[int], examples: Sequence[Example]
) -> dict[str, dict[str, float]]:
    """The configured thresholds' two readings of a tiered decision."""
    weak = [e.weak_correct for e in examples]
    strong = [e.strong_correct for e in examples]
    return {
        "frontier_only": routing_metrics.operating_point(tiers, weak, strong, 2).as_dict(),
        "medium_and_frontier": routing_metrics.operating_point(tiers, weak, strong, 1).as_dict(),
    }


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


def evaluate_router(
    name: str,
    examples: Sequence[Example],
    builtin: BuiltinClassifier,
    llm: LLMScorer | None,
    seed: int,
    bins: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    weak = [e.weak_correct for e in examples]
    strong = [e.strong_correct for e in examples]
    extra: dict[str, Any] = {}
    if name == "random":
        scores = routing_metrics.random_scores(len(examples), seed)
    elif name == "builtin":
        started = time.perf_counter()
        scores = [builtin.score(routed_text(e.prompt)) for e in examples]
        extra["ms_per_decision"] = (time.perf_counter() - started) * 1000 / len(examples)
        extra["at_thresholds"] = operating_points(
            [tier_for(s, builtin.thresholds) for s in scores], examples
        )
    else:
        if llm is None:
            raise SystemExit(f"--router {name} needs --llm-base-url")

        def progress(count: int) -> None:
            if count % 25 == 0 or count == len(examples):
                log(f"  {name}: {count}/{len(examples)}")

        texts = [routed_text(e.prompt) for e in examples]
        answers, times = asyncio.run(llm.tiers(texts, progress))
        failures = sum(answer is None for answer in answers)
        if name == "hybrid":
            tiers = [
                a if a is not None else builtin.decide(text).tier
                for a, text in zip(answers, texts, strict=True)
            ]
        else:
            tiers = [a if a is not None else FRONTIER_INDEX for a in answers]
        scores = [tier / FRONTIER_INDEX for tier in tiers]
        extra["llm_failures"] = failures
        extra["tier_counts"] = {str(t): tiers.count(t) for t in range(len(TIERS))}
        if times:
            ordered = sorted(times)
            extra["llm_ms_median"] = routing_metrics.quantile(ordered, 0.5)
        extra["at_thresholds"] = operating_points(tiers, examples)
    summary = routing_metrics.summarize(scores, weak, strong, bins)
    return {**summary, **extra}


def run(
    routers: Sequence[str],
    benchmarks: Sequence[str],
    split: str,
    sample_size: int | None,
    seed: int,
    bins: int,
    thresholds: tuple[float, float],
    llm: LLMScorer | None,
    data_dir: Path | None = None,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> dict[str, Any]:
    builtin = BuiltinClassifier(thresholds)
    report: dict[str, Any] = {
        "data": str(data_dir or default_data_dir()),
        "split": split,
        "sample": sample_size,
        "seed": seed,
        "bins": bins,
        "thresholds": list(thresholds),
        "routellm_best_apgr": ROUTELLM_BEST_APGR,
        "benchmarks": {},
    }
    if llm is not None:
        report["llm"] = {"base_url": llm.settings.base_url, "model": llm.settings.model}
    for benchmark in benchmarks:
        examples = sample(load_benchmark(benchmark, split, data_dir), sample_size, seed)
        log(f"{benchmark}: {len(examples)} prompts ({split})")
        entry: dict[str, Any] = {
            "prompts": len(examples),
            "weak_quality": routing_metrics.accuracy([e.weak_correct for e in examples]),
            "strong_quality": routing_metrics.accuracy([e.strong_correct for e in examples]),
            "routers": {},
        }
        for name in routers:
            entry["routers"][name] = evaluate_router(name, examples, builtin, llm, seed, bins, log)
            log(f"  {name}: APGR {entry['routers'][name]['apgr']:.3f}")
        report["benchmarks"][benchmark] = entry
    return report


def percent(value: float | None) -> str:
    return "never" if value is None else f"{value * 100:.1f} %"


def markdown(report: dict[str, Any]) -> str:
    """The summary table, then each router's points (one row per threshold)."""
    sample_note = (
        f", sample of {report['sample']} per benchmark (seed {report['seed']})"
        if report["sample"]
        else ""
    )
    lines = [
        f"Split: {report['split']}{sample_note}. Thresholds: {report['thresholds'][0]}, {report['thresholds'][1]}.",
        "",
        "| benchmark | router | prompts | APGR | CPT(50 %) | CPT(80 %) | frontier share at thresholds | PGR there |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for benchmark, entry in report["benchmarks"].items():
        for name, result in entry["routers"].items():
            at = result.get("at_thresholds", {}).get("frontier_only")
            share, gap = (percent(at["strong_share"]), f"{at['pgr']:.3f}") if at else ("-", "-")
            lines.append(
                f"| {benchmark} | {name} | {entry['prompts']} | {result['apgr']:.3f} | {percent(result['cpt50'])} "
                f"| {percent(result['cpt80'])} | {share} | {gap} |"
            )
    best = report["routellm_best_apgr"]
    lines += [
        "",
        f"RouteLLM paper, best learned routers: APGR {best['mmlu']} (MMLU), {best['gsm8k']} (GSM8K); random 0.5.",
    ]
    for benchmark, entry in report["benchmarks"].items():
        lines += [
            "",
            f"### {benchmark}: weak quality {entry['weak_quality']:.3f}, strong quality {entry['strong_quality']:.3f}",
            "",
            "| router | threshold | strong share | quality | quality retained | PGR |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, result in entry["routers"].items():
            for point in result["points"]:
                lines.append(
                    f"| {name} | {point['threshold']:.4g} | {percent(point['strong_share'])} | {point['quality']:.3f} "
                    f"| {point['quality_retained']:.3f} | {point['pgr']:.3f} |"
                )
    return "\n".join(lines) + "\n"


def chart(report: dict[str, Any], path: Path) -> None:
    """Quality against strong-call share, one panel per benchmark (plotly, self-contained HTML)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    benchmarks = list(report["benchmarks"])
    figure = make_subplots(rows=1, cols=len(benchmarks), subplot_titles=benchmarks)
    for column, benchmark in enumerate(benchmarks, start=1):
        entry = report["benchmarks"][benchmark]
        for name, result in entry["routers"].items():
            points = result["points"]
            figure.add_trace(
                go.Scatter(
                    x=[p["strong_share"] * 100 for p in points],
                    y=[p["quality"] * 100 for p in points],
                    mode="lines+markers",
                    name=f"{name} ({benchmark}, APGR {result['apgr']:.3f})",
                ),
                row=1,
                col=column,
            )
        for label, value, dash in (
            ("weak model", entry["weak_quality"], "dot"),
            ("strong model", entry["strong_quality"], "dash"),
        ):
            figure.add_hline(
                y=value * 100, line_dash=dash, annotation_text=label, row=1, col=column
            )
        figure.update_xaxes(title_text="strong-model calls (%)", row=1, col=column)
        figure.update_yaxes(title_text="quality (% correct)", row=1, col=column)
    figure.update_layout(title=f"Routing quality on the {report['split']} split", height=500)
    figure.write_html(str(path), include_plotlyjs=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xrouter_core.quality.evaluate",
        description="Routing quality with the RouteLLM paper's metrics.",
    )
    parser.add_argument("--router", nargs="+", choices=ROUTERS, default=["builtin", "random"])
    parser.add_argument("--benchmark", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default="heldout",
        help="default: heldout (never used for training)",
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=None,
        help="at most N prompts per benchmark (for slow LLM runs)",
    )
    parser.add_argument("--seed", type=int, default=0, help="for --sample and the random router")
    parser.add_argument("--bins", type=int, default=routing_metrics.DEFAULT_BINS)
    parser.add_argument(
        "--thresholds",
        type=parse_thresholds,
        default=DEFAULT_THRESHOLDS,
        help="built-in classifier thresholds, e.g. 0.33,0.66",
    )
    parser.add_argument(
        "--llm-base-url", default="", help="OpenAI-compatible endpoint of the LLM classifier"
    )
    parser.add_argument("--llm-model", default="")
    parser.add_argument("--llm-api-key", default="")
    parser.add_argument("--llm-timeout-ms", type=int, default=60000)
    parser.add_argument("--llm-no-stream", action="store_true", help="ask without streaming")
    parser.add_argument("--concurrency", type=int, default=1, help="parallel LLM calls")
    parser.add_argument("--data", type=Path, default=None, help="RouteLLM data directory")
    parser.add_argument(
        "--json", type=Path, default=None, help="write the full report as JSON ('-' for stdout)"
    )
    parser.add_argument("--markdown", type=Path, default=None, help="write the tables as markdown")
    parser.add_argument("--chart", type=Path, default=None, help="write a plotly HTML chart")
    args = parser.parse_args(argv)

    llm = None
    if args.llm_base_url:
        llm = LLMScorer(
            ClassifierSettings(
                base_url=args.llm_base_url,
                model=args.llm_model,
                api_key=args.llm_api_key,
                timeout_ms=args.llm_timeout_ms,
                force_stream=not args.llm_no_stream,
                mode="llm",
            ),
            args.concurrency,
        )
    elif {"llm", "hybrid"} & set(args.router):
        parser.error("--router llm/hybrid needs --llm-base-url")
    report = run(
        args.router,
        args.benchmark,
        args.split,
        args.sample,
        args.seed,
        args.bins,
        args.thresholds,
        llm,
        args.data,
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
        chart(report, args.chart)
    if str(args.json) != "-":
        print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
