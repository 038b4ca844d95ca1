"""CreateAugmenter's classification chain run in one go, straight into a CHW float32 slot.

``[ResizeAug] -> RandomCropAug|CenterCropAug -> [HorizontalFlipAug] -> CastAug('float32')
-> [ColorNormalizeAug]`` (what ``CreateAugmenter(resize, rand_crop, rand_mirror, mean,
std)`` builds) costs, run step by step, a resized copy, a cropped copy, a flipped copy, a
float32 image, a normalised float32 image, a CHW transpose and the copy into the batch.
:class:`FusedChain` keeps the geometry in uint8 (the crop is a view; the resize covers
only the crop window with ``INTER_CUBIC_MXNET``) and writes ``(x - mean) / std`` into
the caller's ``out`` (a batch slot) in CHW order: one table lookup per plane (exact
mode) or one OpenCV blob call (fast mode), no float32 HWC image, no transpose, no copy
into the batch.  Same random draws, in the same
order, and the same bits as :func:`cloudrec.image.augment_chain.apply_augmenters`
(tests/test_fused_chain.py);
``ResizeAug(fast=True)`` keeps its meaning (the crop's source region resized alone).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import cv2
import numpy as np

from cloudrec.image import ops
from cloudrec.image.augment_chain import region_resize
from cloudrec.image.augmenters import (CastAug, CenterCropAug, ColorNormalizeAug,
                                       HorizontalFlipAug, RandomCropAug, ResizeAug)

__all__ = ["FusedChain", "window_resize"]

_F32 = np.float32


def window_resize(src: np.ndarray, nw: int, nh: int, x0: int, y0: int, cw: int, ch: int,
                  interp: int) -> np.ndarray:
    """The pixels ``imresize(src, nw, nh, interp)[y0:y0+ch, x0:x0+cw]`` (bit-identical).

    ``INTER_CUBIC_MXNET`` computes the window alone; OpenCV's interpolations resize the
    whole image (cutting the source after the last row/column the window reads changes
    a few pixels by a level in OpenCV 5: cubic and Lanczos at any scale, linear and area
    at scales within ~1 % of 1).  The result may be a view of a larger array.

    Why bicubic stays whole (measured on the bench photos, opencv-python 5.0): the wheel's
    INTER_CUBIC runs Intel IPP, whose result depends on the source and destination sizes
    it is given, so a top-left ROI resized with the same fx/fy differs by a level at a
    pixel or two in 59 of 300 crop windows; with ``cv2.ipp.setUseIPP(False)`` the ROI is
    bit-identical (300 of 300), but IPP-off pixels differ from IPP-on ones at ~45 % of
    pixels, so neither is the exact chain's.  The full resize costs ~0.17-0.28 ms of an
    exact ImageIter image's ~0.95 ms (decode ~0.64 ms), which caps exact ImageIter near
    0.7x the full-size decode loop.
    """
    if interp == ops.INTER_CUBIC_MXNET:
        from cloudrec.image.cubic import resize_cubic_mxnet
        return resize_cubic_mxnet(src, nw, nh, window=(x0, y0, cw, ch))
    full = ops.imresize(src, nw, nh, interp=interp)
    return full[y0:y0 + ch, x0:x0 + cw]


def _channel_values(vec: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """A (3, 1, 1) float32 array (CHW broadcast) from a ColorNormalizeAug mean/std of 1 or
    3 values, else None."""
    v = np.asarray(vec, dtype=_F32).reshape(-1)
    if v.size == 1 or (v.size == 3 and np.asarray(vec).ndim == 1):
        return np.ascontiguousarray(np.broadcast_to(v, (3,)).reshape(3, 1, 1))
    return None


def _tables(mean: Optional[np.ndarray], std: Optional[np.ndarray]) -> list:
    """Per channel, the (1, 256) float32 table of ``(float32(v) - mean) / std`` for every
    uint8 ``v``, computed with CastAug + ColorNormalizeAug's float32 ops (same bits)."""
    out = []
    for c in range(3):
        t = np.arange(256, dtype=_F32)
        if mean is not None:
            t = np.subtract(t, mean[c].reshape(()), dtype=_F32)
        if std is not None:
            t = np.divide(t, std[c].reshape(()), dtype=_F32)
        out.append(np.ascontiguousarray(t, _F32).reshape(1, 256))
    return out


def _blob_params(mean: Optional[np.ndarray], std: Optional[np.ndarray]) -> Optional[Any]:
    """OpenCV's blob parameters for ``(x - mean) * (1 / std)`` per channel, RGB kept (None
    when this OpenCV has no ``blobFromImageWithParams``)."""
    dnn = getattr(cv2, "dnn", None)
    if dnn is None or not hasattr(dnn, "blobFromImageWithParams"):
        return None
    m = np.zeros(3, _F32) if mean is None else mean.reshape(3)
    k = np.ones(3, _F32) if std is None else np.float32(1) / std.reshape(3)
    p = dnn.Image2BlobParams()
    p.scalefactor = tuple(float(x) for x in k) + (0.0,)
    p.mean = tuple(float(x) for x in m) + (0.0,)
    p.swapRB = False
    p.ddepth = cv2.CV_32F
    return p


class FusedChain:
    """The recognised chain (see the module docstring); :meth:`match` builds it or says no."""

    __slots__ = ("resize", "crop", "flip", "mean", "std", "_blob", "_luts")

    def __init__(self, resize: Optional[ResizeAug], crop: Any, flip: Optional[HorizontalFlipAug],
                 mean: Optional[np.ndarray], std: Optional[np.ndarray]) -> None:
        self.resize, self.crop, self.flip, self.mean, self.std = resize, crop, flip, mean, std
        self._blob = _blob_params(mean, std) if resize is not None and resize.fast else None
        self._luts = _tables(mean, std)

    @classmethod
    def match(cls, auglist: Sequence[Any]) -> Optional["FusedChain"]:
        """A FusedChain when ``auglist`` is exactly the chain above (these classes, not
        subclasses; no random interpolation), else None."""
        augs, i = list(auglist), 0

        def take(*types):
            nonlocal i
            if i < len(augs) and type(augs[i]) in types:
                i += 1
                return augs[i - 1]
            return None

        resize, crop, flip = take(ResizeAug), take(RandomCropAug, CenterCropAug), None
        if crop is None:
            return None
        flip = take(HorizontalFlipAug)
        cast = take(CastAug)
        if cast is None or cast.typ not in ("float32", np.float32):
            return None
        norm = take(ColorNormalizeAug)
        if i != len(augs) or (resize is not None and resize.interp == 10):
            return None
        mean = std = None
        if norm is not None:
            mean = None if norm.mean is None else _channel_values(norm.mean)
            std = None if norm.std is None else _channel_values(norm.std)
            if (norm.mean is not None and mean is None) or (norm.std is not None and std is None):
                return None
        size = crop.size
        if len(size) != 2 or min(int(size[0]), int(size[1])) < 1:
            return None
        return cls(resize, crop, flip, mean, std)

    @property
    def out_shape(self) -> tuple:
        """The (3, h, w) CHW shape this chain writes."""
        return (3, int(self.crop.size[1]), int(self.crop.size[0]))

    def run(self, src: np.ndarray, rng: np.random.Generator, out: np.ndarray) -> bool:
        """Augment the HWC uint8 RGB ``src`` into ``out`` (CHW float32, ``out_shape``).

        False, before any random draw, when the fused path does not apply (not 3-channel
        uint8, or the crop does not fit and MXNet would scale it down): run the augmenters
        one by one instead.
        """
        if src.dtype != np.uint8 or src.ndim != 3 or src.shape[2] != 3:
            return False
        h, w = src.shape[0], src.shape[1]
        cw, ch = int(self.crop.size[0]), int(self.crop.size[1])
        if h == 0 or w == 0 or out.shape != (3, ch, cw):
            return False
        rs = self.resize
        if rs is not None:
            size = rs.size
            nh, nw = (size * h // w, size) if h > w else (size, size * w // h)
        else:
            nh, nw = h, w
        if cw > nw or ch > nh:
            return False
        if type(self.crop) is RandomCropAug:
            x0 = int(rng.integers(0, nw - cw + 1))
            y0 = int(rng.integers(0, nh - ch + 1))
        else:
            x0, y0 = int((nw - cw) / 2), int((nh - ch) / 2)
        if rs is None:
            win = src[y0:y0 + ch, x0:x0 + cw]
        else:
            interp = ops.get_interp_method(rs.interp, (h, w, nh, nw))
            if rs.fast and interp != ops.INTER_CUBIC_MXNET:
                win = region_resize(src, nw, nh, x0, y0, cw, ch, interp)
            else:
                win = window_resize(src, nw, nh, x0, y0, cw, ch, interp)
        if self.flip is not None and rng.random() < self.flip.p:
            win = cv2.flip(win, 1)
        self._normalize_into(win, out)
        return True

    def _normalize_into(self, win: np.ndarray, out: np.ndarray) -> None:
        """``(float32(win) - mean) / std`` of each channel into ``out[c]`` (same float32
        operations as CastAug + ColorNormalizeAug, so the same bits): each plane looked
        up in its 256-entry table made with those very operations (:func:`_tables`;
        ~20 % less time than a cast, a subtract and a divide over the planes).

        Fast mode (``ResizeAug(fast=True)``) multiplies by ``1 / std`` instead, in one
        native call (OpenCV's blob conversion: cast, subtract, scale and HWC -> CHW
        straight into the slot, ~40 % less time; within 1 float32 ulp of the division).
        A strided ``out`` (not a batch slot) takes numpy's in-place passes instead.
        """
        fast = self._blob is not None
        if out.flags.c_contiguous:
            if fast:
                dst = out[None]
                got = cv2.dnn.blobFromImageWithParams(win, dst, self._blob)
                if got is not dst:  # OpenCV allocated instead of writing in place
                    out[...] = got[0]
                return
            planes = cv2.split(win)
            for c in range(3):  # a uint8 pixel has 256 values: one table lookup per plane
                dst = out[c]
                got = cv2.LUT(planes[c], self._luts[c], dst=dst)
                if got is not dst:  # OpenCV allocated instead of writing in place
                    dst[...] = got
            return
        planes = cv2.split(win)
        for c in range(3):
            np.copyto(out[c], planes[c], casting="unsafe")  # uint8 -> float32: exact
        if self.mean is not None:
            np.subtract(out, self.mean, out=out)
        if self.std is not None:
            if fast:
                np.multiply(out, np.float32(1) / self.std, out=out)
            else:
                np.divide(out, self.std, out=out)
