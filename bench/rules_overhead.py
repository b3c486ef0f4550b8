"""What a rule chain costs a request: today's configuration (one route per tier, no
rules) against 3 candidates per tier and a 10-rule chain, in the same run.

Both routers use the `xrouter` launcher, the built-in classifier (in process, so no
classifier server's jitter) and fake providers on 127.0.0.1. The prompts carry no tag,
so the rules router walks all ten rules (prefix, tag, discover against a fake Ollama,
price, score, random) to the tier rule at the end: the most a request pays. Requests
are sequential (c=1), alternating between the routers in rounds so that drift on a busy
machine hits both alike. It also times, in process, what the rules and the tagger add
per request on the event loop (microseconds, steadier than HTTP timings on a loaded
machine). Run: python bench/rules_overhead.py [N] [ROUNDS]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import Router, Upstreams  # noqa: E402
from fakes import FakeModelProvider, FakeOpenAIProvider  # noqa: E402

from xrouter_core.config import load_settings  # noqa: E402
from xrouter_core.routing.classifier import Decision  # noqa: E402
from xrouter_core.routing.rules import RuleChain, RuleEnv, RuleInput  # noqa: E402
from xrouter_core.routing.tags import DEFAULT_TAG_WORDS, KeywordTagger  # noqa: E402


def timed(router: Router, n: int, round_no: int) -> list[float]:
    times = []
    with router.client() as client:
        for i in range(n):
            body = {
                "model": "xrouter/auto",
                "messages": [{"role": "user", "content": f"hello there {round_no} {i}"}],
            }
            started = time.perf_counter()
            reply = client.post("/v1/chat/completions", json=body)
            reply.read()
            times.append((time.perf_counter() - started) * 1000)
            assert reply.status_code == 200, reply.text
    return times[n // 10 :]  # drop warm-up


def summary(label: str, times: list[float]) -> tuple[str, float]:
    times = sorted(times)
    p50 = statistics.median(times)
    p90 = times[int(len(times) * 0.9)]
    return f"{label:<44} p50 {p50:6.2f} ms   p90 {p90:6.2f} ms   n={len(times)}", p50


def rules_env(upstreams: Upstreams, spares: list[FakeOpenAIProvider], ollama_url: str) -> dict:
    env = {**upstreams.env(), "CLASSIFIER_MODE": "builtin"}
    routes = {}
    for tier in ("cheap", "medium", "frontier"):
        server = getattr(upstreams, tier)
        first = {"base_url": server.url + "/v1", "model": f"{tier}-model", "name": f"{tier}-1"}
        others = [
            {"base_url": spare.url + "/v1", "model": f"{tier}-spare-{n}", "name": f"{tier}-{n}"}
            for n, spare in enumerate(spares, start=2)
        ]
        routes[tier] = [first, *others]
        for name in ("BASE_URL", "MODEL", "API_KEY"):
            env.pop(f"{tier.upper()}_{name}")
    rules = [
        {"kind": "prefix", "prefix": "openai/", "route": "frontier-1", "model": "*"},
        {"kind": "prefix", "prefix": "anthropic/", "route": "frontier-2", "model": "*"},
        {"kind": "discover", "base_url": ollama_url, "prefix": "ollama/", "refresh_s": 30},
        {"kind": "tag", "tag": "code", "route": "medium-1"},
        {"kind": "tag", "tag": "translation", "tier": "cheap"},
        {"kind": "tag", "tag": "vision", "tier": "frontier"},
        {"kind": "price", "if_tags": ["math"], "max_price": 1},
        {"kind": "score", "if_tags": ["summary"], "quality_bias": 0.8},
        {"kind": "random", "if_tags": ["creative"], "tiers": ["cheap", "medium"], "seed": 1},
        {"kind": "tier"},
    ]
    env["UPSTREAMS_JSON"] = json.dumps({"routes": routes, "rules": rules})
    return env


def in_process_cost(env: dict[str, str], n: int = 20_000) -> tuple[float, float]:
    """Microseconds per request: the tagger on a 2,000-character prompt without tags, and
    the ten rules walked to the tier rule (its classifier call stubbed out)."""
    settings = load_settings(env, "/nonexistent.env", "/nonexistent.json")
    chain = RuleChain(settings.rules, RuleEnv(lambda route: None))
    tagger = KeywordTagger(DEFAULT_TAG_WORDS)
    text = ("Please have a look at these notes from yesterday's meeting. " * 40)[:2000]
    started = time.perf_counter()
    for _ in range(n):
        tagger.tags(text)
    tagging = (time.perf_counter() - started) / n * 1e6
    decision = Decision(1, "builtin")

    async def classify() -> Decision:
        return decision

    async def walk() -> float:
        request = RuleInput("xrouter/auto", (), classify)
        started = time.perf_counter()
        for _ in range(n):
            await chain.select(request)
        return (time.perf_counter() - started) / n * 1e6

    import asyncio

    return tagging, asyncio.run(walk())


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    upstreams = Upstreams()
    spares = [FakeOpenAIProvider("spare-a"), FakeOpenAIProvider("spare-b")]
    ollama = FakeModelProvider("ollama", ["llama3:latest"])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            routers = {
                "today: 1 route per tier, no rules": Router(
                    {**upstreams.env(), "CLASSIFIER_MODE": "builtin"},
                    _dir(tmp, "today"),
                    launcher="xrouter",
                ),
                "3 candidates per tier, 10 rules": Router(
                    rules_env(upstreams, spares, ollama.url),
                    _dir(tmp, "rules"),
                    launcher="xrouter",
                ),
            }
            times: dict[str, list[float]] = {label: [] for label in routers}
            try:
                for round_no in range(rounds):
                    for label, router in routers.items():
                        times[label] += timed(router, n, round_no)
            finally:
                for router in routers.values():
                    router.stop()
            p50s = []
            for label, values in times.items():
                line, p50 = summary(label, values)
                p50s.append(p50)
                print(line)
            print(f"rules / today p50: {p50s[1] / p50s[0]:.3f}")
            tagging, walking = in_process_cost(rules_env(upstreams, spares, ollama.url))
            print(
                f"in process: tagger {tagging:.1f} µs, 10 rules walked {walking:.1f} µs per request"
            )
    finally:
        for server in (*spares, ollama):
            server.close()
        upstreams.close()


def _dir(tmp: str, name: str) -> Path:
    path = Path(tmp) / name
    path.mkdir()
    return path


if __name__ == "__main__":
    main()
