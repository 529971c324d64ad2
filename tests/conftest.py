"""Shared fixtures: a real etcd, datastore configs for both backends, connected datastores.

etcd_server       session; a real etcd on loopback (tests/fixtures/etcd.py), `.endpoint`
datastore_config  function; parametrized ["embedded", "etcdv3"]: a DatastoreConfig for a
                  fresh SQLite file in tmp_path, or the session etcd with /calico/ wiped
embedded_config   function; the embedded half only
etcd_config       function; the etcd half only
datastore_env     function; {DATASTORE_TYPE, CALICO_DATASTORE_PATH, ETCD_ENDPOINTS} for the
                  same store as datastore_config, to merge into a subprocess's environment
datastore         function; a connected Datastore for datastore_config, closed afterwards
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

# Make `tests.fixtures` importable however pytest was started (tests/ has no __init__.py).
_REPO_ROOT = str(Path(__file__).resolve().parents[1])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from libcalico.config import DatastoreConfig  # noqa: E402
from libcalico.datastore import Datastore, connect  # noqa: E402
from tests.fixtures.etcd import EtcdServer, running_etcd  # noqa: E402

ETCDCTL = "/usr/bin/etcdctl"
CALICO_ROOT_PREFIX = "/calico/"


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    with running_etcd() as server:
        yield server


def wipe_etcd(endpoint: str, prefix: str = CALICO_ROOT_PREFIX) -> None:
    subprocess.run(
        [ETCDCTL, f"--endpoints={endpoint}", "del", "--prefix", prefix],
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
        "ETCD_ENDPOINTS": ",".join(datastore_config.etcd_endpoints),
    }


@pytest_asyncio.fixture
async def datastore(datastore_config: DatastoreConfig) -> AsyncIterator[Datastore]:
    store = await connect(datastore_config)
    try:
        yield store
    finally:
        await store.close()
