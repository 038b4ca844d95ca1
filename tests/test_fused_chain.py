"""FusedChain (CreateAugmenter's chain in one pass into a CHW slot) and ImageIter's in-place
batch writes: the same draws and bits as the augmenters one by one, batches that do not
depend on the fusion, predictions, thread count or buffer reuse, and a batch the user
holds never overwritten."""
import gc

import cv2
import numpy as np
import pytest

from cloudrec.image import CreateAugmenter, ImageIter
from cloudrec.image.augment_chain import apply_augmenters
from cloudrec.image.augmenters import (CastAug, ColorNormalizeAug, HorizontalFlipAug,
                                       RandomCropAug, ResizeAug)
from cloudrec.image.fused_chain import FusedChain
from cloudrec.image.ops import INTER_CUBIC_MXNET
from cloudrec.recordio import IRHeader, MXIndexedRecordIO, pack


def _photo(rng, h, w):
    """A smooth image with edges and noise (JPEG-friendly, not constant)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 90 * np.sin(x / (7 + c) + y / (11 + 2 * c) + c) for c in range(3)], -1)
    base[h // 3:h // 2, w // 4:w // 2] = rng.integers(0, 256, 3)
    img = base + rng.normal(0, 12, base.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _reference(auglist, img, rng):
    return np.ascontiguousarray(apply_augmenters(auglist, img, rng).transpose(2, 0, 1))


@pytest.mark.parametrize("interp", [0, 1, 2, 3, 4, 9, INTER_CUBIC_MXNET])
@pytest.mark.parametrize("kw", [dict(resize=40, rand_crop=True, rand_mirror=True, mean=True, std=True),
                                dict(resize=36, mean=[120.0], std=None),
                                dict(resize=0, rand_crop=True, mean=None, std=[50.0, 60.0, 70.0]),
                                dict(resize=33, rand_crop=True, rand_mirror=True),
                                dict(resize=40, fast=True, rand_crop=True, rand_mirror=True,
                                     mean=True, std=True)])
def test_run_matches_the_augmenters_one_by_one(interp, kw):
    augs = CreateAugmenter((3, 32, 32), inter_method=interp, **kw)
    chain = FusedChain.match(augs)
    assert chain is not None and chain.out_shape == (3, 32, 32)
    rng = np.random.default_rng(interp)
    out = np.full((3, 32, 32), np.nan, np.float32)
    for k in range(12):
        img = _photo(rng, int(rng.integers(34, 90)), int(rng.integers(34, 90)))
        seed = 1000 * interp + k
        want = _reference(augs, img, np.random.default_rng(seed))
        g = np.random.default_rng(seed)
        assert chain.run(img, g, out)
        assert np.array_equal(out, want), (interp, kw, k)
        # the same draws: both Generators are at the same point afterwards
        g2 = np.random.default_rng(seed)
        apply_augmenters(augs, img, g2)
        assert g.random() == g2.random()


def test_run_declines_before_drawing_when_the_crop_does_not_fit():
    augs = CreateAugmenter((3, 32, 32), rand_crop=True, rand_mirror=True, mean=True)
    chain = FusedChain.match(augs)
    small = _photo(np.random.default_rng(0), 20, 50)  # MXNet scales the crop down: not fused
    g = np.random.default_rng(5)
    assert not chain.run(small, g, np.zeros((3, 32, 32), np.float32))
    assert g.random() == np.random.default_rng(5).random()
    gray = np.zeros((40, 40, 1), np.uint8)
    assert not chain.run(gray, g, np.zeros((3, 32, 32), np.float32))


@pytest.mark.parametrize("augs", [
    CreateAugmenter((3, 32, 32), resize=40, brightness=0.2, mean=True),  # colour jitter
    CreateAugmenter((3, 32, 32), resize=40, rand_crop=True, rand_resize=True),  # sized crop
    CreateAugmenter((3, 32, 32), resize=40, inter_method=10),  # random interpolation
    [ResizeAug(40), RandomCropAug((32, 32)), CastAug("float64")],
    [RandomCropAug((32, 32)), HorizontalFlipAug(0.5)],  # no cast: uint8 out
    [ResizeAug(40), RandomCropAug((32, 32)), CastAug(), ColorNormalizeAug(
        np.zeros((32, 32, 3)), None)],  # a mean image, not per channel
    [type("MyCrop", (RandomCropAug,), {})((32, 32)), CastAug()],  # a subclass may differ
])
def test_match_refuses_other_chains(augs):
    assert FusedChain.match(augs) is None


# ------------------------------------------------------------------------- ImageIter
def _rec(tmp_path, n=23, broken=()):
    rng = np.random.default_rng(3)
    idx, rec = str(tmp_path / "d.idx"), str(tmp_path / "d.rec")
    w = MXIndexedRecordIO(idx, rec, "w")
    for i in range(n):
        img = _photo(rng, int(rng.integers(40, 120)), int(rng.integers(40, 120)))
        if i % 7 == 3:
            img = img[:, :, :1].repeat(3, 2)  # gray-looking colour JPEG
        payload = b"not an image" if i in broken else \
            cv2.imencode(".png" if i % 5 == 4 else ".jpg", img)[1].tobytes()
        w.write_idx(i, pack(IRHeader(0, float(i), i, 0), payload))
    w.close()
    return rec, idx


class _Unfused(ImageIter):
    """The same augmenters one by one (a hook override turns the fusion off)."""

    def augmentation_transform(self, data):
        return super().augmentation_transform(data)


def _epochs(it, n):
    out = []
    for _ in range(n):
        out.append([(b.data[0].copy(), b.label[0].copy(), b.pad) for b in it])
        it.reset()
    return out


def _same(a, b):
    assert len(a) == len(b)
    for ea, eb in zip(a, b):
        assert len(ea) == len(eb)
        for (da, la, pa), (db, lb, pb) in zip(ea, eb):
            assert pa == pb and np.array_equal(la, lb) and np.array_equal(da, db)


AUG = dict(resize=40, rand_crop=True, rand_mirror=True, mean=True, std=True)


@pytest.mark.parametrize("handle", ["pad", "roll_over", "discard"])
@pytest.mark.parametrize("threads", [1, 3])
def test_fused_batches_equal_the_unfused_ones(tmp_path, handle, threads):
    rec, idx = _rec(tmp_path)
    kw = dict(batch_size=5, data_shape=(3, 32, 32), path_imgrec=rec, path_imgidx=idx,
              shuffle=True, seed=7, last_batch_handle=handle, **AUG)
    fused = ImageIter(num_threads=threads, **kw)
    assert fused._chain is not None
    plain = _Unfused(num_threads=2, **kw)
    assert plain._chain is None
    _same(_epochs(fused, 3), _epochs(plain, 3))


def test_dropped_samples_shift_the_slots_and_batches_stay_right(tmp_path):
    # broken images are skipped: every later sample lands one slot before its prediction
    rec, idx = _rec(tmp_path, n=30, broken=(2, 11, 12))
    kw = dict(batch_size=4, data_shape=(3, 32, 32), path_imgrec=rec, path_imgidx=idx,
              on_error="skip", seed=1, **AUG)
    fused, plain = ImageIter(num_threads=3, **kw), _Unfused(num_threads=1, **kw)
    a, b = _epochs(fused, 2), _epochs(plain, 2)
    _same(a, b)
    labels = np.concatenate([lab for _, lab, _ in a[0]]).tolist()
    assert not {2.0, 11.0, 12.0} & set(labels[:27]) and fused.num_skipped == 6


def test_held_batches_are_never_overwritten(tmp_path):
    rec, idx = _rec(tmp_path)
    kw = dict(batch_size=4, data_shape=(3, 32, 32), path_imgrec=rec, path_imgidx=idx,
              shuffle=True, seed=2, num_threads=2, **AUG)
    want = _epochs(ImageIter(**kw), 3)
    it = ImageIter(**kw)
    held, views = [], []
    for e in range(3):
        batches = list(it)  # every batch of the epoch kept at once
        views.append(batches[1].data[0][:2])  # and a view of one
        held.append(batches)
        it.reset()
    for e in range(3):
        assert [b.pad for b in held[e]] == [p for _, _, p in want[e]]
        for b, (d, lab, _) in zip(held[e], want[e]):
            assert np.array_equal(b.data[0], d) and np.array_equal(b.label[0], lab)
        assert np.array_equal(views[e], want[e][1][0][:2])
    ids = {id(b.data[0]) for e in held for b in e}
    assert len(ids) == sum(len(e) for e in held)  # none shared while held


def test_released_batch_arrays_are_reused(tmp_path):
    rec, idx = _rec(tmp_path)
    it = ImageIter(batch_size=4, data_shape=(3, 32, 32), path_imgrec=rec, path_imgidx=idx,
                   shuffle=True, seed=2, num_threads=2, **AUG)
    seen = set()
    for _ in range(4):
        for b in it:
            seen.add(b.data[0].ctypes.data)
        it.reset()
        gc.collect()
    assert len(seen) <= 8  # 24 batches from a handful of arrays


def test_fast_mode_is_close_to_exact_with_the_same_labels_and_order(tmp_path):
    from cloudrec.tools.photos import PhotoSpec, make_photos
    rels = make_photos(str(tmp_path / "img"), PhotoSpec(n=30, classes=3, min_side=120,
                                                        max_side=320, seed=3))
    rec, idx = str(tmp_path / "p.rec"), str(tmp_path / "p.idx")
    w = MXIndexedRecordIO(idx, rec, "w")
    for i, r in enumerate(rels):
        w.write_idx(i, pack(IRHeader(0, float(i), i, 0), (tmp_path / "img" / r).read_bytes()))
    w.close()
    kw = dict(batch_size=5, data_shape=(3, 56, 56), path_imgrec=rec, path_imgidx=idx,
              shuffle=True, seed=4, num_threads=2, resize=64, rand_crop=True,
              rand_mirror=True, mean=True, std=True)
    exact, fast = _epochs(ImageIter(**kw), 1)[0], _epochs(ImageIter(fast=True, **kw), 1)[0]
    assert [(lab.tolist(), p) for _, lab, p in exact] == [(lab.tolist(), p) for _, lab, p in fast]
    assert all(x.shape == y.shape for (x, _, _), (y, _, _) in zip(exact, fast))
    d = np.abs(np.concatenate([x for x, _, _ in exact]) - np.concatenate([x for x, _, _ in fast]))
    # in (x - mean) / std units (1 level ~ 0.017).  The scaled DCT decode (1/2 here for
    # most photos) filters differently from a bicubic resize of the full image, and the
    # crop's source region is rounded to whole pixels: ~6 levels on average at this small
    # size (0.04, ~2 levels, on the 224-pixel bench crops), more at sharp edges
    assert d.mean() < 0.15 and np.percentile(d, 99) < 1.2
    assert not np.array_equal(exact[0][0], fast[0][0])  # fast mode did take its path


@pytest.mark.parametrize("fast", [False, True])
def test_a_strided_out_gets_the_same_values_as_a_batch_slot(fast):
    augs = CreateAugmenter((3, 32, 32), resize=40, fast=fast, rand_crop=True, rand_mirror=True,
                           mean=True, std=True)
    chain = FusedChain.match(augs)
    img = _photo(np.random.default_rng(3), 50, 70)
    slot = np.zeros((3, 32, 32), np.float32)
    assert chain.run(img, np.random.default_rng(9), slot)
    wide = np.zeros((3, 32, 64), np.float32)
    strided = wide[:, :, ::2]  # not C-contiguous: numpy's passes
    assert not strided.flags.c_contiguous
    assert chain.run(img, np.random.default_rng(9), strided)
    assert np.array_equal(strided, slot)
    assert not wide[:, :, 1::2].any()  # nothing written between the strided columns
