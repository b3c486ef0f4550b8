"""The RouteLLM evaluation data (MMLU, GSM8K) and its fixed calibration / held-out split.

Each prompt comes with whether the weak model (Mixtral-8x7B) and the strong model
(GPT-4) answered it correctly. Prompts listed in contaminated_prompts.jsonl are left
out, as the RouteLLM paper does. The split is decided by a hash of the prompt text,
so it never changes between runs or machines: training and threshold calibration
read only the calibration half, and reported figures come from the held-out half.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from xrouter_core.routing.extract import classifier_input

WEAK_MODEL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG_MODEL = "gpt-4-1106-preview"
BENCHMARKS: tuple[str, ...] = ("mmlu", "gsm8k")
SPLITS: tuple[str, ...] = ("calibration", "heldout", "all")
# Share of prompts (in percent) whose hash puts them in the calibration split.
CALIBRATION_PERCENT = 50
DATA_ENV = "XROUTER_ROUTELLM_DATA"


@dataclass(frozen=True, slots=True)
class Example:
    benchmark: str
    subject: str
    prompt: str
    weak_correct: bool
    strong_correct: bool


def default_data_dir() -> Path:
    """$XROUTER_ROUTELLM_DATA, else the copy in the checkout (datasets/routellm)."""
    override = os.environ.get(DATA_ENV, "").strip()
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "datasets" / "routellm"


def routed_text(prompt: str) -> str:
    """What the router's classifier sees when the prompt arrives as one user message
    (cleaned and cut to the classifier's input length): training and evaluation score this."""
    return classifier_input([{"role": "user", "content": prompt}])


def split_of(prompt: str) -> str:
    """'calibration' or 'heldout', from the first 8 bytes of the prompt's SHA-256."""
    bucket = int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:8], "big") % 100
    return "calibration" if bucket < CALIBRATION_PERCENT else "heldout"


def _contaminated(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    prompts: set[str] = set()
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                prompts.add(json.loads(line)["eval_prompt"])
    return prompts


def _truth(value: str) -> bool:
    return value.strip().lower() == "true"


def _read_csv(path: Path, benchmark: str, subject: str, skip: set[str]) -> Iterator[Example]:
    """One RouteLLM CSV, as published (`.csv`) or as kept in datasets/ (`.csv.gz`)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            prompt = row["prompt"]
            if prompt in skip:
                continue
            yield Example(
                benchmark, subject, prompt, _truth(row[WEAK_MODEL]), _truth(row[STRONG_MODEL])
            )


def load_benchmark(
    benchmark: str, split: str = "all", data_dir: Path | None = None
) -> list[Example]:
    """The decontaminated examples of one benchmark, in file order, for one split."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r} (use {', '.join(BENCHMARKS)})")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (use {', '.join(SPLITS)})")
    root = (data_dir or default_data_dir()) / benchmark
    if not root.is_dir():
        raise FileNotFoundError(f"no RouteLLM data at {root} (set {DATA_ENV})")
    skip = _contaminated(root / "contaminated_prompts.jsonl")
    examples: list[Example] = []
    if benchmark == "mmlu":
        for path in sorted([*root.glob("mmlu_*.csv"), *root.glob("mmlu_*.csv.gz")]):
            subject = path.name.split(".", 1)[0][len("mmlu_") :]
            examples.extend(_read_csv(path, "mmlu", subject, skip))
    else:
        for path in sorted(root.glob("gsm8k_responses.csv*")):
            examples.extend(_read_csv(path, "gsm8k", "gsm8k", skip))
    if split == "all":
        return examples
    return [example for example in examples if split_of(example.prompt) == split]
