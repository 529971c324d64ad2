"""Kubernetes Nodes -> Calico Nodes (etcd mode): created, labels kept in step.

A Kubernetes Node without a Calico Node gets one, marked as Kubernetes's with
`spec.orchRefs: [{orchestrator: k8s, nodeName}]` (what the node controller later relies on to
know the Calico Node may be removed with the Kubernetes one). On an existing Calico Node the
spec that calico-node / Felix / calico-bgpd wrote is kept; only the orchRef is added when
missing, and the labels are synced: the Kubernetes labels are copied, and labels that came from
Kubernetes earlier but are gone there now are removed, while labels set on the Calico Node
directly stay. Which labels came from Kubernetes is recorded in the annotation
`projectcalico.org/kube-labels` (JSON), as Calico does.
"""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

from libcalico.resources.client import (
    ResourceClient,
    ResourceConflictError,
    ResourceExistsError,
    ResourceNotFoundError,
)

log = logging.getLogger(__name__)

KUBE_LABELS_ANNOTATION = "projectcalico.org/kube-labels"
ORCHESTRATOR = "k8s"
ATTEMPTS = 5


def kubernetes_name(calico_node: dict[str, Any]) -> str | None:
    """The Kubernetes Node a Calico Node belongs to (its k8s orchRef), or None."""
    for ref in (calico_node.get("spec") or {}).get("orchRefs") or []:
        if isinstance(ref, dict) and ref.get("orchestrator") == ORCHESTRATOR:
            name = ref.get("nodeName")
            return str(name) if name else None
    return None


def _synced_labels(
    calico: dict[str, str], previous_kube: dict[str, str], kube: dict[str, str]
) -> dict[str, str]:
    kept = {k: v for k, v in calico.items() if k not in previous_kube}
    return {**kept, **kube}


def desired_node(
    existing: dict[str, Any] | None, kube_node: dict[str, Any], sync_labels: bool
) -> dict[str, Any] | None:
    """The Calico Node to write for a Kubernetes Node (None when nothing needs writing)."""
    meta = kube_node.get("metadata") or {}
    name = str(meta.get("name"))
    kube_labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    if existing is None:
        node: dict[str, Any] = {
            "apiVersion": "projectcalico.org/v3",
            "kind": "Node",
            "metadata": {"name": name},
            "spec": {"orchRefs": [{"orchestrator": ORCHESTRATOR, "nodeName": name}]},
        }
        if sync_labels:
            node["metadata"]["labels"] = kube_labels
            node["metadata"]["annotations"] = {
                KUBE_LABELS_ANNOTATION: json.dumps(kube_labels, sort_keys=True)
            }
        return node
    node = copy.deepcopy(existing)
    spec = node.setdefault("spec", {})
    if kubernetes_name(node) is None:
        refs = [r for r in spec.get("orchRefs") or [] if r.get("orchestrator") != ORCHESTRATOR]
        spec["orchRefs"] = [*refs, {"orchestrator": ORCHESTRATOR, "nodeName": name}]
    if sync_labels:
        metadata = node.setdefault("metadata", {})
        annotations = dict(metadata.get("annotations") or {})
        try:
            previous = json.loads(annotations.get(KUBE_LABELS_ANNOTATION) or "{}")
        except ValueError:
            previous = {}
        labels = _synced_labels(
            dict(metadata.get("labels") or {}),
            previous if isinstance(previous, dict) else {},
            kube_labels,
        )
        if labels:
            metadata["labels"] = labels
        else:
            metadata.pop("labels", None)
        annotations[KUBE_LABELS_ANNOTATION] = json.dumps(kube_labels, sort_keys=True)
        metadata["annotations"] = annotations
    return None if node == existing else node


async def sync_node(client: ResourceClient, kube_node: dict[str, Any], sync_labels: bool) -> bool:
    """Create or update the Calico Node for a Kubernetes Node; True when it wrote."""
    name = str((kube_node.get("metadata") or {}).get("name"))
    for _ in range(ATTEMPTS):
        existing: dict[str, Any] | None
        try:
            existing = await client.get("Node", name)
        except ResourceNotFoundError:
            existing = None
        wanted = desired_node(existing, kube_node, sync_labels)
        if wanted is None:
            return False
        try:
            if existing is None:
                await client.create(wanted)
                log.info("created Calico Node %s for its Kubernetes Node", name)
            else:
                await client.update(wanted)
            return True
        except (ResourceConflictError, ResourceExistsError, ResourceNotFoundError):
            continue  # written meanwhile (calico-node, Felix): read it again
    log.warning("Calico Node %s kept changing; its sync waits for the next pass", name)
    return False
