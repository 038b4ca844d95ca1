"""MXNet's C++ ``aug_default`` (DefaultImageAugmenter) on OpenCV-order uint8 images.

Spec §2.3, in its order: resize of the shorter edge, the affine step (rotate,
shear, random scale and aspect, size clamp), pad, one crop (random-resized,
square crop-size, or the default centre/random crop that never downsizes),
colour jitter, HLS jitter and PCA lighting.  The deterministic paths use
MXNet's integer/float32 arithmetic so that outputs are bit-identical with
OpenCV; random draws come from a per-image ``numpy.random.Generator`` (MXNet's
mt19937 stream is not reproduced, its distributions are).
"""
from __future__ import annotations

import math
import random
from typing import Optional, Tuple

import cv2
import numpy as np

from cloudrec.errors import ConfigError, ImageDecodeError
from cloudrec.image.decode import check_pixels, decode_image
from cloudrec.image.jpeg_scale import decode_jpeg
from cloudrec.pipeline.resize_crop import fused_resize_crop, inter_method, resize_then_crop

__all__ = ["DefaultAugmenter", "AugRng", "inter_method", "PCA_EIGVAL", "PCA_EIGVEC"]

PCA_EIGVAL = np.array([55.46, 4.794, 1.148], dtype=np.float64)
PCA_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                       [-0.5808, -0.0045, -0.8140],
                       [-0.5836, -0.6948, 0.4203]], dtype=np.float64)

class AugRng(random.Random):
    """A per-image generator with the numpy ``Generator`` methods the augmenter uses.

    Python's Mersenne Twister seeded from an int is stable across versions and
    costs a few microseconds to create, a quarter of a numpy Generator, which
    matters at one generator per image.
    """

    def integers(self, low: int, high: int) -> int:
        """Uniform int in [low, high)."""
        return self.randrange(low, high)

    def permutation(self, n: int) -> np.ndarray:
        order = list(range(n))
        self.shuffle(order)
        return np.asarray(order)

    def normal(self, loc: float, scale: float, size: int) -> np.ndarray:
        return np.array([self.gauss(loc, scale) for _ in range(size)])


class DefaultAugmenter:
    """Applies ``aug_default`` with the parameters of a DefaultImageAugmentParam.

    ``process(img, rng)`` takes an HxW (gray) or HxWxC uint8 BGR(A) image and
    returns an image of exactly (H, W) = data_shape[1:]; ``rng`` may be None
    when :attr:`needs_rng` is False.
    """

    def __init__(self, aug, data_shape: Tuple[int, int, int], fast: bool = False) -> None:
        self.p = aug
        self.fast = bool(fast)
        self.C, self.H, self.W = (int(x) for x in data_shape)
        lo, hi = aug.aspect_bounds()
        self.ar_lo, self.ar_hi = lo, hi
        self.rotate_list = tuple(aug.rotate_list)
        p = aug
        self.do_affine = (p.max_rotate_angle > 0 or p.max_shear_ratio > 0 or p.rotate > 0
                          or bool(self.rotate_list) or p.max_random_scale != 1
                          or p.min_random_scale != 1
                          or (not p.random_resized_crop and (lo != 1 or hi != 1))
                          or p.max_img_size != 1e10 or p.min_img_size != 0)
        if self.do_affine and p.inter_method == 0:
            raise ConfigError("inter_method 0 (nearest) is not allowed with the affine step "
                              "(rotation, shear, random scale/aspect, img size limits); "
                              "MXNet rejects it too: use 1-4, 9 or 10")
        self.do_rrc = bool(p.random_resized_crop) and (
            p.max_random_area != 1 or p.min_random_area != 1 or lo != 1 or hi != 1)
        self.do_cropsize = (not p.random_resized_crop) and (
            p.max_crop_size != -1 or p.min_crop_size != -1)
        self.do_color = p.brightness > 0 or p.contrast > 0 or p.saturation > 0
        self.do_hls = p.random_h != 0 or p.random_s != 0 or p.random_l != 0
        self.do_pca = p.pca_noise > 0
        self.needs_rng = bool(
            p.rand_crop or self.do_rrc or p.inter_method == 10 or self.do_color or self.do_hls
            or self.do_pca or p.max_rotate_angle > 0 or p.max_shear_ratio > 0
            or bool(self.rotate_list) or p.max_random_scale != p.min_random_scale
            or (not p.random_resized_crop and lo != hi))
        self.border = (p.fill_value,) * 4
        # fast mode: resize (if any) then one crop with no affine/pad step in between -> the
        # crop window is known before resizing, so only the source region it needs is resized
        self.fused = self.fast and not self.do_affine and p.pad <= 0 and not self.do_cropsize \
            and (p.resize > 0 or self.do_rrc)
        # resize then the default crop alone: only the top-left part of the image up to the
        # crop window's far edge is resized (same pixels; see _resize_then_crop)
        self.roi_resize = (p.resize > 0 and not self.do_affine and p.pad <= 0
                           and not self.do_rrc and not self.do_cropsize and p.inter_method != 10)
        #: shorter side a scaled JPEG decode must keep (0: decode at full size)
        self.min_side = int(p.resize) if self.fast and p.resize > 0 else 0

    # -- steps -------------------------------------------------------------------------------
    def _resize(self, img: np.ndarray, rng) -> np.ndarray:
        r = self.p.resize
        rows, cols = img.shape[:2]
        if rows > cols:
            nh, nw = r * rows // cols, r
        else:
            nh, nw = r, r * cols // rows
        interp = inter_method(self.p.inter_method, cols, rows, nw, nh, rng)
        return cv2.resize(img, (nw, nh), interpolation=interp)

    def _resize_then_crop(self, img: np.ndarray, rng) -> Optional[np.ndarray]:
        return resize_then_crop(self, img, rng)

    def _affine(self, img: np.ndarray, rng) -> np.ndarray:
        p = self.p
        f32 = np.float32
        u = (lambda: f32(rng.random())) if rng is not None else (lambda: f32(0.5))
        s = u() * f32(p.max_shear_ratio) * f32(2) - f32(p.max_shear_ratio)
        if p.max_rotate_angle > 0 and rng is not None:
            angle = int(rng.integers(-p.max_rotate_angle, p.max_rotate_angle + 1))
        else:
            angle = 0
        if p.rotate > 0:
            angle = p.rotate
        if self.rotate_list:
            angle = self.rotate_list[int(rng.integers(0, len(self.rotate_list)))]
        a = f32(math.cos(angle / 180.0 * math.pi))
        b = f32(math.sin(angle / 180.0 * math.pi))
        scale, ratio = f32(1), f32(1)
        if not p.random_resized_crop:
            scale = u() * f32(p.max_random_scale - p.min_random_scale) + f32(p.min_random_scale)
            ratio = u() * f32(self.ar_hi - self.ar_lo) + f32(self.ar_lo)
        hs = f32(2) * scale / (f32(1) + ratio)
        ws = ratio * hs
        rows, cols = img.shape[:2]
        new_w = max(p.min_img_size, min(p.max_img_size, float(scale * f32(cols))))
        new_h = max(p.min_img_size, min(p.max_img_size, float(scale * f32(rows))))
        m = np.zeros((2, 3), np.float32)
        m[0, 0] = hs * a - s * b * ws
        m[1, 0] = -b * ws
        m[0, 1] = hs * b + s * a * ws
        m[1, 1] = a * ws
        ocw = m[0, 0] * f32(cols) + m[0, 1] * f32(rows)
        och = m[1, 0] * f32(cols) + m[1, 1] * f32(rows)
        m[0, 2] = (f32(new_w) - ocw) / f32(2)
        m[1, 2] = (f32(new_h) - och) / f32(2)
        iw, ih = max(int(new_w), 1), max(int(new_h), 1)
        interp = inter_method(self.p.inter_method, cols, rows, iw, ih, rng)
        return cv2.warpAffine(img, m, (iw, ih), flags=interp,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=self.border)

    def _random_resized_crop(self, img: np.ndarray, rng) -> Optional[np.ndarray]:
        win = self._rrc_window(img.shape[0], img.shape[1], rng)
        if win is None:
            return None
        y, x, h, w = win
        interp = inter_method(self.p.inter_method, w, h, self.W, self.H, rng)
        return cv2.resize(img[y:y + h, x:x + w], (self.W, self.H), interpolation=interp)

    def _crop_size(self, img: np.ndarray, rng, where: str) -> np.ndarray:
        p = self.p
        rows, cols = img.shape[:2]
        if rows < p.max_crop_size or cols < p.max_crop_size:
            raise ImageDecodeError(f"input image size {cols}x{rows} smaller than "
                                   f"max_crop_size {p.max_crop_size}{where}")
        side = int(rng.integers(p.min_crop_size, p.max_crop_size + 1)) \
            if (rng is not None and p.max_crop_size != p.min_crop_size) else p.max_crop_size
        y, x = rows - side, cols - side
        if p.rand_crop:
            y, x = int(rng.integers(0, y + 1)), int(rng.integers(0, x + 1))
        else:
            y, x = y // 2, x // 2
        interp = inter_method(p.inter_method, side, side, self.W, self.H, rng)
        return cv2.resize(img[y:y + side, x:x + side], (self.W, self.H), interpolation=interp)

    def _center_crop(self, img: np.ndarray, rng, where: str) -> np.ndarray:
        H, W, p = self.H, self.W, self.p
        rows, cols = img.shape[:2]
        if rows < H:  # upsize to the crop height, MXNet's float32 arithmetic
            ncols = int(np.float32(H) / np.float32(rows) * np.float32(cols))
            interp = inter_method(p.inter_method, cols, rows, ncols, H, rng)
            img = cv2.resize(img, (ncols, H), interpolation=interp)
            rows, cols = img.shape[:2]
        if cols < W:
            nrows = int(np.float32(W) / np.float32(cols) * np.float32(rows))
            interp = inter_method(p.inter_method, cols, rows, W, nrows, rng)
            img = cv2.resize(img, (W, nrows), interpolation=interp)
            rows, cols = img.shape[:2]
        if rows < H or cols < W:
            raise ImageDecodeError(f"input image size {cols}x{rows} smaller than input shape "
                                   f"{W}x{H}{where}")
        y, x = rows - H, cols - W
        if p.rand_crop and rng is not None:
            y, x = int(rng.integers(0, y + 1)), int(rng.integers(0, x + 1))
        else:
            y, x = y // 2, x // 2
        return img[y:y + H, x:x + W]

    def _color(self, img: np.ndarray, rng) -> np.ndarray:
        p = self.p
        ab = 1.0 + rng.uniform(-p.brightness, p.brightness)
        ac = 1.0 + rng.uniform(-p.contrast, p.contrast)
        asat = 1.0 + rng.uniform(-p.saturation, p.saturation)
        order = rng.permutation(3)
        color = img.ndim == 3 and img.shape[2] >= 3
        for op in order.tolist():
            if op == 0 and p.brightness > 0:
                img = _saturate(img.astype(np.float32) * np.float32(ab))
            elif op == 1 and p.contrast > 0:
                gray = cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2GRAY) if color else img
                m = float(gray.mean())
                img = _saturate(img.astype(np.float32) * np.float32(ac) + np.float32((1 - ac) * m))
            elif op == 2 and p.saturation > 0 and color:
                gray = cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2GRAY).astype(np.float32)
                out = img.astype(np.float32)
                out[..., :3] = out[..., :3] * np.float32(asat) + \
                    gray[..., None] * np.float32(1 - asat)
                img = _saturate(out)
        return img

    def _hls(self, img: np.ndarray, rng) -> np.ndarray:
        p = self.p
        if img.ndim != 3 or img.shape[2] < 3:
            return img

        def off(v: int) -> int:
            r = (rng.random() + 4 * rng.random()) / 5
            return int(r * v * 2 - v)  # C++ int conversion truncates toward zero
        dh, ds, dl = off(p.random_h), off(p.random_s), off(p.random_l)
        hls = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2HLS).astype(np.int16)
        hls += np.array([dh, dl, ds], np.int16)
        np.clip(hls, 0, np.array([180, 255, 255], np.int16), out=hls)
        out = cv2.cvtColor(hls.astype(np.uint8), cv2.COLOR_HLS2BGR)
        if img.shape[2] == 4:
            out = np.concatenate([out, img[..., 3:]], axis=2)
        return out

    def _pca(self, img: np.ndarray, rng) -> np.ndarray:
        alpha = rng.normal(0.0, self.p.pca_noise, 3)
        rgb = PCA_EIGVEC @ (alpha * PCA_EIGVAL)
        out = img.astype(np.float32)
        if img.ndim == 3 and img.shape[2] >= 3:
            out[..., 0] += np.float32(rgb[2])  # B
            out[..., 1] += np.float32(rgb[1])  # G
            out[..., 2] += np.float32(rgb[0])  # R
        else:
            out += np.float32(rgb.mean())
        return _saturate(out)

    # -- all -------------------------------------------------------------------------------
    def decode_process(self, buf, rng=None, where: str = "", url: Optional[str] = None,
                       key: object = None, max_pixels: Optional[int] = None) -> np.ndarray:
        """``decode_image`` then :meth:`process`; in fast mode the decode is scaled (libjpeg's
        paying factors, shorter side kept >= ``resize``) and the crop-aware resize works in
        the encoded image's geometry, so crop offsets and sizes are those of exact mode."""
        if not self.fast:
            return self.process(decode_image(buf, self.C, max_pixels=max_pixels, url=url,
                                             key=key, where=where), rng, where)
        arr = np.frombuffer(buf, np.uint8)
        size = check_pixels(arr, max_pixels, url, key, where) if arr.size else None
        img = None
        if arr.size > 2 and arr[0] == 0xFF and arr[1] == 0xD8:  # fast IDCT and upsampling
            img = decode_jpeg(arr, self.C, size, self.min_side, fast=True)
        if img is None:  # not a JPEG, or one OpenCV must decode: the one decode of cloudrec
            img = decode_image(arr, self.C, min_side=self.min_side, max_pixels=max_pixels,
                               url=url, key=key, where=where)
        return self.process(img, rng, where, src_size=size if self.fused else None)

    def _fused(self, img: np.ndarray, rng, src_size: Optional[Tuple[int, int]]
               ) -> Optional[np.ndarray]:
        return fused_resize_crop(self, img, rng, src_size)

    def _rrc_window(self, rows: int, cols: int, rng) -> Optional[Tuple[int, int, int, int]]:
        """The random-resized-crop window (y, x, h, w), with exact mode's draws."""
        p = self.p
        area = rows * cols
        for _ in range(10):
            frac = rng.uniform(p.min_random_area, p.max_random_area)
            ratio = rng.uniform(self.ar_lo, self.ar_hi)
            h = int(round(math.sqrt(area * frac / ratio)))
            w = int(round(math.sqrt(area * frac * ratio)))
            if rng.random() < 0.5:
                h, w = w, h
            if 0 < h <= rows and 0 < w <= cols:
                return int(rng.integers(0, rows - h + 1)), int(rng.integers(0, cols - w + 1)), h, w
        return None

    def process(self, img: np.ndarray, rng: Optional[np.random.Generator] = None,
                where: str = "", src_size: Optional[Tuple[int, int]] = None) -> np.ndarray:
        """Run the whole ``aug_default`` chain; ``where`` names the record in errors.

        ``src_size``: the encoded image's (w, h) when ``img`` was decoded at a reduced
        scale (fast mode; see :meth:`decode_process`).
        """
        p = self.p
        if img.shape[0] == 0 or img.shape[1] == 0:
            raise ImageDecodeError(f"empty image{where}")
        if self.fused:
            out = self._fused(img, rng, src_size)
            if out is not None:
                return self._pixels(out, rng)
        if self.roi_resize:
            out = self._resize_then_crop(img, rng)
            if out is not None:
                return self._pixels(out, rng)
        if p.resize != -1:
            img = self._resize(img, rng)
        if self.do_affine:
            img = self._affine(img, rng)
        if p.pad > 0:
            img = cv2.copyMakeBorder(img, p.pad, p.pad, p.pad, p.pad, cv2.BORDER_CONSTANT,
                                     value=self.border)
        out = None
        if self.do_rrc:
            out = self._random_resized_crop(img, rng)
        elif self.do_cropsize:
            out = self._crop_size(img, rng, where)
        if out is None:
            out = self._center_crop(img, rng, where)
        return self._pixels(out, rng)

    def _pixels(self, out: np.ndarray, rng) -> np.ndarray:
        """The pixel-value steps after the crop (colour, HLS, PCA lighting)."""
        if out.ndim == 2 and self.C != 1:
            out = out[..., None]
        if self.do_color:
            out = self._color(out, rng)
        if self.do_hls:
            out = self._hls(out, rng)
        if self.do_pca:
            out = self._pca(out, rng)
        return out


def _saturate(a: np.ndarray) -> np.ndarray:
    """Round to nearest and clamp to uint8, as OpenCV's saturate_cast does."""
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)
