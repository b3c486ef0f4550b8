"""The wizard's answers, and how they become upstreams.json and .env.

Shared by the interactive wizard and `--yes` mode, so both build the same files and
both are validated by the router's own `load_settings` (never a copy of its rules).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from xrouter_core.catalog import CATALOG_VARIABLE
from xrouter_core.config import (
    CLASSIFIER_FIELDS,
    ROUTE_FIELDS,
    ConfigError,
    Settings,
    load_settings,
    upstreams_to_env,
)
from xrouter_core.setup import config_files
from xrouter_core.setup.model_lists import catalog
from xrouter_core.tiers import CHEAP, TIERS
from xrouter_core.wire.providers import LOCAL_HOSTS

LOCAL_PROVIDER = "openai_compatible"  # every local engine speaks OpenAI's wire format
# Where each provider's key usually lives in a user's environment.
KEY_ENV: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "cohere": ("COHERE_API_KEY", "CO_API_KEY"),
    "azure": ("AZURE_OPENAI_API_KEY",),
    "mistral": ("MISTRAL_API_KEY",),
    "groq": ("GROQ_API_KEY",),
    "together": ("TOGETHER_API_KEY",),
    "perplexity": ("PERPLEXITY_API_KEY", "PPLX_API_KEY"),
}


@dataclass
class RouteAnswer:
    provider: str  # a catalog provider type, or a local engine name
    base_url: str
    api_key: str = ""
    model: str = ""

    @property
    def provider_type(self) -> str:
        """What the router's PROVIDER field gets: local engines are OpenAI-compatible."""
        return LOCAL_PROVIDER if self.provider in catalog()["local_engines"] else self.provider


@dataclass
class CatalogAnswer:
    """One provider of the catalog form (upstreams.json `providers`): its key stays in
    the variable `key_env` names; `tiers` maps each tier to the model it may serve."""

    provider: str
    base_url: str
    key_env: str
    tiers: dict[str, str] = field(default_factory=dict)

    def doc(self) -> dict[str, Any]:
        models: dict[str, list[str]] = {}
        for tier, model in self.tiers.items():
            models.setdefault(model, []).append(tier)
        return {
            "type": self.provider,
            "base_url": self.base_url.rstrip("/"),
            "api_key_env": self.key_env,
            "models": [{"model": m, "tiers": tiers} for m, tiers in models.items()],
        }


def catalog_from_environ(
    environ: Mapping[str, str], routes: Mapping[str, RouteAnswer]
) -> list[CatalogAnswer]:
    """Every cloud provider whose key is in the environment and that no chosen route
    uses, with catalog.json's suggested model for each tier: the wizard's catalog form
    lists them as further candidates of their tiers (after the chosen routes)."""
    used = {answer.provider for answer in routes.values()}
    found = []
    for name, info in catalog()["providers"].items():
        if name in used or not info.get("needs_key"):
            continue
        variable = next((v for v in KEY_ENV.get(name, ()) if environ.get(v, "").strip()), "")
        suggested = info.get("suggested") or {}
        tiers = {t: suggested[t] for t in TIERS if suggested.get(t)}
        if variable and tiers:
            found.append(CatalogAnswer(name, info["base_url"], variable, tiers))
    return found


@dataclass
class Answers:
    mode: str  # "quick" (local classifier + cheap) or "cloud"
    classifier: str  # "local", "cloud" or "off"
    local: RouteAnswer | None = None  # quick start: the engine, its URL and model
    classifier_route: RouteAnswer | None = None  # cloud classifier
    routes: dict[str, RouteAnswer] = field(default_factory=dict)
    redis_url: str = ""
    router_api_key: str = ""
    # Quick Start: CLASSIFIER_MODE ("" keeps the default, hybrid); builtin when the local
    # model only answers cheap requests (hardware.default_classifier_mode).
    classifier_mode: str = ""
    # The catalog form: more providers as same-tier candidates (keys left in the env).
    catalog: list[CatalogAnswer] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    """What will be written: the upstreams document and the .env changes."""

    upstreams: dict[str, Any]
    env_updates: dict[str, str]
    env_disable: set[str]
    update_env: bool
    # The variables the catalog reads its keys from, with their values: the router reads
    # them from its environment, so the check before writing is given them too.
    key_env: dict[str, str] = field(default_factory=dict)


def _route_doc(answer: RouteAnswer, keys_in_doc: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "provider": answer.provider_type,
        "base_url": answer.base_url.rstrip("/"),
    }
    if answer.model:
        doc["model"] = answer.model
    if answer.api_key and keys_in_doc:
        doc["api_key"] = answer.api_key
    return doc


def managed_env_names() -> set[str]:
    """Every variable an upstreams.json can set; a .env line with one of them shadows it."""
    names = {f"CLASSIFIER_{f.upper()}" for f in CLASSIFIER_FIELDS} | {"CLASSIFIER_API_KEY"}
    names |= {f"{t.upper()}_{f.upper()}" for t in TIERS for f in ROUTE_FIELDS}
    names.add(CATALOG_VARIABLE)  # upstreams.json's `providers`
    return names


def build_plan(
    answers: Answers,
    update_env: bool,
    current_env: Mapping[str, str],
    environ: Mapping[str, str] | None = None,
) -> Plan:
    """Answers → upstreams document (+ .env updates when .env is to be updated).

    With `update_env`, keys go to .env and upstreams.json holds no secret; lines of the
    existing .env that would shadow the new upstreams.json are updated or commented out.
    """
    keys_in_doc = not update_env
    secrets: dict[str, str] = {}
    classifier: dict[str, Any]
    routes: dict[str, Any] = {}
    if answers.classifier == "local" and answers.local is not None:
        classifier = {
            "enabled": True,
            "base_url": answers.local.base_url.rstrip("/"),
            "model": answers.local.model,
        }
        if answers.classifier_mode:
            classifier["mode"] = answers.classifier_mode
        routes[CHEAP] = _route_doc(answers.local, keys_in_doc)
    elif answers.classifier == "cloud" and answers.classifier_route is not None:
        route = answers.classifier_route
        classifier = {"enabled": True, "base_url": route.base_url.rstrip("/"), "model": route.model}
        if route.api_key:
            if keys_in_doc:
                classifier["api_key"] = route.api_key
            else:
                secrets["CLASSIFIER_API_KEY"] = route.api_key
    else:
        classifier = {"enabled": False}
    for tier in TIERS:
        answer = answers.routes.get(tier)
        if answer is None:
            continue
        routes[tier] = _route_doc(answer, keys_in_doc)
        if answer.api_key and not keys_in_doc:
            secrets[f"{tier.upper()}_API_KEY"] = answer.api_key
    if answers.local is not None and answers.local.api_key and not keys_in_doc:
        secrets["CHEAP_API_KEY"] = answers.local.api_key
    doc: dict[str, Any] = {"classifier": classifier, "routes": routes}
    if answers.catalog:
        doc["providers"] = {c.provider: c.doc() for c in answers.catalog}
    if answers.redis_url:
        doc["redis_url"] = answers.redis_url

    env_updates: dict[str, str] = {}
    env_disable: set[str] = set()
    if update_env:
        flat = upstreams_to_env(doc)
        for name in managed_env_names() | {"REDIS_URL"}:
            if name in secrets or name not in current_env:
                continue
            if name in flat:
                env_updates[name] = flat[name]  # keep the line, make it agree with upstreams.json
            else:
                env_disable.add(name)
        env_updates.update(secrets)
        if answers.router_api_key:
            env_updates["ROUTER_API_KEY"] = answers.router_api_key
    elif answers.router_api_key:
        # ROUTER_API_KEY has no place in upstreams.json: .env is the only file for it.
        env_updates["ROUTER_API_KEY"] = answers.router_api_key
        update_env = True
    key_env = {c.key_env: (environ or {}).get(c.key_env, "") for c in answers.catalog}
    return Plan(doc, env_updates, env_disable, update_env, key_env)


def shadowing(
    plan: Plan, current_env_file: Mapping[str, str], environ: Mapping[str, str]
) -> list[str]:
    """Variables that would override the new upstreams.json at router start."""
    flat = upstreams_to_env(plan.upstreams)
    found = []
    for name in sorted(managed_env_names()):
        if name in plan.env_updates or name in plan.env_disable:
            continue
        if name in environ:
            found.append(f"{name} is set in the environment and overrides upstreams.json")
        elif name in current_env_file and current_env_file[name] != flat.get(name):
            found.append(f"{name} in .env overrides upstreams.json")
    return found


def env_text(plan: Plan, env_file: Path) -> str | None:
    """The new .env content, or None when .env is left alone."""
    if not plan.update_env:
        return None
    old = env_file.read_text(encoding="utf-8") if env_file.is_file() else ""
    return config_files.update_dotenv_text(old, plan.env_updates, plan.env_disable)


def validate(plan: Plan, env_file: Path) -> Settings:
    """Load the files that would be written with the router's own loader; raises ConfigError."""
    with tempfile.TemporaryDirectory(prefix="xrouter-check-") as tmp:
        upstreams = Path(tmp) / "upstreams.json"
        upstreams.write_text(config_files.upstreams_text(plan.upstreams), encoding="utf-8")
        new_env = env_text(plan, env_file)
        env_path: Path | str = os.devnull
        if new_env is not None:
            env_path = Path(tmp) / ".env"
            env_path.write_text(new_env, encoding="utf-8")
        elif env_file.is_file():
            env_path = env_file
        return load_settings(environ=plan.key_env, env_file=env_path, upstreams_file=upstreams)


def field_problems(env_name: str, value: str) -> list[str]:
    """The router's own verdict on one value (e.g. FRONTIER_BASE_URL), for per-field prompts."""
    environ = {
        "CLASSIFIER_ENABLED": "false",
        "FRONTIER_BASE_URL": "http://placeholder.invalid",
        env_name: value,
    }
    try:
        load_settings(environ=environ, env_file=os.devnull, upstreams_file=os.devnull)
    except ConfigError as exc:
        return [p for p in exc.problems if env_name in p]
    return []


@dataclass(frozen=True)
class Written:
    path: Path
    backup: Path | None
    private: bool


def write(plan: Plan, upstreams_file: Path, env_file: Path) -> list[Written]:
    """Back up what exists, then write upstreams.json (and .env); keys only in mode-600 files."""
    done: list[Written] = []
    private = config_files.holds_secrets(plan.upstreams)
    old = config_files.backup(upstreams_file)
    config_files.write_file(upstreams_file, config_files.upstreams_text(plan.upstreams), private)
    done.append(Written(upstreams_file, old, private))
    new_env = env_text(plan, env_file)
    if new_env is not None:
        old_env = config_files.backup(env_file)
        config_files.write_file(env_file, new_env, private=True)
        done.append(Written(env_file, old_env, True))
    return done


# ---- reading current values back as defaults ---------------------------------------


def infer_provider(base_url: str, provider: str = "") -> str:
    """The catalog provider type a configured route most likely is."""
    providers = catalog()["providers"]
    if provider and provider not in ("auto", LOCAL_PROVIDER) and provider in providers:
        return provider
    host = urlsplit(base_url).hostname or ""
    for name, info in providers.items():
        known = urlsplit(info["base_url"]).hostname or ""
        if host and known == host and name != LOCAL_PROVIDER:
            return name
    return provider if provider in providers else LOCAL_PROVIDER


def infer_engine(base_url: str) -> str | None:
    """The local engine a URL points at, when it is local at all."""
    parts = urlsplit(base_url)
    if (parts.hostname or "") not in LOCAL_HOSTS:
        return None
    if parts.port == 11434:
        return "ollama"
    if parts.port == 8080:
        return "mlx"
    return "llama.cpp" if parts.port == 8000 else LOCAL_PROVIDER


def current_route(current: Mapping[str, str], tier: str) -> RouteAnswer | None:
    prefix = tier.upper() + "_"
    base_url = current.get(prefix + "BASE_URL", "")
    if not base_url:
        return None
    return RouteAnswer(
        provider=infer_provider(base_url, current.get(prefix + "PROVIDER", "")),
        base_url=base_url,
        api_key=current.get(prefix + "API_KEY", ""),
        model=current.get(prefix + "MODEL", ""),
    )


def current_answers(current: Mapping[str, str]) -> Answers | None:
    """What the existing files say, shaped as answers (None when nothing is configured)."""
    enabled = current.get("CLASSIFIER_ENABLED", "true").lower() not in ("0", "false", "no", "off")
    classifier_url = current.get("CLASSIFIER_BASE_URL", "")
    routes = {t: r for t in TIERS if (r := current_route(current, t)) is not None}
    if not routes and not classifier_url:
        return None
    engine = infer_engine(classifier_url) if classifier_url else None
    if enabled and engine is not None:
        local = RouteAnswer(engine, classifier_url, model=current.get("CLASSIFIER_MODEL", ""))
        routes.pop(CHEAP, None)
        return Answers(
            "quick",
            "local",
            local=local,
            routes=routes,
            redis_url=current.get("REDIS_URL", ""),
            classifier_mode=current.get("CLASSIFIER_MODE", ""),
        )
    if enabled and classifier_url:
        cloud = RouteAnswer(
            infer_provider(classifier_url),
            classifier_url,
            current.get("CLASSIFIER_API_KEY", ""),
            current.get("CLASSIFIER_MODEL", ""),
        )
        return Answers(
            "cloud",
            "cloud",
            classifier_route=cloud,
            routes=routes,
            redis_url=current.get("REDIS_URL", ""),
        )
    return Answers("cloud", "off", routes=routes, redis_url=current.get("REDIS_URL", ""))
