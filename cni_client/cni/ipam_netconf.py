"""The `calico-ipam` plugin's input: the network config (its `ipam` section) and environment.

An IPAM plugin is exec'd by a main plugin (`bridge`, ...) with that plugin's whole network
config, so only `cniVersion`, `name`, `ipam` and the runtime-filled keys matter here; other
keys belong to the caller and are ignored. Calico's `ipam` keys: `assign_ipv4` ("true" by
default), `assign_ipv6` ("false"), `ipv4_pools` / `ipv6_pools` (names or CIDRs), plus ours:
`socket` (calico-ipamd), `nodename`, `timeout_ms`.
"""

from __future__ import annotations

from cni_client.cni import env, netconf, versions
from cni_client.cni.errors import INCOMPATIBLE_VERSION, INVALID_ENVIRONMENT, CniError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

# An IPAM plugin also serves main plugins that still speak the 0.1/0.2 result format.
SUPPORTED = ("0.1.0", "0.2.0", *versions.SUPPORTED)
# An absent cniVersion: this plugin has always read it as 0.2.0.
DEFAULT_VERSION = "0.2.0"
DEFAULT_NETWORK = "k8s-pod-network"
DEFAULT_SOCKET = "/var/run/calico/ipam.sock"
SOCKET_ENV = "CALICO_IPAM_SOCKET"
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


class IpamConf:
    __slots__ = (
        "assign_ipv4",
        "assign_ipv6",
        "cni_version",
        "ipv4_pools",
        "ipv6_pools",
        "name",
        "nodename",
        "prev_result",
        "socket",
        "timeout_ms",
        "valid_attachments",
    )

    def __init__(self, cni_version: str) -> None:
        self.cni_version = cni_version
        self.name = DEFAULT_NETWORK
        self.socket = DEFAULT_SOCKET
        self.assign_ipv4 = True
        self.assign_ipv6 = False
        self.ipv4_pools: list[str] = []
        self.ipv6_pools: list[str] = []
        self.nodename = ""
        self.timeout_ms = netconf.DEFAULT_TIMEOUT_MS
        self.prev_result: dict[str, object] | None = None
        self.valid_attachments: list[tuple[str, str]] | None = None

    def handle_id(self, container_id: str) -> str:
        """`<network>.<containerID>`: for `k8s-pod-network`, Calico's pod handle."""
        return f"{self.name}.{container_id}"


def version_of(raw: dict[str, object]) -> str:
    version = netconf.version_of(raw) if raw.get("cniVersion") else DEFAULT_VERSION
    if version not in SUPPORTED:
        raise CniError(
            INCOMPATIBLE_VERSION,
            f"incompatible CNI version {version!r}: calico-ipam supports {', '.join(SUPPORTED)}",
        )
    return version


def check_command(version: str, command: str) -> None:
    since = versions.COMMAND_SINCE.get(command)
    if since is not None and versions.as_tuple(version) < since:
        raise CniError(
            INCOMPATIBLE_VERSION,
            f"CNI version {version} does not have {command}"
            f" (needs {'.'.join(map(str, since))} or later)",
        )


def parse(raw: dict[str, object], command: str, environ: Mapping[str, str]) -> IpamConf:
    """Validate the decoded stdin for `command`; CniError with the spec's code otherwise."""
    conf = IpamConf(version_of(raw))
    check_command(conf.cni_version, command)
    if raw.get("name") is not None:
        conf.name = netconf.network_name(raw)
    ipam = raw.get("ipam", {})
    if ipam is None:
        ipam = {}
    if not isinstance(ipam, dict):
        raise netconf.invalid("ipam", ipam, "an object")
    socket = ipam.get("socket") or environ.get(SOCKET_ENV) or DEFAULT_SOCKET
    if not isinstance(socket, str):
        raise netconf.invalid("ipam.socket", socket, "a path")
    conf.socket = socket
    conf.assign_ipv4 = _flag(ipam, "assign_ipv4", True)
    conf.assign_ipv6 = _flag(ipam, "assign_ipv6", False)
    conf.ipv4_pools = _pools(ipam, "ipv4_pools")
    conf.ipv6_pools = _pools(ipam, "ipv6_pools")
    node = ipam.get("nodename") or raw.get("nodename") or environ.get("NODENAME") or ""
    if not isinstance(node, str):
        raise netconf.invalid("ipam.nodename", node, "a string")
    conf.nodename = node
    timeout = ipam.get("timeout_ms", raw.get("timeout_ms", netconf.DEFAULT_TIMEOUT_MS))
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 0 < timeout <= 3_600_000:
        raise netconf.invalid("ipam.timeout_ms", timeout, "an integer in 1..3600000")
    conf.timeout_ms = timeout
    prev = raw.get("prevResult")
    if prev is not None:
        if not isinstance(prev, dict):
            raise netconf.invalid("prevResult", prev, "an object")
        conf.prev_result = prev
    if command == "GC":
        conf.valid_attachments = netconf.attachments_of(raw)
    return conf


def container_id(environ: Mapping[str, str], command: str) -> str:
    """CNI_CONTAINERID, required (and checked) for the commands that name an attachment."""
    value = environ.get("CNI_CONTAINERID", "")
    if command in ("ADD", "DEL", "CHECK"):
        if not value:
            raise CniError(INVALID_ENVIRONMENT, f"{command} needs CNI_CONTAINERID: not set")
        env.check_container_id(value)
    return value


def _flag(ipam: dict[str, object], key: str, default: bool) -> bool:
    # Calico spells these as strings; JSON booleans and 1/0, yes/no work too.
    value = ipam.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise netconf.invalid("ipam." + key, value, '"true" or "false"')


def _pools(ipam: dict[str, object], key: str) -> list[str]:
    value = ipam.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise netconf.invalid("ipam." + key, value, "a list of pool names or CIDRs")
    return value
