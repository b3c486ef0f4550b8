"""The request log (REQUEST_LOG=path, off by default): one JSON line per finished request.

Hooks only put the line on a queue; a thread writes it, so the event loop never waits on
the disk. Prompts and responses are included only with REQUEST_LOG_PROMPTS=true (the
`classifier_input` field is what calibration tools read).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("xrouter")

_STOP = object()


class RequestLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lines: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="xrouter-request-log", daemon=True)
        self._thread.start()

    def write(self, entry: dict[str, Any]) -> None:
        self._lines.put(entry)

    def _write(self) -> None:
        with open(self.path, "a", encoding="utf-8") as out:
            while True:
                entry = self._lines.get()
                if entry is _STOP:
                    return
                try:
                    out.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
                except (TypeError, ValueError) as exc:  # never lose the thread to one line
                    log.warning("request log: could not write a line: %s", exc)
                if self._lines.empty():
                    out.flush()

    def close(self) -> None:
        """Write what is queued, then stop (called at shutdown)."""
        self._lines.put(_STOP)
        self._thread.join(5)
