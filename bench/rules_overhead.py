"""What a rule chain costs a request: today's configuration (one route per tier, no
rules) against 3 candidates per tier and a 10-rule chain, in the same run.

Both routers use the `xrouter` launcher and the built-in classifier (in process, so no
classifier server's jitter); every route is the benchmarks' fast fake provider
(bench/fake_provider.py, its own process), also asked directly to give the added p50. The prompts carry no tag,
so the rules router walks all ten rules (prefix, tag, discover against a fake Ollama,
price, score, random) to the tier rule at the end: the most a request pays. Requests
are sequential (c=1), sent to one router and the other in turn, so that drift on a busy
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

import httpx  # noqa: E402
from conftest import Router  # noqa: E402
from fakes import FakeModelProvider  # noqa: E402

from bench.run import start_provider  # noqa: E402
from xrouter_core.config import load_settings  # noqa: E402
from xrouter_core.routing.classifier import Decision  # noqa: E402
from xrouter_core.routing.rules import RuleChain, RuleEnv, RuleInput  # noqa: E402
from xrouter_core.routing.tags import DEFAULT_TAG_WORDS, KeywordTagger  # noqa: E402


def timed(targets: dict[str, str], n: int, round_no: int) -> dict[str, list[float]]:
    """n requests to each target (base URL), one to each in turn: a busy moment of the
    machine falls on all alike."""
    times: dict[str, list[float]] = {label: [] for label in targets}
    clients = {
        label: httpx.Client(base_url=url, trust_env=False, timeout=30)
        for label, url in targets.items()
    }
    try:
        for i in range(n):
            for label, client in clients.items():
                body = {
                    "model": "xrouter/auto" if label != DIRECT else "fake-model",
                    "messages": [{"role": "user", "content": f"hello there {round_no} {i}"}],
                }
                started = time.perf_counter()
                path = "/v1/chat/completions"
                reply = client.post(path, json=body)
                reply.read()
                times[label].append((time.perf_counter() - started) * 1000)
                assert reply.status_code == 200, reply.text
    finally:
        for client in clients.values():
            client.close()
    return {label: values[n // 10 :] for label, values in times.items()}  # warm-up dropped


def summary(label: str, times: list[float]) -> tuple[str, float]:
    times = sorted(times)
    p50 = statistics.median(times)
    p90 = times[int(len(times) * 0.9)]
    return f"{label:<44} p50 {p50:6.2f} ms   p90 {p90:6.2f} ms   n={len(times)}", p50


DIRECT = "direct to the fake provider"


def today_env(fake: str) -> dict[str, str]:
    env = {"CLASSIFIER_MODE": "builtin", "CLASSIFIER_ENABLED": "true"}
    for tier in ("cheap", "medium", "frontier"):
        env[f"{tier.upper()}_BASE_URL"] = fake + "/v1"
        env[f"{tier.upper()}_MODEL"] = f"{tier}-model"
    return env


def rules_env(fake: str, ollama_url: str) -> dict[str, str]:
    env = {"CLASSIFIER_MODE": "builtin"}
    routes = {
        tier: [
            {"base_url": fake + "/v1", "model": f"{tier}-model-{n}", "name": f"{tier}-{n}"}
            for n in (1, 2, 3)
        ]
        for tier in ("cheap", "medium", "frontier")
    }
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
    ollama = FakeModelProvider("ollama", ["llama3:latest"])
    with tempfile.TemporaryDirectory() as tmp:
        provider, fake = start_provider(Path(tmp), Path(tmp))
        routers = {
            "today: 1 route per tier, no rules": Router(
                today_env(fake), _dir(tmp, "today"), launcher="xrouter"
            ),
            "3 candidates per tier, 10 rules": Router(
                rules_env(fake, ollama.url), _dir(tmp, "rules"), launcher="xrouter"
            ),
        }
        targets = {DIRECT: fake, **{label: router.url for label, router in routers.items()}}
        times: dict[str, list[float]] = {label: [] for label in targets}
        try:
            for round_no in range(rounds):
                for label, values in timed(targets, n, round_no).items():
                    times[label] += values
        finally:
            for router in routers.values():
                router.stop()
            provider.kill()
            ollama.close()
        p50 = {}
        for label, values in times.items():
            line, p50[label] = summary(label, values)
            print(line)
        added = {label: p50[label] - p50[DIRECT] for label in routers}
        for label, value in added.items():
            print(f"added p50, {label:<36} {value:6.3f} ms")
        today, ruled = added.values()
        print(f"added p50, rules / today: {ruled / today:.3f}")
        tagging, walking = in_process_cost(rules_env(fake, ollama.url))
        print(f"in process: tagger {tagging:.1f} µs, 10 rules walked {walking:.1f} µs per request")


def _dir(tmp: str, name: str) -> Path:
    path = Path(tmp) / name
    path.mkdir()
    return path


if __name__ == "__main__":
    main()
