"""Which tier a request goes to: cache first, then the classifier, frontier on doubt."""

from __future__ import annotations

import asyncio
from typing import Any

from xrouter_core.cache import Cache, cache_key
from xrouter_core.classifier import Decision, LLMClassifier
from xrouter_core.inbound import ChatRequest, content_text

TIER_NAMES: tuple[str, ...] = ("cheap", "medium", "frontier")
# The model names the router offers (GET /v1/models); the one list to extend.
FRONTIER = 2
MAX_INPUT_CHARS = 2000
CONTEXT_CHARS = 300


def truncate_middle(text: str, limit: int) -> str:
    """Keep the head and the tail: the ask is usually at one end of a long message."""
    if len(text) <= limit:
        return text
    half = (limit - 5) // 2
    return text[:half] + "\n...\n" + text[-half:]


def classifier_input(messages: list[dict[str, Any]]) -> str:
    """The last user message's text, with a little of the exchange before it."""
    last_user = None
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "user":
            text = content_text(messages[index].get("content")).strip()
            if text:
                last_user = index
                break
    if last_user is None:
        return ""
    ask = truncate_middle(content_text(messages[last_user].get("content")).strip(), MAX_INPUT_CHARS)
    for index in range(last_user - 1, -1, -1):
        if messages[index].get("role") == "assistant":
            before = content_text(messages[index].get("content")).strip()
            if before:
                return f"(previous answer: {before[-CONTEXT_CHARS:]})\n\n{ask}"
            break
    return ask


class Policy:
    """Decides the tier of one request; the classifier may be None (disabled)."""

    def __init__(
        self, classifier: LLMClassifier | None, decisions: Cache, decision_ttl: float = 3600.0
    ):
        self.classifier = classifier
        self.decisions = decisions
        self.decision_ttl = decision_ttl
        # One classifier call per question at a time: concurrent requests with the same
        # text (an agent's retries, a burst) wait for it instead of each asking again.
        self._in_flight: dict[str, asyncio.Task[Decision]] = {}

    async def decide(self, request: ChatRequest) -> Decision:
        if self.classifier is None:
            return Decision(FRONTIER, "disabled")
        text = classifier_input(request.messages)
        if not text:
            return Decision(FRONTIER, "no_text")
        key = cache_key("decision", text)
        cached = await self.decisions.get(key)
        if cached is not None:
            return Decision(int(cached), "cache")
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._classify(text, key))
            self._in_flight[key] = task
            task.add_done_callback(lambda _: self._in_flight.pop(key, None))
        # Shielded: a client that goes away does not cancel the others' decision.
        return await asyncio.shield(task)

    async def _classify(self, text: str, key: str) -> Decision:
        assert self.classifier is not None
        decision = await self.classifier.classify(text)
        if decision is None:
            return Decision(FRONTIER, "classifier_failed", detail=self.classifier.last_error or "")
        await self.decisions.set(key, str(decision.tier), self.decision_ttl)
        return decision
