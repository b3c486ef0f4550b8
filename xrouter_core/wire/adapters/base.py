"""The small base every provider adapter extends, and the logic the adapters share.

An adapter owns both directions for one provider family: the OpenAI-shaped
request out to the provider, and the provider's answer (whole or streamed) back
into OpenAI's shape or the canonical stream events.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from xrouter_core.config import Route
from xrouter_core.wire.canonical import StreamEvent, openai_usage
from xrouter_core.wire.headers import HEADER_PREFIX
from xrouter_core.wire.inbound import ChatRequest
from xrouter_core.wire.sse import SSEParser

# Client headers that never travel to a provider: credentials meant for the router or
# another provider, hop-by-hop headers, and ones the adapter sets itself.
DROPPED_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "cookie",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "accept-encoding",
        "proxy-connection",
        "content-encoding",
        # x402 payment headers: the router pays (payments/x402.py), never the client.
        "x-payment",
        "payment-signature",
    }
)


@dataclass(slots=True)
class UpstreamRequest:
    """Where and what to send: the flow is rewritten to exactly this."""

    url: str
    headers: dict[str, str]
    body: bytes
    # What of the request this provider cannot take and the adapter left out (for the
    # one debug line the router logs about it).
    dropped: tuple[str, ...] = ()


class StreamDecoder(Protocol):
    """Provider stream bytes in (any chunking), canonical events out."""

    def feed(self, chunk: bytes) -> list[StreamEvent]: ...

    def finish(self) -> list[StreamEvent]: ...


class Adapter:
    """One provider family: subclasses name it and implement the request and the answer."""

    name: str
    # True when the provider speaks OpenAI's chat-completion wire format, so an OpenAI
    # client's stream can pass through without being decoded and re-rendered.
    openai_wire = False
    # True when a Responses client's request goes to the provider's Responses API as is
    # (wire/adapters/openai_responses.py), its answer and stream passed back.
    responses_wire = False
    # The client format this provider speaks itself (inbound.OPENAI or ANTHROPIC), if any:
    # a client of that format gets its request forwarded, and the answer back, as they are.
    client_format = ""

    def same_format(self, request: ChatRequest) -> bool:
        return self.client_format == request.client_format

    def streams(self, content_type: str) -> bool:
        """Is an answer of this content type the provider's stream? SSE for most
        (text/event-stream, application/stream+json); Ollama streams NDJSON."""
        return "stream" in content_type

    def build_request(
        self,
        route: Route,
        request: ChatRequest,
        client_headers: Iterable[tuple[str, str]],
        keep_client_auth: bool = False,
    ) -> UpstreamRequest:
        """The provider request. `keep_client_auth`: the client's own Authorization may
        go along (proxy mode, same host, route without a key of its own)."""
        raise NotImplementedError

    def parse_response(self, body: bytes) -> dict[str, Any]:
        """A whole provider answer as an OpenAI `chat.completion` dict (with usage)."""
        raise NotImplementedError

    def stream_decoder(self) -> StreamDecoder:
        raise NotImplementedError

    def error_message(self, status: int, body: bytes) -> str:
        """The provider's own error text, for an OpenAI-style error body: where
        error_text_from_json looks, for every provider family here."""
        return error_text_from_json(body)


def join_url(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + path


def forward_headers(
    client_headers: Iterable[tuple[str, str]],
    route: Route,
    auth: Mapping[str, str],
    keep_client_auth: bool = False,
) -> dict[str, str]:
    """Client headers minus credentials and hop-by-hop ones, plus the route's own."""
    headers: dict[str, str] = {}
    for name, value in client_headers:
        lower = name.lower()
        if lower in DROPPED_HEADERS and not (keep_client_auth and lower == "authorization"):
            continue
        if lower.startswith(HEADER_PREFIX):
            continue
        headers[lower] = value
    # Streams are translated and bodies parsed, so ask for them uncompressed.
    headers["accept-encoding"] = "identity"
    headers["content-type"] = "application/json"
    for name, value in route.headers.items():
        headers[name.lower()] = value
    headers.update(auth)
    return headers


def error_text_from_json(body: bytes) -> str:
    """Most providers put the message at error.message, error (a string) or message."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # deep nesting too
        text = body.decode("utf-8", "replace").strip()
        return text[:500] or "no error message"
    if isinstance(doc, list) and doc:
        doc = doc[0]
    if isinstance(doc, dict):
        error = doc.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return error
        if isinstance(doc.get("message"), str):
            return doc["message"]
    return json.dumps(doc)[:500]


# ---- shared translation helpers (OpenAI request shape → any provider) ----------------

REQUEST_TOOL_ID_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
)


def safe_tool_id(call_id: Any, fallback: str = "call") -> str:
    """A tool-call id made of [a-zA-Z0-9_-] only (Anthropic rejects anything else)."""
    text = str(call_id or "")
    cleaned = "".join(c if c in REQUEST_TOOL_ID_CHARS else "_" for c in text)
    return cleaned or fallback


def new_tool_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def max_output_tokens(body: Mapping[str, Any]) -> int | None:
    """The client's output limit, whichever of OpenAI's two names it used."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def stop_list(body: Mapping[str, Any]) -> list[str]:
    stop = body.get("stop")
    if isinstance(stop, str):
        return [stop] if stop else []
    if isinstance(stop, list):
        return [s for s in stop if isinstance(s, str) and s]
    return []


# OpenAI's numeric sampling options, in the order every adapter writes them.
SAMPLING_NUMBERS = ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty")


def number_names(taken: Iterable[str] = SAMPLING_NUMBERS, **renamed: str) -> dict[str, str]:
    """SamplingNames.numbers for a provider that takes the options `taken` (all by
    default), each under OpenAI's name unless `renamed` gives the provider's."""
    return {name: renamed.get(name, name) for name in SAMPLING_NUMBERS if name in taken}


@dataclass(frozen=True, slots=True)
class SamplingNames:
    """A provider's names for OpenAI's sampling options: `numbers` maps each numeric
    option it takes (temperature, top_p, seed, penalties) to its field; `max_tokens` and
    `stop` name its output-limit and stop-list fields ("" where it puts them elsewhere).
    The fields are written in this order: numbers, limit, stops."""

    numbers: Mapping[str, str]
    max_tokens: str = ""
    stop: str = ""


def put_sampling(body: Mapping[str, Any], names: SamplingNames, out: dict[str, Any]) -> None:
    """Copy the client's sampling options into `out` under the provider's names: numbers
    only when they are numbers (not bools), the limit when positive, stops when any."""
    for source, target in names.numbers.items():
        value = body.get(source)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[target] = value
    if names.max_tokens:
        limit = max_output_tokens(body)
        if limit:
            out[names.max_tokens] = limit
    if names.stop:
        stops = stop_list(body)
        if stops:
            out[names.stop] = stops


@dataclass(slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]


def function_tools(body: Mapping[str, Any]) -> list[ToolSpec]:
    """OpenAI `tools` (type function) and the legacy `functions`, as plain specs."""
    specs: list[ToolSpec] = []
    raw: list[Any] = []
    for tool in body.get("tools") or []:
        if isinstance(tool, dict) and tool.get("type", "function") == "function":
            raw.append(tool.get("function"))
    raw.extend(body.get("functions") or [])
    for function in raw:
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            continue
        parameters = function.get("parameters")
        if not isinstance(parameters, dict):
            parameters = {"type": "object", "properties": {}}
        specs.append(ToolSpec(function["name"], str(function.get("description") or ""), parameters))
    return specs


def function_tool_objects(tools: list[ToolSpec]) -> list[dict[str, Any]]:
    """Specs as OpenAI-shaped `{"type": "function", "function": {...}}` objects: the
    tool list of the providers that take that shape natively (Cohere v2, Ollama)."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


@dataclass(slots=True)
class ToolChoice:
    """OpenAI's tool_choice, normalized: mode is auto, none, required or function."""

    mode: str = "auto"
    name: str = ""
    parallel: bool = True


def tool_choice(body: Mapping[str, Any]) -> ToolChoice:
    choice = body.get("tool_choice", body.get("function_call"))
    parallel = body.get("parallel_tool_calls") is not False
    if isinstance(choice, str):
        if choice in ("none", "required", "auto"):
            return ToolChoice(choice, parallel=parallel)
        return ToolChoice(parallel=parallel)
    if isinstance(choice, dict):
        function = choice.get("function") if "function" in choice else choice
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return ToolChoice("function", function["name"], parallel)
    return ToolChoice(parallel=parallel)


@dataclass(slots=True)
class Part:
    """One piece of message content: text, or an image (inline base64 or a URL)."""

    kind: str  # "text" | "image"
    text: str = ""
    url: str = ""
    media_type: str = ""
    data: str = ""  # base64, for inline images


def parse_image_url(url: str) -> Part:
    """`data:image/png;base64,...` becomes an inline image; anything else stays a URL."""
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";", 1)[0] or "image/png"
        if ";base64" in header:
            return Part("image", media_type=media_type, data=data)
        return Part("image", media_type=media_type, data=base64.b64encode(data.encode()).decode())
    return Part("image", url=url, media_type=guess_image_type(url))


def guess_image_type(url: str) -> str:
    path = url.split("?", 1)[0].lower()
    for ext, media in ((".png", "image/png"), (".gif", "image/gif"), (".webp", "image/webp")):
        if path.endswith(ext):
            return media
    return "image/jpeg"


def content_parts(content: Any) -> list[Part]:
    """A message's content (string or list of parts) as text and image parts."""
    if isinstance(content, str):
        return [Part("text", content)] if content else []
    parts: list[Part] = []
    if isinstance(content, list):
        for item in content:
            if isinstance(item, str):
                parts.append(Part("text", item))
            elif isinstance(item, dict):
                kind = item.get("type")
                if kind in ("text", "input_text") and isinstance(item.get("text"), str):
                    parts.append(Part("text", item["text"]))
                elif kind == "image_url":
                    image = item.get("image_url")
                    url = image.get("url") if isinstance(image, dict) else image
                    if isinstance(url, str) and url:
                        parts.append(parse_image_url(url))
    return parts


# The OpenAI content part types content_parts reads.
PART_TYPES = frozenset({"text", "input_text", "image_url"})


def note_unknown_parts(content: Any, dropped: dict[str, None]) -> None:
    """Name the content part types content_parts leaves out (audio, files, …)."""
    if isinstance(content, list):
        for item in content:
            if isinstance(item, dict) and item.get("type") not in PART_TYPES:
                dropped[f"{item.get('type')} part"] = None


def text_of(content: Any) -> str:
    return "".join(p.text for p in content_parts(content) if p.kind == "text")


def parse_arguments(arguments: Any) -> dict[str, Any]:
    """Tool-call arguments (a JSON string in OpenAI's shape) as an object."""
    if isinstance(arguments, dict):
        return arguments
    if isinstance(arguments, str) and arguments.strip():
        try:
            value = json.loads(arguments)
        except (ValueError, RecursionError):  # deep nesting too
            return {"_raw": arguments}
        return value if isinstance(value, dict) else {"_value": value}
    return {}


def tool_names_by_id(messages: list[dict[str, Any]]) -> dict[str, str]:
    """Tool-call id → function name, from the assistant messages (tool replies lack names)."""
    names: dict[str, str] = {}
    for message in messages:
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict):
                function = call.get("function") or {}
                names[str(call.get("id") or "")] = str(function.get("name") or "")
    return names


def openai_completion(
    *,
    id: str,
    model: str,
    text: str,
    tool_calls: list[dict[str, Any]],
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> dict[str, Any]:
    """The OpenAI `chat.completion` every non-OpenAI adapter answers with."""
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    elif not text:
        message["content"] = ""
    return {
        "id": id or "chatcmpl-" + uuid.uuid4().hex[:24],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ],
        "usage": openai_usage(
            prompt_tokens, completion_tokens, cache_read_tokens, cache_write_tokens
        ),
    }


def tool_call_dict(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def as_int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def merge_same_role(items: list[dict[str, Any]], role_key: str, list_key: str) -> list[dict]:
    """Join consecutive turns of the same role (Anthropic and Gemini want them alternating)."""
    merged: list[dict[str, Any]] = []
    for item in items:
        if merged and merged[-1][role_key] == item[role_key]:
            merged[-1][list_key] = merged[-1][list_key] + item[list_key]
        else:
            merged.append({role_key: item[role_key], list_key: list(item[list_key])})
    return merged


def model_for(route: Route, request: ChatRequest) -> str:
    """The provider's model: the route's, else the client's."""
    return route.model or request.model


def decode_json_events(events: Iterable[Any]) -> Iterable[dict[str, Any]]:
    """JSON objects from SSE events; skips keep-alives, [DONE] and garbage."""
    for event in events:
        data = event.data
        if not data or data == "[DONE]":
            continue
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):  # deep nesting too
            continue
        if isinstance(doc, dict):
            if event.event and "type" not in doc:
                doc["type"] = event.event
            yield doc


class JSONEventDecoder:
    """Base for SSE streams whose events carry JSON: subclasses turn each object into
    canonical events in `handle`, and may add the closing ones in `end`."""

    def __init__(self) -> None:
        self._parser = SSEParser()
        self.tool_calls = 0

    def next_tool_index(self) -> int:
        """The OpenAI index of the next tool call: 0, 1, 2, ... in the order they start."""
        index = self.tool_calls
        self.tool_calls += 1
        return index

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for doc in decode_json_events(self._parser.feed(chunk)):
            self.handle(doc, out)
        return out

    def finish(self) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for doc in decode_json_events(self._parser.flush()):
            self.handle(doc, out)
        self.end(out)
        return out

    def handle(self, doc: dict[str, Any], out: list[StreamEvent]) -> None:
        raise NotImplementedError

    def end(self, out: list[StreamEvent]) -> None:
        pass
