"""The lab's network: one or two node subnets, each a bridge in the lab network's namespace,
which routes between them (and, with `--internet`, to an "outside" host).

A real host has an uplink and a default route; Calico relies on that: a pod's gateway
169.254.1.1 is answered by proxy ARP only when the host has a route to it out of another
interface. So each node gets `eth0` (a veth whose peer sits on its subnet's bridge) with an
address from that subnet and a default route to the bridge's address (the subnet's gateway).

Subnet s (0-based) is 10.66.s.0/24 on bridge `br<s>`, its gateway 10.66.s.1. Node i (0-based)
is on subnet i mod S (alternating: with two subnets node-1, node-3, ... on 10.66.0.0/24 and
node-2, node-4, ... on 10.66.1.0/24) at host address 11 + i, so its last octet names it on
either subnet (node-2 is 10.66.0.12 or 10.66.1.12). With more than one subnet, or an outside
host, the lab network's namespace forwards: it is the router between them. The lab's etcd,
Typha and ToR listen on the first gateway (10.66.0.1), a local address of the router, so
nodes on every subnet reach them.

`@outside`, the probe source off the pod network (lab/targets.py), is the lab network's
namespace itself, from its first gateway address: it reaches every node's address, and
192.0.2.0/24 (TEST-NET-1: Service externalIPs and load-balancer addresses) is routed from
there via node-1, as an edge router would send it to a cluster.

The outside host (`--internet`) is a namespace whose eth0 (198.51.100.1/24) is a veth to the
router's `outside` port (198.51.100.254); it routes back only to the node subnets, never to
the pools, as the Internet would not know pod addresses.
"""

from __future__ import annotations

import ipaddress

from lab import netns

MAX_SUBNETS = 2
FIRST_NODE_HOST = 11
NODE_SUBNETS = tuple(ipaddress.ip_network(f"10.66.{s}.0/24") for s in range(MAX_SUBNETS))
NODE_SUBNET = NODE_SUBNETS[0]
GATEWAY = NODE_SUBNET.network_address + 1  # etcd, Typha and the ToR listen here

# `@outside`'s address: the probe source in the lab network's namespace.
OUTSIDE_CLIENT = GATEWAY
EXTERNAL_NET = ipaddress.ip_network("192.0.2.0/24")  # TEST-NET-1, routed via node-1

OUTSIDE_SUBNET = ipaddress.ip_network("198.51.100.0/24")  # TEST-NET-2: never a real address
OUTSIDE_ADDRESS = OUTSIDE_SUBNET.network_address + 1
OUTSIDE_GATEWAY = OUTSIDE_SUBNET.network_address + 254  # the router's side
OUTSIDE_PORT = "outside"  # the router's interface towards the outside host


def bridge(subnet: int) -> str:
    return f"br{subnet}"


def gateway(subnet: int) -> ipaddress.IPv4Address:
    address = NODE_SUBNETS[subnet].network_address + 1
    assert isinstance(address, ipaddress.IPv4Address)
    return address


def node_subnet(index: int, subnets: int = 1) -> int:
    """The subnet of the index-th node (0-based): alternating over the subnets."""
    return index % subnets


def node_address(index: int, subnets: int = 1) -> ipaddress.IPv4Address:
    """The address of the index-th node (0-based) on its subnet."""
    address = NODE_SUBNETS[node_subnet(index, subnets)].network_address + FIRST_NODE_HOST + index
    assert isinstance(address, ipaddress.IPv4Address)
    return address


def prefix_of(address: str) -> str:
    """A node address with its subnet's prefix length ("10.66.1.12/24"), as Calico's Node
    ipv4Address carries it (CrossSubnet compares these)."""
    for subnet in NODE_SUBNETS:
        if ipaddress.ip_address(address) in subnet:
            return f"{address}/{subnet.prefixlen}"
    raise ValueError(f"node address {address} is on no lab subnet")


def create(name: str, subnets: int = 1, routes: bool = False) -> None:
    """The lab network's namespace with one bridge per subnet, each holding its gateway
    address; with `routes` (several subnets, or an outside host) it forwards between them."""
    netns.create(name)
    for s in range(subnets):
        netns.run_ip(["link", "add", bridge(s), "type", "bridge"], netns=name)
        cidr = f"{gateway(s)}/{NODE_SUBNETS[s].prefixlen}"
        netns.run_ip(["addr", "add", cidr, "dev", bridge(s)], netns=name)
        netns.run_ip(["link", "set", bridge(s), "up"], netns=name)
    if routes or subnets > 1:
        netns.sysctl(name, "net.ipv4.ip_forward", "1")


def attach(
    network_ns: str,
    node_ns: str,
    node_name: str,
    address: ipaddress.IPv4Address,
    subnet: int = 0,
) -> str:
    """Give a node `eth0` on its subnet's bridge, its address and a default route; returns
    the name of the bridge-side port."""
    port = f"n-{node_name}"[:15]
    netns.run_ip(
        ["link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", node_ns],
        netns=network_ns,
    )
    netns.run_ip(["link", "set", port, "master", bridge(subnet), "up"], netns=network_ns)
    prefixlen = NODE_SUBNETS[subnet].prefixlen
    netns.run_ip(["addr", "add", f"{address}/{prefixlen}", "dev", "eth0"], netns=node_ns)
    netns.run_ip(["link", "set", "eth0", "up"], netns=node_ns)
    netns.run_ip(
        ["route", "add", "default", "via", str(gateway(subnet)), "dev", "eth0"], netns=node_ns
    )
    return port


def route_external_net(network_ns: str, via: ipaddress.IPv4Address) -> None:
    """192.0.2.0/24 from the lab network towards a node (node-1): externalIPs and
    load-balancer addresses reach the cluster through it."""
    netns.run_ip(["route", "replace", str(EXTERNAL_NET), "via", str(via)], netns=network_ns)


def attach_outside(network_ns: str, outside_ns: str, subnets: int) -> None:
    """The outside host's eth0 on the router's `outside` port, routed back to the node
    subnets only (a packet from a pod address finds no way home)."""
    netns.create(outside_ns)
    netns.run_ip(
        ["link", "add", OUTSIDE_PORT, "type", "veth", "peer", "name", "eth0", "netns", outside_ns],
        netns=network_ns,
    )
    cidr = f"{OUTSIDE_GATEWAY}/{OUTSIDE_SUBNET.prefixlen}"
    netns.run_ip(["addr", "add", cidr, "dev", OUTSIDE_PORT], netns=network_ns)
    netns.run_ip(["link", "set", OUTSIDE_PORT, "up"], netns=network_ns)
    cidr = f"{OUTSIDE_ADDRESS}/{OUTSIDE_SUBNET.prefixlen}"
    netns.run_ip(["addr", "add", cidr, "dev", "eth0"], netns=outside_ns)
    netns.run_ip(["link", "set", "eth0", "up"], netns=outside_ns)
    for subnet in NODE_SUBNETS[:subnets]:
        netns.run_ip(["route", "add", str(subnet), "via", str(OUTSIDE_GATEWAY)], netns=outside_ns)
