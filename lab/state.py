"""The lab's record of what it made: one JSON file in the lab's state directory.

Everything `down` must undo is written here the moment it exists (namespaces, PIDs, sockets,
pods), so a crashed command still leaves a complete record to clean up from.

State directory: --state-dir, else $CALICO_LAB_STATE, else /run/calico-lab/<lab name>.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.processes import ProcessRecord

DEFAULT_ROOT = Path("/run/calico-lab")
DEFAULT_LAB_NAME = "default"
STATE_ENV = "CALICO_LAB_STATE"
STATE_FILE = "state.json"
LOCK_FILE = "state.lock"


class LabStateError(RuntimeError):
    pass


def resolve_state_dir(state_dir: str | None, lab_name: str | None) -> Path:
    if state_dir:
        return Path(state_dir).resolve()
    env = os.environ.get(STATE_ENV)
    if env:
        return Path(env).resolve()
    return DEFAULT_ROOT / (lab_name or DEFAULT_LAB_NAME)


@dataclass
class PodState:
    namespace: str
    name: str
    node: str
    netns: str
    container_id: str
    labels: dict[str, str] = field(default_factory=dict)
    serve: list[str] = field(default_factory=list)  # "tcp:80", ...
    ips: list[str] = field(default_factory=list)  # bare addresses
    host_interface: str = ""
    server: ProcessRecord | None = None
    # Its Ready condition, as a readiness probe would set it (`calico-lab pod ready`); a
    # not-ready pod stays in its EndpointSlices with ready=false (lab/endpointslices.py).
    ready: bool = True

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def ip(self) -> str:
        return self.ips[0] if self.ips else ""

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "node": self.node,
            "netns": self.netns,
            "container_id": self.container_id,
            "labels": self.labels,
            "serve": self.serve,
            "ips": self.ips,
            "host_interface": self.host_interface,
            "server": self.server.to_json() if self.server else None,
            "ready": self.ready,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PodState:
        server = data.get("server")
        return cls(
            namespace=str(data["namespace"]),
            name=str(data["name"]),
            node=str(data["node"]),
            netns=str(data["netns"]),
            container_id=str(data["container_id"]),
            labels=dict(data.get("labels") or {}),
            serve=list(data.get("serve") or []),
            ips=list(data.get("ips") or []),
            host_interface=str(data.get("host_interface") or ""),
            server=ProcessRecord.from_json(server) if server else None,
            ready=bool(data.get("ready", True)),
        )


@dataclass
class NodeState:
    """One node: its namespace and the daemons serving it (processes: calico-ipamd,
    calico-felix and, with BGP, calico-bgpd and the BIRD it runs)."""

    name: str
    netns: str
    address: str = ""  # on the lab network (eth0)
    pool_cidrs: list[str] = field(default_factory=list)
    processes: dict[str, ProcessRecord] = field(default_factory=dict)
    sockets: dict[str, str] = field(default_factory=dict)  # service -> unix socket path
    cni_bin_dir: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "netns": self.netns,
            "address": self.address,
            "pool_cidrs": self.pool_cidrs,
            "processes": {k: v.to_json() for k, v in self.processes.items()},
            "sockets": self.sockets,
            "cni_bin_dir": self.cni_bin_dir,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NodeState:
        return cls(
            name=str(data["name"]),
            netns=str(data["netns"]),
            address=str(data.get("address") or ""),
            pool_cidrs=list(data.get("pool_cidrs") or []),
            processes={
                k: ProcessRecord.from_json(v) for k, v in (data.get("processes") or {}).items()
            },
            sockets=dict(data.get("sockets") or {}),
            cni_bin_dir=str(data.get("cni_bin_dir") or ""),
        )


@dataclass
class LabState:
    name: str
    state_dir: Path
    # type, path, etcd_endpoints, kubeconfig (admin's, on the kubernetes datastore)
    datastore: dict[str, Any] = field(default_factory=dict)
    dataplane: str | None = None
    # Processes serving the whole lab rather than one node (a lab-owned etcd).
    infra: dict[str, ProcessRecord] = field(default_factory=dict)
    # The lab network's namespace (bridge, gateway, infra processes).
    network_netns: str = ""
    nodes: list[NodeState] = field(default_factory=list)
    pods: dict[str, PodState] = field(default_factory=dict)
    # host:port of the lab's Typha ("" when Felix reads the datastore directly).
    typha: str = ""
    # "mesh", "rr" or "none" (no calico-bgpd on the nodes).
    bgp: str = "none"
    # The top-of-rack router, when there is one: {"kind": "bird"|"gobgp", "asn": 65000};
    # its process is infra["tor"].
    tor: dict[str, Any] = field(default_factory=dict)
    # "none", "vxlan" or "vxlan-crosssubnet": the lab pool's encapsulation between nodes.
    encap: str = "none"
    # How many node subnets the lab network routes between (lab/network.py).
    subnets: int = 1
    # The outside host (--internet), when there is one: {"netns": ..., "address":
    # "198.51.100.1", "port": 80}; its server is infra["outside-server"].
    outside: dict[str, Any] = field(default_factory=dict)
    # The lab's Kubernetes API server, when it runs one (lab/kubeapi.py): address, port,
    # work_dir, etcd_url, netns, kubeconfig (admin's), kubeconfigs (user -> path); its two
    # processes are infra["kube-etcd"] and infra["kube-apiserver"].
    kube: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.state_dir / STATE_FILE

    def node(self, name: str | None = None) -> NodeState:
        if not self.nodes:
            raise LabStateError(f"lab {self.name!r} has no node")
        if name is None:
            return self.nodes[0]
        for node in self.nodes:
            if node.name == name:
                return node
        raise LabStateError(f"lab {self.name!r} has no node {name!r}")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "datastore": self.datastore,
            "dataplane": self.dataplane,
            "infra": {k: v.to_json() for k, v in self.infra.items()},
            "network_netns": self.network_netns,
            "typha": self.typha,
            "bgp": self.bgp,
            "tor": self.tor,
            "encap": self.encap,
            "subnets": self.subnets,
            "outside": self.outside,
            "kube": self.kube,
            "nodes": [n.to_json() for n in self.nodes],
            "pods": {k: p.to_json() for k, p in self.pods.items()},
        }

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True))
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, state_dir: Path) -> LabState:
        path = state_dir / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise LabStateError(f"no lab at {state_dir} (run `calico-lab up` first)") from None
        return cls(
            name=str(data["name"]),
            state_dir=state_dir,
            datastore=dict(data.get("datastore") or {}),
            dataplane=data.get("dataplane"),
            infra={k: ProcessRecord.from_json(v) for k, v in (data.get("infra") or {}).items()},
            network_netns=str(data.get("network_netns") or ""),
            typha=str(data.get("typha") or ""),
            bgp=str(data.get("bgp") or "none"),
            tor=dict(data.get("tor") or {}),
            encap=str(data.get("encap") or "none"),
            subnets=int(data.get("subnets") or 1),
            outside=dict(data.get("outside") or {}),
            kube=dict(data.get("kube") or {}),
            nodes=[NodeState.from_json(n) for n in data.get("nodes") or []],
            pods={k: PodState.from_json(v) for k, v in (data.get("pods") or {}).items()},
        )

    @staticmethod
    def exists(state_dir: Path) -> bool:
        return (state_dir / STATE_FILE).exists()


@contextlib.contextmanager
def locked(state_dir: Path, create: bool = False) -> Iterator[None]:
    """Serialise commands that change one lab (two `pod run`s at once, say).

    Without `create` the lab must exist. Whatever happens, a directory left without a state
    file (a failed `up`, a finished `down`) is removed with its lock file.
    """
    if not create and not LabState.exists(state_dir):
        raise LabStateError(f"no lab at {state_dir} (run `calico-lab up` first)")
    created = not state_dir.exists()
    state_dir.mkdir(parents=True, exist_ok=True)
    lock_path = state_dir / LOCK_FILE
    try:
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    finally:
        if not LabState.exists(state_dir):
            with contextlib.suppress(FileNotFoundError):
                lock_path.unlink()
            with contextlib.suppress(OSError):
                if created or not any(state_dir.iterdir()):
                    state_dir.rmdir()
