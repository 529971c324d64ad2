"""Finding Typha through its Kubernetes Service's endpoints, as Calico's FELIX_TYPHAK8SSERVICENAME.

Felix and BGP run on the host network of every node and, with no kube-proxy, cannot rely on a
Service's cluster IP. They read the Service's EndpointSlices instead and dial a ready
endpoint's address directly, picking one at random per connection so that clients spread
over the Typhas and a restarted Typha's new address is found on the next reconnect.

    FELIX_TYPHAK8SSERVICENAME   the Service (e.g. calico-typha)
    FELIX_TYPHAK8SNAMESPACE     its namespace (default kube-system, as Calico's)

The port is the slice's port named `calico-typha` (else its only port).
"""

from __future__ import annotations

import random
from typing import Any

from libcalico.datastore.api import DatastoreError
from libcalico.datastore.kube_client import KubeClient
from libcalico.syncer.typha import TyphaNotFoundError

DEFAULT_NAMESPACE = "kube-system"
PORT_NAME = "calico-typha"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def _slice_port(endpoint_slice: dict[str, Any]) -> int | None:
    ports = [p for p in endpoint_slice.get("ports") or [] if isinstance(p, dict)]
    named = [p for p in ports if p.get("name") == PORT_NAME]
    chosen = named or (ports if len(ports) == 1 else [])
    port = chosen[0].get("port") if chosen else None
    return port if isinstance(port, int) else None


def _join(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def ready_addresses(slices: list[dict[str, Any]]) -> list[str]:
    """host:port of every ready endpoint in `slices` (EndpointSlice objects), sorted."""
    found: set[str] = set()
    for endpoint_slice in slices:
        port = _slice_port(endpoint_slice)
        if port is None:
            continue
        for endpoint in endpoint_slice.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            if conditions.get("ready") is False:  # absent means ready, per the API
                continue
            found.update(_join(str(a), port) for a in endpoint.get("addresses") or [])
    return sorted(found)


class TyphaServiceResolver:
    """An async callable giving one ready Typha endpoint of a Service, chosen at random."""

    def __init__(self, service: str, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.service = service
        self.namespace = namespace or DEFAULT_NAMESPACE
        self._client: KubeClient | None = None

    @property
    def path(self) -> str:
        return f"/apis/discovery.k8s.io/v1/namespaces/{self.namespace}/endpointslices"

    async def addresses(self) -> list[str]:
        if self._client is None:
            self._client = KubeClient()
        response = await self._client.request(
            "GET", self.path, params={"labelSelector": f"{SERVICE_NAME_LABEL}={self.service}"}
        )
        if response.status != 200:
            raise response.error(f"list the endpoints of Service {self.namespace}/{self.service}")
        return ready_addresses(list(response.body.get("items") or []))

    async def __call__(self) -> str:
        try:
            found = await self.addresses()
        except DatastoreError as error:
            where = f"{self.namespace}/{self.service}"
            raise TyphaNotFoundError(f"Typha Service {where}: {error}") from error
        if not found:
            raise TyphaNotFoundError(
                f"Typha Service {self.namespace}/{self.service} has no ready endpoint "
                f"(port {PORT_NAME!r})"
            )
        return random.choice(found)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()
