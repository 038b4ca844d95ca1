"""MXNet-exact bicubic (OpenCV 3.4 fixed point) vs a slow direct reference and the golden fixture."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloudrec.image import INTER_CUBIC_MXNET, CreateAugmenter, ImageIter, imresize
from cloudrec.image.cubic import resize_cubic_mxnet

FIX = Path(__file__).parent / "fixtures" / "mxnet"


def _reference(img, nw, nh):
    """Direct transcription of the algorithm, one output pixel at a time (slow, obvious)."""
    f32 = np.float32

    def weights(x):
        a = f32(-0.75)
        c0 = ((a * (x + 1) - 5 * a) * (x + 1) + 8 * a) * (x + 1) - 4 * a
        c1 = ((a + 2) * x - (a + 3)) * x * x + 1
        c2 = ((a + 2) * (1 - x) - (a + 3)) * (1 - x) * (1 - x) + 1
        c = [f32(c0), f32(c1), f32(c2)]
        c.append(f32(1) - c[0] - c[1] - c[2])
        return [int(np.rint(f32(v) * f32(2048))) for v in c]

    def taps(n_src, n_dst):
        scale = 1.0 / (n_dst / n_src)
        out = []
        for d in range(n_dst):
            f = f32((d + 0.5) * scale - 0.5)
            s = int(np.floor(f))
            out.append(([min(max(s - 1 + k, 0), n_src - 1) for k in range(4)],
                        weights(f32(f - f32(s)))))
        return out

    H, W, C = img.shape
    tx, ty = taps(W, nw), taps(H, nh)
    src = img.astype(np.int64)
    out = np.zeros((nh, nw, C), np.uint8)
    for dy, (ys, by) in enumerate(ty):
        for dx, (xs, ax) in enumerate(tx):
            acc = sum(by[j] * sum(ax[k] * src[ys[j], xs[k]] for k in range(4)) for j in range(4))
            out[dy, dx] = np.clip((acc + (1 << 21)) >> 22, 0, 255)
    return out


@pytest.mark.parametrize("shape,size", [((7, 9, 3), (13, 11)), ((20, 15, 3), (6, 8)),
                                        ((5, 5, 1), (5, 9)), ((12, 30, 3), (30, 12)),
                                        ((1, 4, 3), (3, 2))])
def test_matches_direct_reference(shape, size):
    img = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    got = resize_cubic_mxnet(img, *size)
    assert got.shape == (size[1], size[0], shape[2]) and got.dtype == np.uint8
    assert np.array_equal(got, _reference(img, *size))
    # and it is OpenCV's bicubic up to one level (the 3.4 vs 4.x difference)
    cvr = cv2.resize(img, size, interpolation=cv2.INTER_CUBIC).reshape(got.shape)
    assert np.abs(cvr.astype(int) - got).max() <= 1


def test_extremes_saturate_and_gray_input():
    img = np.zeros((8, 8), np.uint8)
    img[:, 4:] = 255  # a hard edge makes the cubic overshoot: must clip to 0..255
    out = resize_cubic_mxnet(img, 13, 5)
    assert out.shape == (5, 13) and out.min() == 0 and out.max() == 255
    assert np.array_equal(out, _reference(img[:, :, None], 13, 5)[:, :, 0])
    assert imresize(img[:, :, None], 13, 5, INTER_CUBIC_MXNET).shape == (5, 13, 1)
    with pytest.raises(TypeError):
        resize_cubic_mxnet(img.astype(np.float32), 3, 3)


def test_imageiter_bicubic_fixture_bit_exact():
    ref = np.load(FIX / "reads/iters/ii_center_norm_bicubic.data.npy")
    augs = CreateAugmenter((3, 32, 32), resize=36, mean=np.array([123.68, 116.779, 103.939]),
                           std=np.array([58.395, 57.12, 57.375]), inter_method=INTER_CUBIC_MXNET)
    it = ImageIter(5, (3, 32, 32), path_imgrec=str(FIX / "pack/passthrough/all.rec"),
                   path_imgidx=str(FIX / "pack/passthrough/all.idx"), aug_list=augs)
    assert np.array_equal(np.concatenate([b.data[0] for b in it]), ref)
