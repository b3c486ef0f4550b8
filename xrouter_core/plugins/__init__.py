"""Plugins: user code the router calls at four points of its life and of each request,
as mitmproxy calls an addon's hooks: `on_start`, `pre_request`, `post_response`, `on_end`.

`api.py` is what a plugin sees (the request, the answer, `Reject`), `manager.py` loads the
configured plugins and calls their hooks (a failing hook is one log line, never the
client's failure), and the built-in plugins live beside them: `healing.py`
(`response-healing`) and `pareto.py` (`pareto`). See docs/plugins.md.

Plain Python on the wire types: imports `wire`, `tiers` and `config`; never mitmproxy,
`proxy`, `routing`, `accounting`, `setup` or `quality`.
"""
