"""The services run as their own service accounts against the real API server, with the
RBAC of k8s/rbac.yaml: what they do at start-up and in their main job succeeds (no 403
anywhere in their logs), in-cluster configuration included. Typha's run is in
test_typha_tls.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from calico.ipam.v1 import ipam_pb2, ipam_pb2_grpc
from lab.apiserver import ApiServer
from libcalico.datastore import DatastoreError, kubeconfig
from libcalico.datastore.kube_client import KubeClient
from tests.ipam.daemons import spawn_daemon, stop_daemon, wait_ready
from tests.k8s.k8skit import NAMESPACE, kubectl, rendered, sa_kubeconfig
from tests.kube.kubekit import kubectl_json

BIN = Path(sys.executable).parent


def _config_data(install: Path) -> dict[str, str]:
    config = next(o for o in rendered(install) if o["metadata"]["name"] == "calico-config")
    return dict(config["data"])


def _init_container(install: Path, name: str) -> dict[str, Any]:
    node = next(o for o in rendered(install) if o["kind"] == "DaemonSet")
    spec = node["spec"]["template"]["spec"]
    return next(c for c in spec["initContainers"] if c["name"] == name)


def _container_env(container: dict[str, Any], config: dict[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet would set it from calico-config."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "configMapKeyRef" in item.get("valueFrom", {}):
            env[item["name"]] = config[item["valueFrom"]["configMapKeyRef"]["key"]]
    return env


def test_default_pool_init_container_makes_the_pool_once(
    kube_api: ApiServer, installed: Path, tmp_path: Path
) -> None:
    container = _init_container(installed, "default-pool")
    config = _config_data(installed)
    env = {
        **os.environ,
        **_container_env(container, config),
        "KUBECONFIG": str(sa_kubeconfig(kube_api, "calico-node", tmp_path / "kc")),
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    outputs = []
    for _ in range(2):  # the first node makes it; the next finds it
        run = subprocess.run(
            container["command"], env=env, capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stdout + run.stderr
        outputs.append(run.stdout)
    assert "exists" not in outputs[0] and "IPPool default-ipv4-ippool exists" in outputs[1]
    pool = kubectl_json(kube_api, "get", "ippools.crd.projectcalico.org", config["ipv4_pool_name"])
    spec = pool["spec"]
    assert spec["cidr"] == config["ipv4_pool_cidr"]
    assert spec["blockSize"] == int(config["ipv4_pool_block_size"])
    assert spec["vxlanMode"] == config["ipv4_pool_vxlan"]
    assert spec["ipipMode"] == config["ipv4_pool_ipip"]
    assert spec["natOutgoing"] is True


async def test_ipamd_assigns_as_calico_node(
    kube_api: ApiServer, installed: Path, tmp_path: Path
) -> None:
    if not kubectl(kube_api, "get", "ippools.crd.projectcalico.org", "-o", "name").strip():
        kubectl(kube_api, "apply", "-f", "-", stdin=POOL)
    kubectl(kube_api, "apply", "-f", "-", stdin=NODE)
    env = {
        "DATASTORE_TYPE": "kubernetes",
        "KUBECONFIG": str(sa_kubeconfig(kube_api, "calico-node", tmp_path / "kc")),
    }
    daemon = spawn_daemon("k8s-node-1", tmp_path, env)
    try:
        await wait_ready(daemon)
        async with daemon.channel() as channel:
            stub = ipam_pb2_grpc.IpamStub(channel)
            reply = await stub.AutoAssign(
                ipam_pb2.AutoAssignRequest(num_ipv4=2, handle_id="k8s-pod-network.abc"),
                timeout=30,
            )
            assert len(reply.ipv4) == 2
            released = await stub.ReleaseByHandle(
                ipam_pb2.ReleaseByHandleRequest(handle_id="k8s-pod-network.abc"), timeout=30
            )
            assert released is not None
    finally:
        stop_daemon(daemon)
    assert "Forbidden" not in daemon.log(), daemon.log()
    blocks = kubectl(kube_api, "get", "ipamblocks.crd.projectcalico.org", "-o", "name")
    assert blocks.strip(), "no IPAMBlock was written"


POOL = """{"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
 "metadata": {"name": "default-ipv4-ippool"},
 "spec": {"cidr": "192.168.0.0/16", "blockSize": 26, "nodeSelector": "all()"}}"""
NODE = """{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "k8s-node-1"}}"""


@pytest.fixture
def kube_controllers(kube_api: ApiServer, installed: Path, tmp_path: Path) -> Iterator[Path]:
    """calico-kube-controllers as its Deployment runs it, as its own account; its log."""
    log = tmp_path / "kube-controllers.log"
    env = {
        **os.environ,
        "DATASTORE_TYPE": "kubernetes",
        "KUBECONFIG": str(sa_kubeconfig(kube_api, "calico-kube-controllers", tmp_path / "kc")),
        "ENABLED_CONTROLLERS": "node",
        "CALICO_LEASE_NAMESPACE": NAMESPACE,
        "CALICO_LEADER_IDENTITY": "calico-kube-controllers-test",
        "CALICO_KUBE_CONTROLLERS_SOCKET": str(tmp_path / "kc.sock"),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "calico-kube-controllers")], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def test_kube_controllers_leads_and_runs_as_its_account(
    kube_api: ApiServer, kube_controllers: Path
) -> None:
    deadline = time.monotonic() + 60
    holder, running = "", ""
    while time.monotonic() < deadline:
        lease = kube_api.kubectl(
            [
                "get",
                "lease",
                "calico-kube-controllers",
                "-n",
                NAMESPACE,
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ]
        )
        holder = lease.stdout.strip() if lease.returncode == 0 else ""
        config = kube_api.kubectl(
            [
                "get",
                "kubecontrollersconfigurations.crd.projectcalico.org",
                "default",
                "-o",
                "jsonpath={.status.runningConfig.controllers}",
            ]
        )
        running = config.stdout.strip() if config.returncode == 0 else ""
        if holder and "node" in running:
            break
        time.sleep(0.5)
    log = kube_controllers.read_text(errors="replace")
    assert holder == "calico-kube-controllers-test", log[-3000:]
    assert "node" in running, log[-3000:]
    assert "Forbidden" not in log and "forbidden" not in log, log[-3000:]


async def test_in_cluster_config_uses_the_pod_service_account(
    kube_api: ApiServer, installed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the kubelet mounts into a calico-node pod, and the endpoint ConfigMap's variables.
    account = tmp_path / "serviceaccount"
    account.mkdir()
    token = kubectl(kube_api, "create", "token", "calico-node", "-n", NAMESPACE).strip()
    (account / "token").write_text(token)
    (account / "ca.crt").write_bytes(kube_api.ca_file.read_bytes())
    monkeypatch.setattr(kubeconfig, "SERVICE_ACCOUNT_DIR", str(account))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", kube_api.address)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(kube_api.port))
    client = KubeClient()
    try:
        assert client.connection.server == kube_api.url
        items, _ = await client.list("/api/v1/namespaces")
        assert NAMESPACE in {i["metadata"]["name"] for i in items}
        with pytest.raises(DatastoreError, match="secrets"):
            await client.list(f"/api/v1/namespaces/{NAMESPACE}/secrets")
    finally:
        await client.close()
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    with pytest.raises(DatastoreError, match="KUBERNETES_SERVICE_HOST"):
        kubeconfig.in_cluster_connection(account_dir=str(account))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", kube_api.address)
    with pytest.raises(DatastoreError, match="service account"):
        kubeconfig.in_cluster_connection(account_dir=str(tmp_path / "missing"))
