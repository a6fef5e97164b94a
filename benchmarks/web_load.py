"""Web load benchmark: the demo exporter under bursts of scrapes, slow clients and bad requests.

Run: ``.venv/bin/python benchmarks/web_load.py`` (``--checkout DIR`` measures another checkout
of the exporter, with this venv). It starts ``python -m exporter --demo`` from the checkout on a
free loopback port, waits until it is ready, then measures over loopback:

* **burst**: ``--scrapes`` threads released at once, each scraping ``/metrics`` on a fresh
  connection as Prometheus asks (OpenMetrics, gzip); errors and p50/p99/max from connect to
  last byte.
* **slow clients**: ``--slow`` connections held open (half silent, half sending a request head
  a byte every 0.1 s), then 20 scrapes one after the other beside them; errors and the worst.
* **idle**: ``--idle`` connections that never send anything; the exporter's thread count while
  they are open and again ``--idle-wait`` s later (the header timeout is 10 s).
* **bad requests**: a ``Content-Length: abc`` and a POST announcing 500 MiB of body; what came
  back, and how long it took.

Every number printed is measured in the run; the exporter's own logs are discarded.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing, contextmanager, suppress
from pathlib import Path

ACCEPT_PROMETHEUS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


def free_port() -> int:
    """A loopback port nobody listens on (bind to 0, read it, close)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def exporter(checkout: Path, port: int) -> Iterator[int]:
    """The demo exporter of ``checkout`` listening on ``port``; yields its pid once ready."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    command = [sys.executable, "-m", "exporter", "--demo", f"--web.listen-address=127.0.0.1:{port}"]
    process = subprocess.Popen(
        command, cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with suppress(OSError, http.client.HTTPException):
                if get(port, "/-/ready") == 200:
                    break
            time.sleep(0.2)
        else:
            raise SystemExit("the exporter did not get ready within 60 s")
        yield process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def get(port: int, path: str) -> int:
    """The status of one GET on a fresh connection."""
    with closing(http.client.HTTPConnection("127.0.0.1", port, timeout=5)) as conn:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status


def scrape(port: int, start: threading.Barrier | None = None) -> tuple[str, float]:
    """Scrape on a fresh connection: the outcome (status or error) and seconds to the last byte."""
    if start is not None:
        start.wait()
    began = time.perf_counter()
    try:
        with closing(http.client.HTTPConnection("127.0.0.1", port, timeout=30)) as conn:
            headers = {"Accept": ACCEPT_PROMETHEUS, "Accept-Encoding": "gzip"}
            conn.request("GET", "/metrics", headers=headers)
            response = conn.getresponse()
            response.read()
            outcome = str(response.status)
    except (OSError, http.client.HTTPException) as exc:
        outcome = type(exc).__name__
    return outcome, time.perf_counter() - began


def summary(results: list[tuple[str, float]]) -> str:
    """Errors and latency percentiles of ``results``."""
    seconds = sorted(s for _, s in results)
    errors = sum(outcome != "200" for outcome, _ in results)
    p99 = seconds[max(0, int(0.99 * len(seconds)) - 1)]
    return (
        f"{errors} errors of {len(results)}, p50 {statistics.median(seconds) * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms, max {seconds[-1] * 1000:.1f} ms"
    )


def threads_of(pid: int) -> int:
    """The process's thread count, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise RuntimeError("no Threads line")


def burst(port: int, count: int) -> str:
    """``count`` scrapes released at once, each on its own connection."""
    start = threading.Barrier(count)
    with ThreadPoolExecutor(count) as pool:
        return summary(list(pool.map(lambda _: scrape(port, start), range(count))))


def dribble(socks: list[socket.socket], stop: threading.Event) -> None:
    """Send a request head a byte at a time on each connection, every 0.1 s."""
    head = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 1000
    position = 0
    while not stop.wait(0.1):
        for sock in socks:
            with suppress(OSError):
                sock.send(head[position : position + 1])
        position = (position + 1) % len(head)


def opened(port: int, count: int, stack: ExitStack) -> list[socket.socket]:
    """``count`` connections that have sent nothing."""
    return [
        stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=30))
        for _ in range(count)
    ]


def slow_clients(port: int, count: int) -> str:
    """20 scrapes beside ``count`` slow connections."""
    stop = threading.Event()
    with ExitStack() as stack:
        began = time.monotonic()
        silent = opened(port, count // 2, stack)
        dribbling = opened(port, count - len(silent), stack)
        opening = time.monotonic() - began
        thread = threading.Thread(target=dribble, args=(dribbling, stop))
        thread.start()
        try:
            time.sleep(0.5)
            results = [scrape(port) for _ in range(20)]
        finally:
            stop.set()
            thread.join()
    return f"opened in {opening:.2f} s; 20 scrapes beside them: {summary(results)}"


def idle(port: int, pid: int, count: int, wait: float) -> str:
    """The exporter's threads with ``count`` silent connections, at once and ``wait`` s later."""
    before = threads_of(pid)
    with ExitStack() as stack:
        began = time.monotonic()
        opened(port, count, stack)
        opening = time.monotonic() - began
        time.sleep(1)
        held = threads_of(pid)
        time.sleep(wait)
        later = threads_of(pid)
    return (
        f"opened in {opening:.2f} s; threads {before} before, {held} after 1 s, "
        f"{later} after {wait + 1:.0f} s"
    )


def raw(port: int, request: bytes, wait: float = 5) -> str:
    """Send ``request`` and describe the answer's first line, or how the connection ended."""
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(request)
        try:
            answer = sock.recv(65536)
        except TimeoutError:
            return f"no answer in {wait:.0f} s"
        except OSError as exc:
            return f"{type(exc).__name__} after {time.monotonic() - began:.2f} s"
    took = time.monotonic() - began
    if not answer:
        return f"connection closed without an answer after {took:.2f} s"
    first_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    return f"{first_line!r} after {took:.2f} s"


def bad_requests(port: int) -> list[str]:
    """What a malformed Content-Length and an announced 500 MiB POST get."""
    host = b"Host: 127.0.0.1\r\n"
    return [
        "POST /-/reload with Content-Length: abc -> "
        + raw(port, b"POST /-/reload HTTP/1.1\r\n" + host + b"Content-Length: abc\r\n\r\n"),
        "POST / announcing 500 MiB -> "
        + raw(port, b"POST / HTTP/1.1\r\n" + host + b"Content-Length: 524288000\r\n\r\n"),
    ]


def main() -> None:
    """Start the exporter, run each measurement, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--slow", type=int, default=100)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--idle-wait", type=float, default=12.0)
    args = parser.parse_args()
    port = free_port()
    with exporter(args.checkout.resolve(), port) as pid:
        print(f"exporter of {args.checkout} (pid {pid}) on 127.0.0.1:{port}")
        print(f"burst of {args.scrapes} fresh-connection scrapes: {burst(port, args.scrapes)}")
        print(f"{args.slow} slow connections {slow_clients(port, args.slow)}")
        print(f"{args.idle} idle connections {idle(port, pid, args.idle, args.idle_wait)}")
        for line in bad_requests(port):
            print(line)
        print(f"afterwards, one scrape: {summary([scrape(port)])}")


if __name__ == "__main__":
    main()
