"""calico-install-cni (the calico-cni image's entry point): plugins, conflist and kubeconfig
onto a host directory, settings checked with errors naming the variable. The image itself is
exercised by tests/images and tests/compose."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from cni_client import host_install
from cni_client.host_install import InstallError, kubeconfig_text, render_conflist


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "CNI_BIN_DIR": str(tmp_path / "bin"),
        "CNI_NET_DIR": str(tmp_path / "net.d"),
        "CNI_HOST_BIN_DIR": str(tmp_path / "bin"),
        "KUBERNETES_NODE_NAME": "node-x",
        **extra,
    }


def test_installs_runnable_plugins_and_conflist(tmp_path: Path) -> None:
    written = host_install.run(_env(tmp_path, CALICO_FELIX_SOCKET="/run/f.sock"))
    names = [p.name for p in written]
    assert names == ["calico", "calico-ipam", "10-calico.conflist"]  # conflist last
    conf = json.loads((tmp_path / "net.d/10-calico.conflist").read_text())
    plugin = conf["plugins"][0]
    assert plugin["nodename"] == "node-x" and plugin["mtu"] == 1500
    assert plugin["felix_socket"] == "/run/f.sock"
    out = subprocess.run(
        [str(tmp_path / "bin/calico")], input="{}", env={"CNI_COMMAND": "VERSION"},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "1.1.0" in json.loads(out.stdout)["supportedVersions"]


def test_reinstall_replaces_the_code_directory(tmp_path: Path) -> None:
    host_install.run(_env(tmp_path))
    stale = tmp_path / "bin" / "calico-py-0.0.1-000000000000"
    stale.mkdir()
    host_install.run(_env(tmp_path))
    libs = sorted(p.name for p in (tmp_path / "bin").iterdir() if p.name.startswith("calico-py-"))
    assert len(libs) == 1 and not stale.exists()


def test_custom_template_placeholders(tmp_path: Path) -> None:
    template = json.dumps(
        {
            "name": "k8s-pod-network",
            "cniVersion": "0.3.1",
            "plugins": [
                {
                    "type": "calico",
                    "mtu": "__CNI_MTU__",
                    "kubernetes": {"kubeconfig": "__KUBECONFIG_FILEPATH__"},
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
    )
    host_install.run(_env(tmp_path, CNI_NETWORK_CONFIG=template, CNI_MTU="1440"))
    conf = json.loads((tmp_path / "net.d/10-calico.conflist").read_text())
    assert conf["plugins"][0]["mtu"] == 1440
    assert conf["plugins"][0]["kubernetes"]["kubeconfig"] == "/etc/cni/net.d/calico-kubeconfig"
    assert conf["plugins"][1]["type"] == "portmap"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"CNI_MTU": "9x"}, "CNI_MTU"),
        ({"CNI_MTU": "100"}, "CNI_MTU"),
        ({"CNI_NETWORK_CONFIG": "{not json"}, "CNI_NETWORK_CONFIG"),
        ({"CNI_NETWORK_CONFIG": '{"name": "x"}'}, "CNI_NETWORK_CONFIG"),
        ({"CNI_CONF_NAME": "../evil.conflist"}, "CNI_CONF_NAME"),
        ({"CNI_HOST_PYTHON": "python3"}, "CNI_HOST_PYTHON"),
    ],
)
def test_bad_settings_name_the_variable(tmp_path: Path, extra: dict[str, str], field: str) -> None:
    with pytest.raises(InstallError, match=field):
        host_install.run(_env(tmp_path, **extra))
    assert not (tmp_path / "bin").exists()  # nothing written before the settings are checked


def test_kubeconfig_only_inside_a_pod(tmp_path: Path) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    assert kubeconfig_text({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, sa) is None
    (sa / "token").write_text("tok\n")
    (sa / "ca.crt").write_bytes(b"CA")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    text = kubeconfig_text(env, sa)
    assert text is not None
    config = yaml.safe_load(text)
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == "https://10.96.0.1:443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == b"CA"
    assert config["users"][0]["user"]["token"] == "tok"
    assert kubeconfig_text({}, sa) is None  # no API server named: not in a pod


def test_render_rejects_non_conflist() -> None:
    with pytest.raises(InstallError, match="plugins"):
        render_conflist("[]", {})
