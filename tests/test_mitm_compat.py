"""Loud failures when mitmproxy changes the internals mitm_compat.py relies on.

If one of these fails after a mitmproxy upgrade, fallback, first-byte timeouts and the
JSON answers are off: adapt mitm_compat.py to the new shape. Each patch has a focused test
here, through a real lean mitmproxy on 127.0.0.1 (its name is in the test's docstring);
the router's use of them is tested end to end in test_fallback.py, test_faults.py,
test_bad_input.py and test_router.py."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import json
import socket
import subprocess
import sys
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from mitmproxy import http, master, options
from mitmproxy.addons import core, next_layer, proxyserver, tlsconfig
from mitmproxy.connection import Server
from mitmproxy.net.http import url as mitm_url
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers.http import HttpStream, RequestProtocolError, _http1

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
    if mitm_compat.ErrorCode is None:  # 11.0, 11.1: the code is the status
        assert "make_error_response(event.code, event.message)" in send
    else:  # 12: the code names the error, and maps to the status when sent
        assert "event.code.http_status_code()" in send and "make_error_response(" in send
    error = http_layers.ResponseProtocolError(1, "x", mitm_compat.REQUEST_TOO_LARGE)
    assert error.code == mitm_compat.REQUEST_TOO_LARGE


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/v1/chat/completions",
        "https://api.example.com/openai/deployments/d/chat/completions?api-version=2024-10",
        "https://xn--bcher-kva.example:8443/v1/messages",
        "http://[::1]/v1/chat",
    ],
)
@pytest.mark.parametrize("authority", ["", "client.example:3000"])
def test_point_request_sets_what_the_setters_set(url, authority):
    """point_request writes Request.data itself (no setters): the same request as the
    scheme, host, port and path setters give one whose headers were emptied, an HTTP/2
    client's :authority rewritten."""

    expected = http.Request.make("POST", "http://127.0.0.1:3000/v1/x", b"{}", {})
    expected.authority = authority
    expected.headers.fields = ()
    pointed = expected.copy()
    scheme, host, port, path = mitm_url.parse(url)
    expected.scheme, expected.host = scheme.decode(), host.decode("idna")
    expected.port, expected.path = port, path.decode()
    mitm_compat.point_request(pointed, url)
    assert pointed.data == expected.data
    assert pointed.url == expected.url and pointed.authority == expected.authority
    assert (pointed.authority != "") == bool(authority)


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


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
JSON_200 = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """The body of the next request on a keep-alive connection (None: the proxy closed it)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    if fields.get(b"transfer-encoding") != b"chunked":
        return await reader.readexactly(int(fields.get(b"content-length", 0)))
    body = b""
    while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
        body += (await reader.readexactly(size + 2))[:-2]
    await reader.readuntil(b"\r\n")  # the empty line after the last chunk
    return body


async def answer_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A keep-alive HTTP/1.1 upstream: 200 with a small JSON body to every request."""
    while await read_request(reader) is not None:
        writer.write(JSON_200 % 2 + b"{}")
        await writer.drain()


def echo(seen: list[bytes]) -> Handler:
    """A keep-alive upstream that answers each request with its body, and notes it in `seen`."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (body := await read_request(reader)) is not None:
            seen.append(body)
            writer.write(JSON_200 % len(body) + body)
            await writer.drain()

    return answer


async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An upstream that reads the request and never answers, until the proxy hangs up."""
    await read_request(reader)
    await reader.read()
    writer.close()


async def die_mid_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An upstream that starts a chunked event stream and closes the connection in it."""
    await read_request(reader)
    event = b'data: {"n": 1}\n\n'
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n" % (len(event), event)
    )
    await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def serving(handler: Handler, sock: socket.socket | None = None) -> AsyncIterator[int]:
    """An upstream on 127.0.0.1 (on `sock` if given); yields its port."""
    if sock is None:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
    else:
        server = await asyncio.start_server(handler, sock=sock)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@contextlib.contextmanager
def refusing() -> Iterator[socket.socket]:
    """A port on 127.0.0.1 that refuses connections: bound, so no one else takes it, but
    not listening (until the test calls listen() and serves on it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock


@contextlib.asynccontextmanager
async def lean_proxy(
    confdir: str,
    *addons,
    inline: bool = False,
    upstream: Handler = answer_ok,
    regular: bool = False,
) -> AsyncIterator[httpx.AsyncClient]:
    """A real lean master (the launcher's addons, the cached dispatch) on 127.0.0.1, in
    reverse mode in front of `upstream`; yields an httpx client pointed at it. `regular`:
    in regular proxy mode instead, with the client's base URL at `upstream`."""
    if not mitm_compat.install():  # not an assert: this also runs under `python -O`
        raise RuntimeError("mitm_compat does not support this mitmproxy")
    async with serving(upstream) as up_port:
        lean = master.Master(options.Options(confdir=confdir))
        dispatch.speed_up(lean.addons)
        if inline:
            mitm_compat.answer_hooks_inline(lean.addons.answer_now)
        lean.addons.add(
            core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(), tlsconfig.TlsConfig()
        )
        lean.addons.add(*addons)
        mode = "regular" if regular else f"reverse:http://127.0.0.1:{up_port}"
        lean.options.update(mode=[f"{mode}@127.0.0.1:0"], connection_strategy="lazy")
        running = asyncio.create_task(lean.run())
        try:
            server = lean.addons.get("proxyserver")
            for _ in range(200):
                if server.listen_addrs():
                    break
                await asyncio.sleep(0.05)
            host, port = server.listen_addrs()[0][:2]
            if regular:
                client = httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{up_port}",
                    proxy=f"http://{host}:{port}",
                    trust_env=False,
                )
            else:
                client = httpx.AsyncClient(base_url=f"http://{host}:{port}", trust_env=False)
            async with client:
                yield client
        finally:
            mitm_compat.answer_hooks_inline(None)
            lean.shutdown()
            await running


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
    reference cycles were cut (patch_free_finished_streams). Without that, all of them stay.

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
    """patch_answer_hooks_inline: with the cached dispatch's answer_now, plain-function flow hooks
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


# ---- one focused test per patch ---------------------------------------------------------


class EndsWithAnError:
    """The router's stream translator in miniature: passes chunks on; `fail` gives the last
    bytes of a stream the upstream cut."""

    def __call__(self, chunk: bytes) -> bytes:
        return chunk

    def fail(self, message: str) -> bytes:
        return b"data: " + json.dumps({"error": message}).encode() + b"\n\n"


class Routes:
    """What the router does to a flow, in a few lines: mark it (unless `mark` is off), send it
    to the first of `ports` with a first-byte timeout if one is given, and when the response
    hook sees an upstream failure, retry on the next port or answer with the failure as JSON.
    Notes each flow's client connection and each failure the response hook saw."""

    def __init__(self, *ports: int, first_byte_timeout: float = 0, mark: bool = True) -> None:
        self.ports = ports
        self.first_byte_timeout = first_byte_timeout
        self.mark = mark
        self.clients: list[str] = []
        self.failures: list[str] = []

    def request(self, flow) -> None:
        self.clients.append(flow.client_conn.id)
        flow.request.port = self.ports[0]
        flow.metadata["attempt"] = 0
        if self.mark:
            flow.metadata[mitm_compat.MARK] = True
        if self.first_byte_timeout:
            flow.metadata[mitm_compat.FIRST_BYTE_TIMEOUT] = self.first_byte_timeout

    def responseheaders(self, flow) -> None:
        if "event-stream" in flow.response.headers.get("content-type", ""):
            flow.response.stream = EndsWithAnError()

    def response(self, flow) -> None:
        failure = flow.metadata.get(mitm_compat.UPSTREAM_ERROR)
        if failure is None:
            return
        self.failures.append(failure)
        if flow.response.stream:
            return  # already streamed: the translator ended it
        attempt = flow.metadata["attempt"] + 1
        if attempt < len(self.ports):
            flow.metadata["attempt"] = attempt
            flow.request.port = self.ports[attempt]
            flow.metadata[mitm_compat.RETRY] = True
            return
        flow.response.set_content(json.dumps({"error": failure}).encode())


def test_a_routed_flow_whose_upstream_is_unreachable_is_answered_in_the_response_hook(tmp_path):
    """patch_answer_unreachable_upstream: a marked flow's failed connect reaches the response
    hook as a JSON 502 with the failure in UPSTREAM_ERROR; an unmarked flow keeps
    mitmproxy's own HTML 502 page."""

    async def scenario(mark: bool) -> tuple[httpx.Response, list[str]]:
        with refusing() as down:
            routes = Routes(down.getsockname()[1], mark=mark)
            async with lean_proxy(str(tmp_path), routes) as client:
                return await client.post("/v1/chat/completions", json={"n": 1}), routes.failures

    answer, failures = asyncio.run(scenario(mark=True))
    assert answer.status_code == 502 and answer.headers["content-type"] == "application/json"
    assert len(failures) == 1 and failures[0]
    assert answer.json() == {"error": failures[0]}
    answer, failures = asyncio.run(scenario(mark=False))
    assert answer.status_code == 502 and "text/html" in answer.headers["content-type"]
    assert failures == []


def test_a_retry_sends_the_rewritten_request_again_on_the_same_flow(tmp_path):
    """patch_retry_on_same_flow: the response hook sets RETRY after pointing the flow at the
    next upstream; the client gets that upstream's answer to the same request, on one flow."""

    async def scenario() -> tuple[httpx.Response, Routes, list[bytes]]:
        seen: list[bytes] = []
        with refusing() as down:
            async with serving(echo(seen)) as up:
                routes = Routes(down.getsockname()[1], up)
                async with lean_proxy(str(tmp_path), routes) as client:
                    answer = await client.post("/v1/chat/completions", json={"n": 7})
        return answer, routes, seen

    answer, routes, seen = asyncio.run(scenario())
    assert answer.status_code == 200 and answer.json() == {"n": 7}
    assert seen == [b'{"n":7}']
    assert len(routes.clients) == 1 and len(routes.failures) == 1


def test_a_failed_connection_is_tried_again_on_a_kept_alive_client_connection(tmp_path):
    """patch_forget_failed_connections: mitmproxy would answer a second request to an address
    that failed on this client connection with the old error; a marked flow connects again
    and reaches the upstream that came up since."""

    async def scenario() -> tuple[list[int], Routes]:
        seen: list[bytes] = []
        with refusing() as down:
            routes = Routes(down.getsockname()[1])
            async with lean_proxy(str(tmp_path), routes) as client:
                first = await client.post("/v1/chat/completions", json={"n": 1})
                down.listen()
                async with serving(echo(seen), sock=down):
                    second = await client.post("/v1/chat/completions", json={"n": 2})
        return [first.status_code, second.status_code], routes

    statuses, routes = asyncio.run(scenario())
    assert statuses == [502, 200]
    assert len(routes.clients) == 2 and routes.clients[0] == routes.clients[1]


def test_no_response_headers_in_time_cancels_the_request_as_a_failure(tmp_path):
    """patch_first_byte_timeout: an upstream that never answers fails the flow with the
    first-byte timeout as the reason, which then takes the unreachable path: answered, or
    retried on the next upstream."""

    async def scenario(*then: int) -> tuple[httpx.Response, list[str]]:
        async with serving(hang) as hung:
            routes = Routes(hung, *then, first_byte_timeout=0.2)
            async with lean_proxy(str(tmp_path), routes) as client:
                return await client.post("/v1/chat/completions", json={"n": 3}), routes.failures

    answer, failures = asyncio.run(scenario())
    assert answer.status_code == 502
    assert failures == ["no response within 0.2s (first-byte timeout)"]
    assert answer.json() == {"error": failures[0]}

    async def with_fallback() -> tuple[httpx.Response, list[str]]:
        async with serving(echo([])) as up:
            return await scenario(up)

    answer, failures = asyncio.run(with_fallback())
    assert answer.status_code == 200 and answer.json() == {"n": 3}
    assert failures == ["no response within 0.2s (first-byte timeout)"]


def test_an_upstream_that_dies_mid_stream_ends_the_clients_body_cleanly(tmp_path):
    """patch_end_cut_stream_cleanly: the stream translator's `fail` adds the last event and
    the chunked body ends; mitmproxy alone would cut the client's connection."""

    async def scenario() -> tuple[httpx.Response, list[str]]:
        async with serving(die_mid_stream) as dying:
            routes = Routes(dying)
            async with lean_proxy(str(tmp_path), routes) as client:
                answer = await client.post("/v1/chat/completions", json={"stream": True})
        return answer, routes.failures

    answer, failures = asyncio.run(scenario())  # httpx raises on a cut chunked body
    assert answer.status_code == 200 and len(failures) == 1
    events = answer.text.split("\n\n")
    assert events[0] == 'data: {"n": 1}'
    assert events[1].startswith('data: {"error": "The upstream closed the stream before it ended')
    assert events[2:] == [""]


async def in_chunks(*parts: bytes) -> AsyncIterator[bytes]:
    """A request body httpx sends chunked (no Content-Length), part by part."""
    for part in parts:
        yield part


def test_a_request_body_over_the_limit_is_a_json_413_on_the_routers_listener(tmp_path, monkeypatch):
    """patch_request_body_limit: over MAX_BODY_BYTES, by Content-Length or as a chunked body
    grows, the router's (reverse-mode) listener answers a JSON 413 and sends nothing on;
    under the limit, or through a regular proxy, the body passes."""
    monkeypatch.setattr(mitm_compat, "_max_body_bytes", 64)
    big = json.dumps({"text": "x" * 100}).encode()
    small = json.dumps({"text": "y"}).encode()

    async def scenario(regular: bool) -> tuple[list[httpx.Response], list[bytes]]:
        seen: list[bytes] = []
        async with lean_proxy(str(tmp_path), upstream=echo(seen), regular=regular) as client:
            answers = [
                await client.post("/v1/chat/completions", content=big),
                await client.post("/v1/chat/completions", content=in_chunks(big[:40], big[40:])),
                await client.post("/v1/chat/completions", content=small),
            ]
        return answers, seen

    answers, seen = asyncio.run(scenario(regular=False))
    for refused in answers[:2]:
        assert refused.status_code == 413
        assert refused.headers["content-type"] == "application/json"
        error = refused.json()["error"]
        assert error["code"] == "request_too_large" and "64 bytes" in error["message"]
    assert answers[2].status_code == 200
    assert seen == [small]
    answers, seen = asyncio.run(scenario(regular=True))
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert seen == [big, big, small]


def test_a_protocol_error_marked_json_is_sent_as_that_json_body():
    """patch_json_error_page: mitmproxy's HTTP/1 error page becomes the JSON body after
    JSON_ERROR; any other message keeps mitmproxy's HTML page."""
    assert mitm_compat.install()
    body = json.dumps({"error": {"code": "request_too_large"}})
    head, _, sent = _http1.make_error_response(413, mitm_compat.JSON_ERROR + body).partition(
        b"\r\n\r\n"
    )
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"content-type: application/json" in head and b"connection: close" in head
    assert sent == body.encode()
    page = _http1.make_error_response(502, "upstream down")
    assert page.startswith(b"HTTP/1.1 502 ") and b"text/html" in page and b"upstream down" in page


def test_no_patch_is_applied_to_a_shape_it_does_not_know(monkeypatch, caplog):
    """The shape guards: a patch refuses an HttpStream without what it relies on, and
    install() then applies none of them (and says so) rather than some."""
    assert mitm_compat.install()
    monkeypatch.delattr(HttpStream, "flow_done")
    before = {name: HttpStream.__dict__.get(name) for name in mitm_compat.REQUIRED}
    error_page = _http1.make_error_response
    with pytest.raises(mitm_compat.UnknownShape, match="patch_free_finished_streams"):
        mitm_compat.patch_free_finished_streams()
    assert not mitm_compat.fits(mitm_compat.patch_free_finished_streams)
    assert mitm_compat.fits(mitm_compat.patch_retry_on_same_flow)
    assert not mitm_compat.supported()
    monkeypatch.setattr(mitm_compat, "_installed", False)
    assert mitm_compat.install() is False
    assert {name: HttpStream.__dict__.get(name) for name in mitm_compat.REQUIRED} == before
    assert _http1.make_error_response is error_page
    assert "not supported" in caplog.text
