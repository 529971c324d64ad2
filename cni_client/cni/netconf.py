"""The network configuration on stdin: the `calico` entry of a conflist, as the runtime passes
it (with `name`, `cniVersion` and, for CHECK/DEL, `prevResult` filled in)."""

from __future__ import annotations

from cni_client.cni import jsonio, versions
from cni_client.cni.errors import (
    DECODE_FAILURE,
    INVALID_NETWORK_CONFIG,
    UNSUPPORTED_FIELD,
    CniError,
)

DEFAULT_IPAM_SOCKET = "/var/run/calico/ipam.sock"
DEFAULT_FELIX_SOCKET = "/var/run/calico/felix.sock"
DEFAULT_NODENAME_FILE = "/var/lib/calico/nodename"
DEFAULT_TIMEOUT_MS = 30_000
MIN_MTU_IPV4 = 68
MIN_MTU_IPV6 = 1280
MAX_MTU = 65535
IPAM_TYPE = "calico-ipam"
_NAME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_CHARS = _NAME_FIRST | frozenset("_.-")


class NetConf:
    __slots__ = (
        "assign_ipv4",
        "assign_ipv6",
        "cni_version",
        "dns",
        "felix_socket",
        "ipam_socket",
        "ipv4_pools",
        "ipv6_pools",
        "mtu",
        "name",
        "nodename",
        "nodename_file",
        "policy_timeout_ms",
        "prev_result",
        "raw",
        "timeout_ms",
        "valid_attachments",
    )

    def __init__(self, raw: dict[str, object], cni_version: str) -> None:
        self.raw = raw
        self.cni_version = cni_version
        self.name = ""
        self.ipam_socket = DEFAULT_IPAM_SOCKET
        self.felix_socket = DEFAULT_FELIX_SOCKET
        self.assign_ipv4 = True
        self.assign_ipv6 = False
        self.ipv4_pools: list[str] = []
        self.ipv6_pools: list[str] = []
        self.mtu = 0
        self.nodename = ""
        self.nodename_file = DEFAULT_NODENAME_FILE
        self.policy_timeout_ms = 0
        self.timeout_ms = DEFAULT_TIMEOUT_MS
        self.dns: dict[str, object] | None = None
        self.prev_result: dict[str, object] | None = None
        self.valid_attachments: list[tuple[str, str]] | None = None


def decode_object(data: bytes) -> dict[str, object]:
    value = jsonio.loads(data)
    if not isinstance(value, dict):
        raise CniError(
            DECODE_FAILURE, f"network config must be a JSON object, not {_json_type(value)}"
        )
    return value


def version_of(raw: dict[str, object]) -> str:
    version = raw.get("cniVersion", "")
    if not isinstance(version, str):
        raise CniError(DECODE_FAILURE, f"cniVersion must be a string, not {_json_type(version)}")
    # An absent cniVersion means 0.1.0 (libcni's reading), which this plugin does not speak.
    return version or "0.1.0"


def parse(data: bytes, command: str) -> NetConf:
    """Decode and validate stdin for `command`; CniError with the spec's code otherwise."""
    raw = decode_object(data)
    version = version_of(raw)
    versions.check_supported(version, command)
    conf = NetConf(raw, version)
    conf.name = _name(raw)
    if not isinstance(raw.get("type", ""), str):
        raise _invalid("type", raw["type"], "a string")
    conf.felix_socket = _str(raw, "felix_socket", DEFAULT_FELIX_SOCKET)
    conf.nodename = _str(raw, "nodename", "")
    conf.nodename_file = _str(raw, "nodename_file", DEFAULT_NODENAME_FILE)
    conf.policy_timeout_ms = _int(raw, "policy_timeout_ms", 0, 0, 3_600_000)
    conf.timeout_ms = _int(raw, "timeout_ms", DEFAULT_TIMEOUT_MS, 1, 3_600_000)
    _parse_ipam(raw, conf)
    conf.mtu = _mtu(raw, conf.assign_ipv6)
    dns = raw.get("dns")
    if dns is not None:
        if not isinstance(dns, dict):
            raise _invalid("dns", dns, "an object")
        conf.dns = dns
    prev = raw.get("prevResult")
    if prev is not None:
        if not isinstance(prev, dict):
            raise _invalid("prevResult", prev, "an object")
        conf.prev_result = prev
    if command == "GC":
        conf.valid_attachments = _attachments(raw)
    return conf


def _name(raw: dict[str, object]) -> str:
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise CniError(INVALID_NETWORK_CONFIG, "network config has no name (a non-empty string)")
    if name[0] not in _NAME_FIRST or not set(name) <= _NAME_CHARS:
        raise _invalid("name", name, "letters, digits, '_', '.' or '-', starting alphanumeric")
    return name


def _mtu(raw: dict[str, object], ipv6: bool) -> int:
    """0 (or absent): Felix picks the MTU. Otherwise at least what every address family the
    pod gets needs: IPv4 68 (RFC 791), IPv6 1280 (RFC 8200; the kernel drops IPv6 from a link
    below it). Checked here, before any daemon is asked, so nothing is half-created."""
    value = raw.get("mtu", 0)
    low = MIN_MTU_IPV6 if ipv6 else MIN_MTU_IPV4
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or (value != 0 and not low <= value <= MAX_MTU)
    ):
        why = " (ipam.assign_ipv6 is on)" if ipv6 else ""
        raise _invalid("mtu", value, f"0 (Felix's MTU) or an integer in {low}..{MAX_MTU}{why}")
    return value


def _parse_ipam(raw: dict[str, object], conf: NetConf) -> None:
    ipam = raw.get("ipam", {})
    if not isinstance(ipam, dict):
        raise _invalid("ipam", ipam, "an object")
    ipam_type = ipam.get("type", IPAM_TYPE)
    if ipam_type != IPAM_TYPE:
        # The plugin asks calico-ipamd directly; delegating to another IPAM plugin is not done.
        raise CniError(
            UNSUPPORTED_FIELD,
            f"unsupported field ipam.type={ipam_type!r}: only {IPAM_TYPE!r} is supported",
        )
    conf.ipam_socket = _str(ipam, "socket", DEFAULT_IPAM_SOCKET, "ipam.")
    conf.assign_ipv4 = _flag(ipam, "assign_ipv4", True)
    conf.assign_ipv6 = _flag(ipam, "assign_ipv6", False)
    if not conf.assign_ipv4 and not conf.assign_ipv6:
        raise CniError(
            INVALID_NETWORK_CONFIG, "ipam assigns no address: assign_ipv4 and assign_ipv6 are off"
        )
    conf.ipv4_pools = _str_list(ipam, "ipv4_pools", "ipam.")
    conf.ipv6_pools = _str_list(ipam, "ipv6_pools", "ipam.")


def _attachments(raw: dict[str, object]) -> list[tuple[str, str]]:
    # libcni sends both keys (an early 1.1.0 draft used the second).
    key = "cni.dev/valid-attachments"
    value = raw.get(key)
    if value is None:
        key = "cni.dev/attachments"
        value = raw.get(key)
    if value is None:
        raise CniError(INVALID_NETWORK_CONFIG, "GC needs cni.dev/valid-attachments (a list)")
    if not isinstance(value, list):
        raise _invalid(key, value, "a list of {containerID, ifname}")
    out: list[tuple[str, str]] = []
    for item in value:
        if not isinstance(item, dict):
            raise _invalid(key, item, "a list of {containerID, ifname}")
        cid, ifname = item.get("containerID"), item.get("ifname", "")
        if not isinstance(cid, str) or not cid or not isinstance(ifname, str):
            raise _invalid(key, item, "entries with a containerID and an ifname string")
        out.append((cid, ifname))
    return out


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _invalid(field: str, value: object, expected: str) -> CniError:
    shown = jsonio.dumps(value) if not isinstance(value, float) else repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return CniError(
        INVALID_NETWORK_CONFIG, f"invalid network config: {field}={shown}: want {expected}"
    )


def _str(obj: dict[str, object], key: str, default: str, prefix: str = "") -> str:
    value = obj.get(key, default)
    if not isinstance(value, str) or (not value and default):
        raise _invalid(prefix + key, value, "a non-empty string")
    return value


def _int(obj: dict[str, object], key: str, default: int, low: int, high: int) -> int:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _invalid(key, value, f"an integer in {low}..{high}")
    return value


def _flag(obj: dict[str, object], key: str, default: bool) -> bool:
    # Calico's netconf spells these as strings ("true"/"false"); JSON booleans work too.
    value = obj.get(key, default)
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise _invalid("ipam." + key, value, '"true" or "false"')


def _str_list(obj: dict[str, object], key: str, prefix: str) -> list[str]:
    value = obj.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _invalid(prefix + key, value, "a list of non-empty strings")
    return value


# For the calico-ipam plugin's config (cni/ipam_netconf.py), which shares these rules.
network_name = _name
invalid = _invalid
attachments_of = _attachments
