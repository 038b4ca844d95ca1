"""MXNet-compatible iterators: ImageRecordIter (and its uint8/int8 aliases)."""
from cloudrec.iterators.image_record import (ImageRecordInt8Iter, ImageRecordIter,
                                             ImageRecordUInt8Iter)

__all__ = ["ImageRecordIter", "ImageRecordUInt8Iter", "ImageRecordInt8Iter"]
