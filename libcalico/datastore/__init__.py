"""Datastore access: the contract (api), the backends, and `connect` to pick one from config."""

from __future__ import annotations

from libcalico.config import DatastoreConfig
from libcalico.datastore.api import (
    Datastore,
    DatastoreError,
    DatastoreUnavailableError,
    EventType,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    ListResult,
    ResyncRequiredError,
    RevisionConflictError,
    TxnOp,
    TxnOpType,
    WatchEvent,
)

__all__ = [
    "Datastore",
    "DatastoreError",
    "DatastoreUnavailableError",
    "EventType",
    "KeyExistsError",
    "KeyNotFoundError",
    "KeyValue",
    "ListResult",
    "ResyncRequiredError",
    "RevisionConflictError",
    "TxnOp",
    "TxnOpType",
    "WatchEvent",
    "connect",
]


async def connect(config: DatastoreConfig) -> Datastore:
    """Open the datastore `config` names and check it is reachable.

    Backends are imported on demand: the etcd client pulls in grpc, which short-lived
    processes using the embedded store (the CNI plugin) should not pay for.
    """
    store: Datastore
    if config.type == "embedded":
        from libcalico.datastore.embedded import EmbeddedDatastore

        store = EmbeddedDatastore(config.path)
    elif config.type == "etcdv3":
        from libcalico.datastore.etcd import EtcdDatastore

        store = EtcdDatastore(config.etcd_endpoints, tls=config.etcd_tls)
    elif config.type == "kubernetes":
        from libcalico.datastore.kubernetes import KubernetesDatastore

        store = KubernetesDatastore(config.kubeconfig)
    else:
        raise DatastoreError(f"unknown datastore type {config.type!r}")
    try:
        await store.current_revision()
    except BaseException:
        await store.close()
        raise
    return store
