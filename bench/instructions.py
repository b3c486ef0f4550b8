"""Instructions per request: the proxy's own work counted by valgrind (callgrind), which a
busy machine does not change, unlike latency and CPU time.

    ./run python -m bench.instructions                          xrouter and plain mitmdump
    ./run python -m bench.instructions --compare ../base-checkout --kind messages
    ./run python -m bench.instructions --kind messages --messages-body recorded.json

Each target runs under `valgrind --tool=callgrind` with counting off, in front of the
bench's fake provider. After a warm-up the count is switched on, zeroed after a few more
requests (past the switch's own cost) and dumped after `--requests` more, sent one at a
time; the figure is that dump's instruction total over the requests (user space only:
system calls are not in it). The usage counters' disk write is set to one interval of
10 minutes (USAGE_FLUSH_MS): it runs once per interval, not per request, and under
valgrind's 50x slowdown an interval would hold one request instead of dozens.
`--usage-flush-ms 1` measures that write instead: each request is followed by its own
flush, so the difference from the held-off figure is one flush's instructions. Repeat
runs agree within 0.1 %. Needs valgrind; about 2 minutes a target.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.httpclient import Connection
from bench.run import Call, chat_call, messages_call, start_provider
from bench.targets import (
    LeanRouter,
    PlainMitmdump,
    Target,
    at_checkout,
    free_port,
)

WARMUP = 100
SETTLE = 20
HELD_OFF_MS = 600_000  # one usage flush interval of 10 minutes: none while counting


def counted_command(
    target: Target, prefix: str, out: Path, flush_ms: int = HELD_OFF_MS
) -> tuple[list[str], dict[str, str]]:
    """The target's command under callgrind, counting off until switched on. The lean
    launcher runs as `python -O -m xrouter_core` (what it re-executes itself as: valgrind
    does not follow the exec), with a usage store of its own."""
    command, env = target.command()
    if isinstance(target, LeanRouter):
        command = [command[0], "-O", *command[1:]]
        env["USAGE_FLUSH_MS"] = str(flush_ms)
        env["XROUTER_DATA_DIR"] = str(out.parent / f"data-{target.name.replace('@', '-')}")
    env["HOST"] = "127.0.0.1"  # vgdb names its pipes by $HOST; callgrind_control too
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--vgdb-prefix={prefix}",
        f"--callgrind-out-file={out}",
        *command,
    ], env


def agent_call(target: Target) -> Call:
    """The bench's Claude Code-shaped Messages request as a tool loop's follow-up that
    the router classifies (`xrouter/auto`): an assistant tool call and its result after
    the person's message, so the classifier input, the tags and the tool-loop task all
    read the messages."""
    call = messages_call(target, False)
    body = json.loads(call.body)
    body["model"] = "xrouter/auto"
    body["tools"] = [
        {"name": "Read", "description": "Read a file", "input_schema": {"type": "object"}}
    ]
    body["messages"] += [
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}],
        },
    ]
    return Call("agent", call.path, json.dumps(body).encode(), call.headers, False)


def control(prefix: str, pid: int, *args: str) -> None:
    subprocess.run(
        ["callgrind_control", f"--vgdb-prefix={prefix}", *args, str(pid)],
        check=True,
        capture_output=True,
        env={**os.environ, "HOST": "127.0.0.1"},
    )


async def send(target: Target, call: Call, count: int) -> None:
    connection = Connection(*target.host_port)
    try:
        for _ in range(count):
            answer = await connection.request("POST", call.path, call.body, call.headers)
            translated = call.wire == "agent" and answer.status == 200  # served on chat routes
            if not (translated and b'"message"' in answer.body) and not call.ok(answer):
                raise RuntimeError(f"{target.name}: HTTP {answer.status} {answer.body[:200]!r}")
    finally:
        await connection.close()


def recorded_call(target: Target, path: Path) -> Call:
    """The bench's Messages call carrying a recorded body (say one of Claude Code's)
    instead of its own small one: its model and stream set to the bench's, written
    compactly as Claude Code writes its bodies."""
    call = messages_call(target, False)
    body = json.loads(path.read_bytes())
    body.update(model=json.loads(call.body)["model"], stream=False)
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return dataclasses.replace(call, body=text.encode())


def count(
    target: Target,
    kind: str,
    requests: int,
    workdir: Path,
    flush_ms: int = HELD_OFF_MS,
    body: Path | None = None,
) -> float:
    """Instructions per request of one target."""
    prefix = str(workdir / f"vgdb-{target.name}")
    out = workdir / f"{target.name.replace('@', '-')}.callgrind"
    target.port = free_port()
    command, env = counted_command(target, prefix, out, flush_ms)
    log = open(target.log_path, "ab")  # noqa: SIM115 - kept open for the process' life
    proc = subprocess.Popen(
        command, cwd=target.workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    log.close()
    try:
        url = f"http://127.0.0.1:{target.port}{target.ready_path()}"
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{target.name} did not start:\n{target.logs()[-2000:]}")
            try:
                if httpx.get(url, timeout=5, trust_env=False).status_code < 500:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        if kind == "agent":
            call = agent_call(target)
        elif kind == "chat":
            call = chat_call(target, False)
        else:
            call = recorded_call(target, body) if body else messages_call(target, False)
        asyncio.run(send(target, call, WARMUP))
        control(prefix, proc.pid, "--instr=on")
        asyncio.run(send(target, call, SETTLE))
        control(prefix, proc.pid, "--zero")
        asyncio.run(send(target, call, requests))
        control(prefix, proc.pid, "--dump=requests")
        time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    dumps = sorted(workdir.glob(out.name + ".*"))
    if not dumps:
        raise RuntimeError(f"{target.name}: callgrind wrote no dump")
    for line in dumps[0].read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1]) / requests
    raise RuntimeError(f"{target.name}: no total in {dumps[0]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--kind", choices=("chat", "messages", "agent"), default="chat")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--compare", type=Path, action="append", default=[], metavar="CHECKOUT")
    parser.add_argument("--no-mitmdump", action="store_true", help="leave plain mitmdump out")
    parser.add_argument(
        "--messages-body",
        type=Path,
        metavar="JSON",
        help="with --kind messages: send this recorded Messages body instead of the bench's",
    )
    parser.add_argument(
        "--usage-flush-ms",
        type=int,
        default=HELD_OFF_MS,
        help="USAGE_FLUSH_MS (e.g. 1: under valgrind, a flush after every request)",
    )
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind (with callgrind_control) is needed", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="xrouter-instructions-"))
    provider, provider_url = start_provider(workdir, workdir)
    forms: list[type[Target]] = [LeanRouter]
    forms += [at_checkout(LeanRouter, checkout.resolve()) for checkout in args.compare]
    if not args.no_mitmdump:
        forms.append(PlainMitmdump)
    figures: dict[str, float] = {}
    try:
        for form in forms:
            target = form(provider_url, workdir)
            figures[target.name] = count(
                target, args.kind, args.requests, workdir, args.usage_flush_ms, args.messages_body
            )
            print(f"  {target.name}: {figures[target.name]:,.0f} instructions/request", flush=True)
    finally:
        os.killpg(provider.pid, signal.SIGINT)
        try:
            provider.wait(10)
        except subprocess.TimeoutExpired:  # a loaded machine: it is not waited for longer
            os.killpg(provider.pid, signal.SIGKILL)
    kind = args.kind
    if args.kind == "messages" and args.messages_body:
        kind += f" ({args.messages_body.name}, {args.messages_body.stat().st_size:,} B recorded)"
    print(f"\n{kind}, {args.requests} requests each, one at a time ({time.strftime('%F')})")
    print("| target | instructions/request | ÷ xrouter | ÷ mitmdump |\n|---|---:|---:|---:|")
    first, plain = figures["xrouter"], figures.get("mitmdump")
    for name, value in figures.items():
        vs_plain = f"{value / plain:.3f}" if plain else "—"
        print(f"| {name} | {value:,.0f} | {value / first:.3f} | {vs_plain} |")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
