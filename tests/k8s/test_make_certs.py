"""k8s/make-certs.sh without a cluster: bad arguments are refused naming them, a second run
keeps the CA, and the CNI network config in calico-config is a conflist the plugin accepts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from cni_client.cni.netconf import parse
from tests.k8s.k8skit import K8S_DIR

SCRIPT = str(K8S_DIR / "make-certs.sh")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=60)


def test_bad_arguments_are_refused_naming_them(tmp_path: Path) -> None:
    for args, named in [
        (["--apiserver", "10.0.0.1"], "--apiserver: 10.0.0.1 is not HOST:PORT"),
        (["--apiserver", ":6443"], "--apiserver: :6443 is not HOST:PORT"),
        (["--days", "ten"], "--days: ten is not a number"),
        (["--frobnicate"], "unknown argument --frobnicate"),
    ]:
        proc = run("--out", str(tmp_path / "site"), *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert named in proc.stderr, proc.stderr
    assert not (tmp_path / "site").exists()


def test_second_run_keeps_the_ca_and_renews_the_leaves(tmp_path: Path) -> None:
    site = tmp_path / "site"
    assert run("--out", str(site), "--apiserver", "[fd00::10]:6443").returncode == 0
    ca, certs = (site / "ca" / "ca.crt").read_text(), (site / "typha-certs.yaml").read_text()
    endpoint = yaml.safe_load((site / "kubernetes-services-endpoint.yaml").read_text())
    assert endpoint["data"] == {
        "KUBERNETES_SERVICE_HOST": "fd00::10",
        "KUBERNETES_SERVICE_PORT": "6443",
    }
    assert oct((site / "ca" / "ca.key").stat().st_mode & 0o777) == "0o600"
    assert run("--out", str(site)).returncode == 0
    assert (site / "ca" / "ca.crt").read_text() == ca
    assert (site / "typha-certs.yaml").read_text() != certs
    # Without --apiserver the endpoint ConfigMap is gone from the kustomization and the dir.
    assert not (site / "kubernetes-services-endpoint.yaml").exists()
    assert "kubernetes-services-endpoint" not in (site / "kustomization.yaml").read_text()


def test_cni_network_config_is_a_conflist_the_plugin_accepts() -> None:
    config = yaml.safe_load((K8S_DIR / "config.yaml").read_text())
    text = config["data"]["cni_network_config"]
    for placeholder, value in {
        "__KUBERNETES_NODE_NAME__": "node-1",
        "__FELIX_SOCKET__": "/var/run/calico/felix.sock",
        "__IPAM_SOCKET__": "/var/run/calico/ipam.sock",
    }.items():
        text = text.replace(placeholder, value)
    conflist = json.loads(text)
    plugin = {
        **conflist["plugins"][0],
        "cniVersion": conflist["cniVersion"],
        "name": conflist["name"],
    }
    conf = parse(json.dumps(plugin).encode(), "ADD")
    assert (conf.nodename, conf.mtu) == ("node-1", 0)  # MTU: Felix's
    assert conf.ipam_socket == "/var/run/calico/ipam.sock"
