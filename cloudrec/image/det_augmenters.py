"""MXNet's detection augmenters (``mx.image.Det*Aug``, ``CreateDetAugmenter``) on numpy.

A detection augmenter maps ``(src, label) -> (src, label)`` where ``src`` is an HWC
image and ``label`` the ``(n, B)`` object array ``[class, xmin, ymin, xmax, ymax, ...]``
with corners normalised to the image (spec §3.6).  Geometry (crop proposal, coverage
and ejection rules, padding) follows MXNet 1.9.1.  Differences: randomness comes from a
numpy Generator (``rng`` argument, else the augmenter's own, set by ``seed()``), never
global state; no augmenter mutates itself or its input label while running.
"""
from __future__ import annotations

import inspect
import logging
import math
import numbers
import warnings
from typing import Any, Optional, Tuple

import numpy as np

from cloudrec.image import ops
from cloudrec.image.augmenters import Augmenter, AugmenterBase

__all__ = ["DetAugmenter", "DetBorrowAug", "DetRandomSelectAug", "DetHorizontalFlipAug",
           "DetRandomCropAug", "DetRandomPadAug", "CreateMultiRandCropAugmenter",
           "CreateDetAugmenter", "seed_augmenters", "box_areas", "apply_det"]

log = logging.getLogger(__name__)
Label = np.ndarray


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """Areas of ``(n, 4+)`` boxes ``[xmin, ymin, xmax, ymax, ...]``; inverted boxes count 0."""
    return (np.maximum(0, boxes[:, 2] - boxes[:, 0]) *
            np.maximum(0, boxes[:, 3] - boxes[:, 1]))


def _intersect(boxes: np.ndarray, xmin: float, ymin: float, xmax: float, ymax: float
               ) -> np.ndarray:
    """Boxes clipped to a window; boxes that do not overlap it become all zeros."""
    out = boxes.copy()
    out[:, 0] = np.maximum(boxes[:, 0], xmin)
    out[:, 1] = np.maximum(boxes[:, 1], ymin)
    out[:, 2] = np.minimum(boxes[:, 2], xmax)
    out[:, 3] = np.minimum(boxes[:, 3], ymax)
    out[(out[:, 0] >= out[:, 2]) | (out[:, 1] >= out[:, 3])] = 0
    return out


def _pair(value: Any, name: str, owner: str) -> Tuple[float, float]:
    if isinstance(value, (tuple, list)):
        return (value[0], value[1])
    assert isinstance(value, numbers.Number), f"{name} must be a number or a pair"
    log.info("Using fixed %s: %s in %s", name, value, owner)
    return (value, value)


_ACCEPTS_RNG: dict = {}


def accepts_rng(fn: Any, nargs: int) -> bool:
    """Does ``fn`` take an ``rng`` after its ``nargs`` data arguments?  MXNet-style user
    augmenters (``__call__(self, src)`` / ``(self, src, label)``) do not; cached per type."""
    if inspect.isfunction(fn) or inspect.ismethod(fn) or inspect.isbuiltin(fn):
        key = (fn, nargs)  # plain callables: per object (they all share one type)
    else:
        key = (type(fn), nargs)
    if key not in _ACCEPTS_RNG:
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            _ACCEPTS_RNG[key] = False
            return False
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        _ACCEPTS_RNG[key] = (len(positional) > nargs or
                             any(p.kind == p.VAR_POSITIONAL for p in params))
    return _ACCEPTS_RNG[key]


def apply_det(aug: Any, src: np.ndarray, label: Label, rng: Optional[np.random.Generator]
              ) -> Tuple[np.ndarray, Label]:
    """Call a detection augmenter, passing ``rng`` only if it takes one."""
    return aug(src, label, rng) if accepts_rng(aug, 2) else aug(src, label)


class DetAugmenter(AugmenterBase):
    """Base detection augmenter: ``(src, label, rng) -> (src, label)``; kwargs kept for
    ``dumps()`` and a private seedable Generator, as AugmenterBase."""

    def __call__(self, src: np.ndarray, label: Label,
                 rng: Optional[np.random.Generator] = None) -> Tuple[np.ndarray, Label]:
        raise NotImplementedError("Must override implementation.")


class DetBorrowAug(DetAugmenter):
    """Apply an image-only Augmenter (resize, cast, colour); the normalised label is unchanged."""

    def __init__(self, augmenter: Augmenter) -> None:
        if not isinstance(augmenter, Augmenter):
            raise TypeError("Borrowing from invalid Augmenter")
        super().__init__(augmenter=augmenter.dumps())
        self.augmenter = augmenter

    def dumps(self):
        return [self.__class__.__name__.lower(), self.augmenter.dumps()]

    def seed(self, seed: Any) -> "DetBorrowAug":
        if hasattr(self.augmenter, "seed"):
            self.augmenter.seed(seed)
        return self

    def __call__(self, src, label, rng=None):
        if accepts_rng(self.augmenter, 1):
            return self.augmenter(src, rng), label
        return self.augmenter(src), label


class DetRandomSelectAug(DetAugmenter):
    """With probability ``skip_prob`` pass through, else apply one augmenter chosen uniformly."""

    def __init__(self, aug_list: Any, skip_prob: float = 0) -> None:
        super().__init__(skip_prob=skip_prob)
        if not isinstance(aug_list, (list, tuple)):
            aug_list = [aug_list]
        for aug in aug_list:
            if not isinstance(aug, DetAugmenter):
                raise ValueError("Allow DetAugmenter in list only")
        if not aug_list:
            skip_prob = 1  # nothing to select: disabled
        self.aug_list = list(aug_list)
        self.skip_prob = skip_prob

    def dumps(self):
        return [self.__class__.__name__.lower(), [x.dumps() for x in self.aug_list]]

    def seed(self, seed: Any) -> "DetRandomSelectAug":
        ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        children = ss.spawn(len(self.aug_list) + 1)
        self._rng = np.random.default_rng(children[0])
        for aug, s in zip(self.aug_list, children[1:]):
            if hasattr(aug, "seed"):
                aug.seed(s)
        return self

    def __call__(self, src, label, rng=None):
        g = self._gen(rng)
        if g.random() < self.skip_prob:
            return src, label
        aug = self.aug_list[int(g.integers(len(self.aug_list)))]
        return apply_det(aug, src, label, rng)


class DetHorizontalFlipAug(DetAugmenter):
    """With probability ``p`` mirror the image and map ``xmin' = 1 - xmax``, ``xmax' = 1 - xmin``."""

    def __init__(self, p: float) -> None:
        super().__init__(p=p)
        self.p = p

    def __call__(self, src, label, rng=None):
        if self._gen(rng).random() < self.p:
            src = np.ascontiguousarray(src[:, ::-1])
            out = np.array(label, dtype=np.float32, copy=True)
            out[:, 1] = 1.0 - label[:, 3]
            out[:, 3] = 1.0 - label[:, 1]
            label = out
        return src, label


class DetRandomCropAug(DetAugmenter):
    """SSD-style random crop: a window whose area fraction and aspect ratio lie in range and
    which covers more than ``min_object_covered`` of every object it touches.

    Labels are re-normalised to the window and clipped; an object keeping no more than
    ``min_eject_coverage`` of its area is ejected.  After ``max_attempts`` failed
    proposals the input is returned unchanged.  Invalid ranges disable it (a warning).
    """

    def __init__(self, min_object_covered: float = 0.1, aspect_ratio_range=(0.75, 1.33),
                 area_range=(0.05, 1.0), min_eject_coverage: float = 0.3,
                 max_attempts: int = 50) -> None:
        aspect_ratio_range = _pair(aspect_ratio_range, "aspect ratio", "DetRandomCropAug")
        area_range = _pair(area_range, "area range", "DetRandomCropAug")
        super().__init__(min_object_covered=min_object_covered,
                         aspect_ratio_range=aspect_ratio_range, area_range=area_range,
                         min_eject_coverage=min_eject_coverage, max_attempts=max_attempts)
        self.min_object_covered = min_object_covered
        self.min_eject_coverage = min_eject_coverage
        self.max_attempts = max_attempts
        self.aspect_ratio_range = aspect_ratio_range
        self.area_range = area_range
        self.enabled = False
        if area_range[1] <= 0 or area_range[0] > area_range[1]:
            warnings.warn(f"Skip DetRandomCropAug due to invalid area_range: {area_range}")
        elif aspect_ratio_range[0] > aspect_ratio_range[1] or aspect_ratio_range[0] <= 0:
            warnings.warn("Skip DetRandomCropAug due to invalid aspect_ratio_range: "
                          f"{aspect_ratio_range}")
        else:
            self.enabled = True

    def __call__(self, src, label, rng=None):
        crop = self.propose(label, src.shape[0], src.shape[1], self._gen(rng))
        if crop is not None:
            x, y, w, h, label = crop
            src = ops.fixed_crop(src, x, y, w, h, None)
        return src, label

    def satisfies(self, label: Label, xmin: int, ymin: int, xmax: int, ymax: int,
                  width: int, height: int) -> bool:
        """Does the pixel window cover > min_object_covered of every object it overlaps?"""
        if (xmax - xmin) * (ymax - ymin) < 2:
            return False  # a single pixel
        areas = box_areas(label[:, 1:])
        valid = np.flatnonzero(areas * width * height > 2)
        if valid.size < 1:
            return False
        inter = _intersect(label[valid, 1:], xmin / width, ymin / height,
                           xmax / width, ymax / height)
        cov = box_areas(inter) / areas[valid]
        cov = cov[cov > 0]
        return cov.size > 0 and float(np.amin(cov)) > self.min_object_covered

    def crop_labels(self, label: Label, box: Tuple[int, int, int, int], height: int,
                    width: int) -> Optional[Label]:
        """Labels re-normalised to the pixel window ``box=(x, y, w, h)``, clipped to [0, 1],
        objects with coverage <= min_eject_coverage ejected; None if none is left."""
        x0, y0 = box[0] / width, box[1] / height
        w, h = box[2] / width, box[3] / height
        out = np.array(label, dtype=np.float32, copy=True)
        out[:, (1, 3)] = (out[:, (1, 3)] - x0) / w
        out[:, (2, 4)] = (out[:, (2, 4)] - y0) / h
        np.clip(out[:, 1:5], 0, 1, out=out[:, 1:5])
        with np.errstate(divide="ignore", invalid="ignore"):
            coverage = box_areas(out[:, 1:]) * w * h / box_areas(label[:, 1:])
        keep = (out[:, 3] > out[:, 1]) & (out[:, 4] > out[:, 2]) & \
            (coverage > self.min_eject_coverage)
        if not keep.any():
            return None
        return out[keep]

    def propose(self, label: Label, height: int, width: int, rng: np.random.Generator
                ) -> Optional[Tuple[int, int, int, int, Label]]:
        """A crop ``(x, y, w, h, new_label)`` in pixels meeting every constraint, or None."""
        if not self.enabled or height <= 0 or width <= 0:
            return None
        min_area = self.area_range[0] * height * width
        max_area = self.area_range[1] * height * width
        for _ in range(self.max_attempts):
            ratio = rng.uniform(*self.aspect_ratio_range)
            if ratio <= 0:
                continue
            h = int(round(math.sqrt(min_area / ratio)))
            max_h = int(round(math.sqrt(max_area / ratio)))
            if round(max_h * ratio) > width:
                max_h = int((width + 0.4999999) / ratio)  # largest h with round(h*ratio) <= width
            max_h = min(max_h, height)
            h = min(h, max_h)
            if h < max_h:
                h = int(rng.integers(h, max_h + 1))
            w = int(round(h * ratio))
            area = w * h
            if area < min_area:  # rounding fix-ups, as MXNet
                h += 1
                w = int(round(h * ratio))
                area = w * h
            if area > max_area:
                h -= 1
                w = int(round(h * ratio))
                area = w * h
            if not (min_area <= area <= max_area and 0 <= w <= width and 0 <= h <= height):
                continue
            y = int(rng.integers(0, max(0, height - h) + 1))
            x = int(rng.integers(0, max(0, width - w) + 1))
            if self.satisfies(label, x, y, x + w, y + h, width, height):
                new_label = self.crop_labels(label, (x, y, w, h), height, width)
                if new_label is not None:
                    return x, y, w, h, new_label
        return None


class DetRandomPadAug(DetAugmenter):
    """Random zoom-out: place the image on a larger canvas filled with ``pad_val``.

    The canvas area is ``U(area_range)`` times the image's (area_range[1] must exceed 1,
    else disabled) with aspect ratio in ``aspect_ratio_range``; labels map as
    ``x' = (x*W + x0) / W'``.
    """

    def __init__(self, aspect_ratio_range=(0.75, 1.33), area_range=(1.0, 3.0),
                 max_attempts: int = 50, pad_val=(128, 128, 128)) -> None:
        if not isinstance(pad_val, (list, tuple)):
            assert isinstance(pad_val, numbers.Number), "pad_val must be a number or a tuple"
        aspect_ratio_range = _pair(aspect_ratio_range, "aspect ratio", "DetRandomPadAug")
        area_range = _pair(area_range, "area range", "DetRandomPadAug")
        super().__init__(aspect_ratio_range=aspect_ratio_range, area_range=area_range,
                         max_attempts=max_attempts, pad_val=pad_val)
        self.pad_val = pad_val
        self.aspect_ratio_range = aspect_ratio_range
        self.area_range = area_range
        self.max_attempts = max_attempts
        self.enabled = False
        if area_range[1] <= 1.0 or area_range[0] > area_range[1]:
            warnings.warn(f"Skip DetRandomPadAug due to invalid parameters: {area_range}")
        elif aspect_ratio_range[0] <= 0 or aspect_ratio_range[0] > aspect_ratio_range[1]:
            warnings.warn("Skip DetRandomPadAug due to invalid aspect_ratio_range: "
                          f"{aspect_ratio_range}")
        else:
            self.enabled = True

    def __call__(self, src, label, rng=None):
        height, width = src.shape[0], src.shape[1]
        pad = self.propose(label, height, width, self._gen(rng))
        if pad is not None:
            x, y, w, h, label = pad
            vals = self.pad_val if isinstance(self.pad_val, (list, tuple)) else \
                [self.pad_val] * (src.shape[2] if src.ndim == 3 else 1)
            src = ops.copyMakeBorder(src, y, h - y - height, x, w - x - width,
                                     values=[float(v) for v in vals])
        return src, label

    @staticmethod
    def pad_labels(label: Label, box: Tuple[int, int, int, int], height: int,
                   width: int) -> Label:
        """Labels of an ``height x width`` image placed at ``(x, y)`` on a ``w x h`` canvas."""
        out = np.array(label, dtype=np.float32, copy=True)
        out[:, (1, 3)] = (out[:, (1, 3)] * width + box[0]) / box[2]
        out[:, (2, 4)] = (out[:, (2, 4)] * height + box[1]) / box[3]
        return out

    def propose(self, label: Label, height: int, width: int, rng: np.random.Generator
                ) -> Optional[Tuple[int, int, int, int, Label]]:
        """A canvas ``(x, y, w, h, new_label)`` in pixels, or None after max_attempts."""
        if not self.enabled or height <= 0 or width <= 0:
            return None
        min_area = self.area_range[0] * height * width
        max_area = self.area_range[1] * height * width
        for _ in range(self.max_attempts):
            ratio = rng.uniform(*self.aspect_ratio_range)
            if ratio <= 0:
                continue
            h = int(round(math.sqrt(min_area / ratio)))
            max_h = int(round(math.sqrt(max_area / ratio)))
            if round(h * ratio) < width:
                h = int((width + 0.499999) / ratio)
            h = max(h, height)
            h = min(h, max_h)
            if h < max_h:
                h = int(rng.integers(h, max_h + 1))
            w = int(round(h * ratio))
            if (h - height) < 2 or (w - width) < 2:
                continue  # marginal padding is not helpful
            y = int(rng.integers(0, max(0, h - height) + 1))
            x = int(rng.integers(0, max(0, w - width) + 1))
            return x, y, w, h, self.pad_labels(label, (x, y, w, h), height, width)
        return None


# the factories live in det_create.py (imported here so existing imports keep working)
from cloudrec.image.det_create import (CreateDetAugmenter,  # noqa: E402
                                       CreateMultiRandCropAugmenter, seed_augmenters)
