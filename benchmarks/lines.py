"""JSON lines between a benchmark's driver and its child processes: one message a line."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from typing import Any


def send_line(proc: subprocess.Popen[str], message: Mapping[str, Any]) -> None:
    """Write one message to a child's stdin."""
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(message) + "\n")
    proc.stdin.flush()


def read_line(proc: subprocess.Popen[str], who: str) -> dict[str, Any]:
    """Read one message from a child's stdout; a child that exited is an error naming ``who``."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"{who} exited ({proc.wait()})")
    message: dict[str, Any] = json.loads(line)
    return message
