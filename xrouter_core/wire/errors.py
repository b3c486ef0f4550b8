"""OpenAI-style error bodies: the one error shape every client of the router gets."""

from __future__ import annotations

import json


class RouterError(Exception):
    """An error the router answers itself, with an HTTP status and an OpenAI-style body."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.headers = headers or {}

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code)


def error_body(message: str, type: str = "invalid_request_error", code: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type, "code": code}}).encode()


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """Replace every configured secret in text; used on anything a client or log sees."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "***")
    return text
