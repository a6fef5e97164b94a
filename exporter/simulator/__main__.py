"""`bsg-simulator`: serve the demo profile until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from .clock import Clock, RealClock, ScaledClock
from .engine import DEMO_API_KEY, Simulator
from .reports import DELIVERED_SORTS, check_reportless
from .server import SimulatorServer
from .traffic import SCENARIOS, demo_profile

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration(text: str) -> float:
    """Parse '90', '90s', '30m', '1h', '2d' or '1h30m' into seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip().lower())
    if not parts or "".join(n + u for n, u in parts) != text.strip().lower():
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 90s, 30m, 1h)")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def listen_address(text: str) -> tuple[str, int]:
    """Parse HOST:PORT (IPv6 hosts in brackets)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def final_statuses(text: str) -> frozenset[str]:
    """Parse a comma-separated list of final statuses ('' for none)."""
    try:
        return check_reportless(s.strip() for s in text.split(",") if s.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    p = argparse.ArgumentParser(prog="bsg-simulator", description=__doc__)
    p.add_argument(
        "--listen",
        type=listen_address,
        default=("127.0.0.1", 9747),
        metavar="HOST:PORT",
        help="address to serve on (default 127.0.0.1:9747)",
    )
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument(
        "--rate",
        type=float,
        default=2.0,
        help="total messages per second across the demo campaigns (default 2.0)",
    )
    p.add_argument(
        "--speed", type=float, default=1.0, help="simulated seconds per real second (default 1.0)"
    )
    p.add_argument(
        "--backfill",
        type=duration,
        default=3600.0,
        help="history generated before start, e.g. 1h (default 1h)",
    )
    p.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help=f"accepted API key, repeatable (default {DEMO_API_KEY})",
    )
    p.add_argument(
        "--retention",
        type=duration,
        default=86400.0,
        help="forget messages older than this, e.g. 1d (default 1d)",
    )
    p.add_argument("--tz", default="UTC", help="zone of the API's timestamps (default UTC)")
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="steady")
    p.add_argument(
        "--delivered-sort",
        choices=DELIVERED_SORTS,
        default="mysql",
        help="how sort=delivered is served: mysql (NULLs first ascending, last descending), "
        "ignored (id order), nulls_first (NULLs first both ways), no_direction (always "
        "ascending); default mysql",
    )
    p.add_argument(
        "--reportless",
        type=final_statuses,
        default=frozenset(),
        metavar="STATUS,...",
        help="final statuses served with delivered_at null, e.g. expired,unknown (default none)",
    )
    p.add_argument("--access-log", action="store_true", help="log every request to stderr")
    return p


def make_server(args: argparse.Namespace) -> SimulatorServer:
    """Build (not start) the server the arguments describe."""
    clock: Clock = RealClock() if args.speed == 1.0 else ScaledClock(speed=args.speed)
    profile = demo_profile(rate=args.rate, backfill=args.backfill)
    sim = Simulator(
        profile,
        clock=clock,
        seed=args.seed,
        api_keys=args.api_keys or (DEMO_API_KEY,),
        tz=args.tz,
        retention=args.retention,
        delivered_sort=args.delivered_sort,
        reportless=args.reportless,
    )
    sim.set_scenario(args.scenario)  # also generates the backfilled history
    host, port = args.listen
    return SimulatorServer(sim, host, port, access_log=args.access_log)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator until SIGINT or SIGTERM; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        server = make_server(args)
    except (OSError, ValueError) as exc:
        print(f"bsg-simulator: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with server:
        keys = ",".join(sorted(server.sim.api_keys))
        print(f"bsg-simulator serving {server.url} api_key={keys}", flush=True)
        while not stop.wait(0.5):  # short waits keep signal handling responsive
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
