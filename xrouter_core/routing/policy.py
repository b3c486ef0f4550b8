"""Which tier a request goes to: cache first, then the classifier, frontier on doubt.

Decision sources, as the request log shows them: `llm` (the LLM classifier), `builtin`
(the in-process classifier), `builtin_fallback` (hybrid mode, the LLM failed),
`llm_failed` (llm mode, sent to frontier), `cache`, `tool_loop`, `disabled`, `no_text`;
after the policy, `cache_cost` (routing/sessions.py: an agent session kept on a higher
tier its prompt cache makes cheaper).

The decision cache's keys start with the classifier's identity (mode, thresholds, the
LLM's URL, model and system prompt, the built-in classifier's version): the cache may
outlive the process (disk, Redis), and a decision made under other settings is never
reused. Cached and tool-loop decisions keep the score they were made with.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import time
from pathlib import Path

from xrouter_core.accounting.cache import Cache, MemoryCache, cache_key
from xrouter_core.config import ClassifierSettings
from xrouter_core.routing import builtin as builtin_module
from xrouter_core.routing.builtin import WEIGHTS_PATH, BuiltinClassifier, load_weights
from xrouter_core.routing.classifier import Decision, LLMClassifier
from xrouter_core.routing.extract import (
    all_user_input,
    classifier_input,
    reading_of,
    truncate_middle,
)
from xrouter_core.routing.toolloop import TaskTiers, recalled, remembered, task_of
from xrouter_core.tiers import FRONTIER_INDEX
from xrouter_core.wire.inbound import ChatRequest


@functools.lru_cache(maxsize=1)
def bundled_builtin_version() -> str:
    """A digest of the bundled weights file and of the scorer's code (its rules decide
    too), read once per process."""
    digest = hashlib.blake2b(WEIGHTS_PATH.read_bytes(), digest_size=8)
    with contextlib.suppress(OSError):  # no source shipped: the weights alone
        digest.update(Path(builtin_module.__file__).read_bytes())
    return digest.hexdigest()


def classifier_identity(
    settings: ClassifierSettings,
    classifier: LLMClassifier | None,
    builtin: BuiltinClassifier | None,
) -> str:
    """Who decides, as a short digest: what the decision cache's keys start with."""
    parts = [settings.mode, repr(settings.thresholds), settings.hybrid_llm]
    if settings.strategy != "last_user" or settings.max_chars:
        parts += [settings.strategy, str(settings.max_chars)]
    if classifier is not None:
        parts += classifier.identity()
    if builtin is not None:
        weights = (
            bundled_builtin_version()
            if builtin.weights is load_weights()
            else f"custom-{id(builtin.weights)}"  # not from a file: this process only
        )
        parts += ["builtin", weights, repr(tuple(builtin.thresholds)), str(builtin.rules)]
    joined = "\x00".join(parts).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(joined, digest_size=8).hexdigest()


class Policy:
    """Decides the tier of one request.

    `classifier` is the LLM classifier and `builtin` the in-process one; either may be
    None. With both (hybrid), the built-in one decides when the LLM gives no answer.
    With neither (CLASSIFIER_ENABLED=false), everything goes to frontier.
    """

    def __init__(
        self,
        classifier: LLMClassifier | None,
        decisions: Cache,
        decision_ttl: float = 3600.0,
        builtin: BuiltinClassifier | None = None,
        settings: ClassifierSettings | None = None,
        cache_decisions: bool = True,
    ):
        self.classifier = classifier
        self.settings = settings or ClassifierSettings()
        # DECISION_CACHE_ENABLED (the Node Xrouter's CACHE_ENABLED): false asks every time.
        self.cache_decisions = cache_decisions
        self.builtin = builtin
        self.decisions = decisions
        self.decision_ttl = decision_ttl
        self.identity = classifier_identity(self.settings, classifier, builtin)
        # Hybrid: closed-form prompts go to the built-in classifier without asking the LLM.
        self.llm_for_all = self.settings.hybrid_llm == "all" or builtin is None
        self._namespace = f"decision:{self.identity}"
        # One classifier call per question at a time: concurrent requests with the same
        # text (an agent's retries, a burst) wait for it instead of each asking again.
        self._in_flight: dict[str, asyncio.Task[Decision]] = {}
        self.tasks = TaskTiers(MemoryCache(max_entries=10_000))

    async def decide(self, request: ChatRequest, text: str | None = None) -> Decision:
        """One tier per task: a tool loop's follow-ups keep their task's tier (toolloop.py).
        `text`: input_of(request), when the caller has it already (the tagger reads it)."""
        task = task_of(request.messages, reading_of(request))
        if task is not None:
            found = await self.tasks.decision_of(task)
            if found is not None:
                return Decision(found[0], "tool_loop", score=found[1])
        decision = await self.decide_fresh(request, text)
        if task is not None:
            await self.tasks.remember(task, decision.tier, decision.score)
        return decision

    async def decide_fresh(self, request: ChatRequest, text: str | None = None) -> Decision:
        if self.classifier is None and self.builtin is None:
            return Decision(FRONTIER_INDEX, "disabled")
        if text is None:
            text = self.input_of(request)
        if not text:
            return Decision(FRONTIER_INDEX, "no_text")
        key = cache_key(self._namespace, text)
        cached = await self.decisions.get(key) if self.cache_decisions else None
        if cached is not None:
            tier, score = recalled(cached)
            return Decision(tier, "cache", score=score)
        if self.classifier is None or (
            not self.llm_for_all and builtin_module.closed_form(builtin_module.analyse(text))
        ):
            assert self.builtin is not None
            decision = self.builtin.decide(text)  # in-process and sub-millisecond: no sharing
            if self.cache_decisions:
                value = remembered(decision.tier, decision.score)
                await self.decisions.set(key, value, self.decision_ttl)
            return decision
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._classify(text, key))
            self._in_flight[key] = task
            task.add_done_callback(lambda _: self._in_flight.pop(key, None))
        # Shielded: a client that goes away does not cancel the others' decision.
        return await asyncio.shield(task)

    async def _classify(self, text: str, key: str) -> Decision:
        assert self.classifier is not None
        started = time.perf_counter()
        decision = await self.classifier.classify(text)
        if decision is None:
            # Not cached: the LLM may answer again for the next request.
            error = self.classifier.last_error or "no answer"
            if self.builtin is None:
                return Decision(FRONTIER_INDEX, "llm_failed", detail=error)
            fallback = self.builtin.decide(text)
            fallback.source = "builtin_fallback"
            fallback.detail = f"llm {error}; {fallback.detail}"
            fallback.ms = (time.perf_counter() - started) * 1000  # the LLM's wait included
            return fallback
        if self.cache_decisions:
            value = remembered(decision.tier, decision.score)
            await self.decisions.set(key, value, self.decision_ttl)
        return decision

    def input_of(self, request: ChatRequest) -> str:
        """What the classifier reads: CLASSIFIER_STRATEGY's messages, cut to
        CLASSIFIER_MAX_CHARS when that is set."""
        if self.settings.strategy == "all_user":
            text = all_user_input(request.messages)
        else:
            text = classifier_input(request.messages, reading_of(request))
        if self.settings.max_chars and text:
            text = truncate_middle(text, max(self.settings.max_chars, 8))
        return text
