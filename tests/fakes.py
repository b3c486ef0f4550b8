"""Fake HTTP servers on 127.0.0.1 for the tests: classifiers and providers that speak the
providers' real wire formats, record what they received, and can stream, stall or fail.

A server is driven by a handler function `handler(request) -> Reply`; a Reply may carry a
whole body, a list of chunks (streamed with chunked encoding, with optional pauses or
threading.Events to wait on between them), or an action such as resetting the connection.
"""

from __future__ import annotations

import json
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
    # "reset": close the socket without answering; "hang": never answer (until shutdown).
    action: str = ""


Handler = Callable[[Recorded], Reply]


class FakeServer:
    """A threaded HTTP/1.1 server on 127.0.0.1:<free port>."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.requests: list[Recorded] = []
        # Set when a streamed reply could not be written: the client closed the connection.
        self.client_closed = threading.Event()
        self.stopping = threading.Event()
        owner = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

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

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def _send(self, rh: BaseHTTPRequestHandler, reply: Reply) -> None:
        if reply.action == "reset":
            rh.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            rh.connection.close()
            rh.close_connection = True
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
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


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


def openai_stream(
    pieces: list[str],
    model: str = "fake-model",
    include_usage: bool = True,
    prompt_tokens: int = 11,
    completion_tokens: int = 7,
    pause: Pause | None = None,
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
        chunks.append(
            "data: "
            + json.dumps(
                {
                    "id": "chatcmpl-fake123",
                    "object": "chat.completion.chunk",
                    "created": 1_700_000_000,
                    "model": model,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                }
            )
            + "\n\n"
        )
    chunks.append("data: [DONE]\n\n")
    return chunks


class FakeOpenAIProvider(FakeServer):
    """Answers chat completions in OpenAI's format, streamed or not; `answer` names the
    provider in the text so tests can see which route served a request."""

    def __init__(self, name: str, pieces: list[str] | None = None):
        self.name = name
        self.pieces = pieces or [f"Hello from {name}", "!"]
        self.override: Handler | None = None
        super().__init__(self.route)

    def route(self, request: Recorded) -> Reply:
        if self.override is not None:
            return self.override(request)
        body = request.json or {}
        model = body.get("model") or "fake-model"
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return Reply(chunks=openai_stream(self.pieces, model, include_usage))
        return Reply(body=openai_completion("".join(self.pieces), model))


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
