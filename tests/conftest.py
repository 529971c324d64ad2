"""Shared fixtures: a real etcd, datastore configs for both backends, connected datastores.

etcd_server       session; a real etcd on loopback (tests/fixtures/etcd.py), `.endpoint`
datastore_config  function; parametrized ["embedded", "etcdv3"]: a DatastoreConfig for a
                  fresh SQLite file in tmp_path, or the session etcd with /calico/ wiped
embedded_config   function; the embedded half only
etcd_config       function; the etcd half only
etcd_tls_server   session; a real etcd serving mutual TLS (tests/fixtures/etcd_certs.py), `.certs`
etcd_tls_config   function; a DatastoreConfig for it with the client certificate, /calico/ wiped
datastore_env     function; {DATASTORE_TYPE, CALICO_DATASTORE_PATH, ETCD_*} for the
                  same store as datastore_config, to merge into a subprocess's environment
datastore         function; a connected Datastore for datastore_config, closed afterwards
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

# Make `tests.fixtures` importable however pytest was started (tests/ has no __init__.py).
_REPO_ROOT = str(Path(__file__).resolve().parents[1])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from libcalico.config import DatastoreConfig, EtcdTLSFiles  # noqa: E402
from libcalico.datastore import Datastore, connect  # noqa: E402
from tests.fixtures.etcd import EtcdServer, running_etcd  # noqa: E402
from tests.fixtures.etcd_certs import EtcdCerts, make_etcd_certs  # noqa: E402

ETCDCTL = "/usr/bin/etcdctl"
CALICO_ROOT_PREFIX = "/calico/"


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    with running_etcd() as server:
        yield server


@dataclass(frozen=True)
class EtcdTLSServer:
    server: EtcdServer
    certs: EtcdCerts

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def client_tls(self) -> EtcdTLSFiles:
        certs = self.certs
        return EtcdTLSFiles(str(certs.ca), str(certs.client_cert), str(certs.client_key))


@pytest.fixture(scope="session")
def etcd_tls_server() -> Iterator[EtcdTLSServer]:
    with tempfile.TemporaryDirectory(prefix="calico-etcd-certs-") as tmp:
        certs = make_etcd_certs(Path(tmp))
        with running_etcd(tls=certs) as server:
            yield EtcdTLSServer(server, certs)


@pytest.fixture
def etcd_tls_config(etcd_tls_server: EtcdTLSServer) -> DatastoreConfig:
    wipe_etcd(etcd_tls_server.endpoint, certs=etcd_tls_server.certs)
    return DatastoreConfig(
        type="etcdv3",
        etcd_endpoints=(etcd_tls_server.endpoint,),
        etcd_tls=etcd_tls_server.client_tls(),
    )


def wipe_etcd(
    endpoint: str, prefix: str = CALICO_ROOT_PREFIX, certs: EtcdCerts | None = None
) -> None:
    tls = []
    if certs is not None:
        tls = [f"--cacert={certs.ca}", f"--cert={certs.client_cert}", f"--key={certs.client_key}"]
    subprocess.run(
        [ETCDCTL, f"--endpoints={endpoint}", *tls, "del", "--prefix", prefix],
        check=True,
        capture_output=True,
        timeout=30,
    )


@pytest.fixture
def embedded_config(tmp_path: Path) -> DatastoreConfig:
    return DatastoreConfig(type="embedded", path=str(tmp_path / "calico.db"))


@pytest.fixture
def etcd_config(etcd_server: EtcdServer) -> DatastoreConfig:
    wipe_etcd(etcd_server.endpoint)
    return DatastoreConfig(type="etcdv3", etcd_endpoints=(etcd_server.endpoint,))


@pytest.fixture(params=["embedded", "etcdv3"], ids=["embedded", "etcdv3"])
def datastore_config(request: pytest.FixtureRequest) -> DatastoreConfig:
    # getfixturevalue: etcd starts only when an etcdv3 case actually runs.
    name = "embedded_config" if request.param == "embedded" else "etcd_config"
    config: DatastoreConfig = request.getfixturevalue(name)
    return config


@pytest.fixture
def datastore_env(datastore_config: DatastoreConfig) -> dict[str, str]:
    return {
        "DATASTORE_TYPE": datastore_config.type,
        "CALICO_DATASTORE_PATH": datastore_config.path,
        **datastore_config.etcd_env(),
    }


@pytest_asyncio.fixture
async def datastore(datastore_config: DatastoreConfig) -> AsyncIterator[Datastore]:
    store = await connect(datastore_config)
    try:
        yield store
    finally:
        await store.close()
