"""CreateDetAugmenter and CreateMultiRandCropAugmenter: MXNet's detection augmenter lists."""
from __future__ import annotations

import logging
from typing import Any, List, Sequence

import numpy as np

from cloudrec.image.augmenters import ColorNormalizeAug, ForceResizeAug, ResizeAug
from cloudrec.image.create import cast_and_color_augs, resolve_mean_std
from cloudrec.image.det_augmenters import (DetAugmenter, DetBorrowAug, DetHorizontalFlipAug,
                                           DetRandomCropAug, DetRandomPadAug,
                                           DetRandomSelectAug)

__all__ = ["CreateDetAugmenter", "CreateMultiRandCropAugmenter", "seed_augmenters"]

log = logging.getLogger("cloudrec.image.det_augmenters")


def _align(params: Sequence[Any]) -> List[List[Any]]:
    """MXNet's parameter alignment: lists are per-augmenter, anything else is shared."""
    out = [p if isinstance(p, list) else [p] for p in params]
    num = max(len(p) for p in out)
    for k, p in enumerate(out):
        if len(p) != num:
            assert len(p) == 1, f"parameter lists must have equal lengths, got {params}"
            out[k] = p * num
    return out


def CreateMultiRandCropAugmenter(min_object_covered=0.1, aspect_ratio_range=(0.75, 1.33),
                                 area_range=(0.05, 1.0), min_eject_coverage=0.3,
                                 max_attempts=50, skip_prob=0) -> DetRandomSelectAug:
    """One DetRandomCropAug per aligned parameter tuple (list arguments), inside a select."""
    augs = [DetRandomCropAug(min_object_covered=moc, aspect_ratio_range=arr, area_range=ar,
                             min_eject_coverage=mec, max_attempts=ma)
            for moc, arr, ar, mec, ma in zip(*_align([min_object_covered, aspect_ratio_range,
                                                      area_range, min_eject_coverage,
                                                      max_attempts]))]
    return DetRandomSelectAug(augs, skip_prob=skip_prob)


def CreateDetAugmenter(data_shape: Sequence[int], resize: int = 0, rand_crop: float = 0,
                       rand_pad: float = 0, rand_gray: float = 0, rand_mirror: bool = False,
                       mean=None, std=None, brightness: float = 0, contrast: float = 0,
                       saturation: float = 0, pca_noise: float = 0, hue: float = 0,
                       inter_method: int = 2, min_object_covered=0.1,
                       aspect_ratio_range=(0.75, 1.33), area_range=(0.05, 3.0),
                       min_eject_coverage=0.3, max_attempts=50,
                       pad_val=(127, 127, 127)) -> List[DetAugmenter]:
    """MXNet's detection augmenter list, same arguments and order (spec §3.6).

    resize -> random crop (prob rand_crop) -> mirror -> random pad (prob rand_pad) ->
    force resize to data_shape -> cast float32 -> colour jitter -> hue -> PCA lighting ->
    random gray -> normalise.  ``mean=True``/``std=True`` mean the ImageNet values.
    """
    auglist: List[DetAugmenter] = []
    if resize > 0:
        auglist.append(DetBorrowAug(ResizeAug(resize, inter_method)))
    if rand_crop > 0:
        auglist.append(CreateMultiRandCropAugmenter(min_object_covered, aspect_ratio_range,
                                                    area_range, min_eject_coverage,
                                                    max_attempts, skip_prob=1 - rand_crop))
    if rand_mirror > 0:
        auglist.append(DetHorizontalFlipAug(0.5))
    if rand_pad > 0:
        pad = DetRandomPadAug(aspect_ratio_range, (1.0, area_range[1]), max_attempts, pad_val)
        auglist.append(DetRandomSelectAug([pad], 1 - rand_pad))
    auglist.append(DetBorrowAug(ForceResizeAug((data_shape[2], data_shape[1]), inter_method)))
    auglist += [DetBorrowAug(aug) for aug in cast_and_color_augs(
        brightness, contrast, saturation, hue, pca_noise, rand_gray)]
    mean, std = resolve_mean_std(mean, std)
    if mean is not None or std is not None:
        auglist.append(DetBorrowAug(ColorNormalizeAug(mean, std)))
    return auglist


def seed_augmenters(auglist: Sequence[Any], seed: Any) -> None:
    """Seed every augmenter of a list from one seed (independent child streams)."""
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    for aug, child in zip(auglist, ss.spawn(len(auglist))):
        if hasattr(aug, "seed"):  # MXNet-style user augmenters may have none
            aug.seed(child)
