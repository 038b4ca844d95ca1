"""aug_default inside ImageRecordIter: random augmentations by their statistics, exact repeats.

Record i is a PNG whose blue channel is the column and green channel the row,
so a crop's offset and a mirror can be read back from the output pixels.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from cloudrec.iterators import ImageRecordIter
from cloudrec.pipeline.augment import DefaultAugmenter
from cloudrec.iterators.record_params import parse_kwargs
from cloudrec.recordio import IRHeader, MXIndexedRecordIO, pack_img


def gradient(h, w):
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.arange(w)[None, :]       # B = x
    img[..., 1] = np.arange(h)[:, None]       # G = y
    img[..., 2] = 200
    return img


def make_rec(tmp_path, imgs, name="a"):
    rec, idx = str(tmp_path / f"{name}.rec"), str(tmp_path / f"{name}.idx")
    w = MXIndexedRecordIO(idx, rec, "w")
    for i, img in enumerate(imgs):
        w.write_idx(i, pack_img(IRHeader(0, float(i), i, 0), img, img_fmt=".png"))
    w.close()
    return rec, idx


def collect(**kw):
    kw.setdefault("preprocess_threads", 2)
    with ImageRecordIter(**kw) as it:
        return np.concatenate([b.data[0][:b.data[0].shape[0] - b.pad] for b in it])


@pytest.fixture(scope="module")
def grad_rec(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grad")
    return make_rec(tmp, [gradient(20, 20)] * 400)


def test_rand_crop_positions_cover_valid_range_uniformly(grad_rec):
    rec, idx = grad_rec
    out = collect(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 8, 8), batch_size=50,
                  rand_crop=True, dtype="uint8", seed=11)
    x0 = out[:, 2, 0, 0].astype(int)   # RGB output: channel 2 = B = column
    y0 = out[:, 1, 0, 0].astype(int)
    # the crop window is contiguous
    np.testing.assert_array_equal(out[:, 2, 0, :] - x0[:, None], np.tile(np.arange(8), (400, 1)))
    for pos in (x0, y0):
        assert pos.min() == 0 and pos.max() == 12            # valid range 0..20-8
        counts = np.bincount(pos, minlength=13)
        assert (counts > 0).all()
        chi2 = ((counts - 400 / 13) ** 2 / (400 / 13)).sum()
        assert chi2 < 40                                      # df=12: p ~ 1e-4
    assert abs(np.corrcoef(x0, y0)[0, 1]) < 0.2               # independent draws


def test_centre_crop_without_rand_crop(grad_rec):
    rec, idx = grad_rec
    out = collect(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 8, 8), batch_size=100,
                  dtype="uint8", num_parts=4)
    assert (out[:, 2, 0, 0] == 6).all() and (out[:, 1, 0, 0] == 6).all()  # (20-8)//2


def test_mirror_rate_is_one_half(grad_rec):
    rec, idx = grad_rec
    out = collect(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 20, 20), batch_size=40,
                  rand_mirror=True, dtype="uint8", seed=3)
    first_col = out[:, 2, 0, 0]
    mirrored = first_col == 19
    assert ((first_col == 0) | mirrored).all()
    assert abs(mirrored.mean() - 0.5) < 0.1                   # 400 draws: sd 0.025
    always = collect(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 20, 20), batch_size=40,
                     mirror=True, dtype="uint8", num_parts=10)
    assert (always[:, 2, 0, :] == np.arange(19, -1, -1)).all()


def test_brightness_jitter_within_bounds_and_spread(tmp_path):
    flat = np.full((8, 8, 3), 100, np.uint8)
    rec, idx = make_rec(tmp_path, [flat] * 300)
    out = collect(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 8, 8), batch_size=50,
                  brightness=0.3, seed=1)
    v = out[:, 0, 0, 0]
    assert (out == v[:, None, None, None]).all()              # one factor per image
    assert v.min() >= 70 and v.max() <= 130                   # 100 * (1 +- 0.3)
    assert v.min() < 76 and v.max() > 124                     # and it uses the range
    assert abs(v.mean() - 100) < 3


def test_contrast_and_saturation_jitter_bounds(tmp_path):
    img = np.zeros((8, 8, 3), np.uint8)
    img[:, :4] = (60, 80, 100)
    img[:, 4:] = (160, 180, 200)
    rec, idx = make_rec(tmp_path, [img] * 200)
    out = collect(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 8, 8), batch_size=50,
                  contrast=0.5, seed=2)
    # contrast keeps the image mean (in gray) and scales the spread by 1 +- 0.5
    spread = out[:, 0, 0, 7] - out[:, 0, 0, 0]
    assert spread.min() >= 50 - 1 and spread.max() <= 150 + 1
    assert spread.std() > 10
    sat = collect(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 8, 8), batch_size=50,
                  saturation=0.4, seed=2)
    assert not np.array_equal(sat[0], sat[1]) or not np.array_equal(sat[1], sat[2])
    assert sat.min() >= 0 and sat.max() <= 255


def test_pca_noise_shifts_each_channel_by_a_constant(tmp_path):
    flat = np.full((6, 6, 3), 128, np.uint8)
    rec, idx = make_rec(tmp_path, [flat] * 100)
    out = collect(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 6, 6), batch_size=25,
                  pca_noise=0.1, seed=4)
    d = out[:, :, 0, 0] - 128
    assert (out == out[:, :, :1, :1]).all()
    assert np.abs(d).max() < 60 and d.std() > 0.5


def test_hls_jitter_bounds(tmp_path):
    img = gradient(8, 8)
    rec, idx = make_rec(tmp_path, [img] * 60)
    out = collect(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 8, 8), batch_size=20,
                  random_h=10, random_s=20, random_l=20, dtype="uint8", seed=5)
    assert out.shape == (60, 3, 8, 8)
    assert len({o.tobytes() for o in out}) > 30


def test_same_seed_repeats_exactly_different_seed_differs(grad_rec):
    rec, idx = grad_rec
    kw = dict(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 8, 8), batch_size=50,
              rand_crop=True, rand_mirror=True, max_rotate_angle=15, brightness=0.2,
              max_random_scale=1.2, min_random_scale=0.9, num_parts=4)
    a = collect(seed=9, **kw)
    b = collect(seed=9, preprocess_threads=3, **kw)
    c = collect(seed=10, **kw)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # seed_aug fixes augmentation independently of the shuffle seed
    d = collect(seed=1, seed_aug=77, **kw)
    e = collect(seed=2, seed_aug=77, **kw)
    np.testing.assert_array_equal(d, e)


def test_augmentation_differs_between_epochs(grad_rec):
    rec, idx = grad_rec
    with ImageRecordIter(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 8, 8),
                         batch_size=100, rand_crop=True, num_parts=4) as it:
        e0 = next(it).data[0].copy()
        it.reset()
        e1 = next(it).data[0]
    assert not np.array_equal(e0, e1)


def test_pad_and_fill_value(tmp_path):
    img = np.full((6, 6, 3), 50, np.uint8)
    rec, idx = make_rec(tmp_path, [img] * 4)
    out = collect(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 10, 10), batch_size=4,
                  pad=2, fill_value=9, dtype="uint8")
    assert (out[:, :, 2:8, 2:8] == 50).all()
    border = np.ones((10, 10), bool)
    border[2:8, 2:8] = False
    assert (out[:, :, border] == 9).all()


def test_rotation_fills_corners(tmp_path):
    img = np.full((21, 21, 3), 50, np.uint8)
    rec, idx = make_rec(tmp_path, [img] * 4)
    out = collect(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 21, 21), batch_size=4,
                  rotate=45, fill_value=255, dtype="uint8")
    assert (out[:, :, 0, 0] == 255).all() and (out[:, :, 10, 10] == 50).all()


def test_random_resized_crop_and_crop_size(grad_rec):
    rec, idx = grad_rec
    out = collect(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 8, 8), batch_size=50,
                  random_resized_crop=True, min_random_area=0.2, max_random_area=1.0,
                  min_aspect_ratio=0.75, max_aspect_ratio=1.33, dtype="uint8", num_parts=2)
    assert out.shape == (200, 3, 8, 8)
    x_span = out[:, 2, 0, 7].astype(int) - out[:, 2, 0, 0].astype(int)
    assert x_span.min() < x_span.max()                        # different crop widths
    out2 = collect(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 8, 8), batch_size=50,
                   min_crop_size=8, max_crop_size=16, rand_crop=True, dtype="uint8",
                   num_parts=2)
    assert out2.shape == (200, 3, 8, 8)
    span2 = out2[:, 2, 0, 7].astype(int) - out2[:, 2, 0, 0].astype(int)
    assert span2.min() >= 5 and span2.max() <= 16 and span2.min() < span2.max()


def test_inter_method_auto_and_random_run(grad_rec):
    rec, idx = grad_rec
    for m in (0, 2, 3, 4, 9, 10):
        out = collect(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 8, 8), batch_size=20,
                      resize=10, inter_method=m, dtype="uint8", num_parts=20)
        assert out.shape == (20, 3, 8, 8)


def test_resize_integer_arithmetic_matches_cv2():
    p = parse_kwargs(dict(path_imgrec="x.rec", data_shape=(3, 16, 16), batch_size=1,
                          resize=17))
    aug = DefaultAugmenter(p.aug, p.data_shape)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (37, 23, 3), dtype=np.uint8)   # rows > cols
    out = aug.process(img, None)
    ref = cv2.resize(img, (17, 17 * 37 // 23), interpolation=cv2.INTER_LINEAR)
    y, x = (ref.shape[0] - 16) // 2, (ref.shape[1] - 16) // 2
    np.testing.assert_array_equal(out, ref[y:y + 16, x:x + 16])


def test_random_contrast_illumination_float_bounds(tmp_path):
    flat = np.full((6, 6, 3), 100, np.uint8)
    rec, idx = make_rec(tmp_path, [flat] * 50)
    out = collect(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 6, 6), batch_size=25,
                  mean_r=100, mean_g=100, mean_b=100, max_random_illumination=5, seed=1)
    v = out[:, 0, 0, 0]
    assert np.abs(v).max() <= 5 + 1e-5 and v.std() > 0.5
