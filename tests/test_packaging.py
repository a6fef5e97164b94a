"""Packaging: the dependency bounds are the versions tested, the changelog names the version."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_lower_bound_is_the_version_the_minimum_run_installs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lower = {}
    for requirement in project["dependencies"]:
        found = re.fullmatch(r"([\w-]+)>=([\w.]+)(?:,<[\w.]+)?", requirement)
        assert found, requirement
        lower[found[1].lower()] = found[2]
    pinned = {}
    for line in (ROOT / "constraints-min.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pinned[name.lower()] = version
    assert pinned.keys() == lower.keys()
    for name, version in pinned.items():
        assert padded(lower[name]) == padded(version), (name, lower[name], version)


def padded(version: str) -> str:
    """A version in three parts: ">=0.22" allows 0.22.0 first."""
    return ".".join([*version.split("."), "0", "0"][:3])


def test_the_test_script_runs_the_minimum_versions() -> None:
    script = (ROOT / "scripts" / "test.sh").read_text()
    assert "-c constraints-min.txt" in script and ".venv-min/bin/python -m pytest" in script


def test_the_changelog_names_the_version_being_built() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    changelog = (ROOT / "CHANGELOG.md").read_text()
    latest = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", changelog, re.M)
    assert latest and latest[0] == version
