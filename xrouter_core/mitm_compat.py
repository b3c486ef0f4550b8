"""The one place that reaches into mitmproxy internals, guarded and tested.

mitmproxy answers a failed upstream connection with its own HTML 502 page, and an
addon cannot replace it (the `error` hook fires, then the page is sent). Routed
flows need that answer to be ours: a JSON error naming the route, or the answer of
a fallback route. So for flows the router marked, a connection failure before any
response becomes a placeholder 502 that goes through the normal `response` hook,
where the router turns it into the real answer. Everything else keeps mitmproxy's
behaviour. `tests/test_mitm_compat.py` fails loudly if mitmproxy changes shape.
"""

from __future__ import annotations

import logging

from mitmproxy import http
from mitmproxy.proxy.events import Event
from mitmproxy.proxy.layers.http import HttpStream, ResponseProtocolError

log = logging.getLogger("xrouter")

UPSTREAM_ERROR = "xrouter.upstream_error"
MARK = "xrouter.routed"

_installed = False


def install() -> bool:
    """Patch HttpStream once; returns False (and logs) when mitmproxy's shape changed."""
    global _installed
    if _installed:
        return True
    original = getattr(HttpStream, "handle_protocol_error", None)
    if (
        original is None
        or not hasattr(HttpStream, "send_response")
        or not hasattr(HttpStream, "state_done")
    ):
        log.warning(
            "this mitmproxy version is not supported for upstream error answers; "
            "unreachable upstreams get mitmproxy's own 502 page"
        )
        return False

    def handle_protocol_error(self: HttpStream, event: Event):
        flow = self.flow
        if (
            isinstance(event, ResponseProtocolError)
            and flow.response is None
            and flow.metadata.get(MARK)
            and self.client_state == self.state_done
        ):
            flow.metadata[UPSTREAM_ERROR] = event.message or "connection failed"
            flow.response = http.Response.make(502, b"", {"content-type": "application/json"})
            yield from self.send_response()
            return
        yield from original(self, event)

    HttpStream.handle_protocol_error = handle_protocol_error  # type: ignore[method-assign]
    _installed = True
    return True
