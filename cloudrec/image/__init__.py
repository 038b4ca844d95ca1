"""MXNet's ``mx.image`` on numpy: decode, resize/crop helpers, augmenters, CreateAugmenter.

Arrays are HWC uint8 RGB after decoding, as MXNet.  This layer does no
storage IO.  The iterators (ImageIter, ImageDetIter, SegmentationIter) live in
:mod:`cloudrec.iterators`; they are re-exported here lazily, on first use, so
that ``mx.image.ImageIter`` keeps working without this layer importing them.
"""
from cloudrec.image.decode import (get_max_pixels, image_size, imdecode, imread,
                                   set_max_pixels)
from cloudrec.image.ops import (INTER_CUBIC_MXNET, center_crop, color_normalize,
                                copyMakeBorder, fixed_crop, get_interp_method, imresize,
                                random_crop, random_size_crop, resize_short, scale_down)
from cloudrec.image.augmenters import (Augmenter, BrightnessJitterAug, CastAug, CenterCropAug,
                                       ColorJitterAug, ColorNormalizeAug, ContrastJitterAug,
                                       ForceResizeAug, HorizontalFlipAug, HueJitterAug,
                                       LightingAug, RandomCropAug, RandomGrayAug,
                                       RandomOrderAug, RandomSizedCropAug, ResizeAug,
                                       SaturationJitterAug, SequentialAug)
from cloudrec.image.create import CreateAugmenter

__all__ = ["imdecode", "imread", "image_size", "get_max_pixels", "set_max_pixels",
           "imresize", "resize_short", "fixed_crop", "center_crop", "random_crop",
           "random_size_crop", "scale_down", "color_normalize", "copyMakeBorder",
           "get_interp_method", "INTER_CUBIC_MXNET", "Augmenter", "SequentialAug",
           "RandomOrderAug", "ResizeAug", "ForceResizeAug", "RandomCropAug", "RandomSizedCropAug", "CenterCropAug",
           "BrightnessJitterAug", "ContrastJitterAug", "SaturationJitterAug", "HueJitterAug",
           "ColorJitterAug", "LightingAug", "ColorNormalizeAug", "RandomGrayAug",
           "HorizontalFlipAug", "CastAug", "CreateAugmenter", "ImageIter", "BrokenImageError"]

# detection and segmentation (as ``mx.image`` re-exports its detection module)
from cloudrec.image.det_augmenters import (CreateDetAugmenter, CreateMultiRandCropAugmenter,
                                           DetAugmenter, DetBorrowAug, DetHorizontalFlipAug,
                                           DetRandomCropAug, DetRandomPadAug,
                                           DetRandomSelectAug)
from cloudrec.image.draw import draw_boxes
from cloudrec.image.segmentation import pack_seg, unpack_seg
from cloudrec.image.seg_augmenters import CreateSegAugmenter

__all__ += ["DetAugmenter", "DetBorrowAug", "DetRandomSelectAug", "DetHorizontalFlipAug",
            "DetRandomCropAug", "DetRandomPadAug", "CreateMultiRandCropAugmenter",
            "CreateDetAugmenter", "ImageDetIter", "SegmentationIter", "pack_seg", "unpack_seg",
            "CreateSegAugmenter", "draw_boxes"]

# iterator name -> module in cloudrec.iterators (imported on first attribute access)
_ITERATORS = {"ImageIter": "image_iter", "BrokenImageError": "image_iter",
              "ImageDetIter": "image_det", "SegmentationIter": "segmentation",
              "write_seg_records": "segmentation"}


def __getattr__(name: str):
    mod = _ITERATORS.get(name)
    if mod is None:
        raise AttributeError(f"module 'cloudrec.image' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(f"cloudrec.iterators.{mod}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_ITERATORS))
