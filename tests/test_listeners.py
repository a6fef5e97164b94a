"""Where the exporter listens: several addresses, sockets passed by systemd, and what it serves."""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry

from exporter.serving.activation import ActivationError, passed_sockets
from exporter.serving.server import WebServer, WebSettings
from exporter.stats import ExporterState
from tests.harness import free_port

# Stands in for systemd: puts the socket on descriptor 3, says so in the environment of this
# very process (LISTEN_PID must be the exporter's own pid), then becomes the exporter.
ACTIVATOR = (
    "import os, sys\n"
    "os.dup2(int(sys.argv[1]), 3)\n"
    "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1')\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'exporter', *sys.argv[2:]])\n"
)
DEMO = ("--demo", "--log.format=json")


def _wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{url}/-/healthy", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None, "the exporter exited"
        assert time.monotonic() < deadline, "the exporter did not start"
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> str:
    proc.terminate()
    _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    return stderr.decode()


def test_every_listen_address_serves_and_exporter_metrics_can_be_left_out() -> None:
    first, second = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "exporter", *DEMO, f"--web.listen-address=127.0.0.1:{first}",
            f"--web.listen-address=127.0.0.1:{second}", "--web.disable-exporter-metrics",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        for port in (first, second):
            _wait_healthy(f"http://127.0.0.1:{port}", proc)
            text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            assert "bsg_exporter_build_info" in text
            assert "process_cpu_seconds_total" not in text and "python_info" not in text
    finally:
        logged = _stop(proc)
    assert f'"listen_address": ["127.0.0.1:{first}", "127.0.0.1:{second}"]' in logged


def test_socket_activation_serves_on_the_passed_socket() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable, "-c", ACTIVATOR, str(listener.fileno()), *DEMO,
            # The address is ignored with the socket, as in the toolkit.
            "--web.systemd-socket", "--web.listen-address=127.0.0.1:1",
        ],
        pass_fds=(listener.fileno(),),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    listener.close()  # the exporter holds its own descriptor of it now
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", proc)
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert "bsg_exporter_build_info" in text
        assert "process_cpu_seconds_total" in text  # exporter metrics stay without the flag
    finally:
        logged = _stop(proc)
    assert f'"listen_address": ["127.0.0.1:{port}"]' in logged


def test_socket_activation_without_a_socket_fails_at_start() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    result = subprocess.run(
        [sys.executable, "-m", "exporter", *DEMO, "--web.systemd-socket"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert '"event": "listen_failed"' in result.stderr
    assert "no socket activation file descriptors found" in result.stderr


def _activated_run(fd: int) -> subprocess.CompletedProcess[str]:
    """Run the demo exporter to its end with ``fd`` passed as systemd would pass a socket."""
    return subprocess.run(
        [sys.executable, "-c", ACTIVATOR, str(fd), *DEMO, "--web.systemd-socket"],
        pass_fds=(fd,),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_passed_descriptor_that_is_no_socket_fails_at_start() -> None:
    read, write = os.pipe()
    try:
        result = _activated_run(read)
    finally:
        os.close(read)
        os.close(write)
    assert result.returncode == 1
    assert "passed file descriptor 3 is not a socket" in result.stderr


def test_a_passed_socket_that_does_not_listen_fails_at_start() -> None:
    with socket.socket() as unbound:
        result = _activated_run(unbound.fileno())
    assert result.returncode == 1
    assert "passed file descriptor 3 is not a listening socket" in result.stderr


def test_a_unix_socket_is_served(tmp_path: Path) -> None:
    path = str(tmp_path / "exporter.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()
    state = ExporterState(targets={}, version="9", test_key=False)
    web = WebServer([listener], CollectorRegistry(auto_describe=False), state)
    web.start()
    try:
        assert web.addresses == [path]
        with httpx.Client(transport=httpx.HTTPTransport(uds=path)) as client:
            assert client.get("http://exporter/-/healthy").status_code == 200
            assert client.get("http://exporter/-/ready").text == "Ready\n"
    finally:
        web.stop()


def test_a_kept_alive_connection_is_closed_when_a_reload_changes_tls(tmp_path: Path) -> None:
    """A connection accepted in plain HTTP must not carry requests once TLS is in force."""
    state = ExporterState(targets={}, version="9", test_key=False)
    web = WebServer("127.0.0.1:0", CollectorRegistry(auto_describe=False), state)
    web.start()
    request = b"GET /-/ready HTTP/1.1\r\nHost: x\r\n\r\n"
    try:
        with socket.create_connection(("127.0.0.1", web.port), timeout=5) as sock:
            answers = sock.makefile("rb")
            sock.sendall(request)
            assert _status(answers) == b"HTTP/1.1 200 OK"
            sock.sendall(request)  # kept alive: served again
            assert _status(answers) == b"HTTP/1.1 200 OK"
            web.reconfigure(WebSettings(tls=_self_signed(tmp_path)))
            sock.sendall(request)
            assert answers.read() == b""  # closed unanswered
    finally:
        web.stop()


def _status(answers: BinaryIO) -> bytes:
    """Read one whole answer; return its status line."""
    status = answers.readline().rstrip()
    length = 0
    while (line := answers.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    answers.read(length)
    return status


def _self_signed(directory: Path) -> ssl.SSLContext:
    """A server context with a throwaway certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (directory / "c.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "c.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "c.crt", directory / "c.key")
    return context


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "no socket activation file descriptors found"),
        ({"LISTEN_PID": "1", "LISTEN_FDS": "1"}, "LISTEN_PID is '1', not this process (42)"),
        ({"LISTEN_PID": "42", "LISTEN_FDS": "0"}, "LISTEN_FDS must be a number from 1 to 64"),
        ({"LISTEN_PID": "42", "LISTEN_FDS": "x"}, "LISTEN_FDS must be a number from 1 to 64"),
    ],
)
def test_activation_environment_errors(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ActivationError) as caught:
        passed_sockets(environ, pid=42)
    assert message in str(caught.value)
