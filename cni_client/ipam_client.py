"""The `calico-ipam` plugin's client of the node's calico-ipamd: unary gRPC over grpc_lite with
the hand-written protobuf of wire.py, so an exec never imports grpc or protobuf (see
cni_client/DESIGN.md). Failures come out as CniError naming the daemon, call and reason."""

from __future__ import annotations

from cni_client import wire
from cni_client.cni import errors
from cni_client.cni.daemons import IPAM, Daemon
from cni_client.cni.errors import CniError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import TypeVar

    T = TypeVar("T")  # only for mypy: annotations are never evaluated at run time

DEFAULT_SOCKET = "/var/run/calico/ipam.sock"
DEFAULT_TIMEOUT_S = 30.0


def _decoded(call: str, decode: Callable[[bytes], T], raw: bytes) -> T:
    try:
        return decode(raw)
    except (wire.WireError, UnicodeDecodeError) as exc:
        raise CniError(errors.DAEMON_ERROR, f"unreadable {IPAM} {call} answer: {exc}") from None


class IpamClient:
    """One connection to calico-ipamd for one invocation (made on the first call)."""

    def __init__(
        self,
        socket_path: str = DEFAULT_SOCKET,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        traceparent: str = "",
    ) -> None:
        self.daemon = Daemon(IPAM, socket_path, timeout_s, traceparent)

    def close(self) -> None:
        self.daemon.close()

    def __enter__(self) -> IpamClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def reached(self) -> bool:
        """Whether a request was written to the daemon (which may then have acted on it)."""
        return self.daemon.channel.requests_sent > 0

    def auto_assign(
        self,
        handle_id: str,
        num_ipv4: int,
        num_ipv6: int,
        attributes: Mapping[str, str],
        ipv4_pools: list[str],
        ipv6_pools: list[str],
    ) -> tuple[list[str], list[str]]:
        req = wire.auto_assign_request(
            handle_id, num_ipv4, num_ipv6, attributes, ipv4_pools, ipv6_pools
        )
        raw = self.daemon.call(wire.AUTO_ASSIGN, req)
        return _decoded("AutoAssign", wire.auto_assign_response, raw)

    def assign_ip(self, ip: str, handle_id: str, attributes: Mapping[str, str]) -> str:
        raw = self.daemon.call(wire.ASSIGN_IP, wire.assign_ip_request(ip, handle_id, attributes))
        return _decoded("AssignIP", wire.assign_ip_response, raw)

    def release_by_handle(self, handle_id: str) -> list[str]:
        raw = self.daemon.call(wire.RELEASE_BY_HANDLE, wire.release_by_handle_request(handle_id))
        return _decoded("ReleaseByHandle", wire.release_by_handle_response, raw)

    def get_allocations(self, handle_id: str) -> list[str]:
        raw = self.daemon.call(wire.GET_ALLOCATIONS, wire.get_allocations_request(handle_id))
        return _decoded("GetAllocations", wire.get_allocations_response, raw)

    def list_handles(self, prefix: str) -> list[tuple[str, list[str]]]:
        raw = self.daemon.call(wire.LIST_HANDLES, wire.list_handles_request(prefix))
        return _decoded("ListHandles", wire.list_handles_response, raw)
