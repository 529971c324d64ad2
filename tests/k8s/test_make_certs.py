"""k8s/make-certs.sh without a cluster: bad arguments are refused naming them, a second run
keeps the CA, and the CNI network config in calico-config is a conflist the plugin accepts."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import yaml

from cni_client.cni.netconf import parse
from tests.fixtures.etcd_certs import make_etcd_certs
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


def test_etcd_secret_from_the_given_files(tmp_path: Path) -> None:
    certs = make_etcd_certs(tmp_path / "etcd")
    site = tmp_path / "site"
    etcd = ["--etcd-ca", str(certs.ca), "--etcd-cert", str(certs.client_cert)]
    for args, named in [
        (etcd, "--etcd-key is missing"),
        ([*etcd, "--etcd-key", str(tmp_path / "gone.key")], f"--etcd-key: cannot read {tmp_path}"),
        ([*etcd, "--etcd-key", str(certs.server_key)], "is not the key of --etcd-cert"),
        (["--etcd-ca", str(certs.server_key), "--etcd-cert", str(certs.client_cert),
          "--etcd-key", str(certs.client_key)], "--etcd-ca: "),
    ]:  # fmt: skip
        proc = run("--out", str(site), *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert named in proc.stderr, proc.stderr
    assert not site.exists()
    proc = run("--out", str(site), *etcd, "--etcd-key", str(certs.client_key))
    assert proc.returncode == 0, proc.stderr
    secret = yaml.safe_load((site / "etcd-certs.yaml").read_text())
    assert secret["metadata"] == {"name": "calico-etcd-secrets", "namespace": "calico-system"}
    assert {k: base64.b64decode(v) for k, v in secret["data"].items()} == {
        "etcd-ca": certs.ca.read_bytes(),
        "etcd-cert": certs.client_cert.read_bytes(),
        "etcd-key": certs.client_key.read_bytes(),
    }
    assert "etcd-certs.yaml" in (site / "kustomization.yaml").read_text()
    # Renewing Typha's certificates later keeps the etcd Secret (its files are the user's).
    assert run("--out", str(site)).returncode == 0
    assert yaml.safe_load((site / "etcd-certs.yaml").read_text()) == secret
    assert "etcd-certs.yaml" in (site / "kustomization.yaml").read_text()
