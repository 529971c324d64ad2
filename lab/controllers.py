"""A lab-owned calico-kube-controllers: one per lab (not per node), for etcd labs with an API
server (`--datastore etcdv3 --kube-apiserver`), where it copies Pods, Namespaces, service
accounts, NetworkPolicies and Nodes from the API into etcd.

Like etcd and Typha it runs in the lab network's namespace, where both the API server and
etcd listen; it reads the API as the `calico-kube-controllers` user (lab/rbac.py). Callers
must already be inside that namespace.
"""

from __future__ import annotations

import sys
import time

from lab import rbac
from lab.daemons import DaemonError, find_program
from lab.lab import Lab
from lab.processes import ProcessRecord, is_alive, log_tail, start_detached, stop

PROGRAM = "calico-kube-controllers"
RECORD = "kube-controllers"  # its key in state.infra
LOG_FILE = "kube-controllers.log"
START_GRACE = 1.0  # a process that survives this long got past parsing its configuration


class ControllersError(RuntimeError):
    pass


def environment(lab: Lab) -> dict[str, str]:
    """etcd as the datastore, the API server as its source."""
    return {
        **lab.datastore_env(),
        "KUBECONFIG": str(lab.state.kube["kubeconfigs"][rbac.CONTROLLERS_USER]),
    }


def start(lab: Lab) -> ProcessRecord:
    argv = [find_program(PROGRAM)]
    record = start_detached(PROGRAM, argv, lab.dir / LOG_FILE, env=environment(lab))
    lab.state.infra[RECORD] = record
    lab.save()
    deadline = time.monotonic() + START_GRACE
    while time.monotonic() < deadline:
        if not is_alive(record):
            stop(record)
            raise ControllersError(f"{PROGRAM} exited during start-up:\n{log_tail(record.log)}")
        time.sleep(0.05)
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
