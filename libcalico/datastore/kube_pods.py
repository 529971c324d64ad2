"""WorkloadEndpoint derived from the Pod (`.../projectcalico.org/workloadendpoints/<ns>/<name>`).

A pod has one WorkloadEndpoint when it is on a node (`spec.nodeName`), not `hostNetwork`, not
finished (phase Succeeded/Failed), and carries the CNI plugin's address annotations
`cni.projectcalico.org/podIP(s)`. Its name is Calico's `<node>-k8s-<pod>-eth0`
(libcalico/resources/names.py) and it reads:
- labels: the pod's, plus `projectcalico.org/namespace`, `projectcalico.org/orchestrator: k8s`
  and `projectcalico.org/serviceaccount`;
- spec: `ipNetworks` from `podIPs` (else `podIP`), `containerID` from
  `cni.projectcalico.org/containerID`, `mac` from `cni.projectcalico.org/podMAC` (this
  project's: Felix reads the pod-side MAC back after a restart; Calico has no such
  annotation), `interfaceName` the host veth's name, `profiles` `kns.<ns>` and `ksa.<ns>.<sa>`,
  `ports` the containers' named ports, `serviceAccountName`;
- metadata: the pod's uid and creationTimestamp. Revision = the pod's resourceVersion.

Writes are what the CNI plugin (Felix, at CNI ADD and DEL) writes, a JSON merge patch of the
pod's annotations carrying its resourceVersion (compare-and-swap):
- create: the pod must exist, on the WorkloadEndpoint's node, without an endpoint yet
  (KeyExistsError otherwise); sets the annotations;
- update/put: sets them (update only at the caller's revision);
- delete: removes them; the pod stays.
A write's labels, profiles, ports and service account are derived from the pod and ignored;
any field that cannot be stored as an annotation is refused, naming it; the endpoint must be
`eth0` (one endpoint per pod, as with Calico on Kubernetes).
Lists and watches read the pods; a pod that loses its annotations (or is deleted) is a
DELETE of its WorkloadEndpoint.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from libcalico.datastore.api import (
    DatastoreError,
    EventType,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    ListResult,
    RevisionConflictError,
    WatchEvent,
)
from libcalico.datastore.keys import GROUP_CALICO, resource_prefix
from libcalico.datastore.kube_client import MERGE_PATCH, KubeClient
from libcalico.datastore.kube_core import ApiObjects
from libcalico.datastore.kube_kinds import (
    PODS,
    KeyName,
    KindHandler,
    RepeatFilter,
    api_metadata,
    compact_json,
    decode_json_object,
    name_in_key,
    namespace_in_prefix,
)
from libcalico.resources.names import (
    ORCHESTRATOR_K8S,
    host_veth_name,
    parse_workload_endpoint_name,
    workload_endpoint_name,
)

V3_API_VERSION = "projectcalico.org/v3"
POD_IP = "cni.projectcalico.org/podIP"
POD_IPS = "cni.projectcalico.org/podIPs"
CONTAINER_ID = "cni.projectcalico.org/containerID"
POD_MAC = "cni.projectcalico.org/podMAC"
ENDPOINT_ANNOTATIONS = (POD_IP, POD_IPS, CONTAINER_ID, POD_MAC)
# Endpoint annotations are patched through the pod's status subresource, which takes metadata
# too (as Calico's CNI plugin does): calico-node then needs `patch pods/status`, never `patch
# pods` (which could change a pod's spec: image, command). See k8s/README.md, RBAC.
POD_WRITES = "/status"
POD_INTERFACE = "eth0"
DEFAULT_SERVICE_ACCOUNT = "default"
LABEL_NAMESPACE = "projectcalico.org/namespace"
LABEL_ORCHESTRATOR = "projectcalico.org/orchestrator"
LABEL_SERVICE_ACCOUNT = "projectcalico.org/serviceaccount"
FINISHED_PHASES = ("Succeeded", "Failed")
# Written by Felix, derived from the pod here: accepted on write and not stored.
DERIVED_SPEC_FIELDS = ("profiles", "ports", "serviceAccountName", "orchestrator", "workload")
STORED_SPEC_FIELDS = ("ipNetworks", "containerID", "mac")
NAMED_SPEC_FIELDS = ("node", "pod", "endpoint", "interfaceName")


def _network(text: str) -> str:
    """A pod address annotation entry as a network ("10.0.0.1" -> "10.0.0.1/32")."""
    text = text.strip()
    if "/" in text:
        return text
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text  # kept as written: consumers skip what does not parse, naming it
    return f"{address}/{address.max_prefixlen}"


def pod_networks(annotations: dict[str, Any]) -> list[str]:
    raw = str(annotations.get(POD_IPS) or annotations.get(POD_IP) or "")
    return [_network(part) for part in raw.split(",") if part.strip()]


def endpoint_key_of(pod: dict[str, Any], prefix: str) -> str | None:
    """The key of the WorkloadEndpoint a pod has or would have; None off any node."""
    metadata = api_metadata(pod)
    node = (pod.get("spec") or {}).get("nodeName")
    if not node:
        return None
    name = workload_endpoint_name(str(node), str(metadata.get("name")), POD_INTERFACE)
    return f"{prefix}{metadata.get('namespace')}/{name}"


def workload_endpoint(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The projectcalico.org/v3 WorkloadEndpoint of a pod, or None when it has none."""
    metadata = api_metadata(pod)
    spec = pod.get("spec") or {}
    annotations = metadata.get("annotations") or {}
    networks = pod_networks(annotations)
    node = spec.get("nodeName")
    if not networks or not node or spec.get("hostNetwork"):
        return None
    if (pod.get("status") or {}).get("phase") in FINISHED_PHASES:
        return None
    namespace, name = str(metadata.get("namespace")), str(metadata.get("name"))
    service_account = str(
        spec.get("serviceAccountName") or spec.get("serviceAccount") or DEFAULT_SERVICE_ACCOUNT
    )
    labels = {str(k): str(v) for k, v in (metadata.get("labels") or {}).items()}
    labels[LABEL_NAMESPACE] = namespace
    labels[LABEL_ORCHESTRATOR] = ORCHESTRATOR_K8S
    labels[LABEL_SERVICE_ACCOUNT] = service_account
    ports: list[dict[str, Any]] = []
    for container in spec.get("containers") or ():
        for port in (container or {}).get("ports") or ():
            if not isinstance(port, dict) or not port.get("name") or not port.get("containerPort"):
                continue  # only named ports matter to policy
            entry: dict[str, Any] = {
                "name": str(port["name"]),
                "protocol": str(port.get("protocol") or "TCP"),
                "port": port["containerPort"],
            }
            if port.get("hostPort"):
                entry["hostPort"] = port["hostPort"]
            if port.get("hostIP"):
                entry["hostIP"] = str(port["hostIP"])
            ports.append(entry)
    wep_spec: dict[str, Any] = {
        "orchestrator": ORCHESTRATOR_K8S,
        "node": str(node),
        "pod": name,
        "endpoint": POD_INTERFACE,
        "containerID": str(annotations.get(CONTAINER_ID) or ""),
        "ipNetworks": networks,
        "interfaceName": host_veth_name(namespace, name),
        "mac": str(annotations.get(POD_MAC) or ""),
        "profiles": [f"kns.{namespace}", f"ksa.{namespace}.{service_account}"],
    }
    if ports:
        wep_spec["ports"] = ports
    wep_spec["serviceAccountName"] = service_account
    out_meta: dict[str, Any] = {
        "name": workload_endpoint_name(str(node), name, POD_INTERFACE),
        "namespace": namespace,
        "labels": dict(sorted(labels.items())),
    }
    for field in ("uid", "creationTimestamp"):
        if metadata.get(field):
            out_meta[field] = metadata[field]
    return {
        "apiVersion": V3_API_VERSION,
        "kind": "WorkloadEndpoint",
        "metadata": out_meta,
        "spec": wep_spec,
    }


@dataclass(frozen=True, slots=True)
class EndpointRef:
    """Which pod a WorkloadEndpoint key names."""

    key: str
    namespace: str
    name: str  # the WorkloadEndpoint's
    node: str
    pod: str
    interface: str

    @property
    def pod_name(self) -> KeyName:
        return KeyName(self.pod, self.namespace)


def endpoint_annotations(ref: EndpointRef, value: bytes) -> dict[str, str | None]:
    """The pod annotations storing a written WorkloadEndpoint (None: remove the annotation);
    DatastoreError naming the key and field that cannot be stored."""
    key = ref.key
    doc = decode_json_object(key, value)
    if doc.get("apiVersion", V3_API_VERSION) != V3_API_VERSION:
        raise DatastoreError(f"{key}: apiVersion {doc.get('apiVersion')!r} is not {V3_API_VERSION}")
    if doc.get("kind", "WorkloadEndpoint") != "WorkloadEndpoint":
        raise DatastoreError(f"{key}: kind {doc.get('kind')!r} is not WorkloadEndpoint")
    metadata = doc.get("metadata") or {}
    if metadata.get("name", ref.name) != ref.name:
        raise DatastoreError(f"{key}: metadata.name {metadata.get('name')!r} differs from the key")
    if metadata.get("namespace", ref.namespace) != ref.namespace:
        raise DatastoreError(
            f"{key}: metadata.namespace {metadata.get('namespace')!r} differs from the key"
        )
    spec = doc.get("spec") or {}
    if not isinstance(spec, dict):
        raise DatastoreError(f"{key}: spec is not an object")
    expected = {
        "node": ref.node,
        "pod": ref.pod,
        "endpoint": POD_INTERFACE,
        "interfaceName": host_veth_name(ref.namespace, ref.pod),
    }
    for field, given in spec.items():
        if field in DERIVED_SPEC_FIELDS or field in STORED_SPEC_FIELDS:
            continue
        if field in expected:
            if given not in (None, "", expected[field]):
                raise DatastoreError(
                    f"{key}: spec.{field} {given!r} is not {expected[field]!r}: with the "
                    "kubernetes datastore it follows from the pod"
                )
            continue
        if given in (None, "", [], {}):
            continue
        raise DatastoreError(
            f"{key}: spec.{field} cannot be stored with the kubernetes datastore: a "
            "WorkloadEndpoint is its pod's annotations (spec.ipNetworks, spec.containerID, "
            "spec.mac); everything else follows from the pod"
        )
    if spec.get("orchestrator") not in (None, "", ORCHESTRATOR_K8S):
        raise DatastoreError(f"{key}: spec.orchestrator {spec.get('orchestrator')!r} is not k8s")
    networks = spec.get("ipNetworks")
    if not isinstance(networks, list) or not networks:
        raise DatastoreError(f"{key}: spec.ipNetworks must list the pod's addresses")
    for i, network in enumerate(networks):
        try:
            ipaddress.ip_interface(str(network))
        except ValueError:
            raise DatastoreError(f"{key}: spec.ipNetworks[{i}] {network!r} is not a CIDR") from None
    return {
        POD_IP: str(networks[0]),
        POD_IPS: ",".join(str(n) for n in networks),
        CONTAINER_ID: str(spec.get("containerID") or "") or None,
        POD_MAC: str(spec.get("mac") or "") or None,
    }


class PodEndpoints(KindHandler):
    """`.../projectcalico.org/workloadendpoints/...` served from the pods (module note)."""

    def __init__(self, client: KubeClient) -> None:
        self.prefix = resource_prefix(GROUP_CALICO, "workloadendpoints")
        self._pods = ApiObjects(client, PODS)
        self._client = client

    def _ref(self, key: str) -> EndpointRef | None:
        where = name_in_key(key, self.prefix, namespaced=True)
        assert where.namespace is not None
        parts = parse_workload_endpoint_name(where.name)
        if parts is None:
            return None
        return EndpointRef(key, where.namespace, where.name, parts.node, parts.pod, parts.interface)

    def _ref_for_write(self, key: str) -> EndpointRef:
        ref = self._ref(key)
        if ref is None:
            raise DatastoreError(
                f"{key}: not a Kubernetes pod's WorkloadEndpoint name (<node>-k8s-<pod>-eth0): "
                "with the kubernetes datastore WorkloadEndpoints are derived from pods"
            )
        if ref.interface != POD_INTERFACE:
            raise DatastoreError(
                f"{key}: endpoint {ref.interface!r}: with the kubernetes datastore a pod has one "
                f"WorkloadEndpoint, for {POD_INTERFACE}"
            )
        return ref

    def _kv(self, key: str, pod: dict[str, Any], wep: dict[str, Any]) -> KeyValue:
        revision = self._pods.revision(pod)
        return KeyValue(key, compact_json(wep), revision, revision)

    async def _current(
        self, ref: EndpointRef
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The pod and its WorkloadEndpoint (when the pod's is this key's)."""
        pod = await self._pods.read(ref.pod_name)
        if pod is None:
            return None, None
        wep = workload_endpoint(pod)
        if wep is None or wep["metadata"]["name"] != ref.name:
            return pod, None
        return pod, wep

    async def _patch(
        self, ref: EndpointRef, annotations: dict[str, str | None], revision: int
    ) -> dict[str, Any] | None:
        """Merge-patch the pod's annotations at `revision`; None on a conflict."""
        body = {"metadata": {"resourceVersion": str(revision), "annotations": annotations}}
        response = await self._client.request(
            "PATCH", self._pods.path(ref.pod_name) + POD_WRITES, body, content_type=MERGE_PATCH
        )
        if response.status == 409:
            return None
        if response.status == 404:
            raise KeyNotFoundError(ref.key)
        if response.status != 200:
            raise response.error(f"write {ref.key} (patch pod {ref.namespace}/{ref.pod})")
        return response.body

    def _no_pod(self, ref: EndpointRef) -> DatastoreError:
        return DatastoreError(
            f"write {ref.key}: pod {ref.namespace}/{ref.pod} does not exist; with the kubernetes "
            "datastore a WorkloadEndpoint is its pod's annotations"
        )

    def _check_node(self, ref: EndpointRef, pod: dict[str, Any]) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        if node != ref.node:
            raise DatastoreError(
                f"write {ref.key}: pod {ref.namespace}/{ref.pod} is on node {node!r}, not "
                f"{ref.node!r}"
            )

    def _written(self, ref: EndpointRef, pod: dict[str, Any]) -> KeyValue:
        wep = workload_endpoint(pod)
        if wep is None:
            raise DatastoreError(f"write {ref.key}: the pod has no WorkloadEndpoint after it")
        return self._kv(ref.key, pod, wep)

    async def get(self, key: str) -> KeyValue:
        ref = self._ref(key)
        if ref is None:
            raise KeyNotFoundError(key)
        pod, wep = await self._current(ref)
        if pod is None or wep is None:
            raise KeyNotFoundError(key)
        return self._kv(key, pod, wep)

    async def list(self, prefix: str) -> ListResult:
        namespace = namespace_in_prefix(prefix, self.prefix, namespaced=True)
        pods, revision = await self._pods.list(namespace)
        kvs: list[KeyValue] = []
        for pod in pods:
            wep = workload_endpoint(pod)
            if wep is None:
                continue
            key = f"{self.prefix}{wep['metadata']['namespace']}/{wep['metadata']['name']}"
            if key.startswith(prefix):
                kvs.append(self._kv(key, pod, wep))
        kvs.sort(key=lambda kv: kv.key)
        return ListResult(kvs, revision)

    async def create(self, key: str, value: bytes) -> KeyValue:
        ref = self._ref_for_write(key)
        annotations = endpoint_annotations(ref, value)
        while True:
            pod, wep = await self._current(ref)
            if pod is None:
                raise self._no_pod(ref)
            self._check_node(ref, pod)
            if wep is not None:
                raise KeyExistsError(key)
            patched = await self._patch(ref, annotations, self._pods.revision(pod))
            if patched is not None:
                return self._written(ref, patched)
            # The pod changed meanwhile (labels, status): look again.

    async def update(self, key: str, value: bytes, revision: int) -> KeyValue:
        ref = self._ref_for_write(key)
        annotations = endpoint_annotations(ref, value)
        pod, wep = await self._current(ref)
        if pod is None or wep is None:
            raise KeyNotFoundError(key)
        current = self._pods.revision(pod)
        if current != revision:
            raise RevisionConflictError(key, revision, current)
        patched = await self._patch(ref, annotations, revision)
        if patched is None:
            pod, wep = await self._current(ref)
            if pod is None or wep is None:
                raise KeyNotFoundError(key)
            raise RevisionConflictError(key, revision, self._pods.revision(pod))
        return self._written(ref, patched)

    async def put(self, key: str, value: bytes) -> KeyValue:
        ref = self._ref_for_write(key)
        annotations = endpoint_annotations(ref, value)
        while True:
            pod = await self._pods.read(ref.pod_name)
            if pod is None:
                raise self._no_pod(ref)
            self._check_node(ref, pod)
            patched = await self._patch(ref, annotations, self._pods.revision(pod))
            if patched is not None:
                return self._written(ref, patched)

    async def delete(self, key: str, revision: int | None = None) -> KeyValue:
        ref = self._ref(key)
        if ref is None:
            raise KeyNotFoundError(key)
        removal: dict[str, str | None] = dict.fromkeys(ENDPOINT_ANNOTATIONS)
        while True:
            pod, wep = await self._current(ref)
            if pod is None or wep is None:
                raise KeyNotFoundError(key)
            current = self._pods.revision(pod)
            if revision is not None and current != revision:
                raise RevisionConflictError(key, revision, current)
            if await self._patch(ref, removal, current) is not None:
                return self._kv(key, pod, wep)
            if revision is not None:
                raise RevisionConflictError(key, revision, None)

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        namespace = namespace_in_prefix(prefix, self.prefix, namespaced=True)
        repeats = RepeatFilter()
        # Keys this stream knows have no endpoint (a pod's status updates then send nothing).
        absent: set[str] = set()
        path = PODS.collection_path(namespace)
        async for event in self._client.watch(path, start_revision - 1):
            if event.type == "BOOKMARK":
                continue
            key = endpoint_key_of(event.object, self.prefix)
            if key is None or not key.startswith(prefix):
                continue
            wep = workload_endpoint(event.object)
            value = compact_json(wep) if wep is not None else None
            revision = event.resource_version
            if event.type == "DELETED":
                had = repeats.deleted(key)
                absent.discard(key)
                if wep is not None or had:
                    yield WatchEvent(EventType.DELETE, key, value, revision)
            elif value is not None:
                absent.discard(key)
                if repeats.put_is_new(key, value):
                    yield WatchEvent(EventType.PUT, key, value, revision)
            elif event.type == "ADDED":
                absent.add(key)  # a new pod has had no endpoint
            elif key not in absent:
                # The pod has none now; it may have had one before this stream started.
                repeats.deleted(key)
                absent.add(key)
                yield WatchEvent(EventType.DELETE, key, None, revision)
