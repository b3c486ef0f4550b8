"""The router's own endpoints as plain data: which paths and methods it serves, the checks
on its own API (method, auth, header values, body), and the answers it makes itself.

`LocalResponse` is what the addon turns into a mitmproxy response.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from xrouter_core.wire.errors import RouterError

JSON = "application/json"

# Paths the router answers on its own listener, with the methods each accepts.
CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")
PLOTLY_PATH = "/dashboard/plotly.min.js"
# Anthropic's Messages API, for Anthropic clients (Claude Code, the Anthropic SDK).
MESSAGES_PATH = "/v1/messages"
# OpenAI's Responses API, for Responses clients (Codex CLI, the SDKs' client.responses).
RESPONSES_PATH = "/v1/responses"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
EMBEDDINGS_PATH = "/v1/embeddings"
# The live feed of routing events (Server-Sent Events), guarded like the usage pages.
EVENTS_PATH = "/events"
# The paying wallet's address, networks, today's spend and caps (docs/payments.md).
WALLET_PATH = "/wallet"
# Which rule, tags and routes a request would get, without sending it (routing/rules.py).
EXPLAIN_PATH = "/v1/route/explain"
# GET /v1/models/{id}: one logical model (ids hold a slash, so this is a prefix).
MODEL_PREFIX = "/v1/models/"
ENDPOINTS: dict[str, tuple[str, ...]] = {
    "/": ("GET",),
    "/health": ("GET",),
    "/v1/models": ("GET",),
    **{path: ("POST",) for path in CHAT_PATHS},
    MESSAGES_PATH: ("POST",),
    RESPONSES_PATH: ("POST",),
    COUNT_TOKENS_PATH: ("POST",),
    EMBEDDINGS_PATH: ("POST",),
    "/usage": ("GET",),
    "/usage/reset": ("POST",),
    "/metrics": ("GET",),
    "/dashboard": ("GET",),
    EVENTS_PATH: ("GET",),
    WALLET_PATH: ("GET",),
    PLOTLY_PATH: ("GET",),
    EXPLAIN_PATH: ("POST",),
}
# The dashboard page and plotly hold no data: the page asks for the key and sends it
# with its /usage calls, which (like /metrics) need it.
# `/` names the service only, for clients' connectivity checks (HEAD /).
PUBLIC_PATHS = frozenset({"/", "/health", "/dashboard", PLOTLY_PATH})
SERVED = (
    "POST /v1/chat/completions, POST /v1/messages, POST /v1/messages/count_tokens,"
    " GET /v1/models, GET /v1/models/{id}, POST /v1/route/explain"
)


@dataclass(slots=True)
class LocalResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": JSON})
    # Why an error answer refused the request (its code), for the router's log line.
    reason: str = ""

    @classmethod
    def json(cls, doc: Any) -> LocalResponse:
        return cls(200, json.dumps(doc).encode())

    @classmethod
    def error(cls, error: RouterError) -> LocalResponse:
        return cls(
            error.status,
            error.body(),
            {"content-type": JSON, **error.headers},
            error.code or error.type,
        )


def check_method(path: str, method: str) -> None:
    """404 for unknown paths, 405 (with Allow) for a known path and the wrong method."""
    allowed = ENDPOINTS.get(path)
    if allowed is None and path.startswith(MODEL_PREFIX) and len(path) > len(MODEL_PREFIX):
        allowed = ("GET",)
    if allowed is None:
        raise RouterError(
            404, f"Unknown path {path[:200]!r}. The router serves {SERVED}.", code="not_found"
        )
    if method not in allowed and not (method == "HEAD" and "GET" in allowed):
        raise RouterError(
            405,
            f"{method} is not allowed on {path}; use {', '.join(allowed)}.",
            code="method_not_allowed",
            headers={"allow": ", ".join(allowed)},
        )


# Control characters no header value may hold (RFC 9110 5.5); tab is allowed.
HEADER_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def check_header_values(fields: tuple[tuple[bytes, bytes], ...]) -> None:
    """Refuse (400) a header value with NUL, CR, LF or another control character, so
    none can be forwarded to a provider."""
    for name, value in fields:
        if HEADER_CONTROL.search(value) or HEADER_CONTROL.search(name):
            raise RouterError(
                400,
                "A request header holds a control character; header values must be plain text.",
                code="invalid_header",
            )


def body_error(content_type: str, error: RouterError) -> RouterError:
    """A body that did not parse under a non-JSON content type: say what to send (415)."""
    if error.code in ("invalid_json", "invalid_encoding") and content_type:
        media = content_type.split(";", 1)[0].strip().lower()
        if media and not media.endswith("json"):
            return RouterError(
                415,
                f"Content-Type {media[:60]!r} is not supported; send application/json.",
                code="unsupported_media_type",
            )
    return error


def bearer_token(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def check_auth(
    path: str,
    headers: Mapping[str, str],
    router_api_key: str,
    find_key: Callable[[str], Any] | None = None,
    client_keys_allowed: bool = True,
) -> Any:
    """With ROUTER_API_KEY set (or client keys), every path but /health needs a key
    (ROUTER_API_KEY compared in constant time). Returns the client key object `find_key`
    found for the key sent, or None for ROUTER_API_KEY and open routers.
    `client_keys_allowed` False: only ROUTER_API_KEY opens this path (the usage pages)."""
    if (not router_api_key and find_key is None) or path in PUBLIC_PATHS:
        return None
    given = bearer_token(headers) or headers.get("x-api-key", "").strip() or None
    if given is not None:
        if router_api_key and hmac.compare_digest(given.encode(), router_api_key.encode()):
            return None
        if find_key is not None and client_keys_allowed:
            found = find_key(given)
            if found is not None:
                return found
    raise RouterError(
        401,
        "Missing or invalid API key. Send 'Authorization: Bearer <ROUTER_API_KEY>'.",
        type="authentication_error",
        code="invalid_api_key",
        headers={"www-authenticate": "Bearer"},
    )


def models_page(logical_models: list[str]) -> LocalResponse:
    return LocalResponse.json(
        {
            "object": "list",
            "data": [model_object(name) for name in logical_models],
        }
    )


def model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "xrouter"}


def root_page(version: str) -> LocalResponse:
    return LocalResponse.json({"service": "xrouter", "version": version})


def model_page(path: str, logical_models: list[str]) -> LocalResponse:
    """GET /v1/models/{id}: the model object of a logical name, else OpenAI's 404."""
    name = unquote(path[len(MODEL_PREFIX) :])
    found = next((m for m in logical_models if m.lower() == name.strip().lower()), None)
    if found is not None:
        return LocalResponse.json(model_object(found))
    return LocalResponse.error(
        RouterError(
            404,
            f"The model {name[:200]!r} does not exist. GET /v1/models lists the router's models.",
            code="model_not_found",
        )
    )


def no_embeddings_route() -> LocalResponse:
    return LocalResponse.error(
        RouterError(
            404,
            f"No embeddings route is configured (set EMBEDDINGS_BASE_URL). The router serves {SERVED}.",
            code="not_found",
        )
    )


def count_tokens_estimate(doc: dict[str, Any]) -> LocalResponse:
    """Anthropic's count_tokens answer, estimated (no Anthropic route to ask): about four
    characters a token over the text of system, messages and tools, marked as such."""
    chars = sum(_text_chars(doc.get(name)) for name in ("system", "messages", "tools"))
    messages = doc.get("messages")
    overhead = 4 * len(messages) if isinstance(messages, list) else 0
    return LocalResponse.json({"input_tokens": (chars + 3) // 4 + overhead, "estimated": True})


# Keys whose values are markup, not text the model reads.
UNCOUNTED = frozenset({"type", "cache_control", "signature"})


def _text_chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_text_chars(v) for k, v in value.items() if k not in UNCOUNTED)
    if isinstance(value, list):
        return sum(_text_chars(v) for v in value)
    return 0
