"""OpenAI's chat-completion wire format: OpenAI itself and every compatible server
(Ollama, llama.cpp, vLLM, Groq, Mistral, Together, Perplexity, another xrouter)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from xrouter_core import canonical as ev
from xrouter_core.adapters.base import (
    UpstreamRequest,
    dump_json,
    error_text_from_json,
    forward_headers,
    join_url,
)
from xrouter_core.config import Route
from xrouter_core.inbound import ChatRequest
from xrouter_core.sse import SSEParser

# Providers whose API root has no /v1 segment.
ROOT_WITHOUT_V1 = frozenset({"perplexity"})
# Providers that report stream usage on their own and may reject stream_options.
USAGE_WITHOUT_ASKING = frozenset({"mistral", "perplexity"})


class OpenAIAdapter:
    openai_wire = True

    def __init__(self, name: str = "openai_compatible"):
        self.name = name

    def chat_path(self, route: Route) -> str:
        if route.base_path or self.name in ROOT_WITHOUT_V1:
            return "/chat/completions"
        return "/v1/chat/completions"

    def build_request(
        self,
        route: Route,
        request: ChatRequest,
        client_headers: Iterable[tuple[str, str]],
        keep_client_auth: bool = False,
    ) -> UpstreamRequest:
        body = dict(request.body)
        if route.model:
            body["model"] = route.model
        if request.stream and self.name not in USAGE_WITHOUT_ASKING:
            # Always ask for usage so it can be counted; the stream glue removes the
            # extra chunk again when the client did not ask for it.
            options = dict(body.get("stream_options") or {})
            options["include_usage"] = True
            body["stream_options"] = options
        auth = {"authorization": f"Bearer {route.api_key}"} if route.api_key else {}
        return UpstreamRequest(
            url=join_url(route.base_url, self.chat_path(route)),
            headers=forward_headers(client_headers, route, auth, keep_client_auth),
            body=dump_json(body),
        )

    def parse_response(self, body: bytes) -> dict[str, Any]:
        return json.loads(body)

    def stream_decoder(self) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder()

    def error_message(self, status: int, body: bytes) -> str:
        return error_text_from_json(body)


class OpenAIStreamDecoder:
    """OpenAI chunk stream → canonical events (used when the client speaks another format)."""

    def __init__(self) -> None:
        self._parser = SSEParser()
        self._started = False

    def feed(self, chunk: bytes) -> list[ev.StreamEvent]:
        out: list[ev.StreamEvent] = []
        for event in self._parser.feed(chunk):
            self._decode(event.data, out)
        return out

    def finish(self) -> list[ev.StreamEvent]:
        out: list[ev.StreamEvent] = []
        for event in self._parser.flush():
            self._decode(event.data, out)
        return out

    def _decode(self, data: str, out: list[ev.StreamEvent]) -> None:
        if not data or data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            return
        if not isinstance(chunk, dict):
            return
        if "error" in chunk and isinstance(chunk["error"], dict):
            out.append(ev.StreamError(str(chunk["error"].get("message", "upstream error"))))
            return
        if not self._started:
            self._started = True
            out.append(ev.Start(id=str(chunk.get("id", "")), model=str(chunk.get("model", ""))))
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                out.append(ev.TextDelta(delta["content"]))
            for call in delta.get("tool_calls") or []:
                index = int(call.get("index", 0))
                function = call.get("function") or {}
                if call.get("id") or function.get("name"):
                    out.append(
                        ev.ToolCallStart(
                            index, str(call.get("id") or ""), str(function.get("name") or "")
                        )
                    )
                if function.get("arguments"):
                    out.append(ev.ToolCallDelta(index, function["arguments"]))
            if choice.get("finish_reason"):
                out.append(ev.Finish(choice["finish_reason"]))
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            out.append(usage_from_openai(usage))


def usage_from_openai(usage: dict[str, Any]) -> ev.Usage:
    return ev.Usage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )
