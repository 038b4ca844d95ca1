"""Detection label parsing: MXNet's layout rules plus errors naming the record."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cloudrec.errors import ImageListError, LabelError
from cloudrec.image.det_labels import (DetLabelError, EmptyDetLabelError, check_det_lst,
                                       make_det_label, parse_det_label)


def test_layout_header_and_extras():
    objs = np.array([[1, .1, .2, .3, .4, 7, 8], [2, .5, .5, .9, .9, 9, 10]], np.float32)
    raw = make_det_label(objs, [3.5, 4.5])
    assert raw[:4].tolist() == [4, 7, 3.5, 4.5] and raw.size == 4 + 14
    header, got = parse_det_label(raw, return_header=True)
    np.testing.assert_array_equal(header, [4, 7, 3.5, 4.5])
    np.testing.assert_array_equal(got, objs)
    assert got.dtype == np.float32
    # python lists and 2-D arrays are flattened as MXNet's ravel
    np.testing.assert_array_equal(parse_det_label(raw.reshape(2, 9).tolist()), objs)


def test_degenerate_rows_dropped_like_mxnet():
    raw = make_det_label(np.array([[0, .1, .1, .1, .5],     # xmax == xmin
                                   [1, .2, .6, .4, .5],     # ymax < ymin
                                   [2, .2, .2, .4, .5],
                                   [-1, -1, -1, -1, -1]], np.float32))
    np.testing.assert_array_equal(parse_det_label(raw)[:, 0], [2])
    # a dropped row may hold anything finite, even out of range: MXNet ignores it
    raw = make_det_label(np.array([[0, 5, 5, -5, 5], [1, .1, .1, .2, .2]], np.float32))
    np.testing.assert_array_equal(parse_det_label(raw)[:, 0], [1])


def test_tolerance_and_clipping():
    raw = [2, 5, 0, -0.00005, 0, 1.00005, 1]
    got = parse_det_label(raw)
    assert got[0, 1] == 0 and got[0, 3] == 1
    with pytest.raises(DetLabelError, match="xmin = -0.001"):
        parse_det_label([2, 5, 0, -0.001, 0, 0.5, 1])
    assert parse_det_label([2, 5, 0, -0.001, 0, 0.5, 1], tolerance=0.01)[0, 1] == 0


@pytest.mark.parametrize("raw,match", [
    ([2, 5, 0, .1, .1, .2], "at least 7 values"),
    ([2.5, 5, 0, .1, .1, .2, .2], "must be integers"),
    ([2, 4, 0, .1, .1, .2, .2, .3], "B >= 5"),
    ([9, 5, 0, .1, .1, .2, .2], "disagrees with header width 9"),
    ([2, 5, 0, .1, .1, .2, .2, 1, .1], "9 - 2 is not a multiple of 5"),
    ([2, 5, 0, .1, np.inf, .2, .2], "non-finite value inf at position 4"),
    ([2, 5, 0, .1, .1, .2, 1.2], "ymax = 1.2"),
])
def test_errors(raw, match):
    with pytest.raises(DetLabelError, match=match) as ei:
        parse_det_label(raw, url="s3://bucket/train.rec", key=42)
    assert isinstance(ei.value, LabelError) and isinstance(ei.value, ValueError)
    assert "(s3://bucket/train.rec, record key 42)" in str(ei.value)
    assert ei.value.url == "s3://bucket/train.rec" and ei.value.key == 42


def test_empty_label_is_its_own_error():
    with pytest.raises(EmptyDetLabelError, match="no valid object.*key 3"):
        parse_det_label([2, 5, -1, -1, -1, -1, -1], key=3)


def test_check_lst_names_line_and_index():
    text = ("5\t2\t5\t0\t0.1\t0.1\t0.2\t0.2\ta.jpg\n"
            "\n"
            "9\t2\t5\t0\t0.1\t0.1\t0.2\t0.2\t1\t0.5\tb.jpg\n")
    with pytest.raises(DetLabelError, match=r"train\.lst, record key 9, line 3"):
        check_det_lst(text, "train.lst")
    with pytest.raises(ImageListError, match="line 1"):
        check_det_lst("x\t1\ta.jpg\n", "train.lst")
    got = check_det_lst(text.encode().split(b"\n\n")[0], "t.lst")
    assert [k for k, _ in got] == [5]


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 5), st.integers(5, 8), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_property_roundtrip(a, b, n, seed):
    rng = np.random.default_rng(seed)
    lo = rng.uniform(0, 0.5, (n, 2))
    hi = lo + rng.uniform(0.01, 0.5, (n, 2))
    objs = np.zeros((n, b), np.float32)
    objs[:, 0] = rng.integers(0, 20, n)
    objs[:, 1:3], objs[:, 3:5] = lo, hi
    objs[:, 5:] = rng.normal(size=(n, b - 5))
    raw = make_det_label(objs, rng.normal(size=a - 2))
    np.testing.assert_array_equal(parse_det_label(raw), objs)
    # cutting any number of values that breaks the multiple is reported
    cut = raw[:-1]
    with pytest.raises(DetLabelError):
        parse_det_label(cut)
