"""Logging: the router's level, an optional file written off the event loop, and
redaction of every configured secret from every log record."""

from __future__ import annotations

import logging
import logging.handlers
import queue
from pathlib import Path

from xrouter_core.config import Settings

log = logging.getLogger("xrouter")

CHATTY_LOGGERS = ("mitmproxy.proxy.server", "httpx", "httpcore")

_previous_factory = logging.getLogRecordFactory()
_secrets: tuple[str, ...] = ()
_listener: logging.handlers.QueueListener | None = None


def _redacting_factory(*args, **kwargs) -> logging.LogRecord:
    record = _previous_factory(*args, **kwargs)
    if _secrets:
        message = record.getMessage()
        for secret in _secrets:
            if secret in message:
                message = message.replace(secret, "***")
        # Keep the formatted text: the handlers then do not format it a second time.
        record.msg, record.args = message, None
    return record


def log_rejected(status: int, method: str, path: str, reason: str) -> None:
    """The one line for a request the router refused itself: never the body, the query
    or a header, so no prompt text or key can reach the log through it."""
    log.info(
        "rejected status=%d method=%s path=%s reason=%s",
        status,
        method[:16],
        path.split("?", 1)[0][:200],
        reason or "-",
    )


def setup_logging(settings: Settings) -> None:
    """Apply LOG_LEVEL, LOG_TO_FILE and LOG_DIR; safe to call again on reconfigure."""
    global _secrets, _listener
    _secrets = tuple(sorted(settings.secrets, key=len, reverse=True))
    logging.setLogRecordFactory(_redacting_factory)
    log.setLevel(settings.log_level.upper())
    # mitmproxy logs every client connect and httpx every side call at info: debug only.
    chatty = logging.DEBUG if settings.log_level == "debug" else logging.WARNING
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(chatty)
    stop_file_logging()
    if settings.log_to_file:
        directory = Path(settings.log_dir)
        directory.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(
            directory / "xrouter.log", maxBytes=20_000_000, backupCount=5, encoding="utf-8"
        )
        file_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
        )
        # The file is written by a thread: hooks only put the record on a queue.
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        queue_handler = logging.handlers.QueueHandler(records)
        queue_handler.setLevel(settings.log_level.upper())
        queue_handler.set_name("xrouter-file")
        log.addHandler(queue_handler)
        _listener = logging.handlers.QueueListener(records, file_handler)
        _listener.start()


def stop_file_logging() -> None:
    global _listener
    for handler in list(log.handlers):
        if handler.get_name() == "xrouter-file":
            log.removeHandler(handler)
    if _listener is not None:
        _listener.stop()
        for handler in _listener.handlers:
            handler.close()
        _listener = None


def quiet_cancelled_callbacks() -> None:
    """Keep cancelled tasks out of the event loop's error log, on the running loop.

    On SIGTERM with open keep-alive connections, the loop's shutdown cancels each
    connection's task; Python 3.11's `asyncio.start_server` callback then calls
    `task.exception()` on it, which raises CancelledError, and the loop logs that with a
    traceback per connection (3.12 checks `task.cancelled()` first). A cancellation is
    how these tasks are meant to end, so such reports are dropped; every other one goes
    to the handler in place before. Installed before mitmproxy's `Master.run`, which
    puts back the handler it found when it returns, so this one is there at shutdown."""
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    previous = loop.get_exception_handler()
    if getattr(previous, "quiets_cancelled", False):
        return

    def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if isinstance(context.get("exception"), asyncio.CancelledError):
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handler.quiets_cancelled = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)
