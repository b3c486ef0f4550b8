"""Listening only where asked (issue 16, point 4 and 5): the proxy listener binds HOST,
`--workers N` reads HOST and PORT from .env, and an exposed listener is named in a
warning at start. Every listener here is on a loopback address."""

from __future__ import annotations

import time

import httpx
import psutil
import pytest
from conftest import Router, free_port

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
        assert wait_listening(router.proc.pid, port) == {"127.0.0.2"}
        assert len(psutil.Process(router.proc.pid).children()) == 2
        reply = httpx.get(router.url + "/health", timeout=5, trust_env=False)
        assert reply.status_code == 200
        assert listening(router.proc.pid, 3000) == set()
    finally:
        assert router.stop() == 0
