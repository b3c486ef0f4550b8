"""`xrouter openclaw install|uninstall`: register a router as a provider in OpenClaw's
config (`~/.openclaw/openclaw.json`), the entry docs/clients.md describes, in one command.

install merges one provider entry (base URL, key, `api: "openai-completions"`, the
router's logical models from its GET /v1/models, or `xrouter/auto` when it is not
running) and, with --default, makes `<provider>/xrouter/auto` the agents' default model.
Everything else in the file is kept. It is idempotent (nothing is written when nothing
changes), backs the old file up first, writes atomically, and refuses a file it cannot
parse as JSON rather than overwrite it. uninstall takes out what install put in.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:3000"
AUTO = "xrouter/auto"


class Refused(Exception):
    """The config file cannot be changed safely; the message says why."""


def default_config() -> Path:
    return Path(
        os.environ.get("OPENCLAW_CONFIG_PATH") or Path.home() / ".openclaw" / "openclaw.json"
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="xrouter openclaw", description="Register this router as an OpenClaw provider."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("install", "add or update the provider"), ("uninstall", "remove it")):
        command = sub.add_parser(name, help=text)
        command.add_argument("--config", type=Path, default=None, help="openclaw.json to edit")
        command.add_argument("--provider", default="xrouter", help="provider name (xrouter)")
        if name == "install":
            command.add_argument("--url", default=None, help=f"the router ({DEFAULT_URL})")
            command.add_argument("--key", default=None, help="the router key (ROUTER_API_KEY)")
            command.add_argument(
                "--default", action="store_true", help="make xrouter/auto the default model"
            )
    return parser.parse_args(list(argv))


def router_models(url: str, key: str) -> list[str]:
    """The router's logical model ids, xrouter/auto first; just that one when the router
    does not answer (it may not be started yet)."""
    try:
        answer = httpx.get(
            url.rstrip("/") + "/v1/models",
            headers={"authorization": f"Bearer {key}"},
            timeout=5,
            trust_env=False,
        )
        ids = [m["id"] for m in answer.json()["data"] if isinstance(m.get("id"), str)]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return [AUTO]
    return [AUTO, *(i for i in ids if i != AUTO)] if answer.status_code == 200 else [AUTO]


def read_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        return {}
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise Refused(
            f"{path} is not plain JSON ({exc}); not changed. Edit it by hand (docs/clients.md)"
        ) from exc
    if not isinstance(doc, dict):
        raise Refused(f"{path}: the top level is not an object; not changed")
    return doc


def section(doc: dict[str, Any], *keys: str, path: Path) -> dict[str, Any]:
    """doc[k1][k2]…, made when missing; Refused when one is there but not an object."""
    here = doc
    for key in keys:
        value = here.setdefault(key, {})
        if not isinstance(value, dict):
            raise Refused(f"{path}: {'.'.join(keys)} is not an object; not changed")
        here = value
    return here


def installed(doc: dict[str, Any], args: argparse.Namespace, path: Path) -> dict[str, Any]:
    url = (args.url or DEFAULT_URL).rstrip("/")
    key = args.key or os.environ.get("ROUTER_API_KEY") or "xrouter"
    providers = section(doc, "models", "providers", path=path)
    old = providers.get(args.provider) if isinstance(providers.get(args.provider), dict) else {}
    old_models = {m.get("id"): m for m in old.get("models", []) if isinstance(m, dict)}
    models = [
        {**old_models.get(i, {}), "id": i, "name": f"Xrouter ({i.removeprefix('xrouter/')})"}
        for i in router_models(url, key)
    ]
    providers[args.provider] = {
        **old,
        "baseUrl": url + "/v1",
        "apiKey": key,
        "api": "openai-completions",
        "models": models,
    }
    if args.default:
        section(doc, "agents", "defaults", "model", path=path)["primary"] = (
            f"{args.provider}/{AUTO}"
        )
    return doc


def uninstalled(doc: dict[str, Any], args: argparse.Namespace, path: Path) -> dict[str, Any]:
    providers = (
        doc.get("models", {}).get("providers") if isinstance(doc.get("models"), dict) else None
    )
    if isinstance(providers, dict):
        providers.pop(args.provider, None)
    agents = doc.get("agents")
    model = agents.get("defaults", {}).get("model") if isinstance(agents, dict) else None
    if isinstance(model, dict) and str(model.get("primary", "")).startswith(args.provider + "/"):
        model.pop("primary")
    return doc


def write(path: Path, doc: dict[str, Any]) -> Path | None:
    """Back the old file up (beside it, timestamped), then replace it atomically with the
    same mode; the backup's path."""
    backup = None
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = 0o600
    if path.exists():
        mode = path.stat().st_mode & 0o777
        backup = path.with_name(f"{path.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copy2(path, backup)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
    return backup


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    path = args.config or default_config()
    try:
        before = read_config(path)
        doc = json.loads(json.dumps(before))  # a copy to change
        change = installed if args.command == "install" else uninstalled
        doc = change(doc, args, path)
    except (Refused, OSError) as exc:
        print(f"xrouter openclaw: {exc}", file=sys.stderr)
        return 1
    if doc == before and (path.exists() or args.command == "uninstall"):
        print(f"{path}: already {args.command}ed, unchanged")
        return 0
    try:
        backup = write(path, doc)
    except OSError as exc:
        print(f"xrouter openclaw: cannot write {path}: {exc}", file=sys.stderr)
        return 1
    saved = f" (the old file is {backup})" if backup else ""
    if args.command == "install":
        provider = doc["models"]["providers"][args.provider]
        names = ", ".join(m["id"] for m in provider["models"])
        print(f"{path}: provider '{args.provider}' → {provider['baseUrl']} ({names}){saved}")
    else:
        print(f"{path}: provider '{args.provider}' removed{saved}")
    return 0
