#!/usr/bin/env python3
"""ulab-uiuc/LLMRouter data/dcrouter_preprocessed/{train,test}.json -> llmrouter_dc.jsonl.gz

Each record is {"question", "scores": {model: performance in [0,1]}, ("cluster_id")}.
The files carry no task name, so the task is recovered by matching the question text
(exact, then whitespace/case-normalised) against data/example_data/query_data/
default_query_{train,test}.jsonl ("task_name"), which hold the same queries.
Whole tasks named like an off-limits benchmark (arc_challenge, mbpp, winogrande, mt-bench)
are dropped, as are prompts matching the MT-Bench fragment screen in common.py.

Strong / weak: strong = the model with the highest mean score over the kept training rows
(llama-3.1-nemotron-51b-instruct); weak = mistral-7b-instruct-v0.3, the classic 7B model
(the two llama3-chatqa models and codegemma-7b score lower but are specialised models whose
low means come largely from answer-format failures).  All 9 models stay in "models".
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BLOCKED_TASK_RE, blocked_prompt, git_dir, git_show, norm, resolve, summarise, write_jsonl_gz

SOURCE = "llmrouter_dc"
REPO = "ulab-uiuc/LLMRouter"
STRONG = "llama-3.1-nemotron-51b-instruct"
WEAK = "mistral-7b-instruct-v0.3"


def main():
    gd = git_dir(REPO)
    commit = resolve(gd, "HEAD")
    task_of, task_of_norm = {}, {}
    for split in ("train", "test"):
        for line in git_show(gd, commit, f"data/example_data/query_data/default_query_{split}.jsonl").decode().split("\n"):
            if line.strip():
                q = json.loads(line)
                task_of.setdefault(q["query"], q["task_name"])
                task_of_norm.setdefault(norm(q["query"]), q["task_name"])
    rows, dropped_tasks, dropped_block, unmatched = [], {}, [], 0
    per_task = {}
    sums = {}
    for split in ("train", "test"):
        data = json.loads(git_show(gd, commit, f"data/dcrouter_preprocessed/{split}.json"))
        for i, rec in enumerate(data):
            qtext = rec["question"]
            task = task_of.get(qtext) or task_of_norm.get(norm(qtext))
            if task is None:
                unmatched += 1
                task = "unknown"
            if BLOCKED_TASK_RE.search(task):
                dropped_tasks[task] = dropped_tasks.get(task, 0) + 1
                continue
            if blocked_prompt(qtext):
                dropped_block.append(f"{split}#{i}")
                continue
            scores = {k: float(v) for k, v in rec["scores"].items()}
            if split == "train":
                for k, v in scores.items():
                    s = sums.setdefault(k, [0.0, 0])
                    s[0] += v
                    s[1] += 1
            row = {
                "id": f"{SOURCE}:{split}:{i}", "source": SOURCE, "split": split, "task": task,
                "prompt": qtext, "strong": scores.get(STRONG), "weak": scores.get(WEAK),
                "models": dict(sorted(scores.items())),
            }
            if "cluster_id" in rec:
                row["cluster_id"] = rec["cluster_id"]
            rows.append(row)
            pt = per_task.setdefault(task, {"rows": 0, "strong_gt_weak": 0})
            pt["rows"] += 1
            pt["strong_gt_weak"] += int(row["strong"] is not None and row["weak"] is not None and row["strong"] > row["weak"])
    write_jsonl_gz(SOURCE, rows)
    for t, v in per_task.items():
        v["frac_strong_gt_weak"] = round(v["strong_gt_weak"] / v["rows"], 4)
    summarise(SOURCE, rows, {
        "repo": REPO, "commit": commit,
        "paths": ["data/dcrouter_preprocessed/train.json", "data/dcrouter_preprocessed/test.json",
                  "data/example_data/query_data/default_query_train.jsonl (task names)",
                  "data/example_data/query_data/default_query_test.jsonl (task names)"],
        "per_task": dict(sorted(per_task.items())),
        "per_split": {s: sum(1 for r in rows if r["split"] == s) for s in ("train", "test")},
        "dropped_tasks": dropped_tasks, "dropped_blocklist": dropped_block, "unmatched_task": unmatched,
        "model_means_train": {k: round(v[0] / v[1], 4) for k, v in sorted(sums.items(), key=lambda kv: -kv[1][0] / kv[1][1])},
        "strong_model": STRONG, "weak_model": WEAK,
    })


if __name__ == "__main__":
    main()
