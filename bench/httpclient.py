"""A minimal HTTP/1.1 keep-alive client on raw asyncio streams, for the load generator.

httpx costs the client several hundred microseconds of CPU per request; on a two-core
machine that shares the CPU with the proxy under test, that would measure the client.
This client does the least that is correct for the answers the benchmark gets:
Content-Length or chunked bodies, keep-alive, and a timestamp for every chunk so the
stream figures (time to first chunk, gaps between chunks) need no extra parsing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class Answer:
    status: int
    body: bytes
    started: float
    ended: float
    # perf_counter() when each body chunk carrying data arrived (chunked answers only).
    chunk_times: list[float] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.ended - self.started


class Connection:
    """One persistent connection; reopened transparently when the server closes it."""

    def __init__(self, host: str, port: int):
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, limit=1 << 20
        )

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()
            self.writer = self.reader = None

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Answer:
        if self.writer is None:
            await self._open()
        assert self.reader is not None and self.writer is not None
        head = [f"{method} {path} HTTP/1.1", f"host: {self.host}:{self.port}"]
        head += [f"{name}: {value}" for name, value in (headers or {}).items()]
        head.append(f"content-length: {len(body)}")
        payload = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        started = time.perf_counter()
        self.writer.write(payload)
        try:
            return await self._read(started)
        except (asyncio.IncompleteReadError, ConnectionError):
            await self.close()
            raise

    async def _read(self, started: float) -> Answer:
        reader = self.reader
        assert reader is not None
        raw_head = await reader.readuntil(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length: int | None = None
        chunked = close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            value = value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value:
                chunked = True
            elif name == "connection" and value == "close":
                close = True
        times: list[float] = []
        if chunked:
            parts = []
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")  # no trailers are expected
                    break
                data = await reader.readexactly(size + 2)
                times.append(time.perf_counter())
                parts.append(data[:-2])
            body = b"".join(parts)
        elif length is not None:
            body = await reader.readexactly(length) if length else b""
        else:
            body = await reader.read()
            close = True
        ended = time.perf_counter()
        if close:
            await self.close()
        return Answer(status, body, started, ended, times)
