"""Opt-in response caching (CACHE_RESPONSES=true): an identical deterministic request
is answered from the cache, whole or replayed as a valid SSE stream.

Deterministic means temperature 0 or unset and one choice; the key covers the model,
messages, tools and every other parameter, but not `stream`, so a streamed request
can be answered by a cached whole answer and the other way round.

An entry keeps, beside the answer, the headers that said where it came from (route,
rule, request and response tags, provider, model), so a hit carries them as the
routed answer did; an entry written before they were kept replays without them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from xrouter_core.accounting.cache import cache_key
from xrouter_core.wire import canonical as ev
from xrouter_core.wire.adapters.openai import OpenAIStreamDecoder
from xrouter_core.wire.inbound import OPENAI, ChatRequest
from xrouter_core.wire.stream import StreamTranslator

NOT_IN_KEY = frozenset({"stream", "stream_options", "user"})


def response_key(chat: ChatRequest) -> str | None:
    """The cache key of a deterministic request, or None when it must not be cached."""
    if chat.client_format != OPENAI:
        return None  # answers are stored and replayed in OpenAI's format
    body = chat.body
    if body.get("temperature") not in (None, 0, 0.0) or body.get("n") not in (None, 1):
        return None
    keyed = {k: v for k, v in body.items() if k not in NOT_IN_KEY}
    try:
        text = json.dumps(keyed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        return None
    return cache_key("response", text)


def entry(
    completion: dict[str, Any], tier: str, decision: int, headers: Mapping[str, str] = {}
) -> str:
    doc = {"completion": completion, "tier": tier, "decision": decision}
    if headers:
        doc["headers"] = dict(headers)
    return json.dumps(doc)


def read_entry(raw: bytes | str) -> tuple[dict[str, Any], str, int, dict[str, str]] | None:
    """(answer, tier, decision, origin headers), None for an entry that cannot be read."""
    try:
        doc = json.loads(raw)
        headers = doc.get("headers") or {}
        if not isinstance(headers, dict):
            headers = {}
        origin = {str(k): str(v) for k, v in headers.items()}
        return doc["completion"], str(doc["tier"]), int(doc["decision"]), origin
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class CompletionBuilder:
    """Canonical events → one `chat.completion` dict."""

    def __init__(self) -> None:
        self.id = ""
        self.model = ""
        self.text: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish = "stop"
        self.usage: ev.Usage | None = None
        self.failed = False

    def add(self, events: list[ev.StreamEvent]) -> None:
        for event in events:
            if isinstance(event, ev.Start):
                self.id, self.model = event.id, event.model
            elif isinstance(event, ev.TextDelta):
                self.text.append(event.text)
            elif isinstance(event, ev.ToolCallStart):
                self.calls[event.index] = {
                    "id": event.id,
                    "type": "function",
                    "function": {"name": event.name, "arguments": ""},
                }
            elif isinstance(event, ev.ToolCallDelta) and event.index in self.calls:
                self.calls[event.index]["function"]["arguments"] += event.arguments
            elif isinstance(event, ev.Finish):
                self.finish = event.reason
            elif isinstance(event, ev.Usage):
                self.usage = event
            elif isinstance(event, ev.StreamError):
                self.failed = True

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.text) or None}
        if self.calls:
            message["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
        doc: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": 0,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish}],
        }
        if self.usage is not None:
            doc["usage"] = ev.openai_usage_of(self.usage)
        return doc


class RecordingStream(StreamTranslator):
    """Wraps a translator and rebuilds the answer from what the client receives (always
    OpenAI chunks), so it can be cached. Used only when response caching is on."""

    def __init__(self, inner: StreamTranslator):
        self.inner = inner
        self.decoder = OpenAIStreamDecoder()
        self.builder = CompletionBuilder()

    @property
    def usage(self) -> ev.Usage | None:  # type: ignore[override]
        return self.inner.usage

    @property
    def answered(self) -> bool:
        return self.inner.answered

    def abandon(self) -> bool:
        self.on_finish = None
        self.builder.failed = True  # what the client left is not cached
        return self.inner.abandon()

    def feed(self, chunk: bytes) -> bytes:
        out = self.inner.feed(chunk)
        self.builder.add(self.decoder.feed(out))
        return out

    def finish(self) -> bytes:
        out = self.inner.finish()
        self.builder.add(self.decoder.feed(out) + self.decoder.finish())
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def completion(self) -> dict[str, Any] | None:
        if self.builder.failed:
            return None
        doc = self.builder.completion()
        usage = self.inner.usage
        if usage is not None:
            doc["usage"] = ev.openai_usage_of(usage)
        return doc
