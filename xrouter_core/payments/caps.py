"""The spending caps: a per-request and a per-day maximum, and the day's ledger.

The ledger is one small JSON file in the data dir ({"day": "YYYY-MM-DD", "spent": n},
n in USDC atomic units = micro-dollars, the UTC day). A payment is reserved before it is
signed: under an exclusive lock (flock, so every router process on this machine shares
it) the file is read, the cap checked, and the new total written to a temporary file and
renamed into place. A crash leaves the old total or the new one, never a torn file; and a
reservation is never given back once signed, so the day's total can only overstate.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

from xrouter_core.config import PaymentSettings

LEDGER_FILE = Path("wallet") / "spend.json"


class CapExceeded(Exception):
    """A payment that one of the caps forbids; the message names the cap."""


def usd(atomic: int) -> str:
    """Micro-dollars as a USD amount for messages and pages, with at least two decimals
    and no trailing zeros past them: 1500 → '0.0015', 100000 → '0.10'."""
    whole, frac = divmod(atomic, 1_000_000)
    digits = f"{frac:06d}".rstrip("0").ljust(2, "0")
    return f"{whole}.{digits}"


def utc_day() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


class SpendLedger:
    """Today's spend, persisted; `reserve` is the only way to add to it."""

    def __init__(
        self, data_dir: str, caps: PaymentSettings, today: Callable[[], str] = utc_day
    ) -> None:
        self.path = Path(data_dir) / LEDGER_FILE
        self.caps = caps
        self.today = today
        self.lock = threading.Lock()  # flock is per open file; threads share this one

    def _read(self) -> tuple[str, int]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            return str(doc["day"]), int(doc["spent"])
        except FileNotFoundError:
            return self.today(), 0
        except (ValueError, KeyError, TypeError) as exc:
            # Not knowing what was spent must not reset it to zero.
            raise CapExceeded(
                f"the spend ledger {self.path} cannot be read ({exc}); no payment until it is fixed"
            ) from exc

    def spent_today(self) -> int:
        day, spent = self._read()
        return spent if day == self.today() else 0

    def reserve(self, amount: int) -> int:
        """Add `amount` to today's spend if both caps allow it; the new total. Raises
        CapExceeded naming the cap otherwise (nothing is added)."""
        caps = self.caps
        if amount > caps.max_per_request:
            raise CapExceeded(
                f"the upstream asked {usd(amount)} USD, above X402_MAX_PER_REQUEST_USD"
                f" ({usd(caps.max_per_request)} USD); not paid"
            )
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self.lock, open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            day, spent = self._read()
            today = self.today()
            if day != today:
                spent = 0
            if spent + amount > caps.max_per_day:
                raise CapExceeded(
                    f"paying {usd(amount)} USD would take today's spend to {usd(spent + amount)}"
                    f" USD, above X402_MAX_PER_DAY_USD ({usd(caps.max_per_day)} USD); not paid"
                )
            total = spent + amount
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            with open(tmp, "w", encoding="utf-8") as out:
                json.dump({"day": today, "spent": total}, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
            return total
