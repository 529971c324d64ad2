"""create_syncer(): Typha or the datastore directly, chosen by configuration.

Felix and BGP make this one call. With a Typha address in the environment they get a
TyphaSyncer; without one, a DatastoreSyncer over the datastore. Both present the same
`Syncer` interface and the same stream (snapshot, InSync, deltas).

Environment (Calico's names where it has them):
  TYPHA_ADDR or FELIX_TYPHAADDR   host:port, or a Unix socket path (unix:///p, /p, ./p)
  FELIX_TYPHACAFILE               CA that signed Typha's certificate    } all three, or
  FELIX_TYPHACERTFILE             this client's certificate             } none (plain
  FELIX_TYPHAKEYFILE              this client's private key             } connection)
  FELIX_TYPHACN                   the common name Typha's certificate must carry, and/or
  FELIX_TYPHAURISAN               the URI SAN it must carry (either matching will do)
  FELIX_TYPHAK8SSERVICENAME       instead of an address: the Kubernetes Service whose ready
  FELIX_TYPHAK8SNAMESPACE         endpoints to dial (namespace default kube-system; a
                                  service name `none` means no Typha); see typha_discovery.py
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

from libcalico.config import ConfigError, DatastoreConfig
from libcalico.datastore.api import Datastore
from libcalico.datastore.keys import (
    GROUP_CALICO,
    IPAM_HOST_PREFIX,
    ipam_block_prefix,
    resource_prefix,
)
from libcalico.syncer.api import Syncer, SyncerUpdate
from libcalico.syncer.datastore import FELIX_PREFIXES, DatastoreSyncer
from libcalico.syncer.typha import SYNCER_TYPES, TyphaSyncer, TyphaTLS

# What BGP (confd/BIRD) needs: nodes and their addresses, BGP configuration, peers and filters,
# pools, and IPAM blocks/affinities (each node advertises its affine blocks).
BGP_PREFIXES: tuple[str, ...] = (
    resource_prefix(GROUP_CALICO, "nodes"),
    resource_prefix(GROUP_CALICO, "bgpconfigurations"),
    resource_prefix(GROUP_CALICO, "bgppeers"),
    resource_prefix(GROUP_CALICO, "bgpfilters"),
    resource_prefix(GROUP_CALICO, "ippools"),
    ipam_block_prefix(4),
    ipam_block_prefix(6),
    IPAM_HOST_PREFIX,
)

SYNCER_PREFIXES: Mapping[str, tuple[str, ...]] = {"felix": FELIX_PREFIXES, "bgp": BGP_PREFIXES}
assert set(SYNCER_PREFIXES) == set(SYNCER_TYPES)


@dataclass(frozen=True)
class TyphaClientConfig:
    address: str  # empty when found through a Kubernetes Service
    tls: TyphaTLS | None = None
    k8s_service: str = ""
    k8s_namespace: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TyphaClientConfig | None:
        """The Typha to use, or None to use the datastore directly."""
        env = os.environ if env is None else env
        address = (env.get("TYPHA_ADDR") or env.get("FELIX_TYPHAADDR") or "").strip()
        service = env.get("FELIX_TYPHAK8SSERVICENAME", "").strip()
        if service.lower() == "none":  # Calico's way to switch Typha off in a manifest
            service = ""
        namespace = env.get("FELIX_TYPHAK8SNAMESPACE", "").strip()
        if address and service:
            raise ConfigError(
                "TYPHA_ADDR and FELIX_TYPHAK8SSERVICENAME: give an address or a Service, not both"
            )
        if not address and not service:
            return None
        names = ("FELIX_TYPHACAFILE", "FELIX_TYPHACERTFILE", "FELIX_TYPHAKEYFILE")
        files = [env.get(name, "").strip() for name in names]
        if not any(files):
            return cls(address, None, service, namespace)
        missing = [name for name, value in zip(names, files, strict=True) if not value]
        if missing:
            raise ConfigError(f"{', '.join(missing)}: needed with the other Typha TLS settings")
        server_name = env.get("FELIX_TYPHACN", "").strip() or None
        uri_san = env.get("FELIX_TYPHAURISAN", "").strip() or None
        tls = TyphaTLS(files[0], files[1], files[2], server_name, uri_san)
        return cls(address, tls, service, namespace)


class _OwnDatastoreSyncer:
    """A DatastoreSyncer that connects its own datastore and closes it with the stream."""

    def __init__(self, config: DatastoreConfig, prefixes: Sequence[str]) -> None:
        self._config = config
        self._prefixes = prefixes
        self._datastore: Datastore | None = None
        self._syncer: DatastoreSyncer | None = None

    async def updates(self) -> AsyncIterator[list[SyncerUpdate]]:
        from libcalico.datastore import connect  # the backends are heavy; load on use

        self._datastore = await connect(self._config)
        self._syncer = DatastoreSyncer(self._datastore, self._prefixes)
        try:
            async for batch in self._syncer.updates():
                yield batch
        finally:
            await self.close()

    async def close(self) -> None:
        syncer, self._syncer = self._syncer, None
        datastore, self._datastore = self._datastore, None
        if syncer is not None:
            await syncer.close()
        if datastore is not None:
            await datastore.close()


def create_syncer(
    datastore: Datastore | DatastoreConfig,
    node: str,
    syncer_type: str = "felix",
    env: Mapping[str, str] | None = None,
) -> Syncer:
    """The update stream for `syncer_type` ("felix" or "bgp") on `node`.

    Through Typha when TYPHA_ADDR (or FELIX_TYPHAADDR, or FELIX_TYPHAK8SSERVICENAME) is set,
    else straight from the datastore: a connected `Datastore` stays the caller's to close;
    for a `DatastoreConfig` the syncer connects on its own and closes it with the stream.
    Raises ConfigError for an unknown syncer type or incomplete TLS settings.
    """
    if syncer_type not in SYNCER_PREFIXES:
        raise ConfigError(f"syncer type {syncer_type!r}: expected one of {SYNCER_TYPES}")
    typha = TyphaClientConfig.from_env(env)
    if typha is not None and typha.k8s_service:
        from libcalico.syncer.typha_discovery import TyphaServiceResolver  # loads the kube client

        resolver = TyphaServiceResolver(typha.k8s_service, typha.k8s_namespace)
        return TyphaSyncer("", node, syncer_type, tls=typha.tls, resolve=resolver)
    if typha is not None:
        return TyphaSyncer(typha.address, node, syncer_type, tls=typha.tls)
    prefixes = SYNCER_PREFIXES[syncer_type]
    if isinstance(datastore, DatastoreConfig):
        return _OwnDatastoreSyncer(datastore, prefixes)
    return DatastoreSyncer(datastore, prefixes)
