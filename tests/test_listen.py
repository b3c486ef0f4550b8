"""Listening only where asked (issue 16, point 4 and 5): the proxy listener binds HOST,
`--workers N` reads HOST and PORT from .env, and an exposed listener is named in a
warning at start. Every listener here is on a loopback address."""

from __future__ import annotations

import time

import httpx
import psutil
import pytest
from conftest import Router, free_port
from helpers import wait_for

from xrouter_core.proxy.addon import exposure_warnings, is_loopback


def listening(pid: int, port: int) -> set[str]:
    """The addresses a process (or its workers) listens on at `port`."""
    found: set[str] = set()
    process = psutil.Process(pid)
    for proc in (process, *process.children(recursive=True)):
        for conn in proc.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
                found.add(conn.laddr.ip)
    return found


def wait_listening(pid: int, port: int, timeout: float = 20.0) -> set[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = listening(pid, port)
        if found:
            return found
        time.sleep(0.1)
    return set()


def test_is_loopback():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("", "0.0.0.0", "::", "192.168.1.5", "example.org"))


def test_exposure_warnings_name_the_listener_and_the_fix():
    api = ["reverse:http://127.0.0.1:9@0.0.0.0:3000"]
    (warning,) = exposure_warnings(api, "", None, "", "")
    assert "0.0.0.0:3000 without ROUTER_API_KEY" in warning and "HOST=127.0.0.1" in warning
    assert exposure_warnings(api, "", None, "a-router-key", "") == []
    assert exposure_warnings(["reverse:http://x@127.0.0.1:3000"], "", None, "", "") == []
    (warning,) = exposure_warnings(["regular@8080"], "", None, "a-router-key", "")
    assert "regular mode" in warning and "every interface:8080" in warning
    assert "--proxyauth" in warning
    assert exposure_warnings(["regular@8080"], "", None, "", "user:pass") == []
    assert exposure_warnings(["regular@8080"], "127.0.0.1", None, "", "") == []
    both = exposure_warnings(["regular@8080", "reverse:http://x@3000"], "10.0.0.2", None, "", "")
    assert len(both) == 2 and all("10.0.0.2:" in w for w in both)


@pytest.mark.parametrize("launcher", ["mitmdump", "xrouter"])
def test_a_proxy_mode_listens_on_host_not_every_interface(upstreams, tmp_path, launcher):
    port = free_port()
    router = Router(
        {**upstreams.env(), "HOST": "127.0.0.2"},
        tmp_path,
        args=["--mode", f"regular@{port}"],
        launcher=launcher,
        wait=False,
    )
    try:
        assert wait_listening(router.proc.pid, port) == {"127.0.0.2"}, router.logs()
        logs = router.logs()
        assert "without --proxyauth" not in logs and "Traceback" not in logs
    finally:
        router.stop()


@pytest.mark.parametrize("launcher", ["mitmdump", "xrouter"])
def test_listen_host_set_by_the_user_wins(upstreams, tmp_path, launcher):
    port = free_port()
    router = Router(
        {**upstreams.env(), "HOST": "127.0.0.2"},
        tmp_path,
        args=["--mode", f"regular@{port}", "--set", "listen_host=127.0.0.3"],
        launcher=launcher,
        wait=False,
    )
    try:
        assert wait_listening(router.proc.pid, port) == {"127.0.0.3"}, router.logs()
    finally:
        router.stop()


def test_workers_read_host_and_port_from_dotenv(upstreams, tmp_path):
    port = free_port()
    env_file = tmp_path / "router.env"
    lines = {**upstreams.env(), "HOST": "127.0.0.2", "PORT": str(port)}
    env_file.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
    router = Router(
        {"HOST": None, "PORT": None, "XROUTER_ENV_FILE": str(env_file)},
        tmp_path,
        args=["--workers", "2"],
        launcher="xrouter",
        wait=False,
    )
    router.url = f"http://127.0.0.2:{port}"
    try:
        router.wait_ready()
        # /health answers once one worker is up; stopping while the other still starts
        # would end that one by the signal, not by a clean shutdown.
        wait_for(lambda: router.logs().count("xrouter ready") == 2)
        assert wait_listening(router.proc.pid, port) == {"127.0.0.2"}
        assert len(psutil.Process(router.proc.pid).children()) == 2
        reply = httpx.get(router.url + "/health", timeout=5, trust_env=False)
        assert reply.status_code == 200
        assert listening(router.proc.pid, 3000) == set()
    finally:
        assert router.stop() == 0


@pytest.mark.parametrize("launcher", ["mitmdump", "xrouter"])
def test_sigterm_with_open_keep_alive_connections_exits_cleanly(upstreams, tmp_path, launcher):
    """50 clients keep their connections open after an answer; SIGTERM then ends the
    router with exit code 0, no traceback, and every finished request counted."""
    import os
    import signal
    import socket

    data = tmp_path / "data"
    router = Router(
        {**upstreams.env(), "XROUTER_DATA_DIR": str(data), "CACHE_BACKEND": "disk"},
        tmp_path,
        launcher=launcher,
    )
    body = b'{"model":"xrouter/auto","messages":[{"role":"user","content":"keep alive %d"}]}'
    sockets = []
    try:
        for index in range(50):
            payload = body % index
            sock = socket.create_connection(("127.0.0.1", router.port), timeout=10)
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: "
                b"application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(payload), payload)
            )
            answer = b""
            while b"Hello from" not in answer:
                chunk = sock.recv(65536)
                assert chunk, answer
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
            sockets.append(sock)
        os.killpg(router.proc.pid, signal.SIGTERM)
        code = router.proc.wait(20)
        logs = router.logs()
        assert code == 0, logs[-3000:]
        assert "Traceback" not in logs and "CancelledError" not in logs, logs[-3000:]
    finally:
        for sock in sockets:
            sock.close()
        router.stop()
    # The counts of the 50 answered requests were written before exit.
    (tmp_path / "again").mkdir()
    again = Router(
        {**upstreams.env(), "XROUTER_DATA_DIR": str(data), "CACHE_BACKEND": "disk"},
        tmp_path / "again",
        launcher=launcher,
    )
    try:
        doc = httpx.get(again.url + "/usage", timeout=10, trust_env=False).json()
        assert sum(doc["totals"][t]["requests"] for t in doc["totals"]) == 50
    finally:
        again.stop()


@pytest.mark.parametrize("launcher", ["mitmdump", "xrouter"])
def test_the_api_and_the_proxy_listen_together_with_a_mode_list(upstreams, tmp_path, launcher):
    """The documented way to have both: a regular mode and a reverse mode for the API
    (its target is never contacted: every request on it is answered or routed)."""
    proxy_port, api_port = free_port(), free_port()
    router = Router(
        {**upstreams.env(), "HOST": "127.0.0.1"},
        tmp_path,
        args=[
            "--mode",
            f"regular@{proxy_port}",
            "--mode",
            f"reverse:http://127.0.0.1:9@{api_port}",
        ],
        launcher=launcher,
        wait=False,
    )
    router.url = f"http://127.0.0.1:{api_port}"
    try:
        router.wait_ready()
        assert wait_listening(router.proc.pid, proxy_port) == {"127.0.0.1"}
        assert listening(router.proc.pid, api_port) == {"127.0.0.1"}
        with router.client() as client:
            reply = client.post(
                "/v1/chat/completions",
                json={"model": "xrouter/medium", "messages": [{"role": "user", "content": "x"}]},
            )
        assert reply.status_code == 200 and reply.headers["x-xrouter-upstream"] == "medium"
    finally:
        router.stop()
