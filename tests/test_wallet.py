"""The wallet's key sources and the spend ledger, in process: the key file's order,
modes and refusals, and caps that hold under concurrent payments from two processes."""

from __future__ import annotations

import multiprocessing
import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from eth_account import Account

from xrouter_core.config import ConfigError, PaymentSettings, load_settings
from xrouter_core.payments.caps import DAY_KEY_TTL_S, CapExceeded, RedisSpendLedger, SpendLedger
from xrouter_core.payments.payer import Payer
from xrouter_core.payments.wallet import load_wallet

KEY = "0x" + "3b" * 32


def settings(tmp: Path, **kw) -> PaymentSettings:
    kw.setdefault("openclaw_key_file", str(tmp / "home" / ".openclaw" / "llmrouter" / "wallet.key"))
    return PaymentSettings(max_per_request=10_000, max_per_day=100_000, **kw)


def write_key(path: Path, key: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(key + "\n")
    os.chmod(path, mode)


def test_the_environment_key_comes_first(tmp_path):
    write_key(Path(settings(tmp_path).openclaw_key_file), "0x" + "11" * 32)
    wallet = load_wallet(settings(tmp_path, wallet_key=KEY), str(tmp_path / "data"), True)
    assert wallet is not None and wallet.source == "env"
    assert wallet.address == Account.from_key(KEY).address
    assert KEY[2:] not in repr(wallet) and KEY[2:] not in str(wallet.public())


def test_openclaws_key_file_comes_before_the_data_dir(tmp_path):
    write_key(Path(settings(tmp_path).openclaw_key_file), KEY)
    write_key(tmp_path / "data" / "wallet" / "wallet.key", "0x" + "22" * 32)
    wallet = load_wallet(settings(tmp_path), str(tmp_path / "data"), True)
    assert wallet is not None and wallet.source == "openclaw-file"
    assert wallet.address == Account.from_key(KEY).address


def test_a_new_key_is_made_only_when_asked_and_kept(tmp_path):
    data = tmp_path / "data"
    assert load_wallet(settings(tmp_path), str(data), create=False) is None
    assert not (data / "wallet" / "wallet.key").exists()
    made = load_wallet(settings(tmp_path), str(data), create=True)
    again = load_wallet(settings(tmp_path), str(data), create=True)
    assert made is not None and again is not None
    assert made.source == "generated" and again.source == "file"
    assert made.address == again.address
    key_file = data / "wallet" / "wallet.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert [p.name for p in key_file.parent.iterdir()] == ["wallet.key"]  # no temp file left


@pytest.mark.parametrize(
    ("content", "mode", "says"),
    [
        (KEY, 0o644, "readable by others"),
        ("0x" + "zz" * 32, 0o600, "does not hold a private key"),
        ("0x" + "00" * 32, 0o600, "does not hold a valid private key"),
    ],
    ids=["mode", "not-hex", "zero"],
)
def test_a_bad_key_file_is_refused_without_showing_it(tmp_path, content, mode, says):
    write_key(tmp_path / "data" / "wallet" / "wallet.key", content, mode)
    with pytest.raises(ConfigError) as caught:
        load_wallet(settings(tmp_path), str(tmp_path / "data"), True)
    assert says in caught.value.problems[0]
    assert content[2:] not in caught.value.problems[0]


def test_the_ledger_refuses_over_either_cap_and_starts_each_day_at_zero(tmp_path):
    day = ["2026-12-01"]
    ledger = SpendLedger(str(tmp_path), settings(tmp_path), today=lambda: day[0])
    with pytest.raises(CapExceeded, match=r"X402_MAX_PER_REQUEST_USD \(0.01 USD\)"):
        ledger.reserve(10_001)
    for _ in range(10):
        ledger.reserve(10_000)
    with pytest.raises(CapExceeded, match=r"X402_MAX_PER_DAY_USD \(0.10 USD\)"):
        ledger.reserve(1)
    assert ledger.spent_today() == (100_000, 0)
    ledger.settle(10_000)
    ledger.release(10_000)  # a reservation nothing was signed for goes back
    assert ledger.spent_today() == (90_000, 10_000)
    assert ledger.reserve(10_000) == 100_000
    day[0] = "2026-12-02"
    assert ledger.spent_today() == (0, 0)
    assert ledger.reserve(10_000) == 10_000


def test_an_unreadable_ledger_stops_payments_instead_of_starting_over(tmp_path):
    ledger = SpendLedger(str(tmp_path), settings(tmp_path))
    ledger.path.parent.mkdir(parents=True)
    ledger.path.write_text("{torn")
    with pytest.raises(CapExceeded, match="cannot be read"):
        ledger.reserve(1)


def pay_many(data_dir: str, tmp: str, count: int) -> int:
    """One worker process: `count` concurrent payments of 0.003; how many went through."""
    ledger = SpendLedger(data_dir, settings(Path(tmp)))

    def one(_: int) -> bool:
        try:
            ledger.reserve(3_000)
        except CapExceeded:
            return False
        return True

    with ThreadPoolExecutor(25) as pool:
        return sum(pool.map(one, range(count)))


def test_two_processes_paying_at_once_never_go_over_the_day_cap(tmp_path):
    """50 concurrent payments of 0.003 from two processes against a 0.10 day cap: exactly
    33 go through (0.099), never a 34th."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        results = pool.starmap(pay_many, [(str(tmp_path), str(tmp_path), 25)] * 2)
    assert sum(results) == 33
    assert SpendLedger(str(tmp_path), settings(tmp_path)).spent_today() == (99_000, 0)


def test_a_router_that_pays_nothing_does_not_load_eth_account():
    """eth-account takes seconds to import: the addon loads it only with a wallet."""
    code = "import sys, xrouter_core.proxy.addon; print('eth_account' in sys.modules)"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "False"


def test_no_wallet_is_read_when_no_route_pays(tmp_path):
    """A key file elsewhere (OpenClaw's, unreadable here) must not stop a router that
    pays nothing; with no route paying and no key given there is no wallet."""
    write_key(Path(settings(tmp_path).openclaw_key_file), KEY, mode=0o644)
    base = {"FRONTIER_BASE_URL": "http://127.0.0.1:9/v1", "CLASSIFIER_ENABLED": "false"}
    env = {**base, "XROUTER_DATA_DIR": str(tmp_path / "data"), "HOME": str(tmp_path / "home")}
    loaded = load_settings(env, env_file=os.devnull, upstreams_file=os.devnull)
    payer = Payer(loaded)
    assert payer.wallet is None and payer.public()["paying"] is False
    caps = {"X402_MAX_PER_REQUEST_USD": "0.01", "X402_MAX_PER_DAY_USD": "1"}
    paying = load_settings(
        {**env, **caps, "FRONTIER_X402": "base"}, env_file=os.devnull, upstreams_file=os.devnull
    )
    with pytest.raises(ConfigError, match="readable by others"):  # now it is read
        Payer(paying)


def test_loading_a_wallet_keeps_the_recursion_limit_so_deep_json_is_still_a_400():
    """eth_account's py_ecc raises the recursion limit to 100,000 on import; the router
    keeps the usual one, or a deeply nested body would crash json's C decoder (the
    process dies) instead of being answered 400."""
    code = (
        "import sys\n"
        "limit = sys.getrecursionlimit()\n"
        "from xrouter_core.payments.wallet import _account\n"
        f"_account('{KEY}', 'test')\n"
        "assert 'eth_account' in sys.modules and sys.getrecursionlimit() == limit\n"
        "from xrouter_core.wire.errors import RouterError\n"
        "from xrouter_core.wire.inbound import parse_openai_chat\n"
        "try:\n"
        "    parse_openai_chat(b'{\"messages\": ' + b'[' * 200000 + b']' * 200000 + b'}')\n"
        "except RouterError as exc:\n"
        "    print(exc.status, exc.code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "400 invalid_json"


WALLET = "0x" + "ab" * 20


def redis_ledger(port: int, tmp: Path, today=None) -> RedisSpendLedger:
    kw = {"today": today} if today else {}
    return RedisSpendLedger(f"redis://127.0.0.1:{port}/0", WALLET, settings(tmp), **kw)


def pay_many_redis(port: int, tmp: str, count: int) -> int:
    """One worker process on the shared Redis: `count` concurrent payments of 0.003."""
    ledger = redis_ledger(port, Path(tmp))

    def one(_: int) -> bool:
        try:
            ledger.reserve(3_000)
        except CapExceeded:
            return False
        return True

    with ThreadPoolExecutor(25) as pool:
        return sum(pool.map(one, range(count)))


def test_two_processes_on_one_redis_never_go_over_the_day_cap(tmp_path, redis_server):
    """The same 50 payments against the Redis ledger (a Lua check-and-add): exactly 33,
    and the day's hash holds whole micro-dollars with an expiry."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        results = pool.starmap(pay_many_redis, [(redis_server.port, str(tmp_path), 25)] * 2)
    assert sum(results) == 33
    ledger = redis_ledger(redis_server.port, tmp_path)
    assert ledger.spent_today() == (99_000, 0)
    assert ledger.client.hget(ledger.key(), "spent") == b"99000"
    assert 0 < ledger.client.ttl(ledger.key()) <= DAY_KEY_TTL_S
    assert not (tmp_path / "wallet").exists()  # with Redis no file ledger is kept
    with pytest.raises(CapExceeded, match=r"X402_MAX_PER_DAY_USD \(0.10 USD\)") as caught:
        ledger.reserve(3_000)
    assert caught.value.reason == "day_cap"


def test_the_redis_ledger_releases_settles_and_starts_each_day_at_zero(tmp_path, redis_server):
    day = ["2026-12-01"]
    ledger = redis_ledger(redis_server.port, tmp_path, today=lambda: day[0])
    with pytest.raises(CapExceeded, match="X402_MAX_PER_REQUEST_USD") as caught:
        ledger.reserve(10_001)
    assert caught.value.reason == "request_cap" and ledger.spent_today() == (0, 0)
    assert ledger.reserve(10_000) == 10_000
    assert ledger.reserve(10_000) == 20_000
    ledger.release(10_000)
    ledger.settle(10_000)
    assert ledger.spent_today() == (10_000, 10_000)
    ledger.release(50_000)  # never below zero
    assert ledger.spent_today() == (0, 10_000)
    day[0] = "2026-12-02"
    assert ledger.spent_today() == (0, 0)
    assert ledger.key().endswith(f"{WALLET.lower()}:2026-12-02")


def test_the_redis_ledger_keeps_the_spend_across_a_redis_restart(tmp_path, redis_server):
    ledger = redis_ledger(redis_server.port, tmp_path)
    for _ in range(3):
        ledger.reserve(10_000)
    redis_server.stop_saving()  # SHUTDOWN SAVE: what a persisting Redis does
    redis_server.start()
    again = redis_ledger(redis_server.port, tmp_path)
    assert again.spent_today() == (30_000, 0)
    for _ in range(7):
        again.reserve(10_000)
    with pytest.raises(CapExceeded, match="X402_MAX_PER_DAY_USD"):
        again.reserve(1)


def test_with_redis_away_nothing_is_paid(tmp_path, redis_server):
    ledger = redis_ledger(redis_server.port, tmp_path)
    ledger.reserve(10_000)
    redis_server.proc.kill()
    redis_server.proc.wait(10)
    with pytest.raises(CapExceeded, match="cannot be reached") as caught:
        ledger.reserve(1_000)
    assert caught.value.reason == "ledger"
    with pytest.raises(CapExceeded, match="cannot be reached"):
        ledger.spent_today()


def test_the_balance_is_read_with_one_eth_call_and_a_bad_answer_is_a_reason(tmp_path):
    import asyncio

    import httpx
    from fakes import FakeJsonRpc

    from xrouter_core.payments.balance import Balances, balance_of_call, read_balance

    rpc = FakeJsonRpc()
    holder = Account.from_key(KEY).address
    usdc = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
    rpc.balances[(usdc.lower(), holder.lower())] = 1_500_000

    async def look() -> list[dict]:
        async with httpx.AsyncClient(trust_env=False) as client:
            balances = Balances({"base": rpc.url})
            first = await balances.lookup(client, "base", holder)
            second = await balances.lookup(client, "base", holder)  # kept: no second call
            none = await balances.lookup(client, "base-sepolia", holder)
            return [first, second, none]

    try:
        first, second, none = asyncio.run(look())
        assert first["balance"] == "1.50" and second == first
        assert rpc.calls == [(usdc.lower(), holder.lower())]
        assert none == {
            "balance": None,
            "balance_reason": "no RPC URL configured (X402_RPC_URL, or X402_RPC_URL_BASE_SEPOLIA)",
        }
        call = balance_of_call(usdc, holder)
        assert call["params"][0]["data"] == "0x70a08231" + "0" * 24 + holder[2:].lower()
        error = {
            "jsonrpc": "2.0",
            "id": 1,
            "error": {"code": -32000, "message": "header not found"},
        }
        with pytest.raises(ValueError, match="the RPC answered an error: header not found"):
            read_balance(error)
        with pytest.raises(ValueError, match="not a uint256"):
            read_balance({"jsonrpc": "2.0", "id": 1, "result": "0x12"})
        with pytest.raises(ValueError, match="no hex result"):
            read_balance({"jsonrpc": "2.0", "id": 1, "result": None})
    finally:
        rpc.close()
