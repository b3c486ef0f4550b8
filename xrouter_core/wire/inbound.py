"""Client wire formats in: parse a request body once into a ChatRequest.

The router works on OpenAI chat-completion bodies; other client formats are
translated into one here so the rest of the path has a single shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

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


def load_json_object(raw: bytes | None) -> dict[str, Any]:
    if not raw:
        raise RouterError(
            400, "The request body is empty; send a JSON object.", code="invalid_json"
        )
    try:
        body = json.loads(raw)
    except UnicodeDecodeError:
        raise RouterError(
            400, "The request body is not valid UTF-8.", code="invalid_encoding"
        ) from None
    except ValueError as exc:
        raise RouterError(
            400,
            f"The request body is not valid JSON: {exc.msg} at position {exc.pos}.",
            code="invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise RouterError(400, "The request body must be a JSON object.", code="invalid_json")
    return body


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


def parse_anthropic_messages(raw: bytes | None) -> ChatRequest:
    """An Anthropic Messages body → the internal OpenAI-shaped request.

    Translated: model, system (string or text blocks), messages (text, images, tool_use,
    tool_result), max_tokens, temperature, top_p, stop_sequences, stream, tools,
    tool_choice (incl. disable_parallel_tool_use), metadata.user_id. Dropped: top_k,
    thinking settings and thinking blocks, cache_control marks.
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
    body: dict[str, Any] = {}
    if model:
        body["model"] = model
    out: list[dict[str, Any]] = []
    system = doc.get("system")
    system_text = system if isinstance(system, str) else _blocks_text(system)
    if system_text:
        out.append({"role": "system", "content": system_text})
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise RouterError(
                400,
                f"messages[{index}] must be an object with role 'user' or 'assistant'.",
                code="invalid_messages",
            )
        if message["role"] == "assistant":
            out.append(_assistant_message(message.get("content")))
        else:
            out.extend(_user_messages(message.get("content")))
    body["messages"] = out
    for name in ("temperature", "top_p", "max_tokens"):
        if name in doc:
            body[name] = doc[name]
    stops = doc.get("stop_sequences")
    if isinstance(stops, list) and stops:
        body["stop"] = stops
    tools = [
        {
            "type": "function",
            "function": {
                "name": tool["name"],
                "description": tool.get("description") or "",
                "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
            },
        }
        for tool in doc.get("tools") or []
        if isinstance(tool, dict) and isinstance(tool.get("name"), str)
    ]
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
    return ChatRequest(body=body, client_format=ANTHROPIC)


def _blocks_text(blocks: Any) -> str:
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        return ""
    return "\n".join(
        b["text"]
        for b in blocks
        if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
    )


def _image_part(block: dict[str, Any]) -> dict[str, Any] | None:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type') or 'image/png'};base64,{source.get('data') or ''}"
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        return None
    return {"type": "image_url", "image_url": {"url": url}}


def _user_messages(content: Any) -> list[dict[str, Any]]:
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
        elif kind == "image":
            image = _image_part(block)
            if image:
                parts.append(image)
        elif kind == "tool_result":
            text = _blocks_text(block.get("content"))
            if block.get("is_error"):
                text = f"Error: {text}"
            results.append(
                {
                    "role": "tool",
                    "tool_call_id": str(block.get("tool_use_id") or ""),
                    "content": text,
                }
            )
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        user_content: Any = "\n".join(p["text"] for p in parts) if only_text else parts
        results.append({"role": "user", "content": user_content})
    return results


def _assistant_message(content: Any) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            text.append(block["text"])
        elif block.get("type") == "tool_use":
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
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(text) or (None if calls else ""),
    }
    if calls:
        message["tool_calls"] = calls
    return message
