"""The overlay's FelixConfiguration fields: `default` with `node.<nodename>` laid over it.

Only the fields the overlay uses are read (vxlanMTU, ipipMTU, mtuIfacePattern). Writes are
validated by libcalico's resource validation; what arrives here may still be bad (written
around it, or an older object), so each field is checked on its own: a bad one is logged
naming the field and counts as unset, and the object's other fields still apply.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, fields, replace
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_NAME = "default"
NODE_PREFIX = "node."
# Calico's default: the usual names of physical and virtual uplinks, not cali*/vxlan*/tunl*.
DEFAULT_MTU_IFACE_PATTERN = r"^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)"
MIN_MTU = 68  # IPv4's minimum
MAX_MTU = 65535


@dataclass(frozen=True, slots=True)
class FelixConfig:
    """The fields as set (None: not set, or set to 0, which Calico reads as "detect")."""

    vxlan_mtu: int | None = None
    ipip_mtu: int | None = None
    mtu_iface_pattern: str | None = None

    def over(self, base: FelixConfig) -> FelixConfig:
        """This configuration's set fields laid over `base` (node over default)."""
        return replace(
            base,
            **{
                f.name: getattr(self, f.name)
                for f in fields(self)
                if getattr(self, f.name) is not None
            },
        )

    @property
    def mtu_iface_regex(self) -> re.Pattern[str]:
        return re.compile(self.mtu_iface_pattern or DEFAULT_MTU_IFACE_PATTERN)


def _mtu(spec: dict[str, Any], key: str, where: str) -> int | None:
    raw = spec.get(key)
    if raw is None or raw == 0:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not MIN_MTU <= raw <= MAX_MTU:
        log.warning(
            "%s: spec.%s: %r is not an MTU (%d-%d, or 0 to detect); ignored",
            where,
            key,
            raw,
            MIN_MTU,
            MAX_MTU,
        )
        return None
    return raw


def _pattern(spec: dict[str, Any], key: str, where: str) -> str | None:
    raw = spec.get(key)
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        log.warning("%s: spec.%s: %r is not a string; ignored", where, key, raw)
        return None
    try:
        re.compile(raw)
    except re.error as exc:
        log.warning(
            "%s: spec.%s: %r is not a regular expression (%s); ignored", where, key, raw, exc
        )
        return None
    return raw


def parse_felix_config(obj: dict[str, Any]) -> FelixConfig:
    name = str(obj["metadata"]["name"])
    spec = obj.get("spec") or {}
    if not isinstance(spec, dict):
        raise TypeError("spec is not a mapping")
    where = f"FelixConfiguration {name}"
    return FelixConfig(
        vxlan_mtu=_mtu(spec, "vxlanMTU", where),
        ipip_mtu=_mtu(spec, "ipipMTU", where),
        mtu_iface_pattern=_pattern(spec, "mtuIfacePattern", where),
    )


def effective(configs: dict[str, FelixConfig], node: str) -> FelixConfig:
    """What applies on `node`: its `node.<node>` object over `default`, over the built-ins."""
    base = configs.get(DEFAULT_NAME, FelixConfig())
    mine = configs.get(NODE_PREFIX + node)
    return mine.over(base) if mine is not None else base
