"""What only the `xrouter` launcher does: worker processes sharing the port, its own
option checks, and the lean addon set it relies on (fails loudly if mitmproxy moves)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys

import psutil
import pytest
from conftest import ROOT, Router, free_port, unique

from xrouter_core.proxy import launcher

CHAT = "/v1/chat/completions"


def ask(text: str) -> dict:
    return {"model": "xrouter/auto", "messages": [{"role": "user", "content": text}]}


def test_workers_share_the_port_and_all_serve(upstreams, tmp_path):
    router = Router(upstreams.env(), tmp_path, args=["--workers", "2"], launcher="xrouter")
    try:
        workers = psutil.Process(router.proc.pid).children()
        assert len(workers) == 2
        # Connections opened at once are spread over the workers by the kernel.
        clients = [router.client() for _ in range(16)]
        for index, client in enumerate(clients):
            reply = client.post(CHAT, json=ask(unique(f"worker {index}")))
            assert reply.status_code == 200 and reply.headers["x-xrouter-upstream"] == "medium"
        serving = {
            worker.pid
            for worker in workers
            for conn in worker.net_connections(kind="tcp")
            if conn.status == psutil.CONN_ESTABLISHED and conn.laddr.port == router.port
        }
        for client in clients:
            client.close()
        assert len(serving) == 2, f"only {serving} of {[w.pid for w in workers]} accepted"
        assert router.logs().count("xrouter ready") == 2
    finally:
        assert router.stop() == 0
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def test_the_launcher_makes_the_ca_once_before_forking_workers(tmp_path):
    """`--workers N` on a confdir without mitmproxy's CA: the parent makes it before it
    forks, because workers that each made one raced (a worker read a key another was
    still writing and exited at start; CI saw it). An existing CA is left as it is."""
    confdir = tmp_path / "conf"
    args = launcher.parse_args(["--workers", "3", "--set", f"confdir={confdir}"])
    launcher.create_ca_once(args)
    ca = confdir / "mitmproxy-ca.pem"
    pem = ca.read_bytes()
    assert pem.count(b"PRIVATE KEY-----") == 2 and pem.count(b"BEGIN CERTIFICATE") == 1
    launcher.create_ca_once(args)
    assert ca.read_bytes() == pem
    odd = launcher.parse_args(["--set", f"confdir={tmp_path / 'odd'}", "--set", "key_size=x"])
    launcher.create_ca_once(odd)  # left to the workers' option check, which names it
    assert not (tmp_path / "odd").exists()


def test_workers_check_the_configuration_once(upstreams, tmp_path):
    router = Router(
        {**upstreams.env(), "FRONTIER_BASE_URL": ""},
        tmp_path,
        args=["--workers", "2"],
        launcher="xrouter",
        wait=False,
    )
    assert router.proc.wait(20) == 1
    assert router.logs().count("FRONTIER_BASE_URL is required") == 1
    router.stop()


def test_workers_say_what_is_true_of_all_of_them_once(upstreams, tmp_path):
    """A route skipped for its missing key is the same in every worker: the warning
    comes once per start of the launcher, not once per worker; each worker still says
    it is ready."""
    env = {k: v for k, v in upstreams.env().items() if not k.startswith("CHEAP_")}
    cheap = {"base_url": upstreams.cheap.url + "/v1", "model": "cheap-model"}
    second = {**cheap, "api_key_env": "XR_TEST_KEY_NOT_SET"}
    env["UPSTREAMS_JSON"] = json.dumps({"routes": {"cheap": [cheap, second]}})
    router = Router(env, tmp_path, args=["--workers", "2"], launcher="xrouter")
    try:
        reply = router.client().post(CHAT, json=ask(unique("still served")))
        assert reply.status_code == 200, reply.text
        router.settle()
        logs = router.logs()
        assert logs.count("xrouter ready") == 2, logs
        skipped = "(its key variable XR_TEST_KEY_NOT_SET is not set) is skipped"
        assert logs.count(skipped) == 1, logs
    finally:
        assert router.stop() == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_taken_port_stops_it_with_one_clear_line(upstreams, tmp_path, workers):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        router = Router(
            {**upstreams.env(), "PORT": str(port)},
            tmp_path,
            args=["--workers", workers],
            launcher="xrouter",
            wait=False,
        )
        assert router.proc.wait(20) == 1
    logs = router.logs()
    assert str(port) in logs and "in use" in logs.lower()
    router.stop()


def test_command_line_outranks_the_environment_and_rejects_unknown_options(upstreams, tmp_path):
    port = free_port()
    router = Router(
        {**upstreams.env(), "PORT": "1"},
        tmp_path,
        args=["--port", str(port), "--host", "127.0.0.1", "--log-level", "warning"],
        launcher="xrouter",
        wait=False,
    )
    router.port, router.url = port, f"http://127.0.0.1:{port}"
    try:
        router.wait_ready()
        with router.client() as client:
            assert client.post(CHAT, json=ask(unique("quiet"))).status_code == 200
        assert "routed decision=" not in router.logs()  # info lines hidden at warning
    finally:
        router.stop()
    bad = subprocess.run(
        [sys.executable, "-m", "xrouter_core", "--set", "no_such_option=1"],
        cwd=tmp_path,
        env={**router.env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 1 and "no_such_option" in bad.stderr


def test_the_lean_core_is_what_mitmdump_runs_minus_the_extras():
    """The launcher names mitmproxy's addon classes directly: if mitmproxy renames or
    drops one, or stops creating listeners through loop.create_server, this fails."""
    from mitmproxy import addons
    from mitmproxy.proxy import mode_servers

    defaults = {type(a).__name__ for a in addons.default_addons()}
    assert {"Core", "Proxyserver", "NextLayer", "TlsConfig", "ProxyAuth"} <= defaults
    source = open(mode_servers.__file__).read()  # noqa: SIM115
    assert "asyncio.start_server(self.handle_stream, host, port)" in source


def test_reuse_port_loop_sets_so_reuseport():
    async def listen() -> int:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        value = server.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        server.close()
        return value

    kinds = ["asyncio"] + (["uvloop"] if importlib.util.find_spec("uvloop") else [])
    for kind in kinds:
        loop_cls = launcher.reuse_port_loop(launcher.loop_class(kind))
        with asyncio.Runner(loop_factory=loop_cls) as runner:
            assert runner.run(listen()) == 1


def test_python_dash_m_and_console_script_name_the_same_entry_point():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'xrouter = "xrouter_core.proxy.launcher:main"' in text
    shown = subprocess.run(
        [sys.executable, "-m", "xrouter_core", "--help"],
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert shown.returncode == 0 and "--workers" in shown.stdout


# A plugin whose constructor connects to a service of its own and waits for its greeting,
# as one that reads its policy from a server at start would: the test holds that service
# and never answers, so each worker stays in its start-up, before "xrouter ready".
WAITING_PLUGIN = """\
import os
import socket


class WaitsForItsService:
    def __init__(self):
        port = int(os.environ["PLUGIN_SERVICE_PORT"])
        self.service = socket.create_connection(("127.0.0.1", port))
        self.service.recv(1)

    def on_start(self):
        pass
"""


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize(
    ("signum", "to_group"),
    [(signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["ctrl-c", "sigterm"],
)
def test_a_stop_signal_during_start_up_ends_it_as_cleanly_as_after(
    upstreams, tmp_path, workers, signum, to_group
):
    """SIGINT to the whole process group (Ctrl-C in a terminal) or SIGTERM to the
    launcher (docker stop, systemd), while every worker is still starting (in a plugin's
    constructor waiting on a socket this test holds): exit status 0, as the same signal
    gives once the router runs (test_workers_share_the_port_and_all_serve), and no
    traceback. It was 1 with a KeyboardInterrupt traceback, or death by SIGTERM."""
    (tmp_path / "waits.py").write_text(WAITING_PLUGIN)
    with socket.socket() as service:
        service.bind(("127.0.0.1", 0))
        service.listen()
        service.settimeout(30)
        env = {
            **upstreams.env(),
            "XROUTER_PLUGINS": "waits.py:WaitsForItsService",
            "PLUGIN_SERVICE_PORT": str(service.getsockname()[1]),
        }
        router = Router(env, tmp_path, args=["--workers", workers], launcher="xrouter", wait=False)
        waiting = []
        try:
            waiting = [service.accept()[0] for _ in range(int(workers))]
            if to_group:
                os.killpg(router.proc.pid, signum)
            else:
                router.proc.send_signal(signum)
            assert router.proc.wait(20) == 0, router.logs()
        finally:
            router.stop()
            for connection in waiting:
                connection.close()
    logs = router.logs()
    assert "xrouter ready" not in logs and "Traceback" not in logs, logs
