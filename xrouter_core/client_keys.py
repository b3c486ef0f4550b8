"""Client keys: besides ROUTER_API_KEY, named keys for users or teams, each with optional
limits (requests and tokens per minute, a daily and a monthly budget in USD) and an
optional tier ceiling (e.g. never frontier). accounting/limits.py enforces the limits.

They live in a JSON file (ROUTER_KEYS_FILE), stored as SHA-256 digests only: the key is
printed once, when it is created, and never written anywhere. Keys are long random
tokens, so one fast hash is enough (a slow password hash guards guessable secrets, which
these are not). `xrouter keys create|list|revoke` manages the file; a running router
notices a change within KEYRING_CHECK_S (a revoked key stops working then).

Plain Python (no mitmproxy): config.py reads the file at start, the addon asks a KeyRing
per request, the launcher runs `main` for `xrouter keys`."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from xrouter_core.tiers import TIERS

KEY_PREFIX = "xr-"
# Names go into counter keys, Redis keys and metric labels: kept to these characters.
NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
# How often a running router looks at the file's modification time (one stat).
KEYRING_CHECK_S = 2.0


@dataclass(frozen=True)
class ClientKey:
    """One client key as the router enforces it (the key itself is not kept)."""

    name: str
    digest: str
    rpm: int = 0  # requests per minute, 0: no limit
    max_tier: str = ""  # the highest tier it may reach, "": any
    tpm: int = 0  # tokens per minute (prompt + completion), 0: no limit
    daily_usd: float = 0.0  # USD per UTC day, 0: no budget
    monthly_usd: float = 0.0  # USD per UTC calendar month, 0: no budget

    @property
    def metered(self) -> bool:
        """Whether its requests reserve tokens or cost before they are forwarded."""
        return bool(self.tpm or self.daily_usd or self.monthly_usd)


def digest_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def read_keys(path: str | Path) -> dict[str, ClientKey]:
    """digest → ClientKey; ValueError with a one-line reason for a bad file."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(
            f"{path} does not exist (create a key: xrouter keys create NAME)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not readable JSON ({exc})") from exc
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f'{path} must be {{"keys": [...]}}')
    keys: dict[str, ClientKey] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: every key must be an object")
        name, digest = entry.get("name"), entry.get("sha256")
        rpm, tier = entry.get("rpm", 0), entry.get("max_tier", "") or ""
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ValueError(f"{path}: a key's name must be 1-64 of A-Z a-z 0-9 . _ -")
        if not isinstance(digest, str) or len(digest) != 64:
            raise ValueError(f"{path}: key {name!r} has no sha256 digest")
        if not isinstance(rpm, int) or isinstance(rpm, bool) or rpm < 0:
            raise ValueError(f"{path}: key {name!r}: rpm must be a whole number >= 0")
        if tier and tier not in TIERS:
            raise ValueError(f"{path}: key {name!r}: max_tier must be one of {', '.join(TIERS)}")
        tpm = entry.get("tpm", 0)
        if not isinstance(tpm, int) or isinstance(tpm, bool) or tpm < 0:
            raise ValueError(f"{path}: key {name!r}: tpm must be a whole number >= 0")
        budgets = []
        for field in ("daily_usd", "monthly_usd"):
            value = entry.get(field, 0)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 <= value < 1e6
            ):
                raise ValueError(f"{path}: key {name!r}: {field} must be USD from 0 to 999999")
            budgets.append(float(value))
        keys[digest] = ClientKey(name, digest, rpm, tier, tpm, *budgets)
    return keys


class KeyRing:
    """The keys of ROUTER_KEYS_FILE, re-read when the file changes (checked at most every
    KEYRING_CHECK_S). A file that turns bad keeps the keys read before, with one warning
    through `warn`."""

    def __init__(self, path: str, keys: Mapping[str, ClientKey], warn=None):
        self.path = path
        self.keys = dict(keys)
        self.warn = warn
        self.checked = time.monotonic()
        self.mtime = self._mtime()

    def _mtime(self) -> float:
        try:
            return os.stat(self.path).st_mtime_ns
        except OSError:
            return -1

    def find(self, key: str) -> ClientKey | None:
        now = time.monotonic()
        if now - self.checked >= KEYRING_CHECK_S:
            self.checked = now
            mtime = self._mtime()
            if mtime != self.mtime:
                self.mtime = mtime
                try:
                    self.keys = read_keys(self.path)
                except ValueError as exc:
                    if self.warn is not None:
                        self.warn(f"ROUTER_KEYS_FILE not re-read, the keys before stay: {exc}")
        return self.keys.get(digest_of(key))


# ---- xrouter keys -------------------------------------------------------------------


def _load(path: Path) -> list[dict]:
    if not path.exists():
        return []
    read_keys(path)  # refuse to rewrite a file that is not valid
    return json.loads(path.read_text(encoding="utf-8"))["keys"]


def _save(path: Path, entries: list[dict]) -> None:
    """Atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".keys-")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({"keys": entries}, out, indent=2)
        out.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="xrouter keys",
        description="Client keys with their own limits, stored hashed in ROUTER_KEYS_FILE.",
    )
    parser.add_argument(
        "--file",
        default=os.environ.get("ROUTER_KEYS_FILE", "keys.json"),
        help="the keys file (default: ROUTER_KEYS_FILE or ./keys.json)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a key; it is printed once")
    create.add_argument("name")
    create.add_argument("--rpm", type=int, default=0, help="requests per minute (0: no limit)")
    create.add_argument("--max-tier", choices=TIERS, default="", help="the highest tier")
    create.add_argument("--tpm", type=int, default=0, help="tokens per minute (0: no limit)")
    create.add_argument("--daily-usd", type=float, default=0.0, help="USD per UTC day (0: none)")
    create.add_argument(
        "--monthly-usd", type=float, default=0.0, help="USD per UTC month (0: none)"
    )
    commands.add_parser("list", help="the keys' names and limits (never the keys)")
    revoke = commands.add_parser("revoke", help="remove a key")
    revoke.add_argument("name")
    args = parser.parse_args(argv)
    path = Path(args.file)
    try:
        entries = _load(path)
    except ValueError as exc:
        print(f"xrouter keys: {exc}", file=sys.stderr)
        return 1
    if args.command == "create":
        if args.rpm < 0 or args.tpm < 0:
            parser.error("--rpm and --tpm must be 0 or more")
        if not (0 <= args.daily_usd < 1e6 and 0 <= args.monthly_usd < 1e6):
            parser.error("--daily-usd and --monthly-usd must be USD from 0 to 999999")
        if not NAME.fullmatch(args.name):
            parser.error("a key's name must be 1-64 of A-Z a-z 0-9 . _ -")
        if any(e["name"] == args.name for e in entries):
            print(f"xrouter keys: a key named {args.name!r} exists already", file=sys.stderr)
            return 1
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        entry = {"name": args.name, "sha256": digest_of(key), "created": int(time.time())}
        if args.rpm:
            entry["rpm"] = args.rpm
        if args.max_tier:
            entry["max_tier"] = args.max_tier
        for field in ("tpm", "daily_usd", "monthly_usd"):
            if getattr(args, field):
                entry[field] = getattr(args, field)
        _save(path, [*entries, entry])
        print(key)
        return 0
    if args.command == "list":
        for e in entries:
            parts = [e["name"]]
            if e.get("rpm"):
                parts.append(f"rpm={e['rpm']}")
            if e.get("max_tier"):
                parts.append(f"max_tier={e['max_tier']}")
            for field in ("tpm", "daily_usd", "monthly_usd"):
                if e.get(field):
                    parts.append(f"{field}={e[field]:g}")
            print("\t".join(parts))
        return 0
    kept = [e for e in entries if e["name"] != args.name]
    if len(kept) == len(entries):
        print(f"xrouter keys: no key named {args.name!r}", file=sys.stderr)
        return 1
    _save(path, kept)
    return 0
