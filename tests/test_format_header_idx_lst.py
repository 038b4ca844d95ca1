"""IRHeader pack/unpack (spec §1.2, §7.3), `.idx` and `.lst` parsing and writing."""
from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cloudrec.errors import HeaderError, ImageListError, IndexFileError
from cloudrec.format import (IRHeader, format_idx, format_lst_line, pack, parse_idx, parse_lst,
                             record_lengths, unpack)


def test_irheader_name_and_fields():
    h = IRHeader(0, 14.0, 1, 0)
    assert type(h).__name__ == "HEADER"
    assert repr(h) == "HEADER(flag=0, label=14.0, id=1, id2=0)"


def test_scalar_label_discards_flag():
    s = pack((5, 1.0, 7, 0), b"img")
    h, img = unpack(s)
    assert h.flag == 0 and h.label == 1.0 and h.id == 7 and img == b"img"
    assert s[:24].hex() == "000000000000803f07000000000000000000000000000000"


def test_array_label_sets_flag_and_zero_header_label():
    s = pack(IRHeader(0, [1.0, 2.0], 3, 4), b"xy")
    assert s[4:8] == b"\0\0\0\0"
    h, img = unpack(s)
    assert h.flag == 2 and h.id == 3 and h.id2 == 4 and img == b"xy"
    assert h.label.dtype == np.float32 and h.label.tolist() == [1.0, 2.0]


def test_one_element_list_is_flag_one():
    h, _ = unpack(pack((0, [9.0], 0, 0), b""))
    assert h.flag == 1 and h.label.tolist() == [9.0]


def test_empty_array_label_is_flag_zero_label_zero():
    h, _ = unpack(pack((0, [], 0, 0), b"q"))
    assert h.flag == 0 and h.label == 0.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=254),
       st.binary(max_size=254), st.integers(0, 2**64 - 1))
def test_pack_label_round_trip(labels, payload, id_):
    # MXNet's test_recordio_pack_label: widths 1..254, payloads 0..254 bytes
    h, img = unpack(pack(IRHeader(0, labels, id_, 0), payload))
    assert h.label.tolist() == list(np.asarray(labels, np.float32)) and img == payload
    assert h.id == id_


@pytest.mark.parametrize("data", [b"", b"short", b"\x03\0\0\0" + b"\0" * 20 + b"\0\0\0\0"])
def test_unpack_too_short_raises(data):
    with pytest.raises(HeaderError):
        unpack(data)


def test_idx_round_trip_and_lengths():
    keys, offsets = [7, 3, 11], [0, 44, 88]
    data = format_idx(keys, offsets)
    assert data == b"7\t0\n3\t44\n11\t88\n"
    k, o = parse_idx(data)
    assert k.tolist() == keys and o.tolist() == offsets
    assert record_lengths(o, 120).tolist() == [44, 44, 32]
    # unsorted offsets: lengths still from the next sorted offset
    assert record_lengths(np.array([88, 0, 44]), 120).tolist() == [32, 44, 44]


def test_idx_million_lines_fast():
    data = "".join("%d\t%d\n" % (i, i * 1024) for i in range(1_000_000)).encode()
    t0 = time.perf_counter()
    k, o = parse_idx(data)
    elapsed = time.perf_counter() - t0
    assert k.size == 1_000_000 and o[-1] == 999_999 * 1024
    assert elapsed < 1.0  # generous bound on a loaded 2-core machine; typically ~0.15 s


def test_idx_str_keys():
    k, o = parse_idx(b"img-b\t0\nimg-a\t16\n10\t32\n", key_type=str)
    assert k.tolist() == ["img-b", "img-a", "10"] and o.tolist() == [0, 16, 32]


@pytest.mark.parametrize("data,line", [
    (b"0\t0\n1\tabc\n", 2), (b"0\t0\n1 16\n", 2), (b"0\t0\n1\t16\t3\n", 2),
    (b"0\t0\n1\t-4\n", 2), (b"0\t0\n1\t6\n", 2), (b"x\t0\n", 1),
])
def test_bad_idx_lines_are_named(data, line):
    with pytest.raises(IndexFileError) as info:
        parse_idx(data, url="s3://b/d.idx")
    assert "s3://b/d.idx" in str(info.value) and info.value.line == line


def test_idx_offset_past_end_is_named():
    with pytest.raises(IndexFileError) as info:
        record_lengths(np.array([0, 16, 400]), 100, url="d.idx")
    assert "400" in str(info.value) and "d.idx" in str(info.value)


def test_lst_round_trip():
    line = format_lst_line(3, [1.0, 2.5], "cat/x.jpg")
    assert line == "3\t1.000000\t2.500000\tcat/x.jpg\n"
    (e,) = parse_lst(line)
    assert (e.index, e.labels, e.path) == (3, (1.0, 2.5), "cat/x.jpg")


def test_lst_bad_lines_are_named():
    with pytest.raises(ImageListError) as info:
        parse_lst("0\t1.0\ta.jpg\nnot-a-line\n", url="train.lst")
    assert "train.lst" in str(info.value) and "line 2" in str(info.value)
    with pytest.raises(ImageListError):
        parse_lst("0\t1.0\t2.0\ta.jpg\n", label_width=1)
