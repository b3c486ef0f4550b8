#!/usr/bin/env python3
"""yuchenlin/ZeroEval result_dirs/{gsm,crux,math-l5}/<model>.json -> zeroeval_<task>.jsonl.gz

Per item and model, correctness 0/1 is recomputed from the stored model output with a
standard-library port of ZeroEval's own scorers (src/evaluation/math_eval.py for gsm and
math-l5, src/evaluation/crux_eval.py for crux, helpers from eval_utils.py).  The only change:
math_eval's `float(eval(answer))` on answers containing "/" is replaced by a restricted
arithmetic evaluator (numbers and + - * / ** only), so no model text is executed.
An output with no extractable answer counts as 0, as in ZeroEval.
Per-model accuracies are checked against result_dirs/<task>.summary.json.
"""

import ast
import json
import operator
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import blocked_prompt, git_dir, git_ls, git_show, resolve, summarise, write_jsonl_gz

REPO = "yuchenlin/ZeroEval"
TASKS = ("gsm", "crux", "math-l5")
STRONG = "gpt-4o-2024-05-13"
WEAK = "Meta-Llama-3.1-8B-Instruct"


# ---- port of src/evaluation/eval_utils.py ------------------------------------------
def model_name_replacement(model_name):
    for a, b in [
        ("gemma-2-9b-it@nvidia", "gemma-2-9b-it"), ("gemma-2-9b-it@together", "gemma-2-9b-it"),
        ("gemma-2-27b-it@together", "gemma-2-27b-it"), ("gemma-2-27b-it@nvidia", "gemma-2-27b-it"),
        ("deepseek-chat", "deepseek-v2-chat-0628"), ("deepseek-coder", "deepseek-v2-coder-0614"),
        ("DeepSeek-Coder-V2-0724", "deepseek-v2-coder-0724"),
        ("Llama-3.1-405B-Inst-fp8", "Llama-3.1-405B-Inst-fp8@together"),
        ("Llama-3.1-405B-Instruct-Turbo", "Llama-3.1-405B-Inst-fp8@together"),
        ("Meta-Llama-3.1-405B-Instruct@hyperbolic", "Llama-3.1-405B-Inst@hyperbolic"),
    ]:
        model_name = model_name.replace(a, b)
    return model_name


def model_specific_extraction(model_name, prediction_str):
    if "Llama-3.1" in model_name:
        if "boxed" in prediction_str[-30:]:
            match = re.search(r"\\boxed{([\w\d]+)}", prediction_str)
            if match:
                return match.group(1)
    return None


def extract_values_from_json(json_string, keys=("reasoning", "answer"), allow_no_quotes=False):
    extracted_values = {}
    for key in keys:
        pattern = f'"{key}"\\s*:\\s*"([^"]*?)"'
        match = re.search(pattern, json_string)
        if match:
            extracted_values[key] = match.group(1)
        else:
            pattern = f'"{key}"\\s*:\\s*"(.*?)"'
            match = re.search(pattern, json_string, re.DOTALL)
            if match:
                extracted_values[key] = match.group(1)
        if not match and allow_no_quotes:
            pattern = f'"{key}"\\s*:\\s*([^,\\s]*)'
            match = re.search(pattern, json_string)
            if match:
                extracted_values[key] = match.group(1)
            else:
                pattern = f"{key}\\s*:\\s*([^,\\s]*)"
                match = re.search(pattern, json_string)
                if match:
                    extracted_values[key] = match.group(1)
    return extracted_values


def extract_first_complete_json(s):
    stack = []
    first_json_start = None
    for i, char in enumerate(s):
        if char == "{":
            stack.append(i)
            if first_json_start is None:
                first_json_start = i
        elif char == "}":
            if stack:
                stack.pop()
                if not stack:
                    first_json_str = s[first_json_start : i + 1]
                    try:
                        return json.loads(first_json_str.replace("\n", ""))
                    except json.JSONDecodeError:
                        return None
                    finally:
                        first_json_start = None
    return None


def parse_prediction(model, prediction_str):
    """The answer string ZeroEval extracts, or None ("No answer")."""
    pj = extract_first_complete_json(prediction_str)
    if pj is None or not isinstance(pj, dict) or "answer" not in pj:
        pj = extract_values_from_json(prediction_str, allow_no_quotes=True)
    if pj is None or "answer" not in pj:
        t = model_specific_extraction(model, prediction_str)
        if t:
            return t
        return None
    return pj["answer"]


# ---- safe replacement for eval() in sanitize_math_answers -----------------------------
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv, ast.Pow: operator.pow, ast.FloorDiv: operator.floordiv,
        ast.Mod: operator.mod}


def _safe_eval(expr):
    def ev(n):
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)) and not isinstance(n.value, bool):
            return n.value
        if isinstance(n, ast.BinOp) and type(n.op) in _OPS:
            left, right = ev(n.left), ev(n.right)
            if isinstance(n.op, ast.Pow) and abs(right) > 64:
                raise ValueError("exponent too large")
            return _OPS[type(n.op)](left, right)
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.UAdd)):
            v = ev(n.operand)
            return -v if isinstance(n.op, ast.USub) else v
        raise ValueError("not arithmetic")
    return ev(ast.parse(expr, mode="eval"))


def sanitize_math_answers(answer):
    answer = answer.replace("$", "").strip()
    answer = answer.replace(",", "")
    if "/" in answer:
        try:
            answer = str(float(_safe_eval(answer)))
        except Exception:
            pass
    return answer


NUM = re.compile(r"-?\d+(\.\d+)?")


def correct_math(model, item):
    ans = parse_prediction(model, item["output"][0])
    if ans is None:
        return 0
    model_answer = sanitize_math_answers(str(ans))
    correct_answer = sanitize_math_answers(item["answer"].replace("#", "").strip())
    a, b = NUM.search(model_answer), NUM.search(correct_answer)
    return int(bool(a and b and float(a.group()) == float(b.group())))


def correct_crux(model, item):
    ans = parse_prediction(model, item["output"][0])
    if ans is None:
        return 0
    model_answer = str(ans).strip("'\"").replace("\n", "\\n")
    correct_answer = str(item["answer"]).strip("'\"")
    if model_answer and correct_answer:
        return int(model_answer == correct_answer)
    return int(model_answer == "" and correct_answer == "")


def prompt_of(item):
    for k in ("question", "problem"):
        if isinstance(item.get(k), str) and item[k].strip():
            return item[k]
    ch = item["chat_history"][0]
    m = re.search(r"## Question:\s*(.*?)\n\s*## Instruction", ch, re.S)
    return m.group(1).strip() if m else ch


def run_task(gd, commit, task):
    source = f"zeroeval_{task.replace('-', '_')}"
    files = git_ls(gd, commit, f"result_dirs/{task}")
    present = [(p, s) for p, s in files if p.endswith(".json") and p.count("/") == 2]
    missing = [Path(p).stem for p, s in present if s is None]
    summary = {r["Model"]: float(r["Acc"]) for r in json.loads(git_show(gd, commit, f"result_dirs/{task}.summary.json"))}
    scorer = correct_crux if task == "crux" else correct_math
    items, per_model, check = {}, {}, {}
    for path, size in present:
        if size is None:
            continue
        model = Path(path).stem
        data = json.loads(git_show(gd, commit, path))
        n_ok = 0
        for it in data:
            iid = str(it["id"])
            c = scorer(model, it)
            n_ok += c
            per_model.setdefault(iid, {})[model] = float(c)
            items.setdefault(iid, prompt_of(it))
        acc = round(100 * n_ok / len(data), 2)
        ref = summary.get(model_name_replacement(model))
        check[model] = {"ours": acc, "summary": ref, "n": len(data)}
    rows, dropped = [], []
    for iid, prompt in items.items():
        if blocked_prompt(prompt):
            dropped.append(iid)
            continue
        m = per_model[iid]
        rows.append({
            "id": f"{source}:{iid}", "source": source, "task": task, "prompt": prompt,
            "strong": m.get(STRONG), "weak": m.get(WEAK), "models": dict(sorted(m.items())),
        })
    rows.sort(key=lambda r: r["id"])
    write_jsonl_gz(source, rows)
    mism = {k: v for k, v in check.items() if v["summary"] is None or abs(v["ours"] - v["summary"]) > 0.5}
    return summarise(source, rows, {
        "repo": REPO, "commit": commit, "path": f"result_dirs/{task}/*.json",
        "models_used": len(check), "models_missing_from_snapshot(>=4MiB)": missing,
        "accuracy_check_max_abs_diff": max(abs(v["ours"] - v["summary"]) for v in check.values() if v["summary"] is not None),
        "accuracy_mismatches(>0.5pt or not in summary)": mism,
        "dropped_blocklist": dropped, "strong_model": STRONG, "weak_model": WEAK,
    })


def main():
    gd = git_dir(REPO)
    commit = resolve(gd, "HEAD")
    for t in (sys.argv[1:] or TASKS):
        run_task(gd, commit, t)


if __name__ == "__main__":
    main()
