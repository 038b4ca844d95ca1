"""RecordIO framing: spec §1.1 worked examples as exact bytes, round-trip
properties, the framing invariants, and clear errors on malformed input."""
from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cloudrec.errors import RecordIOError, RecordTooLargeError
from cloudrec.format import (MAGIC, MAGIC_BYTES, encode_record, find_record_heads,
                             iter_records, read_record_at, decode_record)

M = MAGIC_BYTES

WORKED = [
    (b"abc", "0A23D7CE 03000000 616263 00"),
    (b"", "0A23D7CE 00000000"),
    (b"AAAA" + M + b"BB", "0A23D7CE 04000020 41414141 0A23D7CE 02000060 4242 0000"),
    (M + b"xy", "0A23D7CE 00000020 0A23D7CE 02000060 7879 0000"),
    (M, "0A23D7CE 00000020 0A23D7CE 00000060"),
    (b"A" + M + b"A", "0A23D7CE 06000000 41 0A23D7CE 41 0000"),
]


@pytest.mark.parametrize("payload,hexbytes", WORKED)
def test_worked_examples_exact_bytes(payload, hexbytes):
    want = bytes.fromhex(hexbytes.replace(" ", ""))
    assert encode_record(payload) == want
    assert decode_record(want) == payload


def parts_of(buf: bytes):
    """(offset, cflag, length) of each physical part, walking the headers."""
    pos, out = 0, []
    while pos < len(buf):
        magic, lrec = struct.unpack_from("<II", buf, pos)
        assert magic == MAGIC
        cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
        out.append((pos, cflag, length))
        pos += 8 + ((length + 3) & ~3)
    assert pos == len(buf)
    return out


payloads = st.one_of(
    st.binary(max_size=300),
    # payloads built from magic words and filler at random (aligned and unaligned) positions
    st.lists(st.sampled_from([M, b"x", b"yz", b"abcd", b"\0\0\0\0", M[:2], M[2:]]),
             max_size=40).map(b"".join),
)


@settings(max_examples=400, deadline=None)
@given(payloads)
def test_round_trip_and_invariants(payload):
    enc = encode_record(payload)
    assert len(enc) % 4 == 0
    parts = parts_of(enc)
    flags = [c for _, c, _ in parts]
    if len(parts) == 1:
        assert flags == [0]
    else:
        assert flags[0] == 1 and flags[-1] == 3 and all(f == 2 for f in flags[1:-1])
    # every part starts aligned; only the headers are aligned magics
    words = np.frombuffer(enc, dtype="<u4")
    magic_positions = (np.flatnonzero(words == MAGIC) * 4).tolist()
    assert magic_positions == [o for o, _, _ in parts]
    # number of parts = aligned magics in the payload + 1
    n_aligned = sum(1 for i in range(0, len(payload) - 3, 4) if payload[i:i + 4] == M)
    assert len(parts) == n_aligned + 1
    # padding is zero and computed from the whole record length
    assert enc[len(enc) - ((-len(payload)) % 4):] == b"\0" * ((-len(payload)) % 4)
    got, nxt = read_record_at(enc)
    assert got == payload and nxt == len(enc)
    assert find_record_heads(enc).tolist() == [0]


@settings(max_examples=100, deadline=None)
@given(st.lists(payloads, max_size=12))
def test_concatenated_records(records):
    buf = b"".join(encode_record(p) for p in records)
    got = list(iter_records(buf))
    assert [p for _, p in got] == records
    assert find_record_heads(buf).tolist() == [o for o, _ in got]


def test_record_too_large_is_rejected_not_split():
    class Huge(bytes):
        def __len__(self):
            return 1 << 29
    with pytest.raises(RecordTooLargeError):
        encode_record(Huge(b""))


def test_largest_legal_length_header():
    payload = b"\1" * 1000
    assert struct.unpack_from("<I", encode_record(payload), 4)[0] == 1000


@pytest.mark.parametrize("buf,message", [
    (b"\x0a\x23\xd7", "truncated part header"),
    (b"\x0b\x23\xd7\xce\x00\x00\x00\x00", "bad magic"),
    (M + struct.pack("<I", 10) + b"abc", "truncated record"),
    (M + struct.pack("<I", (2 << 29) | 4) + b"abcd", "continuation"),
    (M + struct.pack("<I", (3 << 29) | 4) + b"abcd", "continuation"),
    (M + struct.pack("<I", (1 << 29) | 4) + b"abcd", "last part is missing"),
    (M + struct.pack("<I", (1 << 29) | 4) + b"abcd" + M + struct.pack("<I", 0), "expected a continuation"),
    (M + struct.pack("<I", (5 << 29) | 4) + b"abcd", "invalid cflag"),
])
def test_malformed_input_names_file_and_offset(buf, message):
    with pytest.raises(RecordIOError) as info:
        read_record_at(buf, url="s3://b/x.rec", base_offset=4096)
    assert message in str(info.value)
    assert "s3://b/x.rec" in str(info.value)
    assert info.value.offset is not None and info.value.offset >= 4096


def test_find_record_heads_skips_continuations():
    buf = encode_record(b"abcd" + M + b"efgh") + encode_record(b"z")
    assert find_record_heads(buf, base_offset=100 * 4).tolist() == [400, 400 + 24]
