"""x402 payments: the router's wallet, its spending caps and their ledger, the x402 client,
and the wallet's balance.

Plain Python beside `eth_account` (EIP-712 signing), `redis` (the shared ledger) and
`httpx` (the balance over JSON-RPC): of the project it imports `config` only. Never
mitmproxy, `proxy/`, `routing/`, `accounting/`, `setup/` or `quality/`; the addon calls
it on a route's 402 and for GET /wallet.
"""
