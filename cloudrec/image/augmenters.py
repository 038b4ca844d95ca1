"""MXNet's image augmenters (``mx.image.*Aug``) on numpy HWC arrays.

Names, constructor arguments, ``dumps()`` and arithmetic follow MXNet 1.9.1
(spec §3.2): colour augmenters work on float32 RGB (after ``CastAug``), with
scalars cast to float32 as MXNet's scalar ops do.  Randomness: every call
draws from ``rng`` if given, else from the augmenter's own Generator (set by
``seed()``); nothing touches global random state, and no augmenter mutates
itself while running, so one pipeline is safe to share between threads when
each call gets its own ``rng``.
"""
from __future__ import annotations

import json
from typing import Any, List, Optional, Sequence

import cv2
import numpy as np

from cloudrec.image import ops

__all__ = ["apply_augmenters", "decode_min_side", "Augmenter", "SequentialAug", "RandomOrderAug", "ResizeAug", "ForceResizeAug",
           "RandomCropAug", "RandomSizedCropAug", "CenterCropAug", "BrightnessJitterAug",
           "ContrastJitterAug", "SaturationJitterAug", "HueJitterAug", "ColorJitterAug",
           "LightingAug", "ColorNormalizeAug", "RandomGrayAug", "HorizontalFlipAug", "CastAug"]

_F32 = np.float32
_GRAY_COEF = np.array([0.299, 0.587, 0.114], dtype=_F32)


class AugmenterBase:
    """What every augmenter family (image, detection, segmentation) shares: constructor
    kwargs kept JSON-ready for ``dumps()``, and a private Generator set by ``seed()``."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = {}
        for k, v in kwargs.items():
            if hasattr(v, "asnumpy"):
                v = v.asnumpy()
            if isinstance(v, np.ndarray):
                v = v.tolist()
            self._kwargs[k] = v
        self._rng: Optional[np.random.Generator] = None

    def dumps(self) -> Any:
        """JSON ``[class name lower-cased, kwargs]``, as MXNet."""
        return json.dumps([self.__class__.__name__.lower(), self._kwargs])

    def seed(self, seed: Any) -> "AugmenterBase":
        """Give this augmenter (and its children) a Generator seeded with ``seed``."""
        self._rng = np.random.default_rng(seed)
        return self

    def _gen(self, rng: Optional[np.random.Generator]) -> np.random.Generator:
        if rng is not None:
            return rng
        if self._rng is None:
            self._rng = np.random.default_rng()
        return self._rng


class Augmenter(AugmenterBase):
    """Base image augmenter: ``(src, rng) -> src``; kwargs and Generator as AugmenterBase."""

    def __call__(self, src: np.ndarray, rng: Optional[np.random.Generator] = None) -> np.ndarray:
        raise NotImplementedError("Must override implementation.")


class SequentialAug(Augmenter):
    """Apply a list of augmenters in order."""

    def __init__(self, ts: Sequence[Augmenter]) -> None:
        super().__init__()
        self.ts = list(ts)

    def dumps(self):
        return [self.__class__.__name__.lower(), [x.dumps() for x in self.ts]]

    def seed(self, seed: Any) -> "Augmenter":
        ss = np.random.SeedSequence(seed) if not isinstance(seed, np.random.SeedSequence) else seed
        children = ss.spawn(len(self.ts) + 1)
        self._rng = np.random.default_rng(children[0])
        for t, s in zip(self.ts, children[1:]):
            t.seed(s)
        return self

    def _run(self, order, src, rng):
        for i in order:
            src = self.ts[i](src, rng)
        return src

    def __call__(self, src, rng=None):
        return self._run(range(len(self.ts)), src, rng)


class RandomOrderAug(SequentialAug):
    """Apply a list of augmenters in a random order (a fresh permutation per call)."""

    def __call__(self, src, rng=None):
        g = self._gen(rng)
        return self._run(g.permutation(len(self.ts)), src, rng)


class ResizeAug(Augmenter):
    """Resize the shorter side to ``size`` (``resize_short``).

    ``fast`` (cloudrec's, not in ``dumps()``): when :func:`apply_augmenters` finds a crop
    right after this resize, it resizes only the crop's source region with OpenCV (pixels
    within about a level of the two steps).  With ``INTER_CUBIC_MXNET`` the window is
    computed bit-exactly whatever ``fast`` says.
    """

    def __init__(self, size: int, interp: int = 2, fast: bool = False) -> None:
        super().__init__(size=size, interp=interp)
        self.size, self.interp, self.fast = size, interp, bool(fast)

    def __call__(self, src, rng=None):
        return ops.resize_short(src, self.size, self.interp, rng=self._maybe(rng))

    def _maybe(self, rng):
        return self._gen(rng) if self.interp == 10 else rng


class ForceResizeAug(ResizeAug):
    """Resize to exactly ``size=(w, h)``, ignoring the aspect ratio."""

    def __call__(self, src, rng=None):
        sizes = (src.shape[0], src.shape[1], self.size[1], self.size[0])
        interp = ops.get_interp_method(self.interp, sizes, self._maybe(rng))
        return ops.imresize(src, self.size[0], self.size[1], interp=interp)


class RandomCropAug(Augmenter):
    """Random crop of ``size=(w, h)`` (scaled down to fit, then resized to ``size``)."""

    def __init__(self, size, interp: int = 2) -> None:
        super().__init__(size=size, interp=interp)
        self.size, self.interp = size, interp

    def __call__(self, src, rng=None):
        return ops.random_crop(src, self.size, self.interp, rng=self._gen(rng))[0]


class RandomSizedCropAug(Augmenter):
    """Inception-style random area/aspect crop resized to ``size`` (``random_size_crop``)."""

    def __init__(self, size, area, ratio, interp: int = 2, **kwargs) -> None:
        super().__init__(size=size, area=area, ratio=ratio, interp=interp)
        if "min_area" in kwargs:
            area = kwargs.pop("min_area")
        if kwargs:
            raise TypeError("unexpected keyword arguments %s" % sorted(kwargs))
        self.size, self.area, self.ratio, self.interp = size, area, ratio, interp

    def __call__(self, src, rng=None):
        return ops.random_size_crop(src, self.size, self.area, self.ratio, self.interp,
                                    rng=self._gen(rng))[0]


class CenterCropAug(Augmenter):
    """Centre crop of ``size=(w, h)`` (scaled down to fit, then resized to ``size``)."""

    def __init__(self, size, interp: int = 2) -> None:
        super().__init__(size=size, interp=interp)
        self.size, self.interp = size, interp

    def __call__(self, src, rng=None):
        g = self._gen(rng) if self.interp == 10 else rng
        return ops.center_crop(src, self.size, self.interp, rng=g)[0]


def _as_float(src: np.ndarray) -> np.ndarray:
    return src if np.issubdtype(src.dtype, np.floating) else src.astype(_F32)


class BrightnessJitterAug(Augmenter):
    """``src *= 1 + U(-brightness, brightness)``."""

    def __init__(self, brightness: float) -> None:
        super().__init__(brightness=brightness)
        self.brightness = brightness

    def __call__(self, src, rng=None):
        alpha = 1.0 + self._gen(rng).uniform(-self.brightness, self.brightness)
        src = _as_float(src)
        src *= src.dtype.type(alpha)
        return src


class ContrastJitterAug(Augmenter):
    """Blend with the image's mean BT.601 gray: ``src*alpha + (1-alpha)*mean_gray``."""

    def __init__(self, contrast: float) -> None:
        super().__init__(contrast=contrast)
        self.contrast = contrast
        self.coef = _GRAY_COEF

    def __call__(self, src, rng=None):
        alpha = 1.0 + self._gen(rng).uniform(-self.contrast, self.contrast)
        src = _as_float(src)
        t = src.dtype.type
        gray = src * ops.per_channel(self.coef, src)
        gray = t(3.0 * (1.0 - alpha) / gray.size) * gray.sum(dtype=src.dtype)
        src *= t(alpha)
        src += gray
        return src


class SaturationJitterAug(Augmenter):
    """Blend each pixel with its own BT.601 gray: ``src*alpha + gray*(1-alpha)``."""

    def __init__(self, saturation: float) -> None:
        super().__init__(saturation=saturation)
        self.saturation = saturation
        self.coef = _GRAY_COEF

    def __call__(self, src, rng=None):
        alpha = 1.0 + self._gen(rng).uniform(-self.saturation, self.saturation)
        src = _as_float(src)
        t = src.dtype.type
        gray = (src * ops.per_channel(self.coef, src)).sum(axis=2, keepdims=True, dtype=src.dtype)
        gray *= t(1.0 - alpha)
        src *= t(alpha)
        src += gray
        return src


class HueJitterAug(Augmenter):
    """Rotate the hue in YIQ space by ``U(-hue, hue) * pi`` radians."""

    tyiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.321], [0.211, -0.523, 0.311]])
    ityiq = np.array([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.107, 1.705]])

    def __init__(self, hue: float) -> None:
        super().__init__(hue=hue)
        self.hue = hue

    def matrix(self, alpha: float) -> np.ndarray:
        """The 3x3 float64 matrix ``t`` with ``out_pixel = pixel @ t`` for a rotation ``alpha``."""
        u, w = np.cos(alpha * np.pi), np.sin(alpha * np.pi)
        bt = np.array([[1.0, 0.0, 0.0], [0.0, u, -w], [0.0, w, u]])
        return np.dot(np.dot(self.ityiq, bt), self.tyiq).T

    def __call__(self, src, rng=None):
        alpha = self._gen(rng).uniform(-self.hue, self.hue)
        src = _as_float(src)
        return np.dot(src, self.matrix(alpha).astype(src.dtype))


class ColorJitterAug(RandomOrderAug):
    """Brightness, contrast and saturation jitter (those > 0) in a random order."""

    def __init__(self, brightness: float, contrast: float, saturation: float) -> None:
        ts: List[Augmenter] = []
        if brightness > 0:
            ts.append(BrightnessJitterAug(brightness))
        if contrast > 0:
            ts.append(ContrastJitterAug(contrast))
        if saturation > 0:
            ts.append(SaturationJitterAug(saturation))
        super().__init__(ts)


class LightingAug(Augmenter):
    """AlexNet PCA lighting noise: add ``eigvec @ (alpha * eigval)``, ``alpha ~ N(0, alphastd)``."""

    def __init__(self, alphastd: float, eigval, eigvec) -> None:
        super().__init__(alphastd=alphastd, eigval=eigval, eigvec=eigvec)
        self.alphastd = alphastd
        self.eigval = np.asarray(eigval, dtype=np.float64)
        self.eigvec = np.asarray(eigvec, dtype=np.float64)

    def __call__(self, src, rng=None):
        alpha = self._gen(rng).normal(0, self.alphastd, size=(3,))
        rgb = np.dot(self.eigvec * alpha, self.eigval)
        src = _as_float(src)
        src += ops.per_channel(rgb, src)
        return src


class ColorNormalizeAug(Augmenter):
    """``(src - mean) / std`` per channel; either may be None."""

    def __init__(self, mean, std) -> None:
        super().__init__(mean=mean, std=std)
        self.mean = None if mean is None else np.asarray(mean, dtype=_F32)
        self.std = None if std is None else np.asarray(std, dtype=_F32)

    def __call__(self, src, rng=None):
        return ops.color_normalize(_as_float(src), self.mean, self.std)


class RandomGrayAug(Augmenter):
    """With probability ``p`` set every channel to ``0.21R + 0.72G + 0.07B``."""

    mat = np.array([[0.21, 0.21, 0.21], [0.72, 0.72, 0.72], [0.07, 0.07, 0.07]], dtype=_F32)

    def __init__(self, p: float) -> None:
        super().__init__(p=p)
        self.p = p

    def __call__(self, src, rng=None):
        if self._gen(rng).random() < self.p:
            src = _as_float(src)
            src = np.dot(src, self.mat.astype(src.dtype))
        return src


class HorizontalFlipAug(Augmenter):
    """With probability ``p`` mirror the image left-right."""

    def __init__(self, p: float) -> None:
        super().__init__(p=p)
        self.p = p

    def __call__(self, src, rng=None):
        if self._gen(rng).random() < self.p:
            flipped = cv2.flip(src, 1) if src.ndim == 3 and src.shape[2] <= 4 else None
            if flipped is None or flipped.shape != src.shape:
                flipped = np.ascontiguousarray(src[:, ::-1])
            src = flipped
        return src


class CastAug(Augmenter):
    """Cast to ``typ`` (float32 by default): always a new array, so later in-place ops are safe."""

    def __init__(self, typ: str = "float32") -> None:
        super().__init__(type=typ)
        self.typ = typ

    def __call__(self, src, rng=None):
        return src.astype(self.typ)


# the fused pipeline steps live in augment_chain.py (importable from here as before)
from cloudrec.image.augment_chain import apply_augmenters, decode_min_side  # noqa: E402,F401
