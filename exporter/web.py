"""The HTTP side: /metrics, the landing page, and the health endpoints.

Owns the listening socket, routing, content negotiation (text or OpenMetrics, gzip); the
HTML status page is rendered by :mod:`exporter.landing`. It reads :class:`ExporterState` and
the registry; it never polls. With a :class:`~exporter.webconfig.WebConfig` it serves TLS,
requires basic auth (except on /-/healthy, for probes) and adds the configured headers.

Must not import: httpx, the client or the poller.
"""

from __future__ import annotations

import gzip
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import structlog
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from exporter.collector import BsgRegistry
from exporter.landing import render_landing
from exporter.stats import ExporterState
from exporter.webconfig import AUTH_CHALLENGE, BasicAuth, WebConfig

log = structlog.get_logger("exporter.web")

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a client gets to complete the TLS handshake before its connection is dropped."""
HEALTH_PATH = "/-/healthy"
SWITCH_INTERVAL = 0.001
"""Seconds a thread holds the GIL while another waits for it (Python's default is 0.005)."""


def serve_promptly() -> None:
    """Let the GIL change hands every :data:`SWITCH_INTERVAL` in this process.

    A scrape's thread gives the GIL up at each socket call and at compression; while a poll
    ran Python in the poller thread, it waited up to a whole interval to get it back each
    time: 28-44 ms at p99 with the default interval (benchmarks/scrape.py). A poll loses a
    few per cent to the extra hand-overs, far from the network's share of its time.
    """
    sys.setswitchinterval(SWITCH_INTERVAL)


def parse_listen_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (``:9746``, ``127.0.0.1:9746``, ``[::1]:9746``) into its parts."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid listen address {address!r}: expected host:port, e.g. :9746")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"invalid listen address {address!r}: put IPv6 hosts in brackets")
    return host, int(port_text)


class _Server(ThreadingHTTPServer):
    """A threading server that binds IPv6 and dual-stack addresses as well as IPv4."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        host: str,
        port: int,
        handler: type[BaseHTTPRequestHandler],
        tls: ssl.SSLContext | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        # An empty host means every address: dual-stack where the system has it.
        self.dual_stack = not host and socket.has_dualstack_ipv6()
        if self.dual_stack:
            host = "::"
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.handshake_timeout = handshake_timeout
        super().__init__((host, port), handler)
        if tls is not None:
            # accept() stays a plain accept: the handshake runs in the connection's own thread
            # (finish_request) under a deadline, so a client that never completes it costs
            # one thread for a while, never the accept loop.
            self.socket = tls.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Complete the TLS handshake, if any, then handle the connection."""
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(self.handshake_timeout)
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError) as exc:  # OSError includes the timeout
                log.debug("tls_handshake_failed", client=client_address[0], error=str(exc))
                return
            request.settimeout(None)  # as a plain connection: the handler sets no timeout
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that breaks its connection is routine; anything else gets a traceback."""
        if isinstance(sys.exc_info()[1], ssl.SSLError | ConnectionError):
            log.debug("connection_error", client=client_address[0], error=str(sys.exc_info()[1]))
            return
        super().handle_error(request, client_address)

    def server_bind(self) -> None:
        """Accept IPv4 on the IPv6 socket when listening on every address."""
        if self.dual_stack:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class WebServer:
    """Serves the exporter's endpoints in background threads."""

    def __init__(
        self,
        listen_address: str,
        registry: CollectorRegistry,
        state: ExporterState,
        *,
        telemetry_path: str = "/metrics",
        clock: Callable[[], float] = time.time,
        web_config: WebConfig | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        reload: Callable[[], str | None] | None = None,
    ) -> None:
        host, port = parse_listen_address(listen_address)
        app = _App(registry, state, telemetry_path, clock, reload)
        web_config = web_config or WebConfig()
        tls = web_config.tls.ssl_context() if web_config.tls is not None else None
        handler = _handler_for(app, web_config.authenticator(), web_config.headers)
        self._server = _Server(host, port, handler, tls, handshake_timeout)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="web", kwargs={"poll_interval": 0.2}
        )

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Start serving."""
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting requests and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _App:
    """Routing and rendering, apart from the socket handling."""

    def __init__(
        self,
        registry: CollectorRegistry,
        state: ExporterState,
        telemetry_path: str,
        clock: Callable[[], float],
        reload: Callable[[], str | None] | None = None,
    ) -> None:
        self.registry = registry
        self.state = state
        self.telemetry_path = telemetry_path
        self.clock = clock
        self.reload = reload
        self._last_gzip = (b"", gzip.compress(b""))  # the last body compressed, and its gzip

    def post(self, handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        """Answer a POST: only /-/reload takes one (like Prometheus' own)."""
        if urlsplit(handler.path).path != "/-/reload":
            return _text(HTTPStatus.METHOD_NOT_ALLOWED, "Method Not Allowed\n")
        if self.reload is None:
            return _text(HTTPStatus.NOT_FOUND, "Reload is not available\n")
        error = self.reload()
        if error is not None:
            return _text(HTTPStatus.INTERNAL_SERVER_ERROR, f"failed to reload config: {error}\n")
        return _text(HTTPStatus.OK, "Reloaded\n")

    def route(self, handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        """Answer one GET request."""
        path = urlsplit(handler.path).path
        if path == self.telemetry_path:
            return self.metrics(handler)
        if path == HEALTH_PATH:
            return _text(HTTPStatus.OK, "Healthy\n")
        if path == "/-/ready":
            if self.state.ready():
                return _text(HTTPStatus.OK, "Ready\n")
            return _text(HTTPStatus.SERVICE_UNAVAILABLE, "Not ready: a target has not polled\n")
        if path == "/":
            return _html(render_landing(self.state, self.telemetry_path, self.clock()))
        if path == "/-/reload":
            return _text(HTTPStatus.METHOD_NOT_ALLOWED, "Only POST requests allowed\n")
        return _text(HTTPStatus.NOT_FOUND, "Not Found\n")

    def metrics(self, handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        """Render the registry in the format and encoding the scraper asks for."""
        encoder, content_type = choose_encoder(handler.headers.get("Accept", ""))
        if isinstance(self.registry, BsgRegistry):  # the message families rendered once a poll
            body = self.registry.exposition(encoder, content_type)
        else:
            body = encoder(self.registry)
        headers = {"Content-Type": content_type}
        if "gzip" in handler.headers.get("Accept-Encoding", ""):
            body = self._compressed(body)
            headers["Content-Encoding"] = "gzip"
        return HTTPStatus.OK, headers, body

    def _compressed(self, body: bytes) -> bytes:
        """``body`` gzipped, compressed again only when it changed since the last scrape.

        Between two polls the body is mostly the same bytes (the rendered parts are cached):
        comparing is a memcmp, compressing 250 KiB took milliseconds of a scrape's time.
        """
        last_body, last_gzip = self._last_gzip
        if body == last_body:
            return last_gzip
        compressed = gzip.compress(body, compresslevel=1)
        self._last_gzip = (body, compressed)
        return compressed


def _text(status: int, text: str) -> tuple[int, dict[str, str], bytes]:
    """A plain-text answer."""
    return status, {"Content-Type": "text/plain; charset=utf-8"}, text.encode()


def _html(text: str) -> tuple[int, dict[str, str], bytes]:
    """An HTML answer."""
    return HTTPStatus.OK, {"Content-Type": "text/html; charset=utf-8"}, text.encode()


def _handler_for(
    app: _App, auth: BasicAuth | None, extra_headers: tuple[tuple[str, str], ...]
) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``app``, the credentials check and the extra headers."""

    class Handler(BaseHTTPRequestHandler):
        """Serves GET and HEAD; everything else is 405."""

        protocol_version = "HTTP/1.1"
        server_version = "bsg-exporter"
        # Headers and body go out in two writes: with Nagle's algorithm on, a body smaller than
        # a segment (a gzipped scrape) waited for the client's delayed ACK of the headers,
        # 40 ms on Linux (benchmarks/scrape.py).
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            """Answer a GET."""
            self._answer(send_body=True)

        def do_HEAD(self) -> None:
            """Answer a HEAD like a GET, without the body."""
            self._answer(send_body=False)

        def do_POST(self) -> None:
            """Answer a POST (reload); it needs the credentials like every other path."""
            if self._refused(send_body=True):
                return
            # The body is not used, but it must be read for the connection to stay usable.
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._send(*app.post(self), True)

        def end_headers(self) -> None:
            """Add the configured headers to every answer, errors of http.server included."""
            for name, value in extra_headers:
                self.send_header(name, value)
            super().end_headers()

        def _refused(self, send_body: bool) -> bool:
            """Answer 401 and return True when credentials are required and not given."""
            if auth is None or urlsplit(self.path).path == HEALTH_PATH:
                return False
            if auth.check(self.headers.get("Authorization")):
                return False
            log.debug("http_unauthorized", client=self.client_address[0])
            status, headers, body = _text(HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
            headers["WWW-Authenticate"] = AUTH_CHALLENGE
            self._send(status, headers, body, send_body)
            return True

        def _answer(self, send_body: bool) -> None:
            if self._refused(send_body):
                return
            try:
                status, headers, body = app.route(self)
            except Exception:  # a rendering bug must not take the server down
                log.exception("http_error", path=self.path)
                status, headers, body = _text(HTTPStatus.INTERNAL_SERVER_ERROR, "Error\n")
            self._send(status, headers, body, send_body)

        def _send(self, status: int, headers: dict[str, str], body: bytes, send_body: bool) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Access logs at debug level only: scrapes every 15 s would drown the poll lines."""
            log.debug("http_request", client=self.client_address[0], request=format % args)

    return Handler
