"""The lean launcher's own figures, on the bench harness (bench/run.py, bench/targets.py).

    ./run python -m bench.fastlane            latency phase: direct, plain mitmdump,
                                              mitmdump -s addons/xrouter.py, xrouter,
                                              xrouter --workers 2
    ./run python -m bench.fastlane --quick    a small run
    ./run python -m bench.fastlane --quick --rounds 8   8 short rounds at c=1 and c=64

It only adds launcher variants as targets (workers, event loop) and runs the
harness's interleaved latency phase over them, so the figures are the harness's own.
"""

from __future__ import annotations

import dataclasses
import sys

from bench import run, targets


class LeanRouterWorkers(targets.LeanRouter):
    name = "xrouter-w2"
    description = "xrouter --workers 2 (SO_REUSEPORT)"

    def command(self) -> tuple[list[str], dict[str, str]]:
        command, env = super().command()
        return [*command, "--workers", "2"], env


class LeanRouterUvloop(targets.LeanRouter):
    name = "xrouter-uvloop"
    description = "xrouter --loop uvloop (to show what uvloop is worth)"

    def command(self) -> tuple[list[str], dict[str, str]]:
        command, env = super().command()
        return [*command, "--loop", "uvloop"], env


class LeanRouterDebug(targets.LeanRouter):
    name = "xrouter-debug"
    description = "xrouter with XROUTER_DEBUG=1 (no python -O: what -O is worth)"

    def command(self) -> tuple[list[str], dict[str, str]]:
        command, env = super().command()
        return command, {**env, "XROUTER_DEBUG": "1"}


for variant in (LeanRouterWorkers, LeanRouterUvloop, LeanRouterDebug):
    targets.TARGETS[variant.name] = variant


def many_short_rounds(rounds: int) -> None:
    """More, shorter interleaved rounds at concurrency 1 and 64: on a shared machine the
    load drifts within seconds, and medians over many rounds see through it."""

    def make(cls, quick: bool) -> run.Plan:
        base = original(quick)
        return dataclasses.replace(base, rounds=rounds, per_round={1: 100, 64: 640})

    original = run.Plan.make
    run.Plan.make = classmethod(make)  # type: ignore[method-assign, assignment]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--rounds" in argv:
        at = argv.index("--rounds")
        many_short_rounds(int(argv[at + 1]))
        del argv[at : at + 2]
    if not any(a.startswith("--targets") for a in argv):
        argv += ["--targets", "mitmdump,router,xrouter,xrouter-w2"]
    if not any(a.startswith("--only") for a in argv):
        argv += ["--only", "latency"]
    return run.main(argv)


if __name__ == "__main__":
    sys.exit(main())
