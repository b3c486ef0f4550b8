"""Replay a 30-turn agent session through real routers to fake Anthropic providers that
cache and bill like the real API, and compare three strategies on the same turns:

  (a) stay on frontier, with its prompt caching (X-Xrouter-tier: frontier),
  (b) per-request routing without session cost routing: SESSION_COST_ROUTING=observe
      (the router still marks translated prompts for caching; with `off` it does not,
      shown as (off) in the totals),
  (c) with it (SESSION_COST_ROUTING=on).

The session (made here, in the shape agent clients send): a long system prompt and
tools, then 30 turns; each turn the person asks (an easy or a hard ask, which the fake
classifier scores 0 or 2); for a hard one the model calls a tool, the client sends the
tool's result (a file's worth of text) and the model answers; an easy one is answered at
once. 45 to 60 requests, a prefix growing to ~50k tokens. The client speaks OpenAI's chat format, so every route translates to Anthropic
and the router places the cache marks (docs/sessions.md). Tiers: Claude Haiku 4.5,
Sonnet 4.5, Opus 4.5 at genai-prices' list prices.

    python bench/session_replay.py [--pattern half|late|hard|all] [--quiet]

prints the per-turn table of each pattern and the totals of the three strategies.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from cache_fakes import Billed, CachingAnthropicProvider  # noqa: E402
from conftest import Router  # noqa: E402
from fakes import FakeClassifier, Recorded, Reply  # noqa: E402

from xrouter_core.accounting.prices import genai_price  # noqa: E402

HOST = "127.0.0.2"  # not a local host to the router: its routes are priced
MODELS = {"cheap": "claude-haiku-4-5", "medium": "claude-sonnet-4-5", "frontier": "claude-opus-4-5"}
TURNS = 30
OUTPUT_TOKENS = 300
# Each turn's ask, per pattern: E easy (with a tool call), Q easy and answered at once
# (a quick question), H hard (with a tool call).
PATTERNS = {
    # Half the turns easy, in runs, from the start.
    "half": "".join("E" if i % 4 in (1, 2) else "H" for i in range(TURNS)),
    # Twenty-two hard turns build the prefix on frontier; then two quick questions.
    "late": "".join("Q" if i in (22, 28) else "H" for i in range(TURNS)),
    "hard": "H" * TURNS,
}
STRATEGIES = ("a", "b", "c", "off")
SHOWN = ("a", "b", "c")  # in the per-turn table
STRATEGY_NAMES = {
    "a": "frontier, cached",
    "b": "per request",
    "c": "session cost",
    "off": "per request, no marks",
}
MODES = {"a": "on", "b": "observe", "c": "on", "off": "off"}


class LastAskClassifier(FakeClassifier):
    """Scores the person's latest ask: 0 when it is an EASY one, 2 when HARD (the
    classifier's input also quotes the earlier ask, before the latest)."""

    def answer(self, request: Recorded) -> Reply:
        text = (request.json or {})["messages"][-1]["content"]
        self.digit = "0" if text.rfind("EASY") > text.rfind("HARD") else "2"
        return super().answer(request)


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name.replace('_', ' ')}. " + "Use it with care. " * 40,
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string", "description": "A path. " * 20}},
                "required": ["path"],
            },
        },
    }
    for name in ("read_file", "run_command", "search_code")
]
SYSTEM = (
    "You are a coding agent working in /srv/projects on 2026-12-02T02:10:00Z.\n"
    + "Follow the repository's conventions; explain briefly; run the tests. " * 220
)


def ask(turn: int, kind: str) -> str:
    if kind == "Q":
        return f"EASY QUICK turn {turn}: what is the name of the function we just changed?"
    if kind == "E":
        return f"EASY turn {turn}: what does the function on line {turn * 7} return?"
    return (
        f"HARD turn {turn}: redesign the scheduler so that it stays fair under load, "
        "prove the invariants, and update every caller accordingly. " * 3
    )


def tool_result(turn: int) -> str:
    line = f"    value_{turn} = compute(step={turn}, flags=FLAGS)  # keep in sync\n"
    return f"# file_{turn}.py\n" + line * 90


@dataclass
class TurnCost:
    turn: int
    kind: str  # E, Q or H (PATTERNS)
    tier: str
    uncached: int
    read: int
    written: int
    output: int
    usd: float


def price_of(billed: Billed) -> float:
    price = genai_price(billed.model, None)
    assert price is not None, billed.model
    return price.cost(billed.prompt, billed.output, billed.read, billed.written)


class Fakes:
    def __init__(self) -> None:
        self.classifier = LastAskClassifier("2")
        self.tiers = {
            tier: CachingAnthropicProvider(tier, host=HOST, output_tokens=OUTPUT_TOKENS)
            for tier in MODELS
        }
        for fake in self.tiers.values():
            fake.answer_directly = "QUICK"  # a quick question needs no tool

    def env(self, mode: str, data: Path) -> dict[str, str]:
        env = {
            "CLASSIFIER_MODE": "llm",
            "CLASSIFIER_BASE_URL": self.classifier.url + "/v1",
            "CLASSIFIER_MODEL": "tiny-classifier",
            "SESSION_COST_ROUTING": mode,
            "XROUTER_DATA_DIR": str(data),
            "FALLBACK_ENABLED": "false",
        }
        for tier, fake in self.tiers.items():
            name = tier.upper()
            env[f"{name}_BASE_URL"] = fake.url
            env[f"{name}_PROVIDER"] = "anthropic"
            env[f"{name}_MODEL"] = MODELS[tier]
            env[f"{name}_API_KEY"] = f"sk-ant-api03-bench-{tier}"
        return env

    def reset(self) -> None:
        for fake in self.tiers.values():
            fake.prompt_cache.entries.clear()
            fake.billed.clear()
            fake.requests.clear()

    def close(self) -> None:
        self.classifier.close()
        for fake in self.tiers.values():
            fake.close()


def replay(
    routers: Router | list[Router], fakes: Fakes, pattern: str, pin: bool = False
) -> list[TurnCost]:
    """One session through the router (turn i through routers[i % n], when several);
    what each turn was billed (its requests together)."""
    routers = routers if isinstance(routers, list) else [routers]
    headers = {"x-xrouter-tier": "frontier"} if pin else {}
    messages: list[dict] = [{"role": "system", "content": SYSTEM}]
    turns = []
    clients = [router.client(timeout=30) for router in routers]
    with contextlib.ExitStack() as stack:
        for c in clients:
            stack.enter_context(c)
        for turn, kind in enumerate(pattern):
            client = clients[turn % len(clients)]
            messages.append({"role": "user", "content": ask(turn, kind)})
            before = {tier: len(f.billed) for tier, f in fakes.tiers.items()}
            for _ in range(4):  # the tool call, then the answer
                body = {"model": "xrouter/auto", "messages": messages, "tools": TOOLS}
                reply = client.post("/v1/chat/completions", json=body, headers=headers)
                assert reply.status_code == 200, reply.text
                message = reply.json()["choices"][0]["message"]
                messages.append({k: v for k, v in message.items() if v is not None})
                calls = message.get("tool_calls")
                if not calls:
                    break
                for call in calls:
                    messages.append(
                        {"role": "tool", "tool_call_id": call["id"], "content": tool_result(turn)}
                    )
            billed = [
                (tier, b) for tier, f in fakes.tiers.items() for b in f.billed[before[tier] :]
            ]
            turns.append(
                TurnCost(
                    turn,
                    kind,
                    "+".join(dict.fromkeys(tier for tier, _ in billed)),
                    sum(b.uncached for _, b in billed),
                    sum(b.read for _, b in billed),
                    sum(b.written for _, b in billed),
                    sum(b.output for _, b in billed),
                    sum(price_of(b) for _, b in billed),
                )
            )
    return turns


@dataclass
class Run:
    turns: list[TurnCost]
    usage: dict  # the router's /usage document at the end
    log: str = ""  # the router's log

    @property
    def total(self) -> float:
        return sum(t.usd for t in self.turns)


def run_pattern(
    fakes: Fakes, pattern: str, tmp: Path, strategies: tuple[str, ...] = STRATEGIES
) -> dict[str, Run]:
    runs = {}
    for strategy in strategies:
        fakes.reset()
        mode = MODES[strategy]
        directory = tmp / f"{strategy}-{len(list(tmp.iterdir()))}"
        directory.mkdir()
        router = Router(fakes.env(mode, directory / "data"), directory)
        try:
            turns = replay(router, fakes, pattern, pin=strategy == "a")
            router.settle()
            with router.client() as client:
                usage = client.get("/usage").json()
            log = router.logs()
        finally:
            router.stop()
        runs[strategy] = Run(turns, usage, log)
    return runs


def table(runs: dict[str, Run]) -> str:
    head = f"{'turn':>4} {'ask':<4}" + "".join(
        f" | {STRATEGY_NAMES[s]:<15}{'read':>7}{'write':>7}{'uncached':>9}{'USD':>9}" for s in SHOWN
    )
    lines = [head, "-" * len(head)]
    for i in range(len(runs["a"].turns)):
        row = f"{i:>4} {runs['a'].turns[i].kind:<4}"
        for s in SHOWN:
            t = runs[s].turns[i]
            row += f" | {t.tier:<15}{t.read:>7}{t.written:>7}{t.uncached:>9}{t.usd:>9.4f}"
        lines.append(row)
    return "\n".join(lines)


def summary(name: str, runs: dict[str, Run]) -> str:
    a = runs["a"].total
    parts = [f"pattern {name}:"]
    for s in STRATEGIES:
        run = runs[s]
        sessions = run.usage["sessions"]
        parts.append(
            f"  ({s}) {STRATEGY_NAMES[s]:<22} ${run.total:.4f}  {run.total / a:5.2f}x (a)"
            f"   /usage: cost ${run.usage['cost']['totalUsd']:.4f},"
            f" cached-frontier baseline ${sessions['cachedFrontierUsd']:.4f},"
            f" saved ${sessions['savingsUsd']:.4f}"
        )
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pattern", choices=[*PATTERNS, "all"], default="all")
    parser.add_argument("--quiet", action="store_true", help="totals only")
    parser.add_argument("--json", help="write the totals here")
    args = parser.parse_args()
    names = list(PATTERNS) if args.pattern == "all" else [args.pattern]
    fakes = Fakes()
    totals = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in names:
                runs = run_pattern(fakes, PATTERNS[name], Path(tmp))
                if not args.quiet:
                    easy = sum(kind != "H" for kind in PATTERNS[name])
                    print(f"\n== pattern {name}: {easy} easy turns of {TURNS}: {PATTERNS[name]}")
                    print(table(runs))
                print(summary(name, runs))
                totals[name] = {s: round(runs[s].total, 6) for s in STRATEGIES}
    finally:
        fakes.close()
    if args.json:
        Path(args.json).write_text(json.dumps(totals, indent=2))


if __name__ == "__main__":
    main()
