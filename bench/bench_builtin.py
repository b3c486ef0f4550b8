"""How long the built-in classifier takes per decision, and what it costs in memory.

    python bench/bench_builtin.py [--prompts 2000] [--repeat 3]

Prompts: RouteLLM questions (MMLU and GSM8K, which the bundled weights now train on), everyday chat requests, and
long prompts at the classifier's 4000-character cut, so short and worst-case inputs
are both measured. Runs in one thread (the router calls it on its event loop); the goal
is a median well under 5 ms on one CPU core. Prints median, p90, p99 and max.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xrouter_core.quality.routellm_data import load_benchmark, routed_text  # noqa: E402
from xrouter_core.routing import builtin  # noqa: E402

CHAT = [
    "hi",
    "Thanks, that worked!",
    "What is the capital of Australia?",
    "Translate 'where is the train station' into German.",
    "Write a haiku about autumn rain.",
    "Summarize the plot of Hamlet in three sentences.",
    "Explain the difference between a process and a thread.",
    "Write a Python function that checks whether a string is a palindrome.",
    "Fix this:\n```js\nconst xs = [1,2,3];\nxs.map(x => { x * 2 });\n```",
    "Design a multi-region, strongly consistent key-value store; discuss the trade-offs and the failure modes.",
    "Prove that the square root of 2 is irrational, then derive a general statement for primes.",
]


def prompts(count: int) -> list[str]:
    held_out = load_benchmark("mmlu", "heldout") + load_benchmark("gsm8k", "heldout")
    step = max(1, len(held_out) // count)
    chosen = [routed_text(e.prompt) for e in held_out[::step][:count]]
    longest = max(chosen, key=len)
    long_prompts = [(longest + "\n") * (builtin.MAX_CHARS // len(longest) + 2)] * 20
    return chosen + CHAT * 10 + long_prompts


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    tracemalloc.start()
    started = time.perf_counter()
    weights = builtin.Weights.load()
    load_ms = (time.perf_counter() - started) * 1000
    weights_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    classifier = builtin.BuiltinClassifier(weights=weights)

    texts = prompts(args.prompts)
    for text in texts[:50]:  # warm the regex caches
        classifier.decide(text)
    times: list[float] = []
    longest: list[float] = []
    for _ in range(args.repeat):
        for text in texts:
            started = time.perf_counter()
            classifier.decide(text)
            elapsed = (time.perf_counter() - started) * 1000
            times.append(elapsed)
            if len(text) > builtin.MAX_CHARS:
                longest.append(elapsed)
    times.sort()
    result = {
        "decisions": len(times),
        "median_ms": round(statistics.median(times), 4),
        "p90_ms": round(percentile(times, 0.90), 4),
        "p99_ms": round(percentile(times, 0.99), 4),
        "max_ms": round(times[-1], 4),
        "median_ms_at_the_4000_char_cut": round(statistics.median(longest), 4),
        "weights_load_ms": round(load_ms, 1),
        "weights_file_kb": round(builtin.WEIGHTS_PATH.stat().st_size / 1024, 1),
        "weights_in_memory_mb": round(weights_bytes / 1e6, 2),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
