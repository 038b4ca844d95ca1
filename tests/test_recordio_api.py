"""MXNet's recordio API: MXNet's own tests, bad input, pickling and fork."""
from __future__ import annotations

import multiprocessing as mp
import pickle
import random
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from cloudrec import recordio
from cloudrec.errors import CloudrecError, IndexFileError, RecordIOError
from cloudrec.format import unpack

FIX = Path(__file__).parent / "fixtures" / "mxnet"


def test_recordio_255_records(tmp_path):
    # MXNet's test_recordio
    frec = str(tmp_path / "a.rec")
    w = recordio.MXRecordIO(frec, "w")
    for i in range(255):
        w.write(bytes(chr(i), "latin-1"))
    w.close()
    r = recordio.MXRecordIO(frec, "r")
    for i in range(255):
        assert r.read() == bytes(chr(i), "latin-1")
    assert r.read() is None
    r.reset()
    assert r.read() == b"\0"


def test_indexed_recordio_shuffled(tmp_path):
    # MXNet's test_indexed_recordio
    fidx, frec = str(tmp_path / "a.idx"), str(tmp_path / "a.rec")
    w = recordio.MXIndexedRecordIO(fidx, frec, "w")
    for i in range(255):
        w.write_idx(i, bytes(chr(i), "latin-1"))
    w.close()
    r = recordio.MXIndexedRecordIO(fidx, frec, "r")
    keys = list(r.keys)
    assert sorted(keys) == list(range(255))
    random.Random(0).shuffle(keys)
    for k in keys:
        assert r.read_idx(k) == bytes(chr(k), "latin-1")
    # unlike MXNet, read_idx works after read() hit the end of the file
    r.seek(254)
    assert r.read() == bytes(chr(254), "latin-1") and r.read() is None
    assert r.read_idx(3) == b"\x03"


def test_tell_offsets(tmp_path):
    w = recordio.MXRecordIO(str(tmp_path / "t.rec"), "w")
    pos = []
    for i in range(5):
        pos.append(w.tell())
        w.write(b"record_%d" % i)
    w.close()
    assert pos == [0, 16, 32, 48, 64]


def test_invalid_flag():
    with pytest.raises(ValueError, match="Invalid flag"):
        recordio.MXRecordIO("x.rec", "a")


def test_truncated_rec_raises_with_offset(tmp_path):
    data = (FIX / "api" / "headers.rec").read_bytes()
    p = tmp_path / "cut.rec"
    p.write_bytes(data[:-10])
    r = recordio.MXRecordIO(str(p), "r")
    with pytest.raises(RecordIOError) as info:
        list(r)
    assert str(p) in str(info.value) and info.value.offset is not None


def test_wrong_magic(tmp_path):
    p = tmp_path / "bad.rec"
    p.write_bytes(b"\0" * 16)
    with pytest.raises(RecordIOError, match="bad magic"):
        recordio.MXRecordIO(str(p), "r").read()


def test_missing_idx_is_clear(tmp_path):
    shutil.copy(FIX / "api" / "headers.rec", tmp_path / "h.rec")
    with pytest.raises(IndexFileError, match="not found") as info:
        recordio.MXIndexedRecordIO(str(tmp_path / "h.idx"), str(tmp_path / "h.rec"), "r")
    assert "h.idx" in str(info.value)


def test_missing_rec_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.rec"):
        recordio.MXRecordIO(str(tmp_path / "nope.rec"), "r")


def test_idx_offset_not_at_record_head(tmp_path):
    shutil.copy(FIX / "api" / "headers.rec", tmp_path / "h.rec")
    (tmp_path / "h.idx").write_text("7\t0\n3\t48\n")
    r = recordio.MXIndexedRecordIO(str(tmp_path / "h.idx"), str(tmp_path / "h.rec"), "r")
    with pytest.raises(RecordIOError) as info:
        r.read_idx(3)
    assert info.value.key == 3 and info.value.offset == 48


def test_idx_offset_past_end(tmp_path):
    shutil.copy(FIX / "api" / "headers.rec", tmp_path / "h.rec")
    size = (tmp_path / "h.rec").stat().st_size
    (tmp_path / "h.idx").write_text(f"7\t0\n3\t{size}\n")
    with pytest.raises(IndexFileError) as info:  # refused at open: the .idx is authoritative
        recordio.MXIndexedRecordIO(str(tmp_path / "h.idx"), str(tmp_path / "h.rec"), "r")
    assert info.value.key == 3 and "h.rec" in str(info.value) and "h.idx" in str(info.value)


def test_unknown_key(tmp_path):
    r = recordio.MXIndexedRecordIO(str(FIX / "api" / "headers.idx"), str(FIX / "api" / "headers.rec"), "r")
    with pytest.raises(KeyError, match="999"):
        r.read_idx(999)


def test_pickle_reopens_at_same_position():
    r = recordio.MXIndexedRecordIO(str(FIX / "pack" / "uniq" / "uniq.idx"),
                                   str(FIX / "pack" / "uniq" / "uniq.rec"), "r")
    first = r.read()
    r2 = pickle.loads(pickle.dumps(r))
    assert r2.read() == r.read()
    assert r2.read_idx(r.keys[0]) == first


def _child_reads(r, q):
    q.put([unpack(r.read_idx(k))[0].id for k in r.keys[:5]])


def test_fork_child_reopens():
    r = recordio.MXIndexedRecordIO(str(FIX / "pack" / "uniq" / "uniq.idx"),
                                   str(FIX / "pack" / "uniq" / "uniq.rec"), "r")
    r.read()  # parent has moved its handle
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_reads, args=(r, q))
    p.start()
    got = q.get(timeout=30)
    p.join(30)
    assert p.exitcode == 0
    assert got == [unpack(r.read_idx(k))[0].id for k in r.keys[:5]]


def test_pack_img_round_trip(tmp_path):
    img = (np.arange(32 * 48 * 3) % 251).astype(np.uint8).reshape(32, 48, 3)
    s = recordio.pack_img((0, 3.0, 9, 0), img, quality=95, img_fmt=".png")
    h, dec = recordio.unpack_img(s)
    assert h.label == 3.0 and h.id == 9
    np.testing.assert_array_equal(dec, img)  # PNG is lossless
    s = recordio.pack_img((0, [1, 2, 3], 1, 0), img, quality=90)
    h, dec = recordio.unpack_img(s)
    assert h.flag == 3 and dec.shape == img.shape


def test_store_round_trip(store):
    """The same write/read on local disk, S3 and HDFS."""
    payloads = [b"", b"abc", recordio.framing.MAGIC_BYTES * 3, bytes(range(256)) * 40]
    rec, idx = store.url("d/x.rec"), store.url("d/x.idx")
    with recordio.MXIndexedRecordIO(idx, rec, "w", storage_options=store.storage_options) as w:
        for i, p in enumerate(payloads):
            w.write_idx(i, p)
    local = FIX / "api" / "multipart.rec"
    with recordio.MXIndexedRecordIO(idx, rec, "r", storage_options=store.storage_options) as r:
        assert [r.read_idx(k) for k in (3, 0, 2, 1)] == [payloads[3], payloads[0], payloads[2],
                                                         payloads[1]]
        r.reset()
        assert list(r) == payloads
    # byte-identical to a local write of the same records
    w = recordio.MXRecordIO("memory://cmp/x.rec", "w")
    for p in payloads:
        w.write(p)
    w.close()
    assert store.get("d/x.rec") == recordio.MXRecordIO("memory://cmp/x.rec", "r").handle.read()
    assert store.get("d/x.idx") == b"0\t0\n1\t8\n2\t20\n3\t52\n"


FUZZ_FILES = ["api/headers", "api/multipart", "api/multipart_img", "pack/uniq/uniq"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(FUZZ_FILES), st.data())
def test_fuzz_mutated_fixtures_raise_only_cloudrec_errors(tmp_path, name, data):
    rec = bytearray((FIX / (name + ".rec")).read_bytes())
    idx = bytearray((FIX / (name + ".idx")).read_bytes())
    target = data.draw(st.sampled_from(["rec", "idx"]))
    buf = rec if target == "rec" else idx
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "zero"]))
    pos = data.draw(st.integers(0, max(0, len(buf) - 1)))
    if kind == "flip":
        buf[pos] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        del buf[pos:]
    elif kind == "insert":
        buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=12))
    else:
        buf[pos:pos + 8] = b"\0" * len(buf[pos:pos + 8])
    (tmp_path / "f.rec").write_bytes(bytes(rec))
    (tmp_path / "f.idx").write_bytes(bytes(idx))
    try:
        with recordio.MXRecordIO(str(tmp_path / "f.rec"), "r") as r:
            for payload in r:
                unpack(payload)
    except CloudrecError:
        pass
    try:
        with recordio.MXIndexedRecordIO(str(tmp_path / "f.idx"), str(tmp_path / "f.rec"), "r") as r:
            for k in r.keys:
                unpack(r.read_idx(k))
    except CloudrecError:
        pass
