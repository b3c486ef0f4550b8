"""Cohere's v2 chat API (`POST /v2/chat`), streamed as SSE events named by `type`.

Cohere v2 takes OpenAI-like messages and tools, so the request mostly carries over;
`top_p` is `p`, `stop` is `stop_sequences`, and tool_choice knows only REQUIRED and
NONE. Knowingly not translated: `n`, `logprobs`, `logit_bias`, `parallel_tool_calls`,
a named tool_choice (sent as REQUIRED); `tool-plan-delta` text, citations and
thinking content are dropped from answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from xrouter_core.config import Route
from xrouter_core.wire import canonical as ev
from xrouter_core.wire.adapters.base import (
    Adapter,
    JSONEventDecoder,
    SamplingNames,
    UpstreamRequest,
    as_int,
    content_parts,
    forward_headers,
    function_tool_objects,
    function_tools,
    join_url,
    model_for,
    number_names,
    openai_completion,
    put_sampling,
    text_of,
    tool_call_dict,
    tool_choice,
)
from xrouter_core.wire.inbound import ChatRequest
from xrouter_core.wire.jsontext import compact_json

FINISH_REASONS = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
    "ERROR": "stop",
    "TIMEOUT": "stop",
}
SAMPLING = SamplingNames(
    numbers=number_names(top_p="p"),
    max_tokens="max_tokens",
    stop="stop_sequences",
)


def openai_tool_calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A message's tool calls, cleaned: Cohere's v2 API and OpenAI's share this shape, so
    the request (assistant turns) and the answer use the same conversion."""
    return [
        tool_call_dict(
            str(call.get("id") or ""),
            str((call.get("function") or {}).get("name") or ""),
            str((call.get("function") or {}).get("arguments") or "{}"),
        )
        for call in message.get("tool_calls") or []
    ]


def user_content(content: Any) -> str | list[dict[str, Any]]:
    parts = content_parts(content)
    if all(p.kind == "text" for p in parts):
        return "".join(p.text for p in parts)
    out: list[dict[str, Any]] = []
    for part in parts:
        if part.kind == "text":
            out.append({"type": "text", "text": part.text})
        else:
            url = f"data:{part.media_type};base64,{part.data}" if part.data else part.url
            out.append({"type": "image_url", "image_url": {"url": url}})
    return out


def to_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            out.append({"role": "system", "content": text_of(content)})
        elif role == "assistant":
            turn: dict[str, Any] = {"role": "assistant"}
            text = text_of(content)
            calls = openai_tool_calls(message)
            if calls:
                turn["tool_calls"] = calls
                if text:
                    turn["tool_plan"] = text
            else:
                turn["content"] = text
            out.append(turn)
        elif role in ("tool", "function"):
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": str(message.get("tool_call_id") or message.get("name") or ""),
                    "content": text_of(content),
                }
            )
        else:
            out.append({"role": "user", "content": user_content(content)})
    return out


def build_body(request: ChatRequest, model: str) -> dict[str, Any]:
    body = request.body
    out: dict[str, Any] = {"model": model, "messages": to_messages(request.messages)}
    put_sampling(body, SAMPLING, out)
    tools = function_tools(body)
    choice = tool_choice(body)
    if tools:
        out["tools"] = function_tool_objects(tools)
        if choice.mode in ("required", "function"):
            out["tool_choice"] = "REQUIRED"
        elif choice.mode == "none":
            out["tool_choice"] = "NONE"
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        out["response_format"] = {"type": "json_object"}
    out["stream"] = request.stream
    return out


def usage_counts(usage: dict[str, Any]) -> tuple[int, int]:
    tokens = usage.get("tokens") or usage.get("billed_units") or {}
    return as_int(tokens.get("input_tokens")), as_int(tokens.get("output_tokens"))


class CohereAdapter(Adapter):
    name = "cohere"

    def build_request(
        self,
        route: Route,
        request: ChatRequest,
        client_headers: Iterable[tuple[str, str]],
        keep_client_auth: bool = False,
    ) -> UpstreamRequest:
        path = "/chat" if route.base_path.endswith("/v2") else "/v2/chat"
        auth = {"authorization": f"Bearer {route.api_key}"} if route.api_key else {}
        headers = forward_headers(client_headers, route, auth)
        headers["accept"] = "text/event-stream" if request.stream else "application/json"
        return UpstreamRequest(
            url=join_url(route.base_url, path),
            headers=headers,
            body=compact_json(build_body(request, model_for(route, request))).encode(),
        )

    def parse_response(self, body: bytes) -> dict[str, Any]:
        doc = json.loads(body)
        message = doc.get("message") or {}
        text = "".join(
            str(block.get("text") or "")
            for block in message.get("content") or []
            if block.get("type") == "text"
        )
        calls = openai_tool_calls(message)
        prompt, completion = usage_counts(doc.get("usage") or {})
        return openai_completion(
            id=str(doc.get("id") or ""),
            model="",
            text=text,
            tool_calls=calls,
            finish_reason=FINISH_REASONS.get(str(doc.get("finish_reason")), "stop"),
            prompt_tokens=prompt,
            completion_tokens=completion,
        )

    def stream_decoder(self) -> CohereStreamDecoder:
        return CohereStreamDecoder()


class CohereStreamDecoder(JSONEventDecoder):
    """message-start, content-*, tool-call-*, message-end → canonical events."""

    def __init__(self) -> None:
        super().__init__()
        self._index: dict[int, int] = {}

    def handle(self, doc: dict[str, Any], out: list[ev.StreamEvent]) -> None:
        kind = doc.get("type")
        message = ((doc.get("delta") or {}).get("message")) or {}
        if kind == "message-start":
            out.append(ev.Start(id=str(doc.get("id") or "")))
        elif kind == "content-delta":
            text = (message.get("content") or {}).get("text")
            if isinstance(text, str) and text:
                out.append(ev.TextDelta(text))
        elif kind == "tool-call-start":
            call = message.get("tool_calls") or {}
            function = call.get("function") or {}
            index = self.next_tool_index()
            self._index[as_int(doc.get("index"))] = index
            out.append(
                ev.ToolCallStart(index, str(call.get("id") or ""), str(function.get("name") or ""))
            )
            if function.get("arguments"):
                out.append(ev.ToolCallDelta(index, str(function["arguments"])))
        elif kind == "tool-call-delta":
            arguments = ((message.get("tool_calls") or {}).get("function") or {}).get("arguments")
            index = self._index.get(as_int(doc.get("index")))
            if arguments and index is not None:
                out.append(ev.ToolCallDelta(index, str(arguments)))
        elif kind == "message-end":
            delta = doc.get("delta") or {}
            reason = str(delta.get("finish_reason") or "COMPLETE")
            if reason in ("ERROR", "TIMEOUT"):
                out.append(ev.StreamError(f"Cohere ended the answer with {reason}"))
            out.append(ev.Finish(FINISH_REASONS.get(reason, "stop")))
            out.append(ev.Usage(*usage_counts(delta.get("usage") or {})))
