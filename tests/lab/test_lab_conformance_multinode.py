"""The public conformance cases on a 3-node lab (issue 10, "Done when" 1): the nine pods spread
round-robin over the nodes, so most probes cross nodes over routes BGP installed.

Every case of both files runs with the full mesh on nftables + embedded; samples of
both files run with a route reflector on iptables + etcd and on nftables + etcd + Typha (Typha
then feeds every node's Felix and calico-bgpd). That keeps the multi-node additions to CI's
budget; the full matrix is run by hand (lab/README.md).
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


@pytest.mark.parametrize("cases", [K8S_CASES, CALICO_CASES], ids=["kubernetes", "calico"])
def test_every_public_case_three_nodes_mesh(
    needs_bgp: None, lab_dir: Path, tmp_path: Path, cases: Path
) -> None:
    started = time.monotonic()
    report = run_conformance(
        lab_dir,
        tmp_path,
        cases,
        *THREE_NODES,
        "--bgp",
        "mesh",
        "--dataplane",
        "nftables",
        "--datastore",
        "embedded",
    )
    assert [c["id"] for c in report["cases"]] == case_ids(cases)
    print(
        f"{cases.name} on 3 nodes (mesh): {report['summary']} in {time.monotonic() - started:.0f}s"
    )


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


def test_sample_three_nodes_vxlan_without_bgp(
    needs_services: None, lab_dir: Path, tmp_path: Path
) -> None:
    """The sample over the VXLAN overlay (issue 11): no calico-bgpd; Felix routes the blocks
    through vxlan.calico. The full files were run by hand (lab/README.md)."""
    sample = _sample_file(tmp_path)
    started = time.monotonic()
    options = ("--encap", "vxlan", "--bgp", "none", "--dataplane", "nftables")
    report = run_conformance(lab_dir, tmp_path, sample, *THREE_NODES, *options)
    assert sorted(c["id"] for c in report["cases"]) == sorted(
        case_id for ids in SAMPLE.values() for case_id in ids
    )
    print(f"sample on 3 nodes (vxlan): {report['summary']} in {time.monotonic() - started:.0f}s")
