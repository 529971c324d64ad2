"""IPPool and IPAMConfiguration specs, with Calico's defaults."""

from __future__ import annotations

import ipaddress
from typing import Any

from libcalico.resources.validation.errors import ValidationError
from libcalico.resources.validation.fields import (
    Fields,
    as_bool,
    as_int,
    as_list,
    check_selector,
    item,
    one_of,
    parse_cidr,
)

ENCAP_MODES = ("Never", "Always", "CrossSubnet")
ALLOWED_USES = ("Workload", "Tunnel", "LoadBalancer")
DEFAULT_ALLOWED_USES = ["Workload", "Tunnel"]
ASSIGNMENT_MODES = ("Automatic", "Manual")
DEFAULT_BLOCK_SIZE = {4: 26, 6: 122}
BLOCK_SIZE_RANGE = {4: (20, 32), 6: (116, 128)}
_LINK_LOCAL = {
    4: ipaddress.ip_network("169.254.0.0/16"),
    6: ipaddress.ip_network("fe80::/10"),
}

IPPOOL_FIELDS = frozenset(
    {
        "cidr",
        "vxlanMode",
        "ipipMode",
        "natOutgoing",
        "disabled",
        "disableBGPExport",
        "blockSize",
        "nodeSelector",
        "allowedUses",
        "assignmentMode",
    }
)


def validate_ippool_spec(value: Any, meta: dict[str, Any]) -> dict[str, Any]:
    fields = Fields(value if value is not None else {}, "spec", IPPOOL_FIELDS)
    out: dict[str, Any] = {}

    if not fields.has("cidr"):
        raise ValidationError(fields.at("cidr"), "IPPool CIDR must be specified")
    network = parse_cidr(fields.get("cidr"), fields.at("cidr"), strict=True)
    version = network.version
    out["cidr"] = str(network)
    if network.overlaps(_LINK_LOCAL[version]):
        raise ValidationError(
            fields.at("cidr"),
            f"IP pool range overlaps with IPv{version} Link Local range {_LINK_LOCAL[version]}",
        )

    for key in ("ipipMode", "vxlanMode"):
        out[key] = (
            one_of(fields.get(key), fields.at(key), ENCAP_MODES) if fields.has(key) else "Never"
        )
    if version == 6 and out["ipipMode"] != "Never":
        raise ValidationError(
            fields.at("ipipMode"), "IPIPMode other than 'Never' is not supported on an IPv6 IP pool"
        )
    if out["ipipMode"] != "Never" and out["vxlanMode"] != "Never":
        raise ValidationError(
            fields.at("ipipMode"), "IPIPMode and VXLANMode cannot both be enabled on one IP pool"
        )

    for key in ("natOutgoing", "disabled", "disableBGPExport"):
        if fields.has(key):
            out[key] = as_bool(fields.get(key), fields.at(key))

    low, high = BLOCK_SIZE_RANGE[version]
    if fields.has("blockSize"):
        block_size = as_int(fields.get("blockSize"), fields.at("blockSize"))
        if not low <= block_size <= high:
            raise ValidationError(
                fields.at("blockSize"),
                f"IPv{version} block size must be between {low} and {high}, not {block_size}",
            )
    else:
        block_size = DEFAULT_BLOCK_SIZE[version]
    out["blockSize"] = block_size
    if not out.get("disabled", False) and network.prefixlen > block_size:
        raise ValidationError(
            fields.at("cidr"),
            f"IP pool size is too small (/{network.prefixlen}) for use with Calico IPAM: it "
            f"must be equal to or greater than the block size (/{block_size})",
        )

    out["nodeSelector"] = (
        check_selector(fields.get("nodeSelector"), fields.at("nodeSelector"))
        if fields.get("nodeSelector")
        else "all()"
    )

    uses: list[str] = []
    if fields.has("allowedUses"):
        at = fields.at("allowedUses")
        for i, raw in enumerate(as_list(fields.get("allowedUses"), at)):
            use = one_of(raw, item(at, i), ALLOWED_USES)
            if use not in uses:
                uses.append(use)
    out["allowedUses"] = uses or list(DEFAULT_ALLOWED_USES)
    if "LoadBalancer" in out["allowedUses"]:
        _check_load_balancer_pool(out, fields)

    if fields.has("assignmentMode"):
        out["assignmentMode"] = one_of(
            fields.get("assignmentMode"), fields.at("assignmentMode"), ASSIGNMENT_MODES
        )
    return out


def _check_load_balancer_pool(out: dict[str, Any], fields: Fields) -> None:
    others = [u for u in out["allowedUses"] if u != "LoadBalancer"]
    if others:
        raise ValidationError(
            fields.at("allowedUses"),
            f"LoadBalancer cannot be used at the same time as: {others[0]}",
        )
    if out["ipipMode"] != "Never" or out["vxlanMode"] != "Never":
        raise ValidationError(
            fields.at("ipipMode"),
            "Neither IPIPMode nor VXLANMode can be enabled on an AllowedUses LoadBalancer IP pool",
        )
    if out["nodeSelector"] != "all()":
        raise ValidationError(
            fields.at("nodeSelector"),
            "IP Pool with AllowedUse LoadBalancer must have node selector set to all()",
        )


def ippool_immutable_fields(old: dict[str, Any], new: dict[str, Any]) -> None:
    """Calico refuses to change a pool's CIDR or block size once created."""
    for key in ("cidr", "blockSize"):
        if old.get("spec", {}).get(key) != new.get("spec", {}).get(key):
            raise ValidationError(f"spec.{key}", f"IPPool {key} cannot be modified")


def validate_ipam_config_spec(value: Any, meta: dict[str, Any]) -> dict[str, Any]:
    fields = Fields(
        value if value is not None else {},
        "spec",
        {"strictAffinity", "autoAllocateBlocks", "maxBlocksPerHost"},
    )
    out: dict[str, Any] = {
        "strictAffinity": False,
        "autoAllocateBlocks": True,
    }
    for key in ("strictAffinity", "autoAllocateBlocks"):
        if fields.has(key):
            out[key] = as_bool(fields.get(key), fields.at(key))
    if fields.has("maxBlocksPerHost"):
        out["maxBlocksPerHost"] = as_int(
            fields.get("maxBlocksPerHost"), fields.at("maxBlocksPerHost"), 0
        )
    return out
