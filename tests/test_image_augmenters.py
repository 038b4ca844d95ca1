"""Every mx.image augmenter: its math with pinned randomness, shapes/dtypes, seeded repeats,
statistics of its random draws, dumps(), and CreateAugmenter's list and order."""
import json

import cv2
import numpy as np
import pytest

from cloudrec import image as I


class Pinned:
    """A stand-in Generator that returns preset draws, to check the math exactly."""

    def __init__(self, uniform=0.0, random=0.0, integers=0, normal=(0.0, 0.0, 0.0), perm=None):
        self.u, self.r, self.i, self.n, self.p = uniform, random, integers, normal, perm
        self.calls = []

    def uniform(self, a, b):
        self.calls.append(("uniform", a, b))
        return self.u

    def random(self):
        return self.r

    def integers(self, lo, hi):
        return self.i

    def normal(self, loc, scale, size):
        self.calls.append(("normal", loc, scale, size))
        return np.array(self.n, dtype=np.float64)

    def permutation(self, n):
        return np.array(self.p if self.p is not None else range(n))


def _f(h=6, w=7, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (h, w, 3)).astype(np.float32)


def _u8(h=6, w=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


COEF = np.array([0.299, 0.587, 0.114], np.float32)


def test_brightness_math():
    src = _f()
    rng = Pinned(uniform=0.25)
    out = I.BrightnessJitterAug(0.4)(src.copy(), rng)
    assert rng.calls == [("uniform", -0.4, 0.4)]
    assert out.dtype == np.float32 and np.array_equal(out, src * np.float32(1.25))


def test_contrast_math():
    src = _f()
    out = I.ContrastJitterAug(0.5)(src.copy(), Pinned(uniform=-0.5))
    alpha = 0.5
    gray_mean = (src * COEF).sum() * 3.0 / src.size  # mean over pixels of .299R+.587G+.114B
    want = src * alpha + (1 - alpha) * gray_mean
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-3)
    # a flat gray image is a fixed point of contrast jitter
    flat = np.full((4, 4, 3), 100, np.float32)
    np.testing.assert_allclose(I.ContrastJitterAug(0.5)(flat, Pinned(uniform=0.3)), flat, atol=1e-3)


def test_saturation_math():
    src = _f()
    out = I.SaturationJitterAug(0.5)(src.copy(), Pinned(uniform=-0.5))
    gray = (src * COEF).sum(axis=2, keepdims=True)
    np.testing.assert_allclose(out, src * 0.5 + gray * 0.5, rtol=1e-5, atol=1e-3)
    # alpha = 0 (uniform = -1): fully desaturated, every channel equals the BT.601 gray
    out = I.SaturationJitterAug(1.0)(src.copy(), Pinned(uniform=-1.0))
    np.testing.assert_allclose(out, np.repeat(gray, 3, axis=2), rtol=1e-5, atol=1e-3)


def test_hue_math():
    src = _f()
    aug = I.HueJitterAug(0.5)
    for a in (0.0, 0.3, -0.45):
        u, w = np.cos(a * np.pi), np.sin(a * np.pi)
        bt = np.array([[1, 0, 0], [0, u, -w], [0, w, u]])
        t = (aug.ityiq @ bt @ aug.tyiq).T
        out = aug(src.copy(), Pinned(uniform=a))
        assert out.shape == src.shape and out.dtype == np.float32
        np.testing.assert_allclose(out, (src.reshape(-1, 3) @ t).reshape(src.shape),
                                   rtol=1e-5, atol=1e-3)
        # the YIQ luma of every pixel is (almost) kept by a hue rotation
        np.testing.assert_allclose(out @ aug.tyiq[0], src @ aug.tyiq[0], atol=1.0)
    # zero rotation is the YIQ round trip: close to the identity
    np.testing.assert_allclose(aug(src.copy(), Pinned(uniform=0.0)), src, atol=1.0)


def test_lighting_math():
    eigval = np.array([55.46, 4.794, 1.148])
    eigvec = np.array(I.create.PCA_EIGVEC)
    src = _f()
    rng = Pinned(normal=(0.1, -0.2, 0.3))
    out = I.LightingAug(0.1, eigval, eigvec)(src.copy(), rng)
    assert rng.calls == [("normal", 0, 0.1, (3,))]
    rgb = eigvec @ (np.array([0.1, -0.2, 0.3]) * eigval)
    assert np.array_equal(out, src + rgb.astype(np.float32))


def test_random_gray_math_and_probability():
    src = _f()
    out = I.RandomGrayAug(0.3)(src.copy(), Pinned(random=0.29))
    g = src[..., 0] * 0.21 + src[..., 1] * 0.72 + src[..., 2] * 0.07
    for c in range(3):
        np.testing.assert_allclose(out[..., c], g, rtol=1e-5, atol=1e-3)
    assert np.array_equal(I.RandomGrayAug(0.3)(src, Pinned(random=0.3)), src)


def test_flip_math_and_probability():
    src = _u8()
    out = I.HorizontalFlipAug(0.5)(src, Pinned(random=0.49))
    assert np.array_equal(out, src[:, ::-1]) and out.flags.c_contiguous
    assert I.HorizontalFlipAug(0.5)(src, Pinned(random=0.5)) is src
    rng = np.random.default_rng(1)
    aug = I.HorizontalFlipAug(0.5)
    flips = sum(not np.array_equal(aug(src, rng), src) for _ in range(2000))
    assert 900 < flips < 1100


def test_cast_and_normalize():
    src = _u8()
    out = I.CastAug()(src)
    assert out.dtype == np.float32 and np.array_equal(out, src.astype(np.float32))
    assert I.CastAug("float16")(src).dtype == np.float16
    mean, std = np.array([1.5, 2, 3], np.float32), np.array([2, 4, 8], np.float32)
    out = I.ColorNormalizeAug(mean, std)(src.astype(np.float32))
    assert np.array_equal(out, (src.astype(np.float32) - mean) / std)
    assert np.array_equal(I.ColorNormalizeAug(None, std)(src.astype(np.float32)),
                          src.astype(np.float32) / std)


def test_geometric_augmenters():
    src = _u8(41, 26)
    out = I.ResizeAug(36, 1)(src)
    assert out.shape == (56, 36, 3) and np.array_equal(out, cv2.resize(src, (36, 56), interpolation=1))
    out = I.ForceResizeAug((20, 10), 1)(src)
    assert out.shape == (10, 20, 3) and np.array_equal(out, cv2.resize(src, (20, 10), interpolation=1))
    out = I.CenterCropAug((24, 24))(src)
    assert np.array_equal(out, src[8:32, 1:25])
    out = I.RandomCropAug((24, 24))(src, Pinned(integers=2))
    assert np.array_equal(out, src[2:26, 2:26])
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert I.RandomSizedCropAug((16, 12), 0.08, (0.75, 4 / 3))(src, rng).shape == (12, 16, 3)
    assert I.RandomSizedCropAug((8, 8), None, (1, 1), min_area=0.5).area == 0.5


def test_sequential_and_random_order():
    calls = []

    class Tag(I.Augmenter):
        def __init__(self, name):
            super().__init__(name=name)
            self.name = name

        def __call__(self, src, rng=None):
            calls.append(self.name)
            return src + 1

    seq = I.SequentialAug([Tag("a"), Tag("b"), Tag("c")])
    assert seq(np.zeros(1)) == 3 and calls == ["a", "b", "c"]
    calls.clear()
    ro = I.RandomOrderAug([Tag("a"), Tag("b"), Tag("c")])
    ro(np.zeros(1), Pinned(perm=[2, 0, 1]))
    assert calls == ["c", "a", "b"]
    assert [t.name for t in ro.ts] == ["a", "b", "c"]  # the list itself is not shuffled
    orders = set()
    rng = np.random.default_rng(0)
    for _ in range(200):
        calls.clear()
        ro(np.zeros(1), rng)
        orders.add(tuple(calls))
    assert len(orders) == 6
    assert seq.dumps() == ["sequentialaug", [json.dumps(["tag", {"name": n}]) for n in "abc"]]


def test_color_jitter_holds_only_positive_params():
    cj = I.ColorJitterAug(0.1, 0, 0.3)
    assert [type(t).__name__ for t in cj.ts] == ["BrightnessJitterAug", "SaturationJitterAug"]
    assert cj.dumps()[0] == "colorjitteraug"


def test_dumps_like_mxnet():
    assert json.loads(I.ResizeAug(36).dumps()) == ["resizeaug", {"size": 36, "interp": 2}]
    assert json.loads(I.CastAug().dumps()) == ["castaug", {"type": "float32"}]
    d = json.loads(I.ColorNormalizeAug(np.array([1.0, 2.0, 3.0]), None).dumps())
    assert d == ["colornormalizeaug", {"mean": [1.0, 2.0, 3.0], "std": None}]
    assert json.loads(I.HorizontalFlipAug(0.5).dumps()) == ["horizontalflipaug", {"p": 0.5}]


ALL_RANDOM = [I.BrightnessJitterAug(0.3), I.ContrastJitterAug(0.3), I.SaturationJitterAug(0.3),
              I.HueJitterAug(0.3), I.ColorJitterAug(0.3, 0.3, 0.3),
              I.LightingAug(0.1, I.create.PCA_EIGVAL, I.create.PCA_EIGVEC),
              I.RandomGrayAug(0.5), I.HorizontalFlipAug(0.5), I.RandomCropAug((5, 4)),
              I.RandomSizedCropAug((5, 4), 0.08, (0.75, 4 / 3))]


@pytest.mark.parametrize("aug", ALL_RANDOM, ids=lambda a: type(a).__name__)
def test_seeded_repeat_shape_dtype(aug):
    src = _f(9, 11)
    a = [aug(src.copy(), np.random.default_rng(7)) for _ in range(2)]
    assert np.array_equal(a[0], a[1])
    assert a[0].dtype == np.float32
    assert a[0].shape in ((9, 11, 3), (4, 5, 3))
    # seed() on the augmenter itself also repeats
    x = aug.seed(3)(src.copy())
    y = aug.seed(3)(src.copy())
    assert np.array_equal(x, y)
    # and different draws give different outputs over several tries
    outs = {aug(src.copy(), np.random.default_rng(s)).tobytes() for s in range(8)}
    assert len(outs) > 1


def test_jitter_draw_statistics():
    rng = np.random.default_rng(0)
    one = np.ones((1, 1, 3), np.float32)
    alphas = np.array([I.BrightnessJitterAug(0.4)(one.copy(), rng)[0, 0, 0] for _ in range(4000)])
    assert alphas.min() >= 0.6 and alphas.max() <= 1.4
    assert abs(alphas.mean() - 1.0) < 0.02 and abs(alphas.std() - 0.8 / np.sqrt(12)) < 0.01
    lit = I.LightingAug(0.1, [1.0, 1.0, 1.0], np.eye(3))
    offs = np.array([lit(np.zeros((1, 1, 3), np.float32), rng)[0, 0] for _ in range(4000)])
    assert np.all(np.abs(offs.std(axis=0) - 0.1) < 0.01)


def test_create_augmenter_order_and_defaults():
    names = lambda l: [type(a).__name__ for a in l]
    assert names(I.CreateAugmenter((3, 224, 224))) == ["CenterCropAug", "CastAug"]
    full = I.CreateAugmenter((3, 32, 48), resize=40, rand_crop=True, rand_resize=True,
                             rand_mirror=True, mean=True, std=True, brightness=0.1,
                             contrast=0.1, saturation=0.1, hue=0.1, pca_noise=0.1,
                             rand_gray=0.2, inter_method=1)
    assert names(full) == ["ResizeAug", "RandomSizedCropAug", "HorizontalFlipAug", "CastAug",
                           "ColorJitterAug", "HueJitterAug", "LightingAug", "RandomGrayAug",
                           "ColorNormalizeAug"]
    assert full[1].size == (48, 32) and full[1].area == 0.08 and full[1].interp == 1
    assert np.allclose(full[-1].mean, [123.68, 116.28, 103.53])
    assert np.allclose(full[-1].std, [58.395, 57.12, 57.375])
    assert names(I.CreateAugmenter((3, 8, 8), rand_crop=True))[0] == "RandomCropAug"
    assert names(I.CreateAugmenter((3, 8, 8), std=np.array([2.0])))[-1] == "ColorNormalizeAug"
    with pytest.raises(AssertionError):
        I.CreateAugmenter((3, 8, 8), rand_resize=True)
    with pytest.raises(AssertionError):
        I.CreateAugmenter((3, 8, 8), mean=np.array([1.0, 2.0]))


def test_create_augmenter_pipeline_end_to_end():
    src = _u8(41, 26)
    augs = I.CreateAugmenter((3, 32, 32), resize=36, rand_crop=True, rand_mirror=True, mean=True,
                             std=True, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1,
                             pca_noise=0.1, rand_gray=0.1)
    outs = []
    for _ in range(2):
        rng = np.random.default_rng(11)
        x = src
        for a in augs:
            x = a(x, rng)
        outs.append(x)
    assert outs[0].shape == (32, 32, 3) and outs[0].dtype == np.float32
    assert np.array_equal(outs[0], outs[1])
    assert np.array_equal(src, _u8(41, 26))  # the decoded input is never modified
