"""Joint image + mask augmenters for segmentation.

A segmentation augmenter maps ``(image, mask, rng) -> (image, mask)``.  Geometric ones
(resize, crop, scale, flip) draw their parameters once and apply them to both arrays:
the image with the requested interpolation, the mask always nearest-neighbour so class
ids are never blended.  Colour ones are ordinary image Augmenters wrapped by
``SegBorrowAug`` and touch the image only.  Randomness: a numpy Generator, as the
image augmenters.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from cloudrec.image import ops
from cloudrec.image.augmenters import (Augmenter, AugmenterBase, CenterCropAug,
                                       ColorNormalizeAug, HorizontalFlipAug, RandomCropAug,
                                       RandomSizedCropAug, ResizeAug)
from cloudrec.image.create import IMAGENET_MEAN, IMAGENET_STD, cast_and_color_augs

__all__ = ["SegAugmenter", "SegBorrowAug", "SegResizeAug", "SegForceResizeAug",
           "SegRandomCropAug", "SegCenterCropAug", "SegRandomSizedCropAug", "SegRandomScaleAug",
           "SegHorizontalFlipAug", "SegVerticalFlipAug", "CreateSegAugmenter"]

NEAREST = 0
_GEOMETRIC = (ResizeAug, RandomCropAug, RandomSizedCropAug, CenterCropAug, HorizontalFlipAug)


def _mask_resize(mask: np.ndarray, w: int, h: int) -> np.ndarray:
    return ops.imresize(mask, w, h, interp=NEAREST)


class SegAugmenter(AugmenterBase):
    """Base joint augmenter: ``(image, mask, rng) -> (image, mask)``; kwargs kept for
    ``dumps()`` and a private seedable Generator, as AugmenterBase."""

    def __call__(self, image: np.ndarray, mask: np.ndarray,
                 rng: Optional[np.random.Generator] = None) -> Tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError("Must override implementation.")


class SegBorrowAug(SegAugmenter):
    """Apply a colour/cast/normalise Augmenter to the image only; geometric ones are refused."""

    def __init__(self, augmenter: Augmenter) -> None:
        if not isinstance(augmenter, Augmenter):
            raise TypeError("Borrowing from invalid Augmenter")
        if isinstance(augmenter, _GEOMETRIC):
            raise TypeError(f"{type(augmenter).__name__} moves pixels: it would misalign the "
                            "mask; use the Seg* augmenter instead")
        super().__init__(augmenter=augmenter.dumps())
        self.augmenter = augmenter

    def dumps(self):
        return [self.__class__.__name__.lower(), self.augmenter.dumps()]

    def seed(self, seed: Any) -> "SegBorrowAug":
        self.augmenter.seed(seed)
        return self

    def __call__(self, image, mask, rng=None):
        return self.augmenter(image, rng), mask


class SegResizeAug(SegAugmenter):
    """Resize the shorter side to ``size`` (``resize_short``) jointly."""

    def __init__(self, size: int, interp: int = 2) -> None:
        super().__init__(size=size, interp=interp)
        self.size, self.interp = size, interp

    def __call__(self, image, mask, rng=None):
        out = ops.resize_short(image, self.size, self.interp, rng=self._gen(rng))
        return out, _mask_resize(mask, out.shape[1], out.shape[0])


class SegForceResizeAug(SegAugmenter):
    """Resize both to exactly ``size=(w, h)``."""

    def __init__(self, size: Tuple[int, int], interp: int = 2) -> None:
        super().__init__(size=size, interp=interp)
        self.size, self.interp = tuple(size), interp

    def __call__(self, image, mask, rng=None):
        w, h = self.size
        interp = ops.get_interp_method(self.interp, (image.shape[0], image.shape[1], h, w),
                                       self._gen(rng))
        return ops.imresize(image, w, h, interp=interp), _mask_resize(mask, w, h)


def _crop_both(image, mask, box, size, interp, rng):
    x0, y0, w, h = box
    img = ops.fixed_crop(image, x0, y0, w, h, size, interp, rng)
    return img, ops.fixed_crop(mask, x0, y0, w, h, size, NEAREST)


class SegRandomCropAug(SegAugmenter):
    """``random_crop`` of ``size=(w, h)``: the same window for both, then resized to ``size``."""

    def __init__(self, size: Tuple[int, int], interp: int = 2) -> None:
        super().__init__(size=size, interp=interp)
        self.size, self.interp = tuple(size), interp

    def __call__(self, image, mask, rng=None):
        g = self._gen(rng)
        h, w = image.shape[:2]
        nw, nh = ops.scale_down((w, h), self.size)
        x0 = int(g.integers(0, w - nw + 1))
        y0 = int(g.integers(0, h - nh + 1))
        return _crop_both(image, mask, (x0, y0, nw, nh), self.size, self.interp, g)


class SegCenterCropAug(SegAugmenter):
    """``center_crop`` of ``size=(w, h)`` for both."""

    def __init__(self, size: Tuple[int, int], interp: int = 2) -> None:
        super().__init__(size=size, interp=interp)
        self.size, self.interp = tuple(size), interp

    def __call__(self, image, mask, rng=None):
        h, w = image.shape[:2]
        nw, nh = ops.scale_down((w, h), self.size)
        box = (int((w - nw) / 2), int((h - nh) / 2), nw, nh)
        return _crop_both(image, mask, box, self.size, self.interp, self._gen(rng))


class SegRandomSizedCropAug(SegAugmenter):
    """Inception-style ``random_size_crop`` (area fraction, log-uniform ratio) for both."""

    def __init__(self, size: Tuple[int, int], area: Any, ratio: Tuple[float, float],
                 interp: int = 2) -> None:
        super().__init__(size=size, area=area, ratio=ratio, interp=interp)
        self.size, self.area, self.ratio, self.interp = tuple(size), area, ratio, interp

    def __call__(self, image, mask, rng=None):
        g = self._gen(rng)
        box = sized_crop_box(image.shape[0], image.shape[1], self.size, self.area, self.ratio, g)
        return _crop_both(image, mask, box, self.size, self.interp, g)


def sized_crop_box(h: int, w: int, size: Tuple[int, int], area: Any,
                   ratio: Tuple[float, float], rng: np.random.Generator
                   ) -> Tuple[int, int, int, int]:
    """The window ``(x0, y0, w, h)`` that ``ops.random_size_crop`` draws (same draws, same
    10 tries, same centre-crop fallback), without touching pixels."""
    if isinstance(area, (int, float)):
        area = (area, 1.0)
    log_ratio = (np.log(ratio[0]), np.log(ratio[1]))
    for _ in range(10):
        target = rng.uniform(area[0], area[1]) * h * w
        r = np.exp(rng.uniform(*log_ratio))
        nw, nh = int(round(np.sqrt(target * r))), int(round(np.sqrt(target / r)))
        if nw <= w and nh <= h:
            return int(rng.integers(0, w - nw + 1)), int(rng.integers(0, h - nh + 1)), nw, nh
    nw, nh = ops.scale_down((w, h), size)
    return int((w - nw) / 2), int((h - nh) / 2), nw, nh


class SegRandomScaleAug(SegAugmenter):
    """Scale both by ``U(scale_range)`` (same factor on both axes)."""

    def __init__(self, scale_range: Tuple[float, float] = (0.5, 2.0), interp: int = 1) -> None:
        super().__init__(scale_range=scale_range, interp=interp)
        self.scale_range, self.interp = tuple(scale_range), interp

    def __call__(self, image, mask, rng=None):
        g = self._gen(rng)
        s = g.uniform(*self.scale_range)
        h, w = image.shape[:2]
        nw, nh = max(1, int(round(w * s))), max(1, int(round(h * s)))
        interp = ops.get_interp_method(self.interp, (h, w, nh, nw), g)
        return ops.imresize(image, nw, nh, interp=interp), _mask_resize(mask, nw, nh)


class SegHorizontalFlipAug(SegAugmenter):
    """With probability ``p`` mirror both left-right."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.p = p

    def __call__(self, image, mask, rng=None):
        if self._gen(rng).random() < self.p:
            return np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(mask[:, ::-1])
        return image, mask


class SegVerticalFlipAug(SegHorizontalFlipAug):
    """With probability ``p`` flip both upside down."""

    def __call__(self, image, mask, rng=None):
        if self._gen(rng).random() < self.p:
            return np.ascontiguousarray(image[::-1]), np.ascontiguousarray(mask[::-1])
        return image, mask


def CreateSegAugmenter(data_shape: Sequence[int], resize: int = 0, rand_crop: bool = False,
                       rand_resize: bool = False, rand_mirror: bool = False,
                       rand_scale: Optional[Tuple[float, float]] = None, mean=None, std=None,
                       brightness: float = 0, contrast: float = 0, saturation: float = 0,
                       hue: float = 0, pca_noise: float = 0, rand_gray: float = 0,
                       inter_method: int = 2) -> List[SegAugmenter]:
    """CreateAugmenter's list and order, made joint: geometric steps move image and mask
    together (mask nearest-neighbour); colour steps and normalisation touch the image only.

    resize -> [random scale] -> crop to data_shape (random-sized / random / centre) ->
    mirror -> cast -> colour jitter -> hue -> lighting -> gray -> normalise.
    """
    augs: List[SegAugmenter] = []
    if resize > 0:
        augs.append(SegResizeAug(resize, inter_method))
    if rand_scale is not None:
        augs.append(SegRandomScaleAug(rand_scale, inter_method))
    crop = (data_shape[2], data_shape[1])
    if rand_resize:
        assert rand_crop, "rand_resize requires rand_crop"
        augs.append(SegRandomSizedCropAug(crop, 0.08, (3.0 / 4.0, 4.0 / 3.0), inter_method))
    elif rand_crop:
        augs.append(SegRandomCropAug(crop, inter_method))
    else:
        augs.append(SegCenterCropAug(crop, inter_method))
    if rand_mirror:
        augs.append(SegHorizontalFlipAug(0.5))
    augs += [SegBorrowAug(aug) for aug in cast_and_color_augs(
        brightness, contrast, saturation, hue, pca_noise, rand_gray)]
    mean = np.array(IMAGENET_MEAN, np.float32) if mean is True else mean
    std = np.array(IMAGENET_STD, np.float32) if std is True else std
    if mean is not None or std is not None:
        augs.append(SegBorrowAug(ColorNormalizeAug(mean, std)))
    return augs
