"""Bicubic resize with the fixed-point arithmetic of OpenCV 3.4 (the OpenCV inside libmxnet 1.9.1).

cv2 4.x/5.x's INTER_CUBIC differs from it by one level on ~3% of uint8
pixels, so ImageIter's default bicubic resize cannot match MXNet's batches
with cv2 alone.  This reimplements the 3.4 algorithm in numpy: per output
position ``f = float32((d + 0.5) * scale - 0.5)``, Keys cubic weights
(A = -0.75) in float32 rounded to 11-bit integers, replicated borders, and
``(sum + 2**21) >> 22`` at the end.  All sums are exact integers, so the
two passes may run in either order; the cheaper one goes first.  It matches
every pixel of the bicubic golden fixture.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Optional, Tuple

import cv2
import numpy as np

__all__ = ["resize_cubic_mxnet"]

_COEF_SCALE = 2048  # INTER_RESIZE_COEF_SCALE (11 bits)


def _cubic_weights(x: np.ndarray) -> np.ndarray:
    """Keys cubic weights for fractional offsets ``x`` (float32), shape (n, 4)."""
    f = np.float32
    a, one = f(-0.75), f(1.0)
    x1 = x + one
    c0 = ((a * x1 - f(5) * a) * x1 + f(8) * a) * x1 - f(4) * a
    c1 = ((a + f(2)) * x - (a + f(3))) * x * x + one
    ox = one - x
    c2 = ((a + f(2)) * ox - (a + f(3))) * ox * ox + one
    c3 = one - c0 - c1 - c2
    return np.stack([c0, c1, c2, c3], axis=1)


@lru_cache(maxsize=256)
def _taps(src_len: int, dst_len: int) -> Tuple[np.ndarray, np.ndarray]:
    """(source indices (dst, 4) clamped to the edge, int64 weights (dst, 4)) for one axis."""
    scale = 1.0 / (dst_len / src_len)
    d = np.arange(dst_len, dtype=np.float64)
    fpos = ((d + 0.5) * scale - 0.5).astype(np.float32)
    start = np.floor(fpos)
    frac = (fpos - start.astype(np.float32)).astype(np.float32)
    w = _cubic_weights(frac) * np.float32(_COEF_SCALE)
    weights = np.rint(w).astype(np.int64)  # saturate_cast<short>: round half to even
    idx = np.clip(start.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :], 0, src_len - 1)
    return idx, weights


@lru_cache(maxsize=64)
def _col_maps(rows: int, cols: Tuple[int, ...]) -> Tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps that gather columns ``cols`` of every row (nearest neighbour)."""
    mapx = np.broadcast_to(np.asarray(cols, np.float32), (rows, len(cols))).copy()
    mapy = np.broadcast_to(np.arange(rows, dtype=np.float32)[:, None], (rows, len(cols))).copy()
    return mapx, mapy


def _take(a: np.ndarray, idx: np.ndarray, axis: int) -> np.ndarray:
    if axis == 0:
        return a[idx]
    if a.shape[2] <= 4:  # OpenCV's remap gathers columns ~5x faster than np.take
        mapx, mapy = _col_maps(a.shape[0], tuple(idx.tolist()))
        g = cv2.remap(a, mapx, mapy, cv2.INTER_NEAREST)
        return g.reshape(a.shape[0], len(idx), a.shape[2])
    return np.take(a, idx, axis=1)


def _filter(a: np.ndarray, axis: int, idx: np.ndarray, w: np.ndarray) -> np.ndarray:
    """out[.., d, ..] = sum_k w[d, k] * a[.., idx[d, k], ..] along ``axis`` (0 or 1), in a's dtype."""
    c = a.shape[2]
    wk = w.astype(a.dtype)
    if axis == 0:  # (n, 1, 1): numpy runs the W*C inner loop against one weight
        weights = [wk[:, k].reshape(-1, 1, 1) for k in range(4)]
    else:  # (n, C) tiled, so that the inner loop is n*C long, not C
        weights = [np.repeat(wk[:, k], c).reshape(-1, c) for k in range(4)]
    out = _take(a, idx[:, 0], axis) * weights[0]
    for k in range(1, 4):
        t = _take(a, idx[:, k], axis)
        t *= weights[k]
        out += t
    return out


def resize_cubic_mxnet(src: np.ndarray, w: int, h: int,
                       window: Optional[Tuple[int, int, int, int]] = None) -> np.ndarray:
    """Resize a uint8 HW or HWC image to (h, w) exactly as OpenCV 3.4's INTER_CUBIC.

    ``window=(x0, y0, cw, ch)`` computes only that crop of the (h, w) result, bit-identical
    to cropping the full resize (every output pixel depends only on its own taps): what a
    ResizeAug followed by a crop needs, at the cost of the window alone.
    The first pass is exact in float32 (|sums| <= 255 * 2816 < 2**24, 2816 being
    the largest sum of |weights|), the second in float64 (|sums| < 2**31).
    """
    if src.dtype != np.uint8:
        raise TypeError("resize_cubic_mxnet handles uint8 images only")
    a = src if src.ndim == 3 else src[:, :, None]
    H, W = a.shape[:2]
    xi, xw = _taps(W, int(w))
    yi, yw = _taps(H, int(h))
    if window is not None:
        x0, y0, cw, ch = (int(v) for v in window)
        if not (0 <= x0 and 0 <= y0 and cw > 0 and ch > 0 and x0 + cw <= w and y0 + ch <= h):
            raise ValueError(f"window {window} is not inside the {w}x{h} result")
        xi, xw, yi, yw = xi[x0:x0 + cw], xw[x0:x0 + cw], yi[y0:y0 + ch], yw[y0:y0 + ch]
        rows = np.arange(int(yi.min()), int(yi.max()) + 1)  # only the source rows needed
        a, yi = a[rows[0]:rows[-1] + 1], yi - rows[0]
        H, w, h = a.shape[0], cw, ch
    a = a.astype(np.float32)
    if H * w <= h * W:  # horizontal pass first costs less
        out = _filter(_filter(a, 1, xi, xw).astype(np.float64), 0, yi, yw)
    else:
        out = _filter(_filter(a, 0, yi, yw).astype(np.float64), 1, xi, xw)
    out += float(1 << 21)
    out *= 1.0 / (1 << 22)  # exact: a power of two
    np.floor(out, out=out)
    res = np.clip(out, 0, 255).astype(np.uint8)
    return res if src.ndim == 3 else res[:, :, 0]
