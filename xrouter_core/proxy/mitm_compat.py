"""The one place that reaches into mitmproxy internals: small patches of its HTTP stream.

A flow the router routes is marked (`flow.metadata[MARK]`) and needs what mitmproxy's addon
API does not offer, a patch or two each (a docstring says what mitmproxy does, what the router
needs instead, and the mitmproxy versions its shape was checked on):

1. **Our own answer for an unreachable upstream** (`patch_answer_unreachable_upstream`): a
   failed connection before any response reaches the `response` hook as a placeholder 502
   with `flow.metadata[UPSTREAM_ERROR]`, instead of mitmproxy's HTML 502 page.
2. **A retry on the same flow, for fallback** (`patch_retry_on_same_flow`): the `response`
   hook rewrites `flow.request` and sets `flow.metadata[RETRY]`; the request is sent again
   and the new answer streams like any other. `patch_forget_failed_connections` makes each
   attempt really connect, where mitmproxy would repeat an earlier failure.
3. **A first-byte timeout per flow** (`patch_first_byte_timeout`): no response headers
   within `flow.metadata[FIRST_BYTE_TIMEOUT]` seconds cancels the request, which then takes
   path 1. (The connect timeout needs no patch: `guard_connect`, from `server_connect`.)
4. **A finished stream is freed at once** (`patch_free_finished_streams`): its reference
   cycles are cut, so reference counting frees the flow instead of the garbage collector.
5. **Flow hooks answered inline, lean launcher only** (`patch_answer_hooks_inline`): hooks
   whose handlers are plain functions run where the stream yields them, not in a task of
   their own and a round trip each.
6. **A clean end when the upstream dies mid-stream** (`patch_end_cut_stream_cleanly`): the
   router's stream translator adds an error event, instead of a cut chunked body.
7. **A JSON 413 for a body over MAX_BODY_BYTES** (`patch_request_body_limit`, with
   `patch_json_error_page` for the body), on the router's own listener only.

Everything else keeps mitmproxy's behaviour; an unmarked flow pays a dict lookup per hook.
Each patch refuses a mitmproxy whose shape it does not know (`shape`), and `install()`
applies none unless all fit; `tests/test_mitm_compat.py` then fails loudly.
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
from mitmproxy.proxy.layer import CommandGenerator
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

try:  # mitmproxy 12: a protocol error carries an ErrorCode, mapped to a status on send
    from mitmproxy.proxy.layers.http import ErrorCode
except ImportError:  # mitmproxy 11.0, 11.1: it carries the HTTP status itself
    ErrorCode = None

from xrouter_core.proxy.logs import log_rejected  # noqa: E402

log = logging.getLogger("xrouter")

UPSTREAM_ERROR = "xrouter.upstream_error"
MARK = "xrouter.routed"
RETRY = "xrouter.retry"
FIRST_BYTE_TIMEOUT = "xrouter.first_byte_timeout"
_TIMER = "xrouter.first_byte_timer"
_TIMED_OUT = "xrouter.timed_out"
_DEADLINE = "xrouter.first_byte_deadline"
_STEP = "xrouter.first_byte_step"
# The first-byte timer re-arms in growing steps: mitmproxy keeps a wakeup task, and through
# it the flow, alive for its whole delay, even after the answer came. A short first step lets
# a fast answer's flow go soon; doubling steps keep a long wait to a few dozen wakeups.
TIMER_FIRST_STEP_S = 0.05
TIMER_MAX_STEP_S = 1.0

# Marks a protocol error whose message is a ready JSON error body (see patch_json_error_page).
JSON_ERROR = "xrouter-json:"
# The code of the 413 answer for a body over MAX_BODY_BYTES, in this mitmproxy's terms.
REQUEST_TOO_LARGE = ErrorCode.REQUEST_TOO_LARGE if ErrorCode is not None else 413

# The flow hooks an HTTP stream yields, and what may answer them inline.
INLINE_HOOKS = (
    HttpRequestHeadersHook,
    HttpRequestHook,
    HttpResponseHeadersHook,
    HttpResponseHook,
    HttpErrorHook,
)

_installed = False
_max_body_bytes = 0
_answer_now: Callable[[commands.StartHook], bool] | None = None

Patch = Callable[[], None]


def answer_hooks_inline(answer: Callable[[commands.StartHook], bool] | None) -> None:
    """Let `answer(hook)` run an HTTP stream's flow hooks where the stream yields them;
    it returns False for a hook that must still take mitmproxy's way (None: all do)."""
    global _answer_now
    _answer_now = answer


@functools.lru_cache(maxsize=256)
def _destination(url: str) -> tuple[bytes, str, int, bytes, str]:
    """An upstream URL as a request keeps it (scheme and path bytes, host text, port)
    and its host[:port], parsed once per distinct URL."""
    scheme, host, port, path = mitm_url.parse(url)
    text = host.decode("idna")
    return scheme, text, port, path, mitm_url.hostport(scheme.decode(), text, port)


def point_request(request: http.Request, url: str) -> None:
    """Aim `request` at `url`, as setting its scheme, host, port and path does, for a
    request whose headers were just emptied (so there is no Host header to rewrite).

    Not `request.url = ...`, which parses the URL every time (~35 µs), nor the four
    setters: the host and port ones each rebuild host:port and look for a Host header
    (a KeyError raised and caught), ~10 µs in all. An HTTP/2 or HTTP/3 client's
    :authority is rewritten, as the setters do.

    Checked on mitmproxy 11.0.2, 11.1.3, 12.2.3 and 12.3.1: `Request.data` holds scheme
    and path as bytes, host as text, port as int; the host and port setters store those
    and rewrite the Host header and a non-empty authority (`_update_host_and_authority`)."""
    scheme, host, port, path, hostport = _destination(url)
    data = request.data
    data.scheme, data.host, data.port, data.path = scheme, host, port, path
    if data.authority:
        request.authority = hostport


def set_max_body_bytes(limit: int) -> None:
    global _max_body_bytes
    _max_body_bytes = max(0, limit)


def error_codes_known() -> bool:
    """Do protocol errors carry codes of one of the two known kinds (11.0, 11.1: the HTTP
    status; 12: an ErrorCode whose status for REQUEST_TOO_LARGE is 413)?"""
    if ErrorCode is None:
        return ResponseProtocolError.code == 502 and RequestProtocolError.code == 400
    status = getattr(REQUEST_TOO_LARGE, "http_status_code", None)
    return callable(status) and status() == 413 and isinstance(RequestProtocolError.code, ErrorCode)


# ---- shape guards -----------------------------------------------------------------------

_shapes: dict[Patch, tuple[tuple[str, ...], Callable[[], bool]]] = {}


class UnknownShape(RuntimeError):
    """mitmproxy lacks what a patch relies on; the patch changed nothing."""


def shape(*names: str, also: Callable[[], bool] = lambda: True) -> Callable[[Patch], Patch]:
    """The shape guard of a patch: HttpStream must have `names` (what the patch replaces or
    relies on) and `also()` must hold; otherwise the patch raises UnknownShape, unapplied."""

    def guard(apply: Patch) -> Patch:
        @functools.wraps(apply)
        def patch() -> None:
            if not fits(patch):
                raise UnknownShape(f"{apply.__name__}: this mitmproxy has another shape")
            apply()

        _shapes[patch] = (names, also)
        return patch

    return guard


def fits(patch: Patch) -> bool:
    """Does this mitmproxy have the shape `patch` was written for?"""
    names, also = _shapes[patch]
    return all(hasattr(HttpStream, name) for name in names) and also()


# ---- the patches, in the order install() applies them ------------------------------------


@shape("make_server_connection")
def patch_forget_failed_connections() -> None:
    """A routed flow connects afresh to an address whose earlier connection failed.

    mitmproxy keeps each upstream connection of a client connection, failed ones too, and
    answers every later request to that address at once with the old error. The router
    needs each attempt to really connect: a client that keeps its connection alive must
    reach a route that came back, and a fallback must try its route. So before a marked
    flow connects, the failed connections to its address are forgotten.

    Checked on mitmproxy 11.0.2, 11.1.3, 12.2.3 and 12.3.1: `HttpLayer.connections`
    (Connection -> layer), consulted by `HttpLayer.get_connection`."""
    original = HttpStream.make_server_connection

    def make_server_connection(self: HttpStream) -> CommandGenerator[bool]:
        if self.flow.metadata.get(MARK):
            forget_failed_connections(self)
        return (yield from original(self))

    HttpStream.make_server_connection = make_server_connection  # type: ignore[method-assign]


@shape("handle_protocol_error", "send_response", "state_stream_response_body", "state_done")
def patch_end_cut_stream_cleanly() -> None:
    """A routed stream whose upstream dies mid-body ends cleanly, with an error event.

    mitmproxy cuts the client's connection, so the client sees a broken chunked body. The
    router needs an answer its clients can read: the stream translator's `fail` gives the
    last bytes (an OpenAI- or Anthropic-style error event), they are sent, and the body ends
    as usual; `flow.metadata[UPSTREAM_ERROR]` says what happened.

    Checked on mitmproxy 11.0.2, 11.1.3, 12.2.3 and 12.3.1: the failure arrives as a
    ResponseProtocolError in `handle_protocol_error` while the server side is in
    `state_stream_response_body` and the client side in `state_done`."""
    original = HttpStream.handle_protocol_error

    def handle_protocol_error(self: HttpStream, event) -> CommandGenerator[None]:
        flow = self.flow
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

    HttpStream.handle_protocol_error = handle_protocol_error  # type: ignore[method-assign]


@shape("handle_protocol_error", "send_response", "state_done")
def patch_answer_unreachable_upstream() -> None:
    """A routed flow whose upstream fails before any response goes to the `response` hook.

    mitmproxy answers the client itself, with an HTML 502 page. The router needs to answer
    (OpenAI-style, naming the route) or to fall back: the flow gets a placeholder 502 and
    `flow.metadata[UPSTREAM_ERROR]` (the reason, the first-byte timeout's when it cancelled
    the request), and takes the normal answer path, `response` hook included.

    Checked on mitmproxy 11.0.2, 11.1.3, 12.2.3 and 12.3.1: a failed connect or a cancelled
    request arrives as a ResponseProtocolError in `handle_protocol_error`, the client side
    in `state_done`; `send_response` yields the `response` hook."""
    original = HttpStream.handle_protocol_error

    def handle_protocol_error(self: HttpStream, event) -> CommandGenerator[None]:
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
        yield from original(self, event)

    HttpStream.handle_protocol_error = handle_protocol_error  # type: ignore[method-assign]


@shape("send_response", "make_server_connection", "state_wait_for_response_headers")
def patch_retry_on_same_flow() -> None:
    """A routed flow is sent again, to the next route, when the `response` hook asks.

    mitmproxy sends whatever the `response` hook leaves to the client; a flow has one
    request and one answer. The router's fallback needs the next route's answer on the same
    flow, so that it streams through the normal path (responseheaders hook, translator):
    when the hook sets `flow.metadata[RETRY]` (after rewriting `flow.request`), nothing is
    sent to the client; the stream connects to the new upstream, sends the request again
    and waits for new response headers.

    Checked on mitmproxy 11.0.2, 11.1.3, 12.2.3 and 12.3.1: `send_response` yields the
    `response` hook before it sends anything to the client."""
    original = HttpStream.send_response

    def send_response(self: HttpStream, already_streamed: bool = False) -> CommandGenerator[None]:
        if already_streamed or not self.flow.metadata.get(MARK):
            yield from original(self, already_streamed)
            return
        # Run the original until the response hook has run; the router may then ask for a
        # retry instead of sending this (failed) answer to the client.
        inner = original(self, already_streamed)
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

    HttpStream.send_response = send_response  # type: ignore[method-assign]


@shape("_handle_event")
def patch_answer_hooks_inline() -> None:
    """An HTTP stream's flow hooks run where it yields them, when `answer_hooks_inline` allows.

    mitmproxy runs every hook in a task of its own and resumes the stream through its
    connection handler when it is done, even when no addon listens or all listeners are
    plain functions: a round trip that costs more than the router's own work per hook. The
    lean launcher needs none of it (no addon there intercepts a flow and waits to resume
    it): with `answer_hooks_inline(manager.answer_now)` (dispatch.py) a hook whose handlers
    are all synchronous is answered inline and the stream goes on at once. A handler that
    has to wait returns what is left, and that goes mitmproxy's way (dispatch.answer_now).
    mitmdump sets no `answer` and keeps mitmproxy's way for all.

    Checked on mitmproxy 11.0.2, 11.1.3, 12.2.3 and 12.3.1: the flow hooks (INLINE_HOOKS)
    come out of `HttpStream._handle_event`, and a completed hook sends nothing back."""
    original = HttpStream._handle_event

    def _handle_event(self: HttpStream, event: events.Event) -> CommandGenerator[None]:
        answer = _answer_now
        if answer is None:
            yield from original(self, event)
            return
        inner = original(self, event)
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

    HttpStream._handle_event = _handle_event  # type: ignore[method-assign]


@shape("state_consume_request_body", "state_wait_for_response_headers", "_handle_event")
def patch_first_byte_timeout() -> None:
    """A routed request gets `flow.metadata[FIRST_BYTE_TIMEOUT]` seconds for response headers.

    mitmproxy waits for an upstream's answer as long as the connection stays open. The
    router needs a hung route to count as failed (and fall back) in time: once the request
    is sent, a mitmproxy wakeup timer runs; if no response headers came by the deadline,
    the request is cancelled on the server connection, and the failure it reports takes
    the unreachable-upstream path with the timeout as its reason.

    Checked on mitmproxy 11.0.2, 11.1.3, 12.2.3 and 12.3.1: a stream may yield a
    RequestWakeup and the HTTP layer sends the Wakeup back to it; `state_consume_request_body`
    sees RequestEndOfMessage; a RequestProtocolError sent to an HTTP/1 server connection
    closes it, and the stream gets a ResponseProtocolError."""
    consume_request_body = HttpStream.state_consume_request_body
    handle_event = HttpStream._handle_event

    def state_consume_request_body(self: HttpStream, event: events.Event) -> CommandGenerator[None]:
        yield from consume_request_body(self, event)
        if (
            isinstance(event, RequestEndOfMessage)
            and self.flow.metadata.get(MARK)
            and self.flow.response is None
            and self.server_state == self.state_wait_for_response_headers
        ):
            yield from start_first_byte_timer(self)

    def _handle_event(self: HttpStream, event: events.Event) -> CommandGenerator[None]:
        # Not a generator itself: it returns the one that handles the event, so the other
        # events pay no extra generator.
        if isinstance(event, events.Wakeup):
            return first_byte_wakeup(self, event)
        return handle_event(self, event)

    HttpStream.state_consume_request_body = state_consume_request_body  # type: ignore[method-assign]
    HttpStream._handle_event = _handle_event  # type: ignore[method-assign]


@shape("check_body_size", also=error_codes_known)
def patch_request_body_limit() -> None:
    """A request body over MAX_BODY_BYTES on the router's own listener gets a JSON 413.

    mitmproxy's `body_size_limit` answers with an HTML page, and in proxy mode it would also
    cut large downloads of unrelated traffic. The router needs an OpenAI-style error, and
    only on its own (reverse-mode) listener. The check runs where mitmproxy checks its own
    limit: from Content-Length before the body is read, or as a chunked body grows, so it
    costs nothing and nothing big is buffered.

    Checked on mitmproxy 11.0.2, 11.1.3, 12.2.3 and 12.3.1: `check_body_size(request)` is
    asked before and while the request body is read; the 413's code is the HTTP status on
    11.0.2 and 11.1.3 and an ErrorCode on 12 (REQUEST_TOO_LARGE, error_codes_known)."""
    original = HttpStream.check_body_size

    def check_body_size(self: HttpStream, request: bool) -> CommandGenerator[bool]:
        limit = _max_body_bytes
        if (
            request
            and limit
            and isinstance(self.context.client.proxy_mode, ReverseMode)
            and request_body_size(self) > limit
        ):
            yield from refuse_request_body(self, limit)
            return True
        return (yield from original(self, request))

    HttpStream.check_body_size = check_body_size  # type: ignore[method-assign]


@shape(also=lambda: hasattr(_http1, "make_error_response"))
def patch_json_error_page() -> None:
    """A protocol error whose message starts with JSON_ERROR is sent as that JSON body.

    mitmproxy turns a protocol error sent to an HTTP/1 client into its own HTML error page.
    The router's errors (the 413 of patch_request_body_limit) must be JSON, like the rest
    of its answers; any other message keeps mitmproxy's page.

    Checked on mitmproxy 11.0.2, 11.1.3, 12.2.3 and 12.3.1: `Http1Server.send` calls the
    module-level `_http1.make_error_response(status, message)`."""
    original = _http1.make_error_response

    def make_error_response(status_code: int, message: str = "") -> bytes:
        if message.startswith(JSON_ERROR):
            response = http.Response.make(
                status_code,
                message[len(JSON_ERROR) :].encode(),
                {"content-type": "application/json", "connection": "close"},
            )
            return _http1.http1.assemble_response(response)
        return original(status_code, message)

    _http1.make_error_response = make_error_response


@shape("flow_done", "state_done", "child_layer")
def patch_free_finished_streams() -> None:
    """A finished HTTP stream is freed by reference counting, not the garbage collector.

    mitmproxy leaves each stream in reference cycles with itself (its state methods, bound
    to it, and its context's list of layers), so every finished request, with its flow,
    headers and bodies, waits for the garbage collector, reaches the older generations and
    makes full collections long. The router needs finished flows gone at once: after a
    normal end (`flow_done`, when the HTTP layer has dropped the stream) the cycles are cut
    (release_finished_stream). Without `python -O`, as under mitmdump, Python 3.12 keeps
    flows in other cycles: the exceptions caught by mitmproxy's debug-mode type checks hold
    frames.

    Checked on mitmproxy 11.0.2, 11.1.3, 12.2.3 and 12.3.1: `flow_done` ends a stream,
    `child_layer` is set on an upgrade, `Context.fork` gives each stream its own list of
    layers."""
    original = HttpStream.flow_done

    def flow_done(self: HttpStream) -> CommandGenerator[None]:
        yield from original(self)
        release_finished_stream(self)

    HttpStream.flow_done = flow_done  # type: ignore[method-assign]


# handle_protocol_error and _handle_event are patched twice: the later patch sees the event first.
PATCHES: tuple[Patch, ...] = (
    patch_forget_failed_connections,
    patch_end_cut_stream_cleanly,
    patch_answer_unreachable_upstream,
    patch_retry_on_same_flow,
    patch_answer_hooks_inline,
    patch_first_byte_timeout,
    patch_request_body_limit,
    patch_json_error_page,
    patch_free_finished_streams,
)
# What the patches need of HttpStream (the test of the shape names what is missing).
REQUIRED = tuple(dict.fromkeys(name for patch in PATCHES for name in _shapes[patch][0]))


def supported() -> bool:
    """Does this mitmproxy have the shape every patch relies on?"""
    return all(fits(patch) for patch in PATCHES)


def install(max_body_bytes: int | None = None) -> bool:
    """Apply the patches once, all or none; False (and a warning) when mitmproxy's shape
    changed: then fallback, first-byte timeouts and the JSON answers are off."""
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
    for patch in PATCHES:
        patch()
    _installed = True
    return True


# ---- what the patches do --------------------------------------------------------------


def retry(stream: HttpStream) -> CommandGenerator[None]:
    """Send flow.request (already rewritten for the next route) on a new connection."""
    flow = stream.flow
    flow.response = None
    flow.metadata.pop(UPSTREAM_ERROR, None)
    stream.response_body_buf.clear()
    stream.server_state = stream.state_wait_for_response_headers
    ok = yield from stream.make_server_connection()
    if not ok:
        return  # handle_protocol_error has answered (or retried again)
    yield from send_request(stream)


def send_request(stream: HttpStream) -> CommandGenerator[None]:
    """Send the flow's whole request to the stream's server connection; start its timer."""
    request = stream.flow.request
    content = request.raw_content
    yield SendHttp(RequestHeaders(stream.stream_id, request, not content), stream.context.server)
    if content:
        yield SendHttp(RequestData(stream.stream_id, content), stream.context.server)
    yield SendHttp(RequestEndOfMessage(stream.stream_id), stream.context.server)
    yield from start_first_byte_timer(stream)


def start_first_byte_timer(stream: HttpStream) -> CommandGenerator[None]:
    """Set the deadline of this attempt, if the flow has a first-byte timeout, and arm."""
    seconds = stream.flow.metadata.get(FIRST_BYTE_TIMEOUT)
    if seconds:
        stream.flow.metadata[_DEADLINE] = time.monotonic() + float(seconds)
        stream.flow.metadata.pop(_STEP, None)  # each attempt starts with a short step
        yield from arm_first_byte_timer(stream, float(seconds))


def arm_first_byte_timer(stream: HttpStream, remaining: float) -> CommandGenerator[None]:
    """Ask for a wakeup after the next step (doubled each time, at most TIMER_MAX_STEP_S)."""
    step = stream.flow.metadata.get(_STEP, TIMER_FIRST_STEP_S / 2) * 2
    stream.flow.metadata[_STEP] = min(step, TIMER_MAX_STEP_S)
    wakeup = commands.RequestWakeup(min(step, remaining))
    stream.flow.metadata[_TIMER] = wakeup
    yield wakeup


def first_byte_wakeup(stream: HttpStream, event: events.Wakeup) -> CommandGenerator[None]:
    """A wakeup of the stream's current timer while it waits for response headers: re-arm
    it until the deadline, then cancel the request. Any other wakeup is stale (answered in
    time, or an earlier attempt's) and ignored."""
    flow = getattr(stream, "flow", None)
    if (
        flow is not None
        and flow.metadata.get(_TIMER) is event.command
        and stream.server_state == stream.state_wait_for_response_headers
        and flow.response is None
    ):
        flow.metadata.pop(_TIMER, None)
        remaining = flow.metadata.get(_DEADLINE, 0.0) - time.monotonic()
        if remaining > 0.001:
            yield from arm_first_byte_timer(stream, remaining)
            return
        seconds = float(flow.metadata.get(FIRST_BYTE_TIMEOUT) or 0)
        flow.metadata[_TIMED_OUT] = f"no response within {seconds:g}s (first-byte timeout)"
        # Cancel the request upstream; the server connection reports the failure to this
        # stream, which then takes the unreachable-upstream path.
        yield SendHttp(
            RequestProtocolError(stream.stream_id, "first-byte timeout", RequestProtocolError.code),
            stream.context.server,
        )


def request_body_size(stream: HttpStream) -> int:
    """The size of the request body so far: a chunked body as it grows, else Content-Length
    before the body is read (mitmproxy checked its syntax)."""
    if stream.request_body_buf:
        return len(stream.request_body_buf)
    declared = stream.flow.request.headers.get("content-length", "")
    return int(declared) if declared.isdigit() else 0


def refuse_request_body(stream: HttpStream, limit: int) -> CommandGenerator[None]:
    """End the flow with an error and answer the client with a JSON 413."""
    message = (
        f"The request body is larger than the router's limit of {limit} bytes (MAX_BODY_BYTES)."
    )
    stream.flow.error = mitm_flow.Error(message)
    request = stream.flow.request
    log_rejected(413, request.method, request.path, "request_too_large")
    yield HttpErrorHook(stream.flow)
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
        ResponseProtocolError(stream.stream_id, JSON_ERROR + body, REQUEST_TOO_LARGE),
        stream.context.client,
    )
    stream.client_state = stream.state_errored
    stream.flow.live = False


def finished_state(_event: events.Event):
    """The state of a released stream: like mitmproxy's `state_errored`, it consumes any
    late event silently, but it is not bound to the stream (no cycle)."""
    yield from ()


def release_finished_stream(stream: HttpStream) -> None:
    """Cut a finished stream's reference cycles (patch_free_finished_streams).

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
    """Forget the HTTP layer's failed connections to the address this flow goes to
    (patch_forget_failed_connections), so that this attempt really connects."""
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


# ---- shutdown: the client connections end without tracebacks -------------------------


def open_connection_tasks() -> list[asyncio.Task]:
    """The tasks of the open client connections: each runs mitmproxy's
    `ServerInstance.handle_stream` (asyncio.start_server's callback)."""
    current = asyncio.current_task()
    found = []
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        name = getattr(coro, "__qualname__", "")
        if task is not current and not task.done() and name.endswith("handle_stream"):
            found.append(task)
    return found


async def end_connections(tasks: list[asyncio.Task], timeout: float = 5.0) -> None:
    """Cancel the connections' tasks at shutdown and wait for them, with cancelled
    callbacks kept out of the error log (logs.quiet_cancelled_callbacks): left to
    asyncio.run's final cancellation, each would print a CancelledError traceback on
    Python 3.11, and mitmproxy restores the loop's first handler before that."""
    from xrouter_core.proxy.logs import quiet_cancelled_callbacks

    quiet_cancelled_callbacks()
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=timeout)
    await asyncio.sleep(0)  # the tasks' own done callbacks run now, under that handler
