"""A deadline for a whole HTTP request, headers and body included, which httpx lacks.

httpx hands its timeout to httpcore, which applies it to each network read and write: a
server that sends one byte every second never trips a two-second timeout, and held a poll for
a minute. httpcore reads the timeout once per phase (``request.extensions["timeout"]``), so a
shrinking timeout mapping does not help within the headers; a watchdog that shuts the socket
has no socket to shut before the headers arrive on a reused connection. What does work is the
network backend, httpcore's public seam under every connect, TLS handshake, read and write:
:class:`DeadlineBackend` caps each one to the time left before the calling thread's deadline,
and raises httpcore's own timeout once it has passed, which httpx maps as usual.

Must not import: prometheus_client, or any exporter module outside ``exporter.bsg``.
"""

from __future__ import annotations

import ssl
import threading
import time
import urllib.request
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx


class Deadline(threading.local):
    """The monotonic moment the current thread's request must be over by (None: no deadline).

    Thread-local: a connection serves one request at a time, read in the thread that sent it.
    """

    at: float | None = None

    def cap(self, timeout: float | None, error: type[Exception]) -> float | None:
        """``timeout`` shortened to the time left; ``error`` when none is."""
        if self.at is None:
            return timeout
        left = self.at - time.monotonic()
        if left <= 0:
            raise error("the request's deadline has passed")
        return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every read and write ends by the deadline."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: Deadline) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Read what arrives before the deadline."""
        return self._stream.read(max_bytes, self._deadline.cap(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Write before the deadline."""
        self._stream.write(buffer, self._deadline.cap(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        """Close the stream."""
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        """Shake hands before the deadline; the TLS stream keeps to it too."""
        capped = self._deadline.cap(timeout, httpcore.ConnectTimeout)
        tls = self._stream.start_tls(ssl_context, server_hostname, capped)
        return DeadlineStream(tls, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        """What the wrapped stream says (httpcore asks whether an idle one is readable)."""
        return self._stream.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """Connects through ``backend`` and hands out streams that keep to the deadline."""

    def __init__(self, backend: httpcore.NetworkBackend, deadline: Deadline) -> None:
        self._backend = backend
        self._deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        """Connect before the deadline."""
        capped = self._deadline.cap(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, capped, local_address, socket_options)
        return DeadlineStream(stream, self._deadline)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        """Connect before the deadline."""
        capped = self._deadline.cap(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_unix_socket(path, capped, socket_options)
        return DeadlineStream(stream, self._deadline)

    def sleep(self, seconds: float) -> None:
        """Sleep (httpcore's connect retries)."""
        self._backend.sleep(seconds)


def deadline_transport(base_url: str, deadline: Deadline) -> httpx.HTTPTransport:
    """httpx's own transport, with the proxy the environment names, over the deadline backend.

    Passing a transport turns httpx's reading of ``HTTPS_PROXY``/``NO_PROXY`` off, so the
    proxy is looked up here the same way (the standard library's reading of them).
    """
    transport = httpx.HTTPTransport(proxy=_environment_proxy(base_url))
    # HTTPTransport builds its pool (direct, HTTP or SOCKS proxy) without a way to pass a
    # backend in; every kind of pool connects through this attribute.
    pool = transport._pool
    pool._network_backend = DeadlineBackend(pool._network_backend, deadline)
    return transport


def _environment_proxy(base_url: str) -> str | None:
    """The proxy ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` name for ``base_url``, if any."""
    parts = urlsplit(base_url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")
