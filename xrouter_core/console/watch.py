"""`xrouter watch`: follow a router's live feed (GET /events), one line per event.

    12:01:02 #17 start       openai gpt-4o stream "why is the sky blue"
    12:01:02 #17 classified  medium (1) by llm, score 0.53, 12.3 ms
    12:01:02 #17 routed      medium → openai_compatible medium-model
    12:01:03 #17 complete    200 medium medium-model 11+7 tokens $0.000025 187.4 ms (first byte 120.5 ms)

Lines are coloured by tier when stdout is a terminal (NO_COLOR or --color never turns
that off). The feed is followed until Ctrl-C: when it drops, watch says so and
reconnects. A wrong or missing key ends it with the router's message.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

import httpx

from xrouter_core.tiers import TIERS
from xrouter_core.wire.sse import SSEParser

# Cheapest first, like the dashboard: green, yellow, blue; errors red, stats dim.
TIER_COLOURS = {"cheap": "\x1b[32m", "medium": "\x1b[33m", "frontier": "\x1b[34m"}
RED, DIM, RESET = "\x1b[31m", "\x1b[2m", "\x1b[0m"
RECONNECT_S = (1.0, 2.0, 5.0, 10.0)
PROMPT_CHARS = 80


def router_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The argument parser of a command that follows a router (`watch`, `tui`): with
    --url and --key, which router to follow."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--url",
        default=os.environ.get("XROUTER_URL", "http://127.0.0.1:3000"),
        help="the router's address (XROUTER_URL, default http://127.0.0.1:3000)",
    )
    parser.add_argument(
        "--key",
        default=os.environ.get("ROUTER_API_KEY", ""),
        help="the router's ROUTER_API_KEY (default: that environment variable)",
    )
    return parser


def feed_events(parser: SSEParser, data: bytes) -> Iterator[tuple[str, dict[str, Any]]]:
    """The events of the /events feed that a chunk of it completes, as (event name, its
    JSON object); an event whose data is no JSON object is skipped."""
    for event in parser.feed(data):
        try:
            doc = json.loads(event.data)
        except ValueError:
            continue
        if isinstance(doc, dict):
            yield event.event, doc


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = router_parser(
        "xrouter watch", "Follow a router's live feed (GET /events): a line per request event."
    )
    parser.add_argument(
        "--summary",
        action="store_true",
        help="one line per request, when it completes, instead of one per event",
    )
    parser.add_argument("--stats", action="store_true", help="also print the periodic stats")
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour lines by tier (auto: when stdout is a terminal and NO_COLOR is unset)",
    )
    return parser.parse_args(argv)


def uses_colour(choice: str, out: TextIO) -> bool:
    if choice != "auto":
        return choice == "always"
    return out.isatty() and not os.environ.get("NO_COLOR")


def tier_of(name: str, doc: dict[str, Any]) -> str:
    if name == "classified" and isinstance(doc.get("tier"), int) and 0 <= doc["tier"] < len(TIERS):
        return TIERS[doc["tier"]]
    return str(doc.get("route") or "")


def money(value: Any) -> str:
    return f"${value:.6f}" if isinstance(value, int | float) else "$?"


class Printer:
    """Turns feed events into lines; remembers what it needs of each request's earlier
    events (for --summary, and the worker column once there is more than one)."""

    def __init__(self, out: TextIO, colour: bool, summary: bool, stats: bool) -> None:
        self.out = out
        self.colour = colour
        self.summary = summary
        self.stats = stats
        self.workers: set[Any] = set()
        self.requests: dict[tuple[Any, Any], dict[str, Any]] = {}

    def text(self, name: str, doc: dict[str, Any]) -> str | None:
        """The line for one event (without colour), or None when it prints none."""
        if name == "start":
            prompt = doc.get("prompt")
            shown = f" {json.dumps(prompt[:PROMPT_CHARS])}" if isinstance(prompt, str) else ""
            stream = " stream" if doc.get("stream") else ""
            return f"{doc.get('format')} {doc.get('model') or '-'}{stream}{shown}"
        if name == "classified":
            score = doc.get("score")
            scored = "" if score is None else f", score {score}"
            return (
                f"{tier_of(name, doc)} ({doc.get('tier')}) by {doc.get('source')}{scored},"
                f" {doc.get('classifier_ms')} ms"
            )
        if name == "routed":
            fallbacks = doc.get("fallbacks") or []
            after = f" after {', '.join(fallbacks)}" if fallbacks else ""
            return f"{doc.get('route')} → {doc.get('provider')} {doc.get('model') or '-'}{after}"
        if name == "complete":
            if "route" not in doc:  # refused before it was routed
                return f"{doc.get('status')} {doc.get('error') or ''}".rstrip()
            cached = doc.get("cache_read_tokens") or 0
            tokens = f"{doc.get('prompt_tokens')}+{doc.get('completion_tokens')} tokens"
            if cached:
                tokens += f" ({cached} cached)"
            if doc.get("estimated"):
                tokens += " ~"
            line = (
                f"{doc.get('status')} {doc.get('route')} {doc.get('model')} {tokens}"
                f" {money(doc.get('cost_usd'))} {doc.get('total_ms')} ms"
            )
            if isinstance(doc.get("first_byte_ms"), int | float):
                line += f" (first byte {doc['first_byte_ms']} ms)"
            if doc.get("cache_hit"):
                line += " (response cache)"
            if doc.get("error"):
                line += f" error: {doc['error']}"
            return line
        return None

    def event(self, name: str, doc: dict[str, Any]) -> None:
        if name == "stats":
            if self.stats:
                tiers = " ".join(
                    f"{tier}={row.get('requests', 0)}" for tier, row in doc.get("tiers", {}).items()
                )
                self.write(
                    f"{clock(doc.get('time'))} stats       {doc.get('requests')} requests"
                    f" ({tiers}) {money(doc.get('cost_usd'))} saved"
                    f" {money(doc.get('savings_usd'))}",
                    DIM,
                )
            return
        if name == "dropped":
            print(f"xrouter watch: missed {doc.get('count')} events (too slow)", file=sys.stderr)
            return
        self.workers.add(doc.get("worker"))
        key = (doc.get("worker"), doc.get("id"))
        known = self.requests.setdefault(key, {})
        if name == "start":
            known["time"] = doc.get("time")
        if self.summary:
            known[name] = doc
            if name != "complete":
                return
            self.requests.pop(key, None)
            self.write_summary(key, known)
            return
        if name == "complete":
            self.requests.pop(key, None)
        text = self.text(name, doc)
        if text is None:
            return
        rid = f"{doc.get('worker')}:{doc.get('id')}" if len(self.workers) > 1 else doc.get("id")
        line = f"{clock(known.get('time'))} #{rid} {name:<11} {text}"
        self.write(line, self.colour_of(name, doc))

    def write_summary(self, key: tuple[Any, Any], known: dict[str, Any]) -> None:
        complete = known["complete"]
        parts = []
        if "classified" in known:
            parts.append(self.text("classified", known["classified"]) or "")
        if "routed" in known:
            parts.append(self.text("routed", known["routed"]) or "")
        parts.append(self.text("complete", complete) or "")
        start = known.get("start")
        if start and isinstance(start.get("prompt"), str):
            parts.append(json.dumps(start["prompt"][:PROMPT_CHARS]))
        rid = f"{key[0]}:{key[1]}" if len(self.workers) > 1 else key[1]
        line = f"{clock(known.get('time'))} #{rid} " + " | ".join(p for p in parts if p)
        self.write(line, self.colour_of("complete", complete))

    def colour_of(self, name: str, doc: dict[str, Any]) -> str:
        if name == "complete" and (doc.get("error") or (doc.get("status") or 0) >= 400):
            return RED
        return TIER_COLOURS.get(tier_of(name, doc), "")

    def write(self, line: str, colour: str = "") -> None:
        if self.colour and colour:
            line = f"{colour}{line}{RESET}"
        self.out.write(line + "\n")
        self.out.flush()


def clock(at: Any) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at if isinstance(at, int | float) else None))


class Refused(Exception):
    """The router refused the feed (a wrong key, no such page): retrying will not help."""


def follow(url: str, key: str, printer: Printer) -> None:
    """Read the feed until it ends; Refused on an answer other than 200."""
    headers = {"accept": "text/event-stream"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    timeout = httpx.Timeout(10.0, read=60.0)  # the router sends a keep-alive every 15 s
    with (
        httpx.Client(trust_env=False, timeout=timeout) as client,
        client.stream("GET", url.rstrip("/") + "/events", headers=headers) as reply,
    ):
        if reply.status_code != 200:
            reply.read()
            try:
                message = reply.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = reply.text[:200]
            raise Refused(f"{url} answered HTTP {reply.status_code}: {message}")
        print(f"xrouter watch: following {url}/events (Ctrl-C stops)", file=sys.stderr)
        parser = SSEParser()
        for data in reply.iter_raw():
            for name, doc in feed_events(parser, data):
                printer.event(name, doc)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    printer = Printer(sys.stdout, uses_colour(args.color, sys.stdout), args.summary, args.stats)
    failures = 0
    try:
        while True:
            try:
                follow(args.url, args.key, printer)
                failures = 0
                reason = "the feed ended"
            except Refused as exc:
                print(f"xrouter watch: {exc}", file=sys.stderr)
                return 1
            except httpx.HTTPError as exc:
                reason = str(exc) or type(exc).__name__
            wait = RECONNECT_S[min(failures, len(RECONNECT_S) - 1)]
            failures += 1
            print(f"xrouter watch: {reason}; reconnecting in {wait:g} s", file=sys.stderr)
            time.sleep(wait)
    except KeyboardInterrupt:
        return 0
