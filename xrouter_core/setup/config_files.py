"""Reading and writing the files the router reads: upstreams.json and .env.

Writes are atomic (a temporary file renamed over the old one), files that hold keys
get mode 600 before anything is written to them, and an existing file is copied to a
timestamped backup first. `.env` is updated in place: other lines and comments stay,
a key that appears twice is written once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xrouter_core.config import parse_dotenv, upstreams_to_env

PLAIN_VALUE = re.compile(r"^[A-Za-z0-9_./:@%+,=\-]*$")
ENV_KEY = re.compile(r"^\s*(export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")
ADDED_HEADER = "# Added by xrouter-configure"


def read_current(upstreams_file: Path, env_file: Path) -> dict[str, str]:
    """The values the router would read from these files (flat env names), for defaults.

    Tolerant: an unreadable file counts as empty, since the wizard is how it gets fixed.
    """
    values: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError, AttributeError):
        doc = json.loads(upstreams_file.read_text(encoding="utf-8"))
        if isinstance(doc, dict):
            values.update(upstreams_to_env(doc))
    with contextlib.suppress(OSError):
        values.update(parse_dotenv(env_file.read_text(encoding="utf-8")))
    return values


def format_env_value(value: str) -> str:
    """A value as parse_dotenv reads it back unchanged (it strips quotes, never unescapes)."""
    if "\n" in value or "\r" in value:
        raise ValueError("a .env value cannot contain a line break")
    if PLAIN_VALUE.match(value):
        return value
    if '"' not in value:
        return f'"{value}"'
    if "'" not in value:
        return f"'{value}'"
    raise ValueError("a .env value cannot contain both kinds of quotes")


def update_dotenv_text(
    text: str, updates: Mapping[str, str], disable: set[str] = frozenset()
) -> str:
    """Set `updates` in place, comment out `disable`, keep every other line as it is."""
    out: list[str] = []
    written: set[str] = set()
    for line in text.splitlines():
        match = ENV_KEY.match(line)
        key = match.group(2) if match and not line.lstrip().startswith("#") else None
        if key is not None and key in updates:
            if key in written:
                continue  # a duplicate: the first occurrence holds the value now
            prefix = match.group(1) or ""
            out.append(f"{prefix}{key}={format_env_value(updates[key])}")
            written.add(key)
        elif key is not None and key in disable:
            out.append(
                f"# {line.strip()}  # disabled by xrouter-configure: now set in upstreams.json"
            )
        else:
            out.append(line)
    missing = [key for key in updates if key not in written]
    if missing:
        if out and out[-1].strip():
            out.append("")
        out.append(ADDED_HEADER)
        out.extend(f"{key}={format_env_value(updates[key])}" for key in missing)
    return "\n".join(out) + "\n"


def backup(path: Path) -> Path | None:
    """Copy an existing file aside (mode 600: it may hold keys); returns the copy's path."""
    if not path.exists():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.{stamp}.bak")
    counter = 1
    while target.exists():
        target = path.with_name(f"{path.name}.{stamp}-{counter}.bak")
        counter += 1
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out, path.open("rb") as src:
        shutil.copyfileobj(src, out)
    return target


def write_file(path: Path, text: str, private: bool) -> None:
    """Atomic write; mode 600 when the text holds secrets, else 644."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o600 if private else 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def upstreams_text(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"


def holds_secrets(doc: Mapping[str, Any]) -> bool:
    flat = upstreams_to_env(doc)
    return any(k.endswith(("_API_KEY", "_HEADERS")) and v for k, v in flat.items())
