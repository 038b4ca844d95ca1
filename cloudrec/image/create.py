"""``CreateAugmenter``: MXNet's standard classification augmenter list, same arguments and order."""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from cloudrec.image.augmenters import (Augmenter, CastAug, CenterCropAug, ColorJitterAug,
                                       ColorNormalizeAug, HorizontalFlipAug, HueJitterAug,
                                       LightingAug, RandomCropAug, RandomGrayAug,
                                       RandomSizedCropAug, ResizeAug)

__all__ = ["CreateAugmenter", "IMAGENET_MEAN", "IMAGENET_STD", "PCA_EIGVAL", "PCA_EIGVEC"]

IMAGENET_MEAN = [123.68, 116.28, 103.53]
IMAGENET_STD = [58.395, 57.12, 57.375]
PCA_EIGVAL = [55.46, 4.794, 1.148]
PCA_EIGVEC = [[-0.5675, 0.7192, 0.4009],
              [-0.5808, -0.0045, -0.8140],
              [-0.5836, -0.6948, 0.4203]]


def _channels(name: str, value) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float32)
    assert arr.ndim >= 1 and arr.shape[0] in (1, 3), \
        f"{name} must have 1 or 3 values, got shape {arr.shape}"
    return arr


def resolve_mean_std(mean: Any, std: Any) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """``mean``/``std`` as the Create*Augmenter functions take them (True = ImageNet, else
    1 or 3 values, or None) -> float32 arrays or None, checked once for all of them."""
    if mean is True:
        mean = np.array(IMAGENET_MEAN, dtype=np.float32)
    elif mean is not None:
        mean = _channels("mean", mean)
    if std is True:
        std = np.array(IMAGENET_STD, dtype=np.float32)
    elif std is not None:
        std = _channels("std", std)
    return mean, std


def cast_and_color_augs(brightness: float = 0, contrast: float = 0, saturation: float = 0,
                        hue: float = 0, pca_noise: float = 0, rand_gray: float = 0
                        ) -> List[Augmenter]:
    """MXNet's pixel-value steps, in its order: cast float32 -> colour jitter -> hue ->
    PCA lighting -> random gray (those asked for); shared by every Create*Augmenter."""
    augs: List[Augmenter] = [CastAug()]
    if brightness or contrast or saturation:
        augs.append(ColorJitterAug(brightness, contrast, saturation))
    if hue:
        augs.append(HueJitterAug(hue))
    if pca_noise > 0:
        augs.append(LightingAug(pca_noise, np.array(PCA_EIGVAL), np.array(PCA_EIGVEC)))
    if rand_gray > 0:
        augs.append(RandomGrayAug(rand_gray))
    return augs


def CreateAugmenter(data_shape: Sequence[int], resize: int = 0, rand_crop: bool = False,
                    rand_resize: bool = False, rand_mirror: bool = False, mean=None, std=None,
                    brightness: float = 0, contrast: float = 0, saturation: float = 0,
                    hue: float = 0, pca_noise: float = 0, rand_gray: float = 0,
                    inter_method: int = 2, fast: bool = False) -> List[Augmenter]:
    """The augmenter list MXNet builds for ImageIter (spec §3.3), in MXNet's order.

    resize -> crop (random-sized / random / centre) -> mirror -> cast float32 ->
    colour jitter -> hue -> PCA lighting -> random gray -> normalise.
    ``mean=True``/``std=True`` mean the ImageNet values.  ``fast`` (cloudrec's): run
    through :func:`cloudrec.image.augmenters.apply_augmenters` (as ImageIter does), the
    resize and the crop after it become one resize of the crop's source region, bicubic
    done as bilinear (bit-exact anyway with INTER_CUBIC_MXNET), and ImageIter decodes
    JPEGs at 1/2, 1/4 or 1/8 scale with the fast IDCT where the shorter side stays >=
    ``resize``.  On 224-pixel crops of 300-600 px photos the mean |fast - exact| is about
    0.04 in (x - mean) / std units (~2.4 levels), its 99th percentile ~0.36
    (tests/test_imageiter_runs.py).
    """
    auglist: List[Augmenter] = []
    if resize > 0:
        auglist.append(ResizeAug(resize, inter_method, fast=fast))
    crop_size = (data_shape[2], data_shape[1])
    if rand_resize:
        assert rand_crop, "rand_resize requires rand_crop"
        auglist.append(RandomSizedCropAug(crop_size, 0.08, (3.0 / 4.0, 4.0 / 3.0), inter_method))
    elif rand_crop:
        auglist.append(RandomCropAug(crop_size, inter_method))
    else:
        auglist.append(CenterCropAug(crop_size, inter_method))
    if rand_mirror:
        auglist.append(HorizontalFlipAug(0.5))
    auglist += cast_and_color_augs(brightness, contrast, saturation, hue, pca_noise, rand_gray)
    mean, std = resolve_mean_std(mean, std)
    if mean is not None or std is not None:
        auglist.append(ColorNormalizeAug(mean, std))
    return auglist
