"""Background work the router starts and does not wait for.

The event loop keeps only a weak reference to a task, so one nobody holds may vanish
before it is done: `Tasks` holds each until it ends, lets a caller wait for them, and
cancels what is left at shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class Tasks:
    __slots__ = ("_running",)

    def __init__(self) -> None:
        self._running: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` in a task of its own on the running loop."""
        task = asyncio.get_running_loop().create_task(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def __len__(self) -> int:
        """How many are still running."""
        return len(self._running)

    async def wait(self, timeout: float) -> None:
        """Until every task running now is done, or `timeout` seconds have passed."""
        if self._running:
            await asyncio.wait(set(self._running), timeout=timeout)

    def cancel(self) -> None:
        """Cancel every task still running."""
        for task in self._running:
            task.cancel()
