"""Incremental Server-Sent Events parsing and encoding, with no provider knowledge.

Chunks arrive with arbitrary boundaries, so the parser keeps the partial event
until its blank-line terminator arrives.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from xrouter_core.wire.jsontext import compact_json


@dataclass(slots=True)
class Event:
    data: str
    event: str = ""
    raw: bytes = b""


class SSEParser:
    """Feed bytes, get complete events; `raw` keeps the exact bytes for pass-through."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[Event]:
        if not chunk:
            return []
        buffer = self._buffer + chunk if self._buffer else chunk
        held = b""
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):
                # It may be half of a CRLF split across chunks: decide with the next chunk.
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events: list[Event] = []
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            block = buffer[start : end + 2]
            start = end + 2
            event = parse_block(block)
            if event is not None:
                events.append(event)
        self._buffer = buffer[start:] + held
        return events

    @property
    def pending(self) -> bool:
        """Is part of an event waiting for the rest of it?"""
        return bool(self._buffer)

    def flush(self) -> list[Event]:
        """The stream ended: a last event without its blank line still counts."""
        rest, self._buffer = self._buffer.replace(b"\r", b"\n"), b""
        if rest.strip():
            event = parse_block(rest + b"\n\n")
            return [event] if event is not None else []
        return []


def parse_block(block: bytes) -> Event | None:
    data_lines: list[str] = []
    name = ""
    for line in block.decode("utf-8", "replace").split("\n"):
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            data_lines.append(value)
        elif field == "event":
            name = value
    if not data_lines and not name:
        return None
    return Event(data="\n".join(data_lines), event=name, raw=block)


def encode(data: str, event: str = "") -> bytes:
    """One event: its name when it has one, a `data:` line per line of data, a blank line."""
    head = f"event: {event}\n" if event else ""
    body = "".join(f"data: {line}\n" for line in data.split("\n"))
    return (head + body + "\n").encode()


def encode_json(obj: Any, event: str = "") -> bytes:
    """One event whose data is `obj` as compact JSON: a single data line, since JSON text
    holds no line break (the fast form of `encode`, for every rendered chunk)."""
    data = compact_json(obj)
    if event:
        return f"event: {event}\ndata: {data}\n\n".encode()
    return b"data: " + data.encode() + b"\n\n"


def iter_events(body: bytes) -> Iterator[Event]:
    """All events of a complete SSE body."""
    parser = SSEParser()
    yield from parser.feed(body)
    yield from parser.flush()
