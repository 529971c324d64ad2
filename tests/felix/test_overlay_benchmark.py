"""benchmarks/overlay_routes.py (part (b) of the overlay benchmark) on a small seed: the real
calico-ipamd and calico-felix in a namespace of the benchmark's own program every remote
block, Felix's kernel layer alone and the iproute2 reference leave the same state, and nothing
is left behind."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from benchmarks import overlay_routes
from tests.tor.bgpkit import random_suffix

BLOCKS = 20


def test_remote_nodes_vtep_lies_in_its_own_block() -> None:
    cidrs = overlay_routes.block_cidrs(3)
    for i, cidr in enumerate(cidrs):
        _name, address, vtep, mac = overlay_routes.remote_node(i)
        assert ipaddress.ip_address(vtep) in cidr
        assert ipaddress.ip_address(address) in overlay_routes.NODE_NET
        assert int(mac.split(":")[0], 16) & 0x03 == 0x02  # unicast, locally administered
    assert len({overlay_routes.remote_node(i)[3] for i in range(300)}) == 300


@pytest.mark.netns
def test_small_seed_programs_every_block_three_ways(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        print("SKIP: network namespaces need root")
        pytest.skip("network namespaces need root")
    suffix = random_suffix()
    try:
        figures = overlay_routes.measure(BLOCKS, 1, tmp_path, suffix)
    finally:
        left = overlay_routes.leftover_namespaces(suffix)
    assert left == []
    want = overlay_routes.Counts(BLOCKS, BLOCKS, BLOCKS)
    assert figures.counts == [want] and figures.reference_counts == [want]
    assert len(figures.kernel_layer_s) == 1  # it raises unless it left `want` too
    assert figures.to_listen_s[0] > 0 and figures.to_routes_s[0] > 0
    print(
        f"{BLOCKS} blocks: felix {figures.to_routes_s[0]:.2f} s, kernel layer "
        f"{figures.kernel_layer_s[0]:.3f} s, ip -batch {figures.reference_s[0]:.3f} s"
    )
    # Felix and calico-ipamd were stopped: no process still runs from this test's directory.
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert str(tmp_path).encode() not in cmdline, cmdline
