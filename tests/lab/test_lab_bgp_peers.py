"""A 3-node lab with a real top-of-rack router, BIRD and GoBGP (issue 10, "Done when" 2).

One lab per ToR kind (module-scoped, brought up by the CLI as a user would): the ToR learns
every node's block with that node as next hop; a prefix it announces lands in every node's
kernel; a BGPFilter on the `tor` BGPPeer rejects it; `disableBGPExport` on the pool withdraws
the blocks; a borrowed address is reachable through its /32; a node's second block, emptied,
is released and its route withdrawn everywhere. Each test leaves the lab as it found it,
except the borrowing ones, which run last on a lab reconfigured for them (see `borrowing`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lab.labkit import (
    PODS,
    LabCli,
    force_down,
    host_snapshot,
    lab_namespaces,
    make_cli,
    missing_bgp,
    missing_programs,
    require_root,
)

pytestmark = pytest.mark.netns

NODES = {"node-1": "10.66.0.11", "node-2": "10.66.0.12", "node-3": "10.66.0.13"}
TOR_ADDRESS = "10.66.0.1"
TOR_PREFIX = "10.99.0.0/24"
LAB_POOL = "lab-pool"
CONVERGE = 15.0  # seconds any route change may take to show everywhere
GOBGPD = "/usr/bin/gobgpd"

# Borrowing: a pool of /31 blocks (two addresses), two blocks per node at most. A node
# already holds its lab-pool /26, so in this pool it claims one block and then borrows.
BORROW_POOL = "borrow-pool"
BORROW_CIDR = "10.67.0.0/24"
BORROW_BLOCK_SIZE = 31
MAX_BLOCKS_PER_HOST = 2
# calico-ipamd caches pools and the IPAM configuration this long (services/ipam/main.py).
IPAM_CACHE_SECONDS = 1.0


@dataclass
class PeersLab:
    kind: str  # the ToR: bird or gobgp
    state_dir: Path
    files: Path  # resource files for calicoctl (outside the state dir, which `down` checks)
    cli: LabCli
    pod_ips: dict[str, str] = field(default_factory=dict)

    def netns(self, node: str) -> str:
        return f"clab-{self.state_dir.name}-{node}"

    def apply(self, name: str, *objects: Mapping[str, Any]) -> None:
        """`calicoctl apply -f` of `objects`, as a user does."""
        path = self.files / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all([dict(o) for o in objects]))
        self.cli("calicoctl", "apply", "-f", str(path))

    def get(self, kind: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(
            self.cli("calicoctl", "get", kind, name, "-o", "json").stdout
        )
        return obj

    def tor_learned(self) -> dict[str, list[str]]:
        from lab import tor

        return tor.learned(self.kind, self.state_dir)

    def blocks(self) -> list[dict[str, Any]]:
        """IPAM blocks as `calicoctl ipam show --show-blocks -o json` lists them."""
        out = self.cli("calicoctl", "ipam", "show", "--show-blocks", "-o", "json").stdout
        blocks: list[dict[str, Any]] = json.loads(out)["blocks"]
        return blocks

    def run_pod(self, key: str, node: str) -> str:
        out = self.cli("pod", "run", key, "--node", node, "--serve", "tcp:80").stdout
        assert out.split()[-1] == node, out
        self.pod_ips[key] = out.split()[1]
        return self.pod_ips[key]

    def probe(self, source: str, target: str) -> bool:
        args = ("probe", source, target, "--port", "80", "--protocol", "tcp")
        return self.cli(*args, check=False).returncode == 0


def kernel_routes(netns: str) -> dict[str, str]:
    """Destination -> next hop ("via 10.66.0.12"), or the route's type ("blackhole", "dev
    caliX") for routes without one, of a node's main IPv4 table."""
    out = subprocess.run(
        ["ip", "-n", netns, "-j", "-4", "route", "show"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    routes = {}
    for route in json.loads(out):
        if route["dst"] == "default":
            continue
        dst = str(ipaddress.ip_network(route["dst"]))
        if "gateway" in route:
            routes[dst] = f"via {route['gateway']}"
        elif route.get("type", "unicast") != "unicast":
            routes[dst] = route["type"]
        else:
            routes[dst] = f"dev {route.get('dev', '?')}"
    return routes


def wait_until(check: Callable[[], object], what: str, timeout: float = CONVERGE) -> float:
    """Poll `check` until it returns something truthy; returns the seconds it took. On
    timeout the assertion shows what `check` returned last."""
    started = time.monotonic()
    while True:
        last = check()
        if last:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"not within {timeout:.0f}s: {what}"
        time.sleep(0.2)


def block_of(ip: str, prefix: int = 26) -> str:
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def _skip(reason: str) -> None:
    print(f"SKIP: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module", params=["bird", "gobgp"])
def lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PeersLab]:
    require_root()
    missing = missing_programs() + missing_bgp()
    if missing:
        _skip(f"a lab with BGP needs: {', '.join(missing)}")
    kind = str(request.param)
    if kind == "gobgp" and not os.access(GOBGPD, os.X_OK):
        _skip(f"{GOBGPD} is not installed")
    # Short (Unix socket paths live under it) and distinctive: the lab and its namespaces
    # are named after it, so parallel runs never collide.
    state_dir = Path(f"/tmp/bgpp-{kind}-{secrets.token_hex(3)}")
    before = host_snapshot()
    cli = make_cli(state_dir)
    handle = PeersLab(kind, state_dir, tmp_path_factory.mktemp(f"peers-{kind}"), cli)
    try:
        started = time.monotonic()
        cli("up", "--nodes", "3", "--bgp", "mesh", "--tor", kind, timeout=180)
        for key, node in PODS.items():
            handle.run_pod(key, node)
        print(f"3 nodes + {kind} ToR up with 3 pods: {time.monotonic() - started:.1f}s")
        yield handle
        cli("down")
    finally:
        force_down(state_dir)
    assert not state_dir.exists()
    assert lab_namespaces(state_dir) == []
    assert host_snapshot() == before


def _own_blocks(lab: PeersLab) -> dict[str, str]:
    """Each pod's /26 -> its node's address (the next hop the node advertises)."""
    return {block_of(lab.pod_ips[pod]): NODES[node] for pod, node in PODS.items()}


def _learned_from_nodes(lab: PeersLab, want: Mapping[str, str]) -> bool:
    learned = lab.tor_learned()
    return all(learned.get(prefix) == [hop] for prefix, hop in want.items())


def _routes(lab: PeersLab, nodes: Iterable[str], prefix: str, route: str | None) -> bool:
    """Each of `nodes` has `route` ("via X") for `prefix` in its kernel (none: `route` None)."""
    return all(kernel_routes(lab.netns(n)).get(prefix) == route for n in nodes)


def _every_node_routes(lab: PeersLab, prefix: str, route: str | None) -> bool:
    return _routes(lab, NODES, prefix, route)


def test_tor_learns_every_block_from_its_node(lab: PeersLab) -> None:
    want = _own_blocks(lab)
    took = wait_until(lambda: _learned_from_nodes(lab, want), f"ToR learns {want}")
    print(f"{lab.kind}: ToR has every block with its node as next hop after {took:.2f}s")
    # Only the blocks: nothing else a node has (its direct or learned routes) leaks out.
    assert set(lab.tor_learned()) == set(want), lab.tor_learned()


def test_tor_prefix_reaches_every_kernel_and_a_bgp_filter_rejects_it(lab: PeersLab) -> None:
    from lab import tor

    via_tor = f"via {TOR_ADDRESS}"
    tor.announce(lab.kind, lab.state_dir, [TOR_PREFIX])
    try:
        took = wait_until(
            lambda: _every_node_routes(lab, TOR_PREFIX, via_tor), f"{TOR_PREFIX} on every node"
        )
        print(f"{lab.kind}: announced prefix in 3 kernels after {took:.2f}s")

        reject = {"cidr": TOR_PREFIX, "matchOperator": "Equal", "action": "Reject"}
        lab.apply(
            "filter",
            _resource("BGPFilter", "no-tor-prefix", {"importV4": [reject]}),
            _tor_peer(lab, filters=["no-tor-prefix"]),
        )
        took = wait_until(
            lambda: _every_node_routes(lab, TOR_PREFIX, None), "the filter removes the prefix"
        )
        print(f"{lab.kind}: BGPFilter took the prefix out of 3 kernels after {took:.2f}s")
        assert tor.announced(lab.state_dir) == [TOR_PREFIX]  # the ToR still announces it

        lab.apply("unfilter", _tor_peer(lab, filters=None))
        took = wait_until(
            lambda: _every_node_routes(lab, TOR_PREFIX, via_tor), "the prefix is back"
        )
        print(f"{lab.kind}: filter reference deleted, prefix back after {took:.2f}s")
        lab.cli("calicoctl", "delete", "bgpfilter", "no-tor-prefix")
    finally:
        tor.withdraw(lab.kind, lab.state_dir, [TOR_PREFIX])
    wait_until(lambda: _every_node_routes(lab, TOR_PREFIX, None), "the withdrawal")


def test_disable_bgp_export_withdraws_the_pool_blocks(lab: PeersLab) -> None:
    own = _own_blocks(lab)
    wait_until(lambda: _learned_from_nodes(lab, own), "every block at the ToR to start with")
    pool = lab.get("ippool", LAB_POOL)
    lab.apply("no-export", _with_spec(pool, disableBGPExport=True))
    try:
        took = wait_until(
            lambda: not set(own) & set(lab.tor_learned()), "blocks withdrawn from the ToR"
        )
        print(f"{lab.kind}: disableBGPExport withdrew the blocks from the ToR in {took:.2f}s")

        def only_own_blackholes() -> bool:
            # Each node keeps its own block (blackholed, not advertised), has no other's.
            for node, address in NODES.items():
                routes = kernel_routes(lab.netns(node))
                for block, owner in own.items():
                    expected = "blackhole" if owner == address else None
                    if routes.get(block) != expected:
                        return False
            return True

        wait_until(only_own_blackholes, "other nodes' blocks gone from every kernel")
    finally:
        lab.apply("export", _with_spec(pool, disableBGPExport=False))
    took = wait_until(lambda: _learned_from_nodes(lab, own), "blocks back at the ToR")

    def blocks_routed() -> bool:
        return all(
            kernel_routes(lab.netns(node)).get(block) == f"via {owner}"
            for node, address in NODES.items()
            for block, owner in own.items()
            if owner != address
        )

    wait_until(blocks_routed, "other nodes' blocks back in every kernel")
    print(f"{lab.kind}: export re-enabled, blocks back at the ToR after {took:.2f}s")


@dataclass
class Borrowing:
    owner_block: str  # node-1's block in the borrow pool, one address lent to node-2
    node2_block: str  # node-2's own block in the borrow pool
    borrowed: str  # b/borrower's address (node-2's pod in node-1's block)


@pytest.fixture(scope="module")
def borrowing(lab: PeersLab) -> Borrowing:
    """node-2 borrows from node-1's block.

    The lab's pods take addresses from any pool that selects their node, their node's own
    blocks first, so: a pool of /31 blocks, at most two blocks per node (IPAMConfiguration
    maxBlocksPerHost; `calicoctl ipam configure` sets only strictAffinity, so the resource is
    applied), and the lab pool selecting no node for new addresses (nodeSelector "!all()",
    which changes nothing for BGP: its blocks stay advertised). Then b/owner on node-1 claims
    a /31 (one address left), b/own1 and b/own2 on node-2 claim and fill node-2's /31, and
    b/borrower on node-2, at its block limit, borrows node-1's last address.
    """
    lab.apply(
        "borrowing",
        _resource(
            "IPAMConfiguration",
            "default",
            {"strictAffinity": False, "maxBlocksPerHost": MAX_BLOCKS_PER_HOST},
        ),
        _resource(
            "IPPool",
            BORROW_POOL,
            {
                "cidr": BORROW_CIDR,
                "blockSize": BORROW_BLOCK_SIZE,
                "ipipMode": "Never",
                "vxlanMode": "Never",
                "nodeSelector": "all()",
            },
        ),
        _with_spec(lab.get("ippool", LAB_POOL), nodeSelector="!all()"),
    )
    time.sleep(IPAM_CACHE_SECONDS + 0.2)
    # One at a time: which pod gets which address depends on the order.
    owner = lab.run_pod("b/owner", "node-1")
    own = [lab.run_pod("b/own1", "node-2"), lab.run_pod("b/own2", "node-2")]
    borrowed = lab.run_pod("b/borrower", "node-2")
    owner_block = block_of(owner, BORROW_BLOCK_SIZE)
    node2_block = block_of(own[0], BORROW_BLOCK_SIZE)
    assert block_of(own[1], BORROW_BLOCK_SIZE) == node2_block, (own, node2_block)
    return Borrowing(owner_block, node2_block, borrowed)


def _affine_blocks(lab: PeersLab, node: str) -> list[str]:
    return [b["cidr"] for b in lab.blocks() if b["affinity"] == f"host:{node}"]


def test_borrowed_address_is_reachable_through_its_host_route(
    lab: PeersLab, borrowing: Borrowing
) -> None:
    borrowed = ipaddress.ip_address(borrowing.borrowed)
    node2_blocks = _affine_blocks(lab, "node-2")
    assert not any(borrowed in ipaddress.ip_network(b) for b in node2_blocks), node2_blocks
    assert borrowing.owner_block in _affine_blocks(lab, "node-1")
    assert borrowed in ipaddress.ip_network(borrowing.owner_block)

    host_route = f"{borrowed}/32"
    via_node2 = f"via {NODES['node-2']}"
    # On the block's owner and on a third node.
    took = wait_until(
        lambda: _routes(lab, ("node-1", "node-3"), host_route, via_node2),
        f"{host_route} {via_node2} on node-1 and node-3",
    )
    print(f"{lab.kind}: {host_route} via node-2 on node-1 and node-3 after {took:.2f}s")
    # node-3 routes the rest of the block to its owner.
    assert kernel_routes(lab.netns("node-3")).get(borrowing.owner_block) == f"via {NODES['node-1']}"
    wait_until(
        lambda: lab.tor_learned().get(host_route) == [NODES["node-2"]], f"{host_route} at the ToR"
    )
    # From a third node, and from the block's owner (which blackholes the rest of the block).
    for source in ("x/c", "x/a", "b/owner"):
        wait_until(partial(lab.probe, source, "b/borrower"), f"TCP {source} -> b/borrower")


def test_emptied_second_block_is_released_and_withdrawn(
    lab: PeersLab, borrowing: Borrowing
) -> None:
    block = borrowing.node2_block
    via_node2 = f"via {NODES['node-2']}"
    others = ("node-1", "node-3")
    wait_until(lambda: _routes(lab, others, block, via_node2), f"{block} on {others} before")
    wait_until(lambda: lab.tor_learned().get(block) == [NODES["node-2"]], f"{block} at the ToR")
    # node-2 also owns its lab-pool /26 (x/b), so IPAM gives this one back when it empties.
    lab.cli("pod", "rm", "b/own1", "b/own2")
    started = time.monotonic()
    wait_until(lambda: _routes(lab, others, block, None), f"{block} withdrawn from {others}")
    wait_until(lambda: block not in lab.tor_learned(), f"{block} withdrawn from the ToR")
    print(
        f"{lab.kind}: released block withdrawn everywhere after {time.monotonic() - started:.2f}s"
    )
    assert block not in _affine_blocks(lab, "node-2")
    assert block not in kernel_routes(lab.netns("node-2"))  # its blackhole went too
    # The rest stays: node-2's /26 and its borrowed /32.
    learned = lab.tor_learned()
    assert learned.get(block_of(lab.pod_ips["x/b"])) == [NODES["node-2"]], learned
    assert learned.get(f"{borrowing.borrowed}/32") == [NODES["node-2"]], learned


# ---- resources ----


def _resource(kind: str, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": kind,
        "metadata": {"name": name},
        "spec": dict(spec),
    }


def _with_spec(obj: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """`obj` (as `calicoctl get -o json` printed it) with spec fields changed; False/None
    values remove the field."""
    spec = {k: v for k, v in {**obj["spec"], **changes}.items() if v not in (False, None)}
    return _resource(str(obj["kind"]), str(obj["metadata"]["name"]), spec)


def _tor_peer(lab: PeersLab, filters: list[str] | None) -> dict[str, Any]:
    """The lab's `tor` BGPPeer with `filters` (None: none)."""
    return _with_spec(lab.get("bgppeer", "tor"), filters=filters)
