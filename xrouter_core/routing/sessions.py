"""Agent sessions: which session a request belongs to, what each route's prompt cache
holds for it, and which acceptable tier serves the next turn cheapest.

Why
  Agent clients resend a long, growing prefix every turn (system prompt, tools,
  history). Providers bill a cached prefix at a fraction of the input price (Anthropic
  reads at 0.1x and writes at 1.25x; OpenAI's automatic cache reads at 0.1-0.5x). A
  router that picks a tier per request moves a session between models, and each move
  makes the new model read the prefix uncached: the "cheap" route can cost more than
  staying. So the turn's route is chosen by its expected cost given each route's cache
  state for the session, and the session's cost is compared with staying on frontier
  *with* its caching (the honest baseline), simulated from the same token counts.

Session identity (`session_of`)
  A client's own session id where it sends one (docs/sessions.md, per client):
  Claude Code's `X-Claude-Code-Session-Id` header or the `session_id` in its
  `metadata.user_id`; Codex's `session-id` / `thread-id` headers (older versions:
  `session_id`, `conversation_id`) or its `prompt_cache_key`; any OpenAI client's
  `prompt_cache_key`. Else the tool-loop key extended to the whole session: the stable
  system prompt (toolloop.py masks its dates and ids) and the first user message.

Cache state (`SessionState`), kept in the cache backend (Redis when configured, so every
  worker sees the same), one entry per session: for each route that served it, the
  prefix the provider reported cached after its last turn, when, and the provider's cache
  lifetime (Anthropic: 5 min, 1 h with `cache_control.ttl` "1h"; OpenAI's automatic
  cache: 5 min, the low end of its documented window); the output tokens per turn; bytes
  per token of the session's bodies; and the frontier cache the baseline would hold.

The choice (`choose`)
  The classifier's tier (after tools and key ceilings) is the lowest acceptable tier:
  nothing goes below it. The tiers above it are candidates only where the session's
  cache is warm on their route. Each candidate's expected cost: the prompt (estimated
  from the body's size) split into the cached part the route holds and the rest, which
  is written (write premium) on routes that price writes; plus the session's output per
  turn, all at the maintained price library's rates (prices.py). The cheapest wins; a
  switch away from the session's last route that saves nothing is not made. When that
  changes the tier, the decision's source is `cache_cost` and its detail names the
  figures.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from xrouter_core.accounting.cache import Cache, MemoryCache
from xrouter_core.accounting.prices import Price, Pricing
from xrouter_core.config import Route
from xrouter_core.routing.classifier import Decision
from xrouter_core.routing.extract import SYSTEM_ROLES, reading_of
from xrouter_core.routing.toolloop import stable_system_digest
from xrouter_core.tiers import FRONTIER, TIERS
from xrouter_core.wire.canonical import Usage
from xrouter_core.wire.inbound import ChatRequest, content_text

# A session's entry outlives the longest provider cache lifetime.
SESSION_TTL_S = 3600.0
ANTHROPIC_TTL_S = 300.0  # cache_control {"type": "ephemeral"}
ANTHROPIC_LONG_TTL_S = 3600.0  # cache_control {"type": "ephemeral", "ttl": "1h"}
AUTO_TTL_S = 300.0  # OpenAI / Gemini automatic caching: "5 to 10 minutes of inactivity"
# Prompts shorter than this are not cached by the providers (OpenAI: 1024; Anthropic:
# 1024 to 4096 by model); the baseline caches nothing below it.
MIN_CACHEABLE_TOKENS = 1024
DEFAULT_OUTPUT_TOKENS = 300.0
DEFAULT_TOKENS_PER_BYTE = 0.25  # until the session's first answer says better
# Weight of the newest turn in the session's averages.
EMA = 0.3
# A task's expected requests are capped: a long loop's estimate stays bounded.
MAX_HORIZON = 8

# Headers clients send their session id in (lower case), and the client they name.
SESSION_HEADERS: tuple[tuple[str, str], ...] = (
    ("x-claude-code-session-id", "claude-code"),
    ("session-id", "codex"),  # Codex 0.171
    ("thread-id", "codex"),
    ("session_id", "codex"),  # older Codex
    ("conversation_id", "codex"),
)


# What a label keeps of a client's id (the counters' keys are `|`-separated).
_SHOWN = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, slots=True)
class SessionId:
    """`key` stores the session's state; `label` names it on /usage (the client's own id
    shortened, or a digest of the prompt's key); `source` says where it came from."""

    key: str
    label: str
    source: str


def _id(source: str, value: str) -> SessionId:
    digest = hashlib.blake2b(f"{source}\x00{value}".encode(), digest_size=12).hexdigest()
    shown = _SHOWN.sub("_", value[:13]) if source != "prompt" else digest[:12]
    return SessionId(f"session:{digest}", f"{source}:{shown}", source)


def _metadata_session(user_id: str) -> str:
    """Claude Code's metadata.user_id: a JSON object with `session_id` (2.1), or
    `user_<hash>_account_<uuid>_session_<uuid>` (1.x)."""
    if user_id.startswith("{"):
        try:
            doc = json.loads(user_id)
        except ValueError:
            return ""
        value = doc.get("session_id") if isinstance(doc, dict) else None
        return value if isinstance(value, str) else ""
    _, found, rest = user_id.partition("_session_")
    return rest if found else ""


def session_of(chat: ChatRequest, headers: Mapping[str, str]) -> SessionId | None:
    """The session a request belongs to, or None when nothing identifies one (no
    message from the person). `headers`: by lower-case name (the router passes
    wire/headers.py `header_lookup`'s) or case-insensitive (mitmproxy's)."""
    for name, client in SESSION_HEADERS:
        value = headers.get(name)
        if value:
            return _id(client, value.strip())
    original = chat.original if chat.original is not None else chat.body
    metadata = original.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        found = _metadata_session(metadata["user_id"])
        if found:
            return _id("claude-code", found)
    raw = chat.responses.raw if chat.responses is not None else chat.body
    key = raw.get("prompt_cache_key")
    if isinstance(key, str) and key:
        return _id("prompt_cache_key", key)
    messages = chat.messages
    # The first user message as sent: every turn resends it verbatim, so it needs none of
    # extract.py's cleaning (whose regexes would cost more than the rest of this module).
    first = next((m for m in messages if m.get("role") == "user"), None)
    if first is None:
        return None
    first = content_text(first.get("content"))
    digest = hashlib.blake2b(stable_system_digest(reading_of(chat).system), digest_size=12)
    digest.update(first.encode("utf-8", "surrogatepass"))
    return _id("prompt", digest.hexdigest())


def worth_caching(chat: ChatRequest, sid: SessionId) -> bool:
    """Whether a translating route should mark this request's prompt for caching: a
    marked prompt pays Anthropic's write premium (1.25x) once and is read at 0.1x on the
    next turn, so only a request that will have a next turn gains: one with tools (an
    agent), with history, or from a client that names its session. A one-off question
    stays unmarked."""
    if sid.source != "prompt" or chat.body.get("tools"):
        return True
    return sum(1 for m in chat.messages if m.get("role") not in SYSTEM_ROLES) > 1


@dataclass(slots=True)
class RouteCache:
    """What one route's provider holds cached for a session."""

    prefix: int  # tokens
    at: float  # wall-clock seconds (workers share it)
    ttl: float

    def held(self, now: float) -> int:
        return self.prefix if now - self.at < self.ttl else 0


@dataclass(slots=True)
class SessionState:
    routes: dict[str, RouteCache] = field(default_factory=dict)
    baseline: RouteCache | None = None  # the frontier cache of the all-frontier baseline
    output: float = DEFAULT_OUTPUT_TOKENS
    per_byte: float = DEFAULT_TOKENS_PER_BYTE
    last: str = ""  # the route that served the last turn
    # Requests per task (a person's ask and its tool loop, toolloop.py) on average, per
    # tier the classifier gave the task (easy asks' loops differ from hard ones'); the
    # current task's tier and requests so far; the prompt's growth per request; the last
    # prompt's size.
    task_lengths: list[float] = field(default_factory=lambda: [1.0] * len(TIERS))
    task_tier: int = 0
    in_task: int = 0
    growth: float = 0.0
    last_prompt: int = 0
    # Read from the session's first forwarded body (a client keeps its habits; scanning
    # every 100 kB body would cost more than the rest of this module): does it carry
    # cache_control marks, and do they ask for the 1-hour lifetime? None: not yet known.
    marks: tuple[bool, bool] | None = None

    def dumps(self) -> str:
        doc = {
            "r": {k: [c.prefix, round(c.at, 3), c.ttl] for k, c in self.routes.items()},
            "o": round(self.output, 1),
            "p": round(self.per_byte, 5),
            "l": self.last,
            "t": [
                [round(n, 3) for n in self.task_lengths],
                self.task_tier,
                self.in_task,
                round(self.growth, 1),
                self.last_prompt,
            ],
            "m": list(self.marks) if self.marks is not None else None,
        }
        if self.baseline is not None:
            b = self.baseline
            doc["b"] = [b.prefix, round(b.at, 3), b.ttl]
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def loads(cls, raw: bytes | str | None) -> SessionState:
        """A stored state; a fresh one for None or anything unreadable."""
        if raw is None:
            return cls()
        try:
            doc = json.loads(raw)
            routes = {
                k: RouteCache(int(v[0]), float(v[1]), float(v[2])) for k, v in doc["r"].items()
            }
            b = doc.get("b")
            t = doc["t"]
            return cls(
                routes,
                RouteCache(int(b[0]), float(b[1]), float(b[2])) if b else None,
                float(doc["o"]),
                float(doc["p"]),
                str(doc["l"]),
                [float(n) for n in t[0]][: len(TIERS)],
                int(t[1]),
                int(t[2]),
                float(t[3]),
                int(t[4]),
                (bool(doc["m"][0]), bool(doc["m"][1])) if doc.get("m") else None,
            )
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return cls()


def route_id(route: Route) -> str:
    """A route as the state names it: its place in its tier and its model."""
    return f"{route.breaker_key}|{route.model}"


def writes_cache(price: Price) -> bool:
    """The provider bills cache writes (Anthropic-style explicit caching)."""
    return price.cache_write is not None


def caches(price: Price) -> bool:
    return price.cache_read is not None or price.cache_write is not None


def request_cost(price: Price, prompt: int, output: int, held: int) -> tuple[float, int]:
    """(USD, cached tokens) of a request of `prompt` tokens on a route holding `held`."""
    if not caches(price):
        return price.cost(prompt, output), 0
    cached = min(held, prompt)
    written = prompt - cached if writes_cache(price) and prompt >= MIN_CACHEABLE_TOKENS else 0
    return price.cost(prompt, output, cached, written), cached


def expected_cost(
    price: Price, prompt: int, output: int, held: int, horizon: int = 1, growth: int = 0
) -> tuple[float, int]:
    """(USD, cached tokens now) of the `horizon` requests the task still has on this
    route: this one given what the route holds, then each with the prompt grown by
    `growth` and all before it cached (a tool loop stays on its tier). A switch's cache
    write is paid once and its savings come on every request after it."""
    cost, cached = request_cost(price, prompt, output, held)
    for step in range(1, horizon):
        size = prompt + step * growth
        cost += request_cost(price, size, output, size - growth)[0]
    return cost, cached


@dataclass(frozen=True, slots=True)
class Estimate:
    tier: int
    route: str
    cost: float
    cached: int


@dataclass(frozen=True, slots=True)
class Choice:
    tier: int
    estimates: tuple[Estimate, ...]
    prompt: int

    def figures(self) -> str:
        """`cheap:0.012345/0,frontier:0.004321/98000`: USD and cached tokens per tier."""
        return ",".join(f"{TIERS[e.tier]}:{e.cost:.6f}/{e.cached}" for e in self.estimates)


def horizon_of(state: SessionState, tier: int, follow_up: bool) -> int:
    """The requests a task the classifier gave `tier` still has, this one included: the
    session's average for such tasks, less what the current task used (a follow-up),
    and at least this one."""
    left = state.task_lengths[tier] - (state.in_task if follow_up else 0)
    return max(1, min(MAX_HORIZON, round(left)))


def choose(
    lowest: int,
    options: list[tuple[int, str, Price]],
    state: SessionState,
    prompt: int,
    now: float,
    follow_up: bool = False,
) -> Choice:
    """The cheapest acceptable tier. `options`: (tier, route_id, price) of the lowest
    acceptable tier and of higher ones; those above `lowest` count only with a warm cache
    (a cold higher tier is never cheaper than a cold lower one at sane prices). Each is
    priced over the requests its task still has (`horizon_of`)."""
    output = round(state.output)
    horizon = horizon_of(state, lowest, follow_up)
    growth = round(state.growth)
    estimates = []
    for tier, rid, price in options:
        cache = state.routes.get(rid)
        held = cache.held(now) if cache is not None else 0
        if tier > lowest and not held:
            continue
        cost, cached = expected_cost(price, prompt, output, held, horizon, growth)
        estimates.append(Estimate(tier, rid, cost, cached))
    best = min(estimates, key=lambda e: e.cost)
    # No switch that saves nothing: the session's last route keeps it on a tie.
    staying = next((e for e in estimates if e.route == state.last), None)
    if staying is not None and staying.cost <= best.cost:
        best = staying
    return Choice(best.tier, tuple(estimates), prompt)


# A `"cache_control"` key and the object it opens, and in that object `"ttl": "1h"`
# (Anthropic's shape: {"type": "ephemeral", "ttl": "5m" | "1h"}), with any JSON whitespace
# and in either order. A quote preceded by a backslash is inside a string (a message's
# text, a key's name); in valid JSON an unescaped quote followed by a name starts a
# string, and that string followed by a colon is a key. Each pattern starts with its
# literal, so the scan of a long body is a fast substring search.
MARK = re.compile(rb'"cache_control"\s*:\s*(\{[^{}]*)?')
LONG_TTL = re.compile(rb'"ttl"\s*:\s*"1h"')


def marks_of(body: bytes) -> tuple[bool, bool]:
    """(cache_control marks, the 1-hour lifetime asked) in a forwarded body: a scan of
    its bytes, not a second parse (docs/sessions.md says what it cannot tell apart)."""
    marked = long = False
    for mark in MARK.finditer(body):
        if body[mark.start() - 1 : mark.start()] == b"\\":
            continue  # in a string
        marked = True
        inside = mark.group(1)
        if inside and any(
            inside[t.start() - 1 : t.start()] != b"\\" for t in LONG_TTL.finditer(inside)
        ):
            long = True
            break
    return marked, long


def cache_lifetime(price: Price, long: bool) -> float:
    """How long the provider keeps what a request cached (`long`: marks with "ttl": "1h")."""
    if writes_cache(price):
        return ANTHROPIC_LONG_TTL_S if long else ANTHROPIC_TTL_S
    return AUTO_TTL_S if caches(price) else 0.0


def cached_after(price: Price, usage: Usage) -> int:
    """The prefix the provider holds after a turn: what Anthropic reported reading and
    writing; for automatic caching the whole prompt (when long enough to be cached)."""
    if writes_cache(price):
        return usage.cache_read_tokens + usage.cache_write_tokens
    if caches(price) and usage.prompt_tokens >= MIN_CACHEABLE_TOKENS:
        return usage.prompt_tokens
    return 0


@dataclass(slots=True)
class Session:
    """One request's view of its session: its id, the state read before routing, the
    prompt estimate and (when it changed the tier) the choice."""

    id: SessionId
    state: SessionState
    body_bytes: int
    prompt_estimate: int
    choice: Choice | None = None
    follow_up: bool = False  # continues its task's tool loop (the policy said tool_loop)
    classified: int = 0  # the tier the policy gave the task (before this module)


class SessionRouting:
    """The session work of the router: read the state before routing, adjust the tier,
    and at the end update the state and price the baseline. `mode` is
    SESSION_COST_ROUTING; `store` the cache backend's session store; `spawn` runs the
    state's write in the background."""

    def __init__(
        self,
        mode: str,
        store: Cache,
        pricing: Pricing,
        routes: Mapping[str, Route],
        spawn: Callable[[Any], Any],
    ):
        self.mode = mode
        self.store = store
        self.pricing = pricing
        self.routes = routes
        self.spawn = spawn
        # Per tier index: its route and the route's id in the state (built once).
        self.by_tier: list[tuple[Route, str] | None] = [
            (route, route_id(route)) if (route := routes.get(tier)) is not None else None
            for tier in TIERS
        ]

    async def begin(
        self, chat: ChatRequest, headers: Mapping[str, str], body_bytes: int
    ) -> Session | None:
        """The request's session with its stored state (None: no session, or off)."""
        if self.mode == "off":
            return None
        sid = session_of(chat, headers)
        if sid is None:
            return None
        if isinstance(self.store, MemoryCache):
            # This process's memory keeps the state itself: nothing to parse.
            found: Any = self.store.get_now(sid.key)
            state = found if isinstance(found, SessionState) else SessionState()
        else:  # its own task: the Redis client's timeouts belong to the task they start in
            state = SessionState.loads(await asyncio.ensure_future(self.store.get(sid.key)))
        return Session(sid, state, body_bytes, round(body_bytes * state.per_byte))

    def adjust(self, session: Session | None, decision: Decision, top: int) -> Decision:
        """The decision, moved up to a tier the session is cached on when that is
        cheaper (mode on); `top` is the highest tier the request may use."""
        if session is None:
            return decision
        session.follow_up = decision.source.startswith("tool_loop")
        session.classified = decision.tier
        if self.mode != "on" or decision.tier >= top:
            return decision
        state = session.state
        now = time.time()
        by_tier = self.by_tier
        if by_tier[decision.tier] is None or not any(
            (entry := by_tier[tier]) is not None
            and (cache := state.routes.get(entry[1])) is not None
            and cache.held(now)
            for tier in range(decision.tier + 1, top + 1)
        ):
            return decision  # nothing above is warm: the classifier's tier stands
        options = [
            (tier, entry[1], self.pricing.for_model(entry[0].tier, entry[0].model))
            for tier in range(decision.tier, top + 1)
            if (entry := by_tier[tier]) is not None
        ]
        choice = choose(
            decision.tier, options, state, session.prompt_estimate, now, session.follow_up
        )
        if choice.tier == decision.tier:
            return decision
        session.choice = choice
        detail = f"{decision.source} chose {TIERS[decision.tier]}; expected {choice.figures()}"
        return Decision(choice.tier, "cache_cost", decision.ms, detail, decision.score)

    def finished(
        self, session: Session, route: Route, usage: Usage | None, body: bytes
    ) -> float | None:
        """After a turn: the route's cache state and the session's averages updated and
        stored (in the background); returns what the turn would have cost on frontier
        with the frontier's own cache for the session (None without usage). `body` is
        what was forwarded (read for its cache marks on the session's first turn)."""
        if usage is None or usage.prompt_tokens <= 0:
            return None
        now = time.time()
        state = session.state
        price = self.pricing.for_model(route.tier, route.model)
        rid = route_id(route)
        if state.marks is None:
            state.marks = marks_of(body)
        held = cached_after(price, usage)
        if held:
            state.routes[rid] = RouteCache(held, now, cache_lifetime(price, state.marks[1]))
        else:
            state.routes.pop(rid, None)
        state.last = rid
        if session.follow_up:
            state.in_task += 1
        else:
            if state.in_task:
                average = state.task_lengths[state.task_tier]
                state.task_lengths[state.task_tier] = average + EMA * (state.in_task - average)
            state.in_task = 1
            state.task_tier = session.classified
        if state.last_prompt and usage.prompt_tokens > state.last_prompt:
            state.growth += EMA * (usage.prompt_tokens - state.last_prompt - state.growth)
        state.last_prompt = usage.prompt_tokens
        state.output += EMA * (usage.completion_tokens - state.output)
        if session.body_bytes:
            state.per_byte += EMA * (usage.prompt_tokens / session.body_bytes - state.per_byte)
        baseline = self.baseline_cost(state, usage, now)
        if isinstance(self.store, MemoryCache):
            self.store.set_now(session.id.key, state, SESSION_TTL_S)  # type: ignore[arg-type]
        else:
            self.spawn(self.store.set(session.id.key, state.dumps(), SESSION_TTL_S))
        return baseline

    def baseline_cost(self, state: SessionState, usage: Usage, now: float) -> float:
        """This turn on frontier, with frontier's cache as staying there would have left
        it. It caches as the actual turn could: when the client marked the prompt for
        caching (or the router did), the route cached anything, or frontier's caching is
        automatic."""
        frontier = self.routes.get(FRONTIER)
        price = self.pricing.for_tier(FRONTIER)
        n = usage.prompt_tokens
        out = usage.completion_tokens
        could_cache = caches(price) and (
            not writes_cache(price)
            or usage.cache_read_tokens
            or usage.cache_write_tokens
            or (state.marks is not None and state.marks[0])
        )
        if frontier is None or not could_cache or n < MIN_CACHEABLE_TOKENS:
            return price.cost(n, out)
        held = state.baseline.held(now) if state.baseline is not None else 0
        cached = min(held, n)
        written = n - cached if writes_cache(price) else 0
        long = state.marks is not None and state.marks[1]
        state.baseline = RouteCache(n, now, cache_lifetime(price, long))
        return price.cost(n, out, cached, written)
