"""Protobuf wire encoding of the few messages the CNI plugin exchanges with calico-ipamd and
calico-felix, by hand: importing the generated `_pb2` modules costs ~30 ms per exec.

Field numbers mirror protos/calico/ipam/v1/ipam.proto, protos/calico/felix/v1/endpoints.proto
and grpc.health.v1 (health.proto); tests/cni/test_cni_wire.py round-trips every message through the
generated classes, so drift from the .proto files fails a test.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

IPAM_SERVICE = "/calico.ipam.v1.Ipam/"
AUTO_ASSIGN = IPAM_SERVICE + "AutoAssign"
RELEASE_BY_HANDLE = IPAM_SERVICE + "ReleaseByHandle"
GET_ALLOCATIONS = IPAM_SERVICE + "GetAllocations"
ASSIGN_IP = IPAM_SERVICE + "AssignIP"
LIST_HANDLES = IPAM_SERVICE + "ListHandles"

FELIX_SERVICE = "/calico.felix.v1.Endpoints/"
SETUP_ENDPOINT = FELIX_SERVICE + "SetupEndpoint"
TEARDOWN_ENDPOINT = FELIX_SERVICE + "TeardownEndpoint"
CHECK_ENDPOINT = FELIX_SERVICE + "CheckEndpoint"
LIST_ENDPOINTS = FELIX_SERVICE + "ListEndpoints"

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_SERVING = 1  # HealthCheckResponse.ServingStatus.SERVING

_VARINT = 0
_I64 = 1
_LEN = 2
_I32 = 5


class WireError(Exception):
    """Bytes that are not a valid encoding of the expected message."""


# --- encoding -----------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int32/int64 negatives are sign-extended to 10 bytes
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_field(field: int, payload: bytes) -> bytes:
    return _varint((field << 3) | _LEN) + _varint(len(payload)) + payload


def _str(field: int, value: str) -> bytes:
    # proto3: a default (empty) scalar is not sent.
    return _len_field(field, value.encode()) if value else b""


def _strs(field: int, values: Iterable[str]) -> bytes:
    return b"".join(_len_field(field, v.encode()) for v in values)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value) if value else b""


def _map(field: int, entries: Mapping[str, str]) -> bytes:
    return b"".join(_len_field(field, _str(1, k) + _str(2, v)) for k, v in entries.items())


# --- decoding -----------------------------------------------------------------------------


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint too long")


def fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs: an int for varints, bytes for length-delimited fields.
    Fixed-width fields (none of ours) are skipped."""
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            value, pos = _read_varint(buf, pos)
            yield field, value
        elif wire_type == _LEN:
            length, pos = _read_varint(buf, pos)
            if pos + length > end:
                raise WireError(f"field {field}: truncated")
            yield field, buf[pos : pos + length]
            pos += length
        elif wire_type == _I64:
            pos += 8
        elif wire_type == _I32:
            pos += 4
        else:
            raise WireError(f"field {field}: unsupported wire type {wire_type}")
    if pos != end:
        raise WireError("truncated fixed-width field")


def _text(value: int | bytes) -> str:
    if isinstance(value, int):
        raise WireError("expected a string, got a varint")
    return value.decode()


def _num(value: int | bytes) -> int:
    if not isinstance(value, int):
        raise WireError("expected a varint, got bytes")
    return value


def _int32(value: int | bytes) -> int:
    # A negative int32 travels as its 64-bit two's complement.
    number = _num(value) & 0xFFFFFFFF
    return number - (1 << 32) if number >= 1 << 31 else number


def _strings_by_field(buf: bytes) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for field, value in fields(buf):
        if isinstance(value, bytes):
            out.setdefault(field, []).append(value.decode())
    return out


# --- calico.ipam.v1 -----------------------------------------------------------------------


def auto_assign_request(
    handle_id: str,
    num_ipv4: int,
    num_ipv6: int,
    attributes: Mapping[str, str],
    ipv4_pools: Iterable[str] = (),
    ipv6_pools: Iterable[str] = (),
) -> bytes:
    return (
        _int(1, num_ipv4)
        + _int(2, num_ipv6)
        + _str(3, handle_id)
        + _map(4, attributes)
        + _strs(5, ipv4_pools)
        + _strs(6, ipv6_pools)
    )


def auto_assign_response(buf: bytes) -> tuple[list[str], list[str]]:
    """(ipv4, ipv6) addresses with their block prefix length."""
    by_field = _strings_by_field(buf)
    return by_field.get(1, []), by_field.get(2, [])


def release_by_handle_request(handle_id: str) -> bytes:
    return _str(1, handle_id)


def release_by_handle_response(buf: bytes) -> list[str]:
    return _strings_by_field(buf).get(1, [])


def get_allocations_request(handle_id: str) -> bytes:
    return _str(1, handle_id)


def get_allocations_response(buf: bytes) -> list[str]:
    return _strings_by_field(buf).get(1, [])


def assign_ip_request(ip: str, handle_id: str, attributes: Mapping[str, str]) -> bytes:
    return _str(1, ip) + _str(2, handle_id) + _map(3, attributes)


def assign_ip_response(buf: bytes) -> str:
    """The address with its block's prefix length."""
    found = _strings_by_field(buf).get(1, [])
    return found[-1] if found else ""


def list_handles_request(handle_prefix: str) -> bytes:
    return _str(1, handle_prefix)


def list_handles_response(buf: bytes) -> list[tuple[str, list[str]]]:
    """(handle id, its addresses on the node) pairs, in the daemon's order."""
    handles: list[tuple[str, list[str]]] = []
    for field, value in fields(buf):
        if field == 1:
            entry = _strings_by_field(_bytes(value))
            handles.append(("".join(entry.get(1, [])), entry.get(2, [])))
    return handles


# --- calico.felix.v1 ----------------------------------------------------------------------


class EndpointID:
    __slots__ = ("container_id", "interface_name", "namespace", "pod")

    def __init__(self, container_id: str, namespace: str, pod: str, interface_name: str) -> None:
        self.container_id = container_id
        self.namespace = namespace
        self.pod = pod
        self.interface_name = interface_name

    def encode(self) -> bytes:
        return (
            _str(1, self.container_id)
            + _str(2, self.namespace)
            + _str(3, self.pod)
            + _str(4, self.interface_name)
        )

    @classmethod
    def decode(cls, buf: bytes) -> EndpointID:
        s = {f: _text(v) for f, v in fields(buf)}
        return cls(s.get(1, ""), s.get(2, ""), s.get(3, ""), s.get(4, ""))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EndpointID) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple[str, str, str, str]:
        return (self.container_id, self.namespace, self.pod, self.interface_name)

    def __repr__(self) -> str:
        return f"EndpointID{self._key()!r}"


class Interface:
    __slots__ = ("mac", "mtu", "name", "sandbox")

    def __init__(self, name: str = "", mac: str = "", sandbox: str = "", mtu: int = 0) -> None:
        self.name = name
        self.mac = mac
        self.sandbox = sandbox
        self.mtu = mtu  # 0: Felix did not say

    @classmethod
    def decode(cls, buf: bytes) -> Interface:
        iface = cls()
        for field, value in fields(buf):
            if field == 1:
                iface.name = _text(value)
            elif field == 2:
                iface.mac = _text(value)
            elif field == 3:
                iface.sandbox = _text(value)
            elif field == 4:
                iface.mtu = _int32(value)
        return iface


class SetupResult:
    """SetupEndpointResponse."""

    __slots__ = ("addresses", "container_interface", "host_interface", "routes", "workload")

    def __init__(self) -> None:
        self.host_interface = Interface()
        self.container_interface = Interface()
        self.addresses: list[str] = []
        self.routes: list[tuple[str, str]] = []  # (dst, gateway); gateway "" for link routes
        self.workload = ""


def setup_endpoint_request(
    endpoint: EndpointID,
    netns: str,
    addresses: Iterable[str],
    mtu: int,
    network_name: str,
    policy_timeout_ms: int,
) -> bytes:
    return (
        _len_field(1, endpoint.encode())
        + _str(2, netns)
        + _strs(3, addresses)
        + _int(4, mtu)
        + _str(5, network_name)
        + _int(6, policy_timeout_ms)
    )


def setup_endpoint_response(buf: bytes) -> SetupResult:
    result = SetupResult()
    for field, value in fields(buf):
        if field == 1:
            result.host_interface = Interface.decode(_bytes(value))
        elif field == 2:
            result.container_interface = Interface.decode(_bytes(value))
        elif field == 3:
            result.addresses.append(_text(value))
        elif field == 4:
            route = {f: _text(v) for f, v in fields(_bytes(value))}
            result.routes.append((route.get(1, ""), route.get(2, "")))
        elif field == 5:
            result.workload = _text(value)
    return result


def _bytes(value: int | bytes) -> bytes:
    if isinstance(value, int):
        raise WireError("expected a message, got a varint")
    return value


def teardown_endpoint_request(endpoint: EndpointID, netns: str) -> bytes:
    return _len_field(1, endpoint.encode()) + _str(2, netns)


def teardown_endpoint_response(buf: bytes) -> bool:
    """Whether there was something to remove."""
    return any(f == 1 and _num(v) for f, v in fields(buf))


def check_endpoint_request(endpoint: EndpointID, netns: str, addresses: Iterable[str]) -> bytes:
    return _len_field(1, endpoint.encode()) + _str(2, netns) + _strs(3, addresses)


def check_endpoint_response(buf: bytes) -> tuple[bool, list[str]]:
    ok = False
    problems: list[str] = []
    for field, value in fields(buf):
        if field == 1:
            ok = bool(_num(value))
        elif field == 2:
            problems.append(_text(value))
    return ok, problems


class ListedEndpoint:
    """ListEndpointsResponse.Endpoint."""

    __slots__ = ("addresses", "host_interface", "id", "programmed", "workload")

    def __init__(self) -> None:
        self.id = EndpointID("", "", "", "")
        self.host_interface = ""
        self.addresses: list[str] = []
        self.workload = ""
        self.programmed = False


def list_endpoints_request() -> bytes:
    return b""


def list_endpoints_response(buf: bytes) -> list[ListedEndpoint]:
    endpoints: list[ListedEndpoint] = []
    for field, value in fields(buf):
        if field != 1:
            continue
        ep = ListedEndpoint()
        for f, v in fields(_bytes(value)):
            if f == 1:
                ep.id = EndpointID.decode(_bytes(v))
            elif f == 2:
                ep.host_interface = _text(v)
            elif f == 3:
                ep.addresses.append(_text(v))
            elif f == 4:
                ep.workload = _text(v)
            elif f == 5:
                ep.programmed = bool(_num(v))
        endpoints.append(ep)
    return endpoints


# --- grpc.health.v1 -----------------------------------------------------------------------


def health_check_request(service: str = "") -> bytes:
    return _str(1, service)


def health_check_response(buf: bytes) -> int:
    """The ServingStatus number (1 = SERVING)."""
    status = 0
    for field, value in fields(buf):
        if field == 1:
            status = _num(value)
    return status
