"""Wire formats, client side and provider side: inbound parsers (chat completions,
Anthropic Messages), the canonical stream events, SSE and compact JSON, renderers into
each client format, stream translation, the router's own local answers, errors and
X-Xrouter-* headers, and `adapters/`, one module per provider family, each owning both
directions (request out, answer and stream back).

Plain data in, bytes out: imports nothing from mitmproxy, routing or accounting.
"""
