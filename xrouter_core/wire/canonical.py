"""The canonical stream between wire formats.

Every provider's stream is decoded into these few events, and every client format
is rendered from them, so N providers and M client formats cost N + M pieces of
code. `finish_reason` values use OpenAI's vocabulary: stop, length, tool_calls,
content_filter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Start:
    id: str = ""
    model: str = ""


@dataclass(slots=True)
class TextDelta:
    text: str


@dataclass(slots=True)
class ToolCallStart:
    index: int
    id: str
    name: str


@dataclass(slots=True)
class ToolCallDelta:
    index: int
    arguments: str


@dataclass(slots=True)
class Finish:
    reason: str


@dataclass(slots=True)
class Usage:
    """Token counts of one answer. `prompt_tokens` is every prompt token, cached or not;
    `cache_read_tokens` (read from the provider's prompt cache) and `cache_write_tokens`
    (written to it, Anthropic's cache creation) are the parts of it billed at other rates."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _count(value: Any) -> int:
    try:
        return max(int(value or 0), 0)
    except (TypeError, ValueError):
        return 0


def _details(raw: dict, name: str) -> dict:
    details = raw.get(name)
    return details if isinstance(details, dict) else {}


def usage_from_openai(raw: Any) -> Usage | None:
    """The counts of an OpenAI `usage` object (a completion's or a chunk's); None when
    there is none. The one reader of that shape. Cached prompt tokens are in
    `prompt_tokens_details.cached_tokens`; `cache_write_tokens` there is OpenRouter's
    name for tokens written to a cache, which the router also uses to carry Anthropic's
    cache creation through an OpenAI-shaped answer."""
    if not isinstance(raw, dict):
        return None
    details = _details(raw, "prompt_tokens_details")
    return Usage(
        _count(raw.get("prompt_tokens")),
        _count(raw.get("completion_tokens")),
        _count(details.get("cached_tokens")),
        _count(details.get("cache_write_tokens")),
    )


def usage_from_responses(raw: Any) -> Usage | None:
    """The counts of an OpenAI Responses API `usage` object (`input_tokens`,
    `output_tokens`, `input_tokens_details.cached_tokens`); None when there is none."""
    if not isinstance(raw, dict):
        return None
    return Usage(
        _count(raw.get("input_tokens")),
        _count(raw.get("output_tokens")),
        _count(_details(raw, "input_tokens_details").get("cached_tokens")),
    )


def openai_usage(
    prompt_tokens: int,
    completion_tokens: int,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> dict[str, Any]:
    """OpenAI's `usage` object for these counts: the one writer of that shape. Cached
    counts go in `prompt_tokens_details` when there are any."""
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cache_read_tokens or cache_write_tokens:
        details = {"cached_tokens": cache_read_tokens}
        if cache_write_tokens:
            details["cache_write_tokens"] = cache_write_tokens
        usage["prompt_tokens_details"] = details
    return usage


def openai_usage_of(usage: Usage) -> dict[str, Any]:
    """`openai_usage` for a Usage."""
    return openai_usage(
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
    )


def not_a_chat_completion(doc: Any) -> str:
    """Why a parsed whole answer cannot be read as an OpenAI chat.completion ("" if it
    can): a translation renders its first choice's message, so both must be there."""
    if not isinstance(doc, dict):
        return "not a JSON object"
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices:
        return "no 'choices'"
    if not isinstance(choices[0], dict) or not isinstance(choices[0].get("message"), dict):
        return "no 'message' in its first choice"
    return ""


# Where each provider family puts its answer in a whole response: a document with none of
# them and an `error` is an error, whatever its status.
ANSWER_KEYS = ("choices", "content", "candidates", "message", "output")


def error_in_answer(raw: bytes) -> str:
    """The provider's error when a 200 answer's body is an error document instead of an
    answer ("" otherwise): `{"error": {...}}` without an answer (OpenAI-compatible
    gateways that put the status in the body), or Anthropic's `{"type": "error", ...}`."""
    if b'"error"' not in raw:
        return ""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return ""
    if not isinstance(doc, dict) or doc.get("error") in (None, "", {}):
        return ""
    if doc.get("type") != "error" and any(key in doc for key in ANSWER_KEYS):
        return ""
    error = doc["error"]
    message = error.get("message") if isinstance(error, dict) else error
    if not isinstance(message, str) or not message:
        message = json.dumps(error)[:300]
    return f"an error instead of an answer: {message[:300]}"


@dataclass(slots=True)
class StreamError:
    message: str
    type: str = "upstream_error"


StreamEvent = Start | TextDelta | ToolCallStart | ToolCallDelta | Finish | Usage | StreamError
