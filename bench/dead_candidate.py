"""Issue #17's goal: a dead candidate costs the client nothing visible.

Two cheap candidates, the first (ordered: tried first) a closed port that refuses
connections, the second a live fake provider; medium and frontier live too. A real
router (mitmdump, or `xrouter` with --launcher xrouter) gets N requests (default 200,
half streamed) that the classifier sends to cheap, and this counts, from each answer and
from what every fake provider received: failed requests, answers served by the live cheap
candidate, and requests that escalated to medium or frontier.

Run twice: with the circuit breaker as configured by default (the dead candidate is
skipped once it failed BREAKER_FAILURES times), and with it out of the way
(BREAKER_FAILURES=100000), so that every request tries the dead one first.

Run: python bench/dead_candidate.py [N] [--launcher xrouter] [--concurrency C]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import Router, Upstreams, free_port  # noqa: E402
from fakes import FakeOpenAIProvider  # noqa: E402


def run(router: Router, n: int, concurrency: int, tag: str) -> dict:
    """N requests; what each answer said."""

    def one(i: int) -> tuple[int, str, str, float]:
        body = {
            "model": "xrouter/auto",
            "stream": i % 2 == 1,
            "messages": [{"role": "user", "content": f"hello {tag} {i} {time.time_ns()}"}],
        }
        started = time.perf_counter()
        with router.client() as client:
            reply = client.post("/v1/chat/completions", json=body)
        ms = (time.perf_counter() - started) * 1000
        served = reply.headers.get("x-xrouter-upstream", "")  # the tier that served
        ok = reply.status_code == 200 and "Hello from cheap-b" in reply.text
        return reply.status_code if ok else -reply.status_code, served, reply.text[:200], ms

    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(n)))
    failed = [r for r in results if r[0] < 0]
    return {
        "requests": n,
        "failed": len(failed),
        "first_failure": failed[0][2] if failed else "",
        "served_by_cheap": sum(1 for r in results if r[1] == "cheap"),
        "p50_ms": statistics.median(r[3] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, nargs="?", default=200)
    parser.add_argument("--launcher", default="mitmdump", choices=("mitmdump", "xrouter"))
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    upstreams = Upstreams()
    live = FakeOpenAIProvider("cheap-b")
    upstreams.classifier.digit = "0"  # every request is a cheap one
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: connections refused
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for label, extra in (
                ("breaker on (default)", {}),
                ("breaker off (dead one tried every time)", {"BREAKER_FAILURES": "100000"}),
            ):
                env = upstreams.env()
                for name in ("BASE_URL", "MODEL", "API_KEY"):
                    env.pop(f"CHEAP_{name}")
                cheap = [
                    {"base_url": dead, "model": "dead-model", "api_key": "sk-dead-0009"},
                    {"base_url": live.url + "/v1", "model": "cheap-b-model"},
                ]
                env["UPSTREAMS_JSON"] = json.dumps({"routes": {"cheap": cheap}})
                env.update(extra)
                directory = Path(tmp) / str(len(list(Path(tmp).iterdir())))
                directory.mkdir()
                for server in (upstreams.medium, upstreams.frontier, live):
                    server.requests.clear()
                router = Router(env, directory, launcher=args.launcher)
                try:
                    counts = run(router, args.n, args.concurrency, label)
                    router.settle()
                    logs = router.logs()
                finally:
                    router.stop()
                counts["live_cheap_received"] = len(live.requests)
                counts["escalated_to_medium"] = len(upstreams.medium.requests)
                counts["escalated_to_frontier"] = len(upstreams.frontier.requests)
                counts["fallbacks_logged"] = logs.count("fallback from=cheap#1")
                counts["skipped_by_breaker"] = counts["requests"] - counts["fallbacks_logged"]
                print(f"{args.launcher}, {label}, c={args.concurrency}:")
                for key, value in counts.items():
                    if key == "first_failure" and not value:
                        continue
                    shown = f"{value:.1f}" if isinstance(value, float) else value
                    print(f"  {key:<24} {shown}")
    finally:
        live.close()
        upstreams.close()


if __name__ == "__main__":
    main()
