"""Building a pod's WorkloadEndpoint and keeping it in the datastore.

The endpoint is the record of a plumbed pod: the CNI ADD writes it, label changes rewrite it,
DEL removes it, and a restarted Felix finds its endpoints again by listing this node's.
Writes are compare-and-swap on the revision Felix last wrote, so a concurrent writer is
noticed rather than overwritten blindly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from libcalico.datastore import (
    Datastore,
    KeyExistsError,
    KeyNotFoundError,
    RevisionConflictError,
)
from libcalico.datastore import keys as dskeys
from libcalico.resources.serialization import to_json_bytes
from services.felix.endpoints.naming import workload_endpoint_name
from services.felix.model import (
    LABEL_NAMESPACE,
    LABEL_NAMESPACE_NAME,
    LABEL_ORCHESTRATOR,
    LABEL_SERVICE_ACCOUNT,
    NAMESPACE_LABEL_PREFIX,
    NAMESPACE_PROFILE_PREFIX,
    ORCHESTRATOR_K8S,
    SERVICE_ACCOUNT_PROFILE_PREFIX,
    EndpointID,
    WorkloadEndpoint,
)
from services.felix.pod_cache import DEFAULT_SERVICE_ACCOUNT, NamespaceInfo, PodInfo

log = logging.getLogger(__name__)

PLURAL = "workloadendpoints"
MAX_WRITE_ATTEMPTS = 5


def endpoint_labels(
    namespace: str, pod: PodInfo | None, ns: NamespaceInfo | None
) -> dict[str, str]:
    """Pod labels, the namespace's labels as `pcns.<key>`, and Calico's automatic labels.

    The pod's own labels win over copied namespace labels (as profile labels lose to
    endpoint labels in Calico); the automatic labels win over both.
    """
    labels: dict[str, str] = {}
    if ns is not None:
        labels.update({NAMESPACE_LABEL_PREFIX + k: v for k, v in ns.labels.items()})
    labels[NAMESPACE_LABEL_PREFIX + LABEL_NAMESPACE_NAME] = namespace
    if pod is not None:
        labels.update(pod.labels)
    labels[LABEL_NAMESPACE] = namespace
    labels[LABEL_ORCHESTRATOR] = ORCHESTRATOR_K8S
    service_account = pod.service_account if pod is not None else DEFAULT_SERVICE_ACCOUNT
    if service_account:
        labels[LABEL_SERVICE_ACCOUNT] = service_account
    return labels


def build_workload_endpoint(
    *,
    node: str,
    endpoint_id: EndpointID,
    host_interface: str,
    pod_mac: str,
    ip_networks: Sequence[str],
    pod: PodInfo | None,
    namespace: NamespaceInfo | None,
) -> WorkloadEndpoint:
    """The endpoint for a plumbed pod. A pod missing from the datastore still gets one,
    with only the automatic labels and the default service account."""
    ns = endpoint_id.namespace
    service_account = pod.service_account if pod is not None else DEFAULT_SERVICE_ACCOUNT
    profiles = [NAMESPACE_PROFILE_PREFIX + ns]
    if service_account:
        profiles.append(f"{SERVICE_ACCOUNT_PROFILE_PREFIX}{ns}.{service_account}")
    return WorkloadEndpoint(
        namespace=ns,
        name=workload_endpoint_name(node, endpoint_id.pod, endpoint_id.interface_name),
        node=node,
        pod=endpoint_id.pod,
        endpoint=endpoint_id.interface_name,
        container_id=endpoint_id.container_id,
        ip_networks=tuple(ip_networks),
        interface_name=host_interface,
        mac=pod_mac,
        profiles=tuple(profiles),
        ports=pod.ports if pod is not None else (),
        service_account=service_account,
        labels=endpoint_labels(ns, pod, namespace),
    )


def relabelled(
    wep: WorkloadEndpoint, pod: PodInfo | None, namespace: NamespaceInfo | None
) -> WorkloadEndpoint:
    """The same endpoint with labels, ports and service account from the current objects."""
    fresh = build_workload_endpoint(
        node=wep.node,
        endpoint_id=wep.endpoint_id(),
        host_interface=wep.interface_name,
        pod_mac=wep.mac,
        ip_networks=wep.ip_networks,
        pod=pod,
        namespace=namespace,
    )
    return dataclasses.replace(fresh, uid=wep.uid, creation_timestamp=wep.creation_timestamp)


def wep_key(namespace: str, name: str) -> str:
    return dskeys.resource_key(dskeys.GROUP_CALICO, PLURAL, name, namespace)


def _encode(wep: WorkloadEndpoint) -> bytes:
    # The format ResourceClient stores (canonical JSON, no resourceVersion), so calicoctl
    # reads these like any other resource. Written directly: one datastore op per ADD.
    return to_json_bytes(wep.to_resource())


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class WorkloadEndpointStore:
    """WorkloadEndpoints in the datastore; revisions are returned to the caller to keep."""

    def __init__(self, datastore: Datastore) -> None:
        self._datastore = datastore

    async def create_or_replace(self, wep: WorkloadEndpoint) -> tuple[WorkloadEndpoint, int]:
        """Write a fresh endpoint (replacing a stale one of the same name).

        Returns the endpoint as stored (with uid and creation time) and its revision.
        """
        key = wep_key(wep.namespace, wep.name)
        fresh = dataclasses.replace(wep, uid=str(uuid.uuid4()), creation_timestamp=_now_rfc3339())
        for _ in range(MAX_WRITE_ATTEMPTS):
            try:
                return fresh, (await self._datastore.create(key, _encode(fresh))).mod_revision
            except KeyExistsError:
                pass
            try:
                current = await self._datastore.get(key)
                # A new container is a new object: it gets a new uid too.
                kv = await self._datastore.update(key, _encode(fresh), current.mod_revision)
                return fresh, kv.mod_revision
            except (KeyNotFoundError, RevisionConflictError):
                continue
        raise RevisionConflictError(key, 0, None)

    async def update(self, wep: WorkloadEndpoint, revision: int) -> int | None:
        """Rewrite an endpoint Felix wrote at `revision`.

        When someone else changed it meanwhile, the write still goes ahead if the stored one
        is for the same container (Felix owns its endpoints); None when the stored endpoint
        is gone or belongs to another container (leave it to its owner).
        """
        key = wep_key(wep.namespace, wep.name)
        value = _encode(wep)
        for _ in range(MAX_WRITE_ATTEMPTS):
            try:
                return (await self._datastore.update(key, value, revision)).mod_revision
            except RevisionConflictError:
                stored = await self.get(wep.namespace, wep.name)
                if stored is None or stored[0].container_id != wep.container_id:
                    return None
                revision = stored[1]
            except KeyNotFoundError:
                return None
        raise RevisionConflictError(key, revision, None)

    async def get(self, namespace: str, name: str) -> tuple[WorkloadEndpoint, int] | None:
        try:
            kv = await self._datastore.get(wep_key(namespace, name))
        except KeyNotFoundError:
            return None
        return WorkloadEndpoint.from_resource(json.loads(kv.value)), kv.mod_revision

    async def delete(self, wep: WorkloadEndpoint) -> bool:
        """Delete the endpoint if it is still this container's; False if gone or not ours."""
        key = wep_key(wep.namespace, wep.name)
        for _ in range(MAX_WRITE_ATTEMPTS):
            stored = await self.get(wep.namespace, wep.name)
            if stored is None or stored[0].container_id != wep.container_id:
                return False
            try:
                await self._datastore.delete(key, stored[1])
                return True
            except KeyNotFoundError:
                return False
            except RevisionConflictError:
                continue
        raise RevisionConflictError(key, 0, None)

    async def list_for_node(self, node: str) -> list[tuple[WorkloadEndpoint, int]]:
        """Every k8s endpoint whose spec.node is `node` (malformed ones are skipped)."""
        prefix = f"{dskeys.RESOURCE_PREFIX}{dskeys.GROUP_CALICO}/{PLURAL}/"
        found: list[tuple[WorkloadEndpoint, int]] = []
        for kv in (await self._datastore.list(prefix)).items:
            try:
                wep = WorkloadEndpoint.from_resource(json.loads(kv.value))
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("ignoring malformed WorkloadEndpoint at %s", kv.key)
                continue
            if wep.node == node:
                found.append((wep, kv.mod_revision))
        return found
