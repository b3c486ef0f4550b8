"""The canonical stream between wire formats.

Every provider's stream is decoded into these few events, and every client format
is rendered from them, so N providers and M client formats cost N + M pieces of
code. `finish_reason` values use OpenAI's vocabulary: stop, length, tool_calls,
content_filter.
"""

from __future__ import annotations

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
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def usage_from_openai(raw: Any) -> Usage | None:
    """The counts of an OpenAI `usage` object (a completion's or a chunk's); None when
    there is none. The one reader of that shape."""
    if not isinstance(raw, dict):
        return None
    return Usage(int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0))


def openai_usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's `usage` object for these counts: the one writer of that shape."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@dataclass(slots=True)
class StreamError:
    message: str
    type: str = "upstream_error"


StreamEvent = Start | TextDelta | ToolCallStart | ToolCallDelta | Finish | Usage | StreamError
