"""`xrouter tui`: a full-screen terminal view of a running router (prompt_toolkit).

    ┌ live feed ──────────────────────────────────────────────────────────┐
    │ one line per request, newest on top, filled in as its events come   │
    ├ stats ──────────────────────┬ chat ─────────────────────────────────┤
    │ totals, by tier, provider,  │ answers, with each one's routing      │
    │ decision source             │ headers; > the message to send        │
    └─────────────────────────────┴───────────────────────────────────────┘
    Tab focus · ↑/↓ scroll the feed · Enter send · q quit (outside the input) · Ctrl-C quit

It follows GET /events like `xrouter watch` and sends its chat through the router's
POST /v1/chat/completions (model `xrouter/auto`), so a message typed here shows in the
feed with its tier. Works against a remote router; ROUTER_API_KEY is sent when given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from typing import Any

import httpx
from prompt_toolkit.application import Application
from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.key_binding import KeyBindings
from prompt_toolkit.layout import FormattedTextControl, HSplit, Layout, VSplit, Window
from prompt_toolkit.styles import Style
from prompt_toolkit.widgets import Frame, TextArea

from xrouter_core.console.watch import RECONNECT_S, feed_events, money, router_parser, tier_of
from xrouter_core.tiers import TIERS
from xrouter_core.wire.sse import SSEParser

ROWS = 200  # requests the feed keeps
CHAT_LINES = 200
HELP = (
    " Tab focus · ↑/↓ scroll the feed · Enter send (chat) · q quit (outside the chat input)"
    " · Ctrl-C quit "
)
STYLE = Style.from_dict(
    {
        "cheap": "ansigreen",
        "medium": "ansiyellow",
        "frontier": "ansiblue",
        "failed": "ansired",
        "pending": "ansigray",
        "help": "reverse",
        "you": "bold",
    }
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = router_parser(
        "xrouter tui", "A terminal view of a running router: the live feed, stats and a chat."
    )
    parser.add_argument(
        "--model", default="xrouter/auto", help="the model the chat asks for (xrouter/auto)"
    )
    return parser.parse_args(argv)


def request_line(r: dict[str, Any]) -> tuple[str, str]:
    """(style, text) of one request's feed line, from what its events said so far."""
    at = time.strftime("%H:%M:%S", time.localtime(r.get("time") or time.time()))
    decision = "…" if "tier" not in r else f"{r['tier']} {r.get('source', '')}"
    route = r.get("route") or "…"
    fallbacks = r.get("fallbacks") or []
    if fallbacks:
        route += f" (after {', '.join(fallbacks)})"
    if "status" not in r:
        end = "…"
    elif "prompt_tokens" in r:
        end = (
            f"{r['status']} {r['prompt_tokens']}+{r['completion_tokens']} tok"
            f" {money(r.get('cost_usd'))} {r.get('total_ms')} ms"
        )
    else:
        end = f"{r['status']} {r.get('error') or ''}".rstrip()
    prompt = r.get("prompt")
    text = f"{at} #{r.get('id')} {decision:<12} {route:<10} {r.get('model') or '-':<24} {end}" + (
        f"  {json.dumps(prompt[:60])}" if isinstance(prompt, str) else ""
    )
    if "status" in r and (r["status"] >= 400 or r.get("error")):
        return "class:failed", text
    tier = str(r.get("route") or (TIERS[r["tier"]] if isinstance(r.get("tier"), int) else ""))
    return (f"class:{tier}" if tier in TIERS else "class:pending"), text


class Tui:
    """The state (requests, stats, chat) and the prompt_toolkit application over it."""

    def __init__(self, url: str, key: str, model: str) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.model = model
        self.requests: OrderedDict[tuple[Any, Any], dict[str, Any]] = OrderedDict()
        self.stats: dict[str, Any] = {}
        self.by: dict[str, Counter[str]] = {
            "tier": Counter(),
            "provider": Counter(),
            "source": Counter(),
        }
        self.feed_state = "connecting…"
        self.offset = 0  # feed lines scrolled past (0: the newest on top)
        self.chat: list[tuple[str, str]] = [("", "Type a message below and press Enter.\n")]
        self.history: list[dict[str, str]] = []
        self.input = TextArea(
            height=1, prompt="> ", multiline=False, accept_handler=self.accept, wrap_lines=False
        )
        self.feed_window = Window(
            FormattedTextControl(self.feed_text, focusable=True, show_cursor=False),
            wrap_lines=False,
        )
        self.feed_frame = Frame(self.feed_window, title=self.feed_title)
        layout = HSplit(
            [
                self.feed_frame,
                VSplit(
                    [
                        Frame(Window(FormattedTextControl(self.stats_text)), title="stats"),
                        Frame(
                            HSplit(
                                [
                                    Window(FormattedTextControl(self.chat_text), wrap_lines=True),
                                    self.input,
                                ]
                            ),
                            title="chat",
                        ),
                    ],
                    height=14,
                ),
                Window(FormattedTextControl(HELP), height=1, style="class:help"),
            ]
        )
        self.app: Application = Application(
            layout=Layout(layout, focused_element=self.input),
            key_bindings=self.keys(),
            style=STYLE,
            full_screen=True,
            mouse_support=False,
        )

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"} if self.key else {}

    # ---- keys ---------------------------------------------------------------------

    def keys(self) -> KeyBindings:
        keys = KeyBindings()
        in_input = Condition(lambda: self.app.layout.has_focus(self.input))
        on_feed = Condition(lambda: self.app.layout.has_focus(self.feed_window))

        @keys.add("tab")
        def _next(event) -> None:
            event.app.layout.focus_next()

        @keys.add("s-tab")
        def _previous(event) -> None:
            event.app.layout.focus_previous()

        @keys.add("c-c")
        @keys.add("q", filter=~in_input)
        def _quit(event) -> None:
            event.app.exit()

        @keys.add("up", filter=on_feed)
        def _up(event) -> None:
            self.offset = max(self.offset - 1, 0)

        @keys.add("down", filter=on_feed)
        def _down(event) -> None:
            self.offset = min(self.offset + 1, max(len(self.requests) - 1, 0))

        return keys

    # ---- what the panes show --------------------------------------------------------

    def feed_title(self) -> str:
        return f"live feed: {self.url} ({self.feed_state})"

    def feed_text(self) -> StyleAndTextTuples:
        rows = list(reversed(self.requests.values()))[self.offset :]
        if not rows:
            return [("class:pending", "no request yet")]
        out: StyleAndTextTuples = []
        for row in rows:
            style, text = request_line(row)
            out += [(style, text), ("", "\n")]
        return out

    def stats_text(self) -> StyleAndTextTuples:
        s = self.stats
        out: StyleAndTextTuples = []
        if s:
            out.append(
                (
                    "",
                    f"router totals (every 5 s): {s.get('requests', 0)} requests, {s.get('tokens', 0)} tokens,"
                    f" {money(s.get('cost_usd'))} (saved {money(s.get('savings_usd'))})\n",
                )
            )
            out.append(
                (
                    "",
                    "  "
                    + "  ".join(
                        f"{t}={row.get('requests', 0)}" for t, row in s.get("tiers", {}).items()
                    )
                    + "\n",
                )
            )
        out.append(("", "seen here:\n"))
        for what, counts in self.by.items():
            shown = "  ".join(f"{k}={v}" for k, v in counts.most_common(6)) or "-"
            out.append(("", f"  by {what}: {shown}\n"))
        return out

    def chat_text(self) -> StyleAndTextTuples:
        return self.chat[-CHAT_LINES:]

    # ---- the feed -------------------------------------------------------------------

    def on_event(self, name: str, doc: dict[str, Any]) -> None:
        if name == "stats":
            self.stats = doc
            return
        if name not in ("start", "classified", "routed", "complete"):
            return
        key = (doc.get("worker"), doc.get("id"))
        row = self.requests.get(key)
        if row is None:
            row = self.requests[key] = {"time": time.time()}
            while len(self.requests) > ROWS:
                self.requests.popitem(last=False)
        fields = dict(doc)
        if name == "start":
            fields["asked"] = fields.pop("model", None)
        row.update(fields)
        if name == "complete" and "route" in doc:
            self.by["tier"][tier_of("complete", doc)] += 1
            self.by["provider"][str(doc.get("provider"))] += 1
            self.by["source"][str(row.get("source", "-"))] += 1

    async def follow(self) -> None:
        failures = 0
        timeout = httpx.Timeout(10.0, read=60.0)
        async with httpx.AsyncClient(trust_env=False, timeout=timeout) as client:
            while True:
                try:
                    async with client.stream(
                        "GET", self.url + "/events", headers=self.headers()
                    ) as reply:
                        if reply.status_code != 200:
                            await reply.aread()
                            self.feed_state = f"HTTP {reply.status_code}: {reply.text[:80]}"
                        else:
                            self.feed_state = "live"
                            failures = 0
                            self.app.invalidate()
                            parser = SSEParser()
                            async for data in reply.aiter_raw():
                                for name, doc in feed_events(parser, data):
                                    self.on_event(name, doc)
                                self.app.invalidate()
                            self.feed_state = "the feed ended"
                except httpx.HTTPError as exc:
                    self.feed_state = f"down: {exc or type(exc).__name__}"
                wait = RECONNECT_S[min(failures, len(RECONNECT_S) - 1)]
                failures += 1
                self.feed_state += f"; reconnecting in {wait:g} s"
                self.app.invalidate()
                await asyncio.sleep(wait)

    # ---- the chat -------------------------------------------------------------------

    def accept(self, buffer) -> bool:
        text = buffer.text.strip()
        if text:
            self.chat.append(("class:you", f"you: {text}\n"))
            self.app.create_background_task(self.send(text))
        return False  # the input is cleared

    async def send(self, text: str) -> None:
        self.history.append({"role": "user", "content": text})
        body = {"model": self.model, "messages": self.history[-20:]}
        try:
            async with httpx.AsyncClient(trust_env=False, timeout=120) as client:
                reply = await client.post(
                    self.url + "/v1/chat/completions", json=body, headers=self.headers()
                )
        except httpx.HTTPError as exc:
            self.chat.append(("class:failed", f"router unreachable: {exc}\n"))
            self.history.pop()
            self.app.invalidate()
            return
        h = reply.headers
        route = h.get("x-xrouter-upstream", "?")
        routing = f"decision {h.get('x-xrouter-decision', '?')} → {route}"
        if h.get("x-xrouter-score"):
            routing += f", score {h['x-xrouter-score']}"
        if h.get("x-xrouter-fallback"):
            routing += f", after {h['x-xrouter-fallback']}"
        if h.get("x-xrouter-cache"):
            routing += f", cache {h['x-xrouter-cache']}"
        try:
            doc = reply.json()
        except ValueError:
            doc = {}
        if reply.status_code != 200:
            message = (doc.get("error") or {}).get("message") if isinstance(doc, dict) else None
            self.chat.append(
                ("class:failed", f"HTTP {reply.status_code}: {message or reply.text[:200]}\n")
            )
            self.history.pop()
        else:
            answer = ((doc.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
            self.history.append({"role": "assistant", "content": answer})
            style = f"class:{route}" if route in TIERS else ""
            self.chat.append((style, f"[{routing}]\n"))
            self.chat.append(("", f"{answer}\n"))
        self.app.invalidate()

    async def run(self) -> None:
        follower = asyncio.ensure_future(self.follow())
        try:
            await self.app.run_async()
        finally:
            follower.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(Tui(args.url, args.key, args.model).run())
    return 0
