"""Gluon's ``vision.transforms`` on numpy: the blocks image-classification loaders compose.

Geometry and interpolation follow MXNet 1.9 (``Resize``/``CenterCrop``/
``RandomResizedCrop`` use ``mx.image``'s resize and crop rules, bilinear by
default; sizes are ``(width, height)``).  Inputs are HWC (or NHWC for
``Resize``/``ToTensor``/``Cast``), as in MXNet.  Randomness comes from
:mod:`cloudrec.gluon.rng` (``mx.random.seed``; one seed per DataLoader batch).
The colour jitters reuse ``mx.image``'s augmenters (same distributions as
MXNet's C++ ``random_*`` operators, not the same draws).
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Sequence, Tuple, Union

import numpy as np

from cloudrec.gluon import rng
from cloudrec.image import augmenters as _augs
from cloudrec.image import ops as _ops
from cloudrec.mxnet_base import NDArray

__all__ = ["Compose", "Cast", "ToTensor", "Normalize", "Resize", "CenterCrop",
           "RandomResizedCrop", "RandomFlipLeftRight", "RandomFlipTopBottom",
           "RandomBrightness", "RandomContrast", "RandomSaturation", "RandomHue",
           "RandomColorJitter", "RandomLighting", "Block", "HybridBlock"]

Size = Union[int, Tuple[int, int]]


def _nd(x: np.ndarray) -> NDArray:
    return np.asarray(x).view(NDArray)


def _plain(x: Any) -> np.ndarray:
    return x.view(np.ndarray) if isinstance(x, NDArray) else np.asarray(x)


class Block:
    """What Gluon's blocks offer a data pipeline: call it, ``hybridize()`` is a no-op."""

    def __call__(self, x: Any, *args: Any) -> Any:
        return self.forward(x, *args)

    def forward(self, x: Any, *args: Any) -> Any:
        raise NotImplementedError

    def hybridize(self, *args: Any, **kwargs: Any) -> None:
        """Accepted for compatibility: there is nothing to compile."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


HybridBlock = Block


class Compose(Block):
    """Apply ``transforms`` in order."""

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        self._children = list(transforms)

    def forward(self, x: Any, *args: Any) -> Any:
        for t in self._children:
            x = t(x)
        return x

    def __len__(self) -> int:
        return len(self._children)

    def __getitem__(self, i: int) -> Callable[[Any], Any]:
        return self._children[i]


class Cast(Block):
    """Cast to ``dtype`` (default float32)."""

    def __init__(self, dtype: Any = "float32") -> None:
        self._dtype = np.dtype(dtype)

    def forward(self, x: Any) -> NDArray:
        return _nd(_plain(x).astype(self._dtype))


class ToTensor(Block):
    """HWC (NHWC) in [0, 255] -> CHW (NCHW) float32 in [0, 1]."""

    def forward(self, x: Any) -> NDArray:
        a = _plain(x)
        if a.ndim not in (3, 4):
            raise ValueError(f"ToTensor expects (H, W, C) or (N, H, W, C), got shape {a.shape}")
        axes = (2, 0, 1) if a.ndim == 3 else (0, 3, 1, 2)
        out = np.ascontiguousarray(a.transpose(axes), dtype=np.float32)
        out /= np.float32(255.0)
        return _nd(out)


class Normalize(Block):
    """``(x - mean) / std`` per channel of a CHW (NCHW) float tensor; scalars apply to all."""

    def __init__(self, mean: Any = 0.0, std: Any = 1.0) -> None:
        self._mean, self._std = mean, std

    def forward(self, x: Any) -> NDArray:
        a = _plain(x)
        if a.ndim not in (3, 4):
            raise ValueError(f"Normalize expects (C, H, W) or (N, C, H, W), got shape {a.shape}")
        c = a.shape[-3]
        shape = (c, 1, 1)
        mean = np.broadcast_to(np.asarray(self._mean, np.float32).reshape(-1), (c,)).reshape(shape)
        std = np.broadcast_to(np.asarray(self._std, np.float32).reshape(-1), (c,)).reshape(shape)
        return _nd((a.astype(np.float32) - mean) / std)


def _wh(size: Size) -> Tuple[int, int]:
    if isinstance(size, numbers.Number):
        return int(size), int(size)
    w, h = size
    return int(w), int(h)


class Resize(Block):
    """Resize to ``size`` = (w, h); an int is both sides, or with ``keep_ratio`` the shorter
    side (the longer one ``long * size // short``)."""

    def __init__(self, size: Size, keep_ratio: bool = False, interpolation: int = 1) -> None:
        self._size, self._keep, self._interp = size, keep_ratio, interpolation

    def _target(self, h: int, w: int) -> Tuple[int, int]:
        if isinstance(self._size, numbers.Number) and self._keep:
            s = int(self._size)
            return (s, h * s // w) if h > w else (w * s // h, s)
        return _wh(self._size)

    def forward(self, x: Any) -> NDArray:
        a = _plain(x)
        if a.ndim == 4:
            return _nd(np.stack([_plain(self.forward(img)) for img in a]))
        nw, nh = self._target(a.shape[0], a.shape[1])
        return _nd(_ops.imresize(a, nw, nh, self._interp))


class CenterCrop(Block):
    """The centre ``size`` window (scaled down to fit, then resized to ``size``)."""

    def __init__(self, size: Size, interpolation: int = 1) -> None:
        self._size, self._interp = _wh(size), interpolation

    def forward(self, x: Any) -> NDArray:
        return _nd(_ops.center_crop(_plain(x), self._size, self._interp)[0])


class RandomResizedCrop(Block):
    """Inception crop: a random ``scale`` fraction of the area and log-uniform aspect
    ``ratio``, resized to ``size`` (centre crop after 10 failed tries)."""

    def __init__(self, size: Size, scale: Tuple[float, float] = (0.08, 1.0),
                 ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
                 interpolation: int = 1) -> None:
        self._args = (_wh(size), tuple(scale), tuple(ratio), interpolation)

    def forward(self, x: Any) -> NDArray:
        size, scale, ratio, interp = self._args
        return _nd(_ops.random_size_crop(_plain(x), size, scale, ratio, interp,
                                         rng=rng.get())[0])


class RandomFlipLeftRight(Block):
    """Mirror the width axis with probability 0.5."""

    _axis = -2

    def forward(self, x: Any) -> NDArray:
        a = _plain(x)
        if rng.get().random() < 0.5:
            return _nd(np.ascontiguousarray(np.flip(a, axis=self._axis)))
        return _nd(a)


class RandomFlipTopBottom(RandomFlipLeftRight):
    """Flip the height axis with probability 0.5."""

    _axis = -3


class _AugBlock(Block):
    """An ``mx.image`` colour augmenter on a copy, cast back to the input's dtype."""

    aug: Any

    def forward(self, x: Any) -> NDArray:
        a = _plain(x)
        out = self.aug(np.array(a, dtype=np.float32), rng.get())
        if not np.issubdtype(a.dtype, np.floating):
            info = np.iinfo(a.dtype)
            out = np.clip(np.rint(out), info.min, info.max)
        return _nd(out.astype(a.dtype, copy=False))


class RandomBrightness(_AugBlock):
    """Scale by a factor from ``[max(0, 1 - b), 1 + b]``."""

    def __init__(self, brightness: float) -> None:
        self.aug = _augs.BrightnessJitterAug(brightness)


class RandomContrast(_AugBlock):
    """Blend with the mean gray by a factor from ``[max(0, 1 - c), 1 + c]``."""

    def __init__(self, contrast: float) -> None:
        self.aug = _augs.ContrastJitterAug(contrast)


class RandomSaturation(_AugBlock):
    """Blend with the per-pixel gray by a factor from ``[max(0, 1 - s), 1 + s]``."""

    def __init__(self, saturation: float) -> None:
        self.aug = _augs.SaturationJitterAug(saturation)


class RandomHue(_AugBlock):
    """Rotate the hue by up to ``hue`` (times pi radians)."""

    def __init__(self, hue: float) -> None:
        self.aug = _augs.HueJitterAug(hue)


class RandomColorJitter(_AugBlock):
    """Brightness, contrast and saturation in random order, then hue (each when > 0)."""

    def __init__(self, brightness: float = 0, contrast: float = 0, saturation: float = 0,
                 hue: float = 0) -> None:
        steps = []
        if brightness or contrast or saturation:
            steps.append(_augs.ColorJitterAug(brightness, contrast, saturation))
        if hue:
            steps.append(_augs.HueJitterAug(hue))
        self.aug = _augs.SequentialAug(steps)


class RandomLighting(_AugBlock):
    """AlexNet PCA lighting noise with standard deviation ``alpha``."""

    def __init__(self, alpha: float) -> None:
        from cloudrec.image.create import PCA_EIGVAL, PCA_EIGVEC
        self.aug = _augs.LightingAug(alpha, PCA_EIGVAL, PCA_EIGVEC)
