"""The mitmproxy side: the addon and its hooks, the lean `xrouter` launcher, the cached hook
dispatch, the guarded patches of mitmproxy internals (mitm_compat) and logging glue.

The only package that imports mitmproxy. It wires the plain packages below it: `wire`
(formats), `routing` (the decision) and `accounting` (what was spent, caches, pages).
"""
