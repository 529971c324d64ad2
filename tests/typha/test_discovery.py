"""Typha discovery without a server: which EndpointSlice entries become addresses, and the
environment that selects discovery."""

from __future__ import annotations

import pytest

from libcalico.config import ConfigError
from libcalico.syncer.selection import TyphaClientConfig
from libcalico.syncer.typha_discovery import ready_addresses


def _slice(ports: list[dict[str, object]], *endpoints: dict[str, object]) -> dict[str, object]:
    return {"ports": ports, "endpoints": list(endpoints)}


def test_ready_addresses_take_the_named_port_and_skip_unready_endpoints() -> None:
    slices = [
        _slice(
            [{"name": "metrics", "port": 9093}, {"name": "calico-typha", "port": 5473}],
            {"addresses": ["10.0.0.2"], "conditions": {"ready": True}},
            {"addresses": ["10.0.0.3"], "conditions": {"ready": False}},
            {"addresses": ["10.0.0.1"]},  # no conditions: ready, per the API
        ),
        _slice([{"port": 6000}], {"addresses": ["fd00::1"]}),  # one unnamed port: that one
        _slice([{"name": "a", "port": 1}, {"name": "b", "port": 2}], {"addresses": ["10.9.9.9"]}),
    ]
    assert ready_addresses(slices) == ["10.0.0.1:5473", "10.0.0.2:5473", "[fd00::1]:6000"]
    assert ready_addresses([]) == []


def test_environment_selects_discovery() -> None:
    config = TyphaClientConfig.from_env({"FELIX_TYPHAK8SSERVICENAME": "calico-typha"})
    assert config is not None and config.address == ""
    assert (config.k8s_service, config.k8s_namespace) == ("calico-typha", "")
    assert TyphaClientConfig.from_env({"FELIX_TYPHAK8SSERVICENAME": "none"}) is None
    assert TyphaClientConfig.from_env({}) is None
    both = {"TYPHA_ADDR": "10.0.0.1:5473", "FELIX_TYPHAK8SSERVICENAME": "calico-typha"}
    with pytest.raises(ConfigError, match="TYPHA_ADDR and FELIX_TYPHAK8SSERVICENAME"):
        TyphaClientConfig.from_env(both)
    uri = {"TYPHA_ADDR": "x:1", "FELIX_TYPHACAFILE": "c", "FELIX_TYPHACERTFILE": "d",
           "FELIX_TYPHAKEYFILE": "e", "FELIX_TYPHAURISAN": "spiffe://x/typha"}  # fmt: skip
    config = TyphaClientConfig.from_env(uri)
    assert config is not None and config.tls is not None
    assert (config.tls.server_name, config.tls.server_uri_san) == (None, "spiffe://x/typha")
