"""Fake HTTP servers on 127.0.0.1 for the tests: classifiers and providers that speak the
providers' real wire formats, record what they received, and can stream, stall or fail.

A server is driven by a handler function `handler(request) -> Reply`; a Reply may carry a
whole body, a list of chunks (streamed with chunked encoding, with optional pauses or
threading.Events to wait on between them), or an action such as resetting the connection.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Pause:
    """Between chunks: wait this long, or until the event is set (whichever comes first)."""

    seconds: float = 0.0
    event: threading.Event | None = None


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | dict | list | None = None
    chunks: Iterable[bytes | str | Pause] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # "reset": close the socket without answering; "hang": never answer (until shutdown);
    # "reset_after_chunks": send the chunks, then reset instead of ending the body.
    action: str = ""


Handler = Callable[[Recorded], Reply]


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # load tests open many connections at once


class FakeServer:
    """A threaded HTTP/1.1 server on 127.0.0.1:<free port> (or another loopback address:
    a route to 127.0.0.2 is not one the router counts as local, so it gets priced)."""

    def __init__(self, handler: Handler, port: int = 0, host: str = "127.0.0.1"):
        self.handler = handler
        self.requests: list[Recorded] = []
        # Set when a streamed reply could not be written: the client closed the connection.
        self.client_closed = threading.Event()
        self.stopping = threading.Event()
        owner = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: with Nagle's algorithm the body
            # waits for the client's delayed ACK, 40 ms per whole answer.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                recorded = Recorded(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                owner.requests.append(recorded)
                reply = owner.handler(recorded)
                owner._send(self, reply)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.httpd = _Server((host, port), RequestHandler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def _reset(rh: BaseHTTPRequestHandler) -> None:
        """Close with SO_LINGER 0: the peer sees a TCP reset, as when a provider dies."""
        rh.connection.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
        rh.connection.close()
        rh.close_connection = True

    def _send(self, rh: BaseHTTPRequestHandler, reply: Reply) -> None:
        if reply.action == "reset":
            self._reset(rh)
            return
        if reply.action == "hang":
            self.stopping.wait(60)
            rh.close_connection = True
            return
        rh.send_response(reply.status)
        headers = {k.lower(): v for k, v in reply.headers.items()}
        if reply.chunks is None:
            body = reply.body
            if isinstance(body, dict | list):
                body = json.dumps(body)
                headers.setdefault("content-type", "application/json")
            data = body.encode() if isinstance(body, str) else (body or b"")
            headers.setdefault("content-length", str(len(data)))
            for name, value in headers.items():
                rh.send_header(name, value)
            rh.end_headers()
            rh.wfile.write(data)
            rh.wfile.flush()
            return
        headers.setdefault("content-type", "text/event-stream")
        headers["transfer-encoding"] = "chunked"
        headers["connection"] = "close"
        for name, value in headers.items():
            rh.send_header(name, value)
        rh.end_headers()
        rh.close_connection = True
        try:
            rh.wfile.flush()
            for chunk in reply.chunks:
                if isinstance(chunk, Pause):
                    if chunk.event is not None:
                        chunk.event.wait(chunk.seconds or 30)
                    else:
                        time.sleep(chunk.seconds)
                    continue
                data = chunk.encode() if isinstance(chunk, str) else chunk
                if not data:
                    continue
                rh.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                rh.wfile.flush()
            if reply.action == "reset_after_chunks":
                self._reset(rh)
                return
            rh.wfile.write(b"0\r\n\r\n")
            rh.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.client_closed.set()

    def close(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


# ---- OpenAI wire format -----------------------------------------------------------


def openai_completion(
    text: str,
    model: str = "fake-model",
    prompt_tokens: int = 11,
    completion_tokens: int = 7,
    tool_calls: list[dict] | None = None,
    finish_reason: str | None = None,
    cached_tokens: int | None = None,
) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = tool_calls
        message["content"] = text or None
    return {
        "id": "chatcmpl-fake123",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
            }
        ],
        "usage": openai_usage(prompt_tokens, completion_tokens, cached_tokens),
    }


def openai_usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int | None) -> dict:
    """OpenAI's usage object; with `cached_tokens`, its prompt_tokens_details as OpenAI
    documents it (the cached tokens are part of prompt_tokens)."""
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens, "audio_tokens": 0}
        usage["completion_tokens_details"] = {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    return usage


def openai_chunk(
    delta: dict,
    model: str = "fake-model",
    finish_reason: str | None = None,
    with_usage_field: bool = False,
) -> str:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-fake123",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if with_usage_field:
        chunk["usage"] = None
    return "data: " + json.dumps(chunk) + "\n\n"


def usage_chunk(
    model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int | None = None
) -> str:
    """The extra last chunk OpenAI sends with stream_options.include_usage."""
    return (
        "data: "
        + json.dumps(
            {
                "id": "chatcmpl-fake123",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": model,
                "choices": [],
                "usage": openai_usage(prompt_tokens, completion_tokens, cached_tokens),
            }
        )
        + "\n\n"
    )


def openai_stream(
    pieces: list[str],
    model: str = "fake-model",
    include_usage: bool = True,
    prompt_tokens: int = 11,
    completion_tokens: int = 7,
    pause: Pause | None = None,
    cached_tokens: int | None = None,
) -> list[str | Pause]:
    """The chunks OpenAI sends for a streamed answer, as the API documents them."""
    chunks: list[str | Pause] = [
        openai_chunk({"role": "assistant", "content": ""}, model, with_usage_field=include_usage)
    ]
    for index, piece in enumerate(pieces):
        chunks.append(openai_chunk({"content": piece}, model, with_usage_field=include_usage))
        if index == 0 and pause is not None:
            chunks.append(pause)
    chunks.append(openai_chunk({}, model, finish_reason="stop", with_usage_field=include_usage))
    if include_usage:
        chunks.append(usage_chunk(model, prompt_tokens, completion_tokens, cached_tokens))
    chunks.append("data: [DONE]\n\n")
    return chunks


class FakeOpenAIProvider(FakeServer):
    """Answers chat completions in OpenAI's format, streamed or not; `answer` names the
    provider in the text so tests can see which route served a request."""

    def __init__(
        self, name: str, pieces: list[str] | None = None, port: int = 0, host: str = "127.0.0.1"
    ):
        self.name = name
        self.pieces = pieces or [f"Hello from {name}", "!"]
        self.override: Handler | None = None
        # Set to report prompt_tokens_details.cached_tokens (of the 11 prompt tokens).
        self.cached_tokens: int | None = None
        super().__init__(self.route, port=port, host=host)

    def route(self, request: Recorded) -> Reply:
        if self.override is not None:
            return self.override(request)
        body = request.json or {}
        model = body.get("model") or "fake-model"
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return Reply(
                chunks=openai_stream(
                    self.pieces, model, include_usage, cached_tokens=self.cached_tokens
                )
            )
        return Reply(
            body=openai_completion("".join(self.pieces), model, cached_tokens=self.cached_tokens)
        )


class FakeClassifier(FakeServer):
    """An OpenAI-compatible classifier that answers `digit`; it can stream more tokens
    after the digit (to prove the router stops reading), be slow, fail or say garbage."""

    def __init__(self, digit: str = "1", **kwargs: Any):
        self.digit = digit
        self.by_text: dict[str, str] = {}
        self.tail_seconds = 0.0
        self.delay_seconds = 0.0
        self.failure: Reply | None = None
        super().__init__(self.answer)

    def answer(self, request: Recorded) -> Reply:
        if self.failure is not None:
            return self.failure
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        body = request.json or {}
        text = body["messages"][-1]["content"]
        digit = next((d for key, d in self.by_text.items() if key in text), self.digit)
        if not body.get("stream"):
            return Reply(body=openai_completion(digit, "classifier"))
        chunks: list[str | Pause] = [
            openai_chunk({"role": "assistant", "content": ""}, "classifier"),
            openai_chunk({"content": digit}, "classifier"),
        ]
        if self.tail_seconds:
            # Keep "generating" for a while: a router that reads to the end waits for this.
            steps = 20
            for _ in range(steps):
                chunks.append(Pause(self.tail_seconds / steps))
                chunks.append(openai_chunk({"content": " because"}, "classifier"))
        chunks.append(openai_chunk({}, "classifier", finish_reason="stop"))
        chunks.append("data: [DONE]\n\n")
        return Reply(chunks=chunks)

    def texts(self) -> list[str]:
        return [r.json["messages"][-1]["content"] for r in self.requests if r.json]


# ---- shared for the provider fakes below --------------------------------------------

TOOL_NAME = "get_weather"
TOOL_ARGS = {"city": "Paris", "unit": "celsius"}
PROMPT_TOKENS = 11
COMPLETION_TOKENS = 7


def sse(data: dict | str, event: str = "") -> str:
    head = f"event: {event}\n" if event else ""
    payload = data if isinstance(data, str) else json.dumps(data)
    return f"{head}data: {payload}\n\n"


def split_text(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def wants_tool_call(tools: Any, last_is_tool_result: bool) -> bool:
    """The fakes call a tool when tools are offered and no tool result came back yet."""
    return bool(tools) and not last_is_tool_result


class ProviderFake(FakeServer):
    """Common shape of the provider fakes: validate the request like the provider does,
    answer in its format; `override` replaces the answer for fault tests."""

    def __init__(self, name: str, host: str = "127.0.0.1"):
        self.name = name
        self.text = f"Hello from {name}!"
        self.override: Handler | None = None
        super().__init__(self.route, host=host)

    def route(self, request: Recorded) -> Reply:
        if self.override is not None:
            return self.override(request)
        return self.answer(request)

    def answer(self, request: Recorded) -> Reply:
        raise NotImplementedError


# ---- Anthropic Messages (docs: "Messages" and "Streaming Messages") -------------------

ANTHROPIC_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


def anthropic_error(status: int, kind: str, message: str) -> Reply:
    return Reply(status, {"type": "error", "error": {"type": kind, "message": message}})


def anthropic_usage(output_tokens: int, cache: tuple[int, int] = (0, 0)) -> dict:
    """Messages usage: input_tokens leaves out the tokens read from the prompt cache
    (cache_read_input_tokens) and written to it (cache_creation_input_tokens)."""
    read, write = cache
    return {
        "input_tokens": PROMPT_TOKENS,
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": read,
        "output_tokens": output_tokens,
    }


def anthropic_message(text: str, model: str, tool: bool, cache: tuple[int, int] = (0, 0)) -> dict:
    content: list[dict] = []
    if text:
        content.append({"type": "text", "text": text})
    if tool:
        content.append(
            {
                "type": "tool_use",
                "id": "toolu_01A09q90qw90lq917835lq9",
                "name": TOOL_NAME,
                "input": TOOL_ARGS,
            }
        )
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if tool else "end_turn",
        "stop_sequence": None,
        "usage": anthropic_usage(COMPLETION_TOKENS, cache),
    }


def anthropic_stream(
    text: str,
    model: str = "claude-fake",
    tool: bool = False,
    cache: tuple[int, int] = (0, 0),
    cumulative_delta: bool = False,
) -> list[str]:
    """The event flow of the Messages streaming docs: message_start, ping, per block
    content_block_start/delta/stop, message_delta (stop_reason, usage), message_stop.
    message_start's usage has the prompt counts; `cumulative_delta`: message_delta's usage
    repeats them too (the API's cumulative usage), else it has only output_tokens."""
    events = [
        sse(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": model,
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": anthropic_usage(1, cache),
                },
            },
            "message_start",
        ),
        sse({"type": "ping"}, "ping"),
    ]
    index = 0
    if text:
        events.append(
            sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            )
        )
        for piece in split_text(text, 6):
            events.append(
                sse(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                    "content_block_delta",
                )
            )
        events.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
        index = 1
    if tool:
        events.append(
            sse(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {
                        "type": "tool_use",
                        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                        "name": TOOL_NAME,
                        "input": {},
                    },
                },
                "content_block_start",
            )
        )
        for piece in ["", *split_text(json.dumps(TOOL_ARGS), 7)]:
            events.append(
                sse(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                    "content_block_delta",
                )
            )
        events.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
    events.append(
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use" if tool else "end_turn", "stop_sequence": None},
                "usage": anthropic_usage(COMPLETION_TOKENS, cache)
                if cumulative_delta
                else {"output_tokens": COMPLETION_TOKENS},
            },
            "message_delta",
        )
    )
    events.append(sse({"type": "message_stop"}, "message_stop"))
    return events


class FakeAnthropicProvider(ProviderFake):
    """POST /v1/messages with x-api-key and anthropic-version, checked as the API does."""

    # Prompt-cache tokens reported (read, written), on top of the 11 input tokens.
    cache: tuple[int, int] = (0, 0)
    cumulative_delta = False

    def answer(self, request: Recorded) -> Reply:
        if request.path == "/v1/messages/count_tokens" and request.headers.get("x-api-key"):
            # Token counting: a fixed count per message, so a test can tell it from an estimate.
            return Reply(body={"input_tokens": 1000 + len((request.json or {})["messages"])})
        if request.path != "/v1/messages":
            return anthropic_error(404, "not_found_error", f"Not found: {request.path}")
        if not request.headers.get("x-api-key"):
            return anthropic_error(401, "authentication_error", "x-api-key header is required")
        if "authorization" in request.headers:
            return anthropic_error(400, "invalid_request_error", "unexpected authorization header")
        if not request.headers.get("anthropic-version"):
            return anthropic_error(
                400, "invalid_request_error", "anthropic-version header is required"
            )
        body = request.json or {}
        problem = self.check(body, request.headers.get("anthropic-beta", ""))
        if problem:
            return anthropic_error(400, "invalid_request_error", problem)
        last = body["messages"][-1]
        last_is_result = isinstance(last["content"], list) and any(
            b.get("type") == "tool_result" for b in last["content"]
        )
        tool = wants_tool_call(body.get("tools"), last_is_result)
        text = "" if tool else self.text
        if body.get("stream"):
            return Reply(
                chunks=anthropic_stream(
                    text, body["model"], tool, self.cache, self.cumulative_delta
                )
            )
        return Reply(body=anthropic_message(text, body["model"], tool, self.cache))

    @staticmethod
    def check(body: dict, betas: str = "") -> str:
        """The API's checks, with the documented fields Claude Code 2.1 sends; its betas
        for a system message inside the conversation (per-turn-control, or
        mid-conversation-system) let `system` messages in there."""
        roles = ("user", "assistant")
        if "per-turn-control" in betas or "mid-conversation-system" in betas:
            roles += ("system",)
        if not isinstance(body.get("max_tokens"), int):
            return "max_tokens: Field required"
        if not body.get("model"):
            return "model: Field required"
        messages = body.get("messages") or []
        if not messages or messages[0].get("role") != "user":
            return "messages: first message must use the user role"
        tool_ids: set[str] = set()
        for i, message in enumerate(messages):
            if message.get("role") not in roles:
                return f"messages.{i}.role: Input should be 'user' or 'assistant'"
            if message["role"] == "system":
                continue
            if i and messages[i - 1]["role"] == message["role"]:
                return f"messages.{i}: roles must alternate between user and assistant"
            blocks = message["content"] if isinstance(message["content"], list) else []
            for block in blocks:
                if block.get("type") == "tool_use":
                    if not ANTHROPIC_ID.match(block.get("id", "")):
                        return f"messages.{i}: tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'"
                    tool_ids.add(block["id"])
                elif (
                    block.get("type") == "tool_result" and block.get("tool_use_id") not in tool_ids
                ):
                    return f"messages.{i}: unexpected tool_use_id found in tool_result blocks"
                elif block.get("type") == "image" and block["source"]["type"] not in (
                    "base64",
                    "url",
                ):
                    return f"messages.{i}: bad image source"
        for tool in body.get("tools") or []:
            if (
                set(tool)
                - {
                    "name",
                    "description",
                    "input_schema",
                    "cache_control",
                    "defer_loading",
                    "strict",
                }
                or "input_schema" not in tool
            ):
                return "tools: each tool needs name, description and input_schema"
        if "tool_choice" in body and body["tool_choice"].get("type") not in (
            "auto",
            "any",
            "tool",
            "none",
        ):
            return "tool_choice.type is invalid"
        for name in ("temperature", "top_p"):
            if name in body and not 0 <= body[name] <= 1:
                return f"{name}: must be between 0 and 1"
        allowed = {
            "model",
            "max_tokens",
            "messages",
            "system",
            "temperature",
            "top_p",
            "top_k",
            "stop_sequences",
            "stream",
            "tools",
            "tool_choice",
            "metadata",
            "thinking",
            "service_tier",
            "output_config",
            "container",
            "context_management",
            "mcp_servers",
        }
        if "cache-diagnosis" in betas:
            allowed.add("diagnostics")  # Claude Code sends it to api.anthropic.com itself
        extra = set(body) - allowed
        return f"{sorted(extra)[0]}: Extra inputs are not permitted" if extra else ""


# ---- Gemini (docs: generateContent, streamGenerateContent?alt=sse) --------------------

GEMINI_PATH = re.compile(
    r"^/v1beta/models/([\w.-]+):(generateContent|streamGenerateContent)(\?alt=sse)?$"
)


# Gemini 3 signs function calls and wants the signature back on the first call of a turn.
GEMINI_SIGNATURE = "CiQBjz1rX+Lm/9xQ2w8e3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0bAw=="
GEMINI_SKIP_SIGNATURE = "skip_thought_signature_validator"


def gemini_error(status: int, reason: str, message: str) -> Reply:
    return Reply(status, {"error": {"code": status, "message": message, "status": reason}})


def gemini_chunk(parts: list[dict], finish: str | None, usage: dict | None, model: str) -> dict:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    doc: dict[str, Any] = {"candidates": [candidate]}
    if usage:
        doc["usageMetadata"] = usage
    doc["modelVersion"] = model
    doc["responseId"] = "mAitaLmkHPPlz7IPvtfUqQ4"
    return doc


def gemini_usage(completion: int, cached: int = 0) -> dict:
    """usageMetadata; context-cached tokens are part of promptTokenCount, reported in
    cachedContentTokenCount (absent when there are none)."""
    usage: dict[str, Any] = {
        "promptTokenCount": PROMPT_TOKENS,
        "candidatesTokenCount": completion,
        "totalTokenCount": PROMPT_TOKENS + completion,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": PROMPT_TOKENS}],
    }
    if cached:
        usage["cachedContentTokenCount"] = cached
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
    return usage


def gemini_stream(
    text: str, model: str = "gemini-fake", tool: bool = False, cached: int = 0
) -> list[str]:
    """alt=sse: each event a whole GenerateContentResponse; usageMetadata is cumulative
    and the last one carries finishReason and the final counts."""
    events: list[str] = []
    pieces = split_text(text, 8) if text else []
    for n, piece in enumerate(pieces):
        last = n == len(pieces) - 1 and not tool
        usage = gemini_usage(COMPLETION_TOKENS if last else n + 1, cached)
        events.append(
            "data: "
            + json.dumps(gemini_chunk([{"text": piece}], "STOP" if last else None, usage, model))
            + "\r\n\r\n"
        )
    if tool:
        part = {
            "functionCall": {"name": TOOL_NAME, "args": TOOL_ARGS},
            "thoughtSignature": GEMINI_SIGNATURE,
        }
        events.append(
            "data: "
            + json.dumps(
                gemini_chunk([part], "STOP", gemini_usage(COMPLETION_TOKENS, cached), model)
            )
            + "\r\n\r\n"
        )
    return events


class FakeGeminiProvider(ProviderFake):
    # Context-cached prompt tokens reported (of the 11), 0 for none.
    cached = 0

    def answer(self, request: Recorded) -> Reply:
        match = GEMINI_PATH.match(request.path)
        if not match:
            return gemini_error(404, "NOT_FOUND", f"Not found: {request.path}")
        if not request.headers.get("x-goog-api-key"):
            return gemini_error(
                403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."
            )
        streaming = match.group(2) == "streamGenerateContent"
        if streaming and not match.group(3):
            return gemini_error(400, "INVALID_ARGUMENT", "this fake only streams with alt=sse")
        body = request.json or {}
        problem = self.check(body)
        if problem:
            return gemini_error(400, "INVALID_ARGUMENT", problem)
        last = body["contents"][-1]["parts"]
        tool = wants_tool_call(body.get("tools"), any("functionResponse" in p for p in last))
        model = match.group(1)
        text = "" if tool else self.text
        if streaming:
            return Reply(chunks=gemini_stream(text, model, tool, self.cached))
        parts = (
            [
                {
                    "functionCall": {"name": TOOL_NAME, "args": TOOL_ARGS},
                    "thoughtSignature": GEMINI_SIGNATURE,
                }
            ]
            if tool
            else [{"text": text}]
        )
        usage = gemini_usage(COMPLETION_TOKENS, self.cached)
        return Reply(body=gemini_chunk(parts, "STOP", usage, model))

    @staticmethod
    def check(body: dict) -> str:
        allowed = {
            "contents",
            "systemInstruction",
            "generationConfig",
            "tools",
            "toolConfig",
            "safetySettings",
        }
        extra = set(body) - allowed
        if extra:
            return f'Invalid JSON payload received. Unknown name "{sorted(extra)[0]}"'
        contents = body.get("contents") or []
        if not contents:
            return "contents is not specified"
        for i, content in enumerate(contents):
            if content.get("role") not in ("user", "model"):
                return f"contents[{i}].role must be user or model"
            for part in content.get("parts") or []:
                if not set(part) & {
                    "text",
                    "inlineData",
                    "fileData",
                    "functionCall",
                    "functionResponse",
                }:
                    return f"contents[{i}]: unknown part {sorted(part)}"
            calls = [p for p in content.get("parts") or [] if "functionCall" in p]
            signed = (GEMINI_SIGNATURE, GEMINI_SKIP_SIGNATURE)
            if calls and calls[0].get("thoughtSignature") not in signed:
                return f"Function call is missing a thought_signature in functionCall parts, position {i}"
        config = body.get("generationConfig") or {}
        extra = set(config) - {
            "temperature",
            "topP",
            "topK",
            "maxOutputTokens",
            "stopSequences",
            "responseMimeType",
            "candidateCount",
        }
        if extra:
            return f'Unknown name "{sorted(extra)[0]}" at generation_config'
        for tool in body.get("tools") or []:
            for declaration in tool.get("functionDeclarations") or []:
                if "additionalProperties" in json.dumps(declaration.get("parameters", {})):
                    return 'Unknown name "additionalProperties" at function_declarations.parameters'
        return ""


# ---- Cohere v2 chat (docs: Chat, "Streaming" and "Streaming for tool use") -----------


def cohere_error(status: int, message: str) -> Reply:
    return Reply(status, {"id": "err-1", "message": message})


def cohere_usage() -> dict:
    return {
        "billed_units": {"input_tokens": PROMPT_TOKENS, "output_tokens": COMPLETION_TOKENS},
        "tokens": {"input_tokens": PROMPT_TOKENS + 200, "output_tokens": COMPLETION_TOKENS},
    }


def cohere_stream(text: str, tool: bool = False) -> list[str]:
    """message-start, content-start/delta/end or tool-plan-delta and tool-call-start/delta/end,
    then message-end with finish_reason and usage; SSE events named by their type."""
    events = [
        sse(
            {
                "id": "a8fc192e-4bb8-4e15-ae1f-a174e8b02ae8",
                "type": "message-start",
                "delta": {
                    "message": {
                        "role": "assistant",
                        "content": [],
                        "tool_plan": "",
                        "tool_calls": [],
                        "citations": [],
                    }
                },
            },
            "message-start",
        )
    ]
    if text:
        events.append(
            sse(
                {
                    "type": "content-start",
                    "index": 0,
                    "delta": {"message": {"content": {"type": "text", "text": ""}}},
                },
                "content-start",
            )
        )
        for piece in split_text(text, 5):
            events.append(
                sse(
                    {
                        "type": "content-delta",
                        "index": 0,
                        "delta": {"message": {"content": {"text": piece}}},
                        "logprobs": None,
                    },
                    "content-delta",
                )
            )
        events.append(sse({"type": "content-end", "index": 0}, "content-end"))
    if tool:
        for piece in ["I will", " check the weather."]:
            events.append(
                sse(
                    {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": piece}}},
                    "tool-plan-delta",
                )
            )
        events.append(
            sse(
                {
                    "type": "tool-call-start",
                    "index": 0,
                    "delta": {
                        "message": {
                            "tool_calls": {
                                "id": "get_weather_p1t92w7gfgq7",
                                "type": "function",
                                "function": {"name": TOOL_NAME, "arguments": ""},
                            }
                        }
                    },
                },
                "tool-call-start",
            )
        )
        for piece in split_text(json.dumps(TOOL_ARGS, indent=4), 6):
            events.append(
                sse(
                    {
                        "type": "tool-call-delta",
                        "index": 0,
                        "delta": {"message": {"tool_calls": {"function": {"arguments": piece}}}},
                    },
                    "tool-call-delta",
                )
            )
        events.append(sse({"type": "tool-call-end", "index": 0}, "tool-call-end"))
    events.append(
        sse(
            {
                "type": "message-end",
                "delta": {
                    "finish_reason": "TOOL_CALL" if tool else "COMPLETE",
                    "usage": cohere_usage(),
                },
            },
            "message-end",
        )
    )
    return events


class FakeCohereProvider(ProviderFake):
    def answer(self, request: Recorded) -> Reply:
        if request.path != "/v2/chat":
            return cohere_error(404, f"Not found: {request.path}")
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return cohere_error(401, "no api key supplied")
        body = request.json or {}
        problem = self.check(body)
        if problem:
            return cohere_error(400, problem)
        tool = wants_tool_call(body.get("tools"), body["messages"][-1]["role"] == "tool")
        text = "" if tool else self.text
        if body.get("stream"):
            return Reply(chunks=cohere_stream(text, tool))
        message: dict[str, Any] = {"role": "assistant"}
        if tool:
            message["tool_plan"] = "I will check the weather."
            message["tool_calls"] = [
                {
                    "id": "get_weather_p1t92w7gfgq7",
                    "type": "function",
                    "function": {"name": TOOL_NAME, "arguments": json.dumps(TOOL_ARGS)},
                }
            ]
        else:
            message["content"] = [{"type": "text", "text": text}]
        return Reply(
            body={
                "id": "c14c80c3-18eb-4519-9460-6c92edd8cfb4",
                "finish_reason": "TOOL_CALL" if tool else "COMPLETE",
                "message": message,
                "usage": cohere_usage(),
            }
        )

    @staticmethod
    def check(body: dict) -> str:
        if not body.get("model"):
            return "invalid request: model must be specified"
        allowed = {
            "model",
            "messages",
            "stream",
            "tools",
            "tool_choice",
            "temperature",
            "p",
            "k",
            "max_tokens",
            "stop_sequences",
            "seed",
            "frequency_penalty",
            "presence_penalty",
            "response_format",
            "documents",
            "citation_options",
            "safety_mode",
            "strict_tools",
        }
        extra = set(body) - allowed
        if extra:
            return f"invalid request: unknown field {sorted(extra)[0]}"
        for i, message in enumerate(body.get("messages") or []):
            if message.get("role") not in ("system", "user", "assistant", "tool"):
                return f"invalid request: messages[{i}].role"
            if message["role"] == "tool" and not message.get("tool_call_id"):
                return f"invalid request: messages[{i}].tool_call_id is required"
        for tool in body.get("tools") or []:
            if tool.get("type") != "function" or "name" not in tool.get("function", {}):
                return "invalid request: tools must be of type function"
        if body.get("tool_choice") not in (None, "REQUIRED", "NONE"):
            return "invalid request: tool_choice must be REQUIRED or NONE"
        return ""


# ---- Azure OpenAI (REST reference: deployments/{id}/chat/completions?api-version) ------

AZURE_PATH = re.compile(r"^/openai/deployments/([\w.-]+)/chat/completions\?api-version=([\w.-]+)$")


def openai_tool_stream(model: str, include_usage: bool) -> list[str]:
    """A streamed OpenAI answer that calls a tool: id and name first, arguments in pieces."""
    first = {
        "index": 0,
        "id": "call_abc123",
        "type": "function",
        "function": {"name": TOOL_NAME, "arguments": ""},
    }
    chunks = [openai_chunk({"role": "assistant", "content": None, "tool_calls": [first]}, model)]
    for piece in split_text(json.dumps(TOOL_ARGS), 5):
        chunks.append(
            openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, model)
        )
    chunks.append(openai_chunk({}, model, finish_reason="tool_calls"))
    if include_usage:
        usage = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        }
        chunks.append(
            sse(
                {
                    "id": "chatcmpl-fake123",
                    "object": "chat.completion.chunk",
                    "created": 1_700_000_000,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
            )
        )
    chunks.append("data: [DONE]\n\n")
    return chunks


class FakeAzureProvider(ProviderFake):
    def answer(self, request: Recorded) -> Reply:
        match = AZURE_PATH.match(request.path)
        if not match:
            return Reply(404, {"error": {"code": "404", "message": "Resource not found"}})
        if not request.headers.get("api-key") or "authorization" in request.headers:
            return Reply(
                401,
                {
                    "error": {
                        "code": "401",
                        "message": "Access denied due to invalid subscription key.",
                    }
                },
            )
        body = request.json or {}
        if "model" in body:
            return Reply(
                400,
                {
                    "error": {
                        "code": "BadRequest",
                        "message": "model must not be sent to a deployment",
                    }
                },
            )
        return openai_reply(body, match.group(1), self.text, azure=True)


def openai_reply(body: dict, model: str, text: str, azure: bool = False) -> Reply:
    """An OpenAI-wire answer that calls the tool when tools are offered (see wants_tool_call)."""
    tool = wants_tool_call(body.get("tools"), body["messages"][-1].get("role") == "tool")
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    if body.get("stream"):
        # Azure's first chunk carries only prompt_filter_results and no choices.
        head = (
            [
                sse(
                    {
                        "choices": [],
                        "created": 0,
                        "id": "",
                        "model": "",
                        "object": "",
                        "prompt_filter_results": [
                            {"prompt_index": 0, "content_filter_results": {}}
                        ],
                    }
                )
            ]
            if azure
            else []
        )
        if tool:
            return Reply(chunks=[*head, *openai_tool_stream(model, include_usage)])
        return Reply(chunks=[*head, *openai_stream([text[:6], text[6:]], model, include_usage)])
    if tool:
        call = {
            "id": "call_abc123",
            "type": "function",
            "function": {"name": TOOL_NAME, "arguments": json.dumps(TOOL_ARGS)},
        }
        return Reply(body=openai_completion("", model, tool_calls=[call]))
    return Reply(body=openai_completion(text, model))


# ---- Model lists and Ollama pulls (what the setup wizard asks providers) ----------------
# Formats as the providers document them: OpenAI GET /v1/models, Anthropic GET /v1/models
# (x-api-key, has_more/last_id paging), Gemini GET /v1beta/models (x-goog-api-key,
# nextPageToken), Cohere GET /v1/models (Bearer, next_page_token), Ollama GET /api/tags and
# POST /api/pull (one JSON object per line).


def openai_models(ids: list[str]) -> dict:
    return {
        "object": "list",
        "data": [
            {"id": i, "object": "model", "created": 1_700_000_000, "owned_by": "fake"} for i in ids
        ],
    }


def anthropic_models_page(ids: list[str], has_more: bool) -> dict:
    return {
        "data": [
            {"type": "model", "id": i, "display_name": i, "created_at": "2025-02-19T00:00:00Z"}
            for i in ids
        ],
        "has_more": has_more,
        "first_id": ids[0] if ids else None,
        "last_id": ids[-1] if ids else None,
    }


def gemini_models_page(models: list[tuple[str, list[str]]], next_token: str = "") -> dict:
    page: dict[str, Any] = {
        "models": [
            {
                "name": f"models/{name}",
                "version": "001",
                "displayName": name,
                "inputTokenLimit": 1_048_576,
                "outputTokenLimit": 8192,
                "supportedGenerationMethods": methods,
            }
            for name, methods in models
        ]
    }
    if next_token:
        page["nextPageToken"] = next_token
    return page


def cohere_models_page(names: list[str], next_token: str = "") -> dict:
    page: dict[str, Any] = {
        "models": [
            {
                "name": n,
                "endpoints": ["chat", "generate"],
                "finetuned": False,
                "context_length": 128000,
                "tokenizer_url": "https://example.invalid/tokenizer.json",
                "default_endpoints": [],
            }
            for n in names
        ]
    }
    if next_token:
        page["next_page_token"] = next_token
    return page


def ollama_tags(names: list[str]) -> dict:
    return {
        "models": [
            {
                "name": n,
                "model": n,
                "modified_at": "2025-01-01T12:00:00.000000000Z",
                "size": 397_821_319,
                "digest": "a" * 64,
                "details": {
                    "parent_model": "",
                    "format": "gguf",
                    "family": "qwen2",
                    "families": ["qwen2"],
                    "parameter_size": "494.03M",
                    "quantization_level": "Q4_K_M",
                },
            }
            for n in names
        ]
    }


def ollama_pull_lines(layers: dict[str, int], steps: int = 4) -> list[str]:
    """The status lines of a successful pull: manifest, downloads per layer, success."""
    lines = [{"status": "pulling manifest"}]
    for digest, total in layers.items():
        lines.append({"status": f"pulling {digest[7:19]}", "digest": digest, "total": total})
        for step in range(1, steps + 1):
            lines.append(
                {
                    "status": f"pulling {digest[7:19]}",
                    "digest": digest,
                    "total": total,
                    "completed": total * step // steps,
                }
            )
    lines += [
        {"status": "verifying sha256 digest"},
        {"status": "writing manifest"},
        {"status": "success"},
    ]
    return [json.dumps(line) + "\n" for line in lines]


class FakeModelProvider(FakeOpenAIProvider):
    """A provider that lists its models in `kind`'s format (paged by `page_size`) and, for
    OpenAI-wire kinds, also answers chat. `key` is required the way the provider checks it;
    `fail` (a Reply) makes the list endpoint fail. kind="ollama" also serves /api/pull."""

    def __init__(
        self,
        kind: str,
        models: list[str],
        key: str = "",
        page_size: int = 0,
        fail: Reply | None = None,
        pullable: dict[str, dict[str, int]] | None = None,
    ):
        self.kind = kind
        self.models = list(models)
        self.key = key
        self.page_size = page_size or len(models) or 1
        self.fail = fail
        self.pullable = pullable or {}
        super().__init__(f"{kind}-provider")

    def route(self, request: Recorded) -> Reply:
        path, _, query = request.path.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        if request.method == "GET" and path in ("/v1/models", "/v1beta/models", "/api/tags"):
            if self.fail is not None:
                return self.fail
            denied = self._check_key(request.headers)
            if self.kind == "ollama" and path == "/v1/models":
                return Reply(body=openai_models(self.models))  # Ollama's OpenAI-compatible list
            return denied or self._list(params)
        if request.method == "POST" and path == "/api/pull" and self.kind == "ollama":
            return self._pull(request.json or {})
        return super().route(request)

    def _check_key(self, headers: dict[str, str]) -> Reply | None:
        if not self.key:
            return None
        if self.kind == "anthropic":
            ok = headers.get("x-api-key") == self.key and bool(headers.get("anthropic-version"))
            error = {
                "type": "error",
                "error": {"type": "authentication_error", "message": "invalid x-api-key"},
            }
        elif self.kind == "gemini":
            ok = headers.get("x-goog-api-key") == self.key
            error = {
                "error": {
                    "code": 400,
                    "message": "API key not valid.",
                    "status": "INVALID_ARGUMENT",
                }
            }
        else:
            ok = headers.get("authorization") == f"Bearer {self.key}"
            error = {
                "error": {"message": "Incorrect API key provided.", "type": "invalid_request_error"}
            }
        return None if ok else Reply(status=401, body=error)

    def _page(self, start: int) -> tuple[list[str], int]:
        end = start + self.page_size
        return self.models[start:end], end

    def _list(self, params: dict[str, str]) -> Reply:
        if self.kind == "openai":
            return Reply(body=openai_models(self.models))
        if self.kind == "ollama":
            return Reply(body=ollama_tags(self.models))
        if self.kind == "anthropic":
            after = params.get("after_id")
            start = self.models.index(after) + 1 if after else 0
            page, end = self._page(start)
            return Reply(body=anthropic_models_page(page, end < len(self.models)))
        start = int(params.get("pageToken") or params.get("page_token") or 0)
        page, end = self._page(start)
        token = str(end) if end < len(self.models) else ""
        if self.kind == "gemini":
            listed = [
                (n, ["embedContent"] if "embedding" in n else ["generateContent", "countTokens"])
                for n in page
            ]
            return Reply(body=gemini_models_page(listed, token))
        if params.get("endpoint") != "chat":
            page = page + ["embed-english-v3.0"]
        return Reply(body=cohere_models_page(page, token))

    def _pull(self, body: dict) -> Reply:
        name = body.get("model") or body.get("name") or ""
        layers = self.pullable.get(name)
        if layers is None:
            return Reply(
                chunks=[
                    json.dumps({"status": "pulling manifest"}) + "\n",
                    json.dumps({"error": "pull model manifest: file does not exist"}) + "\n",
                ],
                headers={"content-type": "application/x-ndjson"},
            )
        self.models.append(name)
        return Reply(
            chunks=ollama_pull_lines(layers), headers={"content-type": "application/x-ndjson"}
        )


# ---- OpenAI Responses API (docs: "Responses" and "Streaming responses") ---------------


def responses_usage(cached: int = 0) -> dict:
    return {
        "input_tokens": PROMPT_TOKENS,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": COMPLETION_TOKENS,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
    }


def responses_message_item(text: str, item_id: str = "msg_fake1") -> dict:
    return {
        "id": item_id,
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def responses_call_item(name: str, arguments: dict, call_id: str = "call_resp1") -> dict:
    return {
        "id": "fc_fake1",
        "type": "function_call",
        "status": "completed",
        "call_id": call_id,
        "name": name,
        "arguments": json.dumps(arguments),
    }


def responses_object(model: str, output: list[dict], status: str = "completed") -> dict:
    done = status == "completed"
    return {
        "id": "resp_fake1",
        "object": "response",
        "created_at": 1_700_000_000,
        "status": status,
        "model": model,
        "output": output if done else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": responses_usage() if done else None,
    }


def responses_stream(model: str, item: dict) -> list[str]:
    """The documented event flow of an answer of one output item (a message or a function
    call), with `event:` names and sequence numbers, as OpenAI's Responses API sends it."""
    start = {**item, "status": "in_progress"}
    events: list[tuple[str, dict]] = [
        ("response.created", {"response": responses_object(model, [], "in_progress")}),
        ("response.in_progress", {"response": responses_object(model, [], "in_progress")}),
    ]
    where = {"item_id": item["id"], "output_index": 0}
    if item["type"] == "message":
        text = item["content"][0]["text"]
        part = {"type": "output_text", "text": "", "annotations": []}
        at = {**where, "content_index": 0}
        events += [
            ("response.output_item.added", {"output_index": 0, "item": {**start, "content": []}}),
            ("response.content_part.added", {**at, "part": part}),
            *(
                ("response.output_text.delta", {**at, "delta": piece, "logprobs": []})
                for piece in split_text(text, 6)
            ),
            ("response.output_text.done", {**at, "text": text, "logprobs": []}),
            ("response.content_part.done", {**at, "part": item["content"][0]}),
        ]
    else:
        events += [
            ("response.output_item.added", {"output_index": 0, "item": {**start, "arguments": ""}}),
            *(
                ("response.function_call_arguments.delta", {**where, "delta": piece})
                for piece in split_text(item["arguments"], 5)
            ),
            ("response.function_call_arguments.done", {**where, "arguments": item["arguments"]}),
        ]
    events += [
        ("response.output_item.done", {"output_index": 0, "item": item}),
        ("response.completed", {"response": responses_object(model, [item])}),
    ]
    return [
        sse({"type": kind, "sequence_number": n, **data}, kind)
        for n, (kind, data) in enumerate(events)
    ]


# ---- Tool loops: each format's provider calls get_weather when tools are offered, then
# answers with the tool's result; with no tools, it echoes the person's last words.


def tool_loop_said(output: str) -> str:
    return f"The tool said: {output}"


def tool_loop_echo(text: str) -> str:
    return f"You said: {text}"


def last_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


def responses_tool_loop(request) -> Reply:
    """A Responses-API provider: a function call first, then the call's output as text."""
    body = request.json
    if request.path != "/v1/responses":
        return Reply(404, {"error": {"message": f"not found: {request.path}"}})
    items = (
        body["input"]
        if isinstance(body["input"], list)
        else [{"role": "user", "content": body["input"]}]
    )
    last = items[-1]
    if last.get("type") == "function_call_output":
        item = responses_message_item(tool_loop_said(last["output"]))
    elif body.get("tools"):
        item = responses_call_item(TOOL_NAME, TOOL_ARGS)
    else:
        item = responses_message_item(tool_loop_echo(last_text(last.get("content"))))
    if body.get("stream"):
        return Reply(chunks=responses_stream(body["model"], item))
    return Reply(body=responses_object(body["model"], [item]))


def chat_tool_loop(request) -> Reply:
    """A chat-completions provider: a tool call first, then the tool's result as text."""
    body = request.json
    last = body["messages"][-1]
    model = body["model"]
    stream = body.get("stream")
    if last["role"] == "tool" or not body.get("tools"):
        if last["role"] == "tool":
            text = tool_loop_said(last["content"])
        else:
            text = tool_loop_echo(last_text(last["content"]))
        if stream:
            return Reply(chunks=openai_stream([text[:9], text[9:]], model))
        return Reply(body=openai_completion(text, model))
    if stream:
        return Reply(chunks=openai_tool_stream(model, include_usage=True))
    call = {
        "id": "call_chat1",
        "type": "function",
        "function": {"name": TOOL_NAME, "arguments": json.dumps(TOOL_ARGS)},
    }
    return Reply(body=openai_completion("", model, tool_calls=[call]))


def anthropic_tool_loop(request) -> Reply:
    """An Anthropic provider: a tool_use first, then the tool_result's text."""
    body = request.json
    last = body["messages"][-1]
    results = [
        b
        for b in (last["content"] if isinstance(last["content"], list) else [])
        if b.get("type") == "tool_result"
    ]
    tool = False
    if results:
        content = results[0]["content"]
        text = tool_loop_said(content if isinstance(content, str) else content[0]["text"])
    elif body.get("tools"):
        text, tool = "", True
    else:
        text = tool_loop_echo(last_text(last["content"]))
    if body.get("stream"):
        return Reply(chunks=anthropic_stream(text, body["model"], tool))
    return Reply(body=anthropic_message(text, body["model"], tool))


# ---- an embeddings engine (OpenAI's POST /v1/embeddings) -----------------------------


def hashed_words(text: str, dims: int = 64) -> list[float]:
    """A deterministic bag-of-words vector: texts that share words point the same way."""
    vector = [0.0] * dims
    for word in text.lower().split():
        slot = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big")
        vector[slot % dims] += 1.0
    vector[0] += 0.01  # never all zeros
    return vector


class FakeEmbeddingEngine(FakeServer):
    """Ollama's, llama.cpp's or vLLM's OpenAI-compatible `POST /v1/embeddings`: `input` is
    a string or a list of them; `data[i].embedding` comes back in input order."""

    def __init__(self, dims: int = 64) -> None:
        self.dims = dims
        self.failure: Reply | None = None
        self.delay_seconds = 0.0
        super().__init__(self.answer)

    def answer(self, request: Recorded) -> Reply:
        if request.path != "/v1/embeddings":
            return Reply(404, {"error": {"message": f"no route for {request.path}"}})
        if self.failure is not None:
            return self.failure
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        body = request.json or {}
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        return Reply(
            body={
                "object": "list",
                "model": body.get("model", ""),
                "data": [
                    {"object": "embedding", "index": i, "embedding": hashed_words(t, self.dims)}
                    for i, t in enumerate(texts)
                ],
                "usage": {"prompt_tokens": len(texts), "total_tokens": len(texts)},
            }
        )

    def inputs(self) -> list[str]:
        found: list[str] = []
        for request in self.requests:
            texts = (request.json or {}).get("input")
            found += [texts] if isinstance(texts, str) else list(texts or [])
        return found


# ---- x402 (a pay-per-request upstream) -------------------------------------------------

# USDC's contract and EIP-712 domain per network, written out here on purpose (not
# imported from the router): the fake checks signatures against its own idea of them.
FAKE_USDC = {
    "base": (8453, "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "USD Coin", "2"),
    "base-sepolia": (84532, "0x036CbD53842c5426634e7929541eC2318f3dCF7e", "USDC", "2"),
}
CAIP2 = {"base": "eip155:8453", "base-sepolia": "eip155:84532"}


class FakePaidProvider(FakeOpenAIProvider):
    """An OpenAI-wire upstream behind x402: without a valid payment it answers 402 with a
    challenge (v1: in the JSON body; v2: base64 in PAYMENT-REQUIRED); with one (X-PAYMENT,
    or v2's PAYMENT-SIGNATURE) it rebuilds the EIP-712 typed data itself, recovers the
    signer with eth-account, checks amount, payee, window and nonce, and answers 200 with
    the settlement header. The challenge's fields can be tampered with per test."""

    def __init__(self, name: str = "paid", network: str = "base-sepolia") -> None:
        self.network = network
        self.version = 1
        self.amount = "10000"  # 0.01 USDC
        self.pay_to = "0x" + "5a" * 20
        self.challenge_override: dict[str, Any] = {}
        # v2: fields of the challenge's `resource` changed (e.g. another host's URL).
        self.resource_override: dict[str, Any] = {}
        self.always_402 = False
        # Entries offered before the real one (e.g. another network), to be skipped.
        self.offered_first: list[dict[str, Any]] = []
        self.nonces: set[str] = set()
        self.nonce_lock = threading.Lock()
        self.payers: list[str] = []
        self.rejections: list[str] = []
        super().__init__(name)

    def challenge(self) -> dict[str, Any]:
        chain_id, asset, token, version = FAKE_USDC[self.network]
        if self.version == 2:
            entry = {
                "scheme": "exact",
                "network": CAIP2[self.network],
                "amount": self.amount,
                "asset": asset,
                "payTo": self.pay_to,
                "maxTimeoutSeconds": 120,
                "extra": {"name": token, "version": version},
            }
            entry.update(self.challenge_override)
            resource = {"url": f"{self.url}/v1/chat/completions", "mimeType": "application/json"}
            resource.update(self.resource_override)
            return {
                "x402Version": 2,
                "error": "Payment required",
                "resource": resource,
                "accepts": [*self.offered_first, entry],
            }
        entry = {
            "scheme": "exact",
            "network": self.network,
            "maxAmountRequired": self.amount,
            "resource": f"{self.url}/v1/chat/completions",
            "description": "one chat completion",
            "mimeType": "application/json",
            "payTo": self.pay_to,
            "maxTimeoutSeconds": 120,
            "asset": asset,
            "extra": {"name": token, "version": version},
        }
        entry.update(self.challenge_override)
        accepts = [*self.offered_first, entry]
        return {"x402Version": 1, "error": "X-PAYMENT header is required", "accepts": accepts}

    def verify(self, header: str) -> str:
        """The payer's address, or raises ValueError saying what is wrong."""
        from eth_account import Account
        from eth_account.messages import encode_typed_data

        doc = json.loads(base64.b64decode(header))
        if self.version == 2:
            if (
                doc.get("x402Version") != 2
                or doc.get("accepted") != self.challenge()["accepts"][-1]
            ):
                raise ValueError("not x402 v2, or not the requirement offered")
            if doc.get("resource") != self.challenge()["resource"]:
                raise ValueError("not the resource offered")
        elif doc.get("x402Version") != 1 or doc.get("scheme") != "exact":
            raise ValueError("not x402 v1 exact")
        elif doc.get("network") != self.network:
            raise ValueError("wrong network")
        auth = doc["payload"]["authorization"]
        chain_id, asset, token, version = FAKE_USDC[self.network]
        nonce = bytes.fromhex(auth["nonce"].removeprefix("0x"))
        typed = {
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "TransferWithAuthorization": [
                    {"name": "from", "type": "address"},
                    {"name": "to", "type": "address"},
                    {"name": "value", "type": "uint256"},
                    {"name": "validAfter", "type": "uint256"},
                    {"name": "validBefore", "type": "uint256"},
                    {"name": "nonce", "type": "bytes32"},
                ],
            },
            "primaryType": "TransferWithAuthorization",
            "domain": {
                "name": token,
                "version": version,
                "chainId": chain_id,
                "verifyingContract": asset,
            },
            "message": {
                "from": auth["from"],
                "to": auth["to"],
                "value": int(auth["value"]),
                "validAfter": int(auth["validAfter"]),
                "validBefore": int(auth["validBefore"]),
                "nonce": nonce,
            },
        }
        signer = Account.recover_message(
            encode_typed_data(full_message=typed), signature=doc["payload"]["signature"]
        )
        if signer != auth["from"]:
            raise ValueError("the signature is not the payer's")
        if auth["value"] != self.amount or auth["to"].lower() != self.pay_to.lower():
            raise ValueError("wrong amount or payee")
        now = time.time()
        after, before = int(auth["validAfter"]), int(auth["validBefore"])
        if not after <= now < before or before - after > 300:
            raise ValueError("outside the validity window, or a window above 300 s")
        with self.nonce_lock:  # checked and kept in one step: two replays race here
            if len(nonce) != 32 or auth["nonce"] in self.nonces:
                raise ValueError("nonce replayed or not 32 bytes")
            self.nonces.add(auth["nonce"])
        return signer

    def unpaid(self, error: str = "") -> Reply:
        challenge = self.challenge()
        if error:
            challenge["error"] = error
        if self.version == 1:
            return Reply(402, challenge)
        encoded = base64.b64encode(json.dumps(challenge).encode()).decode()
        return Reply(402, {}, headers={"payment-required": encoded})

    def route(self, request: Recorded) -> Reply:
        name = "x-payment" if self.version == 1 else "payment-signature"
        header = request.headers.get(name, "")
        if header and not self.always_402:
            try:
                payer = self.verify(header)
            except (ValueError, KeyError, TypeError) as exc:
                self.rejections.append(str(exc))
                return self.unpaid(str(exc))
            self.payers.append(payer)
            settled = {"success": True, "transaction": "0x" + "77" * 32, "network": self.network}
            reply = super().route(request)
            settlement = "x-payment-response" if self.version == 1 else "payment-response"
            reply.headers[settlement] = base64.b64encode(json.dumps(settled).encode()).decode()
            return reply
        return self.unpaid()


BALANCE_OF = "0x70a08231"  # the 4-byte selector of balanceOf(address)


class FakeJsonRpc(FakeServer):
    """An Ethereum JSON-RPC endpoint that answers `eth_call` of an ERC-20's
    balanceOf(address): it decodes the call data itself (selector, then the holder as a
    32-byte word) and answers the balance it holds for that token and holder, ABI-encoded
    as a uint256. Anything else is a JSON-RPC error."""

    def __init__(self) -> None:
        # (token address lower, holder address lower) → balance in atomic units
        self.balances: dict[tuple[str, str], int] = {}
        self.calls: list[tuple[str, str]] = []
        super().__init__(self.answer)

    def answer(self, request: Recorded) -> Reply:
        doc = request.json
        rid = doc.get("id") if isinstance(doc, dict) else None

        def error(code: int, message: str) -> Reply:
            return Reply(
                200, {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}
            )

        if not isinstance(doc, dict) or doc.get("jsonrpc") != "2.0":
            return error(-32600, "invalid request")
        if doc.get("method") != "eth_call":
            return error(-32601, "method not found")
        call, block = doc["params"]
        data = call.get("data", "")
        if block != "latest" or not data.startswith(BALANCE_OF) or len(data) != 2 + 8 + 64:
            return error(-32602, "not a balanceOf(address) call at the latest block")
        word = data[10:]
        if word[:24] != "0" * 24:
            return error(-32602, "the argument is not an address")
        holder = "0x" + word[24:]
        token = call.get("to", "").lower()
        self.calls.append((token, holder))
        value = self.balances.get((token, holder.lower()), 0)
        return Reply(200, {"jsonrpc": "2.0", "id": rid, "result": "0x" + f"{value:064x}"})


# ---- Ollama's native chat API (docs/api.md: "Generate a chat completion") -------------

OLLAMA_REQUEST_KEYS = frozenset(
    {"model", "messages", "tools", "format", "options", "stream", "keep_alive", "think"}
)
OLLAMA_MESSAGE_KEYS = frozenset(
    {"role", "content", "thinking", "images", "tool_calls", "tool_name"}
)
# The Modelfile parameters a request's `options` may set (a subset: what adapters send).
OLLAMA_OPTIONS = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "num_predict",
        "num_ctx",
        "stop",
        "frequency_penalty",
        "presence_penalty",
        "repeat_penalty",
    }
)


def ollama_error(status: int, message: str) -> Reply:
    return Reply(status, {"error": message})


def ollama_final(model: str, reason: str = "stop") -> dict:
    """The last object of an answer: done, why, the timings (ns) and the counts."""
    return {
        "model": model,
        "created_at": "2025-06-01T12:00:00.000000Z",
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": reason,
        "total_duration": 4_883_583_458,
        "load_duration": 1_334_875,
        "prompt_eval_count": PROMPT_TOKENS,
        "prompt_eval_duration": 342_546_000,
        "eval_count": COMPLETION_TOKENS,
        "eval_duration": 4_535_599_000,
    }


class FakeOllamaProvider(ProviderFake):
    """`POST /api/chat` as Ollama answers it: NDJSON lines when streaming (its default),
    one object otherwise; checks the request the way Ollama would refuse it. `models`:
    the models it has pulled (another one is a 404)."""

    def __init__(self, name: str, models: tuple[str, ...] = ("qwen2.5:7b",)):
        self.models = set(models)
        super().__init__(name)

    def answer(self, request: Recorded) -> Reply:
        if request.method != "POST" or request.path != "/api/chat":
            return Reply(404, "404 page not found", headers={"content-type": "text/plain"})
        try:
            body = request.json
        except ValueError:
            return ollama_error(400, "invalid character in request body")
        problem = self.check(body)
        if problem:
            return ollama_error(400, problem)
        model = body["model"]
        if model not in self.models:
            return ollama_error(404, f'model "{model}" not found, try pulling it first')
        messages = body["messages"]
        tool = wants_tool_call(body.get("tools"), messages[-1]["role"] == "tool")
        images = sum(len(m.get("images") or []) for m in messages)
        text = "" if tool else self.text + (f" I see {images} image(s)." if images else "")
        calls = [{"function": {"name": TOOL_NAME, "arguments": TOOL_ARGS}}] if tool else []
        if body.get("stream", True):
            lines = [
                {
                    "model": model,
                    "created_at": "2025-06-01T12:00:00.000000Z",
                    "message": {"role": "assistant", "content": piece},
                    "done": False,
                }
                for piece in split_text(text, 4)
            ]
            if calls:
                lines.append(
                    {
                        "model": model,
                        "created_at": "2025-06-01T12:00:00.000000Z",
                        "message": {"role": "assistant", "content": "", "tool_calls": calls},
                        "done": False,
                    }
                )
            lines.append(ollama_final(model))
            return Reply(
                chunks=[json.dumps(line) + "\n" for line in lines],
                headers={"content-type": "application/x-ndjson"},
            )
        final = ollama_final(model)
        final["message"] = {"role": "assistant", "content": text}
        if calls:
            final["message"]["tool_calls"] = calls
        return Reply(body=final)

    @staticmethod
    def check(body: Any) -> str:
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return "model is required"
        extra = set(body) - OLLAMA_REQUEST_KEYS
        if extra:
            return f"json: unknown field {sorted(extra)[0]!r}"
        for key in set(body.get("options") or {}) - OLLAMA_OPTIONS:
            return f"invalid option provided option={key}"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "messages are required"
        for i, message in enumerate(messages):
            if set(message) - OLLAMA_MESSAGE_KEYS:
                return f"messages[{i}]: unknown field {sorted(set(message) - OLLAMA_MESSAGE_KEYS)}"
            if message.get("role") not in ("system", "user", "assistant", "tool"):
                return f"messages[{i}]: invalid role"
            if not isinstance(message.get("content", ""), str):
                return f"messages[{i}]: content must be a string"
            for image in message.get("images") or []:
                try:
                    base64.b64decode(image, validate=True)
                except (ValueError, TypeError):
                    return f"messages[{i}]: illegal base64 data in images"
            for call in message.get("tool_calls") or []:
                if not isinstance((call.get("function") or {}).get("arguments"), dict):
                    return f"messages[{i}]: tool_calls arguments must be an object"
        for tool in body.get("tools") or []:
            if tool.get("type") != "function" or "name" not in (tool.get("function") or {}):
                return "tools must be of type function with a name"
        fmt = body.get("format")
        if fmt is not None and fmt != "json" and not isinstance(fmt, dict):
            return "format must be json or a JSON schema"
        return ""
