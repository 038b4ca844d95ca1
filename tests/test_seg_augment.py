"""Segmentation record layout and joint augmenters: the mask stays aligned with the image."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from cloudrec.errors import ImageDecodeError, LabelError
from cloudrec.format.irheader import IRHeader, pack
from cloudrec.image.augmenters import (BrightnessJitterAug, CastAug, ForceResizeAug,
                                       HorizontalFlipAug, RandomCropAug)
from cloudrec.image.seg_augmenters import (CreateSegAugmenter, SegBorrowAug, SegCenterCropAug,
                                           SegForceResizeAug, SegHorizontalFlipAug,
                                           SegRandomCropAug, SegRandomScaleAug,
                                           SegRandomSizedCropAug, SegResizeAug,
                                           SegVerticalFlipAug, sized_crop_box)
from cloudrec.image import ops
from cloudrec.image.segmentation import SEG_TAG, decode_seg, pack_seg, unpack_seg

# class c is drawn in PALETTE[c]: colours far apart, so a pixel's class is its nearest colour
PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0],
                    [0, 255, 255]], np.uint8)


def synthetic(h, w, seed=0):
    """A class map of random rectangles and discs, and the RGB image painting it."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), np.uint8)
    for _ in range(8):
        c = int(rng.integers(1, len(PALETTE)))
        x, y = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
        if rng.random() < 0.5:
            mask[y:y + int(rng.integers(6, h // 2)), x:x + int(rng.integers(6, w // 2))] = c
        else:
            cv2.circle(mask, (x, y), int(rng.integers(4, min(h, w) // 3)), c, -1)
    return PALETTE[mask], mask


def classes_of(image):
    """The class of every pixel: index of the nearest palette colour."""
    d = ((image[:, :, None, :].astype(np.float32) - PALETTE[None, None].astype(np.float32)) ** 2)
    return d.sum(-1).argmin(-1)


def interior(mask):
    """Pixels whose 5x5 neighbourhood has one class (interpolation cannot blend there)."""
    k = np.ones((5, 5), np.uint8)
    return cv2.erode(mask, k) == cv2.dilate(mask, k)


def assert_aligned(image, mask, exact):
    assert image.shape[:2] == mask.shape[:2]
    derived = classes_of(image)
    if exact:
        np.testing.assert_array_equal(derived, mask)
    else:
        inner = interior(mask.astype(np.uint8))
        assert inner.mean() > 0.3
        np.testing.assert_array_equal(derived[inner], mask[inner])
        assert (derived == mask).mean() > 0.9


GEOMETRIC = [
    lambda i: SegResizeAug(37, i),
    lambda i: SegForceResizeAug((50, 70), i),
    lambda i: SegRandomCropAug((40, 30), i),
    lambda i: SegRandomCropAug((300, 200), i),      # bigger than the image: scale_down + resize
    lambda i: SegCenterCropAug((33, 41), i),
    lambda i: SegRandomSizedCropAug((48, 48), 0.08, (0.75, 1.33), i),
    lambda i: SegRandomScaleAug((0.4, 2.5), i),
    lambda i: SegHorizontalFlipAug(1.0),
    lambda i: SegVerticalFlipAug(1.0),
]


@pytest.mark.parametrize("make", GEOMETRIC, ids=lambda f: "aug")
@pytest.mark.parametrize("seed", range(4))
def test_every_geometric_aug_keeps_mask_aligned_nearest(make, seed):
    """With nearest interpolation for the image too, image and mask sample the same pixels."""
    image, mask = synthetic(64, 96, seed)
    out_i, out_m = make(0)(image, mask, np.random.default_rng(seed))
    assert out_m.dtype == mask.dtype and out_m.ndim == 2
    assert_aligned(out_i, out_m, exact=True)


@pytest.mark.parametrize("make", GEOMETRIC, ids=lambda f: "aug")
@pytest.mark.parametrize("interp", [1, 2, 3, 9, 10])
def test_every_geometric_aug_keeps_mask_aligned_smooth(make, interp):
    """With a smoothing image interpolation, the mask still matches away from class edges,
    and it holds only class ids that existed (nearest-neighbour, never blended)."""
    image, mask = synthetic(64, 96, 5)
    out_i, out_m = make(interp)(image, mask, np.random.default_rng(11))
    assert set(np.unique(out_m)) <= set(np.unique(mask))
    assert_aligned(out_i, out_m, exact=False)


def test_flips_exact_and_probability():
    image, mask = synthetic(20, 30, 1)
    i2, m2 = SegHorizontalFlipAug(1.0)(image, mask)
    np.testing.assert_array_equal(i2, image[:, ::-1])
    np.testing.assert_array_equal(m2, mask[:, ::-1])
    i3, m3 = SegVerticalFlipAug(1.0)(image, mask)
    np.testing.assert_array_equal(m3, mask[::-1])
    assert SegHorizontalFlipAug(0.0)(image, mask)[1] is mask
    rng = np.random.default_rng(0)
    n = sum(SegHorizontalFlipAug(0.5)(image, mask, rng)[1] is not mask for _ in range(300))
    assert 100 < n < 200


def test_crop_windows_match_image_helpers():
    """The joint crops pick the same windows as the image-only helpers with the same draws."""
    image, mask = synthetic(64, 96, 2)
    a, _ = SegRandomCropAug((40, 30), 0)(image, mask, np.random.default_rng(4))
    b = RandomCropAug((40, 30), 0)(image, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    for seed in range(20):
        box = sized_crop_box(64, 96, (48, 48), 0.08, (0.75, 1.33), np.random.default_rng(seed))
        _, want = ops.random_size_crop(image, (48, 48), 0.08, (0.75, 1.33), 0,
                                       rng=np.random.default_rng(seed))
        assert box == want


def test_borrow_is_image_only_and_refuses_geometry():
    image, mask = synthetic(16, 16)
    out_i, out_m = SegBorrowAug(BrightnessJitterAug(0.5))(image.astype(np.float32), mask,
                                                          np.random.default_rng(1))
    assert out_m is mask
    assert not np.allclose(out_i, image)
    for geo in (ForceResizeAug((8, 8)), RandomCropAug((8, 8)), HorizontalFlipAug(0.5)):
        with pytest.raises(TypeError, match="mask"):
            SegBorrowAug(geo)
    with pytest.raises(TypeError):
        SegBorrowAug(SegHorizontalFlipAug(0.5))


def test_create_seg_augmenter_pipeline_aligned_and_seeded():
    image, mask = synthetic(80, 120, 3)
    augs = CreateSegAugmenter((3, 48, 64), resize=60, rand_crop=True, rand_resize=True,
                              rand_mirror=True, rand_scale=(0.8, 1.5), inter_method=0)
    names = [type(a).__name__ for a in augs]
    assert names == ["SegResizeAug", "SegRandomScaleAug", "SegRandomSizedCropAug",
                     "SegHorizontalFlipAug", "SegBorrowAug"]
    for seed in range(10):
        x, m = image, mask
        for a in augs:
            x, m = a(x, m, np.random.default_rng(seed))
        assert x.shape == (48, 64, 3) and x.dtype == np.float32 and m.shape == (48, 64)
        assert_aligned(x.astype(np.uint8), m, exact=True)
    colour = CreateSegAugmenter((3, 48, 64), brightness=0.3, contrast=0.3, saturation=0.3,
                                hue=0.1, pca_noise=0.1, rand_gray=0.2, mean=True, std=True)
    assert [type(a.augmenter).__name__ for a in colour[2:]] == \
        ["ColorJitterAug", "HueJitterAug", "LightingAug", "RandomGrayAug", "ColorNormalizeAug"]

    def run(seed):
        x, m = image, mask
        for a in colour:
            x, m = a(x, m, np.random.default_rng(seed))
        return x, m
    (x1, m1), (x2, m2), (x3, _) = run(5), run(5), run(6)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(m1, m2)
    assert not np.array_equal(x1, x3)
    with pytest.raises(AssertionError):
        CreateSegAugmenter((3, 8, 8), rand_resize=True)


# ----------------------------------------------------------------------------- record layout
def test_pack_unpack_roundtrip_and_layout():
    image, mask = synthetic(40, 50)
    jpg = cv2.imencode(".jpg", image[:, :, ::-1])[1].tobytes()
    payload = pack_seg(jpg, mask, id=17, extra=[3.0, 4.5])
    rec = unpack_seg(payload)
    assert rec.header.id == 17 and rec.header.flag == 7
    assert rec.image == jpg
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(rec.mask, np.uint8),
                                               cv2.IMREAD_UNCHANGED), mask)
    np.testing.assert_array_equal(rec.extra, [3.0, 4.5])
    lab = np.frombuffer(payload, np.float32, 7, 24)
    assert lab[0] == SEG_TAG
    assert lab[1] * 65536 + lab[2] == len(jpg)
    assert payload[24 + 28:24 + 28 + len(jpg)] == jpg
    # arrays are encoded (BGR in, as pack_img); PNG keeps the image exact
    payload = pack_seg(image[:, :, ::-1].copy(), mask, img_fmt=".png")
    _rec, img, m = decode_seg(payload)
    np.testing.assert_array_equal(img, image)
    np.testing.assert_array_equal(m, mask)


def test_large_lengths_split_exactly_and_uint16_masks():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)  # PNG of ~360 KB > 2**16
    mask = rng.integers(0, 40000, (300, 400), dtype=np.uint16)
    payload = pack_seg(noise, mask, img_fmt=".png")
    rec, img, m = decode_seg(payload)
    assert len(rec.image) > 65536 * 4
    np.testing.assert_array_equal(img, noise[:, :, ::-1])
    assert m.dtype == np.uint16
    np.testing.assert_array_equal(m, mask)


def test_bad_records_name_the_record():
    image, mask = synthetic(20, 20)
    payload = pack_seg(image, mask, img_fmt=".png")
    with pytest.raises(LabelError, match=r"holds .*s3://b/seg\.rec, record key 5"):
        unpack_seg(payload[:-10], "s3://b/seg.rec", 5)
    classification = pack(IRHeader(0, 3.0, 1, 0), b"\xff\xd8jpeg")
    with pytest.raises(LabelError, match="not a segmentation record.*key 9"):
        unpack_seg(classification, "x.rec", 9)
    other = pack_seg(image, np.zeros((10, 20), np.uint8), img_fmt=".png")
    with pytest.raises(ImageDecodeError, match="mask is 20x10 but the image is 20x20"):
        decode_seg(other, url="x.rec", key=2)
    with pytest.raises(ValueError):
        pack_seg(image, mask.astype(np.float32))
    broken = pack_seg(cv2.imencode(".png", image)[1].tobytes(), b"\x89PNG garbage")
    with pytest.raises(ImageDecodeError, match="mask could not be decoded"):
        decode_seg(broken, url="x.rec", key=3)
