"""The seam between endpoint plumbing and the policy dataplane.

The endpoint manager tells the dataplane about every local endpoint and waits: SetupEndpoint
answers the CNI plugin only after `endpoint_added` returned, i.e. once the endpoint's policy
is programmed, so a pod never starts unprotected. The WorkloadEndpoint is already in the
datastore when `endpoint_added` is called, so a dataplane fed by a datastore syncer (the
policy engine) sees it through its own pipeline and only has to wait.

`KnownEndpointsDataplane` is the stand-in without policy: "programmed" means "known".
`PolicyEngineDataplane` waits for the policy engine (services/felix/policy) instead.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from services.felix.calc.inputs import cidrs
from services.felix.model import WorkloadEndpoint


class EndpointDataplane(Protocol):
    async def endpoint_added(self, wep: WorkloadEndpoint, wait_s: float) -> None:
        """Add or update a local endpoint; return once its policy is programmed.

        Called again with the new object when the endpoint's labels or ports change.
        Raises TimeoutError when that takes longer than `wait_s` seconds.
        """
        ...

    async def endpoint_removed(self, wep: WorkloadEndpoint) -> None:
        """Forget a local endpoint (its interface is going away)."""
        ...

    def is_programmed(self, wep: WorkloadEndpoint) -> bool:
        """Whether the endpoint's policy is currently programmed."""
        ...


class KnownEndpointsDataplane:
    """No policy yet: an endpoint counts as programmed as soon as it is known."""

    def __init__(self) -> None:
        self.endpoints: dict[tuple[str, str], WorkloadEndpoint] = {}

    async def endpoint_added(self, wep: WorkloadEndpoint, wait_s: float) -> None:
        self.endpoints[(wep.namespace, wep.name)] = wep

    async def endpoint_removed(self, wep: WorkloadEndpoint) -> None:
        self.endpoints.pop((wep.namespace, wep.name), None)

    def is_programmed(self, wep: WorkloadEndpoint) -> bool:
        return (wep.namespace, wep.name) in self.endpoints


class ProgrammedInterfaces(Protocol):
    """What PolicyEngineDataplane needs from services.felix.policy.PolicyEngine."""

    async def wait_programmed(
        self, interface: str, wait_s: float, ips: Collection[str] | None = None
    ) -> bool: ...

    def is_programmed(self, interface: str, ips: Collection[str] | None = None) -> bool: ...


class PolicyEngineDataplane:
    """Waits until the policy engine has programmed the endpoint's interface."""

    def __init__(self, engine: ProgrammedInterfaces) -> None:
        self._engine = engine

    async def endpoint_added(self, wep: WorkloadEndpoint, wait_s: float) -> None:
        if not await self._engine.wait_programmed(wep.interface_name, wait_s, _nets(wep)):
            raise TimeoutError(f"policy for {wep.interface_name} not programmed in {wait_s}s")

    async def endpoint_removed(self, wep: WorkloadEndpoint) -> None:
        """The engine learns of the removal from the datastore."""

    def is_programmed(self, wep: WorkloadEndpoint) -> bool:
        return self._engine.is_programmed(wep.interface_name, _nets(wep))


def _nets(wep: WorkloadEndpoint) -> tuple[str, ...]:
    """The endpoint's addresses as the calc graph normalises them (so they compare equal)."""
    return cidrs(wep.ip_networks)
