#!/usr/bin/env python3
"""lmarena/arena-hard-auto @ 2c25d24, data/arena-bench-v1/ -> arena_hard_v1.jsonl.gz

At that commit the judgments are *single-answer* GPT-4 gradings against a GPT-4 reference
answer (rating [[1]]..[[10]], field "score"), not pairwise A>>B verdicts.  Per question and
model: score = (rating - 1) / 9 in [0, 1]; ratings that are missing/None or outside 1..10
(e.g. -1) are left out of "models" for that question.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import blocked_prompt, git_dir, git_ls, git_show, resolve, summarise, write_jsonl_gz

SOURCE = "arena_hard_v1"
REPO = "lmarena/arena-hard-auto"
COMMIT = "2c25d24"
BASE = "data/arena-bench-v1"
STRONG = "gpt-4-0314"
WEAK = "mistralai/Mistral-7B-Instruct-v0.1"


def main() -> None:
    gd = git_dir(REPO)
    commit = resolve(gd, COMMIT)
    questions = [json.loads(l) for l in git_show(gd, commit, f"{BASE}/question.jsonl").decode().split("\n") if l.strip()]
    scores: dict[str, dict[str, float]] = {}
    invalid = {}
    files = [p for p, _ in git_ls(gd, commit, f"{BASE}/model_judgment")]
    for path in files:
        for line in git_show(gd, commit, path).decode().split("\n"):
            if not line.strip():
                continue
            j = json.loads(line)
            rating = j.get("score")
            if rating is None or not (1 <= float(rating) <= 10):
                invalid[j["model"]] = invalid.get(j["model"], 0) + 1
                continue
            scores.setdefault(j["question_id"], {})[j["model"]] = round((float(rating) - 1) / 9, 4)
    rows, dropped = [], []
    for q in questions:
        prompt = q["turns"][0]
        if blocked_prompt(prompt):
            dropped.append(q["question_id"])
            continue
        m = scores.get(q["question_id"], {})
        row = {
            "id": f"{SOURCE}:{q['question_id']}",
            "source": SOURCE,
            "prompt": prompt,
            "strong": m.get(STRONG),
            "weak": m.get(WEAK),
            "models": dict(sorted(m.items())),
        }
        if len(q["turns"]) > 1:
            row["turns"] = len(q["turns"])
        rows.append(row)
    write_jsonl_gz(SOURCE, rows)
    summarise(SOURCE, rows, {
        "repo": REPO, "commit": commit, "judgment_files": len(files),
        "models": sorted({k for v in scores.values() for k in v}),
        "invalid_ratings_skipped": invalid, "dropped_blocklist": dropped,
        "strong_model": STRONG, "weak_model": WEAK,
        "model_means": {mm: round(sum(v[mm] for v in scores.values() if mm in v) / sum(1 for v in scores.values() if mm in v), 4)
                        for mm in sorted({k for v in scores.values() for k in v})},
    })


if __name__ == "__main__":
    main()
