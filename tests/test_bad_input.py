"""Hostile and broken clients against a real router: every answer is a clear 4xx in
OpenAI's error shape, with no traceback, no key and none of the prompt in it, and the
router keeps serving."""

from __future__ import annotations

import json
import socket

import pytest
from conftest import unique

CHAT = "/v1/chat/completions"
SECRET_PROMPT = "PROMPT-MARKER-do-not-echo"
KEYS = ("sk-cheap-secret-0001", "sk-medium-secret-0002", "sk-frontier-secret-0003")


def ask(text: str = "hi", **extra) -> dict:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], **extra}


def assert_clean_error(reply, status: int, code: str | None = None, secrets=KEYS) -> dict:
    """The shape every refused request must have."""
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    error = reply.json()["error"]
    assert error["message"] and error["type"]
    if code is not None:
        assert error["code"] == code
    text = reply.text
    assert "Traceback" not in text and "<html" not in text.lower()
    assert SECRET_PROMPT not in text
    for secret in secrets:
        assert secret not in text
    return error


def raw_request(port: int, head: bytes, body: bytes = b"", read_timeout: float = 10) -> bytes:
    """Send bytes as they are (no client library tidies them up) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        sock.sendall(head + body)
        received = b""
        while b"\r\n\r\n" not in received:
            piece = sock.recv(65536)
            if not piece:
                break
            received += piece
        head_end = received.find(b"\r\n\r\n")
        length = 0
        for line in received[:head_end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(received) < head_end + 4 + length:
            piece = sock.recv(65536)
            if not piece:
                break
            received += piece
        return received


def still_serving(router) -> None:
    with router.client() as client:
        assert client.get("/health").status_code == 200
        assert client.post(CHAT, json=ask(unique("after bad input"))).status_code == 200


# ---- bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body,code",
    [
        (b"{not json", "invalid_json"),
        (
            b'{"messages": [{"role": "user", "content": "' + SECRET_PROMPT.encode() + b'"',
            "invalid_json",
        ),
        (b"", "invalid_json"),
        (b"null", "invalid_json"),
        (b'"a string"', "invalid_json"),
        (
            b'{"messages": [{"role": "user", "content": "caf\xe9 '
            + SECRET_PROMPT.encode()
            + b'"}]}',
            "invalid_encoding",
        ),
        (b'{"messages": "\xc3\x28"}', "invalid_encoding"),
        (b'{"messages": "' + SECRET_PROMPT.encode() + b'"}', "invalid_messages"),
        (b'{"messages": {"role": "user"}}', "invalid_messages"),
        (b'{"messages": []}', "invalid_messages"),
        (b'{"messages": [1, 2]}', "invalid_messages"),
        (b'{"messages": [{"content": "no role"}]}', "invalid_messages"),
        (b'{"messages": null}', "missing_messages"),
        (b'{"messages": [{"role": "user", "content": "x"}], "model": 5}', "invalid_model"),
        (b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "invalid_stream"),
    ],
)
def test_broken_bodies(router, upstreams, body, code):
    with router.client() as client:
        reply = client.post(CHAT, content=body, headers={"content-type": "application/json"})
    assert_clean_error(reply, 400, code)
    assert upstreams.frontier.requests == [] and upstreams.classifier.requests == []


@pytest.mark.parametrize("value", [-1, 0, 10**30, 1.5, "100", True, [], {"n": 1}])
@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_absurd_max_tokens(router, upstreams, field, value):
    with router.client() as client:
        reply = client.post(CHAT, json=ask(SECRET_PROMPT, **{field: value}))
    error = assert_clean_error(reply, 400, "invalid_max_tokens")
    assert field in error["message"]
    assert upstreams.medium.requests == []


def test_sane_max_tokens_pass(router, upstreams):
    with router.client() as client:
        reply = client.post(CHAT, json=ask(unique("bounded"), max_tokens=256))
    assert reply.status_code == 200


@pytest.mark.parametrize(
    "content_type,body",
    [
        ("text/plain", b"hello " + SECRET_PROMPT.encode()),
        ("application/x-www-form-urlencoded", b"model=gpt-4o&messages=hi"),
        (
            "multipart/form-data; boundary=x",
            b"--x\r\ncontent-disposition: form-data\r\n\r\nhi\r\n--x--",
        ),
        ("application/xml", b"<messages/>"),
    ],
)
def test_wrong_content_type(router, upstreams, content_type, body):
    with router.client() as client:
        reply = client.post(CHAT, content=body, headers={"content-type": content_type})
    error = assert_clean_error(reply, 415, "unsupported_media_type")
    assert "application/json" in error["message"]


def test_json_with_a_lax_content_type_is_accepted(router, upstreams):
    """curl -d sends form encoding by default; a JSON body is still read as JSON."""
    body = json.dumps(ask(unique("lax"))).encode()
    with router.client() as client:
        for content_type in ("application/x-www-form-urlencoded", "text/plain", None):
            headers = {"content-type": content_type} if content_type else {}
            assert client.post(CHAT, content=body, headers=headers).status_code == 200


def test_body_over_the_limit_is_a_413_without_reading_it(start_router, upstreams):
    router = start_router({"MAX_BODY_BYTES": "4096"})
    big = json.dumps(ask(SECRET_PROMPT + "x" * 8000)).encode()
    with router.client() as client:
        assert_clean_error(
            client.post(CHAT, content=big, headers={"content-type": "application/json"}),
            413,
            "request_too_large",
        )
        # A chunked body (no Content-Length) is cut off as it grows past the limit.
        chunks = iter([big[:3000], big[3000:6000], big[6000:]])
        reply = client.post(CHAT, content=chunks, headers={"content-type": "application/json"})
        assert_clean_error(reply, 413, "request_too_large")
        # Just under the limit is fine.
        small = json.dumps(ask(unique("small") + "y" * 3000)).encode()
        assert len(small) < 4096
        assert client.post(CHAT, content=small).status_code == 200
    # A claim of 50 MB is refused from the headers alone: nothing is sent, yet it answers.
    answer = raw_request(
        router.port,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 50000000\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 413")
    assert b'"request_too_large"' in answer
    assert upstreams.classifier.requests == [] or all(
        SECRET_PROMPT not in r.body.decode(errors="replace") for r in upstreams.classifier.requests
    )
    still_serving(router)
    assert "Traceback" not in router.logs()


def test_default_limit_is_documented_and_large_enough(router, upstreams):
    """The default (MAX_BODY_BYTES = 10 MB) lets a large prompt through."""
    with router.client() as client:
        reply = client.post(CHAT, json=ask(unique("large") + "z" * 2_000_000))
    assert reply.status_code == 200
    answer = raw_request(
        router.port,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 10000001\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 413")


# ---- paths and methods -----------------------------------------------------------------


@pytest.mark.parametrize(
    "method,path,status",
    [
        ("POST", "/", 405),
        ("GET", "/v1/models/../../etc/passwd", 404),
        ("GET", "/v1/completions", 404),
        ("POST", "/v1/embeddings", 404),
        ("GET", "/admin", 404),
        ("PUT", CHAT, 405),
        ("PATCH", CHAT, 405),
        ("DELETE", CHAT, 405),
        ("OPTIONS", CHAT, 405),
        ("POST", "/health", 405),
        ("POST", "/v1/models", 405),
        # Path traversal: nothing outside the router's own pages is ever served.
        ("GET", "/../../../../etc/passwd", 404),
        ("GET", "/v1/../../etc/passwd", 404),
        ("GET", "/%2e%2e/%2e%2e/etc/passwd", 404),
        ("GET", "/health/../../../etc/passwd", 404),
        ("GET", "/dashboard/../../../../etc/passwd", 404),
        ("GET", "/dashboard/..%2f..%2f..%2fetc%2fpasswd", 404),
        ("GET", "/static/..%252f..%252fetc%252fpasswd", 404),
        ("GET", "//etc/passwd", 404),
    ],
)
def test_unknown_paths_methods_and_traversal(router, method, path, status):
    head = f"{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n".encode()
    answer = raw_request(router.port, head)
    assert answer.startswith(f"HTTP/1.1 {status}".encode()), answer[:200]
    body = answer.split(b"\r\n\r\n", 1)[1]
    error = json.loads(body)["error"]
    assert error["message"] and error["type"] and error["code"]
    assert b"root:" not in answer and b"Traceback" not in answer


# ---- header injection --------------------------------------------------------------------


def test_crlf_in_the_model_name_injects_no_header(router, upstreams):
    model = "gpt-4o\r\nx-injected: 1\r\n\r\nHTTP/1.1 200 OK"
    with router.client() as client:
        reply = client.post(CHAT, json={**ask(unique("inject")), "model": model})
    assert reply.status_code in (200, 400)
    assert "x-injected" not in reply.headers
    for provider in (upstreams.cheap, upstreams.medium, upstreams.frontier):
        for seen in provider.requests:
            assert "x-injected" not in seen.headers


@pytest.mark.parametrize(
    "header_line",
    [
        b"x-custom: a\rx-injected: 1",
        b"x-custom: a\nx-injected: 1",
        b"x-custom: a\x00x-injected: 1",
        b"x-xrouter-tier: 0\rx-injected: 1",
    ],
)
def test_crlf_in_header_values_is_refused_or_neutral(router, upstreams, header_line):
    """A raw CR or LF can never end up inside a header value the provider receives.
    (mitmproxy reads a bare CR or LF as a line end, as RFC 9112 lets a recipient do for
    LF, so the second half is simply another header of the client's, forwarded or
    dropped like any other; the router itself never builds headers from client text.)"""
    body = json.dumps(ask(unique("header"))).encode()
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + header_line
        + b"\r\ncontent-length: %d\r\n\r\n" % len(body)
    )
    answer = raw_request(router.port, head, body)
    status = int(answer.split(b" ", 2)[1])
    assert status in (200, 400)
    if status == 400:
        assert answer.split(b"\r\n\r\n", 1)[1].startswith(b'{"error"')
    for provider in (upstreams.cheap, upstreams.medium, upstreams.frontier):
        for seen in provider.requests:
            assert all("\r" not in v and "\n" not in v for v in seen.headers.values())
            assert all("\x00" not in v for v in seen.headers.values())
    still_serving(router)


# ---- auth ------------------------------------------------------------------------------


ROUTER_KEY = "router-Key-XyZ-123456"


BYPASS_ATTEMPTS = [
    {},
    {"authorization": ""},
    {"authorization": "Bearer"},
    {"authorization": "Bearer wrong"},
    {"authorization": f"Bearer {ROUTER_KEY.lower()}"},
    {"authorization": f"Bearer {ROUTER_KEY.upper()}"},
    {"authorization": f"Bearer {ROUTER_KEY}x"},
    {"authorization": f"Bearer {ROUTER_KEY[:-1]}"},
    {"authorization": f"Basic {ROUTER_KEY}"},
    {"authorization": ROUTER_KEY},
    {"authorization": f"Bearer x {ROUTER_KEY}"},
    {"x-api-key": ""},
    {"x-api-key": ROUTER_KEY.swapcase()},
    {"authorization": "Bearer wrong", "x-api-key": ROUTER_KEY},
    {"cookie": f"api_key={ROUTER_KEY}"},
]


def test_auth_bypass_attempts(start_router, upstreams):
    """Missing, empty, wrong, truncated, extended, case-changed, wrong scheme, in the
    query or a cookie: all 401, none reaches a model, and the key shows up nowhere.
    (The comparison is hmac.compare_digest: constant time, not measured here.)"""
    router = start_router({"ROUTER_API_KEY": ROUTER_KEY})
    with router.client() as client:
        for headers in BYPASS_ATTEMPTS:
            for method, path in (
                ("POST", CHAT),
                ("GET", "/v1/models"),
                ("POST", f"{CHAT}?api_key={ROUTER_KEY}"),
            ):
                reply = client.request(method, path, json=ask(SECRET_PROMPT), headers=headers)
                assert_clean_error(reply, 401, "invalid_api_key", secrets=(*KEYS, ROUTER_KEY))
        raw = raw_request(
            router.port,
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
            b"authorization: Bearer \r\ncontent-length: 2\r\n\r\n{}",
        )
        assert raw.startswith(b"HTTP/1.1 401")
        # /health needs no key, and shows none.
        health = client.get("/health")
        assert health.status_code == 200 and ROUTER_KEY not in health.text
        # The right key works in either header and with any case of the scheme.
        for headers in (
            {"authorization": f"Bearer {ROUTER_KEY}"},
            {"authorization": f"bearer {ROUTER_KEY}"},
            {"authorization": f"BEARER {ROUTER_KEY}"},
            {"x-api-key": ROUTER_KEY},
        ):
            assert client.post(CHAT, json=ask(unique("authed")), headers=headers).status_code == 200
    assert SECRET_PROMPT not in json.dumps([r.json for r in upstreams.classifier.requests])
    assert ROUTER_KEY not in router.logs()
