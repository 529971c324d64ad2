"""What IPAM reads from the cluster's resources: IP pools, IPAMConfiguration, node labels.

Read straight from the datastore's resource keys (JSON objects as the resource client stores
them) and cached for `ttl` seconds: the daemon asks on every request, and these change
rarely. ttl=0 reads every time (calicoctl, tests).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from libcalico.datastore import Datastore, KeyNotFoundError
from libcalico.datastore.keys import GROUP_CALICO, resource_key, resource_prefix
from libcalico.ipam.model import IpamConfig
from libcalico.resources.invalid import InvalidObjects
from libcalico.selector import SelectorError, parse
from services.ipam.pools import Pool, PoolError, pool_from_resource

log = logging.getLogger(__name__)

IPAM_CONFIG_NAME = "default"


def ippool_prefix() -> str:
    return resource_prefix(GROUP_CALICO, "ippools")


def ipam_config_key() -> str:
    return resource_key(GROUP_CALICO, "ipamconfigurations", IPAM_CONFIG_NAME)


def node_key(node: str) -> str:
    return resource_key(GROUP_CALICO, "nodes", node)


def selects_node(pool: Pool, labels: dict[str, str]) -> bool:
    try:
        return bool(parse(pool.node_selector).matches(labels))
    except SelectorError:
        log.warning("IPPool %s: bad nodeSelector %r: not used", pool.name, pool.node_selector)
        return False


class ClusterView:
    def __init__(self, datastore: Datastore, ttl: float = 0.0) -> None:
        self.datastore = datastore
        self.ttl = ttl
        self._cache: dict[str, tuple[float, Any]] = {}
        self._invalid = InvalidObjects(log, "calico-ipamd")

    def invalidate(self) -> None:
        self._cache.clear()

    def _fresh(self, name: str) -> tuple[bool, Any]:
        hit = self._cache.get(name)
        if hit is not None and self.ttl > 0 and time.monotonic() - hit[0] < self.ttl:
            return True, hit[1]
        return False, None

    def _store(self, name: str, value: Any) -> None:
        self._cache[name] = (time.monotonic(), value)

    async def pools(self) -> list[Pool]:
        ok, value = self._fresh("pools")
        if ok:
            return list(value)
        result = await self.datastore.list(ippool_prefix())
        pools = []
        for kv in result.items:
            try:
                pools.append(pool_from_resource(json.loads(kv.value)))
                self._invalid.usable(kv.key)
            except (PoolError, ValueError, KeyError) as exc:
                self._invalid.skipped(kv.key, kv.value, exc)
        self._store("pools", pools)
        return list(pools)

    async def ipam_config(self) -> IpamConfig:
        ok, value = self._fresh("config")
        if ok:
            assert isinstance(value, IpamConfig)
            return value
        try:
            kv = await self.datastore.get(ipam_config_key())
            config = IpamConfig.from_spec(json.loads(kv.value).get("spec") or {})
        except KeyNotFoundError:
            config = IpamConfig()
        self._store("config", config)
        return config

    async def node_labels(self, node: str) -> dict[str, str]:
        name = f"node:{node}"
        ok, value = self._fresh(name)
        if ok:
            return dict(value)
        try:
            kv = await self.datastore.get(node_key(node))
            labels = dict(json.loads(kv.value).get("metadata", {}).get("labels") or {})
        except KeyNotFoundError:
            labels = {}
        self._store(name, labels)
        return dict(labels)

    async def node_exists(self, node: str) -> bool:
        try:
            await self.datastore.get(node_key(node))
        except KeyNotFoundError:
            return False
        return True
