"""The benchmark: what the router costs against the provider directly and plain mitmdump.

    ./run python -m bench                 full run (about 10 minutes on 2 cores)
    ./run python -m bench --quick         a small run (about 2 minutes)
    ./run python -m bench --litellm       also LiteLLM's proxy (installed on first use)
    ./run python -m bench --targets direct,mitmdump,router
    ./run python -m bench --quick --only passthrough   chat vs Anthropic pass-through only

Rounds interleave the targets (A B C A B C) so machine drift falls on all of them alike.
Every figure is measured, none is asserted: the goals are printed beside the figures.
Results: a markdown table on stdout and bench/results/<time>/results.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from bench import report
from bench.httpclient import Answer, Connection
from bench.targets import (
    ANTHROPIC_TIER_MODEL,
    CHAT,
    DEFAULT_TARGETS,
    MESSAGES,
    OPENAI_TIER_MODEL,
    ROOT,
    TARGETS,
    LeanRouter,
    Router,
    Target,
    Unavailable,
    at_checkout,
)

RESULTS = ROOT / "bench" / "results"
PROMPT = "Say hello to the benchmark in one short sentence."
# What Claude Code 2.x sends beside its body (the versions it names, its beta flags).
CLAUDE_CODE_HEADERS = {
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,"
    "prompt-caching-2024-07-31",
    "user-agent": "claude-cli/2.1.0 (external, cli)",
    "x-app": "cli",
}


@dataclass(frozen=True)
class Plan:
    rounds: int
    per_round: dict[int, int]  # concurrency -> non-streamed requests per round and target
    streams_per_round: int
    stream_concurrency: int
    warmup: int
    rss_marks: tuple[int, int]
    classifier_calls: int
    batch_seconds: float
    # The passthrough phase: rounds, and whole requests and streams per round, wire and target.
    passthrough: tuple[int, int, int]

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if quick:
            return cls(2, {1: 60, 10: 200, 64: 640}, 12, 1, 100, (200, 2000), 6, 6.0, (4, 60, 16))
        return cls(
            3, {1: 300, 10: 1500, 64: 4000}, 40, 1, 300, (1000, 20000), 20, 15.0, (4, 300, 30)
        )


@dataclass(frozen=True)
class Call:
    """One kind of request: where it goes, what it carries, and whether it is streamed."""

    wire: str  # "chat" (OpenAI chat completions) or "anthropic" (Messages)
    path: str
    body: bytes
    headers: dict[str, str]
    stream: bool

    def ok(self, answer: Answer) -> bool:
        if self.wire == "chat":
            return answer_ok(answer, self.stream)
        if answer.status != 200:
            return False
        if self.stream:
            return b"event: message_stop" in answer.body and len(answer.chunk_times) > 2
        return b'"type":"message"' in answer.body


def chat_body(model: str, stream: bool) -> bytes:
    return json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": PROMPT}],
            "stream": stream,
            "max_tokens": 64,
        }
    ).encode()


def chat_call(target: Target, stream: bool, model: str | None = None) -> Call:
    headers = {"content-type": "application/json", "authorization": f"Bearer {target.client_key}"}
    return Call("chat", CHAT, chat_body(model or target.request_model, stream), headers, stream)


def messages_call(target: Target, stream: bool) -> Call:
    """An Anthropic Messages request shaped like Claude Code's: system blocks with
    cache_control marks, a cached user turn, metadata, its version and beta headers.
    No tools, so the body stays as small as the chat one and the two compare."""
    body = {
        "model": ANTHROPIC_TIER_MODEL,
        "max_tokens": 32000,
        "system": [
            {
                "type": "text",
                "text": "You are Claude Code, Anthropic's official CLI for Claude.",
                "cache_control": {"type": "ephemeral"},
            },
            {
                "type": "text",
                "text": "You are an interactive CLI tool that helps users with software "
                "engineering tasks.",
                "cache_control": {"type": "ephemeral"},
            },
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": PROMPT, "cache_control": {"type": "ephemeral"}}
                ],
            }
        ],
        "metadata": {"user_id": "user_bench_account_bench_session_0001"},
        "stream": stream,
    }
    headers = {
        "content-type": "application/json",
        "x-api-key": target.client_key,
        **CLAUDE_CODE_HEADERS,
    }
    return Call("anthropic", MESSAGES, json.dumps(body).encode(), headers, stream)


def answer_ok(answer: Answer, stream: bool) -> bool:
    if answer.status != 200:
        return False
    if stream:
        return answer.body.rstrip().endswith(b"data: [DONE]") and len(answer.chunk_times) > 2
    return b'"choices"' in answer.body


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process and its children (`--workers`) so far (robust
    to a busy machine, unlike latency).

    Read from each process' CPU clock (nanoseconds, ended threads included) where Linux
    gives it: the clock ticks psutil reads are 10 ms apart, too coarse to tell two
    request kinds apart in a short batch. psutil's figures otherwise."""
    if pid is None:
        return 0.0
    import psutil

    total = 0.0
    process = psutil.Process(pid)
    for one in [process, *process.children(recursive=True)]:
        precise = process_clock(one.pid)
        if precise is not None:
            total += precise
            continue
        try:
            times = one.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def process_clock(pid: int) -> float | None:
    """Seconds on CPU of a whole process, from its Linux CPU-time clock: the clock id
    the kernel gives process `pid` is ((~pid) << 3) | CPUCLOCK_SCHED (2), what
    clock_getcpuclockid(3) returns; None where there is no such clock."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return time.clock_gettime(((~pid) << 3) | 2)
    except (OSError, OverflowError):
        return None


@dataclass
class Batch:
    answers: list[Answer]
    errors: int
    wall: float
    cpu: float = 0.0

    @property
    def rps(self) -> float:
        return len(self.answers) / self.wall if self.wall else 0.0


async def batch(
    target: Target,
    concurrency: int,
    total: int,
    stream: bool,
    max_seconds: float | None = None,
    call: Call | None = None,
) -> Batch:
    """`total` requests over `concurrency` keep-alive connections, as fast as answered;
    with `max_seconds`, no new request starts after that long (slow targets stay bounded).
    The request is the target's chat completion unless `call` says otherwise."""
    host, port = target.host_port
    call = call or chat_call(target, stream)
    answers: list[Answer] = []
    errors = 0
    remaining = total

    deadline = time.perf_counter() + max_seconds if max_seconds else float("inf")

    async def worker() -> None:
        nonlocal remaining, errors
        connection = Connection(host, port)
        try:
            while remaining > 0 and time.perf_counter() < deadline:
                remaining -= 1
                try:
                    answer = await asyncio.wait_for(
                        connection.request("POST", call.path, call.body, call.headers), 60
                    )
                except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                    errors += 1
                    await connection.close()
                    continue
                if call.ok(answer):
                    answers.append(answer)
                else:
                    errors += 1
        finally:
            await connection.close()

    cpu_before = cpu_seconds(target.pid)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    return Batch(answers, errors, wall, cpu_seconds(target.pid) - cpu_before)


# ---- phases ---------------------------------------------------------------------


async def latency_phase(targets: list[Target], plan: Plan, results: dict) -> None:
    for concurrency, count in plan.per_round.items():
        samples: dict[str, list[float]] = {t.name: [] for t in targets}
        rps: dict[str, list[float]] = {t.name: [] for t in targets}
        errors: dict[str, int] = {t.name: 0 for t in targets}
        cpu: dict[str, float] = {t.name: 0.0 for t in targets}
        for round_ in range(plan.rounds):
            for target in targets:
                result = await batch(target, concurrency, count, False, plan.batch_seconds)
                samples[target.name] += [a.seconds * 1000 for a in result.answers]
                rps[target.name].append(result.rps)
                errors[target.name] += result.errors
                cpu[target.name] += result.cpu
                print(
                    f"  c={concurrency:<3} round {round_ + 1}/{plan.rounds} {target.name:<9}"
                    f" p50={report.percentile(samples[target.name], 50):7.2f} ms"
                    f" {result.rps:7.0f} req/s errors={result.errors}",
                    flush=True,
                )
        results["latency"][str(concurrency)] = {
            name: {
                "p50_ms": report.percentile(values, 50),
                "p99_ms": report.percentile(values, 99),
                "rps": report.median(rps[name]),
                # The proxy process' own CPU per request: comparable on a busy machine.
                "cpu_us_per_request": cpu[name] / len(values) * 1e6 if values else None,
                "requests": len(values),
                "errors": errors[name],
            }
            for name, values in samples.items()
        }


async def stream_phase(targets: list[Target], plan: Plan, results: dict) -> None:
    first: dict[str, list[float]] = {t.name: [] for t in targets}
    gaps: dict[str, list[float]] = {t.name: [] for t in targets}
    errors: dict[str, int] = {t.name: 0 for t in targets}
    for round_ in range(plan.rounds):
        for target in targets:
            result = await batch(
                target, plan.stream_concurrency, plan.streams_per_round, True, plan.batch_seconds
            )
            errors[target.name] += result.errors
            for answer in result.answers:
                times = answer.chunk_times
                first[target.name].append((times[0] - answer.started) * 1000)
                # From the first content chunk on: the provider spaces them evenly.
                gaps[target.name] += [(b - a) * 1000 for a, b in pairwise(times[1:-1])]
            print(
                f"  streams round {round_ + 1}/{plan.rounds} {target.name:<9}"
                f" first chunk p50={report.percentile(first[target.name], 50):6.2f} ms"
                f" errors={result.errors}",
                flush=True,
            )
    results["streams"] = {
        name: {
            "first_chunk_p50_ms": report.percentile(first[name], 50),
            "first_chunk_p99_ms": report.percentile(first[name], 99),
            "gap_p50_ms": report.percentile(gaps[name], 50),
            "gap_p99_ms": report.percentile(gaps[name], 99),
            "streams": len(first[name]),
            "errors": errors[name],
        }
        for name in first
    }


PASSTHROUGH_KINDS = (("chat", False), ("anthropic", False), ("chat", True), ("anthropic", True))


def passthrough_calls(target: Target) -> dict[str, Call]:
    """The four requests of the passthrough phase, by label: chat on the OpenAI-wire tier
    and Messages on the Anthropic tier, whole and streamed."""
    calls = {}
    for wire, stream in PASSTHROUGH_KINDS:
        label = wire + ("_stream" if stream else "")
        calls[label] = (
            chat_call(target, stream, OPENAI_TIER_MODEL)
            if wire == "chat"
            else messages_call(target, stream)
        )
    return calls


async def passthrough_phase(targets: list[Target], plan: Plan, results: dict) -> None:
    """Chat completions on an OpenAI route against Anthropic Messages on an Anthropic
    route (same-format pass-through), whole and streamed, one at a time, interleaved per
    round and target; the report sets each proxy's added p50 and CPU per request of the
    two side by side."""
    rounds, whole, streams = plan.passthrough
    targets = [t for t in targets if t.messages]
    calls = {t.name: passthrough_calls(t) for t in targets}
    labels = list(next(iter(calls.values())))
    times = {(t.name, label): [] for t in targets for label in labels}
    first = {(t.name, label): [] for t in targets for label in labels}
    cpu = {(t.name, label): 0.0 for t in targets for label in labels}
    errors = {(t.name, label): 0 for t in targets for label in labels}
    for target in targets:  # the Messages path warms up too
        for call in calls[target.name].values():
            await batch(target, 1, 20 if not call.stream else 2, call.stream, call=call)
    for round_ in range(rounds):
        for target in targets:
            line = []
            for label, call in calls[target.name].items():
                count = streams if call.stream else whole
                result = await batch(target, 1, count, call.stream, plan.batch_seconds, call)
                key = (target.name, label)
                times[key] += [a.seconds * 1000 for a in result.answers]
                if call.stream:
                    first[key] += [(a.chunk_times[0] - a.started) * 1000 for a in result.answers]
                cpu[key] += result.cpu
                errors[key] += result.errors
                line.append(f"{label} p50={report.percentile(times[key], 50):.2f}")
            print(
                f"  passthrough round {round_ + 1}/{rounds} {target.name:<9} " + " ".join(line),
                flush=True,
            )
    out: dict[str, dict] = {}
    for (name, label), values in times.items():
        out.setdefault(name, {})[label] = {
            "p50_ms": report.percentile(values, 50),
            "p99_ms": report.percentile(values, 99),
            "first_chunk_p50_ms": report.percentile(first[(name, label)], 50)
            if label.endswith("_stream")
            else None,
            "cpu_us_per_request": cpu[(name, label)] / len(values) * 1e6
            if values and name != "direct"
            else None,
            "requests": len(values),
            "errors": errors[(name, label)],
        }
    results["passthrough"] = out


async def classifier_phase(provider_url: str, plan: Plan, results: dict) -> None:
    """The router's LLMClassifier against the slow fake classifier: stop at the digit,
    or read the whole answer (CLASSIFIER_FORCE_STREAM=false)."""
    import httpx

    from xrouter_core.config import ClassifierSettings
    from xrouter_core.routing.classifier import LLMClassifier

    out = {}
    async with httpx.AsyncClient(trust_env=False) as client:
        for label, force_stream in (("early_abort", True), ("whole_answer", False)):
            classifier = LLMClassifier(
                ClassifierSettings(
                    base_url=provider_url + "/v1",
                    model="bench-classifier",
                    force_stream=force_stream,
                    timeout_ms=10_000,
                ),
                client,
            )
            times = []
            for index in range(plan.classifier_calls):
                decision = await classifier.classify(f"{PROMPT} #{index}")
                if decision is None:
                    raise RuntimeError(f"classifier failed: {classifier.last_error}")
                times.append(decision.ms)
            out[label] = {
                "p50_ms": report.percentile(times, 50),
                "p99_ms": report.percentile(times, 99),
                "calls": len(times),
            }
            print(f"  classifier {label}: p50={out[label]['p50_ms']:.1f} ms", flush=True)
    results["classifier"] = out


def builtin_phase(quick: bool, results: dict) -> None:
    """The built-in classifier's own benchmark, when the `builtin` work has landed."""
    script = ROOT / "bench" / "bench_builtin.py"
    if not script.exists():
        results["builtin"] = {"skipped": "bench/bench_builtin.py is not on this branch yet"}
        return
    command = [sys.executable, str(script), "--json"] + (["--quick"] if quick else [])
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        # Older versions of the script may not take the flags: run it plain.
        done = subprocess.run(
            [sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=600
        )
    try:
        results["builtin"] = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        results["builtin"] = {"output": done.stdout[-2000:], "returncode": done.returncode}


def rss_of(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MiB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def memory_phase(targets: list[Target], plan: Plan, results: dict) -> None:
    """A fresh process per target; RSS after the first and the second mark of requests
    (one in ten streamed, so the stream path is exercised too)."""
    low, high = plan.rss_marks
    out = {}
    for target in targets:
        if not (target.proxy and target.memory):
            continue
        target.stop()
        target.start()
        marks = {}
        done = 0
        for mark in (low, high):
            todo = mark - done
            streams = todo // 10
            await batch(target, 64, todo - streams, stream=False)
            await batch(target, 16, streams, stream=True)
            done = mark
            assert target.pid is not None
            current, peak = rss_of(target.pid)
            marks[str(mark)] = {"rss_mib": current, "peak_mib": peak}
            print(f"  rss {target.name:<9} after {mark:>6}: {current:.1f} MiB (peak {peak:.1f})")
        out[target.name] = marks
    results["memory"] = out


def log_problems(targets: list[Target]) -> dict[str, int]:
    """Lines in each process' log that say something went wrong."""
    problems = {}
    for target in targets:
        text = target.logs()
        problems[target.name] = sum(
            1
            for line in text.splitlines()
            if "Traceback" in line or " error" in line.lower() or "ERROR" in line
        )
    return problems


# ---- main -----------------------------------------------------------------------


def start_provider(workdir: Path, log_dir: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.fake_provider"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=open(log_dir / "fake_provider.log", "wb"),  # noqa: SIM115
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("port="):
        proc.kill()
        raise RuntimeError("the fake provider did not start")
    return proc, f"http://127.0.0.1:{line.split('=', 1)[1]}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run (about 2 minutes)")
    parser.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help=f"comma-separated, from: {', '.join(TARGETS)} (direct is always included)",
    )
    parser.add_argument("--litellm", action="store_true", help="add LiteLLM's proxy")
    parser.add_argument(
        "--only",
        default="latency,streams,passthrough,classifier,builtin,memory",
        help="comma-separated phases to run",
    )
    parser.add_argument("--out", type=Path, default=None, help="results directory")
    parser.add_argument(
        "--compare",
        type=Path,
        action="append",
        default=[],
        metavar="CHECKOUT",
        help="also run the router of another checkout (e.g. a git worktree of an older "
        "commit) in the same interleaved rounds, as targets router@<dir name> and "
        "xrouter@<dir name>",
    )
    return parser.parse_args(argv)


async def main_async(args: argparse.Namespace) -> int:
    plan = Plan.make(args.quick)
    names = ["direct"] + [
        n.strip() for n in args.targets.split(",") if n.strip() not in ("", "direct")
    ]
    if args.litellm and "litellm" not in names:
        names.append("litellm")
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        print(f"unknown targets: {', '.join(unknown)} (known: {', '.join(TARGETS)})")
        return 2
    phases = set(args.only.split(","))
    out_dir = (args.out or RESULTS / time.strftime("%Y%m%d-%H%M%S")).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    provider, provider_url = start_provider(out_dir, out_dir)
    results: dict = {
        "mode": "quick" if args.quick else "full",
        "plan": plan.__dict__,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "targets": {},
        "skipped": {},
        "latency": {},
    }
    targets: list[Target] = []
    try:
        for name in names:
            target = TARGETS[name](provider_url, out_dir)
            try:
                target.start()
            except Unavailable as exc:
                results["skipped"][name] = str(exc)
                print(f"skipping {name}: {exc}")
                continue
            targets.append(target)
            results["targets"][name] = target.description
        for checkout in args.compare:
            for form in (Router, LeanRouter):
                target = at_checkout(form, checkout.resolve())(provider_url, out_dir)
                target.start()
                targets.append(target)
                results["targets"][target.name] = target.description
        print(f"targets: {', '.join(t.name for t in targets)}; warming up", flush=True)
        for target in targets:
            await batch(target, 8, plan.warmup, stream=False)
            await batch(target, 4, 8, stream=True)
        if "latency" in phases:
            print("non-streamed latency", flush=True)
            await latency_phase(targets, plan, results)
        if "streams" in phases:
            print("streams", flush=True)
            await stream_phase(targets, plan, results)
        if "passthrough" in phases:
            print(
                "passthrough: chat on an OpenAI route, Messages on an Anthropic route", flush=True
            )
            await passthrough_phase(targets, plan, results)
        if "classifier" in phases:
            print("classifier", flush=True)
            await classifier_phase(provider_url, plan, results)
        if "builtin" in phases:
            builtin_phase(args.quick, results)
        if "memory" in phases:
            print("memory", flush=True)
            await memory_phase(targets, plan, results)
        results["log_problems"] = log_problems(targets)
    finally:
        for target in targets:
            target.stop()
        os.killpg(provider.pid, signal.SIGINT)
        try:
            provider.wait(5)
        except subprocess.TimeoutExpired:
            provider.kill()
    markdown = report.markdown(results)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    (out_dir / "results.md").write_text(markdown)
    print()
    print(markdown)
    print(f"\nwritten to {out_dir}/results.md and results.json")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop

        return uvloop.run(main_async(args))
    except ImportError:  # pragma: no cover
        return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
