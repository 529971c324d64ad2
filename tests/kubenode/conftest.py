"""A real single-node Kubernetes (lab/kubenode: etcd, kube-apiserver, controller manager,
scheduler, containerd, kubelet) for the tests in this folder, one per module.

kube_node  module; a KubeNode: the node's state, its API server, the host's snapshot taken
           before `up`. The tools are built (cached under ~/.cache/calico-py/tools) when
           missing: cold ~8 min on 2 cores, so set CALICO_KUBE_NO_BUILD=1 to skip instead
           (printing why) on a machine with a cold cache. `down` runs afterwards whatever
           happened (idempotent); the tests that check the host call it themselves first.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.kubenode.kubenodekit import KubeNode, bring_up, take_down


@pytest.fixture(scope="module")
def kube_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeNode]:
    if os.geteuid() != 0:
        print("SKIP: the node needs root (kubelet, containerd, host routes)")
        pytest.skip("the node needs root (kubelet, containerd, host routes)")
    node = bring_up(tmp_path_factory.mktemp("kubenode") / "state")
    try:
        yield node
    finally:
        take_down(node)
