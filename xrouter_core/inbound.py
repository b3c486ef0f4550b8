"""Client wire formats in: parse a request body once into a ChatRequest.

The router works on OpenAI chat-completion bodies; other client formats are
translated into one here so the rest of the path has a single shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from xrouter_core.errors import RouterError

OPENAI = "openai"
# Above this a token limit is a mistake or an attack, not a request: no model has it.
MAX_TOKENS_LIMIT = 2**31 - 1
TOKEN_LIMIT_FIELDS = ("max_tokens", "max_completion_tokens")


@dataclass(slots=True)
class ChatRequest:
    """One parsed chat request, in OpenAI's shape, plus what the client expects back."""

    body: dict[str, Any]
    client_format: str = OPENAI
    # Set by the policy; read by adapters, the stream glue and usage.
    meta: dict[str, Any] = field(default_factory=dict)

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
