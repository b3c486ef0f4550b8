"""The built-in classifier: a difficulty score in [0, 1] computed in-process, no LLM server.

How a prompt is scored:
  1. It is read as a set of tokens: its distinct words, plus tokens for its shape
     (length, number of numbers, sentences, lines, digits, question marks, code, maths),
     within its style (a multiple-choice question, or an open request).
  2. Each known token carries the mean quality gain of the strong model over the weak
     one on the training prompts that contained it (builtin_weights.json, made by
     `python -m xrouter_core.quality.train_builtin` from the calibration half of the RouteLLM
     MMLU and GSM8K data). The prompt's expected gain is the style's mean gain plus the
     mean over its known tokens (plus, per style, a small trend with the length).
  3. The expected gain becomes a percentile among the training prompts of the same
     style: 0.7 means "more likely to need the strong model than 70 % of them".
  4. The training data are exam questions and maths word problems, which everyday
     traffic mostly is not. An open request without any number is outside that domain
     and is scored by its length instead; and a few hand-set rules apply to every
     prompt: a very short message without code, maths or a hard ask is capped low; code
     and explicit hard asks (prove, architecture, refactor...) raise a floor.
     `python -m xrouter_core.quality.evaluate` scores the classifier with these rules on.
Two thresholds turn the score into tier 0, 1 or 2.

Pure Python: one regular-expression pass and a few hundred dictionary look-ups per
decision (bench/bench_builtin.py measures it).
"""

from __future__ import annotations

import bisect
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from xrouter_core.config import DEFAULT_THRESHOLDS, check_thresholds
from xrouter_core.routing.classifier import Decision

WEIGHTS_PATH = Path(__file__).with_name("builtin_weights.json")
SOURCE = "builtin"
# Longer texts are cut (head and tail kept) before scoring, which bounds the time.
MAX_CHARS = 4000

# Rules for everyday traffic (step 4 above).
SHORT_WORDS = 12  # fewer words than this, and no code, maths or hard ask: ...
SHORT_CAP = 0.2  # ... the score is at most this (cheap with any usual thresholds)
CODE_FLOOR = 0.45  # code in the prompt: at least medium with the default thresholds
HARD_FLOOR = (0.5, 0.75)  # one hard ask / two or more: at least this score

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_CHOICES = re.compile(r"(?:^|\n)\s*\(?[Aa][.)]\s.*\n\s*\(?[Bb][.)]\s")
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
_CODE = re.compile(
    r"```|\bdef \w+\(|\bfunction\s*\w*\(|\bclass \w+[:({]|;\s*\n|=>|#include|\bimport \w+"
)
_FRACTION = re.compile(r"\d/\d")
_MATH = re.compile(r"[=^∫∑√≤≥±]|\\frac|\\sum|\bmod\b")
_HARD = re.compile(
    r"\b(?:prove|proof|derive|theorem|lemma|rigorous|architect\w*|refactor\w*|optimi[sz]\w*|"
    r"debug\w*|concurren\w*|distributed|scalab\w*|trade-?offs?|step[- ]by[- ]step|in depth|"
    r"complexity|algorithm\w*|research|analy[sz]e|compare and contrast|multi-step|edge cases)\b"
)


def bucket(value: float) -> int:
    """log2 bins: 0, 1, 2-3, 4-7, ... so one token covers a range of sizes."""
    return int(math.log2(value + 1))


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the scorer reads from a prompt."""

    style: str  # "choice" (multiple-choice question) or "open"
    tokens: frozenset[str]  # distinct words and shape tokens ("chars:8", "code:1", ...)
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
    words = _WORD.findall(text.lower())
    numbers = _NUMBER.findall(text)
    code = bool(_CODE.search(text))
    math_ = bool(_MATH.search(text))
    shape = {
        "chars": bucket(len(text)),
        "words": bucket(len(words)),
        "numbers": bucket(len(numbers)),
        "sentences": bucket(len(_SENTENCE_END.findall(text))),
        "lines": bucket(text.count("\n")),
        "digits": bucket(max((len(n) for n in numbers), default=0)),
        "questions": min(text.count("?"), 3),
        "decimal": int(any("." in n for n in numbers)),
        "percent": int("%" in text),
        "money": int("$" in text),
        "fraction": int(bool(_FRACTION.search(text))),
        "code": int(code),
        "math": int(math_),
    }
    tokens = set(words)
    tokens.update(f"{name}:{value}" for name, value in shape.items())
    return Analysis(
        style="choice" if _CHOICES.search(text) else "open",
        tokens=frozenset(tokens),
        chars=len(text),
        words=len(words),
        numbers=len(numbers),
        code=code,
        math=math_,
        hard_asks=len(set(_HARD.findall(text.lower()))),
    )


def mean_known(tokens: frozenset[str], table: Mapping[str, float]) -> float:
    """Mean of the table's values over the tokens it knows (0 when it knows none)."""
    known = [table[token] for token in tokens if token in table]
    return sum(known) / len(known) if known else 0.0


def in_domain(analysis: Analysis) -> bool:
    """Like the training data: a multiple-choice question, or a request with numbers in it
    (the open-ended training prompts are all maths word problems)."""
    return analysis.style == "choice" or analysis.numbers > 0


def length_score(words: int) -> float:
    """Outside the training data's domain: longer asks are harder; 8 words or fewer give 0,
    64 words 0.5, 512 or more 1."""
    return min(max((math.log2(max(words, 1)) - 3) / 6, 0.0), 1.0)


def apply_rules(score: float, analysis: Analysis) -> float:
    """The hand-set rules for everyday traffic (module docstring, step 4)."""
    if analysis.words < SHORT_WORDS and not (analysis.code or analysis.math or analysis.hard_asks):
        return min(score, SHORT_CAP)
    if analysis.hard_asks:
        score = max(score, HARD_FLOOR[min(analysis.hard_asks, len(HARD_FLOOR)) - 1])
    if analysis.code:
        score = max(score, CODE_FLOOR)
    return score


@dataclass(frozen=True)
class Weights:
    """A trained table: per style, the mean gain and each token's gain relative to it."""

    base: Mapping[str, float]
    tables: Mapping[str, Mapping[str, float]]
    # Per style, a gain per doubling of the prompt's length (chosen by cross-validation).
    length_slope: Mapping[str, float]
    # Per style, sorted expected gains of the training prompts (out-of-fold): the score is
    # the percentile among the prompts of the same style.
    reference: Mapping[str, Sequence[float]]

    @classmethod
    def load(cls, path: Path = WEIGHTS_PATH) -> Weights:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            base={str(k): float(v) for k, v in doc["base"].items()},
            tables={
                str(s): {str(k): float(v) for k, v in t.items()} for s, t in doc["tables"].items()
            },
            length_slope={str(k): float(v) for k, v in doc.get("length_slope", {}).items()},
            reference={str(s): sorted(float(v) for v in r) for s, r in doc["reference"].items()},
        )

    def expected_gain(self, analysis: Analysis) -> float:
        """Predicted quality gain of the strong model over the weak one on this prompt."""
        style = analysis.style
        return (
            self.base.get(style, 0.0)
            + mean_known(analysis.tokens, self.tables.get(style, {}))
            + self.length_slope.get(style, 0.0) * math.log2(analysis.chars + 1)
        )

    def percentile(self, style: str, value: float) -> float:
        """Share of the style's reference prompts with a lower expected gain, interpolated."""
        reference = self.reference.get(style)
        if not reference:
            return min(max(value, 0.0), 1.0)
        index = bisect.bisect_left(reference, value)
        if index == 0:
            return 0.0
        if index >= len(reference):
            return 1.0
        low, high = reference[index - 1], reference[index]
        fraction = (value - low) / (high - low) if high > low else 0.0
        return (index - 1 + fraction) / (len(reference) - 1)


def tier_for(score: float, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> int:
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
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        weights: Weights | None = None,
        rules: bool = True,
    ):
        self.thresholds = check_thresholds(thresholds)
        self.weights = weights or load_weights()
        self.rules = rules
        self.last_ok: bool | None = None
        self.last_error: str | None = None

    def score(self, text: str) -> float:
        """Difficulty in [0, 1]."""
        analysis = analyse(text)
        if in_domain(analysis):
            score = self.weights.percentile(analysis.style, self.weights.expected_gain(analysis))
        else:
            score = length_score(analysis.words)
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
