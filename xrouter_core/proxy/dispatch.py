"""Hook dispatch for the lean master: the same calls as mitmproxy's, looked up once.

mitmproxy's `AddonManager` finds the handlers of every hook anew for every flow event:
it walks each addon's tree, `getattr`s the hook name and enters a context manager per
addon, then does it all again for the `update` hook that follows each flow hook. With
the lean launcher's handful of addons that walk is about a fifth of the proxy's CPU
under load (bench/fastlane.py measures it). `CachedHookManager` keeps, per hook name,
the list of handlers that walk would find, rebuilt whenever an addon is added or
removed, and calls them in the same order with the same error handling: an exception
is logged as "Addon error" and the next addon still runs, but not the rest of the failed
addon's own tree (mitmproxy has one error boundary per top-level addon: a parent's
failing hook skips its children's), and `AddonHalt` stops the chain.

The lean launcher switches its master to it before adding any addon; under `mitmdump -s
addons/xrouter.py` the router switches mitmdump's manager to it when it starts (both via
`speed_up`), which speeds up every hook of mitmdump's ~36 addons too (`--set
xrouter_fast_dispatch=false` keeps mitmproxy's). It overrides four methods of
mitmproxy's public `AddonManager` class; `supported()` checks that they are still there
(tests/test_dispatch.py fails loudly when not), and mitmproxy's own manager stays in
place if they are not.
"""

from __future__ import annotations

import functools
import inspect
import logging
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
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
    # Per hook, parallel to its handlers: the index of the top-level addon each belongs to.
    _groups: dict[str, list[int]]
    _chain_length: int
    _handed_over: dict[hooks.Hook, tuple[list[Handler], list[int]]]  # see answer_now

    def __init__(self, master) -> None:
        super().__init__(master)
        self._handed_over = {}
        self.forget_handlers()

    def forget_handlers(self) -> None:
        self._handlers = {}
        self._groups = {}
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
            found, groups = [], []
            for group, addon in enumerate(self.chain):
                for part in addonmanager.traverse([addon]):
                    func = getattr(part, name, None)
                    if func is not None and not isinstance(func, types.ModuleType):
                        if not callable(func):
                            raise exceptions.AddonManagerError(
                                f"Addon handler {name} ({part}) not callable"
                            )
                        found.append(func)
                        groups.append(group)
            self._handlers[name] = found
            self._groups[name] = groups
        return found

    def groups(self, name: str) -> list[int]:
        """The top-level addon of each of `handlers(name)`, by index (same order)."""
        self.handlers(name)
        return self._groups[name]

    async def trigger_event(self, event: hooks.Hook) -> None:
        handlers = self.handlers(event.name)
        await self._call_each(handlers, event.args(), self._groups[event.name])

    @staticmethod
    async def _call_each(handlers: list[Handler], args: list[Any], groups: list[int]) -> None:
        errors = HandlerErrors()
        failed_group = -1
        for func, group in zip(handlers, groups, strict=True):
            if group == failed_group:
                continue  # its addon's hook failed: mitmproxy skips the rest of that tree
            with errors:
                result = func(*args)
                if result is not None and inspect.isawaitable(result):
                    await result
            if errors.halted:
                return
            if errors.take_failure():
                failed_group = group

    def answer_now(self, event: hooks.Hook) -> bool:
        """Run a hook's handlers right here when none of them is a coroutine function (and
        nothing listens to `update`). True: done. False: it must go mitmproxy's way, either
        untouched or, when a handler returned something to await, handed over: the
        handlers before it have run, and `handle_lifecycle` awaits it and runs the rest.

        For mitm_compat's inline hooks (the lean launcher): the same calls, in the same
        order, with the same error handling as `handle_lifecycle`, without a task and a
        round trip through mitmproxy's connection handler per hook. A flow is not waited
        for if a handler intercepts it: the lean launcher has no addon that does."""
        handlers = self.handlers(event.name)  # first: it forgets what a new addon changed
        groups = self._groups[event.name]
        synchronous = self._synchronous.get(event.name)
        if synchronous is None:
            synchronous = not self.handlers("update") and not any(
                inspect.iscoroutinefunction(func) for func in handlers
            )
            self._synchronous[event.name] = synchronous
        if not synchronous:
            return False
        args = event.args()
        errors = HandlerErrors()
        failed_group = -1
        for index, func in enumerate(handlers):
            if groups[index] == failed_group:
                continue
            result = None
            with errors:
                result = func(*args)
            if errors.halted:
                break
            if errors.take_failure():
                failed_group = groups[index]
                continue
            if result is not None and inspect.isawaitable(result):
                # A tree's handlers are contiguous: a failed one is behind, not in the rest.
                rest = [lambda *_, given=result: given, *handlers[index + 1 :]]
                self._handed_over[event] = (rest, groups[index:])
                return False
        return True

    async def handle_lifecycle(self, event: hooks.Hook) -> None:
        handed = self._handed_over.pop(event, None)
        if handed is None:
            await self.trigger_event(event)
        else:
            rest, rest_groups = handed
            await self._call_each(rest, event.args(), rest_groups)
        message = event.args()[0]
        if isinstance(message, flow.Flow) and self.handlers("update"):
            await self.trigger_event(hooks.UpdateHook([message]))


class HandlerErrors:
    """mitmproxy's handling of an addon's error, for one handler call after another: an
    exception is logged as "Addon error" and the chain goes on, AddonHalt stops it (see
    `halted`), OptionsError propagates."""

    halted = False
    failed = False

    def take_failure(self) -> bool:
        """Whether the last call failed (logged); reset for the next one."""
        failed, self.failed = self.failed, False
        return failed

    def __enter__(self) -> HandlerErrors:
        return self

    def __exit__(self, kind, exc, traceback) -> bool:
        if kind is None or not issubclass(kind, Exception):
            return False
        if issubclass(kind, exceptions.AddonHalt):
            self.halted = True
            return True
        if issubclass(kind, exceptions.OptionsError):
            return False
        log.error(f"Addon error: {exc}", exc_info=(kind, exc, traceback))
        self.failed = True
        return True


def run_until_it_waits(work: Coroutine[Any, Any, None]) -> Awaitable[None] | None:
    """Run a coroutine now, in the caller's task, up to its first real wait: None when it
    finished without one, else an awaitable that finishes it wherever it is awaited.

    The rest then runs in another task, so whatever the coroutine awaits before its first
    wait must not be bound to the current task (`asyncio.timeout`, anyio cancel scopes):
    await futures, threads and tasks of its own there."""
    try:
        waiting_for = work.send(None)
    except StopIteration:
        return None
    return Continuation(work, waiting_for)


class Continuation:
    """The rest of a coroutine that `run_until_it_waits` started: awaiting it passes what
    the coroutine waits for to the awaiting task, as `await` itself would have."""

    def __init__(self, work: Coroutine[Any, Any, None], waiting_for: Any) -> None:
        self.work = work
        self.waiting_for = waiting_for

    def __await__(self) -> Generator[Any, Any, None]:
        work, waiting_for = self.work, self.waiting_for
        while True:
            try:
                sent = yield waiting_for
            except BaseException as exc:  # cancelled, or the awaited future failed
                step = functools.partial(work.throw, exc)
            else:
                step = functools.partial(work.send, sent)
            try:
                waiting_for = step()
            except StopIteration:
                return


def speed_up(manager: addonmanager.AddonManager) -> bool:
    """Switch a running master's AddonManager to the cached dispatch (mitmdump's, when
    the router is loaded as a script); False when this mitmproxy's shape is unknown."""
    if isinstance(manager, CachedHookManager):
        return True
    if type(manager) is not addonmanager.AddonManager or not supported():
        return False
    manager.__class__ = CachedHookManager
    assert isinstance(manager, CachedHookManager)
    manager._handed_over = {}
    manager.forget_handlers()
    return True
