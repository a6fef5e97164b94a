"""HTTP/1.1 transport for the simulator: threaded, keep-alive, fault-aware, stoppable."""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote

import msgspec

from .api import dispatch
from .clock import RealClock
from .engine import Simulator
from .replies import Reply, Request
from .traffic import demo_profile


class _Server(ThreadingHTTPServer):
    """A threaded server that can drop its open keep-alive connections on stop."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sim: Simulator, access_log: bool) -> None:
        super().__init__(address, _Handler)
        self.sim = sim
        self.access_log = access_log
        self.stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Remember the connection so that stop() can close it."""
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget a finished connection."""
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut every open connection, waking handler threads blocked on idle clients."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):  # already closed by its handler
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about clients that vanish; report real bugs."""
        if self.stopping.is_set() or isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Reads a request, lets api.dispatch answer it, writes (or sabotages) the reply."""

    protocol_version = "HTTP/1.1"
    server_version = "bsg-simulator"
    # headers and body go out in two writes: without this, Nagle + delayed ACK cost 40 ms
    disable_nagle_algorithm = True
    timeout = 300.0  # idle keep-alive connections are dropped after five minutes
    server: _Server

    def version_string(self) -> str:
        """The Server header, without the Python version."""
        return self.server_version

    def do_GET(self) -> None:
        """Serve GET."""
        self._serve()

    def do_POST(self) -> None:
        """Serve POST."""
        self._serve()

    def do_DELETE(self) -> None:
        """Serve DELETE."""
        self._serve()

    def do_PUT(self) -> None:
        """Serve PUT (always 405, but in JSON)."""
        self._serve()

    def do_PATCH(self) -> None:
        """Serve PATCH (always 405, but in JSON)."""
        self._serve()

    def _serve(self) -> None:
        """Answer one request."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        path, _, query = self.path.partition("?")
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = dispatch(
            self.server.sim, Request(self.command, unquote(path), query, headers, body)
        )
        if reply.delay > 0 and self.server.stopping.wait(reply.delay):
            self.close_connection = True  # stopping: drop the slow request unanswered
            return
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        """Write the reply, or half of it and a TCP reset when the reply says so."""
        if reply.drip is not None:
            self._drip(reply, *reply.drip)
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Cache-Control", "no-cache, private")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if reply.reset:
            self._reset(reply.body[: len(reply.body) // 2])
        elif self.command != "HEAD":
            self.wfile.write(reply.body)

    def _drip(self, reply: Reply, interval: float, part: str) -> None:
        """Send the head, the body or both a byte every ``interval`` seconds (a slow server)."""
        self.log_request(reply.status)
        head = self._head(reply)
        body = b"" if self.command == "HEAD" else reply.body
        if part in ("headers", "both"):
            self._trickle(head, interval)
        else:
            self.wfile.write(head)
        if part in ("body", "both"):
            self._trickle(body, interval)
        elif not self.close_connection:
            self.wfile.write(body)

    def _trickle(self, data: bytes, interval: float) -> None:
        """Write ``data`` a byte at a time; give up (closing) when the server stops."""
        for index in range(len(data)):
            if self.close_connection or self.server.stopping.wait(interval):
                self.close_connection = True
                return
            self.wfile.write(data[index : index + 1])

    def _head(self, reply: Reply) -> bytes:
        """The status line and headers of a reply, as ``_send`` writes them."""
        phrase = self.responses.get(reply.status, ("",))[0]
        lines = [
            f"{self.protocol_version} {reply.status} {phrase}",
            f"Server: {self.version_string()}",
            f"Date: {self.date_time_string()}",
            "Content-Type: application/json",
            f"Content-Length: {len(reply.body)}",
            "Cache-Control: no-cache, private",
            *(f"{name}: {value}" for name, value in reply.headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _reset(self, partial: bytes) -> None:
        """Send part of the body, then abort the connection with an RST."""
        self.wfile.write(partial)
        self.server.stopping.wait(0.05)  # let the client start reading first
        self.close_connection = True
        # SO_LINGER 0 makes close() send RST instead of a clean FIN
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # the makefile reference would otherwise keep the socket open
        self.connection.close()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level errors (bad request line...) in JSON too."""
        body = msgspec.json.encode({"message": message or HTTPStatus(code).phrase})
        self.send_response(code, message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and code >= 200:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Access log on stderr, only when asked for."""
        if self.server.access_log:
            super().log_message(format, *args)


class SimulatorServer:
    """Serves a Simulator over HTTP in a daemon thread; also a context manager."""

    def __init__(
        self, sim: Simulator, host: str = "127.0.0.1", port: int = 0, *, access_log: bool = False
    ) -> None:
        self.sim = sim
        self._httpd = _Server((host, port), sim, access_log)  # bound now: port is known
        self._thread: threading.Thread | None = None
        self._stopped = False

    @property
    def host(self) -> str:
        """The bound address."""
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:9747."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> SimulatorServer:
        """Start serving in a daemon thread; return self."""
        if self._stopped:
            raise RuntimeError("a stopped SimulatorServer cannot be restarted")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"bsg-simulator:{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listening socket and open connections; join the thread."""
        if self._stopped:
            return
        self._stopped = True
        self._httpd.stopping.set()  # wakes slow-fault waits
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()
        self._httpd.close_connections()

    def __enter__(self) -> SimulatorServer:
        """Start (if needed) and return self."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop."""
        self.stop()


def start_demo(host: str = "127.0.0.1", port: int = 0, seed: int = 1) -> SimulatorServer:
    """A started server on the real clock, with the demo profile and an hour of history."""
    sim = Simulator(demo_profile(), clock=RealClock(), seed=seed, retention=86400.0)
    sim.now()  # generate the backfilled history before the first client arrives
    return SimulatorServer(sim, host, port).start()
