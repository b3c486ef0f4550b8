"""What several candidates per tier cost a request, by strategy, side by side.

Starts real routers (mitmdump) over fake providers on 127.0.0.1: one route per tier
(today's configuration), and the same medium tier with 3 candidates from the provider
catalog under `ordered`, `latency` (measured, re-ranked every ROUTE_STATS_SYNC_MS) and
`weighted`. Sequential requests (c=1) go to the routers in turn, so the machine's noise
falls on all of them alike; each is reported as p50/p90 and as its p50 over the single
route's. Run: python bench/candidates_overhead.py [N]
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
from fakes import FakeOpenAIProvider  # noqa: E402


def catalog_env(upstreams: Upstreams, extra: list[FakeOpenAIProvider], strategy: str) -> dict:
    env = {k: v for k, v in upstreams.env().items() if not k.startswith("MEDIUM_")}
    servers = [upstreams.medium, *extra]
    env["UPSTREAMS_JSON"] = json.dumps(
        {
            "providers": {
                f"p{n}": {
                    "base_url": server.url + "/v1",
                    "tiers": ["medium"],
                    "models": [{"model": f"medium-{n}", "weight": n}],
                }
                for n, server in enumerate(servers, start=1)
            },
            "strategies": {"medium": strategy},
        }
    )
    return env


def ask(client, i: int) -> float:
    body = {
        "model": "xrouter/medium",
        "messages": [{"role": "user", "content": f"hello {i}"}],
    }
    started = time.perf_counter()
    reply = client.post("/v1/chat/completions", json=body)
    reply.read()
    assert reply.status_code == 200, reply.text
    return (time.perf_counter() - started) * 1000


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    upstreams = Upstreams()
    extra = [FakeOpenAIProvider("medium-b"), FakeOpenAIProvider("medium-c")]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            envs = {
                "1 route per tier": upstreams.env(),
                "3 candidates, ordered": catalog_env(upstreams, extra, "ordered"),
                "3 candidates, latency": catalog_env(upstreams, extra, "latency"),
                "3 candidates, weighted": catalog_env(upstreams, extra, "weighted"),
            }
            routers = {}
            for number, (label, env) in enumerate(envs.items()):
                directory = Path(tmp) / str(number)
                directory.mkdir()
                routers[label] = Router(env, directory)
            try:
                clients = {label: router.client() for label, router in routers.items()}
                times: dict[str, list[float]] = {label: [] for label in routers}
                for i in range(n):
                    for label, client in clients.items():
                        times[label].append(ask(client, i))
                base = None
                for label, found in times.items():
                    kept = sorted(found[n // 10 :])  # warm-up dropped
                    p50 = statistics.median(kept)
                    p90 = kept[int(len(kept) * 0.9)]
                    base = base or p50
                    print(
                        f"{label:<26} p50 {p50:6.2f} ms   p90 {p90:6.2f} ms"
                        f"   p50 ratio {p50 / base:5.3f}   n={len(kept)}"
                    )
            finally:
                for router in routers.values():
                    router.stop()
    finally:
        upstreams.close()
        for server in extra:
            server.close()


if __name__ == "__main__":
    main()
