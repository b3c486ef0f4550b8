"""Terminal clients of a running router: `xrouter watch` (the live feed, a line per event)
and `xrouter tui` (the feed, stats and a chat, full screen), and `xrouter openclaw`
(registers a router in OpenClaw's config, with the models its GET /v1/models lists).

They talk to a router over HTTP only (GET /events, GET /v1/models), so they work against
a remote one.
They import `wire` (the SSE parser) and `tiers`, never `proxy`, `routing`, `accounting`,
`setup` or `quality`; the launcher imports them only when such a command is asked for.
"""
