"""The CNI commands of the `calico-ipam` plugin, each a few calls to calico-ipamd.

ADD assigns (CNI_ARGS `IP=a[,b]` asks for specific addresses, all or nothing), DEL releases the
attachment's handle (nothing to release is success), CHECK verifies calico-ipamd still holds
the prevResult's addresses, STATUS asks calico-ipamd's health service, GC releases this
network's handles on the node whose container the runtime no longer lists.
"""

from __future__ import annotations

import time

from cni_client.cni import errors, result
from cni_client.cni.daemons import IPAM, health_problem
from cni_client.cni.errors import CniError
from cni_client.cni.ipam_result import ipam_result
from cni_client.ipam_client import IpamClient

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cni_client.cni.ipam_netconf import IpamConf

STATUS_TIMEOUT_S = 5.0


def _client(conf: IpamConf, traceparent: str) -> IpamClient:
    return IpamClient(conf.socket, conf.timeout_ms / 1000, traceparent)


def attributes(conf: IpamConf, args: dict[str, str]) -> dict[str, str]:
    """Recorded with each allocation, as Calico does (calico-ipamd adds `node` if absent)."""
    attrs = {"timestamp": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    if conf.nodename:
        attrs["node"] = conf.nodename
    if "K8S_POD_NAMESPACE" in args:
        attrs["namespace"] = args["K8S_POD_NAMESPACE"]
    if "K8S_POD_NAME" in args:
        attrs["pod"] = args["K8S_POD_NAME"]
    return attrs


def cmd_add(
    conf: IpamConf, container_id: str, args: dict[str, str], traceparent: str
) -> dict[str, object]:
    if not conf.assign_ipv4 and not conf.assign_ipv6:
        raise CniError(
            errors.INVALID_NETWORK_CONFIG, "ipam: assign_ipv4 and assign_ipv6 are both false"
        )
    handle = conf.handle_id(container_id)
    attrs = attributes(conf, args)
    requested = [ip.strip() for ip in args.get("IP", "").split(",") if ip.strip()]
    client = _client(conf, traceparent)
    try:
        if not requested:
            ipv4, ipv6 = client.auto_assign(
                handle,
                1 if conf.assign_ipv4 else 0,
                1 if conf.assign_ipv6 else 0,
                attrs,
                conf.ipv4_pools,
                conf.ipv6_pools,
            )
            return ipam_result(conf.cni_version, ipv4, ipv6)
        ipv4, ipv6 = [], []
        try:
            for ip in requested:
                got = client.assign_ip(ip, handle, attrs)
                (ipv6 if ":" in got else ipv4).append(got)
        except CniError as exc:
            _release_after_failure(client, handle, exc)  # all or nothing
            raise
        return ipam_result(conf.cni_version, ipv4, ipv6)
    finally:
        client.close()


def _release_after_failure(client: IpamClient, handle: str, exc: CniError) -> None:
    if not client.reached:
        return
    try:
        client.release_by_handle(handle)
    except CniError as again:
        exc.details = "; ".join(filter(None, [exc.details, f"rollback: {again.msg}"]))


def cmd_del(conf: IpamConf, container_id: str, traceparent: str) -> None:
    with _client(conf, traceparent) as client:
        client.release_by_handle(conf.handle_id(container_id))


def cmd_check(conf: IpamConf, container_id: str, traceparent: str) -> None:
    """Calico's own CHECK does nothing; this one at least checks the addresses are still ours.
    Without a prevResult (an old runtime) there is nothing to compare."""
    if conf.prev_result is None:
        return
    prev = result.parse_prev_result(conf.prev_result)
    if not prev.addresses:
        return
    handle = conf.handle_id(container_id)
    with _client(conf, traceparent) as client:
        held = {result.bare_ip(a) for a in client.get_allocations(handle)}
    missing = [a for a in prev.addresses if result.bare_ip(a) not in held]
    if missing:
        raise CniError(
            errors.CHECK_FAILED, f"{IPAM} no longer holds {', '.join(missing)} for {handle}"
        )


def cmd_status(conf: IpamConf) -> None:
    problem = health_problem(IPAM, conf.socket, min(conf.timeout_ms / 1000, STATUS_TIMEOUT_S))
    if problem:
        raise CniError(errors.PLUGIN_NOT_AVAILABLE, f"plugin not available: {problem}")


def cmd_gc(conf: IpamConf, traceparent: str) -> None:
    """Release every handle of this network on this node whose container is not among the
    valid attachments; failures are collected, the rest still released."""
    valid = {cid for cid, _ in conf.valid_attachments or ()}
    prefix = conf.handle_id("")
    failures: list[str] = []
    with _client(conf, traceparent) as client:
        for handle, _ in client.list_handles(prefix):
            if handle[len(prefix) :] in valid:
                continue
            try:
                client.release_by_handle(handle)
            except CniError as exc:
                if exc.code == errors.TRY_AGAIN_LATER:  # the daemon is gone: stop here
                    raise
                failures.append(exc.msg)
    if failures:
        raise CniError(
            errors.DAEMON_ERROR,
            f"GC released what it could; {len(failures)} failed: " + "; ".join(failures),
        )
