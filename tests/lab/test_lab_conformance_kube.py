"""The public conformance files with the lab on the Kubernetes API (issue 12, "Done when" 1):
namespaces, pods, label changes and Kubernetes NetworkPolicies go through the API server,
Calico kinds through calicoctl's path into the datastore.

Every case of both files runs once, on the kubernetes datastore with nftables on 3 nodes
(the BGP mesh). Samples of both files run on the kubernetes datastore through Typha (one
node), and on etcd with `--kube-apiserver` (calico-kube-controllers copying the API's objects
into etcd) on one and on three nodes. That keeps the additions to CI's budget; the other
combinations are run by hand (lab/README.md).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.lab.kubelabkit import MODES, require_kube
from tests.lab.test_lab_conformance_public import (
    CALICO_CASES,
    K8S_CASES,
    SAMPLE,
    case_ids,
    run_conformance,
)

pytestmark = pytest.mark.netns


def _cases_file(tmp_path: Path, name: str, wanted: dict[Path, list[str]] | None) -> Path:
    """Cases of both public files in one file (one lab for all): every case, or `wanted`."""
    cases = [
        case
        for path in (K8S_CASES, CALICO_CASES)
        for case in json.loads(path.read_text())
        if wanted is None or case["id"] in wanted[path]
    ]
    out = tmp_path / name
    out.write_text(json.dumps(cases))
    return out


def test_every_public_case_kubernetes_nftables_three_nodes(
    needs_bgp: None, lab_dir: Path, tmp_path: Path
) -> None:
    require_kube("kubernetes")
    started = time.monotonic()
    options = ("--nodes", "3", "--bgp", "mesh", "--dataplane", "nftables", *MODES["kubernetes"])
    report = run_conformance(lab_dir, tmp_path, _cases_file(tmp_path, "all.json", None), *options)
    assert [c["id"] for c in report["cases"]] == case_ids(K8S_CASES) + case_ids(CALICO_CASES)
    took = time.monotonic() - started
    print(f"both public files, kubernetes datastore, 3 nodes: {report['summary']} in {took:.0f}s")


@pytest.mark.parametrize(
    ("mode", "options"),
    [
        ("kubernetes", ("--typha",)),
        ("etcd-kube-apiserver", ()),
        ("etcd-kube-apiserver", ("--nodes", "3", "--bgp", "mesh")),
    ],
    ids=["kubernetes-typha", "etcd-kube-apiserver", "etcd-kube-apiserver-3-nodes"],
)
def test_sample_of_cases_on_the_api(
    needs_bgp: None, lab_dir: Path, tmp_path: Path, mode: str, options: tuple[str, ...]
) -> None:
    require_kube(mode)
    sample = _cases_file(tmp_path, "sample.json", SAMPLE)
    started = time.monotonic()
    report = run_conformance(
        lab_dir, tmp_path, sample, "--dataplane", "nftables", *MODES[mode], *options
    )
    assert sorted(c["id"] for c in report["cases"]) == sorted(
        case_id for ids in SAMPLE.values() for case_id in ids
    )
    took = time.monotonic() - started
    print(f"sample ({mode} {' '.join(options)}): {report['summary']} in {took:.0f}s")
