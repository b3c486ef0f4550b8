"""What session cost routing adds to a request, in process: the work the router does per
request with SESSION_COST_ROUTING=on and with it off, side by side in one run.

Per request, on: identify the session (routing/sessions.py `session_of`), read its
state from the session store (the memory store; with Redis add one GET round trip,
awaited where the request waits anyway), adjust the decision (the prices are dictionary
hits), and at the end update the state, price the baseline and queue the store's write.
Off: `begin` returns at once. The request is an agent's: a 26 kB system prompt, tools
and a 60-message history, a session warm on frontier and on cheap; identified by the
prompt (the slowest way) and by a client's session header (Claude Code's).

    python bench/session_overhead.py [N]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xrouter_core.accounting.cache import MemoryCache  # noqa: E402
from xrouter_core.accounting.prices import Pricing  # noqa: E402
from xrouter_core.config import load_settings  # noqa: E402
from xrouter_core.routing.classifier import Decision  # noqa: E402
from xrouter_core.routing.sessions import SessionRouting  # noqa: E402
from xrouter_core.wire.canonical import Usage  # noqa: E402
from xrouter_core.wire.inbound import parse_openai_chat  # noqa: E402


def agent_request() -> bytes:
    messages = [{"role": "system", "content": "You are a coding agent. " * 1100}]
    for turn in range(20):
        messages.append({"role": "user", "content": f"Step {turn}: fix the next failing test."})
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{turn}",
                        "type": "function",
                        "function": {"name": "read_file", "arguments": '{"path": "a.py"}'},
                    }
                ],
            }
        )
        messages.append(
            {"role": "tool", "tool_call_id": f"call_{turn}", "content": "x = 1\n" * 200}
        )
    messages.append({"role": "user", "content": "Now run the whole suite."})
    tools = [
        {
            "type": "function",
            "function": {"name": f"tool_{i}", "description": "d " * 100, "parameters": {}},
        }
        for i in range(10)
    ]
    return json.dumps({"model": "auto", "messages": messages, "tools": tools}).encode()


def settings():
    env = {
        "CLASSIFIER_ENABLED": "false",
        "CHEAP_BASE_URL": "https://api.anthropic.com",
        "CHEAP_MODEL": "claude-haiku-4-5",
        "CHEAP_API_KEY": "k",
        "MEDIUM_BASE_URL": "https://api.anthropic.com",
        "MEDIUM_MODEL": "claude-sonnet-4-5",
        "MEDIUM_API_KEY": "k",
        "FRONTIER_BASE_URL": "https://api.anthropic.com",
        "FRONTIER_MODEL": "claude-opus-4-5",
        "FRONTIER_API_KEY": "k",
    }
    return load_settings(env, env_file="/nonexistent.env", upstreams_file="/nonexistent.json")


async def one(routing: SessionRouting, raw: bytes, usage: Usage, headers: dict) -> float:
    chat = parse_openai_chat(raw)  # not timed: the router parses once, with or without
    started = time.perf_counter()
    session = await routing.begin(chat, headers, len(raw))
    decision = routing.adjust(session, Decision(0, "builtin", score=0.1), 2)
    if session is not None:
        route = routing.routes[["cheap", "medium", "frontier"][decision.tier]]
        routing.finished(session, route, usage, raw)
    return (time.perf_counter() - started) * 1e6


async def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    config = settings()
    pricing = Pricing(config)
    pricing.warm()
    pending: list = []

    def spawn(coro) -> None:
        pending.append(asyncio.ensure_future(coro))

    store = MemoryCache()
    on = SessionRouting("on", store, pricing, config.routes, spawn)
    off = SessionRouting("off", store, pricing, config.routes, spawn)
    raw = agent_request()
    usage = Usage(len(raw) // 4, 300, len(raw) // 4 - 200, 200)
    by_id = {"x-claude-code-session-id": "6c1f2a3b-0d4e-4f5a-8b6c-7d8e9f0a1b2c"}
    variants = (("on", on, {}), ("on, client id", on, by_id), ("off", off, {}))
    times: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    for i in range(n):  # interleaved: all see the same machine
        for name, routing, headers in variants:
            times[name].append(await one(routing, raw, usage, headers))
        if pending:
            await asyncio.gather(*pending)
            pending.clear()
        if i == 10:  # warm: the session is cached on frontier and on cheap
            for name in times:
                times[name].clear()
    print(f"request body {len(raw) / 1000:.0f} kB, {n} requests each, interleaved")
    for name, found in times.items():
        found.sort()
        p50, p99 = statistics.median(found), found[int(len(found) * 0.99)]
        print(f"  SESSION_COST_ROUTING={name:<14} p50 {p50:7.1f} µs   p99 {p99:7.1f} µs")
    off_p50 = statistics.median(times["off"])
    for name in ("on", "on, client id"):
        extra = statistics.median(times[name]) - off_p50
        print(f"  extra work per request ({name} - off, p50): {extra / 1000:.4f} ms")
    # The machine's speed in the same run: a loaded machine scales every figure above.
    doc = '{"a":[1,2,3],"b":"x"}'
    started = time.perf_counter()
    for _ in range(20000):
        json.loads(doc)
    reference = (time.perf_counter() - started) / 20000 * 1e6
    print(f"  reference: json.loads of a 22-byte document {reference:.2f} µs")


if __name__ == "__main__":
    asyncio.run(main())
