"""Choosing and opening a backend from configuration; failure mapping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from libcalico.config import DatastoreConfig
from libcalico.datastore import DatastoreError, DatastoreUnavailableError, connect
from libcalico.datastore.embedded import EmbeddedDatastore
from libcalico.datastore.etcd import EtcdDatastore, parse_endpoint
from tests.fixtures.etcd import free_port


async def test_connect_picks_backend(datastore_config: DatastoreConfig) -> None:
    store = await connect(datastore_config)
    try:
        expected = EmbeddedDatastore if datastore_config.type == "embedded" else EtcdDatastore
        assert isinstance(store, expected)
        assert await store.current_revision() >= 1
    finally:
        await store.close()


async def test_datastore_env_round_trips_to_the_same_config(
    datastore_config: DatastoreConfig, datastore_env: dict[str, str]
) -> None:
    assert DatastoreConfig.from_env(datastore_env) == datastore_config


async def test_kubernetes_without_a_readable_kubeconfig_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-kubeconfig"
    with pytest.raises(DatastoreError, match=f"KUBECONFIG: cannot read {missing}"):
        await connect(DatastoreConfig(type="kubernetes", kubeconfig=str(missing)))


async def test_unreachable_kube_apiserver_is_unavailable(tmp_path: Path) -> None:
    # Nothing listens on a free loopback port: connect's first request fails to connect.
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))  # JSON is YAML
    with pytest.raises(DatastoreUnavailableError, match="kube-apiserver"):
        await connect(DatastoreConfig(type="kubernetes", kubeconfig=str(path)))


async def test_unreachable_etcd_is_unavailable() -> None:
    config = DatastoreConfig(type="etcdv3", etcd_endpoints=(f"http://127.0.0.1:{free_port()}",))
    with pytest.raises(DatastoreUnavailableError):
        await connect(config)


async def test_unusable_embedded_path_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("x")
    config = DatastoreConfig(type="embedded", path=str(tmp_path / "not-a-dir" / "calico.db"))
    with pytest.raises(DatastoreUnavailableError):
        await connect(config)


async def test_etcd_fails_over_to_next_endpoint(etcd_config: DatastoreConfig) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    store = EtcdDatastore([dead, *etcd_config.etcd_endpoints], timeout=2)
    try:
        with pytest.raises(DatastoreUnavailableError):
            await store.current_revision()
        assert await store.current_revision() >= 1
    finally:
        await store.close()


def test_parse_endpoint() -> None:
    assert parse_endpoint("http://127.0.0.1:23791") == ("127.0.0.1", 23791)
    assert parse_endpoint("localhost") == ("localhost", 2379)
    assert parse_endpoint("https://etcd:2379") == ("etcd", 2379)
    with pytest.raises(DatastoreError, match="expected http:// or https://"):
        parse_endpoint("unix://etcd")
