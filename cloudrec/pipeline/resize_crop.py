"""The resize + crop of ``aug_default`` done in one resize of only the source region the
crop needs: fast mode's window-region resize (pixels close to exact mode) and exact mode's
top-left ROI resize (pixels identical), plus MXNet's interpolation rule."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import cv2
import numpy as np

__all__ = ["inter_method", "fused_resize_crop", "resize_then_crop"]

_CV_INTER = {0: cv2.INTER_NEAREST, 1: cv2.INTER_LINEAR, 2: cv2.INTER_CUBIC,
             3: cv2.INTER_AREA, 4: cv2.INTER_LANCZOS4}


def inter_method(method: int, old_w: int, old_h: int, new_w: int, new_h: int,
                 rng: Optional[np.random.Generator]) -> int:
    """MXNet's GetInterMethod: 9 = auto (cubic up, area down, else linear), 10 = random 0-4."""
    if method == 9:
        if new_w > old_w and new_h > old_h:
            return cv2.INTER_CUBIC
        if new_w < old_w and new_h < old_h:
            return cv2.INTER_AREA
        return cv2.INTER_LINEAR
    if method == 10:
        return _CV_INTER[int(rng.integers(0, 5)) if rng is not None else 1]
    return _CV_INTER[method]


def resize_then_crop(aug: Any, img: np.ndarray, rng: Any) -> Optional[np.ndarray]:
    """DefaultAugmenter's resize then its centre/random crop, with the same draws and pixels,
    resizing only rows and columns up to the window's far edge (plus a margin).

    OpenCV maps output pixel d to source (d + 0.5) / f - 0.5 from the scale f alone, so
    a top-left ROI resized with the full image's f (``fx``/``fy``, not a size) gives the
    full output's top-left pixels bit for bit (checked for nearest, linear, area and
    Lanczos: tests/test_resize_crop.py); bicubic is left out (it differs), and so is the
    centre crop that must upsize (None: the caller runs the plain steps, no draw made).
    """
    p, H, W = aug.p, aug.H, aug.W
    rows, cols = img.shape[:2]
    r = p.resize
    nh, nw = (r * rows // cols, r) if rows > cols else (r, r * cols // rows)
    if nh < H or nw < W:
        return None
    interp = inter_method(p.inter_method, cols, rows, nw, nh, rng)
    if interp == cv2.INTER_CUBIC:
        return None
    y, x = nh - H, nw - W
    if p.rand_crop and rng is not None:
        y, x = int(rng.integers(0, y + 1)), int(rng.integers(0, x + 1))
    else:
        y, x = y // 2, x // 2
    fx, fy = nw / cols, nh / rows
    c1 = min(cols, (x + W) * cols // nw + 6)
    r1 = min(rows, (y + H) * rows // nh + 6)
    if (c1 < cols or r1 < rows) and c1 * fx >= x + W + 1 and r1 * fy >= y + H + 1:
        out = cv2.resize(img[:r1, :c1], None, fx=fx, fy=fy, interpolation=interp)
        if out.shape[0] >= y + H and out.shape[1] >= x + W:
            return out[y:y + H, x:x + W]
    return cv2.resize(img, (nw, nh), interpolation=interp)[y:y + H, x:x + W]


def fused_resize_crop(aug: Any, img: np.ndarray, rng: Any,
                      src_size: Optional[Tuple[int, int]]) -> Optional[np.ndarray]:
    """Fast mode's resize+crop in one resize of the window's source region, or None
    when the exact path must run (the centre crop would have to upsize first)."""
    p, H, W = aug.p, aug.H, aug.W
    dh, dw = img.shape[:2]
    k = 1.0  # decoded pixels per source pixel (no source size: the decoded image is it)
    if src_size is None:
        vh, vw = dh, dw
    else:
        sw, sh = src_size
        # EXIF-rotated images decode with swapped sides
        vh, vw = (sh, sw) if abs(dh * sw - dw * sh) <= abs(dh * sh - dw * sw) else (sw, sh)
        # libjpeg's m/8 scale exactly (its last pixel may cover a partial block, so
        # dw / vw is not the scale: up to 6 px off across a 1/8 decode)
        k = max(1, min(8, round(8 * dw / vw))) / 8 if vw >= 16 else dw / vw
    sy = sx = k
    interp = None
    if p.resize > 0:  # the virtual resize of exact mode: same sizes, same rng draws
        r = p.resize
        nh, nw = (r * vh // vw, r) if vh > vw else (r, r * vw // vh)
        interp = inter_method(p.inter_method, vw, vh, nw, nh, rng)
        sy, sx = sy * vh / nh, sx * vw / nw
        vh, vw = nh, nw
    if aug.do_rrc:
        win = aug._rrc_window(vh, vw, rng)
        if win is None:
            return None
        y, x, h, w = win
        interp = inter_method(p.inter_method, w, h, W, H, rng)
    else:
        if vh < H or vw < W:
            return None
        y, x, h, w = vh - H, vw - W, H, W
        if p.rand_crop and rng is not None:
            y, x = int(rng.integers(0, y + 1)), int(rng.integers(0, x + 1))
        else:
            y, x = y // 2, x // 2
    y0, y1 = int(round(y * sy)), min(dh, int(round((y + h) * sy)))  # virtual -> decoded
    x0, x1 = int(round(x * sx)), min(dw, int(round((x + w) * sx)))
    region = img[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
    if region.shape[0] == H and region.shape[1] == W:
        return region
    if interp is None or p.inter_method == 9:
        interp = inter_method(p.inter_method, region.shape[1], region.shape[0], W, H, None)
    return cv2.resize(region, (W, H), interpolation=interp)
