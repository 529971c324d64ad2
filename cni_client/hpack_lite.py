"""HPACK (RFC 7541) for a one-shot gRPC client: encode requests plainly, decode responses fully.

Requests use literal header fields without indexing and without Huffman, so the encoder keeps
no state. Responses from grpc-core use the static table, the dynamic table and Huffman strings,
so the decoder implements all three. Imports nothing: the CNI plugin pays for every import.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable


class HpackError(Exception):
    """A header block that does not decode (a COMPRESSION_ERROR in HTTP/2 terms)."""


# RFC 7541 Appendix A.
STATIC_TABLE: tuple[tuple[bytes, bytes], ...] = (
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
)

# RFC 7541 Appendix B, as the code length (bits) of each symbol 0..256 (256 = EOS). The code is
# canonical (codes of equal length are consecutive in symbol order), so the lengths alone
# determine every code; tests/cni check the rebuilt codes against the RFC's examples.
_HUFFMAN_LENGTHS_HEX = (
    "0d171c1c1c1c1c1c1c181e1c1c1e1c1c1c1c1c1c1c1c1e1c1c1c1c1c1c1c1c1c060a0a0c0d06080b0a0a080b"
    "080606060505050606060606060607080f060c0a0d060707070707070707070707070707070707070707070708"
    "07080d130d0e060f05060506050606060507070606060506070605050607070707070f0b0e0d1c141614141616"
    "161716171717171718171818161718171717171516171617171816151416161717151716161815161717151516"
    "151716171714161616171616171a1a1413161716191a1a1a1b1b1a181913151a1b1b1a1b1815151a1a1c1b1b1b"
    "14181415161515171616191918181a171a1b1a1a1b1b1b1b1b1c1b1b1b1b1b1a1e"
)
EOS = 256

# Built on first use: (1 << length) | code -> symbol. The leading 1 bit makes codes of different
# lengths distinct keys, so decoding can grow one integer bit by bit and look it up.
_huffman_decode_table: dict[int, int] | None = None


def huffman_codes() -> list[tuple[int, int]]:
    """(code, length) for each symbol 0..256, rebuilt from the canonical code lengths."""
    lengths = bytes.fromhex(_HUFFMAN_LENGTHS_HEX)
    codes = [(0, 0)] * len(lengths)
    code = -1
    prev_len = 0
    for sym in sorted(range(len(lengths)), key=lambda s: (lengths[s], s)):
        length = lengths[sym]
        code = (code + 1) << (length - prev_len)
        prev_len = length
        codes[sym] = (code, length)
    return codes


def _decode_table() -> dict[int, int]:
    global _huffman_decode_table
    if _huffman_decode_table is None:
        _huffman_decode_table = {(1 << n) | c: s for s, (c, n) in enumerate(huffman_codes())}
    return _huffman_decode_table


def huffman_decode(data: bytes | memoryview) -> bytes:
    table = _decode_table()
    out = bytearray()
    acc = 1
    nbits = 0
    for byte in data:
        for shift in (7, 6, 5, 4, 3, 2, 1, 0):
            acc = (acc << 1) | ((byte >> shift) & 1)
            nbits += 1
            sym = table.get(acc)
            if sym is not None:
                if sym == EOS:
                    raise HpackError("Huffman string contains EOS")
                out.append(sym)
                acc = 1
                nbits = 0
            elif nbits > 30:
                raise HpackError("invalid Huffman code")
    # Padding: fewer than 8 bits, all ones (a prefix of EOS).
    if nbits > 7 or acc != (1 << (nbits + 1)) - 1:
        raise HpackError("invalid Huffman padding")
    return bytes(out)


def huffman_encode(data: bytes) -> bytes:
    """Huffman-encode a string (used by tests; requests are sent without Huffman)."""
    codes = huffman_codes()
    acc = 0
    nbits = 0
    for byte in data:
        code, length = codes[byte]
        acc = (acc << length) | code
        nbits += length
    pad = -nbits % 8
    acc = (acc << pad) | ((1 << pad) - 1)
    return acc.to_bytes((nbits + pad) // 8, "big")


def encode_integer(value: int, prefix_bits: int, first_byte_flags: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first_byte_flags | value,))
    out = bytearray((first_byte_flags | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _encode_string(value: bytes) -> bytes:
    return encode_integer(len(value), 7, 0) + value


def encode_headers(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """A header block of literal fields without indexing, new names, raw strings."""
    out = bytearray()
    for name, value in headers:
        out.append(0x00)
        out += _encode_string(name)
        out += _encode_string(value)
    return bytes(out)


class Decoder:
    """Decodes the header blocks of one HTTP/2 connection, in order (the dynamic table is
    shared by all of them)."""

    def __init__(self, max_table_size: int = 4096) -> None:
        # The limit we advertised (SETTINGS_HEADER_TABLE_SIZE); the encoder may shrink below it.
        self.max_allowed = max_table_size
        self.max_size = max_table_size
        self.size = 0
        self.dynamic: list[tuple[bytes, bytes]] = []  # newest first

    def _evict(self) -> None:
        while self.size > self.max_size and self.dynamic:
            name, value = self.dynamic.pop()
            self.size -= len(name) + len(value) + 32

    def _add(self, name: bytes, value: bytes) -> None:
        self.dynamic.insert(0, (name, value))
        self.size += len(name) + len(value) + 32
        self._evict()

    def _lookup(self, index: int) -> tuple[bytes, bytes]:
        if index <= 0:
            raise HpackError("header index 0")
        if index <= len(STATIC_TABLE):
            return STATIC_TABLE[index - 1]
        dyn = index - len(STATIC_TABLE) - 1
        if dyn >= len(self.dynamic):
            raise HpackError(f"header index {index} beyond the dynamic table")
        return self.dynamic[dyn]

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        headers: list[tuple[bytes, bytes]] = []
        pos = 0
        end = len(block)
        while pos < end:
            first = block[pos]
            if first & 0x80:  # indexed header field
                index, pos = _decode_integer(block, pos, 7)
                headers.append(self._lookup(index))
            elif first & 0x40:  # literal with incremental indexing
                name, value, pos = self._literal(block, pos, 6)
                self._add(name, value)
                headers.append((name, value))
            elif first & 0x20:  # dynamic table size update
                size, pos = _decode_integer(block, pos, 5)
                if size > self.max_allowed:
                    raise HpackError(f"table size update {size} above {self.max_allowed}")
                self.max_size = size
                self._evict()
            else:  # literal without indexing (0000) or never indexed (0001)
                name, value, pos = self._literal(block, pos, 4)
                headers.append((name, value))
        return headers

    def _literal(self, block: bytes, pos: int, prefix_bits: int) -> tuple[bytes, bytes, int]:
        index, pos = _decode_integer(block, pos, prefix_bits)
        if index:
            name = self._lookup(index)[0]
        else:
            name, pos = _decode_string(block, pos)
        value, pos = _decode_string(block, pos)
        return name, value, pos


def _decode_integer(block: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    limit = (1 << prefix_bits) - 1
    value = block[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    while True:
        if pos >= len(block):
            raise HpackError("truncated integer")
        byte = block[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos
        if shift > 28:
            raise HpackError("integer too large")


def _decode_string(block: bytes, pos: int) -> tuple[bytes, int]:
    if pos >= len(block):
        raise HpackError("truncated string")
    huffman = block[pos] & 0x80
    length, pos = _decode_integer(block, pos, 7)
    if pos + length > len(block):
        raise HpackError("truncated string")
    raw = block[pos : pos + length]
    return (huffman_decode(raw) if huffman else bytes(raw)), pos + length
