"""The cached hook dispatch calls what mitmproxy's own would, in the same order."""

from __future__ import annotations

import asyncio
import logging

import pytest
from mitmproxy import addonmanager, exceptions, hooks, master, options
from mitmproxy.proxy.layers.http import HttpRequestHook
from mitmproxy.test import tflow

from xrouter_core.proxy import dispatch


class Recorder:
    def __init__(self, name: str, calls: list[str], children=()):
        self.name = name
        self.calls = calls
        self.addons = list(children)

    def request(self, flow) -> None:
        self.calls.append(f"{self.name}.request")


class AsyncRecorder(Recorder):
    async def request(self, flow) -> None:
        await asyncio.sleep(0)
        self.calls.append(f"{self.name}.request")


class Failing(Recorder):
    def request(self, flow) -> None:
        self.calls.append(f"{self.name}.request")
        raise ValueError("boom")


class Halting(Recorder):
    def request(self, flow) -> None:
        self.calls.append(f"{self.name}.request")
        raise exceptions.AddonHalt


class Updating(Recorder):
    def update(self, flows) -> None:
        self.calls.append(f"{self.name}.update:{len(flows)}")


def run_hook(manager_class, make_addons) -> list[str]:
    async def go() -> list[str]:
        calls: list[str] = []
        lean = master.Master(options.Options())
        if manager_class is not None:
            lean.addons = manager_class(lean)
        lean.addons.add(*make_addons(calls))
        await lean.addons.handle_lifecycle(HttpRequestHook(tflow.tflow()))
        await lean.done()  # uninstalls its log handler, bound to this event loop
        return calls

    return asyncio.run(go())


def chain(calls):
    return [
        Recorder("a", calls, [Recorder("a.child", calls)]),
        AsyncRecorder("b", calls),
        Failing("c", calls),
        Updating("d", calls),
        Recorder("e", calls),
    ]


def test_this_mitmproxy_has_the_shape_dispatch_relies_on():
    assert dispatch.supported(), (
        "mitmproxy's AddonManager changed: dispatch.py must be checked against it"
    )


def test_same_handlers_in_the_same_order_as_mitmproxys_own(caplog):
    with caplog.at_level(logging.ERROR):
        ours = run_hook(dispatch.CachedHookManager, chain)
    theirs = run_hook(None, chain)
    assert ours == theirs
    assert ours == [
        "a.request",
        "a.child.request",
        "b.request",
        "c.request",
        "d.request",
        "e.request",
        "d.update:1",
    ]
    assert "Addon error: boom" in caplog.text  # logged, and the chain went on


class FailingParent(Failing):
    """A failing hook on an addon that has children of its own."""


def test_a_failing_parent_skips_its_children_as_mitmproxy_does(caplog):
    """mitmproxy's error boundary is the top-level addon (one safecall around its whole
    tree): when a parent's hook raises, its children's hooks of that event do not run;
    the next top-level addon's do. Both dispatchers, the awaiting and the inline one."""

    def tree(calls):
        return [
            FailingParent("p", calls, [Recorder("p.child", calls, [Recorder("p.grand", calls)])]),
            Recorder("q", calls, [Failing("q.child", calls), Recorder("q.sibling", calls)]),
            Waiting("w", calls, [Recorder("w.child", calls)]),
            Recorder("z", calls),
        ]

    with caplog.at_level(logging.ERROR):
        theirs = run_hook(None, tree)
        ours = run_hook(dispatch.CachedHookManager, tree)
    assert ours == theirs
    assert theirs == [
        "p.request",
        "q.request",
        "q.child.request",
        "w.request",
        "w.later",
        "w.child.request",
        "z.request",
    ]

    def plain_tree(calls):
        return tree(calls)[:2] + [Recorder("z", calls)]

    answered, calls = answer_inline(plain_tree)
    assert answered and calls == run_hook(None, plain_tree)
    assert calls == ["p.request", "q.request", "q.child.request", "z.request"]

    # Handed over mid-chain: a failure after the wait skips the rest of that tree only.
    class WaitingThenFailing(Waiting):
        async def later(self) -> None:
            await asyncio.sleep(0)
            self.calls.append(f"{self.name}.later")
            raise ValueError("late boom")

    def late_tree(calls):
        return [
            Recorder("a", calls),
            WaitingThenFailing("w", calls, [Recorder("w.child", calls)]),
            Recorder("z", calls),
        ]

    async def go() -> list[str]:
        calls: list[str] = []
        lean = master.Master(options.Options())
        lean.addons = dispatch.CachedHookManager(lean)
        lean.addons.add(*late_tree(calls))
        event = HttpRequestHook(tflow.tflow())
        assert not lean.addons.answer_now(event)
        await lean.addons.handle_lifecycle(event)
        await lean.done()
        return calls

    with caplog.at_level(logging.ERROR):
        handed = asyncio.run(go())
    assert handed == run_hook(None, late_tree) == ["a.request", "w.request", "w.later", "z.request"]


def test_addon_halt_stops_the_chain():
    def halting(calls):
        return [Recorder("a", calls), Halting("h", calls), Recorder("z", calls)]

    assert run_hook(dispatch.CachedHookManager, halting) == ["a.request", "h.request"]


def test_handlers_are_found_again_after_addons_change():
    async def go() -> list[str]:
        calls: list[str] = []
        lean = master.Master(options.Options())
        lean.addons = dispatch.CachedHookManager(lean)
        first = Recorder("first", calls)
        lean.addons.add(first)
        event = HttpRequestHook(tflow.tflow())
        await lean.addons.trigger_event(event)
        lean.addons.add(Recorder("second", calls))
        await lean.addons.trigger_event(event)
        lean.addons.remove(first)
        await lean.addons.trigger_event(event)
        return calls

    assert asyncio.run(go()) == [
        "first.request",
        "first.request",
        "second.request",
        "second.request",
    ]


def test_speed_up_switches_a_running_masters_manager():
    async def go() -> tuple[bool, list[str]]:
        calls: list[str] = []
        plain = master.Master(options.Options())
        plain.addons.add(Recorder("a", calls))
        switched = dispatch.speed_up(plain.addons)
        plain.addons.add(Recorder("b", calls))
        await plain.addons.handle_lifecycle(HttpRequestHook(tflow.tflow()))
        return switched and isinstance(plain.addons, dispatch.CachedHookManager), calls

    switched, calls = asyncio.run(go())
    assert switched and calls == ["a.request", "b.request"]


def test_speed_up_leaves_an_unknown_manager_alone():
    class Custom(addonmanager.AddonManager):
        pass

    async def go() -> bool:
        plain = master.Master(options.Options())
        plain.addons = Custom(plain)
        return dispatch.speed_up(plain.addons) or type(plain.addons) is not Custom

    assert asyncio.run(go()) is False


@pytest.mark.parametrize("hook", [hooks.UpdateHook([])])
def test_hooks_without_a_flow_are_dispatched_once(hook):
    async def go() -> list[str]:
        calls: list[str] = []
        lean = master.Master(options.Options())
        lean.addons = dispatch.CachedHookManager(lean)
        lean.addons.add(Updating("u", calls))
        await lean.addons.handle_lifecycle(hook)
        return calls

    assert asyncio.run(go()) == ["u.update:0"]


def answer_inline(make_addons) -> tuple[bool, list[str]]:
    async def go() -> tuple[bool, list[str]]:
        calls: list[str] = []
        lean = master.Master(options.Options())
        lean.addons = dispatch.CachedHookManager(lean)
        lean.addons.add(*make_addons(calls))
        answered = lean.addons.answer_now(HttpRequestHook(tflow.tflow()))
        await lean.done()
        return answered, calls

    return asyncio.run(go())


def test_answer_now_calls_plain_handlers_as_mitmproxys_dispatch_does(caplog):
    def plain_chain(calls):
        return [
            Recorder("a", calls, [Recorder("a.child", calls)]),
            Failing("c", calls),
            Recorder("e", calls),
        ]

    with caplog.at_level(logging.ERROR):
        answered, calls = answer_inline(plain_chain)
    assert answered and calls == run_hook(None, plain_chain)
    assert calls == ["a.request", "a.child.request", "c.request", "e.request"]
    assert "Addon error: boom" in caplog.text

    def halting(calls):
        return [Recorder("a", calls), Halting("h", calls), Recorder("z", calls)]

    assert answer_inline(halting) == (True, ["a.request", "h.request"])


@pytest.mark.parametrize("other", [AsyncRecorder, Updating])
def test_answer_now_leaves_coroutines_and_update_listeners_to_mitmproxy(other):
    """A coroutine handler must be awaited, and `update` follows the hook: neither can run
    inline, so nothing runs and the hook takes mitmproxy's way."""
    answered, calls = answer_inline(lambda calls: [Recorder("a", calls), other("b", calls)])
    assert (answered, calls) == (False, [])


class Waiting(Recorder):
    """A plain function that returns something to await, as the router's `request`."""

    def request(self, flow):
        self.calls.append(f"{self.name}.request")
        return self.later()

    async def later(self) -> None:
        await asyncio.sleep(0)
        self.calls.append(f"{self.name}.later")


def test_a_handler_that_waits_is_handed_over_and_the_rest_runs_after_it():
    def chain(calls):
        return [Recorder("a", calls), Waiting("b", calls), Recorder("c", calls)]

    async def go() -> tuple[bool, list[str], list[str]]:
        calls: list[str] = []
        lean = master.Master(options.Options())
        lean.addons = dispatch.CachedHookManager(lean)
        lean.addons.add(*chain(calls))
        event = HttpRequestHook(tflow.tflow())
        answered = lean.addons.answer_now(event)
        before = list(calls)
        await lean.addons.handle_lifecycle(event)  # what mitmproxy's hook task does next
        await lean.done()
        return answered, before, calls

    answered, before, calls = asyncio.run(go())
    assert not answered and before == ["a.request", "b.request"]
    assert calls == run_hook(None, chain) == ["a.request", "b.request", "b.later", "c.request"]


def test_run_until_it_waits_finishes_what_needs_no_wait_at_once():
    async def at_once(log: list[str]) -> None:
        log.append("done")

    async def waits(log: list[str]) -> None:
        log.append("started")
        await asyncio.sleep(0.01)
        log.append("finished")

    async def go() -> tuple[object, list[str], list[str]]:
        quick: list[str] = []
        done = dispatch.run_until_it_waits(at_once(quick))
        slow: list[str] = []
        rest = dispatch.run_until_it_waits(waits(slow))
        started = list(slow)
        assert rest is not None
        await asyncio.ensure_future(_await(rest))  # finished in another task
        return done, quick + started, slow

    async def _await(awaitable) -> None:
        await awaitable

    done, seen_at_once, slow = asyncio.run(go())
    assert done is None and seen_at_once == ["done", "started"]
    assert slow == ["started", "finished"]


def test_what_run_until_it_waits_hands_over_raises_and_is_cancelled_where_awaited():
    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("after the wait")

    async def sleeps(log: list[str]) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            log.append("cancelled")
            raise

    async def go() -> list[str]:
        rest = dispatch.run_until_it_waits(fails())
        with pytest.raises(ValueError, match="after the wait"):
            await rest
        log: list[str] = []
        task = asyncio.ensure_future(_await(dispatch.run_until_it_waits(sleeps(log))))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return log

    async def _await(awaitable) -> None:
        await awaitable

    assert asyncio.run(go()) == ["cancelled"]
