"""What the addon calls on a paying route's 402: check the challenge, reserve the amount
under the caps, sign; and, when the paid answer comes, what the upstream settled. Also
what GET /wallet shows (never the key)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from xrouter_core.config import Route, Settings
from xrouter_core.payments.balance import Balances
from xrouter_core.payments.caps import (
    CapExceeded,
    Ledger,
    RedisSpendLedger,
    SpendLedger,
    usd,
)
from xrouter_core.payments.wallet import Wallet, load_wallet
from xrouter_core.payments.x402 import USDC, PaymentRefused, choose, sign

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class Payment:
    """A signed payment: the header to send it in, its value, the amount, the payee."""

    header: str
    value: str = field(repr=False)
    amount: int = 0
    pay_to: str = ""


def shared_redis_url(settings: Settings) -> str:
    """The Redis the caps are shared in: the one the usage counters share (REDIS_URL with
    CACHE_BACKEND auto or redis), else "" (the file ledger of this machine)."""
    return settings.redis_url if settings.cache_backend in ("auto", "redis") else ""


class Payer:
    """The wallet and the ledger of one router (None wallet: no route pays)."""

    def __init__(self, settings: Settings, redis_sync: Callable[[str], Any] | None = None) -> None:
        """`redis_sync`: builds a blocking client for REDIS_URL in any of its forms (one
        server, Sentinel, Cluster); the router passes accounting's, so the caps live in
        the same Redis as the counters. Without it, redis-py's single-server client."""
        payments = settings.payments
        paying = any(r.x402 for r in settings.routes.values())
        # No paying route and no key given: no wallet is looked at (a key file elsewhere,
        # OpenClaw's say, must not stop a router that pays nothing).
        self.wallet: Wallet | None = (
            load_wallet(payments, settings.data_dir, create=paying and payments.capped)
            if paying or payments.wallet_key
            else None
        )
        redis_url = shared_redis_url(settings)
        self.ledger: Ledger = (
            RedisSpendLedger(
                redis_url,
                self.wallet.address,
                payments,
                client=redis_sync(redis_url) if redis_sync is not None else None,
            )
            if redis_url and self.wallet is not None
            else SpendLedger(settings.data_dir, payments)
        )
        self.networks = sorted({r.x402 for r in settings.routes.values() if r.x402})
        self.paying = paying and payments.capped and self.wallet is not None
        self.balances = Balances(payments.rpc_urls)

    def pay(self, route: Route, body: bytes, required_header: str = "") -> Payment:
        """The payment for a 402 from `route` (its body, its PAYMENT-REQUIRED header).
        Raises PaymentRefused or CapExceeded (nothing is spent). Blocks (the ledger):
        call it off the event loop."""
        if not self.paying or self.wallet is None or not route.x402:
            raise PaymentRefused(
                f"route '{route.tier}' is not set up to pay (<TIER>_X402)", "not_set_up"
            )
        requirement = choose(body, route.x402, route.host, required_header)
        self.ledger.reserve(requirement.amount)  # before signing: a refusal spends nothing
        try:
            value = sign(self.wallet.account, requirement)
        except Exception as exc:  # nothing signed: the reservation goes back
            self.ledger.release(requirement.amount)
            raise PaymentRefused(
                f"the payment could not be signed ({type(exc).__name__})", "signing"
            ) from exc
        return Payment(requirement.header, value, requirement.amount, requirement.pay_to)

    def settled(self, amount: int) -> None:
        """The upstream said it settled a payment of `amount` (blocks, like `pay`)."""
        self.ledger.settle(amount)

    def public(self) -> dict[str, Any]:
        """GET /wallet without the balance (blocks: the ledger is read)."""
        caps = self.ledger.caps
        try:
            spent: int | None
            spent, settled = self.ledger.spent_today()
            ledger_error = ""
        except CapExceeded as exc:
            spent, settled, ledger_error = None, 0, str(exc)
        doc: dict[str, Any] = {
            "address": self.wallet.address if self.wallet else None,
            "key_source": self.wallet.source if self.wallet else None,
            "paying": self.paying,
            "networks": [
                {"network": n, "asset": USDC[n].address, "token": USDC[n].name}
                for n in self.networks
            ],
            "today": {
                "day": self.ledger.today(),
                "spent_usd": usd(spent) if spent is not None else None,
                "settled_usd": usd(settled) if spent is not None else None,
                "ledger": self.ledger.kind,
            },
            "caps": {
                "max_per_request_usd": usd(caps.max_per_request) if caps.max_per_request else None,
                "max_per_day_usd": usd(caps.max_per_day) if caps.max_per_day else None,
            },
        }
        if ledger_error:
            doc["today"]["error"] = ledger_error
        return doc

    async def page(self, client: httpx.AsyncClient | None) -> dict[str, Any]:
        """GET /wallet: `public` (read in a worker thread) and the USDC balance on each
        network when an RPC URL is set. The top-level `balance` is the first network's
        (a router usually pays on one); each entry of `networks` carries its own."""
        doc = await asyncio.to_thread(self.public)
        top: dict[str, Any] = {"balance": None, "balance_reason": "no route pays (<TIER>_X402)"}
        for i, entry in enumerate(doc["networks"]):
            if self.wallet is None or client is None:
                found: dict[str, Any] = {"balance": None, "balance_reason": "no wallet"}
            else:
                found = await self.balances.lookup(client, entry["network"], self.wallet.address)
            entry.update(found)
            if i == 0:
                top = found
        doc.update(top)
        return doc
