"""ImageRecordIter's ``mean_img`` file: load, compute and save, in MXNet's format or ``.npy``.

MXNet reads and writes the mean image in its NDArray file format (a dict
``{"mean_img": (C, H, W) float32}``, what ``mx.nd.save`` writes).  cloudrec
reads that, a ``.npy`` (an ``.npz`` holding ``mean_img``) or any NDArray
file holding exactly one array (what MXNet's C++ loader accepts), and writes
**MXNet's format unless the name ends in ``.npy``** -- so a mean file made by
either program is read by the other, and ``.npy`` stays available to numpy
users who ask for it by name.

The mean is accumulated like MXNet's (float32 running sum of the augmented,
un-normalised images, then multiplied by ``1/count``), so the values match
MXNet's file to float32 rounding.
"""
from __future__ import annotations

import io
from typing import Any, Dict, Iterable, Optional, Tuple

import numpy as np

from cloudrec.errors import ConfigError
from cloudrec.format.ndarray import NDArrayFormatError, decode_ndarrays, encode_ndarrays, \
    is_ndarray_file
from cloudrec.pipeline.augment import AugRng

__all__ = ["load_mean_image", "save_mean_image", "decode_mean_image", "encode_mean_image",
           "compute_mean_image", "mean_image_rng", "partition_mean_image", "MEAN_EPOCH"]

#: The epoch number the mean computation draws augmentation randomness for: a pass of its
#: own, never one of the training epochs' (those count up from 0).
MEAN_EPOCH = 0xFFFFFFFF

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def mean_image_rng(seed: int, rid: int) -> AugRng:
    """Record ``rid``'s generator for the mean pass: a pure function of (seed, record id),
    laid out as ImageRecordIter's per-image generators with epoch ``MEAN_EPOCH``."""
    return AugRng(((int(seed) & 0xFFFFFFFF) << 96) | (MEAN_EPOCH << 64)
                  | (int(rid) & 0xFFFFFFFFFFFFFFFF))


def decode_mean_image(data: bytes, url: str) -> np.ndarray:
    """The mean image inside a file's bytes (MXNet NDArray file, .npy or .npz)."""
    if data.startswith(_NPY_MAGIC) or data.startswith(_ZIP_MAGIC):
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as exc:
            raise ConfigError(f"mean_img {url}: unreadable .npy/.npz ({exc})") from None
        if isinstance(arr, np.lib.npyio.NpzFile):
            if "mean_img" not in arr.files:
                raise ConfigError(f"mean_img {url}: .npz without a 'mean_img' array "
                                  f"(has {arr.files})")
            arr = arr["mean_img"]
        return np.asarray(arr)
    if is_ndarray_file(data):
        try:
            arrays, names = decode_ndarrays(data, url)
        except NDArrayFormatError as exc:
            raise ConfigError(f"mean_img {url}: {exc}") from None
        if "mean_img" in names:
            return arrays[names.index("mean_img")]
        if len(arrays) == 1:
            return arrays[0]
        raise ConfigError(f"mean_img {url}: MXNet NDArray file with {len(arrays)} arrays "
                          f"{names or ''} and none named 'mean_img'")
    raise ConfigError(f"mean_img {url}: neither MXNet's NDArray format nor .npy "
                      f"(starts with {data[:8]!r})")


def encode_mean_image(mean: np.ndarray, url: str) -> bytes:
    """File bytes for ``url``: .npy when the name ends in .npy, else MXNet's NDArray format."""
    mean = np.ascontiguousarray(mean, dtype=np.float32)
    if url.lower().endswith(".npy"):
        bio = io.BytesIO()
        np.save(bio, mean)
        return bio.getvalue()
    return encode_ndarrays([mean], ["mean_img"])


def load_mean_image(url: str, shape: Tuple[int, int, int],
                    storage_options: Optional[Dict[str, Any]] = None) -> Optional[np.ndarray]:
    """The (C, H, W) float32 mean image at ``url``, or None when the file does not exist yet."""
    from cloudrec.storage.fs import resolve
    fs, path = resolve(url, storage_options)
    try:
        with fs.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    arr = np.asarray(decode_mean_image(data, url), np.float32)
    if arr.shape != tuple(shape):
        raise ConfigError(f"mean_img {url} has shape {arr.shape}, expected {tuple(shape)} "
                          "(the data_shape it was computed for differs)")
    return arr


def save_mean_image(url: str, mean: np.ndarray,
                    storage_options: Optional[Dict[str, Any]] = None) -> None:
    """Write the mean image to ``url`` (format chosen by the name, see the module doc)."""
    from cloudrec.storage.fs import resolve
    fs, path = resolve(url, storage_options)
    data = encode_mean_image(mean, url)
    with fs.open(path, "wb") as f:
        f.write(data)


def compute_mean_image(images: Iterable[np.ndarray], shape: Tuple[int, int, int]) -> np.ndarray:
    """Mean of (C, H, W) float32 images: float32 running sum times ``float32(1/count)``, as
    MXNet's ``CreateMeanImg``.  An empty input gives zeros."""
    acc = np.zeros(shape, np.float32)
    count = 0
    for img in images:
        acc += img
        count += 1
    if count:
        acc *= np.float32(1.0 / count)
    return acc


def partition_mean_image(records: Iterable[Tuple[int, bytes]], shape: Tuple[int, int, int],
                         aug: Any, seed: int, where: Any, url: str,
                         storage_options: Optional[Dict[str, Any]] = None) -> np.ndarray:
    """ImageRecordIter's ``mean_img`` when the file does not exist yet: the mean of the
    partition's ``records`` after ``aug`` (its aug_default), saved to ``url`` as MXNet does.

    Random augmenters draw from a generator per record seeded from (``seed``, record id),
    so the mean is reproducible.  ``where(rid)`` names a record in errors."""
    from cloudrec.format.irheader import unpack_header
    from cloudrec.image.decode import decode_image
    from cloudrec.pipeline.writer import ImageWriter
    C, H, W = shape
    plain = ImageWriter(C, np.dtype(np.float32), "NCHW", (0,) * 4, (1,) * 4, 1.0)

    def images() -> Iterable[np.ndarray]:
        for rid, payload in records:
            _header, start = unpack_header(payload)
            img = decode_image(memoryview(payload)[start:], C, where=where(rid))
            img = aug.process(img, mean_image_rng(seed, rid), where(rid))
            out = np.empty((C, H, W), np.float32)
            plain.write(img, out, False)
            yield out

    mean = compute_mean_image(images(), (C, H, W))
    save_mean_image(url, mean, storage_options)
    return mean
