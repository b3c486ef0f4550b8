"""A mitmproxy addon for tests that run the router as an HTTPS proxy (`--mode regular`),
loaded after it (`-s tests/loopback_guard.py`): a request the router left unrouted and
bound for a host beyond loopback is answered here with a 404 and one log line naming it,
and no connection leaves loopback, so a real client's other calls (Claude Code asks
api.anthropic.com for its settings) stay on the machine and the test can list them."""

from __future__ import annotations

import ipaddress
import json
import logging

from mitmproxy import http
from mitmproxy.proxy.server_hooks import ServerConnectionHookData

log = logging.getLogger(__name__)
PREFIX = "loopback-guard: blocked"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def request(flow: http.HTTPFlow) -> None:
    if flow.response is not None or is_loopback(flow.request.host):
        return  # answered by the router, or routed to a fake on loopback
    log.warning("%s %s %s", PREFIX, flow.request.method, flow.request.pretty_url)
    error = {"type": "error", "error": {"type": "not_found_error", "message": "not routed"}}
    flow.response = http.Response.make(
        404, json.dumps(error).encode(), {"content-type": "application/json"}
    )


def server_connect(data: ServerConnectionHookData) -> None:
    host = (data.server.address or ("", 0))[0]
    if not is_loopback(host):
        log.warning("%s connection to %s", PREFIX, host)
        data.server.error = f"{host} is beyond loopback"
