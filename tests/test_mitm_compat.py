"""Loud failures when mitmproxy changes the internals mitm_compat.py relies on.

If one of these fails after a mitmproxy upgrade, fallback, first-byte timeouts and the
JSON answer for unreachable upstreams are off: adapt mitm_compat.py to the new shape.
The behaviour itself is tested end to end in test_fallback.py and test_router.py."""

from __future__ import annotations

import inspect

from mitmproxy.connection import Server
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers.http import HttpStream, RequestProtocolError

from xrouter_core import mitm_compat


def test_http_stream_has_the_shape_the_patches_need():
    assert mitm_compat.supported(), {
        "missing": [name for name in mitm_compat.REQUIRED if not hasattr(HttpStream, name)],
        "error codes known": mitm_compat.error_codes_known(),
    }
    assert mitm_compat.install()
    assert HttpStream.send_response.__module__ == mitm_compat.__name__
    assert HttpStream._handle_event.__module__ == mitm_compat.__name__


def test_the_flow_of_events_the_patches_assume():
    source = inspect.getsource(http_layers)
    # The response hook is yielded inside send_response, before anything reaches the client.
    send_response = source[source.index("def send_response") : source.index("def flow_done")]
    assert send_response.index("HttpResponseHook") < send_response.index("SendHttp(")
    # Streams may ask for wakeups, and the HTTP layer routes them back to the stream.
    assert "isinstance(command, commands.RequestWakeup)" in source
    assert issubclass(events.Wakeup, events.CommandCompleted)
    assert inspect.signature(commands.RequestWakeup).parameters.keys() == {"delay"}
    # make_server_connection reports a failed connect through handle_protocol_error.
    make = source[source.index("def make_server_connection") : source.index("def handle_connect")]
    assert "handle_protocol_error" in make and "self.context.server = self.flow.server_conn" in make
    # A cancelled request on HTTP/1 closes the server connection (first-byte timeout).
    http1 = inspect.getsource(http_layers._http1.Http1Client.send)
    assert "RequestProtocolError" in http1 and "CloseConnection" in http1
    RequestProtocolError(1, "x", RequestProtocolError.code)


def test_protocol_error_codes_reach_the_client_as_the_status_chosen():
    """The JSON 413 rides on a ResponseProtocolError: its code must become status 413."""
    assert mitm_compat.error_codes_known()
    send = inspect.getsource(http_layers._http1.Http1Server.send)
    if mitm_compat.ErrorCode is None:  # 11.0: the code is the status
        assert "make_error_response(event.code, event.message)" in send
    else:  # 11.1.3, 12: the code names the error, and maps to the status when sent
        assert "event.code.http_status_code()" in send and "make_error_response(" in send
    error = http_layers.ResponseProtocolError(1, "x", mitm_compat.REQUEST_TOO_LARGE)
    assert error.code == mitm_compat.REQUEST_TOO_LARGE


def test_connect_timeout_reads_these_server_fields():
    server = Server(address=("127.0.0.1", 9))
    assert server.timestamp_start is None and server.timestamp_tcp_setup is None
    assert server.error is None
    from mitmproxy.proxy import server as proxy_server

    opening = inspect.getsource(proxy_server.ConnectionHandler.open_connection)
    # timestamp_start is set right before the TCP connect, inside the try that turns a
    # cancellation into a connection error for the flow.
    assert opening.index("timestamp_start = time.time()") < opening.index(
        "asyncio.open_connection("
    )
    assert "asyncio.CancelledError" in opening


def test_failed_connections_are_kept_where_mitm_compat_forgets_them():
    source = inspect.getsource(http_layers.HttpLayer)
    assert "self.connections = {}" in source or "self.connections: dict" in source
    get_connection = inspect.getsource(http_layers.HttpLayer.get_connection)
    assert "connection.error" in get_connection and "self.connections" in get_connection
    assert mitm_compat.install()
    assert HttpStream.make_server_connection.__module__ == mitm_compat.__name__
