"""mx.image geometric helpers: sizes, offsets and interpolation rules of MXNet, and seeded repeats."""
import cv2
import numpy as np
import pytest

from cloudrec.image import (center_crop, color_normalize, copyMakeBorder, fixed_crop,
                            get_interp_method, imresize, random_crop, random_size_crop,
                            resize_short, scale_down)


def _img(h, w, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def test_scale_down_examples_from_mxnet_docs():
    assert scale_down((640, 480), (720, 120)) == (640, 106)
    assert scale_down((360, 1000), (480, 500)) == (360, 375)
    assert scale_down((300, 400), (0, 0)) == (0, 0)
    assert scale_down((100, 100), (32, 32)) == (32, 32)
    assert scale_down((20, 40), (32, 32)) == (20, 20)


def test_interp_method_rules():
    assert [get_interp_method(i) for i in range(5)] == [0, 1, 2, 3, 4]
    assert get_interp_method(9) == 2
    assert get_interp_method(9, (10, 10, 20, 20)) == 2   # enlarge both
    assert get_interp_method(9, (10, 10, 5, 5)) == 3     # shrink both
    assert get_interp_method(9, (10, 10, 20, 5)) == 1    # mixed
    draws = {get_interp_method(10, rng=np.random.default_rng(s)) for s in range(60)}
    assert draws == {0, 1, 2, 3, 4}
    with pytest.raises(ValueError, match="Unknown interp"):
        get_interp_method(7)


def test_imresize_is_opencv_and_keeps_one_channel_axis():
    img = _img(20, 30)
    for interp in range(5):
        out = imresize(img, 17, 11, interp)
        assert out.shape == (11, 17, 3)
        assert np.array_equal(out, cv2.resize(img, (17, 11), interpolation=interp))
    assert imresize(_img(20, 30, 1), 10, 5).shape == (5, 10, 1)
    assert imresize(img.astype(np.float32), 10, 5).dtype == np.float32


@pytest.mark.parametrize("h,w,size,expect", [(41, 26, 36, (56, 36)), (26, 41, 36, (36, 56)),
                                             (30, 30, 32, (32, 32)), (100, 33, 10, (30, 10))])
def test_resize_short_integer_sizes(h, w, size, expect):
    out = resize_short(_img(h, w), size, interp=1)
    assert out.shape[:2] == expect
    assert np.array_equal(out, cv2.resize(_img(h, w), expect[::-1], interpolation=1))


def test_fixed_crop_copy_and_resize():
    img = _img(20, 30)
    out = fixed_crop(img, 3, 4, 10, 8)
    assert np.array_equal(out, img[4:12, 3:13])
    out[:] = 0
    assert img[4:12, 3:13].any()  # a copy, not a view
    r = fixed_crop(img, 3, 4, 10, 8, size=(5, 4), interp=0)
    assert np.array_equal(r, cv2.resize(img[4:12, 3:13], (5, 4), interpolation=0))


def test_center_crop_offsets_and_scaling():
    img = _img(41, 26)
    out, (x0, y0, w, h) = center_crop(img, (24, 24))
    assert (x0, y0, w, h) == (1, 8, 24, 24) and np.array_equal(out, img[8:32, 1:25])
    # crop bigger than the image: window scaled down to fit, resized up
    out, rect = center_crop(img, (32, 32), interp=1)
    assert rect == (0, 7, 26, 26) and out.shape == (32, 32, 3)
    assert np.array_equal(out, cv2.resize(img[7:33, 0:26], (32, 32), interpolation=1))


def test_random_crop_uniform_offsets_and_seeded_repeat():
    img = _img(12, 10)
    seen = set()
    for s in range(400):
        out, (x0, y0, w, h) = random_crop(img, (6, 8), rng=np.random.default_rng(s))
        assert (w, h) == (6, 8) and np.array_equal(out, img[y0:y0 + 8, x0:x0 + 6])
        seen.add((x0, y0))
    assert seen == {(x, y) for x in range(5) for y in range(5)}  # both ends reachable
    a = random_crop(img, (6, 8), rng=np.random.default_rng(3))
    b = random_crop(img, (6, 8), rng=np.random.default_rng(3))
    assert a[1] == b[1] and np.array_equal(a[0], b[0])


def test_random_size_crop_area_and_ratio_statistics():
    img = _img(100, 120)
    rng = np.random.default_rng(0)
    areas, ratios = [], []
    for _ in range(500):
        out, (x0, y0, w, h) = random_size_crop(img, (20, 20), 0.08, (3 / 4, 4 / 3), rng=rng)
        assert out.shape == (20, 20, 3)
        assert 0 <= x0 <= 120 - w and 0 <= y0 <= 100 - h
        areas.append(w * h / 12000.0)
        ratios.append(w / h)
    areas, ratios = np.array(areas), np.array(ratios)
    assert areas.min() > 0.06 and areas.max() <= 1.0
    assert 0.7 < ratios.min() and ratios.max() < 1.4
    assert 0.45 < areas.mean() < 0.6  # U(0.08, 1) has mean 0.54 (rejections skew it a bit)
    # area as a tuple, min_area alias, and the centre-crop fallback when nothing fits
    out, rect = random_size_crop(img, (20, 20), (0.5, 0.5), (1, 1), rng=rng)
    assert rect[2] == rect[3] == int(round(np.sqrt(6000)))
    out2, rect2 = random_size_crop(img, (20, 20), None, (1, 1), min_area=(0.5, 0.5), rng=rng)
    assert rect2[2] == rect[2]
    out, rect = random_size_crop(img, (20, 30), (2.0, 2.0), (1, 1), rng=rng)
    assert rect == center_crop(img, (20, 30))[1]


def test_color_normalize_true_division_in_place():
    src = _img(4, 5).astype(np.float32)
    mean = np.array([123.68, 116.779, 103.939], np.float32)
    std = np.array([58.395, 57.12, 57.375], np.float32)
    want = (src - mean) / std
    out = color_normalize(src, mean, std)
    assert out is src and np.array_equal(out, want)
    assert np.array_equal(color_normalize(_img(4, 5), mean, None),
                          _img(4, 5).astype(np.float32) - mean)


def test_copy_make_border():
    img = _img(3, 4)
    out = copyMakeBorder(img, 1, 2, 3, 4, values=(1, 2, 3))
    assert out.shape == (6, 11, 3)
    assert np.array_equal(out[1:4, 3:7], img) and list(out[0, 0]) == [1, 2, 3]
    out = copyMakeBorder(img[:, :, :1], 1, 1, 1, 1, type=cv2.BORDER_REPLICATE)
    assert out.shape == (5, 6, 1) and out[0, 0, 0] == img[0, 0, 0]
