"""Per-flow stream translators, shaped as mitmproxy stream callables.

mitmproxy calls `flow.response.stream` with every chunk as it arrives and once
with b"" at the end; chunk boundaries are arbitrary. A translator returns the
bytes to send the client now. It runs synchronously in the proxy's event loop,
so it only parses what it must.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Protocol

from xrouter_core.wire import canonical as ev
from xrouter_core.wire.adapters.base import Adapter, StreamDecoder
from xrouter_core.wire.inbound import ANTHROPIC, RESPONSES, ChatRequest
from xrouter_core.wire.render_anthropic import AnthropicEventRenderer
from xrouter_core.wire.render_openai import OpenAIChunkRenderer
from xrouter_core.wire.responses import ResponsesEventRenderer, usage_of_response
from xrouter_core.wire.sse import SSEParser, encode_json

# The events that end a Responses stream, each carrying the whole response.
RESPONSE_ENDS = ("response.completed", "response.incomplete", "response.failed")


class Renderer(Protocol):
    """Canonical events → one client format (OpenAI chunks, Anthropic or Responses events)."""

    usage: ev.Usage | None

    def render(self, events: list[ev.StreamEvent]) -> bytes: ...

    def close(self) -> bytes: ...


class StreamTranslator:
    """The common shape: feed chunks, then finish; `usage` is known at the end."""

    usage: ev.Usage | None = None
    on_finish: Callable[[StreamTranslator], None] | None = None
    # What reached the client, for estimating tokens when the provider reported none.
    bytes_out: int = 0
    events_out: int = 0
    first_event_size: int = 0
    # Set when the upstream died mid-stream (see fail).
    error: str = ""
    # The first HEAD_BYTES the client received: the response tagger reads the answer's
    # opening from them when the stream ends (routing/tags.py).
    head: bytes = b""
    HEAD_BYTES = 2048

    def feed(self, chunk: bytes) -> bytes:
        raise NotImplementedError

    def finish(self) -> bytes:
        raise NotImplementedError

    @property
    def answered(self) -> bool:
        """Whether the answer's end (its finish, or the usage that follows it) has passed
        to the client: a client that leaves after it had the whole answer was answered."""
        return False

    def abandon(self) -> bool:
        """The client left mid-stream: whether it had its whole answer (answered, judged
        first); then what the upstream had sent is read for its usage (the provider
        bills it). Nothing more is sent and nothing is finished."""
        answered = self.answered
        self.on_finish = None
        self.flush_usage()
        return answered

    def flush_usage(self) -> None:
        """What is held back (a partial event, a decoder's counts), read for the usage."""

    def __call__(self, chunk: bytes) -> list[bytes]:
        """mitmproxy's stream callable. It returns a list because mitmproxy sends each
        item as one HTTP chunk, and an empty chunk would end a chunked body early."""
        if chunk:
            out = self.feed(chunk)
            if out:
                self._count(out)
                return [out]
            return []
        out = self.finish()
        if out:
            self._count(out)
        if self.on_finish is not None:
            callback, self.on_finish = self.on_finish, None
            callback(self)
        return [out] if out else []

    def _count(self, out: bytes) -> None:
        self.bytes_out += len(out)
        self.events_out += out.count(b"\n\n")
        if not self.first_event_size:
            self.first_event_size = out.find(b"\n\n") + 2
        if len(self.head) < self.HEAD_BYTES:
            self.head += out[: self.HEAD_BYTES]

    def content_chars_estimate(self) -> int:
        """About how many characters of content the client received, for the rare stream
        whose provider reported no usage. Cheap to keep: bytes and events are counted per
        chunk, nothing is parsed. Each event's JSON wrapper is sized from the first chunk
        (role only, ~20 bytes more than a content chunk's); the finish chunk (~12 bytes
        less than a wrapper) and `data: [DONE]` (14 bytes) carry no content."""
        if self.events_out < 3:
            return 0
        wrapper = max(self.first_event_size - 20, 0)
        rest = self.bytes_out - self.first_event_size - 14 + 12
        return max(rest - (self.events_out - 2) * wrapper, 0)

    def fail(self, message: str) -> bytes:
        """The upstream died mid-stream: the client gets one OpenAI-style error event
        and then a clean end of body (not a hang, not a cut chunked encoding)."""
        self.error = message
        out = self.error_event(message)
        if self.on_finish is not None:
            callback, self.on_finish = self.on_finish, None
            callback(self)
        return out

    def error_event(self, message: str) -> bytes:
        return encode_json(
            {
                "error": {
                    "message": message,
                    "type": "upstream_error",
                    "code": "upstream_stream_interrupted",
                }
            }
        )


# A chat completion chunk with a finish reason, or the stream's end.
FINISHED_CHUNK = re.compile(rb'"finish_reason"\s*:\s*"|data: ?\[DONE\]')


class OpenAIPassthrough(StreamTranslator):
    """OpenAI wire in and out: bytes pass untouched except the usage chunk, which is
    read for counting and dropped when the client did not ask for it."""

    def __init__(self, client_wants_usage: bool):
        self.client_wants_usage = client_wants_usage
        self.usage = None
        self._parser = SSEParser()
        self._last = b""  # the last chunk, read only if the client leaves (answered)

    def feed(self, chunk: bytes) -> bytes:
        self._last = chunk
        if not self._parser.pending and chunk.endswith(b"\n\n") and b'"usage"' not in chunk:
            return chunk  # the fast path: whole events with nothing to look at
        return self._filter(self._parser.feed(chunk))

    def finish(self) -> bytes:
        return self._filter(self._parser.flush())

    @property
    def answered(self) -> bool:
        """The usage chunk (after the finish) was read, or the last chunk holds the
        finish or `[DONE]` (the only chunks looked at here: this runs once, if at all)."""
        return self.usage is not None or bool(FINISHED_CHUNK.search(self._last))

    def flush_usage(self) -> None:
        self._filter(self._parser.flush())

    def _filter(self, events: list) -> bytes:
        out: list[bytes] = []
        for event in events:
            raw = event.raw
            if b'"usage"' in raw and b'"usage":null' not in raw and b'"usage": null' not in raw:
                try:
                    chunk = json.loads(event.data)
                except (ValueError, RecursionError):  # deep nesting too
                    chunk = None
                usage = (
                    ev.usage_from_openai(chunk.get("usage")) if isinstance(chunk, dict) else None
                )
                if usage is not None:
                    self.usage = usage
                    if not self.client_wants_usage:
                        if not chunk.get("choices"):
                            continue  # the extra chunk we asked for
                        chunk.pop("usage")
                        out.append(encode_json(chunk))
                        continue
            out.append(event.raw)
        return b"".join(out)


class ResponsesPassthrough(StreamTranslator):
    """Responses in and out (a route that speaks it): bytes pass untouched; the last
    event (response.completed, .incomplete or .failed) is read for its usage, and kept
    as `final` for the router's response store."""

    def __init__(self) -> None:
        self.usage = None
        self.final: dict | None = None
        self._events = 0
        self._parser = SSEParser()

    def feed(self, chunk: bytes) -> bytes:
        self._watch(self._parser.feed(chunk))
        return chunk

    def finish(self) -> bytes:
        self._watch(self._parser.flush())
        return b""

    @property
    def answered(self) -> bool:
        return self.final is not None

    def flush_usage(self) -> None:
        self._watch(self._parser.flush())

    def _watch(self, events: list) -> None:
        for event in events:
            self._events += 1
            if event.event not in RESPONSE_ENDS and not any(
                f'"{end}"'.encode() in event.raw for end in RESPONSE_ENDS
            ):
                continue
            try:
                data = json.loads(event.data)
            except (ValueError, RecursionError):  # deep nesting too
                continue
            if isinstance(data, dict) and data.get("type") in RESPONSE_ENDS:
                self.final = data.get("response")
                self.usage = usage_of_response(self.final)

    def error_event(self, message: str) -> bytes:
        error = {"type": "error", "code": "server_error", "message": message, "param": None}
        return encode_json({**error, "sequence_number": self._events}, "error")


class AnthropicPassthrough(StreamTranslator):
    """Anthropic Messages in and out: every byte passes untouched. Only the events that
    carry usage (message_start, message_delta) go to the provider's decoder on the side,
    as whole events, so the cost per chunk stays a substring search."""

    def __init__(self, decoder: StreamDecoder):
        self.decoder = decoder
        self.usage = None
        self._finished = False
        self._parser = SSEParser()

    def feed(self, chunk: bytes) -> bytes:
        if self._parser.pending or not chunk.endswith(b"\n\n") or b'"usage"' in chunk:
            self._read(self._parser.feed(chunk))
        return chunk

    def finish(self) -> bytes:
        self._read(self._parser.flush())
        self._take(self.decoder.finish())
        return b""

    @property
    def answered(self) -> bool:
        return self._finished  # message_delta's stop_reason (it carries the usage)

    def flush_usage(self) -> None:
        self.finish()

    def _read(self, events: list) -> None:
        for event in events:
            if b'"usage"' in event.raw:
                self._take(self.decoder.feed(event.raw))

    def _take(self, events: list[ev.StreamEvent]) -> None:
        for event in events:
            if isinstance(event, ev.Usage):
                self.usage = event
            elif isinstance(event, ev.Finish):
                self._finished = True

    def error_event(self, message: str) -> bytes:
        error = {"type": "api_error", "message": message}
        return encode_json({"type": "error", "error": error}, "error")


# The events only a chat answer's stream yields (a Start or a Usage alone is not one).
CHAT_EVENTS = (ev.TextDelta, ev.ToolCallStart, ev.ToolCallDelta, ev.Finish, ev.StreamError)


class TranslatingStream(StreamTranslator):
    """Another provider's wire in, the client's format out, through the canonical events.

    With `not_chat_error` set (by the router, naming the route), a stream that ended
    without one chat event (a 200 stream of something else: JSON without choices, text
    that is not SSE) ends in that error, in the client's format, instead of as an empty
    but successful answer."""

    not_chat_error: str = ""

    def __init__(self, decoder: StreamDecoder, renderer: Renderer):
        self.decoder = decoder
        self.renderer = renderer
        self._chat_seen = False
        self._last: list[ev.StreamEvent] = []  # read only if the client leaves (answered)

    @property
    def usage(self) -> ev.Usage | None:  # type: ignore[override]
        return self.renderer.usage

    def feed(self, chunk: bytes) -> bytes:
        return self._render(self.decoder.feed(chunk))

    def finish(self) -> bytes:
        out = self._render(self.decoder.finish())
        if self._chat_seen or not self.not_chat_error:
            return out + self.renderer.close()
        self.error = self.not_chat_error
        return out + self.error_event(self.not_chat_error)

    @property
    def answered(self) -> bool:
        """The usage (which every provider sends after the finish) was rendered, or the
        last events decoded hold the finish."""
        return self.usage is not None or any(isinstance(e, ev.Finish) for e in self._last)

    def flush_usage(self) -> None:
        self.renderer.render(self.decoder.finish())  # for the usage only: the client left

    def _render(self, events: list[ev.StreamEvent]) -> bytes:
        if not self._chat_seen and any(isinstance(e, CHAT_EVENTS) for e in events):
            self._chat_seen = True
        if events:
            self._last = events
        return self.renderer.render(events)

    @property
    def final(self) -> dict | None:
        """The whole response a Responses stream ended with (None for other formats)."""
        return getattr(self.renderer, "final", None)

    def error_event(self, message: str) -> bytes:
        """In the client's own format (an Anthropic client gets an Anthropic error event)."""
        return self.renderer.render([ev.StreamError(message)])


def translator_for(
    adapter: Adapter, chat: ChatRequest, model: str, rename: bool = False
) -> StreamTranslator:
    """The per-flow stream callable: pass-through when client and provider speak the same
    format, else decode the provider's stream and render the client's format. `rename`:
    every event must carry `model` (KEEP_REQUESTED_MODEL), so an Anthropic stream is
    re-rendered too."""
    if chat.client_format == ANTHROPIC:
        if adapter.same_format(chat) and not rename:
            return AnthropicPassthrough(adapter.stream_decoder())
        return TranslatingStream(adapter.stream_decoder(), AnthropicEventRenderer(model))
    if chat.client_format == RESPONSES and adapter.responses_wire:
        return ResponsesPassthrough()
    if chat.client_format == RESPONSES:
        renderer = ResponsesEventRenderer(model, chat.responses)
        return TranslatingStream(adapter.stream_decoder(), renderer)
    if adapter.openai_wire:
        return OpenAIPassthrough(chat.wants_usage)
    return TranslatingStream(
        adapter.stream_decoder(), OpenAIChunkRenderer(model, include_usage=chat.wants_usage)
    )


class AssemblingDecoder:
    """A provider's stream decoder with the answer put together on the side, for plugins
    that follow a stream (plugins/api.py `follow_stream`).

    Events pass on as they come, except the end: from the finish on, events are held
    until the provider's stream is over. Then `at_end(self)` is asked (it sees the text so
    far, `completion()`), and the text it returns goes out as one more delta before the
    held finish: the missing end of a truncated JSON answer, say, in whatever format the
    renderer writes."""

    def __init__(self, decoder: StreamDecoder, at_end: Callable[[AssemblingDecoder], str]):
        self.decoder = decoder
        self.at_end = at_end
        self.id = ""
        self.model = ""
        self.text: list[str] = []
        self.calls: dict[int, dict] = {}
        self.reason: str | None = None
        self.usage: ev.Usage | None = None
        self._held: list[ev.StreamEvent] | None = None

    def feed(self, chunk: bytes) -> list[ev.StreamEvent]:
        return self._take(self.decoder.feed(chunk))

    def finish(self) -> list[ev.StreamEvent]:
        out = self._take(self.decoder.finish())
        extra = self.at_end(self)
        held, self._held = self._held or [], None
        if extra:
            self.text.append(extra)
            out.append(ev.TextDelta(extra))
        return out + held

    def _take(self, events: list[ev.StreamEvent]) -> list[ev.StreamEvent]:
        out: list[ev.StreamEvent] = []
        for event in events:
            if isinstance(event, ev.TextDelta):
                self.text.append(event.text)
            elif isinstance(event, ev.ToolCallStart):
                self.calls[event.index] = {"id": event.id, "name": event.name, "arguments": ""}
            elif isinstance(event, ev.ToolCallDelta):
                call = self.calls.setdefault(event.index, {"id": "", "name": "", "arguments": ""})
                call["arguments"] += event.arguments
            elif isinstance(event, ev.Finish):
                self.reason = event.reason
                if self._held is None:
                    self._held = []
            elif isinstance(event, ev.Usage):
                self.usage = event
            elif isinstance(event, ev.Start):
                self.id = self.id or event.id
                self.model = self.model or event.model
            if self._held is not None:
                self._held.append(event)
            else:
                out.append(event)
        return out

    def completion(self) -> dict:
        """The answer so far as an OpenAI `chat.completion`."""
        message: dict = {"role": "assistant", "content": "".join(self.text)}
        if self.calls:
            message["tool_calls"] = [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
                for _, call in sorted(self.calls.items())
            ]
        completion: dict = {
            "id": self.id,
            "object": "chat.completion",
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self.reason}],
        }
        if self.usage is not None:
            completion["usage"] = ev.openai_usage_of(self.usage)
        return completion


def can_assemble(adapter: Adapter, chat: ChatRequest) -> bool:
    """Whether a stream can be decoded into canonical events and assembled: all but a
    Responses client's stream from a route that speaks Responses (passed back as it is)."""
    return not (chat.client_format == RESPONSES and adapter.responses_wire)


def assembling_translator(
    adapter: Adapter, chat: ChatRequest, model: str, at_end: Callable[[AssemblingDecoder], str]
) -> TranslatingStream:
    """The stream decoded, assembled (AssemblingDecoder) and rendered in the client's
    format, also where the formats match and the bytes would otherwise pass through."""
    decoder = AssemblingDecoder(adapter.stream_decoder(), at_end)
    renderer: Renderer
    if chat.client_format == ANTHROPIC:
        renderer = AnthropicEventRenderer(model)
    elif chat.client_format == RESPONSES:
        renderer = ResponsesEventRenderer(model, chat.responses)
    else:
        renderer = OpenAIChunkRenderer(model, include_usage=chat.wants_usage)
    return TranslatingStream(decoder, renderer)
