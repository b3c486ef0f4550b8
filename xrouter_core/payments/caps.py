"""The spending caps: a per-request and a per-day maximum, and the day's ledger.

Amounts are whole numbers of USDC atomic units (micro-dollars), never floats. A payment is
reserved before it is signed: the cap is checked and the amount added in one step, so
two requests can never both take the last of the day's allowance. A reservation is given
back only when nothing was signed (`release`); once signed it stays counted even when the
upstream then fails (the authorization could still be redeemed until it expires), so the
day's total can only overstate what was spent. `settle` records the part the upstream
said it settled.

Two ledgers, one interface:

- `SpendLedger`, one machine: a small JSON file in the data dir ({"day": "YYYY-MM-DD",
  "spent": n, "settled": m}, the UTC day), read, checked and replaced (temporary file +
  rename) under an exclusive flock, so every router process on this machine shares it and
  a crash leaves the old total or the new one, never a torn file.
- `RedisSpendLedger`, every router sharing one Redis (REDIS_URL): one hash per wallet and
  UTC day, reserved by a Lua script that checks and adds atomically in Redis, with an
  expiry two days out. The Redis key is then the truth; no file is kept beside it, and
  while Redis cannot be reached nothing is paid (a machine alone cannot know what the
  others spent).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from xrouter_core.config import PaymentSettings

LEDGER_FILE = Path("wallet") / "spend.json"
# The Redis day keys: xrouter:{x402}:spend:<address>:<YYYY-MM-DD> (a hash: spent, settled).
REDIS_PREFIX = "xrouter:{x402}:spend:"
# A day's key outlives its day, so yesterday's spend can still be read after midnight.
DAY_KEY_TTL_S = 2 * 86400

# KEYS[1] the day's hash; ARGV amount, day cap, ttl. Returns {1, new total} when reserved,
# {0, total} when the day cap forbids it. Whole numbers only (HINCRBY): no float anywhere.
RESERVE_LUA = """
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local amount = tonumber(ARGV[1])
if spent + amount > tonumber(ARGV[2]) then
  return {0, spent}
end
local total = redis.call('HINCRBY', KEYS[1], 'spent', amount)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return {1, total}
"""
# Gives back a reservation nothing was signed for (never below zero); returns the total.
RELEASE_LUA = """
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local amount = math.min(tonumber(ARGV[1]), spent)
if amount <= 0 then
  return spent
end
return redis.call('HINCRBY', KEYS[1], 'spent', -amount)
"""


class CapExceeded(Exception):
    """A payment that one of the caps forbids, or a ledger that cannot say; the message
    names the cap. `reason` is its short name in /usage and /metrics."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def usd(atomic: int) -> str:
    """Micro-dollars as a USD amount for messages and pages, with at least two decimals
    and no trailing zeros past them: 1500 → '0.0015', 100000 → '0.10'."""
    whole, frac = divmod(atomic, 1_000_000)
    digits = f"{frac:06d}".rstrip("0").ljust(2, "0")
    return f"{whole}.{digits}"


def utc_day() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


class Ledger(Protocol):
    """What the payer needs of a ledger (both block: call them off the event loop)."""

    caps: PaymentSettings
    today: Callable[[], str]
    kind: str

    def reserve(self, amount: int) -> int: ...
    def release(self, amount: int) -> None: ...
    def settle(self, amount: int) -> None: ...
    def spent_today(self) -> tuple[int, int]: ...


def check_request_cap(caps: PaymentSettings, amount: int) -> None:
    if amount > caps.max_per_request:
        raise CapExceeded(
            f"the upstream asked {usd(amount)} USD, above X402_MAX_PER_REQUEST_USD"
            f" ({usd(caps.max_per_request)} USD); not paid",
            "request_cap",
        )


def day_cap_exceeded(caps: PaymentSettings, amount: int, spent: int) -> CapExceeded:
    return CapExceeded(
        f"paying {usd(amount)} USD would take today's spend to {usd(spent + amount)}"
        f" USD, above X402_MAX_PER_DAY_USD ({usd(caps.max_per_day)} USD); not paid",
        "day_cap",
    )


class SpendLedger:
    """Today's spend on this machine, in a file; `reserve` is the only way to add to it."""

    kind = "file"

    def __init__(
        self, data_dir: str, caps: PaymentSettings, today: Callable[[], str] = utc_day
    ) -> None:
        self.path = Path(data_dir) / LEDGER_FILE
        self.caps = caps
        self.today = today
        self.lock = threading.Lock()  # flock is per open file; threads share this one

    def _read(self) -> tuple[str, int, int]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            return str(doc["day"]), int(doc["spent"]), int(doc.get("settled", 0))
        except FileNotFoundError:
            return self.today(), 0, 0
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # Not knowing what was spent must not reset it to zero.
            raise CapExceeded(
                f"the spend ledger {self.path} cannot be read ({exc}); no payment until it is fixed",
                "ledger",
            ) from exc

    def spent_today(self) -> tuple[int, int]:
        """Today's (spent, settled) in micro-dollars."""
        day, spent, settled = self._read()
        return (spent, settled) if day == self.today() else (0, 0)

    def _update(self, change: Callable[[int, int], tuple[int, int]]) -> int:
        """Today's totals changed by `change` under the lock and written back; the spend."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self.lock, open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            day, spent, settled = self._read()
            today = self.today()
            if day != today:
                spent = settled = 0
            spent, settled = change(spent, settled)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            with open(tmp, "w", encoding="utf-8") as out:
                json.dump({"day": today, "spent": spent, "settled": settled}, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
            return spent

    def reserve(self, amount: int) -> int:
        """Add `amount` to today's spend if both caps allow it; the new total. Raises
        CapExceeded naming the cap otherwise (nothing is added)."""
        check_request_cap(self.caps, amount)

        def add(spent: int, settled: int) -> tuple[int, int]:
            if spent + amount > self.caps.max_per_day:
                raise day_cap_exceeded(self.caps, amount, spent)
            return spent + amount, settled

        return self._update(add)

    def release(self, amount: int) -> None:
        """Give back a reservation nothing was signed for."""
        self._update(lambda spent, settled: (max(spent - amount, 0), settled))

    def settle(self, amount: int) -> None:
        """Count `amount` of today's spend as settled by the upstream."""
        self._update(lambda spent, settled: (spent, settled + amount))


class RedisSpendLedger:
    """Today's spend of one wallet, shared by every router on one Redis."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        wallet: str,
        caps: PaymentSettings,
        today: Callable[[], str] = utc_day,
        client=None,
    ) -> None:
        import redis

        self.caps = caps
        self.today = today
        self.wallet = wallet.lower()
        # Synchronous: the payer runs in a worker thread (the client's pool is thread-safe).
        self.client = client or redis.Redis.from_url(
            url, socket_connect_timeout=1.0, socket_timeout=2.0, retry_on_timeout=False
        )
        self._reserve = self.client.register_script(RESERVE_LUA)
        self._release = self.client.register_script(RELEASE_LUA)
        self.errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

    def key(self, day: str | None = None) -> str:
        return f"{REDIS_PREFIX}{self.wallet}:{day or self.today()}"

    def _unavailable(self, exc: BaseException) -> CapExceeded:
        return CapExceeded(
            f"the shared spend ledger in Redis cannot be reached ({type(exc).__name__});"
            " no payment until it is back",
            "ledger",
        )

    def reserve(self, amount: int) -> int:
        check_request_cap(self.caps, amount)
        try:
            done, total = self._reserve(
                keys=[self.key()], args=[amount, self.caps.max_per_day, DAY_KEY_TTL_S]
            )
        except self.errors as exc:
            raise self._unavailable(exc) from exc
        if not done:
            raise day_cap_exceeded(self.caps, amount, int(total))
        return int(total)

    def release(self, amount: int) -> None:
        try:
            self._release(keys=[self.key()], args=[amount])
        except self.errors as exc:  # it stays counted: an overstatement, never an overspend
            raise self._unavailable(exc) from exc

    def settle(self, amount: int) -> None:
        key = self.key()
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.hincrby(key, "settled", amount).expire(key, DAY_KEY_TTL_S).execute()
        except self.errors as exc:
            raise self._unavailable(exc) from exc

    def spent_today(self) -> tuple[int, int]:
        try:
            spent, settled = self.client.hmget(self.key(), ["spent", "settled"])
        except self.errors as exc:
            raise self._unavailable(exc) from exc
        return int(spent or 0), int(settled or 0)
