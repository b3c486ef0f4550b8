"""The proxy-solver features of quality/proxy_features.py: surprisal, entropy and the
classifier's digit score from known logits, one prompt's pass over a small bigram model
(a real causal model: a table of next-token logits), the probe's cached prefix, and the
sample of prompts a run covers. No GGUF and no llama-cpp: the arithmetic is what counts."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from xrouter_core.quality import proxy_features as pf
from xrouter_core.quality import sources
from xrouter_core.quality.evaluate import sample
from xrouter_core.quality.routellm_data import routed_text
from xrouter_core.routing.classifier import score_of


def softmax(row):
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


def test_surprisal_is_the_negative_log_probability_of_each_next_token():
    probs = [[0.5, 0.25, 0.25], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [1 / 3, 1 / 3, 1 / 3]]
    logits = np.log(np.asarray(probs)) + 3.0  # a shift changes no probability
    tokens = [0, 2, 0, 1]
    got = pf.surprisals(logits, tokens, 1, 4)
    # token 1 (=2) is predicted by row 0, token 2 (=0) by row 1, token 3 (=1) by row 2.
    assert got == pytest.approx([-math.log(0.25), -math.log(0.1), -math.log(0.3)])
    assert pf.surprisals(logits, tokens, 2, 3) == pytest.approx([-math.log(0.1)])
    with pytest.raises(ValueError):
        pf.surprisals(logits, tokens, 0, 2)  # the first token has no position before it


def test_surprisal_of_long_spans_worked_out_a_few_rows_at_a_time():
    rng = random.Random(5)
    logits = np.asarray([[rng.gauss(0, 3) for _ in range(7)] for _ in range(40)])
    tokens = [rng.randrange(7) for _ in range(41)]
    expected = [-math.log(softmax(list(logits[i - 1]))[tokens[i]]) for i in range(2, 41)]
    assert pf.ROWS_AT_A_TIME < 39
    assert pf.surprisals(logits, tokens, 2, 41) == pytest.approx(expected, rel=1e-5)


def test_entropy_and_top1_of_known_distributions():
    assert pf.entropy(np.zeros(4)) == pytest.approx(math.log(4))
    assert pf.top1(np.zeros(4)) == pytest.approx(0.25)
    probs = [0.7, 0.2, 0.1]
    row = np.log(probs) - 50.0
    assert pf.entropy(row) == pytest.approx(-sum(p * math.log(p) for p in probs))
    assert pf.top1(row) == pytest.approx(0.7)
    # Large logits do not overflow: all the mass on one token.
    assert pf.entropy(np.asarray([1e4, 0.0, 0.0])) == pytest.approx(0.0, abs=1e-9)
    assert pf.top1(np.asarray([1e4, 0.0, 0.0])) == pytest.approx(1.0)


def test_surprisal_summary():
    values = np.asarray([1.0, 3.0, 5.0, 7.0])
    mean, high, sd, above_small, above_large = pf.surprisal_summary(values)
    assert (mean, high) == (4.0, 7.0)
    assert sd == pytest.approx(math.sqrt(5.0))
    assert above_small == 0.75 and above_large == 0.5  # above 2.3 and 4.6 nats
    assert pf.surprisal_summary(np.asarray([])) == [0.0] * 5


def test_probe_score_is_the_classifiers_score_over_each_digits_tokens():
    probs = np.asarray([0.1, 0.2, 0.05, 0.15, 0.5])  # tokens 0..4
    digits = {"0": [0], "1": [1, 3], "2": [2]}  # "1" has two tokens ("1" and " 1")
    expected = score_of({"0": 0.1, "1": 0.35, "2": 0.05})
    assert pf.probe_score(np.log(probs), digits) == pytest.approx(expected)
    assert expected == pytest.approx((0.05 + 0.175) / 0.5)


ALPHABET = "abcdefgh<>_\n"  # the bigram model's characters; one more id is BOS


class BigramModel:
    """A causal model whose next-token logits depend on the last token only (a seeded
    table): every position's logits are known, so each feature can be worked out here."""

    def __init__(self, seed: int = 3):
        rng = random.Random(seed)
        size = len(ALPHABET) + 1
        self.table = [[rng.gauss(0, 2) for _ in range(size)] for _ in range(size)]
        self.sequence: list[int] = []

    @property
    def bos(self) -> int:
        return len(ALPHABET)

    def tokenize(self, text: str, special: bool) -> list[int]:
        return [ALPHABET.index(c) for c in text]

    def start(self, tokens):
        self.sequence = list(tokens)
        return np.asarray([self.table[t] for t in self.sequence])

    def extend(self, tokens):
        self.sequence.extend(tokens)
        return np.asarray(self.table[tokens[-1]])

    def save(self):
        return list(self.sequence)

    def restore(self, state):
        self.sequence = list(state)


def test_one_prompts_features_over_a_known_model():
    model = BigramModel()
    template = "<_{prompt}_>\n"
    text = "abcab"
    got = pf.proxy_features(model, text, template)
    assert len(got) == len(pf.NAMES)

    table = model.table
    tokens = [model.bos, *(ALPHABET.index(c) for c in "<_" + text + "_>\n")]
    start = 3  # BOS, "<", "_", then the prompt
    spent = [-math.log(softmax(table[tokens[i - 1]])[tokens[i]]) for i in range(start, start + 5)]
    mean = sum(spent) / len(spent)
    assert got[0] == pytest.approx(mean)
    assert got[1] == pytest.approx(max(spent))
    assert got[2] == pytest.approx(math.sqrt(sum((s - mean) ** 2 for s in spent) / len(spent)))
    assert got[3] == pytest.approx(sum(s > 2.3 for s in spent) / 5)
    assert got[4] == pytest.approx(sum(s > 4.6 for s in spent) / 5)

    # The answer: greedy tokens after the template's last token ("\n").
    row, entropies, tops = table[tokens[-1]], [], []
    for _ in range(pf.ANSWER_TOKENS):
        probs = softmax(row)
        entropies.append(-sum(p * math.log(p) for p in probs))
        tops.append(max(probs))
        row = table[probs.index(max(probs))]
    assert got[5] == pytest.approx(entropies[0]) and got[6] == pytest.approx(tops[0])
    assert got[7] == pytest.approx(sum(entropies) / len(entropies))
    assert got[8] == pytest.approx(sum(tops) / len(tops))
    assert model.sequence[: len(tokens)] == tokens
    assert len(model.sequence) == len(tokens) + pf.ANSWER_TOKENS - 1


def test_a_long_prompt_keeps_its_first_and_last_tokens():
    assert pf.middle_cut(list(range(10)), 4) == [0, 1, 8, 9]
    assert pf.middle_cut(list(range(10)), 5) == [0, 1, 2, 8, 9]
    assert pf.middle_cut([1, 2, 3], 4) == [1, 2, 3] and pf.middle_cut([1, 2], None) == [1, 2]
    model = BigramModel()
    text = "abcdefgh" * 3
    cut = pf.proxy_features(model, text, "<_{prompt}_>\n", max_tokens=6)
    assert model.sequence[3:9] == [ALPHABET.index(c) for c in "abcfgh"]
    assert cut != pf.proxy_features(model, text, "<_{prompt}_>\n")


def test_the_template_needs_the_prompt():
    with pytest.raises(ValueError, match="prompt"):
        pf.proxy_features(BigramModel(), "abc", "<_>")


def test_the_probes_cached_prefix_gives_the_uncached_score():
    class Letters(BigramModel):
        """Any text: characters outside the alphabet are "_"."""

        def tokenize(self, text: str, special: bool) -> list[int]:
            return [ALPHABET.index(c) if c in ALPHABET else ALPHABET.index("_") for c in text]

    model = Letters()
    probe = pf.Probe(model, model.restore, model.save)
    assert set(probe.digit_ids) == {"0", "1", "2"}
    for text in ("abc", "hello there, a longer request", "h"):
        cached = probe.score(text)
        tokens = [model.bos, *model.tokenize(probe.full(text), True)]
        fresh = pf.probe_score(model.start(tokens)[-1], probe.digit_ids)
        assert cached == pytest.approx(fresh)
        assert model.sequence == tokens  # the restored prefix plus the rest, nothing stale


def test_the_sample_is_done_in_rounds_so_a_stopped_run_covers_a_smaller_sample():
    texts = pf.sampled_texts(3, seed=0)
    everything = sources.load_all()
    # Any prefix of whole rounds is every source's sample of that size.
    per_round = len(everything)
    for size in (1, 2, 3):
        expected = {routed_text(r.prompt) for rows in everything.values()
                    for r in sample(rows, size, 0)}  # fmt: skip
        assert set(texts[: size * per_round]) == expected
    assert len(texts) == len(set(texts))
