"""The one place that reaches into mitmproxy internals, guarded and tested.

Three things a routed flow needs that mitmproxy's addon API does not offer:

1. **Our own answer for an unreachable upstream.** mitmproxy answers a failed upstream
   connection with its own HTML 502 page. For flows the router marked, a connection
   failure before any response becomes a placeholder 502 that goes through the normal
   `response` hook (with `flow.metadata[UPSTREAM_ERROR]` set), where the router turns it
   into the real answer.
2. **A retry on the same flow (fallback).** When the `response` hook sets
   `flow.metadata[RETRY]` (after rewriting `flow.request` for the next route), nothing is
   sent to the client: the stream opens a connection to the new upstream, sends the
   request again and waits for new response headers. The fallback answer then takes the
   normal path (responseheaders hook, stream translator), so it streams like any answer.
3. **A first-byte timeout per flow.** `flow.metadata[FIRST_BYTE_TIMEOUT]` (seconds), set
   before the request is sent, starts a mitmproxy wakeup timer; if no response headers
   came by then, the request is cancelled on the server connection and the failure takes
   path 1. A connect timeout is applied from the `server_connect` hook (`guard_connect`).

4. **A finished stream is freed at once.** Each HTTP stream is in reference cycles with
   itself (its state methods, bound to it, and its context's list of layers), so every
   finished request, with its flow, headers and bodies (~31 objects), waited for the
   garbage collector, reached the older generations and made full collections of 40-80 ms.
   After a normal end (`flow_done`: the HTTP layer has dropped the stream), the cycles are
   cut and reference counting frees it all when the last event leaves. Measured with the
   lean launcher at concurrency 64: RSS growth from 1,000 to 40,000 requests 7.3 % ->
   3.5 % (6 MiB less), and a little less CPU per request. (Without `python -O`, as under
   mitmdump, Python 3.12 keeps flows in other cycles: the exceptions caught by mitmproxy's
   debug-mode type checks hold frames.)

5. **Flow hooks answered inline (the lean launcher only).** mitmproxy runs every hook in a
   task of its own and resumes the stream through its connection handler when it is done,
   even when no addon listens or all listeners are plain functions: a round trip that cost
   more than the router's own work per hook. With `answer_hooks_inline(manager.answer_now)`
   (dispatch.py), an HTTP stream's flow hooks whose handlers are all synchronous run where
   the stream yields them, and the stream goes on at once. A handler that has to wait
   (the router's `request`, when its decision is not in memory) returns what is left, and
   that goes mitmproxy's way (dispatch.answer_now). mitmdump keeps mitmproxy's way for all:
   its addons may intercept a flow and wait for it to be resumed.

Everything else keeps mitmproxy's behaviour, and the normal path pays one dict lookup per
hook. `tests/test_mitm_compat.py` fails loudly if mitmproxy changes shape (tested on
mitmproxy 11.0.2, 11.1.3 and 12.2.3: same method names and states; 11.1.3 and 12 give a
protocol error an ErrorCode where 11.0 gave the HTTP status, see REQUEST_TOO_LARGE).

Two more answers must be ours, as in point 1:
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

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable

from mitmproxy import flow as mitm_flow
from mitmproxy import http
from mitmproxy.connection import Server
from mitmproxy.net.http import url as mitm_url
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers.http import (
    HttpStream,
    RequestProtocolError,
    ResponseData,
    ResponseProtocolError,
    SendHttp,
    _http1,
)
from mitmproxy.proxy.layers.http._events import (
    RequestData,
    RequestEndOfMessage,
    RequestHeaders,
)
from mitmproxy.proxy.layers.http._hooks import (
    HttpErrorHook,
    HttpRequestHeadersHook,
    HttpRequestHook,
    HttpResponseHeadersHook,
    HttpResponseHook,
)
from mitmproxy.proxy.mode_specs import ReverseMode

try:  # mitmproxy 11.1.3, 12: a protocol error carries an ErrorCode, mapped to a status on send
    from mitmproxy.proxy.layers.http import ErrorCode
except ImportError:  # mitmproxy 11.0: it carries the HTTP status itself
    ErrorCode = None

log = logging.getLogger("xrouter")

UPSTREAM_ERROR = "xrouter.upstream_error"
MARK = "xrouter.routed"
RETRY = "xrouter.retry"
FIRST_BYTE_TIMEOUT = "xrouter.first_byte_timeout"
_TIMER = "xrouter.first_byte_timer"
_TIMED_OUT = "xrouter.timed_out"
_DEADLINE = "xrouter.first_byte_deadline"
_STEP = "xrouter.first_byte_step"
# The first-byte timer re-arms in growing steps: mitmproxy keeps a wakeup task (and
# through it the flow) alive for its whole delay, even after the answer came; one 120 s
# task per request piled up to ~160 MB over 20,000 requests, and 0.25 s steps still kept
# ~250 finished flows alive at 1,000 requests/s (+7 MiB of RSS). The first step is short
# (a fast answer is let go 50 ms later); slow upstreams get doubling steps up to 1 s, so
# a long wait costs a few dozen wakeups, not hundreds.
TIMER_FIRST_STEP_S = 0.05
TIMER_MAX_STEP_S = 1.0

REQUIRED = (
    "handle_protocol_error",
    "send_response",
    "state_consume_request_body",
    "state_wait_for_response_headers",
    "state_done",
    "make_server_connection",
    "_handle_event",
    "check_body_size",
    "state_stream_response_body",
    "flow_done",
    "child_layer",
)
# mitmproxy.proxy.layers.http.HttpLayer keeps `connections` (Connection → layer).

# Marks a protocol error whose message is a ready JSON error body (see make_error_response).
JSON_ERROR = "xrouter-json:"
# The code of the 413 answer for a body over MAX_BODY_BYTES, in this mitmproxy's terms.
REQUEST_TOO_LARGE = ErrorCode.REQUEST_TOO_LARGE if ErrorCode is not None else 413

_installed = False
_max_body_bytes = 0

# The flow hooks an HTTP stream yields, and what may answer them inline (point 5).
INLINE_HOOKS = (
    HttpRequestHeadersHook,
    HttpRequestHook,
    HttpResponseHeadersHook,
    HttpResponseHook,
    HttpErrorHook,
)
_answer_now: Callable[[commands.StartHook], bool] | None = None


def answer_hooks_inline(answer: Callable[[commands.StartHook], bool] | None) -> None:
    """Let `answer(hook)` run an HTTP stream's flow hooks where the stream yields them;
    it returns False for a hook that must still take mitmproxy's way (None: all do)."""
    global _answer_now
    _answer_now = answer


@functools.lru_cache(maxsize=256)
def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of an upstream URL, parsed once per distinct URL."""
    scheme, host, port, path = mitm_url.parse(url)
    return scheme.decode(), host.decode("idna"), port, path.decode("utf-8", "surrogateescape")


def set_max_body_bytes(limit: int) -> None:
    global _max_body_bytes
    _max_body_bytes = max(0, limit)


def error_codes_known() -> bool:
    """Do protocol errors carry codes of one of the two known kinds (11.0: the HTTP status;
    11.1.3 and 12: an ErrorCode whose status for REQUEST_TOO_LARGE is 413)?"""
    if ErrorCode is None:
        return ResponseProtocolError.code == 502 and RequestProtocolError.code == 400
    status = getattr(REQUEST_TOO_LARGE, "http_status_code", None)
    return callable(status) and status() == 413 and isinstance(RequestProtocolError.code, ErrorCode)


def supported() -> bool:
    """Does this mitmproxy have the HttpStream shape the patches rely on?"""
    return (
        all(hasattr(HttpStream, name) for name in REQUIRED)
        and hasattr(_http1, "make_error_response")
        and error_codes_known()
    )


def install(max_body_bytes: int | None = None) -> bool:
    """Patch HttpStream once; returns False (and logs) when mitmproxy's shape changed."""
    global _installed
    if max_body_bytes is not None:
        set_max_body_bytes(max_body_bytes)
    if _installed:
        return True
    if not supported():
        log.warning(
            "this mitmproxy version is not supported for upstream error answers, fallback "
            "and first-byte timeouts; unreachable upstreams get mitmproxy's own 502 page"
        )
        return False

    original_protocol_error = HttpStream.handle_protocol_error
    original_send_response = HttpStream.send_response
    original_consume_body = HttpStream.state_consume_request_body
    original_handle_event = HttpStream._handle_event
    original_make_connection = HttpStream.make_server_connection
    original_check_body_size = HttpStream.check_body_size
    original_error_page = _http1.make_error_response
    original_flow_done = HttpStream.flow_done

    def make_server_connection(self: HttpStream):
        if self.flow.metadata.get(MARK):
            forget_failed_connections(self)
        return (yield from original_make_connection(self))

    def handle_protocol_error(self: HttpStream, event):
        flow = self.flow
        if (
            isinstance(event, ResponseProtocolError)
            and flow.response is None
            and flow.metadata.get(MARK)
            and self.client_state == self.state_done
        ):
            flow.metadata.pop(_TIMER, None)
            reason = flow.metadata.pop(_TIMED_OUT, None)
            flow.metadata[UPSTREAM_ERROR] = reason or event.message or "connection failed"
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
        yield from original_protocol_error(self, event)

    def send_response(self: HttpStream, already_streamed: bool = False):
        if already_streamed or not self.flow.metadata.get(MARK):
            yield from original_send_response(self, already_streamed)
            return
        # Run the original until the response hook has run; the router may then ask for a
        # retry instead of sending this (failed) answer to the client.
        inner = original_send_response(self, already_streamed)
        reply = None
        while True:
            try:
                command = inner.send(reply)
            except StopIteration:
                return
            reply = yield command
            if isinstance(command, HttpResponseHook) and self.flow.metadata.pop(RETRY, False):
                inner.close()
                yield from retry(self)
                return

    def retry(self: HttpStream):
        """Send flow.request (already rewritten for the next route) on a new connection."""
        flow = self.flow
        flow.response = None
        flow.metadata.pop(UPSTREAM_ERROR, None)
        self.response_body_buf.clear()
        self.server_state = self.state_wait_for_response_headers
        ok = yield from self.make_server_connection()
        if not ok:
            return  # handle_protocol_error has answered (or retried again)
        yield from send_request(self)

    def send_request(self: HttpStream):
        request = self.flow.request
        content = request.raw_content
        yield SendHttp(RequestHeaders(self.stream_id, request, not content), self.context.server)
        if content:
            yield SendHttp(RequestData(self.stream_id, content), self.context.server)
        yield SendHttp(RequestEndOfMessage(self.stream_id), self.context.server)
        yield from start_timer(self)

    def start_timer(self: HttpStream):
        seconds = self.flow.metadata.get(FIRST_BYTE_TIMEOUT)
        if seconds:
            self.flow.metadata[_DEADLINE] = time.monotonic() + float(seconds)
            self.flow.metadata.pop(_STEP, None)  # each attempt starts with a short step
            yield from arm_timer(self, float(seconds))

    def arm_timer(self: HttpStream, remaining: float):
        step = self.flow.metadata.get(_STEP, TIMER_FIRST_STEP_S / 2) * 2
        self.flow.metadata[_STEP] = min(step, TIMER_MAX_STEP_S)
        wakeup = commands.RequestWakeup(min(step, remaining))
        self.flow.metadata[_TIMER] = wakeup
        yield wakeup

    def state_consume_request_body(self: HttpStream, event):
        yield from original_consume_body(self, event)
        if (
            isinstance(event, RequestEndOfMessage)
            and self.flow.metadata.get(MARK)
            and self.flow.response is None
            and self.server_state == self.state_wait_for_response_headers
        ):
            yield from start_timer(self)

    def _handle_event(self: HttpStream, event):
        if isinstance(event, events.Wakeup):
            flow = getattr(self, "flow", None)
            if (
                flow is not None
                and flow.metadata.get(_TIMER) is event.command
                and self.server_state == self.state_wait_for_response_headers
                and flow.response is None
            ):
                flow.metadata.pop(_TIMER, None)
                remaining = flow.metadata.get(_DEADLINE, 0.0) - time.monotonic()
                if remaining > 0.001:
                    yield from arm_timer(self, remaining)
                    return
                seconds = float(flow.metadata.get(FIRST_BYTE_TIMEOUT) or 0)
                flow.metadata[_TIMED_OUT] = f"no response within {seconds:g}s (first-byte timeout)"
                # Cancel the request upstream; the server connection reports the failure
                # to this stream, which then takes the unreachable-upstream path.
                yield SendHttp(
                    RequestProtocolError(
                        self.stream_id, "first-byte timeout", RequestProtocolError.code
                    ),
                    self.context.server,
                )
            return  # a stale timer (answered in time, or an earlier attempt): ignore
        answer = _answer_now
        if answer is None:
            yield from original_handle_event(self, event)
            return
        inner = original_handle_event(self, event)
        reply = None
        while True:
            try:
                command = inner.send(reply)
            except StopIteration:
                return
            if isinstance(command, INLINE_HOOKS) and answer(command):
                reply = None  # what HookCompleted carries back to the stream
                continue
            reply = yield command

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
                    ResponseProtocolError(self.stream_id, JSON_ERROR + body, REQUEST_TOO_LARGE),
                    self.context.client,
                )
                self.client_state = self.state_errored
                self.flow.live = False
                return True
        return (yield from original_check_body_size(self, request))

    def flow_done(self: HttpStream):
        yield from original_flow_done(self)
        release_finished_stream(self)

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
    HttpStream.send_response = send_response  # type: ignore[method-assign]
    HttpStream.state_consume_request_body = state_consume_request_body  # type: ignore[method-assign]
    HttpStream._handle_event = _handle_event  # type: ignore[method-assign]
    HttpStream.make_server_connection = make_server_connection  # type: ignore[method-assign]
    HttpStream.check_body_size = check_body_size  # type: ignore[method-assign]
    HttpStream.flow_done = flow_done  # type: ignore[method-assign]
    _http1.make_error_response = make_error_response
    _installed = True
    return True


def finished_state(_event: events.Event):
    """The state of a released stream: like mitmproxy's `state_errored`, it consumes any
    late event silently, but it is not bound to the stream (no cycle)."""
    yield from ()


def release_finished_stream(stream: HttpStream) -> None:
    """Cut a finished stream's reference cycles (point 4 of the module docstring).

    Only after a normal end, which dropped the stream from the HTTP layer: both sides done
    and no upgrade (a WebSocket or TCP child layer keeps the stream in use)."""
    if (
        stream.client_state != stream.state_done
        or stream.server_state != stream.state_done
        or stream.child_layer is not None
    ):
        return
    stream.mode  # noqa: B018 - cached now: it looks the stream up in context.layers
    stream.client_state = stream.server_state = finished_state
    layers = stream.context.layers  # the stream's own copy (Context.fork)
    if layers and layers[-1] is stream:
        layers.pop()


def forget_failed_connections(stream: HttpStream) -> None:
    """mitmproxy keeps a failed upstream connection per client connection and answers
    every later request to that address with the old error; a client that keeps its
    connection alive would never reach a route that came back. Forget those for the
    address this flow goes to, so each attempt really connects."""
    layers = stream.context.layers
    index = layers.index(stream) if stream in layers else -1
    parent = layers[index - 1] if index > 0 else None
    connections = getattr(parent, "connections", None)
    if not isinstance(connections, dict):
        return
    address = (stream.flow.request.host, stream.flow.request.port)
    for connection in [
        c for c in connections if isinstance(c, Server) and c.error and c.address == address
    ]:
        del connections[connection]


def guard_connect(server: Server, seconds: float) -> None:
    """Call from the `server_connect` hook: cancel the TCP connect after `seconds`.

    The hook runs inside mitmproxy's connection task; cancelling that task while it waits
    in the connect makes mitmproxy report a connection error for the flow."""
    if seconds <= 0:
        return
    task = asyncio.current_task()
    if task is None:
        return

    def expire() -> None:
        connecting = (
            server.timestamp_start is not None
            and server.timestamp_tcp_setup is None
            and server.error is None
        )
        if connecting and not task.done():
            task.cancel(f"connect timeout after {seconds:g}s")

    asyncio.get_running_loop().call_later(seconds, expire)
