"""The built-in classifier: P(the strong model is needed) in [0, 1], computed in-process.

How a prompt is scored:
  1. `features` reads it as a sparse vector: its distinct words (weighted 1/sqrt(count),
     so a long prompt does not outvote a short one), and hand features meant to carry
     across domains: length (log and bins), lines, numbers, code markers, maths markers
     (LaTeX, equations), the kind of question (how/why/what, write, prove, multiple
     choice), multi-part asks (numbered lists, several questions), constraints ("must",
     "exactly", "without"...), and the explicit hard asks (prove, architecture, ...).
  2. A logistic regression over them (builtin_weights.json, made by
     `python -m xrouter_core.quality.train_builtin` from every redistributable routing
     source in datasets/: Arena, ZeroEval, RouteLLM, LLMRouter) gives the probability
     that the strong model answers better than the weak one. During training each
     source has its own intercept, so the weights learn what makes a prompt harder
     *within* a source, not which source it came from; the bundled bias is the mean of
     those intercepts.
  3. A few hand-set rules for everyday traffic: a very short message without code,
     maths or a hard ask is scaled into [0, SHORT_CAP]; code and explicit hard asks lift the
     score into [floor, 1]. Both keep the learned order within the prompts they touch.
     `python -m xrouter_core.quality.evaluate` scores the classifier with these rules on.
Two thresholds turn the score into tier 0, 1 or 2.

Pure Python: a few regular-expression passes and a few hundred dictionary look-ups per
decision (bench/bench_builtin.py measures it).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from xrouter_core.config import check_thresholds
from xrouter_core.routing.classifier import Decision

WEIGHTS_PATH = Path(__file__).with_name("builtin_weights.json")
SOURCE = "builtin"
# Longer texts are cut (head and tail kept) before scoring, which bounds the time.
MAX_CHARS = 4000

# The default thresholds (cheap below the first, frontier from the second) when
# CLASSIFIER_THRESHOLDS is not set, chosen for quality on the evaluation data, every source
# scored by the model trained without it (`python -m xrouter_core.quality.calibrate
# --target-quality Q`): 0.90 gives the first (what goes to cheap leaves 90 % of the
# frontier quality even if medium were no better than cheap; about 20 % goes to cheap) and
# 0.80 the second (the frontier calls alone keep 80 %; about 60 % go to frontier).
# docs/classifiers.md, "Default thresholds", has the figures and how to trade for savings.
BUILTIN_THRESHOLDS: tuple[float, float] = (0.24, 0.31)

# Rules for everyday traffic (step 3 above), in the default thresholds' terms.
SHORT_WORDS = 12  # fewer words than this, and no code, maths or hard ask: ...
SHORT_CAP = 0.15  # ... the score is at most this (cheap with the default thresholds)
CODE_FLOOR = BUILTIN_THRESHOLDS[0]  # code in the prompt: at least medium
# One hard ask: at least medium; two or more: frontier.
HARD_FLOOR = (sum(BUILTIN_THRESHOLDS) / 2, BUILTIN_THRESHOLDS[1])

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_CHOICES = re.compile(r"(?:^|\n)\s*\(?[Aa][.)]\s.*\n\s*\(?[Bb][.)]\s")
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
_CODE = re.compile(
    r"```|\bdef \w+\(|\bfunction\s*\w*\(|\bclass \w+[:({]|;\s*\n|=>|#include|\bimport \w+"
)
_FRACTION = re.compile(r"\d/\d")
_MATH = re.compile(r"[=^∫∑√≤≥±]|\\frac|\\sum|\bmod\b")
# Counted with str.count / set look-ups rather than regular expressions: cheap on long texts.
_CODE_CHARS = ("{", "}", "[", "]", "(", ")", ";", "==", "!=", "->", "::", "+=")
_CONSTRAINT_WORDS = frozenset(
    [
        "must",
        "exactly",
        "least",
        "most",
        "without",
        "only",
        "never",
        "don't",
        "ensure",
        "limit",
        "format",
        "json",
        "table",
        "words",
    ]
)
_HARD = re.compile(
    r"\b(?:prove|proof|derive|theorem|lemma|rigorous|architect\w*|refactor\w*|optimi[sz]\w*|"
    r"debug\w*|concurren\w*|distributed|scalab\w*|trade-?offs?|step[- ]by[- ]step|in depth|"
    r"complexity|algorithm\w*|research|analy[sz]e|compare and contrast|multi-step|edge cases)\b"
)
_OPENERS = frozenset(
    [
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "is",
        "are",
        "can",
        "could",
        "does",
        "do",
        "did",
        "should",
        "would",
        "will",
        "write",
        "explain",
        "describe",
        "create",
        "make",
        "give",
        "list",
        "tell",
        "find",
        "calculate",
        "compute",
        "solve",
        "prove",
        "implement",
        "design",
        "generate",
        "summarize",
        "summarise",
        "translate",
        "help",
        "please",
        "i",
        "you",
    ]
)


def bucket(value: float) -> int:
    """log2 bins: 0, 1, 2-3, 4-7, ... so one token covers a range of sizes."""
    return int(math.log2(value + 1))


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the scorer reads from a prompt."""

    features: Mapping[str, float]  # the sparse vector the model weighs
    chars: int
    words: int
    numbers: int
    code: bool
    math: bool
    hard_asks: int  # distinct hard-ask markers


def analyse(text: str) -> Analysis:
    if len(text) > MAX_CHARS:
        half = MAX_CHARS // 2
        text = text[:half] + "\n" + text[-half:]
    lower = text.lower()
    words = _WORD.findall(lower)
    numbers = _NUMBER.findall(text)
    code = bool(_CODE.search(text))
    math_ = bool(_MATH.search(text))
    hard = set(_HARD.findall(lower))
    distinct = set(words)
    features: dict[str, float] = {}
    if distinct:
        value = 1.0 / math.sqrt(len(distinct))
        for word in distinct:
            features["w:" + word] = value
    lines = text.count("\n")
    code_tokens = sum(text.count(mark) for mark in _CODE_CHARS)
    latex = text.count("\\") + text.count("$") // 2
    items = 0
    for line in text.split("\n"):
        head = line.lstrip()[:4]
        if head[:1] in ("-", "*", "•") or (head[:1].isdigit() and (". " in head or ") " in head)):
            items += 1
    constraints = sum(1 for word in words if word in _CONSTRAINT_WORDS)
    shape = {
        "chars": bucket(len(text)),
        "words": bucket(len(words)),
        "numbers": bucket(len(numbers)),
        "sentences": bucket(len(_SENTENCE_END.findall(text))),
        "lines": bucket(lines),
        "digits": bucket(max((len(n) for n in numbers), default=0)),
        "questions": min(text.count("?"), 3),
        "items": min(bucket(items), 3),
        "constraints": min(bucket(constraints), 3),
        "codetok": min(bucket(code_tokens), 6),
        "latex": min(bucket(latex), 4),
        "hard": min(len(hard), 2),
        "decimal": int(any("." in n for n in numbers)),
        "percent": int("%" in text),
        "money": int("$" in text),
        "fraction": int(bool(_FRACTION.search(text))),
        "code": int(code),
        "math": int(math_),
        "choice": int(bool(_CHOICES.search(text))),
        "opener": words[0] if words and words[0] in _OPENERS else "-",
    }
    for name, value in shape.items():
        features[f"{name}:{value}"] = 1.0
    # Smooth trends beside the bins (scaled to about 0..1).
    features["log_chars"] = math.log2(len(text) + 1) / 12
    features["log_numbers"] = math.log2(len(numbers) + 1) / 6
    features["log_codetok"] = math.log2(code_tokens + 1) / 8
    return Analysis(
        features=features,
        chars=len(text),
        words=len(words),
        numbers=len(numbers),
        code=code,
        math=math_,
        hard_asks=len(hard),
    )


def closed_form(analysis: Analysis) -> bool:
    """Code, maths or a multiple-choice question: where the LLM classifier measured no
    better than the built-in one (docs/classifiers.md, "Hybrid mode"), so hybrid mode
    lets the built-in one decide these at once."""
    return analysis.code or analysis.math or "choice:1" in analysis.features


def apply_rules(score: float, analysis: Analysis) -> float:
    """The hand-set rules for everyday traffic (module docstring, step 3).

    Each rule maps the score monotonically (scaled into [0, cap], or into [floor, 1]),
    so prompts that one rule touches keep their learned order among themselves."""
    if analysis.words < SHORT_WORDS and not (analysis.code or analysis.math or analysis.hard_asks):
        return SHORT_CAP * score
    if analysis.hard_asks:
        floor = HARD_FLOOR[min(analysis.hard_asks, len(HARD_FLOOR)) - 1]
        score = floor + (1.0 - floor) * score
    if analysis.code:
        score = CODE_FLOOR + (1.0 - CODE_FLOOR) * score
    return score


def sigmoid(value: float) -> float:
    if value >= 0:
        return 1.0 / (1.0 + math.exp(-value))
    exp = math.exp(value)
    return exp / (1.0 + exp)


@dataclass(frozen=True)
class Weights:
    """A trained logistic regression: a bias and one weight per known feature."""

    bias: float
    weights: Mapping[str, float]

    @classmethod
    def load(cls, path: Path = WEIGHTS_PATH) -> Weights:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return cls.from_doc(doc)

    @classmethod
    def from_doc(cls, doc: Mapping) -> Weights:
        return cls(
            bias=float(doc["bias"]),
            weights={str(k): float(v) for k, v in doc["weights"].items()},
        )

    def logit(self, analysis: Analysis) -> float:
        table = self.weights
        total = self.bias
        for name, value in analysis.features.items():
            weight = table.get(name)
            if weight is not None:
                total += weight * value
        return total

    def probability(self, analysis: Analysis) -> float:
        return sigmoid(self.logit(analysis))


def tier_for(score: float, thresholds: Sequence[float] = BUILTIN_THRESHOLDS) -> int:
    """0 below the first threshold, 1 below the second, else 2."""
    low, high = thresholds
    if score >= high:
        return 2
    if score >= low:
        return 1
    return 0


class BuiltinClassifier:
    """Same interface as LLMClassifier: `await classify(text)` gives a Decision."""

    def __init__(
        self,
        thresholds: Sequence[float] | None = None,
        weights: Weights | None = None,
        rules: bool = True,
    ):
        # None: BUILTIN_THRESHOLDS, the defaults calibrated for this classifier's score.
        self.thresholds = check_thresholds(BUILTIN_THRESHOLDS if thresholds is None else thresholds)
        self.weights = weights or load_weights()
        self.rules = rules
        self.last_ok: bool | None = None
        self.last_error: str | None = None

    def score(self, text: str) -> float:
        """P(the strong model is needed), in [0, 1]."""
        analysis = analyse(text)
        score = self.weights.probability(analysis)
        return apply_rules(score, analysis) if self.rules else score

    def decide(self, text: str) -> Decision:
        started = time.perf_counter()
        score = self.score(text)
        self.last_ok = True
        return Decision(
            tier_for(score, self.thresholds),
            SOURCE,
            (time.perf_counter() - started) * 1000,
            f"score={score:.3f}",
            score,
        )

    async def classify(self, text: str) -> Decision | None:
        # Well under a millisecond of pure Python: cheaper than a hop to a thread.
        return self.decide(text)


_cached: Weights | None = None


def load_weights() -> Weights:
    """The bundled weights, read once per process."""
    global _cached
    if _cached is None:
        _cached = Weights.load()
    return _cached
