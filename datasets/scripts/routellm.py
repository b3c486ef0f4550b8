#!/usr/bin/env python3
"""The project's own copy datasets/routellm/ (read-only) -> routellm.jsonl.gz

Parsed the way xrouter_core/routellm_data.py parses it (re-implemented here so the script needs
nothing but the standard library): MMLU mmlu_<subject>.csv(.gz) and GSM8K
gsm8k_responses.csv(.gz), columns prompt / mistralai/Mixtral-8x7B-Instruct-v0.1 /
gpt-4-1106-preview with "True"/"False" correctness; prompts whose text is in the benchmark's
contaminated_prompts.jsonl ("eval_prompt") are left out, as routellm_data.py does.
Each row also carries "split": the calibration/heldout split of routellm_data.split_of
(first 8 bytes of SHA-256 of the prompt, mod 100, < 50 -> calibration).
"""

import csv
import gzip
import hashlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import blocked_prompt, stable_id, summarise, write_jsonl_gz

SOURCE = "routellm"
DATA = Path(os.environ.get("ROUTELLM_DATA", str(Path(__file__).resolve().parents[1] / "routellm")))
WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG = "gpt-4-1106-preview"


def split_of(prompt):
    b = int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:8], "big") % 100
    return "calibration" if b < 50 else "heldout"


def contaminated(path):
    out = set()
    if path.is_file():
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    out.add(json.loads(line)["eval_prompt"])
    return out


def read_csv(path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        yield from csv.DictReader(f)


def main():
    rows, dropped, skipped, per_task = [], [], {}, {}
    for bench in ("mmlu", "gsm8k"):
        root = DATA / bench
        skip = contaminated(root / "contaminated_prompts.jsonl")
        if bench == "mmlu":
            paths = sorted([*root.glob("mmlu_*.csv"), *root.glob("mmlu_*.csv.gz")])
        else:
            paths = sorted(root.glob("gsm8k_responses.csv*"))
        for path in paths:
            subject = path.name.split(".", 1)[0][len("mmlu_"):] if bench == "mmlu" else "gsm8k"
            for i, r in enumerate(read_csv(path)):
                prompt = r["prompt"]
                if prompt in skip:
                    skipped[bench] = skipped.get(bench, 0) + 1
                    continue
                if blocked_prompt(prompt):
                    dropped.append(f"{bench}/{subject}#{i}")
                    continue
                w = float(r[WEAK].strip().lower() == "true")
                s = float(r[STRONG].strip().lower() == "true")
                rows.append({
                    "id": stable_id(SOURCE, bench, subject, str(i), prompt), "source": SOURCE,
                    "task": bench, "subject": subject, "prompt": prompt, "strong": s, "weak": w,
                    "models": {WEAK: w, STRONG: s}, "split": split_of(prompt),
                })
                per_task[bench] = per_task.get(bench, 0) + 1
    write_jsonl_gz(SOURCE, rows)
    summarise(SOURCE, rows, {
        "data_dir": str(DATA), "per_task": per_task, "contaminated_skipped": skipped,
        "dropped_blocklist": dropped, "strong_model": STRONG, "weak_model": WEAK,
        "per_task_frac_strong_gt_weak": {
            t: round(sum(1 for r in rows if r["task"] == t and r["strong"] > r["weak"]) / n, 4)
            for t, n in per_task.items()},
    })


if __name__ == "__main__":
    main()
