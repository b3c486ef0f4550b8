"""Every routing data source the quality tools read, deduplicated, and the leave-one-source-out split.

A row is one prompt with the strong and the weak model's score on it, in [0, 1]
(correctness, or a judge's grade). The sources (datasets/<dir>/, see each README):

| source | from | strong vs weak |
|---|---|---|
| arena_hard_v1 | lmarena/arena-hard-auto, Arena chat and coding prompts | gpt-4-0314 vs Mistral-7B (GPT-4 grades) |
| zeroeval_gsm, zeroeval_crux, zeroeval_math_l5 | yuchenlin/ZeroEval | gpt-4o vs Llama-3.1-8B (correctness) |
| routellm_mmlu, routellm_gsm8k | lm-sys/RouteLLM (datasets/routellm) | GPT-4 vs Mixtral-8x7B (correctness) |
| llmrouter_math, _mcq, _openqa, _code, _other | ulab-uiuc/LLMRouter, task groups | nemotron-51b vs Mistral-7B |
| alpaca_eval (**test only**, CC-BY-NC-4.0) | tatsu-lab/alpaca_eval | GPT-4-Turbo vs OpenHermes-2.5-Mistral-7B (judge preference) |

Deduplication: a prompt (normalised: whitespace collapsed, lowercased) belongs to one
source only, the first of PRIORITY that has it; later copies are dropped, within a source
too. alpaca_eval comes first, so nothing a trainer reads shares a prompt with it. GSM8K's
test set is in both ZeroEval and RouteLLM: it is kept as zeroeval_gsm, so routellm_gsm8k
keeps almost nothing (1 prompt) and is left out of the sources that are reported.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from xrouter_core.quality.routellm_data import load_benchmark

DATASETS = Path(__file__).resolve().parents[2] / "datasets"

# LLMRouter's tasks, grouped by kind (each group is one source of the evaluation).
LLMROUTER_GROUPS = {
    "agentverse-mgsm": "llmrouter_math",
    "gsm8k": "llmrouter_math",
    "math": "llmrouter_math",
    "commonsense_qa": "llmrouter_mcq",
    "openbook_qa": "llmrouter_mcq",
    "mmlu": "llmrouter_mcq",
    "gpqa": "llmrouter_mcq",
    "natural_qa": "llmrouter_openqa",
    "trivia_qa": "llmrouter_openqa",
    "human_eval": "llmrouter_code",
    "agentverse-logicgrid": "llmrouter_other",
    "commongen": "llmrouter_other",
}
TEST_ONLY = ("alpaca_eval",)
# Dedup order: the first source holding a prompt keeps it.
PRIORITY: tuple[str, ...] = (
    "alpaca_eval",
    "arena_hard_v1",
    "zeroeval_gsm",
    "zeroeval_crux",
    "zeroeval_math_l5",
    "routellm_mmlu",
    "routellm_gsm8k",
    "llmrouter_math",
    "llmrouter_mcq",
    "llmrouter_openqa",
    "llmrouter_code",
    "llmrouter_other",
)
# Sources smaller than this after dedup are not reported (routellm_gsm8k: 1 prompt).
MIN_PROMPTS = 50


@dataclass(frozen=True, slots=True)
class Row:
    source: str
    task: str
    prompt: str
    strong: float
    weak: float
    # Mean over every graded model of max(strong - model, 0): how much the strong model
    # beats the population of models on this prompt (None when only the pair is known).
    population_gain: float | None = None

    @property
    def gain(self) -> float:
        return self.strong - self.weak


def normalise(prompt: str) -> str:
    return " ".join(prompt.split()).lower()


def _jsonl(path: Path) -> Iterable[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def _staged(path: Path, source_of) -> Iterable[Row]:
    for record in _jsonl(path):
        if record.get("strong") is None or record.get("weak") is None:
            continue
        task = str(record.get("task", record["source"]))
        strong = record["strong"]
        others = list(record.get("models", {}).values())
        population = (
            sum(max(strong - score, 0.0) for score in others) / len(others) if others else None
        )
        yield Row(source_of(task), task, record["prompt"], strong, record["weak"], population)


def _staged_files(root: Path) -> list[tuple[Path, Callable[[str], str | None]]]:
    """The staged JSON-lines files, each with how a record's task names its source."""
    files: list[tuple[Path, Callable[[str], str | None]]] = [
        (root / name / f"{name}.jsonl.gz", lambda _t, n=name: n)
        for name in ("alpaca_eval", "arena_hard_v1")
    ]
    files += [
        (root / "zeroeval" / f"{name}.jsonl.gz", lambda _t, n=name: n)
        for name in ("zeroeval_gsm", "zeroeval_crux", "zeroeval_math_l5")
    ]
    files.append((root / "llmrouter_dc" / "llmrouter_dc.jsonl.gz", LLMROUTER_GROUPS.get))
    return files


def raw_rows(root: Path = DATASETS) -> dict[str, list[Row]]:
    """Every source's rows as stored, before deduplication."""
    found: dict[str, list[Row]] = {name: [] for name in PRIORITY}
    for path, source_of in _staged_files(root):
        for row in _staged(path, source_of):
            if row.source:
                found[row.source].append(row)
    for benchmark in ("mmlu", "gsm8k"):
        found[f"routellm_{benchmark}"] = [
            Row(
                f"routellm_{benchmark}",
                e.subject,
                e.prompt,
                float(e.strong_correct),
                float(e.weak_correct),
            )
            for e in load_benchmark(benchmark, "all", root / "routellm")
        ]
    return found


def model_grades(root: Path = DATASETS) -> dict[str, dict[str, float]]:
    """Every graded model's score per prompt (keyed by the normalised prompt), for the
    staged sources whose files list them (not RouteLLM's, which grade only the pair).

    Kept apart from `Row`, which every trainer loads: tens of models per prompt would
    multiply its memory for the one tool that reads them (`quality.ceiling`). A prompt
    stored twice keeps its first grades, as deduplication keeps its first row."""
    found: dict[str, dict[str, float]] = {}
    for path, _source_of in _staged_files(root):
        for record in _jsonl(path):
            models = record.get("models")
            if isinstance(models, dict) and models:
                found.setdefault(normalise(record["prompt"]), models)
    return found


def deduplicate(by_source: dict[str, list[Row]]) -> dict[str, list[Row]]:
    """Each normalised prompt kept once, in the first source of PRIORITY that has it."""
    seen: set[str] = set()
    kept: dict[str, list[Row]] = {}
    for name in PRIORITY:
        kept[name] = []
        for row in by_source.get(name, []):
            key = normalise(row.prompt)
            if key not in seen:
                seen.add(key)
                kept[name].append(row)
    return kept


def load_all(root: Path = DATASETS) -> dict[str, list[Row]]:
    """The deduplicated rows of every source that has enough of them."""
    rows = deduplicate(raw_rows(root))
    return {name: rows[name] for name in PRIORITY if len(rows[name]) >= MIN_PROMPTS}


def trainable(rows: dict[str, list[Row]]) -> list[str]:
    return [name for name in rows if name not in TEST_ONLY]


def loso_split(rows: dict[str, list[Row]], held_out: str) -> tuple[list[Row], list[Row]]:
    """Training rows (every trainable source but `held_out`) and the held-out source's rows."""
    train = [row for name in trainable(rows) if name != held_out for row in rows[name]]
    return train, list(rows[held_out])


def all_training_rows(rows: dict[str, list[Row]]) -> list[Row]:
    """What the bundled weights are trained on: every source but the test-only ones."""
    return [row for name in trainable(rows) for row in rows[name]]


def counts(rows: Sequence[Row]) -> dict[str, int]:
    return dict(sorted(Counter(row.source for row in rows).items()))
