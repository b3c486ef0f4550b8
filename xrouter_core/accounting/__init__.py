"""What routing cost and what it remembers: usage counters (memory, disk, Redis), prices,
Prometheus metrics, the request log, the decision and response caches, and the pages that
show them (/usage, /metrics, /dashboard).

Imports wire and routing types; never mitmproxy, setup or quality.
"""
