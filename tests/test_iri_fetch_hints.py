"""ImageRecordIter hands its epoch slice's hints to the fetcher (issue #13.1), so with
cloudrec's orders each part reads its own records' bytes once: without them the fetcher
merges the gaps between a part's records, which hold the other parts' records of the same
shuffle window (2 parts read 1.7x the dataset, 3 parts 2.3x, in the measurement below).

Records are ~19 KB noise PNGs, 19 MB in all: the default 2 MB blocks, 8 to a window, make
two windows, and the default 256 KB ``max_gap`` spans a dozen records.  Bytes are counted
by the fetcher here and at the loopback S3 proxy below.
"""
from __future__ import annotations

import numpy as np
import pytest

from cloudrec.iterators import ImageRecordIter, image_record
from cloudrec.pipeline.batcher import EpochPlans
from cloudrec.recordio import IRHeader, MXIndexedRecordIO, pack_img

N, B = 1000, 16


class _OneEpoch(ImageRecordIter):
    _speculate = False  # no look-ahead into the next epoch: bytes of one epoch only


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    base = tmp_path_factory.mktemp("irihints")
    rec, idx = str(base / "d.rec"), str(base / "d.idx")
    rng = np.random.default_rng(0)
    w = MXIndexedRecordIO(idx, rec, "w")
    for i in range(N):
        img = rng.integers(0, 255, (80, 80, 3), np.uint8)
        w.write_idx(i, pack_img(IRHeader(0, float(i), i, 0), img, img_fmt=".png"))
    w.close()
    return rec, idx


def _epoch(rec, idx, parts, mode, **kw):
    """(labels read by all parts, bytes moved, bytes of the records read, pads included)."""
    labels, moved, need = [], 0, 0
    for part in range(parts):
        it = _OneEpoch(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 16, 16), batch_size=B,
                       shuffle=True, seed=4, shuffle_mode=mode, part_mode="even",
                       num_parts=parts, part_index=part, preprocess_threads=2, **kw)
        try:
            for b in it:
                lab = b.label[0].astype(np.int64)
                labels += lab[:B - b.pad].tolist()
                need += int(it._source.ds.table.length[lab].sum())
            moved += it.stats["bytes"]
        finally:
            it.close()
    return labels, moved, need


@pytest.mark.parametrize("parts", [1, 2, 3])
def test_each_part_reads_its_records_bytes_once(rec, parts):
    labels, moved, need = _epoch(*rec, parts, "block")
    assert sorted(labels) == list(range(N))           # exactly once over the parts
    assert moved <= 1.02 * need, (moved, need)


def test_the_hints_are_what_keeps_the_bytes_exact(rec, monkeypatch):
    """The same epoch with the hints dropped moves far more (shows the test above can fail)."""
    monkeypatch.setattr(image_record, "EpochPlans", lambda plans=(), **hints: EpochPlans(plans))
    labels, moved, need = _epoch(*rec, 2, "block")
    assert sorted(labels) == list(range(N))
    assert moved > 1.4 * need


def test_plans_carry_the_slice_hints_and_the_next_epoch_too(rec):
    it = ImageRecordIter(path_imgrec=rec[0], path_imgidx=rec[1], data_shape=(3, 16, 16),
                         batch_size=B, shuffle=True, shuffle_mode="block", part_mode="even",
                         num_parts=2, part_index=1)
    try:
        sl = it._slice_at(0, 0)
        hints = it._plans(0).fetch_hints
        assert np.array_equal(hints["chunk_starts"], sl.chunk_starts) and len(sl.chunk_starts)
        assert hints["touching_only"] is True
        ids = np.concatenate([p.ids for p in it._plans(0)])
        assert np.array_equal(ids[:len(sl.ids)], sl.ids)  # the indices point into these ids
        # MXNet's own order has no windows: no hints, the fetcher merges gaps as before
        plain = ImageRecordIter(path_imgrec=rec[0], path_imgidx=rec[1], data_shape=(3, 16, 16),
                                batch_size=B, shuffle=True)
        assert plain._plans(0).fetch_hints == {}
        plain.close()
        # the next epoch, built ahead, reads with its own slice's hints
        key, nxt = it._pipeline._next
        assert key == (1, 0) and nxt.fetch_hints["touching_only"] is True
        assert np.array_equal(nxt.fetch_hints["chunk_starts"], it._slice_at(1, 0).chunk_starts)
    finally:
        it.close()


@pytest.mark.s3
def test_two_parts_from_s3_move_each_byte_once_through_the_proxy(rec, s3_server, fault_proxy):
    import fsspec
    bucket = s3_server.new_bucket()
    fs = fsspec.filesystem("s3", **s3_server.storage_options)
    for local, name in zip(rec, ("d.rec", "d.idx")):
        fs.put(local, f"{bucket.split('://', 1)[1]}/{name}")
    fault_proxy.configure()
    labels, moved, need = _epoch(f"{bucket}/d.rec", f"{bucket}/d.idx", 2, "block",
                                 storage_options=fault_proxy.storage_options)
    assert sorted(labels) == list(range(N))
    got = fault_proxy.traffic()["GET .rec"]["bytes"]
    assert got <= 1.02 * need, (got, need)
