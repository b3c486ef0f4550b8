"""Background work the router starts and does not wait for.

The event loop keeps only a weak reference to a task, so one nobody holds may vanish
before it is done: `Tasks` holds each until it ends, and cancels what is left at
shutdown.
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

    def cancel(self) -> None:
        """Cancel every task still running."""
        for task in self._running:
            task.cancel()
