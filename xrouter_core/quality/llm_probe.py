"""Measure an LLM classifier against the built-in one: time to decision and ranking quality.

    python -m xrouter_core.quality.llm_probe --base-url http://127.0.0.1:8000/v1 \\
        --model gemma3-270m --data arena_hard_v1.jsonl.gz alpaca_eval.jsonl.gz

Each data file holds JSON lines with `prompt`, `strong` and `weak` (the two models'
quality on that prompt, 0..1); the label of a prompt is strong > weak, "the strong model
did better". For each file, a fixed sample (by a hash of the prompt) is sent, one at a
time, through the router's own LLMClassifier (the same request, the same score), and
scored by the built-in classifier. It prints, per file and over all of them:
  AUC   how well the score ranks prompts the strong model did better on above the rest
        (0.5 = chance),
  APGR  RouteLLM's average performance gap recovered over the score's thresholds, with
        the files' strong and weak qualities (quality/routing_metrics.py),
  p50, p90  the LLM's time to decision in ms, after `--warmup` requests that are not
        counted (the built-in classifier's time is printed too).
An offline tool: the running router never imports it.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

import httpx

from xrouter_core.config import ClassifierSettings
from xrouter_core.quality.routing_metrics import apgr, auc, quantile, sweep
from xrouter_core.routing.builtin import BuiltinClassifier
from xrouter_core.routing.classifier import LLMClassifier
from xrouter_core.routing.extract import MAX_INPUT_CHARS, truncate_middle


@dataclass
class Row:
    source: str
    prompt: str
    strong: float
    weak: float

    @property
    def label(self) -> bool:
        return self.strong > self.weak


@dataclass
class Result:
    row: Row
    llm: float | None = None
    llm_ms: float = 0.0
    builtin: float = 0.0
    builtin_ms: float = 0.0
    detail: str = ""


def read_rows(path: Path, size: int) -> list[Row]:
    opener = gzip.open if path.suffix == ".gz" else open
    rows: list[Row] = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            doc = json.loads(line)
            if not isinstance(doc.get("prompt"), str) or None in (
                doc.get("strong"),
                doc.get("weak"),
            ):
                continue
            source = str(doc.get("source") or path.name.split(".")[0])
            rows.append(Row(source, doc["prompt"], float(doc["strong"]), float(doc["weak"])))

    def key(row: Row) -> str:
        return hashlib.sha256(row.prompt.encode()).hexdigest()

    rows.sort(key=key)
    return rows[:size] if size else rows


def figures(results: Sequence[Result], which: str) -> dict:
    scored = [r for r in results if (r.llm if which == "llm" else r.builtin) is not None]
    scores = [float(r.llm if which == "llm" else r.builtin) for r in scored]  # type: ignore[arg-type]
    labels = [r.row.label for r in scored]
    out: dict = {"prompts": len(scored), "auc": auc(scores, labels)}
    if scored:
        weak = [r.row.weak for r in scored]
        strong = [r.row.strong for r in scored]
        out["apgr"] = apgr(sweep(scores, weak, strong))  # type: ignore[arg-type]
        times = sorted(r.llm_ms if which == "llm" else r.builtin_ms for r in scored)
        out["p50_ms"] = quantile(times, 0.5)
        out["p90_ms"] = quantile(times, 0.9)
    return out


async def probe(args: argparse.Namespace, rows: list[Row]) -> list[Result]:
    settings = ClassifierSettings(
        base_url=args.base_url,
        model=args.model,
        timeout_ms=args.timeout_ms,
        force_stream=not args.no_stream,
        api=args.api,
        mode="llm",
    )
    builtin = BuiltinClassifier()
    results: list[Result] = []
    async with httpx.AsyncClient(trust_env=False, timeout=args.timeout_ms / 1000) as client:
        classifier = LLMClassifier(settings, client)
        for row in rows[: args.warmup]:
            await classifier.classify(truncate_middle(row.prompt, MAX_INPUT_CHARS))
        for index, row in enumerate(rows, 1):
            text = truncate_middle(row.prompt, MAX_INPUT_CHARS)
            result = Result(row)
            decision = await classifier.classify(text)
            if decision is not None:
                result.llm, result.llm_ms, result.detail = (
                    decision.score,
                    decision.ms,
                    decision.detail,
                )
            started = time.perf_counter()
            result.builtin = builtin.score(text)
            result.builtin_ms = (time.perf_counter() - started) * 1000
            results.append(result)
            if args.verbose:
                print(
                    f"{index:4d} {row.source:18s} label={int(row.label)} "
                    f"ms={result.llm_ms:.0f} {result.detail}"
                )
        print(f"LLM path: {classifier.api}", file=sys.stderr)
    return results


def table(report: dict) -> str:
    lines = [
        "| data | prompts | strong better | AUC LLM | AUC builtin | APGR LLM | APGR builtin | LLM p50 ms | LLM p90 ms | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def num(value: float | None, digits: int = 3) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    for name, part in report.items():
        llm, builtin = part["llm"], part["builtin"]
        lines.append(
            f"| {name} | {part['prompts']} | {part['positives']} | {num(llm['auc'])} | "
            f"{num(builtin['auc'])} | {num(llm.get('apgr'))} | {num(builtin.get('apgr'))} | "
            f"{num(llm.get('p50_ms'), 0)} | {num(llm.get('p90_ms'), 0)} | {part['failed']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xrouter_core.quality.llm_probe")
    parser.add_argument("--base-url", required=True, help="the classifier engine's URL")
    parser.add_argument("--model", default="", help="the model name (picks the template)")
    parser.add_argument("--api", choices=("auto", "completions", "chat"), default="auto")
    parser.add_argument("--data", nargs="+", type=Path, required=True, help="JSON lines files")
    parser.add_argument("--per-file", type=int, default=100, help="prompts per file (0: all)")
    parser.add_argument("--warmup", type=int, default=5, help="uncounted requests first")
    parser.add_argument("--timeout-ms", type=int, default=60_000)
    parser.add_argument("--no-stream", action="store_true", help="whole answers, no early abort")
    parser.add_argument("--json", type=Path, help="also write the figures and scores here")
    parser.add_argument("--verbose", action="store_true", help="one line per prompt")
    args = parser.parse_args(argv)

    # Round-robin over the files: a run cut short still covers each of them.
    per_file = [read_rows(path, args.per_file) for path in args.data]
    rows = [row for group in zip_longest(*per_file) for row in group if row is not None]
    results = asyncio.run(probe(args, rows))

    groups: dict[str, list[Result]] = {}
    for result in results:
        groups.setdefault(result.row.source, []).append(result)
    groups["all"] = results
    report = {
        name: {
            "prompts": len(part),
            "positives": sum(r.row.label for r in part),
            "failed": sum(r.llm is None for r in part),
            "llm": figures(part, "llm"),
            "builtin": figures(part, "builtin"),
        }
        for name, part in groups.items()
    }
    print(table(report))
    if args.json:
        detail = [
            {
                "source": r.row.source,
                "label": r.row.label,
                "llm": r.llm,
                "builtin": r.builtin,
                "llm_ms": r.llm_ms,
            }
            for r in results
        ]
        args.json.write_text(json.dumps({"report": report, "scores": detail}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
