"""The baseline for the benchmarks: plain mitmdump with a no-op rewrite addon.

It does the least a rewriting proxy does (point the request at the upstream it already
goes to, set one header), so the figures show what mitmproxy itself costs.
"""

from mitmproxy import http


class NoopRewrite:
    def request(self, flow: http.HTTPFlow) -> None:
        flow.request.host = flow.request.host
        flow.request.headers["x-bench"] = "1"

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        # Streams stay streams, as in the router; everything else is buffered.
        if flow.response and "text/event-stream" in flow.response.headers.get("content-type", ""):
            flow.response.stream = True


addons = [NoopRewrite()]
