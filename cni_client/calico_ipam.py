"""calico-ipam: the CNI IPAM plugin, a thin client of the node's calico-ipamd.

CNI IPAM interface: the network configuration on stdin, CNI_COMMAND and friends in the
environment; ADD prints a result with `ips`, DEL releases the handle's addresses (and succeeds
when there is nothing to release), VERSION lists the supported versions, CHECK does nothing
(as Calico's). Netconf `ipam` keys, as in Calico: `assign_ipv4` ("true" by default),
`assign_ipv6` ("false"), `ipv4_pools` / `ipv6_pools` (names or CIDRs), plus `socket` (the
daemon's Unix socket). The handle is `<network name>.<CNI_CONTAINERID>`, so Kubernetes' network
`k8s-pod-network` gives Calico's `k8s-pod-network.<containerID>`. CNI_ARGS `IP=<addr>[,<addr>]`
asks for specific addresses.

Start-up cost matters (a runtime execs this per pod): only json/os/sys at import time; the
transport (gRPC) is imported once the request is known to be valid.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

SUPPORTED_VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]
DEFAULT_SOCKET = "/var/run/calico/ipam.sock"

# CNI error codes (spec "Well-known Error Codes"); 100+ are ours.
ERR_INCOMPATIBLE_VERSION = 1
ERR_INVALID_ENV = 4
ERR_DECODE = 6
ERR_INVALID_CONFIG = 7
ERR_TRY_AGAIN_LATER = 11
ERR_POOLS_EXHAUSTED = 100
ERR_IPAM = 101

_GRPC_TO_CNI = {
    "INVALID_ARGUMENT": ERR_INVALID_CONFIG,
    "RESOURCE_EXHAUSTED": ERR_POOLS_EXHAUSTED,
    "UNAVAILABLE": ERR_TRY_AGAIN_LATER,
    "ABORTED": ERR_TRY_AGAIN_LATER,
    "DEADLINE_EXCEEDED": ERR_TRY_AGAIN_LATER,
}


class PluginError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details


def _flag(value: Any, default: bool) -> bool:
    """Calico's netconf uses the strings "true"/"false"; accept JSON booleans too."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise PluginError(ERR_INVALID_CONFIG, f'ipam: expected "true" or "false", got {value!r}')


def parse_cni_args(text: str) -> dict[str, str]:
    out = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


def _pools(ipam: dict[str, Any], name: str) -> list[str]:
    value = ipam.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PluginError(ERR_INVALID_CONFIG, f"ipam.{name} must be a list of pool names/CIDRs")
    return list(value)


def format_result(cni_version: str, ipv4: list[str], ipv6: list[str]) -> dict[str, Any]:
    if cni_version in ("0.1.0", "0.2.0"):
        result: dict[str, Any] = {"cniVersion": cni_version}
        if ipv4:
            result["ip4"] = {"ip": ipv4[0]}
        if ipv6:
            result["ip6"] = {"ip": ipv6[0]}
        return result
    with_version = cni_version in ("0.3.0", "0.3.1", "0.4.0")
    ips = []
    for version, addrs in (("4", ipv4), ("6", ipv6)):
        for addr in addrs:
            entry = {"address": addr}
            if with_version:
                entry["version"] = version
            ips.append(entry)
    return {"cniVersion": cni_version, "ips": ips, "routes": [], "dns": {}}


class Request:
    """One invocation: the environment and the network configuration."""

    def __init__(self, env: dict[str, str], stdin: str) -> None:
        self.command = env.get("CNI_COMMAND", "")
        if self.command == "VERSION":
            self.conf: dict[str, Any] = {}
            return
        try:
            conf = json.loads(stdin or "{}")
        except ValueError as exc:
            raise PluginError(
                ERR_DECODE, "network configuration is not valid JSON", str(exc)
            ) from None
        if not isinstance(conf, dict):
            raise PluginError(ERR_DECODE, "network configuration must be a JSON object")
        self.conf = conf
        self.cni_version = str(conf.get("cniVersion") or "0.2.0")
        if self.cni_version not in SUPPORTED_VERSIONS:
            raise PluginError(
                ERR_INCOMPATIBLE_VERSION,
                f"cniVersion {self.cni_version} is not supported",
                f"supported: {', '.join(SUPPORTED_VERSIONS)}",
            )
        self.container_id = env.get("CNI_CONTAINERID", "")
        if self.command in ("ADD", "DEL") and not self.container_id:
            raise PluginError(ERR_INVALID_ENV, "CNI_CONTAINERID is required")
        ipam = conf.get("ipam") or {}
        if not isinstance(ipam, dict):
            raise PluginError(ERR_INVALID_CONFIG, "ipam must be an object")
        self.socket = str(ipam.get("socket") or env.get("CALICO_IPAM_SOCKET") or DEFAULT_SOCKET)
        self.assign_ipv4 = _flag(ipam.get("assign_ipv4"), True)
        self.assign_ipv6 = _flag(ipam.get("assign_ipv6"), False)
        self.ipv4_pools = _pools(ipam, "ipv4_pools")
        self.ipv6_pools = _pools(ipam, "ipv6_pools")
        network = str(conf.get("name") or "k8s-pod-network")
        self.handle_id = f"{network}.{self.container_id}"
        args = parse_cni_args(env.get("CNI_ARGS", ""))
        self.requested_ips = [ip for ip in args.get("IP", "").split(",") if ip.strip()]
        node = ipam.get("nodename") or conf.get("nodename") or env.get("NODENAME")
        self.attributes = {"timestamp": time.strftime("%Y-%m-%d %H:%M:%S %z")}
        if node:
            self.attributes["node"] = str(node)
        if "K8S_POD_NAMESPACE" in args:
            self.attributes["namespace"] = args["K8S_POD_NAMESPACE"]
        if "K8S_POD_NAME" in args:
            self.attributes["pod"] = args["K8S_POD_NAME"]


def _client_error(exc: Exception) -> PluginError:
    code = getattr(exc, "code", "UNKNOWN")
    message = getattr(exc, "message", str(exc))
    return PluginError(_GRPC_TO_CNI.get(code, ERR_IPAM), message, code)


def cmd_add(req: Request) -> dict[str, Any]:
    from cni_client.ipam_client import IpamClient, IpamClientError

    with IpamClient(req.socket) as client:
        try:
            if req.requested_ips:
                ipv4: list[str] = []
                ipv6: list[str] = []
                try:
                    for ip in req.requested_ips:
                        got = client.assign_ip(ip.strip(), req.handle_id, req.attributes)
                        (ipv6 if ":" in got else ipv4).append(got)
                except IpamClientError:
                    client.release_by_handle(req.handle_id)  # all or nothing
                    raise
            else:
                if not req.assign_ipv4 and not req.assign_ipv6:
                    raise PluginError(
                        ERR_INVALID_CONFIG, "ipam: assign_ipv4 and assign_ipv6 are both false"
                    )
                ipv4, ipv6 = client.auto_assign(
                    req.handle_id,
                    1 if req.assign_ipv4 else 0,
                    1 if req.assign_ipv6 else 0,
                    req.attributes,
                    req.ipv4_pools,
                    req.ipv6_pools,
                )
        except IpamClientError as exc:
            raise _client_error(exc) from None
    return format_result(req.cni_version, ipv4, ipv6)


def cmd_del(req: Request) -> None:
    from cni_client.ipam_client import IpamClient, IpamClientError

    with IpamClient(req.socket) as client:
        try:
            client.release_by_handle(req.handle_id)
        except IpamClientError as exc:
            raise _client_error(exc) from None


def run(env: dict[str, str], stdin: str) -> tuple[int, dict[str, Any] | None]:
    """Handle one invocation; returns the exit status and the JSON to print (if any)."""
    version = "1.0.0"
    try:
        req = Request(env, stdin)
        if req.command == "VERSION":
            return 0, {"cniVersion": "1.0.0", "supportedVersions": SUPPORTED_VERSIONS}
        version = req.cni_version
        if req.command == "ADD":
            return 0, cmd_add(req)
        if req.command == "DEL":
            cmd_del(req)
            return 0, None
        if req.command == "CHECK":
            return 0, None
        raise PluginError(ERR_INVALID_ENV, f"CNI_COMMAND {req.command!r} is not supported")
    except PluginError as exc:
        error = {"cniVersion": version, "code": exc.code, "msg": exc.msg}
        if exc.details:
            error["details"] = exc.details
        return 1, error


def main() -> int:
    stdin = "" if os.environ.get("CNI_COMMAND") == "VERSION" else sys.stdin.read()
    status, output = run(dict(os.environ), stdin)
    if output is not None:
        sys.stdout.write(json.dumps(output) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
