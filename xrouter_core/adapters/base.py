"""The small interface every provider adapter implements, and the logic they share.

An adapter owns both directions for one provider family: the OpenAI-shaped
request out to the provider, and the provider's answer (whole or streamed) back
into OpenAI's shape or the canonical stream events.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from xrouter_core.canonical import StreamEvent
from xrouter_core.config import Route
from xrouter_core.inbound import ChatRequest

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
    }
)


@dataclass(slots=True)
class UpstreamRequest:
    """Where and what to send: the flow is rewritten to exactly this."""

    url: str
    headers: dict[str, str]
    body: bytes


class StreamDecoder(Protocol):
    """Provider stream bytes in (any chunking), canonical events out."""

    def feed(self, chunk: bytes) -> list[StreamEvent]: ...

    def finish(self) -> list[StreamEvent]: ...


class Adapter(Protocol):
    name: str
    # True when the provider speaks OpenAI's chat-completion wire format, so an OpenAI
    # client's stream can pass through without being decoded and re-rendered.
    openai_wire: bool

    def build_request(
        self,
        route: Route,
        request: ChatRequest,
        client_headers: Iterable[tuple[str, str]],
        keep_client_auth: bool = False,
    ) -> UpstreamRequest:
        """The provider request. `keep_client_auth`: the client's own Authorization may
        go along (proxy mode, same host, route without a key of its own)."""
        ...

    def parse_response(self, body: bytes) -> dict[str, Any]:
        """A whole provider answer as an OpenAI `chat.completion` dict (with usage)."""
        ...

    def stream_decoder(self) -> StreamDecoder: ...

    def error_message(self, status: int, body: bytes) -> str:
        """The provider's own error text, for an OpenAI-style error body."""
        ...


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
        if lower.startswith("x-xrouter-"):
            continue
        headers[lower] = value
    # Streams are translated and bodies parsed, so ask for them uncompressed.
    headers["accept-encoding"] = "identity"
    headers["content-type"] = "application/json"
    for name, value in route.headers.items():
        headers[name.lower()] = value
    headers.update(auth)
    return headers


def dump_json(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def error_text_from_json(body: bytes) -> str:
    """Most providers put the message at error.message, error (a string) or message."""
    try:
        doc = json.loads(body)
    except ValueError:
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
