"""GET /events, the live feed: real routers under both launchers, SSE clients on loopback,
and the feed's bounded queues in process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import queue
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from cdp import Browser
from conftest import ROOT, unique
from fakes import Reply, openai_completion

from xrouter_core.accounting.events import EventFeed
from xrouter_core.wire.sse import SSEParser

CHAT = "/v1/chat/completions"
KEY = "events-key-24680xyz"
PRICES = {"MEDIUM_INPUT_PRICE": "1", "MEDIUM_OUTPUT_PRICE": "2"}


def ask(text: str, **extra) -> dict:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], **extra}


class Feed:
    """An SSE client of /events in a thread: each event, parsed, lands in `events`.

    `close` shuts the reply's socket down: closing the client from this thread leaves the
    reader blocked in recv until the feed's next keep-alive, 15 s away."""

    def __init__(self, url: str, key: str | None = None) -> None:
        self.events: queue.Queue[tuple[str, dict]] = queue.Queue()
        self.status: int | None = None
        self.headers: httpx.Headers | None = None
        self.socket: socket.socket | None = None
        self.client = httpx.Client(trust_env=False, timeout=httpx.Timeout(30, read=60))
        headers = {"authorization": f"Bearer {key}"} if key else {}
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.read, args=(url, headers), daemon=True)
        self.thread.start()
        assert self.ready.wait(15), "no answer from /events"

    def read(self, url: str, headers: dict[str, str]) -> None:
        parser = SSEParser()
        try:
            with self.client.stream("GET", url + "/events", headers=headers) as reply:
                self.status, self.headers = reply.status_code, reply.headers
                self.socket = reply.extensions["network_stream"].get_extra_info("socket")
                self.ready.set()
                for data in reply.iter_raw():
                    for event in parser.feed(data):
                        self.events.put((event.event, json.loads(event.data)))
                    if self.stop.is_set():
                        return
        except httpx.HTTPError:
            pass
        finally:
            self.ready.set()

    def next(self, kind: str | None = None, timeout: float = 15.0) -> tuple[str, dict]:
        """The next event (of `kind`, skipping others)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {kind or 'event'} in {timeout}s"
            name, doc = self.events.get(timeout=left)
            if kind is None or name == kind:
                return name, doc

    def request_events(self, rid: int | None = None, timeout: float = 15.0) -> list[tuple]:
        """The events of one request (the next one to start, or `rid`), up to `complete`."""
        seen: list[tuple[str, dict]] = []
        while True:
            name, doc = self.next(timeout=timeout)
            if name in ("stats", "dropped"):
                continue
            if rid is None and name == "start":
                rid = doc["id"]
            if doc.get("id") != rid:
                continue
            seen.append((name, doc))
            if name == "complete":
                return seen

    def close(self) -> None:
        self.stop.set()
        if self.socket is not None:
            with contextlib.suppress(OSError):  # the router closed it first
                self.socket.shutdown(socket.SHUT_RDWR)
        self.client.close()
        self.thread.join(10)


@pytest.fixture
def feeds() -> Iterator[list[Feed]]:
    opened: list[Feed] = []
    yield opened
    for feed in opened:
        feed.close()


def test_each_request_is_told_in_four_events_to_every_subscriber(start_router, upstreams, feeds):
    router = start_router({**PRICES, "ROUTER_API_KEY": KEY, "REQUEST_LOG_PROMPTS": "true"})
    refused = httpx.get(router.url + "/events", trust_env=False)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"

    feeds.extend([Feed(router.url, KEY), Feed(router.url, KEY)])
    for feed in feeds:
        assert feed.status == 200
        assert feed.headers["content-type"] == "text/event-stream"
        _, stats = feed.next("stats")  # one at connect
        assert stats["requests"] == 0 and set(stats["tiers"]) == {"cheap", "medium", "frontier"}
        assert stats["cost_usd"] == stats["frontier_usd"] == stats["savings_usd"] == 0
    text = unique("tell me about the feed")
    with router.client(headers={"authorization": f"Bearer {KEY}"}) as client:
        reply = client.post(CHAT, json=ask(text))
    assert reply.status_code == 200
    seen = [feed.request_events() for feed in feeds]
    assert seen[0] == seen[1]  # both subscribers got the same events
    names = [name for name, _ in seen[0]]
    assert names == ["start", "classified", "routed", "complete"]
    start, classified, routed, complete = (doc for _, doc in seen[0])
    assert len({doc["worker"] for _, doc in seen[0]}) == 1
    assert start["prompt"] == text and start["format"] == "openai" and start["stream"] is False
    assert classified["source"] == "llm" and classified["tier"] == 1
    assert classified["classifier_ms"] >= 0
    assert routed == {
        "id": start["id"],
        "route": "medium",
        "provider": "openai_compatible",
        "model": "medium-model",
        "fallbacks": [],
        "worker": start["worker"],
    }
    assert complete["status"] == 200 and complete["error"] is None
    assert (complete["prompt_tokens"], complete["completion_tokens"]) == (11, 7)
    assert complete["cache_read_tokens"] == 0 and complete["cache_write_tokens"] == 0
    assert complete["cost_usd"] == pytest.approx((11 * 1 + 7 * 2) / 1e6)
    assert complete["total_ms"] > 0 and complete["route"] == "medium"
    assert 0 < complete["first_byte_ms"] <= complete["total_ms"]
    assert KEY not in json.dumps(seen)

    # A refused request: its start and its complete, with the error.
    with router.client(headers={"authorization": f"Bearer {KEY}", "x-xrouter-tier": "huge"}) as c:
        assert c.post(CHAT, json=ask(unique("pinned badly"))).status_code == 400
    events = feeds[0].request_events()
    assert [name for name, _ in events] == ["start", "complete"]
    assert events[1][1]["status"] == 400 and "X-Xrouter-tier" in events[1][1]["error"]


def test_a_fallback_is_a_second_routed_event(start_router, upstreams, feeds):
    router = start_router({"BREAKER_FAILURES": "1000"})
    upstreams.medium.override = lambda request: Reply(
        status=503, body={"error": {"message": "fake 503", "type": "x"}}
    )
    feeds.append(Feed(router.url))
    feeds[0].next("stats")
    with router.client() as client:
        assert client.post(CHAT, json=ask(unique("fall over"), stream=True)).status_code == 200
    events = feeds[0].request_events()
    assert [name for name, _ in events] == ["start", "classified", "routed", "routed", "complete"]
    assert events[2][1]["route"] == "medium" and events[2][1]["fallbacks"] == []
    assert events[3][1]["route"] == "frontier" and events[3][1]["fallbacks"] == ["medium:503"]
    assert events[4][1]["status"] == 200 and events[4][1]["route"] == "frontier"
    assert "prompt" not in events[0][1]  # prompt logging is off


def test_a_subscriber_that_never_reads_does_not_hold_the_router(start_router, upstreams, feeds):
    """A subscriber that stops reading: requests go on, and once it is gone the feed
    forgets it."""
    router = start_router({"REQUEST_LOG_PROMPTS": "true"})  # start events carry the prompt
    sleeper = socket.socket()
    sleeper.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sleeper.connect(("127.0.0.1", router.port))
    sleeper.sendall(b"GET /events HTTP/1.1\r\nhost: x\r\n\r\n")
    prompt = "x" * 3000  # big events fill the buffers between sooner
    with router.client() as client:
        for n in range(150):
            assert client.post(CHAT, json=ask(unique(prompt) + str(n))).status_code == 200
    head = sleeper.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head
    sleeper.close()

    def subscribers_seen() -> int:
        feed = Feed(router.url)
        try:
            return feed.next("stats")[1]["subscribers"]
        finally:
            feed.close()

    deadline = time.monotonic() + 15
    while subscribers_seen() != 1:
        assert time.monotonic() < deadline, "the closed subscriber is still subscribed"
        time.sleep(0.2)


def test_a_full_queue_drops_events_and_says_how_many():
    """The bound itself, in process: publishing never waits and never grows a queue past
    its limit; the subscriber learns how many it lost."""

    async def scenario() -> None:
        feed = EventFeed(queue_max=10, stats_s=3600)
        slow, quick = feed.subscribe(), feed.subscribe()
        for n in range(25):
            feed.publish("complete", {"id": n})
            if n % 5 == 4:
                assert len(await quick.take(1)) == 5
        assert len(slow.frames) == 10 and slow.dropped == 15
        frames = await slow.take(1)
        assert frames[0] == b'event: dropped\ndata: {"count":15}\n\n'
        assert len(frames) == 11 and b'"id":9' in frames[-1]
        feed.publish("complete", {"id": 99})
        assert await slow.take(1) == [frames[-1].replace(b'"id":9', b'"id":99')]
        assert quick.dropped == 0
        feed.unsubscribe(slow)
        feed.unsubscribe(quick)
        assert feed.subscribers == []
        feed.close()

    asyncio.run(scenario())


def test_no_subscriber_means_no_event_is_built():
    """With nobody listening, each event is one check: nothing is encoded or kept."""
    feed = EventFeed()
    calls: list[str] = []
    feed.publish = lambda kind, doc: calls.append(kind)  # type: ignore[method-assign]
    feed.start(1, None)  # type: ignore[arg-type] - never looked at
    feed.classified(1, None)  # type: ignore[arg-type]
    feed.routed(1, None, "x", [])  # type: ignore[arg-type]
    feed.complete(1, 200)
    assert calls == []


# ---- the dashboard, live, in real headless Chromium ------------------------------------


@pytest.mark.parametrize("launcher", ["xrouter"])  # the page does not depend on the form
def test_the_dashboard_shows_a_request_before_its_answer_comes(start_router, upstreams, tmp_path):
    env = {
        **PRICES,
        "ROUTER_API_KEY": KEY,
        "REQUEST_LOG_PROMPTS": "true",
        "XROUTER_DATA_DIR": str(tmp_path / "data"),
    }
    router = start_router(env)
    gate = threading.Event()

    def slow(request) -> Reply:
        gate.wait(30)  # the answer waits until the test has seen the row
        return Reply(body=openai_completion("slow but sure", "medium-model"))

    upstreams.medium.override = slow
    auth = {"authorization": f"Bearer {KEY}"}
    text = unique("watch me go through")
    results: list[int] = []

    def send() -> None:
        with router.client(headers=auth) as client:
            results.append(client.post(CHAT, json=ask(text)).status_code)

    row = (
        "[...document.querySelectorAll('#recent tr.row')]"
        f".find((tr) => tr.children[7].textContent === {json.dumps(text)})"
    )
    cells_when = "(() => {{ const tr = {row}; return tr && ({cond}) && [...tr.children].map((td) => td.textContent); }})()"
    browser = Browser(tmp_path)
    sender = threading.Thread(target=send)
    try:
        browser.goto(router.url + f"/dashboard#key={KEY}")
        browser.wait_for("document.body.dataset.live === 'on'")
        assert browser.evaluate("document.getElementById('total-requests').textContent") == "0"
        sender.start()
        cells = browser.wait_for(
            cells_when.format(row=row, cond="tr.children[2].textContent === 'medium'")
        )
        assert sender.is_alive() and not results  # the fake is still holding the answer
        assert cells[:2] != ["", ""] and cells[1] == "1" and cells[3] == "medium-model"
        assert cells[6] == "…" and cells[4] == "…"  # status and tokens fill in at the end
        gate.set()
        sender.join(30)
        assert results == [200]
        cells = browser.wait_for(
            cells_when.format(row=row, cond="tr.children[6].textContent === '200'")
        )
        assert cells[4] == "11+7" and float(cells[5]) > 0
        assert browser.wait_for(
            "document.getElementById('total-requests').textContent === '1' && 'ok'"
        )
        # A click shows the request's details.
        detail = browser.evaluate(
            f"(() => {{ {row}.click(); return {row}.nextSibling.textContent; }})()"
        )
        assert "decision: 1 by llm" in detail and "route: medium" in detail
        assert "first byte ms: " in detail
        print(f"live dashboard screenshot: {browser.screenshot(tmp_path / 'live.png')}")

        # The router goes away: the page says so and polls; back, it follows again.
        renders = int(browser.evaluate("document.body.dataset.renderCount || '0'"))
        router.stop()
        browser.wait_for("document.body.dataset.live === 'off'")
        again = start_router({**env, "PORT": str(router.port)})
        browser.wait_for(f"Number(document.body.dataset.renderCount) > {renders}")
        browser.wait_for("document.body.dataset.live === 'on'", timeout=30)
        assert browser.evaluate(row + " !== undefined")  # the polled table has it too
        upstreams.medium.override = None
        second = unique("and once more")
        with again.client(headers=auth) as client:
            assert client.post(CHAT, json=ask(second)).status_code == 200
        browser.wait_for(row.replace(json.dumps(text), json.dumps(second)) + " !== undefined")
    finally:
        gate.set()
        if sender.is_alive():
            sender.join(30)
        browser.close()


# ---- xrouter watch --------------------------------------------------------------------


class Lines:
    """A file's lines as they come, read in a thread (a pipe, or a pty's master side)."""

    def __init__(self, read) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.read = read
        threading.Thread(target=self.pump, daemon=True).start()

    def pump(self) -> None:
        buffer = b""
        while True:
            try:
                data = self.read()
            except OSError:
                data = b""
            if not data:
                return
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                self.lines.put(line.decode(errors="replace").rstrip("\r"))

    def until(self, needle: str, timeout: float = 20.0) -> list[str]:
        """The lines up to and with the first that holds `needle`."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no line with {needle!r} in {timeout}s; saw {seen}"
            try:
                seen.append(self.lines.get(timeout=left))
            except queue.Empty:
                continue
            if needle in seen[-1]:
                return seen


def watch(router, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "xrouter_core", "watch", "--url", router.url, *args],
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)},
        **popen,
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.parametrize("launcher", ["xrouter"])
def test_watch_prints_each_event_and_follows_the_feed(start_router, upstreams):
    env = {**PRICES, "ROUTER_API_KEY": KEY, "REQUEST_LOG_PROMPTS": "true"}
    router = start_router(env)
    wrong = watch(router, "--key", "not-the-key", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = wrong.communicate(timeout=30)
    assert wrong.returncode == 1 and out == b""
    assert b"HTTP 401: Missing or invalid API key" in err

    proc = watch(router, "--key", KEY, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out_lines, err_lines = Lines(proc.stdout.read1), Lines(proc.stderr.read1)
        err_lines.until("following")
        text = unique("watch this")
        auth = {"authorization": f"Bearer {KEY}"}
        with router.client(headers=auth) as client:
            assert client.post(CHAT, json=ask(text)).status_code == 200
        lines = out_lines.until(" complete ")
        assert len(lines) == 4, lines
        assert [line.split()[2] for line in lines] == ["start", "classified", "routed", "complete"]
        assert lines[0].endswith(f'openai gpt-4o "{text}"')
        assert lines[1].endswith("medium (1) by llm, score 0.5, " + lines[1].rsplit(", ", 1)[1])
        assert "medium → openai_compatible medium-model" in lines[2]
        assert "200 medium medium-model 11+7 tokens $0.000025" in lines[3]
        assert "(first byte " in lines[3]
        assert not any("\x1b[" in line for line in lines)  # a pipe gets no colour

        # The router goes and comes back: watch reconnects and goes on.
        router.stop()
        err_lines.until("reconnecting")
        again = start_router({**env, "PORT": str(router.port)})
        err_lines.until("following", timeout=30)
        with again.client(headers=auth) as client:
            assert client.post(CHAT, json=ask(unique("and again"))).status_code == 200
        assert " complete " in out_lines.until(" complete ")[-1]
    finally:
        stop(proc)
    assert proc.returncode == 0


@pytest.mark.parametrize("launcher", ["xrouter"])
def test_watch_colours_lines_by_tier_on_a_terminal(start_router, upstreams):
    router = start_router()
    upstreams.classifier.by_text.update({"easy": "0", "hard": "2"})
    master, slave = pty.openpty()
    proc = watch(router, "--summary", stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    try:
        lines = Lines(lambda: os.read(master, 4096))
        Lines(proc.stderr.read1).until("following")
        with router.client() as client:
            for text in ("easy one", "hard one"):
                assert client.post(CHAT, json=ask(unique(text))).status_code == 200
            upstreams.cheap.override = lambda request: Reply(
                status=400, body={"error": {"message": "no", "type": "invalid_request_error"}}
            )
            assert client.post(CHAT, json=ask(unique("easy but refused"))).status_code == 400
        cheap, frontier, refused = (lines.until(" | ")[-1] for _ in range(3))
    finally:
        stop(proc)
        os.close(master)
    # One line per request (--summary), in its tier's colour; a failure in red.
    assert cheap.startswith("\x1b[32m") and "cheap → " in cheap and cheap.endswith("\x1b[0m")
    assert frontier.startswith("\x1b[34m") and "frontier (2) by llm" in frontier
    assert refused.startswith("\x1b[31m") and "| 400 cheap" in refused


# ---- xrouter tui, in a real terminal (tmux) ---------------------------------------------


@pytest.mark.parametrize("launcher", ["xrouter"])
def test_tui_chat_message_appears_in_the_feed_with_its_tier(start_router, upstreams, tmp_path):
    if not shutil.which("tmux"):
        pytest.fail("tmux is not installed (.ci/run installs it)")
    router = start_router({"ROUTER_API_KEY": KEY, "REQUEST_LOG_PROMPTS": "true"})
    server = f"xrouter-tui-{os.getpid()}-{time.time_ns()}"
    done = tmp_path / "exit"
    quoted = shlex.quote(str(done))
    command = (
        shlex.join([sys.executable, "-m", "xrouter_core", "tui", "--url", router.url, "--key", KEY])
        # Written aside and renamed, so the file never exists empty (the test polls for it).
        + f"; echo EXIT=$? > {quoted}.part; mv {quoted}.part {quoted}; sleep 30"
    )

    def tmux(*args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", server, *args], capture_output=True, text=True, timeout=10
        ).stdout

    def screen_with(*texts: str, colours: bool = False) -> str:
        deadline = time.monotonic() + 20
        screen = ""
        while time.monotonic() < deadline:
            screen = tmux("capture-pane", "-p", *(["-e"] if colours else []), "-t", "tui")
            if all(text in screen for text in texts):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"never saw {texts!r}:\n{screen}")

    tmux(
        "new-session", "-d", "-s", "tui", "-x", "150", "-y", "40",
        "-e", "TERM=xterm-256color", "-e", f"PYTHONPATH={ROOT}", command,
    )  # fmt: skip
    try:
        screen_with("(live)", "Tab focus", "q quit")  # the keys are on screen
        text = unique("what does a router do")
        tmux("send-keys", "-t", "tui", "-l", text)
        tmux("send-keys", "-t", "tui", "Enter")
        screen = screen_with("Hello from medium!", "[decision 1 → medium, score 0.500]")
        assert f"you: {text}" in screen
        feed = screen_with(text[:40], "200 11+7 tok").splitlines()
        line = next(row for row in feed if text[:40] in row and "200 11+7" in row)
        assert "1 llm" in line and "medium" in line and "medium-model" in line
        coloured = screen_with("200 11+7 tok", colours=True)
        row = next(r for r in coloured.splitlines() if "200 11+7" in r)
        assert "\x1b[33m" in row  # medium's colour, yellow
        assert "by tier: medium=1" in screen_with("by tier: medium=1")
        (tmp_path / "tui.txt").write_text(tmux("capture-pane", "-p", "-t", "tui"))
        print(f"tui screen: {tmp_path / 'tui.txt'}")
        tmux("send-keys", "-t", "tui", "Tab")  # to the feed, where q quits
        tmux("send-keys", "-t", "tui", "q")
        deadline = time.monotonic() + 20
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert done.read_text().strip() == "EXIT=0"
    finally:
        tmux("kill-server")


# ---- several processes on one Redis ------------------------------------------------------


@pytest.mark.parametrize("launcher", ["xrouter"])
def test_routers_sharing_redis_share_their_feeds(start_router, upstreams, tmp_path, feeds):
    from helpers import RedisServer

    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    redis_server = RedisServer(tmp_path)
    try:
        env = {"REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/0"}
        here, there = (
            start_router({**env, "XROUTER_DATA_DIR": str(tmp_path / f"d{i}")}) for i in (0, 1)
        )
        feeds.append(Feed(here.url))
        _, stats = feeds[0].next("stats")
        mine = stats["worker"]
        # `there` learns within a couple of seconds that someone listens: until then its
        # requests are not published.
        deadline = time.monotonic() + 20
        with there.client() as client:
            while True:
                assert time.monotonic() < deadline, "no event of the other router came"
                assert client.post(CHAT, json=ask(unique("over there"))).status_code == 200
                try:
                    name, doc = feeds[0].next("complete", timeout=1.5)
                    break
                except (AssertionError, queue.Empty):
                    continue
            assert doc["worker"] != mine
            text = unique("one more over there")
            assert client.post(CHAT, json=ask(text)).status_code == 200
        events = feeds[0].request_events()
        assert [n for n, _ in events] == ["start", "classified", "routed", "complete"]
        assert {d["worker"] for _, d in events} == {doc["worker"]}
        # This router's own requests still come straight to its subscriber, once each.
        with here.client() as client:
            assert client.post(CHAT, json=ask(unique("right here"))).status_code == 200
        own = feeds[0].request_events()
        assert [n for n, _ in own] == ["start", "classified", "routed", "complete"]
        assert {d["worker"] for _, d in own} == {mine}
        time.sleep(0.5)  # an echo through Redis would come within its 0.1 s batch
        stray = []
        while not feeds[0].events.empty():
            stray.append(feeds[0].events.get())
        assert [e for e in stray if e[0] != "stats"] == []
        for router in (here, there):
            assert "Traceback" not in router.logs()
    finally:
        redis_server.kill()


@pytest.mark.parametrize("launcher", ["xrouter"])
def test_one_subscriber_sees_every_worker_with_redis(start_router, upstreams, tmp_path, feeds):
    """`xrouter --workers 2` on Redis: one subscription, the requests of both workers."""
    from helpers import RedisServer

    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    redis_server = RedisServer(tmp_path)
    try:
        router = start_router(
            {"REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/0"}, args=["--workers", "2"]
        )
        feeds.append(Feed(router.url))
        feeds[0].next("stats")
        workers: set[int] = set()
        deadline = time.monotonic() + 30
        while len(workers) < 2:
            assert time.monotonic() < deadline, f"saw only workers {workers}"
            # A new connection each time: the kernel spreads them over the workers.
            with router.client() as client:
                assert client.post(CHAT, json=ask(unique("which worker"))).status_code == 200
            with contextlib.suppress(AssertionError, queue.Empty):
                workers.add(feeds[0].next("complete", timeout=1.0)[1]["worker"])
    finally:
        redis_server.kill()
