"""Bringing a lab up and down: the network, N nodes with their daemons, the datastore, Typha,
the top-of-rack router, and BGP converged between them.

    lab = bring_up(state_dir, name, nodes=3, bgp="rr", tor="bird")
    ...
    bring_down(state_dir)

Every step is recorded in the state file the moment it has an effect, and `bring_down` undoes
whatever the record names, so a failed `up` is cleaned by the same code as a normal `down`.
The calling process ends `bring_up` inside the first node's namespace (`Lab.enter`): an etcd
or Typha on the lab network is reachable from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from lab import bgp, controllers, etcd, kubeapi, kubeobjects, netns, network, objects, outside
from lab import typha as lab_typha
from lab.lab import (
    DATAPLANES,
    DATASTORES,
    DEFAULT_POOL,
    DEFAULT_POOL_NAME,
    ENCAPS,
    VXLAN_MODES,
    Lab,
    LabError,
    netns_prefix,
)
from lab.pods import remove_pods
from lab.processes import ProcessRecord, stop
from lab.state import DEFAULT_ROOT, LabState, NodeState
from lab.store import LabStore

# The lab subnet holds 244 node addresses; a lab on a laptop is long full before that.
MAX_NODES = 32
TOR = "tor"  # its key in state.infra
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
    "outside.log",
    "outside.ready",
    "nodes",
    "pods",
    TOR,
    kubeapi.KUBE_DIR,
    kubeapi.ADMIN_KUBECONFIG,
    controllers.LOG_FILE,
    controllers.SOCKET_FILE,
)


def _check_options(
    datastore: str,
    dataplane: str | None,
    nodes: int,
    bgp_mode: str,
    tor: str | None,
    tor_asn: int,
    encap: str = "none",
    subnets: int = 1,
    kube_apiserver: bool = False,
) -> None:
    if datastore not in DATASTORES:
        raise LabError(f"--datastore: expected one of {', '.join(DATASTORES)}")
    if kube_apiserver and datastore == "embedded":
        raise LabError(
            "--kube-apiserver: only with --datastore etcdv3 (calico-kube-controllers copies "
            "the Kubernetes objects into etcd) or kubernetes (where it is implied)"
        )
    if datastore == "kubernetes" or kube_apiserver:
        from lab.apiserver import missing_binaries

        missing = missing_binaries()
        if missing:
            raise LabError(f"--datastore kubernetes / --kube-apiserver: {missing}")
    if dataplane is not None and dataplane not in DATAPLANES:
        raise LabError(f"--dataplane: expected one of {', '.join(DATAPLANES)}")
    if not 1 <= nodes <= MAX_NODES:
        raise LabError(f"--nodes: expected 1..{MAX_NODES}, got {nodes}")
    if bgp_mode not in bgp.MODES:
        raise LabError(f"--bgp: expected one of {', '.join(bgp.MODES)}")
    if not 1 <= subnets <= network.MAX_SUBNETS:
        raise LabError(f"--subnets: expected 1..{network.MAX_SUBNETS}, got {subnets}")
    if encap not in ENCAPS:
        raise LabError(f"--encap: expected one of {', '.join(ENCAPS)}")
    if tor is None:
        return
    from lab.tor import TOR_KINDS

    if tor not in TOR_KINDS:
        raise LabError(f"--tor: expected one of {', '.join(TOR_KINDS)}")
    if subnets > 1:
        # The ToR sits on the first subnet's gateway (the router): peering across it with the
        # second subnet's nodes is not modelled.
        raise LabError("--tor: only with one subnet (--subnets 1)")
    if bgp_mode == "none":
        raise LabError("--tor needs BGP on the nodes: --bgp mesh or rr, not none")
    if not 1 <= tor_asn <= 4294967295:
        raise LabError(f"--tor-asn: expected 1..4294967295, got {tor_asn}")


def bring_up(
    state_dir: Path,
    name: str,
    datastore: str = "embedded",
    dataplane: str | None = None,
    pool_cidr: str = DEFAULT_POOL,
    typha: bool = False,
    nodes: int = 1,
    bgp_mode: str | None = None,
    tor: str | None = None,
    tor_asn: int = bgp.DEFAULT_TOR_ASN,
    encap: str = "none",
    subnets: int = 1,
    internet: bool = False,
    kube_apiserver: bool = False,
    kube_apiserver_args: Sequence[str] = (),
) -> Lab:
    """Create the network, the nodes, the datastore and the daemons, start the ToR, and wait
    for BGP to converge; on failure undo it all.

    With `encap` "vxlan" ("vxlan-crosssubnet") the pool has vxlanMode Always (CrossSubnet) and
    BGP defaults to none, as Calico with VXLAN usually runs: Felix programs the routes between
    nodes. With `bgp_mode` mesh or rr as well, the blocks are still advertised over BGP but
    BIRD leaves their kernel routes to Felix (services/bgp/DESIGN.md). `subnets` 2 puts the
    nodes on two subnets the lab network routes between; `internet` adds the outside host
    (lab/network.py); over BGP, a node reaches a next hop on the other subnet through its
    default route, which BIRD learns from the kernel (services/bgp/DESIGN.md).

    `datastore` "kubernetes" runs the lab's own kube-apiserver (lab/kubeapi.py) and keeps
    Calico's data there; `kube_apiserver` with "etcdv3" runs it beside the lab's etcd, with
    calico-kube-controllers copying the Kubernetes objects into etcd. Either way Nodes,
    Namespaces, Pods and Kubernetes NetworkPolicies are API objects (lab/store.py).
    `kube_apiserver_args`: more kube-apiserver flags (a short --etcd-compaction-interval)."""
    without_bgp = encap != "none"
    mode = bgp_mode or ("none" if without_bgp else bgp.default_mode(nodes, tor is not None))
    kube_apiserver = kube_apiserver or datastore == "kubernetes"
    _check_options(datastore, dataplane, nodes, mode, tor, tor_asn, encap, subnets, kube_apiserver)
    if LabState.exists(state_dir):
        raise LabError(f"a lab is already up at {state_dir} (`calico-lab down` first)")
    prefix = netns_prefix(name)
    node_states = [
        NodeState(
            name=f"node-{i + 1}",
            netns=f"{prefix}-node-{i + 1}",
            address=str(network.node_address(i, subnets)),
            pool_cidrs=[pool_cidr],
        )
        for i in range(nodes)
    ]
    state = LabState(
        name=name,
        state_dir=state_dir,
        dataplane=dataplane,
        nodes=node_states,
        network_netns=f"{prefix}-net",
        bgp=mode,
        tor={"kind": tor, "asn": tor_asn} if tor else {},
        encap=encap,
        subnets=subnets,
    )
    if internet:
        state.outside = {
            "netns": f"{prefix}-outside",
            "address": str(network.OUTSIDE_ADDRESS),
            "port": outside.PORT,
        }
    for ns in [state.network_netns, *(n.netns for n in node_states), _outside_netns(state)]:
        if not ns:
            continue
        if netns.exists(ns):
            raise LabError(f"network namespace {ns} exists but no lab records it")
    if datastore == "embedded":
        state.datastore = {"type": "embedded", "path": str(state_dir / "calico.db")}
    elif datastore == "kubernetes":
        state.datastore = {
            "type": "kubernetes",
            "kubeconfig": str(state_dir / kubeapi.ADMIN_KUBECONFIG),
        }
    else:
        state.datastore = {
            "type": "etcdv3",
            "etcd_endpoints": [etcd.endpoint(str(network.GATEWAY))],
        }
    lab = Lab(state)
    lab.save()
    try:
        _create_network(lab)
        if kube_apiserver:
            kubeapi.start(state, lab.save, kube_apiserver_args)
        if datastore == "etcdv3":
            lab.enter(state.network_netns)
            state.infra["etcd"] = etcd.start(state_dir, str(network.GATEWAY))
            lab.save()
        if kube_apiserver and datastore == "etcdv3":
            lab.enter(state.network_netns)
            controllers.start_if_present(lab)
        if typha:
            lab.enter(state.network_netns)
            state.infra["typha"] = lab_typha.start(
                state_dir, str(network.GATEWAY), lab.daemon_env()
            )
            state.typha = lab_typha.address(str(network.GATEWAY))
            lab.save()
        lab.enter()
        asyncio.run(_seed_datastore(lab, pool_cidr))
        _start_node_daemons(lab, dataplane)
        if tor:
            lab.enter(state.network_netns)
            state.infra[TOR] = _start_tor(lab, tor, tor_asn)
            lab.save()
            lab.enter()
        if mode != "none":
            bgp.wait_converged(lab)
    except BaseException:
        with contextlib.suppress(Exception):
            bring_down(state_dir)
        raise
    return lab


def _outside_netns(state: LabState) -> str:
    return str(state.outside.get("netns") or "")


def _create_network(lab: Lab) -> None:
    """The lab network's bridges, every node's namespace plugged into its subnet's bridge,
    and the outside host with its server when the lab has one."""
    state = lab.state
    outside_ns = _outside_netns(state)
    network.create(state.network_netns, state.subnets, routes=bool(outside_ns))
    for index, node in enumerate(lab.nodes):
        node.create_namespace()
        network.attach(
            state.network_netns,
            node.netns,
            node.name,
            network.node_address(index, state.subnets),
            network.node_subnet(index, state.subnets),
        )
    network.route_external_net(state.network_netns, network.node_address(0, state.subnets))
    if outside_ns:
        network.attach_outside(state.network_netns, outside_ns, state.subnets)
        state.infra[outside.SERVER] = outside.start(lab.dir, netns.netns_path(outside_ns))
        lab.save()


def _start_node_daemons(lab: Lab, dataplane: str | None) -> None:
    """Launch every node's daemons inside its namespace at once, then wait for them all (they
    start in parallel: a 3-node lab starts about as fast as one node)."""
    env = lab.daemon_env()
    try:
        for node in lab.nodes:
            with netns.inside(node.netns_path):
                node.launch_daemons(env, dataplane, lab.state.typha, lab.state.bgp != "none")
            lab.save()
        for node in lab.nodes:
            node.wait_daemons()
            lab.save()
            node.install_cni()
    finally:
        lab.save()


def _start_tor(lab: Lab, kind: str, asn: int) -> ProcessRecord:
    from lab import tor

    neighbors = [(n.address, bgp.NODE_AS) for n in lab.nodes]
    return tor.start_tor(kind, lab.dir, asn, bgp.TOR_ADDRESS, neighbors)


async def _seed_datastore(lab: Lab, pool_cidr: str) -> None:
    """The pool, the Nodes and the BGP objects. With an API server the Kubernetes Nodes come
    first (a kubelet registers its Node before calico-node writes Calico's data, which on the
    kubernetes datastore lives in that Node's annotations), with the Calico Nodes' labels."""
    tor_asn = int(lab.state.tor["asn"]) if lab.state.tor else None
    calico_nodes = bgp.node_objects(lab.state.nodes, lab.state.bgp)
    async with LabStore(lab.state) as store:
        if store.has_api:
            await store.apply_all(
                [
                    kubeobjects.node(n["metadata"]["name"], node.address, n["metadata"]["labels"])
                    for n, node in zip(calico_nodes, lab.state.nodes, strict=True)
                ]
            )
            for node in lab.state.nodes:
                await store.kube().set_node_status(node.name, node.address)
        await store.apply_all(
            [
                objects.ippool(
                    DEFAULT_POOL_NAME,
                    pool_cidr,
                    vxlan_mode=VXLAN_MODES[lab.state.encap],
                ),
                *calico_nodes,
                *bgp.mode_objects(lab.state.bgp, tor_asn),
            ]
        )


def _stop_infra(name: str, record: ProcessRecord) -> bool:
    if name == TOR:
        from lab import tor

        return tor.stop_tor(record)
    return stop(record, timeout=kubeapi.STOP_TIMEOUTS.get(name, 5.0))


# Infra stops in this order (anything else first): readers before what they read from, the
# API server before its etcd (stopped the other way round, it waits out its 20 s timeout).
INFRA_STOP_ORDER = (
    TOR,
    outside.SERVER,
    "typha",
    controllers.RECORD,
    "etcd",
    kubeapi.APISERVER,
    kubeapi.ETCD,
)


def _stop_rank(name: str) -> int:
    return INFRA_STOP_ORDER.index(name) + 1 if name in INFRA_STOP_ORDER else 0


def bring_down(state_dir: Path, graceful: bool = True) -> list[str]:
    """Remove everything the lab's record names; returns problems (empty when all is gone).

    Graceful: enter the first node's namespace and release each pod through CNI DEL first.
    Not graceful (test finalizers, which must not move their own thread): skip that; the
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
    for name, record in sorted(lab.state.infra.items(), key=lambda item: _stop_rank(item[0])):
        if _stop_infra(name, record):
            del lab.state.infra[name]
        else:
            problems.append(f"{name} (pid {record.pid}) survived")
    namespaces = [n.netns for n in lab.nodes]
    for ns in [*namespaces, _outside_netns(lab.state), lab.state.network_netns]:
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
