"""The plugin's two peers, calico-ipamd and calico-felix, over grpc_lite, with gRPC failures
turned into CNI errors that name the daemon, the call and the reason."""

from __future__ import annotations

from cni_client import grpc_lite, wire
from cni_client.cni import errors
from cni_client.cni.errors import CniError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from cni_client.cni.netconf import NetConf

IPAM = "calico-ipamd"
FELIX = "calico-felix"

# gRPC status -> CNI code. Not listed: DAEMON_ERROR.
_CODES = {
    grpc_lite.UNAVAILABLE: errors.TRY_AGAIN_LATER,
    grpc_lite.DEADLINE_EXCEEDED: errors.TRY_AGAIN_LATER,
    grpc_lite.ABORTED: errors.TRY_AGAIN_LATER,
    grpc_lite.INVALID_ARGUMENT: errors.INVALID_NETWORK_CONFIG,
    grpc_lite.NOT_FOUND: errors.UNKNOWN_CONTAINER,
    grpc_lite.RESOURCE_EXHAUSTED: errors.ADDRESSES_EXHAUSTED,
    grpc_lite.ALREADY_EXISTS: errors.ADDRESS_CONFLICT,
}
_WHAT = {
    errors.TRY_AGAIN_LATER: "try again later",
    errors.ADDRESSES_EXHAUSTED: "no free IP address",
    errors.ADDRESS_CONFLICT: "IP address already in use",
}


def to_cni_error(daemon: str, method: str, exc: grpc_lite.GrpcError) -> CniError:
    code = _CODES.get(exc.code, errors.DAEMON_ERROR)
    call = method.rpartition("/")[2]
    what = _WHAT.get(code, "")
    prefix = f"{what}: " if what else ""
    return CniError(
        code,
        f"{prefix}{daemon} {call} failed: {exc.message}",
        f"gRPC status {grpc_lite.status_name(exc.code)}",
    )


class Daemon:
    """One daemon's connection; every call carries the invocation's traceparent."""

    def __init__(self, name: str, socket_path: str, timeout_s: float, traceparent: str) -> None:
        self.name = name
        self.channel = grpc_lite.Channel(socket_path, timeout_s)
        self.metadata = (("traceparent", traceparent),)
        self.timeout_s = timeout_s

    def call(self, method: str, request: bytes, timeout_s: float | None = None) -> bytes:
        try:
            return self.channel.call(method, request, self.metadata, timeout_s or self.timeout_s)
        except grpc_lite.GrpcError as exc:
            raise to_cni_error(self.name, method, exc) from None

    def close(self) -> None:
        self.channel.close()


class Daemons:
    """calico-ipamd and calico-felix for one invocation (connections made on first use)."""

    def __init__(self, conf: NetConf, traceparent: str) -> None:
        timeout = conf.timeout_ms / 1000
        self.ipam = Daemon(IPAM, conf.ipam_socket, timeout, traceparent)
        self.felix = Daemon(FELIX, conf.felix_socket, timeout, traceparent)

    def close(self) -> None:
        self.ipam.close()
        self.felix.close()

    # calico-ipamd

    def auto_assign(
        self,
        handle: str,
        num_ipv4: int,
        num_ipv6: int,
        attributes: Mapping[str, str],
        ipv4_pools: list[str],
        ipv6_pools: list[str],
    ) -> list[str]:
        req = wire.auto_assign_request(
            handle, num_ipv4, num_ipv6, attributes, ipv4_pools, ipv6_pools
        )
        v4, v6 = wire.auto_assign_response(self.ipam.call(wire.AUTO_ASSIGN, req))
        return v4 + v6

    def release_by_handle(self, handle: str) -> list[str]:
        req = wire.release_by_handle_request(handle)
        return wire.release_by_handle_response(self.ipam.call(wire.RELEASE_BY_HANDLE, req))

    def get_allocations(self, handle: str) -> list[str]:
        req = wire.get_allocations_request(handle)
        return wire.get_allocations_response(self.ipam.call(wire.GET_ALLOCATIONS, req))

    def list_handles(self, prefix: str) -> list[tuple[str, list[str]]] | None:
        """This node's handles starting with `prefix`, with their addresses; None when
        calico-ipamd predates ListHandles (UNIMPLEMENTED)."""
        req = wire.list_handles_request(prefix)
        ipam = self.ipam
        try:
            raw = ipam.channel.call(wire.LIST_HANDLES, req, ipam.metadata, ipam.timeout_s)
        except grpc_lite.GrpcError as exc:
            if exc.code == grpc_lite.UNIMPLEMENTED:
                return None
            raise to_cni_error(ipam.name, wire.LIST_HANDLES, exc) from None
        return wire.list_handles_response(raw)

    # calico-felix

    def setup_endpoint(
        self,
        endpoint: wire.EndpointID,
        netns: str,
        addresses: list[str],
        mtu: int,
        network: str,
        policy_timeout_ms: int,
    ) -> wire.SetupResult:
        req = wire.setup_endpoint_request(
            endpoint, netns, addresses, mtu, network, policy_timeout_ms
        )
        return wire.setup_endpoint_response(self.felix.call(wire.SETUP_ENDPOINT, req))

    def teardown_endpoint(self, endpoint: wire.EndpointID, netns: str) -> bool:
        req = wire.teardown_endpoint_request(endpoint, netns)
        return wire.teardown_endpoint_response(self.felix.call(wire.TEARDOWN_ENDPOINT, req))

    def check_endpoint(
        self, endpoint: wire.EndpointID, netns: str, addresses: list[str]
    ) -> tuple[bool, list[str]]:
        req = wire.check_endpoint_request(endpoint, netns, addresses)
        return wire.check_endpoint_response(self.felix.call(wire.CHECK_ENDPOINT, req))

    def list_endpoints(self) -> list[wire.ListedEndpoint]:
        req = wire.list_endpoints_request()
        return wire.list_endpoints_response(self.felix.call(wire.LIST_ENDPOINTS, req))


def health_problem(name: str, socket_path: str, timeout_s: float) -> str:
    """Why a daemon is not available ("" when it answers SERVING). A server without the health
    service still answered, so it counts as available."""
    try:
        status = wire.health_check_response(
            grpc_lite.unary_call(
                socket_path, wire.HEALTH_CHECK, wire.health_check_request(), (), timeout_s
            )
        )
    except grpc_lite.GrpcError as exc:
        if exc.code == grpc_lite.UNIMPLEMENTED:
            return ""
        return f"{name} at {socket_path}: {exc.message}"
    except wire.WireError as exc:
        return f"{name} at {socket_path}: bad health answer: {exc}"
    if status != wire.HEALTH_SERVING:
        return f"{name} at {socket_path}: health status {status} (not SERVING)"
    return ""
