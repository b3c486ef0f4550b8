"""What the addon calls on a paying route's 402: check the challenge, reserve the amount
under the caps, sign. Also what GET /wallet shows (never the key)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xrouter_core.config import Route, Settings
from xrouter_core.payments.caps import CapExceeded, SpendLedger, usd
from xrouter_core.payments.wallet import Wallet, load_wallet
from xrouter_core.payments.x402 import USDC, PaymentRefused, choose, sign


@dataclass(frozen=True)
class Payment:
    """A signed payment: the header to send it in, its value, the amount, the payee."""

    header: str
    value: str = field(repr=False)
    amount: int = 0
    pay_to: str = ""


class Payer:
    """The wallet and the ledger of one router (None wallet: no route pays)."""

    def __init__(self, settings: Settings) -> None:
        payments = settings.payments
        paying = any(r.x402 for r in settings.routes.values())
        # No paying route and no key given: no wallet is looked at (a key file elsewhere,
        # OpenClaw's say, must not stop a router that pays nothing).
        self.wallet: Wallet | None = (
            load_wallet(payments, settings.data_dir, create=paying and payments.capped)
            if paying or payments.wallet_key
            else None
        )
        self.ledger = SpendLedger(settings.data_dir, payments)
        self.networks = sorted({r.x402 for r in settings.routes.values() if r.x402})
        self.paying = paying and payments.capped and self.wallet is not None

    def pay(self, route: Route, body: bytes, required_header: str = "") -> Payment:
        """The payment for a 402 from `route` (its body, its PAYMENT-REQUIRED header).
        Raises PaymentRefused or CapExceeded (nothing is spent)."""
        if not self.paying or self.wallet is None or not route.x402:
            raise PaymentRefused(f"route '{route.tier}' is not set up to pay (<TIER>_X402)")
        requirement = choose(body, route.x402, route.host, required_header)
        self.ledger.reserve(requirement.amount)  # before signing: a refusal spends nothing
        value = sign(self.wallet.account, requirement)
        return Payment(requirement.header, value, requirement.amount, requirement.pay_to)

    def public(self) -> dict[str, Any]:
        caps = self.ledger.caps
        try:
            spent: int | None = self.ledger.spent_today()
            ledger_error = ""
        except CapExceeded as exc:
            spent, ledger_error = None, str(exc)
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
            },
            "caps": {
                "max_per_request_usd": usd(caps.max_per_request) if caps.max_per_request else None,
                "max_per_day_usd": usd(caps.max_per_day) if caps.max_per_day else None,
            },
            "balance": None,  # no RPC URL setting yet: not looked up
        }
        if ledger_error:
            doc["today"]["error"] = ledger_error
        return doc
