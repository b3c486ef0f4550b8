"""One tier per task: the follow-up requests of a tool loop keep the tier of its first request.

An agent works through a task as a loop: the model answers with tool calls, the client
runs them and sends a new request with the results appended, again and again. Each of
those requests is a new HTTP call, but it is the same task; re-classifying it could
move the task between models halfway (a cheap model finishing what a frontier model
planned), and would cost a classifier call per step.

The rule
  A request is a *follow-up* when, after the latest message the person wrote (see
  extract.py), it holds an assistant message with tool calls and it ends with a tool
  result (role `tool`/`function`) or with client context only (a user message whose
  text is nothing but wrappers, such as OpenClaw's internal-context block).
  A follow-up whose task is known goes to the task's tier without classification.
  Every other request is decided as usual, and its tier becomes its task's tier.

The key of a task
  A hash of (1) the system prompt with dates, times, UUIDs and long numbers replaced by
  placeholders (OpenClaw embeds the date; a loop running past midnight stays one task;
  the workspace paths in it keep projects apart), (2) the position of the latest message
  the person wrote and (3) its cleaned text. The same ask at the same point of the same
  conversation is the same task; a new message from the person starts a new one.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from xrouter_core.accounting.cache import Cache
from xrouter_core.routing.extract import Reading, system_text

TASK_TTL_SECONDS = 3600.0
TOOL_RESULT_ROLES = frozenset({"tool", "function"})

# Volatile bits of a system prompt: ISO dates and times, UUIDs, long hex ids, epoch stamps.
_VOLATILE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
    r"|\b\d{1,2}:\d{2}(?::\d{2})?\b"
    r"|\b[0-9a-fA-F]{16,}\b"
    r"|\b\d{6,}\b"
)


_DIGITS = "0123456789"


def mask_volatile(text: str) -> str:
    """Dates, times, UUIDs and long numbers replaced by `#` (only lines with digits are
    searched: a regex over a whole 26 kB prompt costs milliseconds)."""
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if any(digit in line for digit in _DIGITS):
            lines[index] = _VOLATILE.sub("#", line)
    return "\n".join(lines)


def stable_system_prompt(messages: list[dict[str, Any]]) -> str:
    """The system prompt(s) with what changes from run to run masked."""
    return mask_volatile(system_text(messages))


@functools.lru_cache(maxsize=128)
def stable_system_digest(text: str) -> bytes:
    """Every request of a loop repeats the same system prompt: mask and hash it once."""
    return hashlib.blake2b(mask_volatile(text).encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class Task:
    """Which task a request belongs to, and whether it continues that task's tool loop."""

    key: str
    follow_up: bool


def task_of(messages: list[dict[str, Any]], reading: Reading | None = None) -> Task | None:
    """The task of a request, or None when the person wrote nothing in it. `reading`: the
    request's, when the caller has one (extract.py's `reading_of`)."""
    reading = reading or Reading(messages)
    latest = reading.latest
    if latest is None:
        return None
    index, text = latest
    digest = hashlib.blake2b(stable_system_digest(reading.system), digest_size=16)
    for part in (str(index), text):
        digest.update(b"\x00")
        digest.update(part.encode("utf-8", "surrogatepass"))
    return Task(f"task:{digest.hexdigest()}", is_follow_up(messages, index))


def is_follow_up(messages: list[dict[str, Any]], person_index: int) -> bool:
    """Tool calls after the person's message, and the request ends with their results
    (or with client context appended after them)."""
    tail = messages[person_index + 1 :]
    if not any(m.get("role") == "assistant" and m.get("tool_calls") for m in tail):
        return False
    last = tail[-1]
    role = last.get("role")
    # Anything after the person's message that is not the person's is client context.
    return role in TOOL_RESULT_ROLES or role == "user"


def remembered(tier: int, score: float | None) -> str:
    """A decision as the caches keep it (here and the decision cache): "tier" when no
    classifier scored, else "tier score"."""
    return str(tier) if score is None else f"{tier} {score!r}"


def recalled(value: bytes | str) -> tuple[int, float | None]:
    """(tier, score) of a remembered decision; entries from before scores read as
    (tier, None). Redis gives bytes."""
    if isinstance(value, bytes):
        value = value.decode()
    tier, _, score = value.partition(" ")
    return int(tier), float(score) if score else None


class TaskTiers:
    """Remembers the tier (and score) of each task; follow-ups of a known task are not
    re-classified. The store is the Policy's own memory, made anew with every Policy, so
    once the classifier's settings change no task keeps a tier the old ones chose."""

    def __init__(self, store: Cache, ttl: float = TASK_TTL_SECONDS):
        self.store = store
        self.ttl = ttl

    async def decision_of(self, task: Task) -> tuple[int, float | None] | None:
        """(tier, score) of the task a follow-up continues (None: not a follow-up, or
        unknown)."""
        if not task.follow_up:
            return None
        value = await self.store.get(task.key)
        if value is None:
            return None
        # Refresh: a long loop stays pinned as long as it keeps running.
        await self.store.set(task.key, value, self.ttl)
        return recalled(value)

    async def tier_of(self, task: Task) -> int | None:
        found = await self.decision_of(task)
        return None if found is None else found[0]

    async def remember(self, task: Task, tier: int, score: float | None = None) -> None:
        await self.store.set(task.key, remembered(tier, score), self.ttl)
