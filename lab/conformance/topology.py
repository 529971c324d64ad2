"""The topology every conformance case runs on, and a step's object and label changes;
shared by the network-policy runner (runner.py) and the Services runner (svcrunner.py).

Namespaces x, y, z with the case's labels; pods a, b, c in each (labels `pod=<name>`,
serving 80 and 81 over TCP, UDP and SCTP under the named ports `serve-<port>-<proto>`),
spread round-robin over the lab's nodes in topology order. Objects a case applies are
remembered and deleted at teardown unless a step deleted them first; pods are removed through
CNI DEL, then the namespaces. Services go through lab/services.py (allocation, EndpointSlices);
everything else through lab/store.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lab import endpointslices, netns, objects, services
from lab.conformance.cases import (
    NAMESPACES,
    PODS,
    SERVED_PORTS,
    SERVED_PROTOCOLS,
    LabelChange,
    topology_placement,
    topology_pods,
)
from lab.lab import Lab
from lab.pods import PodSpec, create_pods, ensure_namespaces, remove_pods
from lab.store import LabStore

RefKey = tuple[str, str, str, str]


def delete_ref(raw: Any) -> dict[str, Any]:
    """A step's delete entry: "ns/name" is a Kubernetes NetworkPolicy; objects are as given."""
    if isinstance(raw, str):
        namespace, _, name = raw.partition("/")
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace},
        }
    return objects.ref(raw)


def ref_key(ref: Mapping[str, Any]) -> RefKey:
    meta = ref.get("metadata") or {}
    return (
        str(ref.get("apiVersion")),
        str(ref.get("kind")),
        str(meta.get("namespace") or ""),
        str(meta.get("name")),
    )


def is_service(obj: Mapping[str, Any]) -> bool:
    return obj.get("apiVersion") == "v1" and obj.get("kind") == "Service"


def node_addresses(netns_name: str) -> list[str]:
    """Every IPv4 address configured in a namespace, loopback excepted."""
    found = []
    for link in json.loads(netns.run_ip(["-4", "-j", "addr", "show"], netns=netns_name) or "[]"):
        for info in link.get("addr_info") or []:
            if info.get("family") == "inet" and not str(info.get("local", "")).startswith("127."):
                found.append(str(info["local"]))
    return found


class Topology:
    """One case's pods and objects on a running lab."""

    def __init__(self, lab: Lab, namespaces: Mapping[str, Mapping[str, str]]) -> None:
        self.lab = lab
        self.namespaces = namespaces
        self.made: dict[RefKey, dict[str, Any]] = {}
        # Every Service's cluster IP as last seen ("ns/name" -> address), deleted ones too.
        self.cluster_ips: dict[str, str] = {}

    async def setup(self) -> None:
        await ensure_namespaces(self.lab, self.namespaces)
        serve = [(proto, port) for port in SERVED_PORTS for proto in SERVED_PROTOCOLS]
        placement = topology_placement([n.name for n in self.lab.nodes])
        specs = [
            PodSpec(ns, pod, {"pod": pod}, serve, placement[f"{ns}/{pod}"])
            for ns in NAMESPACES
            for pod in PODS
        ]
        await create_pods(self.lab, specs)

    async def teardown(self) -> None:
        keys = [k for k in topology_pods() if k in self.lab.state.pods]
        errors: list[str] = []
        try:
            await remove_pods(self.lab, keys, delete_objects=True)
        except Exception as exc:
            errors.append(str(exc))
        async with LabStore(self.lab.state) as store:
            await store.delete_if_present(list(self.made.values()))
            if any(is_service(ref) for ref in self.made.values()):
                await endpointslices.sync(self.lab.state, store)
            self.made.clear()
            await store.delete_if_present(
                [
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
                    for ns in self.namespaces
                ],
            )
        if errors:
            raise RuntimeError("; ".join(errors))

    async def delete(self, store: LabStore, raw_refs: list[Any]) -> None:
        refs = [delete_ref(r) for r in raw_refs]
        plain = [r for r in refs if not is_service(r)]
        if plain:
            await store.delete_all(plain)
        for ref in refs:
            if is_service(ref):
                meta = ref["metadata"]
                if not await services.remove_service(
                    self.lab.state, store, meta["namespace"], meta["name"]
                ):
                    raise RuntimeError(f"delete: no Service {meta['namespace']}/{meta['name']}")
            self.made.pop(ref_key(ref), None)

    async def apply(self, store: LabStore, objs: list[dict[str, Any]]) -> None:
        """Create or replace in order; consecutive non-Service objects go together."""
        run: list[dict[str, Any]] = []
        for obj in [*objs, None]:
            if obj is not None and not is_service(obj):
                run.append(obj)
                continue
            if run:
                await store.apply_all(run)
                run = []
            if obj is not None:
                stored = await services.apply_service(self.lab.state, store, obj)
                self.cluster_ips[services.key_of(stored)] = services.cluster_ip(stored)
        for obj in objs:
            ref = objects.ref(obj)
            self.made[ref_key(ref)] = ref

    async def relabel(self, store: LabStore, change: LabelChange) -> None:
        if change.kind == "namespace":
            kind, name, namespace = "Namespace", change.target, None
        else:
            namespace, _, name = change.target.partition("/")
            kind = "Pod"
        labels = await store.labels(kind, name, namespace)
        if change.labels_after is not None:
            labels = dict(change.labels_after)
        else:
            for key, value in change.set.items():
                if value is None:
                    labels.pop(key, None)
                else:
                    labels[key] = value
        await store.set_labels(kind, name, namespace, labels)
        if kind == "Pod" and change.target in self.lab.state.pods:
            self.lab.state.pods[change.target].labels = labels
