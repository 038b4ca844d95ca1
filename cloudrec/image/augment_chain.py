"""Running an augmenter list with neighbour pairs fused: ResizeAug + a crop as one resize
of the crop window, CastAug('float32') + ColorNormalizeAug in two passes; same bits as
running them one by one (except with ``ResizeAug(fast=True)``, which asks for the fast path)."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import cv2
import numpy as np

from cloudrec.image import ops
from cloudrec.image.augmenters import (Augmenter, CastAug, CenterCropAug, ColorNormalizeAug,
                                       RandomCropAug, ResizeAug)

__all__ = ["apply_augmenters", "decode_min_side", "region_resize"]

_F32 = np.float32


def _resize_then_crop(resize: ResizeAug, crop: Augmenter, src: np.ndarray,
                      rng: Optional[np.random.Generator]) -> Optional[np.ndarray]:
    """ResizeAug + RandomCropAug/CenterCropAug as one resize of the crop window, with the
    two steps' sizes and random draws; None when it does not apply (the crop would be
    scaled down and resized again, or the resize is exact and not bit-exact windowed)."""
    h, w = src.shape[0], src.shape[1]
    if h == 0 or w == 0 or src.dtype != np.uint8:
        return None
    exact = resize.interp == ops.INTER_CUBIC_MXNET
    if not (exact or resize.fast):
        return None
    size = resize.size
    nh, nw = (size * h // w, size) if h > w else (size, size * w // h)
    cw, ch = int(crop.size[0]), int(crop.size[1])
    if cw > nw or ch > nh:
        return None
    interp = ops.get_interp_method(resize.interp, (h, w, nh, nw), resize._maybe(rng))
    if isinstance(crop, RandomCropAug):
        g = crop._gen(rng)
        x0 = int(g.integers(0, nw - cw + 1))
        y0 = int(g.integers(0, nh - ch + 1))
    else:
        x0, y0 = int((nw - cw) / 2), int((nh - ch) / 2)
    if interp == ops.INTER_CUBIC_MXNET:
        from cloudrec.image.cubic import resize_cubic_mxnet
        return resize_cubic_mxnet(src, nw, nh, window=(x0, y0, cw, ch))
    return region_resize(src, nw, nh, x0, y0, cw, ch, interp)


#: fast mode's stand-in for an interpolation: bilinear for bicubic (MXNet's default), ~15 %
#: less resize time; on the bench photos the mean |fast - exact| grows from 2.33 to 2.40
#: levels (most of it is the scaled, fast-IDCT decode), p99 and max unchanged
FAST_INTERP = {cv2.INTER_CUBIC: cv2.INTER_LINEAR}


def region_resize(src: np.ndarray, nw: int, nh: int, x0: int, y0: int, cw: int, ch: int,
                  interp: int) -> np.ndarray:
    """``ResizeAug(fast=True)``'s approximation of ``imresize(src, nw, nh)[y0:y0+ch,
    x0:x0+cw]``: the crop's source region (rounded to whole pixels) resized to ``(cw, ch)``
    (bicubic done as bilinear: :data:`FAST_INTERP`)."""
    interp = FAST_INTERP.get(interp, interp)
    h, w = src.shape[0], src.shape[1]
    sy, sx = h / nh, w / nw
    ya, yb = int(round(y0 * sy)), min(h, int(round((y0 + ch) * sy)))
    xa, xb = int(round(x0 * sx)), min(w, int(round((x0 + cw) * sx)))
    region = src[ya:max(yb, ya + 1), xa:max(xb, xa + 1)]
    res = cv2.resize(region, (cw, ch), interpolation=interp)
    return res[:, :, None] if src.ndim == 3 and res.ndim == 2 else res


def _cast_normalize(src: np.ndarray, norm: ColorNormalizeAug, fast: bool = False) -> np.ndarray:
    """CastAug('float32') + ColorNormalizeAug in two passes instead of three, same bits:
    uint8 -> float32 is exact, then the same float32 subtract and true division.
    ``fast`` (after a ``ResizeAug(fast=True)``): times float32 ``1 / std`` instead, as the
    fused chain's one-call write does (within 1 float32 ulp of the division)."""
    if norm.mean is not None:
        out = np.subtract(src, _row(norm.mean, src), dtype=_F32)
    else:
        out = src.astype(_F32)
    if norm.std is not None:
        if fast:
            out *= _row(np.float32(1) / np.asarray(norm.std, _F32), out)
        else:
            out /= _row(norm.std, out)
    return out


def _row(vec: np.ndarray, src: np.ndarray) -> np.ndarray:
    """``vec`` as per_channel gives it (a (W, C) float32 row for HWC input)."""
    v = np.asarray(vec, dtype=_F32)
    if src.ndim == 3 and v.ndim == 1 and v.shape[0] == src.shape[2] and src.flags.c_contiguous:
        return np.tile(v, (src.shape[1], 1))
    return v


def apply_augmenters(auglist: Sequence[Any], src: np.ndarray,
                     rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Run ``auglist`` on ``src`` as ``for aug in auglist: src = aug(src, rng)`` does, with
    two neighbour pairs fused: ResizeAug + RandomCropAug/CenterCropAug (bit-exact for
    ``INTER_CUBIC_MXNET``, approximate only with ``ResizeAug(fast=True)``) and
    CastAug('float32') + ColorNormalizeAug (bit-exact; after a ``ResizeAug(fast=True)``
    it multiplies by ``1 / std``, as the fused chain does).  Plain callables (not
    Augmenter) are called with the image alone, as ImageIter does."""
    i, n, fast = 0, len(auglist), False
    while i < n:
        aug = auglist[i]
        nxt = auglist[i + 1] if i + 1 < n else None
        fast = fast or (type(aug) is ResizeAug and aug.fast)
        if type(aug) is ResizeAug and type(nxt) in (RandomCropAug, CenterCropAug):
            out = _resize_then_crop(aug, nxt, src, rng)
            if out is not None:
                src, i = out, i + 2
                continue
        if type(aug) is CastAug and aug.typ == "float32" and type(nxt) is ColorNormalizeAug \
                and src.dtype == np.uint8:
            src, i = _cast_normalize(src, nxt, fast), i + 2
            continue
        src = aug(src, rng) if isinstance(aug, Augmenter) else aug(src)
        i += 1
    return src


def decode_min_side(auglist: Sequence[Any]) -> int:
    """The shorter side a scaled JPEG decode must keep for ``auglist`` (``imdecode``'s
    ``min_side``): the size of a leading ``ResizeAug(fast=True)``, else 0 (full size)."""
    if auglist and type(auglist[0]) is ResizeAug and auglist[0].fast:
        return int(auglist[0].size)
    return 0
