"""Exact mode's resize-then-crop resizes only the top-left part the crop window needs: the
pixels and random draws equal the plain resize followed by the crop, for every
interpolation, channel count, crop mode and many sizes."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from cloudrec.iterators.record_params import parse_kwargs
from cloudrec.pipeline.augment import AugRng, DefaultAugmenter


def augmenter(resize: int, hw: int, inter: int, rand_crop: bool) -> DefaultAugmenter:
    p = parse_kwargs(dict(path_imgrec="x.rec", data_shape=(3, hw, hw), resize=resize, batch_size=1,
                          inter_method=inter, rand_crop=rand_crop))
    return DefaultAugmenter(p.aug, (3, hw, hw))


def plain(aug: DefaultAugmenter, img: np.ndarray, rng) -> np.ndarray:
    """The steps without the ROI resize: _resize, then _center_crop."""
    return aug._center_crop(aug._resize(img, rng), rng, "")


@pytest.mark.parametrize("inter", [0, 1, 2, 3, 4, 9])
@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("rand_crop", [False, True])
def test_roi_resize_equals_resize_then_crop(inter, channels, rand_crop):
    rng = np.random.default_rng(inter * 10 + channels)
    used = 0
    for t in range(40):
        rows, cols = int(rng.integers(30, 700)), int(rng.integers(30, 700))
        shape = (rows, cols) if channels == 1 else (rows, cols, channels)
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        if t % 2:
            img = cv2.GaussianBlur(img, (5, 5), 2)
        resize = int(rng.integers(20, 300))
        hw = int(rng.integers(4, resize + 1))
        aug = augmenter(resize, hw, inter, rand_crop)
        assert aug.roi_resize
        seed = int(rng.integers(1 << 30))
        r1, r2 = AugRng(seed), AugRng(seed)
        got = aug._resize_then_crop(img, r1)
        if got is None:  # bicubic, or the crop must upsize: the plain steps run, no draw made
            assert r1.random() == AugRng(seed).random()
            continue
        used += 1
        want = plain(aug, img, r2)
        assert got.shape == want.shape and np.array_equal(got, want), (rows, cols, resize, hw)
        assert r1.random() == r2.random()  # the same draws were made
        assert np.array_equal(aug.process(img, AugRng(seed)), want.reshape(got.shape)
                              if channels != 1 else want[..., None])
    assert used > 0 if inter != 2 else used == 0


def test_the_roi_path_resizes_less_than_the_whole_image(monkeypatch):
    """A crop far from the bottom-right corner resizes a smaller source region."""
    seen = []
    real = cv2.resize

    def spy(src, *a, **k):
        seen.append(src.shape[:2])
        return real(src, *a, **k)
    monkeypatch.setattr(cv2, "resize", spy)
    aug = augmenter(256, 224, 1, rand_crop=False)
    img = np.random.default_rng(0).integers(0, 256, (450, 600, 3), dtype=np.uint8)
    out = aug.process(img, None)
    assert out.shape == (224, 224, 3)
    (h, w), = seen
    assert h < 450 and w < 600  # centre crop of 256x341: rows to ~240, cols to ~282 resized
