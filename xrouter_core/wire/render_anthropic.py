"""Client format out for Anthropic clients (`POST /v1/messages`): canonical events as a
Messages event stream, and whole OpenAI completions or errors as Messages bodies."""

from __future__ import annotations

import json
import uuid
from typing import Any

from xrouter_core.wire import canonical as ev
from xrouter_core.wire.jsontext import compact_json
from xrouter_core.wire.sse import encode_json

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_usage(usage: ev.Usage) -> dict[str, int]:
    """Anthropic's `usage` object for these counts: its `input_tokens` leaves out the
    cached ones, which have fields of their own (sent when there are any)."""
    cached = usage.cache_read_tokens + usage.cache_write_tokens
    out = {
        "input_tokens": max(usage.prompt_tokens - cached, 0),
        "output_tokens": usage.completion_tokens,
    }
    if cached:
        out["cache_creation_input_tokens"] = usage.cache_write_tokens
        out["cache_read_input_tokens"] = usage.cache_read_tokens
    return out


def stop_reason(finish_reason: str | None) -> str:
    return STOP_REASONS.get(finish_reason or "stop", "end_turn")


def message_id(source: str = "") -> str:
    return source if source.startswith("msg_") else "msg_" + uuid.uuid4().hex[:24]


class AnthropicEventRenderer:
    """Canonical events → Anthropic Messages SSE (message_start, content blocks,
    message_delta with stop_reason and usage, message_stop)."""

    def __init__(self, model: str = ""):
        self.model = model
        self.usage: ev.Usage | None = None
        self._started = False
        self._done = False
        self._reason: str | None = None
        self._open: int | None = None  # index of the open content block
        self._blocks = 0
        self._open_kind = ""
        self._tool_blocks: dict[int, int] = {}

    def _event(self, name: str, data: dict[str, Any]) -> bytes:
        return encode_json({"type": name, **data}, name)

    def _start(self, out: list[bytes], event: ev.Start | None = None) -> None:
        if self._started:
            return
        self._started = True
        if event is not None and event.model and not self.model:
            self.model = event.model
        message = {
            "id": message_id(event.id if event else ""),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": anthropic_usage(ev.Usage()),
        }
        out.append(self._event("message_start", {"message": message}))

    def _close_block(self, out: list[bytes]) -> None:
        if self._open is not None:
            out.append(self._event("content_block_stop", {"index": self._open}))
            self._open = None
            self._open_kind = ""

    def _open_block(self, out: list[bytes], block: dict[str, Any]) -> int:
        self._close_block(out)
        index = self._blocks
        self._blocks += 1
        self._open = index
        self._open_kind = block["type"]
        out.append(self._event("content_block_start", {"index": index, "content_block": block}))
        return index

    def render(self, events: list[ev.StreamEvent]) -> bytes:
        out: list[bytes] = []
        for event in events:
            if isinstance(event, ev.Start):
                self._start(out, event)
            elif isinstance(event, ev.TextDelta):
                self._start(out)
                if self._open_kind != "text":
                    self._open_block(out, {"type": "text", "text": ""})
                delta = {"type": "text_delta", "text": event.text}
                out.append(
                    self._event("content_block_delta", {"index": self._open, "delta": delta})
                )
            elif isinstance(event, ev.ToolCallStart):
                self._start(out)
                block = {
                    "type": "tool_use",
                    "id": event.id or "toolu_" + uuid.uuid4().hex[:24],
                    "name": event.name,
                    "input": {},
                }
                self._tool_blocks[event.index] = self._open_block(out, block)
            elif isinstance(event, ev.ToolCallDelta):
                self._start(out)
                index = self._tool_blocks.get(event.index)
                if index is None:  # arguments before the call's start: open it now
                    index = self._open_block(
                        out,
                        {
                            "type": "tool_use",
                            "id": "toolu_" + uuid.uuid4().hex[:24],
                            "name": "",
                            "input": {},
                        },
                    )
                    self._tool_blocks[event.index] = index
                delta = {"type": "input_json_delta", "partial_json": event.arguments}
                out.append(self._event("content_block_delta", {"index": index, "delta": delta}))
            elif isinstance(event, ev.Finish):
                self._reason = event.reason
            elif isinstance(event, ev.Usage):
                self.usage = event
            elif isinstance(event, ev.StreamError):
                self._start(out)
                error = {"type": "api_error", "message": event.message}
                out.append(self._event("error", {"error": error}))
        return b"".join(out)

    def close(self) -> bytes:
        if self._done:
            return b""
        self._done = True
        out: list[bytes] = []
        self._start(out)
        self._close_block(out)
        out.append(
            self._event(
                "message_delta",
                {
                    "delta": {"stop_reason": stop_reason(self._reason), "stop_sequence": None},
                    "usage": anthropic_usage(self.usage or ev.Usage()),
                },
            )
        )
        out.append(self._event("message_stop", {}))
        return b"".join(out)


def anthropic_message(completion: dict[str, Any], model: str = "") -> dict[str, Any]:
    """A whole OpenAI chat.completion as an Anthropic Messages response."""
    choices = completion.get("choices") or [{}]
    message = choices[0].get("message") or {}
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError:
            arguments = {"_raw": function.get("arguments")}
        content.append(
            {
                "type": "tool_use",
                "id": str(call.get("id") or "toolu_" + uuid.uuid4().hex[:24]),
                "name": str(function.get("name") or ""),
                "input": arguments if isinstance(arguments, dict) else {"_value": arguments},
            }
        )
    usage = ev.usage_from_openai(completion.get("usage")) or ev.Usage()
    return {
        "id": message_id(str(completion.get("id") or "")),
        "type": "message",
        "role": "assistant",
        "model": str(completion.get("model") or model),
        "content": content,
        "stop_reason": stop_reason(choices[0].get("finish_reason")),
        "stop_sequence": None,
        "usage": anthropic_usage(usage),
    }


def anthropic_error(status: int, openai_error_body: bytes) -> bytes:
    """An OpenAI-style error body re-shaped as Anthropic's `{"type": "error", ...}`."""
    try:
        message = json.loads(openai_error_body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = openai_error_body.decode("utf-8", "replace")[:500] or "error"
    kind = ERROR_TYPES.get(status, "api_error")
    return compact_json({"type": "error", "error": {"type": kind, "message": message}}).encode()
