"""OpenAI's chat-completion wire format: OpenAI itself and every compatible server
(Ollama, llama.cpp, vLLM, Groq, Mistral, Together, Perplexity, another xrouter)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from xrouter_core.config import Route
from xrouter_core.wire import canonical as ev
from xrouter_core.wire.adapters.base import (
    Adapter,
    UpstreamRequest,
    forward_headers,
    join_url,
)
from xrouter_core.wire.inbound import OPENAI, ChatRequest
from xrouter_core.wire.jsontext import compact_json
from xrouter_core.wire.sse import SSEParser

# Providers whose API root has no /v1 segment.
ROOT_WITHOUT_V1 = frozenset({"perplexity"})
# Providers that report stream usage on their own and may reject stream_options.
USAGE_WITHOUT_ASKING = frozenset({"mistral", "perplexity"})
# Servers that know only `max_tokens` (local engines, Mistral, Perplexity).
MAX_TOKENS_ONLY = frozenset({"openai_compatible", "mistral", "perplexity"})

# OpenAI's reasoning families: o1, o3, o4 and gpt-5 (but not the gpt-5 chat variants).
REASONING_MODEL = re.compile(r"^(?:[\w.-]+/)?(?:o1|o3|o4|gpt-5)(?:$|[-.])(?!.*chat)", re.I)
# The first o1 releases accept neither system nor developer messages.
NO_SYSTEM_MODEL = re.compile(r"^(?:[\w.-]+/)?o1-(?:mini|preview)", re.I)
# Sampling parameters reasoning models reject.
REASONING_DROPS = (
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "top_logprobs",
    "logit_bias",
)
AZURE_API_VERSION = "2024-10-21"


# OpenAI refuses tool-call ids longer than this (ids from other providers can be longer).
MAX_TOOL_ID = 40


def shorten_tool_ids(body: dict[str, Any]) -> None:
    """Replace over-long tool-call ids by a stable short hash, in calls and replies alike."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return

    def short(call_id: Any) -> Any:
        if isinstance(call_id, str) and len(call_id) > MAX_TOOL_ID:
            return "call_" + hashlib.sha256(call_id.encode()).hexdigest()[:32]
        return call_id

    if not any(
        len(str(c.get("id") or "")) > MAX_TOOL_ID
        for m in messages
        if isinstance(m, dict)
        for c in m.get("tool_calls") or []
        if isinstance(c, dict)
    ):
        return
    fixed = []
    for message in messages:
        if isinstance(message, dict) and message.get("tool_calls"):
            calls = [
                {**c, "id": short(c.get("id"))} if isinstance(c, dict) else c
                for c in message["tool_calls"]
            ]
            message = {**message, "tool_calls": calls}
        elif isinstance(message, dict) and message.get("role") == "tool":
            message = {**message, "tool_call_id": short(message.get("tool_call_id"))}
        fixed.append(message)
    body["messages"] = fixed


def is_reasoning_model(model: str) -> bool:
    return bool(REASONING_MODEL.match(model or ""))


def adapt_for_reasoning(body: dict[str, Any]) -> None:
    """Make a chat body valid for a reasoning model, in place: the same client request
    then works on any tier."""
    if "max_tokens" in body:
        limit = body.pop("max_tokens")
        body.setdefault("max_completion_tokens", limit)
    for name in REASONING_DROPS:
        body.pop(name, None)
    model = str(body.get("model") or "")
    role = "user" if NO_SYSTEM_MODEL.match(model) else "developer"
    messages = body.get("messages")
    if isinstance(messages, list) and any(m.get("role") == "system" for m in messages):
        body["messages"] = [
            {**m, "role": role} if m.get("role") == "system" else m for m in messages
        ]


class OpenAIAdapter(Adapter):
    openai_wire = True
    client_format = OPENAI

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
        if is_reasoning_model(str(body.get("model") or "")):
            adapt_for_reasoning(body)
        elif self.name in MAX_TOKENS_ONLY and "max_completion_tokens" in body:
            limit = body.pop("max_completion_tokens")
            body.setdefault("max_tokens", limit)
        shorten_tool_ids(body)
        if request.stream and self.name not in USAGE_WITHOUT_ASKING:
            # Always ask for usage so it can be counted; the pass-through (wire/stream.py)
            # drops the extra chunk again when the client did not ask for it.
            options = dict(body.get("stream_options") or {})
            options["include_usage"] = True
            body["stream_options"] = options
        return UpstreamRequest(
            url=self.chat_url(route, body),
            headers=forward_headers(client_headers, route, self.auth(route), keep_client_auth),
            body=compact_json(body).encode(),
        )

    def chat_url(self, route: Route, body: dict[str, Any]) -> str:
        return join_url(route.base_url, self.chat_path(route))

    def auth(self, route: Route) -> dict[str, str]:
        return {"authorization": f"Bearer {route.api_key}"} if route.api_key else {}

    def parse_response(self, body: bytes) -> dict[str, Any]:
        return json.loads(body)

    def stream_decoder(self) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder()


class AzureOpenAIAdapter(OpenAIAdapter):
    """Azure OpenAI: the deployment is in the URL (so `model` leaves the body), the
    api-version in the query, and the key in an `api-key` header."""

    def __init__(self) -> None:
        super().__init__("azure")

    def chat_url(self, route: Route, body: dict[str, Any]) -> str:
        deployment = route.deployment or str(body.get("model") or "")
        body.pop("model", None)
        base = route.base_url.rstrip("/")
        if base.endswith("/openai"):
            base = base[: -len("/openai")]
        version = quote(route.api_version or AZURE_API_VERSION, safe="-.")
        return (
            f"{base}/openai/deployments/{quote(deployment, safe='-._')}"
            f"/chat/completions?api-version={version}"
        )

    def auth(self, route: Route) -> dict[str, str]:
        return {"api-key": route.api_key} if route.api_key else {}


class OpenAIStreamDecoder:
    """OpenAI chunk stream → canonical events (used when the client speaks another format)."""

    def __init__(self) -> None:
        self._parser = SSEParser()
        self._started = False
        self._calls: set[int] = set()  # tool-call indexes already started

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
        except (ValueError, RecursionError):  # deep nesting too
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
                # Some servers repeat id and name in every delta: start each call once.
                if (call.get("id") or function.get("name")) and index not in self._calls:
                    self._calls.add(index)
                    out.append(
                        ev.ToolCallStart(
                            index, str(call.get("id") or ""), str(function.get("name") or "")
                        )
                    )
                if function.get("arguments"):
                    out.append(ev.ToolCallDelta(index, function["arguments"]))
            if choice.get("finish_reason"):
                out.append(ev.Finish(choice["finish_reason"]))
        usage = ev.usage_from_openai(chunk.get("usage"))
        if usage is not None:
            out.append(usage)
