"""The lab's network: a namespace with a bridge that every node's `eth0` plugs into.

A real host has an uplink and a default route; Calico relies on that: a pod's gateway
169.254.1.1 is answered by proxy ARP only when the host has a route to it out of another
interface. So each node gets `eth0` (a veth whose peer sits on the lab bridge) with an address
from NODE_SUBNET and a default route to the bridge's address. Several nodes on one bridge is
the multi-node lab. The lab's etcd listens on the bridge's address, reachable from every node.
"""

from __future__ import annotations

import ipaddress

from lab import netns

NODE_SUBNET = ipaddress.ip_network("10.66.0.0/24")
GATEWAY = NODE_SUBNET.network_address + 1
BRIDGE = "br0"
FIRST_NODE_HOST = 11


def node_address(index: int) -> ipaddress.IPv4Address:
    """The address of the index-th node (0-based) on the lab network."""
    address = NODE_SUBNET.network_address + FIRST_NODE_HOST + index
    assert isinstance(address, ipaddress.IPv4Address)
    return address


def create(name: str) -> None:
    """The network namespace with the bridge, holding the gateway address."""
    netns.create(name)
    netns.run_ip(["link", "add", BRIDGE, "type", "bridge"], netns=name)
    netns.run_ip(["addr", "add", f"{GATEWAY}/{NODE_SUBNET.prefixlen}", "dev", BRIDGE], netns=name)
    netns.run_ip(["link", "set", BRIDGE, "up"], netns=name)


def attach(network_ns: str, node_ns: str, node_name: str, address: ipaddress.IPv4Address) -> str:
    """Give a node `eth0` on the bridge, its address and a default route; returns the name of
    the bridge-side port."""
    port = f"n-{node_name}"[:15]
    netns.run_ip(
        ["link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", node_ns],
        netns=network_ns,
    )
    netns.run_ip(["link", "set", port, "master", BRIDGE, "up"], netns=network_ns)
    netns.run_ip(
        ["addr", "add", f"{address}/{NODE_SUBNET.prefixlen}", "dev", "eth0"], netns=node_ns
    )
    netns.run_ip(["link", "set", "eth0", "up"], netns=node_ns)
    netns.run_ip(["route", "add", "default", "via", str(GATEWAY), "dev", "eth0"], netns=node_ns)
    return port
