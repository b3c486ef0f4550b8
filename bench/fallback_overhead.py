"""What fallback costs the normal path, and what a fallback costs when it happens.

Starts real routers (mitmdump) over fake providers on 127.0.0.1 and times sequential
requests: first-byte timer on (default) vs off (FIRST_BYTE_TIMEOUT_MS=0), and a request
whose first route answers 503 and falls back. Run: python bench/fallback_overhead.py [N]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import Router, Upstreams  # noqa: E402
from fakes import Reply  # noqa: E402


def timed(router: Router, n: int, stream: bool) -> list[float]:
    times = []
    with router.client() as client:
        for i in range(n):
            body = {
                "model": "xrouter/medium",
                "stream": stream,
                "messages": [{"role": "user", "content": f"hello {i}"}],
            }
            started = time.perf_counter()
            reply = client.post("/v1/chat/completions", json=body)
            reply.read()
            times.append((time.perf_counter() - started) * 1000)
            assert reply.status_code == 200, reply.text
    return times[n // 10 :]  # drop warm-up


def summary(label: str, times: list[float]) -> None:
    times = sorted(times)
    p50 = statistics.median(times)
    p90 = times[int(len(times) * 0.9)]
    print(f"{label:<44} p50 {p50:6.2f} ms   p90 {p90:6.2f} ms   n={len(times)}")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    upstreams = Upstreams()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            routers = {
                "timer on": Router(
                    {**upstreams.env(), "BREAKER_FAILURES": "100000"}, _dir(tmp, "a")
                ),
                "timer off": Router(
                    {**upstreams.env(), "FIRST_BYTE_TIMEOUT_MS": "0"}, _dir(tmp, "b")
                ),
            }
            try:
                for stream in (False, True):
                    for label, router in routers.items():
                        kind = "stream" if stream else "whole"
                        summary(f"normal path, {kind}, {label}", timed(router, n, stream))
                upstreams.medium.override = lambda request: Reply(
                    status=503, body={"error": {"message": "down"}}
                )
                for stream in (False, True):
                    kind = "stream" if stream else "whole"
                    summary(
                        f"fallback medium:503 -> frontier, {kind}",
                        timed(routers["timer on"], n, stream),
                    )
            finally:
                for router in routers.values():
                    router.stop()
    finally:
        upstreams.close()


def _dir(tmp: str, name: str) -> Path:
    path = Path(tmp) / name
    path.mkdir()
    return path


if __name__ == "__main__":
    main()
