"""Image decoding as MXNet's ``mx.image.imdecode``/``imread``, on numpy, with a bomb guard.

Before a byte is decoded, the image's width and height are read from its
header (JPEG, PNG, GIF, BMP, WebP) and an image claiming more than
``max_pixels`` pixels is refused with ImageTooLargeError, so a tiny file that
would inflate to gigabytes never reaches the decoder.  Pure bytes in, numpy
out: no storage code here.
"""
from __future__ import annotations

import struct
from typing import Optional, Tuple, Union

import cv2
import numpy as np

from cloudrec.errors import ImageDecodeError, ImageTooLargeError
from cloudrec.image.jpeg_scale import PAYING_EIGHTHS, choose_eighths, decode_jpeg

__all__ = ["imdecode", "imread", "decode_image", "check_pixels", "image_size", "get_max_pixels",
           "set_max_pixels", "DEFAULT_MAX_PIXELS"]

#: Default pixel limit (width * height), the same order as Pillow's bomb limit.
DEFAULT_MAX_PIXELS = 178_956_970
_max_pixels = DEFAULT_MAX_PIXELS

BufferLike = Union[bytes, bytearray, memoryview, np.ndarray]


def get_max_pixels() -> int:
    """The process-wide pixel limit used when ``imdecode`` gets no ``max_pixels``."""
    return _max_pixels


def set_max_pixels(n: Optional[int]) -> None:
    """Set the process-wide pixel limit; ``None`` or 0 disables the guard."""
    global _max_pixels
    _max_pixels = int(n or 0)


# --------------------------------------------------------------------------- headers
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(b: bytes) -> Optional[Tuple[int, int]]:
    """(w, h) from the first SOF segment of a JPEG; None if no SOF is found."""
    pos, n = 2, len(b)
    while pos + 4 <= n:
        if b[pos] != 0xFF:
            return None
        marker = b[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # standalone markers
            pos += 2
            continue
        seglen = struct.unpack_from(">H", b, pos + 2)[0]
        if marker in _SOF_MARKERS:
            if pos + 9 > n:
                return None
            h, w = struct.unpack_from(">HH", b, pos + 5)
            return w, h
        if marker == 0xDA or seglen < 2:  # start of scan before any SOF: give up
            return None
        pos += 2 + seglen
    return None


def image_size(buf: BufferLike) -> Optional[Tuple[int, int]]:
    """(width, height) read from the header of a JPEG/PNG/GIF/BMP/WebP, else None.

    Reads only the first bytes (JPEG: the segments up to SOF); never decodes.
    """
    b = memoryview(buf).cast("B") if not isinstance(buf, bytes) else buf
    if b[:3] == b"\xff\xd8\xff":
        return _jpeg_size(b)
    if b[:8] == b"\x89PNG\r\n\x1a\n" and len(b) >= 24 and b[12:16] == b"IHDR":
        w, h = struct.unpack_from(">II", b, 16)
        return w, h
    if b[:6] in (b"GIF87a", b"GIF89a") and len(b) >= 10:
        w, h = struct.unpack_from("<HH", b, 6)
        return w, h
    if b[:2] == b"BM" and len(b) >= 26:
        hsize = struct.unpack_from("<I", b, 14)[0]
        if hsize == 12:
            w, h = struct.unpack_from("<HH", b, 18)
        else:
            w, h = struct.unpack_from("<ii", b, 18)
        return abs(w), abs(h)
    if b[:4] == b"RIFF" and b[8:12] == b"WEBP" and len(b) >= 30:
        chunk = bytes(b[12:16])
        if chunk == b"VP8X":
            w = 1 + int.from_bytes(b[24:27], "little")
            h = 1 + int.from_bytes(b[27:30], "little")
            return w, h
        if chunk == b"VP8L":
            bits = int.from_bytes(b[21:25], "little")
            return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        if chunk == b"VP8 ":
            w, h = struct.unpack_from("<HH", b, 26)
            return w & 0x3FFF, h & 0x3FFF
    return None


def _ignores_orientation(b: bytes) -> bool:
    """MXNet reads the size itself, and so ignores EXIF orientation, for JFIF JPEG and PNG."""
    if b[:4] == b"\xff\xd8\xff\xe0" and b[6:10] == b"JFIF":
        return True
    return b[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- decode
def check_pixels(arr: BufferLike, max_pixels: Optional[int] = None, url: Optional[str] = None,
                 key: object = None, where: str = "") -> Optional[Tuple[int, int]]:
    """Refuse an image whose header claims more than ``max_pixels`` (default: the process-wide
    limit; 0 disables) with ImageTooLargeError; returns the header's (w, h) or None."""
    limit = _max_pixels if max_pixels is None else int(max_pixels)
    size = image_size(arr)
    if limit > 0 and size is not None and size[0] * size[1] > limit:
        raise ImageTooLargeError(
            f"image header claims {size[0]}x{size[1]} = {size[0] * size[1]} pixels, "
            f"over the limit of {limit} (cloudrec.image.set_max_pixels){where}", url, key)
    return size


_IMREAD = {1: cv2.IMREAD_GRAYSCALE, 3: cv2.IMREAD_COLOR, 4: cv2.IMREAD_UNCHANGED}
_REDUCED = {1: (cv2.IMREAD_REDUCED_GRAYSCALE_2, cv2.IMREAD_REDUCED_GRAYSCALE_4,
                cv2.IMREAD_REDUCED_GRAYSCALE_8),
            3: (cv2.IMREAD_REDUCED_COLOR_2, cv2.IMREAD_REDUCED_COLOR_4,
                cv2.IMREAD_REDUCED_COLOR_8)}


def _reduced_flag(size: Optional[Tuple[int, int]], channels: int, min_side: int, flag: int) -> int:
    """OpenCV's DCT-scaled flag (1/2, 1/4, 1/8) for the factor :func:`choose_eighths` picks,
    so that the cv2 fallback decodes at the same scale as the libjpeg-turbo path."""
    if not size or channels not in _REDUCED:
        return flag
    m = choose_eighths(min(size), min_side, tuple(k for k in PAYING_EIGHTHS if k in (1, 2, 4)))
    return {4: _REDUCED[channels][0], 2: _REDUCED[channels][1],
            1: _REDUCED[channels][2]}.get(m, flag)


def decode_image(buf: BufferLike, channels: int = 3, *, min_side: int = 0,
                 max_pixels: Optional[int] = None, url: Optional[str] = None,
                 key: object = None, where: str = "", cv_flag: Optional[int] = None
                 ) -> np.ndarray:
    """The one decode of every record reader: OpenCV order (1 gray, 3 BGR, 4 BGRA), uint8.

    Decodes as MXNet's C++ ImageRecordIter does for ``data_shape[0]`` channels
    (``cv::imdecode``, EXIF orientation honoured), after the pixel guard of
    :func:`check_pixels`.  With ``min_side > 0`` a JPEG may be decoded at 1/2,
    1/4 or 1/8 scale as long as its shorter side stays >= ``min_side``.  Every
    failure is an ImageDecodeError naming ``url``/``key`` (plus ``where``).
    ``cv_flag`` overrides the channel rule with an OpenCV ``IMREAD_*`` flag
    (``recordio.unpack_img``'s ``iscolor``, im2rec's ``--color``).
    """
    if cv_flag is None and channels not in _IMREAD:
        raise ValueError(f"channels must be 1, 3 or 4, got {channels}")
    arr = (np.ascontiguousarray(buf).view(np.uint8).reshape(-1) if isinstance(buf, np.ndarray)
           else np.frombuffer(buf, dtype=np.uint8))
    if arr.size == 0:
        raise ImageDecodeError(f"empty image payload{where}", url, key)
    size = check_pixels(arr, max_pixels, url, key, where)
    flag = _IMREAD[channels] if cv_flag is None else int(cv_flag)
    if cv_flag is None and arr[:2].tobytes() == b"\xff\xd8":
        img = decode_jpeg(arr, channels, size, min_side)  # libjpeg-turbo direct, same pixels
        if img is not None:
            return img
        if min_side > 0:  # None: OpenCV decodes (EXIF rotation, odd JPEGs, no simplejpeg)
            flag = _reduced_flag(size, channels, min_side, flag)
    try:
        img = cv2.imdecode(arr, flag)
    except cv2.error as e:  # OpenCV raises for some corrupt or oversized headers
        raise ImageDecodeError(f"cannot decode image payload of {arr.size} bytes: "
                               f"{str(e).strip().splitlines()[-1]}{where}", url, key) from None
    if img is None or img.size == 0:
        raise ImageDecodeError(f"cannot decode image payload of {arr.size} bytes "
                               f"(broken, truncated or not an image){where}", url, key)
    if img.dtype != np.uint8 and cv_flag is None:  # 16-bit/float PNG or TIFF with IMREAD_UNCHANGED: to 8 bits
        img = (img.astype(np.float32) * (255.0 / np.iinfo(img.dtype).max
                                         if img.dtype.kind in "ui" else 255.0))
        img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if cv_flag is None and channels == 4 and (img.ndim != 3 or img.shape[2] != 4):
        c = 1 if img.ndim == 2 else img.shape[2]
        raise ImageDecodeError(f"expected 4 channels, got {c}{where}", url, key)
    return img


def imdecode(buf: BufferLike, flag: int = 1, to_rgb: bool = True, out: Optional[np.ndarray] = None,
             *, max_pixels: Optional[int] = None, url: Optional[str] = None,
             key: object = None, truncated: str = "error", min_side: int = 0) -> np.ndarray:
    """Decode an encoded image to a uint8 HWC array: (H, W, 3) RGB, or (H, W, 1) if ``flag == 0``.
    (``min_side`` > 0: a JPEG may come at libjpeg's 1/2, 1/4 or 1/8 scale, shorter side kept.)

    As MXNet: any ``flag != 0`` gives 3 channels, ``to_rgb`` swaps OpenCV's
    BGR; JFIF-JPEG and PNG ignore EXIF orientation, other files honour it.
    Empty, undecodable or truncated input raises ImageDecodeError (naming
    ``url``/``key``); a header over ``max_pixels`` raises ImageTooLargeError.
    ``truncated='mxnet'`` instead returns what libmxnet returned for a JPEG
    cut inside its scan data (see ``_truncated_jpeg_as_mxnet``).
    """
    if isinstance(buf, str):
        raise ValueError("imdecode needs bytes, bytearray or a numpy array, not str")
    if isinstance(buf, np.ndarray):
        arr = np.ascontiguousarray(buf).view(np.uint8).reshape(-1)
    else:
        arr = np.frombuffer(buf, dtype=np.uint8)
    flag = int(flag)
    if flag < 0:
        raise ValueError(f"imdecode flag must be >= 0, got {flag}")
    if arr.size == 0:
        raise ImageDecodeError("Input cannot be an empty buffer", url, key)
    head = arr[:16].tobytes()
    size = check_pixels(arr, max_pixels, url, key)
    fast = decode_jpeg(arr, 1 if flag == 0 else 3, size, min_side, rgb=to_rgb) \
        if out is None and head[:2] == b"\xff\xd8" else None  # same pixels as below
    if fast is not None:
        return fast[:, :, None] if fast.ndim == 2 else fast
    cvflag = cv2.IMREAD_GRAYSCALE if flag == 0 else cv2.IMREAD_COLOR
    if _ignores_orientation(head):
        cvflag |= cv2.IMREAD_IGNORE_ORIENTATION
    try:
        img = cv2.imdecode(arr, cvflag)
    except cv2.error as e:  # OpenCV raises for some corrupt headers
        raise ImageDecodeError(f"Decoding failed. Invalid image file: {e}", url, key) from None
    if img is None and truncated == "mxnet":
        img = _truncated_jpeg_as_mxnet(arr, cvflag)
    if img is None:
        raise ImageDecodeError("Decoding failed. Invalid image file (broken, truncated "
                               "or not an image)", url, key)
    if img.ndim == 2:
        img = img[:, :, None]
    elif to_rgb:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if out is not None:
        if out.shape != img.shape:
            raise ValueError(f"out has shape {out.shape}, the image {img.shape}")
        out[...] = img
        return out
    return img


_FILLER = bytes((np.arange(512) * 37 + 11) % 251)  # no 0xFF: not a marker


def _first_sof_sampling(b: bytes) -> int:
    """Vertical sampling factor of the first component in the SOF (1 if unknown)."""
    pos = 2
    while pos + 4 <= len(b) and b[pos] == 0xFF:
        marker = b[pos + 1]
        seglen = struct.unpack_from(">H", b, pos + 2)[0]
        if marker in _SOF_MARKERS:
            if pos + 12 <= len(b):
                return b[pos + 11] & 0x0F
            return 1
        if marker == 0xDA:
            break
        pos += 2 + seglen
    return 1


def _truncated_jpeg_as_mxnet(arr: np.ndarray, cvflag: int) -> Optional[np.ndarray]:
    """Rebuild libmxnet's image of a JPEG cut inside its scan data (OpenCV 3.4 + libjpeg).

    libjpeg there suspended at the cut and OpenCV kept copying its last scanline:
    rows up to the last complete iMCU row are decoded (less one row group held
    back for fancy chroma upsampling), and every row below repeats the last one.
    Rows fixed by the available data are those that do not change when different
    bytes follow the cut; everything else comes from OpenCV 4.x via a fake EOI.
    Returns None when this does not apply (not a JPEG, nothing decodable).
    """
    data = arr.tobytes()
    if data[:2] != b"\xff\xd8" or data[-2:] == b"\xff\xd9":
        return None
    a = cv2.imdecode(np.frombuffer(data + b"\xff\xd9", np.uint8), cvflag)
    b = cv2.imdecode(np.frombuffer(data + _FILLER + b"\xff\xd9", np.uint8), cvflag)
    if a is None or b is None or a.shape != b.shape:
        return None
    differs = (a != b).reshape(a.shape[0], -1).any(axis=1)
    first = int(np.argmax(differs)) if differs.any() else a.shape[0]
    color = a.ndim == 3
    rows = first - 1 if color and _first_sof_sampling(data) == 2 and first < a.shape[0] else first
    if rows <= 0:
        return None
    a[rows:] = a[rows - 1]
    return a


def imread(filename: str, flag: int = 1, to_rgb: bool = True, out: Optional[np.ndarray] = None,
           *, max_pixels: Optional[int] = None) -> np.ndarray:
    """Read and decode a local image file (MXNet's ``mx.image.imread``).

    For remote URLs read the bytes through cloudrec's storage layer and call
    ``imdecode``: this layer does no remote IO.
    """
    try:
        with open(filename, "rb") as f:
            data = f.read()
    except OSError as e:
        raise FileNotFoundError(f"Imread: '{filename}' couldn't open file: {e}") from None
    return imdecode(data, flag, to_rgb, out, max_pixels=max_pixels, url=str(filename))
