"""The public conformance cases on a 3-node lab (issues 10 and 11, "Done when" 1): the nine
pods spread round-robin over the nodes, so most probes cross nodes.

Every case of both files (one lab for both) runs on nftables + embedded three ways: with the
full BGP mesh; over VXLAN without BGP (vxlanMode Always); and with CrossSubnet on two subnets
(node-1 and node-3 on one, node-2 on the other: pods on node-1 and node-3 talk plainly, with
node-2 through VXLAN). Samples of both files run with a route reflector on iptables + etcd and
on nftables + etcd + Typha (Typha then feeds every node's Felix and calico-bgpd), and over
VXLAN on iptables. That keeps the multi-node additions to CI's budget; the full matrix is run
by hand (lab/README.md).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.lab.test_lab_conformance_public import (
    CALICO_CASES,
    K8S_CASES,
    SAMPLE,
    case_ids,
    run_conformance,
)

pytestmark = pytest.mark.netns

THREE_NODES = ("--nodes", "3")


def _both_files(tmp_path: Path) -> Path:
    """Every case of both public files in one file: one lab for all of them."""
    cases = [case for path in (K8S_CASES, CALICO_CASES) for case in json.loads(path.read_text())]
    ids = [case["id"] for case in cases]
    assert len(set(ids)) == len(ids), "the public files share a case id"
    out = tmp_path / "both.json"
    out.write_text(json.dumps(cases))
    return out


def _every_public_case(lab_dir: Path, tmp_path: Path, *options: str) -> None:
    started = time.monotonic()
    report = run_conformance(lab_dir, tmp_path, _both_files(tmp_path), *THREE_NODES, *options)
    assert [c["id"] for c in report["cases"]] == case_ids(K8S_CASES) + case_ids(CALICO_CASES)
    took = time.monotonic() - started
    print(f"both public files on 3 nodes ({' '.join(options)}): {report['summary']} in {took:.0f}s")


def test_every_public_case_three_nodes_mesh(needs_bgp: None, lab_dir: Path, tmp_path: Path) -> None:
    _every_public_case(
        lab_dir, tmp_path, "--bgp", "mesh", "--dataplane", "nftables", "--datastore", "embedded"
    )


@pytest.mark.parametrize(
    "options",
    [
        ("--encap", "vxlan"),
        ("--encap", "vxlan-crosssubnet", "--subnets", "2"),
    ],
    ids=["vxlan", "vxlan-crosssubnet-2-subnets"],
)
def test_every_public_case_three_nodes_vxlan_without_bgp(
    needs_services: None, lab_dir: Path, tmp_path: Path, options: tuple[str, ...]
) -> None:
    """No calico-bgpd: Felix routes the blocks, through vxlan.calico (Always) or, with
    CrossSubnet, plainly to the node on the same subnet and through VXLAN across."""
    _every_public_case(lab_dir, tmp_path, *options, "--bgp", "none", "--dataplane", "nftables")


def _sample_file(tmp_path: Path) -> Path:
    """The sample cases of both public files in one file: one lab for all of them."""
    cases = [
        case
        for path, ids in SAMPLE.items()
        for case in json.loads(path.read_text())
        if case["id"] in ids
    ]
    out = tmp_path / "sample.json"
    out.write_text(json.dumps(cases))
    return out


@pytest.mark.parametrize(
    "options",
    [
        ("--dataplane", "iptables", "--datastore", "etcdv3"),
        ("--dataplane", "nftables", "--datastore", "etcdv3", "--typha"),
    ],
    ids=["iptables-etcd", "nftables-etcd-typha"],
)
def test_sample_three_nodes_route_reflector(
    needs_bgp: None, lab_dir: Path, tmp_path: Path, options: tuple[str, ...]
) -> None:
    sample = _sample_file(tmp_path)
    started = time.monotonic()
    report = run_conformance(lab_dir, tmp_path, sample, *THREE_NODES, "--bgp", "rr", *options)
    assert sorted(c["id"] for c in report["cases"]) == sorted(
        case_id for ids in SAMPLE.values() for case_id in ids
    )
    print(
        f"sample on 3 nodes (rr, {' '.join(options)}): {report['summary']} "
        f"in {time.monotonic() - started:.0f}s"
    )


def test_sample_three_nodes_vxlan_iptables(
    needs_services: None, lab_dir: Path, tmp_path: Path
) -> None:
    """The sample over the VXLAN overlay on iptables (every case runs on nftables above)."""
    sample = _sample_file(tmp_path)
    started = time.monotonic()
    options = ("--encap", "vxlan", "--bgp", "none", "--dataplane", "iptables")
    report = run_conformance(lab_dir, tmp_path, sample, *THREE_NODES, *options)
    assert sorted(c["id"] for c in report["cases"]) == sorted(
        case_id for ids in SAMPLE.values() for case_id in ids
    )
    took = time.monotonic() - started
    print(f"sample on 3 nodes (vxlan, iptables): {report['summary']} in {took:.0f}s")
