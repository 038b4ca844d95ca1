"""JPEG decoding through libjpeg-turbo's TurboJPEG API (``simplejpeg``), at full or DCT-reduced scale.

Why not only ``cv2.imdecode``: on the bench photos (``bench/jpeg_scales.py``) the
same libjpeg-turbo (3.1.2 in both wheels) reached through ``simplejpeg`` decodes a
full-size JPEG in ~0.82x the CPU time of ``cv2.imdecode`` (OpenCV adds an EXIF parse and
a buffer copy), with bit-identical pixels at 1/1, 1/2, 1/4 and 1/8 scale for colour and
gray output (tests/test_fast_decode.py).  So it speeds up MXNet-exact decoding too.

Which scale factors: libjpeg-turbo can decode at any m/8, but only some pay.  Measured
there (CPU time per image relative to a full-size decode, small / big photos): 1/8
0.65 / 0.51, 1/4 0.72 / 0.60, 1/2 0.79 / 0.70, 3/8 0.90 / 0.86 (never chosen: 1/2 fits
whenever it does and costs less), 5/8 1.37 / 1.52, 3/4 1.62 / 1.91, 7/8 2.06 / 2.53 (the
non-SIMD scaled IDCTs, dearer than a full decode).  :data:`PAYING_EIGHTHS` keeps 1/8,
1/4 and 1/2; the issue's hope for 5/8 does not hold on this machine.

Anything the fast path does not handle exactly like OpenCV goes back to the
caller (``None``), which then uses ``cv2.imdecode``: no ``simplejpeg``
installed, an EXIF orientation other than 1 (OpenCV rotates), 12-bit,
lossless or arithmetic-coded JPEGs, 4-channel output, and any warning or
error of libjpeg (``strict`` mode), so corrupt data fails with OpenCV's
outcome and cloudrec's error message, as before.
"""
from __future__ import annotations

import struct
from typing import Optional, Sequence, Tuple

import numpy as np

try:  # a core dependency; without it (e.g. no wheel for the platform) cv2 decodes everything
    import simplejpeg as _sj
except ImportError:  # pragma: no cover - exercised by the cv2 fallback tests via monkeypatch
    _sj = None

__all__ = ["PAYING_EIGHTHS", "choose_eighths", "scaled_size", "jpeg_layout",
           "decode_jpeg", "available"]

#: Scale numerators m (of m/8) whose scaled decode costs less than a full-size one, ascending.
PAYING_EIGHTHS: Tuple[int, ...] = (1, 2, 4)

_COLORSPACE = {1: "GRAY", 3: "BGR"}
_SOF_HUFFMAN = {0xC0, 0xC1, 0xC2}  # baseline, extended sequential, progressive (Huffman)
_SOF_ANY = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def available() -> bool:
    """True when ``simplejpeg`` is importable (the fast JPEG path is on)."""
    return _sj is not None


def scaled_size(n: int, eighths: int) -> int:
    """libjpeg's output length of a side of ``n`` pixels at ``eighths``/8: ceil(n * m / 8)."""
    return -(-int(n) * int(eighths) // 8)


def choose_eighths(short: int, min_side: int, allowed: Sequence[int] = PAYING_EIGHTHS) -> int:
    """The smallest paying m (of m/8) keeping the shorter side ``short`` >= ``min_side``; 8
    (full size) when none does or ``min_side`` <= 0."""
    if min_side <= 0 or short <= 0:
        return 8
    for m in sorted(allowed):
        if 0 < m < 8 and scaled_size(short, m) >= min_side:
            return m
    return 8


def jpeg_layout(b) -> Tuple[int, int]:
    """(SOF marker, EXIF orientation) from the segments before the first SOF.

    SOF marker 0 when none is found; orientation 1 when there is no EXIF tag
    0x0112, 0 when an EXIF block is present but cannot be read (treated as
    "unknown": the caller leaves such files to OpenCV).
    """
    pos, n, orient = 2, len(b), 1
    while pos + 4 <= n:
        if b[pos] != 0xFF:
            return 0, orient
        marker = b[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        seglen = (b[pos + 2] << 8) | b[pos + 3]
        if marker in _SOF_ANY:
            if pos + 5 <= n and b[pos + 4] != 8:  # sample precision: 8 bits only
                return -1, orient
            return marker, orient
        if marker == 0xDA or seglen < 2:
            return 0, orient
        if marker == 0xE1 and b[pos + 4:pos + 10] == b"Exif\x00\x00":
            orient = _exif_orientation(b[pos + 10:pos + 2 + seglen])
        pos += 2 + seglen
    return 0, orient


def _exif_orientation(t) -> int:
    """Tag 0x0112 of IFD0 in a TIFF block (1 when absent, 0 when unreadable)."""
    order = bytes(t[:2])
    if len(t) < 8 or order not in (b"II", b"MM"):
        return 0
    e = "<" if order == b"II" else ">"
    try:
        ifd = struct.unpack_from(e + "I", t, 4)[0]
        count = struct.unpack_from(e + "H", t, ifd)[0]
        for i in range(count):
            tag, typ, _cnt = struct.unpack_from(e + "HHI", t, ifd + 2 + 12 * i)
            if tag == 0x0112:
                v = struct.unpack_from(e + "H", t, ifd + 10 + 12 * i)[0] if typ == 3 else 0
                return v if 1 <= v <= 8 else 0
    except struct.error:
        return 0
    return 1


def decode_jpeg(arr: np.ndarray, channels: int, size: Optional[Tuple[int, int]],
                min_side: int = 0, fast: bool = False, rgb: bool = False
                ) -> Optional[np.ndarray]:
    """Decode a JPEG as ``cv2.imdecode`` would (OpenCV channel order, gray as HxW), at the
    smallest paying scale whose shorter side stays >= ``min_side`` (0: full size).

    Returns None whenever OpenCV must do it instead (see the module docstring);
    ``size`` is the header's (w, h) from :func:`cloudrec.image.decode.check_pixels`.
    ``fast``: libjpeg's fast integer IDCT and plain chroma upsampling (~15 % less time on
    the bench photos; mean |difference| ~1 level, up to ~25 at sharp colour edges), for
    ``decode_reduce`` mode only: the pixels are no longer OpenCV's.  ``rgb``: 3 channels
    in RGB order (``imdecode``'s, saving OpenCV's BGR->RGB pass).
    """
    if _sj is None or size is None or channels not in _COLORSPACE:
        return None
    sof, orient = jpeg_layout(memoryview(arr))
    if sof not in _SOF_HUFFMAN or orient != 1:
        return None
    w, h = size
    m = choose_eighths(min(w, h), min_side)
    ow, oh = scaled_size(w, m), scaled_size(h, m)
    try:
        space = "RGB" if rgb and channels == 3 else _COLORSPACE[channels]
        img = _sj.decode_jpeg(arr, space, min_height=oh, min_width=ow,
                              strict=True, fastdct=fast, fastupsample=fast)
    except (ValueError, RuntimeError, MemoryError):
        return None
    if img.shape[0] != oh or img.shape[1] != ow:  # the library chose another factor
        return None
    return img.reshape(oh, ow) if channels == 1 else img
