"""create_syncer(): Typha when an address is configured, the datastore directly otherwise."""

from __future__ import annotations

import asyncio

import pytest

from libcalico.config import ConfigError, DatastoreConfig
from libcalico.datastore import connect
from libcalico.datastore.keys import GROUP_CALICO, resource_key
from libcalico.syncer.api import InSync, Update
from libcalico.syncer.datastore import DatastoreSyncer
from libcalico.syncer.selection import BGP_PREFIXES, create_syncer
from libcalico.syncer.typha import TyphaSyncer


async def test_direct_from_config_owns_its_connection(embedded_config: DatastoreConfig) -> None:
    store = await connect(embedded_config)
    pool = resource_key(GROUP_CALICO, "ippools", "p")
    await store.put(pool, b"{}")
    await store.put(resource_key(GROUP_CALICO, "profiles", "x"), b"{}")
    syncer = create_syncer(embedded_config, "n", "bgp", env={})
    assert not isinstance(syncer, TyphaSyncer)
    updates = syncer.updates()
    first = await asyncio.wait_for(updates.__anext__(), 10)
    assert [u.key for u in first if isinstance(u, Update)] == [pool]  # BGP keys only
    assert isinstance(first[-1], InSync)
    await syncer.close()
    direct = create_syncer(store, "n", "felix", env={})
    assert isinstance(direct, DatastoreSyncer)
    await store.close()


def test_typha_chosen_by_address() -> None:
    config = DatastoreConfig()
    for env in ({"TYPHA_ADDR": "127.0.0.1:5473"}, {"FELIX_TYPHAADDR": "/run/typha.sock"}):
        syncer = create_syncer(config, "n", "felix", env)
        assert isinstance(syncer, TyphaSyncer) and syncer.tls is None
    assert BGP_PREFIXES[0].endswith("/nodes/")


@pytest.mark.parametrize(
    "env",
    [
        {"TYPHA_ADDR": "127.0.0.1:5473", "FELIX_TYPHACAFILE": "/ca.crt"},
        {"TYPHA_ADDR": "127.0.0.1:5473", "FELIX_TYPHAKEYFILE": "/k", "FELIX_TYPHACERTFILE": "/c"},
    ],
)
def test_incomplete_tls_is_an_error(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="FELIX_TYPHA"):
        create_syncer(DatastoreConfig(), "n", "felix", env)


def test_unknown_syncer_type() -> None:
    with pytest.raises(ConfigError, match="syncer type"):
        create_syncer(DatastoreConfig(), "n", "confd", {})
