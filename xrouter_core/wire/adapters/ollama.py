"""Ollama's native chat API (`POST /api/chat`), streamed as newline-delimited JSON.

Ollama's messages are OpenAI-like with plain-string content: images travel as base64
strings in the message's `images`, tool calls carry their arguments as an object (and no
id: the adapter makes ids up, `call_…`), and a tool reply names its function in
`tool_name`. Sampling settings go into `options` (`max_tokens` is `num_predict`);
`response_format` becomes `format` ("json", or the JSON schema). A stream is one JSON
object per line, each with a piece of `message`; the last has `"done": true`, its
`done_reason` and the usage (`prompt_eval_count`, `eval_count`). An error is
`{"error": "..."}`, as the whole answer or as a line of a stream.

Knowingly not translated: `n`, `logprobs`, `logit_bias`, `tool_choice` and
`parallel_tool_calls` (Ollama has none), images given by URL (Ollama takes inline ones
only); `thinking` text is dropped from answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from xrouter_core.config import Route
from xrouter_core.wire import canonical as ev
from xrouter_core.wire.adapters.base import (
    Adapter,
    SamplingNames,
    UpstreamRequest,
    as_int,
    content_parts,
    forward_headers,
    function_tool_objects,
    function_tools,
    join_url,
    model_for,
    new_tool_id,
    note_unknown_parts,
    number_names,
    openai_completion,
    parse_arguments,
    put_sampling,
    text_of,
    tool_call_dict,
    tool_names_by_id,
)
from xrouter_core.wire.inbound import ChatRequest
from xrouter_core.wire.jsontext import compact_json

FINISH_REASONS = {"stop": "stop", "length": "length", "load": "stop", "unload": "stop"}
# OpenAI's sampling fields → Ollama's `options` (the Modelfile parameter names).
OPTIONS = SamplingNames(
    numbers=number_names(),
    max_tokens="num_predict",
    stop="stop",
)
NOT_TRANSLATED = ("n", "logprobs", "top_logprobs", "logit_bias", "tool_choice")


def to_messages(messages: list[dict[str, Any]], dropped: dict[str, None]) -> list[dict[str, Any]]:
    names = tool_names_by_id(messages)
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        note_unknown_parts(content, dropped)
        if role in ("system", "developer"):
            out.append({"role": "system", "content": text_of(content)})
        elif role == "assistant":
            turn: dict[str, Any] = {"role": "assistant", "content": text_of(content)}
            calls = [
                {
                    "function": {
                        "name": str((call.get("function") or {}).get("name") or ""),
                        "arguments": parse_arguments((call.get("function") or {}).get("arguments")),
                    }
                }
                for call in message.get("tool_calls") or []
                if isinstance(call, dict)
            ]
            if calls:
                turn["tool_calls"] = calls
            out.append(turn)
        elif role in ("tool", "function"):
            call_id = str(message.get("tool_call_id") or "")
            name = names.get(call_id) or str(message.get("name") or "")
            turn = {"role": "tool", "content": text_of(content)}
            if name:
                turn["tool_name"] = name
            out.append(turn)
        else:
            parts = content_parts(content)
            turn = {"role": "user", "content": "".join(p.text for p in parts if p.kind == "text")}
            images = [p.data for p in parts if p.kind == "image" and p.data]
            if any(p.kind == "image" and not p.data for p in parts):
                dropped["image URL (Ollama takes inline images only)"] = None
            if images:
                turn["images"] = images
            out.append(turn)
    return out


def build_body(request: ChatRequest, model: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    body = request.body
    dropped: dict[str, None] = {name: None for name in NOT_TRANSLATED if name in body}
    out: dict[str, Any] = {
        "model": model,
        "messages": to_messages(request.messages, dropped),
        "stream": request.stream,
    }
    options: dict[str, Any] = {}
    put_sampling(body, OPTIONS, options)
    if options:
        out["options"] = options
    tools = function_tools(body)
    if tools:
        out["tools"] = function_tool_objects(tools)
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        schema = (fmt.get("json_schema") or {}).get("schema")
        if fmt.get("type") == "json_schema" and isinstance(schema, dict):
            out["format"] = schema
        elif fmt.get("type") in ("json_object", "json_schema"):
            out["format"] = "json"
    return out, tuple(dropped)


def tool_calls_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    """Ollama's tool calls (arguments as an object, no id) in OpenAI's shape."""
    calls = []
    for call in message.get("tool_calls") or []:
        function = (call or {}).get("function") or {}
        arguments = function.get("arguments")
        calls.append(
            tool_call_dict(
                str(call.get("id") or "") or new_tool_id(),
                str(function.get("name") or ""),
                arguments if isinstance(arguments, str) else json.dumps(arguments or {}),
            )
        )
    return calls


def finish_reason(doc: dict[str, Any], called_tools: bool) -> str:
    if called_tools:
        return "tool_calls"
    return FINISH_REASONS.get(str(doc.get("done_reason") or "stop"), "stop")


class OllamaAdapter(Adapter):
    name = "ollama"

    def build_request(
        self,
        route: Route,
        request: ChatRequest,
        client_headers: Iterable[tuple[str, str]],
        keep_client_auth: bool = False,
    ) -> UpstreamRequest:
        base = route.base_url.rstrip("/")
        if base.endswith("/v1"):  # the OpenAI-compatible root of the same server
            base = base[:-3]
        path = "/chat" if base.endswith("/api") else "/api/chat"
        # Ollama's hosted API (and proxies before a local one) take a bearer key.
        auth = {"authorization": f"Bearer {route.api_key}"} if route.api_key else {}
        headers = forward_headers(client_headers, route, auth)
        headers["accept"] = "application/x-ndjson" if request.stream else "application/json"
        body, dropped = build_body(request, model_for(route, request))
        return UpstreamRequest(
            url=join_url(base, path),
            headers=headers,
            body=compact_json(body).encode(),
            dropped=dropped,
        )

    def streams(self, content_type: str) -> bool:
        return "ndjson" in content_type or "stream" in content_type

    def parse_response(self, body: bytes) -> dict[str, Any]:
        doc = json.loads(body)
        message = doc.get("message") or {}
        calls = tool_calls_of(message)
        return openai_completion(
            id="",
            model=str(doc.get("model") or ""),
            text=str(message.get("content") or ""),
            tool_calls=calls,
            finish_reason=finish_reason(doc, bool(calls)),
            prompt_tokens=as_int(doc.get("prompt_eval_count")),
            completion_tokens=as_int(doc.get("eval_count")),
        )

    def stream_decoder(self) -> OllamaStreamDecoder:
        return OllamaStreamDecoder()


class OllamaStreamDecoder:
    """NDJSON lines (in any chunking) → canonical events: Start at the first line, a
    TextDelta per piece of content, a whole tool call at once, Finish and Usage at the
    line with `done`; an `error` line is a StreamError."""

    def __init__(self) -> None:
        self._buffer = b""
        self._started = False
        self._tool_calls = 0
        self._finished = False

    def feed(self, chunk: bytes) -> list[ev.StreamEvent]:
        self._buffer += chunk
        if b"\n" not in self._buffer:
            return []
        *lines, self._buffer = self._buffer.split(b"\n")
        out: list[ev.StreamEvent] = []
        for line in lines:
            self._line(line, out)
        return out

    def finish(self) -> list[ev.StreamEvent]:
        out: list[ev.StreamEvent] = []
        line, self._buffer = self._buffer, b""
        self._line(line, out)
        return out

    def _line(self, line: bytes, out: list[ev.StreamEvent]) -> None:
        line = line.strip()
        if not line or self._finished:
            return
        try:
            doc = json.loads(line)
        except (ValueError, RecursionError):
            return
        if not isinstance(doc, dict):
            return
        if not self._started:
            self._started = True
            out.append(ev.Start(model=str(doc.get("model") or "")))
        if doc.get("error"):
            out.append(ev.StreamError(str(doc["error"])))
            return
        message = doc.get("message") or {}
        text = message.get("content")
        if isinstance(text, str) and text:
            out.append(ev.TextDelta(text))
        for call in tool_calls_of(message):
            index = self._tool_calls
            self._tool_calls += 1
            function = call["function"]
            out.append(ev.ToolCallStart(index, call["id"], function["name"]))
            out.append(ev.ToolCallDelta(index, function["arguments"]))
        if doc.get("done"):
            self._finished = True
            out.append(ev.Finish(finish_reason(doc, self._tool_calls > 0)))
            out.append(
                ev.Usage(as_int(doc.get("prompt_eval_count")), as_int(doc.get("eval_count")))
            )
