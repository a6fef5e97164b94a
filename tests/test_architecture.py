"""The architecture's import rules (pyproject's import-linter contracts) hold, and catch a break."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """Run lint-imports on the package under ``root`` with ``root``'s pyproject."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_contract_is_kept() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " broken" in result.stdout and "0 broken" in result.stdout


def test_an_indirect_forbidden_import_breaks_its_contract(tmp_path: Path) -> None:
    shutil.copytree(
        ROOT / "exporter", tmp_path / "exporter", ignore=shutil.ignore_patterns("*.pyc")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    counts = tmp_path / "exporter" / "tracking" / "counts.py"
    counts.write_text(counts.read_text() + "\nimport socket\nimport httpx\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    broken = {line.removesuffix(" BROKEN") for line in result.stdout.splitlines()}
    assert (
        "The collector, the exposition cache and the status page do no I/O" in broken
    )  # via the counts module
    assert "Tracking and the published state need neither HTTP nor Prometheus" in broken
