"""Batch arrays are reused only when nobody holds them; the pipeline's runs of slots; the next
epoch built ahead gives the batches a fresh start gives; the one-call float32 NCHW write
(OpenCV's blob conversion) equals the per-plane LUT write."""
from __future__ import annotations

import gc

import numpy as np
import pytest

from cloudrec.iterators import ImageRecordIter
from cloudrec.pipeline.batcher import BatchArrayPool, chunk_size
from cloudrec.pipeline.writer import ImageWriter
from cloudrec.recordio import IRHeader, MXIndexedRecordIO, pack_img


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reuse")
    rec, idx = str(tmp / "r.rec"), str(tmp / "r.idx")
    rng = np.random.default_rng(3)
    w = MXIndexedRecordIO(idx, rec, "w")
    for i in range(90):
        img = rng.integers(0, 255, (50 + i % 11, 44 + i % 7, 3), dtype=np.uint8)
        w.write_idx(i, pack_img(IRHeader(0, float(i % 5), i, 0), img, quality=90))
    w.close()
    return rec, idx


def make(rec, **kw):
    r, i = rec
    args = dict(path_imgrec=r, path_imgidx=i, data_shape=(3, 32, 32), batch_size=8, resize=40,
                rand_crop=True, rand_mirror=True, shuffle=True, mean_r=120, mean_g=110,
                mean_b=100, std_r=60, std_g=50, std_b=40, preprocess_threads=2,
                prefetch_buffer=2, round_batch=False)
    args.update(kw)
    return ImageRecordIter(**args)


def test_held_batches_are_never_overwritten(rec):
    """Keep every batch (and a view of some) of three epochs: each still holds the values it
    had when handed out, so no array a caller references was refilled."""
    with make(rec) as it:
        kept, copies, views = [], [], []
        for epoch in range(3):
            for b in it:
                kept.append(b.data[0])
                copies.append(b.data[0].copy())
                views.append(b.data[0][2:5])
            it.reset()
        ptrs = {a.__array_interface__["data"][0] for a in kept}
        assert len(ptrs) == len(kept) == 3 * 12  # 90 records in batches of 8: 12 per epoch
        for a, c in zip(kept, copies):
            assert np.array_equal(a, c)
        del kept
        gc.collect()
        for v, c in zip(views, copies):  # a view alone keeps its array out of the pool too
            assert np.array_equal(v, c[2:5])


def test_dropped_batches_are_refilled_and_values_match_a_fresh_iterator(rec):
    """Dropping each batch lets the pipeline reuse its memory (few distinct arrays over three
    epochs), and the values equal those of an iterator whose caller keeps every batch."""
    with make(rec) as it:
        seen, got = set(), []
        for _ in range(3):
            for b in it:
                seen.add(b.data[0].__array_interface__["data"][0])
                got.append((b.data[0].copy(), b.label[0].copy(), b.pad))
            it.reset()
    with make(rec) as ref:  # no epoch built ahead, each one started from scratch
        ref._speculate = False
        want = []
        for e in range(3):
            ref.set_epoch(e)
            want += [(b.data[0], b.label[0], b.pad) for b in ref]
    assert len(seen) <= 2 + 4 + 2  # prefetch + pool margin, not one array per batch (36)
    assert len(got) == len(want) == 36
    for (a, la, pa), (b, lb, pb) in zip(got, want):
        assert np.array_equal(a, b) and np.array_equal(la, lb) and pa == pb
    assert got[-1][2] == 6  # round_batch=False: 90 = 11 * 8 + 2, pad slots zero-filled
    assert not got[-1][0][2:].any()


def epoch_values(it):
    return [(b.data[0].copy(), b.label[0].copy(), b.index.copy(), b.pad) for b in it]


def same(a, b):
    return len(a) == len(b) and all(
        np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) and np.array_equal(x[2], y[2])
        and x[3] == y[3] for x, y in zip(a, b))


@pytest.mark.parametrize("n_first", [None, 0, 3])
def test_epoch_built_ahead_matches_a_fresh_start(rec, n_first):
    """After a full epoch the next one's first batch is built ahead: reset() takes it over
    (same batches as set_epoch on a fresh iterator); set_epoch to another epoch, a reset in
    the middle of an epoch or load_state_dict discard it."""
    with make(rec) as ref:
        ref._speculate = False
        want = {}
        for e in range(4):
            ref.set_epoch(e)
            want[e] = epoch_values(ref)
    with make(rec) as it:
        assert same(epoch_values(it), want[0])
        spec = it._pipeline._spec  # registered before the epoch's end was queued
        assert spec is not None and spec.key == (1, 0) and not spec.adopted.is_set()
        if n_first is None:
            it.reset()  # adopts epoch 1 built ahead
            assert spec.adopted.is_set() and it._pipeline._queue is spec.queue
            assert same(epoch_values(it), want[1])
            it.set_epoch(3)  # not the one built ahead (2): discarded
            assert same(epoch_values(it), want[3])
        else:
            it.reset()
            got = [next(it) for _ in range(n_first)]
            assert same([(b.data[0], b.label[0], b.index, b.pad) for b in got],
                        want[1][:n_first])
            del got
            it.reset()  # mid-epoch: a fresh epoch 2 (no batch read yet: a no-op, still 1)
            assert same(epoch_values(it), want[2 if n_first else 1])
            it.load_state_dict({**it.state_dict(), "epoch": 1, "consumed": 0})
            assert same(epoch_values(it), want[1])


def test_one_batch_epochs_built_ahead(tmp_path):
    """Epochs of a single batch: the producer finishes the next epoch before reset() comes;
    reset() still takes it over, epoch after epoch."""
    rec, idx = str(tmp_path / "t.rec"), str(tmp_path / "t.idx")
    w = MXIndexedRecordIO(idx, rec, "w")
    rng = np.random.default_rng(5)
    for i in range(5):
        w.write_idx(i, pack_img(IRHeader(0, float(i), i, 0),
                                rng.integers(0, 255, (40, 40, 3), dtype=np.uint8), quality=90))
    w.close()
    with make((rec, idx)) as ref:
        ref._speculate = False
        want = []
        for e in range(4):
            ref.set_epoch(e)
            want.append(epoch_values(ref))
    with make((rec, idx)) as it:
        for e in range(4):
            got = epoch_values(it)
            assert len(got) == 1 and same(got, want[e]), e
            spec = it._pipeline._spec
            it.reset()
            assert spec is not None and spec.adopted.is_set()


def test_pool_hands_out_only_unreferenced_arrays():
    pool = BatchArrayPool(keep=2)
    a = pool.get((4, 3), np.float32)
    b = pool.get((4, 3), np.float32)
    assert a is not b  # a is held
    view = b[1:]
    del b
    c = pool.get((4, 3), np.float32)
    assert c is not a and not np.shares_memory(c, view)  # the view pins b
    del view, c
    d = pool.get((4, 3), np.float32)
    assert d.shape == (4, 3) and d is not a  # b (or c) reused: only a is still held
    assert pool.get((2, 2), np.uint8).dtype == np.uint8  # another shape: a new array
    pool.clear()


@pytest.mark.parametrize("batch,threads,want", [(64, 2, 8), (64, 1, 16), (256, 1, 16),
                                                (3, 4, 1), (32, 8, 1), (0, 2, 1)])
def test_chunk_size(batch, threads, want):
    assert chunk_size(batch, threads) == want


@pytest.mark.parametrize("hw", [(224, 224), (31, 57)])
@pytest.mark.parametrize("scale", [1.0, 1.0 / 255])
def test_blob_write_equals_the_lut_write(hw, scale):
    """The one-call write (default float32 NCHW, 3 channels) gives the LUT path's bits, for
    crop views, mirrored images and slots inside a batch."""
    rng = np.random.default_rng(hw[1])
    h, w = hw
    img = rng.integers(0, 256, (h + 9, w + 13, 3), dtype=np.uint8)[4:4 + h, 6:6 + w]
    mean, std = (123.68, 116.779, 103.939, 0.0), (58.395, 57.12, 57.375, 1.0)
    blob = ImageWriter(3, np.float32, "NCHW", mean, std, scale)
    lut = ImageWriter(3, np.float32, "NCHW", mean, std, scale)
    lut._blob = None
    assert blob._blob is not None
    for mirror in (False, True):
        a, b = np.zeros((3, 3, h, w), np.float32), np.zeros((3, 3, h, w), np.float32)
        blob.write(img, a[1], mirror)
        lut.write(img, b[1], mirror)
        assert np.array_equal(a, b) and a[1].any() and not a[0].any() and not a[2].any()


def test_wait_idle_waits_for_the_epoch_built_ahead(rec):
    with make(rec) as it:
        for _ in it:
            pass
        spec = it._pipeline._spec
        assert spec is not None
        first = list(spec.queue.queue)
        assert len(first) == 1 and first[0].futures  # its first batch, submitted
        it._pipeline.wait_idle(timeout=60)
        assert all(f.done() for f in first[0].futures)
        it.reset()
        assert len(list(it)) == 12
