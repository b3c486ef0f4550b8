"""A fast fake OpenAI-compatible provider for the benchmarks, run in its own process.

It must cost as little as possible so the figures measure the proxy in front of it,
so it is a bare asyncio HTTP/1.1 server (keep-alive, Content-Length or chunked SSE),
not an HTTP framework. It speaks OpenAI's chat-completion format, streamed or not, and
on `POST /v1/messages` Anthropic's Messages format (a whole message, or the documented
event stream: message_start, content_block_start/delta/stop, message_delta with usage,
message_stop), checking the x-api-key and anthropic-version headers as the API does. It
doubles as a classifier: a request for the model `bench-classifier` is answered
with a digit first and then keeps "generating" for `--classifier-tail-ms`, so a
client that reads the whole answer pays for the tail and one that stops at the digit
does not.

    python -m bench.fake_provider [--stream-chunks 20] [--chunk-interval-ms 5]

prints `port=<n>` on stdout once it listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

CLASSIFIER_MODEL = "bench-classifier"


def completion(text: str, model: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20},
        },
        separators=(",", ":"),
    ).encode()


def chunk(model: str, delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
    doc = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": []
        if usage
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage:
        doc["usage"] = usage
    return b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"


def anthropic_message(text: str, model: str) -> bytes:
    """A whole Messages answer, as https://docs.anthropic.com/en/api/messages documents it."""
    return json.dumps(
        {
            "id": "msg_bench",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 12,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 8,
            },
        },
        separators=(",", ":"),
    ).encode()


def anthropic_event(kind: str, doc: dict) -> bytes:
    """One Messages stream event: its name on the `event:` line and in the data's `type`."""
    return b"event: %s\ndata: %s\n\n" % (
        kind.encode(),
        json.dumps({"type": kind, **doc}, separators=(",", ":")).encode(),
    )


def anthropic_error(status: int, kind: str, message: str) -> bytes:
    return json.dumps(
        {"type": "error", "error": {"type": kind, "message": message}}, separators=(",", ":")
    ).encode()


class Provider:
    def __init__(self, stream_chunks: int, chunk_interval: float, classifier_tail: float):
        self.stream_chunks = stream_chunks
        self.chunk_interval = chunk_interval
        self.classifier_tail = classifier_tail
        self.digit = "1"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                close = headers.get("connection", "").lower() == "close"
                body = await reader.readexactly(length) if length else b""
                await self.answer(method, path, body, writer, headers)
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def answer(
        self, method: str, path: str, raw: bytes, writer, headers: dict[str, str]
    ) -> None:
        if method == "POST" and path == "/v1/messages":
            await self.messages(raw, writer, headers)
            return
        if method == "GET":
            self.whole(writer, 200, b'{"object":"list","data":[]}')
            return
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            self.whole(
                writer,
                400,
                b'{"error":{"message":"bad json","type":"invalid_request_error","code":null}}',
            )
            return
        model = body.get("model") or "bench-model"
        if model == CLASSIFIER_MODEL:
            await self.classify(body, writer)
            return
        if not body.get("stream"):
            self.whole(writer, 200, completion("Hello from the bench provider!", model))
            return
        options = body.get("stream_options") or {}
        self.start_stream(writer)
        self.send_chunk(writer, chunk(model, {"role": "assistant", "content": ""}))
        await writer.drain()
        for index in range(self.stream_chunks):
            await asyncio.sleep(self.chunk_interval)
            self.send_chunk(writer, chunk(model, {"content": f"tok{index} "}))
            await writer.drain()
        self.send_chunk(writer, chunk(model, {}, "stop"))
        if options.get("include_usage"):
            usage = {
                "prompt_tokens": 12,
                "completion_tokens": self.stream_chunks,
                "total_tokens": 12 + self.stream_chunks,
            }
            self.send_chunk(writer, chunk(model, {}, usage=usage))
        self.send_chunk(writer, b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def messages(self, raw: bytes, writer, headers: dict[str, str]) -> None:
        """Anthropic's Messages API: whole, or the event stream with the same pacing as
        the chat stream (one text delta per `chunk_interval`), so the two compare."""
        if not headers.get("x-api-key"):
            error = anthropic_error(401, "authentication_error", "x-api-key header is required")
            self.whole(writer, 401, error)
            return
        if not headers.get("anthropic-version"):
            error = anthropic_error(
                400, "invalid_request_error", "anthropic-version header is required"
            )
            self.whole(writer, 400, error)
            return
        try:
            body = json.loads(raw)
            model = body["model"]
            if not body["messages"] or not body["max_tokens"]:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            error = anthropic_error(
                400, "invalid_request_error", "model, messages and max_tokens are required"
            )
            self.whole(writer, 400, error)
            return
        if not body.get("stream"):
            self.whole(writer, 200, anthropic_message("Hello from the bench provider!", model))
            return
        self.start_stream(writer)
        start = json.loads(anthropic_message("", model))
        start["content"] = []
        start["stop_reason"] = None
        start["usage"]["output_tokens"] = 1
        self.send_chunk(writer, anthropic_event("message_start", {"message": start}))
        block = {"index": 0, "content_block": {"type": "text", "text": ""}}
        self.send_chunk(writer, anthropic_event("content_block_start", block))
        await writer.drain()
        for index in range(self.stream_chunks):
            await asyncio.sleep(self.chunk_interval)
            delta = {"index": 0, "delta": {"type": "text_delta", "text": f"tok{index} "}}
            self.send_chunk(writer, anthropic_event("content_block_delta", delta))
            await writer.drain()
        self.send_chunk(writer, anthropic_event("content_block_stop", {"index": 0}))
        end = {
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": self.stream_chunks},
        }
        self.send_chunk(writer, anthropic_event("message_delta", end))
        self.send_chunk(writer, anthropic_event("message_stop", {}))
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def classify(self, body: dict, writer) -> None:
        """The digit first, then a tail of tokens that takes `classifier_tail` to generate."""
        steps = 10
        if not body.get("stream"):
            await asyncio.sleep(self.classifier_tail)  # the whole answer is generated first
            self.whole(writer, 200, completion(f"{self.digit} because", CLASSIFIER_MODEL))
            return
        self.start_stream(writer)
        self.send_chunk(writer, chunk(CLASSIFIER_MODEL, {"role": "assistant", "content": ""}))
        self.send_chunk(writer, chunk(CLASSIFIER_MODEL, {"content": self.digit}))
        # A client that stops at the digit closes the connection: the tail then fails
        # to write and serve() ends quietly.
        await writer.drain()
        for _ in range(steps):
            await asyncio.sleep(self.classifier_tail / steps)
            self.send_chunk(writer, chunk(CLASSIFIER_MODEL, {"content": " because"}))
            await writer.drain()
        self.send_chunk(writer, chunk(CLASSIFIER_MODEL, {}, "stop"))
        self.send_chunk(writer, b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    @staticmethod
    def whole(writer, status: int, data: bytes) -> None:
        writer.write(
            b"HTTP/1.1 %d OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (status, len(data), data)
        )

    @staticmethod
    def start_stream(writer) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
        )

    @staticmethod
    def send_chunk(writer, data: bytes) -> None:
        writer.write(b"%x\r\n%s\r\n" % (len(data), data))


async def main_async(args: argparse.Namespace) -> None:
    provider = Provider(
        args.stream_chunks, args.chunk_interval_ms / 1000, args.classifier_tail_ms / 1000
    )
    server = await asyncio.start_server(provider.serve, "127.0.0.1", args.port, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"port={port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stream-chunks", type=int, default=20)
    parser.add_argument("--chunk-interval-ms", type=float, default=5.0)
    parser.add_argument("--classifier-tail-ms", type=float, default=200.0)
    args = parser.parse_args(argv)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is optional
        runner = asyncio.run
    try:
        runner(main_async(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
