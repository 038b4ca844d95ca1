"""``mx.image.imrotate`` / ``random_rotate`` with MXNet 1.9's semantics, on numpy.

MXNet rotates float32 CHW images (or NCHW batches) by sampling a rotated,
normalised grid with ``BilinearSampler``: the grid is centred on the image
centre, rotated by the angle in degrees (counter-clockwise on screen), then
divided by ``((W-1)/2, (H-1)/2)``; each of the four neighbours of a sample
point that falls outside the image contributes zero (black corners).
``zoom_in`` scales the grid so no padding shows, ``zoom_out`` so the whole
source stays inside; both together are a ValueError.
"""
from __future__ import annotations

import numbers
from typing import Optional, Sequence, Union

import numpy as np

__all__ = ["imrotate", "random_rotate", "bilinear_sample"]

Angles = Union[float, Sequence[float], np.ndarray]


def bilinear_sample(src: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """MXNet's BilinearSampler: ``src`` (N,C,H,W), grid (N,H',W') in [-1, 1] -> (N,C,H',W')."""
    n, c, h, w = src.shape
    x = (gx + 1.0) * (w - 1) / 2.0
    y = (gy + 1.0) * (h - 1) / 2.0
    x0, y0 = np.floor(x), np.floor(y)
    wx1, wy1 = (x - x0).astype(np.float32), (y - y0).astype(np.float32)
    wx0, wy0 = 1.0 - wx1, 1.0 - wy1
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    out = np.zeros((n, c) + gx.shape[1:], np.float32)
    batch = np.arange(n)[:, None, None]
    for dy, wy in ((0, wy0), (1, wy1)):
        for dx, wx in ((0, wx0), (1, wx1)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            vals = src[batch, :, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]  # (N,H',W',C)
            weight = np.where(inside, wx * wy, 0.0).astype(np.float32)
            out += np.moveaxis(vals * weight[..., None], -1, 1)
    return out


def imrotate(src: np.ndarray, rotation_degrees: Angles, zoom_in: bool = False,
             zoom_out: bool = False) -> np.ndarray:
    """Rotate a float32 CHW image, or an NCHW batch by one angle each (or one for all)."""
    if zoom_in and zoom_out:
        raise ValueError("`zoom_in` and `zoom_out` cannot be both True")
    src = np.asarray(src)
    if src.dtype != np.float32:
        raise TypeError("Only `float32` images are supported by this function")
    expanded = False
    if src.ndim == 3:
        if not isinstance(rotation_degrees, numbers.Number) and np.ndim(rotation_degrees) != 0:
            raise TypeError("When a single image is passed the rotation angle is "
                            "required to be a scalar.")
        src, expanded = src[None], True
    elif src.ndim != 4:
        raise ValueError("Only 3D and 4D are supported by this function")
    n, _, h, w = src.shape
    deg = np.asarray(rotation_degrees, np.float32).reshape(-1)
    if deg.size == 1:
        deg = np.repeat(deg, n)
    if deg.size != n:
        raise ValueError("The number of images must be equal to the number of rotation angles")
    rad = (np.float32(np.pi) * deg / np.float32(180)).astype(np.float32)[:, None, None]
    hs, ws = np.float32((h - 1) / 2), np.float32((w - 1) / 2)
    hm = (np.arange(h, dtype=np.float32)[:, None] - hs) * np.ones((1, w), np.float32)
    wm = (np.arange(w, dtype=np.float32)[None, :] - ws) * np.ones((h, 1), np.float32)
    cos, sin = np.cos(rad), np.sin(rad)
    gx = (wm * cos - hm * sin) / ws
    gy = (wm * sin + hm * cos) / hs
    if zoom_in or zoom_out:
        rho = np.float32(np.sqrt(h * h + w * w))
        corner = np.float32(np.arctan(h / w))
        a = np.abs(rad)
        max_x = np.maximum(np.abs(rho * np.cos(corner + a)), np.abs(rho * np.cos(corner - a)))
        max_y = np.maximum(np.abs(rho * np.sin(corner + a)), np.abs(rho * np.sin(corner - a)))
        if zoom_out:
            scale = np.maximum(max_x / w, max_y / h)
        else:
            scale = np.minimum(w / max_x, h / max_y)
        gx, gy = gx * scale, gy * scale
    out = bilinear_sample(src, gx.astype(np.float32), gy.astype(np.float32))
    return out[0] if expanded else out


def random_rotate(src: np.ndarray, angle_limits: Sequence[float], zoom_in: bool = False,
                  zoom_out: bool = False, rng: Optional[np.random.Generator] = None
                  ) -> np.ndarray:
    """Rotate by angles drawn uniformly from ``angle_limits`` (one per image of a batch)."""
    rng = rng if rng is not None else np.random.default_rng()
    src = np.asarray(src)
    if src.ndim == 3:
        degrees: Angles = float(rng.uniform(*angle_limits))
    else:
        degrees = rng.uniform(angle_limits[0], angle_limits[1], size=src.shape[0])
    return imrotate(src, degrees, zoom_in=zoom_in, zoom_out=zoom_out)
