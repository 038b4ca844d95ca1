"""One list entry's image bytes -> its record payload (im2rec's packing flags); pure."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from cloudrec.errors import CloudrecError, ImageDecodeError
from cloudrec.format.irheader import IRHeader, pack
from cloudrec.format.lst import ListEntry
from cloudrec.image.decode import decode_image
from cloudrec.recordio import pack_img

__all__ = ["CHECKS", "PackError", "EncodeOptions", "sniff_image", "make_header",
           "transform_image", "build_payload"]

CHECKS = ("none", "header", "decode")


class PackError(CloudrecError):
    """An image could not be packed (and --on-error is 'fail')."""


@dataclass(frozen=True)
class EncodeOptions:
    """How one image becomes a record payload (im2rec's packing flags)."""

    pass_through: bool = False
    resize: int = 0
    center_crop: bool = False
    quality: int = 95
    color: int = 1
    encoding: str = ".jpg"
    pack_label: bool = False
    check: str = "header"  # pass-through only: none | header (magic bytes) | decode


_SIGNATURES = (
    (b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"),
    (b"GIF89a", "gif"), (b"BM", "bmp"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"),
    (b"\x00\x00\x00\x0cjP  ", "jpeg2000"), (b"\xff\x4f\xff\x51", "jpeg2000"),
)


def sniff_image(data: bytes) -> Optional[str]:
    """The image format named by the first bytes, or None when they are not an image's."""
    for sig, name in _SIGNATURES:
        if data.startswith(sig):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if len(data) > 2 and data[0:1] == b"P" and data[1:2] in b"1234567" and data[2:3].isspace():
        return "pnm"
    return None


def make_header(entry: ListEntry, pack_label: bool) -> IRHeader:
    """im2rec's header: id = list index; all labels when --pack-label and >1, else the first."""
    if not entry.labels:
        raise PackError(f"list entry {entry.index} ({entry.path}) has no label")
    if pack_label and len(entry.labels) > 1:
        return IRHeader(0, list(entry.labels), entry.index, 0)
    return IRHeader(0, entry.labels[0], entry.index, 0)


def transform_image(img: np.ndarray, resize: int, center_crop: bool) -> np.ndarray:
    """Central square crop (before resizing), then shorter side -> ``resize`` (bilinear)."""
    import cv2

    h, w = img.shape[:2]
    if center_crop:
        if h > w:
            m = (h - w) // 2
            img = img[m:m + w, :]
        else:
            m = (w - h) // 2
            img = img[:, m:m + h]
        h, w = img.shape[:2]
    if resize:
        size = (resize, h * resize // w) if h > w else (w * resize // h, resize)
        img = cv2.resize(img, size)
    return img


def build_payload(entry: ListEntry, data: bytes, opts: EncodeOptions) -> bytes:
    """The record payload (IRHeader + labels + image) for one list entry's file bytes.

    Raises :class:`ImageDecodeError` for bytes that are not a usable image.
    """
    header = make_header(entry, opts.pack_label)
    if opts.pass_through:
        if opts.check != "none" and sniff_image(data) is None:
            raise ImageDecodeError(f"not an image (first bytes {data[:8]!r})")
        if opts.check == "decode":
            decode_image(data, cv_flag=-1)  # the pixel guard, then a full decode
        return pack(header, data)
    img = decode_image(data, cv_flag=opts.color)
    img = transform_image(img, opts.resize, opts.center_crop)
    return pack_img(header, img, quality=opts.quality, img_fmt=opts.encoding)
