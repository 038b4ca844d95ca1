"""The fast path's decode for RGB image iterators: a JPEG at a reduced DCT scale with
libjpeg-turbo's fast IDCT, everything else as :func:`cloudrec.image.decode.imdecode`.

What ``ResizeAug(fast=True)`` (``CreateAugmenter(..., fast=True)``) asks of ImageIter:
the shorter side only has to stay >= the resize target, and pixels need only be close
to MXNet's.  So a JPEG goes to :func:`cloudrec.image.jpeg_scale.decode_jpeg` with
``fast=True`` (the fast integer IDCT and plain chroma upsampling, as ImageRecordIter's
``decode_reduce``), RGB straight out of libjpeg-turbo; PNG, odd JPEGs and every failure
take ``imdecode``'s path, so errors and their messages are the same as exact mode's.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from cloudrec.image.decode import BufferLike, check_pixels, imdecode
from cloudrec.image.jpeg_scale import decode_jpeg

__all__ = ["imdecode_reduced"]


def imdecode_reduced(buf: BufferLike, min_side: int, *, max_pixels: Optional[int] = None,
                     truncated: str = "error") -> np.ndarray:
    """HWC uint8 RGB, shorter side >= ``min_side`` (JPEGs at 1/2, 1/4 or 1/8 scale when
    that holds, fast IDCT); anything the fast path cannot take goes to ``imdecode``."""
    if isinstance(buf, np.ndarray):
        arr = np.ascontiguousarray(buf).view(np.uint8).reshape(-1)
    elif isinstance(buf, (bytes, bytearray, memoryview)):
        arr = np.frombuffer(buf, dtype=np.uint8)
    else:
        arr = None
    if arr is not None and arr.size > 2 and arr[0] == 0xFF and arr[1] == 0xD8:
        size = check_pixels(arr, max_pixels)  # the bomb guard before any decoding
        img = decode_jpeg(arr, 3, size, min_side, fast=True, rgb=True)
        if img is not None:
            return img
    return imdecode(buf, max_pixels=max_pixels, truncated=truncated, min_side=min_side)
