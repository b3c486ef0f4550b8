"""Routers behind one port sharing one Redis: throughput with 1, 2 and 3 router
processes (`xrouter --workers N`: N processes on one port with SO_REUSEPORT, the kernel
spreading connections over them), and whether /usage counts every one of 10,000
requests exactly once.

Everything runs on this machine: one real redis-server and the fake provider
(bench/fake_provider.py) on 127.0.0.1, the routers doing their real work (classifier
call, decision cache, rewrite, usage counting into Redis), and the load generator (one
asyncio process, CONNECTIONS keep-alive connections). The load generator and Redis take
CPU from the routers, so the scaling figure is bounded by the CPU count (printed). Each
request carries a distinct prompt, so every one is classified.

Run: python -m bench.scaling [REQUESTS] [CONNECTIONS]   (default 10000 48)
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.httpclient import Connection
from bench.run import start_provider
from bench.targets import LeanRouter, free_port

PROCESSES = (1, 2, 3)


class ScaledRouter(LeanRouter):
    """The lean launcher with --workers N, counting into one shared Redis."""

    def __init__(self, provider_url: str, workdir: Path, workers: int, redis_url: str):
        self.name = f"xrouter-x{workers}"
        super().__init__(provider_url, workdir)
        self.workers = workers
        self.redis_url = redis_url

    def command(self) -> tuple[list[str], dict[str, str]]:
        command, env = super().command()
        env["REDIS_URL"] = self.redis_url
        env["XROUTER_DATA_DIR"] = str(self.workdir / "data")
        return [*command, "--workers", str(self.workers)], env


def start_redis(directory: Path) -> tuple[subprocess.Popen, int]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if redis.Redis(port=port, socket_timeout=0.5).ping():
                return proc, port
        except redis.exceptions.RedisError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("redis-server did not start")


async def drive(port: int, requests: int, connections: int, tag: str) -> tuple[float, int]:
    """(seconds, answers with status 200) for `requests` over `connections`."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    ok = 0

    async def worker() -> None:
        nonlocal ok
        conn = Connection("127.0.0.1", port)
        try:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                body = json.dumps(
                    {
                        "model": "xrouter/auto",
                        "messages": [{"role": "user", "content": f"scale {tag} request {i}"}],
                    }
                ).encode()
                answer = await conn.request(
                    "POST",
                    "/v1/chat/completions",
                    body,
                    {"content-type": "application/json", "authorization": "Bearer client-key"},
                )
                ok += answer.status == 200
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return time.perf_counter() - started, ok


def counted(port: int, expected: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    total = -1
    while time.monotonic() < deadline:
        doc = httpx.get(f"http://127.0.0.1:{port}/usage", trust_env=False).json()
        total = doc["totalRequests"]
        if total == expected:
            return total
        time.sleep(0.2)
    return total


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    requests = int(args[0]) if args else 10_000
    connections = int(args[1]) if len(args) > 1 else 48
    work = Path(tempfile.mkdtemp(prefix="xrouter-scaling-"))
    provider, provider_url = start_provider(work, work)
    redis_proc, redis_port = start_redis(work)
    rows = []
    try:
        for n in PROCESSES:
            # Its own database: each run's /usage holds its own 10,000 only.
            router = ScaledRouter(provider_url, work, n, f"redis://127.0.0.1:{redis_port}/{n}")
            router.start()
            try:
                warm = asyncio.run(drive(router.port, 50 * n, min(connections, 8 * n), f"w{n}"))
                seconds, ok = asyncio.run(drive(router.port, requests, connections, f"r{n}"))
                total = counted(router.port, requests + warm[1])
                rows.append((n, seconds, ok, total - warm[1]))
            finally:
                router.stop()
    finally:
        redis_proc.kill()
        provider.kill()
        shutil.rmtree(work, ignore_errors=True)
    base = requests / rows[0][1]
    print(f"CPUs: {os.cpu_count()}   load average: {os.getloadavg()[0]:.2f} (at the end)")
    print(f"{requests} requests over {connections} connections per run, one shared redis-server")
    print(f"{'processes':>9} {'req/s':>8} {'vs 1':>6} {'200s':>6} {'counted':>8}  exact")
    for n, seconds, ok, total in rows:
        rate = requests / seconds
        exact = "yes" if ok == requests and total == requests else "NO"
        print(f"{n:>9} {rate:>8.0f} {rate / base:>5.2f}x {ok:>6} {total:>8}  {exact}")
    return 0 if all(ok == requests and total == requests for _, _, ok, total in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
