"""Loading the configured plugins and calling their hooks.

A plugin is a class, as a mitmproxy addon is: made once at start, its hooks found once by
name (`on_start`, `pre_request`, `post_response`, `on_end`), each called with plain
objects (plugins/api.py). Like mitmproxy's script loader, a module or a file may also
hand over its instances in an `addons` list.

Every problem loading one is found at start and named (`plugin 'x.py': ...`): the router
refuses to start (or, on a reload, keeps the plugins it has), never with a traceback. At
run time a hook that raises is one warning line and the request goes on as if the hook
had not been there; only `Reject` (from pre_request) reaches the client. With no plugin
configured, each hook's list is empty and the router checks only that.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import logging
import re
import sys
import traceback
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from xrouter_core.config import ConfigError, PluginSpec
from xrouter_core.plugins.api import PluginAnswer, PluginRequest, Reject, tier_name
from xrouter_core.wire.errors import redact

log = logging.getLogger("xrouter.plugins")

HOOKS = ("on_start", "pre_request", "post_response", "on_end")
# Called inside a stream (post_response) or at shutdown (on_end): no awaiting there.
SYNCHRONOUS = ("post_response", "on_end")
BUILTIN = {
    "response-healing": "xrouter_core.plugins.healing:ResponseHealing",
    "pareto": "xrouter_core.plugins.pareto:Pareto",
}
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class PluginError(Exception):
    """One plugin that cannot be loaded, and why."""


def split_target(use: str) -> tuple[str, str]:
    """`pkg.mod:Class` or `path/file.py:Class` → (module or file, class name or "")."""
    where, colon, name = use.rpartition(":")
    if colon and IDENTIFIER.fullmatch(name) and where:
        return where, name
    return use, ""


def import_target(where: str) -> Any:
    """A module by dotted name, or a Python file by path (as mitmproxy loads a script)."""
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where).expanduser()
        if not path.is_file():
            raise PluginError(f"no such file: {path}")
        name = f"xrouter_plugin_{re.sub(r'[^A-Za-z0-9_]', '_', str(path.resolve()))}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise PluginError(f"{path} cannot be loaded as Python")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        # As mitmproxy loads a script: its directory on the path while it runs, so that
        # it can import the modules beside it.
        sys.path.insert(0, str(path.resolve().parent))
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - the user's code: named, not shown
            sys.modules.pop(name, None)
            where = line_in(exc, path)
            raise PluginError(f"{path} failed to load{where}: {describe(exc)}") from None
        finally:
            sys.path.remove(str(path.resolve().parent))
        return module
    if not all(IDENTIFIER.fullmatch(part) for part in where.split(".")):
        raise PluginError("not a module name (pkg.module:Class) or a file path (plugin.py)")
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as exc:
        raise PluginError(f"no module named {exc.name!r}") from None
    except Exception as exc:  # noqa: BLE001 - the user's code: named, not shown
        raise PluginError(f"module {where} failed to import: {describe(exc)}") from None


def line_in(exc: BaseException, path: Path) -> str:
    """` (line N)`: where in the plugin's own file an exception was raised, if there."""
    if isinstance(exc, SyntaxError):
        return ""  # its message names the line already
    target = path.resolve()
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == target]
    return f" (line {frames[-1].lineno})" if frames else ""


def describe(exc: BaseException) -> str:
    """An exception in one line: its type and message, no traceback."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def instances_of(spec: PluginSpec) -> list[Any]:
    """The plugin objects one entry stands for (a class made with its options, or a
    module's `addons` list)."""
    where, class_name = split_target(BUILTIN.get(spec.use, spec.use))
    module = import_target(where)
    if not class_name:
        addons = getattr(module, "addons", None)
        if not isinstance(addons, list | tuple) or not addons:
            raise PluginError(
                "names no class (use module:Class or file.py:Class) and has no `addons` list"
            )
        if spec.options:
            raise PluginError("options need a class to give them to (module:Class)")
        return list(addons)
    kind = getattr(module, class_name, None)
    if not inspect.isclass(kind):
        raise PluginError(f"{where} has no class {class_name!r}")
    try:
        return [kind(**spec.options)]
    except TypeError as exc:
        raise PluginError(f"bad options {sorted(spec.options)}: {exc}") from None
    except ValueError as exc:  # the plugin's own check of its options: its message
        raise PluginError(str(exc) or describe(exc)) from None
    except Exception as exc:  # noqa: BLE001 - the plugin refused its options
        raise PluginError(describe(exc)) from None


def check_hooks(plugin: Any) -> None:
    found = [name for name in HOOKS if callable(getattr(plugin, name, None))]
    if not found:
        raise PluginError(f"{type(plugin).__name__} has none of the hooks {', '.join(HOOKS)}")
    for name in SYNCHRONOUS:
        if inspect.iscoroutinefunction(getattr(plugin, name, None)):
            raise PluginError(
                f"{type(plugin).__name__}.{name} must be a plain function, not async "
                "(it runs inside the answer's stream or at shutdown)"
            )


def load_plugins(specs: Sequence[PluginSpec], secrets: Sequence[str] = ()) -> Plugins:
    """Every configured plugin, made and checked; ConfigError naming each that cannot be."""
    loaded: list[tuple[str, Any]] = []
    problems: list[str] = []
    for spec in specs:
        try:
            made = instances_of(spec)
            for plugin in made:
                check_hooks(plugin)
        except PluginError as exc:
            problems.append(f"plugin {spec.use!r} cannot be loaded: {exc}")
            continue
        for plugin in made:
            name = getattr(plugin, "name", None)
            loaded.append((name if isinstance(name, str) and name else spec.use, plugin))
    if problems:
        raise ConfigError(problems)
    return Plugins(loaded, secrets)


class Plugins:
    """The loaded plugins' hooks, each a list of (plugin name, bound method) found once."""

    def __init__(self, loaded: Sequence[tuple[str, Any]] = (), secrets: Sequence[str] = ()):
        self.loaded = list(loaded)
        self.secrets = tuple(secrets)
        self.on_start = self._hook("on_start")
        self.pre_request = self._hook("pre_request")
        self.post_response = self._hook("post_response")
        self.on_end = self._hook("on_end")

    def _hook(self, name: str) -> list[tuple[str, Callable[..., Any]]]:
        return [
            (plugin_name, getattr(plugin, name))
            for plugin_name, plugin in self.loaded
            if callable(getattr(plugin, name, None))
        ]

    def names(self) -> list[str]:
        return [name for name, _ in self.loaded]

    def failed(self, name: str, hook: str, exc: BaseException) -> None:
        """The one line a failing hook costs; what it was doing goes on without it."""
        log.warning(
            "plugin %s failed in %s (ignored, the request goes on): %s",
            name,
            hook,
            redact(describe(exc), self.secrets),
        )

    def start(self, spawn: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
        for name, hook in self.on_start:
            try:
                result = hook()
                if inspect.iscoroutine(result):
                    spawn(self._guarded(name, "on_start", result))
            except Exception as exc:  # noqa: BLE001 - a plugin never stops the router
                self.failed(name, "on_start", exc)

    async def _guarded(self, name: str, hook: str, work: Coroutine[Any, Any, Any]) -> None:
        try:
            await work
        except Exception as exc:  # noqa: BLE001
            self.failed(name, hook, exc)

    def end(self) -> None:
        for name, hook in self.on_end:
            try:
                hook()
            except Exception as exc:  # noqa: BLE001
                self.failed(name, "on_end", exc)

    async def before(self, request: PluginRequest) -> None:
        """pre_request of each plugin, in order; Reject propagates (the client's answer).
        A tier set by a plugin is checked and kept with the plugin's name."""
        for name, hook in self.pre_request:
            before = request.tier
            try:
                result = hook(request)
                if inspect.isawaitable(result):
                    # In a task of its own: this may run on in another task (dispatch.py).
                    await asyncio.ensure_future(result)
            except Reject:
                raise
            except Exception as exc:  # noqa: BLE001
                self.failed(name, "pre_request", exc)
                request.tier = before
                continue
            if request.tier is not None and request.tier != before:
                tier = tier_name(request.tier)
                if tier is None:
                    self.failed(
                        name, "pre_request", ValueError(f"tier {request.tier!r} names no tier")
                    )
                    request.tier = before
                else:
                    request.tier, request.forced_by = tier, name

    def after(self, answer: PluginAnswer) -> None:
        """post_response of each plugin, in order."""
        for name, hook in self.post_response:
            try:
                hook(answer)
            except Exception as exc:  # noqa: BLE001
                self.failed(name, "post_response", exc)
