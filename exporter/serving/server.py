"""The HTTP side: /metrics, the landing page, and the health endpoints.

Owns the listening socket, routing, content negotiation (text or OpenMetrics, gzip); the
HTML status page is rendered by :mod:`exporter.serving.landing`. It reads :class:`ExporterState` and
the registry; it never polls. With a :class:`~exporter.config.webconfig.WebConfig` it serves TLS,
requires basic auth (except on /-/healthy, for probes) and adds the configured headers.

Every connection and request is bounded: how many at once, how long a client may take to send
a request, and how much of a body is read (none, except on /-/reload).

Must not import: httpx, the client or the poller.
"""

from __future__ import annotations

import gzip
import io
import math
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import structlog
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from exporter.config.webconfig import WebConfig
from exporter.defaults import DEFAULT_MAX_REQUESTS, DEFAULT_TELEMETRY_PATH
from exporter.serving.auth import AUTH_CHALLENGE, BasicAuth, authenticator
from exporter.serving.exposition import BsgRegistry
from exporter.serving.landing import render_landing
from exporter.stats import ExporterState

log = structlog.get_logger("exporter.serving.server")

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a client gets to complete the TLS handshake before its connection is dropped."""
HEADER_TIMEOUT = 10.0
"""Seconds a client gets to send a request's line and headers (and a reload's body)."""
IDLE_TIMEOUT = 30.0
"""Seconds a kept-alive connection may wait for its next request, and a client to take an answer."""
MAX_CONNECTIONS = 1024
"""Connections served at once (a thread each, ~26 KiB of memory idle); beyond, a new one gets a
503 and is closed."""
MAX_BODY = 64 * 1024
"""Bytes of a request body read, on /-/reload, the one endpoint that takes one; beyond, 413."""
LISTEN_BACKLOG = 1024
"""Connections the kernel queues for accept (capped by net.core.somaxconn)."""
HEALTH_PATH = "/-/healthy"
READY_PATH = "/-/ready"
RELOAD_PATH = "/-/reload"
UNLIMITED_PATHS = frozenset({HEALTH_PATH, READY_PATH})
"""Paths that need no request slot: probes must be answered however busy the scrapes keep it."""

Answer = tuple[int, dict[str, str], bytes]


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


@dataclass
class _Limits:
    """How long a client may take to send a request, and how many are served at once."""

    header_timeout: float
    idle_timeout: float
    max_requests: int
    slots: threading.BoundedSemaphore | None = field(init=False)

    def __post_init__(self) -> None:
        self.slots = threading.BoundedSemaphore(self.max_requests) if self.max_requests else None


@dataclass(frozen=True)
class WebSettings:
    """What the web configuration decides for each new connection and request."""

    tls: ssl.SSLContext | None = None
    auth: BasicAuth | None = None
    headers: tuple[tuple[str, str], ...] = ()
    refusal: bytes = field(init=False)
    """The whole 503 sent to a connection turned away (plain HTTP only)."""

    def __post_init__(self) -> None:
        text = "Too many open connections\n"
        answer = _raw_answer(HTTPStatus.SERVICE_UNAVAILABLE, text, self.headers)
        object.__setattr__(self, "refusal", answer)


def web_settings(web_config: WebConfig) -> WebSettings:
    """The settings of ``web_config``, with the TLS context read with its file."""
    tls = web_config.tls.server_context() if web_config.tls is not None else None
    return WebSettings(tls, authenticator(web_config), web_config.headers)


class _Current:
    """The settings in force, swapped whole on a reload: each connection and request reads
    them once, so that none is served half with the old settings and half with the new."""

    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings


class _Server(ThreadingHTTPServer):
    """A threading server on one listener: an address it binds (IPv6 and dual-stack as well as
    IPv4) or a socket already listening (socket activation)."""

    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default of 5 left a burst of 30 scrapes waiting on SYN retries (1-3 s).
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self,
        listener: str | socket.socket,
        handler: type[BaseHTTPRequestHandler],
        *,
        current: _Current,
        connections: threading.BoundedSemaphore,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self.current = current
        self.handshake_timeout = handshake_timeout
        self._connections = connections
        if isinstance(listener, socket.socket):  # listening already, with its own backlog
            self.dual_stack = False
            self.address_family = listener.family
            super().__init__(listener.getsockname(), handler, bind_and_activate=False)
            self.socket.close()
            self.socket = listener
            return
        host, port = parse_listen_address(listener)
        # An empty host means every address: dual-stack where the system has it.
        self.dual_stack = not host and socket.has_dualstack_ipv6()
        if self.dual_stack:
            host = "::"
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), handler)

    @property
    def port(self) -> int | None:
        """The bound port, None on a Unix socket."""
        if self.address_family in (socket.AF_INET, socket.AF_INET6):
            return int(self.server_address[1])
        return None

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept a connection, to be served with TLS when the settings in force say so.

        The handshake itself runs in the connection's own thread (finish_request) under a
        deadline, so that a client that never completes it costs one thread for a while,
        never the accept loop.
        """
        sock, address = self.socket.accept()
        if not isinstance(address, tuple):  # a Unix socket's peer: log lines need a name
            address = ("local", 0)
        tls = self.current.settings.tls
        if tls is None:
            return sock, address
        try:
            return tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address
        except OSError:
            sock.close()
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in a thread of its own, or turn it away when all are taken."""
        if not self._connections.acquire(blocking=False):
            log.debug("connection_refused", client=client_address[0], reason="too many")
            self._turn_away(request)
            return
        try:
            super().process_request(request, client_address)
        except RuntimeError as exc:  # no thread to be had (a pids limit): as good as full
            self._connections.release()
            log.warning("connection_refused", client=client_address[0], reason=str(exc))
            self._turn_away(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Handle the connection, then give its place back."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()

    def _turn_away(self, request: socket.socket) -> None:
        """Answer 503 without a thread (a TLS client is closed: no handshake for it), and close.

        The accept loop must not wait on this client: one non-blocking send of a few hundred
        bytes fits an empty socket buffer, and what does not is dropped.
        """
        if not isinstance(request, ssl.SSLSocket):
            try:
                request.setblocking(False)
                request.send(self.current.settings.refusal)
            except OSError:
                pass
        self.shutdown_request(request)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Complete the TLS handshake, if any, then handle the connection."""
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(self.handshake_timeout)
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError) as exc:  # OSError includes the timeout
                log.debug("tls_handshake_failed", client=client_address[0], error=str(exc))
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that breaks or times out is routine; anything else gets a traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):  # resets, broken pipes, timeouts, TLS errors
            log.debug("connection_error", client=client_address[0], error=str(error))
            return
        super().handle_error(request, client_address)

    def server_bind(self) -> None:
        """Accept IPv4 on the IPv6 socket when listening on every address."""
        if self.dual_stack:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class _DeadlineReader(io.RawIOBase):
    """A connection's reading side, where each read waits only until the current deadline.

    A per-read timeout alone would let a client that sends a byte every few seconds hold its
    thread forever; a deadline bounds the whole request head however it is dribbled.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._deadline = math.inf
        self._then: float | None = None

    def expect(self, timeout: float, then: float | None = None) -> None:
        """Data is due within ``timeout`` s; with ``then``, once some came, the rest in that."""
        self._deadline = time.monotonic() + timeout
        self._then = then

    def readable(self) -> bool:
        """Always: this is the reading side."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Read what the socket has, waiting at most until the deadline."""
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the client took too long to send its request")
        self._sock.settimeout(remaining)
        count = self._sock.recv_into(buffer)
        if count and self._then is not None:
            self.expect(self._then)
        return count


class WebServer:
    """Serves the exporter's endpoints in background threads, on one listener or several."""

    def __init__(
        self,
        listen: str | Sequence[str | socket.socket],
        registry: CollectorRegistry,
        state: ExporterState,
        *,
        telemetry_path: str = DEFAULT_TELEMETRY_PATH,
        clock: Callable[[], float] = time.time,
        web_config: WebConfig | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        header_timeout: float = HEADER_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        max_requests: int = DEFAULT_MAX_REQUESTS,
        reload: Callable[[], str | None] | None = None,
    ) -> None:
        """Bind each listener: an address such as ``:9746``, or a socket already listening.

        ``reload`` (None: the lifecycle API is off) backs /-/reload; ``max_requests`` 0 means no
        limit on requests served at once. Connections and requests are limited across all
        listeners together.
        """
        listeners = [listen] if isinstance(listen, str) else list(listen)
        if not listeners:
            raise ValueError("nothing to listen on")
        self._current = _Current(web_settings(web_config or WebConfig()))
        app = _Routes(registry, state, telemetry_path, clock, reload)
        limits = _Limits(header_timeout, idle_timeout, max_requests)
        handler = _handler_for(app, self._current, limits)
        connections = threading.BoundedSemaphore(max_connections)
        self._servers: list[_Server] = []
        try:
            for listener in listeners:
                server = _server(listener, handler, self._current, connections, handshake_timeout)
                self._servers.append(server)
        except BaseException:
            for server in self._servers:
                server.server_close()
            raise
        self._threads = [
            threading.Thread(
                target=server.serve_forever, name=f"web-{i}", kwargs={"poll_interval": 0.2}
            )
            for i, server in enumerate(self._servers)
        ]

    @property
    def port(self) -> int:
        """The first listener's bound port (useful with port 0)."""
        port = self._servers[0].port
        if port is None:
            raise ValueError("the first listener is a Unix socket")
        return port

    @property
    def addresses(self) -> list[str]:
        """Every listener's bound address, as ``host:port`` (or a Unix socket's path)."""
        return [_shown_address(server) for server in self._servers]

    def reconfigure(self, settings: WebSettings) -> None:
        """Serve new connections and requests with ``settings`` (a reloaded web config)."""
        self._current.settings = settings

    def start(self) -> None:
        """Start serving."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop accepting requests and close the sockets."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)


def _server(
    listener: str | socket.socket,
    handler: type[BaseHTTPRequestHandler],
    current: _Current,
    connections: threading.BoundedSemaphore,
    handshake_timeout: float,
) -> _Server:
    """A server on ``listener``; an OSError names the address that could not be bound."""
    try:
        return _Server(
            listener,
            handler,
            current=current,
            connections=connections,
            handshake_timeout=handshake_timeout,
        )
    except OSError as exc:
        if isinstance(listener, socket.socket):
            raise
        raise OSError(exc.errno, f"cannot listen on {listener}: {exc.strerror or exc}") from exc


def _shown_address(server: _Server) -> str:
    """A listener's address as a log line shows it."""
    address = server.server_address
    if server.port is None:
        return str(address) or "unix socket"
    host = str(address[0])
    return f"[{host}]:{server.port}" if ":" in host else f"{host}:{server.port}"


class _Routes:
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

    def post(self, path: str, headers: Message) -> Answer | None:
        """Refuse a POST, or None when it may reload (only /-/reload takes one, as Prometheus)."""
        if path != RELOAD_PATH:
            return _text(HTTPStatus.METHOD_NOT_ALLOWED, "Method Not Allowed\n", Allow="GET, HEAD")
        if self.reload is None:
            return _text(HTTPStatus.FORBIDDEN, "Lifecycle API is not enabled.\n")
        if _cross_site(headers):
            return _text(HTTPStatus.FORBIDDEN, "Cross-site requests are refused\n")
        return None

    def do_reload(self) -> Answer:
        """Reload the configuration (:meth:`post` said it may)."""
        assert self.reload is not None
        error = self.reload()
        if error is not None:
            return _text(HTTPStatus.INTERNAL_SERVER_ERROR, f"failed to reload config: {error}\n")
        return _text(HTTPStatus.OK, "Reloaded\n")

    def route(self, path: str, headers: Message) -> Answer:
        """Answer one GET request."""
        if path == self.telemetry_path:
            return self.metrics(headers)
        if path == HEALTH_PATH:
            healthy, reason = self.state.healthy()
            if healthy:
                return _text(HTTPStatus.OK, "Healthy\n")
            return _text(HTTPStatus.SERVICE_UNAVAILABLE, f"Unhealthy: {reason}\n")
        if path == READY_PATH:
            if self.state.ready():
                return _text(HTTPStatus.OK, "Ready\n")
            return _text(HTTPStatus.SERVICE_UNAVAILABLE, "Not ready: a target has not polled\n")
        if path == "/":
            return _html(render_landing(self.state, self.telemetry_path, self.clock()))
        if path == RELOAD_PATH:
            return _text(
                HTTPStatus.METHOD_NOT_ALLOWED, "Only POST requests allowed\n", Allow="POST"
            )
        return _text(HTTPStatus.NOT_FOUND, "Not Found\n")

    def metrics(self, request_headers: Message) -> Answer:
        """Render the registry in the format and encoding the scraper asks for."""
        encoder, content_type = choose_encoder(request_headers.get("Accept", ""))
        if isinstance(self.registry, BsgRegistry):  # the message families rendered once a poll
            body = self.registry.exposition(encoder, content_type)
        else:
            body = encoder(self.registry)
        headers = {"Content-Type": content_type}
        if "gzip" in request_headers.get("Accept-Encoding", ""):
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


def _cross_site(headers: Message) -> bool:
    """True when a browser sent this request from a page of another origin.

    A page elsewhere can make a visitor's browser POST here with a form (no CORS preflight),
    basic-auth credentials included. Browsers say where a request comes from: Sec-Fetch-Site
    (current browsers, on every request) and Origin (on every cross-origin POST, form posts
    included); either pointing elsewhere refuses it. Tools (curl, scripts) send neither and
    pass. Content-Type is not judged: a cross-site form is caught by those headers whatever its
    type, while refusing form types would refuse ``curl -d ''``.
    """
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site.strip().lower() not in ("same-origin", "none"):
        return True
    origin = headers.get("Origin")
    if origin is None:
        return False
    try:
        origin_host = urlsplit(origin.strip()).netloc.lower()
    except ValueError:
        return True
    # "null" (a sandboxed or file: page) has no host, and never matches.
    return not origin_host or origin_host != headers.get("Host", "").strip().lower()


def _body_length(headers: Message) -> int | None:
    """The request body's length in bytes (0 without one); None when it is chunked.

    Raises ValueError on a Content-Length that is not one plain number.
    """
    if headers.get("Transfer-Encoding") is not None:
        return None
    values = {v.strip() for v in headers.get_all("Content-Length") or ()}
    if not values:
        return 0
    value = values.pop() if len(values) == 1 else "two values"
    if not (value.isascii() and value.isdigit()):
        raise ValueError(f"bad Content-Length: {value!r}")
    return int(value) if len(value) <= 18 else sys.maxsize  # int() refuses 4,300+ digits


def _text(status: int, text: str, **extra: str) -> Answer:
    """A plain-text answer."""
    return status, {"Content-Type": "text/plain; charset=utf-8", **extra}, text.encode()


def _html(text: str) -> Answer:
    """An HTML answer."""
    return HTTPStatus.OK, {"Content-Type": "text/html; charset=utf-8"}, text.encode()


def _raw_answer(status: HTTPStatus, text: str, extra: tuple[tuple[str, str], ...]) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, as bytes to send at once."""
    body = text.encode()
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in extra),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _handler_for(app: _Routes, current: _Current, limits: _Limits) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``app``, the settings in force and the limits."""

    class Handler(BaseHTTPRequestHandler):
        """Serves GET, HEAD and POST /-/reload; other methods get http.server's 501."""

        protocol_version = "HTTP/1.1"
        server_version = "bsg-exporter"

        def setup(self) -> None:
            """Read the connection through a deadline: the first request's head is due now."""
            super().setup()
            if self.connection.family in (socket.AF_INET, socket.AF_INET6):
                # Headers and body go out in two writes: with Nagle's algorithm on, a body
                # smaller than a segment (a gzipped scrape) waited for the client's delayed ACK
                # of the headers. (A Unix socket has no such option.)
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
            self.rfile.close()  # the stdlib's reader, replaced (closing it keeps no fd)
            self.reader = _DeadlineReader(self.connection)
            self.rfile = io.BufferedReader(self.reader)
            self.reader.expect(limits.header_timeout)
            self.unread_body = False
            self.settings = current.settings
            self.accepted_tls = (
                self.connection.context if isinstance(self.connection, ssl.SSLSocket) else None
            )

        def handle_one_request(self) -> None:
            """Handle a request, then wait idle for the next, whose head is due once it starts."""
            super().handle_one_request()
            self.reader.expect(limits.idle_timeout, then=limits.header_timeout)

        def parse_request(self) -> bool:
            """Take the settings in force once the request came: a reload may have come while
            the connection waited for it."""
            self.settings = current.settings
            return super().parse_request()

        def handle_expect_100(self) -> bool:
            """Send no "100 Continue" yet: only a reload that passed every check reads a body."""
            return True

        def send_response(self, code: int, message: str | None = None) -> None:
            """Start an answer, which the client gets the idle timeout to take."""
            self.connection.settimeout(limits.idle_timeout)
            super().send_response(code, message)

        def do_GET(self) -> None:
            """Answer a GET."""
            self._answer(send_body=True)

        def do_HEAD(self) -> None:
            """Answer a HEAD like a GET, without the body."""
            self._answer(send_body=False)

        def do_POST(self) -> None:
            """Answer a POST (reload); it needs the credentials like every other path."""
            self._answer(send_body=True)

        def end_headers(self) -> None:
            """Add the configured headers to every answer, errors of http.server included."""
            for name, value in self.settings.headers:
                self.send_header(name, value)
            super().end_headers()

        def _answer(self, send_body: bool) -> None:
            """Check framing, credentials and load, in that order, then route."""
            if self.settings.tls is not self.accepted_tls:
                # A reload changed TLS (turned it on or off, new certificates, a new client
                # policy) since this kept-alive connection was accepted: it is closed
                # unanswered, and a client retries the request on a new connection.
                log.debug("connection_closed", client=self.client_address[0], reason="reload")
                self.close_connection = True
                return
            try:
                path = urlsplit(self.path).path
                length = _body_length(self.headers)
            except ValueError as exc:
                log.debug("http_bad_request", client=self.client_address[0], error=str(exc))
                self.unread_body = True  # where this request ends is unknown
                self._send(*_text(HTTPStatus.BAD_REQUEST, "Bad Request\n"), send_body)
                return
            self.unread_body = length != 0  # until a reload reads it
            if self._refused(path, send_body):
                return
            if path in UNLIMITED_PATHS or limits.slots is None:
                self._send(*self._route(path, length), send_body)
            elif limits.slots.acquire(blocking=False):
                try:
                    self._send(*self._route(path, length), send_body)
                finally:
                    limits.slots.release()
            else:
                log.debug("http_too_many_requests", client=self.client_address[0], path=path)
                text = f"Too many requests at once (limit {limits.max_requests}), retry later\n"
                self._send(*_text(HTTPStatus.SERVICE_UNAVAILABLE, text), send_body)

        def _route(self, path: str, length: int | None) -> Answer:
            """The answer of the app, or a 500 when rendering fails."""
            try:
                if self.command != "POST":
                    return app.route(path, self.headers)
                return app.post(path, self.headers) or self._reload(length)
            except Exception:  # a rendering bug must not take the server down
                log.exception("http_error", path=path)
                return _text(HTTPStatus.INTERNAL_SERVER_ERROR, "Error\n")

        def _reload(self, length: int | None) -> Answer:
            """Read the (unused) body when small enough to keep the connection, then reload."""
            if length is not None and length > MAX_BODY:
                return _text(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"Body over {MAX_BODY} bytes\n")
            if length:
                if self.headers.get("Expect", "").lower() == "100-continue":
                    super().handle_expect_100()
                self.reader.expect(limits.header_timeout)
                self.unread_body = len(self.rfile.read(length)) < length
            return app.do_reload()

        def _refused(self, path: str, send_body: bool) -> bool:
            """Answer 401 and return True when credentials are required and not given."""
            auth = self.settings.auth
            if auth is None or path == HEALTH_PATH:
                return False
            if auth.check(self.headers.get("Authorization")):
                return False
            log.debug("http_unauthorized", client=self.client_address[0])
            status, headers, body = _text(HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
            headers["WWW-Authenticate"] = AUTH_CHALLENGE
            self._send(status, headers, body, send_body)
            return True

        def _send(self, status: int, headers: dict[str, str], body: bytes, send_body: bool) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            if self.unread_body:  # the rest of the request is still on the wire
                self.send_header("Connection", "close")
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Access logs at debug level only: scrapes every 15 s would drown the poll lines."""
            log.debug("http_request", client=self.client_address[0], request=format % args)

    return Handler
