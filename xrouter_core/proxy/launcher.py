"""`xrouter`: the router on a lean mitmproxy core, optionally as N worker processes.

`mitmdump -s addons/xrouter.py` dispatches every flow event through mitmdump's ~36
default addons (and again through the `update` hook after each). A reverse proxy needs
only five of them, so this launcher builds mitmproxy's public `Master` with just those
and the router addon, looks each hook's handlers up once instead of per flow event
(dispatch.py), runs without `__debug__` checks (it re-executes itself with
`python -O`: mitmproxy type-checks every message it builds in debug mode) and freezes
the start-up heap out of the garbage collector. Configuration, endpoints and behaviour are the addon's,
so they are the same in both forms.

`--workers N` forks N such processes after the configuration has been checked once;
each binds the same address with SO_REUSEPORT and the kernel spreads connections over
them. mitmproxy has no option for that, so each worker's event loop adds
`reuse_port=True` to the listeners it creates (public asyncio API); a worker whose
mitmproxy did not create its listener that way stops with an error at start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from mitmproxy import addonmanager, certs, exceptions, hooks, master, options
from mitmproxy.addons import core, errorcheck, next_layer, proxyauth, proxyserver, tlsconfig
from mitmproxy.addons.termlog import TermLogHandler

from xrouter_core.config import (
    LOG_LEVEL_ALIASES,
    LOG_LEVELS,
    ConfigError,
    NoConfiguration,
    Settings,
    load_settings,
)
from xrouter_core.proxy import dispatch

log = logging.getLogger("xrouter")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="xrouter",
        description="Run the Xrouter LLM router on a lean mitmproxy core. Settings come from "
        "the environment, .env and upstreams.json; the options below override them.",
        epilog="`xrouter watch --help`, `xrouter tui --help`: watch a running router instead;"
        " `xrouter openclaw --help`: register it in OpenClaw's config;"
        " `xrouter keys --help`: client keys with their own limits;"
        " `xrouter explain --help`: how a running router would route a prompt.",
    )
    parser.add_argument("--host", help="address to listen on (HOST, default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to listen on (PORT, default 3000)")
    parser.add_argument(
        "--log-level", choices=(*LOG_LEVELS, *LOG_LEVEL_ALIASES), help="LOG_LEVEL (default info)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes sharing the port (SO_REUSEPORT); 0 means one per CPU (default 1)",
    )
    parser.add_argument(
        "--mode",
        action="append",
        default=[],
        help="a mitmproxy mode instead of the default API listener, e.g. regular@8080 or "
        "reverse:https://api.openai.com@3000 (repeatable)",
    )
    parser.add_argument(
        "--set",
        dest="setoptions",
        action="append",
        default=[],
        metavar="option=value",
        help="a mitmproxy or router option, e.g. confdir=~/.mitmproxy (repeatable)",
    )
    parser.add_argument(
        "--proxyauth", help="require proxy authentication in regular mode (mitmproxy's syntax)"
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop (default asyncio: uvloop measured slower under mitmproxy here, "
        "see bench/fastlane.py)",
    )
    args = parser.parse_args(argv)
    if args.workers < 0:
        parser.error("--workers must be 0 or more")
    if args.port is not None and not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    return args


# ---- logging -------------------------------------------------------------------------


class LineLogHandler(TermLogHandler):
    """mitmdump's terminal format, written once per event-loop pass: the lines of one
    pass (under load, several requests finish in each) go out in one system call, and
    none waits longer than that pass. Without a running loop it writes at once."""

    def __init__(self, out) -> None:
        super().__init__(out)
        self.pending: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record) + "\n"
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.pending.append(line)
            self.flush()
            return
        if not self.pending:
            loop.call_soon(self.flush)
        self.pending.append(line)

    def flush(self) -> None:
        self.acquire()  # the lock emit() runs under (records may come from other threads)
        try:
            lines, self.pending = "".join(self.pending), []
        finally:
            self.release()
        if not lines:
            return
        try:
            self.file.write(lines)
            self.file.flush()
        except OSError:
            sys.exit(1)  # as termlog: the terminal is gone


def install_log_handler(level: str) -> logging.Handler:
    """Print log records the way mitmdump's termlog does (the addon logs via `xrouter`)."""
    # The optimizations the logging documentation lists: no caller, thread or process
    # lookup for each record (no format of ours or mitmproxy's shows them).
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    for name in ("asyncio", "hpack", "quic", "tornado"):
        logging.getLogger(name).setLevel(logging.WARNING)
    handler = LineLogHandler(sys.stdout)
    handler.setLevel(level.upper())
    handler.install()
    return handler


# ---- event loop ----------------------------------------------------------------------


def loop_class(kind: str) -> type[asyncio.AbstractEventLoop]:
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise SystemExit("xrouter: --loop uvloop, but uvloop is not installed") from None
        return uvloop.Loop
    return asyncio.SelectorEventLoop


def reuse_port_loop(base: type[asyncio.AbstractEventLoop]) -> type[asyncio.AbstractEventLoop]:
    """A loop class whose TCP listeners share their port with the other workers."""

    class ReusePortLoop(base):  # type: ignore[valid-type, misc]
        listeners: list[socket.socket]

        async def create_server(self, protocol_factory, host=None, port=None, **kwargs):
            if kwargs.get("sock") is None:
                kwargs["reuse_port"] = True
            server = await super().create_server(protocol_factory, host, port, **kwargs)
            if not hasattr(self, "listeners"):
                self.listeners = []
            self.listeners.extend(server.sockets)
            return server

    return ReusePortLoop


# ---- stop signals --------------------------------------------------------------------

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
    """SIGINT or SIGTERM while the process was starting. A BaseException, as
    KeyboardInterrupt is: start-up code that catches Exception lets it through."""


def stop_on_signals() -> None:
    """Until the event loop takes SIGINT and SIGTERM over (serve), either one raises
    Stopped in whatever start-up step runs, a blocking one included (a plugin waiting on
    its service, the settings being read), and the process ends with status 0 and no
    traceback, as the same signal ends it once the router runs. Python's own SIGINT
    handling would print a KeyboardInterrupt traceback and exit 1 (or, inside
    asyncio.Runner, only cancel the main task, so a blocked step went on waiting), and
    SIGTERM's default would kill the process. The signals after the first are ignored
    while the process leaves: a Ctrl-C reaches every worker and the supervisor relays a
    SIGTERM to each as well."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop)


def _stop(signum: int, _frame: object) -> None:
    # Not SIG_IGN: a second signal caught before this handler ran would be reported as
    # "ignored due to race condition", with a traceback.
    for other in STOP_SIGNALS:
        signal.signal(other, _leaving)
    raise Stopped(signal.Signals(signum).name)


def _leaving(_signum: int, _frame: object) -> None:
    """A stop signal after the first: the process is leaving already."""


# ---- the lean master -----------------------------------------------------------------


class Lifecycle:
    """The launcher's own addon: checks the workers' listeners, then freezes the heap."""

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def running(self) -> None:
        if self.workers > 1:
            listeners = getattr(asyncio.get_running_loop(), "listeners", [])
            if not any(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in listeners):
                log.error(
                    "--workers: this mitmproxy version did not create its listener with "
                    "loop.create_server, so workers cannot share the port; use --workers 1"
                )
        # Everything allocated so far lives until exit: keep it out of every GC pass.
        gc.collect()
        gc.freeze()


def build_master(args: argparse.Namespace, workers: int, index: int = 0) -> master.Master:
    """mitmproxy's Master with only what a reverse proxy (and regular mode) needs;
    `index`: which worker this is (the first one logs what all of them share)."""
    from xrouter_core.proxy import mitm_compat  # both import mitmproxy's proxy layers
    from xrouter_core.proxy.addon import Xrouter

    check = errorcheck.ErrorCheck()  # installed now: catches errors logged while configuring
    opts = options.Options()
    lean = master.Master(opts)
    if dispatch.speed_up(lean.addons):  # before any addon is added: all of them get it
        # None of the lean master's addons intercepts flows: plain-function hooks can run
        # where the stream yields them (mitm_compat point 5).
        mitm_compat.answer_hooks_inline(lean.addons.answer_now)  # type: ignore[attr-defined]
    lean.addons.add(core.Core())
    if args.proxyauth:
        lean.addons.add(proxyauth.ProxyAuth())
    lean.addons.add(proxyserver.Proxyserver(), next_layer.NextLayer(), tlsconfig.TlsConfig())
    opts.set(*args.setoptions, defer=True)
    updates: dict[str, object] = {}
    if args.mode:
        updates["mode"] = args.mode
    if args.proxyauth:
        updates["proxyauth"] = args.proxyauth
    opts.update(**updates)
    router = Xrouter(announces=index == 0)
    lean.addons.add(router, Lifecycle(workers), check)
    # What mitmdump's script loader does for a script: configure it (only it) with every
    # option once. mitmproxy's own addons see only the options that changed, as under
    # mitmdump: a full configure makes mitmproxy 12's tlsconfig probe every TLS version, and
    # that probe raises on OpenSSL builds without SSLv3.
    with addonmanager.safecall():
        lean.addons.invoke_addon_sync(router, hooks.ConfigureHook(set(opts.keys())))
    if opts.deferred:
        raise exceptions.OptionsError("unknown option(s): " + ", ".join(sorted(opts.deferred)))
    return lean


async def serve(args: argparse.Namespace, workers: int, index: int = 0) -> None:
    try:
        lean = build_master(args, workers, index)
    except exceptions.OptionsError as exc:
        print(f"xrouter: {exc}", file=sys.stderr)
        sys.exit(1)
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:  # from here on, mitmproxy's shutdown (stop_on_signals)
        loop.add_signal_handler(signum, lean.shutdown)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    await lean.run()


def run_one(args: argparse.Namespace, workers: int, index: int = 0) -> int:
    """One router process, until it is stopped: 0, whether the signal came once it ran
    or while it was starting (Stopped)."""
    kind = loop_class(args.loop)
    factory: Callable[[], asyncio.AbstractEventLoop] = (
        reuse_port_loop(kind) if workers > 1 else kind
    )
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve(args, workers, index))
    except Stopped:
        pass
    return 0


# ---- workers -------------------------------------------------------------------------


def given_options(args: argparse.Namespace) -> dict[str, str]:
    """The `--set name=value` options of the command line, by name."""
    return dict(s.split("=", 1) for s in args.setoptions if "=" in s)


def create_ca_once(args: argparse.Namespace) -> None:
    """Create mitmproxy's CA in the parent, before forking, when the confdir has none.
    Each worker's tlsconfig creates it otherwise, and N workers doing so at once either
    read a key another one is still writing (that worker exits at start) or each keep a
    CA of its own, so a client that trusts one fails on the others' connections."""
    given = given_options(args)
    confdir = Path(os.path.expanduser(given.get("confdir", options.CONF_DIR)))
    if (confdir / f"{options.CONF_BASENAME}-ca.pem").exists():
        return
    try:
        key_size = int(given.get("key_size", options.KEY_SIZE))
    except ValueError:
        return  # the workers' option check reports it
    certs.CertStore.create_store(confdir, options.CONF_BASENAME, key_size)


def check_config(args: argparse.Namespace) -> Settings | int:
    """Check the configuration once before forking: the settings (HOST and PORT from
    every source the workers read), or the exit code (1 with one log line per problem; 2
    with the first-run message when nothing is configured, as the addon does for one
    process)."""
    paths = given_options(args)
    try:
        return load_settings(
            env_file=paths.get("xrouter_env_file") or None,
            upstreams_file=paths.get("xrouter_upstreams") or None,
        )
    except NoConfiguration as exc:
        print(exc.message, file=sys.stderr, flush=True)
        return 2
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("configuration: %s", problem)
        return 1


def claim_port(host: str, port: int) -> int:
    """Fail early and clearly if the port is taken; resolve port 0 to a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host if host not in ("", "*") else "0.0.0.0", port))
        return probe.getsockname()[1]


def supervise(args: argparse.Namespace, workers: int) -> int:
    """Fork the workers, relay SIGINT/SIGTERM to them, and exit when they all have.

    The relay is in place before the first fork, so a signal while workers start reaches
    each of them; one that comes while forking stops the forking. Both signals are
    blocked around each fork: a worker sets its own handlers (stop_on_signals) before it
    takes one, and the parent knows the new worker's pid before it relays one."""
    children: list[int] = []
    stopping = False

    def relay(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGINT, relay)
    signal.signal(signal.SIGTERM, relay)
    for index in range(workers):
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                stop_on_signals()
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
                code = run_one(args, workers, index)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except Stopped:
                code = 0
            finally:
                logging.shutdown()
                os._exit(code)
        children.append(pid)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # a pending one relays now
        if stopping:
            break
    worst = 0
    remaining = set(children)
    while remaining:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        remaining.discard(pid)
        code = os.waitstatus_to_exitcode(status)
        if code != 0 and worst == 0:
            worst = code if code > 0 else 1
            relay(signal.SIGTERM, None)  # one worker failed: stop the others too
    return worst


def reexec_optimized() -> None:
    """Run as `python -O` unless already so (or XROUTER_DEBUG=1): the same process id."""
    if __debug__ and os.environ.get("XROUTER_DEBUG", "") not in ("1", "true"):
        os.execv(sys.executable, [sys.executable, "-O", "-m", "xrouter_core", *sys.argv[1:]])


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["watch"]:
        # Clients of a (maybe remote) router: imported only for their commands.
        from xrouter_core.console import watch

        return watch.main(given[1:])
    if given[:1] == ["keys"]:
        from xrouter_core import client_keys

        return client_keys.main(given[1:])
    if given[:1] == ["tui"]:
        from xrouter_core.console import tui

        return tui.main(given[1:])
    if given[:1] == ["explain"]:
        from xrouter_core.console import explain

        return explain.main(given[1:])
    if given[:1] == ["openclaw"]:
        from xrouter_core.console import openclaw

        return openclaw.main(given[1:])
    args = parse_args(argv)
    if argv is None:
        reexec_optimized()
    stop_on_signals()
    try:
        return start(args)
    except Stopped:
        return 0


def start(args: argparse.Namespace) -> int:
    """The router: one process, or the configuration checked once and `--workers` forked."""
    # The command line outranks the environment, .env and upstreams.json.
    for name, value in (("HOST", args.host), ("PORT", args.port), ("LOG_LEVEL", args.log_level)):
        if value is not None:
            os.environ[name] = str(value)
    level = os.environ.get("LOG_LEVEL", "info").lower()
    level = LOG_LEVEL_ALIASES.get(level, level)
    install_log_handler(level if level in LOG_LEVELS else "info")  # a bad one is reported
    workers = args.workers or os.cpu_count() or 1
    if workers == 1:
        return run_one(args, workers)
    settings = check_config(args)
    if isinstance(settings, int):
        return settings
    if not args.mode:
        # HOST and PORT as the workers will read them (the environment, .env, …); the port
        # is written back only when it was 0, so that every worker binds the same one.
        host, port = settings.host, settings.port
        try:
            claimed = claim_port(host, port)
        except OSError as exc:
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            log.error("cannot listen on %s:%s: %s", host, port, reason)
            return 1
        if claimed != port:
            os.environ["PORT"] = str(claimed)
    create_ca_once(args)
    return supervise(args, workers)
