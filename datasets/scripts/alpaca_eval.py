#!/usr/bin/env python3
"""tatsu-lab/alpaca_eval results/<model>/weighted_alpaca_eval_gpt4_turbo/annotations.json
-> alpaca_eval.jsonl.gz   (EVALUATION ONLY: data licence CC-BY-NC-4.0)

Each annotation compares output_1 = gpt4_1106_preview (GPT-4-Turbo, the baseline) with
output_2 = <model>, judged by weighted_alpaca_eval_gpt4_turbo; "preference" is in [1, 2]
(1 = baseline preferred, 2 = model preferred; logprob-weighted, so fractional).
Per instruction:
  models[m] = preference - 1  = P(model m preferred over GPT-4-Turbo)
  weak      = models[WEAK]
  strong    = 1 - weak        = P(GPT-4-Turbo preferred over the weak model)
so strong > weak exactly when the judge prefers GPT-4-Turbo over the weak model.
Skipped: annotation files missing from the snapshot (>= 4 MiB), the nested duplicate
results/<m>/weighted_alpaca_eval_gpt4_turbo/weighted_alpaca_eval_gpt4_turbo/ files, the
baseline's own self-comparison, and the adversarial NullModel / gpt4_gamed entries.
"""

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import blocked_prompt, git_dir, git_ls, git_show, resolve, stable_id, summarise, write_jsonl_gz

SOURCE = "alpaca_eval"
REPO = "tatsu-lab/alpaca_eval"
BASELINE = "gpt4_1106_preview"
WEAK = "OpenHermes-2.5-Mistral-7B"
SKIP_MODELS = {"NullModel", "gpt4_gamed", BASELINE}


def main():
    gd = git_dir(REPO)
    commit = resolve(gd, "HEAD")
    files = [(p, s) for p, s in git_ls(gd, commit, "results")
             if p.endswith("/weighted_alpaca_eval_gpt4_turbo/annotations.json") and p.count("/") == 3]
    missing = sorted(p.split("/")[1] for p, s in files if s is None)
    instr, dataset, scores = {}, {}, {}
    used, skipped_non_baseline = [], []
    for path, size in files:
        model = path.split("/")[1]
        if size is None or model in SKIP_MODELS:
            continue
        ann = json.loads(git_show(gd, commit, path))
        n = 0
        for a in ann:
            if a.get("generator_1") != BASELINE:
                skipped_non_baseline.append(model)
                break
            p = a.get("preference")
            if p is None or (isinstance(p, float) and math.isnan(p)):
                continue
            key = a["instruction"]
            instr.setdefault(key, key)
            dataset.setdefault(key, a.get("dataset"))
            scores.setdefault(key, {})[a.get("generator_2", model)] = round(min(1.0, max(0.0, float(p) - 1.0)), 4)
            n += 1
        used.append((model, n))
    rows, dropped = [], []
    for key in sorted(instr):
        if blocked_prompt(key):
            dropped.append(key[:80])
            continue
        m = scores[key]
        weak = m.get(WEAK)
        rows.append({
            "id": stable_id(SOURCE, key), "source": SOURCE, "task": dataset[key], "prompt": key,
            "strong": None if weak is None else round(1 - weak, 4), "weak": weak,
            "models": dict(sorted(m.items())),
            "licence": "CC-BY-NC-4.0, evaluation only",
        })
    write_jsonl_gz(SOURCE, rows)
    means = {}
    for m in sorted({k for v in scores.values() for k in v}):
        vals = [v[m] for v in scores.values() if m in v]
        means[m] = round(sum(vals) / len(vals), 4)
    summarise(SOURCE, rows, {
        "repo": REPO, "commit": commit,
        "path": "results/<model>/weighted_alpaca_eval_gpt4_turbo/annotations.json",
        "annotation_files_listed": len(files), "missing_from_snapshot(>=4MiB)": len(missing),
        "models_used": len(used), "models": [u[0] for u in used],
        "skipped_models": sorted(SKIP_MODELS), "non_baseline_files": skipped_non_baseline,
        "dropped_blocklist": dropped, "baseline(strong)": BASELINE, "weak_model": WEAK,
        "winrate_vs_gpt4_turbo": dict(sorted(means.items(), key=lambda kv: -kv[1])),
    })


if __name__ == "__main__":
    main()
