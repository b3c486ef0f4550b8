"""How many answered requests' counts a crash loses (issue 16, point 7).

Starts a real router (mitmdump, disk backend) over the fake providers on 127.0.0.1,
sends N requests one after another, kills it with SIGKILL right after the last answer,
starts it again on the same data directory and reads how many requests /usage counted.
The loss is what the last flush interval held. Run:

    python bench/crash_loss.py [N] [TRIALS] [USAGE_FLUSH_MS ...]
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import Router, Upstreams  # noqa: E402


def one_trial(upstreams: Upstreams, tmp: Path, n: int, flush_ms: int) -> tuple[int, float]:
    """(requests lost, requests per second while sending)."""
    import time

    env = {
        **upstreams.env(),
        "XROUTER_DATA_DIR": str(tmp / "data"),
        "CACHE_BACKEND": "disk",
        "USAGE_FLUSH_MS": str(flush_ms),
    }
    (tmp / "a").mkdir()
    router = Router(env, tmp / "a")
    started = time.perf_counter()
    with router.client() as client:
        for i in range(n):
            body = {"model": "xrouter/medium", "messages": [{"role": "user", "content": f"q {i}"}]}
            assert client.post("/v1/chat/completions", json=body).status_code == 200
    rate = n / (time.perf_counter() - started)
    os.killpg(router.proc.pid, signal.SIGKILL)
    router.proc.wait(10)
    router.log_file.close()
    (tmp / "b").mkdir()
    again = Router(env, tmp / "b")
    try:
        with again.client() as client:
            totals = client.get("/usage").json()["totals"]
    finally:
        again.stop()
    return n - sum(row["requests"] for row in totals.values()), rate


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    trials = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    intervals = [int(v) for v in sys.argv[3:]] or [500]
    upstreams = Upstreams()
    try:
        for flush_ms in intervals:
            results = []
            for _ in range(trials):
                with tempfile.TemporaryDirectory() as tmp:
                    results.append(one_trial(upstreams, Path(tmp), n, flush_ms))
            lost = [r[0] for r in results]
            rate = sum(r[1] for r in results) / len(results)
            print(
                f"USAGE_FLUSH_MS={flush_ms}: lost {lost} of {n} answered requests per trial "
                f"(sending at {rate:.0f} req/s; the bound is about rate x interval)"
            )
    finally:
        upstreams.close()


if __name__ == "__main__":
    main()
