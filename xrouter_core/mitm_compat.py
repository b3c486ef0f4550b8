"""The one place that reaches into mitmproxy internals, guarded and tested.

mitmproxy answers a failed upstream connection with its own HTML 502 page, and an
addon cannot replace it (the `error` hook fires, then the page is sent). Routed
flows need that answer to be ours: a JSON error naming the route, or the answer of
a fallback route. So for flows the router marked, a connection failure before any
response becomes a placeholder 502 that goes through the normal `response` hook,
where the router turns it into the real answer. Everything else keeps mitmproxy's
behaviour. `tests/test_mitm_compat.py` fails loudly if mitmproxy changes shape.

Two more answers must be ours for the same reason:
- the upstream dies in the middle of a routed stream: mitmproxy would cut the client's
  chunked body; instead the stream translator's `fail` adds an OpenAI-style error event
  and the body ends cleanly;
- a request body over MAX_BODY_BYTES on the router's own listener: checked where
  mitmproxy checks its own `body_size_limit` (from Content-Length before the body is
  read, or as a chunked body grows, so it costs nothing and nothing big is buffered),
  answered with a JSON 413 instead of mitmproxy's HTML page. mitmproxy's
  `body_size_limit` is not used because it would also cut large downloads of
  unrelated traffic in proxy mode.
"""

from __future__ import annotations

import functools
import json
import logging

from mitmproxy import flow as mitm_flow
from mitmproxy import http
from mitmproxy.net.http import url as mitm_url
from mitmproxy.proxy.events import Event
from mitmproxy.proxy.layers.http import (
    HttpStream,
    ResponseData,
    ResponseProtocolError,
    SendHttp,
    _http1,
)
from mitmproxy.proxy.layers.http._hooks import HttpErrorHook
from mitmproxy.proxy.mode_specs import ReverseMode

log = logging.getLogger("xrouter")

UPSTREAM_ERROR = "xrouter.upstream_error"
MARK = "xrouter.routed"

# Marks a protocol error whose message is a ready JSON error body (see make_error_response).
JSON_ERROR = "xrouter-json:"

_installed = False
_max_body_bytes = 0


@functools.lru_cache(maxsize=256)
def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of an upstream URL, parsed once per distinct URL."""
    scheme, host, port, path = mitm_url.parse(url)
    return scheme.decode(), host.decode("idna"), port, path.decode("utf-8", "surrogateescape")


def set_max_body_bytes(limit: int) -> None:
    global _max_body_bytes
    _max_body_bytes = max(0, limit)


def install(max_body_bytes: int | None = None) -> bool:
    """Patch HttpStream once; returns False (and logs) when mitmproxy's shape changed."""
    global _installed
    if max_body_bytes is not None:
        set_max_body_bytes(max_body_bytes)
    if _installed:
        return True
    original = getattr(HttpStream, "handle_protocol_error", None)
    original_check_body_size = getattr(HttpStream, "check_body_size", None)
    original_error_page = getattr(_http1, "make_error_response", None)
    if (
        original is None
        or original_check_body_size is None
        or original_error_page is None
        or not hasattr(HttpStream, "send_response")
        or not hasattr(HttpStream, "state_done")
        or not hasattr(HttpStream, "state_stream_response_body")
    ):
        log.warning(
            "this mitmproxy version is not supported for upstream error answers; "
            "unreachable upstreams get mitmproxy's own 502 page"
        )
        return False

    def handle_protocol_error(self: HttpStream, event: Event):
        flow = self.flow
        if (
            isinstance(event, ResponseProtocolError)
            and flow.response is None
            and flow.metadata.get(MARK)
            and self.client_state == self.state_done
        ):
            flow.metadata[UPSTREAM_ERROR] = event.message or "connection failed"
            flow.response = http.Response.make(502, b"", {"content-type": "application/json"})
            yield from self.send_response()
            return
        stream = getattr(flow.response, "stream", None) if flow.response else None
        if (
            isinstance(event, ResponseProtocolError)
            and flow.metadata.get(MARK)
            and self.server_state == self.state_stream_response_body
            and self.client_state == self.state_done
            and callable(getattr(stream, "fail", None))
        ):
            flow.metadata[UPSTREAM_ERROR] = event.message or "connection lost"
            tail = stream.fail(
                f"The upstream closed the stream before it ended: {event.message or 'connection lost'}"
            )
            if tail:
                yield SendHttp(ResponseData(self.stream_id, tail), self.context.client)
            yield from self.send_response(already_streamed=True)
            return
        yield from original(self, event)

    def check_body_size(self: HttpStream, request: bool):
        limit = _max_body_bytes
        if request and limit and isinstance(self.context.client.proxy_mode, ReverseMode):
            if self.request_body_buf:
                size = len(self.request_body_buf)  # a chunked body, as it grows
            else:
                # Content-Length, before the body is read (mitmproxy checked its syntax).
                declared = self.flow.request.headers.get("content-length", "")
                size = int(declared) if declared.isdigit() else 0
            if size > limit:
                message = f"The request body is larger than the router's limit of {limit} bytes (MAX_BODY_BYTES)."
                self.flow.error = mitm_flow.Error(message)
                yield HttpErrorHook(self.flow)
                body = json.dumps(
                    {
                        "error": {
                            "message": message,
                            "type": "invalid_request_error",
                            "code": "request_too_large",
                        }
                    }
                )
                yield SendHttp(
                    ResponseProtocolError(self.stream_id, JSON_ERROR + body, 413),
                    self.context.client,
                )
                self.client_state = self.state_errored
                self.flow.live = False
                return True
        return (yield from original_check_body_size(self, request))

    def make_error_response(status_code: int, message: str = "") -> bytes:
        if message.startswith(JSON_ERROR):
            response = http.Response.make(
                status_code,
                message[len(JSON_ERROR) :].encode(),
                {"content-type": "application/json", "connection": "close"},
            )
            return _http1.http1.assemble_response(response)
        return original_error_page(status_code, message)

    HttpStream.handle_protocol_error = handle_protocol_error  # type: ignore[method-assign]
    HttpStream.check_body_size = check_body_size  # type: ignore[method-assign]
    _http1.make_error_response = make_error_response
    _installed = True
    return True
