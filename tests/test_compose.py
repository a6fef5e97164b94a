"""compose.yaml: every mounted file exists, and names and ports agree across the stack's files.

No Docker engine runs here; these checks read the files as Docker Compose, Prometheus and
Grafana would.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent


def load(path: str) -> Any:
    """A YAML file of the repository."""
    return yaml.safe_load((ROOT / path).read_text())


def services() -> dict[str, Any]:
    """The services of compose.yaml."""
    data: dict[str, Any] = load("compose.yaml")["services"]
    return data


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Bind mounts of a service: container path -> path in the repository."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            found[target] = ROOT / source
    return found


def container_port(service: dict[str, Any], port: int) -> bool:
    """True when the service publishes ``port`` from the container."""
    return any(str(p).split(":")[-1] == str(port) for p in service.get("ports", []))


def resolve(service: dict[str, Any], container_path: str) -> Path:
    """The repository file a container path of ``service`` comes from."""
    for target, source in mounts(service).items():
        if container_path == target:
            return source
        if container_path.startswith(target.rstrip("/") + "/"):
            return source / container_path[len(target.rstrip("/")) + 1 :]
    raise AssertionError(f"{container_path} is not mounted")


def flag(service: dict[str, Any], name: str) -> str:
    """A --name=value flag of a service's command."""
    for arg in service["command"]:
        if arg.startswith(f"--{name}="):
            return str(arg.split("=", 1)[1])
    raise AssertionError(f"no --{name}")


def test_services_and_every_mounted_file_exist() -> None:
    svc = services()
    assert svc.keys() == {"exporter", "prometheus", "alertmanager", "grafana"}
    for name, service in svc.items():
        for target, source in mounts(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) is missing"
    assert svc["exporter"]["build"] == "." and (ROOT / "Dockerfile").exists()
    assert svc["exporter"]["command"] == ["--demo"]


def test_exporter_port_agrees_with_dockerfile_and_scrape_config() -> None:
    svc = services()
    exposed = re.search(r"^EXPOSE (\d+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert exposed
    port = int(exposed.group(1))
    assert container_port(svc["exporter"], port)
    prometheus = svc["prometheus"]
    config_path = resolve(prometheus, flag(prometheus, "config.file"))
    config = yaml.safe_load(config_path.read_text())
    (job,) = config["scrape_configs"]
    (static,) = job["static_configs"]
    assert job["job_name"] == "bsg"  # the alerts read up{job="bsg"}
    assert static["targets"] == [f"exporter:{port}"]
    # the rule files resolve next to the config, inside the container too
    config_dir = Path(flag(prometheus, "config.file")).parent
    for rule_file in config["rule_files"]:
        assert resolve(prometheus, str(config_dir / rule_file)).exists()
    (manager,) = config["alerting"]["alertmanagers"]
    host, am_port = manager["static_configs"][0]["targets"][0].split(":")
    assert host in svc and container_port(svc[host], int(am_port))
    am = svc[host]
    assert resolve(am, flag(am, "config.file")) == ROOT / "prometheus" / "alertmanager.yml"


def test_grafana_reads_the_stack_prometheus_and_the_dashboard() -> None:
    svc = services()
    grafana = svc["grafana"]
    assert container_port(grafana, 3000)
    provisioning = resolve(grafana, "/etc/grafana/provisioning")
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    url = urlsplit(datasource["url"])
    assert datasource["type"] == "prometheus"
    assert url.hostname == "prometheus" and url.hostname in svc
    assert container_port(svc["prometheus"], url.port or 80)
    assert url.port == 9090
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "bsg.yml").read_text())["providers"]
    dashboards = resolve(grafana, provider["options"]["path"])
    assert (dashboards / "bsg-delivery.json").exists()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert resolve(grafana, home) == ROOT / "grafana" / "dashboards" / "bsg-delivery.json"
