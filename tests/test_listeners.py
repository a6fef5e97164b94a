"""Where the exporter listens: several addresses, sockets passed by systemd, and what it serves."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from exporter.serving.activation import ActivationError, passed_sockets
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


def test_a_passed_descriptor_that_is_no_socket_fails_at_start() -> None:
    read, write = os.pipe()
    try:
        result = subprocess.run(
            [sys.executable, "-c", ACTIVATOR, str(read), *DEMO, "--web.systemd-socket"],
            pass_fds=(read,),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        os.close(read)
        os.close(write)
    assert result.returncode == 1
    assert "passed file descriptor 3 is not a socket" in result.stderr


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
