"""Client formats out: canonical events and whole completions rendered for OpenAI clients."""

from __future__ import annotations

import time
import uuid
from typing import Any

from xrouter_core.wire import canonical as ev
from xrouter_core.wire.sse import encode, encode_json

# The event that ends an OpenAI chunk stream.
DONE = encode("[DONE]")


class OpenAIChunkRenderer:
    """Canonical events → `chat.completion.chunk` SSE, with stable tool-call indexes."""

    def __init__(self, model: str = "", include_usage: bool = False):
        self.id = "chatcmpl-" + uuid.uuid4().hex[:24]
        self.model = model
        self.created = int(time.time())
        self.include_usage = include_usage
        self.usage: ev.Usage | None = None
        self._started = False
        self._finished = False
        self._done = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return encode_json(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )

    def _ensure_started(self, out: list[bytes]) -> None:
        if not self._started:
            self._started = True
            out.append(self._chunk({"role": "assistant", "content": ""}))

    def render(self, events: list[ev.StreamEvent]) -> bytes:
        out: list[bytes] = []
        for event in events:
            if isinstance(event, ev.Start):
                if event.model and not self.model:
                    self.model = event.model
                self._ensure_started(out)
            elif isinstance(event, ev.TextDelta):
                self._ensure_started(out)
                out.append(self._chunk({"content": event.text}))
            elif isinstance(event, ev.ToolCallStart):
                self._ensure_started(out)
                call = {
                    "index": event.index,
                    "id": event.id,
                    "type": "function",
                    "function": {"name": event.name, "arguments": ""},
                }
                out.append(self._chunk({"tool_calls": [call]}))
            elif isinstance(event, ev.ToolCallDelta):
                self._ensure_started(out)
                call = {"index": event.index, "function": {"arguments": event.arguments}}
                out.append(self._chunk({"tool_calls": [call]}))
            elif isinstance(event, ev.Finish):
                self._ensure_started(out)
                if not self._finished:
                    self._finished = True
                    out.append(self._chunk({}, event.reason))
            elif isinstance(event, ev.Usage):
                self.usage = event
            elif isinstance(event, ev.StreamError):
                self._ensure_started(out)
                out.append(
                    encode_json(
                        {"error": {"message": event.message, "type": event.type, "code": None}}
                    )
                )
        return b"".join(out)

    def close(self) -> bytes:
        """End of stream: finish reason if none came, the usage chunk if asked, [DONE]."""
        if self._done:
            return b""
        self._done = True
        out: list[bytes] = []
        self._ensure_started(out)
        if not self._finished:
            self._finished = True
            out.append(self._chunk({}, "stop"))
        if self.include_usage and self.usage is not None:
            out.append(
                encode_json(
                    {
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "choices": [],
                        "usage": ev.openai_usage_of(self.usage),
                    }
                )
            )
        out.append(DONE)
        return b"".join(out)


def completion_events(completion: dict[str, Any]) -> list[ev.StreamEvent]:
    """A whole OpenAI chat.completion as the canonical events a stream of it would carry."""
    events: list[ev.StreamEvent] = [
        ev.Start(id=str(completion.get("id", "")), model=str(completion.get("model", "")))
    ]
    choices = completion.get("choices") or [{}]
    message = choices[0].get("message") or {}
    if message.get("content"):
        events.append(ev.TextDelta(message["content"]))
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        events.append(
            ev.ToolCallStart(index, str(call.get("id", "")), str(function.get("name", "")))
        )
        if function.get("arguments"):
            events.append(ev.ToolCallDelta(index, function["arguments"]))
    events.append(ev.Finish(choices[0].get("finish_reason") or "stop"))
    usage = ev.usage_from_openai(completion.get("usage"))
    if usage is not None:
        events.append(usage)
    return events


def completion_as_sse(completion: dict[str, Any], include_usage: bool) -> bytes:
    """Replay a whole completion as a valid chunk stream (fallback answers, cache hits)."""
    renderer = OpenAIChunkRenderer(
        model=str(completion.get("model", "")), include_usage=include_usage
    )
    return renderer.render(completion_events(completion)) + renderer.close()
