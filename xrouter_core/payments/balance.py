"""The wallet's USDC balance for GET /wallet, read over JSON-RPC when an RPC URL is set.

One `eth_call` of the token contract's `balanceOf(address)` per network (ABI encoding
and the selector from eth-abi / eth-utils, which eth-account brings), over the router's
shared httpx client with a short timeout. Answers are kept for a little while, failures
for less, so a page refreshed every few seconds does not load the RPC provider. A missing
URL or a failed call is a null balance with a reason, never an error of the page; the
reason never holds the URL (it may carry the RPC provider's key).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx

from xrouter_core.payments.caps import usd
from xrouter_core.payments.x402 import USDC

TIMEOUT_S = 3.0
FRESH_S = 30.0  # a balance read is shown this long
RETRY_S = 5.0  # after a failure, the RPC is asked again after this long


def balance_of_call(token: str, holder: str) -> dict[str, Any]:
    """The JSON-RPC request: eth_call of balanceOf(holder) on `token`, at the latest block."""
    from eth_abi import encode
    from eth_utils import function_signature_to_4byte_selector

    data = function_signature_to_4byte_selector("balanceOf(address)") + encode(
        ["address"], [holder]
    )
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "eth_call",
        "params": [{"to": token, "data": "0x" + data.hex()}, "latest"],
    }


def read_balance(answer: Any) -> int:
    """The uint256 of a JSON-RPC answer to balance_of_call; ValueError saying what is wrong."""
    from eth_abi import decode

    if not isinstance(answer, dict):
        raise ValueError("the RPC answer is not a JSON object")
    if answer.get("error") is not None:
        error = answer["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise ValueError(f"the RPC answered an error: {str(message)[:200]}")
    result = answer.get("result")
    if not isinstance(result, str) or not result.startswith("0x"):
        raise ValueError("the RPC answer has no hex result")
    try:
        (value,) = decode(["uint256"], bytes.fromhex(result[2:]))
    except Exception as exc:  # eth-abi's decoding errors have no common base
        raise ValueError(f"the RPC result is not a uint256 ({type(exc).__name__})") from exc
    return int(value)


class Balances:
    """The balance per network, looked up on demand and kept briefly."""

    def __init__(self, rpc_urls: Mapping[str, str], timeout_s: float = TIMEOUT_S) -> None:
        self.rpc_urls = dict(rpc_urls)
        self.timeout_s = timeout_s
        # network → (monotonic time it is good until, the entry shown)
        self.cache: dict[str, tuple[float, dict[str, Any]]] = {}

    async def lookup(self, client: httpx.AsyncClient, network: str, address: str) -> dict[str, Any]:
        """{"balance": "12.50"} in USDC, or {"balance": None, "balance_reason": why}."""
        url = self.rpc_urls.get(network)
        if not url:
            return {
                "balance": None,
                "balance_reason": "no RPC URL configured (X402_RPC_URL,"
                f" or X402_RPC_URL_{network.upper().replace('-', '_')})",
            }
        now = time.monotonic()
        cached = self.cache.get(network)
        if cached and cached[0] > now:
            return cached[1]
        try:
            answer = await client.post(
                url, json=balance_of_call(USDC[network].address, address), timeout=self.timeout_s
            )
            if answer.status_code != 200:
                raise ValueError(f"the RPC answered HTTP {answer.status_code}")
            value = read_balance(answer.json())
        except (httpx.HTTPError, ValueError) as exc:
            reason = str(exc) if isinstance(exc, ValueError) else type(exc).__name__
            entry: dict[str, Any] = {
                "balance": None,
                "balance_reason": f"the balance could not be read: {reason}",
            }
            self.cache[network] = (now + RETRY_S, entry)
            return entry
        entry = {"balance": usd(value), "balance_at": int(time.time())}
        self.cache[network] = (now + FRESH_S, entry)
        return entry
