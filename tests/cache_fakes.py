"""Fake providers with a prompt cache that bills like the real ones, for the session
tests and the replay benchmark (bench/session_replay.py).

Anthropic (docs: "Prompt caching"): the prompt is tools, then system, then messages; a
block marked `cache_control` is a breakpoint. A request reads the longest prefix, ending
on a block boundary up to its last breakpoint, that an earlier request wrote within the
lifetime (5 min, or 1 h with `"ttl": "1h"`; a hit refreshes it), writes the rest up to
its last breakpoint (when that prefix reaches the model's minimum), and reports
`cache_read_input_tokens`, `cache_creation_input_tokens` and `input_tokens` (the rest).

OpenAI (docs: "Prompt caching"): automatic for prompts of 1024 tokens or more; the
longest cached prefix (messages and tools, on message boundaries) is reported in
`usage.prompt_tokens_details.cached_tokens`, in steps of 128 tokens, and is part of
`prompt_tokens`. Every prompt's prefixes are cached for 5 minutes.

Tokens are counted as a quarter of the JSON characters (no tokenizer files); the
`cache_control` marks themselves are not content.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fakes import (
    TOOL_ARGS,
    TOOL_NAME,
    FakeAnthropicProvider,
    FakeServer,
    Recorded,
    Reply,
    anthropic_error,
    anthropic_message,
    openai_completion,
)

MIN_TOKENS = 1024
ANTHROPIC_TTL = 300.0
ANTHROPIC_LONG_TTL = 3600.0
OPENAI_TTL = 300.0


def tokens(text: str) -> int:
    return (len(text) + 3) // 4


def canonical(block: Any) -> str:
    """A block as the cache sees it: its content without the cache mark."""
    if isinstance(block, dict):
        block = {k: v for k, v in block.items() if k != "cache_control"}
    return json.dumps(block, sort_keys=True, separators=(",", ":"))


@dataclass
class Billed:
    """What one request was billed: the tokens by kind, as the fake reported them."""

    model: str
    uncached: int
    read: int
    written: int
    output: int

    @property
    def prompt(self) -> int:
        return self.uncached + self.read + self.written


@dataclass
class PromptCache:
    """Prefix digests → expiry, per model (a cache belongs to one model)."""

    entries: dict[tuple[str, str], float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hit(self, model: str, digest: str, now: float, ttl: float) -> bool:
        expires = self.entries.get((model, digest))
        if expires is None or expires < now:
            return False
        self.entries[(model, digest)] = now + ttl  # a hit refreshes the lifetime
        return True

    def put(self, model: str, digest: str, now: float, ttl: float) -> None:
        current = self.entries.get((model, digest), 0.0)
        self.entries[(model, digest)] = max(current, now + ttl)


def boundaries(blocks: list[tuple[str, bool, float]]) -> list[tuple[int, str, bool, float]]:
    """(tokens so far, digest so far, marked, mark's ttl) after each block."""
    digest = hashlib.blake2b(digest_size=16)
    total = 0
    out = []
    for text, marked, ttl in blocks:
        digest.update(text.encode())
        digest.update(b"\x00")
        total += tokens(text)
        out.append((total, digest.copy().hexdigest(), marked, ttl))
    return out


def anthropic_blocks(body: dict) -> list[tuple[str, bool, float]]:
    """The prompt in cache order, block by block: (text, marked, ttl)."""

    def entry(block: Any) -> tuple[str, bool, float]:
        mark = block.get("cache_control") if isinstance(block, dict) else None
        ttl = (
            ANTHROPIC_LONG_TTL
            if isinstance(mark, dict) and mark.get("ttl") == "1h"
            else ANTHROPIC_TTL
        )
        return canonical(block), bool(mark), ttl

    blocks = [entry(tool) for tool in body.get("tools") or []]
    system = body.get("system")
    if isinstance(system, str):
        blocks.append((canonical(system), False, ANTHROPIC_TTL))
    else:
        blocks += [entry(b) for b in system or []]
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            blocks.append((canonical({"role": message["role"], "text": content}), False, 0.0))
            continue
        for index, block in enumerate(content or []):
            text, marked, ttl = entry(block)
            if index == 0:
                text = message["role"] + text
            blocks.append((text, marked, ttl))
    return blocks


class CachingAnthropicProvider(FakeAnthropicProvider):
    """FakeAnthropicProvider with Anthropic's prompt cache and billing, non-streamed
    answers of `output_tokens` tokens (a tool call while tools are offered and the last
    message is no tool result, as the plain fake does)."""

    def __init__(self, name: str, host: str = "127.0.0.1", output_tokens: int = 400):
        self.prompt_cache = PromptCache()
        self.billed: list[Billed] = []
        self.output_tokens = output_tokens
        # A person's message holding this is answered at once, without a tool call.
        self.answer_directly = ""
        super().__init__(name, host=host)

    def answer(self, request: Recorded) -> Reply:
        if request.path != "/v1/messages" or (request.json or {}).get("stream"):
            return super().answer(request)
        reply = super().answer(request)
        if reply.status != 200:
            return reply
        body = request.json
        usage = self.bill(body)
        message = reply.body
        assert isinstance(message, dict)
        last = body["messages"][-1]["content"]
        if self.answer_directly and self.answer_directly in json.dumps(last):
            message = anthropic_message(self.text, body["model"], False)
        message["usage"] = {
            "input_tokens": usage.uncached,
            "cache_creation_input_tokens": usage.written,
            "cache_read_input_tokens": usage.read,
            "output_tokens": usage.output,
        }
        return Reply(body=message)

    def bill(self, body: dict) -> Billed:
        model = body["model"]
        marks = boundaries(anthropic_blocks(body))
        total = marks[-1][0] if marks else 0
        last_mark = max((i for i, m in enumerate(marks) if m[2]), default=-1)
        now = time.time()
        read = 0
        with self.prompt_cache.lock:
            for i in range(last_mark, -1, -1):
                count, digest, _, _ = marks[i]
                ttl = max((m[3] for m in marks[: i + 1] if m[2]), default=ANTHROPIC_TTL)
                if self.prompt_cache.hit(model, digest, now, ttl):
                    read = count
                    break
            written = 0
            if last_mark >= 0 and marks[last_mark][0] >= MIN_TOKENS:
                written = marks[last_mark][0] - read
                for count, digest, marked, ttl in marks[: last_mark + 1]:
                    if marked and count >= MIN_TOKENS:
                        self.prompt_cache.put(model, digest, now, ttl)
        billed = Billed(model, total - read - written, read, written, self.output_tokens)
        self.billed.append(billed)
        return billed


class CachingOpenAIProvider(FakeServer):
    """Chat completions with OpenAI's automatic prompt caching, non-streamed."""

    def __init__(self, name: str, host: str = "127.0.0.1", output_tokens: int = 400):
        self.name = name
        self.prompt_cache = PromptCache()
        self.billed: list[Billed] = []
        self.output_tokens = output_tokens
        super().__init__(self.answer, host=host)

    def answer(self, request: Recorded) -> Reply:
        if not request.path.endswith("/chat/completions"):
            return anthropic_error(404, "not_found", request.path)
        body = request.json or {}
        model = body.get("model") or "fake-model"
        blocks = [(canonical(t), False, 0.0) for t in body.get("tools") or []]
        blocks += [(canonical(m), False, 0.0) for m in body.get("messages") or []]
        marks = boundaries(blocks)
        total = marks[-1][0] if marks else 0
        now = time.time()
        cached = 0
        with self.prompt_cache.lock:
            if total >= MIN_TOKENS:
                for count, digest, _, _ in reversed(marks):
                    if self.prompt_cache.hit(model, digest, now, OPENAI_TTL):
                        cached = count // 128 * 128
                        break
                for count, digest, _, _ in marks:
                    if count >= MIN_TOKENS:
                        self.prompt_cache.put(model, digest, now, OPENAI_TTL)
        self.billed.append(Billed(model, total - cached, cached, 0, self.output_tokens))
        last = (body.get("messages") or [{}])[-1]
        calls = None
        if body.get("tools") and last.get("role") != "tool":
            function = {"name": TOOL_NAME, "arguments": json.dumps(TOOL_ARGS)}
            calls = [{"id": f"call_{len(self.billed)}", "type": "function", "function": function}]
        text = "" if calls else f"Hello from {self.name}"
        return Reply(
            body=openai_completion(text, model, total, self.output_tokens, calls, None, cached)
        )
