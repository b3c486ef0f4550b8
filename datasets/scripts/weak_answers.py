#!/usr/bin/env python3
"""The weak model's answer text per prompt -> OUT (default $DATA_STAGE/cascade/weak_answers.jsonl.gz)

For the cascade measurement (xrouter_core/quality/cascade.py): what the cheap model actually
answered, matched to the dataset rows with the same ids as the converters give them.
The output is NOT bundled in the repository (see PROVENANCE.md, "weak answers"); it is
written outside it and read with `--answers`.

One JSON object per line: {"id", "source", "prompt", "answer"}.
  * zeroeval_{gsm,crux,math_l5}: result_dirs/<task>/Meta-Llama-3.1-8B-Instruct.json, item["output"][0]
    (the output ZeroEval scored), id f"zeroeval_<task>:{item['id']}", prompt as zeroeval.prompt_of.
  * arena_hard_v1 @ 2c25d24: the answer the GPT-4 judge graded, cut from the judgment's
    user_prompt between "[The Start of Assistant's Answer]" and "[The End of Assistant's Answer]"
    (model_answer/Mistral-7B-Instruct-v0.1.jsonl holds one answer only at that commit).
  * alpaca_eval: output_2 of results/OpenHermes-2.5-Mistral-7B/weighted_alpaca_eval_gpt4_turbo/
    annotations.json (the output the judge compared), id stable_id("alpaca_eval", instruction).
    CC-BY-NC-4.0: evaluation only.
Prompts the converters drop (MT-Bench screen) are dropped here too.
"""

import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import STAGE, blocked_prompt, git_dir, git_show, resolve, stable_id
from zeroeval import prompt_of

ZEROEVAL_WEAK = "Meta-Llama-3.1-8B-Instruct"
ARENA_WEAK_FILE = "data/arena-bench-v1/model_judgment/Mistral-7B-Instruct-v0.1.jsonl"
ALPACA_WEAK = "OpenHermes-2.5-Mistral-7B"
START = "[The Start of Assistant's Answer]\n"
END = "\n[The End of Assistant's Answer]"


def zeroeval_rows():
    gd = git_dir("yuchenlin/ZeroEval")
    commit = resolve(gd, "HEAD")
    for task in ("gsm", "crux", "math-l5"):
        source = f"zeroeval_{task.replace('-', '_')}"
        data = json.loads(git_show(gd, commit, f"result_dirs/{task}/{ZEROEVAL_WEAK}.json"))
        for item in data:
            prompt = prompt_of(item)
            if blocked_prompt(prompt):
                continue
            yield {"id": f"{source}:{item['id']}", "source": source, "prompt": prompt,
                   "answer": item["output"][0]}


def arena_rows():
    gd = git_dir("lmarena/arena-hard-auto")
    commit = resolve(gd, "2c25d24")
    questions = {}
    for line in git_show(gd, commit, "data/arena-bench-v1/question.jsonl").decode().splitlines():
        if line.strip():
            q = json.loads(line)
            questions[q["question_id"]] = q["turns"][0]
    for line in git_show(gd, commit, ARENA_WEAK_FILE).decode().splitlines():
        if not line.strip():
            continue
        j = json.loads(line)
        text = j["user_prompt"]
        start, end = text.find(START), text.rfind(END)
        prompt = questions.get(j["question_id"])
        if start < 0 or end < start or prompt is None or blocked_prompt(prompt):
            continue
        yield {"id": f"arena_hard_v1:{j['question_id']}", "source": "arena_hard_v1",
               "prompt": prompt, "answer": text[start + len(START):end]}


def alpaca_rows():
    gd = git_dir("tatsu-lab/alpaca_eval")
    commit = resolve(gd, "HEAD")
    path = f"results/{ALPACA_WEAK}/weighted_alpaca_eval_gpt4_turbo/annotations.json"
    for a in json.loads(git_show(gd, commit, path)):
        key = a["instruction"]
        if blocked_prompt(key) or a.get("output_2") is None:
            continue
        yield {"id": stable_id("alpaca_eval", key), "source": "alpaca_eval", "prompt": key,
               "answer": a["output_2"]}


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else STAGE / "cascade" / "weak_answers.jsonl.gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    seen, counts = set(), {}
    with gzip.open(out, "wt", encoding="utf-8") as handle:
        for row in [*zeroeval_rows(), *arena_rows(), *alpaca_rows()]:
            if row["id"] in seen:
                continue
            seen.add(row["id"])
            counts[row["source"]] = counts.get(row["source"], 0) + 1
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(json.dumps({"out": str(out), "rows": counts}))


if __name__ == "__main__":
    main()
