"""Does the cheap model's ANSWER say when to escalate, on sources the head never saw?

    python datasets/scripts/weak_answers.py data-stage/cascade/weak_answers.jsonl.gz
    python -m xrouter_core.quality.cascade --data data-stage/cascade \\
        --markdown docs/evaluation/cascade.md --json data-stage/cascade/report.json

A cascade sends every request to the cheap (weak) model first, reads its answer, and
escalates to the frontier (strong) model only when signals of that answer say it is
likely worse. This measures that decision with the same machinery as the prompt
classifiers (evaluate.py): per source APGR over RouteLLM's threshold sweep, CPT(50 %) and
CPT(80 %), 95 % bootstrap intervals, random and oracle beside it, and the built-in prompt
classifier of the same leave-one-source-out fold scored on the same rows, with a paired
interval of each head's lead over it.

Data: the sources whose weak answers are public (`weak_answers.py` fetches them; they are
not bundled): zeroeval_gsm, zeroeval_crux, zeroeval_math_l5 (Llama-3.1-8B), arena_hard_v1
(Mistral-7B) and alpaca_eval (OpenHermes-2.5, CC-BY-NC-4.0: test only). Rows are the
datasets' own (sources.py's deduplication: these five come first in its PRIORITY, so the
rows are exactly those evaluate.py scores), joined to the answers by the converters' ids.

Routers:
  - `answer`: a logistic head over `answer_features` (length, hedges, refusal,
    repetition, truncation, a stated final answer, candidate answers, code blocks...),
    trained on the other answer-bearing sources, each weighing the same, one intercept
    per training source (so only within-source ranking is learnt); score = P(escalate).
  - `answer_prompt`: the same head with the built-in classifier's hand prompt features
    (train_builtin.features_of, without the word features) appended.
  - `answer_length`: one feature, the weak answer's length (log chars), pointed the way
    its mean within-source AUC on the fold's training sources says (`length_direction`).
  - `prompt_length`: the same for the prompt's length, so the two can be told apart.
  - `builtin`: the built-in prompt classifier trained as evaluate.py's loso fold does
    (every trainable source of datasets/ but the held-out one, with its rules on).
  - `random`, `oracle`: as in evaluate.py.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xrouter_core.quality import evaluate, routing_metrics, sources

ANSWER_SOURCES = (
    "alpaca_eval",
    "arena_hard_v1",
    "zeroeval_gsm",
    "zeroeval_crux",
    "zeroeval_math_l5",
)
DATASET_FILES = {
    "alpaca_eval": "alpaca_eval/alpaca_eval.jsonl.gz",
    "arena_hard_v1": "arena_hard_v1/arena_hard_v1.jsonl.gz",
    "zeroeval_gsm": "zeroeval/zeroeval_gsm.jsonl.gz",
    "zeroeval_crux": "zeroeval/zeroeval_crux.jsonl.gz",
    "zeroeval_math_l5": "zeroeval/zeroeval_math_l5.jsonl.gz",
}
ANSWERS_FILE = "weak_answers.jsonl.gz"
HEADS = ("answer", "answer_prompt")
DEFAULT_ROUTERS = (
    "answer",
    "answer_prompt",
    "answer_length",
    "prompt_length",
    "builtin",
    "random",
    "oracle",
)
RIDGE = 1.0  # L2 strength on the standardised features, per unit of total source weight
MIN_HAND_COUNT = 5  # a hand prompt feature must occur in this many training prompts

_HEDGES = re.compile(
    r"\b(i think|i believe|it seems|seems to|might|may be|maybe|perhaps|possibly|probably|"
    r"likely|not sure|unsure|uncertain|unclear|i'm not certain|approximately|roughly|"
    r"assum(?:e|ing|ption)|it depends|could be|hard to say|not possible to determine)\b",
    re.I,
)
_REFUSALS = re.compile(
    r"(i'm sorry|i am sorry|i apologi[sz]e|i cannot|i can't|i can not|i'm unable|i am unable|"
    r"as an ai|as a language model|i don't have (?:access|the ability)|i'm not able)",
    re.I,
)
_SELF_CORRECTION = re.compile(
    r"\b(wait|actually|mistake|re-?evaluate|re-?check|recalculate|let me correct|"
    r"i made an error|incorrect|however|but)\b",
    re.I,
)
_FINAL_STATEMENT = re.compile(
    r"(\"answer\"\s*:|\\boxed\{|the (?:final )?answer is|final answer|therefore,? the|"
    r"so,? the answer|the result is)",
    re.I,
)
_JSON_ANSWER = re.compile(r"\"answer\"\s*:\s*(\"(?:[^\"\\]|\\.)*\"|[^,}\s]+)", re.S)
_EMPTY_ANSWERS = {"", '""', "null", "none", "n/a", '"n/a"', '"none"', '"unknown"'}
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_WORD = re.compile(r"\w+")
_CODE_REQUEST = re.compile(
    r"\b(code|function|script|program|implement|python|javascript|sql|c\+\+|java|regex|class)\b",
    re.I,
)
_TERMINAL = tuple(".!?)]}\"'`*:|>")


@dataclass(frozen=True, slots=True)
class Item:
    """One prompt of an answer-bearing source: its scores and the weak model's answer."""

    row: sources.Row
    answer: str


def _log(value: float) -> float:
    return math.log1p(max(value, 0.0))


_ANSWER_FEATURES: dict[tuple[str, str], dict[str, float]] = {}


def answer_features(prompt: str, answer: str) -> dict[str, float]:
    """`weak_answer_features`, memoised (folds and heads see the same answers again)."""
    found = _ANSWER_FEATURES.get((prompt, answer))
    if found is None:
        found = _ANSWER_FEATURES[(prompt, answer)] = weak_answer_features(prompt, answer)
    return dict(found)


def weak_answer_features(prompt: str, answer: str) -> dict[str, float]:
    """Cheap signals of the weak model's answer (pure Python, a few hundred microseconds).

    Counts are log1p'd; shares are in [0, 1]. None of them looks at the reference answer:
    a router would compute exactly these from the response it buffered."""
    text = answer.strip()
    lowered = text.lower()
    words = _WORD.findall(lowered)
    word_count = len(words)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    trigrams = list(zip(words, words[1:], words[2:], strict=False))
    fences = text.count("```")
    json_answers = [m.group(1).strip().lower() for m in _JSON_ANSWER.finditer(text)]
    numbers = _NUMBER.findall(text)
    tail = text[-400:]
    found: dict[str, float] = {
        "log_chars": _log(len(text)),
        "log_words": _log(word_count),
        "log_ratio_to_prompt": math.log((len(text) + 1) / (len(prompt) + 1)),
        "empty": float(word_count == 0),
        "hedges_per_100_words": 100 * len(_HEDGES.findall(text)) / max(word_count, 1),
        "has_hedge": float(bool(_HEDGES.search(text))),
        "refusal": float(bool(_REFUSALS.search(text[:300]))),
        "self_corrections": _log(len(_SELF_CORRECTION.findall(text))),
        "repeated_trigram_share": (1 - len(set(trigrams)) / len(trigrams)) if trigrams else 0.0,
        "repeated_line_share": (1 - len(set(lines)) / len(lines)) if lines else 0.0,
        "unclosed_code_fence": float(fences % 2 == 1),
        "unbalanced_braces": float(
            text.count("{") != text.count("}") or text.count("(") != text.count(")")
        ),
        "no_terminal_punctuation": float(bool(text) and not text.endswith(_TERMINAL)),
        "final_answer_stated": float(bool(_FINAL_STATEMENT.search(text))),
        "final_answer_in_tail": float(bool(_FINAL_STATEMENT.search(tail))),
        "final_answer_empty": float(bool(json_answers) and json_answers[-1] in _EMPTY_ANSWERS),
        "candidate_answers": _log(len(set(json_answers))),
        "log_distinct_numbers": _log(len(set(numbers))),
        "numbers_per_100_words": 100 * len(numbers) / max(word_count, 1),
        "has_code_block": float(fences >= 2),
        "code_requested_no_block": float(bool(_CODE_REQUEST.search(prompt)) and fences < 2),
        "steps": _log(
            sum(1 for line in lines if re.match(r"(#+ )?(step \d|\d+[.)] )", line, re.I))
        ),
        "non_ascii_share": sum(ord(c) > 127 for c in text) / max(len(text), 1),
        "question_marks": _log(text.count("?")),
    }
    return found


ANSWER_FEATURES = tuple(weak_answer_features("p", "a"))


def hand_features(prompt: str) -> dict[str, float]:
    """The built-in classifier's hand features of the prompt (not its word features)."""
    from xrouter_core.quality.train_builtin import features_of

    return {f"prompt:{k}": v for k, v in features_of(prompt).items() if not k.startswith("w:")}


def load_answers(path: Path) -> dict[str, str]:
    """id -> the weak model's answer, from weak_answers.py's output."""
    found: dict[str, str] = {}
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                found[record["id"]] = record["answer"]
    return found


def load_items(datasets: Path, answers: Mapping[str, str]) -> dict[str, list[Item]]:
    """Each answer-bearing source's rows (deduplicated as sources.deduplicate does, over
    these sources, which lead its PRIORITY) that have the weak model's answer."""
    seen: set[str] = set()
    found: dict[str, list[Item]] = {}
    for name in sources.PRIORITY:
        if name not in DATASET_FILES or not (datasets / DATASET_FILES[name]).exists():
            continue
        kept: list[Item] = []
        with gzip.open(datasets / DATASET_FILES[name], "rt", encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                record = json.loads(line)
                if record.get("strong") is None or record.get("weak") is None:
                    continue
                key = sources.normalise(record["prompt"])
                if key in seen:
                    continue
                seen.add(key)
                if record["id"] not in answers:
                    continue
                row = sources.Row(
                    name,
                    str(record.get("task", name)),
                    record["prompt"],
                    float(record["strong"]),
                    float(record["weak"]),
                )
                kept.append(Item(row, answers[record["id"]]))
        if len(kept) >= sources.MIN_PROMPTS:
            found[name] = kept
    return found


class Featurizer:
    """Rows of the head's design matrix: answer features, with `prompt` also the hand
    prompt features seen in at least MIN_HAND_COUNT training prompts."""

    def __init__(self, train: Sequence[Item], prompt: bool):
        self.prompt = prompt
        self.names = list(ANSWER_FEATURES)
        if prompt:
            counts: dict[str, int] = {}
            for item in train:
                for name in hand_features(item.row.prompt):
                    counts[name] = counts.get(name, 0) + 1
            self.names += sorted(n for n, c in counts.items() if c >= MIN_HAND_COUNT)
        self.index = {name: j for j, name in enumerate(self.names)}

    def matrix(self, items: Sequence[Item]) -> np.ndarray:
        found = np.zeros((len(items), len(self.names)))
        for i, item in enumerate(items):
            values = answer_features(item.row.prompt, item.answer)
            if self.prompt:
                values |= hand_features(item.row.prompt)
            for name, value in values.items():
                j = self.index.get(name)
                if j is not None:
                    found[i, j] = value
        return found


@dataclass(frozen=True)
class LogisticHead:
    """P(escalate) = sigmoid(standardised features @ weights + mean training intercept)."""

    names: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    intercept: float

    def scores(self, matrix: np.ndarray) -> list[float]:
        logits = ((matrix - self.mean) / self.scale) @ self.weights + self.intercept
        return [float(v) for v in 1 / (1 + np.exp(-np.clip(logits, -30, 30)))]


def fit_logistic(
    matrix: np.ndarray,
    labels: Sequence[float],
    groups: Sequence[str],
    names: Sequence[str],
    ridge: float = RIDGE,
    iterations: int = 50,
) -> LogisticHead:
    """Soft-label logistic regression by Newton's method: each group (training source)
    weighs the same in total and has its own intercept, so the weights learn only which
    answers are worse within a source, not which source has the larger gain."""
    mean = matrix.mean(axis=0)
    scale = matrix.std(axis=0)
    scale[scale < 1e-9] = 1.0
    x = (matrix - mean) / scale
    names_of_groups = sorted(set(groups))
    onehot = np.array([[g == name for name in names_of_groups] for g in groups], dtype=float)
    design = np.hstack([x, onehot])
    y = np.asarray(labels, dtype=float)
    size = {name: sum(g == name for g in groups) for name in names_of_groups}
    sample_weight = np.array([1.0 / size[g] for g in groups])
    penalty = np.concatenate([np.full(x.shape[1], ridge), np.zeros(len(names_of_groups))])
    theta = np.zeros(design.shape[1])
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-np.clip(design @ theta, -30, 30)))
        gradient = design.T @ (sample_weight * (p - y)) + penalty * theta
        hessian = (design * (sample_weight * p * (1 - p))[:, None]).T @ design + np.diag(
            penalty + 1e-9
        )
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if float(np.max(np.abs(step))) < 1e-8:
            break
    weights = theta[: x.shape[1]]
    intercept = float(np.mean(theta[x.shape[1] :]))
    return LogisticHead(tuple(names), mean, scale, weights, intercept)


def label(row: sources.Row) -> float:
    """How much escalating this prompt gains, clipped to [0, 1] (evaluate's label)."""
    return min(max(row.gain, 0.0), 1.0)


def head_scores(
    train: Sequence[Item], test: Sequence[Item], prompt: bool, ridge: float = RIDGE
) -> tuple[list[float], dict[str, float]]:
    """The fold's head scores on the test items, and its weights by feature name."""
    featurizer = Featurizer(train, prompt)
    head = fit_logistic(
        featurizer.matrix(train),
        [label(i.row) for i in train],
        [i.row.source for i in train],
        featurizer.names,
        ridge,
    )
    weights = {n: round(float(w), 4) for n, w in zip(head.names, head.weights, strict=True)}
    return head.scores(featurizer.matrix(test)), weights


LENGTHS: dict[str, Callable[[Item], float]] = {
    "answer_length": lambda item: _log(len(item.answer.strip())),
    "prompt_length": lambda item: _log(len(item.row.prompt.strip())),
}


def length_direction(train: Sequence[Item], length: Callable[[Item], float]) -> float:
    """+1 when longer goes with escalation in the training sources (mean within-source
    AUC above 0.5), else -1: the only thing a one-feature router learns."""
    by_source: dict[str, list[Item]] = {}
    for item in train:
        by_source.setdefault(item.row.source, []).append(item)
    aucs = [
        routing_metrics.auc([length(i) for i in items], [i.row.strong > i.row.weak for i in items])
        for items in by_source.values()
    ]
    known = [a for a in aucs if a is not None]
    return 1.0 if not known or sum(known) / len(known) >= 0.5 else -1.0


def builtin_scores(held_out: str, test: Sequence[Item], datasets: Path) -> list[float]:
    """The built-in prompt classifier of evaluate.py's loso fold for `held_out`, on these rows."""
    from xrouter_core.quality import train_builtin
    from xrouter_core.quality.routellm_data import routed_text
    from xrouter_core.routing.builtin import BUILTIN_THRESHOLDS, BuiltinClassifier

    everything = sources.load_all(datasets)
    if held_out in sources.TEST_ONLY:
        train = sources.all_training_rows(everything)
    else:
        train, _ = sources.loso_split(everything, held_out)
    weights = train_builtin.train(train, train_builtin.TrainConfig())
    classifier = BuiltinClassifier(BUILTIN_THRESHOLDS, weights=weights, rules=True)
    return [classifier.score(routed_text(item.row.prompt)) for item in test]


def feature_aucs(items: Mapping[str, Sequence[Item]]) -> dict[str, dict[str, float | None]]:
    """Per feature and source: AUC of the answer feature against 'strong beat weak'. A
    feature that carries across sources sits on the same side of 0.5 in every one."""
    found: dict[str, dict[str, float | None]] = {name: {} for name in ANSWER_FEATURES}
    for source, rows in items.items():
        values = [answer_features(i.row.prompt, i.answer) for i in rows]
        better = [i.row.strong > i.row.weak for i in rows]
        for name in ANSWER_FEATURES:
            found[name][source] = routing_metrics.auc([v[name] for v in values], better)
    return found


def run(
    data: Path,
    datasets: Path = sources.DATASETS,
    routers: Sequence[str] = DEFAULT_ROUTERS,
    chosen: Sequence[str] | None = None,
    bins: int = routing_metrics.DEFAULT_BINS,
    resamples: int = 200,
    seed: int = 0,
    ridge: float = RIDGE,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> dict[str, Any]:
    """Leave-one-source-out over the answer-bearing sources: every router's figures per
    source, their mean and lowest APGR, and (with `builtin`) each one's lead over it."""
    items = load_items(datasets, load_answers(data / ANSWERS_FILE))
    trainable = [name for name in items if name not in sources.TEST_ONLY]
    names = list(chosen or items)
    unknown = [name for name in names if name not in items]
    if unknown:
        raise SystemExit(f"no answers for source(s) {', '.join(unknown)} (have {', '.join(items)})")
    report: dict[str, Any] = {"routers": list(routers), "sources": {}, "weights": {}}
    for name in names:
        train = [i for s in trainable if s != name for i in items[s]]
        test = items[name]
        rows = [i.row for i in test]
        entry: dict[str, Any] = {
            "prompts": len(test),
            "train_sources": sorted({i.row.source for i in train}),
            "test_only": name in sources.TEST_ONLY,
            "weak_quality": routing_metrics.accuracy([r.weak for r in rows]),
            "strong_quality": routing_metrics.accuracy([r.strong for r in rows]),
            "strong_better": sum(r.strong > r.weak for r in rows) / len(rows),
            "routers": {},
        }
        entry["measurable"] = (
            entry["strong_quality"] - entry["weak_quality"] >= evaluate.MIN_QUALITY_GAP
        )
        report["sources"][name] = entry
        if not entry["measurable"]:
            log(f"{name}: strong quality not above weak quality, no PGR")
            continue
        for router in routers:
            if router in HEADS:
                if len(entry["train_sources"]) < 1:
                    raise SystemExit(f"{name}: no other answer-bearing source to train on")
                scores, weights = head_scores(train, test, router == "answer_prompt", ridge)
                report["weights"].setdefault(router, {})[name] = weights
            elif router in LENGTHS:
                direction = length_direction(train, LENGTHS[router])
                report["weights"].setdefault(router, {})[name] = {"direction": direction}
                scores = [direction * LENGTHS[router](i) for i in test]
            elif router == "builtin":
                scores = builtin_scores(name, test, datasets)
            elif router == "random":
                scores = routing_metrics.random_scores(len(rows), seed)
            elif router == "oracle":
                scores = [r.gain for r in rows]
            else:
                raise SystemExit(f"unknown router {router} (use {', '.join(DEFAULT_ROUTERS)})")
            entry["routers"][router] = evaluate.summarize(scores, rows, bins, resamples, seed)
        if "builtin" in routers and resamples:
            base = entry["routers"]["builtin"]["apgr_resamples"]
            entry["minus_builtin_ci95"] = {
                router: routing_metrics.intervals(
                    {"apgr": [a - b for a, b in zip(found["apgr_resamples"], base, strict=True)]}
                )["apgr"]
                for router, found in entry["routers"].items()
                if router != "builtin"
            }
        log(
            f"{name}: {len(test)} prompts, "
            + ", ".join(f"{r} APGR {entry['routers'][r]['apgr']:.3f}" for r in routers)
        )
    evaluate._summarised(report, routers)
    report["feature_auc"] = feature_aucs({n: items[n] for n in names})
    for entry in report["sources"].values():
        for found in entry["routers"].values():
            found.pop("apgr_resamples", None)
    return report


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ci(result: dict, name: str = "apgr", digits: int = 3) -> str:
    low, high = result.get("ci95", {}).get(name, [None, None])
    value = result[name]
    if value is None:
        return "never"
    if low is None:
        return _num(value, digits)
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _share(value: float | None) -> str:
    return "never" if value is None else f"{100 * value:.0f} %"


def markdown(report: dict[str, Any]) -> str:
    """The per-source table, the mean and lowest APGR, and the feature AUC table."""
    routers = report["routers"]
    lines = [
        "| held-out source | prompts | strong > weak | "
        + " | ".join(f"APGR {r}" for r in routers)
        + " | answer − builtin, paired 95 % | CPT(50 %) answer / builtin"
        + " | CPT(80 %) answer / builtin | AUC answer / builtin |",
        "|---|---:|---:|" + "---:|" * len(routers) + "---:|---:|---:|---:|",
    ]
    for name, entry in report["sources"].items():
        label_ = f"{name} (test only)" if entry["test_only"] else name
        if not entry["measurable"]:
            lines.append(f"| {label_} | {entry['prompts']} | not measurable |")
            continue
        found = entry["routers"]

        def pair(key: str, fmt: Callable[[Any], str], found: dict = found) -> str:
            return " / ".join(
                fmt(found[r][key]) if r in found else "–" for r in ("answer", "builtin")
            )

        lead = "–"
        if "answer" in found and "builtin" in found:
            low, high = entry.get("minus_builtin_ci95", {}).get("answer", [None, None])
            lead = f"{found['answer']['apgr'] - found['builtin']['apgr']:+.3f}"
            if low is not None:
                lead += f" [{low:+.3f}, {high:+.3f}]"
        lines.append(
            f"| {label_} | {entry['prompts']} | {100 * entry['strong_better']:.1f} % | "
            + " | ".join(_ci(found[r]) for r in routers)
            + f" | {lead} | {pair('cpt50', _share)} | {pair('cpt80', _share)} | {pair('auc', _num)} |"
        )
    means = report["mean_apgr"]
    cells = []
    for router in routers:
        interval = report.get("mean_apgr_ci95", {}).get(router)
        cells.append(
            f"{means[router]:.3f}"
            + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")
        )
    lines.append("| **mean** | | | " + " | ".join(cells) + " | | | | |")
    lines.append(
        "| **min** | | | "
        + " | ".join(f"{report['min_apgr'][r]:.3f}" for r in routers)
        + " | | | | |"
    )
    leads = report.get("mean_apgr_minus_builtin_ci95")
    if leads:
        cells = [
            f"{means[r] - means['builtin']:+.3f} [{leads[r][0]:+.3f}, {leads[r][1]:+.3f}]"
            if r in leads
            else ""
            for r in routers
        ]
        lines.append("| mean − builtin, paired 95 % | | | " + " | ".join(cells) + " | | | | |")
    lines += ["", "Per-feature AUC against 'strong beat weak' (0.5 = no signal):", ""]
    names = list(report["sources"])
    lines.append("| answer feature | " + " | ".join(names) + " |")
    lines.append("|---|" + "---:|" * len(names))
    for feature, by_source in report["feature_auc"].items():
        lines.append(
            f"| {feature} | " + " | ".join(_num(by_source.get(n), 2) for n in names) + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help=f"directory holding {ANSWERS_FILE} (datasets/scripts/weak_answers.py)",
    )
    parser.add_argument("--datasets", type=Path, default=sources.DATASETS)
    parser.add_argument("--router", nargs="+", default=list(DEFAULT_ROUTERS))
    parser.add_argument("--sources", nargs="+", help="held-out sources (default: all with answers)")
    parser.add_argument("--bootstrap", type=int, default=200, help="resamples (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ridge", type=float, default=RIDGE)
    parser.add_argument("--json", type=Path, help="write the whole report here")
    parser.add_argument("--markdown", type=Path, help="write the tables here")
    args = parser.parse_args(argv)
    report = run(
        args.data,
        args.datasets,
        args.router,
        args.sources,
        resamples=args.bootstrap,
        seed=args.seed,
        ridge=args.ridge,
    )
    table = markdown(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if args.markdown:
        args.markdown.write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
