"""The node's control plane: etcd and kube-apiserver (lab/apiserver.py), the controller
manager and the scheduler, each under its own identity.

The API server listens on the node's address (layout.NODE_ADDRESS, on its own link) at a
fixed port, so pods reach it there and manifests can name it (no kube-proxy serves the
`kubernetes` Service's cluster IP); the lease endpoint reconciler keeps that Service's
endpoints at that address. For `kubectl exec/logs` it presents a client certificate the
kubelet trusts (signed by the node's own CA, O=system:masters). Ordinary pods need the
controller manager (the `default` ServiceAccount, the `kube-root-ca.crt` ConfigMap);
DaemonSets and Deployments need the scheduler.

Identities, by static token: the kubelet is `system:node:<node>` in `system:nodes` (the Node
authorizer), the controller manager and the scheduler are the users the API server's
bootstrap RBAC binds (`system:kube-controller-manager`, `system:kube-scheduler`).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab import apiserver
from lab.apiserver import ApiServer, free_port
from lab.kubenode import layout
from lab.kubenode.tools import Tools
from lab.processes import ProcessRecord, start_detached

KUBELET_USER = f"system:node:{layout.NODE_NAME}"
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"
SCHEDULER_USER = "system:kube-scheduler"


class ControlPlaneError(RuntimeError):
    pass


@dataclass
class Pki:
    """The node's CA (the kubelet trusts clients it signed) and the API server's client cert."""

    ca_cert: Path
    ca_key: Path
    apiserver_client_cert: Path
    apiserver_client_key: Path


def _openssl(*args: str) -> None:
    proc = subprocess.run(
        ["openssl", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args)}: {proc.stderr.strip()}")


def make_pki(directory: Path) -> Pki:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    pki = Pki(
        directory / "ca.crt",
        directory / "ca.key",
        directory / "apiserver-kubelet-client.crt",
        directory / "apiserver-kubelet-client.key",
    )
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        "-keyout", str(pki.ca_key), "-out", str(pki.ca_cert), "-subj", "/CN=calico-lab-kube-ca",
    )  # fmt: skip
    csr = directory / "apiserver-kubelet-client.csr"
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes",
        "-keyout", str(pki.apiserver_client_key), "-out", str(csr),
        "-subj", "/O=system:masters/CN=kube-apiserver-kubelet-client",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(pki.ca_cert), "-CAkey", str(pki.ca_key),
        "-CAcreateserial", "-days", "30", "-out", str(pki.apiserver_client_cert),
    )  # fmt: skip
    return pki


def start_apiserver(work: Path, pki: Pki, on_started: Callable[[ProcessRecord], None]) -> ApiServer:
    """etcd + kube-apiserver on NODE_ADDRESS:APISERVER_PORT, ready."""
    return apiserver.start(
        work,
        address=layout.NODE_ADDRESS,
        port=layout.APISERVER_PORT,
        users={
            KUBELET_USER: ["system:nodes"],
            CONTROLLER_MANAGER_USER: [],
            SCHEDULER_USER: [],
        },
        on_started=on_started,
        extra_args=[
            f"--kubelet-client-certificate={pki.apiserver_client_cert}",
            f"--kubelet-client-key={pki.apiserver_client_key}",
            # The node's name does not resolve: reach the kubelet at its InternalIP.
            "--kubelet-preferred-address-types=InternalIP",
            "--allow-privileged=true",  # calico-node is a privileged DaemonSet
            # Later than lab/apiserver.py's `none`, so this one counts: the `kubernetes`
            # Service's endpoints name the node's address, reachable from pods.
            "--endpoint-reconciler-type=lease",
        ],
    )


def _component_argv(binary: str, kubeconfig: Path) -> list[str]:
    return [
        "nice", "-n", "10", binary,
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={free_port('127.0.0.1')}",
        "--leader-elect=false",
    ]  # fmt: skip


def start_controller_manager(tools: Tools, server: ApiServer, work: Path) -> ProcessRecord:
    kubeconfig = server.write_kubeconfig(
        work / "controller-manager.kubeconfig", CONTROLLER_MANAGER_USER
    )
    argv = [
        *_component_argv(tools.kube_controller_manager, kubeconfig),
        # Each controller under its own service account, as on a real cluster.
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={Path(server.work_dir) / 'sa.key'}",
        f"--root-ca-file={server.ca_file}",
        f"--service-cluster-ip-range={layout.SERVICE_RANGE}",
    ]
    return start_detached("kube-controller-manager", argv, work / "controller-manager.log")


def start_scheduler(tools: Tools, server: ApiServer, work: Path) -> ProcessRecord:
    kubeconfig = server.write_kubeconfig(work / "scheduler.kubeconfig", SCHEDULER_USER)
    argv = _component_argv(tools.kube_scheduler, kubeconfig)
    return start_detached("kube-scheduler", argv, work / "scheduler.log")


def wait_for_pods_prerequisites(server: ApiServer, timeout: float = 60.0) -> None:
    """Until the controller manager has made what every pod mounts: the `default`
    ServiceAccount and the `kube-root-ca.crt` ConfigMap (here, in namespace default)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        account = server.kubectl(["get", "serviceaccount", "default", "-n", "default"])
        ca = server.kubectl(["get", "configmap", "kube-root-ca.crt", "-n", "default"])
        if account.returncode == 0 and ca.returncode == 0:
            return
        time.sleep(0.2)
    raise ControlPlaneError(
        f"no default ServiceAccount or kube-root-ca.crt after {timeout:.0f} s: "
        "is kube-controller-manager running (controller-manager.log)?"
    )
