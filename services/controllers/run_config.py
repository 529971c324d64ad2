"""Which controllers run and how: KubeControllersConfiguration `default`, as Calico reads it.

A controller runs when its block is present under `spec.controllers`; ENABLED_CONTROLLERS
(Calico's variable: `node,policy,namespace,serviceaccount,workloadendpoint`) overrides the
list. When no `default` exists the leader creates Calico's default for the datastore mode:
with etcd every controller (the Kubernetes objects must be copied into etcd), with the
Kubernetes datastore the node controller alone (everything else is read from the API itself,
as Calico's operator configures it). The leader writes the configuration in force back as
`status.runningConfig`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from libcalico.config import ConfigError
from libcalico.resources.client import ResourceClient, ResourceNotFoundError
from libcalico.resources.validation import ValidationError, validate
from libcalico.resources.validation.config import duration_seconds

log = logging.getLogger(__name__)

KIND = "KubeControllersConfiguration"
NAME = "default"
ENABLED_CONTROLLERS_ENV = "ENABLED_CONTROLLERS"

# Controllers by their name in spec.controllers; each copies Kubernetes kinds in etcd mode
# (copies.COPIED_KINDS says which), except node (both modes).
NODE = "node"
POLICY = "policy"
WORKLOAD_ENDPOINT = "workloadEndpoint"
SERVICE_ACCOUNT = "serviceAccount"
NAMESPACE = "namespace"
ALL = (NODE, POLICY, WORKLOAD_ENDPOINT, SERVICE_ACCOUNT, NAMESPACE)
ETCD_ONLY = (POLICY, WORKLOAD_ENDPOINT, SERVICE_ACCOUNT, NAMESPACE)
# ENABLED_CONTROLLERS spellings (Calico's) -> spec.controllers names.
_ENV_NAMES = {
    "node": NODE,
    "policy": POLICY,
    "workloadendpoint": WORKLOAD_ENDPOINT,
    "serviceaccount": SERVICE_ACCOUNT,
    "namespace": NAMESPACE,
    "profile": NAMESPACE,
}

DEFAULT_RECONCILER_PERIOD = "5m"
DEFAULT_LEAK_GRACE_PERIOD = "15m"


def default_spec(datastore_type: str) -> dict[str, Any]:
    node = {
        "reconcilerPeriod": DEFAULT_RECONCILER_PERIOD,
        "leakGracePeriod": DEFAULT_LEAK_GRACE_PERIOD,
    }
    if datastore_type == "kubernetes":
        return {"controllers": {NODE: node}}
    generic = {"reconcilerPeriod": DEFAULT_RECONCILER_PERIOD}
    return {
        "controllers": {
            NODE: {**node, "syncLabels": "Enabled"},
            POLICY: dict(generic),
            WORKLOAD_ENDPOINT: dict(generic),
            SERVICE_ACCOUNT: dict(generic),
            NAMESPACE: dict(generic),
        }
    }


def parse_enabled_controllers(text: str | None) -> tuple[str, ...] | None:
    """ENABLED_CONTROLLERS -> spec.controllers names; None when unset; ConfigError naming a
    controller it does not know."""
    if text is None or not text.strip():
        return None
    names = []
    for raw in text.split(","):
        word = raw.strip().lower()
        if word not in _ENV_NAMES:
            raise ConfigError(
                f"{ENABLED_CONTROLLERS_ENV}: unknown controller {raw.strip()!r}; expected "
                f"some of {', '.join(sorted(_ENV_NAMES))}"
            )
        if _ENV_NAMES[word] not in names:
            names.append(_ENV_NAMES[word])
    return tuple(names)


@dataclass(frozen=True, slots=True)
class NodeControllerConfig:
    # Copy Kubernetes Node labels onto Calico Nodes (etcd mode).
    sync_labels: bool = True
    # An allocation seen leaked is released once seen leaked again this much later; 0 turns
    # leak collection off (nodes that are gone are still cleaned up).
    leak_grace_seconds: float = 900.0
    # Full scans (nodes gone, leaks) this often at least, besides those events trigger.
    reconciler_seconds: float = 300.0
    # Create and delete Calico Nodes (etcd mode; with the Kubernetes datastore the Calico Node
    # is the Kubernetes Node).
    manage_nodes: bool = True

    @property
    def scan_seconds(self) -> float:
        """How often the IPAM scan runs: half the grace period (Calico's), so a leak is
        confirmed within 1.5 grace periods of its first sighting."""
        if self.leak_grace_seconds <= 0:
            return self.reconciler_seconds
        return min(self.reconciler_seconds, max(self.leak_grace_seconds / 2, 0.2))


@dataclass(frozen=True, slots=True)
class RunConfig:
    node: NodeControllerConfig | None = None
    # Copying controllers (etcd mode) -> their reconciler period in seconds.
    copies: Mapping[str, float] = field(default_factory=dict)

    @property
    def running(self) -> list[str]:
        return ([NODE] if self.node is not None else []) + sorted(self.copies)


def _seconds(block: Mapping[str, Any], key: str, default: str) -> float:
    return duration_seconds(str(block.get(key) or default))


def run_config(
    spec: Mapping[str, Any], datastore_type: str, enabled: tuple[str, ...] | None = None
) -> RunConfig:
    """The configuration in force from a validated spec, the datastore mode and
    ENABLED_CONTROLLERS (which, when set, decides which controllers run)."""
    blocks: Mapping[str, Any] = spec.get("controllers") or {}
    names = enabled if enabled is not None else tuple(n for n in ALL if n in blocks)
    node: NodeControllerConfig | None = None
    copies: dict[str, float] = {}
    for name in names:
        block: Mapping[str, Any] = blocks.get(name) or {}
        if name == NODE:
            node = NodeControllerConfig(
                sync_labels=datastore_type != "kubernetes"
                and block.get("syncLabels", "Enabled") == "Enabled",
                leak_grace_seconds=_seconds(block, "leakGracePeriod", DEFAULT_LEAK_GRACE_PERIOD),
                reconciler_seconds=_seconds(block, "reconcilerPeriod", DEFAULT_RECONCILER_PERIOD),
                manage_nodes=datastore_type != "kubernetes",
            )
        elif datastore_type == "kubernetes":
            log.warning(
                "controller %s is not used with the Kubernetes datastore (it reads the "
                "Kubernetes objects itself): not started",
                name,
            )
        else:
            copies[name] = _seconds(block, "reconcilerPeriod", DEFAULT_RECONCILER_PERIOD)
    return RunConfig(node=node, copies=copies)


def running_status(config: RunConfig) -> dict[str, Any]:
    """status.runningConfig: what runs, as spec.controllers blocks."""
    controllers: dict[str, Any] = {}
    if config.node is not None:
        controllers[NODE] = {
            "leakGracePeriod": f"{config.node.leak_grace_seconds:g}s",
            "syncLabels": "Enabled" if config.node.sync_labels else "Disabled",
        }
    for name, period in sorted(config.copies.items()):
        controllers[name] = {"reconcilerPeriod": f"{period:g}s"}
    return {"controllers": controllers}


async def load_or_create(client: ResourceClient, datastore_type: str) -> tuple[dict[str, Any], int]:
    """The `default` spec (created with Calico's defaults when absent) and its revision.

    A stored object that does not validate (written around the validation, e.g. by kubectl)
    is reported naming its field and replaced by the defaults in memory only.
    """
    try:
        obj = await client.get(KIND, NAME)
    except ResourceNotFoundError:
        obj = await client.create(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": KIND,
                "metadata": {"name": NAME},
                "spec": default_spec(datastore_type),
            }
        )
        log.info("created %s(%s) with the %s defaults", KIND, NAME, datastore_type)
    revision = int(obj["metadata"]["resourceVersion"])
    try:
        valid = validate(obj)
    except ValidationError as exc:
        log.error("%s(%s) is invalid, using the defaults: %s", KIND, NAME, exc)
        return default_spec(datastore_type), revision
    return dict(valid.get("spec") or {}), revision


async def write_status(client: ResourceClient, config: RunConfig) -> None:
    """Record the configuration in force in `status.runningConfig` (only when it differs)."""
    obj = await client.get(KIND, NAME)
    status = running_status(config)
    if (obj.get("status") or {}).get("runningConfig") == status:
        return
    updated = copy.deepcopy(obj)
    updated["status"] = {**(obj.get("status") or {}), "runningConfig": status}
    await client.update(updated)
