"""The web side under load over loopback: bursts of scrapes, slow clients, caps and timeouts."""

from __future__ import annotations

import http.client
import socket
import socketserver
import ssl
import statistics
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing, suppress
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from exporter.config.schema import MetricsConfig, TargetConfig
from exporter.config.webconfig import parse_web_config
from exporter.serving.collector import BsgCollector
from exporter.serving.server import WebServer
from exporter.stats import ExporterState, TargetStatus
from exporter.tracking.store import MEMORY, StateStore
from exporter.tracking.tracker import TargetTracker
from tests.test_webconfig import (
    TLS,
    Pki,
    pki,  # noqa: F401 - the certificates fixture, shared
    trusting,
)

SCRAPES = 200
SLOW_CLIENTS = 100


def one_target_state() -> ExporterState:
    """A one-target state that has not polled yet."""
    tracker = TargetTracker(
        StateStore(MEMORY), TargetConfig("otp", 60, None), metrics=MetricsConfig((1.0,), (1.0,))
    )
    return ExporterState(
        targets={"otp": TargetStatus(snapshot=tracker.snapshot(0))}, version="9", test_key=False
    )


def started(collector: Collector | None = None, **kw: Any) -> WebServer:
    """A started web server over the one-target state (and ``collector``, if given)."""
    state = one_target_state()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector or BsgCollector(state))
    web = WebServer("127.0.0.1:0", registry, state, **kw)
    web.start()
    return web


@pytest.fixture
def servers() -> Iterator[list[WebServer]]:
    """Web servers a test starts (append them), stopped at its end."""
    running: list[WebServer] = []
    yield running
    for web in running:
        web.stop()


def scrape(port: int, start: threading.Barrier | None = None) -> tuple[int, float]:
    """GET /metrics on a fresh connection: the status and the seconds from connect to last byte."""
    if start is not None:
        start.wait()
    began = time.perf_counter()
    with closing(http.client.HTTPConnection("127.0.0.1", port, timeout=30)) as conn:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        response.read()
    return response.status, time.perf_counter() - began


def closed_at(sock: socket.socket | ssl.SSLSocket, wait: float = 5) -> float:
    """When (time.monotonic) the server closed ``sock``, reading what it sent; inf if not."""
    sock.settimeout(wait)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return float("inf")
    except OSError:  # a reset is a close too
        pass
    return time.monotonic()


def connections(port: int, count: int, stack: ExitStack) -> list[socket.socket]:
    """``count`` open connections that send nothing."""
    return [
        stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
        for _ in range(count)
    ]


def dribble(socks: Iterable[socket.socket], stop: threading.Event, every: float = 0.1) -> None:
    """Send a GET's head one byte at a time on each connection, a byte every ``every`` s."""
    head = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 1000
    position = 0
    while not stop.wait(every):
        for sock in socks:
            with suppress(OSError):  # closed by the server: what the test waits for
                sock.send(head[position : position + 1])
        position = (position + 1) % len(head)


def held_collector() -> tuple[Collector, threading.Semaphore, threading.Event]:
    """A collector whose every collect waits (10 s at most) for the event; the semaphore is
    released as each collect begins."""
    inside, release = threading.Semaphore(0), threading.Event()

    class Held(Collector):
        """A collector that takes until the test releases it."""

        def collect(self) -> Iterator[Any]:
            inside.release()
            release.wait(10)
            return iter(())

    return Held(), inside, release


def test_200_simultaneous_fresh_connection_scrapes(servers: list[WebServer]) -> None:
    web = started()
    servers.append(web)
    start = threading.Barrier(SCRAPES)
    with ThreadPoolExecutor(SCRAPES) as pool:
        results = list(pool.map(lambda _: scrape(web.port, start), range(SCRAPES)))
    assert [status for status, _ in results] == [200] * SCRAPES
    latencies = sorted(seconds for _, seconds in results)
    p50, p99 = statistics.median(latencies), latencies[int(0.99 * SCRAPES) - 1]
    print(f"{SCRAPES} simultaneous scrapes: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    assert p99 < 1.0


def test_slow_clients_holding_100_connections_leave_scrapes_prompt(
    servers: list[WebServer],
) -> None:
    web = started()  # the default timeouts, far longer than the test
    servers.append(web)
    stop = threading.Event()
    with ExitStack() as stack:
        began = time.monotonic()
        idle = connections(web.port, SLOW_CLIENTS // 2, stack)
        dribbling = connections(web.port, SLOW_CLIENTS - len(idle), stack)
        opened = time.monotonic() - began  # a backlog of 5 made this SYN retries: 12 s
        dribbler = threading.Thread(target=dribble, args=(dribbling, stop))
        dribbler.start()
        try:
            time.sleep(0.5)  # every slow connection accepted and under way
            results = [scrape(web.port) for _ in range(20)]
        finally:
            stop.set()
            dribbler.join()
    assert [status for status, _ in results] == [200] * 20
    worst = max(seconds for _, seconds in results)
    print(f"{SLOW_CLIENTS} slow connections opened in {opened:.2f} s; beside them, 20 scrapes:")
    print(f"worst {worst * 1000:.1f} ms")
    assert opened < 1.0 and worst < 0.5


def test_idle_and_slow_connections_are_closed_at_their_timeouts(servers: list[WebServer]) -> None:
    web = started(header_timeout=1.0, idle_timeout=2.0)
    servers.append(web)
    stop = threading.Event()
    with ExitStack() as stack, ThreadPoolExecutor(30) as pool:
        opened = time.monotonic()
        silent = connections(web.port, 10, stack)  # never send a request: the header timeout
        dribbling = connections(web.port, 10, stack)  # a byte every 0.1 s: still the header one
        threading.Thread(target=dribble, args=(dribbling, stop), daemon=True).start()
        heads = [pool.submit(closed_at, sock) for sock in silent + dribbling]
        kept_alive = connections(web.port, 10, stack)  # one request, then idle: the idle timeout
        for sock in kept_alive:
            sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
        answered = time.monotonic()
        idle = [pool.submit(closed_at, sock) for sock in kept_alive]
        head_waits = [future.result() - opened for future in heads]
        idle_waits = [future.result() - answered for future in idle]
        stop.set()
    print(f"closed after: head {max(head_waits):.2f} s (1 s), idle {max(idle_waits):.2f} s (2 s)")
    assert all(0.9 < wait < 2.0 for wait in head_waits), head_waits
    assert all(1.9 < wait < 3.0 for wait in idle_waits), idle_waits


def test_requests_beyond_max_requests_get_503(servers: list[WebServer]) -> None:
    slow_collector, inside, release = held_collector()
    web = started(slow_collector, max_requests=3)
    servers.append(web)
    with ThreadPoolExecutor(3) as pool:
        slow = [pool.submit(scrape, web.port) for _ in range(3)]
        for _ in range(3):
            assert inside.acquire(timeout=5)
        extra = [scrape(web.port) for _ in range(3)]
        health = httpx.get(f"http://127.0.0.1:{web.port}/-/healthy", timeout=5)
        release.set()
        served = [future.result(timeout=10) for future in slow]
    assert [status for status, _ in extra] == [503] * 3
    assert all(seconds < 0.5 for _, seconds in extra)
    assert health.status_code == 200  # probes need no slot
    assert [status for status, _ in served] == [200] * 3
    assert scrape(web.port)[0] == 200  # the slots came back


def test_no_request_limit_with_max_requests_0(servers: list[WebServer]) -> None:
    slow_collector, inside, release = held_collector()
    web = started(slow_collector, max_requests=0)
    servers.append(web)
    with ThreadPoolExecutor(60) as pool:
        slow = [pool.submit(scrape, web.port) for _ in range(60)]
        entered = sum(inside.acquire(timeout=5) for _ in range(60))
        release.set()
        statuses = [future.result(timeout=10)[0] for future in slow]
    assert entered == 60 and statuses == [200] * 60


def test_connections_beyond_the_cap_are_turned_away_without_a_thread(
    servers: list[WebServer],
) -> None:
    web = started(max_connections=5, header_timeout=30)
    servers.append(web)
    with ExitStack() as stack:
        connections(web.port, 5, stack)
        time.sleep(0.3)  # the five are accepted, a thread each
        threads = threading.active_count()
        turned_away = connections(web.port, 20, stack)
        answers = []
        for sock in turned_away:
            sock.settimeout(2)
            try:
                answers.append(sock.recv(65536))
            except ConnectionResetError:
                answers.append(b"reset")
        assert threading.active_count() <= threads
    assert all(a.startswith(b"HTTP/1.1 503 ") or a in (b"", b"reset") for a in answers), answers
    assert any(a.startswith(b"HTTP/1.1 503 ") for a in answers)
    time.sleep(0.3)  # the five closed by the client: their places come back
    assert scrape(web.port)[0] == 200


def test_tls_connections_have_the_same_timeouts(
    request: pytest.FixtureRequest, servers: list[WebServer]
) -> None:
    certificates: Pki = request.getfixturevalue("pki")
    config = parse_web_config(TLS, source="web.yml", base_dir=str(certificates.dir))
    web = started(web_config=config, header_timeout=1.0, idle_timeout=2.0)
    servers.append(web)
    context = trusting(certificates)
    with ExitStack() as stack, ThreadPoolExecutor(4) as pool:
        tls = [
            stack.enter_context(context.wrap_socket(sock, server_hostname="127.0.0.1"))
            for sock in connections(web.port, 4, stack)
        ]
        handshaken = time.monotonic()
        silent, partial, kept_alive = tls[0], tls[1], tls[2:]
        partial.sendall(b"GET /metrics HTTP/1.1\r\n")  # a head begun, never finished
        heads = [pool.submit(closed_at, sock) for sock in (silent, partial)]
        for sock in kept_alive:
            sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
        answered = time.monotonic()
        idle = [pool.submit(closed_at, sock) for sock in kept_alive]
        head_waits = [future.result() - handshaken for future in heads]
        idle_waits = [future.result() - answered for future in idle]
    assert all(0.7 < wait < 2.0 for wait in head_waits), head_waits
    assert all(1.9 < wait < 3.0 for wait in idle_waits), idle_waits


def test_a_connection_without_a_thread_to_serve_it_gets_503(
    servers: list[WebServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    web = started(max_connections=1)
    servers.append(web)

    def no_thread(*args: Any) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(socketserver.ThreadingMixIn, "process_request", no_thread)
    with socket.create_connection(("127.0.0.1", web.port), timeout=5) as sock:
        assert sock.recv(65536).startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    monkeypatch.undo()
    assert scrape(web.port)[0] == 200  # its place came back
