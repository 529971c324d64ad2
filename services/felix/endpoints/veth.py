"""Plumbing one pod: a veth pair from the node namespace into the pod's, addresses, routes.

    node netns                              pod netns
    caliXXXXXXXXXXX (ee:ee:ee:ee:ee:ee) <-> eth0  10.0.0.5/32, fd00::5/128
      proxy_arp=1, forwarding=1               169.254.1.1/32 dev eth0 scope link
      fe80::ecee:eeff:feee:eeee/64 (IPv6)     default via 169.254.1.1 dev eth0
    10.0.0.5/32 dev caliX scope link          default via fe80::ecee:eeff:feee:eeee dev eth0
    fd00::5/128 dev caliX

The pod reaches everything through "the host": ARP for 169.254.1.1 is answered by the host
veth's proxy ARP, and every host veth has the same MAC and IPv6 link-local address.

Everything here blocks (netlink, /proc/sys): `PodPlumber` methods run on the one worker
thread that owns the node namespace's netlink socket (see worker.py).
"""

from __future__ import annotations

import errno
import ipaddress
import os
from dataclasses import dataclass

from services.felix.endpoints import netns, sysctls
from services.felix.endpoints.naming import HOST_VETH_MAC, is_host_veth_name
from services.felix.endpoints.netlink import IPAddress, Link, NetlinkError, NetlinkSocket

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

POD_GATEWAY_V4 = ipaddress.IPv4Address("169.254.1.1")


def eui64_link_local(mac: str) -> ipaddress.IPv6Address:
    """The modified-EUI-64 link-local address for a MAC (what the kernel would generate)."""
    raw = bytearray(int(p, 16) for p in mac.split(":"))
    raw[0] ^= 0x02
    iid = bytes(raw[:3]) + b"\xff\xfe" + bytes(raw[3:])
    return ipaddress.IPv6Address(b"\xfe\x80" + b"\0" * 6 + iid)


HOST_LINK_LOCAL_V6 = eui64_link_local(HOST_VETH_MAC)


class PodNetnsNotFoundError(FileNotFoundError):
    """The pod's network namespace path does not exist."""


class BadPodNetnsError(ValueError):
    """The path is not a network namespace, or it is the node's own."""


@dataclass(frozen=True, slots=True)
class PodInterfaceSpec:
    """What to build for one pod."""

    host_name: str
    netns: str
    interface_name: str
    # The pod's IPs; configured in the pod as /32 and /128.
    ips: tuple[IPAddress, ...]
    mtu: int

    @property
    def ipv6(self) -> bool:
        return any(ip.version == 6 for ip in self.ips)


@dataclass(frozen=True, slots=True)
class PodRoute:
    dst: IPNetwork
    gateway: IPAddress | None


@dataclass(frozen=True, slots=True)
class PlumbedInterface:
    """What was built."""

    host_name: str
    host_mac: str
    pod_interface: str
    pod_mac: str
    addresses: tuple[IPNetwork, ...]
    routes: tuple[PodRoute, ...]
    # As the kernel reports them after creation (it may clamp a requested value), so what
    # the CNI result says is what the veth ends really have.
    host_mtu: int
    pod_mtu: int


def host_network(ip: IPAddress) -> IPNetwork:
    return ipaddress.ip_network(ip)  # /32 or /128


def pod_routes(ips: tuple[IPAddress, ...]) -> tuple[PodRoute, ...]:
    routes: list[PodRoute] = []
    if any(ip.version == 4 for ip in ips):
        routes.append(PodRoute(ipaddress.ip_network(POD_GATEWAY_V4), None))
        routes.append(PodRoute(ipaddress.ip_network("0.0.0.0/0"), POD_GATEWAY_V4))
    if any(ip.version == 6 for ip in ips):
        routes.append(PodRoute(ipaddress.ip_network("::/0"), HOST_LINK_LOCAL_V6))
    return tuple(routes)


class PodPlumber:
    """Builds, checks and removes pod interfaces. One instance per worker thread."""

    def __init__(self, sysctl_dir: str = sysctls.PROC_SYS_NET) -> None:
        # Where /proc/sys/net is seen (sysctls.py: a writable mount of it in a container).
        self.sysctl_dir = sysctl_dir
        # Created on the worker thread, which is in the node namespace (the process's own).
        self.node = NetlinkSocket()
        self.home_fd = netns.current_netns_fd()

    def close(self) -> None:
        self.node.close()
        os.close(self.home_fd)

    def _open_pod_netns(self, path: str) -> int:
        try:
            fd = netns.open_netns(path)
        except FileNotFoundError as exc:
            raise PodNetnsNotFoundError(
                errno.ENOENT, f"network namespace {path} not found"
            ) from exc
        except OSError as exc:
            raise BadPodNetnsError(f"cannot open {path}: {exc.strerror}") from exc
        try:
            if not netns.is_netns(fd):
                raise BadPodNetnsError(f"{path} is not a network namespace")
            if netns.same_namespace(fd, self.home_fd):
                # Plumbing "the pod" into the node's own namespace would rename and readdress
                # the node's interfaces: refuse.
                raise BadPodNetnsError(f"{path} is the node's own network namespace")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _pod_socket(self, pod_fd: int, settings: list[tuple[str, str]]) -> NetlinkSocket:
        """A netlink socket inside the pod's namespace, after writing its sysctls there."""
        with netns.entered(pod_fd, self.home_fd):
            sock = NetlinkSocket()
            try:
                sysctls.write_sysctls(self.sysctl_dir, settings)
            except BaseException:
                sock.close()
                raise
        return sock

    # ---- setup ----

    def setup(self, spec: PodInterfaceSpec) -> PlumbedInterface:
        """Build the pod's interface from scratch (a stale one of the same name goes first).

        On failure nothing is left behind: deleting the host veth removes its peer and routes.
        """
        pod_fd = self._open_pod_netns(spec.netns)
        try:
            self.node.delete_link(spec.host_name)
            try:
                return self._build(spec, pod_fd)
            except BaseException:
                self.node.delete_link(spec.host_name)
                raise
        finally:
            os.close(pod_fd)

    def _create_veth(self, spec: PodInterfaceSpec, pod_fd: int) -> None:
        def create() -> None:
            self.node.create_veth(
                spec.host_name,
                mac=HOST_VETH_MAC,
                mtu=spec.mtu,
                peer_name=spec.interface_name,
                peer_netns_fd=pod_fd,
            )

        try:
            create()
        except NetlinkError as exc:
            if exc.errno != errno.EEXIST:
                raise
            # The pod already has an interface of that name (a half-done earlier attempt whose
            # host end is gone): replace it, as Calico does.
            with self._pod_socket(pod_fd, []) as pod:
                pod.delete_link(spec.interface_name)
            create()

    def _build(self, spec: PodInterfaceSpec, pod_fd: int) -> PlumbedInterface:
        self._create_veth(spec, pod_fd)
        host = self.node.get_link(spec.host_name)
        if host is None:
            raise NetlinkError(errno.ENODEV, f"{spec.host_name} vanished after creation")
        sysctls.write_sysctls(self.sysctl_dir, sysctls.host_sysctls(spec.host_name, spec.ipv6))
        self.node.set_up(host.index)
        if spec.ipv6:
            self.node.add_address(host.index, HOST_LINK_LOCAL_V6, 64)
        for ip in spec.ips:
            self.node.replace_route(host_network(ip), host.index)

        routes = pod_routes(spec.ips)
        with self._pod_socket(pod_fd, sysctls.pod_sysctls(spec.interface_name, spec.ipv6)) as pod:
            link = pod.get_link(spec.interface_name)
            if link is None:
                raise NetlinkError(errno.ENODEV, f"{spec.interface_name} missing in the pod")
            pod.set_up(link.index)
            for ip in spec.ips:
                pod.add_address(link.index, ip, ip.max_prefixlen)
            for route in routes:
                pod.replace_route(route.dst, link.index, route.gateway)
        return PlumbedInterface(
            host_name=spec.host_name,
            host_mac=host.mac,
            pod_interface=spec.interface_name,
            pod_mac=link.mac,
            addresses=tuple(host_network(ip) for ip in spec.ips),
            routes=routes,
            host_mtu=host.mtu,
            pod_mtu=link.mtu,
        )

    # ---- teardown ----

    def teardown(self, host_name: str) -> bool:
        """Delete the host veth (its peer, addresses and routes go with it)."""
        return self.node.delete_link(host_name)

    def disable(self, host_name: str) -> bool:
        """Take the host veth down at once (the pod is cut off and the kernel drops its IPv4
        routes); deleting it takes the kernel ~20-40 ms, so that is left to the reaper.
        False when there is no such link."""
        link = self.node.get_link(host_name)
        if link is None:
            return False
        self.node.set_down(link.index)
        return True

    # ---- inspection ----

    def host_link(self, host_name: str) -> Link | None:
        return self.node.get_link(host_name)

    def default_route_mtu(self, fallback: int) -> int:
        """The MTU of the interface holding the node's default route (no encapsulation is
        configured yet, so pods get it unchanged); `fallback` without a default route."""
        for version in (4, 6):
            for route in self.node.routes(version):
                if route.dst.prefixlen == 0 and route.oif:
                    for link in self.node.links():
                        if link.index == route.oif and link.mtu:
                            return link.mtu
        return fallback

    def interface_mtus(self, spec: PodInterfaceSpec) -> tuple[int, int]:
        """(host end, pod end) MTUs as the kernel has them; 0 for an end that is missing."""
        host = self.node.get_link(spec.host_name)
        try:
            pod_fd = self._open_pod_netns(spec.netns)
        except PodNetnsNotFoundError:
            return (host.mtu if host else 0, 0)
        try:
            with self._pod_socket(pod_fd, []) as pod:
                link = pod.get_link(spec.interface_name)
        finally:
            os.close(pod_fd)
        return (host.mtu if host else 0, link.mtu if link else 0)

    def host_veths(self) -> list[Link]:
        """Every link in the node namespace named like a Calico host veth."""
        return [link for link in self.node.links() if is_host_veth_name(link.name)]

    def check(self, spec: PodInterfaceSpec) -> list[str]:
        """What differs from what setup() builds; empty when everything is in place."""
        problems: list[str] = []
        host = self.node.get_link(spec.host_name)
        if host is None:
            return [f"host interface {spec.host_name} does not exist"]
        if not host.up:
            problems.append(f"host interface {spec.host_name} is down")
        if host.mac != HOST_VETH_MAC:
            problems.append(f"host interface {spec.host_name} has MAC {host.mac}")
        for version in sorted({ip.version for ip in spec.ips}):
            present = {r.dst for r in self.node.routes(version) if r.oif == host.index}
            for ip in spec.ips:
                if ip.version == version and host_network(ip) not in present:
                    problems.append(f"host route {host_network(ip)} dev {spec.host_name} missing")
        try:
            pod_fd = self._open_pod_netns(spec.netns)
        except PodNetnsNotFoundError:
            return [*problems, f"network namespace {spec.netns} does not exist"]
        try:
            with self._pod_socket(pod_fd, []) as pod:
                problems += self._check_pod(pod, spec)
        finally:
            os.close(pod_fd)
        return problems

    @staticmethod
    def _check_pod(pod: NetlinkSocket, spec: PodInterfaceSpec) -> list[str]:
        name = spec.interface_name
        link = pod.get_link(name)
        if link is None:
            return [f"pod interface {name} does not exist"]
        problems = [] if link.up else [f"pod interface {name} is down"]
        present = {(a.address, a.prefix_len) for a in pod.addresses(link.index)}
        for ip in spec.ips:
            if (ip, ip.max_prefixlen) not in present:
                problems.append(f"pod address {ip}/{ip.max_prefixlen} on {name} missing")
        for version in sorted({ip.version for ip in spec.ips}):
            routes = {(r.dst, r.gateway) for r in pod.routes(version) if r.oif == link.index}
            for route in pod_routes(spec.ips):
                if route.dst.version == version and (route.dst, route.gateway) not in routes:
                    via = f" via {route.gateway}" if route.gateway else ""
                    problems.append(f"pod route {route.dst}{via} dev {name} missing")
        return problems
