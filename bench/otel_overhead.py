"""What OpenTelemetry tracing costs a request: off (no endpoint) against on (spans
exported to a loopback OTLP/HTTP receiver), in the same run, and what building one
request's spans costs on the event loop.

Starts two real routers (the `xrouter` launcher) over fake providers on 127.0.0.1 and
times sequential requests, alternating between them in rounds so that drift on a busy
machine hits both alike. Run: python bench/otel_overhead.py [N] [ROUNDS]
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
from test_otel import OTLPReceiver  # noqa: E402

from xrouter_core.accounting.traces import RequestSpan, Tracing  # noqa: E402


def timed(router: Router, n: int, round_no: int) -> list[float]:
    times = []
    with router.client() as client:
        for i in range(n):
            body = {
                "model": "xrouter/medium",
                "messages": [{"role": "user", "content": f"hello {round_no} {i}"}],
            }
            started = time.perf_counter()
            reply = client.post("/v1/chat/completions", json=body)
            reply.read()
            times.append((time.perf_counter() - started) * 1000)
            assert reply.status_code == 200, reply.text
    return times[n // 10 :]  # drop warm-up


def summary(label: str, times: list[float]) -> str:
    times = sorted(times)
    p50 = statistics.median(times)
    p90 = times[int(len(times) * 0.9)]
    return f"{label:<36} p50 {p50:6.2f} ms   p90 {p90:6.2f} ms   n={len(times)}"


def record_cost(receiver_url: str, n: int = 5000) -> float:
    """Microseconds per Tracing.record (what runs on the event loop per request)."""
    tracing = Tracing(receiver_url + "/v1/traces", "bench")
    span = RequestSpan(
        requested_model="auto",
        model="medium-model",
        response_model="medium-model",
        provider="openai",
        tier="medium",
        decision="medium",
        source="llm",
        score=0.5,
        status=200,
        input_tokens=11,
        output_tokens=7,
        cache_read_tokens=0,
        cache_write_tokens=0,
        finish_reasons=("stop",),
        response_id="chatcmpl-1",
        fallbacks=0,
        fallback="",
        stream=False,
        server_address="127.0.0.1",
        server_port=9,
        classifier_ms=3.0,
        total_ms=20.0,
    )
    started = time.perf_counter()
    for _ in range(n):
        tracing.record(span)
    cost = (time.perf_counter() - started) / n * 1e6
    tracing.close()
    return cost


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    upstreams = Upstreams()
    receiver = OTLPReceiver()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            routers = {
                "tracing off": Router(upstreams.env(), _dir(tmp, "off"), launcher="xrouter"),
                "tracing on (OTLP to loopback)": Router(
                    {**upstreams.env(), "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url},
                    _dir(tmp, "on"),
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
            for label, values in times.items():
                print(summary(label, values))
            spans = [s for s in receiver.spans if s[1].kind == s[1].SPAN_KIND_SERVER]
            print(f"request spans received: {len(spans)} of {n * rounds} requests traced")
            print(f"Tracing.record: {record_cost(receiver.url):.1f} µs per request (in process)")
    finally:
        receiver.close()
        upstreams.close()


def _dir(tmp: str, name: str) -> Path:
    path = Path(tmp) / name
    path.mkdir()
    return path


if __name__ == "__main__":
    main()
