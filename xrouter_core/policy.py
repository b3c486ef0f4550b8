"""Which tier a request goes to: cache first, then the classifier, frontier on doubt."""

from __future__ import annotations

import asyncio

from xrouter_core.cache import Cache, MemoryCache, cache_key
from xrouter_core.classifier import Decision, LLMClassifier
from xrouter_core.extract import classifier_input
from xrouter_core.inbound import ChatRequest
from xrouter_core.toolloop import TaskTiers, task_of

TIER_NAMES: tuple[str, ...] = ("cheap", "medium", "frontier")
# The model names the router offers (GET /v1/models); the one list to extend.
FRONTIER = 2


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
        self.tasks = TaskTiers(MemoryCache(max_entries=10_000))

    async def decide(self, request: ChatRequest) -> Decision:
        """One tier per task: a tool loop's follow-ups keep their task's tier (toolloop.py)."""
        task = task_of(request.messages)
        if task is not None:
            tier = await self.tasks.tier_of(task)
            if tier is not None:
                return Decision(tier, "tool_loop")
        decision = await self.decide_fresh(request)
        if task is not None:
            await self.tasks.remember(task, decision.tier)
        return decision

    async def decide_fresh(self, request: ChatRequest) -> Decision:
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
