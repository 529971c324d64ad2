"""FelixConfiguration as the overlay reads it: `default` with `node.<node>` over it, each bad
field logged by name and ignored, and the MTUs that follow from it (pure: no kernel)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from libcalico.datastore.keys import GROUP_CALICO, resource_prefix
from libcalico.syncer import FELIX_PREFIXES
from libcalico.syncer.api import Delete, InSync, Update
from services.felix.vxlan.felixconfig import (
    DEFAULT_MTU_IFACE_PATTERN,
    FelixConfig,
    effective,
    parse_felix_config,
)
from services.felix.vxlan.intent import compute
from services.felix.vxlan.tunnel_addr import vtep_mac
from services.felix.vxlan.view import VxlanView

CONFIGS = resource_prefix(GROUP_CALICO, "felixconfigurations")
NODES = resource_prefix(GROUP_CALICO, "nodes")
POOLS = resource_prefix(GROUP_CALICO, "ippools")


def _config(name: str, **spec: Any) -> Update:
    return Update(
        CONFIGS + name, json.dumps({"metadata": {"name": name}, "spec": spec}).encode(), 1
    )


def _view(*updates: Update) -> VxlanView:
    node = {
        "metadata": {"name": "node-1"},
        "spec": {
            "bgp": {"ipv4Address": "10.66.0.11/24"},
            "ipv4VXLANTunnelAddr": "10.65.1.0",
            "vxlanTunnelMACAddr": vtep_mac("node-1"),
        },
    }
    view = VxlanView()
    view.apply([Update(NODES + "node-1", json.dumps(node).encode(), 1), *updates, InSync()])
    return view


def _vxlan_pool(mode: str = "Always") -> Update:
    body = {"metadata": {"name": "p"}, "spec": {"cidr": "10.65.0.0/16", "vxlanMode": mode}}
    return Update(POOLS + "p", json.dumps(body).encode(), 1)


def test_felix_syncer_carries_felix_configurations() -> None:
    assert CONFIGS in FELIX_PREFIXES  # Typha serves the same prefixes (SYNCER_PREFIXES)


def test_node_configuration_is_laid_over_default() -> None:
    view = _view(
        _config("default", vxlanMTU=1400, ipipMTU=1440, mtuIfacePattern="^eth"),
        _config("node.node-1", vxlanMTU=1300),
        _config("node.node-2", ipipMTU=1000),
    )
    assert effective(view.felix_configs, "node-1") == FelixConfig(1300, 1440, "^eth")
    assert effective(view.felix_configs, "node-2") == FelixConfig(1400, 1000, "^eth")
    view.apply([Delete(CONFIGS + "default")])
    assert effective(view.felix_configs, "node-1") == FelixConfig(vxlan_mtu=1300)
    assert effective(view.felix_configs, "node-3") == FelixConfig()
    assert FelixConfig().mtu_iface_regex.pattern == DEFAULT_MTU_IFACE_PATTERN


def test_zero_means_detect() -> None:
    assert parse_felix_config({"metadata": {"name": "default"}, "spec": {"vxlanMTU": 0}}) == (
        FelixConfig()
    )


@pytest.mark.parametrize(
    ("bad", "attr"),
    [
        ({"vxlanMTU": "big"}, "vxlan_mtu"),
        ({"vxlanMTU": 40}, "vxlan_mtu"),
        ({"ipipMTU": True}, "ipip_mtu"),
        ({"mtuIfacePattern": "(eth"}, "mtu_iface_pattern"),
        ({"mtuIfacePattern": 7}, "mtu_iface_pattern"),
    ],
)
def test_a_bad_field_is_logged_by_name_and_ignored(
    bad: dict[str, Any], attr: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    good = {"vxlanMTU": 1400} if attr != "vxlan_mtu" else {"ipipMTU": 1440}
    config = effective(_view(_config("default", **good, **bad)).felix_configs, "node-1")
    assert getattr(config, attr) is None  # the bad field counts as unset
    assert (config.vxlan_mtu or config.ipip_mtu) in (1400, 1440)  # the good one applies
    (field,) = bad
    assert any(
        f"FelixConfiguration default: spec.{field}:" in r.getMessage() for r in caplog.records
    )


def test_vxlan_device_and_pod_mtu_follow_the_configuration() -> None:
    view = _view(_vxlan_pool())
    intent = compute(view, "node-1", detected_mtu=9000)
    assert intent.device is not None and intent.device.mtu == 8950  # detected - 50
    assert intent.pod_mtu == 8950
    view.apply([_config("default", vxlanMTU=1400)])  # at run time: the next round uses it
    intent = compute(view, "node-1", detected_mtu=9000)
    assert intent.device is not None and intent.device.mtu == 1400 and intent.pod_mtu == 1400


def test_pod_mtu_is_the_detected_one_without_an_encapsulation() -> None:
    view = _view(_config("default", vxlanMTU=1400))
    intent = compute(view, "node-1", detected_mtu=9000)
    assert intent.device is None and intent.pod_mtu == 9000
