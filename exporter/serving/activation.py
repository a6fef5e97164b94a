"""Socket activation (``--web.systemd-socket``): the listening sockets a service manager passed.

Owns systemd's protocol (sd_listen_fds(3)): ``LISTEN_PID`` names the process the descriptors
are for, ``LISTEN_FDS`` how many there are, from descriptor 3 on. The environment and the
process id are arguments, so that nothing here reads or changes process-wide state; the caller
unsets the variables, so that a child process never takes the sockets for its own.

Must not import: any other exporter module.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

__all__ = ["ACTIVATION_VARIABLES", "FIRST_FD", "ActivationError", "passed_sockets"]

FIRST_FD = 3
"""SD_LISTEN_FDS_START: the first descriptor a service manager passes."""
ACTIVATION_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
"""The variables of the protocol, which the caller unsets once the sockets are taken."""
MAX_FDS = 64
"""More passed descriptors than this is taken for a mistake rather than opened blindly."""


class ActivationError(ValueError):
    """No usable socket was passed."""


def passed_sockets(environ: Mapping[str, str], pid: int) -> list[socket.socket]:
    """The listening stream sockets passed to process ``pid``, in descriptor order.

    Raises ActivationError.
    """
    owner, count = environ.get("LISTEN_PID", ""), environ.get("LISTEN_FDS", "")
    if not owner or not count:
        raise ActivationError(
            "no socket activation file descriptors found (LISTEN_PID and LISTEN_FDS are unset:"
            " start the exporter from a systemd .socket unit)"
        )
    if not owner.isdigit() or int(owner) != pid:
        raise ActivationError(f"LISTEN_PID is {owner!r}, not this process ({pid})")
    if not count.isdigit() or not 1 <= int(count) <= MAX_FDS:
        raise ActivationError(f"LISTEN_FDS must be a number from 1 to {MAX_FDS}, got {count!r}")
    return [_stream_socket(fd) for fd in range(FIRST_FD, FIRST_FD + int(count))]


def _stream_socket(fd: int) -> socket.socket:
    """The listening stream socket on ``fd``, which child processes do not inherit."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ActivationError(f"passed file descriptor {fd} is not a socket: {exc}") from None
    if sock.type != socket.SOCK_STREAM:
        sock.detach()  # not ours to close
        raise ActivationError(f"passed file descriptor {fd} is not a stream socket")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise ActivationError(
            f"passed file descriptor {fd} is not a listening socket (a .socket unit with"
            " Accept=yes passes connections: use Accept=no)"
        )
    os.set_inheritable(fd, False)
    return sock
