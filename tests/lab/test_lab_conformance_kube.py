"""The public conformance files with the lab on the Kubernetes API (issue 12, "Done when" 1):
namespaces, pods, label changes and Kubernetes NetworkPolicies go through the API server,
Calico kinds through calicoctl's path into the datastore.

Every case of both files runs on the kubernetes datastore with nftables on 3 nodes (the BGP
mesh): the one combination CI runs every case on. The sample runs on the kubernetes datastore
through Typha (one node), and on etcd with `--kube-apiserver` (calico-kube-controllers copying
the API's objects into etcd) on one and on three nodes; CALICO_CONFORMANCE_FULL=1 runs every
case there too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lab.kubelabkit import MODES, require_kube
from tests.lab.test_lab_conformance_public import FULL, run_public_cases

pytestmark = pytest.mark.netns


def test_every_public_case_kubernetes_nftables_three_nodes(
    needs_bgp: None, lab_dir: Path, tmp_path: Path
) -> None:
    """The one combination CI runs every case of both files on."""
    require_kube("kubernetes")
    options = ("--nodes", "3", "--bgp", "mesh", "--dataplane", "nftables", *MODES["kubernetes"])
    run_public_cases(lab_dir, tmp_path, True, *options)


@pytest.mark.parametrize(
    ("mode", "options"),
    [
        ("kubernetes", ("--typha",)),
        ("etcd-kube-apiserver", ()),
        ("etcd-kube-apiserver", ("--nodes", "3", "--bgp", "mesh")),
    ],
    ids=["kubernetes-typha", "etcd-kube-apiserver", "etcd-kube-apiserver-3-nodes"],
)
def test_public_cases_on_the_api(
    needs_bgp: None, lab_dir: Path, tmp_path: Path, mode: str, options: tuple[str, ...]
) -> None:
    require_kube(mode)
    run_public_cases(lab_dir, tmp_path, FULL, "--dataplane", "nftables", *MODES[mode], *options)
