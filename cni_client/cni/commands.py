"""The CNI commands of the `calico` plugin: each takes the validated invocation and network
config and either returns what to print or raises CniError."""

from __future__ import annotations

import posix

from cni_client import wire
from cni_client.cni import errors, result
from cni_client.cni.daemons import FELIX, IPAM, Daemons, health_problem
from cni_client.cni.errors import CniError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cni_client.cni.env import Invocation
    from cni_client.cni.netconf import NetConf

HANDLE_PREFIX = "k8s-pod-network."  # Calico's IPAM handle for a pod: this + container ID
STATUS_TIMEOUT_S = 5.0


def handle_id(container_id: str) -> str:
    return HANDLE_PREFIX + container_id


def endpoint_id(inv: Invocation) -> wire.EndpointID:
    # Outside Kubernetes (no K8S_POD_NAME) the container is its own workload, as in Calico.
    return wire.EndpointID(
        inv.container_id,
        inv.pod_namespace or "default",
        inv.pod_name or inv.container_id,
        inv.ifname,
    )


def node_name(conf: NetConf) -> str:
    """netconf `nodename`, else the file calico-node writes, else the hostname (as Calico)."""
    if conf.nodename:
        return conf.nodename
    try:
        with open(conf.nodename_file, encoding="utf-8") as f:
            name = f.read().strip()
        if name:
            return name
    except OSError:
        pass
    return posix.uname().nodename


def cmd_add(inv: Invocation, conf: NetConf, traceparent: str) -> dict[str, object]:
    handle = handle_id(inv.container_id)
    endpoint = endpoint_id(inv)
    attributes = {"namespace": endpoint.namespace, "pod": endpoint.pod, "node": node_name(conf)}
    daemons = Daemons(conf, traceparent)
    felix_asked = False
    try:
        addresses = daemons.auto_assign(
            handle,
            1 if conf.assign_ipv4 else 0,
            1 if conf.assign_ipv6 else 0,
            attributes,
            conf.ipv4_pools,
            conf.ipv6_pools,
        )
        if not addresses:
            raise CniError(errors.ADDRESSES_EXHAUSTED, f"{IPAM} AutoAssign returned no address")
        felix_asked = True
        setup = daemons.setup_endpoint(
            endpoint, inv.netns, addresses, conf.mtu, conf.name, conf.policy_timeout_ms
        )
    except BaseException as exc:
        problems = _roll_back(daemons, endpoint, inv.netns, handle, felix_asked)
        if isinstance(exc, CniError):
            if problems:
                exc.details = "; ".join(
                    filter(None, [exc.details, "rollback: " + ", ".join(problems)])
                )
            raise
        if isinstance(exc, wire.WireError):
            raise CniError(errors.DAEMON_ERROR, f"unreadable answer from a daemon: {exc}") from None
        raise
    finally:
        daemons.close()
    if not setup.container_interface.sandbox:
        setup.container_interface.sandbox = inv.netns
    if not setup.container_interface.name:
        setup.container_interface.name = inv.ifname
    if not setup.addresses:
        setup.addresses = addresses
    return result.add_result(conf.cni_version, setup, conf.dns)


def _roll_back(
    daemons: Daemons, endpoint: wire.EndpointID, netns: str, handle: str, felix_asked: bool
) -> list[str]:
    """Undo a failed ADD: take the endpoint down (if Felix was asked to make it) and release the
    handle. Returns what could not be undone."""
    problems: list[str] = []
    if felix_asked:
        try:
            daemons.teardown_endpoint(endpoint, netns)
        except (CniError, wire.WireError) as exc:
            problems.append(f"{FELIX} TeardownEndpoint: {exc}")
    if daemons.ipam.channel.requests_sent == 0:
        return problems  # AutoAssign never reached calico-ipamd: nothing to release
    try:
        daemons.release_by_handle(handle)
    except (CniError, wire.WireError) as exc:
        problems.append(f"{IPAM} ReleaseByHandle {handle}: {exc}")
    return problems


def cmd_del(inv: Invocation, conf: NetConf, traceparent: str) -> None:
    """Idempotent: a missing netns, endpoint or allocation is success. The handle is released
    only once the endpoint is gone, so an address never serves two pods."""
    daemons = Daemons(conf, traceparent)
    try:
        try:
            daemons.teardown_endpoint(endpoint_id(inv), inv.netns)
        except CniError as exc:
            if exc.code != errors.UNKNOWN_CONTAINER:  # NOT_FOUND: nothing left to remove
                raise
        daemons.release_by_handle(handle_id(inv.container_id))
    except wire.WireError as exc:
        raise CniError(errors.DAEMON_ERROR, f"unreadable answer from a daemon: {exc}") from None
    finally:
        daemons.close()


def cmd_check(inv: Invocation, conf: NetConf, traceparent: str) -> None:
    if conf.prev_result is None:
        raise CniError(
            errors.INVALID_NETWORK_CONFIG, "CHECK needs prevResult in the network config"
        )
    prev = result.parse_prev_result(conf.prev_result)
    if not any(
        name == inv.ifname and (not sandbox or sandbox == inv.netns)
        for name, sandbox in prev.interfaces
    ):
        raise CniError(
            errors.CHECK_FAILED,
            f"prevResult has no interface {inv.ifname} in sandbox {inv.netns}",
        )
    daemons = Daemons(conf, traceparent)
    try:
        held = {
            _canonical(result.bare_ip(a))
            for a in daemons.get_allocations(handle_id(inv.container_id))
        }
        missing = [a for a in prev.addresses if _canonical(result.bare_ip(a)) not in held]
        if missing:
            raise CniError(
                errors.CHECK_FAILED,
                f"{IPAM} no longer holds {', '.join(missing)} for {handle_id(inv.container_id)}",
            )
        ok, problems = daemons.check_endpoint(endpoint_id(inv), inv.netns, prev.addresses)
        if not ok:
            raise CniError(
                errors.CHECK_FAILED,
                f"endpoint differs from prevResult: {'; '.join(problems) or 'reason not given'}",
            )
    except wire.WireError as exc:
        raise CniError(errors.DAEMON_ERROR, f"unreadable answer from a daemon: {exc}") from None
    finally:
        daemons.close()


def _canonical(ip: str) -> str:
    if ":" not in ip:
        return ip
    import ipaddress  # only CHECK of IPv6 pays for it

    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip


def cmd_status(conf: NetConf) -> None:
    timeout = min(conf.timeout_ms / 1000, STATUS_TIMEOUT_S)
    problems = [
        p
        for p in (
            health_problem(IPAM, conf.ipam_socket, timeout),
            health_problem(FELIX, conf.felix_socket, timeout),
        )
        if p
    ]
    if problems:
        raise CniError(errors.PLUGIN_NOT_AVAILABLE, "plugin not available: " + "; ".join(problems))


def cmd_gc(conf: NetConf, traceparent: str) -> None:
    """Tear down the endpoints (and release the addresses) of attachments the runtime no longer
    lists. An address is released only when no valid attachment has its container and its
    endpoint is gone. calico-ipamd's handles for this node are collected too, so an allocation
    whose endpoint never came (an ADD that died between the two daemons) does not leak."""
    valid = set(conf.valid_attachments or ())
    valid_containers = {cid for cid, _ in valid}
    daemons = Daemons(conf, traceparent)
    failures: list[CniError] = []
    try:
        stale = [
            ep
            for ep in daemons.list_endpoints()
            if (ep.id.container_id, ep.id.interface_name) not in valid
        ]
        still_plumbed: set[str] = set()  # containers whose teardown failed keep their address
        for ep in stale:
            try:
                daemons.teardown_endpoint(ep.id, "")
            except CniError as exc:
                failures.append(exc)
                still_plumbed.add(ep.id.container_id)
        candidates = {ep.id.container_id for ep in stale}
        for handle, _ in daemons.list_handles(HANDLE_PREFIX) or ():
            candidates.add(handle[len(HANDLE_PREFIX) :])
        for cid in sorted(candidates - valid_containers - still_plumbed):
            try:
                daemons.release_by_handle(handle_id(cid))
            except CniError as exc:
                failures.append(exc)
    except wire.WireError as exc:
        raise CniError(errors.DAEMON_ERROR, f"unreadable answer from a daemon: {exc}") from None
    finally:
        daemons.close()
    if failures:
        raise CniError(
            failures[0].code,
            f"GC removed what it could; {len(failures)} failed: "
            + "; ".join(f.msg for f in failures),
        )
