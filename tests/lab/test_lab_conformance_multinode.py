"""The public conformance cases on a 3-node lab (issues 10 and 11, "Done when" 1): the nine
pods spread round-robin over the nodes, so most probes cross nodes.

Both files (one lab for both) on nftables + embedded three ways: with the full BGP mesh; over
VXLAN without BGP (vxlanMode Always); and with CrossSubnet on two subnets (node-1 and node-3 on
one, node-2 on the other: pods on node-1 and node-3 talk plainly, with node-2 through VXLAN);
then over VXLAN on iptables, and with a route reflector on iptables + etcd and on nftables +
etcd + Typha (Typha then feeds every node's Felix and calico-bgpd). CI runs the sample on each
(every case runs on 3 nodes in test_lab_conformance_kube.py); CALICO_CONFORMANCE_FULL=1 runs
every case on each (test_lab_conformance_public.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lab.test_lab_conformance_public import FULL, run_public_cases

pytestmark = pytest.mark.netns

THREE_NODES = ("--nodes", "3")


def test_public_cases_three_nodes_mesh(needs_bgp: None, lab_dir: Path, tmp_path: Path) -> None:
    run_public_cases(
        lab_dir,
        tmp_path,
        FULL,
        *THREE_NODES,
        *("--bgp", "mesh", "--dataplane", "nftables", "--datastore", "embedded"),
    )


@pytest.mark.parametrize(
    "options",
    [
        ("--encap", "vxlan", "--dataplane", "nftables"),
        ("--encap", "vxlan-crosssubnet", "--subnets", "2", "--dataplane", "nftables"),
        ("--encap", "vxlan", "--dataplane", "iptables"),
    ],
    ids=["vxlan", "vxlan-crosssubnet-2-subnets", "vxlan-iptables"],
)
def test_public_cases_three_nodes_vxlan_without_bgp(
    needs_services: None, lab_dir: Path, tmp_path: Path, options: tuple[str, ...]
) -> None:
    """No calico-bgpd: Felix routes the blocks, through vxlan.calico (Always) or, with
    CrossSubnet, plainly to the node on the same subnet and through VXLAN across."""
    run_public_cases(lab_dir, tmp_path, FULL, *THREE_NODES, *options, "--bgp", "none")


@pytest.mark.parametrize(
    "options",
    [
        ("--dataplane", "iptables", "--datastore", "etcdv3"),
        ("--dataplane", "nftables", "--datastore", "etcdv3", "--typha"),
    ],
    ids=["iptables-etcd", "nftables-etcd-typha"],
)
def test_public_cases_three_nodes_route_reflector(
    needs_bgp: None, lab_dir: Path, tmp_path: Path, options: tuple[str, ...]
) -> None:
    run_public_cases(lab_dir, tmp_path, FULL, *THREE_NODES, "--bgp", "rr", *options)
