"""The state file under a running exporter: deleted, replaced or unreachable is never silent."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.simulator import (
    DEMO_API_KEY,
    ManualClock,
    Simulator,
    SimulatorServer,
)
from exporter.tracking.store import StateAccessError, StateStore, set_aside
from tests.harness import TargetSpec, config_yaml, in_process, value

PRICE = {"value": "0.0100000", "currency": "EUR"}


def _delivered(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> float:
    return value(samples, "bsg_messages_total", target="all", channel="sms", status="delivered")


@pytest.mark.parametrize("how", ["deleted", "replaced", "moved"])
def test_a_state_file_lost_while_running_is_recreated_from_memory(
    tmp_path: Path,
    manual_simulator: tuple[ManualClock, Simulator, SimulatorServer],
    capsys: pytest.CaptureFixture[str],
    how: str,
) -> None:
    clock, sim, server = manual_simulator
    path = tmp_path / "state.db"
    targets: list[TargetSpec] = [{"name": "all", "window": "1h"}]
    exporter = in_process(server.url, targets, DEMO_API_KEY, clock.now, state_path=str(path))
    try:
        exporter.cycle()  # the (empty) baseline
        for _ in range(2):
            clock.advance(60)
            sim.create_messages([{"status": "delivered", "amount": PRICE}] * 10)
            exporter.cycle()
        assert _delivered(exporter.samples()) == 20
        if how == "deleted":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        elif how == "replaced":
            other = tmp_path / "other.db"
            StateStore(str(other)).close()
            os.replace(other, path)
        else:
            os.replace(path, tmp_path / "moved.db")
        clock.advance(60)
        sim.create_messages([{"status": "delivered", "amount": PRICE}] * 5)
        exporter.cycle()
        samples = exporter.samples()
        assert _delivered(samples) == 25
        assert value(samples, "bsg_poll_errors_total", target="all", reason="state") == 1
        assert value(samples, "bsg_up", target="all") == 1
        assert path.exists()
        clock.advance(60)
        exporter.cycle()  # the new file is watched in its turn: no second alarm
        assert value(exporter.samples(), "bsg_poll_errors_total", target="all", reason="state") == 1
    finally:
        exporter.close()
    logs = capsys.readouterr().out
    assert "state_file_lost" in logs and "re-created from memory" in logs
    if how == "replaced":
        assert list(tmp_path.glob("state.db.replaced-*"))  # the foreign file is kept, aside
    again = in_process(server.url, targets, DEMO_API_KEY, clock.now, state_path=str(path))
    try:
        samples = again.samples()
        assert _delivered(samples) == 25  # nothing counted before or after the loss is lost
        assert value(samples, "bsg_poll_errors_total", target="all", reason="state") == 1
    finally:
        again.close()


def test_the_state_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(str(path))
    try:
        with store.transaction():
            store.save_target("t", "{}", {})
        for name in ("state.db", "state.db-wal", "state.db-shm"):
            mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
            assert mode & 0o077 == 0, (name, oct(mode))
    finally:
        store.close()


def test_a_directory_that_does_not_exist_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "state.db"
    with pytest.raises(StateAccessError, match=r"does not exist.*--state\.path"):
        StateStore(str(missing))


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory this process cannot write: a mode as a user, a read-only file system as root
    (for whom modes do not bind)."""
    if os.getuid() != 0:
        state_dir = tmp_path / "state"
        state_dir.mkdir()
        state_dir.chmod(0o555)
        yield state_dir
        state_dir.chmod(0o755)
        return
    if os.path.isdir("/proc/sys") and not os.access("/proc/sys", os.W_OK):
        yield Path("/proc/sys")
        return
    pytest.skip("no directory here that root cannot write")


def _run(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run the exporter once with ``config``; it must stop on its own."""
    args = [
        sys.executable,
        "-m",
        "exporter",
        f"--config.file={config}",
        "--web.listen-address=127.0.0.1:0",
        "--log.format=json",
        *extra,
    ]
    env = {"BSG_API_KEY": DEMO_API_KEY, "PATH": "/usr/bin:/bin"}
    return subprocess.run(args, capture_output=True, text=True, timeout=30, env=env, check=False)


@pytest.mark.parametrize("reset", [False, True])
def test_a_read_only_state_directory_gives_one_clear_error(
    tmp_path: Path, read_only_dir: Path, reset: bool
) -> None:
    state = read_only_dir / "bsg-exporter-test.db"
    config = tmp_path / "config.yaml"
    config.write_text(config_yaml("http://127.0.0.1:9", [{"name": "all"}], state_path=str(state)))
    done = _run(config, *(["--state.reset"] if reset else []))
    assert done.returncode == 1, done.stderr
    assert "state_unusable" in done.stderr
    assert str(read_only_dir) in done.stderr and "not writable" in done.stderr
    assert "Traceback" not in done.stderr
    assert "unreadable" not in done.stderr  # not a corrupt file: setting it aside cannot help


def test_setting_aside_in_a_read_only_directory_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"junk")

    def refuse(src: str, dst: str) -> None:
        raise PermissionError(13, "Permission denied", src)

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(StateAccessError, match="directory must be writable"):
        set_aside(str(path))
