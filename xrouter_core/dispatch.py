"""Hook dispatch for the lean master: the same calls as mitmproxy's, looked up once.

mitmproxy's `AddonManager` finds the handlers of every hook anew for every flow event:
it walks each addon's tree, `getattr`s the hook name and enters a context manager per
addon, then does it all again for the `update` hook that follows each flow hook. With
the lean launcher's handful of addons that walk was ~20 % of the proxy's CPU under load
(bench/fastlane.py). `CachedHookManager` keeps, per hook name, the list of handlers
that walk would find, rebuilt whenever an addon is added or removed, and calls them
in the same order with the same error handling: an exception is logged as
"Addon error" and the next addon still runs, `AddonHalt` stops the chain.

The lean launcher switches its master to it before adding any addon; under `mitmdump -s
addons/xrouter.py` the router switches mitmdump's manager to it when it starts (both via
`speed_up`), which speeds up every hook of mitmdump's ~40 addons too (`--set
xrouter_fast_dispatch=false` keeps mitmproxy's). It overrides four methods of
mitmproxy's public `AddonManager` class; `supported()` checks that they are still there
(tests/test_dispatch.py fails loudly when not), and mitmproxy's own manager stays in
place if they are not.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import types
from collections.abc import Callable
from typing import Any

from mitmproxy import addonmanager, exceptions, flow, hooks

log = logging.getLogger("mitmproxy.addonmanager")  # where mitmproxy logs addon errors

Handler = Callable[..., Any]
OVERRIDDEN = ("handle_lifecycle", "trigger_event", "register", "remove")


def supported() -> bool:
    """Does mitmproxy's AddonManager still have the shape this module relies on?"""
    manager = addonmanager.AddonManager
    return all(callable(getattr(manager, name, None)) for name in OVERRIDDEN) and callable(
        getattr(addonmanager, "traverse", None)
    )


class CachedHookManager(addonmanager.AddonManager):
    """mitmproxy's AddonManager with each hook's handler list computed once."""

    _handlers: dict[str, list[Handler]]
    _chain_length: int

    def __init__(self, master) -> None:
        super().__init__(master)
        self.forget_handlers()

    def forget_handlers(self) -> None:
        self._handlers = {}
        self._synchronous: dict[str, bool] = {}
        self._chain_length = len(self.chain)

    def register(self, addon):
        self.forget_handlers()
        return super().register(addon)

    def remove(self, addon) -> None:
        self.forget_handlers()
        super().remove(addon)

    def handlers(self, name: str) -> list[Handler]:
        if self._chain_length != len(self.chain):  # add() appends after register()
            self.forget_handlers()
        found = self._handlers.get(name)
        if found is None:
            found = []
            for addon in self.chain:
                for part in addonmanager.traverse([addon]):
                    func = getattr(part, name, None)
                    if func is not None and not isinstance(func, types.ModuleType):
                        if not callable(func):
                            raise exceptions.AddonManagerError(
                                f"Addon handler {name} ({part}) not callable"
                            )
                        found.append(func)
            self._handlers[name] = found
        return found

    async def trigger_event(self, event: hooks.Hook) -> None:
        args = event.args()
        for func in self.handlers(event.name):
            try:
                result = func(*args)
                if result is not None and inspect.isawaitable(result):
                    await result
            except exceptions.AddonHalt:
                return
            except exceptions.OptionsError:
                raise
            except Exception as exc:
                log.error(f"Addon error: {exc}", exc_info=True)

    def answer_now(self, event: hooks.Hook) -> bool:
        """Run a hook's handlers right here when none of them is a coroutine (and nothing
        listens to `update`); False, with nothing run, when it must go mitmproxy's way.

        For mitm_compat's inline hooks (the lean launcher): the same calls, in the same
        order, with the same error handling as `handle_lifecycle`, without a task and a
        round trip through mitmproxy's connection handler per hook. A flow is not waited
        for if a handler intercepts it: the lean launcher has no addon that does."""
        synchronous = self._synchronous.get(event.name)
        if synchronous is None or self._chain_length != len(self.chain):
            synchronous = not self.handlers("update") and not any(
                inspect.iscoroutinefunction(func) for func in self.handlers(event.name)
            )
            self._synchronous[event.name] = synchronous
        if not synchronous:
            return False
        args = event.args()
        for func in self.handlers(event.name):
            try:
                result = func(*args)
            except exceptions.AddonHalt:
                break
            except exceptions.OptionsError:
                raise
            except Exception as exc:
                log.error(f"Addon error: {exc}", exc_info=True)
                continue
            if result is not None and inspect.isawaitable(result):
                # A plain function that returned an awaitable: it still runs, in a task.
                asyncio.ensure_future(result)
        return True

    async def handle_lifecycle(self, event: hooks.Hook) -> None:
        await self.trigger_event(event)
        message = event.args()[0]
        if isinstance(message, flow.Flow) and self.handlers("update"):
            await self.trigger_event(hooks.UpdateHook([message]))


def speed_up(manager: addonmanager.AddonManager) -> bool:
    """Switch a running master's AddonManager to the cached dispatch (mitmdump's, when
    the router is loaded as a script); False when this mitmproxy's shape is unknown."""
    if isinstance(manager, CachedHookManager):
        return True
    if type(manager) is not addonmanager.AddonManager or not supported():
        return False
    manager.__class__ = CachedHookManager
    assert isinstance(manager, CachedHookManager)
    manager.forget_handlers()
    return True
