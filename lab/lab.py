"""A lab: its state, its nodes, and bringing it up and down.

    lab = bring_up(state_dir, name, datastore="embedded", dataplane=None)
    ...
    bring_down(state_dir)

Every step is recorded in the state file the moment it has an effect, and `bring_down` undoes
whatever the record names, so a failed `up` is cleaned by the same code as a normal `down`.
The calling process enters the first node's namespace (`Lab.enter`) before talking to the
datastore or the daemons: an etcd on that namespace's loopback is reachable only from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from pathlib import Path

from lab import etcd, netns, network, objects
from lab import typha as lab_typha
from lab.node import LabNode
from lab.processes import stop
from lab.state import DEFAULT_ROOT, LabState, LabStateError, NodeState, PodState

DEFAULT_POOL = "10.65.0.0/16"
DEFAULT_POOL_NAME = "lab-pool"
DATASTORES = ("embedded", "etcdv3")
DATAPLANES = ("nftables", "iptables", "iptables-legacy")
# What the lab may create in its state directory; `down` removes only these.
STATE_ENTRIES = (
    "state.json",
    "state.tmp",
    "calico.db",
    "calico.db-wal",
    "calico.db-shm",
    "etcd-data",
    "etcd.log",
    "typha.log",
    "typha.ready",
    "nodes",
    "pods",
)


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
        wanted = self.state.node(name)
        return next(n for n in self.nodes if n.state is wanted)

    def save(self) -> None:
        self.state.save()

    def enter(self, target: str | None = None) -> None:
        """Move this thread into a lab namespace: by default the first node's, where the
        daemons run and from where the datastore is reachable."""
        target = target or self.node().netns
        if not netns.exists(target):
            raise LabError(f"the lab's namespace {target} is gone; run `calico-lab down`")
        netns.enter(target)

    def datastore_env(self) -> dict[str, str]:
        return objects.datastore_env(self.state.datastore)

    def pod(self, key: str) -> PodState:
        try:
            return self.state.pods[key]
        except KeyError:
            raise LabError(f"no pod {key} in lab {self.state.name!r}") from None


def netns_prefix(lab_name: str) -> str:
    return f"clab-{lab_name}"


def bring_up(
    state_dir: Path,
    name: str,
    datastore: str = "embedded",
    dataplane: str | None = None,
    pool_cidr: str = DEFAULT_POOL,
    node_name: str = "node-1",
    typha: bool = False,
) -> Lab:
    """Create the node namespace, the datastore and the daemons; on failure undo it all."""
    if datastore not in DATASTORES:
        raise LabError(f"--datastore: expected one of {', '.join(DATASTORES)}")
    if dataplane is not None and dataplane not in DATAPLANES:
        raise LabError(f"--dataplane: expected one of {', '.join(DATAPLANES)}")
    if LabState.exists(state_dir):
        raise LabError(f"a lab is already up at {state_dir} (`calico-lab down` first)")
    prefix = netns_prefix(name)
    node_state = NodeState(
        name=node_name,
        netns=f"{prefix}-{node_name}",
        address=str(network.node_address(0)),
        pool_cidrs=[pool_cidr],
    )
    state = LabState(
        name=name,
        state_dir=state_dir,
        dataplane=dataplane,
        nodes=[node_state],
        network_netns=f"{prefix}-net",
    )
    for ns in (state.network_netns, node_state.netns):
        if netns.exists(ns):
            raise LabError(f"network namespace {ns} exists but no lab records it")
    if datastore == "embedded":
        state.datastore = {"type": "embedded", "path": str(state_dir / "calico.db")}
    else:
        state.datastore = {
            "type": "etcdv3",
            "etcd_endpoints": [etcd.endpoint(str(network.GATEWAY))],
        }
    lab = Lab(state)
    lab.save()
    try:
        network.create(state.network_netns)
        node = lab.node()
        node.create_namespace()
        network.attach(state.network_netns, node.netns, node.name, network.node_address(0))
        if datastore == "etcdv3":
            lab.enter(state.network_netns)
            state.infra["etcd"] = etcd.start(state_dir, str(network.GATEWAY))
            lab.save()
        if typha:
            lab.enter(state.network_netns)
            state.infra["typha"] = lab_typha.start(
                state_dir, str(network.GATEWAY), lab.datastore_env()
            )
            state.typha = lab_typha.address(str(network.GATEWAY))
            lab.save()
        lab.enter()
        asyncio.run(_seed_datastore(lab, pool_cidr))
        try:
            node.start_daemons(lab.datastore_env(), dataplane, typha=state.typha)
        finally:
            lab.save()
        node.install_cni()
        lab.save()
    except BaseException:
        with contextlib.suppress(Exception):
            bring_down(state_dir)
        raise
    return lab


async def _seed_datastore(lab: Lab, pool_cidr: str) -> None:
    async with objects.resource_client(lab.state.datastore) as client:
        await client.apply_all(
            [objects.ippool(DEFAULT_POOL_NAME, pool_cidr)]
            + [objects.node(n.name) for n in lab.nodes],
            "apply",
        )


def bring_down(state_dir: Path, graceful: bool = True) -> list[str]:
    """Remove everything the lab's record names; returns problems (empty when all is gone).

    Graceful: enter the node's namespace and release each pod through CNI DEL first. Not
    graceful (test finalizers, which must not move their own thread): skip that; the
    namespaces, processes and datastore go anyway.
    """
    lab = Lab.load(state_dir)
    problems: list[str] = []
    inside = False
    if graceful:
        with contextlib.suppress(Exception):
            lab.enter()
            inside = True
    if inside and lab.state.pods:
        from lab.pods import remove_pods  # pods imports this module

        try:
            asyncio.run(remove_pods(lab, list(lab.state.pods), delete_objects=False))
        except Exception as exc:
            # Not a leftover: the namespaces and the datastore below go regardless.
            print(f"calico-lab: warning: CNI DEL during down: {exc}", file=sys.stderr)
    for pod in list(lab.state.pods.values()):
        if pod.server is not None and not stop(pod.server):
            problems.append(f"pod server of {pod.key} (pid {pod.server.pid}) survived")
        with contextlib.suppress(netns.NetnsError):
            netns.delete(pod.netns)
        if netns.exists(pod.netns):
            problems.append(f"network namespace {pod.netns} remains")
        else:
            del lab.state.pods[pod.key]
    for node in lab.nodes:
        problems += [f"{s} survived" for s in node.stop_daemons()]
    # Typha after the Felixes reading from it, etcd after Typha: reverse start order.
    for name, record in reversed(list(lab.state.infra.items())):
        if stop(record):
            del lab.state.infra[name]
        else:
            problems.append(f"{name} (pid {record.pid}) survived")
    for ns in [n.netns for n in lab.nodes] + [lab.state.network_netns]:
        if not ns:
            continue
        with contextlib.suppress(netns.NetnsError):
            netns.delete(ns)
        if netns.exists(ns):
            problems.append(f"network namespace {ns} remains")
    if problems:
        lab.save()
        return problems
    for entry in STATE_ENTRIES:
        path = state_dir / entry
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    with contextlib.suppress(FileNotFoundError):
        (state_dir / "state.lock").unlink()
    with contextlib.suppress(OSError):
        os.rmdir(state_dir)
    if state_dir.parent == DEFAULT_ROOT:
        with contextlib.suppress(OSError):
            os.rmdir(DEFAULT_ROOT)  # only when no other lab is left
    return problems


def require_lab(state_dir: Path) -> Lab:
    try:
        return Lab.load(state_dir)
    except LabStateError as exc:
        raise LabError(str(exc)) from None
