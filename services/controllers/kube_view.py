"""What exists in Kubernetes, for decisions that release things: Nodes and Pods.

Scans judge from the informers' caches; before anything is released the judgement is checked
again with a live GET, because a cache can lag (an object created a moment ago) and a
release cannot be undone. Nothing is judged absent before both informers have synced.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from libcalico.datastore.kube_client import KubeClient
from services.controllers.informer import Informer


def _pod_on(pod: dict[str, Any] | None, node: str | None) -> bool:
    """The pod exists and is (or may yet be) on `node`: not bound elsewhere."""
    if pod is None:
        return False
    bound = (pod.get("spec") or {}).get("nodeName")
    return not bound or not node or bound == node


class KubeView:
    def __init__(self, client: KubeClient, nodes: Informer, pods: Informer) -> None:
        self.client = client
        self.nodes = nodes
        self.pods = pods

    @property
    def synced(self) -> bool:
        return self.nodes.synced.is_set() and self.pods.synced.is_set()

    async def wait_synced(self) -> None:
        await self.nodes.synced.wait()
        await self.pods.synced.wait()

    def node_exists(self, name: str) -> bool:
        return self.nodes.get(("", name)) is not None

    def pod_holds(self, namespace: str, pod: str, node: str | None) -> bool:
        """The cache has the pod, on `node` (an allocation of `node` is then still its)."""
        return _pod_on(self.pods.get((namespace, pod)), node)

    async def node_gone(self, name: str) -> bool:
        """Live: the API has no Node `name`."""
        return await self.client.get(f"/api/v1/nodes/{quote(name, safe='')}") is None

    async def pod_gone(self, namespace: str, pod: str, node: str | None) -> bool:
        """Live: the API has no such pod on `node` (absent, or bound to another node)."""
        found = await self.client.get(
            f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(pod, safe='')}"
        )
        return not _pod_on(found, node)
