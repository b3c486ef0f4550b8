"""Client wire formats in: parse a request body once into a ChatRequest.

The router works on OpenAI chat-completion bodies; other client formats are
translated into one here so the rest of the path has a single shape.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import orjson

from xrouter_core.wire.errors import RouterError

OPENAI = "openai"
ANTHROPIC = "anthropic"
# OpenAI's Responses API (POST /v1/responses), parsed and rendered in wire/responses.py.
RESPONSES = "responses"
# Above this a token limit is a mistake or an attack, not a request: no model has it.
MAX_TOKENS_LIMIT = 2**31 - 1
TOKEN_LIMIT_FIELDS = ("max_tokens", "max_completion_tokens")


@dataclass(slots=True)
class ChatRequest:
    """One parsed chat request, in OpenAI's shape, plus what the client expects back."""

    body: dict[str, Any]
    client_format: str = OPENAI
    # A Responses client's request details (wire/responses.py ResponsesCall), else None.
    responses: Any = None
    # An Anthropic client's own body, parsed and raw, for a route that speaks its format
    # (forwarded as sent, only `model` replaced); None for OpenAI clients, whose `body`
    # is their own.
    original: dict[str, Any] | None = None
    raw: bytes = b""
    # What the OpenAI shape above leaves out of the client's body (fields, roles, block
    # types), named for the one debug line a translating route logs.
    dropped: tuple[str, ...] = ()
    # Part of an agent session (routing/sessions.py): a route that translates marks the
    # prompt for its provider's cache (Anthropic: cache_control on the system prompt and
    # on the last message).
    cache_prefix: bool = False
    # What routing reads off the messages (routing/extract.py's Reading, made by
    # `reading_of`): the person's latest message and the system text, once per request.
    reading: Any = None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body["messages"]

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def model(self) -> str:
        model = self.body.get("model")
        return model if isinstance(model, str) else ""

    @property
    def wants_usage(self) -> bool:
        """Did the client ask for the usage chunk at the end of a stream?"""
        options = self.body.get("stream_options")
        return isinstance(options, dict) and bool(options.get("include_usage"))


def _no_constant(name: str) -> Any:
    """NaN, Infinity and -Infinity: Python's json reads them, JSON (and providers) do not."""
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    """A JSON number too large for a float (1e999) would go on as Infinity: refused."""
    value = float(text)
    if value in (math.inf, -math.inf):
        raise ValueError(f"the number {text[:40]} is too large")
    return value


# A run of 19 digits may be an integer beyond 64 bits (below -2**63 or above 2**64 - 1),
# which orjson reads as a float and so would change: such a body is read by Python's json,
# which keeps it exact. Found by mapping every digit to 0 and looking for 19 zeros: two C
# passes at about 1 ns a byte, where the regex \d{19} takes 18.
DIGITS_AS_ZEROS = bytes.maketrans(b"123456789", b"000000000")
NINETEEN_DIGITS = b"0" * 19


def has_long_number(raw: bytes) -> bool:
    return NINETEEN_DIGITS in raw.translate(DIGITS_AS_ZEROS)


def load_json_object(raw: bytes | None) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong with it.

    orjson reads it first: about 2.3 times faster than Python's json on an agent's 80-300 kB
    body, which every request of theirs pays. It refuses what the router refuses too (NaN,
    Infinity, numbers beyond a float, lone surrogates), and anything it refuses or might
    change (a 19-digit number) is read again by Python's json, whose errors the client
    gets: a body is accepted, or refused with the same message, exactly as before
    (tests/test_fuzz.py compares the two on random bodies)."""
    if not raw:
        raise RouterError(
            400, "The request body is empty; send a JSON object.", code="invalid_json"
        )
    if not has_long_number(raw):
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
        else:
            if not isinstance(body, dict):
                raise RouterError(
                    400, "The request body must be a JSON object.", code="invalid_json"
                )
            return body
    return _load_json_object_exactly(raw)


def _load_json_object_exactly(raw: bytes) -> dict[str, Any]:
    """Python's json, with the router's own refusals and messages."""
    try:
        body = json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except UnicodeDecodeError:
        raise RouterError(
            400, "The request body is not valid UTF-8.", code="invalid_encoding"
        ) from None
    except json.JSONDecodeError as exc:
        raise RouterError(
            400,
            f"The request body is not valid JSON: {exc.msg} at position {exc.pos}.",
            code="invalid_json",
        ) from None
    except ValueError as exc:  # a number of more than 4300 digits, NaN, Infinity
        raise RouterError(
            400, f"The request body is not valid JSON: {exc}.", code="invalid_json"
        ) from None
    except RecursionError:
        raise RouterError(
            400, "The request body is nested too deeply to be a chat request.", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise RouterError(400, "The request body must be a JSON object.", code="invalid_json")
    if LONE_SURROGATE_ESCAPE.search(raw) and not _encodable(body):
        raise RouterError(
            400,
            "The request body holds a lone UTF-16 surrogate escape (like \\ud800), which is "
            "not text; send the pair or the character itself.",
            code="invalid_encoding",
        )
    return body


# A \uD800-\uDFFF escape: a pair (an emoji) is text, a lone one is not. Searched on the raw
# bytes, so a body without such escapes costs no second pass.
LONE_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _encodable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_openai_chat(raw: bytes | None) -> ChatRequest:
    body = load_json_object(raw)
    messages = body.get("messages")
    if messages is None:
        raise RouterError(
            400, "'messages' is required.", code="missing_messages", type="invalid_request_error"
        )
    if not isinstance(messages, list) or not messages:
        raise RouterError(400, "'messages' must be a non-empty array.", code="invalid_messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RouterError(
                400, f"messages[{index}] must be an object with a 'role'.", code="invalid_messages"
            )
        _check_message_parts(message, index)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RouterError(400, "'model' must be a string.", code="invalid_model")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise RouterError(400, "'stream' must be true or false.", code="invalid_stream")
    for name in TOKEN_LIMIT_FIELDS:
        value = body.get(name)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not 1 <= value <= MAX_TOKENS_LIMIT
        ):
            raise RouterError(
                400,
                f"'{name}' must be a whole number from 1 to {MAX_TOKENS_LIMIT}.",
                code="invalid_max_tokens",
            )
    return ChatRequest(body=body)


def _check_message_parts(message: dict[str, Any], index: int) -> None:
    """What OpenAI refuses too (400): `tool_calls` that is not a list of call objects
    (each with a `function` object, if any), content that is neither text, parts nor null,
    parts that are not objects. Left in, they would fail while the request is
    translated for a route."""
    content = message.get("content")
    if content is not None and not isinstance(content, str | list):
        raise RouterError(
            400,
            f"messages[{index}].content must be a string, an array of parts or null.",
            code="invalid_messages",
        )
    if isinstance(content, list) and not all(isinstance(part, dict) for part in content):
        raise RouterError(
            400, f"messages[{index}].content parts must be objects.", code="invalid_messages"
        )
    calls = message.get("tool_calls")
    if calls is None:
        return
    if not isinstance(calls, list) or not all(
        isinstance(call, dict) and isinstance(call.get("function") or {}, dict) for call in calls
    ):
        raise RouterError(
            400,
            f"messages[{index}].tool_calls must be an array of objects with a 'function' object.",
            code="invalid_messages",
        )


def content_text(content: Any) -> str:
    """The text of a message's content, string or list of parts (non-text parts skipped)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") in ("text", "input_text"):
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return ""


# ---- Anthropic Messages in ------------------------------------------------------------

ANTHROPIC_TOOL_CHOICE = {"auto": "auto", "any": "required", "none": "none"}


# The Messages fields translated into the OpenAI shape; any other is named as dropped.
ANTHROPIC_TRANSLATED = frozenset(
    {
        "model",
        "system",
        "messages",
        "max_tokens",
        "temperature",
        "top_p",
        "stop_sequences",
        "stream",
        "tools",
        "tool_choice",
        "metadata",
    }
)


def parse_anthropic_messages(raw: bytes | None) -> ChatRequest:
    """An Anthropic Messages body → the internal OpenAI-shaped request (the client's own
    body is kept beside it, for routes that speak Messages themselves).

    Translated: model, system (string or text blocks), messages (text, images, tool_use,
    tool_result; a `system` message inside the conversation stays a system message in
    place), max_tokens, temperature, top_p, stop_sequences, stream, tools, tool_choice
    (incl. disable_parallel_tool_use), metadata.user_id. Anything else (top_k, thinking
    and thinking blocks, cache_control marks, unknown fields, roles and block types) is
    left out, never refused, and named in `dropped`.
    """
    doc = load_json_object(raw)
    messages = doc.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RouterError(400, "'messages' must be a non-empty array.", code="invalid_messages")
    model = doc.get("model")
    if model is not None and not isinstance(model, str):
        raise RouterError(400, "'model' must be a string.", code="invalid_model")
    if "stream" in doc and not isinstance(doc["stream"], bool):
        raise RouterError(400, "'stream' must be true or false.", code="invalid_stream")
    dropped: dict[str, None] = dict.fromkeys(k for k in doc if k not in ANTHROPIC_TRANSLATED)
    body: dict[str, Any] = {}
    if model:
        body["model"] = model
    out: list[dict[str, Any]] = []
    system = doc.get("system")
    system_text = system if isinstance(system, str) else _blocks_text(system, dropped)
    if system_text:
        out.append({"role": "system", "content": system_text})
    for message in messages:
        role = message.get("role") if isinstance(message, dict) else None
        if role == "assistant":
            out.append(_assistant_message(message.get("content"), dropped))
        elif role == "user":
            out.extend(_user_messages(message.get("content"), dropped))
        elif role in ("system", "developer"):  # mid-conversation system (a beta)
            text = _blocks_text(message.get("content"), dropped)
            if text:
                out.append({"role": "system", "content": text})
        else:
            what = f"role {role!r}" if isinstance(role, str) else "a message without a role"
            dropped[what] = None
    if not out:
        raise RouterError(
            400, "'messages' holds no user or assistant message.", code="invalid_messages"
        )
    body["messages"] = out
    for name in ("temperature", "top_p", "max_tokens"):
        if name in doc:
            body[name] = doc[name]
    stops = doc.get("stop_sequences")
    if isinstance(stops, list) and stops:
        body["stop"] = stops
    tools = []
    for tool in doc.get("tools") or []:
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            continue
        if tool.get("type", "custom") != "custom":  # a server tool (web_search_…): theirs only
            dropped[f"tool type {tool['type']!r}"] = None
            continue
        if "cache_control" in tool:
            dropped["cache_control"] = None
        tools.append(
            {
                "type": "function",
                "function": {
                    "name": tool["name"],
                    "description": tool.get("description") or "",
                    "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
                },
            }
        )
    if tools:
        body["tools"] = tools
    choice = doc.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "tool" and isinstance(choice.get("name"), str):
            body["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
        elif kind in ANTHROPIC_TOOL_CHOICE:
            body["tool_choice"] = ANTHROPIC_TOOL_CHOICE[kind]
        if choice.get("disable_parallel_tool_use") and tools:
            body["parallel_tool_calls"] = False
    metadata = doc.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        body["user"] = metadata["user_id"]
    if doc.get("stream"):
        body["stream"] = True
    return ChatRequest(
        body=body,
        client_format=ANTHROPIC,
        original=doc,
        raw=raw or b"",
        dropped=tuple(dropped),
    )


def _note(block: dict[str, Any], dropped: dict[str, None] | None, kind: Any = None) -> None:
    """Name what the OpenAI shape cannot carry: a block type (kind) and cache_control."""
    if dropped is None:
        return
    if kind is not None:
        dropped[f"{kind} block" if isinstance(kind, str) else "a block without a type"] = None
    if "cache_control" in block:
        dropped["cache_control"] = None


def _blocks_text(blocks: Any, dropped: dict[str, None] | None = None) -> str:
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        return ""
    texts = []
    for block in blocks:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
            _note(block, dropped)
        else:
            _note(block, dropped, block.get("type"))
    return "\n".join(texts)


def _image_part(block: dict[str, Any]) -> dict[str, Any] | None:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type') or 'image/png'};base64,{source.get('data') or ''}"
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        return None
    return {"type": "image_url", "image_url": {"url": url}}


def _user_messages(content: Any, dropped: dict[str, None]) -> list[dict[str, Any]]:
    """One Anthropic user turn: tool results become `tool` messages, the rest one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append({"type": "text", "text": block["text"]})
            _note(block, dropped)
        elif kind == "image":
            image = _image_part(block)
            if image:
                parts.append(image)
            _note(block, dropped, None if image else "image source")
        elif kind == "tool_result":
            text = _blocks_text(block.get("content"), dropped)
            if block.get("is_error"):
                text = f"Error: {text}"
            results.append(
                {
                    "role": "tool",
                    "tool_call_id": str(block.get("tool_use_id") or ""),
                    "content": text,
                }
            )
            _note(block, dropped)
        else:
            _note(block, dropped, kind)
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        user_content: Any = "\n".join(p["text"] for p in parts) if only_text else parts
        results.append({"role": "user", "content": user_content})
    return results


def _assistant_message(content: Any, dropped: dict[str, None]) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            text.append(block["text"])
            _note(block, dropped)
        elif kind == "tool_use":
            calls.append(
                {
                    "id": str(block.get("id") or ""),
                    "type": "function",
                    "function": {
                        "name": str(block.get("name") or ""),
                        "arguments": json.dumps(block.get("input") or {}, ensure_ascii=False),
                    },
                }
            )
            _note(block, dropped)
        else:
            _note(block, dropped, kind)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(text) or (None if calls else ""),
    }
    if calls:
        message["tool_calls"] = calls
    return message
