"""A lab-owned calico-kube-controllers: one per lab (not per node), for etcd labs with an API
server (`--datastore etcdv3 --kube-apiserver`), where it copies Pods, Namespaces, service
accounts, NetworkPolicies and Nodes from the API into etcd.

Like etcd and Typha it runs in the lab network's namespace, where both the API server and
etcd listen; it reads the API as the `calico-kube-controllers` user (lab/rbac.py). Callers
must already be inside that namespace.
"""

from __future__ import annotations

import sys

from lab import rbac
from lab.daemons import DaemonError, find_program, launch_daemon, wait_listening
from lab.lab import Lab
from lab.processes import ProcessRecord

PROGRAM = "calico-kube-controllers"
RECORD = "kube-controllers"  # its key in state.infra
LOG_FILE = "kube-controllers.log"
SOCKET_FILE = "kube-controllers.sock"


class ControllersError(RuntimeError):
    pass


def environment(lab: Lab) -> dict[str, str]:
    """etcd as the datastore, the API server as its source."""
    return {
        **lab.datastore_env(),
        "KUBECONFIG": str(lab.state.kube["kubeconfigs"][rbac.CONTROLLERS_USER]),
    }


def start(lab: Lab) -> ProcessRecord:
    """Start it and wait until it serves on its socket (gRPC health and status)."""
    sock = lab.dir / SOCKET_FILE
    record = launch_daemon(
        PROGRAM, ["--socket", str(sock)], sock, lab.dir / LOG_FILE, environment(lab)
    )
    lab.state.infra[RECORD] = record
    lab.save()
    try:
        wait_listening(record, sock)
    except DaemonError as exc:
        raise ControllersError(str(exc)) from None
    return record


def start_if_present(lab: Lab) -> ProcessRecord | None:
    """Start it when the program is installed; else say so on stderr and go on (the lab then
    has no copy of the Kubernetes objects in etcd)."""
    try:
        find_program(PROGRAM)
    except DaemonError:
        print(
            f"calico-lab: warning: {PROGRAM} is not installed: Kubernetes objects written to "
            "the API server are not copied into etcd",
            file=sys.stderr,
        )
        return None
    return start(lab)
