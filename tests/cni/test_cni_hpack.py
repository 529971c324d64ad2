"""hpack_lite against RFC 7541's own examples and the `hpack` package as a reference encoder
(static table, dynamic table with eviction, Huffman)."""

from __future__ import annotations

import random

import hpack
import pytest
from hpack import huffman_constants

from cni_client import hpack_lite


def test_static_table_matches_reference() -> None:
    ref = [
        (n.encode() if isinstance(n, str) else n, v.encode() if isinstance(v, str) else v)
        for n, v in hpack.table.HeaderTable.STATIC_TABLE
    ]
    assert list(hpack_lite.STATIC_TABLE) == ref


def test_huffman_codes_match_rfc_table() -> None:
    codes = hpack_lite.huffman_codes()
    assert [c for c, _ in codes] == list(huffman_constants.REQUEST_CODES)
    assert [n for _, n in codes] == list(huffman_constants.REQUEST_CODES_LENGTH)


def test_rfc7541_c4_huffman_examples() -> None:
    # RFC 7541 C.4.1-C.4.3 request header values.
    assert (
        hpack_lite.huffman_decode(bytes.fromhex("f1e3c2e5f23a6ba0ab90f4ff")) == b"www.example.com"
    )
    assert hpack_lite.huffman_decode(bytes.fromhex("a8eb10649cbf")) == b"no-cache"
    assert hpack_lite.huffman_decode(bytes.fromhex("25a849e95bb8e8b4bf")) == b"custom-value"


def test_rfc7541_c3_requests_with_dynamic_table() -> None:
    # RFC 7541 C.3: three requests on one connection, literal with indexing, no Huffman.
    dec = hpack_lite.Decoder()
    first = bytes.fromhex("828684410f7777772e6578616d706c652e636f6d")
    assert dec.decode(first) == [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", b"/"),
        (b":authority", b"www.example.com"),
    ]
    assert dec.size == 57
    second = bytes.fromhex("828684be58086e6f2d6361636865")
    headers = dec.decode(second)
    assert headers[3] == (b":authority", b"www.example.com")  # index 62, from the first block
    assert headers[4] == (b"cache-control", b"no-cache")
    assert dec.size == 110


@pytest.mark.parametrize("huffman", [True, False])
def test_decodes_reference_encoder_output(huffman: bool) -> None:
    rng = random.Random(7)
    enc = hpack.Encoder()
    enc.header_table_size = 256  # small: forces evictions and a size update
    dec = hpack_lite.Decoder()
    names = [b"grpc-status", b"grpc-message", b"content-type", b"x-a", b"x-b", b":status"]
    for _ in range(200):
        headers = [
            (rng.choice(names), bytes(rng.randrange(32, 127) for _ in range(rng.randrange(40))))
            for _ in range(rng.randrange(1, 6))
        ]
        block = enc.encode(headers, huffman=huffman)
        assert dec.decode(block) == headers


def test_encoder_output_decodes_with_reference() -> None:
    headers = [
        (b":method", b"POST"),
        (b":path", b"/calico.ipam.v1.Ipam/AutoAssign"),
        (b"traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"),
        (b"x-long", b"v" * 300),
    ]
    got = hpack.Decoder().decode(hpack_lite.encode_headers(headers), raw=True)
    assert got == headers


@pytest.mark.parametrize(
    "block",
    [
        bytes.fromhex("80"),  # index 0
        bytes.fromhex("ff00"),  # index beyond both tables
        bytes.fromhex("0085f1e3c2"),  # truncated Huffman string
        bytes.fromhex("3fe21f"),  # table size update above the advertised 4096
        bytes.fromhex("4082fffe0161"),  # Huffman string with bad padding / EOS
    ],
)
def test_malformed_blocks_raise(block: bytes) -> None:
    with pytest.raises(hpack_lite.HpackError):
        hpack_lite.Decoder().decode(block)


def test_huffman_round_trip_all_bytes() -> None:
    data = bytes(range(256)) * 2
    assert hpack_lite.huffman_decode(hpack_lite.huffman_encode(data)) == data
