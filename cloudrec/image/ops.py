"""Geometric and colour helpers of ``mx.image`` (resize, crops, normalise), on numpy HWC arrays.

Sizes, offsets and interpolation choices follow MXNet 1.9.1 (spec §3.1)
exactly.  Random helpers draw from the numpy Generator they are given
(``rng``), never from global state, so a seeded run repeats.
"""
from __future__ import annotations

import numbers
from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from cloudrec.image.cubic import resize_cubic_mxnet

__all__ = ["imresize", "resize_short", "fixed_crop", "center_crop", "random_crop",
           "random_size_crop", "scale_down", "color_normalize", "copyMakeBorder",
           "get_interp_method", "per_channel", "INTER_CUBIC_MXNET", "imrotate",
           "random_rotate"]

Size = Tuple[int, int]

#: Interpolation code for MXNet-exact bicubic (OpenCV 3.4's fixed-point INTER_CUBIC, see
#: cloudrec.image.cubic): bit-identical to libmxnet's resize, several times slower than cv2's.
INTER_CUBIC_MXNET = 12


def _rng(rng: Optional[np.random.Generator]) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng()


def get_interp_method(interp: int, sizes: Sequence[int] = (),
                      rng: Optional[np.random.Generator] = None) -> int:
    """Resolve MXNet's interpolation code: 0-4 as OpenCV, 9 = auto by sizes, 10 = random
    (cloudrec adds ``INTER_CUBIC_MXNET``, bicubic bit-identical to libmxnet's).

    ``sizes = (old_h, old_w, new_h, new_w)``: for 9, cubic when enlarging both
    sides, area when shrinking both, else bilinear (cubic without sizes).
    """
    if interp == 9:
        if sizes:
            assert len(sizes) == 4
            oh, ow, nh, nw = sizes
            if nh > oh and nw > ow:
                return 2
            if nh < oh and nw < ow:
                return 3
            return 1
        return 2
    if interp == 10:
        return int(_rng(rng).integers(0, 5))
    if interp not in (0, 1, 2, 3, 4, INTER_CUBIC_MXNET):
        raise ValueError("Unknown interp method %d" % interp)
    return int(interp)


_get_interp_method = get_interp_method


def imresize(src: np.ndarray, w: int, h: int, interp: int = 1,
             out: Optional[np.ndarray] = None) -> np.ndarray:
    """Resize an HWC image to width ``w`` and height ``h`` with OpenCV (keeps a 1-channel axis)."""
    interp = get_interp_method(interp, (src.shape[0], src.shape[1], h, w))
    if interp == INTER_CUBIC_MXNET:
        if src.dtype == np.uint8:
            res = resize_cubic_mxnet(src, int(w), int(h))
            if out is not None:
                out[...] = res
                return out
            return res
        interp = cv2.INTER_CUBIC
    res = cv2.resize(src, (int(w), int(h)), interpolation=interp)
    if src.ndim == 3 and res.ndim == 2:
        res = res[:, :, None]
    if out is not None:
        out[...] = res
        return out
    return res


def resize_short(src: np.ndarray, size: int, interp: int = 2,
                 rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Resize so the shorter side is ``size``; the longer one is ``size * long // short``."""
    h, w = src.shape[0], src.shape[1]
    if h > w:
        new_h, new_w = size * h // w, size
    else:
        new_h, new_w = size, size * w // h
    return imresize(src, new_w, new_h, interp=get_interp_method(interp, (h, w, new_h, new_w), rng))


def fixed_crop(src: np.ndarray, x0: int, y0: int, w: int, h: int, size: Optional[Size] = None,
               interp: int = 2, rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Crop ``src[y0:y0+h, x0:x0+w]`` (a copy), then resize to ``size=(w, h)`` if it differs."""
    out = src[y0:y0 + h, x0:x0 + w]
    if size is not None and (w, h) != tuple(size):
        sizes = (h, w, size[1], size[0])
        return imresize(out, size[0], size[1], interp=get_interp_method(interp, sizes, rng))
    return out.copy()


def scale_down(src_size: Size, size: Size) -> Size:
    """Shrink the crop ``size=(w, h)`` keeping its aspect ratio until it fits ``src_size=(w, h)``."""
    w, h = size
    sw, sh = src_size
    if sh < h:
        w, h = float(w * sh) / h, sh
    if sw < w:
        w, h = sw, float(h * sw) / w
    return int(w), int(h)


def random_crop(src: np.ndarray, size: Size, interp: int = 2,
                rng: Optional[np.random.Generator] = None
                ) -> Tuple[np.ndarray, Tuple[int, int, int, int]]:
    """Crop a random window of ``size`` (scaled down to fit), resized to ``size``.

    Returns ``(out, (x0, y0, w, h))``; offsets are uniform integers, both ends included.
    """
    rng = _rng(rng)
    h, w = src.shape[0], src.shape[1]
    new_w, new_h = scale_down((w, h), size)
    x0 = int(rng.integers(0, w - new_w + 1))
    y0 = int(rng.integers(0, h - new_h + 1))
    out = fixed_crop(src, x0, y0, new_w, new_h, size, interp, rng)
    return out, (x0, y0, new_w, new_h)


def center_crop(src: np.ndarray, size: Size, interp: int = 2,
                rng: Optional[np.random.Generator] = None) -> Tuple[np.ndarray, Tuple[int, int, int, int]]:
    """Crop the centre window of ``size`` (scaled down to fit), resized to ``size``."""
    h, w = src.shape[0], src.shape[1]
    new_w, new_h = scale_down((w, h), size)
    x0 = int((w - new_w) / 2)
    y0 = int((h - new_h) / 2)
    out = fixed_crop(src, x0, y0, new_w, new_h, size, interp, rng)
    return out, (x0, y0, new_w, new_h)


def random_size_crop(src: np.ndarray, size: Size, area: Union[float, Tuple[float, float]],
                     ratio: Tuple[float, float], interp: int = 2,
                     rng: Optional[np.random.Generator] = None, **kwargs
                     ) -> Tuple[np.ndarray, Tuple[int, int, int, int]]:
    """Inception-style crop: random area fraction and log-uniform aspect ratio, 10 tries.

    Falls back to ``center_crop`` when no try fits.  ``min_area`` is MXNet's
    deprecated alias of ``area``.
    """
    rng = _rng(rng)
    h, w = src.shape[0], src.shape[1]
    src_area = h * w
    if "min_area" in kwargs:
        area = kwargs.pop("min_area")
    if kwargs:
        raise TypeError("unexpected keyword arguments %s" % sorted(kwargs))
    if isinstance(area, numbers.Number):
        area = (area, 1.0)
    log_ratio = (np.log(ratio[0]), np.log(ratio[1]))
    for _ in range(10):
        target_area = rng.uniform(area[0], area[1]) * src_area
        new_ratio = np.exp(rng.uniform(*log_ratio))
        new_w = int(round(np.sqrt(target_area * new_ratio)))
        new_h = int(round(np.sqrt(target_area / new_ratio)))
        if new_w <= w and new_h <= h:
            x0 = int(rng.integers(0, w - new_w + 1))
            y0 = int(rng.integers(0, h - new_h + 1))
            out = fixed_crop(src, x0, y0, new_w, new_h, size, interp, rng)
            return out, (x0, y0, new_w, new_h)
    return center_crop(src, size, interp, rng)


def color_normalize(src: np.ndarray, mean, std=None) -> np.ndarray:
    """``(src - mean) / std`` per channel (true division, as MXNet's ImageIter).

    In place when ``src`` is a float array, as MXNet's NDArray version.
    """
    if not np.issubdtype(src.dtype, np.floating):
        src = src.astype(np.float32)
    if mean is not None:
        src -= per_channel(mean, src)
    if std is not None:
        src /= per_channel(std, src)
    return src


def per_channel(vec, src: np.ndarray) -> np.ndarray:
    """``vec`` (one value per channel) as a (W, C) array in ``src``'s dtype.

    Same values as plain broadcasting, but numpy then runs one contiguous
    inner loop of W*C elements instead of millions of 3-element loops (~10x faster).
    """
    v = np.asarray(vec, dtype=src.dtype)
    if src.ndim == 3 and v.ndim == 1 and v.shape[0] == src.shape[2] and src.flags.c_contiguous:
        return np.tile(v, (src.shape[1], 1))
    return v


def copyMakeBorder(src: np.ndarray, top: int, bot: int, left: int, right: int,
                   type: int = cv2.BORDER_CONSTANT, value: float = 0,
                   values: Sequence[float] = (), out: Optional[np.ndarray] = None) -> np.ndarray:
    """Pad an HWC image with OpenCV's border modes (``values`` per channel, else ``value``).

    ``out``: an array of the padded shape to write into (and return), as MXNet's ``out=``.
    """
    fill = list(values) if len(values) else [value] * 4
    res = cv2.copyMakeBorder(src, int(top), int(bot), int(left), int(right), int(type),
                             value=fill)
    if src.ndim == 3 and res.ndim == 2:
        res = res[:, :, None]
    if out is not None:
        if out.shape != res.shape:
            raise ValueError(f"copyMakeBorder: out has shape {out.shape}, the padded image "
                             f"{res.shape}")
        out[...] = res
        return out
    return res


from cloudrec.image.rotate import imrotate, random_rotate  # noqa: E402  (re-exported)
