"""A real kube-apiserver (RBAC on) per module, and the manifests prepared for it.

kube_api   module; a running lab.apiserver.ApiServer, stopped by PID afterwards. Skips,
           printing why, when scripts/build-kube.sh has not built the binaries.
install    module; k8s/ copied with its site/ made by make-certs.sh for kube_api.
installed  module; install applied for real with `kubectl apply -k` (CRDs Established).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.apiserver import ApiServer, start, stop_server
from tests.k8s.k8skit import kubectl, prepare_install
from tests.kube.kubekit import kube_binaries_missing


@pytest.fixture(scope="module")
def kube_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    reason = kube_binaries_missing()
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    # Privileged containers refused (kubeadm's allows them): the install needs none, and
    # every dry run and apply here proves it (tests/k8s/test_privileges.py).
    server = start(
        tmp_path_factory.mktemp("kube") / "apiserver", extra_args=["--allow-privileged=false"]
    )
    try:
        yield server
    finally:
        report = stop_server(server)
        assert not report.problems, report.problems


@pytest.fixture(scope="module")
def install(kube_api: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_install(kube_api, tmp_path_factory.mktemp("install"))


@pytest.fixture(scope="module")
def installed(kube_api: ApiServer, install: Path) -> Path:
    kubectl(kube_api, "apply", "-k", str(install))
    kubectl(kube_api, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    return install
