"""A real kube-apiserver for the tests in this folder: one per module, on loopback.

kube_api  module; a running lab.apiserver.ApiServer (admin, plus `nobody`, a user with a token
          and no rights), stopped by PID and its work dir removed afterwards. Skips, printing
          why, when scripts/build-kube.sh has not built the binaries (no Go toolchain).
crds      module; kube_api with Calico's CRDs installed (k8s/crds/calico-crds.yaml).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.apiserver import ApiServer, install_calico_crds, start, stop_server
from tests.kube.kubekit import NO_RIGHTS_USER, kube_binaries_missing


@pytest.fixture(scope="module")
def kube_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    reason = kube_binaries_missing()
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    server = start(tmp_path_factory.mktemp("kube") / "apiserver", users={NO_RIGHTS_USER: []})
    try:
        yield server
    finally:
        report = stop_server(server)
        assert not report.problems, report.problems


@pytest.fixture(scope="module")
def crds(kube_api: ApiServer) -> ApiServer:
    install_calico_crds(kube_api)
    return kube_api
