"""The operations files in contrib/ agree with the exporter they run."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from exporter.__main__ import parse_args
from exporter.config.schema import parse_config

ROOT = Path(__file__).resolve().parent.parent


def test_systemd_unit_runs_valid_flags() -> None:
    unit = (ROOT / "contrib/bsg-exporter.service").read_text()
    exec_start = unit.split("ExecStart=", 1)[1].split("\nExecReload", 1)[0].replace("\\\n", " ")
    binary, *args = shlex.split(exec_start)
    assert binary.endswith("/bsg-exporter")
    parsed = parse_args(args)
    assert parsed.config_file == "/etc/bsg-exporter/config.yaml"
    assert parsed.state_path.startswith("/var/lib/bsg-exporter/")  # its StateDirectory
    assert "StateDirectory=bsg-exporter" in unit and "ExecReload=/bin/kill -HUP $MAINPID" in unit


def test_kubernetes_manifest_is_consistent() -> None:
    docs = list(yaml.safe_load_all((ROOT / "contrib/kubernetes/bsg-exporter.yaml").read_text()))
    by_kind = {doc["kind"]: doc for doc in docs}
    config_text = by_kind["ConfigMap"]["data"]["config.yaml"]
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    key_file = Path(mounts["key"]) / "api-key"
    key_file_config = yaml.safe_load(config_text)["api"]["key_file"]
    assert Path(key_file_config) == key_file
    state = yaml.safe_load(config_text)["state"]["path"]
    assert state.startswith(mounts["state"] + "/")
    assert container["ports"][0]["containerPort"] == 9746
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert by_kind["Deployment"]["spec"]["strategy"]["type"] == "Recreate"
    # the config itself is valid (with a stand-in key file)
    assert "key_file" in config_text
    parse_config(config_text.replace(f"key_file: {key_file_config}", "key: live_x"))


def test_systemd_socket_listens_where_the_unit_would() -> None:
    unit = (ROOT / "contrib/bsg-exporter.service").read_text()
    socket_unit = (ROOT / "contrib/bsg-exporter.socket").read_text()
    exec_start = unit.split("ExecStart=", 1)[1].split("\nExecReload", 1)[0].replace("\\\n", " ")
    _, *args = shlex.split(exec_start)
    [address] = parse_args(args).listen_addresses
    assert f"ListenStream={address.rsplit(':', 1)[1]}\n" in socket_unit
    assert "Service=bsg-exporter.service\n" in socket_unit
    activated = [a for a in args if not a.startswith("--web.listen-address")]
    assert parse_args([*activated, "--web.systemd-socket"]).systemd_socket
