"""The command line: parses flags, wires the parts together, and runs until a signal.

Owns the flags (named like the official Prometheus exporters), exit statuses (0 ok, 1 runtime
failure, 2 bad configuration or usage) and the start-up and shutdown order. Nothing else.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING

import structlog

from exporter import __version__
from exporter.app import App, build_app
from exporter.config.schema import ApiConfig, Config, ConfigError, load_config
from exporter.config.webconfig import load_web_config
from exporter.defaults import DEFAULT_LISTEN_ADDRESS, DEFAULT_MAX_REQUESTS, DEFAULT_TELEMETRY_PATH
from exporter.logs import FORMATS, LEVELS, configure_logging
from exporter.runtime import tune_process
from exporter.serving.activation import ACTIVATION_VARIABLES, passed_sockets
from exporter.serving.server import WebServer, WebSettings, parse_listen_address, web_settings
from exporter.tracking.store import MEMORY, StateAccessError, StateError, set_aside

if TYPE_CHECKING:
    from exporter.simulator import SimulatorServer

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
TEST_KEY_WARNING = "is a test_ key: the API answers it with random data, numbers mean nothing"
SHUTDOWN_GRACE = 4.0
"""Seconds the poll in flight gets to notice the stop before the process exits anyway."""
WEB_STOP_GRACE = 2.0
"""Seconds the web server gets to close its socket before the process exits anyway."""
SUPERVISE_EVERY = 0.5
"""Seconds between two looks at signals, reloads and the poll loop's health: short waits keep
the main thread responsive to signals."""
UNHEALTHY_LINGER = 5.0
"""Seconds /-/healthy answers 503 with the reason before the process exits: a probe, or a
person, sees why it is about to be restarted."""

log = structlog.get_logger("exporter")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="bsg-exporter",
        description="Prometheus exporter for SMS delivery health on the BSG One API.",
    )
    parser.add_argument(
        "--config.file",
        dest="config_file",
        metavar="PATH",
        help="YAML configuration file (default: config.yaml; none with --demo)",
    )
    parser.add_argument(
        "--web.listen-address",
        dest="listen_addresses",
        action="append",
        type=_listen_address,
        metavar="ADDR",
        help=f"address to listen on; repeatable (default: {DEFAULT_LISTEN_ADDRESS})",
    )
    parser.add_argument(
        "--web.systemd-socket",
        dest="systemd_socket",
        action="store_true",
        help="listen on the sockets systemd passes (socket activation) instead of the addresses",
    )
    parser.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        default=DEFAULT_TELEMETRY_PATH,
        metavar="PATH",
        help="path of the metrics (default: %(default)s)",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="PATH",
        help="TLS, basic auth and headers, in the exporter-toolkit format (default: none)",
    )
    parser.add_argument(
        "--web.max-requests",
        dest="max_requests",
        type=int,
        default=DEFAULT_MAX_REQUESTS,
        metavar="N",
        help="requests served at once, 503 beyond; 0 means no limit (default: %(default)s)",
    )
    parser.add_argument(
        "--web.enable-lifecycle",
        dest="enable_lifecycle",
        action="store_true",
        help="allow POST /-/reload to re-read the configuration (default: off, 403)",
    )
    parser.add_argument(
        "--web.disable-exporter-metrics",
        dest="disable_exporter_metrics",
        action="store_true",
        help="leave out the metrics about the exporter process itself (process_*, python_*)",
    )
    parser.add_argument(
        "--log.level",
        dest="log_level",
        choices=LEVELS,
        default="info",
        help="minimum level logged (default: %(default)s)",
    )
    parser.add_argument(
        "--log.format",
        dest="log_format",
        choices=FORMATS,
        default=None,
        help="log format (default: console on a terminal, json otherwise)",
    )
    parser.add_argument(
        "--state.path",
        dest="state_path",
        metavar="PATH",
        help="SQLite state file; :memory: keeps no state (default: state.path of the config)",
    )
    parser.add_argument(
        "--state.reset",
        dest="state_reset",
        action="store_true",
        help="rename an unreadable state file aside and start cold (never deletes it)",
    )
    parser.add_argument(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="validate the configuration and exit (0 valid, 2 invalid)",
    )
    parser.add_argument(
        "--demo", action="store_true", help="run against a built-in simulator of the BSG API"
    )
    parser.add_argument("--version", action="version", version=f"bsg-exporter {__version__}")
    args = parser.parse_args(argv)
    args.listen_addresses = args.listen_addresses or [DEFAULT_LISTEN_ADDRESS]
    if not args.telemetry_path.startswith("/") or args.telemetry_path in ("/", "/-/healthy"):
        parser.error(f"--web.telemetry-path must be a path of its own, got {args.telemetry_path!r}")
    if args.max_requests < 0:
        parser.error(f"--web.max-requests must be 0 (no limit) or more, got {args.max_requests}")
    return args


def _listen_address(text: str) -> str:
    """``--web.listen-address``: checked while parsing, so that a bad one exits 2 like any
    bad flag (one that parses but cannot be bound fails at start, with 1)."""
    try:
        parse_listen_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the exporter; returns the process exit status."""
    args = parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    tune_process()
    simulator = None
    demo_api = None
    web_error = _load_web_config(args)  # reported with the main config's: every problem at once
    try:
        if args.demo:
            simulator, demo_api = _start_demo()
        config = _load(args, demo_api)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        if web_error is not None:
            print(str(web_error), file=sys.stderr)
        if simulator is not None:
            simulator.stop()
        return EXIT_USAGE
    if web_error is not None:
        print(str(web_error), file=sys.stderr)
        if simulator is not None:
            simulator.stop()
        return EXIT_USAGE
    if args.config_check:
        print(f"{args.config_file or 'demo config'}: OK ({len(config.targets)} targets)")
        if args.web_config_file:
            print(f"{args.web_config_file}: OK")
        if config.api.key.is_test_key:
            print(f"warning: api.key {TEST_KEY_WARNING}", file=sys.stderr)
        return EXIT_OK
    try:
        return _serve(config, args, lambda: _load(args, demo_api))
    finally:
        if simulator is not None:
            simulator.stop()


def _load(args: argparse.Namespace, demo_api: ApiConfig | None) -> Config:
    """Load the configuration (at start and at each reload)."""
    if demo_api is None:
        return load_config(args.config_file or "config.yaml")
    from exporter.config.schema import demo_config  # noqa: PLC0415 - only demo mode needs it

    if args.config_file is None:
        return demo_config(demo_api.url, demo_api.key.reveal())
    # A config given with --demo keeps its targets but talks to the simulator, which ignores
    # the key: a config that reads it from $BSG_API_KEY needs none set.
    environ = {"BSG_API_KEY": demo_api.key.reveal(), **os.environ}
    return dataclasses.replace(load_config(args.config_file, environ), api=demo_api)


def _load_web_config(args: argparse.Namespace) -> ConfigError | None:
    """Load --web.config.file into ``args.web_config`` (None without the flag); return its error."""
    args.web_config = None
    if args.web_config_file:
        try:
            args.web_config = load_web_config(args.web_config_file)
        except ConfigError as exc:
            return exc
    return None


def _start_demo() -> tuple[SimulatorServer, ApiConfig]:
    """Start the in-process simulator; return it and the API settings that reach it."""
    from exporter.config.schema import demo_config  # noqa: PLC0415 - only demo mode needs these
    from exporter.simulator import DEMO_API_KEY, start_demo  # noqa: PLC0415

    server = start_demo()
    log.info("demo_simulator_started", url=server.url)
    return server, demo_config(server.url, DEMO_API_KEY).api


def _serve(config: Config, args: argparse.Namespace, load: Callable[[], Config]) -> int:
    """Wire the parts, serve until SIGTERM or SIGINT, and shut down in order."""
    stop = threading.Event()
    reload_requested = threading.Event()
    try:
        app = _build(config, stop, args)
    except StateError as exc:
        log.error("state_unusable", error=str(exc))
        return EXIT_FAILURE
    reload = _Reload(app, args, load)
    try:
        web = WebServer(
            _listeners(args),
            app.registry,
            app.state,
            telemetry_path=args.telemetry_path,
            web_config=args.web_config,
            max_requests=args.max_requests,
            reload=reload if args.enable_lifecycle else None,
        )
    except (OSError, ValueError) as exc:
        where = "systemd sockets" if args.systemd_socket else args.listen_addresses
        log.error("listen_failed", address=where, error=str(exc))
        return EXIT_FAILURE
    reload.web = web
    _warn_about_the_key(config)
    _install_signal_handlers(stop, reload_requested)
    web.start()
    poll_thread = threading.Thread(target=_run_poll_loop, args=(app,), name="poller", daemon=True)
    poll_thread.start()
    log.info(
        "exporter_started",
        version=__version__,
        listen_address=web.addresses,
        targets=[t.name for t in config.targets],
        interval_s=config.poll.interval,
    )
    status = _supervise(app, poll_thread, stop, reload_requested, reload)
    log.info("exporter_stopping")
    _within(WEB_STOP_GRACE, web.stop, "web-stop")
    poll_thread.join(timeout=SHUTDOWN_GRACE)
    clean = not poll_thread.is_alive()
    if clean:  # a poll still running owns the store: leave it to die with the process
        app.close()
    log.info("exporter_stopped", clean=clean)
    return status


def _listeners(args: argparse.Namespace) -> list[str | socket.socket]:
    """The addresses to bind, or the sockets systemd passed (raises ActivationError)."""
    if not args.systemd_socket:
        return list(args.listen_addresses)
    sockets: list[str | socket.socket] = list(passed_sockets(os.environ, os.getpid()))
    for name in ACTIVATION_VARIABLES:  # a child process must not take them for its own
        os.environ.pop(name, None)
    return sockets


class _Reload:
    """One reload, from SIGHUP or /-/reload: the configuration and the web configuration.

    Both files are read before either is applied; when one is bad, both running ones are kept
    and every problem of both is reported at once.
    """

    def __init__(self, app: App, args: argparse.Namespace, load: Callable[[], Config]) -> None:
        self._app = app
        self._args = args
        self._load = load
        self.web: WebServer | None = None
        self._lock = threading.Lock()  # a SIGHUP and a /-/reload at once: one after the other

    def __call__(self) -> str | None:
        """Reload; returns the problems, or None when it was applied."""
        with self._lock:
            settings: list[WebSettings] = []
            error = self._app.reload_with(lambda: self._read(settings))
            if error is None and settings and self.web is not None:
                self.web.reconfigure(settings[0])
                log.info("web_config_reloaded", path=self._args.web_config_file)
            return error

    def _read(self, settings: list[WebSettings]) -> Config:
        """Read both files; the web settings go to ``settings``. Raises ConfigError."""
        web_error = None
        if self._args.web_config_file:
            try:
                settings.append(web_settings(load_web_config(self._args.web_config_file)))
            except ConfigError as exc:
                web_error = exc
        try:
            config = self._load()
        except ConfigError as exc:
            raise exc if web_error is None else _both(exc, web_error) from None
        if web_error is not None:
            raise web_error
        return config


def _both(first: ConfigError, second: ConfigError) -> ConfigError:
    """One error holding the problems of two files, each named."""
    errors = [f"{e.source}: {line}" for e in (first, second) for line in e.errors]
    return ConfigError(f"{first.source} and {second.source}", errors)


def _run_poll_loop(app: App) -> None:
    """The poll thread: whatever ends it other than the stop is the loop's death, said loudly."""
    try:
        app.poller.run()
    except BaseException as exc:  # the thread must not die with only a traceback on stderr
        log.critical("poll_loop_died", error=repr(exc), exc_info=True)
        app.state.liveness.fail(f"poll loop died: {type(exc).__name__}")


def _supervise(
    app: App,
    poll_thread: threading.Thread,
    stop: threading.Event,
    reload_requested: threading.Event,
    reload: Callable[[], str | None],
) -> int:
    """Wait for the stop, run reloads, and watch the poll loop; returns the exit status.

    A dead or stuck loop ends the process (status 1) so that its supervisor restarts it:
    serving numbers that no longer change, with every check saying fine, is the worst outcome.
    """
    reloader: threading.Thread | None = None
    while not stop.wait(SUPERVISE_EVERY):
        if reload_requested.is_set() and (reloader is None or not reloader.is_alive()):
            # In a thread of its own: a reload waits for the target poll in flight, and the
            # main thread must stay free to act on SIGTERM meanwhile.
            reload_requested.clear()
            reloader = threading.Thread(target=reload, name="reload", daemon=True)
            reloader.start()
        if not poll_thread.is_alive() and not stop.is_set():
            app.state.liveness.fail("poll loop ended")
        healthy, reason = app.state.healthy()
        if not healthy:
            log.error("exporter_unhealthy", reason=reason, action="exiting to be restarted")
            stop.wait(UNHEALTHY_LINGER)
            stop.set()
            return EXIT_FAILURE
    return EXIT_OK


def _within(seconds: float, action: Callable[[], None], name: str) -> None:
    """Run ``action`` in a thread and wait for it at most ``seconds``: shutdown never hangs."""
    thread = threading.Thread(target=action, name=name, daemon=True)
    thread.start()
    thread.join(timeout=seconds)
    if thread.is_alive():
        log.warning("shutdown_step_timed_out", step=name, waited_s=seconds)


def _build(config: Config, stop: threading.Event, args: argparse.Namespace) -> App:
    """Build the app; with --state.reset, an unusable state file is set aside first."""
    path = args.state_path or config.state.path
    process_metrics = not args.disable_exporter_metrics
    try:
        return build_app(config, stop=stop, state_path=path, process_metrics=process_metrics)
    except StateAccessError:
        raise  # a directory that cannot be written: renaming the file aside cannot fix it
    except StateError:
        if not args.state_reset or path == MEMORY:
            raise
    aside = set_aside(path)
    log.warning("state_reset", path=path, moved_to=aside)
    return build_app(config, stop=stop, state_path=path, process_metrics=process_metrics)


def _warn_about_the_key(config: Config) -> None:
    """Say loudly when the key makes the numbers meaningless or sits in the config file."""
    if config.api.key.is_test_key:
        log.warning("test_key", message=f"the API key {TEST_KEY_WARNING}")
    if config.api.key_source == "inline":
        log.warning(
            "api_key_inline",
            message="the API key is written in the config file; use ${BSG_API_KEY} or key_file",
        )


def _install_signal_handlers(stop: threading.Event, reload_requested: threading.Event) -> None:
    """SIGTERM and SIGINT set the stop event, SIGHUP asks for a reload; the main thread acts."""

    def handle(signum: int, frame: FrameType | None) -> None:
        log.info("signal_received", signal=signal.Signals(signum).name)
        (reload_requested if signum == signal.SIGHUP else stop).set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, handle)


if __name__ == "__main__":
    sys.exit(main())
