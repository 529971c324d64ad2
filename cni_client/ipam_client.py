"""The CNI plugin's transport to the local calico-ipamd: blocking gRPC over a Unix socket.

Kept behind this small interface (plain strings in and out) so it can later be replaced by a
lighter transport without touching the plugin.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from calico.ipam.v1 import ipam_pb2, ipam_pb2_grpc

DEFAULT_SOCKET = "/var/run/calico/ipam.sock"
DEFAULT_TIMEOUT = 30.0


class IpamClientError(Exception):
    """A failed call: `code` is the gRPC status name (e.g. RESOURCE_EXHAUSTED)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class IpamClient:
    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout: float = DEFAULT_TIMEOUT):
        self.socket_path = socket_path
        self.timeout = timeout
        self._channel = grpc.insecure_channel(f"unix:{socket_path}")
        self._stub = ipam_pb2_grpc.IpamStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> IpamClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _error(self, exc: grpc.RpcError) -> IpamClientError:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        name = code.name if code is not None else "UNKNOWN"
        if name == "UNAVAILABLE":
            details = f"calico-ipamd at {self.socket_path} unreachable: {details}"
        return IpamClientError(name, details or "")

    def auto_assign(
        self,
        handle_id: str,
        num_ipv4: int,
        num_ipv6: int,
        attributes: Mapping[str, str],
        ipv4_pools: list[str] | None = None,
        ipv6_pools: list[str] | None = None,
    ) -> tuple[list[str], list[str]]:
        request = ipam_pb2.AutoAssignRequest(
            handle_id=handle_id,
            num_ipv4=num_ipv4,
            num_ipv6=num_ipv6,
            attributes=dict(attributes),
            ipv4_pools=ipv4_pools or [],
            ipv6_pools=ipv6_pools or [],
        )
        try:
            reply = self._stub.AutoAssign(request, timeout=self.timeout, wait_for_ready=False)
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        return list(reply.ipv4), list(reply.ipv6)

    def assign_ip(self, ip: str, handle_id: str, attributes: Mapping[str, str]) -> str:
        request = ipam_pb2.AssignIPRequest(ip=ip, handle_id=handle_id, attributes=dict(attributes))
        try:
            return str(self._stub.AssignIP(request, timeout=self.timeout).ip)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def release_by_handle(self, handle_id: str) -> list[str]:
        request = ipam_pb2.ReleaseByHandleRequest(handle_id=handle_id)
        try:
            return list(self._stub.ReleaseByHandle(request, timeout=self.timeout).released)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def get_allocations(self, handle_id: str) -> list[str]:
        request = ipam_pb2.GetAllocationsRequest(handle_id=handle_id)
        try:
            return list(self._stub.GetAllocations(request, timeout=self.timeout).ips)
        except grpc.RpcError as exc:
            raise self._error(exc) from None
