"""Loud failures when mitmproxy changes the internals mitm_compat.py relies on.

If one of these fails after a mitmproxy upgrade, fallback, first-byte timeouts and the
JSON answer for unreachable upstreams are off: adapt mitm_compat.py to the new shape.
The behaviour itself is tested end to end in test_fallback.py and test_router.py."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import json
import subprocess
import sys
import weakref
from pathlib import Path

import httpx
from mitmproxy import master, options
from mitmproxy.addons import core, next_layer, proxyserver, tlsconfig
from mitmproxy.connection import Server
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers.http import HttpStream, RequestProtocolError

from xrouter_core.proxy import dispatch, mitm_compat


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


class KeepsWeakRefs:
    """An addon that remembers each flow weakly: alive only while something holds it."""

    def __init__(self) -> None:
        self.flows: list[weakref.ref] = []

    def response(self, flow) -> None:
        self.flows.append(weakref.ref(flow))


async def answer_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A keep-alive HTTP/1.1 upstream: 200 with a small JSON body to every request."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            break  # the proxy closed the connection
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
        )
        await writer.drain()


@contextlib.asynccontextmanager
async def lean_proxy(confdir: str, *addons, inline: bool = False):
    """A real lean master (the launcher's addons, the cached dispatch) in reverse mode on
    127.0.0.1 in front of `answer_ok`; yields an httpx client pointed at it."""
    if not mitm_compat.install():  # not an assert: this also runs under `python -O`
        raise RuntimeError("mitm_compat does not support this mitmproxy")
    upstream = await asyncio.start_server(answer_ok, "127.0.0.1", 0)
    up_port = upstream.sockets[0].getsockname()[1]
    lean = master.Master(options.Options(confdir=confdir))
    dispatch.speed_up(lean.addons)
    if inline:
        mitm_compat.answer_hooks_inline(lean.addons.answer_now)
    lean.addons.add(
        core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(), tlsconfig.TlsConfig()
    )
    lean.addons.add(*addons)
    lean.options.update(
        mode=[f"reverse:http://127.0.0.1:{up_port}@127.0.0.1:0"], connection_strategy="lazy"
    )
    running = asyncio.create_task(lean.run())
    try:
        server = lean.addons.get("proxyserver")
        for _ in range(200):
            if server.listen_addrs():
                break
            await asyncio.sleep(0.05)
        host, port = server.listen_addrs()[0][:2]
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", trust_env=False) as c:
            yield c
    finally:
        mitm_compat.answer_hooks_inline(None)
        lean.shutdown()
        await running
        upstream.close()


def count_flows_left_alive(confdir: str) -> tuple[int, int, list[int]]:
    """Send 21 requests through a real lean proxy with the patches installed; with the
    garbage collector off after the first, how many of the other 20 flows are still alive?"""

    async def scenario() -> tuple[int, int, list[int]]:
        keeper = KeepsWeakRefs()
        async with lean_proxy(confdir, keeper) as client:
            await client.post("/v1/chat/completions", json={"warm": "up"})
            gc.collect()
            gc.disable()
            try:
                statuses = []
                for i in range(20):  # one keep-alive connection: flows end, it stays
                    response = await client.post("/v1/chat/completions", json={"n": i})
                    statuses.append(response.status_code)
                await asyncio.sleep(0.1)  # mitmproxy finishes the flows after sending
                alive = sum(1 for ref in keeper.flows[1:] if ref() is not None)
            finally:
                gc.enable()
        return alive, len(keeper.flows) - 1, statuses

    return asyncio.run(scenario())


def test_a_finished_flow_is_freed_without_the_garbage_collector(tmp_path):
    """With the garbage collector off, every finished flow is gone once answered: its stream's
    reference cycles were cut (mitm_compat point 4). Without that, all of them stay.

    Run as the lean launcher runs, under `python -O`: without it, mitmproxy type-checks
    each message it builds, and on Python 3.12 the exceptions caught there keep frames, and
    through them the flow, in cycles of their own."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import test_mitm_compat as t; "
        "print(json.dumps(t.count_flows_left_alive(sys.argv[2])))"
    )
    done = subprocess.run(
        [sys.executable, "-O", "-c", code, str(Path(__file__).parent), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    alive, answered, statuses = json.loads(done.stdout.strip().splitlines()[-1])
    assert statuses == [200] * 20 and answered == 20
    assert alive == 0, f"{alive} of 20 finished flows wait for the garbage collector"


class WhereHooksRun:
    """Records, per hook, whether it ran inline (inside the stream's own event handling,
    mitm_compat's `_handle_event` on the stack) or in mitmproxy's hook task, and changes
    the flow in each, as the router does. (Task names cannot tell: with Python 3.12's
    eager tasks a hook task runs before mitmproxy names it.)"""

    def __init__(self) -> None:
        self.ran_in: dict[str, list[str]] = {}

    def note(self, hook: str) -> None:
        frame = sys._getframe()
        inline = False
        while frame is not None:
            code, module = frame.f_code, frame.f_globals.get("__name__")
            inline = inline or (code.co_name == "_handle_event" and module == mitm_compat.__name__)
            frame = frame.f_back
        self.ran_in.setdefault(hook, []).append("inline" if inline else "hook task")

    def requestheaders(self, flow) -> None:
        self.note("requestheaders")

    def request(self, flow):
        """A plain function, as the router's: odd requests are done at once, even ones wait
        once, started here and finished wherever the rest is awaited."""
        if json.loads(flow.request.content)["n"] % 2:
            self.note("request")
            flow.request.headers["x-steps"] = "at once"
            return None
        return dispatch.run_until_it_waits(self.request_that_waits(flow))

    async def request_that_waits(self, flow) -> None:
        self.note("request")
        flow.request.headers["x-steps"] = "started"
        await asyncio.sleep(0.01)
        self.note("request")
        flow.request.headers["x-steps"] += ", finished"

    def responseheaders(self, flow) -> None:
        self.note("responseheaders")
        flow.response.headers["x-steps"] = flow.request.headers.get("x-steps", "")

    def response(self, flow) -> None:
        self.note("response")
        flow.response.headers["x-also"] = "response"


def test_plain_function_hooks_run_inline_and_what_waits_is_handed_to_mitmproxy(tmp_path):
    """mitm_compat point 5: with the cached dispatch's answer_now, plain-function flow hooks
    run where the stream yields them. A handler that has to wait is started inline and
    finished in mitmproxy's hook task, and the stream waits for it; every change reaches
    the wire as before. mitmproxy's own way (inline=False) gives the same answers."""

    async def scenario(inline: bool) -> tuple[dict[str, list[str]], list[tuple]]:
        where = WhereHooksRun()
        async with lean_proxy(str(tmp_path), where, inline=inline) as client:
            answers = []
            for n in range(3):
                r = await client.post("/v1/chat/completions", json={"n": n})
                answers.append((r.status_code, r.headers.get("x-steps"), r.headers.get("x-also")))
        return where.ran_in, answers

    expected_answers = [
        (200, "started, finished", "response"),
        (200, "at once", "response"),
        (200, "started, finished", "response"),
    ]
    ran_in, answers = asyncio.run(scenario(inline=True))
    assert answers == expected_answers
    assert ran_in == {
        "requestheaders": ["inline"] * 3,
        "request": ["inline", "hook task", "inline", "inline", "hook task"],
        "responseheaders": ["inline"] * 3,
        "response": ["inline"] * 3,
    }
    ran_in, answers = asyncio.run(scenario(inline=False))
    assert answers == expected_answers
    assert ran_in["request"] == ["hook task"] * 5
    assert all(where == ["hook task"] * 3 for hook, where in ran_in.items() if hook != "request")
