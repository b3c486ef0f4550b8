"""Setting the router up: the interactive wizard and its plan, the hardware check, local
inference engines, provider model lists and the bundled catalog, and the files they write.

Run by `xrouter-configure` and `xrouter-check-hw`; the running router never imports it.
"""
