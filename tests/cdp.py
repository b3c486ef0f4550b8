"""Headless Chromium driven over the DevTools protocol, for tests that watch a page change
while the test does something (`--dump-dom` only sees the page at one moment).

The protocol runs over a WebSocket on 127.0.0.1; wsproto (a mitmproxy dependency) speaks
it, so the tests need no browser-automation package.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Message, Ping, Request, TextMessage

# Headless, no sandbox (CI runs as root), and nothing that reaches beyond loopback.
HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def chromium_binary() -> str | None:
    found = shutil.which("chromium") or "/usr/bin/chromium"
    return found if Path(found).exists() else None


class Browser:
    """One headless Chromium with one page; `evaluate` runs JavaScript in it."""

    def __init__(self, tmp: Path, width: int = 1400, height: int = 1200) -> None:
        binary = chromium_binary()
        if binary is None:
            raise RuntimeError("chromium is not installed (.ci/run installs it)")
        profile = tmp / f"cdp-profile-{time.time_ns()}"
        profile.mkdir()
        self.proc = subprocess.Popen(
            [
                binary,
                *HEADLESS_FLAGS,
                f"--window-size={width},{height}",
                "--hide-scrollbars",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.ids = itertools.count(1)
        try:
            port = self._port(profile / "DevToolsActivePort")
            pages = httpx.get(f"http://127.0.0.1:{port}/json/list", trust_env=False).json()
            target = next(p for p in pages if p["type"] == "page")["webSocketDebuggerUrl"]
            self._connect(target)
        except BaseException:
            self.close()
            raise

    def _port(self, active: Path, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
            if active.exists() and active.read_text().strip():
                return int(active.read_text().split()[0])
            time.sleep(0.1)
        raise RuntimeError("chromium did not open its DevTools port")

    def _connect(self, url: str) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(host=parts.netloc, target=parts.path)))
        self.pending: list[Any] = []
        while not any(isinstance(e, AcceptConnection) for e in self._events()):
            pass

    def _events(self) -> list[Any]:
        data = self.sock.recv(65536)
        if not data:
            raise RuntimeError("chromium closed the DevTools connection")
        self.ws.receive_data(data)
        events = list(self.ws.events())
        for event in events:
            if isinstance(event, Ping):
                self.sock.sendall(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                raise RuntimeError("chromium closed the DevTools connection")
        return events

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One protocol command and its result (events in between are skipped)."""
        number = next(self.ids)
        message = json.dumps({"id": number, "method": method, "params": params})
        self.sock.sendall(self.ws.send(Message(data=message)))
        text = ""
        while True:
            for event in self._events():
                if not isinstance(event, TextMessage):
                    continue
                text += event.data
                if not event.message_finished:
                    continue
                doc, text = json.loads(text), ""
                if doc.get("id") == number:
                    if "error" in doc:
                        raise RuntimeError(f"{method}: {doc['error']}")
                    return doc["result"]

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
        """Poll until the expression is truthy in the page (one that throws counts as
        not yet); its value."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = self.evaluate(expression)
            except RuntimeError as exc:  # e.g. the page is still loading
                last = str(exc)
            else:
                if last:
                    return last
            time.sleep(0.05)
        raise AssertionError(f"{expression} stayed falsy for {timeout}s (last: {last!r})")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def close(self) -> None:
        sock = getattr(self, "sock", None)
        if sock is not None:
            sock.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
