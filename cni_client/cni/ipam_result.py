"""The `calico-ipam` ADD result in the requested version's format: 0.1.0/0.2.0 `ip4`/`ip6`
objects; 0.3.x/0.4.0 `ips` with a "version" field; 1.x `ips` without it. No interfaces: the
calling main plugin makes them and sets each IP's `interface`."""

from __future__ import annotations

from cni_client.cni import versions


def ipam_result(cni_version: str, ipv4: list[str], ipv6: list[str]) -> dict[str, object]:
    if versions.as_tuple(cni_version) < (0, 3, 0):
        old: dict[str, object] = {"cniVersion": cni_version}
        if ipv4:
            old["ip4"] = {"ip": ipv4[0]}
        if ipv6:
            old["ip6"] = {"ip": ipv6[0]}
        return old
    legacy = versions.is_legacy_result(cni_version)
    ips: list[dict[str, object]] = []
    for family, addresses in (("4", ipv4), ("6", ipv6)):
        for address in addresses:
            ip: dict[str, object] = {"address": address}
            if legacy:
                ip["version"] = family
            ips.append(ip)
    return {"cniVersion": cni_version, "ips": ips, "routes": [], "dns": {}}
