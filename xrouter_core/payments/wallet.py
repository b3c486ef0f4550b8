"""The paying wallet: one secp256k1 key, loaded once at start.

Order: LLM_ROUTER_WALLET_KEY (checked by config.py), else OpenClaw's
`~/.openclaw/llmrouter/wallet.key` when it exists, else `<data dir>/wallet/wallet.key`,
created (atomically, mode 0600 in a 0700 directory) with a new key when missing. The key
stays inside `Wallet`: its repr, the errors here and every page show the address only.
"""

from __future__ import annotations

import os
import secrets
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from xrouter_core.config import ConfigError, PaymentSettings

if TYPE_CHECKING:  # eth-account takes seconds to import: only when a wallet is loaded
    from eth_account.signers.local import LocalAccount

KEY_FILE = Path("wallet") / "wallet.key"


@dataclass(frozen=True)
class Wallet:
    """The address, where the key came from, and the signer (kept out of repr)."""

    address: str
    source: str  # "env", "openclaw-file", "file", "generated"
    account: LocalAccount = field(repr=False, compare=False)

    def public(self) -> dict[str, str]:
        return {"address": self.address, "key_source": self.source}


def import_eth_account():
    """The `eth_account` module, imported with the interpreter's recursion limit kept.

    Its dependency py_ecc raises the limit to 100,000 when imported. With that limit a
    deeply nested request body overflows the C stack in json's decoder and the process
    dies, where at the usual limit the parsers get a RecursionError and answer 400."""
    limit = sys.getrecursionlimit()
    try:
        import eth_account
    finally:
        sys.setrecursionlimit(limit)
    return eth_account


def _account(key_hex: str, where: str) -> LocalAccount:
    Account = import_eth_account().Account  # noqa: N806 - the library's class name

    try:
        return Account.from_key(key_hex)
    except (ValueError, TypeError) as exc:  # the message could hold the key: not shown
        raise ConfigError([f"{where} does not hold a valid private key"]) from exc


def _read_key_file(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            [f"wallet key file {path} is readable by others (mode {mode:o}): chmod 600 it"]
        )
    text = path.read_text(encoding="ascii", errors="replace").strip()
    digits = text.removeprefix("0x")
    if len(digits) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise ConfigError([f"wallet key file {path} does not hold a private key (64 hex digits)"])
    return "0x" + digits.lower()


def _create_key_file(path: Path) -> str:
    """A new key, written to a temporary file of mode 0600 and renamed into place, so a
    crash leaves either no file or a whole one; a file created meanwhile is kept."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    key = "0x" + secrets.token_bytes(32).hex()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(key + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)  # fails if another process made one first: keep theirs
        except FileExistsError:
            return _read_key_file(path)
    finally:
        tmp.unlink(missing_ok=True)
    return key


def load_wallet(payments: PaymentSettings, data_dir: str, create: bool) -> Wallet | None:
    """The wallet in the documented order; None when there is none and `create` is false
    (no route pays, so no key is generated just for looking)."""
    if payments.wallet_key:
        account = _account(payments.wallet_key, "LLM_ROUTER_WALLET_KEY")
        return Wallet(account.address, "env", account)
    try:
        openclaw = Path(payments.openclaw_key_file) if payments.openclaw_key_file else None
        if openclaw is not None and openclaw.is_file():
            key = _read_key_file(openclaw)
            return Wallet(*_named(_account(key, str(openclaw)), "openclaw-file"))
        own = Path(data_dir) / KEY_FILE
        if own.is_file():
            return Wallet(*_named(_account(_read_key_file(own), str(own)), "file"))
        if not create:
            return None
        key = _create_key_file(own)
        return Wallet(*_named(_account(key, str(own)), "generated"))
    except OSError as exc:
        raise ConfigError([f"wallet key file: {exc.strerror or exc} ({exc.filename})"]) from exc


def _named(account: LocalAccount, source: str) -> tuple[str, str, LocalAccount]:
    return account.address, source, account
