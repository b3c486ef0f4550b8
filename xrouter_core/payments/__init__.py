"""x402 payments: the router's wallet, its spending caps, and the x402 client.

Plain Python beside `eth_account` (EIP-712 signing): it imports `config` only. Never
mitmproxy, `proxy/`, `routing/`, `accounting/`, `setup/` or `quality/`; the addon calls
it on a route's 402.
"""
