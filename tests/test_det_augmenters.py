"""Detection augmenters: boxes stay on the pixels they framed, ejection by coverage, seeds repeat."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cloudrec.image.augmenters import (CastAug, ColorNormalizeAug, ForceResizeAug,
                                       HorizontalFlipAug, ResizeAug)
from cloudrec.image.det_augmenters import (CreateDetAugmenter, CreateMultiRandCropAugmenter,
                                           DetBorrowAug, DetHorizontalFlipAug, DetRandomCropAug,
                                           DetRandomPadAug, DetRandomSelectAug, box_areas,
                                           seed_augmenters)

BG = np.array([10, 20, 30], np.uint8)
COLOURS = [np.array(c, np.uint8) for c in ([250, 0, 0], [0, 250, 0], [0, 0, 250])]


def scene(h, w, boxes_px):
    """An image with a flat background and each box (x1, y1, x2, y2 in pixels) filled with its
    own colour; returns the image and the normalised (n, 6) label (class, corners, extra)."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = BG
    rows = []
    for i, (x1, y1, x2, y2) in enumerate(boxes_px):
        img[y1:y2, x1:x2] = COLOURS[i]
        rows.append([i, x1 / w, y1 / h, x2 / w, y2 / h, 100 + i])
    return img, np.array(rows, np.float32)


def pixel_box(img, colour):
    """Bounding box (x1, y1, x2, y2), end exclusive, of the pixels that have exactly ``colour``."""
    ys, xs = np.nonzero(np.all(img == colour, axis=2))
    if ys.size == 0:
        return None
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def label_box_px(row, h, w):
    return (round(float(row[1]) * w), round(float(row[2]) * h),
            round(float(row[3]) * w), round(float(row[4]) * h))


def assert_boxes_frame_pixels(img, label, exact=True):
    """Every object's label box frames exactly the pixels of its colour (± 1 px if not exact)."""
    h, w = img.shape[:2]
    for row in label:
        cls = int(row[0])
        assert row[5] == 100 + cls  # extra columns travel with their object
        got = pixel_box(img, COLOURS[cls])
        assert got is not None, f"object {cls} has a label but no pixels"
        want = label_box_px(row, h, w)
        tol = 0 if exact else 1
        assert np.abs(np.array(got) - np.array(want)).max() <= tol, (cls, got, want)


BOXES = [(10, 12, 50, 40), (60, 30, 95, 70), (5, 55, 30, 78)]


def test_flip_keeps_boxes_on_pixels():
    img, label = scene(80, 100, BOXES)
    out, lab = DetHorizontalFlipAug(1.0)(img, label)
    assert out.shape == img.shape
    np.testing.assert_array_equal(out, img[:, ::-1])
    assert_boxes_frame_pixels(out, lab)
    np.testing.assert_allclose(lab[:, 1], 1 - label[:, 3])
    np.testing.assert_allclose(lab[:, 3], 1 - label[:, 1])
    # the input label is not modified (MXNet flips in place; we do not)
    assert label[0, 1] == pytest.approx(10 / 100)
    out0, lab0 = DetHorizontalFlipAug(0.0)(img, label)
    assert out0 is img and lab0 is label


@pytest.mark.parametrize("seed", range(25))
def test_random_crop_keeps_boxes_on_pixels(seed):
    img, label = scene(80, 100, BOXES)
    aug = DetRandomCropAug(min_object_covered=0.1, aspect_ratio_range=(0.5, 2.0),
                           area_range=(0.1, 1.0), min_eject_coverage=0.3)
    rng = np.random.default_rng(seed)
    out, lab = aug(img, label, rng)
    assert lab.shape[1] == 6 and 1 <= lab.shape[0] <= 3
    assert np.all((lab[:, 1:5] >= 0) & (lab[:, 1:5] <= 1))
    assert_boxes_frame_pixels(out, lab)


def test_random_crop_proposal_constraints_and_window():
    img, label = scene(80, 100, BOXES)
    aug = DetRandomCropAug(min_object_covered=0.5, aspect_ratio_range=(0.75, 1.33),
                           area_range=(0.2, 0.8))
    seen = 0
    for seed in range(60):
        prop = aug.propose(label, 80, 100, np.random.default_rng(seed))
        if prop is None:
            continue
        seen += 1
        x, y, w, h, lab = prop
        assert 0.2 * 8000 <= w * h <= 0.8 * 8000
        assert 0 <= x and x + w <= 100 and 0 <= y and y + h <= 80
        assert 0.75 - 0.05 <= w / h <= 1.33 + 0.05
        out, lab2 = DetRandomCropAug.__call__(aug, img, label, np.random.default_rng(seed))
        np.testing.assert_array_equal(out, img[y:y + h, x:x + w])
        np.testing.assert_array_equal(lab2, lab)
        # every object the window touches is covered more than min_object_covered
        areas = box_areas(label[:, 1:])
        win = np.array([x / 100, y / 80, (x + w) / 100, (y + h) / 80])
        ix = np.clip(np.minimum(label[:, 3], win[2]) - np.maximum(label[:, 1], win[0]), 0, None)
        iy = np.clip(np.minimum(label[:, 4], win[3]) - np.maximum(label[:, 2], win[1]), 0, None)
        cov = ix * iy / areas
        assert cov[cov > 0].min() > 0.5
    assert seen >= 20


def test_crop_ejects_objects_by_coverage_rule():
    img, label = scene(100, 100, [(0, 0, 40, 40), (60, 60, 100, 100), (30, 10, 70, 30)])
    aug = DetRandomCropAug(min_eject_coverage=0.3)
    # window x in [0, 50), y in [0, 50): box 0 fully in (cov 1); box 1 outside (0);
    # box 2 (x 30..70, y 10..30) keeps x 30..50 -> half its area (0.5 > 0.3: kept)
    lab = aug.crop_labels(label, (0, 0, 50, 50), 100, 100)
    np.testing.assert_array_equal(lab[:, 0], [0, 2])
    np.testing.assert_allclose(lab[1, 1:5], [30 / 50, 10 / 50, 1.0, 30 / 50], rtol=1e-6)
    # window x in [0, 40): box 2 keeps x 30..40 -> a quarter (0.25 <= 0.3: ejected)
    lab = aug.crop_labels(label, (0, 0, 40, 50), 100, 100)
    np.testing.assert_array_equal(lab[:, 0], [0])
    # exactly at the threshold is ejected (coverage must be strictly greater)
    aug_half = DetRandomCropAug(min_eject_coverage=0.5)
    lab = aug_half.crop_labels(label, (0, 0, 50, 50), 100, 100)
    np.testing.assert_array_equal(lab[:, 0], [0])
    # nothing left -> None (the augmenter then tries another window)
    assert aug.crop_labels(label, (45, 0, 10, 5), 100, 100) is None
    # and through __call__: the ejected object's pixels may remain, but no label claims them
    out, lab = DetRandomCropAug(min_eject_coverage=0.3, area_range=(0.1, 1.0),
                                aspect_ratio_range=(0.5, 2.0))(img, label,
                                                               np.random.default_rng(3))
    for row in lab:
        full = box_areas(label[int(row[0]):int(row[0]) + 1, 1:])[0]
        kept = box_areas(row[None, 1:])[0] * out.shape[0] * out.shape[1] / 10000
        assert kept / full > 0.3


def test_crop_min_object_covered_rejects_cuts():
    _img, label = scene(100, 100, [(0, 0, 40, 40)])
    aug = DetRandomCropAug(min_object_covered=0.9)
    assert aug.satisfies(label, 0, 0, 50, 50, 100, 100)          # covers all of it
    assert not aug.satisfies(label, 20, 0, 70, 50, 100, 100)     # covers half
    assert not aug.satisfies(label, 50, 50, 100, 100, 100, 100)  # touches nothing
    assert not aug.satisfies(label, 0, 0, 1, 1, 100, 100)        # a single pixel


def test_crop_gives_up_after_max_attempts_and_invalid_ranges_disable():
    img, label = scene(60, 60, [(0, 0, 60, 60)])
    # the only object fills the image: a small window never covers > 0.99 of it
    aug = DetRandomCropAug(min_object_covered=0.99, area_range=(0.1, 0.3), max_attempts=20)
    out, lab = aug(img, label, np.random.default_rng(0))
    assert out is img and lab is label
    with pytest.warns(UserWarning):
        bad = DetRandomCropAug(area_range=(0.8, 0.2))
    assert not bad.enabled
    out, lab = bad(img, label)
    assert out is img
    with pytest.warns(UserWarning):
        assert not DetRandomCropAug(aspect_ratio_range=(0, 1)).enabled
    assert DetRandomCropAug(area_range=0.5, aspect_ratio_range=1.0).area_range == (0.5, 0.5)


@pytest.mark.parametrize("seed", range(15))
def test_random_pad_keeps_boxes_on_pixels(seed):
    img, label = scene(80, 100, BOXES)
    aug = DetRandomPadAug(aspect_ratio_range=(0.75, 1.33), area_range=(1.0, 3.0),
                          pad_val=(7, 8, 9))
    out, lab = aug(img, label, np.random.default_rng(seed))
    h, w = out.shape[:2]
    assert h >= 80 + 2 and w >= 100 + 2 and h * w <= 3 * 8000 * 1.05
    assert_boxes_frame_pixels(out, lab)
    # the original image sits intact on a canvas of pad_val
    mask = np.all(out == (7, 8, 9), axis=2)
    ys, xs = np.nonzero(~mask)
    y0, x0 = ys.min(), xs.min()
    np.testing.assert_array_equal(out[y0:y0 + 80, x0:x0 + 100], img)
    assert mask.sum() == h * w - 80 * 100


def test_pad_disabled_for_area_at_most_one():
    with pytest.warns(UserWarning):
        aug = DetRandomPadAug(area_range=(1.0, 1.0))
    img, label = scene(20, 20, [(2, 2, 10, 10)])
    out, lab = aug(img, label)
    assert out is img and lab is label


def test_select_skip_and_choose():
    img, label = scene(40, 40, [(2, 2, 20, 20)])
    flip = DetHorizontalFlipAug(1.0)
    never = DetRandomSelectAug([flip], skip_prob=1.0)
    assert never(img, label)[0] is img
    always = DetRandomSelectAug([flip], skip_prob=0.0)
    np.testing.assert_array_equal(always(img, label)[0], img[:, ::-1])
    assert DetRandomSelectAug([], skip_prob=0).skip_prob == 1
    with pytest.raises(ValueError):
        DetRandomSelectAug([HorizontalFlipAug(1.0)])
    # skip_prob 0.5: about half the calls flip
    sel = DetRandomSelectAug([flip], skip_prob=0.5)
    rng = np.random.default_rng(0)
    flips = sum(sel(img, label, rng)[0] is not img for _ in range(400))
    assert 150 < flips < 250


def test_borrow_applies_image_only():
    img, label = scene(40, 60, [(6, 4, 30, 20)])
    with pytest.raises(TypeError):
        DetBorrowAug(DetHorizontalFlipAug(0.5))
    out, lab = DetBorrowAug(ForceResizeAug((120, 80), 0))(img, label)
    assert out.shape == (80, 120, 3) and lab is label
    assert_boxes_frame_pixels(out, lab)  # nearest 2x: normalised boxes still exact
    assert DetBorrowAug(CastAug()).dumps() == ["detborrowaug", CastAug().dumps()]


def test_seeded_pipeline_repeats_and_differs():
    img, label = scene(80, 100, BOXES)

    def run(seed):
        augs = CreateDetAugmenter((3, 64, 64), rand_crop=0.7, rand_pad=0.5, rand_mirror=True,
                                  brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1,
                                  pca_noise=0.1, rand_gray=0.3, inter_method=10)
        seed_augmenters(augs, seed)
        outs = []
        for _ in range(6):
            x, y = img, label
            for a in augs:
                x, y = a(x, y)
            outs.append((x, y))
        return outs

    a, b, c = run(7), run(7), run(8)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert any(not np.array_equal(ya, yc) or not np.array_equal(xa, xc)
               for (xa, ya), (xc, yc) in zip(a, c))
    # the same through an explicit per-call Generator
    augs = CreateDetAugmenter((3, 64, 64), rand_crop=1, rand_mirror=True)

    def run_rng(seed):
        rng = np.random.default_rng(seed)
        x, y = img, label
        for aug in augs:
            x, y = aug(x, y, rng)
        return x, y
    x1, y1 = run_rng(3)
    x2, y2 = run_rng(3)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)


def test_create_det_augmenter_order_and_args():
    names = lambda augs: [a.dumps()[0] if isinstance(a.dumps(), list)  # noqa: E731
                          else json.loads(a.dumps())[0] for a in augs]
    default = CreateDetAugmenter((3, 300, 300))
    assert [type(a).__name__ for a in default] == ["DetBorrowAug", "DetBorrowAug"]
    assert isinstance(default[0].augmenter, ForceResizeAug)
    assert default[0].augmenter.size == (300, 300)
    assert isinstance(default[1].augmenter, CastAug)
    full = CreateDetAugmenter((3, 200, 300), resize=256, rand_crop=0.5, rand_pad=0.4,
                              rand_gray=0.1, rand_mirror=True, mean=True, std=True,
                              brightness=0.1, contrast=0.1, saturation=0.1, pca_noise=0.1,
                              hue=0.1, min_object_covered=[0.1, 0.3, 0.5],
                              area_range=(0.3, 3.0))
    kinds = [type(a).__name__ if not isinstance(a, DetBorrowAug)
             else type(a.augmenter).__name__ for a in full]
    assert kinds == ["ResizeAug", "DetRandomSelectAug", "DetHorizontalFlipAug",
                     "DetRandomSelectAug", "ForceResizeAug", "CastAug", "ColorJitterAug",
                     "HueJitterAug", "LightingAug", "RandomGrayAug", "ColorNormalizeAug"]
    assert names(full)[0] == "detborrowaug"
    crop_sel, pad_sel = full[1], full[3]
    assert crop_sel.skip_prob == 0.5 and len(crop_sel.aug_list) == 3
    assert [c.min_object_covered for c in crop_sel.aug_list] == [0.1, 0.3, 0.5]
    assert all(c.area_range == (0.3, 3.0) for c in crop_sel.aug_list)
    assert pad_sel.skip_prob == pytest.approx(0.6)
    assert pad_sel.aug_list[0].area_range == (1.0, 3.0)
    assert pad_sel.aug_list[0].pad_val == (127, 127, 127)
    assert full[4].augmenter.size == (300, 200)
    norm = full[-1].augmenter
    assert isinstance(norm, ColorNormalizeAug)
    np.testing.assert_allclose(norm.mean, [123.68, 116.28, 103.53], rtol=1e-6)
    with pytest.raises(AssertionError):
        CreateDetAugmenter((3, 10, 10), mean=np.zeros(2))
    assert isinstance(CreateDetAugmenter((3, 8, 8), resize=5)[0].augmenter, ResizeAug)


def test_multi_crop_alignment():
    sel = CreateMultiRandCropAugmenter(min_object_covered=[0.1, 0.7],
                                       area_range=[(0.1, 1.0), (0.5, 1.0)], skip_prob=0.2)
    assert [(c.min_object_covered, c.area_range) for c in sel.aug_list] == \
        [(0.1, (0.1, 1.0)), (0.7, (0.5, 1.0))]
    with pytest.raises(AssertionError):
        CreateMultiRandCropAugmenter(min_object_covered=[0.1, 0.2], max_attempts=[1, 2, 3])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1),
       h=st.integers(20, 90), w=st.integers(20, 90),
       rel=st.lists(st.tuples(st.floats(0, 0.7), st.floats(0, 0.7),
                              st.floats(0.1, 0.3), st.floats(0.1, 0.3)), min_size=1, max_size=3))
def test_property_full_pipeline_without_resize_keeps_pixels(seed, h, w, rel):
    """Crop, flip and pad in any random combination: each kept label frames its pixels."""
    boxes = []
    for (fx, fy, fw, fh) in rel:
        x1, y1 = int(fx * w), int(fy * h)
        x2, y2 = min(w, x1 + max(2, int(fw * w))), min(h, y1 + max(2, int(fh * h)))
        boxes.append((x1, y1, x2, y2))
    # later boxes paint over earlier ones; keep only non-overlapping ones for a clean check
    clean = []
    for b in boxes:
        if all(b[2] <= c[0] or c[2] <= b[0] or b[3] <= c[1] or c[3] <= b[1] for c in clean):
            clean.append(b)
    img, label = scene(h, w, clean)
    augs = [CreateMultiRandCropAugmenter(min_object_covered=[0.1, 0.5], area_range=(0.1, 1.0),
                                         aspect_ratio_range=(0.5, 2.0), skip_prob=0.2),
            DetHorizontalFlipAug(0.5),
            DetRandomSelectAug([DetRandomPadAug(pad_val=(1, 2, 3))], 0.5)]
    rng = np.random.default_rng(seed)
    x, y = img, label
    for a in augs:
        x, y = a(x, y, rng)
    assert_boxes_frame_pixels(x, y)


def test_mxnet_style_user_augmenters_without_rng():
    """User augmenters written for MXNet (no rng parameter) still run, in lists and selects."""
    from cloudrec.image.augmenters import Augmenter
    from cloudrec.image.det_augmenters import DetAugmenter, apply_det

    class Invert(Augmenter):
        def __call__(self, src):
            return 255 - src

    class DropLast(DetAugmenter):
        def __call__(self, src, label):
            return src, label[:-1]

    img, label = scene(40, 40, [(2, 2, 10, 10), (20, 20, 30, 30)])
    out, lab = DetBorrowAug(Invert())(img, label, np.random.default_rng(0))
    np.testing.assert_array_equal(out, 255 - img)
    out, lab = DetRandomSelectAug([DropLast()], 0)(img, label, np.random.default_rng(0))
    assert len(lab) == 1
    out, lab = apply_det(lambda s, l: (s[::-1], l), img, label, None)
    np.testing.assert_array_equal(out, img[::-1])
    out, lab = apply_det(DetHorizontalFlipAug(1.0), img, label, np.random.default_rng(0))
    np.testing.assert_array_equal(out, img[:, ::-1])
