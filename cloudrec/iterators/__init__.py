"""Every iterator: ImageRecordIter (and its uint8/int8 aliases), ImageIter, ImageDetIter,
SegmentationIter.  They share one record source (:mod:`cloudrec.iterators._records`),
one order/partition/state object (:class:`cloudrec.reader.sampler.EpochSampler`) and
one decode (:func:`cloudrec.image.decode.decode_image`)."""
from cloudrec.iterators.image_record import (ImageRecordInt8Iter, ImageRecordIter,
                                             ImageRecordUInt8Iter)
from cloudrec.iterators.image_iter import BrokenImageError, ImageIter
from cloudrec.iterators.image_det import ImageDetIter
from cloudrec.iterators.segmentation import SegmentationIter, write_seg_records

__all__ = ["ImageRecordIter", "ImageRecordUInt8Iter", "ImageRecordInt8Iter", "ImageIter",
           "BrokenImageError", "ImageDetIter", "SegmentationIter", "write_seg_records"]
