"""ADD results in the format of the requested CNI version, and reading prevResult back.

1.0.0 and 1.1.0 share one result format, except that 1.1.0 interfaces carry `mtu` (the MTU
Felix read back from each veth end); 0.3.0, 0.3.1 and 0.4.0 add `"version": "4"|"6"` to each
IP. An IP's `interface` is the index of the pod-side interface in `interfaces`.
"""

from __future__ import annotations

from cni_client.cni import versions
from cni_client.cni.errors import INVALID_NETWORK_CONFIG, CniError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cni_client.wire import Interface, SetupResult


def add_result(
    cni_version: str, setup: SetupResult, dns: dict[str, object] | None
) -> dict[str, object]:
    legacy = versions.is_legacy_result(cni_version)
    with_mtu = versions.has_interface_mtu(cni_version)
    host = _interface(setup.host_interface, with_mtu)
    pod = _interface(setup.container_interface, with_mtu)
    pod["sandbox"] = setup.container_interface.sandbox
    ips: list[dict[str, object]] = []
    for address in setup.addresses:
        ip: dict[str, object] = {"address": address, "interface": 1}
        if legacy:
            ip["version"] = "6" if ":" in address else "4"
        ips.append(ip)
    routes: list[dict[str, object]] = []
    for dst, gw in setup.routes:
        route: dict[str, object] = {"dst": dst}
        if gw:
            route["gw"] = gw
        routes.append(route)
    result: dict[str, object] = {
        "cniVersion": cni_version,
        "interfaces": [host, pod],
        "ips": ips,
        "routes": routes,
    }
    if dns:
        result["dns"] = dns
    return result


def _interface(iface: Interface, with_mtu: bool) -> dict[str, object]:
    out: dict[str, object] = {"name": iface.name}
    if iface.mac:
        out["mac"] = iface.mac
    # The spec's field is a uint: an MTU Felix did not report (0) is left out, not guessed.
    if with_mtu and iface.mtu > 0:
        out["mtu"] = iface.mtu
    return out


class PrevResult:
    """What CHECK needs from prevResult: the pod interface and its addresses."""

    __slots__ = ("addresses", "interfaces")

    def __init__(self) -> None:
        self.interfaces: list[tuple[str, str]] = []  # (name, sandbox)
        self.addresses: list[str] = []  # CIDR, as the ADD result had them


def parse_prev_result(prev: dict[str, object]) -> PrevResult:
    """Read a prevResult of any supported version; CniError(7) if it is malformed."""
    out = PrevResult()
    interfaces = prev.get("interfaces", [])
    ips = prev.get("ips", [])
    if not isinstance(interfaces, list) or not isinstance(ips, list):
        raise _bad("interfaces and ips must be lists")
    for iface in interfaces:
        if not isinstance(iface, dict) or not isinstance(iface.get("name"), str):
            raise _bad("an interface without a name")
        sandbox = iface.get("sandbox", "")
        out.interfaces.append((str(iface["name"]), sandbox if isinstance(sandbox, str) else ""))
    for ip in ips:
        address = ip.get("address") if isinstance(ip, dict) else None
        if not isinstance(address, str) or "/" not in address:
            raise _bad(f"an ip without an address in CIDR form: {ip!r}")
        out.addresses.append(address)
    return out


def bare_ip(cidr: str) -> str:
    return cidr.partition("/")[0]


def _bad(what: str) -> CniError:
    return CniError(INVALID_NETWORK_CONFIG, f"invalid prevResult: {what}")
