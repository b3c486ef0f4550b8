"""Anthropic's Messages API (`POST /v1/messages`): OpenAI requests out, Messages answers
and event streams back.

Knowingly not translated: `n`, `logprobs`, `response_format`, `seed`, penalties and
`logit_bias` (no Messages equivalent); thinking blocks in answers are dropped (their
text is not part of an OpenAI answer).
"""

from __future__ import annotations

import json
import re
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
    function_tools,
    join_url,
    max_output_tokens,
    merge_same_role,
    model_for,
    note_unknown_parts,
    number_names,
    openai_completion,
    parse_arguments,
    put_sampling,
    safe_tool_id,
    text_of,
    tool_call_dict,
    tool_choice,
)
from xrouter_core.wire.inbound import ANTHROPIC, ChatRequest
from xrouter_core.wire.jsontext import compact_json, json_bytes

API_VERSION = "2023-06-01"
# Messages requires max_tokens; used when the client set no limit.
DEFAULT_MAX_TOKENS = 4096

# OpenAI's sampling options → Messages fields; max_tokens is required, so build_body
# puts it first (with a default) itself.
SAMPLING = SamplingNames(numbers=number_names(("temperature", "top_p")), stop="stop_sequences")

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(str(stop_reason or ""), "stop")


def image_block(part: Any) -> dict[str, Any]:
    if part.data:
        source = {"type": "base64", "media_type": part.media_type, "data": part.data}
    else:
        source = {"type": "url", "url": part.url}
    return {"type": "image", "source": source}


def user_blocks(content: Any) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in content_parts(content):
        if part.kind == "text":
            if part.text:
                blocks.append({"type": "text", "text": part.text})
        else:
            blocks.append(image_block(part))
    return blocks


# The OpenAI fields build_body translates; any other is named as dropped.
TRANSLATED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "tools",
        "functions",
        "tool_choice",
        "function_call",
        "parallel_tool_calls",
        "user",
        "stream",
        "stream_options",
    }
)


def to_messages(
    messages: list[dict[str, Any]], dropped: dict[str, None] | None = None
) -> tuple[list[dict[str, Any]], list[dict]]:
    """OpenAI messages → (Anthropic system blocks, alternating Anthropic messages). System
    messages anywhere in the conversation move to the top-level system, in order; unknown
    roles and content parts are left out (and named in `dropped`)."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    dropped = {} if dropped is None else dropped
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        note_unknown_parts(content, dropped)
        if role in ("system", "developer"):
            text = text_of(content)
            if text:
                system.append({"type": "text", "text": text})
        elif role == "assistant":
            blocks: list[dict[str, Any]] = []
            text = text_of(content)
            if text:
                blocks.append({"type": "text", "text": text})
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": safe_tool_id(call.get("id")),
                        "name": str(function.get("name") or ""),
                        "input": parse_arguments(function.get("arguments")),
                    }
                )
            if blocks:
                turns.append({"role": "assistant", "content": blocks})
        elif role in ("tool", "function"):
            result = user_blocks(content)
            block: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": safe_tool_id(message.get("tool_call_id") or message.get("name")),
                "content": result or "",
            }
            turns.append({"role": "user", "content": [block]})
        elif role != "user":
            dropped[f"role {role!r}"] = None
        else:
            blocks = user_blocks(content)
            if blocks:
                turns.append({"role": "user", "content": blocks})
    merged = merge_same_role(turns, "role", "content")
    for turn in merged:
        # Tool results must come first in their user turn.
        if turn["role"] == "user":
            turn["content"].sort(key=lambda b: b.get("type") != "tool_result")
    if not merged or merged[0]["role"] != "user":
        merged.insert(0, {"role": "user", "content": [{"type": "text", "text": "(continue)"}]})
    return system, merged


def build_body(
    request: ChatRequest, model: str, dropped: dict[str, None] | None = None
) -> dict[str, Any]:
    body = request.body
    if dropped is not None:
        dropped.update((k, None) for k in body if k not in TRANSLATED)
    system, messages = to_messages(request.messages, dropped)
    out: dict[str, Any] = {
        "model": model,
        "max_tokens": max_output_tokens(body) or DEFAULT_MAX_TOKENS,
        "messages": messages,
    }
    if system:
        out["system"] = system
    put_sampling(body, SAMPLING, out)
    if "temperature" in out:  # Messages takes 0 to 1 only
        out["temperature"] = min(max(out["temperature"], 0.0), 1.0)
    tools = function_tools(body)
    choice = tool_choice(body)
    if tools:
        out["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in tools
        ]
        anthropic_choice: dict[str, Any] = {
            "auto": {"type": "auto"},
            "required": {"type": "any"},
            "function": {"type": "tool", "name": choice.name},
            "none": {"type": "none"},
        }[choice.mode]
        if not choice.parallel and choice.mode != "none":
            anthropic_choice["disable_parallel_tool_use"] = True
        out["tool_choice"] = anthropic_choice
    user = body.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    if request.stream:
        out["stream"] = True
    if request.cache_prefix:
        mark_for_cache(out)
    return out


def mark_for_cache(body: dict[str, Any]) -> None:
    """Prompt-cache breakpoints where Anthropic needs them for a growing conversation: on
    the system prompt (tools and system are cached together) and on the last message's
    last block, so the next turn reads everything up to here from the cache (the API
    finds an earlier breakpoint's entry by itself). Two of the four breakpoints allowed."""
    system = body.get("system")
    if system:
        system[-1]["cache_control"] = {"type": "ephemeral"}
    content = body["messages"][-1]["content"]
    if isinstance(content, list) and content:
        content[-1]["cache_control"] = {"type": "ephemeral"}


def passthrough_body(request: ChatRequest, model: str) -> bytes:
    """An Anthropic client's own body with only `model` replaced.

    The raw bytes go as they are when the model stays the same; most often the new
    model's JSON string is spliced in place of the old one (`splice_model`), so every
    byte but those of the model's value arrives as the client wrote it. Otherwise the
    body parsed to classify is re-serialised: dicts keep their keys in order, so every
    field, block, cache_control mark, thinking signature and unknown future field
    arrives in place; only insignificant whitespace and equivalent escapes change."""
    original = request.original
    assert original is not None
    if not model or original.get("model") == model:
        return request.raw
    spliced = splice_model(request.raw, original, model)
    if spliced is not None:
        return spliced
    return json_bytes({**original, "model": model})  # an existing key keeps its place


# How a `\u` escape of m, o, d, e or l (0x64-0x6f) begins.
_MODEL_LETTER_ESCAPE = b"\\u006"
# After a key: JSON whitespace, `:`, JSON whitespace, then the value (a string if group 1).
_AFTER_KEY = re.compile(rb'[ \t\n\r]*:[ \t\n\r]*("(?:[^"\\]|\\.)*")?', re.DOTALL)


def top_level_model_value(raw: bytes) -> tuple[int, int] | None:
    r"""Where in `raw`, a JSON object with a top-level key that parses as "model", that
    key's string value lies, as the span of its JSON string token (quotes included);
    None when that cannot be shown: the key twice, a `\u006` escape anywhere, a value
    that is not a string.

    A depth-aware scan made of a few C-speed passes, not a Python loop over the bytes
    (which would cost more than the re-serialisation it saves). With no `\u006` in the
    bytes a string decodes to "model" only when written `"model"` (the other escapes
    make none of its letters), so every key that parses as "model" is such a token.
    With `\\` and `\"` masked at the same length, the quotes left are exactly the
    strings' delimiters and every `"model"` left is a whole string token; splitting on
    the quotes puts the text outside strings at even indices, so a token's depth is the
    brackets' balance over those before it. Exactly one such token may sit at depth 1
    followed by a colon: the top-level key. Only the bytes up to the last `"model"` are
    scanned, and none when there is only one: then it is the key.
    """
    if _MODEL_LETTER_ESCAPE in raw:
        return None
    last = raw.rfind(b'"model"')
    if last < 0:
        return None
    if raw.find(b'"model"') == last:  # written once: the parsed key's token is that one
        after = _AFTER_KEY.match(raw, last + len(b'"model"'))
        return None if after is None or after.group(1) is None else after.span(1)
    head = raw[: last + len(b'"model"')]
    masked = head.replace(b"\\\\", b"__").replace(b'\\"', b"__")
    pieces = masked.split(b'"')
    found: tuple[int, int] | None = None
    depth = 0  # the brackets' balance outside strings over pieces[:counted]
    counted = 0
    index = 0
    while True:
        try:  # the next `"model"` token: a piece `model` between two quotes
            index = pieces.index(b"model", index + 1)
        except ValueError:
            return found
        if index % 2 == 0:  # `model` outside a string: not JSON
            return None
        between = b"".join(pieces[counted:index:2])
        depth += between.count(b"{") + between.count(b"[")
        depth -= between.count(b"}") + between.count(b"]")
        counted = index + 1
        if depth == 1:
            at = sum(map(len, pieces[:index])) + index + len(b"model")  # its closing quote
            after = _AFTER_KEY.match(raw, at + 1)
            if after is not None:  # a key, not a value
                if found is not None or after.group(1) is None:
                    return None  # the key twice, or a value that is not a string
                found = after.span(1)


def splice_model(raw: bytes, original: dict[str, Any], model: str) -> bytes | None:
    """`raw` with the value of its top-level `model` replaced by `model` as a JSON string
    (ASCII, escaped), or None when that cannot be shown to be exact: the caller then
    re-serialises. Re-serialising an 88 kB Claude Code body to change one value costs
    most of what parsing it did; a few C-speed passes and one copy cost far less.

    `original` is what `raw` parsed to. The value's span comes from
    `top_level_model_value`; its token must also read back (scanstring, which checks its
    escapes) as the parsed model, so an escaped value is replaced only when it is shown
    to be that one.
    """
    if not raw.startswith((b"{", b" ", b"\t", b"\n", b"\r")):  # a BOM, UTF-16 or -32
        return None
    current = original.get("model")
    if not isinstance(current, str):
        return None
    span = top_level_model_value(raw)
    if span is None:
        return None
    start, stop = span
    try:
        token = raw[start:stop].decode("utf-8", "surrogatepass")
        value, end = json.decoder.scanstring(token, 1)
    except (UnicodeDecodeError, ValueError):
        return None
    if value != current or end != len(token):
        return None
    return b"".join((raw[:start], json.dumps(model).encode("ascii"), raw[stop:]))


class AnthropicAdapter(Adapter):
    name = "anthropic"
    client_format = ANTHROPIC

    def build_request(
        self,
        route: Route,
        request: ChatRequest,
        client_headers: Iterable[tuple[str, str]],
        keep_client_auth: bool = False,
    ) -> UpstreamRequest:
        path = "/messages" if route.base_path.endswith("/v1") else "/v1/messages"
        client_headers = list(client_headers)
        passthrough = request.original is not None and self.same_format(request)
        auth = {"anthropic-version": route.api_version or API_VERSION}
        if passthrough:  # the body is the client's: so is the API version it was written for
            auth.update(
                (k.lower(), v) for k, v in client_headers if k.lower() == "anthropic-version"
            )
        if route.api_key:
            auth["x-api-key"] = route.api_key
        elif keep_client_auth:  # proxy mode, same host, no key of our own: the client's
            auth.update((k.lower(), v) for k, v in client_headers if k.lower() == "x-api-key")
        # A client's anthropic-beta header travels on; the version is ours when the body
        # is built here (translated), the client's when it is the client's own.
        headers = forward_headers(client_headers, route, auth)
        model = model_for(route, request)
        dropped: dict[str, None] = {}
        if passthrough:
            body = passthrough_body(request, model)
        else:
            body = compact_json(build_body(request, model, dropped)).encode()
        return UpstreamRequest(
            url=join_url(route.base_url, path), headers=headers, body=body, dropped=tuple(dropped)
        )

    def count_tokens_request(
        self,
        route: Route,
        doc: dict[str, Any],
        client_headers: Iterable[tuple[str, str]],
        keep_client_auth: bool = False,
    ) -> UpstreamRequest:
        """POST /v1/messages/count_tokens for this route: the client's body with the
        route's model, the client's version and beta headers, the route's key."""
        path = (
            "/messages/count_tokens"
            if route.base_path.endswith("/v1")
            else "/v1/messages/count_tokens"
        )
        client_headers = list(client_headers)
        auth = {"anthropic-version": route.api_version or API_VERSION}
        for name, value in client_headers:
            lower = name.lower()
            if lower == "anthropic-version" or (keep_client_auth and lower == "x-api-key"):
                auth[lower] = value
        if route.api_key:
            auth["x-api-key"] = route.api_key
        body = {**doc, "model": route.model} if route.model else doc
        return UpstreamRequest(
            url=join_url(route.base_url, path),
            headers=forward_headers(client_headers, route, auth),
            body=json_bytes(body),
        )

    def parse_response(self, body: bytes) -> dict[str, Any]:
        doc = json.loads(body)
        text: list[str] = []
        calls: list[dict[str, Any]] = []
        for block in doc.get("content") or []:
            if block.get("type") == "text":
                text.append(str(block.get("text") or ""))
            elif block.get("type") == "tool_use":
                calls.append(
                    tool_call_dict(
                        str(block.get("id") or ""),
                        str(block.get("name") or ""),
                        json.dumps(block.get("input") or {}, ensure_ascii=False),
                    )
                )
        usage = doc.get("usage") or {}
        return openai_completion(
            id=str(doc.get("id") or ""),
            model=str(doc.get("model") or ""),
            text="".join(text),
            tool_calls=calls,
            finish_reason=finish_reason(doc.get("stop_reason")),
            prompt_tokens=input_tokens(usage),
            completion_tokens=as_int(usage.get("output_tokens")),
            cache_read_tokens=as_int(usage.get("cache_read_input_tokens")),
            cache_write_tokens=as_int(usage.get("cache_creation_input_tokens")),
        )

    def stream_decoder(self) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder()


def input_tokens(usage: dict[str, Any]) -> int:
    """Prompt tokens including the cached ones: Anthropic's `input_tokens` excludes the
    tokens read from (`cache_read_input_tokens`) and written to
    (`cache_creation_input_tokens`) its prompt cache."""
    return (
        as_int(usage.get("input_tokens"))
        + as_int(usage.get("cache_creation_input_tokens"))
        + as_int(usage.get("cache_read_input_tokens"))
    )


class AnthropicStreamDecoder(JSONEventDecoder):
    """message_start … content_block_* … message_delta, message_stop → canonical events.
    Tool-use blocks get consecutive tool-call indexes; thinking deltas are dropped."""

    def __init__(self) -> None:
        super().__init__()
        self._tool_index: dict[int, int] = {}
        self._prompt = 0
        self._completion = 0
        self._cache_read = 0
        self._cache_write = 0
        self._usage_sent = False

    def _read_usage(self, usage: dict[str, Any]) -> None:
        """message_start carries the prompt counts; message_delta's usage is cumulative
        and may repeat or update them (the cache fields with input_tokens, or alone)."""
        if usage.get("input_tokens") is not None:
            self._prompt = input_tokens(usage)
            self._cache_read = as_int(usage.get("cache_read_input_tokens"))
            self._cache_write = as_int(usage.get("cache_creation_input_tokens"))
        else:
            for name in ("cache_read_input_tokens", "cache_creation_input_tokens"):
                if usage.get(name) is not None:
                    extra = as_int(usage.get(name))
                    if name == "cache_read_input_tokens":
                        self._prompt += extra - self._cache_read
                        self._cache_read = extra
                    else:
                        self._prompt += extra - self._cache_write
                        self._cache_write = extra
        if "output_tokens" in usage:
            self._completion = as_int(usage.get("output_tokens"))

    def handle(self, doc: dict[str, Any], out: list[ev.StreamEvent]) -> None:
        kind = doc.get("type")
        if kind == "message_start":
            message = doc.get("message") or {}
            self._read_usage(message.get("usage") or {})
            out.append(
                ev.Start(id=str(message.get("id") or ""), model=str(message.get("model") or ""))
            )
        elif kind == "content_block_start":
            block = doc.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self.next_tool_index()
                self._tool_index[as_int(doc.get("index"))] = index
                out.append(
                    ev.ToolCallStart(
                        index, str(block.get("id") or ""), str(block.get("name") or "")
                    )
                )
                if block.get("input"):
                    out.append(ev.ToolCallDelta(index, json.dumps(block["input"])))
            elif block.get("type") == "text" and block.get("text"):
                out.append(ev.TextDelta(str(block["text"])))
        elif kind == "content_block_delta":
            delta = doc.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                out.append(ev.TextDelta(str(delta["text"])))
            elif delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                index = self._tool_index.get(as_int(doc.get("index")))
                if index is not None:
                    out.append(ev.ToolCallDelta(index, str(delta["partial_json"])))
        elif kind == "message_delta":
            self._read_usage(doc.get("usage") or {})
            reason = (doc.get("delta") or {}).get("stop_reason")
            if reason:
                out.append(ev.Finish(finish_reason(reason)))
        elif kind == "message_stop":
            self._send_usage(out)
        elif kind == "error":
            error = doc.get("error") or {}
            out.append(
                ev.StreamError(
                    str(error.get("message") or "upstream error"),
                    str(error.get("type") or "upstream_error"),
                )
            )

    def end(self, out: list[ev.StreamEvent]) -> None:
        self._send_usage(out)

    def _send_usage(self, out: list[ev.StreamEvent]) -> None:
        if not self._usage_sent and (self._prompt or self._completion):
            self._usage_sent = True
            out.append(
                ev.Usage(self._prompt, self._completion, self._cache_read, self._cache_write)
            )
