"""A minimal gRPC client over HTTP/2 (h2c: a Unix socket or plain TCP), for processes that live a
few ms.

Importing grpc costs ~80 ms; the CNI plugin makes two or three unary calls per exec. So this
speaks just enough HTTP/2 (RFC 9113) itself: the connection preface, SETTINGS (+ACK), one
HEADERS+DATA request per stream, and reads HEADERS/DATA/trailers back. Flow control is opened
wide up front so responses of any size arrive without WINDOW_UPDATEs from us. Only built-in
modules are imported (`_socket`, `_struct`).
"""

from __future__ import annotations

import _socket
from _struct import pack, unpack_from

from cni_client import hpack_lite

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types and flags (RFC 9113 section 6).
DATA, HEADERS, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    0,
    1,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
)
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5

MAX_WINDOW = (1 << 31) - 1
DEFAULT_WINDOW = 65535
DEFAULT_MAX_FRAME = 16384

# gRPC status codes (grpc/doc/statuscodes.md).
OK = 0
CANCELLED = 1
UNKNOWN = 2
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
NOT_FOUND = 5
ALREADY_EXISTS = 6
PERMISSION_DENIED = 7
RESOURCE_EXHAUSTED = 8
FAILED_PRECONDITION = 9
ABORTED = 10
OUT_OF_RANGE = 11
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14
DATA_LOSS = 15
UNAUTHENTICATED = 16

STATUS_NAMES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)


def status_name(code: int) -> str:
    return STATUS_NAMES[code] if 0 <= code < len(STATUS_NAMES) else f"STATUS_{code}"


class GrpcError(Exception):
    """A call that did not end with grpc-status 0. Transport failures (no socket, connection
    refused or reset, timeout, protocol errors) are UNAVAILABLE or DEADLINE_EXCEEDED, as a
    real gRPC client reports them."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{status_name(code)}: {message}")
        self.code = code
        self.message = message


class _ProtocolError(Exception):
    pass


def _frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return pack(">BHBBI", n >> 16, n & 0xFFFF, ftype, flags, stream_id) + payload


def _percent_decode(value: bytes) -> str:
    # grpc-message is percent-encoded UTF-8 (gRPC over HTTP/2 spec).
    if b"%" not in value:
        return value.decode("utf-8", "replace")
    out = bytearray()
    i = 0
    while i < len(value):
        c = value[i]
        if c == 0x25 and _is_hex(value[i + 1 : i + 3]):
            out.append(int(value[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(c)
            i += 1
    return out.decode("utf-8", "replace")


def _is_hex(two: bytes) -> bool:
    return len(two) == 2 and all(c in b"0123456789abcdefABCDEF" for c in two)


def tcp_address(target: str) -> tuple[str, int] | None:
    """(host, port) when `target` names a TCP server (`http://host:port[/]`, `host:port`,
    `[v6]:port`); None for a Unix socket path (anything else)."""
    target = target.removeprefix("http://").rstrip("/") if target.startswith("http://") else target
    host, sep, port = target.rpartition(":")
    if "/" in target or not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


class Channel:
    """One HTTP/2 connection to a gRPC server on a Unix socket or, for `host:port` and
    `http://host:port` targets, over TCP; unary calls run one after the other on streams 1, 3,
    5, ... Connects lazily on the first call."""

    def __init__(self, path: str, timeout: float = 30.0, authority: str = "") -> None:
        self.path = path
        self.timeout = timeout
        self._tcp = tcp_address(path)
        if not authority:
            authority = path.removeprefix("http://").rstrip("/") if self._tcp else "localhost"
        self.authority = authority.encode()
        self._sock: _socket.socket | None = None
        self._buf = bytearray()
        self._next_stream = 1
        self.requests_sent = 0  # requests written to the socket (a server may have acted)
        self._decoder = hpack_lite.Decoder()
        self._send_window = DEFAULT_WINDOW  # connection-level, for our request DATA
        self._peer_initial_window = DEFAULT_WINDOW
        self._peer_max_frame = DEFAULT_MAX_FRAME
        self._stream_window = DEFAULT_WINDOW  # the current stream's send window

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect(self) -> _socket.socket:
        if self.path.startswith("https://"):
            raise GrpcError(UNAVAILABLE, f"{self.path}: TLS is not supported, use http://")
        if self._tcp is not None:
            sock = self._connect_tcp(*self._tcp)
        else:
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.path)
            except OSError as exc:
                sock.close()
                raise GrpcError(
                    UNAVAILABLE, f"cannot connect to {self.path}: {exc.strerror}"
                ) from None
        self._sock = sock
        return sock

    def _connect_tcp(self, host: str, port: int) -> _socket.socket:
        """The first address of `host` that accepts; Nagle off (requests are single writes)."""
        try:
            # An ASCII name as bytes: a str would load the idna codec (and `re`, ~6 ms).
            name: str | bytes = host.encode() if host.isascii() else host
            infos = _socket.getaddrinfo(name, port, 0, _socket.SOCK_STREAM)
        except OSError as exc:
            raise GrpcError(UNAVAILABLE, f"cannot resolve {host}: {exc}") from None
        problem = "no address"
        for family, socktype, proto, _, address in infos:
            sock = _socket.socket(family, socktype, proto)
            sock.settimeout(self.timeout)
            try:
                sock.connect(address)
            except OSError as exc:
                sock.close()
                problem = str(exc.strerror or exc)
                continue
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            return sock
        raise GrpcError(UNAVAILABLE, f"cannot connect to {self.path}: {problem}")

    def call(
        self,
        method: str,
        request: bytes,
        metadata: Iterable[tuple[str, str]] = (),
        timeout: float | None = None,
    ) -> bytes:
        """Make one unary call (`method` is `/package.Service/Method`); return the response
        message bytes or raise GrpcError."""
        first = self._sock is None
        sock = self._sock if self._sock is not None else self._connect()
        if timeout is not None:
            sock.settimeout(timeout)
        stream = self._next_stream
        self._next_stream += 2
        try:
            return self._call(sock, first, stream, method, request, metadata, timeout)
        except TimeoutError:
            self.close()
            raise GrpcError(DEADLINE_EXCEEDED, f"{method}: no answer from {self.path}") from None
        except (OSError, _ProtocolError, hpack_lite.HpackError) as exc:
            self.close()
            raise GrpcError(UNAVAILABLE, f"{method} via {self.path}: {exc}") from None

    def _call(
        self,
        sock: _socket.socket,
        first: bool,
        stream: int,
        method: str,
        request: bytes,
        metadata: Iterable[tuple[str, str]],
        timeout: float | None,
    ) -> bytes:
        out = bytearray()
        if first:
            # Preface, our SETTINGS and a wide-open connection window, in the same write as the
            # request: a client need not wait for the server's SETTINGS.
            out += PREFACE
            out += _frame(
                SETTINGS,
                0,
                0,
                pack(
                    ">HIHIHI",
                    SETTINGS_ENABLE_PUSH,
                    0,
                    SETTINGS_INITIAL_WINDOW_SIZE,
                    MAX_WINDOW,
                    SETTINGS_HEADER_TABLE_SIZE,
                    self._decoder.max_allowed,
                ),
            )
            out += _frame(WINDOW_UPDATE, 0, 0, pack(">I", MAX_WINDOW - DEFAULT_WINDOW))
        headers = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", method.encode()),
            (b":authority", self.authority),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ]
        if timeout is not None:
            headers.append((b"grpc-timeout", b"%dm" % max(1, int(timeout * 1000))))
        headers.extend((k.encode(), v.encode()) for k, v in metadata)
        block = hpack_lite.encode_headers(headers)
        # A header block larger than one frame goes out as HEADERS + CONTINUATIONs.
        chunks = [block[i : i + DEFAULT_MAX_FRAME] for i in range(0, len(block), DEFAULT_MAX_FRAME)]
        for i, chunk in enumerate(chunks):
            last = END_HEADERS if i == len(chunks) - 1 else 0
            out += _frame(HEADERS if i == 0 else CONTINUATION, last, stream, chunk)
        body = pack(">BI", 0, len(request)) + request
        self._stream_window = self._peer_initial_window
        pos = 0
        while pos < len(body):
            room = min(
                len(body) - pos, self._peer_max_frame, self._send_window, self._stream_window
            )
            if room <= 0:
                # Out of send window: flush, then read frames until the server opens it.
                sock.sendall(out)
                out.clear()
                self._read_until_window(sock, stream)
                continue
            chunk = body[pos : pos + room]
            pos += room
            self._send_window -= room
            self._stream_window -= room
            out += _frame(DATA, END_STREAM if pos == len(body) else 0, stream, chunk)
        sock.sendall(out)
        self.requests_sent += 1
        return self._read_response(sock, stream, method)

    def _read_frame(self, sock: _socket.socket) -> tuple[int, int, int, bytes]:
        buf = self._buf
        while len(buf) < 9:
            self._fill(sock)
        length = (buf[0] << 16) | (buf[1] << 8) | buf[2]
        while len(buf) < 9 + length:
            self._fill(sock)
        ftype, flags, stream = buf[3], buf[4], unpack_from(">I", buf, 5)[0] & 0x7FFFFFFF
        payload = bytes(buf[9 : 9 + length])
        del buf[: 9 + length]
        return ftype, flags, stream, payload

    def _fill(self, sock: _socket.socket) -> None:
        data = sock.recv(262144)
        if not data:
            raise _ProtocolError("connection closed by the server")
        self._buf += data

    def _handle_connection_frame(
        self, sock: _socket.socket, ftype: int, flags: int, payload: bytes
    ) -> None:
        """SETTINGS, PING, GOAWAY and connection WINDOW_UPDATE, on stream 0."""
        if ftype == SETTINGS:
            if flags & ACK:
                return
            for off in range(0, len(payload) - len(payload) % 6, 6):
                ident, value = unpack_from(">HI", payload, off)
                if ident == SETTINGS_INITIAL_WINDOW_SIZE:
                    # Applies to open streams too, as a delta (RFC 9113 6.9.2).
                    self._stream_window += value - self._peer_initial_window
                    self._peer_initial_window = value
                elif ident == SETTINGS_MAX_FRAME_SIZE:
                    self._peer_max_frame = value
            sock.sendall(_frame(SETTINGS, ACK, 0))
        elif ftype == PING and not flags & ACK:
            sock.sendall(_frame(PING, ACK, 0, payload))
        elif ftype == GOAWAY:
            last_stream, code = unpack_from(">II", payload)
            if self._next_stream - 2 > (last_stream & 0x7FFFFFFF):
                raise _ProtocolError(f"server sent GOAWAY (error {code}): {payload[8:]!r}")
        elif ftype == WINDOW_UPDATE:
            self._send_window += unpack_from(">I", payload)[0] & 0x7FFFFFFF

    def _read_until_window(self, sock: _socket.socket, stream: int) -> None:
        """Read frames until the connection or the stream window grows."""
        while True:
            before = (self._send_window, self._stream_window)
            ftype, flags, sid, payload = self._read_frame(sock)
            if sid == 0:
                self._handle_connection_frame(sock, ftype, flags, payload)
            elif sid == stream and ftype == WINDOW_UPDATE:
                self._stream_window += unpack_from(">I", payload)[0] & 0x7FFFFFFF
            elif sid == stream and ftype == RST_STREAM:
                code = unpack_from(">I", payload)[0]
                raise GrpcError(UNAVAILABLE, f"server reset the stream (HTTP/2 error {code})")
            if (self._send_window, self._stream_window) != before:
                return

    def _read_response(self, sock: _socket.socket, stream: int, method: str) -> bytes:
        data = bytearray()
        header_blocks: list[list[tuple[bytes, bytes]]] = []
        pending = bytearray()  # a header block spread over HEADERS + CONTINUATION
        pending_end_stream = False
        while True:
            ftype, flags, sid, payload = self._read_frame(sock)
            if sid == 0:
                self._handle_connection_frame(sock, ftype, flags, payload)
                continue
            if sid != stream:
                continue  # an old stream's late frames
            if ftype == DATA:
                data += _unpad(payload, flags)
                if flags & END_STREAM:
                    break
            elif ftype in (HEADERS, CONTINUATION):
                if ftype == HEADERS:
                    pending = bytearray(_headers_fragment(payload, flags))
                    pending_end_stream = bool(flags & END_STREAM)
                else:
                    pending += payload
                if flags & END_HEADERS:
                    header_blocks.append(self._decoder.decode(bytes(pending)))
                    if pending_end_stream:
                        break
            elif ftype == RST_STREAM:
                code = unpack_from(">I", payload)[0]
                raise GrpcError(UNAVAILABLE, f"{method}: stream reset (HTTP/2 error {code})")
        return _grpc_result(method, header_blocks, data)


def _unpad(payload: bytes, flags: int) -> bytes:
    if flags & PADDED:
        pad = payload[0]
        return payload[1 : len(payload) - pad]
    return payload


def _headers_fragment(payload: bytes, flags: int) -> bytes:
    start = 0
    end = len(payload)
    if flags & PADDED:
        start = 1
        end -= payload[0]
    if flags & PRIORITY_FLAG:
        start += 5
    return payload[start:end]


def _grpc_result(
    method: str, header_blocks: list[list[tuple[bytes, bytes]]], data: bytearray
) -> bytes:
    """The response message, or GrpcError from the status in the trailers (or, for a
    trailers-only response, the only header block)."""
    if not header_blocks:
        raise GrpcError(INTERNAL, f"{method}: response without headers")
    first = dict(header_blocks[0])
    http_status = first.get(b":status", b"")
    if http_status != b"200":
        raise GrpcError(
            UNAVAILABLE if http_status in (b"502", b"503", b"504") else UNKNOWN,
            f"{method}: HTTP status {http_status.decode(errors='replace')}",
        )
    trailers = dict(header_blocks[-1])
    raw_status = trailers.get(b"grpc-status")
    if raw_status is None:
        raise GrpcError(INTERNAL, f"{method}: response without grpc-status")
    code = int(raw_status) if raw_status.isdigit() else UNKNOWN
    if code != OK:
        message = _percent_decode(trailers.get(b"grpc-message", b""))
        raise GrpcError(code, message or status_name(code))
    if len(data) < 5:
        raise GrpcError(INTERNAL, f"{method}: response without a message")
    compressed, length = unpack_from(">BI", data)
    if compressed:
        raise GrpcError(INTERNAL, f"{method}: compressed response not supported")
    if len(data) < 5 + length:
        raise GrpcError(INTERNAL, f"{method}: truncated response message")
    return bytes(data[5 : 5 + length])


def unary_call(
    path: str,
    method: str,
    request: bytes,
    metadata: Iterable[tuple[str, str]] = (),
    timeout: float = 30.0,
) -> bytes:
    """One call on a connection of its own."""
    with Channel(path, timeout) as channel:
        return channel.call(method, request, metadata, timeout)
