"""Fixtures for calico-kube-controllers: a real API server and etcd, and replica processes.

kube_api    package; a real kube-apiserver on loopback (lab.apiserver), with Calico's CRDs,
            stopped by PID at the end. Skips, printing why, when the binaries are missing.
kube        function; tests.controllers.kit.KubeApi over it
etcd_env    function; DATASTORE_TYPE=etcdv3 + the session etcd (wiped) for a process
replicas    function; a factory of ControllersProcess (etcd mode unless told), every one
            stopped by PID after the test, also when it fails
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from lab.apiserver import ApiServer, install_calico_crds, missing_binaries, start, stop_server
from libcalico.config import DatastoreConfig
from tests.controllers.kit import ControllersProcess, KubeApi

Replicas = Callable[..., ControllersProcess]


@pytest.fixture(scope="package")
def kube_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    reason = missing_binaries()
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    server = start(tmp_path_factory.mktemp("kube") / "apiserver")
    try:
        install_calico_crds(server)
        yield server
    finally:
        report = stop_server(server)
        assert not report.problems, report.problems


@pytest.fixture
def kube(kube_api: ApiServer) -> KubeApi:
    return KubeApi(kube_api)


@pytest.fixture
def etcd_env(etcd_config: DatastoreConfig) -> dict[str, str]:
    return {"DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": ",".join(etcd_config.etcd_endpoints)}


@pytest.fixture
def replicas(tmp_path: Path, kube_api: ApiServer, etcd_env: dict[str, str]) -> Iterator[Replicas]:
    made: list[ControllersProcess] = []

    def make(
        name: str = "kc",
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        datastore_env: Mapping[str, str] | None = None,
        start: bool = True,
    ) -> ControllersProcess:
        process = ControllersProcess(tmp_path, kube_api, datastore_env or etcd_env, name, args, env)
        made.append(process)
        return process.start() if start else process

    yield make
    for process in made:
        process.stop()
