"""Image + mask records for segmentation (pure bytes; the iterator is
:mod:`cloudrec.iterators.segmentation`).

Record layout ("cloudrec segmentation v1").  An ordinary RecordIO image record, so
every `.rec`/`.idx` tool (index, inspect, shuffling, partitioning, caching) works on it:

    IRHeader(flag = 5 + k, label = 0, id, id2 = 0)
    float32 labels: [SEG_TAG, img_hi, img_lo, mask_hi, mask_lo, extra_0 .. extra_{k-1}]
    image bytes   (img_len = img_hi * 65536 + img_lo bytes: JPEG, PNG, ...)
    mask bytes    (mask_len = mask_hi * 65536 + mask_lo bytes: a 1-channel PNG, 8 or 16 bit)

``SEG_TAG`` (-20481.0) marks the layout; byte lengths are split into two float32 values
because a float32 holds integers exactly only up to 2**24.  ``img_len + mask_len`` must
equal the bytes after the labels, so a truncated or foreign record is refused with an
error naming it.  The mask is a class-id map (uint8/uint16), encoded losslessly.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from cloudrec.errors import ImageDecodeError, LabelError
from cloudrec.format.irheader import IRHeader, pack, unpack_header
from cloudrec.image.decode import decode_image, imdecode

__all__ = ["SEG_TAG", "SegRecord", "pack_seg", "unpack_seg", "decode_seg"]

log = logging.getLogger(__name__)

SEG_TAG = -20481.0
_BASE = 65536
_NFIXED = 5


@dataclass
class SegRecord:
    """An unpacked segmentation record: header, encoded image and mask, extra labels."""

    header: IRHeader
    image: bytes
    mask: bytes
    extra: np.ndarray


def _split(n: int) -> Tuple[float, float]:
    return float(n // _BASE), float(n % _BASE)


def _encode(arr: np.ndarray, fmt: str, quality: int) -> bytes:
    params = []
    if fmt.lower() in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif fmt.lower() == ".png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, min(int(quality), 9)]
    ok, buf = cv2.imencode(fmt, arr, params)
    if not ok:
        raise ValueError(f"failed to encode image as {fmt}")
    return buf.tobytes()


def pack_seg(image: Union[np.ndarray, bytes], mask: Union[np.ndarray, bytes], id: int = 0,
             extra: Sequence[float] = (), img_fmt: str = ".jpg", quality: int = 95) -> bytes:
    """Pack an image and its mask into one record payload (layout in the module docstring).

    ``image``: encoded bytes (kept as is) or an OpenCV-order (BGR) array, encoded with
    ``img_fmt``/``quality`` as ``pack_img``.  ``mask``: encoded PNG bytes or a 2-D
    uint8/uint16 class map, always encoded as PNG (lossless).
    """
    if isinstance(image, np.ndarray):
        image = _encode(image, img_fmt, quality)
    if isinstance(mask, np.ndarray):
        if mask.ndim == 3 and mask.shape[2] == 1:
            mask = mask[:, :, 0]
        if mask.ndim != 2 or mask.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"mask must be a 2-D uint8 or uint16 array, got {mask.dtype} "
                             f"{mask.shape}")
        mask = _encode(mask, ".png", 3)
    image, mask = bytes(image), bytes(mask)
    label = [SEG_TAG, *_split(len(image)), *_split(len(mask)), *[float(x) for x in extra]]
    return pack(IRHeader(0, label, int(id), 0), image + mask)


def unpack_seg(payload: bytes, url: Optional[str] = None, key: Any = None) -> SegRecord:
    """Split a segmentation record payload; LabelError (naming url/key) if it is not one."""
    where = f" ({url}, record key {key!r})" if url or key is not None else ""
    header, start = unpack_header(payload)
    lab = header.label
    if header.flag < _NFIXED or float(lab[0]) != SEG_TAG:
        first = "none" if header.flag == 0 else ", ".join("%g" % v for v in lab[:_NFIXED])
        raise LabelError(f"not a segmentation record: its packed label should start with "
                         f"{SEG_TAG:g} and two byte lengths, got flag {header.flag} "
                         f"label [{first}]{where}")
    img_len = int(lab[1]) * _BASE + int(lab[2])
    mask_len = int(lab[3]) * _BASE + int(lab[4])
    rest = len(payload) - start
    if img_len + mask_len != rest or img_len <= 0 or mask_len <= 0:
        raise LabelError(f"segmentation record claims {img_len} image + {mask_len} mask bytes "
                         f"but holds {rest}{where}")
    image = payload[start:start + img_len]
    mask = payload[start + img_len:]
    return SegRecord(header, bytes(image), bytes(mask), np.array(lab[_NFIXED:], np.float32))


def decode_seg(payload: bytes, flag: int = 1, url: Optional[str] = None, key: Any = None
               ) -> Tuple[SegRecord, np.ndarray, np.ndarray]:
    """Unpack and decode: ``(record, image HWC RGB uint8, mask HW)``; sizes must agree."""
    rec = unpack_seg(payload, url, key)
    image = imdecode(rec.image, flag, url=url, key=key)
    try:
        mask = decode_image(rec.mask, cv_flag=cv2.IMREAD_UNCHANGED)
    except ImageDecodeError as exc:
        raise type(exc)(f"mask could not be decoded: {exc}", url, key) from None
    if mask.ndim == 3:
        raise ImageDecodeError(f"mask must have one channel, it has {mask.shape[2]}", url, key)
    if mask.shape != image.shape[:2]:
        raise ImageDecodeError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                               f"{image.shape[1]}x{image.shape[0]}", url, key)
    return rec, image, mask
