"""A lab as its commands see it: the recorded state, its nodes, entering its namespaces.

    lab = Lab.load(state_dir)
    lab.enter()                      # the first node's namespace: daemons, datastore
    lab.node("node-2").cni_config()

Bringing a lab up and down is `lab/cluster.py`; this module only reads and names things, so
every other part (pods, probes, conformance, BGP) can import it without import cycles.
"""

from __future__ import annotations

from pathlib import Path

from lab import netns, objects, rbac
from lab.node import LabNode
from lab.state import LabState, LabStateError, PodState

DEFAULT_POOL = "10.65.0.0/16"
DEFAULT_POOL_NAME = "lab-pool"
DATASTORES = ("embedded", "etcdv3", "kubernetes")
DATAPLANES = ("nftables", "iptables", "iptables-legacy")
# How pod traffic crosses between nodes: routed as is (none), in VXLAN (vxlan), or in VXLAN
# only between nodes on different subnets (vxlan-crosssubnet); Felix programs the overlay.
# The value is the lab pool's vxlanMode.
VXLAN_MODES = {"none": "Never", "vxlan": "Always", "vxlan-crosssubnet": "CrossSubnet"}
ENCAPS = tuple(VXLAN_MODES)


class LabError(RuntimeError):
    pass


class Lab:
    def __init__(self, state: LabState) -> None:
        self.state = state
        self.nodes = [LabNode(n, state.state_dir) for n in state.nodes]

    @classmethod
    def load(cls, state_dir: Path) -> Lab:
        return cls(LabState.load(state_dir))

    @property
    def dir(self) -> Path:
        return self.state.state_dir

    @property
    def pods_dir(self) -> Path:
        return self.dir / "pods"

    def node(self, name: str | None = None) -> LabNode:
        """A node by name (default: the first); LabError naming the lab's nodes otherwise."""
        try:
            wanted = self.state.node(name)
        except LabStateError:
            known = ", ".join(n.name for n in self.nodes) or "none"
            lab = self.state.name
            raise LabError(f"no node {name!r} in lab {lab!r} (nodes: {known})") from None
        return next(n for n in self.nodes if n.state is wanted)

    def save(self) -> None:
        self.state.save()

    def enter(self, target: str | None = None) -> None:
        """Move this thread into a lab namespace: by default the first node's, where the
        CLI talks to the datastore from (an etcd on the lab network is reachable there)."""
        target = target or self.node().netns
        if not netns.exists(target):
            raise LabError(f"the lab's namespace {target} is gone; run `calico-lab down`")
        netns.enter(target)

    def datastore_env(self) -> dict[str, str]:
        """The datastore as the lab CLI and calicoctl use it (on the kubernetes datastore:
        admin's kubeconfig)."""
        return objects.datastore_env(self.state.datastore)

    def daemon_env(self) -> dict[str, str]:
        """The datastore as Calico's daemons use it: on the kubernetes datastore, as the
        `calico-node` user with only its RBAC rights (lab/rbac.py), not as admin."""
        env = self.datastore_env()
        if "KUBECONFIG" in env:
            env["KUBECONFIG"] = str(self.state.kube["kubeconfigs"][rbac.NODE_USER])
        return env

    def pod(self, key: str) -> PodState:
        try:
            return self.state.pods[key]
        except KeyError:
            raise LabError(f"no pod {key} in lab {self.state.name!r}") from None


def netns_prefix(lab_name: str) -> str:
    return f"clab-{lab_name}"
